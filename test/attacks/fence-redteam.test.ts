/**
 * Red-team pass on the THREAD-LOCK FENCE (src/threads/lock.ts, src/stores/postgres/fence.ts, the
 * TAKE of src/stores/postgres/thread-lock.ts, the fenced writes of the PostgreSQL and SQLite audit
 * logs and ledgers, graphs/resume-guard.ts `withThreadFence` + `fenceCheckpoints`,
 * graphs/run-thread.ts), on a real PostgreSQL (a schema of this file's own) and SQLite files. Several
 * agent instances (own pools, own lock sessions) stand for several processes. A lock session is
 * dropped "silently" through a freezing TCP proxy (frozen, then terminated on the server: the holder
 * has not heard), or terminated (the holder hears at once). A run is stalled at a chosen write by
 * hooks on the audit log / ledger (gates, no sleeps).
 *
 * Attacked:
 * 1. the fence on every entry path: `stream` (values; ["updates","messages"]) consumed slowly,
 *    `streamEvents` v2 and v3, on the prebuilt agent and the createAgent middleware agent, and
 *    `runThread`/`resumeThread` on a graph of one's own (eart's nodes, no guard): sam's approval
 *    stalled before its `approval.decided`, his lock dropped (silent / terminated), sue's reject from
 *    another instance, then the stall released; plus a control with the fence stripped from the holds;
 * 2. nested runs: a governed agent whose tool runs another governed agent on another thread (both
 *    PostgreSQL): both holding; the outer's lock lost mid-inner-run; the inner's lock lost;
 * 3. false refusals: 20 threads x 2 instances on pools of 2 (asked on one, approved on the other,
 *    run again on the first), both agents; a healthy but slow lock session (100 ms each way) across
 *    heartbeats; takes queued on the lock's one session (threads whose last holder's write is in
 *    flight; a burst of acquires on a slow session) while another thread is held;
 * 4. a recovery answer (retry) from a run that lost its lock: stalled before it is recorded, and
 *    stalled right before its ledger `retry` claim while another process holds the thread;
 * 5. the stale run's checkpoint after a takeover (the window the README leaves open): its model
 *    turn appended, then its `put` after the new holder ended the thread ($80 allowed, $740 approved);
 *    the same on SQLite;
 * 6. SQLite: a holder whose loop stalled past staleMs, taken over; a caller's AbortSignal freeing
 *    the thread while the gate's append is in flight (PostgreSQL and SQLite); a caller's config
 *    (`lock: false`, `threadLock: false`, fence-like configurable keys, numeric thread_id,
 *    `checkpoint_id`); `runThread`/`resumeThread` on the middleware agent; a governed agent run from
 *    another agent's tool without detaching it from the caller's config.
 *
 * Held (plain `it`): on every entry path and both agents, silent or terminated, the stale approval's
 * append is refused (ThreadLockLostError; silent: by the token read in its transaction, the run not
 * having heard), the rejected refund is never paid, only sue's reject is recorded as deciding, the
 * chain verifies; the control shows the same asserts fail without the fence (the rejected refund is
 * paid, both answers decide). Nested runs: each write is checked against its own run's fence (the
 * inner run finishes while the outer's lock is taken; the outer's later writes are refused; an inner
 * lost lock does not refuse the outer). No ThreadLockLostError in 80 concurrent legitimate runs over
 * 40 threads on pools of 2, nor on a slow healthy session across heartbeats. A stale retry is
 * neither recorded nor claimed (no attempt, no payment); the holder carries the recorded retry out
 * once. SQLite refuses the stale checkpoint and the stale approval outright. PostgreSQL refuses
 * the late append of a run whose caller aborted once another run took the thread. A caller's config
 * switches nothing off; `checkpoint_id` is refused.
 *
 * Found, and closed (plain `it` now, with "Was a hole" comments):
 * - MEDIUM (5.): the stale run's checkpoint (PostgreSQL fenced no checkpoint of a run that had not
 *   heard) landed after the new holder finished an approved, paid $740 refund and wedged the thread:
 *   a mix of the holder's and the stale run's blobs, an approval request for a call nobody proposed,
 *   a false `state_tamper_detected` on the operator's continue, the customer's answer gone ($80:
 *   rewound to the holder's own step). The guard now confirms each step's checkpoint against the
 *   lock's token on the saver's pool before saving it (ThreadFence.confirm);
 * - LOW (6.): SQLite's fence passed every write of a hold once released, and the guard releases on
 *   the caller's abort while the step is in flight: sam's `approval.decided` was appended after sue's
 *   accepted reject. The SQLite lock now keeps each thread's last holder (eart_thread_fences), which
 *   a released hold's writes are checked against;
 * - LOW, not the fence (6.): `runThread`/`resumeThread`/`continueThread` on the guardAgent middleware
 *   agent always failed with ThreadBusyError (the lock was taken twice). guardAgent now puts its
 *   graph's lock on the agent;
 * - LOW (3b.): a legitimate holder lost its lock (every write refused) when other takes queued on the
 *   lock's one session past `timeoutMs` (a TAKE waits for a last holder's in-flight write; or a burst
 *   on a slow session): the session was ended and every hold on it aborted. A statement's caller now
 *   times out alone; the session ends only when a statement it sent is not answered in time;
 * - LOW, next to the fence (6.): a governed agent invoked from another agent's tool ran as a
 *   subgraph of the caller (ambient checkpoint namespace): the guard's thread-root check passed and
 *   the thread's state was written where no check reads it. The guard now runs it detached from the
 *   caller's config when the caller is another thread's step.
 * Notes (no test here): a run whose lock session is silently dead returns its error only after its
 * release times out (`timeoutMs`). State writes (`updateState`, `bulkUpdateState`) held the lock but
 * ran without `withThreadFence`; they now run under their hold's fence
 * (test/src/thread-fence.test.ts: a SQLite hold taken over while the write was on its way).
 */
import { EventEmitter } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { AsyncLocalStorageProviderSingleton } from "@langchain/core/singletons";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { Annotation, Command, END, MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import { createAgent } from "langchain";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  eartErrorOf,
  pendingApproval,
  pendingRecovery,
  ThreadLockLostError,
  threadLockFor,
  type AuditEvent,
  type AuditEventInput,
  type ThreadLock,
  withThreadFence,
} from "eart";
import { continueThread, createGovernedToolPath, defineApp, resumeThread, routeAfterGovernedTools, routeToGovernedTools, runThread } from "eart/graphs";
import { createIdentityBinding, createModelNode, GovernedChannels } from "eart/nodes";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { PostgresAuditLog, PostgresEffectLedger, PostgresThreadLock, serialisedSetup } from "eart/postgres";
import { SqliteAuditLog } from "eart/sqlite";
import { scriptedModel } from "eart/testing";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { decide } from "../support/decisions.js";
import { gate, inSchema, type Gate } from "../support/gates.js";
import { freezingProxy } from "../support/pg-proxy.js";
import { ask, config, lookup, refund, refundSetup, registry, turnsModel, type Call } from "../support/refund.js";

// A real PostgreSQL. No skip: without it this file fails, loudly.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const runId = `${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`;
const schema = `eart_zzfence_${runId}`;
const unique = (tag: string) => `zzf-${tag}-${runId}-${Math.random().toString(36).slice(2, 8)}`;
let apps = 0;
const appName = (tag: string) => `zzf_${tag}_${runId}_${++apps}`;

const KINDS = ["prebuilt", "middleware"] as const;
type Kind = (typeof KINDS)[number];

let admin: pg.Pool;
/** What the current test opened (pools, locks, proxies, files), closed after it. */
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

// ─── gates and payments ──────────────────────────────────────────────────────────────────────


type Paid = { threadId: string; toolCallId: string; amount: number; by: string };
const paid: Paid[] = [];
const payments = new EventEmitter();
payments.setMaxListeners(0);
const paidOn = (threadId: string) => paid.filter((p) => p.threadId === threadId);

