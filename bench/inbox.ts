/**
 * Benchmark: listing what waits for a role (`auditLog.pending({ role: "supervisor" })`, the inbox
 * index the audit stores keep in the transaction of every append) beside a full scan (every
 * thread of the log listed and its events read, as `eart pending` found waiting threads before the
 * index), on SQLite and PostgreSQL. Target: the index listing ≤ 50 ms at 10,000 threads.
 *
 * The store is filled before anything is timed, in appends of 250 threads each: every thread
 * starts (`run.started`, `identity.bound`) and has a refund decided by policy; 40% then wait for
 * an approval by `supervisor`, 20% by `finance`, 10% for a reviewer (an escalation, which records
 * no roles), and 30% were approved and ran. Each listing is timed end to end (the store's query
 * and reading its rows); the index median is over 30 listings after 3 untimed, the full scan's
 * over 3. Outside the clock, both must list exactly the supervisor's threads. The one-time rebuild
 * of the index from the events (a store written before the index) is timed once, for reference.
 *
 * Env: `EART_BENCH_INBOX_THREADS` (default 10,000); `EART_BENCH_DATABASE_URL` (else
 * `EART_DATABASE_URL`, else the local `test` database), used in a schema of this run's own,
 * dropped at the end; `EART_BENCH_SKIP_INBOX=1` skips the benchmark.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { InboxIndex, type AuditEventInput, type AuditLog, type PendingTask } from "eart";
import { PostgresAuditLog } from "eart/postgres";
import { SqliteAuditLog } from "eart/sqlite";
import pg from "pg";
import { positiveIntFromEnv, summarise } from "./stats.js";

/** Target: the index listing for one role, median, in milliseconds. */
export const INBOX_TARGET_MS = 50;

const DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test";
const ROLE = "supervisor";
const THREADS_PER_APPEND = 250;
const INDEX_RUNS = 30;
const INDEX_WARMUP = 3;
const SCAN_RUNS = 3;

const requester = { agentId: "support-agent", userId: "cara" };
const digest = "9f".repeat(32);
const version = "3c".repeat(32);

/** The events of the i-th thread, and what it waits for (the role, `review`, or nothing). */
function threadEvents(threadId: string, i: number): { events: AuditEventInput[]; waits: "supervisor" | "finance" | "review" | null } {
  const toolCallId = `call_${i.toString(36)}`;
  const args = { orderId: `10${i % 97}`, amount: 120 + (i % 900) };
  const kind = i % 10;
  const approverRoles = kind >= 4 && kind <= 5 ? ["finance"] : ["supervisor"];
  const events: AuditEventInput[] = [
    { threadId, type: "run.started", data: { agentId: "support-agent", userId: "cara", text: "Please refund my order." } },
    {
      threadId,
      type: "identity.bound",
      data: { agentId: "support-agent", userId: "cara", agentRoles: ["support"], userRoles: ["customer"], tools: ["issue_refund"], dataScopes: ["orders"], source: "registry" },
    },
    {
      threadId,
      type: "policy.decided",
      data: {
        toolCallId,
        name: "issue_refund",
        digest,
        agentId: "support-agent",
        userId: "cara",
        effect: kind === 6 ? "escalate" : "require_approval",
        status: kind === 6 ? "escalated" : "pending_approval",
        policyIds: ["refund.supervisor"],
        policyVersion: version,
        reasons: ["refund over 100.00"],
        approverRoles: kind === 6 ? null : approverRoles,
        request: null,
      },
    },
  ];
  if (kind === 6) {
    events.push({ threadId, type: "escalation.requested", data: { reason: "refund over 100.00", signals: [{ kind: "policy", detail: "refund over 100.00" }], toolCallIds: [toolCallId] } });
    return { events, waits: "review" };
  }
  events.push({
    threadId,
    type: "approval.requested",
    data: {
      type: "eart.approval",
      threadId,
      requestedBy: requester,
      since: new Date(Date.UTC(2030, 0, 1) + i * 1_000).toISOString(),
      roles: approverRoles,
      requests: [{ toolCallId, name: "issue_refund", args, digest, requestedBy: requester, reasons: ["refund over 100.00"], policyIds: ["refund.supervisor"], policyVersion: version, approverRoles }],
    },
  });
  if (kind <= 3) return { events, waits: "supervisor" };
  if (kind <= 5) return { events, waits: "finance" };
  const call = { toolCallId, name: "issue_refund", digest };
  events.push(
    {
      threadId,
      type: "approval.decided",
      data: {
        ...call,
        approverId: "sam",
        authenticatedBy: "configurable.user_id",
        decision: "approve",
        status: "approved",
        effect: "require_approval",
        policyIds: ["refund.supervisor"],
        policyVersion: version,
        requestedUnderVersion: version,
        originalDigest: digest,
        message: null,
      },
    },
    { threadId, type: "tool.started", data: { ...call, attempt: 1 } },
    { threadId, type: "tool.succeeded", data: { ...call, attempt: 1, result: JSON.stringify({ refundId: `r-${i}`, status: "issued" }) } },
    { threadId, type: "run.completed", data: { outcome: "answered" } },
  );
  return { events, waits: null };
}

