/**
 * Benchmark: audit append throughput per store (memory, JSONL file, SQLite, PostgreSQL), in
 * events per second. Targets: ≥ 70,000 events/s in memory and ≥ 10,000 events/s to PostgreSQL,
 * both batched.
 *
 * Batched: each `append` call carries 100 realistic events (model output, policy decisions, tool
 * calls and results, approvals) spread over 4 threads, 25 each, interleaved. Single: one event per
 * `append` call, round-robin over 4 threads, for reference. PostgreSQL batched is also run with 4
 * appenders at once on one pool, each on its own threads. A signing row (memory, Ed25519 head
 * signature per thread per append) shows what signing costs.
 *
 * The inputs are built before each timed block; every thread's chain is verified after it,
 * outside the clock (ok, and exactly the events appended). Variants run in rounds, the order
 * rotating each round; the rate shown is all timed events over all timed seconds, with the
 * slowest and fastest round beside it.
 *
 * Env: `EART_BENCH_AUDIT_EVENTS` (timed events per batched variant, default 50,000);
 * `EART_BENCH_AUDIT_SINGLE_EVENTS` (per single-event variant, default 5,000);
 * `EART_BENCH_DATABASE_URL` (else `EART_DATABASE_URL`, else the local `test` database);
 * `EART_BENCH_SKIP_AUDIT_POSTGRES=1` leaves PostgreSQL out.
 */
import { cpus, loadavg, tmpdir } from "node:os";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { generateAuditSigningKey, JsonlAuditLog, MemoryAuditLog, type AuditEventInput, type AuditLog } from "eart";
import { PostgresAuditLog } from "eart/postgres";
import { SqliteAuditLog } from "eart/sqlite";
import pg from "pg";
import { positiveIntFromEnv } from "./stats.js";

const DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test";
const BATCH = 100;
const THREADS_PER_BATCH = 4;
const ROUNDS = 5;
const WARMUP_EVENTS = 2_000;

/** Targets, in events per second, on the batched variants. */
export const AUDIT_TARGETS = { memory: 70_000, postgres: 10_000 } as const;

/** Every thread id of this run starts with this, so the run never touches another's rows. */
const RUN_PREFIX = `bench-audit-${process.pid}-${Date.now()}`;

/** A realistic event of a governed run, the i-th of its thread (what the benchmark appends). */
export function realisticEvent(threadId: string, i: number): AuditEventInput {
  const toolCallId = `call_${i.toString(36)}`;
  const args = { orderId: `10${i % 97}`, amountCents: 1_000 + ((i * 37) % 90_000), reason: "item arrived damaged, customer asks for a refund" };
  switch (i % 6) {
    case 0:
      return {
        threadId,
        type: "model.output",
        data: { messageId: `msg-${i}`, text: "I can refund order 1042 for the damaged item.", toolCalls: [{ id: toolCallId, name: "issue_refund", args, digest: "9f".repeat(32) }] },
      };
    case 1:
      return {
        threadId,
        type: "policy.decided",
        data: {
          toolCallId,
          name: "issue_refund",
          digest: "9f".repeat(32),
          agentId: "support-agent",
          userId: "cara",
          effect: "allow",
          status: "allowed",
          policyIds: ["refund.small"],
          policyVersion: "3c".repeat(32),
          reasons: ["refund under 100.00"],
          approverRoles: null,
          request: null,
        },
      };
    case 2:
      return { threadId, type: "tool.started", data: { toolCallId, name: "issue_refund", digest: "9f".repeat(32), attempt: 1, idempotencyKey: `${threadId}:${toolCallId}` } };
    case 3:
      return { threadId, type: "tool.succeeded", data: { toolCallId, name: "issue_refund", digest: "9f".repeat(32), attempt: 1, result: JSON.stringify({ refundId: `r-${i}`, status: "issued", amountCents: args.amountCents }) } };
    case 4:
      return {
        threadId,
        type: "approval.requested",
        data: {
          type: "eart.approval",
          threadId,
          requestedBy: { agentId: "support-agent", userId: "cara" },
          since: "2030-01-01T00:00:00.000Z",
          roles: ["supervisor"],
          requests: [{ toolCallId, name: "issue_refund", args, digest: "9f".repeat(32), approverRoles: ["supervisor"], quorum: 1 }],
        },
      };
    default:
      return {
        threadId,
        type: "approval.decided",
        data: {
          toolCallId,
          name: "issue_refund",
          digest: "9f".repeat(32),
          originalDigest: "9f".repeat(32),
          decision: "approve",
          approverId: "sam",
          authenticatedBy: "configurable.user_id",
          status: "approved",
          effect: "require_approval",
          policyIds: ["refund.supervisor"],
          policyVersion: "3c".repeat(32),
          requestedUnderVersion: "3c".repeat(32),
          message: null,
        },
      };
  }
}