/** issue_refund as a gateway that pays on every call (no dedupe): a second execution shows as a second payment. */
function payingRefund(by: string): StructuredToolInterface {
  return tool(
    async (args: { orderId: string; amount: number }, cfg) => {
      const threadId = String((cfg as { configurable?: { thread_id?: unknown } }).configurable?.thread_id);
      paid.push({ threadId, toolCallId: String((cfg as { toolCall?: { id?: string } }).toolCall?.id), amount: args.amount, by });
      payments.emit(threadId);
      return JSON.stringify({ orderId: args.orderId, amount: args.amount, status: "refunded" });
    },
    {
      name: "issue_refund",
      description: "Refund an amount in dollars for an order.",
      schema: z.object({ orderId: z.string(), amount: z.number().positive(), reason: z.string().optional() }),
    },
  ) as unknown as StructuredToolInterface;
}

/**
 * A model as a hosted LLM behaves: every call that proposes a refund names it with a fresh tool
 * call id (`call_…`), as OpenAI's and Anthropic's do; once a tool has answered, it answers in text.
 */
function freshIdsModel(amount: number) {
  return scriptedModel((messages: BaseMessage[]) => {
    const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
    const out = turn === 0
      ? new AIMessage({ content: "", tool_calls: [{ id: `call_${Math.random().toString(36).slice(2, 12)}`, name: "issue_refund", args: { orderId: "1042", amount } }] })
      : new AIMessage(`done after ${turn} turns`);
    return out;
  });
}

// ─── stores and agents: one instance stands for one process ──────────────────────────────────

/** What the hooks below need of an audit log. */
type Appender = { append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> };
/** Hooks before and after each append (to stall a run at a chosen moment). */
type Hooks = {
  beforeAppend: ((events: readonly AuditEventInput[]) => Promise<void>) | undefined;
  afterAppend: ((events: AuditEvent[]) => Promise<void>) | undefined;
  /** Settles with what became of the append the `beforeAppend` stall held ("appended", or its error). */
  heldSettled: ((outcome: unknown) => void) | undefined;
  /** Called when an append fails. */
  onRefused?: ((error: unknown) => void) | undefined;
};
/** An audit log class with {@link Hooks}. */
function hooked<B extends new (...args: any[]) => Appender>(Base: B) {
  return class extends Base implements Hooks {
    beforeAppend: Hooks["beforeAppend"];
    afterAppend: Hooks["afterAppend"];
    heldSettled: Hooks["heldSettled"];
    onRefused: Hooks["onRefused"];
    override async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
      const before = this.beforeAppend;
      await before?.(Array.isArray(events) ? events : [events as AuditEventInput]);
      const held = before !== undefined && this.beforeAppend === undefined ? this.heldSettled : undefined;
      if (held) this.heldSettled = undefined;
      try {
        const stored = await super.append(events);
        held?.("appended");
        await this.afterAppend?.(stored);
        return stored;
      } catch (error) {
        held?.(error);
        this.onRefused?.(error);
        throw error;
      }
    }
  };
}
const HookedAuditLog = hooked(PostgresAuditLog);
type HookedAuditLog = InstanceType<typeof HookedAuditLog>;
const HookedSqliteAuditLog = hooked(SqliteAuditLog);
type HookedSqliteAuditLog = InstanceType<typeof HookedSqliteAuditLog>;

/** A gate that `log`'s next append holding an event of `type` waits at (before it is stored); `settled` says what became of it. */
function stallBefore(log: Hooks, type: string): Gate & { settled: Promise<unknown> } {
  const stalled = gate();
  const settled = new Promise<unknown>((r) => (log.heldSettled = r));
  log.beforeAppend = async (events) => {
    if (!events.some((e) => e.type === type)) return;
    log.beforeAppend = undefined;
    stalled.enter();
    await stalled.wait;
  };
  return { ...stalled, settled };
}

/** Resolves once an append of `log` is refused (any error). */
function firstAppendRefused(log: Hooks): Promise<void> {
  return new Promise<void>((resolve) => {
    log.onRefused = () => {
      log.onRefused = undefined;
      resolve();
    };
  });
}

/** A gate that `log`'s next append holding an event of `type` waits at right after it was stored (before the step returns). */
function stallAfter(log: Hooks, type: string): Gate {
  const stalled = gate();
  log.afterAppend = async (events) => {
    if (!events.some((e) => e.type === type)) return;
    log.afterAppend = undefined;
    stalled.enter();
    await stalled.wait;
  };
  return stalled;
}

/** A pool on the shared database, LangGraph's PostgresSaver (plain, as LangChain's docs make it) and eart's audit log on it. */
async function openStores(app: string, max = 3) {
  const pool = new pg.Pool({ connectionString: connectionString(app), max });
  pool.on("error", () => {});
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
  stream(input: unknown, config: unknown): Promise<AsyncIterable<unknown>>;
  streamEvents(input: unknown, config: unknown): AsyncIterable<unknown>;
  getState(config: unknown): Promise<{ values: unknown; next: string[]; tasks: unknown[] }>;
  updateState(config: unknown, values: unknown): Promise<unknown>;
}
type Instance = Stores & { kind: Kind; agent: Agent };

/**
 * One instance of the refund agent of `kind` on `stores` (its own, unless shared): by default the
 * model proposes the $740 refund `c1` (a supervisor's approval), then answers.
 */
async function instance(kind: Kind, opts: { on?: Stores; max?: number; lock?: ThreadLock; model?: ReturnType<typeof scriptedModel>; tools?: StructuredToolInterface[]; turns?: Call[][]; lookup?: StructuredToolInterface; ledger?: PostgresEffectLedger } = {}): Promise<Instance> {
  const stores = opts.on ?? (await openStores(appName(kind === "prebuilt" ? "pre" : "mw"), opts.max));
  const turns = opts.turns ?? [[refund("c1", 740)]];
  const pay = payingRefund(stores.app);
  if (kind === "prebuilt") {
    const s = refundSetup(turns, {
      checkpointer: stores.checkpointer,
      auditLog: stores.auditLog,
      tools: (t) => [opts.lookup ?? t.lookupOrder, t.viewPaymentDetails, pay, ...(opts.tools ?? [])],
      agent: { recoveryRoles: ["supervisor"], ...(opts.lock ? { threadLock: opts.lock } : {}), ...(opts.model ? { model: opts.model } : {}), ...(opts.ledger ? { ledger: opts.ledger } : {}) },
    });
    return { ...stores, kind, agent: s.agent as unknown as Agent };
  }
  const real = createRefundTools(new Database(":memory:"));
  const governance = governanceMiddleware({
    identities: registry,
    policy: refundPolicy,
    auditLog: stores.auditLog,
    ledger: opts.ledger ?? new PostgresEffectLedger({ pool: stores.pool }),
    recoveryRoles: ["supervisor"],
  });
  const agent = guardAgent(
    createAgent({ model: opts.model ?? turnsModel(turns), tools: [opts.lookup ?? real.lookupOrder, real.viewPaymentDetails, pay, ...(opts.tools ?? [])], checkpointer: stores.checkpointer, middleware: [governance] }),
    governance,
    opts.lock ? { lock: opts.lock } : {},
  );
  return { ...stores, kind, agent: agent as unknown as Agent };
}

/**
 * A thread lock whose session goes through a freezing proxy, so the test can drop it silently: the
 * proxy freezes (nothing passes, no FIN), the server session is terminated (its advisory locks go),
 * and the holder does not hear of it until its heartbeat's bound (`timeoutMs * 1.5`), or until the
 * proxy is closed.
 */
async function silentLock(app: string) {
  const proxy = await freezingProxy(connectionString(app));
  opened.push(proxy.close);
  const lock = new PostgresThreadLock({ connectionString: proxy.url });
  opened.push(() => lock.close());
  return {
    lock,
    /** The session dropped without a word: frozen, then terminated on the server. */
    async drop() {
      proxy.freeze();
      expect(await terminateLockSession(app)).toBe(1);
    },
    /** Lets the holder hear it (its socket closes). */
    hear: () => proxy.close(),
  };
}

// ─── answers, outcomes, checks ───────────────────────────────────────────────────────────────

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };
const settle = (p: Promise<unknown>): Promise<Outcome> =>
  p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
/** "ok", the eart error code, or "untyped: …" for anything else. */
const codeOf = (o: Outcome) => (o.ok ? "ok" : (eartErrorOf(o.error)?.code ?? `untyped: ${String((o.error as Error)?.message ?? o.error).slice(0, 300)}`));

type Request = NonNullable<ReturnType<typeof pendingApproval>>;
const answer = (request: Request, type: "approve" | "reject", id = "c1") => new Command({ resume: { decisions: [decide(request, id, type)] } });

