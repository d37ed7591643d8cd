/**
 * Red-team pass: REPLAYING GENUINE SEALED AUDIT EVENTS. Since 4e8edef / 3497a44 eart acts only on
 * audit events it sealed (answerSeal on approval.decided / tool.recovery_decided /
 * escalation.decided, requestSeal on tool.recovery_requested, eventSeal on tool.interrupted /
 * tool.cancelled). The seals bind the fields and the thread, NOT the event's place in the chain
 * or the request it answers. Attacker: an insider who can append (copy) audit events, without the
 * key, plus the customer (cara) resending a payload byte-identical to the supervisor's.
 *
 * Attacked: sam's sealed retry of attempt 1 copied after attempt 2's request (in-step under
 * governanceMiddleware, and the prebuilt recovery node), followed by cara's resend, her own
 * abandon / junk, her null continue, and continueThread / unfinishedThreads; the same with
 * `attempt` in sam's payload; a copy into another thread; attempt 1's sealed request copied after
 * attempt 2's (askedInStep); sam's sealed approval under quorum 2 copied after the re-ask, after
 * an expiry re-request, onto a later proposal of the same refund (new call id, same digest), and
 * for one call of a two-call message; a genuine sealed tool.interrupted (and tool.cancelled) of
 * attempt 1 copied after a crash in attempt 2.
 *
 * Were holes, now closed (each a plain `it` with "Was a hole"): the seal now covers the asking an
 * answer is for (`round`: the attempt of a recovery request; the approvals gathered and the expiry
 * of an approval request), and an answer counts only for the asking the call waits on now;
 * askedInStep reads the request about the newest attempt.
 * - high: a copied sealed tool.recovery_decided (retry) made cara's identical payload act as
 *   sam's retry of the NEXT attempt: the non-idempotent refund ran a third time, unrecorded
 *   (acceptedBefore + nodes/tool-recovery.ts skipping `resent` for a replayed answer), in-step
 *   and prebuilt; in-step, cara's bare null continue did it too, and continueThread listed the
 *   thread as answered by sam and ran it (recordedAnswers / continuableFrom).
 * - medium: a copied sealed approval.decided from before an expiry re-request revived sam's
 *   discarded approval through cara's resend (self-approval and lapse checks skipped, unaudited);
 *   sue alone then paid a quorum-2 refund.
 * - low (liveness): attempt 1's sealed request copied after attempt 2's made askedInStep rebuild
 *   the request as attempt 1: the answer to the request shown (attempt: 2) was refused.
 * HELD: copies into another thread (thread sealed), onto another call id (call sealed; a reused
 * id is refused anyway), for one call of a two-call message (every call must be covered); a
 * quorum re-ask (the copied approver is the same one: counts once); a payload naming its
 * `attempt`; cara's own abandon / junk after the copy; a stale request plus a stale retry (the
 * ledger's attempt matches no resolution); attempt events (the attempt is sealed, so a copy says
 * nothing new: a crash after a real pause still goes to a human).
 * Not covered: escalation.decided (reviewAnswerFields bind no case id: a reviewer's copied answer
 * could stand for a later case through continueThread), LangGraph server auth.
 */
import { tool } from "@langchain/core/tools";
import { Command, MemorySaver } from "@langchain/langgraph";
import { createAgent } from "langchain";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { eartErrorOf, MemoryAuditLog, MemoryEffectLedger, pendingApproval, pendingRecovery, type AuditEvent, type AuditLog } from "eart";
import { governanceMiddleware, guardAgent, type GovernanceMiddlewareOptions } from "eart/middleware";
import { refundPolicy } from "../../examples/refund/policy.js";
import { ask, config, refund, refundSetup, registry, turnsModel } from "../support/refund.js";
import { decide } from "../support/decisions.js";
import { continueThread, defineApp, unfinishedThreads } from "eart/graphs";
import { definePolicy, IdentityRegistry, type LedgerKey } from "eart";
import { interrupt } from "@langchain/langgraph";
import identities from "../../examples/refund/identities.json" with { type: "json" };

const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: { message?: string }) => eartErrorOf(e)?.code ?? `not eart's: ${String(e?.message ?? e).slice(0, 300)}`);
const resume = (value: unknown) => new Command({ resume: value });

/** An insider's copy of a genuine event: the same type and data (its seal too), appended as a new link. */
async function replay(log: AuditLog, threadId: string, event: AuditEvent, to = threadId) {
  await log.append({ threadId: to, type: event.type, data: structuredClone(event.data) } as never);
}

