import { randomUUID } from "node:crypto";
import { GENESIS_HASH, type AuditEventInput, type AuditLog } from "../src/audit/log.js";
import { SEAL_KEY_BYTES } from "../src/decisions/seal.js";
import { AuditInputError } from "../src/errors.js";
import {
  idempotencyKeyOf,
  LEDGER_SCHEMA_VERSION,
  LedgerEntrySchema,
  LedgerInputError,
  type EffectLedger,
  type LedgerEntry,
  type LedgerKey,
  type LedgerOutcome,
} from "../src/ledger/ledger.js";
import { expectedAuditHash } from "./audit-log-spec.js";
import { withHandles } from "./handles.js";
import type { SpecRunner } from "./policy-engine-spec.js";

/** What a ledger's test tells the spec about it. */
export interface EffectLedgerSpecOptions {
  /**
   * Another handle on the same storage (another connection pool or database connection): used
   * for begins, retries and finishes from several handles at once and for reading back. Without
   * it the concurrent cases run on one handle and the reopen case is not run.
   */
  reopen?: (ledger: EffectLedger) => EffectLedger | Promise<EffectLedger>;
  /**
   * The store is only ever used by one process (an in-memory ledger): said so, the suite runs
   * without `reopen`. Without either, it fails: a shared ledger's claims must hold across handles.
   */
  singleProcess?: boolean;
  /**
   * For a ledger whose `commitsWith` can say yes: the audit log in its transaction domain, for a
   * handle of it (each handle `reopen` gives is asked for its own). The suite checks that
   * `commitsWith(log)` is true and that `begin` and `finish` given `{ log, events }` append the
   * events exactly as `log.append` would, continuing the thread's chain, and only when they write
   * (the key claimed, the entry finished), also under concurrent calls from several handles; a
   * refused event leaves no claim and no outcome. The suite does not close these logs. Without it
   * those cases are not run (a ledger without `commitsWith`, or whose `commitsWith` says no to
   * every log, like the memory ledger, gives none).
   * @example
   * ```ts
   * { reopen: () => new MyLedger(pool), auditLog: (ledger) => new MyAuditLog((ledger as MyLedger).pool) }
   * ```
   */
  auditLog?: (ledger: EffectLedger) => AuditLog | Promise<AuditLog>;
}

const DIGEST = "d".repeat(64);
const OTHER_DIGEST = "e".repeat(64);
/** Fixed instants, so the spec can say exactly what `startedAt` and `finishedAt` hold. */
const at = (minutes: number): Date => new Date(Date.UTC(2025, 2, 10, 9, minutes));
const keyOf = (threadId: string, toolCallId = "call_1", digest = DIGEST): LedgerKey => ({ threadId, toolCallId, digest });
const started = (key: LedgerKey, startedAt: Date, attempt = 1): LedgerEntry => ({
  schemaVersion: LEDGER_SCHEMA_VERSION,
  key,
  status: "started",
  attempt,
  startedAt: startedAt.toISOString(),
});

/** A refused call's error, whether the implementation throws or rejects; `"resolved"` if it did neither. */
const refusal = async (call: () => unknown): Promise<unknown> =>
  Promise.resolve()
    .then(call)
    .then(
      () => "resolved",
      (error: unknown) => error,
    );

const circular = (): Record<string, unknown> => {
  const o: Record<string, unknown> = { a: 1 };
  o.self = o;
  return o;
};

/**
 * The conformance suite every {@link EffectLedger} runs: begin claims a key exactly once (also
 * under concurrent begins from several handles) and otherwise returns the entry as it is; finish
 * records an outcome only on a `started` entry, once (compare-and-set on the status), with a
 * succeeded result kept as the JSON it was and a failed error as given; retry bumps the attempt
 * only from `started` at the expected attempt (compare-and-set); get and list (a thread's entries
 * only, by `startedAt`, then tool call id, then digest); invalid keys, outcomes, attempts and
 * dates refused with {@link LedgerInputError} and nothing stored; a seal key of `SEAL_KEY_BYTES`
 * bytes that never changes; for stores that pass `reopen`, a second handle that sees and
 * continues what the first wrote; and, for ledgers that pass `auditLog`, audit events committed
 * with `begin` and `finish` (appended to the log's chain exactly when the write happens, never for
 * a loser of a race, and a refused event leaves nothing written). Thread ids are unique per test,
 * so stores on a shared database can run it.
 * @example
 * ```ts
 * import { describe, it, expect } from "vitest";
 * effectLedgerSpec("MemoryEffectLedger", () => new MemoryEffectLedger(), { describe, it, expect });
 * ```
 */