/** Cara asks for the $740 refund on a new thread; it pauses for a supervisor. */
async function pausedThread(i: Instance, tag: string): Promise<{ thread: string; request: Request }> {
  const thread = unique(tag);
  const request = pendingApproval(await i.agent.invoke(ask(), config(thread)));
  expect(request?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
  return { thread, request: request! };
}

const messagesOf = (values: unknown) => ((values as { messages?: BaseMessage[] }).messages ?? []) as BaseMessage[];
const decidedOn = async (i: { auditLog: PostgresAuditLog | SqliteAuditLog }, thread: string) =>
  (await i.auditLog.read(thread)).filter((e) => e.type === "approval.decided").map((e) => `${String(e.data.decision)}:${String(e.data.approverId)}`);

/** The thread finished: nothing waits, nothing is left to run, the model had the last word. */
async function expectFinished(i: { agent: Agent }, thread: string) {
  const state = await i.agent.getState(config(thread));
  expect(pendingApproval(state)).toBeUndefined();
  expect(pendingRecovery(state)).toBeUndefined();
  expect(state.next).toEqual([]);
  const last = messagesOf(state.values).at(-1);
  expect(AIMessage.isInstance(last)).toBe(true);
  return state;
}

async function expectChainVerifies(i: { auditLog: PostgresAuditLog | SqliteAuditLog }, thread: string) {
  expect(await i.auditLog.verify(thread)).toMatchObject({ ok: true, threadId: thread });
}

/** Reads a stream to its end, slowly: each chunk only after `slow` has settled. Resolves with the chunks, rejects with the stream's error. */
async function consumeSlowly(stream: AsyncIterable<unknown>, slow: Promise<unknown>): Promise<unknown[]> {
  const chunks: unknown[] = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    await slow;
  }
  return chunks;
}

// ─── PostgreSQL faults ───────────────────────────────────────────────────────────────────────

const HOLDS_ADVISORY = `EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)`;