type Behaviour = (n: number, args: { orderId: string; amount: number }) => unknown;
function setup(behaviour: Behaviour, opts: { governance?: Partial<GovernanceMiddlewareOptions>; amount?: number; counter?: { calls: number; effects: string[] } } = {}) {
  const counter = opts.counter ?? { calls: 0, effects: [] as string[] };
  const issueRefund = tool(
    async (args: { orderId: string; amount: number }) => {
      counter.calls += 1;
      return behaviour(counter.calls, args) as string;
    },
    { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) },
  );
  const auditLog = new MemoryAuditLog();
  const model = turnsModel([[refund("c1", opts.amount ?? 60, "1043")]]);
  const governance = governanceMiddleware({ identities: registry, policy: refundPolicy, auditLog, ledger: new MemoryEffectLedger(), recoveryRoles: ["supervisor"], ...opts.governance });
  const agent = guardAgent(createAgent({ model, tools: [issueRefund], checkpointer: new MemorySaver(), middleware: [governance] }), governance);
  return { agent, auditLog, counter };
}
const acting = (counter: { calls: number; effects: string[] }, fail: (n: number) => boolean = () => true): Behaviour => (n, args) => {
  counter.effects.push(`${args.orderId}:${args.amount}`);
  if (fail(n)) throw new Error(`payment gateway 502 after the refund was sent (call ${n})`);
  return `refunded ${args.orderId}`;
};
const decision = (digest: string, type: "retry" | "mark_done" | "abandon", extra: Record<string, unknown> = {}) => ({
  decisions: [{ toolCallId: "c1", type, digest, ...(type === "mark_done" && !("result" in extra) ? { result: { status: "refunded" } } : {}), ...extra }],
});