interface Variant {
  name: string;
  key: string;
  mode: "batched" | "single";
  /** Appenders running at once, each on its own threads. */
  appenders: number;
  target?: number;
  log: AuditLog;
  close(): Promise<void> | void;
}

/** The append calls of one block: per appender, a list of calls (each a list of events). */
function buildBlock(variant: Variant, label: string, events: number): { calls: AuditEventInput[][][]; threads: Map<string, number> } {
  const threads = new Map<string, number>();
  const perAppender = Math.ceil(events / variant.appenders);
  const calls: AuditEventInput[][][] = [];
  for (let a = 0; a < variant.appenders; a++) {
    const ids = Array.from({ length: THREADS_PER_BATCH }, (_, t) => `${RUN_PREFIX}-${variant.key}-${label}-a${a}-t${t}`);
    const list: AuditEventInput[][] = [];
    const size = variant.mode === "batched" ? BATCH : 1;
    for (let made = 0; made < perAppender; made += size) {
      const call: AuditEventInput[] = [];
      for (let j = 0; j < size && made + j < perAppender; j++) {
        const threadId = ids[(made + j) % THREADS_PER_BATCH]!;
        const n = threads.get(threadId) ?? 0;
        threads.set(threadId, n + 1);
        call.push(realisticEvent(threadId, n));
      }
      list.push(call);
    }
    calls.push(list);
  }
  return { calls, threads };
}

/** Appends a block (appenders concurrently, each call awaited in turn); returns the wall seconds and this process's CPU seconds. */
async function timeBlock(variant: Variant, calls: AuditEventInput[][][]): Promise<{ seconds: number; cpuSeconds: number }> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  await Promise.all(
    calls.map(async (list) => {
      for (const call of list) await variant.log.append(call);
    }),
  );
  const seconds = (performance.now() - start) / 1_000;
  const used = process.cpuUsage(cpu);
  return { seconds, cpuSeconds: (used.user + used.system) / 1e6 };
}

/** Throws unless every thread of the block verifies with exactly its events. */
async function check(variant: Variant, threads: Map<string, number>): Promise<void> {
  for (const [threadId, count] of threads) {
    const result = await variant.log.verify(threadId);
    if (!result.ok || result.count !== count) throw new Error(`${variant.name}: chain of ${threadId}: ${JSON.stringify(result)}, expected ok with ${count} events`);
  }
}

const rate = (events: number, seconds: number) => Math.round(events / seconds);
const fmt = (n: number) => n.toLocaleString("en-US");

/**
 * Runs the audit benchmark and prints its table. Throws if any chain does not verify with exactly
 * the events appended.
 * @example
 * ```ts
 * await runAuditBench();
 * ```
 */
