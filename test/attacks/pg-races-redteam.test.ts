/**
 * Red-team pass on CONCURRENCY on a real PostgreSQL: the prebuilt governed agent
 * (`createGovernedAgent`) and the createAgent middleware (`governanceMiddleware` + `guardAgent`), each
 * on LangGraph's `PostgresSaver` with eart's PostgreSQL audit log, effect ledger and thread lock (the
 * ledger and lock the checkpointer's pool gets by default). Several agent instances stand for several
 * processes: each has its own pool (and so its own advisory-lock session) on one database, in a
 * schema of this file's own. An untrusted caller fires requests at the same moment, as through an
 * HTTP API; a flaky network or a DBA terminates sessions mid-run. The refund tool pays on every call
 * (no dedupe by key), so a second execution shows as a second payment.
 *
 * Attacked:
 * 1. two supervisors approving the same paused $740 refund at once, from two instances on two pools,
 *    two instances on one pool, and one instance twice;
 * 2. an approve racing a reject, new customer input, a state write (`updateState` through the
 *    guarded graph) and a continue (`null` input), at the same moment in both orders, and while the
 *    approved refund runs;
 * 3. 20 threads paused and approved by three instances at once (two share a pool of 2 connections,
 *    the third has its own pool of 2): 60 concurrent resumes;
 * 4. sessions terminated mid-run: every session of the instance while the refund runs; only the
 *    pool's; the checkpoint tables cut off right after the approval is recorded, and right after the
 *    refund succeeded; a single checkpointer connection terminated; a client that disconnects
 *    (AbortSignal, a cancelled stream) while the refund runs;
 * 5. a thread lock lost mid-run (terminated session, and a silent partition) while another
 *    supervisor answers; a caller-given `durability` with a failure after the refund ran.
 *
 * Held (plain `it`): exactly one of two or three concurrent approvals runs (the others
 * ThreadBusyError, or thread_not_paused once it is over), one refund, one `approval.decided`, chains
 * verify, on both agents, across pools and within one; a racing reject / input / updateState /
 * continue is refused typed (thread_busy, thread_awaiting_approval, thread_not_paused), an approval
 * that lost the race is refused typed and still answerable (nothing silently dropped), and the
 * thread finishes; 60 resumes over 20 threads on pools of 2 connections finish without deadlock, one
 * refund per thread; sessions terminated mid-refund never crash the process (no unhandled
 * rejection), fail the run with ThreadLockLostError, and the refund never runs again on the next
 * attempt (it goes to a supervisor as outcome_unknown, who marks it done) while the first refund has
 * not even returned; the pool's sessions alone terminated: the run completes; an approval whose step
 * was cut off before it was saved stands (a second supervisor's reject is refused
 * approval_already_answered) and a continue acts on it once; with the default durability, a cut
 * after the refund leaves the thread answered, not re-askable; a client that disconnects mid-refund
 * (abort, cancelled stream) frees the thread, and the next attempt pays nothing again; one
 * checkpointer connection terminated during the prebuilt agent's approval is retried and completes.
 *
 * Found, and closed (the tests are plain `it` now, with "Was a hole" comments):
 * - MEDIUM, both agents: the guard's `durability: "sync"` was only a default; with a caller's
 *   "exit", a failure after the approved refund ran left the request waiting with no stored
 *   answer, and a second supervisor's reject was accepted: the customer was told "rejected" for a
 *   refund that was paid. The guard now always runs with "sync" (graphs/resume-guard.ts);
 * - LOW, middleware: guardAgent did not guard a plain `PostgresSaver` as createGovernedAgent does:
 *   one terminated checkpointer connection failed the approval with node-postgres' raw error. It
 *   does now (middleware/governance.ts guardAgent, guardCheckpointer);
 * - MEDIUM, both agents: the thread lock was a lease with no fence. A run whose lock session the
 *   server dropped without a word (partition, failover) went on for up to 15 s; a second
 *   supervisor's reject in that window was accepted and delivered, and then the first run recorded
 *   its approval and paid the rejected refund. Each hold now writes a fencing token that the audit
 *   log and the ledger check in the transaction of each write of the run (src/stores/postgres/fence.ts);
 * - LOW, both agents: a run aborted because its lock session was terminated still appended its
 *   approval.decided after the other supervisor's reject finished the thread (nothing was paid).
 *   The same fence refuses it.
 */
import { EventEmitter } from "node:events";
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { Command } from "@langchain/langgraph";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import Database from "better-sqlite3";
import { createAgent } from "langchain";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  eartErrorOf,
  pendingApproval,
  pendingRecovery,
  StoreError,
  ThreadBusyError,
  ThreadLockLostError,
  threadLockFor,
  type AuditEvent,
  type AuditEventInput,
  type ThreadLock,
} from "eart";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { PostgresAuditLog, PostgresEffectLedger, PostgresThreadLock, serialisedSetup } from "eart/postgres";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { decide } from "../support/decisions.js";
import { gate, inSchema, type Gate } from "../support/gates.js";
import { freezingProxy } from "../support/pg-proxy.js";
import { ask, config, refund, refundSetup, registry, turnsModel } from "../support/refund.js";