describe("in-step recovery (createAgent + governanceMiddleware)", () => {
  // Was a hole, now closed (high): langgraph/interrupts.ts acceptedBefore takes any sealed `tool.recovery_decided`
  // for the call + digest found after the newest `tool.recovery_requested` as "the answer eart
  // accepted for THIS request"; the answerSeal binds call, digest, answer digest and who, not the
  // attempt or the request it answered. nodes/tool-recovery.ts then treats cara's identical
  // payload as `replayed`: principal = sam, the `resent` (stale-attempt) check is skipped, nothing
  // is recorded (`if (!replayed)`), and the non-idempotent refund runs a THIRD time (attempt 3)
  // with no human deciding about attempt 2. Fix: seal the attempt (recovery) / the request's own
  // identity (e.g. the seq or hash of the `*.requested` event answered) into answerSeal, and in
  // acceptedBefore accept only an event whose sealed attempt equals the pending record's
  // `recovery.attempt` (approvals: whose sealed request is the newest one); better, record the
  // accepted answer in the sealed decision record in state rather than reading it from the log.
  it("sam's sealed retry of attempt 1, copied after attempt 2's request, does not let cara's resend run the refund a third time", async () => {
    const counter = { calls: 0, effects: [] as string[] };
    const s = setup(acting(counter, (n) => n <= 2), { counter });
    const first = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("ir-1")));
    expect(first?.requests.map((r) => [r.toolCallId, r.attempt])).toEqual([["c1", 1]]);
    const digest = first!.requests[0]!.digest;
    const p1 = decision(digest, "retry");
    const second = pendingRecovery(await s.agent.invoke(resume(p1), config("ir-1", "sam")));
    expect(second?.requests.map((r) => [r.toolCallId, r.attempt])).toEqual([["c1", 2]]);
    expect(counter.calls).toBe(2);
    const events = await s.auditLog.read("ir-1");
    const sams = events.find((e) => e.type === "tool.recovery_decided")!;
    expect(sams.data).toMatchObject({ resolverId: "sam", decision: "retry", attempt: 1 });
    expect(typeof sams.data.answerSeal).toBe("string");
    await replay(s.auditLog, "ir-1", sams);
    expect(await s.auditLog.verify("ir-1")).toMatchObject({ ok: true });
    const code = await codeOf(s.agent.invoke(resume(p1), config("ir-1", "cara")));
    expect(code).toBe("approval_self_approval");
    expect(counter.calls).toBe(2);
    expect((await s.auditLog.read("ir-1")).filter((e) => e.type === "tool.recovery_decided")).toHaveLength(2);
  });

  it("held: after the copy, cara's own abandon or a junk answer is refused (approval_already_answered) and runs nothing", async () => {
    for (const how of ["abandon", "junk"] as const) {
      const threadId = `ir-2-${how}`;
      const counter = { calls: 0, effects: [] as string[] };
      const s = setup(acting(counter, (n) => n <= 2), { counter });
      const first = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config(threadId)));
      const digest = first!.requests[0]!.digest;
      const second = pendingRecovery(await s.agent.invoke(resume(decision(digest, "retry")), config(threadId, "sam")));
      expect(second?.requests.map((r) => r.attempt)).toEqual([2]);
      const sams = (await s.auditLog.read(threadId)).find((e) => e.type === "tool.recovery_decided")!;
      await replay(s.auditLog, threadId, sams);
      const code = await codeOf(s.agent.invoke(resume(how === "junk" ? { nothing: true } : decision(digest, "abandon")), config(threadId, "cara")));
      expect(code).toBe("approval_already_answered");
      expect(counter.calls).toBe(2);
    }
  });

  // Was a hole, now closed (high): same cause, and no payload needed. The in-step recovery step never completes
  // between its pauses, so LangGraph still holds sam's retry (attempt 1) as the step's stored
  // resume value. With the copy after attempt 2's request, graphs/resume-guard.ts continuableFrom
  // finds a sealed recorded answer matching the stored one and lets ANYONE's `invoke(null)` through
  // (assertContinuer skipped); the step re-runs, acceptedBefore names sam, and the refund runs a
  // third time. Fix as above (bind the answer to the attempt / request), and recordedAnswers should
  // count an answer only when its sealed request is the one the thread waits on.
  it("after the copy, cara's null continue does not run the refund a third time", async () => {
    const counter = { calls: 0, effects: [] as string[] };
    const s = setup(acting(counter, (n) => n <= 2), { counter });
    const first = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("ir-3")));
    const digest = first!.requests[0]!.digest;
    expect(pendingRecovery(await s.agent.invoke(resume(decision(digest, "retry")), config("ir-3", "sam")))?.requests.map((r) => r.attempt)).toEqual([2]);
    // Control: without the copy, cara's continue is refused.
    expect(await codeOf(s.agent.invoke(null, config("ir-3", "cara")))).toBe("thread_awaiting_approval");
    await replay(s.auditLog, "ir-3", (await s.auditLog.read("ir-3")).find((e) => e.type === "tool.recovery_decided")!);
    await codeOf(s.agent.invoke(null, config("ir-3", "cara")));
    expect(counter.calls).toBe(2);
  });
});

/** The prebuilt agent with a non-idempotent refund that acts then fails `fail(n)` times. */
function prebuiltFailing(fail: (n: number) => boolean, opts: { ledger?: MemoryEffectLedger } = {}) {
  const counter = { calls: 0, effects: [] as string[] };
  const s = refundSetup([[refund("c1", 60, "1043")]], {
    agent: { recoveryRoles: ["supervisor"], ...(opts.ledger ? { ledger: opts.ledger } : {}) },
    tools: (t) => [t.lookupOrder, tool(async (args: { orderId: string; amount: number }) => acting(counter, fail)(++counter.calls, args) as string, { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) })],
  });
  return { ...s, counter };
}

