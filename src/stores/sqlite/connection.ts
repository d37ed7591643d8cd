import Database from "better-sqlite3";
import { z } from "zod";
import { EartConfigError } from "../../errors.js";

/** Where a SQLite-backed store lives: a file path, or an open better-sqlite3 database to share. */
export type SqliteLocation = { path: string } | { database: Database.Database };

const SqliteLocationSchema: z.ZodType<SqliteLocation> = z.union([
  z.object({ path: z.string().min(1) }).strict(),
  z.object({ database: z.custom<Database.Database>((v) => v instanceof Database, "must be a better-sqlite3 Database") }).strict(),
]);

/**
 * Opens the database of a SQLite-backed store: a file it opens itself (WAL, so several processes
 * can share it) or a database the caller shares. `owned` says whether the store may close it.
 * @example
 * ```ts
 * const { db, owned } = openSqlite({ path: ".eart/eart.sqlite" });
 * ```
 */
export function openSqlite(location: SqliteLocation): { db: Database.Database; owned: boolean } {
  const parsed = SqliteLocationSchema.safeParse(location);
  if (!parsed.success) throw new EartConfigError("path", parsed.error.issues[0]?.message ?? "invalid");
  const owned = "path" in parsed.data;
  const db = "path" in parsed.data ? new Database(parsed.data.path) : parsed.data.database;
  if (owned) db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  return { db, owned };
}