/** Fills a log with `threads` threads; returns the ids of those waiting for {@link ROLE} and the events appended. */
async function populate(log: AuditLog, threads: number): Promise<{ waiting: Set<string>; events: number }> {
  const waiting = new Set<string>();
  let events = 0;
  for (let from = 0; from < threads; from += THREADS_PER_APPEND) {
    const batch: AuditEventInput[] = [];
    for (let i = from; i < Math.min(threads, from + THREADS_PER_APPEND); i++) {
      const threadId = `inbox-${String(i).padStart(6, "0")}`;
      const made = threadEvents(threadId, i);
      if (made.waits === ROLE) waiting.add(threadId);
      batch.push(...made.events);
    }
    events += (await log.append(batch)).length;
  }
  return { waiting, events };
}

/** What waits for the role, found the way the command line found it before the index: every thread listed, its events read. */
async function fullScan(log: AuditLog): Promise<PendingTask[]> {
  const index = new InboxIndex();
  for (const threadId of await log.listThreads()) for (const event of await log.read(threadId)) index.apply(event);
  return index.list({ role: ROLE });
}

/** Milliseconds `run` takes, each of `runs` times. */
async function timed(runs: number, run: () => Promise<unknown>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await run();
    times.push(performance.now() - start);
  }
  return times;
}

interface Row {
  store: string;
  threads: number;
  events: number;
  waiting: number;
  populateSeconds: number;
  index: ReturnType<typeof summarise>;
  scan: ReturnType<typeof summarise>;
  rebuildMs: number;
}

/** Times one store: populate (untimed), index listings, full scans, the check, and one rebuild. */
async function measure(store: string, log: AuditLog, threads: number, forgetIndex: () => Promise<void>): Promise<Row> {
  const filling = performance.now();
  const { waiting, events } = await populate(log, threads);
  const populateSeconds = (performance.now() - filling) / 1_000;
  const list = () => log.pending!({ role: ROLE });
  await timed(INDEX_WARMUP, list);
  const indexTimes = await timed(INDEX_RUNS, list);
  let scanned: PendingTask[] = [];
  const scanTimes = await timed(SCAN_RUNS, async () => {
    scanned = await fullScan(log);
  });
  // Checked outside the clock: both list exactly the threads that wait for the role, the same way.
  const listed = await list();
  const ids = new Set(listed.map((t) => t.threadId));
  if (listed.length !== waiting.size || [...waiting].some((id) => !ids.has(id))) {
    throw new Error(`${store}: the index lists ${listed.length} tasks for ${ROLE}, expected exactly the ${waiting.size} threads that wait for it`);
  }
  if (JSON.stringify(scanned) !== JSON.stringify(listed)) throw new Error(`${store}: the index and the full scan disagree on what waits for ${ROLE}`);
  // The one-time rebuild (a store written before the index): the mark cleared, then one listing.
  await forgetIndex();
  const rebuildMs = (await timed(1, list))[0]!;
  if (JSON.stringify(await list()) !== JSON.stringify(listed)) throw new Error(`${store}: the rebuilt index lists something else`);
  return { store, threads, events, waiting: waiting.size, populateSeconds, index: summarise(indexTimes), scan: summarise(scanTimes), rebuildMs };
}

const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(2));

