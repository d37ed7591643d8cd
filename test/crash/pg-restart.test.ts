import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SqliteAuditLog } from "eart/sqlite";
import { assertChildBuilt, eventsOf, FINAL_ANSWER, REFUND_CALL_ID, resultOf, runChild, type ChildTarget } from "../processes/harness.js";

const run = promisify(execFile);

/**
 * PostgreSQL restarts while the refund tool runs. Restarting the shared cluster would break the
 * suites running beside this one, so the test makes a throwaway cluster of its own (Debian's
 * postgresql-common: pg_createcluster / pg_ctlcluster / pg_dropcluster, as root) and drops it
 * afterwards, also on failure. No skip: without the tooling this suite fails, loudly.
 */

const VERSION = "15";
const PREFIX = "eart_restart_";
const cluster = `${PREFIX}${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
let created = false;
let url: string;
const dir = mkdtempSync(join(tmpdir(), "eart-restart-"));

/** Names of the version's clusters. */
async function clusters(): Promise<string[]> {
  const { stdout } = await run("pg_lsclusters", ["--no-header"]);
  return stdout.split("\n").map((line) => line.trim().split(/\s+/)).filter((f) => f[0] === VERSION).map((f) => f[1]!);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
};

/** A TCP port nobody listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function ctl(...args: string[]): Promise<void> {
  await run("pg_ctlcluster", [VERSION, cluster, ...args], { timeout: 60_000 });
}

beforeAll(async () => {
  assertChildBuilt();
  // Clusters left by runs of this file that were killed before their afterAll.
  for (const name of await clusters()) {
    const pid = Number(name.slice(PREFIX.length).split("_")[0]);
    if (name.startsWith(PREFIX) && Number.isInteger(pid) && !alive(pid)) await run("pg_dropcluster", ["--stop", VERSION, name], { timeout: 60_000 });
  }
  const port = await freePort();
  created = true; // from here on afterAll drops whatever exists
  await run("pg_createcluster", [VERSION, cluster, "-p", String(port), "--", "--auth=trust", "--no-sync"], { timeout: 60_000 });
  await ctl("start");
  url = `postgresql://postgres@127.0.0.1:${port}/postgres`;
  const pool = new pg.Pool({ connectionString: url });
  try {
    expect((await pool.query<{ one: number }>("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
  } finally {
    await pool.end();
  }
}, 120_000);

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  if (created && (await clusters()).includes(cluster)) await run("pg_dropcluster", ["--stop", VERSION, cluster], { timeout: 60_000 });
}, 120_000);

describe("PostgreSQL restarted while the refund runs", () => {
  it("the running process fails with ThreadLockLostError; once the server is back a new process finishes the thread with one refund", async () => {
    const file = join(dir, "audit.sqlite");
    const target: ChildTarget = { file, threadId: "refund-restart-1042", postgres: url };
    const request = await runChild({ step: "request", targets: [target] });
    expect(request.stderr).toBe("");
    expect(eventsOf(request, "paused").map((p) => p.summary.approval)).toEqual([[REFUND_CALL_ID]]);

    // sam approves; the refund tool waits (the run holding the thread's lock) until the server has
    // restarted, then goes on with its insert.
    const hold = join(dir, "release");
    let restarted: Promise<void> | undefined;
    const approve = await runChild(
      { step: "approve", targets: [target], hold },
      {
        onEvent: (e) => {
          if (e.event === "in_tool") restarted = ctl("restart").then(() => writeFileSync(hold, ""));
        },
      },
    );
    expect(restarted, approve.stdout + approve.stderr).toBeDefined();
    await restarted;

    // The restart kills the session that holds the thread's lock: the run is aborted with a typed
    // ThreadLockLostError (the server's FATAL 57P01 as its cause), before the refund's insert, so
    // nothing is paid and no result is reported. The process is not crashed by the dropped
    // connection; it exits 1 because the run failed.
    expect(approve.signal).toBeNull();
    expect(approve.status).toBe(1);
    expect(eventsOf(approve, "in_tool")).toEqual([expect.objectContaining({ attempt: 1 })]);
    expect(eventsOf(approve, "result")).toEqual([]);
    expect(eventsOf(approve, "error")).toEqual([
      expect.objectContaining({ name: "ThreadLockLostError", code: "thread_lock_lost", message: expect.stringContaining("terminating connection due to administrator command") }),
    ]);
    expect(approve.stderr).toContain("57P01");

    // The server is back with what was committed before the restart: the refund's ledger entry is
    // started (outcome unknown) and no refund exists.
    const pool = new pg.Pool({ connectionString: url });
    pool.on("error", () => {});
    const state = async () => {
      const ledger = await pool.query<{ status: string; attempt: number }>(
        `SELECT status, attempt FROM eart_effect_ledger WHERE thread_id = $1 AND tool_call_id = $2`,
        [target.threadId, REFUND_CALL_ID],
      );
      const table = await pool.query<{ t: string | null }>(`SELECT to_regclass('refunds')::text AS t`);
      const refunds = table.rows[0]?.t
        ? (await pool.query<{ toolCallId: string; amount: number }>(`SELECT tool_call_id AS "toolCallId", amount FROM refunds`)).rows
        : [];
      return { ledger: ledger.rows, refunds };
    };
    try {
      expect(await state()).toEqual({ ledger: [{ status: "started", attempt: 1 }], refunds: [] });

      // A new process continues the thread: the idempotent refund is retried with the same key.
      const cont = await runChild({ step: "continue", targets: [target] });
      const continued = resultOf(cont);
      expect(continued.before).toMatchObject({ next: ["tools"], refundAnswers: [], verify: { ok: true } });
      expect(eventsOf(cont, "in_tool")).toEqual([expect.objectContaining({ attempt: 2 })]);
      expect(continued.summary).toMatchObject({ next: [], approval: null, recovery: null, last: { type: "ai", content: FINAL_ANSWER }, verify: { ok: true } });
      expect(continued.summary.refundAnswers).toHaveLength(1);
      expect(await state()).toEqual({ ledger: [{ status: "succeeded", attempt: 2 }], refunds: [{ toolCallId: REFUND_CALL_ID, amount: 740 }] });
    } finally {
      await pool.end();
    }

    const log = new SqliteAuditLog({ path: file });
    try {
      const events = await log.read(target.threadId);
      expect(events.filter((e) => e.type === "tool.started" && (e.data as { toolCallId?: string }).toolCallId === REFUND_CALL_ID).map((e) => (e.data as { attempt: number }).attempt)).toEqual([1, 2]);
      expect(await log.verify(target.threadId)).toMatchObject({ ok: true, count: events.length });
    } finally {
      log.close();
    }
  });
});