/** Terminates the sessions of an application that hold an advisory lock (its thread lock's), waiting until they are gone; returns how many. */
async function terminateLockSession(app: string): Promise<number> {
  const { rows } = await admin.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))::int AS n FROM pg_stat_activity a WHERE application_name = $1 AND ${HOLDS_ADVISORY}`,
    [app],
  );
  return rows[0]!.n;
}

// ═════════════════════════════════════════════════════════════════════════════════════════════
// 1. Entry paths other than agent.invoke
// ═════════════════════════════════════════════════════════════════════════════════════════════

/** How sam's approval reaches the agent: a promise of the run's end (its chunks, or its error). */
type Path = (a: Instance, input: unknown, cfg: Record<string, unknown>, slow: Promise<unknown>) => Promise<unknown>;
const PATHS: Record<string, Path> = {
  "stream (values, consumed slowly)": async (a, input, cfg, slow) => consumeSlowly(await a.agent.stream(input, { ...cfg, streamMode: "values" }), slow),
  'stream (["updates","messages"], consumed slowly)': async (a, input, cfg, slow) => consumeSlowly(await a.agent.stream(input, { ...cfg, streamMode: ["updates", "messages"] }), slow),
  "streamEvents v2 (consumed slowly)": async (a, input, cfg, slow) => consumeSlowly(a.agent.streamEvents(input, { ...cfg, version: "v2" }), slow),
  "streamEvents v3 (consumed slowly)": async (a, input, cfg, slow) => consumeSlowly(await (a.agent.streamEvents(input, { ...cfg, version: "v3" }) as unknown as Promise<AsyncIterable<unknown>>), slow),
};

describe("1. the fence on other entry paths than invoke", () => {
  for (const kind of KINDS) {
    for (const [name, path] of Object.entries(PATHS)) {
      for (const how of ["silent", "terminated"] as const) {
        it(`${kind}, ${name}, lock ${how}: sam's stale approval is refused, sue's reject stands, nothing is paid`, async () => {
          const app = appName(`p_${kind.slice(0, 3)}`);
          const silent = await silentLock(app);
          const a = await instance(kind, { on: await openStores(app), lock: silent.lock });
          const b = await instance(kind);
          const { thread, request } = await pausedThread(a, `${kind}-path`);
          const stalled = stallBefore(a.auditLog, "approval.decided");
          const slow = gate();
          const runA = settle(path(a, answer(request, "approve"), config(thread, "sam"), slow.wait));
          await stalled.entered;
          if (how === "silent") await silent.drop();
          else expect(await terminateLockSession(app)).toBe(1);
          // Sue's reject from another instance: the thread is free on the server, so it is taken.
          expect(codeOf(await settle(b.agent.invoke(answer(request, "reject"), config(thread, "sue"))))).toBe("ok");
          stalled.open();
          // The stale append is refused, typed, before anything of it is stored.
          const refusal = await stalled.settled;
          expect(eartErrorOf(refusal)).toBeInstanceOf(ThreadLockLostError);
          // Silent: the run had not heard (its lost signal was not aborted); the token read in the append's transaction refused it.
          if (how === "silent") expect((refusal as Error).message).toMatch(/another run holds the thread now/);
          await silent.hear();
          slow.open();
          const outA = await runA;
          expect(outA.ok).toBe(false);
          expect(eartErrorOf((outA as { error: unknown }).error)).toBeInstanceOf(ThreadLockLostError);
          expect(paidOn(thread)).toHaveLength(0);
          expect(await decidedOn(b, thread)).toEqual(["reject:sue"]);
          await expectFinished(b, thread);
          await expectChainVerifies(b, thread);
        });
      }
    }
  }
});

/** `lock` with its holds' fences stripped (what the stores would see if the fence were broken): for the control test. */
const unfenced = (lock: ThreadLock): ThreadLock => ({
  async acquire(threadId: string) {
    const release = await lock.acquire(threadId);
    return Object.assign(() => release(), { lost: release.lost });
  },
});

describe("1a. control: the same scenario with the fence taken out", () => {
  // Why the asserts above would catch a broken fence: with a lock whose holds carry no fence (the
  // stores then have no token to check), sam's stale approval is appended after sue's reject and the
  // rejected refund is paid. (The lock itself still works: only the fence is missing.)
  it("prebuilt, invoke, lock silent, holds without a fence: the rejected refund is paid and both answers are recorded as deciding", async () => {
    const app = appName("ctl");
    const silent = await silentLock(app);
    const a = await instance("prebuilt", { on: await openStores(app), lock: unfenced(silent.lock) });
    const b = await instance("prebuilt");
    const { thread, request } = await pausedThread(a, "control");
    const stalled = stallBefore(a.auditLog, "approval.decided");
    const runA = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
    await stalled.entered;
    await silent.drop();
    expect(codeOf(await settle(b.agent.invoke(answer(request, "reject"), config(thread, "sue"))))).toBe("ok");
    const paidNow = new Promise<void>((resolve) => payments.once(thread, () => resolve()));
    stalled.open();
    expect(await stalled.settled).toBe("appended");
    await Promise.race([paidNow, runA]);
    await silent.hear();
    await runA;
    expect(paidOn(thread)).toHaveLength(1);
    expect(await decidedOn(b, thread)).toEqual(["reject:sue", "approve:sam"]);
  });
});

/** The README's "your own StateGraph": eart's nodes, LangGraph's PostgresSaver, no guard (runThread / resumeThread take the lock). */
function ownGraph(stores: Stores) {
  const State = Annotation.Root({ ...MessagesAnnotation.spec, ...GovernedChannels });
  const ledger = new PostgresEffectLedger({ pool: stores.pool });
  const tools = [createRefundTools(new Database(":memory:")).lookupOrder, payingRefund(stores.app)];
  const auditLog = stores.auditLog;
  return new StateGraph(State)
    .addNode("bindIdentity", createIdentityBinding({ registry, auditLog, ledger }))
    .addNode("agent", createModelNode({ model: turnsModel([[refund("c1", 740)]]), tools, auditLog }))
    .addNode("tools", createGovernedToolPath({ policy: refundPolicy, tools, registry, auditLog, ledger, recoveryRoles: ["supervisor"] }))
    .addEdge(START, "bindIdentity")
    .addEdge("bindIdentity", "agent")
    .addConditionalEdges("agent", routeToGovernedTools, { tools: "tools", end: END })
    .addConditionalEdges("tools", routeAfterGovernedTools, { agent: "agent", end: END })
    .compile({ checkpointer: stores.checkpointer });
}

describe("1b. runThread / resumeThread on a graph of one's own", () => {
  for (const how of ["silent", "terminated"] as const) {
    it(`resumeThread, lock ${how}: sam's stale approval is refused, sue's reject (resumeThread from another process) stands, nothing is paid`, async () => {
      const app = appName("own");
      const silent = await silentLock(app);
      const sa = await openStores(app);
      const sb = await openStores(appName("own_b"));
      const [ga, gb] = [ownGraph(sa), ownGraph(sb)];
      const thread = unique("own");
      const run = await runThread(ga, ask(), config(thread), { lock: silent.lock });
      expect(run.approval?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
      const request = run.approval!;
      const stalled = stallBefore(sa.auditLog, "approval.decided");
      const runA = settle(resumeThread(ga, { decisions: [decide(request, "c1", "approve")] }, config(thread, "sam"), { lock: silent.lock }));
      await stalled.entered;
      if (how === "silent") await silent.drop();
      else expect(await terminateLockSession(app)).toBe(1);
      const reject = await settle(resumeThread(gb, { decisions: [decide(request, "c1", "reject")] }, config(thread, "sue")));
      expect(codeOf(reject)).toBe("ok");
      stalled.open();
      const refusal = await stalled.settled;
      expect(eartErrorOf(refusal)).toBeInstanceOf(ThreadLockLostError);
      if (how === "silent") expect((refusal as Error).message).toMatch(/another run holds the thread now/);
      await silent.hear();
      expect(eartErrorOf(((await runA) as { error?: unknown }).error)).toBeInstanceOf(ThreadLockLostError);
      expect(paidOn(thread)).toHaveLength(0);
      expect(await decidedOn(sb, thread)).toEqual(["reject:sue"]);
      await expectChainVerifies(sb, thread);
    });
  }
});

// ═════════════════════════════════════════════════════════════════════════════════════════════
// 2. Nested runs: a governed agent whose tool runs another governed agent on another thread
// ═════════════════════════════════════════════════════════════════════════════════════════════

/** lookup_order as a tool that runs `inner` (another governed agent) on a thread of its own, asking for an $80 refund. */
function delegatingLookup(inner: () => Agent, innerThread: (outer: string) => string): StructuredToolInterface {
  return tool(
    async (args: { orderId: string }, cfg) => {
      const outer = String((cfg as { configurable?: { thread_id?: unknown } }).configurable?.thread_id);
      // Run detached from the outer run's LangChain config (else LangGraph runs it as a subgraph of the outer: see section 6).
      const result = await AsyncLocalStorageProviderSingleton.getInstance().run(undefined, () => inner().invoke(ask("Please refund $80 on order 1042."), config(innerThread(outer))));
      return JSON.stringify({ orderId: args.orderId, delegated: messagesOf(result).at(-1)?.content ?? null });
    },
    { name: "lookup_order", description: "Look an order up (delegates to the refunds desk).", schema: z.object({ orderId: z.string() }) },
  ) as unknown as StructuredToolInterface;
}

const typesOf = async (i: { auditLog: PostgresAuditLog }, thread: string) => (await i.auditLog.read(thread)).map((e) => e.type);

describe("2. nested runs: each write is checked against its own run's fence", () => {
  it("both holding their locks (one pool, one lock session): neither is refused, each chain holds its own run's events", async () => {
    const stores = await openStores(appName("nest"));
    let innerAgent: Agent | undefined;
    const inner = await instance("prebuilt", { on: stores, turns: [[refund("r1", 80)]] });
    innerAgent = inner.agent;
    const outer = await instance("prebuilt", { on: stores, turns: [[lookup("l1")]], lookup: delegatingLookup(() => innerAgent!, (o) => `${o}-inner`) });
    const thread = unique("nest-outer");
    const out = await settle(outer.agent.invoke(ask("Where is my refund for order 1042?"), config(thread)));
    expect(codeOf(out)).toBe("ok");
    expect(paidOn(`${thread}-inner`)).toHaveLength(1);
    expect(paidOn(thread)).toHaveLength(0);
    // The inner run's events are on its thread, the outer's on its own.
    expect(await typesOf(outer, thread)).toContain("tool.succeeded");
    expect(await typesOf(outer, `${thread}-inner`)).toContain("tool.succeeded");
    await expectFinished(outer, thread);
    await expectFinished(inner, `${thread}-inner`);
    await expectChainVerifies(outer, thread);
    await expectChainVerifies(outer, `${thread}-inner`);
  });

  it("the outer run's lock dropped silently and its thread taken while the inner run works: the inner run (its own lock held) finishes; the outer's later writes are refused", async () => {
    const app = appName("nest_o");
    const silent = await silentLock(app);
    const innerStores = await openStores(appName("nest_i"));
    const inner = await instance("prebuilt", { on: innerStores, turns: [[refund("r1", 80)]] });
    const outer = await instance("prebuilt", { on: await openStores(app), lock: silent.lock, turns: [[lookup("l1")]], lookup: delegatingLookup(() => inner.agent, (o) => `${o}-inner`) });
    const thread = unique("nest-outer");
    // The inner run stops before its refund's claim (tool.started goes in the claim's transaction, which is not an append of the log: the model turn's append instead).
    const stalled = stallBefore(inner.auditLog, "model.output");
    const runOuter = settle(outer.agent.invoke(ask("Where is my refund for order 1042?"), config(thread)));
    await stalled.entered;
    await silent.drop();
    // Another process takes the outer thread (and holds it).
    const other = new PostgresThreadLock({ connectionString: connectionString(appName("nest_x")) });
    opened.push(() => other.close());
    const held = await other.acquire(thread);
    const outerRefused = firstAppendRefused(outer.auditLog);
    stalled.open();
    // The inner run's own writes are checked against the inner fence only: made.
    expect(await stalled.settled).toBe("appended");
    // The outer run's tool returns once the inner run is done; its outcome's append is refused.
    // (Its release then waits for its frozen session until it hears: let it hear then.)
    await outerRefused;
    await silent.hear();
    const outOuter = await runOuter;
    await held();
    expect(eartErrorOf((outOuter as { error?: unknown }).error)).toBeInstanceOf(ThreadLockLostError);
    expect(paidOn(`${thread}-inner`)).toHaveLength(1);
    await expectFinished(inner, `${thread}-inner`);
    await expectChainVerifies(inner, `${thread}-inner`);
    // Nothing of the outer's tool outcome was appended after the takeover.
    const outerTypes = await typesOf(outer, thread);
    expect(outerTypes).toContain("tool.started");
    expect(outerTypes).not.toContain("tool.succeeded");
    await expectChainVerifies(outer, thread);
  });

  it("the inner run's lock dropped silently and its thread taken: the inner run's writes are refused; the outer run (its lock held) is not refused and records the failure", async () => {
    const app = appName("nest_i2");
    const silent = await silentLock(app);
    const inner = await instance("prebuilt", { on: await openStores(app), lock: silent.lock, turns: [[refund("r1", 80)]] });
    const outer = await instance("prebuilt", { turns: [[lookup("l1")]], lookup: delegatingLookup(() => inner.agent, (o) => `${o}-inner`) });
    const thread = unique("nest-outer2");
    const stalled = stallBefore(inner.auditLog, "model.output");
    const runOuter = settle(outer.agent.invoke(ask("Where is my refund for order 1042?"), config(thread)));
    await stalled.entered;
    await silent.drop();
    const other = new PostgresThreadLock({ connectionString: connectionString(appName("nest_y")) });
    opened.push(() => other.close());
    const held = await other.acquire(`${thread}-inner`);
    stalled.open();
    expect(eartErrorOf(await stalled.settled)).toBeInstanceOf(ThreadLockLostError);
    // (The stale inner run's release waits for its frozen session until it hears: let it hear now.)
    await silent.hear();
    const outOuter = await runOuter;
    await held();
    // The outer run is not refused for the inner's lost lock: its own writes go through.
    expect(codeOf(outOuter)).not.toBe("thread_lock_lost");
    expect(paidOn(`${thread}-inner`)).toHaveLength(0);
    const outerTypes = await typesOf(outer, thread);
    expect(outerTypes.filter((t) => t === "tool.failed" || t === "tool.recovery_requested").length).toBeGreaterThan(0);
    expect(await typesOf(outer, `${thread}-inner`)).not.toContain("model.output");
    await expectChainVerifies(outer, thread);
  });
});

// ═════════════════════════════════════════════════════════════════════════════════════════════
// 3. False refusals: a legitimate holder is never refused
// ═════════════════════════════════════════════════════════════════════════════════════════════

/**
 * A TCP proxy to PostgreSQL that delays every chunk by `ms` each way (a slow but healthy network),
 * counting the heartbeats (`SELECT 1`) the lock's session sends through it.
 */
async function delayingProxy(target: string, ms: number) {
  const upstreamUrl = new URL(target);
  const sockets: Socket[] = [];
  let heartbeats = 0;
  const beat = new EventEmitter();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(upstreamUrl.port || 5432), upstreamUrl.hostname);
    sockets.push(client, upstream);
    for (const [from, to, counts] of [
      [client, upstream, true],
      [upstream, client, false],
    ] as const) {
      from.on("data", (chunk: Buffer) => {
        if (counts && chunk.includes("SELECT 1\0")) {
          heartbeats++;
          beat.emit("beat");
        }
        setTimeout(() => {
          if (!to.destroyed) to.write(chunk);
        }, ms);
      });
      from.on("close", () => setTimeout(() => to.destroy(), ms));
      from.on("error", () => {});
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = new URL(target);
  url.port = String((server.address() as { port: number }).port);
  const close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  opened.push(close);
  return {
    url: url.toString(),
    /** Resolves once `n` more heartbeats have gone through. */
    heartbeats: (n: number) => {
      const until = heartbeats + n;
      return new Promise<void>((resolve) => {
        const check = () => {
          if (heartbeats < until) return;
          beat.off("beat", check);
          resolve();
        };
        beat.on("beat", check);
      });
    },
  };
}

describe("3. false refusals: legitimate holders are never refused", () => {
  for (const kind of KINDS) {
    it(`${kind}: 20 threads, two instances on pools of 2: each asked on one instance, approved on the other at once, then run again on the first; no ThreadLockLostError anywhere`, async () => {
      const N = 20;
      const a = await instance(kind, { max: 2 });
      const b = await instance(kind, { max: 2 });
      const threads = Array.from({ length: N }, (_, i) => unique(`${kind}-legit-${i}`));
      const outcomes = await Promise.all(
        threads.map(async (thread, i) => {
          const [x, y] = i % 2 === 0 ? [a, b] : [b, a];
          const asked = await settle(x.agent.invoke(ask(), config(thread)));
          if (!asked.ok) return [codeOf(asked)];
          const request = pendingApproval(asked.value)!;
          // Released by x, taken by y at once.
          const approved = codeOf(await settle(y.agent.invoke(answer(request, "approve"), config(thread, "sam"))));
          // And taken back by x.
          const again = codeOf(await settle(x.agent.invoke({ messages: [new HumanMessage("thanks!")] }, config(thread))));
          return [request.requests[0]!.toolCallId === "c1" ? "ok" : "no request", approved, again];
        }),
      );
      for (const [i, thread] of threads.entries()) {
        expect(outcomes[i], thread).toEqual(["ok", "ok", "ok"]);
        expect(paidOn(thread), thread).toHaveLength(1);
      }
      expect(a.pool.totalCount).toBeLessThanOrEqual(2);
      expect(b.pool.totalCount).toBeLessThanOrEqual(2);
      for (const thread of threads.slice(0, 3)) await expectChainVerifies(a, thread);
    });
  }

  it("a lock session that is healthy but slow (100 ms each way, every statement answered within the bound) is never refused, across heartbeats, for two runs at once", async () => {
    const app = appName("slow");
    const proxy = await delayingProxy(connectionString(app), 100);
    const lock = new PostgresThreadLock({ connectionString: proxy.url, timeoutMs: 2_000 });
    opened.push(() => lock.close());

    const hold = gate();
    const slowRefund = tool(
      async (args: { orderId: string; amount: number }, cfg) => {
        await hold.wait;
        return payingRefund(app).invoke(args, cfg);
      },
      { name: "issue_refund", description: "Refund an amount in dollars for an order.", schema: z.object({ orderId: z.string(), amount: z.number().positive() }) },
    ) as unknown as StructuredToolInterface;
    const stores = await openStores(app);
    const s = refundSetup([[refund("c1", 80)]], { checkpointer: stores.checkpointer, auditLog: stores.auditLog, tools: (t) => [t.lookupOrder, slowRefund], agent: { threadLock: lock } });
    const threads = [unique("slow-1"), unique("slow-2")];
    const runs = threads.map((thread) => settle(s.agent.invoke(ask("Please refund $80 on order 1042."), config(thread))));
    // Both runs hold their locks through several heartbeats of the slow session.
    // (Both runs are at the refund, holding their locks, by then: a heartbeat is sent only while a lock is held.)
    const beats = await Promise.race([proxy.heartbeats(2).then(() => "beats"), Promise.all(runs).then(() => "runs ended first")]);
    expect(beats).toBe("beats");
    hold.open();
    const outcomes = await Promise.all(runs);
    expect(outcomes.map(codeOf)).toEqual(["ok", "ok"]);
    for (const thread of threads) {
      expect(paidOn(thread)).toHaveLength(1);
      await expectChainVerifies(stores, thread);
    }
  });
});

describe("3b. the lock's one session: holds of other threads while takes queue on it", () => {
  // Was a hole (low): a legitimate holder lost its lock, and its run every write (ThreadLockLostError),
  // because other threads were being taken on the same lock session. Every statement of a
  // PostgresThreadLock runs one at a time on its one session, and each one's deadline counted from
  // when it was queued; the first that missed it ended the session, and every hold on it was
  // reported lost. The fence made this reachable without any fault of the holder's session: a TAKE
  // waits up to `timeoutMs / 2` for a write of the thread's last holder still in flight, so two or
  // three such takes at once queued past the bound; so did a burst of acquires on a slow session.
  // Now a caller's deadline only fails that caller (a statement not sent by then is not sent), and
  // the session is ended only when a statement it sent gets no answer within `timeoutMs` of sending.
  it("three takes of threads whose last holders' writes are in flight (their token rows share-locked) leave an unrelated thread's holder its lock", async () => {
    const app = appName("queue");
    const lockP = new PostgresThreadLock({ connectionString: connectionString(app), timeoutMs: 1_000 });
    opened.push(() => lockP.close());
    const other = new PostgresThreadLock({ connectionString: connectionString(appName("queue_q")) });
    opened.push(() => other.close());
    const stores = await openStores(appName("queue_s"));
    const t1 = unique("q-legit");
    const stuck = [unique("q-stuck"), unique("q-stuck"), unique("q-stuck")];
    const r1 = await lockP.acquire(t1);
    const holders: pg.PoolClient[] = [];
    opened.push(async () => {
      for (const c of holders) {
        await c.query("ROLLBACK").catch(() => {});
        c.release();
      }
    });
    for (const t of stuck) {
      // Held once by another process, whose last write of the thread is still in flight (as thread-fence.test's writeInFlight).
      const release = await other.acquire(t);
      const key = release.fence!.postgres!.key;
      await release();
      const client = await admin.connect();
      holders.push(client);
      await client.query(`BEGIN; SELECT token FROM "${schema}".eart_thread_fences WHERE key = ${key}::bigint FOR SHARE`);
    }
    const takes = await Promise.all(stuck.map((t) => settle(lockP.acquire(t))));
    // The takes fail, typed, as documented (the last holders' writes hold the tokens past half the bound)...
    expect(takes.map(codeOf)).toEqual(["store_timeout", "store_timeout", "store_timeout"]);
    // ...but the holder of another thread keeps its lock, and its writes go through.
    expect(r1.lost?.aborted).toBe(false);
    expect(codeOf(await settle(withThreadFence(r1.fence, () => stores.auditLog.append({ threadId: t1, type: "run.started" }))))).toBe("ok");
  });

  it("a burst of 12 acquires on a healthy but slow session (100 ms each way, timeoutMs 2 s) leaves the holder of another thread its lock", async () => {
    const app = appName("burst");
    const proxy = await delayingProxy(connectionString(app), 100);
    const lock = new PostgresThreadLock({ connectionString: proxy.url, timeoutMs: 2_000 });
    opened.push(() => lock.close());
    const r1 = await lock.acquire(unique("burst-legit"));
    const burst = await Promise.all(Array.from({ length: 12 }, () => settle(lock.acquire(unique("burst")))));
    const codes = burst.map(codeOf);
    expect(r1.lost?.aborted, `burst: ${codes.join(", ")}`).toBe(false);
  });
});

// ═════════════════════════════════════════════════════════════════════════════════════════════
// 4. A human's recovery answer (retry) after a takeover
// ═════════════════════════════════════════════════════════════════════════════════════════════

/** The effect ledger with a hook before each `retry` (to stall a run right before it claims a new attempt). */
class HookedLedger extends PostgresEffectLedger {
  beforeRetry: (() => Promise<void>) | undefined;
  /** Called with what became of the retry the hook held (its entry, or its error). */
  retried: ((outcome: unknown) => void) | undefined;
  override async retry(...args: Parameters<PostgresEffectLedger["retry"]>) {
    const before = this.beforeRetry;
    this.beforeRetry = undefined;
    await before?.();
    const done = before ? this.retried : undefined;
    try {
      const entry = await super.retry(...args);
      done?.(entry);
      return entry;
    } catch (error) {
      done?.(error);
      throw error;
    }
  }
}

/** issue_refund whose first call on a thread fails before paying (a 502 from the gateway); later calls pay. */
/** The threads whose first refund call the gateway failed (one gateway for every instance). */
const failedOnce = new Set<string>();
function flakyRefund(by: string): StructuredToolInterface {
  const failed = failedOnce;
  const pay = payingRefund(by);
  return tool(
    async (args: { orderId: string; amount: number }, cfg) => {
      const threadId = String((cfg as { configurable?: { thread_id?: unknown } }).configurable?.thread_id);
      if (!failed.has(threadId)) {
        failed.add(threadId);
        throw new Error("gateway answered 502");
      }
      return pay.invoke(args, cfg);
    },
    { name: "issue_refund", description: "Refund an amount in dollars for an order.", schema: z.object({ orderId: z.string(), amount: z.number().positive() }) },
  ) as unknown as StructuredToolInterface;
}

/** A prebuilt refund agent on `stores` whose $80 refund fails once and goes to a supervisor (exhausted). */
function flakyAgent(stores: Stores, opts: { lock?: ThreadLock; ledger?: PostgresEffectLedger } = {}) {
  return refundSetup([[refund("c1", 80)]], {
    checkpointer: stores.checkpointer,
    auditLog: stores.auditLog,
    tools: (t) => [t.lookupOrder, flakyRefund(stores.app)],
    agent: { recoveryRoles: ["supervisor"], ...(opts.lock ? { threadLock: opts.lock } : {}), ...(opts.ledger ? { ledger: opts.ledger } : {}) },
  }).agent as unknown as Agent;
}

type Recovery = NonNullable<ReturnType<typeof pendingRecovery>>;
const recoveryAnswer = (recovery: Recovery, type: "retry" | "mark_done" | "abandon") => {
  const item = recovery.requests[0]!;
  return new Command({ resume: { decisions: [decide(recovery, item.toolCallId, type, { attempt: item.attempt, ...(type === "mark_done" ? { result: { status: "refunded" } } : {}) })] } });
};
const recoveryDecided = async (log: PostgresAuditLog, thread: string) =>
  (await log.read(thread)).filter((e) => e.type === "tool.recovery_decided").map((e) => `${String(e.data.decision ?? e.data.type ?? e.data.resolution)}:${String(e.data.resolverId)}`);

describe("4. a recovery answer (retry) given by a run that lost its lock", () => {
  it("sam's retry, stalled before it is recorded, after the thread was taken and sue marked it done: refused; no attempt is claimed, nothing is paid", async () => {
    const app = appName("rec1");
    const silent = await silentLock(app);
    const sa = await openStores(app);
    const sb = await openStores(appName("rec1_b"));
    const ledger = new PostgresEffectLedger({ pool: sa.pool });
    const [a, b] = [flakyAgent(sa, { lock: silent.lock, ledger }), flakyAgent(sb)];
    const thread = unique("rec-retry");
    const recovery = pendingRecovery(await a.invoke(ask("Please refund $80 on order 1042."), config(thread)));
    expect(recovery?.requests.map((r) => r.reason)).toEqual(["exhausted"]);
    const stalled = stallBefore(sa.auditLog, "tool.recovery_decided");
    const runA = settle(a.invoke(recoveryAnswer(recovery!, "retry"), config(thread, "sam")));
    await stalled.entered;
    await silent.drop();
    expect(codeOf(await settle(b.invoke(recoveryAnswer(recovery!, "mark_done"), config(thread, "sue"))))).toBe("ok");
    stalled.open();
    expect(eartErrorOf(await stalled.settled)).toBeInstanceOf(ThreadLockLostError);
    await silent.hear();
    expect(eartErrorOf(((await runA) as { error?: unknown }).error)).toBeInstanceOf(ThreadLockLostError);
    const entry = (await ledger.list(thread))[0];
    expect(entry).toMatchObject({ attempt: 1, status: "succeeded" });
    expect(paidOn(thread)).toHaveLength(0);
    expect((await recoveryDecided(sb.auditLog, thread)).map((d) => d.split(":")[1])).toEqual(["sue"]);
    await expectChainVerifies(sb, thread);
  });

  it("sam's retry recorded, the run stalled right before it claims the new attempt while another process takes the thread: the claim is refused (no attempt, no payment); the holder's continue retries once", async () => {
    const app = appName("rec2");
    const silent = await silentLock(app);
    const sa = await openStores(app);
    const sb = await openStores(appName("rec2_b"));
    const ledger = new HookedLedger({ pool: sa.pool });
    const [a, b] = [flakyAgent(sa, { lock: silent.lock, ledger }), flakyAgent(sb)];
    const thread = unique("rec-claim");
    const recovery = pendingRecovery(await a.invoke(ask("Please refund $80 on order 1042."), config(thread)));
    expect(recovery?.requests.map((r) => r.reason)).toEqual(["exhausted"]);
    const stalled = gate();
    ledger.beforeRetry = async () => {
      stalled.enter();
      await stalled.wait;
    };
    const runA = settle(a.invoke(recoveryAnswer(recovery!, "retry"), config(thread, "sam")));
    await stalled.entered;
    await silent.drop();
    // Another process holds the thread now (an operator's tool, another replica's run).
    const other = new PostgresThreadLock({ connectionString: connectionString(appName("rec2_x")) });
    opened.push(() => other.close());
    const held = await other.acquire(thread);
    const claim = new Promise<unknown>((resolve) => (ledger.retried = resolve));
    stalled.open();
    expect(eartErrorOf(await claim)).toBeInstanceOf(ThreadLockLostError);
    await silent.hear();
    await runA;
    expect((await ledger.list(thread))[0]).toMatchObject({ attempt: 1, status: "started" });
    expect(paidOn(thread)).toHaveLength(0);
    await held();
    // The thread's next holder carries sam's recorded retry out, once.
    const appB = defineApp({ auditLog: sb.auditLog, graphs: { "support-agent": b as never } });
    expect(codeOf(await settle(continueThread(appB, thread)))).toBe("ok");
    expect(paidOn(thread)).toHaveLength(1);
    expect((await ledger.list(thread))[0]).toMatchObject({ attempt: 2, status: "succeeded" });
    await expectChainVerifies(sb, thread);
  });
});

// ═════════════════════════════════════════════════════════════════════════════════════════════
// 5. The stale run's checkpoint after a takeover (the window the README leaves open)
// ═════════════════════════════════════════════════════════════════════════════════════════════

/** Resolves with the outcome of the next `put` of `saver` (after the guard's fence check), once it settles. */
function nextPut(saver: { put: (...args: any[]) => Promise<unknown> }): Promise<unknown> {
  return new Promise((resolve) => {
    const put = saver.put;
    saver.put = function (this: unknown, ...args: unknown[]) {
      saver.put = put;
      const p = put.apply(this, args);
      p.then(() => resolve("saved"), resolve);
      return p;
    };
  });
}

describe("5. a stale run's checkpoint saved after another process took the thread", () => {
  /**
   * Run A (its lock's session dropped without a word) has appended its model turn (the fence passed:
   * its token was still the thread's) and stalls before the turn's checkpoint: the gap between an
   * append's commit and the step's `put` (ms; a GC pause, a queued checkpoint write; a new TAKE waits
   * exactly for that append to commit, so it starts in that very gap). B takes the thread, finds it
   * stopped before its model turn, carries it on to its end (`continueThread`, or the client's
   * `invoke(null)`). Then A wakes and its turn's checkpoint is about to be saved: A has not heard
   * (its `lost` is not aborted), so only the token check on the saver's pool can refuse it.
   */
  async function staleTurnAfterTheEnd(kind: Kind, amount: number) {
    const app = appName(`fork_${kind.slice(0, 3)}`);
    const silent = await silentLock(app);
    const a = await instance(kind, { on: await openStores(app), lock: silent.lock, model: freshIdsModel(amount) });
    const b = await instance(kind, { model: freshIdsModel(amount) });
    const appB = defineApp({ auditLog: b.auditLog, graphs: { "support-agent": b.agent as never } });
    const thread = unique(`${kind}-fork`);
    // The prebuilt agent through the operator's recovery; the middleware agent through the client's continue.
    const carryOn = () => settle(kind === "prebuilt" ? continueThread(appB, thread) : b.agent.invoke(null, config(thread)));
    const stalled = stallAfter(a.auditLog, "model.output");
    const runA = settle(a.agent.invoke(ask(`Please refund order 1042, $${amount}.`), config(thread)));
    await stalled.entered;
    await silent.drop();
    expect(codeOf(await carryOn())).toBe("ok");
    const approval = pendingApproval(await b.agent.getState(config(thread)));
    if (approval) expect(codeOf(await settle(b.agent.invoke(answer(approval, "approve", approval.requests[0]!.toolCallId), config(thread, "sam"))))).toBe("ok");
    expect(paidOn(thread)).toHaveLength(1);
    await expectFinished(b, thread);
    const saved = nextPut(a.checkpointer as never);
    stalled.open();
    const put = await saved;
    await silent.hear();
    // A itself is refused: at that checkpoint.
    expect(codeOf(await runA)).toBe("thread_lock_lost");
    return { b, thread, put };
  }

  for (const kind of KINDS) {
    // Was a hole (medium): the stale run's checkpoint, saved after the new holder finished the
    // thread, became the thread's latest: a mix of B's blobs (channel versions both runs reached: B's
    // messages) and A's own (A's sealed decision records for A's proposal). With $740 the thread
    // listed as unfinished, the operator's continueThread failed with a false state_tamper_detected
    // (the client's continue with thread_awaiting_approval), it showed an approval request for a call
    // nobody proposed, and the customer's final answer was gone; with $80 it was rewound to B's own
    // step (carried on, the refund was replayed from the ledger). No second payment either way.
    // Now the guard confirms each step's checkpoint against the lock's token on the saver's pool
    // before saving it (ThreadFence.confirm): A's is refused, and the thread stays as B finished it.
    for (const amount of [80, 740]) {
      it(`${kind}: $${amount}: the stale turn's checkpoint, about to be saved after the thread was finished by another process, is refused; the thread stays finished, paid once`, async () => {
        const { b, thread, put } = await staleTurnAfterTheEnd(kind, amount);
        expect(eartErrorOf(put)).toBeInstanceOf(ThreadLockLostError);
        await expectFinished(b, thread);
        expect(pendingApproval(await b.agent.getState(config(thread)))).toBeUndefined();
        expect(await decidedOn(b, thread)).toHaveLength(amount > 100 ? 1 : 0);
        expect(paidOn(thread)).toHaveLength(1);
        await expectChainVerifies(b, thread);
      });
    }
  }

  it("SQLite: the same fork is held: the stale run's checkpoint is refused (its hold reads the lock row before the put), and nothing is paid twice", async () => {
    const { file } = tempFile();
    const a = sqliteInstance(file, "A", freshIdsModel(80));
    const b = sqliteInstance(file, "B", freshIdsModel(80));
    const appB = defineApp({ auditLog: b.auditLog, graphs: { "support-agent": b.agent as never } });
    const thread = unique("sqlite-fork");
    const stalled = stallAfter(a.auditLog, "model.output");
    const runA = settle(a.agent.invoke(ask("Please refund $80 on order 1042."), config(thread)));
    await stalled.entered;
    // A's process stalls past staleMs on another host (as far as the row says): B takes the thread over.
    markStale(b.db, thread);
    expect(codeOf(await settle(continueThread(appB, thread)))).toBe("ok");
    expect(paidOn(thread)).toHaveLength(1);
    const saved = nextPut(a.checkpointer as never);
    stalled.open();
    expect(eartErrorOf(await saved)).toBeInstanceOf(ThreadLockLostError);
    expect(eartErrorOf(((await runA) as { error?: unknown }).error)).toBeInstanceOf(ThreadLockLostError);
    await expectFinished(b, thread);
    expect(codeOf(await settle(continueThread(appB, thread)))).toBe("thread_not_paused");
    expect(paidOn(thread)).toHaveLength(1);
  });
});