/**
 * Runs the inbox benchmark and prints its table: per store, the index listing for one role beside
 * a full scan, their ratio, and whether the target is met. Throws if the index and the full scan
 * do not list exactly the same tasks.
 * @example
 * ```ts
 * await runInboxBench();
 * ```
 */
export async function runInboxBench(): Promise<void> {
  if (process.env.EART_BENCH_SKIP_INBOX === "1") {
    console.log("\neart bench: inbox listing skipped (EART_BENCH_SKIP_INBOX=1)");
    return;
  }
  const started = performance.now();
  const threads = positiveIntFromEnv("EART_BENCH_INBOX_THREADS", 10_000);
  const databaseUrl = process.env.EART_BENCH_DATABASE_URL || process.env.EART_DATABASE_URL || DEFAULT_DATABASE_URL;
  const dir = mkdtempSync(join(tmpdir(), "eart-bench-inbox-"));
  const schema = `eart_bench_inbox_${process.pid}_${Date.now()}`;
  const rows: Row[] = [];
  let admin: pg.Client | undefined;
  let pool: pg.Pool | undefined;
  try {
    const path = join(dir, "inbox.sqlite");
    const sqlite = new SqliteAuditLog({ path });
    try {
      rows.push(
        await measure("SQLite", sqlite, threads, async () => {
          const db = new Database(path);
          db.prepare(`UPDATE eart_inbox_state SET gseq = NULL`).run();
          db.close();
        }),
      );
    } finally {
      sqlite.close();
    }

    admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect().catch((error: unknown) => {
      throw new Error(`PostgreSQL at ${new URL(databaseUrl).host} is unreachable (${(error as Error).message}); set EART_BENCH_DATABASE_URL, or EART_BENCH_SKIP_INBOX=1`, { cause: error });
    });
    await admin.query(`CREATE SCHEMA ${schema}`);
    const version = (await admin.query<{ server_version: string }>("SHOW server_version")).rows[0]!.server_version;
    pool = new pg.Pool({ connectionString: databaseUrl, options: `-c search_path=${schema}` });
    const postgres = new PostgresAuditLog({ pool });
    rows.push({
      ...(await measure("PostgreSQL", postgres, threads, async () => {
        await admin!.query(`UPDATE ${schema}.eart_inbox_state SET gseq = NULL`);
      })),
      store: `PostgreSQL ${version}`,
    });

    console.log(`\neart bench: what waits for "${ROLE}", from the inbox index beside a full scan (${threads.toLocaleString("en-US")} threads per store)`);
    console.log(`node ${process.version}; index: median of ${INDEX_RUNS} listings after ${INDEX_WARMUP} untimed; full scan (listThreads + read every thread's events): median of ${SCAN_RUNS}`);
    console.table(
      rows.map((r) => ({
        store: r.store,
        threads: r.threads,
        events: r.events,
        [`waiting for ${ROLE}`]: r.waiting,
        "index median ms": ms(r.index.median),
        "index p95 ms": ms(r.index.p95),
        "full scan median ms": ms(r.scan.median),
        "scan/index": `${(r.scan.median / r.index.median).toFixed(0)}x`,
        target: `≤ ${INBOX_TARGET_MS} ms`,
        met: r.index.median <= INBOX_TARGET_MS ? "MET" : "NOT MET",
      })),
    );
    for (const r of rows) {
      console.log(
        `target ${r.store}: listing for ${ROLE} ≤ ${INBOX_TARGET_MS} ms at ${r.threads.toLocaleString("en-US")} threads: ${r.index.median <= INBOX_TARGET_MS ? "MET" : "NOT MET"} ` +
          `(${ms(r.index.median)} ms; full scan ${ms(r.scan.median)} ms)`,
      );
    }
    console.log(
      `outside the clock: filled in ${rows.map((r) => `${r.populateSeconds.toFixed(1)} s (${r.store})`).join(", ")}; both ways list exactly the threads that wait for ${ROLE}; ` +
        `one-time rebuild of the index from the events: ${rows.map((r) => `${ms(r.rebuildMs)} ms (${r.store})`).join(", ")}`,
    );
    console.log(`(inbox section: ${((performance.now() - started) / 1_000).toFixed(1)} s)`);
  } finally {
    if (pool) await pool.end();
    if (admin) {
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
      await admin.end();
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
