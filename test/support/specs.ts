import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, expect } from "vitest";
import type { SpecRunner } from "eart/testing";

/** A real PostgreSQL (.ci/run starts it). No skip: without it these cases fail, loudly. */
export const PG_URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";

/**
 * What a conformance test file runs its suites in: a temporary folder for SQLite files, and a
 * PostgreSQL schema of its own (its tables are this file's alone) with two pools on it, one for the
 * handles a case opens and one for those it reopens beside them. All removed after the file.
 */
export async function specGround(label: string): Promise<{ dir: string; mainPool: pg.Pool; otherPool: pg.Pool }> {
  const dir = mkdtempSync(join(tmpdir(), `eart-${label}-spec-`));
  const schema = `${label.replace(/\W/g, "_")}_spec_${randomUUID().replace(/-/g, "")}`;
  const pools: pg.Pool[] = [];
  const newPool = () => {
    const pool = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${schema}` });
    pools.push(pool);
    return pool;
  };
  const admin = newPool();
  await admin.query(`CREATE SCHEMA ${schema}`);
  afterAll(async () => {
    await admin.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
    await Promise.all(pools.map((p) => p.end()));
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, mainPool: newPool(), otherPool: newPool() };
}

/** The titles of a suite's cases that fail on what `make` makes: how a test shows the suite catches a broken implementation. */
export async function failingCases<M, O>(spec: (name: string, make: M, runner: SpecRunner, options?: O) => void, make: M, options?: O): Promise<string[]> {
  const failures: string[] = [];
  const pending: Promise<unknown>[] = [];
  const recorder = {
    describe: (_: string, body: () => void) => body(),
    it: (title: string, body: () => void | Promise<void>) => void pending.push(Promise.resolve().then(body).catch(() => failures.push(title))),
    expect,
  } as unknown as SpecRunner;
  spec("mutant", make, recorder, options);
  await Promise.all(pending);
  return failures;
}