describe("recovery node (prebuilt createGovernedAgent)", () => {
  // Was a hole, now closed (high): nodes/tool-recovery.ts + acceptedBefore (langgraph/interrupts.ts), as in the
  // in-step test: the copy of sam's sealed retry of attempt 1, after attempt 2's request, makes
  // cara's byte-identical payload (everything in it is on the request she can read) act as sam's
  // retry of attempt 2: `resent` is skipped for a replayed answer, and the refund runs a third
  // time, unrecorded. A payload with `attempt` is refused (next test), but `attempt` is optional
  // and README/examples answer without it.
  it("sam's sealed retry of attempt 1, copied after attempt 2's request, does not let cara's resend run the refund a third time", async () => {
    const s = prebuiltFailing((n) => n <= 2);
    const first = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("pr-1")));
    expect(first?.requests.map((r) => [r.toolCallId, r.attempt])).toEqual([["c1", 1]]);
    const p1 = { decisions: [decide(first!, "c1", "retry")] };
    const second = pendingRecovery(await s.agent.invoke(resume(p1), config("pr-1", "sam")));
    expect(second?.requests.map((r) => [r.toolCallId, r.attempt])).toEqual([["c1", 2]]);
    expect(s.counter.calls).toBe(2);
    // Control: without the copy, cara's resend is refused.
    expect(await codeOf(s.agent.invoke(resume(p1), config("pr-1", "cara")))).toMatch(/^approval_/);
    const sams = (await s.auditLog.read("pr-1")).find((e) => e.type === "tool.recovery_decided")!;
    expect(sams.data).toMatchObject({ resolverId: "sam", decision: "retry", attempt: 1 });
    await replay(s.auditLog, "pr-1", sams);
    const code = await codeOf(s.agent.invoke(resume(p1), config("pr-1", "cara")));
    expect(code).toBe("approval_self_approval");
    expect(s.counter.calls).toBe(2);
  });

  it("held: sam's retry named its attempt (attempt: 1): the copy does not let cara's resend run it again", async () => {
    const s = prebuiltFailing((n) => n <= 2);
    const first = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("pr-2")));
    const p1 = { decisions: [decide(first!, "c1", "retry", { attempt: 1 })] };
    expect(pendingRecovery(await s.agent.invoke(resume(p1), config("pr-2", "sam")))?.requests[0]?.attempt).toBe(2);
    const sams = (await s.auditLog.read("pr-2")).find((e) => e.type === "tool.recovery_decided")!;
    await replay(s.auditLog, "pr-2", sams);
    expect(await codeOf(s.agent.invoke(resume(p1), config("pr-2", "cara")))).toMatch(/^approval_(already_answered|self_approval)$/);
    expect(s.counter.calls).toBe(2);
  });

  it("held: sam's sealed retry copied to another thread (same call id, same refund) does not let cara retry there", async () => {
    const s = prebuiltFailing(() => true);
    const a = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("pr-3a")));
    await s.agent.invoke(resume({ decisions: [decide(a!, "c1", "retry")] }), config("pr-3a", "sam"));
    const b = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("pr-3b")));
    expect(b?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const calls = s.counter.calls;
    const sams = (await s.auditLog.read("pr-3a")).find((e) => e.type === "tool.recovery_decided")!;
    await replay(s.auditLog, "pr-3a", sams, "pr-3b");
    // Her payload with thread b's digest, and sam's exact payload (thread a's digest).
    expect(await codeOf(s.agent.invoke(resume({ decisions: [decide(b!, "c1", "retry")] }), config("pr-3b", "cara")))).toMatch(/^approval_/);
    expect(await codeOf(s.agent.invoke(resume({ decisions: [decide(a!, "c1", "retry")] }), config("pr-3b", "cara")))).toMatch(/^approval_/);
    expect(s.counter.calls).toBe(calls);
  });
});

