import { randomUUID, type KeyObject } from "node:crypto";
import { globalEntryHash } from "../src/audit/global.js";
import { InboxIndex, type PendingTask } from "../src/audit/inbox.js";
import { GENESIS_HASH, verifyChain, type AuditEvent, type AuditEventInput, type AuditLog, type AuditVerification } from "../src/audit/log.js";
import { auditKeyId, generateAuditSigningKey, signChainHead, verifyHeadSignature } from "../src/audit/signing.js";
import { verifyAuditStore } from "../src/audit/verify.js";
import { AuditInputError } from "../src/errors.js";
import { canonicalJson, sha256Hex } from "../src/internal/canonical.js";
import type { SpecRunner } from "./policy-engine-spec.js";

/**
 * An edit of a store's storage made behind the log's back, as someone with access to the
 * database or the files would make it. Positions are `seq`s of the thread's chain as appended.
 */
export type AuditTamperOp =
  /** Replace the data of the event at `seq`, keeping its stored hash. */
  | { kind: "set_data"; seq: number; data: Record<string, unknown> }
  /** Remove the event at `seq`; the others keep their `seq`. */
  | { kind: "delete"; seq: number }
  /**
   * Exchange the places of the events at two `seq`s: each keeps every field but its `seq`, which
   * becomes the other's (what swapping two rows' `seq` column does).
   */
  | { kind: "swap"; seqs: [number, number] }
  /**
   * Make `head` the thread's recorded head (`{ threadId, seq, hash }`, with the signed head's
   * fields when it has a `signature`); `null` removes the recorded head, signed or not.
   */
  | { kind: "set_head"; head: Record<string, unknown> | null }
  /**
   * Remove the thread whole: its events, its recorded and signed heads (in a shared file, its
   * lines and heads, with the other threads' offsets fixed up). The global log is left as it is.
   */
  | { kind: "delete_thread" };

/** How the spec makes a log: with a signing key when it tests signing. */
export interface MakeAuditLogOptions {
  signingKey?: KeyObject;
}

/** What a store's test tells the spec about it. */
export interface AuditLogSpecOptions {
  /**
   * Edits the store's storage directly (see {@link AuditTamperOp}). Given for stores that keep a
   * recorded head, whose `verify` must then detect each edit precisely; without it the tampering
   * cases are not run (there is nothing to edit in memory).
   */
  tamper?: (log: AuditLog, threadId: string, op: AuditTamperOp) => void | Promise<void>;
  /**
   * Another handle on the same storage (another connection pool, file descriptors or database
   * connection): used for appends from several handles at once and for reading back.
   */
  reopen?: (log: AuditLog) => AuditLog | Promise<AuditLog>;
  /** Run the signing cases (default true): `makeLog({ signingKey })` must sign chain heads. */
  signing?: boolean;
  /**
   * The log is only ever used by one process (an in-memory log): said so, the suite runs without
   * `reopen`. Without either, it fails: a shared log's chains must hold across handles.
   */
  singleProcess?: boolean;
}

/** An event of any type with any data: a store keeps data as it is given, whatever the type records. */
const ev = (threadId: string, type: AuditEventInput["type"], data: Record<string, unknown> = {}): AuditEventInput => ({ threadId, type, data }) as AuditEventInput;

/** The hash of an event as the chain defines it, recomputed here independently of the stores. */
export function expectedAuditHash(e: Omit<AuditEvent, "hash">): string {
  return sha256Hex(
    canonicalJson({ schemaVersion: e.schemaVersion, id: e.id, threadId: e.threadId, seq: e.seq, type: e.type, at: e.at, data: e.data, prevHash: e.prevHash }),
  );
}

/**
 * The conformance suite every {@link AuditLog} runs: append (single, batch, several threads in one
 * batch), read in order, listThreads, verify, the refusal of invalid input with nothing stored,
 * concurrent appends to one thread keeping one chain, signed chain heads, `pending()` (the inbox
 * index) saying what the chain says whichever handle appended, and, for stores that pass a
 * `tamper` hook, the precise report of each kind of edit of their storage.
 * Thread ids are unique per test, so stores on a shared database can run it.
 * @example
 * ```ts
 * import { describe, it, expect } from "vitest";
 * auditLogSpec("MemoryAuditLog", (o) => new MemoryAuditLog(o), { describe, it, expect });
 * ```
 */
