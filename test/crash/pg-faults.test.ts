import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { idempotencyKeyOf } from "eart";
import { PostgresAuditLog } from "eart/postgres";
import { startJsonLinesChild } from "../support/children.js";

/**
 * Connections terminated by the server (`pg_terminate_backend`, as a failover, a restart or an
 * idle-session killer does) while the governed refund agent runs on PostgreSQL with default
 * options. node-postgres reports a dropped connection as an 'error' event on the pool (idle
 * client) or on the client (checked out); with no listener that event ends the process, taking
 * every run in flight with it. eart guards every pool it creates or is handed, including the
 * `PostgresSaver`'s, so the statement that used the connection fails and the process lives on.
 *
 * The children run the built package (`npm run build` first): plain processes, so a crash is a
 * crash (a non-zero exit), not an error a test runner catches.
 */

// A real PostgreSQL (.ci/run starts it). No skip: without it this suite fails, loudly.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const runId = `${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
const schema = `eart_faults_${runId}`;
const DIST = new URL("../../dist/src/index.js", import.meta.url);
const CHILD = fileURLToPath(new URL("./pg-faults-child.mjs", import.meta.url));

let admin: pg.Pool;

beforeAll(async () => {
  if (!existsSync(DIST)) throw new Error(`${DIST.pathname} is missing: run "npm run build" (npm test does) before these tests`);
  admin = new pg.Pool({ connectionString: url, max: 2 });
  await admin.query(`CREATE SCHEMA "${schema}"`);
});

afterAll(async () => {
  if (!admin) return;
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.end();
});

/** A connection string into this file's schema, under an application name the test can find its sessions by. */
function connectionString(applicationName: string): string {
  const u = new URL(url);
  u.searchParams.set("options", `-c search_path=${schema}`);
  u.searchParams.set("application_name", applicationName);
  return u.toString();
}

/** Terminates every session of an application name; returns how many it terminated. */
async function terminate(applicationName: string): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
    [applicationName],
  );
  return rows[0]!.n;
}


describe("a PostgresSaver's pool handed to eart survives connections the server terminates", () => {
  it("an idle and a checked-out connection terminated: the statement on the dead one fails, the process does not", async () => {
    const app = `eart_faults_pool_${runId}`;
    // What createGovernedAgent does with default options on a PostgresSaver: ledgerFor and threadLockFor.
    const script = `
      const pg = (await import("pg")).default;
      const { PostgresSaver } = await import("@langchain/langgraph-checkpoint-postgres");
      const eart = await import(${JSON.stringify(DIST.href)});
      const pool = new pg.Pool({ connectionString: process.env.EART_FAULTS_URL }); // no 'error' listener
      const saver = new PostgresSaver(pool);
      eart.ledgerFor(saver);
      eart.threadLockFor(saver);
      const idle = await pool.connect();
      const out = await pool.connect(); // held between statements, as PostgresSaver.put holds one in its transaction
      idle.release();
      const ended = new Promise((resolve) => out.once("end", resolve));
      console.log(JSON.stringify({ event: "ready", idle: pool.idleCount, total: pool.totalCount }));
      await ended;
      while (pool.totalCount > 1) await new Promise((r) => setTimeout(r, 10));
      const failed = await out.query("SELECT 1").then(() => null, (e) => e.message);
      out.release(true);
      const { rows } = await pool.query("SELECT 1 AS one");
      console.log(JSON.stringify({ event: "survived", failed, one: rows[0].one }));
      await pool.end();
      process.exit(0);
    `;
    const child = startJsonLinesChild(["--input-type=module", "-e", script], { EART_FAULTS_URL: connectionString(app) });
    expect(await child.until((e) => e.event === "ready")).toEqual({ event: "ready", idle: 1, total: 2 });
    expect(await terminate(app)).toBe(2);
    const survived = await child.until((e) => e.event === "survived");
    expect(survived).toMatchObject({ failed: expect.stringMatching(/not queryable|terminat/i), one: 1 });
    const { status, signal, stderr } = await child.exited;
    expect(stderr).not.toMatch(/Unhandled 'error' event|uncaught/i);
    expect({ status, signal }).toEqual({ status: 0, signal: null });
  });
});

describe("fault injection: eart's connections terminated while conversations run (PostgreSQL, default options)", () => {
  it("no crash, no duplicate refund, and every thread that failed is driven to its end afterwards", async () => {
    const app = `eart_faults_load_${runId}`;
    const N = 60;
    const threads = Array.from({ length: N }, (_, i) => `faults-${runId}-${i}`);
    const child = startJsonLinesChild([CHILD], { EART_FAULTS_JOB: JSON.stringify({ url: connectionString(app), threads, concurrency: 8 }) });
    await child.until((e) => e.event === "ready");

    // Four rounds, each once the conversations have moved on: no clock, only progress.
    const progressed = (k: number) => child.until(() => child.events.filter((e) => e.event === "done" || e.event === "failed").length >= k);
    const terminated: number[] = [];
    for (const k of [6, 18, 30, 42]) {
      await progressed(k);
      terminated.push(await terminate(app));
    }
    const phase1 = await child.until((e) => e.event === "phase1");
    child.send("continue");
    const summary = await child.until((e) => e.event === "summary");
    const { status, signal, stderr } = await child.exited;
    const failures = child.events.filter((e) => e.event === "failed");
    // Figures for the record, not assertions.
    const kinds = new Map(failures.map((f) => [`${f.name}/${f.code}`, String(f.message)]));
    console.log(`pg-faults: terminated ${terminated.join(", ")} sessions; ${failures.length} of ${N - 1} conversations failed and were continued`, Object.fromEntries(kinds));

    expect(stderr).not.toMatch(/Unhandled 'error' event|uncaught/i);
    expect({ status, signal }).toEqual({ status: 0, signal: null });
    expect(terminated.every((n) => n > 0)).toBe(true);
    expect(summary).toEqual({ event: "summary", failed: phase1.failed, stuck: [] });
    expect(child.events.filter((e) => e.event === "recovered").map((e) => e.threadId).sort()).toEqual(failures.map((f) => f.threadId).sort());

    // Exactly one refund per thread, recorded as succeeded in the ledger.
    const ledger = await admin.query<{ thread: string; digest: string; status: string }>(
      `SELECT thread_id AS thread, digest, status FROM "${schema}".eart_effect_ledger WHERE tool_call_id = 'call_1_refund' ORDER BY thread_id`,
    );
    expect(ledger.rows.map((r) => r.thread)).toEqual([...threads].sort());
    expect(ledger.rows.map((r) => r.status)).toEqual(threads.map(() => "succeeded"));
    const refunds = await admin.query<{ key: string }>(`SELECT idempotency_key AS key FROM "${schema}".refunds ORDER BY idempotency_key`);
    const expected = ledger.rows.map((r) => idempotencyKeyOf({ threadId: r.thread, toolCallId: "call_1_refund", digest: r.digest })).sort();
    expect(refunds.rows.map((r) => r.key)).toEqual(expected);

    // Every thread's audit chain verifies.
    const pool = new pg.Pool({ connectionString: connectionString(`eart_faults_verify_${runId}`), max: 2 });
    const log = new PostgresAuditLog({ pool });
    try {
      for (const threadId of threads) expect(await log.verify(threadId), threadId).toMatchObject({ ok: true });
    } finally {
      await pool.end();
    }
  }, 120_000);
});