export async function runAuditBench(): Promise<void> {
  const started = performance.now();
  const batchedEvents = positiveIntFromEnv("EART_BENCH_AUDIT_EVENTS", 50_000);
  const singleEvents = positiveIntFromEnv("EART_BENCH_AUDIT_SINGLE_EVENTS", 5_000);
  const withPostgres = process.env.EART_BENCH_SKIP_AUDIT_POSTGRES !== "1";
  const databaseUrl = process.env.EART_BENCH_DATABASE_URL || process.env.EART_DATABASE_URL || DEFAULT_DATABASE_URL;
  const dir = mkdtempSync(join(tmpdir(), "eart-bench-audit-"));
  const variants: Variant[] = [];
  let admin: pg.Client | undefined;
  try {
    const variant = (name: string, key: string, mode: Variant["mode"], log: AuditLog, close: () => Promise<void> | void = () => {}, extra: Partial<Variant> = {}) =>
      variants.push({ name, key, mode, appenders: 1, log, close, ...extra });
    const { privateKey } = generateAuditSigningKey();
    variant("memory, batched", "mem-b", "batched", new MemoryAuditLog(), undefined, { target: AUDIT_TARGETS.memory });
    variant("memory, batched, signed heads", "mem-sb", "batched", new MemoryAuditLog({ signingKey: privateKey }));
    variant("memory, single", "mem-s", "single", new MemoryAuditLog());
    for (const mode of ["batched", "single"] as const) {
      const jsonl = new JsonlAuditLog({ path: join(dir, `audit-${mode}.jsonl`) });
      variant(`JSONL file, ${mode}`, `jsonl-${mode[0]}`, mode, jsonl, () => jsonl.close());
    }
    for (const mode of ["batched", "single"] as const) {
      const sqlite = new SqliteAuditLog({ path: join(dir, `audit-${mode}.sqlite`) });
      variant(`SQLite, ${mode}`, `sqlite-${mode[0]}`, mode, sqlite, () => sqlite.close());
    }
    let pgInfo = "PostgreSQL skipped (EART_BENCH_SKIP_AUDIT_POSTGRES=1)";
    if (withPostgres) {
      admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect().catch((error: unknown) => {
        throw new Error(`PostgreSQL at ${new URL(databaseUrl).host} is unreachable (${(error as Error).message}); set EART_BENCH_DATABASE_URL, or EART_BENCH_SKIP_AUDIT_POSTGRES=1 to leave it out`, {
          cause: error,
        });
      });
      const version = (await admin.query<{ server_version: string }>("SHOW server_version")).rows[0]!.server_version;
      const commit = (await admin.query<{ synchronous_commit: string }>("SHOW synchronous_commit")).rows[0]!.synchronous_commit;
      pgInfo = `PostgreSQL ${version} at ${new URL(databaseUrl).host}, synchronous_commit=${commit}, one pool (pg default max 10) per variant`;
      const pgLog = (name: string, key: string, mode: Variant["mode"], extra: Partial<Variant> = {}) => {
        const log = new PostgresAuditLog({ connectionString: databaseUrl });
        variant(name, key, mode, log, () => log.close(), extra);
      };
      pgLog("PostgreSQL, batched", "pg-b", "batched", { target: AUDIT_TARGETS.postgres });
      pgLog("PostgreSQL, batched, 4 appenders at once", "pg-b4", "batched", { appenders: 4 });
      pgLog("PostgreSQL, single", "pg-s", "single");
    }
    const probe = new Database(join(dir, "probe.sqlite"));
    probe.pragma("journal_mode = WAL");
    const synchronous = ["OFF", "NORMAL", "FULL", "EXTRA"][Number(probe.pragma("synchronous", { simple: true }))] ?? "?";
    probe.close();

    // Warm-up, not counted: JIT, files, PostgreSQL migration and pool.
    for (const v of variants) {
      const { calls, threads } = buildBlock(v, "warmup", v.mode === "batched" ? WARMUP_EVENTS : WARMUP_EVENTS / 10);
      await timeBlock(v, calls);
      await check(v, threads);
    }

    const loadBefore = loadavg()
      .map((x) => x.toFixed(2))
      .join(" ");
    const rounds = new Map<Variant, { seconds: number; cpuSeconds: number; events: number }[]>(variants.map((v) => [v, []]));
    const counted = new Map<Variant, { events: number; appends: number }>(variants.map((v) => [v, { events: 0, appends: 0 }]));
    for (let round = 0; round < ROUNDS; round++) {
      const shift = round % variants.length;
      for (const v of [...variants.slice(shift), ...variants.slice(0, shift)]) {
        const total = v.mode === "batched" ? batchedEvents : singleEvents;
        const events = Math.floor(total / ROUNDS) + (round < total % ROUNDS ? 1 : 0);
        const { calls, threads } = buildBlock(v, `r${round}`, events);
        const { seconds, cpuSeconds } = await timeBlock(v, calls);
        const appended = [...threads.values()].reduce((s, n) => s + n, 0);
        rounds.get(v)!.push({ seconds, cpuSeconds, events: appended });
        const c = counted.get(v)!;
        c.events += appended;
        c.appends += calls.reduce((s, list) => s + list.length, 0);
        await check(v, threads);
      }
    }

    console.log(`\neart bench: audit append throughput per store (events per second)`);
    console.log(`node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"})`);
    console.log(
      `batched: ${BATCH} events per append over ${THREADS_PER_BATCH} threads; single: 1 event per append over ${THREADS_PER_BATCH} threads; ${ROUNDS} rounds, variant order rotating; ` +
        `${WARMUP_EVENTS} warm-up events per batched variant`,
    );
    console.log(`JSONL: fsync off (the default), lock file per append; SQLite: WAL, synchronous=${synchronous}; ${pgInfo}`);
    console.log(`load average before the timed rounds: ${loadBefore} (CPU/wall below: this process's CPU time over wall time, GC threads included; for PostgreSQL the rest is the server and the network)`);
    console.table(
      variants.map((v) => {
        const r = rounds.get(v)!;
        const c = counted.get(v)!;
        const perRound = r.map((x) => rate(x.events, x.seconds));
        const totalSeconds = r.reduce((a, x) => a + x.seconds, 0);
        const cpuSeconds = r.reduce((a, x) => a + x.cpuSeconds, 0);
        const overall = rate(c.events, totalSeconds);
        return {
          variant: v.name,
          events: c.events,
          appends: c.appends,
          "events/s": fmt(overall),
          "slowest round": fmt(Math.min(...perRound)),
          "fastest round": fmt(Math.max(...perRound)),
          "µs/append": ((totalSeconds * 1e6) / c.appends).toFixed(1),
          "CPU/wall": `${Math.round((cpuSeconds / totalSeconds) * 100)}%`,
          target: v.target ? `≥ ${fmt(v.target)}` : "",
          met: v.target ? (overall >= v.target ? "MET" : "NOT MET") : "",
        };
      }),
    );
    for (const v of variants.filter((x) => x.target)) {
      const c = counted.get(v)!;
      const overall = rate(c.events, rounds.get(v)!.reduce((a, x) => a + x.seconds, 0));
      console.log(`target ${v.name}: ≥ ${fmt(v.target!)} events/s: ${overall >= v.target! ? "MET" : "NOT MET"} (${fmt(overall)})`);
    }
    if (!withPostgres) console.log(`target PostgreSQL, batched: ≥ ${fmt(AUDIT_TARGETS.postgres)} events/s: NOT MEASURED (skipped)`);
    console.log(`checked outside the clock: every thread's chain verifies with exactly the events appended`);
    console.log(`(audit section: ${((performance.now() - started) / 1_000).toFixed(1)} s)`);
  } finally {
    for (const v of variants) await v.close();
    if (admin) {
      // Only this run's rows (its unique thread prefix): the tables are shared with tests.
      for (const table of ["eart_audit_events", "eart_audit_heads"]) {
        await admin.query(`DELETE FROM ${table} WHERE left(thread_id, length($1)) = $1`, [`${RUN_PREFIX}-`]).catch(() => {});
      }
      await admin.end();
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