// ═════════════════════════════════════════════════════════════════════════════════════════════
// 6. SQLite holds, a caller's abort, and what a caller of the thread API can send
// ═════════════════════════════════════════════════════════════════════════════════════════════

function tempFile() {
  const dir = mkdtempSync(join(tmpdir(), "zzf-"));
  opened.push(async () => rmSync(dir, { recursive: true, force: true }));
  return { file: join(dir, "eart.sqlite") };
}

/** One "container" on a shared SQLite file: its own connection, SqliteSaver, audit log (hooked), ledger and lock (the defaults for the saver). */
function sqliteInstance(file: string, tag: string, model?: ReturnType<typeof scriptedModel>) {
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const checkpointer = new SqliteSaver(db);
  const auditLog = new HookedSqliteAuditLog({ database: db });
  const s = refundSetup([[refund("c1", 740)]], {
    checkpointer,
    auditLog,
    tools: (t) => [t.lookupOrder, t.viewPaymentDetails, payingRefund(`sqlite-${tag}`)],
    agent: { recoveryRoles: ["supervisor"], ...(model ? { model } : {}) },
  });
  const agent = s.agent as unknown as Agent;
  opened.push(async () => {
    ((agent as unknown as Record<symbol, { close?: () => void }>)[Symbol.for("eart.threadLock")])?.close?.();
    if (db.open) db.close();
  });
  return { db, checkpointer, auditLog, agent };
}