export function auditLogSpec(
  name: string,
  makeLog: (options: MakeAuditLogOptions) => AuditLog | Promise<AuditLog>,
  { describe, it, expect }: SpecRunner,
  options: AuditLogSpecOptions = {},
): void {
  const { tamper, reopen, singleProcess } = options;

  /** Runs a test body with fresh thread ids; closes every log it opened. */
  const test = (title: string, body: (ctx: { open: (o?: MakeAuditLogOptions) => Promise<AuditLog>; again: (log: AuditLog) => Promise<AuditLog>; tid: (label: string) => string }) => Promise<void>) =>
    it(title, async () => {
      const opened: AuditLog[] = [];
      const run = `spec-${randomUUID()}`;
      try {
        await body({
          open: async (o = {}) => {
            const log = await makeLog(o);
            opened.push(log);
            return log;
          },
          again: async (log) => {
            const other = reopen ? await reopen(log) : log;
            if (other !== log) opened.push(other);
            return other;
          },
          tid: (label) => `${run}-${label}`,
        });
      } finally {
        for (const log of opened.reverse()) await (log as { close?: () => unknown }).close?.();
      }
    });

  const expectChained = (events: AuditEvent[], threadId: string) => {
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i));
    events.forEach((e, i) => {
      expect(e.threadId).toBe(threadId);
      expect(e.schemaVersion).toBe(1);
      expect(e.prevHash).toBe(i === 0 ? GENESIS_HASH : events[i - 1]!.hash);
      expect(e.hash).toBe(expectedAuditHash(e));
    });
  };

  const refusal = async (promise: Promise<unknown>): Promise<unknown> =>
    promise.then(
      () => "resolved",
      (error: unknown) => error,
    );

  describe(`auditLogSpec: ${name}`, () => {
    if (!reopen && !singleProcess) {
      it("is given a second handle on the same storage (reopen), or said to be used by one process only (singleProcess)", () => {
        throw new Error("auditLogSpec needs reopen (another handle on the same storage: chains and the global log must hold across processes), or singleProcess: true for a log no other process uses");
      });
    }

    test("a thread id that begins another's names only its own thread: read, verify and heads never mix them", async ({ open, tid }) => {
      const log = await open();
      const [t, longer] = [tid("t-1"), tid("t-10")];
      const mine = await log.append([ev(t, "run.started", { who: "t-1" })]);
      const theirs = await log.append([ev(longer, "run.started", { who: "t-10" }), ev(longer, "run.completed")]);
      expect(await log.read(t)).toEqual(mine);
      expect(await log.read(longer)).toEqual(theirs);
      expect(await log.verify(t)).toEqual({ ok: true, threadId: t, count: 1, headHash: mine[0]!.hash });
      expect(await log.read(tid("t-"))).toEqual([]);
      expect((await log.verify(tid("t-"))).count).toBe(0);
    });
    test("a single event starts the thread's chain at seq 0, chained to genesis", async ({ open, tid }) => {
      const log = await open();
      const t = tid("t");
      const appended = await log.append(ev(t, "run.started", { input: "refund 1042" }));
      expect(appended.length).toBe(1);
      const [event] = appended;
      expect(event).toEqual({
        schemaVersion: 1,
        id: event!.id,
        threadId: t,
        seq: 0,
        type: "run.started",
        at: event!.at,
        data: { input: "refund 1042" },
        prevHash: GENESIS_HASH,
        hash: expectedAuditHash(event!),
      });
      expect(event!.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(Number.isNaN(Date.parse(event!.at))).toBe(false);
      expect(await log.read(t)).toEqual([event]);
    });

    test("a batch over several threads keeps each thread's input order and one contiguous chain per thread, across appends", async ({ open, tid }) => {
      const log = await open();
      const [a, b, c] = [tid("a"), tid("b"), tid("c")];
      const first = await log.append([ev(a, "run.started"), ev(b, "run.started"), ev(a, "identity.bound", { agentId: "x" }), ev(c, "run.started"), ev(b, "model.output")]);
      // As stored: grouped by thread, threads in order of first appearance, each in input order.
      expect(first.map((e) => [e.threadId, e.seq, e.type])).toEqual([
        [a, 0, "run.started"],
        [a, 1, "identity.bound"],
        [b, 0, "run.started"],
        [b, 1, "model.output"],
        [c, 0, "run.started"],
      ]);
      const second = await log.append([ev(b, "tool.started"), ev(a, "policy.decided", { effect: "allow" }), ev(b, "tool.succeeded")]);
      expect(second.map((e) => [e.threadId, e.seq])).toEqual([
        [b, 2],
        [b, 3],
        [a, 2],
      ]);
      const third = await log.append(ev(a, "run.completed"));
      expect(third[0]!.seq).toBe(3);
      expect(third[0]!.prevHash).toBe(second[2]!.hash);

      const readA = await log.read(a);
      const readB = await log.read(b);
      expect(readA.map((e) => e.type)).toEqual(["run.started", "identity.bound", "policy.decided", "run.completed"]);
      expect(readA).toEqual([first[0], first[1], second[2], third[0]]);
      expect(readB).toEqual([first[2], first[3], second[0], second[1]]);
      expect(await log.read(c)).toEqual([first[4]]);
      expectChained(readA, a);
      expectChained(readB, b);
      expect(new Set([...first, ...second, ...third].map((e) => e.id)).size).toBe(9);
      expect(await log.verify(a)).toEqual({ ok: true, threadId: a, count: 4, headHash: third[0]!.hash });
      expect(await log.verify(b)).toEqual({ ok: true, threadId: b, count: 4, headHash: second[1]!.hash });
    });

    test("an unknown thread reads empty and verifies ok with count 0", async ({ open, tid }) => {
      const log = await open();
      const t = tid("nobody");
      expect(await log.read(t)).toEqual([]);
      expect(await log.verify(t)).toEqual({ ok: true, threadId: t, count: 0, headHash: GENESIS_HASH });
    });

    test("listThreads lists the threads that have events, sorted", async ({ open, tid }) => {
      const log = await open();
      const mine = (list: string[]) => list.filter((x) => x.startsWith(tid("")));
      expect(mine(await log.listThreads())).toEqual([]);
      await log.append([ev(tid("thread-b"), "run.started"), ev(tid("thread-a"), "run.started")]);
      await log.append(ev(tid("thread-c"), "run.started"));
      await log.append(ev(tid("thread-a"), "run.completed"));
      expect(mine(await log.listThreads())).toEqual([tid("thread-a"), tid("thread-b"), tid("thread-c")]);
    });

    test("an empty batch appends nothing", async ({ open, tid }) => {
      const log = await open();
      expect(await log.append([])).toEqual([]);
      expect((await log.listThreads()).filter((x) => x.startsWith(tid("")))).toEqual([]);
    });

    test("keeps a given `at`, stores data as plain JSON exactly as hashed, and hands out copies", async ({ open, tid }) => {
      const log = await open();
      const t = tid("t");
      const [event] = await log.append({
        ...ev(t, "tool.succeeded", { when: new Date("2024-01-02T03:04:05.000Z"), skipped: undefined, nested: { n: 1.5, list: [1, "x", null], "é\u2028\"q\"": "\ud83d\ude00" } }),
        at: "2024-05-01T10:00:00.000Z",
      });
      expect(event!.at).toBe("2024-05-01T10:00:00.000Z");
      expect(event!.data).toEqual({ when: "2024-01-02T03:04:05.000Z", nested: { n: 1.5, list: [1, "x", null], "é\u2028\"q\"": "\ud83d\ude00" } });
      expect(Object.keys(event!.data).includes("skipped")).toBe(false);
      expect(event!.hash).toBe(expectedAuditHash(event!));
      event!.data.when = "changed";
      const [read] = await log.read(t);
      expect(read!.data.when).toBe("2024-01-02T03:04:05.000Z");
      read!.data.when = "changed again";
      expect((await log.read(t))[0]!.data.when).toBe("2024-01-02T03:04:05.000Z");
      expect(await log.verify(t)).toEqual({ ok: true, threadId: t, count: 1, headHash: event!.hash });
    });

    test("thread ids with quotes, backslashes and non-ASCII characters are threads like any other", async ({ open, tid }) => {
      const log = await open();
      const [odd, plain] = [tid(`o'k "q" \\ é 日本 \u2028`), tid("plain")];
      const events = await log.append([ev(odd, "run.started"), ev(plain, "run.started"), ev(odd, "run.completed")]);
      expect(events.map((e) => [e.threadId, e.seq])).toEqual([
        [odd, 0],
        [odd, 1],
        [plain, 0],
      ]);
      expect(await log.read(odd)).toEqual(events.slice(0, 2));
      expect(await log.verify(odd)).toEqual({ ok: true, threadId: odd, count: 2, headHash: events[1]!.hash });
      expect((await log.listThreads()).filter((x) => x.startsWith(tid("")))).toEqual([odd, plain].sort());
    });

    test("data with a member named __proto__ is kept as data and verifies", async ({ open, tid }) => {
      const log = await open();
      const t = tid("t");
      const data = JSON.parse('{"__proto__": {"isAdmin": true}, "args": {"__proto__": {"isAdmin": true}, "amount": 5}}') as Record<string, unknown>;
      const [event] = await log.append(ev(t, "tool.started", data));
      const [read] = await log.read(t);
      expect(JSON.stringify(read!.data)).toBe('{"__proto__":{"isAdmin":true},"args":{"__proto__":{"isAdmin":true},"amount":5}}');
      expect(read).toEqual(event);
      expect(await log.verify(t)).toEqual({ ok: true, threadId: t, count: 1, headHash: event!.hash });
    });

    const invalid: [string, (t: string) => unknown][] = [
      ["an unknown event type", (t) => ({ threadId: t, type: "tool.exploded" })],
      ["an empty thread id", () => ({ threadId: "", type: "run.started" })],
      ["a missing thread id", () => ({ type: "run.started" })],
      ["null", () => null],
      ["non-object data", (t) => ({ threadId: t, type: "run.started", data: "x" })],
      ["array data", (t) => ({ threadId: t, type: "run.started", data: [1] })],
      ["a non-string at", (t) => ({ threadId: t, type: "run.started", at: 5 })],
      ["data that is not JSON (a BigInt)", (t) => ({ threadId: t, type: "run.started", data: { amount: BigInt(1) } })],
    ];
    for (const [label, bad] of invalid) {
      test(`refuses ${label} with AuditInputError, within a batch across threads, and stores nothing`, async ({ open, tid }) => {
        const log = await open();
        const [t, other] = [tid("t"), tid("other")];
        const [kept] = await log.append(ev(t, "run.started"));
        const error = await refusal(log.append([ev(t, "model.output"), ev(other, "run.started"), bad(t) as AuditEventInput]));
        expect(error instanceof AuditInputError).toBe(true);
        expect((error as AuditInputError).code).toBe("audit_input_invalid");
        const alone = await refusal(log.append(bad(other) as AuditEventInput));
        expect(alone instanceof AuditInputError).toBe(true);
        expect(await log.read(t)).toEqual([kept]);
        expect(await log.read(other)).toEqual([]);
        expect((await log.listThreads()).filter((x) => x.startsWith(tid("")))).toEqual([t]);
        expect(await log.verify(t)).toEqual({ ok: true, threadId: t, count: 1, headHash: kept!.hash });
        // The log still works after a refusal.
        expect((await log.append(ev(t, "run.completed")))[0]!.seq).toBe(1);
      });
    }

    test("concurrent appends to one thread from several callers keep one unbroken chain", async ({ open, again, tid }) => {
      const log = await open();
      const handles = [log, await again(log), await again(log)];
      const t = tid("shared");
      const callers = 6;
      const rounds = 12;
      await Promise.all(
        Array.from({ length: callers }, async (_, caller) => {
          const handle = handles[caller % handles.length]!;
          for (let i = 0; i < rounds; i++) {
            // Every third append is a batch of two, which must stay contiguous in the chain.
            await handle.append(
              i % 3 === 0
                ? [ev(t, "tool.started", { caller, i, part: 0 }), ev(t, "tool.succeeded", { caller, i, part: 1 })]
                : ev(t, "model.output", { caller, i }),
            );
          }
        }),
      );
      const events = await log.read(t);
      const total = callers * (rounds + rounds / 3);
      expect(events.length).toBe(total);
      expectChained(events, t);
      expect(await log.verify(t)).toEqual({ ok: true, threadId: t, count: total, headHash: events[total - 1]!.hash });
      for (let caller = 0; caller < callers; caller++) {
        const own = events.filter((e) => e.data.caller === caller && e.data.part !== 1).map((e) => e.data.i);
        expect(own).toEqual(Array.from({ length: rounds }, (_, i) => i));
      }
      for (const e of events.filter((x) => x.data.part === 1)) expect(events[e.seq - 1]!.data).toEqual({ caller: e.data.caller, i: e.data.i, part: 0 });
    });

    if (reopen) {
      test("another handle on the same storage reads the same chain and continues it", async ({ open, again, tid }) => {
        const log = await open();
        const t = tid("t");
        const events = await log.append([ev(t, "run.started"), ev(t, "model.output", { text: "hi" })]);
        const other = await again(log);
        expect(other === log).toBe(false);
        expect(await other.read(t)).toEqual(events);
        expect(await other.verify(t)).toEqual({ ok: true, threadId: t, count: 2, headHash: events[1]!.hash });
        const [next] = await other.append(ev(t, "run.completed"));
        expect([next!.seq, next!.prevHash]).toEqual([2, events[1]!.hash]);
        const [last] = await log.append(ev(t, "run.started"));
        expect([last!.seq, last!.prevHash]).toEqual([3, next!.hash]);
        expectChained(await log.read(t), t);
      });

      test("what one handle appends, a handle that read the thread before reads now (no stale reads)", async ({ open, again, tid }) => {
        const log = await open();
        const other = await again(log);
        const t = tid("t");
        await log.append(ev(t, "run.started"));
        expect((await other.read(t)).length).toBe(1);
        expect((await other.verify(t)).count).toBe(1);
        await log.append(ev(t, "approval.decided", { approverId: "sam" }));
        const seen = await other.read(t);
        expect(seen.map((e) => e.type)).toEqual(["run.started", "approval.decided"]);
        expect(await other.verify(t)).toEqual({ ok: true, threadId: t, count: 2, headHash: seen[1]!.hash });
        expect((await other.listThreads()).includes(t)).toBe(true);
      });

      test("concurrent appends to several threads from several handles keep one global log: contiguous, chained, verified", async ({ open, again, tid }) => {
        const log = await open();
        const handles = [log, await again(log), await again(log)];
        const threads = [tid("a"), tid("b"), tid("c"), tid("d")];
        await Promise.all(Array.from({ length: 24 }, (_, i) => handles[i % handles.length]!.append(ev(threads[i % threads.length]!, "run.started", { i }))));
        for (const handle of handles) {
          const { entries } = await handle.globalLog!();
          expect(entries.map((e) => e.gseq)).toEqual(entries.map((_, i) => i));
          for (const e of entries) expect(e.hash).toBe(globalEntryHash(e));
          const ours = entries.filter((e) => e.heads.some((h) => threads.includes(h.threadId)));
          expect(ours.length).toBe(24);
        }
        const report = await verifyAuditStore(log);
        expect(report.problems.filter((p) => p.threadId === undefined || threads.includes(p.threadId))).toEqual([]);
      });
    }

    // `eart approvals` (cli/local.ts `inbox`), a process of its own, lists the threads the
    // index names when the log has `pending`: a request another process appended that the index
    // misses waits unseen until it expires. Without `pending`, it reads every thread instead.
    test("what waits for a human, appended through one handle, is listed through another: pending() says what the chain says (without pending, listThreads and read find it)", async ({
      open,
      again,
      tid,
    }) => {
      const log = await open();
      const other = await again(log);
      const [t, u, w] = [tid("t"), tid("u"), tid("w")];
      const requestedBy = { agentId: "support-agent", userId: "cara" };
      const call = (toolCallId: string, approverRoles: string[], more: Record<string, unknown> = {}) => ({
        toolCallId,
        name: "issue_refund",
        digest: `d-${toolCallId}`,
        args: { orderId: "1042", amountCents: 74_000 },
        approverRoles,
        requestedBy,
        ...more,
      });
      await log.append(
        ev(t, "approval.requested", {
          requestedBy,
          since: "2030-01-02T00:00:00.000Z",
          roles: ["supervisor", "finance"],
          requests: [call("c1", ["supervisor"]), call("c2", ["finance"], { expiresAt: "2030-01-03T00:00:00.000Z" })],
        }),
      );
      await other.append({ ...ev(u, "tool.recovery_requested", { toolCallId: "c9", name: "issue_refund", digest: "d-c9", attempt: 1, reason: "outcome_unknown", error: null, roles: ["ops"], requestedBy }), at: "2030-01-01T00:00:00.000Z" });
      await log.append(ev(w, "escalation.requested", { reason: "missing_context", roles: ["underwriter"], requestedBy, since: "2030-01-04T00:00:00.000Z" }));
      const ours = (tasks: readonly PendingTask[]) => tasks.filter((p) => p.threadId.startsWith(tid("")));
      const keys = (tasks: readonly PendingTask[]) => ours(tasks).map((p) => `${p.threadId.slice(tid("").length)}/${p.kind}/${p.toolCallId ?? "-"}`);
      /** What the chain says waits: the index rebuilt from this test's threads' events. */
      const replayed = async (handle: AuditLog, role?: string) => {
        const index = new InboxIndex();
        for (const threadId of [t, u, w]) for (const e of await handle.read(threadId)) index.apply(e);
        return index.list(role === undefined ? {} : { role });
      };
      const expectListed = async (handle: AuditLog, expected: string[], financeOnly: string[]) => {
        if (typeof handle.pending !== "function") {
          const threads = await handle.listThreads();
          for (const threadId of [t, u, w]) expect(threads.includes(threadId)).toBe(true);
          expect(keys(await replayed(handle))).toEqual(expected);
          return;
        }
        expect(keys(await handle.pending())).toEqual(expected);
        expect(ours(await handle.pending())).toEqual(await replayed(handle));
        expect(keys(await handle.pending({ role: "finance" }))).toEqual(financeOnly);
        expect(ours(await handle.pending({ role: "finance" }))).toEqual(await replayed(handle, "finance"));
      };
      for (const handle of [other, log]) await expectListed(handle, ["u/recovery/c9", "t/approval/c1", "t/approval/c2", "w/escalation/-"], ["t/approval/c2"]);
      // Answers recorded through either handle close their entries for both.
      await other.append(ev(t, "approval.decided", { toolCallId: "c1", name: "issue_refund", digest: "d-c1", approverId: "sam", decision: "approve", status: "approved" }));
      await log.append(ev(u, "tool.recovery_decided", { toolCallId: "c9", name: "issue_refund", digest: "d-c9", attempt: 1, reason: "outcome_unknown", decision: "mark_done", resolverId: "olga", message: null }));
      for (const handle of [log, other]) await expectListed(handle, ["t/approval/c2", "w/escalation/-"], ["t/approval/c2"]);
    });

    test("keeps a global log over all threads: one entry per append, chained from gseq 0, each thread's latest head in it", async ({ open, tid }) => {
      const log = await open();
      const [t, u] = [tid("t"), tid("u")];
      await log.append([ev(t, "run.started"), ev(u, "run.started")]);
      const [, second] = await log.append([ev(t, "model.output"), ev(t, "run.completed")]);
      const before = (await log.globalHead!()).head!;
      await log.append(ev(u, "run.completed"));
      const { entries } = await log.globalLog!();
      // Other tests may share the store: look at the entries naming this test's threads.
      const ours = entries.filter((e) => e.heads.some((h) => h.threadId === t || h.threadId === u));
      expect(ours.map((e) => e.heads.filter((h) => h.threadId === t || h.threadId === u).map((h) => [h.threadId, h.seq]))).toEqual([
        [
          [t, 0],
          [u, 0],
        ],
        [[t, 2]],
        [[u, 1]],
      ]);
      expect(ours[1]!.heads.find((h) => h.threadId === t)!.hash).toBe(second!.hash);
      for (const e of ours) expect(e.hash).toBe(globalEntryHash(e));
      expect(entries.map((e) => e.gseq)).toEqual(entries.map((_, i) => i));
      const after = (await log.globalHead!()).head!;
      expect(after.gseq).toBeGreaterThan(before.gseq);
      const report = await verifyAuditStore(log, { witness: before });
      const mine = report.problems.filter((p) => p.threadId === undefined || p.threadId === t || p.threadId === u);
      expect(mine).toEqual([]);
      // A witness the store cannot show (a later head, or another hash at a position) is a rollback.
      const ahead = await verifyAuditStore(log, { witness: { gseq: after.gseq + 1_000, hash: after.hash } });
      expect(ahead.problems.some((p) => p.kind === "rollback" && p.gseq === after.gseq + 1_000)).toBe(true);
      const rewritten = await verifyAuditStore(log, { witness: { gseq: before.gseq, hash: "f".repeat(64) } });
      expect(rewritten.problems.some((p) => p.kind === "rollback" && p.gseq === before.gseq)).toBe(true);
    });

    test("verify with a knownHead checks the chain still contains it", async ({ open, tid }) => {
      const log = await open();
      const t = tid("t");
      const events = await log.append([ev(t, "run.started"), ev(t, "model.output"), ev(t, "run.completed")]);
      expect(await log.verify(t, { knownHead: { seq: 1, hash: events[1]!.hash } })).toEqual({ ok: true, threadId: t, count: 3, headHash: events[2]!.hash });
      expect(await log.verify(t, { knownHead: { seq: 1, hash: "e".repeat(64) } })).toEqual({
        ok: false,
        threadId: t,
        count: 3,
        brokenAt: { seq: 1, eventId: undefined, reason: "head_mismatch", expected: `1:${"e".repeat(64)}`, found: `1:${events[1]!.hash}` },
      });
      expect(await log.verify(t, { knownHead: { seq: 5, hash: "e".repeat(64) } })).toEqual({
        ok: false,
        threadId: t,
        count: 3,
        brokenAt: { seq: 3, eventId: undefined, reason: "head_mismatch", expected: `5:${"e".repeat(64)}`, found: `2:${events[2]!.hash}` },
      });
    });

    if (options.signing !== false) {
      test("signs each thread's head after every append; the public key alone checks it", async ({ open, tid }) => {
        const { privateKey, publicKey, keyId } = generateAuditSigningKey();
        const log = await open({ signingKey: privateKey });
        expect(typeof log.signedHead).toBe("function");
        const [t, u] = [tid("t"), tid("u")];
        const first = await log.append([ev(t, "run.started"), ev(u, "run.started"), ev(t, "model.output")]);
        const [t1, u0] = [first.find((e) => e.threadId === t && e.seq === 1)!, first.find((e) => e.threadId === u)!];
        const headT = await log.signedHead!(t);
        expect(headT).toEqual({ schemaVersion: 1, alg: "Ed25519", threadId: t, seq: 1, hash: t1.hash, keyId, signature: headT!.signature });
        expect((await log.signedHead!(u))?.hash).toBe(u0.hash);
        const pem = publicKey.export({ type: "spki", format: "pem" }).toString();
        expect(verifyHeadSignature(headT, pem)).toEqual({ ok: true, head: headT });
        const [next] = await log.append(ev(t, "run.completed"));
        const moved = await log.signedHead!(t);
        expect([moved!.seq, moved!.hash]).toEqual([2, next!.hash]);
        expect(verifyHeadSignature(moved, pem).ok).toBe(true);
        const ok: AuditVerification = { ok: true, threadId: t, count: 3, headHash: next!.hash };
        expect(await log.verify(t)).toEqual(ok);
        expect(await log.verify(t, { publicKey: pem })).toEqual(ok);
        // An auditor holding only the events, the signed head and the public key.
        expect(verifyChain(t, await log.read(t), undefined, { signedHead: moved, publicKey: pem })).toEqual(ok);
        expect(verifyChain(t, (await log.read(t)).slice(0, 2), undefined, { signedHead: moved, publicKey: pem })).toEqual({
          ok: false,
          threadId: t,
          count: 2,
          brokenAt: { seq: 2, eventId: undefined, reason: "head_mismatch", expected: `2:${next!.hash}`, found: `1:${t1.hash}` },
        });
      });

      test("a head checked with another key, or changed after signing, fails", async ({ open, tid }) => {
        const { privateKey, keyId } = generateAuditSigningKey();
        const other = generateAuditSigningKey();
        const log = await open({ signingKey: privateKey });
        const t = tid("t");
        await log.append([ev(t, "run.started"), ev(t, "run.completed")]);
        const head = (await log.signedHead!(t))!;
        expect(await log.verify(t, { publicKey: other.publicKey })).toEqual({
          ok: false,
          threadId: t,
          count: 2,
          brokenAt: { seq: 0, eventId: undefined, reason: "signature_invalid", expected: `key ${other.keyId}`, found: `key ${keyId}` },
        });
        expect(verifyHeadSignature(head, other.publicKey)).toEqual({ ok: false, reason: "wrong_key", expected: `key ${other.keyId}`, found: `key ${keyId}` });
        const badSignature = { ok: false, reason: "bad_signature", expected: `a valid Ed25519 signature by key ${keyId}`, found: "a signature that does not verify" };
        expect(verifyHeadSignature({ ...head, seq: 0 }, privateKey)).toEqual(badSignature);
        expect(verifyHeadSignature({ ...head, hash: "0".repeat(64) }, privateKey)).toEqual(badSignature);
        expect(verifyHeadSignature({ ...head, threadId: tid("elsewhere") }, privateKey)).toEqual(badSignature);
        expect(verifyHeadSignature({ ...head, signature: signChainHead(head, other.privateKey).signature }, privateKey)).toEqual(badSignature);
        expect(verifyHeadSignature({ ...head, keyId: "nope" }, privateKey).ok).toBe(false);
      });

      test("a log without a signing key keeps no signed head; verify with a public key says so", async ({ open, tid }) => {
        const { publicKey, keyId } = generateAuditSigningKey();
        const log = await open();
        const t = tid("t");
        expect(await log.verify(t, { publicKey })).toEqual({ ok: true, threadId: t, count: 0, headHash: GENESIS_HASH });
        await log.append(ev(t, "run.started"));
        expect(await log.signedHead?.(t)).toBe(undefined);
        expect(await log.verify(t, { publicKey })).toEqual({
          ok: false,
          threadId: t,
          count: 1,
          brokenAt: { seq: 0, eventId: undefined, reason: "signature_invalid", expected: `a head signed by key ${keyId}`, found: "no signed head" },
        });
      });
    }

    if (tamper) {
      /** Thread `t` with five events (two appends: seq 0-3, then 4) and thread `other` with two. */
      const seeded = async (log: AuditLog, t: string, other: string) => {
        const events = await log.append([
          ev(t, "run.started", { input: "refund 1042" }),
          ev(t, "identity.bound", { agentId: "support-agent", userId: "cara" }),
          ev(t, "policy.decided", { effect: "require_approval", amount: 740 }),
          ev(t, "approval.decided", { approverId: "sam" }),
        ]);
        const earlierHead = await log.signedHead?.(t);
        events.push(...(await log.append(ev(t, "tool.succeeded", { refundId: "r-1" }))));
        await log.append([ev(other, "run.started"), ev(other, "run.completed")]);
        expect(await log.verify(t)).toEqual({ ok: true, threadId: t, count: 5, headHash: events[4]!.hash });
        return { events, earlierHead };
      };
      const broken = (t: string, count: number, brokenAt: Record<string, unknown>) => ({ ok: false, threadId: t, count, brokenAt });

      test("tampering: changed data of an event is a hash_mismatch at its seq", async ({ open, tid }) => {
        const log = await open();
        const [t, other] = [tid("t"), tid("other")];
        const { events } = await seeded(log, t, other);
        const data = { effect: "allow", amount: 740 };
        await tamper(log, t, { kind: "set_data", seq: 2, data });
        expect(await log.verify(t)).toEqual(
          broken(t, 5, { seq: 2, eventId: events[2]!.id, reason: "hash_mismatch", expected: expectedAuditHash({ ...events[2]!, data }), found: events[2]!.hash }),
        );
        expect((await log.verify(other)).ok).toBe(true);
      });

      test("tampering: a deleted middle event is a sequence_gap at its seq", async ({ open, tid }) => {
        const log = await open();
        const [t, other] = [tid("t"), tid("other")];
        const { events } = await seeded(log, t, other);
        await tamper(log, t, { kind: "delete", seq: 2 });
        expect(await log.verify(t)).toEqual(broken(t, 4, { seq: 2, eventId: events[3]!.id, reason: "sequence_gap", expected: "2", found: "3" }));
        expect((await log.verify(other)).ok).toBe(true);
      });

      test("tampering: a deleted first event is a sequence_gap at seq 0", async ({ open, tid }) => {
        const log = await open();
        const [t, other] = [tid("t"), tid("other")];
        const { events } = await seeded(log, t, other);
        await tamper(log, t, { kind: "delete", seq: 0 });
        expect(await log.verify(t)).toEqual(broken(t, 4, { seq: 0, eventId: events[1]!.id, reason: "sequence_gap", expected: "0", found: "1" }));
      });

      test("tampering: a deleted last event is a head_mismatch at its seq", async ({ open, tid }) => {
        const log = await open();
        const [t, other] = [tid("t"), tid("other")];
        const { events } = await seeded(log, t, other);
        await tamper(log, t, { kind: "delete", seq: 4 });
        expect(await log.verify(t)).toEqual(
          broken(t, 4, { seq: 4, eventId: undefined, reason: "head_mismatch", expected: `4:${events[4]!.hash}`, found: `3:${events[3]!.hash}` }),
        );
        expect((await log.verify(other)).ok).toBe(true);
      });

      test("tampering: two reordered events are a prev_hash_mismatch at the first", async ({ open, tid }) => {
        const log = await open();
        const [t, other] = [tid("t"), tid("other")];
        const { events } = await seeded(log, t, other);
        await tamper(log, t, { kind: "swap", seqs: [1, 2] });
        expect((await log.read(t)).map((e) => e.id)).toEqual([events[0]!.id, events[2]!.id, events[1]!.id, events[3]!.id, events[4]!.id]);
        expect(await log.verify(t)).toEqual(broken(t, 5, { seq: 1, eventId: events[2]!.id, reason: "prev_hash_mismatch", expected: events[0]!.hash, found: events[1]!.hash }));
      });

      test("tampering: a removed head is a head_mismatch at seq 0", async ({ open, tid }) => {
        const log = await open();
        const [t, other] = [tid("t"), tid("other")];
        const { events } = await seeded(log, t, other);
        await tamper(log, t, { kind: "set_head", head: null });
        expect(await log.verify(t)).toEqual(broken(t, 5, { seq: 0, eventId: undefined, reason: "head_mismatch", expected: `-1:${GENESIS_HASH}`, found: `4:${events[4]!.hash}` }));
      });

      test("tampering: a thread deleted whole (events, heads) is caught by the global log, per thread and store-wide", async ({ open, tid }) => {
        const log = await open();
        const [t, other] = [tid("t"), tid("other")];
        await seeded(log, t, other);
        await tamper(log, t, { kind: "delete_thread" });
        expect(await log.read(t)).toEqual([]);
        const lost = await log.verify(t);
        expect([lost.ok, lost.count, lost.ok ? undefined : lost.brokenAt.reason]).toEqual([false, 0, "global_mismatch"]);
        const report = await verifyAuditStore(log);
        expect(report.ok).toBe(false);
        // The store names the lost thread, or (a shared file whose commits were edited too) the broken global log.
        expect(report.problems.some((p) => (p.kind === "missing_thread" && p.threadId === t) || (p.threadId === undefined && p.kind.startsWith("global_")))).toBe(true);
      });

      if (options.signing !== false) {
        test("tampering, signed: a head re-signed by another key fails", async ({ open, tid }) => {
          const { privateKey, keyId } = generateAuditSigningKey();
          const other = generateAuditSigningKey();
          const log = await open({ signingKey: privateKey });
          const [t, u] = [tid("t"), tid("other")];
          const { events } = await seeded(log, t, u);
          await tamper(log, t, { kind: "set_head", head: signChainHead({ threadId: t, seq: 4, hash: events[4]!.hash }, other.privateKey) });
          expect(await log.verify(t)).toEqual(broken(t, 5, { seq: 0, eventId: undefined, reason: "signature_invalid", expected: `key ${keyId}`, found: `key ${other.keyId}` }));
          expect(auditKeyId(other.publicKey)).toBe(other.keyId);
        });

        test("tampering, signed: a deleted last event with the head rewritten to match is caught by the signature", async ({ open, tid }) => {
          const { privateKey, keyId } = generateAuditSigningKey();
          const log = await open({ signingKey: privateKey });
          const [t, u] = [tid("t"), tid("other")];
          const { events } = await seeded(log, t, u);
          const signed = (await log.signedHead!(t))!;
          await tamper(log, t, { kind: "delete", seq: 4 });
          await tamper(log, t, { kind: "set_head", head: { ...signed, seq: 3, hash: events[3]!.hash } });
          expect(await log.verify(t)).toEqual(
            broken(t, 4, { seq: 0, eventId: undefined, reason: "signature_invalid", expected: `a valid Ed25519 signature by key ${keyId}`, found: "a signature that does not verify" }),
          );
          await tamper(log, t, { kind: "set_head", head: { threadId: t, seq: 3, hash: events[3]!.hash } });
          expect(await log.verify(t)).toEqual(broken(t, 4, { seq: 0, eventId: undefined, reason: "signature_invalid", expected: `a head signed by key ${keyId}`, found: "no signed head" }));
        });

        test("tampering, signed: a rollback to an earlier signed head is caught with a knownHead", async ({ open, tid }) => {
          const { privateKey } = generateAuditSigningKey();
          const log = await open({ signingKey: privateKey });
          const [t, u] = [tid("t"), tid("other")];
          const { events, earlierHead } = await seeded(log, t, u);
          expect([earlierHead?.seq, earlierHead?.hash]).toEqual([3, events[3]!.hash]);
          await tamper(log, t, { kind: "delete", seq: 4 });
          await tamper(log, t, { kind: "set_head", head: earlierHead! });
          // Every record of the thread is genuine, but the global log saw it reach seq 4.
          const rolledBack = await log.verify(t);
          expect([rolledBack.ok, rolledBack.count, rolledBack.ok ? undefined : rolledBack.brokenAt.reason]).toEqual([false, 4, "global_mismatch"]);
          // An auditor who kept the later head catches it too.
          expect(await log.verify(t, { knownHead: { seq: 4, hash: events[4]!.hash } })).toEqual(
            broken(t, 4, { seq: 4, eventId: undefined, reason: "head_mismatch", expected: `4:${events[4]!.hash}`, found: `3:${events[3]!.hash}` }),
          );
        });
      }
    }
  });
}