// A real PostgreSQL. No skip: without it this file fails, loudly.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const runId = `${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`;
const schema = `eart_zzrace_${runId}`;
const unique = (tag: string) => `zzr-${tag}-${runId}-${Math.random().toString(36).slice(2, 8)}`;
let apps = 0;
const appName = (tag: string) => `zzr_${tag}_${runId}_${++apps}`;

const KINDS = ["prebuilt", "middleware"] as const;
type Kind = (typeof KINDS)[number];

let admin: pg.Pool;
/** What the current test opened (pools, locks, proxies), closed after it. */
const opened: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  admin = new pg.Pool({ connectionString: url, max: 3 });
  admin.on("error", () => {});
  await admin.query(`CREATE SCHEMA "${schema}"`);
});

afterEach(async () => {
  for (const close of opened.splice(0).reverse()) await close().catch(() => {});
});

afterAll(async () => {
  if (!admin) return;
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
  await admin.end();
});

/** A connection string into this file's schema, under an application name its sessions can be found (and terminated) by. */
const connectionString = (app: string) => inSchema(url, schema, app);

// ─── payments: the refund gateway pays on every call ─────────────────────────────────────────

type Paid = { threadId: string; toolCallId: string; by: string };
const paid: Paid[] = [];
const payments = new EventEmitter();
const paidOn = (threadId: string) => paid.filter((p) => p.threadId === threadId);
/** Resolves at the first payment on the thread. */
const firstPayment = (threadId: string) =>
  paidOn(threadId).length > 0 ? Promise.resolve() : new Promise<void>((resolve) => payments.on(threadId, () => resolve()));


/** Cuts `a` off from the checkpoints ({@link cutOff}) right after it appends an event of `type`; `restore` lets it back and says whether it was cut. */
function cutOffAfter(a: Instance, type: string): { restore(): Promise<boolean> } {
  let restore: (() => Promise<void>) | undefined;
  a.auditLog.afterAppend = async (events) => {
    if (!events.some((e) => e.type === type)) return;
    a.auditLog.afterAppend = undefined;
    restore = await cutOff(a.app);
  };
  return {
    async restore() {
      await restore?.();
      return restore !== undefined;
    },
  };
}

/** A gate that `a`'s next append holding an event of `type` waits at (before it is stored). */
function stallBefore(a: Instance, type: string): Gate {
  const stalled = gate();
  a.auditLog.beforeAppend = async (events) => {
    if (!events.some((e) => e.type === type)) return;
    a.auditLog.beforeAppend = undefined;
    stalled.enter();
    await stalled.wait;
  };
  return stalled;
}

/** A gate the refund tool waits at (after paying) while one is armed; `release` opens it and disarms. */
function holds() {
  let current: Gate | undefined;
  return {
    arm: () => (current = gate()),
    get: () => current,
    release: () => {
      const g = current;
      current = undefined;
      g?.open();
    },
  };
}
type Holds = ReturnType<typeof holds>;

/** issue_refund as a gateway that pays on every call, then (when a gate is armed) waits inside the tool with its outcome not yet returned. */
function payingRefund(by: string, hold?: Holds): StructuredToolInterface {
  return tool(
    async (args: { orderId: string; amount: number }, cfg) => {
      const threadId = String((cfg as { configurable?: { thread_id?: unknown } }).configurable?.thread_id);
      paid.push({ threadId, toolCallId: String((cfg as { toolCall?: { id?: string } }).toolCall?.id), by });
      payments.emit(threadId);
      const g = hold?.get();
      if (g) {
        g.enter();
        await g.wait;
      }
      return JSON.stringify({ orderId: args.orderId, amount: args.amount, status: "refunded" });
    },
    {
      name: "issue_refund",
      description: "Refund an amount in dollars for an order.",
      schema: z.object({ orderId: z.string(), amount: z.number().positive(), reason: z.string().optional() }),
    },
  ) as unknown as StructuredToolInterface;
}

// ─── stores and agents: one instance stands for one process ──────────────────────────────────

/** eart's PostgreSQL audit log, with hooks before and after each append (to stall a run, or cut the database off, at a chosen moment). */
class HookedAuditLog extends PostgresAuditLog {
  beforeAppend: ((events: readonly AuditEventInput[]) => Promise<void>) | undefined;
  afterAppend: ((events: AuditEvent[]) => Promise<void>) | undefined;
  /** Called once an append that `beforeAppend` held has been made or refused. */
  heldSettled: (() => void) | undefined;
  override async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
    const before = this.beforeAppend;
    await before?.(Array.isArray(events) ? events : [events as AuditEventInput]);
    try {
      const stored = await super.append(events);
      await this.afterAppend?.(stored);
      return stored;
    } finally {
      if (before && this.beforeAppend === undefined) {
        this.heldSettled?.();
        this.heldSettled = undefined;
      }
    }
  }
}