/** The thread's lock row as another container's whose event loop stalled past staleMs (another host, no renewal for a minute). */
function markStale(db: Database.Database, thread: string) {
  expect(db.prepare(`UPDATE eart_thread_locks SET host = 'another-host', pid_ns = NULL, heartbeat_at = ? WHERE thread_id = ?`).run(Date.now() - 60_000, thread).changes).toBe(1);
}

describe("6. SQLite holds, a caller's abort, and what a caller can send", () => {
  it("SQLite: a run whose event loop stalled past staleMs, taken over by another container that rejects: its approval is refused, nothing is paid", async () => {
    const { file } = tempFile();
    const a = sqliteInstance(file, "A");
    const b = sqliteInstance(file, "B");
    const { thread, request } = await pausedThread(a as never, "sqlite-stale");
    const stalled = stallBefore(a.auditLog, "approval.decided");
    const runA = settle(a.agent.invoke(answer(request, "approve"), config(thread, "sam")));
    await stalled.entered;
    markStale(b.db, thread);
    expect(codeOf(await settle(b.agent.invoke(answer(request, "reject"), config(thread, "sue"))))).toBe("ok");
    stalled.open();
    expect(eartErrorOf(await stalled.settled)).toBeInstanceOf(ThreadLockLostError);
    expect(eartErrorOf(((await runA) as { error?: unknown }).error)).toBeInstanceOf(ThreadLockLostError);
    expect(paidOn(thread)).toHaveLength(0);
    expect(await decidedOn(b, thread)).toEqual(["reject:sue"]);
    await expectChainVerifies(b, thread);
  });

  /** Sam's approval, sent with his client's signal; the client goes away while the gate records it; sue rejects from elsewhere; then the gate's append goes on. */
  async function abortedApproval(a: { agent: Agent; auditLog: Hooks }, b: { agent: Agent }, thread: string, request: Request) {
    const stalled = stallBefore(a.auditLog, "approval.decided");
    const client = new AbortController();
    const runA = settle(a.agent.invoke(answer(request, "approve"), { ...config(thread, "sam"), signal: client.signal }));
    await stalled.entered;
    client.abort(new Error("the client went away"));
    // The guard gives the thread back as soon as the caller aborts (the gate's step is still in flight).
    expect((await runA).ok).toBe(false);
    const reject = codeOf(await settle(b.agent.invoke(answer(request, "reject"), config(thread, "sue"))));
    stalled.open();
    return { reject, stale: await stalled.settled };
  }

  it("PostgreSQL: a caller's abort frees the thread while the gate is recording sam's approval; sue's reject takes it; the gate's late append is refused", async () => {
    const a = await instance("prebuilt");
    const b = await instance("prebuilt");
    const { thread, request } = await pausedThread(a, "abort-pg");
    const { reject, stale } = await abortedApproval(a, b, thread, request);
    expect(reject).toBe("ok");
    expect(eartErrorOf(stale)).toBeInstanceOf(ThreadLockLostError);
    expect(paidOn(thread)).toHaveLength(0);
    expect(await decidedOn(b, thread)).toEqual(["reject:sue"]);
    await expectChainVerifies(b, thread);
  });

  // Was a hole (low): SQLite's fence let a run write after it released its hold, whoever held the
  // thread by then: the guard releases the hold as soon as the caller's signal aborts, while the step
  // in flight goes on, and the gate's approval.decided (approve, sam) was appended after sue's
  // accepted reject (two deciding answers). Now the SQLite lock keeps the thread's last holder
  // (eart_thread_fences, kept after a release), and a released hold's writes are refused once
  // another hold has taken the thread.
  it("SQLite: a caller's abort frees the thread while the gate is recording sam's approval; sue's reject takes it; the gate's late append is refused", async () => {
    const { file } = tempFile();
    const a = sqliteInstance(file, "A");
    const b = sqliteInstance(file, "B");
    const { thread, request } = await pausedThread(a as never, "abort-sqlite");
    const { reject, stale } = await abortedApproval(a, b, thread, request);
    expect(reject).toBe("ok");
    expect(paidOn(thread)).toHaveLength(0);
    expect(await decidedOn(b, thread)).toEqual(["reject:sue"]);
    expect(eartErrorOf(stale)).toBeInstanceOf(ThreadLockLostError);
  });

  it("a caller's config cannot switch the fence or the lock off: `lock: false`, `threadLock: false`, fence-like configurable keys and a numeric thread_id change nothing", async () => {
    const app = appName("cfg");
    const silent = await silentLock(app);
    const a = await instance("prebuilt", { on: await openStores(app), lock: silent.lock });
    const b = await instance("prebuilt");
    const thread = String(Math.floor(Math.random() * 1e12) + 1e12);
    const request = pendingApproval(await a.agent.invoke(ask(), { configurable: { ...config(thread).configurable, thread_id: Number(thread) } }))!;
    const hostile = (user: string) => ({
      lock: false,
      threadLock: false,
      fence: null,
      configurable: { ...config(thread, user).configurable, thread_id: Number(thread), lock: false, threadLock: false, fence: null, __eart_fence: null, eart_thread_fence: { token: "x" } },
    });
    // Two answers at once with the hostile keys: the lock still serialises them.
    const stalled = stallBefore(a.auditLog, "approval.decided");
    const runA = settle(a.agent.invoke(answer(request, "approve"), hostile("sam")));
    await stalled.entered;
    expect(codeOf(await settle(a.agent.invoke(answer(request, "approve"), hostile("sue"))))).toBe("thread_busy");
    // And the fence still refuses the stale run once the thread is taken.
    await silent.drop();
    expect(codeOf(await settle(b.agent.invoke(answer(request, "reject"), hostile("sue"))))).toBe("ok");
    stalled.open();
    expect(eartErrorOf(await stalled.settled)).toBeInstanceOf(ThreadLockLostError);
    await silent.hear();
    await runA;
    expect(paidOn(thread)).toHaveLength(0);
    expect(await decidedOn(b, thread)).toEqual(["reject:sue"]);
    // A run from an older checkpoint (checkpoint_id) is refused before anything runs.
    const history: { config: { configurable?: { checkpoint_id?: string } } }[] = [];
    for await (const snapshot of (b.agent as unknown as { getStateHistory(c: unknown): AsyncIterable<{ config: { configurable?: { checkpoint_id?: string } } }> }).getStateHistory(config(thread))) history.push(snapshot);
    const older = history.at(-2)!.config.configurable!.checkpoint_id!;
    expect(codeOf(await settle(b.agent.invoke(answer(request, "approve"), { configurable: { ...config(thread, "sam").configurable, checkpoint_id: older } })))).toBe("state_write_refused");
    expect(paidOn(thread)).toHaveLength(0);
  });

  // Was a hole (low; not the fence itself, found on the way): `runThread`, `resumeThread` and
  // `continueThread` on the createAgent middleware agent (`guardAgent`) always failed with
  // ThreadBusyError: `locksItself` (graphs/run-thread.ts) looked for THREAD_LOCK on the agent object,
  // guardAgent put it only on the compiled graph inside, so the lock was taken twice; an app
  // registering a middleware agent with `defineApp` could not resume or continue its threads. Now
  // guardAgent puts its graph's lock on the agent too.
  it("runThread and resumeThread on the middleware agent (guardAgent) run the thread", async () => {
    const mw = await instance("middleware");
    const thread = unique("mw-runthread");
    const run = await settle(runThread(mw.agent as never, ask(), config(thread)));
    expect(codeOf(run)).toBe("ok");
    const request = (run as { value: { approval?: Request } }).value.approval!;
    expect(codeOf(await settle(resumeThread(mw.agent as never, { decisions: [decide(request, "c1", "approve")] }, config(thread, "sam"))))).toBe("ok");
    expect(paidOn(thread)).toHaveLength(1);
  });

  // Was a hole (low; next to the fence): a governed agent invoked from a tool (or any step) of
  // another graph ran as a LangGraph subgraph of the caller: LangGraph copied the caller's ambient
  // configurable (its checkpoint namespace) into the nested run, although the caller named another
  // thread. The guard's thread-root check saw only the config it was handed, and the nested run's
  // checkpoints landed in a namespace of its thread that the guard's reads (the root) never see: its
  // state looked empty to every check and to `getState`. Now the guard runs a graph called from a
  // step of another thread detached from the caller's config (its own thread's root), still traced
  // under the caller and stopped with it.
  it("a governed agent run from another agent's tool keeps its own thread's state at the thread's root", async () => {
    const stores = await openStores(appName("nest_amb"));
    const inner = await instance("prebuilt", { on: stores, turns: [[refund("r1", 80)]] });
    const attached = tool(
      async (args: { orderId: string }, cfg) => {
        const outer = String((cfg as { configurable?: { thread_id?: unknown } }).configurable?.thread_id);
        const result = await inner.agent.invoke(ask("Please refund $80 on order 1042."), config(`${outer}-inner`));
        return JSON.stringify({ orderId: args.orderId, delegated: messagesOf(result).at(-1)?.content ?? null });
      },
      { name: "lookup_order", description: "Look an order up (delegates to the refunds desk).", schema: z.object({ orderId: z.string() }) },
    ) as unknown as StructuredToolInterface;
    const outer = await instance("prebuilt", { on: stores, turns: [[lookup("l1")]], lookup: attached });
    const thread = unique("nest-ambient");
    expect(codeOf(await settle(outer.agent.invoke(ask("Where is my refund for order 1042?"), config(thread))))).toBe("ok");
    expect(paidOn(`${thread}-inner`)).toHaveLength(1);
    // The inner thread ran, paid, and its audit log says so: its state should say so too.
    expect(await typesOf(inner, `${thread}-inner`)).toContain("tool.succeeded");
    expect(messagesOf((await inner.agent.getState(config(`${thread}-inner`))).values).length).toBeGreaterThan(0);
  });
});