export function effectLedgerSpec(
  name: string,
  makeLedger: () => EffectLedger | Promise<EffectLedger>,
  { describe, it, expect }: SpecRunner,
  options: EffectLedgerSpecOptions = {},
): void {
  const { reopen, singleProcess, auditLog } = options;

  /** Runs a test body with fresh thread ids; closes every ledger it opened. */
  const test = (
    title: string,
    body: (ctx: { open: () => Promise<EffectLedger>; again: (ledger: EffectLedger) => Promise<EffectLedger>; tid: (label: string) => string }) => Promise<void>,
  ) =>
    it(title, () => {
      const run = `spec-${randomUUID()}`;
      return withHandles(makeLedger, reopen, (handles) => body({ ...handles, tid: (label) => `${run}-${label}` }));
    });

  const expectValid = (entry: LedgerEntry | undefined) => expect(LedgerEntrySchema.safeParse(entry).success).toBe(true);
  const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

  describe(`effectLedgerSpec: ${name}`, () => {
    if (!reopen && !singleProcess) {
      it("is given a second handle on the same storage (reopen), or said to be used by one process only (singleProcess)", () => {
        throw new Error("effectLedgerSpec needs reopen (another handle on the same storage: claims must hold across processes), or singleProcess: true for a ledger no other process uses");
      });
    }
    test("begin claims a new key as a started entry at attempt 1; every later begin returns the entry unchanged, unclaimed", async ({ open, tid }) => {
      const ledger = await open();
      const key = keyOf(tid("t"));
      const first = await ledger.begin(key, at(0));
      expect(first).toEqual({ claimed: true, entry: started(key, at(0)) });
      expect(Object.keys(first.entry).sort()).toEqual(["attempt", "key", "schemaVersion", "startedAt", "status"]);
      expectValid(first.entry);
      expect(await ledger.begin(key, at(5))).toEqual({ claimed: false, entry: started(key, at(0)) });
      expect(await ledger.get(key)).toEqual(started(key, at(0)));
      // In any status: a finished entry is returned as it is, never claimed again.
      expect(await ledger.finish(key, { status: "succeeded", result: { refundId: "r-1" } }, at(1))).toBe(true);
      const finished = { ...started(key, at(0)), status: "succeeded", finishedAt: at(1).toISOString(), result: { refundId: "r-1" } };
      expect(await ledger.begin(key, at(6))).toEqual({ claimed: false, entry: finished });
      expect(await ledger.get(key)).toEqual(finished);
    });

    test("begin without a date stamps the entry with a valid ISO date", async ({ open, tid }) => {
      const ledger = await open();
      const key = keyOf(tid("t"));
      const { claimed, entry } = await ledger.begin(key);
      expect(claimed).toBe(true);
      expectValid(entry);
      expect(Number.isNaN(Date.parse(entry.startedAt))).toBe(false);
      expect(await ledger.finish(key, { status: "failed", error: "declined" })).toBe(true);
      const finished = (await ledger.get(key))!;
      expectValid(finished);
      expect(Number.isNaN(Date.parse(finished.finishedAt!))).toBe(false);
    });

    test("concurrent begins of one key, across handles: exactly one claims it, every caller gets its entry", async ({ open, again, tid }) => {
      const ledger = await open();
      const handles = [ledger, await again(ledger), await again(ledger)];
      const key = keyOf(tid("t"));
      const callers = 12;
      // Each caller brings its own date: the winner's is the one every caller must see.
      const results = await Promise.all(Array.from({ length: callers }, (_, i) => handles[i % handles.length]!.begin(key, at(i))));
      const winners = results.filter((r) => r.claimed);
      expect(winners.length).toBe(1);
      const entry = winners[0]!.entry;
      expect(entry.attempt).toBe(1);
      expect(entry.status).toBe("started");
      expect(results.map((r) => r.entry)).toEqual(results.map(() => entry));
      expect(await ledger.get(key)).toEqual(entry);
      expect(await ledger.list(key.threadId)).toEqual([entry]);
    });

    test("the thread, the tool call id and the digest each make another key", async ({ open, tid }) => {
      const ledger = await open();
      const [t, u] = [tid("t"), tid("u")];
      const keys = [keyOf(t), keyOf(t, "call_1", OTHER_DIGEST), keyOf(t, "call_2"), keyOf(u)];
      for (const key of keys) expect(await ledger.begin(key, at(0))).toEqual({ claimed: true, entry: started(key, at(0)) });
      expect(await ledger.finish(keys[0]!, { status: "succeeded", result: 1 }, at(1))).toBe(true);
      for (const key of keys.slice(1)) expect(await ledger.get(key)).toEqual(started(key, at(0)));
    });

    const results: [string, unknown][] = [
      ["an object", { refundId: "r-1", amountCents: 74_000, ok: true, items: [1, "two", null, { three: 3.5 }] }],
      ["null", null],
      ["zero", 0],
      ["false", false],
      ["an empty string", ""],
      ["an empty array", []],
      ["a negative fraction", -0.125],
      ["a string with quotes, newlines and non-ASCII", 'o\'k "q" \\ \n é 日本 \u2028 \ud83d\ude00'],
      ["an object with a member named __proto__", JSON.parse('{"__proto__": {"isAdmin": true}, "amount": 5}') as unknown],
      ["deeply nested keys in a given order", { z: { y: { x: [{ b: 1, a: 2 }] } }, a: "first?" }],
    ];
    for (const [label, result] of results) {
      test(`finish records a succeeded result (${label}) as the JSON it was, with finishedAt`, async ({ open, tid }) => {
        const ledger = await open();
        const key = keyOf(tid("t"));
        await ledger.begin(key, at(0));
        expect(await ledger.finish(key, { status: "succeeded", result }, at(3))).toBe(true);
        const entry = (await ledger.get(key))!;
        expect(entry).toEqual({ ...started(key, at(0)), status: "succeeded", finishedAt: at(3).toISOString(), result });
        expect(JSON.stringify(entry.result)).toBe(JSON.stringify(result));
        expect("error" in entry).toBe(false);
        expectValid(entry);
        expect(await ledger.list(key.threadId)).toEqual([entry]);
      });
    }

    test("finish records a failed error as given; a failed entry has no result", async ({ open, tid }) => {
      const ledger = await open();
      const key = keyOf(tid("t"));
      await ledger.begin(key, at(0));
      const error = 'Payment gateway said: "card declined" (code 51) — réessayer ✗';
      expect(await ledger.finish(key, { status: "failed", error }, at(2))).toBe(true);
      const entry = (await ledger.get(key))!;
      expect(entry).toEqual({ ...started(key, at(0)), status: "failed", finishedAt: at(2).toISOString(), error });
      expect("result" in entry).toBe(false);
      expectValid(entry);
    });

    test("finish changes only a started entry: a finished entry never changes, a missing key is not created", async ({ open, tid }) => {
      const ledger = await open();
      const t = tid("t");
      const missing = keyOf(t, "call_missing");
      expect(await ledger.finish(missing, { status: "succeeded", result: 1 }, at(1))).toBe(false);
      expect(await ledger.get(missing)).toBe(undefined);
      expect(await ledger.list(t)).toEqual([]);

      const key = keyOf(t);
      await ledger.begin(key, at(0));
      expect(await ledger.finish(key, { status: "succeeded", result: { n: 1 } }, at(1))).toBe(true);
      const finished = (await ledger.get(key))!;
      expect(await ledger.finish(key, { status: "succeeded", result: { n: 2 } }, at(2))).toBe(false);
      expect(await ledger.finish(key, { status: "failed", error: "late" }, at(3))).toBe(false);
      expect(await ledger.get(key)).toEqual(finished);

      const failed = keyOf(t, "call_failed");
      await ledger.begin(failed, at(0));
      expect(await ledger.finish(failed, { status: "failed", error: "declined" }, at(1))).toBe(true);
      const failedEntry = (await ledger.get(failed))!;
      expect(await ledger.finish(failed, { status: "succeeded", result: "ok after all" }, at(2))).toBe(false);
      expect(await ledger.get(failed)).toEqual(failedEntry);
      expect(await ledger.list(t)).toEqual([finished, failedEntry]);
    });

    test("concurrent finishes of one started entry, across handles: exactly one records its outcome", async ({ open, again, tid }) => {
      const ledger = await open();
      const handles = [ledger, await again(ledger), await again(ledger)];
      const key = keyOf(tid("t"));
      await ledger.begin(key, at(0));
      const callers = 12;
      const outcomes: LedgerOutcome[] = Array.from({ length: callers }, (_, i) =>
        i % 2 === 0 ? { status: "succeeded", result: { caller: i } } : { status: "failed", error: `caller ${i}` },
      );
      const done = await Promise.all(outcomes.map((o, i) => handles[i % handles.length]!.finish(key, o, at(10 + i))));
      expect(done.filter(Boolean).length).toBe(1);
      const winner = done.indexOf(true);
      const o = outcomes[winner]!;
      expect(await ledger.get(key)).toEqual({
        ...started(key, at(0)),
        status: o.status,
        finishedAt: at(10 + winner).toISOString(),
        ...(o.status === "succeeded" ? { result: o.result } : { error: o.error }),
      });
    });

    test("retry bumps the attempt and startedAt only from started at the expected attempt (compare-and-set)", async ({ open, tid }) => {
      const ledger = await open();
      const key = keyOf(tid("t"));
      await ledger.begin(key, at(0));
      const second = await ledger.retry(key, 1, at(1));
      expect(second).toEqual(started(key, at(1), 2));
      expectValid(second);
      expect(await ledger.get(key)).toEqual(started(key, at(1), 2));
      // A stale or future attempt changes nothing.
      expect(await ledger.retry(key, 1, at(2))).toBe(undefined);
      expect(await ledger.retry(key, 3, at(2))).toBe(undefined);
      expect(await ledger.get(key)).toEqual(started(key, at(1), 2));
      expect(await ledger.retry(key, 2, at(3))).toEqual(started(key, at(3), 3));
      // Not after a begin: begin never changes an existing entry.
      expect(await ledger.begin(key, at(4))).toEqual({ claimed: false, entry: started(key, at(3), 3) });
      expect(await ledger.finish(key, { status: "succeeded", result: "done" }, at(5))).toBe(true);
      const finished = { ...started(key, at(3), 3), status: "succeeded", finishedAt: at(5).toISOString(), result: "done" };
      expect(await ledger.get(key)).toEqual(finished);
      // Not from a finished entry, at any attempt.
      expect(await ledger.retry(key, 3, at(6))).toBe(undefined);
      expect(await ledger.get(key)).toEqual(finished);
      const failed = keyOf(key.threadId, "call_failed");
      await ledger.begin(failed, at(0));
      await ledger.finish(failed, { status: "failed", error: "no" }, at(1));
      expect(await ledger.retry(failed, 1, at(2))).toBe(undefined);
      expect((await ledger.get(failed))?.attempt).toBe(1);
      // Nor a missing key, which is not created.
      const missing = keyOf(key.threadId, "call_missing");
      expect(await ledger.retry(missing, 1, at(2))).toBe(undefined);
      expect(await ledger.get(missing)).toBe(undefined);
    });

    test("concurrent retries at one attempt, across handles: exactly one wins", async ({ open, again, tid }) => {
      const ledger = await open();
      const handles = [ledger, await again(ledger), await again(ledger)];
      const key = keyOf(tid("t"));
      await ledger.begin(key, at(0));
      const callers = 12;
      const retried = await Promise.all(Array.from({ length: callers }, (_, i) => handles[i % handles.length]!.retry(key, 1, at(10 + i))));
      const winners = retried.filter((e) => e !== undefined);
      expect(winners.length).toBe(1);
      const winner = retried.findIndex((e) => e !== undefined);
      expect(winners[0]).toEqual(started(key, at(10 + winner), 2));
      expect(await ledger.get(key)).toEqual(started(key, at(10 + winner), 2));
    });

    test("get of an unknown key is undefined; list of an unknown thread is empty", async ({ open, tid }) => {
      const ledger = await open();
      const t = tid("nobody");
      expect(await ledger.get(keyOf(t))).toBe(undefined);
      expect(await ledger.list(t)).toEqual([]);
      // Nor does asking create anything.
      expect((await ledger.begin(keyOf(t), at(0))).claimed).toBe(true);
    });

    test("list returns a thread's entries only, by startedAt, then tool call id, then digest", async ({ open, tid }) => {
      const ledger = await open();
      const [t, prefixed, other] = [tid("t"), tid("t-2"), tid("other")];
      const begun: [LedgerKey, number][] = [
        [keyOf(t, "call_c"), 0],
        [keyOf(t, "call_b", OTHER_DIGEST), 5],
        [keyOf(t, "call_a"), 5],
        [keyOf(t, "call_b"), 5],
        [keyOf(t, "call_0"), 9],
        [keyOf(prefixed, "call_a"), 1],
        [keyOf(other, "call_a"), 1],
      ];
      for (const [key, minute] of begun) await ledger.begin(key, at(minute));
      await ledger.finish(keyOf(t, "call_a"), { status: "succeeded", result: null }, at(6));
      // A retry moves the entry to the start of its current attempt.
      await ledger.retry(keyOf(t, "call_c"), 1, at(7));
      const listed = await ledger.list(t);
      expect(listed.map((e) => [e.key.toolCallId, e.key.digest, e.startedAt])).toEqual([
        ["call_a", DIGEST, at(5).toISOString()],
        ["call_b", DIGEST, at(5).toISOString()],
        ["call_b", OTHER_DIGEST, at(5).toISOString()],
        ["call_c", DIGEST, at(7).toISOString()],
        ["call_0", DIGEST, at(9).toISOString()],
      ]);
      for (const entry of listed) {
        expectValid(entry);
        expect(await ledger.get(entry.key)).toEqual(entry);
      }
      expect((await ledger.list(prefixed)).map((e) => e.key)).toEqual([keyOf(prefixed, "call_a")]);
      expect((await ledger.list(other)).map((e) => e.key)).toEqual([keyOf(other, "call_a")]);
    });

    test("keys with quotes, backslashes and non-ASCII characters are keys like any other", async ({ open, tid }) => {
      const ledger = await open();
      const odd = keyOf(tid(`o'k "q" \\ é 日本 \u2028 \ud83d\ude00`), `call_'"\\%_*`, `digest with spaces; DROP TABLE x; --`);
      const plain = keyOf(tid("plain"));
      expect(await ledger.begin(odd, at(0))).toEqual({ claimed: true, entry: started(odd, at(0)) });
      expect((await ledger.begin(plain, at(0))).claimed).toBe(true);
      expect(await ledger.finish(odd, { status: "succeeded", result: "odd" }, at(1))).toBe(true);
      const entry = (await ledger.get(odd))!;
      expect(entry.key).toEqual(odd);
      expect(await ledger.list(odd.threadId)).toEqual([entry]);
      expect(await ledger.get(plain)).toEqual(started(plain, at(0)));
      // A LIKE-style wildcard in a thread id matches nothing else.
      expect(await ledger.list(tid("%"))).toEqual([]);
    });

    test("hands out copies: changing a returned entry changes nothing stored", async ({ open, tid }) => {
      const ledger = await open();
      const key = keyOf(tid("t"));
      const { entry } = await ledger.begin(key, at(0));
      entry.attempt = 99;
      entry.key.toolCallId = "changed";
      expect(await ledger.get(key)).toEqual(started(key, at(0)));
      await ledger.finish(key, { status: "succeeded", result: { nested: { n: 1 } } }, at(1));
      const read = (await ledger.get(key))!;
      (read.result as { nested: { n: number } }).nested.n = 2;
      (await ledger.list(key.threadId))[0]!.status = "failed";
      expect((await ledger.get(key))?.result).toEqual({ nested: { n: 1 } });
      expect((await ledger.get(key))?.status).toBe("succeeded");
    });

    test("idempotencyKeyOf a stored key is the given key's: 64 hex characters, one per key", async ({ open, tid }) => {
      const ledger = await open();
      const key = keyOf(tid("t"));
      const { entry } = await ledger.begin(key, at(0));
      expect(entry.key).toEqual(key);
      expect(idempotencyKeyOf(entry.key)).toMatch(/^[0-9a-f]{64}$/);
      expect(idempotencyKeyOf(entry.key)).toBe(idempotencyKeyOf(key));
      expect(idempotencyKeyOf((await ledger.list(key.threadId))[0]!.key)).toBe(idempotencyKeyOf(key));
      const others = [keyOf(key.threadId, "call_1", OTHER_DIGEST), keyOf(key.threadId, "call_2"), keyOf(tid("u"))].map(idempotencyKeyOf);
      expect(new Set([idempotencyKeyOf(key), ...others]).size).toBe(4);
      const error = await refusal(() => idempotencyKeyOf({ threadId: "", toolCallId: "c", digest: DIGEST }));
      expect(error instanceof LedgerInputError).toBe(true);
    });

    test(`sealKey is ${SEAL_KEY_BYTES} bytes and the same on every call`, async ({ open }) => {
      const ledger = await open();
      const first = await ledger.sealKey();
      expect(first instanceof Uint8Array).toBe(true);
      expect(first.length).toBe(SEAL_KEY_BYTES);
      expect(hex(first)).toBe(hex(await ledger.sealKey()));
      // A key, not a placeholder: random bytes (32 of them hold about 30 distinct values), not a
      // constant anyone could write seals with.
      expect(new Set(first).size).toBeGreaterThan(SEAL_KEY_BYTES / 2);
    });

    test("a retry racing a finish, across handles, never brings a finished entry back to started", async ({ open, again, tid }) => {
      const ledger = await open();
      const other = await again(ledger);
      const t = tid("t");
      for (let i = 0; i < 24; i++) {
        const key = keyOf(t, `call_${i}`);
        await ledger.begin(key, at(0));
        // Each handle, each order of the calls: whichever lands first, a recorded outcome stays.
        const finish = () => (i % 2 === 0 ? ledger : other).finish(key, { status: "succeeded", result: { i } }, at(1));
        const retry = () => (i % 2 === 0 ? other : ledger).retry(key, 1, at(2));
        const finished = i % 4 < 2 ? (await Promise.all([finish(), retry()]))[0] : (await Promise.all([retry(), finish()]))[1];
        // finish records on a started entry, whichever attempt: it always finds one here, and what it recorded stays.
        expect(finished).toBe(true);
        expect((await ledger.get(key))?.status).toBe("succeeded");
        expect((await other.get(key))?.status).toBe("succeeded");
      }
    });

    if (auditLog) {
      /** The audit log a handle commits with, after checking that it says so. */
      const logOf = async (ledger: EffectLedger): Promise<AuditLog> => {
        const log = await auditLog(ledger);
        expect(ledger.commitsWith?.(log)).toBe(true);
        return log;
      };
      const ev = (threadId: string, type: AuditEventInput["type"], data: Record<string, unknown>): AuditEventInput => ({ threadId, type, data }) as AuditEventInput;
      /** The fields of a tool event about a key's call, as the governed tool node writes them. */
      const callOf = (key: LedgerKey, more: Record<string, unknown> = {}) => ({ toolCallId: key.toolCallId, name: "issue_refund", digest: key.digest, attempt: 1, ...more });
      /** The thread's events as type and data, after checking they are one chain that verifies. */
      const chainOf = async (log: AuditLog, threadId: string): Promise<[string, Record<string, unknown>][]> => {
        const events = await log.read(threadId);
        events.forEach((e, i) => {
          expect([e.threadId, e.seq, e.prevHash]).toEqual([threadId, i, i === 0 ? GENESIS_HASH : events[i - 1]!.hash]);
          expect(e.hash).toBe(expectedAuditHash(e));
        });
        expect(await log.verify(threadId)).toEqual({ ok: true, threadId, count: events.length, headHash: events.at(-1)?.hash ?? GENESIS_HASH });
        return events.map((e) => [e.type, e.data]);
      };

      // The governed tool node batches when `commitsWith(auditLog)` says yes: the claim carries
      // `tool.started` and the finish every event of the call with its outcome, and it appends
      // none of them itself. Events a ledger drops are a tool call with no audit record.
      test("with commitsWith(log), begin and finish append their audit events to the log's chain, and only when they write", async ({ open, tid }) => {
        const ledger = await open();
        const log = await logOf(ledger);
        const t = tid("t");
        const key = keyOf(t);
        await log.append(ev(t, "run.started", { input: "refund 1042" }));
        const start = callOf(key, { try: 1 });
        expect(await ledger.begin(key, at(0), { log, events: [ev(t, "tool.started", start)] })).toEqual({ claimed: true, entry: started(key, at(0)) });
        expect(await chainOf(log, t)).toEqual([
          ["run.started", { input: "refund 1042" }],
          ["tool.started", start],
        ]);
        // Not claimed: nothing appended.
        expect(await ledger.begin(key, at(1), { log, events: [ev(t, "tool.started", { ...start, late: true })] })).toEqual({ claimed: false, entry: started(key, at(0)) });
        expect((await log.read(t)).length).toBe(2);
        const outcome = [ev(t, "tool.retrying", callOf(key, { try: 1, delayMs: 100, error: "timeout" })), ev(t, "tool.succeeded", callOf(key, { result: '{"refundId":"r-1"}' }))];
        expect(await ledger.finish(key, { status: "succeeded", result: { refundId: "r-1" } }, at(2), { log, events: outcome })).toBe(true);
        expect((await chainOf(log, t)).slice(2)).toEqual(outcome.map((e) => [e.type, e.data]));
        expect((await ledger.get(key))?.status).toBe("succeeded");
        // Not finished (already finished, or missing): nothing appended, nothing created.
        expect(await ledger.finish(key, { status: "failed", error: "late" }, at(3), { log, events: [ev(t, "tool.failed", callOf(key, { kind: "error", error: "late" }))] })).toBe(false);
        const missing = keyOf(t, "call_missing");
        expect(await ledger.finish(missing, { status: "succeeded", result: 1 }, at(3), { log, events: [ev(t, "tool.succeeded", callOf(missing))] })).toBe(false);
        expect(await ledger.get(missing)).toBe(undefined);
        expect((await chainOf(log, t)).length).toBe(4);
        // The log goes on from there, and the ledger's writes without events append nothing.
        const next = keyOf(t, "call_2");
        expect((await ledger.begin(next, at(4))).claimed).toBe(true);
        expect(await ledger.finish(next, { status: "succeeded", result: null }, at(5))).toBe(true);
        await log.append(ev(t, "run.completed", {}));
        expect((await chainOf(log, t)).map(([type]) => type)).toEqual(["run.started", "tool.started", "tool.retrying", "tool.succeeded", "run.completed"]);
      });

      test("with commitsWith(log), an audit event the log refuses leaves no claim and no outcome", async ({ open, tid }) => {
        const ledger = await open();
        const log = await logOf(ledger);
        const t = tid("t");
        const key = keyOf(t);
        const bad = { threadId: t, type: "tool.exploded", data: {} } as unknown as AuditEventInput;
        // Refused as the log's own append refuses it (AuditInputError), whether before or inside the write.
        expect(await refusal(() => ledger.begin(key, at(0), { log, events: [ev(t, "tool.started", callOf(key)), bad] })) instanceof AuditInputError).toBe(true);
        expect(await ledger.get(key)).toBe(undefined);
        expect(await log.read(t)).toEqual([]);
        expect((await ledger.begin(key, at(1), { log, events: [ev(t, "tool.started", callOf(key))] })).claimed).toBe(true);
        expect(await refusal(() => ledger.finish(key, { status: "succeeded", result: 1 }, at(2), { log, events: [bad] })) instanceof AuditInputError).toBe(true);
        expect(await ledger.get(key)).toEqual(started(key, at(1)));
        expect((await log.read(t)).map((e) => e.type)).toEqual(["tool.started"]);
        expect(await ledger.finish(key, { status: "succeeded", result: 1 }, at(3), { log, events: [ev(t, "tool.succeeded", callOf(key))] })).toBe(true);
        expect((await chainOf(log, t)).map(([type]) => type)).toEqual(["tool.started", "tool.succeeded"]);
      });

      test("with commitsWith(log), concurrent begins and finishes of one key across handles append exactly the winner's events", async ({ open, again, tid }) => {
        const ledger = await open();
        const handles = [ledger, await again(ledger), await again(ledger)];
        const logs = await Promise.all(handles.map(logOf));
        const t = tid("t");
        const key = keyOf(t);
        const callers = 12;
        const via = (i: number) => [handles[i % handles.length]!, logs[i % handles.length]!] as const;
        const begun = await Promise.all(
          Array.from({ length: callers }, (_, i) => {
            const [handle, log] = via(i);
            return handle.begin(key, at(i), { log, events: [ev(t, "tool.started", callOf(key, { caller: i }))] });
          }),
        );
        expect(begun.filter((b) => b.claimed).length).toBe(1);
        const claimer = begun.findIndex((b) => b.claimed);
        const finished = await Promise.all(
          Array.from({ length: callers }, (_, i) => {
            const [handle, log] = via(i);
            return handle.finish(key, { status: "succeeded", result: { caller: i } }, at(20 + i), { log, events: [ev(t, "tool.succeeded", callOf(key, { caller: i }))] });
          }),
        );
        expect(finished.filter(Boolean).length).toBe(1);
        const finisher = finished.indexOf(true);
        for (const log of logs) {
          expect(await chainOf(log, t)).toEqual([
            ["tool.started", callOf(key, { caller: claimer })],
            ["tool.succeeded", callOf(key, { caller: finisher })],
          ]);
        }
        expect((await ledger.get(key))?.result).toEqual({ caller: finisher });
      });
    }

    /** A bad call (refused with `field`) and the state the spec checks is left as it was. */
    const invalid: [string, string, (ledger: EffectLedger, t: string, kept: LedgerKey) => unknown][] = [
      ["a begin with an empty thread id", "key", (l) => l.begin(keyOf(""), at(1))],
      ["a begin with an empty tool call id", "key", (l, t) => l.begin(keyOf(t, ""), at(1))],
      ["a begin without a digest", "key", (l, t) => l.begin({ threadId: t, toolCallId: "call_2" } as LedgerKey, at(1))],
      ["a begin with a NUL character in the tool call id", "key", (l, t) => l.begin(keyOf(t, "call\u00002"), at(1))],
      ["a begin with a key of an unknown field", "key", (l, t) => l.begin({ ...keyOf(t, "call_2"), extra: 1 } as LedgerKey, at(1))],
      ["a begin with a non-string digest", "key", (l, t) => l.begin({ ...keyOf(t, "call_2"), digest: 5 } as unknown as LedgerKey, at(1))],
      ["a begin with a null key", "key", (l) => l.begin(null as unknown as LedgerKey, at(1))],
      ["a begin with an invalid date", "now", (l, t) => l.begin(keyOf(t, "call_2"), new Date(Number.NaN))],
      ["a begin with a date that is a string", "now", (l, t) => l.begin(keyOf(t, "call_2"), "2025-03-10" as unknown as Date)],
      ["a finish with a BigInt result", "outcome", (l, _t, k) => l.finish(k, { status: "succeeded", result: { amount: BigInt(1) } }, at(1))],
      ["a finish with a NaN result", "outcome", (l, _t, k) => l.finish(k, { status: "succeeded", result: Number.NaN }, at(1))],
      ["a finish with an Infinity nested in the result", "outcome", (l, _t, k) => l.finish(k, { status: "succeeded", result: { a: [1, Infinity] } }, at(1))],
      ["a finish with a Date in the result", "outcome", (l, _t, k) => l.finish(k, { status: "succeeded", result: { when: new Date(0) } }, at(1))],
      ["a finish with a Map result", "outcome", (l, _t, k) => l.finish(k, { status: "succeeded", result: new Map([["a", 1]]) }, at(1))],
      ["a finish with an undefined member in the result", "outcome", (l, _t, k) => l.finish(k, { status: "succeeded", result: { a: undefined } }, at(1))],
      ["a finish with an undefined result", "outcome", (l, _t, k) => l.finish(k, { status: "succeeded", result: undefined }, at(1))],
      ["a finish with a function in the result", "outcome", (l, _t, k) => l.finish(k, { status: "succeeded", result: { f: () => 1 } }, at(1))],
      ["a finish with a circular result", "outcome", (l, _t, k) => l.finish(k, { status: "succeeded", result: circular() }, at(1))],
      ["a finish with an unknown status", "outcome", (l, _t, k) => l.finish(k, { status: "running" } as unknown as LedgerOutcome, at(1))],
      ["a failed finish with an empty error", "outcome", (l, _t, k) => l.finish(k, { status: "failed", error: "" }, at(1))],
      ["a failed finish with a result beside its error", "outcome", (l, _t, k) => l.finish(k, { status: "failed", error: "x", result: 1 } as unknown as LedgerOutcome, at(1))],
      ["a finish with a bad key", "key", (l, t) => l.finish(keyOf(t, "call_1", ""), { status: "succeeded", result: 1 }, at(1))],
      ["a finish with an invalid date", "now", (l, _t, k) => l.finish(k, { status: "succeeded", result: 1 }, new Date(Number.NaN))],
      ["a retry at attempt 0", "expectedAttempt", (l, _t, k) => l.retry(k, 0, at(1))],
      ["a retry at attempt 1.5", "expectedAttempt", (l, _t, k) => l.retry(k, 1.5, at(1))],
      ["a retry at attempt NaN", "expectedAttempt", (l, _t, k) => l.retry(k, Number.NaN, at(1))],
      ["a retry with a bad key", "key", (l, t) => l.retry({ threadId: t } as LedgerKey, 1, at(1))],
      ["a retry with an invalid date", "now", (l, _t, k) => l.retry(k, 1, new Date(Number.NaN))],
      ["a get with a bad key", "key", (l, t) => l.get({ threadId: t, toolCallId: "call_1", digest: "" })],
      ["a list of an empty thread id", "threadId", (l) => l.list("")],
      ["a list of a non-string thread id", "threadId", (l) => l.list(42 as unknown as string)],
    ];
    for (const [label, field, bad] of invalid) {
      test(`refuses ${label} with LedgerInputError (field "${field}") and stores nothing`, async ({ open, tid }) => {
        const ledger = await open();
        const t = tid("t");
        const kept = keyOf(t);
        const done = keyOf(t, "call_done");
        await ledger.begin(kept, at(0));
        await ledger.begin(done, at(0));
        await ledger.finish(done, { status: "succeeded", result: { n: 1 } }, at(0));
        const before = await ledger.list(t);
        const error = await refusal(() => bad(ledger, t, kept));
        expect(error instanceof LedgerInputError).toBe(true);
        expect((error as LedgerInputError).code).toBe("ledger_input_invalid");
        expect((error as LedgerInputError).field).toBe(field);
        expect(await ledger.list(t)).toEqual(before);
        expect(await ledger.get(kept)).toEqual(started(kept, at(0)));
        expect(await ledger.get(keyOf(t, "call_2"))).toBe(undefined);
        // The ledger still works after a refusal.
        expect(await ledger.retry(kept, 1, at(2))).toEqual(started(kept, at(2), 2));
        expect(await ledger.finish(kept, { status: "succeeded", result: null }, at(3))).toBe(true);
      });
    }

    if (reopen) {
      test("another handle on the same storage sees and continues what the first wrote, with the same seal key", async ({ open, again, tid }) => {
        const ledger = await open();
        const key = keyOf(tid("t"));
        await ledger.begin(key, at(0));
        const other = await again(ledger);
        expect(other === ledger).toBe(false);
        expect(await other.get(key)).toEqual(started(key, at(0)));
        expect(await other.begin(key, at(1))).toEqual({ claimed: false, entry: started(key, at(0)) });
        expect(await other.retry(key, 1, at(2))).toEqual(started(key, at(2), 2));
        expect(await ledger.retry(key, 1, at(3))).toBe(undefined);
        expect(await ledger.finish(key, { status: "succeeded", result: { refundId: "r-1" } }, at(4))).toBe(true);
        expect(await other.finish(key, { status: "failed", error: "late" }, at(5))).toBe(false);
        const finished = { ...started(key, at(2), 2), status: "succeeded", finishedAt: at(4).toISOString(), result: { refundId: "r-1" } };
        expect(await other.get(key)).toEqual(finished);
        expect(await other.list(key.threadId)).toEqual([finished]);
        expect(hex(await other.sealKey())).toBe(hex(await ledger.sealKey()));
        const third = await again(ledger);
        expect(hex(await third.sealKey())).toBe(hex(await ledger.sealKey()));
      });

      test("concurrent calls of sealKey from several handles (the first ones on fresh storage) agree on one key", async ({ open, again }) => {
        const ledger = await open();
        const handles = [ledger, await again(ledger), await again(ledger)];
        const keys = await Promise.all(handles.flatMap((h) => [h.sealKey(), h.sealKey()]));
        expect(new Set(keys.map((k) => hex(k))).size).toBe(1);
      });
    }
  });
}