/** A pool on the shared database, LangGraph's PostgresSaver (plain, as LangChain's docs make it) and eart's audit log on it. */
async function openStores(app: string, max = 3) {
  const pool = new pg.Pool({ connectionString: connectionString(app), max });
  const checkpointer = new PostgresSaver(pool, undefined, { schema });
  opened.push(async () => {
    await (threadLockFor(checkpointer) as PostgresThreadLock).close();
    if (!pool.ended) await pool.end();
  });
  await serialisedSetup(pool, () => checkpointer.setup());
  return { app, pool, checkpointer, auditLog: new HookedAuditLog({ pool }) };
}
type Stores = Awaited<ReturnType<typeof openStores>>;

interface Agent {
  invoke(input: unknown, config: unknown): Promise<unknown>;
  stream(input: unknown, config: unknown): Promise<ReadableStream<unknown>>;
  getState(config: unknown): Promise<{ values: unknown; next: string[] }>;
  updateState(config: unknown, values: unknown): Promise<unknown>;
}
type Instance = Stores & { kind: Kind; agent: Agent };

/**
 * One instance of the refund agent of `kind` on `stores` (its own, unless shared): the model
 * proposes the $740 refund `c1`, then answers; the prebuilt agent with its default ledger and thread
 * lock for the PostgresSaver, the middleware agent with eart's PostgreSQL ledger on the pool and
 * guardAgent's default lock. Supervisors resolve recoveries.
 */
async function instance(kind: Kind, opts: { on?: Stores; max?: number; hold?: Holds; lock?: ThreadLock } = {}): Promise<Instance> {
  const stores = opts.on ?? (await openStores(appName(kind === "prebuilt" ? "pre" : "mw"), opts.max));
  const turns = [[refund("c1", 740)]];
  const pay = payingRefund(stores.app, opts.hold);
  if (kind === "prebuilt") {
    const s = refundSetup(turns, {
      checkpointer: stores.checkpointer,
      auditLog: stores.auditLog,
      tools: (t) => [t.lookupOrder, t.viewPaymentDetails, pay],
      agent: { recoveryRoles: ["supervisor"], ...(opts.lock ? { threadLock: opts.lock } : {}) },
    });
    return { ...stores, kind, agent: s.agent as unknown as Agent };
  }
  const real = createRefundTools(new Database(":memory:"));
  const governance = governanceMiddleware({
    identities: registry,
    policy: refundPolicy,
    auditLog: stores.auditLog,
    ledger: new PostgresEffectLedger({ pool: stores.pool }),
    recoveryRoles: ["supervisor"],
  });
  const agent = guardAgent(
    createAgent({ model: turnsModel(turns), tools: [real.lookupOrder, real.viewPaymentDetails, pay], checkpointer: stores.checkpointer, middleware: [governance] }),
    governance,
    opts.lock ? { lock: opts.lock } : {},
  );
  return { ...stores, kind, agent: agent as unknown as Agent };
}

// ─── answers, outcomes, checks ───────────────────────────────────────────────────────────────

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };
const settle = (p: Promise<unknown>): Promise<Outcome> =>
  p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
/** "ok", the eart error code, or "untyped: …" for anything else. */
const codeOf = (o: Outcome) => (o.ok ? "ok" : (eartErrorOf(o.error)?.code ?? `untyped: ${String((o.error as Error)?.message ?? o.error).slice(0, 200)}`));

type Request = NonNullable<ReturnType<typeof pendingApproval>>;
const answer = (request: Request, type: "approve" | "reject") => new Command({ resume: { decisions: [decide(request, "c1", type)] } });

/** Cara asks for the $740 refund on a new thread; it pauses for a supervisor. */
async function pausedThread(i: Instance, tag: string): Promise<{ thread: string; request: Request }> {
  const thread = unique(tag);
  const request = pendingApproval(await i.agent.invoke(ask(), config(thread)));
  expect(request?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
  return { thread, request: request! };
}

const messagesOf = (values: unknown) => ((values as { messages?: BaseMessage[] }).messages ?? []) as BaseMessage[];
const decidedOn = async (i: Instance, thread: string) =>
  (await i.auditLog.read(thread)).filter((e) => e.type === "approval.decided").map((e) => `${String(e.data.decision)}:${String(e.data.approverId)}`);

/**
 * Drives a thread to its end as its people would: a recovery request is resolved by sam (mark_done:
 * the gateway's records show the refund went out), a stopped run is continued by cara. Throws when
 * the thread is stuck (still waiting after a few rounds). Returns the final state.
 */
async function driveToEnd(i: Instance, thread: string) {
  for (let round = 0; round < 4; round++) {
    const state = await i.agent.getState(config(thread));
    const recovery = pendingRecovery(state);
    if (recovery) {
      const item = recovery.requests[0]!;
      await i.agent.invoke(new Command({ resume: { decisions: [decide(recovery, item.toolCallId, "mark_done", { attempt: item.attempt, result: { status: "refunded" } })] } }), config(thread, "sam"));
      continue;
    }
    if (pendingApproval(state)) {
      // An approval eart recorded as accepted, in a step that stopped before it was saved: continued to act on it.
      const continued = await settle(i.agent.invoke(null, config(thread)));
      if (!continued.ok) throw new Error(`thread ${thread} still waits for an approval nobody can give: ${codeOf(continued)}`);
      continue;
    }
    if (state.next.length === 0 && AIMessage.isInstance(messagesOf(state.values).at(-1)) && (messagesOf(state.values).at(-1) as AIMessage).tool_calls?.length === 0) return state;
    await i.agent.invoke(null, config(thread));
  }
  throw new Error(`thread ${thread} did not reach its end`);
}

/** The thread finished: nothing waits, nothing is left to run, the model had the last word. */
async function expectFinished(i: Instance, thread: string) {
  const state = await i.agent.getState(config(thread));
  expect(pendingApproval(state)).toBeUndefined();
  expect(pendingRecovery(state)).toBeUndefined();
  expect(state.next).toEqual([]);
  const last = messagesOf(state.values).at(-1);
  expect(AIMessage.isInstance(last)).toBe(true);
  return state;
}

async function expectChainVerifies(i: Instance, thread: string) {
  expect(await i.auditLog.verify(thread)).toMatchObject({ ok: true, threadId: thread });
}

// ─── PostgreSQL faults ───────────────────────────────────────────────────────────────────────

/** Terminates every session of an application (pool and thread lock), waiting until they are gone (so their locks are released); returns how many. */
async function terminateAll(app: string): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))::int AS n FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
    [app],
  );
  return rows[0]!.n;
}

