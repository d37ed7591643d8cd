/**
 * Red-team pass over eart's store conformance suites (`eart/testing`: auditLogSpec,
 * effectLedgerSpec, budgetStoreSpec, threadLockSpec, policyEngineSpec).
 *
 * What was attacked. Each suite is what a user runs to decide that their own store (a DynamoDB
 * audit log, a Redis ledger…) is safe to plug into eart. Every mutant below is a working store or
 * engine over storage shared by its handles (a Map standing for the database, and a second handle
 * from `reopen` standing for a second process), with one defect a real implementer could ship. Each
 * one is run through the suite exactly as a user would run their store through it
 * (`failingCases`, the recording runner the other spec tests use). The genuine versions of the same
 * implementations pass each suite (the controls).
 *
 * - `it`: the suite catches the mutant; the test says which case does.
 * - `it.fails`: a GAP left open: the suite passes a store that breaks what the runtime relies on.
 *   The setup assertions first show the defect is real; the last assertion is the one that does
 *   not hold ("the suite fails this mutant"). The comment names the runtime code that relies on it.
 *
 * Found, and now caught by the suites (each was an `it.fails`): without `reopen` a suite ran its
 * cross-process cases on one handle and passed a ledger atomic per handle only (every shared-store
 * suite now needs `reopen`, or `singleProcess: true` for a store no other process uses); the ledger
 * suite never raced `retry` against `finish` and accepted a placeholder seal key; the audit suite
 * never read a thread whose id is a prefix of another's, never read through a second handle after
 * another appended, and never checked the global log after concurrent appends to different
 * threads; the budget suite's fractions were all multiples of 1/100 (a store counting in hundredths
 * passed); the policy suite gave every case a fresh engine (a decision cache ignoring the
 * arguments passed); the ledger suite never exercised `commitsWith` / `audit` batching (given
 * `auditLog`, the log a ledger commits with, it now checks that the events of begin and finish
 * land in the chain exactly when the write does); the audit suite never called `pending()` (it now
 * lists through one handle what another appended); the lock suite never held a lock longer than a
 * lease (given `leaseMs`, it holds one for twice the lease); the policy suite checked `version`
 * only for form (given `changedRules`, edited rules must change it) and its case table could not
 * say `quorum`, `expiresInMs` or `allowedDecisions` (now it can, and the suite checks them).
 *
 * Open (`it.fails`): none.
 *
 * What the suites caught from the start: a begin or an addWithin atomic per handle only (given
 * `reopen`), a seal key per handle, two handles appending on one prev hash, a verify that ignores
 * the recorded head or the global log, integer budget counters, a re-entrant lock, a release that
 * resolves before it unlocks, and a policy engine that allows what no rule names.
 */
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  definePolicy,
  InboxIndex,
  MemoryAuditLog,
  Sealer,
  ThreadBusyError,
  verifyAuditStore,
  type AuditEvent,
  type AuditEventInput,
  type AuditLog,
  type BudgetStore,
  type EffectLedger,
  type LedgerEntry,
  type LedgerKey,
  type LedgerOutcome,
  type PendingOptions,
  type PendingTask,
  type PolicyEngine,
  type ReleaseThreadLock,
  type SignedChainHead,
  type ThreadLock,
} from "eart";
import {
  auditLogSpec,
  budgetStoreSpec,
  effectLedgerSpec,
  policyEngineSpec,
  SEED_POLICY_CASES,
  threadLockSpec,
  type AuditTamperOp,
  type MakeAuditLogOptions,
  type PolicyEngineCase,
} from "eart/testing";
import { seedPolicy } from "../../examples/policies/seed-policy.js";
import { globalHeadSigner, nextGlobalEntry, type GlobalEntry, type SignedGlobalHead, type ThreadHead } from "../../src/audit/global.js";
import { parsePendingOptions } from "../../src/audit/inbox.js";
import {
  groupByThread,
  markAppended,
  sealEvents,
  sealEventsWithJson,
  toInputList,
  verifyChain,
  type AuditVerification,
  type AuditVerifyOptions,
  type ChainHead,
  type GlobalLogSnapshot,
} from "../../src/audit/log.js";
import { headSigner, type HeadSigner } from "../../src/audit/signing.js";
import type { DecisionRecord } from "../../src/decisions/records.js";
import { SEAL_KEY_BYTES } from "../../src/decisions/seal.js";
import {
  byStartThenCall,
  isoOf,
  LEDGER_SCHEMA_VERSION,
  parseAttempt,
  parseAudit,
  parseKey,
  parseOutcome,
  parseThreadId,
  type LedgerAudit,
  type LedgerBegin,
} from "../../src/ledger/ledger.js";
import { fits, parseIncrements, parseKeys, parseLimits, withZeros } from "../../src/policy/budget.js";
import type { PolicyDecision, PolicyRequest } from "../../src/policy/engine.js";
import { checkThreadId } from "../../src/threads/lock.js";
import { failingCases } from "../support/specs.js";

// ---------------------------------------------------------------------------------------------
// Shared helpers