const T0 = Date.parse("2026-03-10T09:00:00.000Z");
const reg = IdentityRegistry.fromObject({ ...identities, users: [...identities.users, { id: "sid", roles: ["supervisor"] }] });
const refundsBy = (name: string, rule: Record<string, unknown>) =>
  definePolicy({ name, rules: [{ id: "lookup", tools: ["lookup_order"], effect: "allow" }, { id: "refund", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"], ...rule }] as never });

describe("approvals (prebuilt createGovernedAgent)", () => {
  // Was a hole, now closed (medium): guards/policy-gate.ts decidePending → acceptedBefore: a copy of sam's sealed
  // `approval.decided` from BEFORE the lapse (the request was re-asked with approvals reset,
  // onExpired: "rerequest") appended after the renewed `approval.requested` is taken as an answer
  // accepted for the renewed request. cara's byte-identical payload is then `replayed` as sam's:
  // the self-approval rule is skipped, the lapse check is skipped (`!replayed`), nothing is
  // audited, and sam counts again toward the quorum: sue alone then pays the $740 refund. (Same
  // for an approval an edit discarded, when the call is edited back to the same digest.) Fix:
  // bind answerSeal to the request answered (seq/hash of its `approval.requested`, or its
  // expiresAt) and accept only a decided event for the newest request.
  it("quorum 2 + expiry (onExpired: rerequest): sam's lapsed approval, copied after the new request, is not revived by cara's resend (sue alone does not complete the quorum)", async () => {
    const c = { now: T0 };
    const s = refundSetup([[refund("c1", 740)]], { policy: refundsBy("q2-exp", { quorum: 2, expiresIn: 60_000 }), clock: () => new Date(c.now), onExpired: "rerequest", agent: { identities: reg } });
    const asked = pendingApproval(await s.agent.invoke(ask(), config("ap-1")));
    expect(asked?.requests[0]).toMatchObject({ toolCallId: "c1", quorum: 2 });
    const samsAnswer = { decisions: [decide(asked!, "c1", "approve")] };
    c.now = T0 + 10_000;
    const again = pendingApproval(await s.agent.invoke(resume(samsAnswer), config("ap-1", "sam")));
    expect(again?.requests[0]?.approvedBy).toEqual(["sam"]);
    c.now = T0 + 120_000;
    // sue answers after the lapse: the request is asked again, sam's approval no longer counts.
    expect(await codeOf(s.agent.invoke(resume(samsAnswer), config("ap-1", "sue")))).toBe("approval_expired");
    const renewed = pendingApproval(await s.agent.getState(config("ap-1")));
    expect(renewed?.requests[0]?.approvedBy).toEqual([]);
    expect(renewed?.requests[0]?.digest).toBe(asked!.requests[0]!.digest);
    const sams = (await s.auditLog.read("ap-1")).find((e) => e.type === "approval.decided" && e.data.approverId === "sam")!;
    expect(typeof sams.data.answerSeal).toBe("string");
    await replay(s.auditLog, "ap-1", sams);
    const code = await codeOf(s.agent.invoke(resume(samsAnswer), config("ap-1", "cara")));
    expect(code).toBe("approval_self_approval");
    const after = pendingApproval(await s.agent.getState(config("ap-1")));
    // sue approves once (her answer names her, so it is not taken for sam's copy).
    await codeOf(s.agent.invoke(resume({ approver: { id: "sue" }, ...samsAnswer }), config("ap-1", "sue")));
    // Safe: sam did not approve the renewed request; sue's one approval does not pay the refund.
    expect(s.refunds()).toEqual([]);
    expect(after?.requests[0]?.approvedBy ?? []).not.toContain("sam");
  });

  it("held: quorum 2, sam approved and the call is asked again: sam's sealed approval copied after the new request, cara's resend counts no second approver", async () => {
    const s = refundSetup([[refund("c1", 740)]], { policy: refundsBy("q2", { quorum: 2 }), agent: { identities: reg } });
    const asked = pendingApproval(await s.agent.invoke(ask(), config("ap-2")));
    const samsAnswer = { decisions: [decide(asked!, "c1", "approve")] };
    expect(pendingApproval(await s.agent.invoke(resume(samsAnswer), config("ap-2", "sam")))?.requests[0]?.approvedBy).toEqual(["sam"]);
    const sams = (await s.auditLog.read("ap-2")).find((e) => e.type === "approval.decided")!;
    await replay(s.auditLog, "ap-2", sams);
    const code = await codeOf(s.agent.invoke(resume(samsAnswer), config("ap-2", "cara")));
    expect(code).toBe("approval_self_approval");
    expect(s.refunds()).toEqual([]);
    expect(pendingApproval(await s.agent.getState(config("ap-2")))?.requests[0]?.approvedBy).toEqual(["sam"]);
  });

  it("held: the same refund proposed again in a later turn (new call id, same digest): turn 1's sealed approval copied after turn 2's request does not approve it", async () => {
    const s = refundSetup([[refund("c1", 740)], [refund("c2", 740)]]);
    const asked = pendingApproval(await s.agent.invoke(ask(), config("ap-3")));
    const samsAnswer = { decisions: [decide(asked!, "c1", "approve")] };
    // The model proposes the same refund again right after the first ran (its next turn).
    const later = pendingApproval(await s.agent.invoke(resume(samsAnswer), config("ap-3", "sam")));
    expect(s.refunds()).toHaveLength(1);
    expect(later?.requests.map((r) => r.toolCallId)).toEqual(["c2"]);
    expect(later!.requests[0]!.digest).toBe(asked!.requests[0]!.digest);
    const sams = (await s.auditLog.read("ap-3")).find((e) => e.type === "approval.decided")!;
    await replay(s.auditLog, "ap-3", sams);
    expect(await codeOf(s.agent.invoke(resume(samsAnswer), config("ap-3", "cara")))).toMatch(/^approval_/);
    expect(await codeOf(s.agent.invoke(resume({ decisions: [decide(later!, "c2", "approve")] }), config("ap-3", "cara")))).toBe("approval_self_approval");
    expect(s.refunds()).toHaveLength(1);
  });

  it("held: two calls of one message under quorum 2: sam's sealed approval of c1 alone, copied, does not make cara's resend count as sam's", async () => {
    const s = refundSetup([[refund("c1", 740), refund("c2", 300, "1043")]], { policy: refundsBy("q2b", { quorum: 2 }), agent: { identities: reg } });
    const asked = pendingApproval(await s.agent.invoke(ask(), config("ap-4")));
    expect(asked?.requests.map((r) => r.toolCallId)).toEqual(["c1", "c2"]);
    const samsAnswer = { decisions: [decide(asked!, "c1", "approve"), decide(asked!, "c2", "approve")] };
    await s.agent.invoke(resume(samsAnswer), config("ap-4", "sam"));
    const c1 = (await s.auditLog.read("ap-4")).find((e) => e.type === "approval.decided" && e.data.toolCallId === "c1")!;
    await replay(s.auditLog, "ap-4", c1);
    expect(await codeOf(s.agent.invoke(resume(samsAnswer), config("ap-4", "cara")))).toBe("approval_self_approval");
    expect(s.refunds()).toEqual([]);
  });
});

describe("continueThread / unfinishedThreads (graphs/app.ts) with a replayed sealed answer", () => {
  // Was a hole, now closed (high): graphs/app.ts inspect → recordedAnswers (graphs/resume-guard.ts) counts sam's
  // sealed retry of attempt 1, copied after attempt 2's request, as the answer to the request the
  // thread waits on; recordedStoredAnswer matches it against the step's stored resume value (sam's
  // own, still held by the in-step recovery step), so `eart pending` lists the thread as "answered
  // by sam" and continueThread (or an operator's crash-recovery loop) re-runs it as sam: the refund
  // runs a third time. Fix: as above; recordedAnswers should take only an answer sealed for the
  // request now waiting.
  it("in-step recovery: sam's copied retry does not list the thread as answered by sam, and continueThread does not run the refund a third time", async () => {
    const counter = { calls: 0, effects: [] as string[] };
    const s = setup(acting(counter, (n) => n <= 2), { counter });
    const first = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("ct-1")));
    const digest = first!.requests[0]!.digest;
    expect(pendingRecovery(await s.agent.invoke(resume(decision(digest, "retry")), config("ct-1", "sam")))?.requests[0]?.attempt).toBe(2);
    const app = defineApp({ auditLog: s.auditLog, graphs: { "support-agent": s.agent } });
    // Control: before the copy, the thread waits for a human (not listed as answered).
    expect((await unfinishedThreads(app)).filter((u) => u.threadId === "ct-1" && u.answeredBy)).toEqual([]);
    const sams = (await s.auditLog.read("ct-1")).find((e) => e.type === "tool.recovery_decided")!;
    await replay(s.auditLog, "ct-1", sams);
    const listed = (await unfinishedThreads(app)).filter((u) => u.threadId === "ct-1");
    const code = await codeOf(continueThread(app, "ct-1"));
    // Not listed as answered, so there is nothing to continue.
    expect(code).toBe("thread_not_paused");
    expect(counter.calls).toBe(2);
    expect(listed.filter((u) => u.answeredBy === "sam")).toEqual([]);
  });
});

/** A ledger whose finish fails while armed: the process died after the tool acted, before its outcome was recorded. */
class DiesBeforeFinish extends MemoryEffectLedger {
  armed = false;
  override async finish(key: LedgerKey, outcome: Parameters<MemoryEffectLedger["finish"]>[1], now?: Date): Promise<boolean> {
    if (this.armed) throw new Error("the process died before the outcome was recorded");
    return super.finish(key, outcome, now);
  }
}

describe("attempt events (tool.interrupted / tool.cancelled) replayed", () => {
  it("held: a tool that really paused at attempt 1, then acted at attempt 2 and the process died: the sealed tool.interrupted copied to the end does not let a continue run it again without a human", async () => {
    const ledger = new DiesBeforeFinish();
    const counter = { calls: 0 };
    const s = refundSetup([[refund("c1", 60, "1043")]], {
      agent: { ledger, recoveryRoles: ["supervisor"] },
      tools: (t) => [
        t.lookupOrder,
        tool(
          async ({ orderId }: { orderId: string; amount: number }) => {
            const account = interrupt({ question: "Which account should the refund go to?" });
            counter.calls += 1;
            return `refunded ${orderId} to ${String(account)}`;
          },
          { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) },
        ),
      ],
    });
    await s.agent.invoke(ask("Refund order 1043, $60."), config("ti-1"));
    const paused = (await s.auditLog.read("ti-1")).filter((e) => e.type === "tool.interrupted");
    expect(paused.map((e) => [e.data.attempt, typeof e.data.eventSeal])).toEqual([[1, "string"]]);
    expect(counter.calls).toBe(0);
    ledger.armed = true;
    const died = await codeOf(s.agent.invoke(resume("card on file"), config("ti-1", "cara")));
    expect(counter.calls).toBe(1);
    expect(died).not.toBe("no error");
    ledger.armed = false;
    await replay(s.auditLog, "ti-1", paused[0]!);
    const cancelled = (await s.auditLog.read("ti-1")).filter((e) => e.type === "tool.cancelled");
    for (const e of cancelled) await replay(s.auditLog, "ti-1", e);
    const code = await codeOf(s.agent.invoke(null, config("ti-1", "cara")));
    // The continue pauses again, for a human (outcome unknown), rather than failing.
    expect(code).toBe("no error");
    expect(counter.calls).toBe(1);
    expect((await s.auditLog.read("ti-1")).filter((e) => e.type === "tool.recovery_requested").map((e) => e.data.reason)).toContain("outcome_unknown");
  });
});

describe("requestSeal replayed (middleware/governance.ts askedInStep)", () => {
  /** In-step recovery asked about attempt 2 after sam's retry of attempt 1; attempt 1's sealed request copied to the end. */
  async function staleRequest(threadId: string) {
    const counter = { calls: 0, effects: [] as string[] };
    const s = setup(acting(counter, (n) => n <= 2), { counter });
    const first = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config(threadId)));
    const digest = first!.requests[0]!.digest;
    expect(pendingRecovery(await s.agent.invoke(resume(decision(digest, "retry")), config(threadId, "sam")))?.requests[0]?.attempt).toBe(2);
    const events = await s.auditLog.read(threadId);
    const asked1 = events.find((e) => e.type === "tool.recovery_requested" && e.data.attempt === 1)!;
    expect(typeof asked1.data.requestSeal).toBe("string");
    await replay(s.auditLog, threadId, asked1);
    return { s, counter, digest, events };
  }

  it("held: with sam's sealed retry copied after the stale request too, cara's resend runs nothing (the record's attempt 1 does not match the ledger's attempt 2)", async () => {
    const { s, counter, digest, events } = await staleRequest("rq-1");
    await replay(s.auditLog, "rq-1", events.find((e) => e.type === "tool.recovery_decided")!);
    await codeOf(s.agent.invoke(resume(decision(digest, "retry")), config("rq-1", "cara")));
    expect(counter.calls).toBe(2);
  });

  // Was a hole, now closed (low, liveness): middleware/governance.ts askedInStep takes the NEWEST sealed
  // `tool.recovery_requested` of the call (findLast), whatever its attempt; the requestSeal binds
  // the attempt but not the event's position. A copy of attempt 1's request appended after attempt
  // 2's makes the resumed step rebuild the request as attempt 1, so sue's correct answer to the
  // request she is shown (attempt: 2) is refused as approval_already_answered (audited as sam
  // "answered already"). Nothing runs (the ledger's attempt 2 matches no resolution); an answer
  // without `attempt` goes round once more. Fix: read back only the request whose attempt is the
  // ledger entry's current attempt (or the one the stored interrupt shows), or seal a sequence
  // (the chain index / previous hash) into requestSeal and take the genuine newest.
  it("sue's abandon of attempt 2 (the request she is shown) settles it after attempt 1's request is copied to the end", async () => {
    const { s, counter, digest } = await staleRequest("rq-2");
    const code = await codeOf(s.agent.invoke(resume(decision(digest, "abandon", { attempt: 2 })), config("rq-2", "sue")));
    expect(counter.calls).toBe(2);
    expect(code).toBe("no error");
    expect(pendingRecovery(await graphState(s, "rq-2"))).toBeUndefined();
  });
});
const graphState = (s: { agent: { graph: unknown } }, threadId: string) => (s.agent.graph as { getState: (c: unknown) => Promise<never> }).getState(config(threadId));