const HOLDS_ADVISORY = `EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)`;

/** Terminates the sessions of an application that hold an advisory lock (its thread lock's); returns how many. */
async function terminateLockSession(app: string): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))::int AS n FROM pg_stat_activity a WHERE application_name = $1 AND ${HOLDS_ADVISORY}`,
    [app],
  );
  return rows[0]!.n;
}

/** Terminates the sessions of an application's pool (none holding an advisory lock); returns how many. */
async function terminatePoolSessions(app: string): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))::int AS n FROM pg_stat_activity a WHERE application_name = $1 AND NOT ${HOLDS_ADVISORY}`,
    [app],
  );
  return rows[0]!.n;
}

/**
 * Cuts an application off from the checkpoints table (as a dying server or a partition would):
 * the table is locked, and every session of the application that waits on it is terminated, until
 * the returned function is called. (One table: a lock on several, taken while writers hold some,
 * would deadlock with them.)
 */
async function cutOff(app: string): Promise<() => Promise<void>> {
  const holder = await admin.connect();
  await holder.query(`BEGIN; LOCK TABLE "${schema}".checkpoints IN ACCESS EXCLUSIVE MODE`);
  let on = true;
  const killer = (async () => {
    while (on) {
      await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`, [app]).catch(() => {});
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return async () => {
    on = false;
    await killer;
    await holder.query("COMMIT").catch(() => {});
    holder.release();
  };
}

// ═════════════════════════════════════════════════════════════════════════════════════════════
describe("1. two supervisors approve the same paused $740 refund at the same moment", () => {
  for (const kind of KINDS) {
    it(`${kind}: sam on one instance and sue on another (two pools, two lock sessions): one refund, one approval.decided, the other ThreadBusyError; the chain verifies`, async () => {
      const hold = holds();
      const a = await instance(kind, { hold });
      const b = await instance(kind, { hold });
      const { thread, request } = await pausedThread(a, "two-approvals");
      const entered = hold.arm().entered;
      const runs = [settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam"))), settle(b.agent.invoke(answer(request, "approve"), config(thread, "sue")))];
      // The winner holds the thread inside the refund until the loser has been answered.
      const first = await Promise.race(runs);
      await entered;
      expect(first.ok).toBe(false);
      expect(eartErrorOf((first as { error: unknown }).error)).toBeInstanceOf(ThreadBusyError);
      hold.release();
      const outcomes = await Promise.all(runs);
      expect(outcomes.map(codeOf).sort()).toEqual(["ok", "thread_busy"]);
      expect(paidOn(thread)).toHaveLength(1);
      expect(await decidedOn(a, thread)).toHaveLength(1);
      await expectFinished(b, thread);
      await expectChainVerifies(b, thread);
      // Sent again once it is over: refused, typed, nothing runs.
      expect(codeOf(await settle(b.agent.invoke(answer(request, "approve"), config(thread, "sue"))))).toBe("thread_not_paused");
      expect(paidOn(thread)).toHaveLength(1);
    });

    it(`${kind}: two instances sharing one pool, and one instance twice, all at once (Promise.all): exactly one runs the refund`, async () => {
      const a = await instance(kind);
      const b = await instance(kind, { on: a });
      const { thread, request } = await pausedThread(a, "three-approvals");
      const outcomes = await Promise.all([
        settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam"))),
        settle(b.agent.invoke(answer(request, "approve"), config(thread, "sue"))),
        settle(a.agent.invoke(answer(request, "approve"), config(thread, "sue"))),
      ]);
      const codes = outcomes.map(codeOf);
      expect(codes.filter((c) => c === "ok")).toHaveLength(1);
      expect(codes.filter((c) => c !== "ok").every((c) => c === "thread_busy" || c === "thread_not_paused")).toBe(true);
      expect(paidOn(thread)).toHaveLength(1);
      expect(await decidedOn(a, thread)).toHaveLength(1);
      await expectFinished(a, thread);
      await expectChainVerifies(a, thread);
    });
  }
});

// ═════════════════════════════════════════════════════════════════════════════════════════════
describe("2. an approval racing a reject, new input, a state write or a continue", () => {
  const others = {
    reject: (i: Instance, thread: string, request: Request) => i.agent.invoke(answer(request, "reject"), config(thread, "sue")),
    input: (i: Instance, thread: string) => i.agent.invoke({ messages: [new HumanMessage("hello? where is my refund?")] }, config(thread)),
    updateState: (i: Instance, thread: string) => i.agent.updateState(config(thread), { messages: [new HumanMessage("note: customer called again")] }),
    continue: (i: Instance, thread: string) => i.agent.invoke(null, config(thread)),
  };
  const REFUSALS = ["thread_busy", "thread_awaiting_approval", "thread_not_paused"];

  for (const kind of KINDS) {
    it(`${kind}: each at the same moment as sam's approval, in both orders, from another instance: the loser is refused typed, nothing runs twice, nothing is lost, the thread finishes`, async () => {
      const a = await instance(kind);
      const b = await instance(kind);
      for (const [name, other] of Object.entries(others)) {
        for (const otherFirst of [true, false]) {
          const { thread, request } = await pausedThread(a, `${kind}-vs-${name}`);
          // Both sent in the same tick, in the given order; which one takes the thread's lock is up to the race.
          let sentApproval: Promise<Outcome>;
          let sentRival: Promise<Outcome>;
          if (otherFirst) {
            sentRival = settle(other(b, thread, request));
            sentApproval = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
          } else {
            sentApproval = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
            sentRival = settle(other(b, thread, request));
          }
          const [approval, rival] = await Promise.all([sentApproval, sentRival]);
          const what = `${kind} ${name} ${otherFirst ? "first" : "second"}: approval ${codeOf(approval)}, ${name} ${codeOf(rival)}`;
          expect(approval.ok || codeOf(approval) === "thread_busy" || codeOf(approval) === "thread_not_paused", what).toBe(true);
          expect(rival.ok || REFUSALS.includes(codeOf(rival)), what).toBe(true);
          const rejected = name === "reject" && rival.ok;
          if (rejected) expect(approval.ok, what).toBe(false);
          // A refused approval is not lost: the thread still waits for it, and sam sends it again.
          if (!approval.ok && !rejected) {
            expect(pendingApproval(await a.agent.getState(config(thread))), what).toMatchObject({ requests: [{ toolCallId: "c1" }] });
            expect(codeOf(await settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")))), what).toBe("ok");
          }
          expect(paidOn(thread), what).toHaveLength(rejected ? 0 : 1);
          expect(await decidedOn(a, thread), what).toEqual([rejected ? "reject:sue" : "approve:sam"]);
          const state = await b.agent.getState(config(thread));
          expect(pendingApproval(state), what).toBeUndefined();
          expect(pendingRecovery(state), what).toBeUndefined();
          expect(state.next, what).toEqual([]);
          await expectChainVerifies(b, thread);
        }
      }
    });

    it(`${kind}: while the approved refund runs, a reject, new input, a state write, a continue and a second approval all get ThreadBusyError; the refund runs once`, async () => {
      const hold = holds();
      const a = await instance(kind, { hold });
      const b = await instance(kind);
      const { thread, request } = await pausedThread(a, `${kind}-during-refund`);
      const entered = hold.arm().entered;
      const run = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
      await entered;
      const rivals = await Promise.all([...Object.values(others).map((o) => settle(o(b, thread, request))), settle(b.agent.invoke(answer(request, "approve"), config(thread, "sue")))]);
      hold.release();
      expect(codeOf(await run)).toBe("ok");
      expect(rivals.map(codeOf)).toEqual(["thread_busy", "thread_busy", "thread_busy", "thread_busy", "thread_busy"]);
      expect(paidOn(thread)).toHaveLength(1);
      expect(await decidedOn(a, thread)).toEqual(["approve:sam"]);
      // The rivals wrote nothing: the customer's message and the note are nowhere in the thread.
      const state = await expectFinished(b, thread);
      expect(messagesOf(state.values).map((m) => String(m.content)).filter((c) => c.includes("hello?") || c.includes("note:"))).toEqual([]);
      await expectChainVerifies(b, thread);
    });
  }
});

// ═════════════════════════════════════════════════════════════════════════════════════════════
describe("3. twenty threads approved by three instances at once on pools of two connections", () => {
  for (const kind of KINDS) {
    it(`${kind}: 60 concurrent resumes (two instances share a pool of 2, the third has its own pool of 2): no deadlock, one refund and one approval.decided per thread, every chain verifies`, async () => {
      const N = 20;
      const a = await instance(kind, { max: 2 });
      const b = await instance(kind, { on: a });
      const c = await instance(kind, { max: 2 });
      const all = [a, b, c];
      const threads = Array.from({ length: N }, (_, i) => unique(`${kind}-many-${i}`));
      const requests = await Promise.all(
        threads.map(async (thread, i) => {
          const request = pendingApproval(await all[i % 3]!.agent.invoke(ask(), config(thread)));
          expect(request?.requests.map((r) => r.toolCallId), thread).toEqual(["c1"]);
          return request!;
        }),
      );
      const outcomes = await Promise.all(
        threads.map((thread, i) =>
          Promise.all([
            settle(a.agent.invoke(answer(requests[i]!, "approve"), config(thread, "sam"))),
            settle(b.agent.invoke(answer(requests[i]!, "approve"), config(thread, "sue"))),
            settle(c.agent.invoke(answer(requests[i]!, "approve"), config(thread, "sam"))),
          ]),
        ),
      );
      expect(a.pool.totalCount).toBeLessThanOrEqual(2);
      expect(c.pool.totalCount).toBeLessThanOrEqual(2);
      for (const [i, thread] of threads.entries()) {
        const codes = outcomes[i]!.map(codeOf);
        expect(codes.filter((x) => x === "ok"), `${thread}: ${codes.join(", ")}`).toHaveLength(1);
        expect(codes.filter((x) => x !== "ok").every((x) => x === "thread_busy" || x === "thread_not_paused"), `${thread}: ${codes.join(", ")}`).toBe(true);
        expect(paidOn(thread), thread).toHaveLength(1);
        expect(await decidedOn(a, thread), thread).toHaveLength(1);
        await expectChainVerifies(c, thread);
      }
    });
  }
});

// ═════════════════════════════════════════════════════════════════════════════════════════════
describe("4. sessions terminated, connections cut, clients gone mid-run", () => {
  for (const kind of KINDS) {
    it(`${kind}: every session of the instance (pool and lock) terminated while the refund runs: a typed error, no crash; the next attempt does not pay again; a supervisor resolves it and the thread ends`, async () => {
      const hold = holds();
      const a = await instance(kind, { hold });
      const b = await instance(kind);
      const { thread, request } = await pausedThread(a, `${kind}-kill-all`);
      const entered = hold.arm().entered;
      const run = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
      await entered;
      expect(await terminateAll(a.app)).toBeGreaterThan(0);
      const out = await run;
      expect(eartErrorOf((out as { error?: unknown }).error)).toBeInstanceOf(ThreadLockLostError);
      // The other instance takes over at once, while the first refund has not even returned.
      const next = await settle(b.agent.invoke(null, config(thread)));
      expect(codeOf(next)).toBe("ok");
      expect(pendingRecovery(await b.agent.getState(config(thread)))?.requests).toEqual([expect.objectContaining({ toolCallId: "c1", reason: "outcome_unknown" })]);
      hold.release();
      // A second supervisor's approval of the old request, or a continue, runs nothing.
      expect(codeOf(await settle(b.agent.invoke(answer(request, "approve"), config(thread, "sue"))))).toBe("approval_resume_invalid");
      expect(codeOf(await settle(b.agent.invoke(null, config(thread))))).toBe("thread_awaiting_approval");
      expect(paidOn(thread)).toHaveLength(1);
      await driveToEnd(b, thread);
      await expectFinished(b, thread);
      expect(paidOn(thread)).toHaveLength(1);
      expect(await decidedOn(b, thread)).toEqual(["approve:sam"]);
      await expectChainVerifies(b, thread);
    });

    it(`${kind}: the pool's sessions (not the lock's) terminated while the refund runs: the run completes, once`, async () => {
      const hold = holds();
      const a = await instance(kind, { hold });
      const { thread, request } = await pausedThread(a, `${kind}-kill-pool`);
      const entered = hold.arm().entered;
      const run = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
      await entered;
      expect(await terminatePoolSessions(a.app)).toBeGreaterThan(0);
      hold.release();
      expect(codeOf(await run)).toBe("ok");
      expect(paidOn(thread)).toHaveLength(1);
      await expectFinished(a, thread);
      await expectChainVerifies(a, thread);
    });

    it(`${kind}: the checkpoints cut off right after sam's approval is recorded: the run fails; sue's reject is refused (approval_already_answered); a continue acts on sam's approval once`, async () => {
      const a = await instance(kind);
      const b = await instance(kind);
      const { thread, request } = await pausedThread(a, `${kind}-cut-after-approval`);
      const cut = cutOffAfter(a, "approval.decided");
      const out = await settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
      expect(await cut.restore()).toBe(true);
      expect(out.ok).toBe(false);
      if (kind === "prebuilt") {
        expect(eartErrorOf((out as { error: unknown }).error)).toBeInstanceOf(StoreError);
        expect(eartErrorOf((out as { error: unknown }).error)).toMatchObject({ code: "store_unavailable", store: "checkpointer" });
      }
      expect(codeOf(await settle(b.agent.invoke(answer(request, "reject"), config(thread, "sue"))))).toBe("approval_already_answered");
      await driveToEnd(b, thread);
      expect(paidOn(thread)).toHaveLength(1);
      expect(await decidedOn(b, thread)).toEqual(["approve:sam"]);
      await expectChainVerifies(b, thread);
    });

    it(`${kind}: the checkpoints cut off right after the approved refund succeeded (default durability): sue's reject is refused; the thread ends with one refund`, async () => {
      const a = await instance(kind);
      const b = await instance(kind);
      const { thread, request } = await pausedThread(a, `${kind}-cut-after-refund`);
      const cut = cutOffAfter(a, "tool.succeeded");
      const out = await settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
      await cut.restore();
      expect(out.ok).toBe(false);
      const reject = codeOf(await settle(b.agent.invoke(answer(request, "reject"), config(thread, "sue"))));
      expect(["approval_already_answered", "thread_not_paused"]).toContain(reject);
      await driveToEnd(b, thread);
      expect(paidOn(thread)).toHaveLength(1);
      expect(await decidedOn(b, thread)).toEqual(["approve:sam"]);
      await expectChainVerifies(b, thread);
    });

    for (const how of ["abort signal", "stream cancelled"] as const) {
      it(`${kind}: the client disconnects while the refund runs (${how}): the thread is freed, the next attempt does not pay again, and it ends`, async () => {
        const hold = holds();
        const a = await instance(kind, { hold });
        const b = await instance(kind);
        const { thread, request } = await pausedThread(a, `${kind}-${how.replace(" ", "-")}`);
        const entered = hold.arm().entered;
        let gone: Promise<unknown>;
        if (how === "abort signal") {
          const controller = new AbortController();
          const run = settle(a.agent.invoke(answer(request, "approve"), { ...config(thread, "sam"), signal: controller.signal }));
          await entered;
          controller.abort(new Error("the client went away"));
          gone = run;
          expect((await run).ok).toBe(false);
        } else {
          const reader = (await a.agent.stream(answer(request, "approve"), { ...config(thread, "sam"), streamMode: "values" })).getReader();
          const reading = settle(reader.read());
          await entered;
          gone = Promise.all([settle(reader.cancel("the client went away")), reading]);
        }
        // Another instance, at once: refused while the run still holds the thread, or taken over.
        const next = codeOf(await settle(b.agent.invoke(null, config(thread))));
        expect(["ok", "thread_busy"]).toContain(next);
        hold.release();
        await gone;
        await driveToEnd(b, thread);
        await expectFinished(b, thread);
        expect(paidOn(thread)).toHaveLength(1);
        expect(await decidedOn(b, thread)).toEqual(["approve:sam"]);
        await expectChainVerifies(b, thread);
      });
    }
  }

  it("prebuilt: one checkpointer connection terminated during the approval is run once more on a new connection: the approval completes", async () => {
    await singleCheckpointerKill("prebuilt");
  });

  // Was a hole (low): the middleware agent did not put a plain PostgresSaver under eart's store
  // faults as createGovernedAgent does: one checkpointer connection terminated during sam's approval
  // (a failover, an idle killer, pg_terminate_backend) failed the approval with node-postgres' raw
  // "terminating connection due to administrator command". Now guardAgent calls guardCheckpointer
  // on the agent's checkpointer: the idempotent statement runs once more and the approval completes.
  it("middleware: one checkpointer connection terminated during the approval is run once more on a new connection: the approval completes", async () => {
    await singleCheckpointerKill("middleware");
  });
});

/** The approval run while the checkpoints table is locked; the session that waits on it is terminated once, then the table is let go. */
async function singleCheckpointerKill(kind: Kind) {
  const a = await instance(kind);
  const { thread, request } = await pausedThread(a, `${kind}-one-kill`);
  const holder = await admin.connect();
  try {
    await holder.query(`BEGIN; LOCK TABLE "${schema}".checkpoints IN ACCESS EXCLUSIVE MODE`);
    const run = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
    let killed = 0;
    while (killed === 0) {
      await new Promise((r) => setTimeout(r, 10));
      const { rows } = await admin.query<{ n: number }>(
        `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
        [a.app],
      );
      killed = rows[0]!.n;
    }
    await holder.query("COMMIT");
    const out = await run;
    expect(out.ok || eartErrorOf((out as { error: unknown }).error) !== undefined, codeOf(out)).toBe(true);
    if (out.ok) expect(paidOn(thread)).toHaveLength(1);
  } finally {
    await holder.query("ROLLBACK").catch(() => {});
    holder.release();
  }
  // Either way the approval stands and the thread ends with one refund.
  await driveToEnd(a, thread);
  expect(paidOn(thread)).toHaveLength(1);
  expect(await decidedOn(a, thread)).toEqual(["approve:sam"]);
  await expectChainVerifies(a, thread);
}

// ═════════════════════════════════════════════════════════════════════════════════════════════
describe("5. a thread lock lost mid-run, and the caller's durability", () => {
  for (const kind of KINDS) {
    // Was a hole (medium): the thread lock was a lease with no fence. When the lock's session was
    // dropped by the server without the holder hearing of it (a partition, a failover behind a
    // virtual IP, a firewall eating the FIN), the holder's run went on for up to timeoutMs/2 +
    // timeoutMs (10–15 s by default) while another process took the thread. A second supervisor's
    // reject in that window was accepted, recorded and answered ("not refunded"), and then the first
    // run recorded sam's approval and PAID the rejected refund, with two deciding answers in the log.
    // Now each hold writes a new fencing token for the thread, and the audit log and the ledger
    // check the run's token in the transaction of each write: sam's approval.decided is refused
    // (ThreadLockLostError) and nothing of his run is paid or recorded.
    it(`${kind}: the lock's session dropped silently while sam's approval is being decided, and sue rejects meanwhile: the rejected refund is never paid, and one answer decides`, async () => {
      const app = appName(`silent_${kind}`);
      const proxy = await freezingProxy(connectionString(app));
      opened.push(proxy.close);
      const lock = new PostgresThreadLock({ connectionString: proxy.url });
      opened.push(() => lock.close());
      const a = await instance(kind, { on: await openStores(app), lock });
      const b = await instance(kind);
      const { thread, request } = await pausedThread(a, `${kind}-silent-lock`);
      const stalled = stallBefore(a, "approval.decided");
      const runA = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
      await stalled.entered;
      proxy.freeze();
      expect(await terminateLockSession(app)).toBe(1);
      // Sue's reject, from another instance: the thread is free on the server, so it is taken.
      expect(codeOf(await settle(b.agent.invoke(answer(request, "reject"), config(thread, "sue"))))).toBe("ok");
      stalled.open();
      // Sam's run pays now, or gives up: whichever comes first (then the proxy is closed, so its lock hears it).
      await Promise.race([runA, firstPayment(thread)]);
      await proxy.close();
      await runA;
      expect(paidOn(thread)).toHaveLength(0);
      expect(await decidedOn(b, thread)).toEqual(["reject:sue"]);
    });

    // Was a hole (low): a run whose thread lock was lost (its session terminated: the run aborted,
    // its caller got ThreadLockLostError) still recorded the decision its gate was making, after the
    // other supervisor's reject had finished the thread: the log held two deciding answers, the last
    // an approval that never took effect. Now the append checks the run's fence (refused: the run
    // heard its lock was lost, and another hold's token replaced its own), and nothing is appended.
    it(`${kind}: the lock's session terminated while sam's approval is being decided, and sue rejects meanwhile: only sue's answer is recorded as deciding`, async () => {
      const a = await instance(kind);
      const b = await instance(kind);
      const { thread, request } = await pausedThread(a, `${kind}-lost-lock`);
      const stalled = stallBefore(a, "approval.decided");
      const appendMade = new Promise<void>((resolve) => (a.auditLog.heldSettled = resolve));
      const runA = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
      await stalled.entered;
      expect(await terminateLockSession(a.app)).toBe(1);
      // Sam's run is aborted as soon as its lock is reported lost (its gate is still at the append).
      const outA = await runA;
      const reject = await settle(b.agent.invoke(answer(request, "reject"), config(thread, "sue")));
      stalled.open();
      await appendMade;
      expect(codeOf(reject)).toBe("ok");
      expect(eartErrorOf((outA as { error?: unknown }).error)).toBeInstanceOf(ThreadLockLostError);
      expect(paidOn(thread)).toHaveLength(0);
      await expectFinished(b, thread);
      await expectChainVerifies(b, thread);
      expect(await decidedOn(b, thread)).toEqual(["reject:sue"]);
    });

    // Was a hole (medium): guardResumes set `{ durability: "sync", ...given }`, so a caller's own
    // `durability` won (the SDK's run payload carries it; an HTTP layer that forwards run options
    // lets an untrusted caller send "exit"). Nothing of sam's approval run was checkpointed until it
    // ended; a failure after the approved refund ran left the thread paused with no stored answer,
    // and sue's reject was accepted: the customer was told the refund was not made although it was
    // paid. Now the guard always runs with "sync" (a caller's durability and checkpointDuring are
    // overridden), so the approval's step is saved before the refund's effect is.
    it(`${kind}: a caller's durability "exit" and the checkpoints cut off after the approved refund ran: sue's reject is still refused, and the thread never says the paid refund was rejected`, async () => {
      const a = await instance(kind);
      const b = await instance(kind);
      const { thread, request } = await pausedThread(a, `${kind}-durability-exit`);
      const cut = cutOffAfter(a, "tool.succeeded");
      const out = await settle(a.agent.invoke(answer(request, "approve"), { ...config(thread, "sam"), durability: "exit" }));
      expect(await cut.restore()).toBe(true);
      expect(out.ok).toBe(false);
      expect(paidOn(thread)).toHaveLength(1);
      const reject = codeOf(await settle(b.agent.invoke(answer(request, "reject"), config(thread, "sue"))));
      expect(await decidedOn(b, thread)).toEqual(["approve:sam"]);
      expect(["approval_already_answered", "thread_not_paused"]).toContain(reject);
    });
  }
});
