import { createRequire } from "node:module";
import type Database from "better-sqlite3";
import { z } from "zod";
import { EartConfigError } from "../../errors.js";

let driver: typeof Database | undefined;

/**
 * better-sqlite3, loaded on first use: importing eart loads no native driver, and a project that
 * never opens a SQLite store need not install it. Throws {@link EartConfigError} saying what to
 * install when it is missing.
 * @example
 * ```ts
 * const db = new (sqliteDriver())(".eart/eart.sqlite");
 * ```
 */
export function sqliteDriver(): typeof Database {
  if (driver) return driver;
  try {
    driver = createRequire(import.meta.url)("better-sqlite3") as typeof Database;
  } catch (error) {
    throw new EartConfigError("better-sqlite3", `eart's SQLite stores need the better-sqlite3 package: npm install better-sqlite3 (${(error as Error)?.message ?? String(error)})`);
  }
  return driver;
}

/** Whether a value is an open better-sqlite3 database (by its methods, so no driver is loaded and a second install of it counts). */
export function isSqliteDatabase(value: unknown): value is Database.Database {
  const v = value as Partial<Record<"prepare" | "transaction" | "pragma" | "exec", unknown>> | null;
  return typeof v === "object" && v !== null && ["prepare", "transaction", "pragma", "exec"].every((m) => typeof v[m as keyof typeof v] === "function");
}

/** Where a SQLite-backed store lives: a file path, or an open better-sqlite3 database to share. */
export type SqliteLocation = { path: string } | { database: Database.Database };

const SqliteLocationSchema: z.ZodType<SqliteLocation> = z.union([
  z.object({ path: z.string().min(1) }).strict(),
  z.object({ database: z.custom<Database.Database>(isSqliteDatabase, "must be a better-sqlite3 Database") }).strict(),
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
  const db = "path" in parsed.data ? new (sqliteDriver())(parsed.data.path) : parsed.data.database;
  if (owned) db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  return { db, owned };
}