/** One round trip to the "database": a macrotask, so other callers run in between. */
const io = () => new Promise<void>((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Runs its tasks one at a time, in order: a connection (or a per-key lock) that serialises work. */
class Queue {
  #tail: Promise<unknown> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

/** An event of any type with any data (as the audit suite makes them). */
const aev = (threadId: string, type: AuditEventInput["type"], data: Record<string, unknown> = {}) => ({ threadId, type, data }) as AuditEventInput;

/** The case every shared-store suite fails when given neither `reopen` nor `singleProcess`. */
const ASKS_FOR_REOPEN = "is given a second handle on the same storage (reopen), or said to be used by one process only (singleProcess)";
/** The audit suite's case that lists what waits for a human through a second handle. */
const PENDING_CASE =
  "what waits for a human, appended through one handle, is listed through another: pending() says what the chain says (without pending, listThreads and read find it)";
/** The policy suite's case that asks one engine for the whole table. */
const ONE_ENGINE_CASE = "one engine decides the whole table, forwards and backwards, as a fresh engine does each case (no state carried from call to call)";

// ---------------------------------------------------------------------------------------------
// Effect ledger over shared storage

interface LedgerDb {
  /** The ledger table: one JSON row per key. */
  rows: Map<string, string>;
  sealKey?: Uint8Array;
  /** The audit log in the same transaction domain (what `commitsWith` says yes to). */
  audit: MemoryAuditLog;
}

const newLedgerDb = (): LedgerDb => ({ rows: new Map(), audit: new MemoryAuditLog() });

type LedgerFlaw =
  | "none"
  /** begin serialised per handle (an in-process mutex), check-then-insert against the table. */
  | "begin-atomic-per-handle"
  /** retry reads the row, then compare-and-sets on the attempt only, writing back the row it read. */
  | "retry-stale-write"
  /** commitsWith says yes, but the events handed to begin and finish are never appended. */
  | "drops-batched-events"
  /** A "development default" seal key. */
  | "placeholder-seal-key"
  /** Each handle makes its own seal key instead of reading the stored one. */
  | "seal-key-per-handle";

const PLACEHOLDER_SEAL_KEY = Buffer.from("eart-dev-seal-key".padEnd(SEAL_KEY_BYTES, "-"));

const rowId = (k: LedgerKey) => JSON.stringify([k.threadId, k.toolCallId, k.digest]);
const copyEntry = (json: string): LedgerEntry => JSON.parse(json) as LedgerEntry;

/** An effect ledger over {@link LedgerDb}: every conditional write is one atomic step after a round trip. */
class SharedLedger implements EffectLedger {
  readonly #queue = new Queue();
  #ownKey: Uint8Array | undefined;
  constructor(
    readonly db: LedgerDb,
    readonly flaw: LedgerFlaw = "none",
  ) {}

  commitsWith(log: AuditLog): boolean {
    return log === this.db.audit;
  }

  async begin(key: LedgerKey, now?: Date, audit?: LedgerAudit): Promise<LedgerBegin> {
    const k = parseKey(key);
    const startedAt = isoOf(now);
    const events = parseAudit(audit, (log) => this.commitsWith(log));
    // A bad event refuses the whole write, before anything is claimed.
    if (events) sealEvents(null, events);
    const id = rowId(k);
    const entry: LedgerEntry = { schemaVersion: LEDGER_SCHEMA_VERSION, key: { ...k }, status: "started", attempt: 1, startedAt };
    if (this.flaw === "begin-atomic-per-handle") {
      return this.#queue.run(async () => {
        const existing = this.db.rows.get(id);
        await io();
        if (existing !== undefined) return { claimed: false, entry: copyEntry(existing) };
        this.db.rows.set(id, JSON.stringify(entry));
        if (events) await this.db.audit.append(events);
        return { claimed: true, entry: copyEntry(JSON.stringify(entry)) };
      });
    }
    await io();
    const existing = this.db.rows.get(id);
    if (existing !== undefined) return { claimed: false, entry: copyEntry(existing) };
    this.db.rows.set(id, JSON.stringify(entry));
    if (events && this.flaw !== "drops-batched-events") await this.db.audit.append(events);
    return { claimed: true, entry: copyEntry(JSON.stringify(entry)) };
  }

  async retry(key: LedgerKey, expectedAttempt: number, now?: Date): Promise<LedgerEntry | undefined> {
    const k = parseKey(key);
    const attempt = parseAttempt(expectedAttempt);
    const startedAt = isoOf(now);
    const id = rowId(k);
    await io();
    if (this.flaw === "retry-stale-write") {
      const read = this.db.rows.get(id);
      if (read === undefined) return undefined;
      const seen = copyEntry(read);
      if (seen.status !== "started" || seen.attempt !== attempt) return undefined;
      await io();
      // UPDATE … SET <the row as read, attempt + 1> WHERE attempt = expected (the status is not in the condition).
      const current = this.db.rows.get(id);
      if (current === undefined || copyEntry(current).attempt !== attempt) return undefined;
      const next: LedgerEntry = { ...seen, attempt: attempt + 1, startedAt };
      this.db.rows.set(id, JSON.stringify(next));
      return copyEntry(JSON.stringify(next));
    }
    const current = this.db.rows.get(id);
    if (current === undefined) return undefined;
    const entry = copyEntry(current);
    if (entry.status !== "started" || entry.attempt !== attempt) return undefined;
    const next: LedgerEntry = { ...entry, attempt: attempt + 1, startedAt };
    this.db.rows.set(id, JSON.stringify(next));
    return copyEntry(JSON.stringify(next));
  }

  async finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date, audit?: LedgerAudit): Promise<boolean> {
    const k = parseKey(key);
    const parsed = parseOutcome(outcome);
    const finishedAt = isoOf(now);
    const events = parseAudit(audit, (log) => this.commitsWith(log));
    if (events) sealEvents(null, events);
    const id = rowId(k);
    await io();
    const current = this.db.rows.get(id);
    if (current === undefined) return false;
    const entry = copyEntry(current);
    if (entry.status !== "started") return false;
    const next: LedgerEntry = {
      ...entry,
      status: parsed.status,
      finishedAt,
      ...(parsed.status === "succeeded" ? { result: JSON.parse(parsed.resultJson) as unknown } : { error: parsed.error }),
    };
    this.db.rows.set(id, JSON.stringify(next));
    if (events && this.flaw !== "drops-batched-events") await this.db.audit.append(events);
    return true;
  }

  async get(key: LedgerKey): Promise<LedgerEntry | undefined> {
    const id = rowId(parseKey(key));
    await io();
    const row = this.db.rows.get(id);
    return row === undefined ? undefined : copyEntry(row);
  }

  async list(threadId: string): Promise<LedgerEntry[]> {
    const t = parseThreadId(threadId);
    await io();
    return [...this.db.rows.values()]
      .map(copyEntry)
      .filter((e) => e.key.threadId === t)
      .sort(byStartThenCall);
  }

  async sealKey(): Promise<Uint8Array> {
    if (this.flaw === "placeholder-seal-key") return Uint8Array.from(PLACEHOLDER_SEAL_KEY);
    if (this.flaw === "seal-key-per-handle") return Uint8Array.from((this.#ownKey ??= randomBytes(SEAL_KEY_BYTES)));
    await io();
    this.db.sealKey ??= randomBytes(SEAL_KEY_BYTES);
    return Uint8Array.from(this.db.sealKey);
  }
}

/**
 * The ledger suite against `flaw`: a fresh database per `open`, `reopen` a second handle on it
 * (unless `reopen: false`), and the audit log in its transaction domain (`auditLog`).
 */
const ledgerFailures = (flaw: LedgerFlaw, { reopen = true } = {}) =>
  failingCases(effectLedgerSpec, () => new SharedLedger(newLedgerDb(), flaw), {
    ...(reopen ? { reopen: (l: EffectLedger) => new SharedLedger((l as SharedLedger).db, flaw) } : {}),
    auditLog: (l: EffectLedger) => (l as SharedLedger).db.audit,
  });

const ledgerKey = (threadId = `t-${randomUUID()}`): LedgerKey => ({ threadId, toolCallId: "call_1", digest: "d".repeat(64) });

describe("effectLedgerSpec, red-teamed", () => {
  it("control: passes the genuine shared-storage ledger given reopen; without it, fails only the case that asks for it", async () => {
    expect(await ledgerFailures("none")).toEqual([]);
    expect(await ledgerFailures("none", { reopen: false })).toEqual([ASKS_FOR_REOPEN]);
  });

  it("catches a begin that is atomic per handle only (check-then-insert across two handles), given reopen", async () => {
    expect((await ledgerFailures("begin-atomic-per-handle")).sort()).toEqual([
      "concurrent begins of one key, across handles: exactly one claims it, every caller gets its entry",
      // Two claims, two `tool.started` in the log.
      "with commitsWith(log), concurrent begins and finishes of one key across handles append exactly the winner's events",
    ]);
  });

  // Was a gap (spec option), now caught: nodes/governed-tool-node.ts:657 claims a call with `ledger.begin` and runs
  // the tool when `claimed` (line 674); Invariant 5 (at most once across concurrent resumes from
  // several processes) rests on begin being atomic across processes. This ledger serialises begins
  // in its own process only: two workers resuming one thread both get `claimed: true` and both
  // refund. The suite runs its concurrent cases on one handle when `reopen` is not given, and a
  // user who leaves it out (it is optional, nothing warns) gets a green suite.
  it("catches, by asking for reopen (or singleProcess), a ledger whose begin is atomic per handle only", async () => {
    const db = newLedgerDb();
    const [a, b] = [new SharedLedger(db, "begin-atomic-per-handle"), new SharedLedger(db, "begin-atomic-per-handle")];
    const key = ledgerKey();
    const claims = await Promise.all([a.begin(key), b.begin(key)]);
    expect(claims.map((c) => c.claimed)).toEqual([true, true]); // two processes, two executions
    const genuine = newLedgerDb();
    const both = await Promise.all([new SharedLedger(genuine).begin(key), new SharedLedger(genuine).begin(key)]);
    expect(both.filter((c) => c.claimed).length).toBe(1);
    expect(await ledgerFailures("begin-atomic-per-handle", { reopen: false })).toContain(ASKS_FOR_REOPEN);
  });

  // Was a gap, now caught: retry is specified as a compare-and-set "only from started at the expected attempt"; the
  // suite checks it sequentially and retries against retries, never a retry racing a finish. This
  // ledger's retry conditions its write on the attempt only and writes back the row it read before:
  // a finish that lands in between (nodes/governed-tool-node.ts:401/417, the first process recording
  // the refund) is overwritten by the retry of a second process (line 700, an idempotent tool or a
  // human's retry). A finished entry goes back to `started`: the second process runs the tool
  // although its outcome was recorded (the genuine ledger refuses that retry: EffectInProgressError),
  // the recorded result is lost, and should that process stop before finishing, the next run sends
  // a completed refund to a human as `outcome_unknown`, whose `retry` refunds again.
  it("catches a ledger whose retry, racing a finish, brings a finished entry back to started", async () => {
    const db = newLedgerDb();
    const [a, b] = [new SharedLedger(db, "retry-stale-write"), new SharedLedger(db, "retry-stale-write")];
    const key = ledgerKey();
    await a.begin(key);
    // B's retry reads the row, A's finish lands, B's conditional write lands on top of it.
    const [retried, finished] = await Promise.all([b.retry(key, 1), a.finish(key, { status: "succeeded", result: { refundId: "r-1" } })]);
    expect(finished).toBe(true);
    expect(retried?.attempt).toBe(2); // both "won"
    expect(await a.get(key)).toMatchObject({ status: "started", attempt: 2 }); // the recorded refund is gone
    // The genuine ledger, same interleaving: the retry lands first and the finish after it; the outcome stays.
    const g = newLedgerDb();
    const [ga, gb] = [new SharedLedger(g), new SharedLedger(g)];
    await ga.begin(key);
    await Promise.all([gb.retry(key, 1), ga.finish(key, { status: "succeeded", result: { refundId: "r-1" } })]);
    expect(await ga.get(key)).toMatchObject({ status: "succeeded", result: { refundId: "r-1" } });
    expect(await ledgerFailures("retry-stale-write")).toContain("a retry racing a finish, across handles, never brings a finished entry back to started");
  });

  // Was a gap, now caught (spec option `auditLog`): nodes/governed-tool-node.ts:179 batches
  // whenever `ledger.commitsWith(auditLog)` is true: the claim then carries the first
  // `tool.started` (line 657, and the node appends no start of its own: line 499), and the finish
  // carries every event of the call plus its outcome (line 401, which then empties the node's
  // buffer). A ledger that says yes and drops those events loses `tool.started`, `tool.succeeded` /
  // `tool.failed` (and the retries' events) of every tool call: refunds run with no audit record
  // (Invariant 6), and the chain still verifies. The suite never called `commitsWith` nor passed
  // `audit`.
  it("catches a ledger that says commitsWith(log) and drops the events it is given", async () => {
    const db = newLedgerDb();
    const ledger = new SharedLedger(db, "drops-batched-events");
    const key = ledgerKey();
    expect(ledger.commitsWith(db.audit)).toBe(true);
    const started = aev(key.threadId, "tool.started", { toolCallId: "call_1", attempt: 1 });
    const done = aev(key.threadId, "tool.succeeded", { toolCallId: "call_1", attempt: 1 });
    expect((await ledger.begin(key, undefined, { log: db.audit, events: [started] })).claimed).toBe(true);
    expect(await ledger.finish(key, { status: "succeeded", result: 1 }, undefined, { log: db.audit, events: [done] })).toBe(true);
    expect(await db.audit.read(key.threadId)).toEqual([]);
    const g = newLedgerDb();
    const genuine = new SharedLedger(g);
    await genuine.begin(key, undefined, { log: g.audit, events: [started] });
    await genuine.finish(key, { status: "succeeded", result: 1 }, undefined, { log: g.audit, events: [done] });
    expect((await g.audit.read(key.threadId)).map((e) => e.type)).toEqual(["tool.started", "tool.succeeded"]);
    expect((await ledgerFailures("drops-batched-events")).sort()).toEqual([
      "with commitsWith(log), an audit event the log refuses leaves no claim and no outcome",
      "with commitsWith(log), begin and finish append their audit events to the log's chain, and only when they write",
      "with commitsWith(log), concurrent begins and finishes of one key across handles append exactly the winner's events",
    ]);
  });

  // Was a gap, now caught: The seal key is what Invariant 1 rests on: src/decisions/seal.ts HMACs every decision
  // record and identity in graph state, and langgraph/records.ts:40 (`assertSealed`, called by the
  // gate, the tool node and recovery) trusts any record whose seal verifies. This ledger returns a
  // "development default" key: anyone who can call `updateState` on a thread (a threat in
  // DESIGN.md) seals an `allowed` decision for any call with the public default, and the tool runs
  // with no policy decision or approval in eart's stores. The suite only checks length, stability
  // and "not all zeros".
  it("catches a ledger whose seal key is a fixed placeholder (state could be forged)", async () => {
    const ledger = new SharedLedger(newLedgerDb(), "placeholder-seal-key");
    const key = await ledger.sealKey();
    expect(key.length).toBe(SEAL_KEY_BYTES);
    expect(key.some((b) => b !== 0)).toBe(true);
    // A forger who knows the default, not the store: their record passes eart's check.
    const forged = new Sealer(Uint8Array.from(PLACEHOLDER_SEAL_KEY)).decision("t-victim", { toolCallId: "c1", status: "allowed" } as unknown as DecisionRecord);
    expect(new Sealer(key).decisionIsSealed("t-victim", forged)).toBe(true);
    // A check a suite could make: 32 random bytes have ~30 distinct values, a passphrase far fewer.
    expect(new Set(key).size).toBeLessThan(16);
    expect(new Set(await new SharedLedger(newLedgerDb()).sealKey()).size).toBeGreaterThan(20);
    expect(await ledgerFailures("placeholder-seal-key")).toContain(`sealKey is ${SEAL_KEY_BYTES} bytes and the same on every call`);
  });

  it("catches a seal key made per handle instead of stored once (workers would take each other's state for forged)", async () => {
    expect((await ledgerFailures("seal-key-per-handle")).sort()).toEqual([
      "another handle on the same storage sees and continues what the first wrote, with the same seal key",
      "concurrent calls of sealKey from several handles (the first ones on fresh storage) agree on one key",
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// Audit log over shared storage

type StoredEvent = Omit<AuditEvent, "data"> & { data: string };

interface AuditDb {
  threads: Map<string, StoredEvent[]>;
  /** Each thread's recorded head. */
  heads: Map<string, ChainHead>;
  signed: Map<string, SignedChainHead>;
  global: GlobalEntry[];
  /** Each thread's latest head in the global log. */
  logged: Map<string, ThreadHead>;
  signedGlobal?: SignedGlobalHead;
  inbox: InboxIndex;
  /** Per-thread locks (what the global-fork mutant takes instead of one lock for the append). */
  threadLocks: Map<string, Queue>;
}

const newAuditDb = (): AuditDb => ({ threads: new Map(), heads: new Map(), signed: new Map(), global: [], logged: new Map(), inbox: new InboxIndex(), threadLocks: new Map() });

type AuditFlaw =
  | "none"
  /** Append serialised per handle, head read before the write: two handles append on one prev hash. */
  | "fork-across-handles"
  /** read(threadId) is a begins_with query on the thread id. */
  | "prefix-read"
  /** read is served from a per-handle cache (append-only, so "it never changes"), extended by own appends. */
  | "cached-read"
  /** The inbox index lives in the handle (fed by its own appends), not in the storage. */
  | "per-handle-inbox"
  /** Per-thread locks only: the global entry is built on a global head read before the write. */
  | "global-fork"
  /** verify does not compare the chain with the recorded head. */
  | "verify-ignores-head"
  /** verify does not compare the chain with the thread's latest head in the global log. */
  | "verify-ignores-global";

/** Sealed events of one append, by thread. */
type Sealed = (readonly [string, { event: AuditEvent; dataJson: string }[]])[];

const parseStored = (e: StoredEvent): AuditEvent => ({ ...e, data: JSON.parse(e.data) as Record<string, unknown> });
const bySeq = (a: { seq: number }, b: { seq: number }) => a.seq - b.seq;

/** An audit log over {@link AuditDb}: an append is one atomic step after a round trip. */
class SharedAuditLog implements AuditLog {
  readonly #queue = new Queue();
  readonly #inbox = new InboxIndex();
  readonly #cache = new Map<string, AuditEvent[]>();
  readonly #signer: HeadSigner | undefined;
  readonly #globalSigner: { sign(head: { gseq: number; hash: string }): SignedGlobalHead } | undefined;

  constructor(
    readonly db: AuditDb,
    readonly options: MakeAuditLogOptions,
    readonly flaw: AuditFlaw = "none",
  ) {
    this.#signer = options.signingKey ? headSigner(options.signingKey) : undefined;
    this.#globalSigner = options.signingKey ? globalHeadSigner(options.signingKey) : undefined;
  }

  async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
    const groups = groupByThread(toInputList(events));
    if (groups.size === 0) return [];
    await io();
    if (this.flaw === "fork-across-handles") {
      return this.#queue.run(async () => {
        const sealed = this.#seal(groups);
        await io();
        return this.#store(sealed, this.db.global.at(-1));
      });
    }
    if (this.flaw === "global-fork") {
      const ids = [...groups.keys()].sort();
      const locked = ids.reduceRight<() => Promise<AuditEvent[]>>(
        (inner, id) => () => {
          let lock = this.db.threadLocks.get(id);
          if (!lock) this.db.threadLocks.set(id, (lock = new Queue()));
          return lock.run(inner);
        },
        async () => {
          const sealed = this.#seal(groups);
          const globalHead = this.db.global.at(-1);
          await io();
          return this.#store(sealed, globalHead);
        },
      );
      return locked();
    }
    return this.#store(this.#seal(groups), this.db.global.at(-1));
  }

  /** Seals every thread's events on its recorded head; throws AuditInputError before anything is stored. */
  #seal(groups: Map<string, AuditEventInput[]>): Sealed {
    return [...groups].map(([threadId, inputs]) => [threadId, sealEventsWithJson(this.db.heads.get(threadId) ?? null, inputs)] as const);
  }

  #store(sealed: Sealed, globalHead: GlobalEntry | undefined): AuditEvent[] {
    const out: AuditEvent[] = [];
    const heads: ThreadHead[] = [];
    for (const [threadId, list] of sealed) {
      let chain = this.db.threads.get(threadId);
      if (!chain) this.db.threads.set(threadId, (chain = []));
      for (const { event, dataJson } of list) {
        chain.push({ ...event, data: dataJson });
        out.push(event);
        (this.flaw === "per-handle-inbox" ? this.#inbox : this.db.inbox).apply(event);
        this.#cache.get(threadId)?.push(parseStored({ ...event, data: dataJson }));
      }
      const last = list.at(-1)!.event;
      const head = { threadId, seq: last.seq, hash: last.hash };
      heads.push(head);
      this.db.heads.set(threadId, { seq: last.seq, hash: last.hash });
      if (this.#signer) this.db.signed.set(threadId, this.#signer.sign(head));
    }
    const entry = nextGlobalEntry(globalHead ? { gseq: globalHead.gseq, hash: globalHead.hash } : null, heads);
    this.db.global.push(entry);
    for (const h of entry.heads) this.db.logged.set(h.threadId, h);
    if (this.#globalSigner) this.db.signedGlobal = this.#globalSigner.sign(entry);
    markAppended(out, entry, this.db.signedGlobal);
    return out;
  }

  #rows(threadId: string): AuditEvent[] {
    return [...(this.db.threads.get(threadId) ?? [])].sort(bySeq).map(parseStored);
  }

  async read(threadId: string): Promise<AuditEvent[]> {
    await io();
    if (this.flaw === "prefix-read") {
      return [...this.db.threads.keys()]
        .filter((id) => id.startsWith(threadId))
        .sort()
        .flatMap((id) => this.#rows(id));
    }
    if (this.flaw === "cached-read") {
      let cached = this.#cache.get(threadId);
      if (!cached) this.#cache.set(threadId, (cached = this.#rows(threadId)));
      return cached.map((e) => JSON.parse(JSON.stringify(e)) as AuditEvent);
    }
    return this.#rows(threadId);
  }

  async verify(threadId: string, options: AuditVerifyOptions = {}): Promise<AuditVerification> {
    await io();
    const logged = this.db.logged.get(threadId);
    return verifyChain(threadId, this.#rows(threadId), this.flaw === "verify-ignores-head" ? undefined : (this.db.heads.get(threadId) ?? null), {
      ...options,
      publicKey: options.publicKey ?? this.#signer?.publicKey,
      signedHead: this.db.signed.get(threadId),
      ...(this.flaw === "verify-ignores-global" ? {} : { globalHead: logged ? { seq: logged.seq, hash: logged.hash } : null }),
    });
  }

  async listThreads(): Promise<string[]> {
    await io();
    return [...this.db.threads].filter(([, events]) => events.length > 0).map(([id]) => id).sort();
  }

  async signedHead(threadId: string): Promise<SignedChainHead | undefined> {
    await io();
    const head = this.db.signed.get(threadId);
    return head && { ...head };
  }

  async globalLog(): Promise<GlobalLogSnapshot> {
    await io();
    const last = this.db.global.at(-1);
    return {
      entries: this.db.global.map((e) => ({ ...e, heads: e.heads.map((h) => ({ ...h })) })),
      recorded: last ? { gseq: last.gseq, hash: last.hash } : null,
      ...(this.db.signedGlobal ? { signedHead: { ...this.db.signedGlobal } } : {}),
      ...(this.#signer ? { publicKey: this.#signer.publicKey } : {}),
    };
  }

  async globalHead() {
    await io();
    const last = this.db.global.at(-1);
    return { head: last ? { gseq: last.gseq, hash: last.hash } : null, ...(this.db.signedGlobal ? { signed: { ...this.db.signedGlobal } } : {}) };
  }

  async pending(options?: PendingOptions): Promise<PendingTask[]> {
    await io();
    return (this.flaw === "per-handle-inbox" ? this.#inbox : this.db.inbox).list(parsePendingOptions(options));
  }
}

/** Edits an {@link AuditDb} behind the log's back, as the spec's tamper ops say. */
function tamperAuditDb(db: AuditDb, threadId: string, op: AuditTamperOp): void {
  const chain = db.threads.get(threadId) ?? [];
  const at = (seq: number) => {
    const index = chain.findIndex((e) => e.seq === seq);
    expect(index).toBeGreaterThanOrEqual(0);
    return index;
  };
  switch (op.kind) {
    case "set_data":
      chain[at(op.seq)]!.data = JSON.stringify(op.data);
      return;
    case "delete":
      chain.splice(at(op.seq), 1);
      return;
    case "swap": {
      const [a, b] = op.seqs.map(at) as [number, number];
      chain[a]!.seq = op.seqs[1];
      chain[b]!.seq = op.seqs[0];
      return;
    }
    case "set_head": {
      const head = op.head as { seq: number; hash: string; signature?: string } | null;
      db.heads.delete(threadId);
      db.signed.delete(threadId);
      if (head) db.heads.set(threadId, { seq: head.seq, hash: head.hash });
      if (head && "signature" in head) db.signed.set(threadId, head as unknown as SignedChainHead);
      return;
    }
    case "delete_thread":
      db.threads.delete(threadId);
      db.heads.delete(threadId);
      db.signed.delete(threadId);
      return;
  }
}

/** The audit suite against `flaw`: a fresh database per `open`, `reopen` a second handle on it, the tamper hook on. */
const auditFailures = async (flaw: AuditFlaw): Promise<string[]> =>
  (
    await failingCases(auditLogSpec, (o: MakeAuditLogOptions) => new SharedAuditLog(newAuditDb(), o, flaw), {
      reopen: (log: AuditLog) => new SharedAuditLog((log as SharedAuditLog).db, (log as SharedAuditLog).options, flaw),
      tamper: (log: AuditLog, threadId: string, op: AuditTamperOp) => tamperAuditDb((log as SharedAuditLog).db, threadId, op),
    })
  ).sort();

describe("auditLogSpec, red-teamed", () => {
  it("control: passes the genuine shared-storage audit log (tampering cases included)", async () => {
    expect(await auditFailures("none")).toEqual([]);
  });

  it("catches two handles appending on one prev hash (a forked chain)", async () => {
    expect(await auditFailures("fork-across-handles")).toEqual(["concurrent appends to one thread from several callers keep one unbroken chain"]);
  });

  it("catches a verify that ignores the recorded head (a removed head, a cut-off last event)", async () => {
    expect(await auditFailures("verify-ignores-head")).toEqual([
      "tampering: a deleted last event is a head_mismatch at its seq",
      "tampering: a removed head is a head_mismatch at seq 0",
    ]);
  });

  it("catches a verify that ignores the global log (a thread deleted whole, a rollback)", async () => {
    expect(await auditFailures("verify-ignores-global")).toEqual([
      "tampering, signed: a rollback to an earlier signed head is caught with a knownHead",
      "tampering: a thread deleted whole (events, heads) is caught by the global log, per thread and store-wide",
    ]);
  });

  // Was a gap, now caught: Every reader of the log trusts `read(threadId)` to be that thread's events only. With a
  // begins_with query (a DynamoDB sort-key prefix, a `LIKE 'id%'`), reading thread `t-1` returns
  // `t-10`'s events too: src/export/core.ts:441 ships another customer's events in `t-1`'s trace;
  // graphs/resume-guard.ts:651/692 (`recordedAnswers`, walking from the end) takes `t-10`'s answers
  // for `t-1`'s; :679 takes the first `identity.bound` it finds as the thread's owner; graphs/app.ts:68
  // picks the agent from the wrong thread. The ledger, lock and budget suites test a prefix id; the
  // audit suite never reads a thread whose id is a prefix of another's.
  it("catches a log whose read(threadId) returns every thread whose id starts with it", async () => {
    const run = `t-${randomUUID()}`;
    const [mine, theirs] = [`${run}-1`, `${run}-10`];
    const batch = [aev(mine, "run.started", { input: "my refund" }), aev(theirs, "identity.bound", { agentId: "support-agent", userId: "mallory" })];
    const log = new SharedAuditLog(newAuditDb(), {}, "prefix-read");
    await log.append(batch);
    expect((await log.read(mine)).map((e) => e.threadId)).toEqual([mine, theirs]); // mallory's events read as cara's thread
    expect((await log.verify(mine)).ok).toBe(true);
    const genuine = new SharedAuditLog(newAuditDb(), {});
    await genuine.append(batch);
    expect((await genuine.read(mine)).map((e) => e.threadId)).toEqual([mine]);
    expect(await auditFailures("prefix-read")).toContain("a thread id that begins another's names only its own thread: read, verify and heads never mix them");
  });

  // Was a gap, now caught: An audit log is append-only, so "cache what you read" looks safe; but the runtime reads it
  // to learn what *other* workers recorded: graphs/resume-guard.ts:692 (`assertNotAnswered`) must
  // see the answer worker A accepted to refuse a second answer sent to worker B (else LangGraph puts
  // B's answer in place of the recorded one and the step acts on it); :679 must see the
  // `identity.bound` A recorded to stop another user continuing the thread; the tool node's recovery
  // (nodes/governed-tool-node.ts:754) must see A's `tool.cancelled` / `tool.started`. The suite's
  // reopen case reads through the second handle before that handle appends, and never again after
  // the first handle appends.
  it("catches a log whose reads are cached per handle (blind to what other workers append)", async () => {
    const db = newAuditDb();
    const [workerA, workerB] = [new SharedAuditLog(db, {}, "cached-read"), new SharedAuditLog(db, {}, "cached-read")];
    const t = `t-${randomUUID()}`;
    await workerA.append(aev(t, "approval.requested", { requests: [] }));
    expect((await workerB.read(t)).length).toBe(1);
    await workerA.append(aev(t, "approval.decided", { approverId: "sam", decisions: [] }));
    expect((await workerB.read(t)).map((e) => e.type)).toEqual(["approval.requested"]); // sam's answer is invisible to B
    expect((await new SharedAuditLog(db, {}).read(t)).length).toBe(2);
    expect(await auditFailures("cached-read")).toContain("what one handle appends, a handle that read the thread before reads now (no stale reads)");
  });

  // Was a gap, now caught: `pending()` is the inbox index, "kept in the transaction of every
  // append, so it says what the chain says" (src/audit/log.ts, AuditLog.pending). cli/local.ts:41
  // (`eart approvals`, run as its own process) lists only the threads the index names when the log
  // has `pending`. This store keeps the index in the handle, fed by that handle's appends: the
  // approver's process lists nothing the workers asked, and the requests wait unseen until they
  // expire. The suite never called `pending`.
  it("catches a log whose pending() index misses what other handles appended", async () => {
    const db = newAuditDb();
    const [worker, approverCli] = [new SharedAuditLog(db, {}, "per-handle-inbox"), new SharedAuditLog(db, {}, "per-handle-inbox")];
    const t = `t-${randomUUID()}`;
    const request = aev(t, "approval.requested", { requests: [{ toolCallId: "c1", name: "issue_refund", approverRoles: ["supervisor"], requestedBy: { agentId: "support-agent", userId: "cara" } }] });
    await worker.append(request);
    expect((await worker.pending()).map((p) => p.toolCallId)).toEqual(["c1"]);
    expect(await approverCli.pending()).toEqual([]);
    const g = newAuditDb();
    await new SharedAuditLog(g, {}).append(request);
    expect((await new SharedAuditLog(g, {}).pending()).map((p) => p.toolCallId)).toEqual(["c1"]);
    expect(await auditFailures("per-handle-inbox")).toEqual([PENDING_CASE]);
  });

  // Was a gap, now caught: The global log is the store's one serial chain (README, "Scaling out": every append takes
  // the global lock after the thread's). This store locks per thread only, so two workers appending
  // to two threads build global entries on the same global head: the global log forks on any busy
  // deployment. src/audit/verify.ts (`verifyAuditStore`, `eart audit verify`) then reports an
  // untampered store as broken, and the witness / deleted-thread checks (Invariant 6) can no longer
  // tell tampering from traffic. The suite checks the global log only after sequential appends; its
  // concurrent case is one thread.
  it("catches a log whose global log forks under concurrent appends to different threads", async () => {
    const db = newAuditDb();
    const [a, b] = [new SharedAuditLog(db, {}, "global-fork"), new SharedAuditLog(db, {}, "global-fork")];
    const [t, u] = [`t-${randomUUID()}`, `u-${randomUUID()}`];
    await Promise.all([a.append(aev(t, "run.started")), b.append(aev(u, "run.started"))]);
    expect((await a.verify(t)).ok).toBe(true);
    expect((await b.verify(u)).ok).toBe(true);
    expect(db.global.map((e) => e.gseq)).toEqual([0, 0]);
    expect((await verifyAuditStore(a)).ok).toBe(false);
    const g = newAuditDb();
    await Promise.all([new SharedAuditLog(g, {}).append(aev(t, "run.started")), new SharedAuditLog(g, {}).append(aev(u, "run.started"))]);
    expect((await verifyAuditStore(new SharedAuditLog(g, {}))).ok).toBe(true);
    expect(await auditFailures("global-fork")).toContain("concurrent appends to several threads from several handles keep one global log: contiguous, chained, verified");
  });
});

// ---------------------------------------------------------------------------------------------
// Budget store over shared storage

type BudgetFlaw =
  | "none"
  /** Counters are integers (a Redis INCRBY): increments rounded to whole units. */
  | "integer-counters"
  /** Counters are integers in hundredths (INCRBY of round(x × 100)): "exact to the cent". */
  | "hundredths-counters"
  /** addWithin serialised per handle (an in-process mutex), read then write against the shared counters. */
  | "add-within-atomic-per-handle";

class SharedBudgetStore implements BudgetStore {
  readonly #queue = new Queue();
  constructor(
    readonly db: Map<string, number>,
    readonly flaw: BudgetFlaw = "none",
  ) {}

  /** The stored form of an amount. */
  #unit(x: number): number {
    if (this.flaw === "integer-counters") return Math.round(x);
    if (this.flaw === "hundredths-counters") return Math.round(x * 100);
    return x;
  }
  #value(stored: number): number {
    return this.flaw === "hundredths-counters" ? stored / 100 : stored;
  }

  async get(keys: string[]): Promise<Record<string, number>> {
    const list = parseKeys(keys);
    await io();
    return withZeros(
      list,
      list.flatMap((k): [string, number][] => (this.db.has(k) ? [[k, this.#value(this.db.get(k)!)]] : [])),
    );
  }

  async add(increments: Record<string, number>): Promise<void> {
    const entries = parseIncrements(increments);
    await io();
    for (const [key, delta] of entries) this.db.set(key, (this.db.get(key) ?? 0) + this.#unit(delta));
  }

  async addWithin(increments: Record<string, number>, limits: Record<string, number>): Promise<boolean> {
    const entries = parseIncrements(increments).map(([k, d]): [string, number] => [k, this.#unit(d)]);
    const bounds = new Map([...parseLimits(limits)].map(([k, l]) => [k, this.#unit(l)]));
    const write = () => {
      for (const [key, delta] of entries) this.db.set(key, (this.db.get(key) ?? 0) + delta);
    };
    if (this.flaw === "add-within-atomic-per-handle") {
      return this.#queue.run(async () => {
        const seen = new Map(entries.map(([k]) => [k, this.db.get(k) ?? 0]));
        await io();
        if (!fits(entries, bounds, (k) => seen.get(k)!)) return false;
        write();
        return true;
      });
    }
    await io();
    if (!fits(entries, bounds, (k) => this.db.get(k) ?? 0)) return false;
    write();
    return true;
  }
}

const budgetFailures = (flaw: BudgetFlaw) =>
  failingCases(budgetStoreSpec, () => new SharedBudgetStore(new Map(), flaw), { reopen: (s: BudgetStore) => new SharedBudgetStore((s as SharedBudgetStore).db, flaw) });

describe("budgetStoreSpec, red-teamed", () => {
  it("control: passes the genuine shared-storage budget store", async () => {
    expect(await budgetFailures("none")).toEqual([]);
  });

  it("catches integer counters (increments rounded to whole units)", async () => {
    const failures = await budgetFailures("integer-counters");
    expect(failures).toContain("add sums each counter of a batch, across batches, negative and fractional increments included");
    expect(failures).toContain("addWithin adds nothing, and says false, when one limited counter would exceed its limit");
  });

  it("catches an addWithin that is atomic per handle only, given reopen", async () => {
    expect((await budgetFailures("add-within-atomic-per-handle")).sort()).toEqual([
      "concurrent addWithin calls from several handles against a sum limit never take it past the limit",
      "concurrent addWithin calls from several handles against one call limit: exactly as many fit as the limit allows",
    ]);
  });

  // Was a gap, now caught: src/policy/budget.ts sums the raw argument (`amountOf`, any finite non-negative number)
  // into `…|sum` counters: `reserve` (line 358, `store.addWithin`) and `charge` (line 452, `store.add`). A
  // store that counts in hundredths loses every increment under half a cent: a per-agent budget of
  // "$5 of API spend a day" charged $0.004 a call, or "0.5 BTC a day" in 0.001 steps, never moves,
  // and the agent spends without limit (guards/policy-gate.ts `withinBudget` sees the counter at 0
  // forever). Every fraction the suite uses (740.5, 0.25, 40.25, 2.5) is a multiple of 1/100.
  it("catches a store that counts in hundredths (sub-cent increments would vanish: unlimited spend)", async () => {
    const store = new SharedBudgetStore(new Map(), "hundredths-counters");
    const key = `spend|support-agent|2025-03-10|sum`;
    let admitted = 0;
    for (let i = 0; i < 2_000; i++) if (await store.addWithin({ [key]: 0.004 }, { [key]: 5 })) admitted++;
    expect(admitted).toBe(2_000); // $8 spent against a $5 budget
    expect(await store.get([key])).toEqual({ [key]: 0 });
    const genuine = new SharedBudgetStore(new Map());
    let fitting = 0;
    for (let i = 0; i < 2_000; i++) if (await genuine.addWithin({ [key]: 0.004 }, { [key]: 5 })) fitting++;
    expect(fitting).toBeLessThan(1_300);
    expect(await budgetFailures("hundredths-counters")).toContain("small increments are counted, not rounded away: a thousand of 2^-10 sum to 1 and meet a limit");
  });
});

// ---------------------------------------------------------------------------------------------
// Thread lock over shared storage

type LockFlaw =
  | "none"
  /** The holder's handle may take its own held thread again. */
  | "re-entrant"
  /** release resolves before the unlock reaches the storage (`void client.query("… unlock …")`). */
  | "release-fire-and-forget"
  /** A lease (SET NX PX) never renewed, and no `lost` signal when it lapses. */
  | "lease-without-renewal";

/** The mutant's lease: short, as a test configures a lease lock, so the suite's wait past it stays short. */
const LEASE_MS = 300;

class SharedLock implements ThreadLock {
  readonly handle = randomUUID();
  constructor(
    readonly db: Map<string, { owner: string; until: number }>,
    readonly flaw: LockFlaw = "none",
  ) {}

  async acquire(threadId: string): Promise<ReleaseThreadLock> {
    const id = checkThreadId(threadId);
    await io();
    const held = this.db.get(id);
    const live = held !== undefined && held.until > Date.now();
    if (live && !(this.flaw === "re-entrant" && held?.owner === this.handle)) throw new ThreadBusyError(id, "another handle");
    const owner = this.flaw === "re-entrant" ? this.handle : randomUUID();
    this.db.set(id, { owner, until: this.flaw === "lease-without-renewal" ? Date.now() + LEASE_MS : Number.POSITIVE_INFINITY });
    let released = false;
    const unlock = () => {
      if (this.db.get(id)?.owner === owner) this.db.delete(id);
    };
    return async () => {
      if (released) return;
      released = true;
      if (this.flaw === "release-fire-and-forget") {
        void sleep(20).then(unlock);
        return;
      }
      await io();
      unlock();
    };
  }
}

const lockFailures = (flaw: LockFlaw) =>
  failingCases(threadLockSpec, () => new SharedLock(new Map(), flaw), {
    reopen: (l: ThreadLock) => new SharedLock((l as SharedLock).db, flaw),
    busyWithinMs: 1_000,
    leaseMs: LEASE_MS,
  });

describe("threadLockSpec, red-teamed", () => {
  it("control: passes the genuine shared-storage lock", async () => {
    expect(await lockFailures("none")).toEqual([]);
  });

  it("catches a lock that is re-entrant for the handle holding it", async () => {
    const failures = await lockFailures("re-entrant");
    expect(failures).toContain("a held thread refuses a second acquire with ThreadBusyError naming it, promptly, from the same handle and from another");
    expect(failures).toContain("acquire resolves with a release function; once released, the thread can be acquired again");
  });

  it("catches a release that resolves before the unlock lands", async () => {
    expect(await lockFailures("release-fire-and-forget")).toContain("acquire resolves with a release function; once released, the thread can be acquired again");
  });

  // Was a gap, now caught (spec option `leaseMs`): graphs/run-thread.ts:40 (and resume-guard.ts:468,
  // app.ts:118) hold the lock for the whole run, and abort the run on `release.lost`
  // (run-thread.ts:42) when the store says the lock is gone. A Redis-style lease (SET NX PX) that
  // is never renewed lapses under a run longer than the lease (a slow tool, a model call) without
  // firing `lost`: a second worker takes the thread while the first still runs it, which is exactly
  // the "two runs at once" the lock exists to prevent. The suite never held a lock for longer than
  // a few milliseconds.
  it("catches a lease lock that lapses while held, without a lost signal", async () => {
    const db = new Map<string, { owner: string; until: number }>();
    const [workerA, workerB] = [new SharedLock(db, "lease-without-renewal"), new SharedLock(db, "lease-without-renewal")];
    const t = `t-${randomUUID()}`;
    const first = await workerA.acquire(t);
    await expect(workerB.acquire(t)).rejects.toBeInstanceOf(ThreadBusyError);
    await sleep(LEASE_MS + 100);
    const second = await workerB.acquire(t); // A still runs the thread
    expect(typeof second).toBe("function");
    expect(first.lost?.aborted ?? false).toBe(false); // and A was never told
    await Promise.all([first(), second()]);
    const g = new Map<string, { owner: string; until: number }>();
    const held = await new SharedLock(g).acquire(t);
    await sleep(LEASE_MS + 100);
    await expect(new SharedLock(g).acquire(t)).rejects.toBeInstanceOf(ThreadBusyError);
    await held();
    expect(await lockFailures("lease-without-renewal")).toEqual(["a lock held past its lease (leaseMs) is still held: other handles get ThreadBusyError and lost stays quiet"]);
  });
});

// ---------------------------------------------------------------------------------------------
// Policy engines

const policyFailures = (make: () => PolicyEngine, cases: readonly PolicyEngineCase[] = SEED_POLICY_CASES) => failingCases(policyEngineSpec, make, cases);

const supportAgent = { id: "support-agent", roles: ["support"] };
const refundRequest = (amountCents: number): PolicyRequest => ({
  identity: { schemaVersion: 1, id: supportAgent.id, roles: supportAgent.roles, tools: ["issue_refund"], dataScopes: [], onBehalfOf: { id: "cara", roles: ["customer"] }, source: "configurable.user_id" },
  tool: { name: "issue_refund", args: { orderId: "1042", amountCents } },
  context: { items: [], sensitivity: [] },
  threadId: "t",
});

/** Caches decisions by who asks for which tool (and what the thread has seen): the arguments are left out of the key. */
class MemoEngine implements PolicyEngine {
  readonly #cache = new Map<string, PolicyDecision>();
  constructor(readonly inner: PolicyEngine) {}
  get version() {
    return this.inner.version;
  }
  async decide(request: PolicyRequest): Promise<PolicyDecision> {
    const key = JSON.stringify([request.identity.id, request.identity.onBehalfOf.id, request.tool.name, [...request.context.sensitivity].sort()]);
    let decision = this.#cache.get(key);
    if (!decision) this.#cache.set(key, (decision = await this.inner.decide(request)));
    return decision;
  }
}

/** Versioned by the policy's name, not its rules (e.g. a Cedar adapter hashing its schema only). */
class NamedVersionEngine implements PolicyEngine {
  readonly version: string;
  constructor(
    readonly inner: PolicyEngine,
    name: string,
  ) {
    this.version = createHash("sha256").update(`policy:${name}`).digest("hex");
  }
  async decide(request: PolicyRequest): Promise<PolicyDecision> {
    return { ...(await this.inner.decide(request)), version: this.version };
  }
}

/** Maps only effect, reasons, policy ids and approver roles (what a Cedar adapter's first cut maps). */
class ApprovalTermsDroppedEngine implements PolicyEngine {
  constructor(readonly inner: PolicyEngine) {}
  get version() {
    return this.inner.version;
  }
  async decide(request: PolicyRequest): Promise<PolicyDecision> {
    const d = await this.inner.decide(request);
    if (d.effect !== "require_approval") return d;
    return { effect: d.effect, reasons: d.reasons, policyIds: d.policyIds, version: d.version, approverRoles: d.approverRoles };
  }
}

/** "Permit unless forbidden": what no rule names is allowed. */
class DefaultAllowEngine implements PolicyEngine {
  constructor(readonly inner: PolicyEngine) {}
  get version() {
    return this.inner.version;
  }
  async decide(request: PolicyRequest): Promise<PolicyDecision> {
    const d = await this.inner.decide(request);
    return d.policyIds.includes("eart.default-deny") ? { effect: "allow", reasons: ["no rule forbids it"], policyIds: ["default.permit"], version: d.version } : d;
  }
}

/** Refunds up to $100 allowed, up to the configured limit with a supervisor, denied above it (the limit in `config`, so in the version). */
const refundsPolicy = (supervisorUpToCents: number) =>
  definePolicy({
    name: "refunds",
    config: { supervisorUpToCents },
    rules: [
      { id: "refund.small", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amountCents) <= 10_000, effect: "allow", reason: "small" },
      {
        id: "refund.supervisor",
        tools: ["issue_refund"],
        when: (r, c) => Number(r.tool.args.amountCents) > 10_000 && Number(r.tool.args.amountCents) <= Number(c.supervisorUpToCents),
        effect: "require_approval",
        approverRoles: ["supervisor"],
        reason: "supervisor",
      },
      { id: "refund.limit", tools: ["issue_refund"], when: (r, c) => Number(r.tool.args.amountCents) > Number(c.supervisorUpToCents), effect: "deny", reason: "over the limit" },
    ],
  });

/** Refunds of $50, $3,000 and $6,000: allowed, a supervisor's, denied, under "supervisor up to $5,000". */
const REFUND_CASES: PolicyEngineCase[] = [50_00, 3_000_00, 6_000_00].map((amountCents, i) => ({
  name: `a refund of ${amountCents} cents`,
  agent: supportAgent,
  tool: "issue_refund",
  args: { orderId: "1042", amountCents },
  expect: [
    { effect: "allow" as const, policyIds: ["refund.small"] },
    { effect: "require_approval" as const, policyIds: ["refund.supervisor"], approverRoles: ["supervisor"] },
    { effect: "deny" as const, policyIds: ["refund.limit"] },
  ][i]!,
}));

const dualControl = definePolicy({
  name: "dual-control",
  rules: [
    {
      id: "payment.dual",
      tools: ["execute_payment"],
      effect: "require_approval",
      approverRoles: ["finance"],
      quorum: 2,
      expiresIn: 3_600_000,
      allowedDecisions: ["approve", "reject"],
      reason: "Payments need two finance approvers, who may not edit them",
    },
  ],
});
const finance = { id: "finance-agent", roles: ["finance-agent"] };
const DUAL_CASES: PolicyEngineCase[] = [
  {
    name: "a payment",
    agent: finance,
    tool: "execute_payment",
    args: { paymentId: "P-1", amountCents: 5_000_000 },
    expect: { effect: "require_approval", policyIds: ["payment.dual"], approverRoles: ["finance"], quorum: 2, expiresInMs: 3_600_000, allowedDecisions: ["approve", "reject"] },
  },
  { name: "a tool no policy names", agent: finance, tool: "wire_money", args: { amountCents: 1 }, expect: { effect: "deny", policyIds: ["eart.default-deny"] } },
];

describe("policyEngineSpec, red-teamed", () => {
  it("control: passes the seed policy and the dual-control policy, each behind a pass-through wrapper, and typed rules whose edit changes their version", async () => {
    expect(await policyFailures(() => new ApprovalTermsDroppedEngine(seedPolicy))).toEqual([]); // seed has no approval terms to drop
    expect(await policyFailures(() => dualControl, DUAL_CASES)).toEqual([]);
    expect(await failingCases(policyEngineSpec, () => refundsPolicy(500_000), { cases: REFUND_CASES, changedRules: () => refundsPolicy(100_000) })).toEqual([]);
  });

  it("catches an engine that allows what no rule names (default allow)", async () => {
    expect((await policyFailures(() => new DefaultAllowEngine(seedPolicy))).sort()).toEqual([
      "delete_customer: a tool no policy names → deny",
      ONE_ENGINE_CASE,
      "prepare_payment: a support agent may not prepare a payment → deny",
      "wire_money: another unnamed tool → deny",
    ]);
  });

  // Was a gap, now caught: guards/policy-gate.ts:238 asks one engine instance, for the life of the process, about
  // every call. This engine caches decisions by agent, user and tool (the arguments are left out):
  // once a $0.01 refund is allowed, a $9,200 refund is allowed from the cache, with no supervisor.
  // The suite builds a fresh engine for every row of its table (and its one shared-engine case only
  // looks at five rows that all allow), so history never leaks between rows.
  it("catches an engine that caches decisions without the call's arguments in the key", async () => {
    const engine = new MemoEngine(seedPolicy);
    expect((await engine.decide(refundRequest(1))).effect).toBe("allow");
    expect((await engine.decide(refundRequest(920_000))).effect).toBe("allow");
    expect((await seedPolicy.decide(refundRequest(920_000))).effect).toBe("deny");
    expect(await policyFailures(() => new MemoEngine(seedPolicy))).toContain(ONE_ENGINE_CASE);
  });

  // Was a gap, now caught (spec option `changedRules`). The version decides whether a call asked or approved under earlier rules is decided again:
  // guards/policy-gate.ts:463 applies an approval as is when `record.verdict.version ===
  // policy.version`, and nodes/governed-tool-node.ts:325 and :693 re-decide a call before it runs
  // only when the versions differ. An engine whose version names the policy instead of hashing its
  // rules keeps the same version across a deploy that tightens them: a $3,000 refund asked under
  // "supervisor up to $5,000" and approved after the deploy to "deny above $1,000" runs. The suite
  // checked only that the version looks like a hash and that decisions carry it.
  it("catches an engine whose version does not change when its rules do, given changedRules", async () => {
    const [before, after] = [refundsPolicy(500_000), refundsPolicy(100_000)];
    expect((await before.decide(refundRequest(300_000))).effect).toBe("require_approval");
    expect((await after.decide(refundRequest(300_000))).effect).toBe("deny");
    expect(before.version).not.toBe(after.version);
    expect(new NamedVersionEngine(before, "refunds").version).toBe(new NamedVersionEngine(after, "refunds").version);
    const failures = await failingCases(policyEngineSpec, () => new NamedVersionEngine(refundsPolicy(500_000), "refunds"), {
      cases: REFUND_CASES,
      changedRules: () => new NamedVersionEngine(refundsPolicy(100_000), "refunds"),
    });
    expect(failures).toEqual(["an engine with edited rules (changedRules) that decides a row otherwise has another version, and its decisions carry it"]);
  });

  // Was a gap, now caught (the table's `quorum`, `expiresInMs`, `allowedDecisions`). guards/policy-gate.ts:533 counts `verdict.quorum ?? 1` distinct approvers; :186 sets the
  // request's expiry from `expiresInMs`; src/human-tasks/approval.ts:162/178 limit the answers to
  // `allowedDecisions` ("approve or reject, never edit"). An engine that drops them turns a two-person payment rule into a
  // one-person one, with no expiry and edits allowed. A user's `PolicyEngineCase` cannot even say
  // what these should be (`expect` had effect, policyIds and approverRoles only), so the suite
  // passed the engine whatever table it was given.
  it("catches an engine that drops quorum, expiry and allowed decisions from require_approval, given a table that states them", async () => {
    const payment: PolicyRequest = { ...refundRequest(0), tool: { name: "execute_payment", args: { paymentId: "P-1", amountCents: 5_000_000 } } };
    expect(await dualControl.decide(payment)).toMatchObject({ effect: "require_approval", quorum: 2, expiresInMs: 3_600_000, allowedDecisions: ["approve", "reject"] });
    const dropped = await new ApprovalTermsDroppedEngine(dualControl).decide(payment);
    expect([dropped.effect, "quorum" in dropped, "expiresInMs" in dropped, "allowedDecisions" in dropped]).toEqual(["require_approval", false, false, false]);
    expect(await policyFailures(() => new ApprovalTermsDroppedEngine(dualControl), DUAL_CASES)).toEqual(["execute_payment: a payment → require_approval"]);
  });
});
