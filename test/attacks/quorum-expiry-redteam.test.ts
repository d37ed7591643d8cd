/**
 * A red-team pass on MULTI-APPROVER QUORUMS, APPROVAL EXPIRY and ALLOWED DECISIONS, through the
 * public API (the prebuilt `createGovernedAgent` and `governanceMiddleware` under `createAgent`),
 * as an untrusted caller of the thread API: a colleague with the approver role who wants to push a
 * refund through alone, the customer, a buggy client that retries, an approver whose screen is
 * stale, and an operator who redeploys the registry or the policy under open threads.
 *
 * Attacked, quorums (`quorum` on a typed rule): an approval given by a supervisor who was demoted,
 * or removed from the registry, before the quorum completed; a budget that also asks for approval
 * (finance) beside a two-supervisor rule; one supervisor approving and then editing the call with
 * the same arguments; an edit by a second supervisor after the first approved (does the first
 * approval still count for the edited call?); a reject by one approver followed by approves from
 * others (HITL positional answers on the middleware); a partial quorum across a redeploy whose
 * policy asks other roles; a quorum call proposed beside a call policy denies (middleware).
 * Attacked, expiry (`expiresIn`, the injected `clock`): an answer at exactly `expiresAt` and 1 ms
 * before it; one message with an expiring and a non-expiring call answered after the first lapsed
 * (both agents), and the late answer retried; a lapsed request continued with `invoke(null)` by
 * the approver and by the customer; a clock set back after a lapse was recorded; `expiresIn` of 0,
 * negative, fractional, NaN, Infinity and Number.MAX_SAFE_INTEGER.
 * Attacked, allowed decisions (`allowedDecisions`): a reject where the rule offers only approve
 * and edit, keyed, positional and as a signed token; a positional answer that edits a call the
 * rule forbids editing beside an edit of a call it lets be edited (middleware); an edit answered
 * after a redeploy whose policy forbids edits; `respond` naming the allowed sibling of a waiting
 * call, to answer in place of a call that should run.
 * Not repeated here (covered elsewhere): the same approver twice, a token and a session of one
 * approver, twin token encodings, a requester or agent in a quorum (policy-identity-redteam,
 * approval-tokens, tokens-escalation-redteam); ids differing in case, width or whitespace (refused
 * at registry load, and unknown at lookup: policy-identity-redteam); keyed and positional edits and
 * respond where a rule forbids them on the prebuilt agent (graphs/hitl-answers); HITL answers with
 * too few or too many decisions on the middleware (middleware/hitl-port).
 *
 * Held (plain `it`): approvals lapse at `expiresAt` itself; a late answer decides nothing for any
 * call of its request, a lapsed call is never revived (retry, continue, a clock set back); a first
 * approval never counts for the call an edit made; one human is one approver whatever the answer
 * kind; a reject is final; a redeploy's new roles discard approvals by holders of the old ones;
 * invalid `expiresIn` values are refused when the policy is defined; a decision kind a rule leaves
 * out is refused in every form, and a refused answer applies nothing of itself; `respond` cannot
 * name a call that does not wait.
 *
 * Found by this pass, and closed (each test failed before its fix; "Was a leak" above it):
 * 1. an approval by a supervisor demoted (or removed) since keeps counting toward the quorum when
 *    the policy version did not change: one supervisor and a second who came later complete it;
 * 2. a budget that asks finance beside a two-supervisor rule lets one supervisor and one finance
 *    approver complete the quorum: the exceeded budget makes the policy's own check weaker;
 * 3. governanceMiddleware strands an approved call whose sibling the thread already answered (a
 *    policy denial, a lapse): the approval is recorded, the call never runs nor is answered;
 * 4. an edit answered after a redeploy to a policy that forbids edits is accepted and runs;
 * 5. an `expiresIn` whose expiry is past the last Date (e.g. Number.MAX_SAFE_INTEGER) is accepted
 *    by definePolicy and makes every matching call throw a plain RangeError.
 * Now: approvals count only by holders of policy's roles in the registry in force (a budget's
 * approver meets the budget's group, not policy's quorum); the middleware runs what an answer
 * completing the request lets run in the step that took it; the kinds of answer the policy in
 * force allows decide after a redeploy; an expiry is at most a year (`MAX_APPROVAL_EXPIRY_MS`).
 */
import { generateKeyPairSync } from "node:crypto";
import { Command, MemorySaver } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import {
  defineBudgets,
  definePolicy,
  eartErrorOf,
  IdentityRegistry,
  MemoryAuditLog,
  MemoryBudgetStore,
  pendingApproval,
  signApprovalToken,
  toolCallDigest,
  type ApprovalRequest,
  type AuditLog,
  type PolicyRule,
} from "eart";
import identities from "../../examples/refund/identities.json" with { type: "json" };
import { decide } from "../support/decisions.js";
import { answersTo, ask, config, refund, refundSetup, type Call } from "../support/refund.js";
import { middlewareRefundSetup } from "../support/middleware-agent.js";

// ── fixtures ────────────────────────────────────────────────────────────────────────────────────

/** A resume (or a continue) as the given human: the run's principal. */
const as = (threadId: string, userId: string) => ({ configurable: { thread_id: threadId, user_id: userId } });
const bare = (threadId: string) => ({ configurable: { thread_id: threadId } });
/** eart's error code of a refused run, "no error", or the message of an error that is not eart's. */
const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: unknown) => eartErrorOf(e)?.code ?? `not eart's: ${String((e as Error)?.message ?? e).slice(0, 300)}`);
const resume = (value: unknown) => new Command({ resume: value });
const approveAll = (request: Pick<ApprovalRequest, "requests">) => resume({ decisions: request.requests.map((r) => decide(request, r.toolCallId, "approve")) });
const positional = (...types: ("approve" | "reject")[]) => resume({ decisions: types.map((type) => ({ type })) });

/** The example's identities with changes: extra users, users whose roles are replaced, users removed. */
function registryWith(change: { add?: { id: string; roles: string[] }[]; replace?: Record<string, string[]>; remove?: string[] }) {
  const users = identities.users.filter((u) => !(change.remove ?? []).includes(u.id)).map((u) => (change.replace?.[u.id] ? { ...u, roles: change.replace[u.id]! } : u));
  return IdentityRegistry.fromObject({ ...identities, users: [...users, ...(change.add ?? [])] });
}
/** Three supervisors (sam, sue, sid) and two finance approvers (fay, fin). */
const staff = { add: [{ id: "sid", roles: ["supervisor"] }, { id: "fin", roles: ["finance"] }] };

/** A refund policy: lookups allowed, refunds as `refundRules` say. */
const refundsBy = (name: string, ...refundRules: Omit<PolicyRule, "tools">[]) =>
  definePolicy({ name, rules: [{ id: "lookup", tools: ["lookup_order"], effect: "allow" }, ...refundRules.map((r) => ({ ...r, tools: ["issue_refund"] }))] as PolicyRule[] });
const twoSupervisors = refundsBy("two-supervisors", { id: "refund.two", effect: "require_approval", approverRoles: ["supervisor"], quorum: 2 });
const oneMinute = refundsBy("one-minute", { id: "refund.minute", effect: "require_approval", approverRoles: ["supervisor"], expiresIn: 60_000 });

const T0 = Date.parse("2026-03-10T09:00:00.000Z");
/** A clock the test moves (approvals expire by it). */
function testClock(at = T0) {
  const c = { now: at };
  return { c, clock: () => new Date(c.now) };
}

type Readable = { getState(c: object): Promise<{ values: unknown; tasks: readonly { interrupts: readonly { value?: unknown }[] }[] }> };
/** eart's decision records of a thread, in either agent (the prebuilt `decisions` channel, the middleware's `_eart`). */
async function recordsOf(agent: Readable, threadId: string) {
  const values = (await agent.getState(bare(threadId))).values as { decisions?: { toolCallId: string; status: string }[]; _eart?: { decisions?: { toolCallId: string; status: string }[] } };
  return Object.fromEntries((values._eart?.decisions ?? values.decisions ?? []).map((d) => [d.toolCallId, d.status]));
}
/** What a thread holds and what its interrupts ask. */
async function stored(agent: Readable, threadId: string) {
  const s = await agent.getState(bare(threadId));
  return JSON.stringify({ values: s.values, asks: s.tasks.flatMap((t) => t.interrupts.map((i) => i.value)) });
}
const REFUSALS = new Set(["approval.refused"]);
async function snapshot(s: { agent: Readable; auditLog: AuditLog }, threadId: string) {
  return { state: await stored(s.agent, threadId), events: (await s.auditLog.read(threadId)).length };
}
/** The thread holds what it held, the audit log gained only refusals, and its chain verifies. */
async function expectUnchanged(s: { agent: Readable; auditLog: AuditLog }, threadId: string, before: { state: string; events: number }) {
  expect(await stored(s.agent, threadId)).toBe(before.state);
  const events = await s.auditLog.read(threadId);
  expect(events.slice(before.events).map((e) => e.type).filter((t) => !REFUSALS.has(t))).toEqual([]);
  expect((await s.auditLog.verify(threadId)).ok).toBe(true);
}
const eventsOf = async (log: AuditLog, threadId: string, type: string) => (await log.read(threadId)).filter((e) => e.type === type).map((e) => e.data as Record<string, unknown>);

// ── quorums ─────────────────────────────────────────────────────────────────────────────────────

describe("quorum: who counts toward it, and how often", () => {
  // Was a leak (medium), now closed. A supervisor's approval kept counting toward a quorum after the supervisor
  // lost the role (a redeploy with a new registry, same policy): sam approves (1 of 2), is demoted
  // to customer, and sue's approval alone completes the two-supervisor quorum: the $740 refund runs
  // with one supervisor who holds the role. Only a policy *version* change re-checks earlier
  // approvals (`approvalsThatCount` in `reevaluateApproved`); a registry change does not.
  // Fix: guards/policy-gate.ts `resolve` (approve branch) / `withApproval`: count only
  // `approvalsThatCount(record.approvals, verdict, registry)` on the same-version path too (and show
  // those in `approvedBy`).
  it("an approval by a supervisor demoted since (same policy, new registry) no longer counts: sue alone does not complete a quorum of two", async () => {
    const checkpointer = new MemorySaver();
    const auditLog = new MemoryAuditLog();
    const before = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, policy: twoSupervisors, agent: { identities: registryWith(staff) } });
    const request = pendingApproval(await before.agent.invoke(ask(), config("q-demoted")))!;
    await before.agent.invoke(approveAll(request), as("q-demoted", "sam"));
    expect(pendingApproval(await before.agent.getState(bare("q-demoted")))?.requests[0]?.approvedBy).toEqual(["sam"]);
    // Redeployed: sam is a customer now; the policy (and its version) is the same.
    const after = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, policy: twoSupervisors, agent: { identities: registryWith({ ...staff, replace: { sam: ["customer"] } }) } });
    const asked = pendingApproval(await after.agent.getState(bare("q-demoted")))!;
    await after.agent.invoke(approveAll(asked), as("q-demoted", "sue"));
    expect(after.refunds()).toEqual([]);
    expect(await recordsOf(after.agent, "q-demoted")).toEqual({ c1: "pending_approval" });
    // A second supervisor who holds the role now completes it, once.
    await after.agent.invoke(approveAll(pendingApproval(await after.agent.getState(bare("q-demoted")))!), as("q-demoted", "sid"));
    expect(after.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
  });

  // Was a leak (medium), now closed. The same hole for an approver removed from the registry altogether (left the
  // company): the departed sam's approval and sue's make the quorum of two.
  // Fix: as above (guards/policy-gate.ts `withApproval` counts only approvers who still hold a role).
  it("an approval by a supervisor removed from the registry since no longer counts toward the quorum", async () => {
    const checkpointer = new MemorySaver();
    const auditLog = new MemoryAuditLog();
    const before = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, policy: twoSupervisors, agent: { identities: registryWith(staff) } });
    const request = pendingApproval(await before.agent.invoke(ask(), config("q-removed")))!;
    await before.agent.invoke(approveAll(request), as("q-removed", "sam"));
    const after = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, policy: twoSupervisors, agent: { identities: registryWith({ ...staff, remove: ["sam"] }) } });
    await after.agent.invoke(approveAll(pendingApproval(await after.agent.getState(bare("q-removed")))!), as("q-removed", "sue"));
    expect(after.refunds()).toEqual([]);
    expect(await recordsOf(after.agent, "q-removed")).toEqual({ c1: "pending_approval" });
  });

  // Was a leak (medium), now closed. A rule asks two supervisors; a per-user budget, once exceeded, also asks finance
  // (`approverGroups: [["supervisor"], ["finance"]]`, quorum 2). The quorum counts distinct
  // approvers of any group, so sam (supervisor) and fay (finance) complete it: the call that is
  // over budget, and should get more scrutiny, runs with ONE supervisor where the same call under
  // budget needs two. A colleague pushing a refund through needs only someone from finance.
  // Fix: guards/policy-gate.ts `withApproval`: count the quorum over approvers who hold the
  // policy's own roles (`verdict.approverGroups?.[0] ?? verdict.approverRoles`), besides every group met.
  it("a budget asking finance beside a two-supervisor rule still needs two supervisors: sam and fay do not complete it", async () => {
    const budgets = defineBudgets(
      [{ id: "refunds.user", tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 500 }, onExceed: "require_approval", approverRoles: ["finance"] }],
      { store: new MemoryBudgetStore() },
    );
    const s = refundSetup([[refund("c1", 740)]], { policy: twoSupervisors, budgets, agent: { identities: registryWith(staff) } });
    const request = pendingApproval(await s.agent.invoke(ask(), config("q-groups")))!;
    expect(request.requests[0]).toMatchObject({ quorum: 2, approverGroups: [["supervisor"], ["finance"]] });
    await s.agent.invoke(approveAll(request), as("q-groups", "sam"));
    await s.agent.invoke(approveAll(pendingApproval(await s.agent.getState(bare("q-groups")))!), as("q-groups", "fay"));
    expect(s.refunds()).toEqual([]);
    // A second supervisor completes it.
    await s.agent.invoke(approveAll(pendingApproval(await s.agent.getState(bare("q-groups")))!), as("q-groups", "sue"));
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
  });

  it("one supervisor who approves, then edits with the same arguments, then approves the edited call is still one approver", async () => {
    const s = refundSetup([[refund("c1", 740)]], { policy: twoSupervisors });
    const request = pendingApproval(await s.agent.invoke(ask(), config("q-approve-edit")))!;
    await s.agent.invoke(approveAll(request), as("q-approve-edit", "sam"));
    const same = resume({ decisions: [decide(request, "c1", "edit", { args: { orderId: "1042", amount: 740 } })] });
    await s.agent.invoke(same, as("q-approve-edit", "sam"));
    const edited = pendingApproval(await s.agent.getState(bare("q-approve-edit")))!;
    expect(edited.requests[0]).toMatchObject({ approvedBy: ["sam"], quorum: 2 });
    await s.agent.invoke(approveAll(edited), as("q-approve-edit", "sam"));
    expect(pendingApproval(await s.agent.getState(bare("q-approve-edit")))?.requests[0]?.approvedBy).toEqual(["sam"]);
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(approveAll(edited), as("q-approve-edit", "sue"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect((await eventsOf(s.auditLog, "q-approve-edit", "approval.decided")).map((d) => [d.approverId, d.decision, d.status])).toEqual([
      ["sam", "approve", "pending_approval"],
      ["sam", "edit", "pending_approval"],
      ["sam", "approve", "pending_approval"],
      ["sue", "approve", "approved"],
    ]);
  });

  it("an edit by a second supervisor after the first approved starts a new list: the first approval does not count for the edited call", async () => {
    const s = refundSetup([[refund("c1", 740)]], { policy: twoSupervisors });
    const request = pendingApproval(await s.agent.invoke(ask(), config("q-edit-after")))!;
    await s.agent.invoke(approveAll(request), as("q-edit-after", "sam"));
    // If sam's approval of $740 still counted, sue's edit (her approval of $4,900) would complete the quorum.
    await s.agent.invoke(resume({ decisions: [decide(request, "c1", "edit", { args: { orderId: "1042", amount: 4900 } })] }), as("q-edit-after", "sue"));
    expect(s.refunds()).toEqual([]);
    const edited = pendingApproval(await s.agent.getState(bare("q-edit-after")))!;
    expect(edited.requests[0]).toMatchObject({ args: { orderId: "1042", amount: 4900 }, approvedBy: ["sue"], originalDigest: request.requests[0]!.digest });
    const before = await snapshot(s, "q-edit-after");
    // sam's stale answer (his client retries it, keyed to the $740 digest) is refused.
    expect(await codeOf(s.agent.invoke(approveAll(request), as("q-edit-after", "sam")))).toBe("approval_digest_mismatch");
    await expectUnchanged(s, "q-edit-after", before);
    // sam approving the edited call, keyed with its digest, is a second approver of what runs.
    await s.agent.invoke(approveAll(edited), as("q-edit-after", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 4900, toolCallId: "c1" }]);
  });

  it("middleware, HITL answers: a reject by one supervisor is final; a third supervisor's later approve runs nothing", async () => {
    const s = middlewareRefundSetup([[refund("c1", 740)]], { policy: twoSupervisors, governance: { identities: registryWith(staff) } });
    await s.agent.invoke(ask() as never, config("q-veto") as never);
    await s.agent.invoke(positional("approve") as never, as("q-veto", "sam") as never);
    expect(await recordsOf(s.agent as unknown as Readable, "q-veto")).toEqual({ c1: "pending_approval" });
    await s.agent.invoke(positional("reject") as never, as("q-veto", "sue") as never);
    expect(await recordsOf(s.agent as unknown as Readable, "q-veto")).toEqual({ c1: "rejected" });
    expect(await codeOf(s.agent.invoke(positional("approve") as never, as("q-veto", "sid") as never))).toBe("thread_not_paused");
    expect(s.refunds()).toEqual([]);
    const values = (await (s.agent as unknown as Readable).getState(bare("q-veto"))).values as { messages: Parameters<typeof answersTo>[0] };
    expect(answersTo(values.messages, "c1").map((m) => m.content)).toEqual(["Rejected by sue."]);
    expect((await eventsOf(s.auditLog, "q-veto", "approval.decided")).map((d) => [d.approverId, d.decision])).toEqual([
      ["sam", "approve"],
      ["sue", "reject"],
    ]);
    expect((await s.auditLog.verify("q-veto")).ok).toBe(true);
  });

  it("a partial quorum across a redeploy that asks finance: the supervisor's approval no longer counts; two finance approvers run it once", async () => {
    const checkpointer = new MemorySaver();
    const auditLog = new MemoryAuditLog();
    const reg = registryWith(staff);
    const v1 = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, policy: twoSupervisors, agent: { identities: reg } });
    const request = pendingApproval(await v1.agent.invoke(ask(), config("q-redeploy")))!;
    await v1.agent.invoke(approveAll(request), as("q-redeploy", "sam"));
    const twoFinance = refundsBy("two-finance", { id: "refund.finance", effect: "require_approval", approverRoles: ["finance"], quorum: 2 });
    const v2 = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, policy: twoFinance, agent: { identities: reg } });
    // sue (a supervisor) answers the request she was shown: decided again, she may not give it.
    await v2.agent.invoke(approveAll(pendingApproval(await v2.agent.getState(bare("q-redeploy")))!), as("q-redeploy", "sue"));
    let asked = pendingApproval(await v2.agent.getState(bare("q-redeploy")))!;
    expect(asked.requests[0]).toMatchObject({ approverRoles: ["finance"], quorum: 2, approvedBy: [] });
    await v2.agent.invoke(approveAll(asked), as("q-redeploy", "fay"));
    asked = pendingApproval(await v2.agent.getState(bare("q-redeploy")))!;
    expect(asked.requests[0]!.approvedBy).toEqual(["fay"]);
    expect(v2.refunds()).toEqual([]);
    await v2.agent.invoke(approveAll(asked), as("q-redeploy", "fin"));
    expect(v2.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    expect((await auditLog.verify("q-redeploy")).ok).toBe(true);
  });

  // Was a leak, now closed (low: nothing runs that was not approved, but an approval was lost without a word).
  // governanceMiddleware: a $740 refund needing two supervisors is proposed beside a $9,000 one
  // policy denies. The denial is answered in the first tool step; the quorum completes later in
  // the model step's pause, which records the approval and returns no message, so createAgent
  // (last message: the denial's ToolMessage) ends the run. The refund two supervisors approved
  // never runs, its call is never answered (a real model provider refuses the dangling call next
  // turn), and the audit log says "approved" with no tool event. The prebuilt agent runs it.
  // Fix: middleware/governance.ts `wrapModelCall` (pending branch): when the answer leaves nothing
  // waiting, run what it lets run and answer the rest (as `answerHere` does, `runCalls`), then go
  // to the model (`goto: MODEL_NODE`, as `recoverHere` does).
  it("middleware: a quorum completed after a sibling call was denied runs the approved refund once", async () => {
    const twoOrDeny = refundsBy(
      "two-or-deny",
      { id: "refund.two", when: (r) => Number(r.tool.args.amount) <= 5000, effect: "require_approval", approverRoles: ["supervisor"], quorum: 2 },
      { id: "refund.limit", when: (r) => !(Number(r.tool.args.amount) <= 5000), effect: "deny", reason: "Refunds over $5,000 are not allowed" },
    );
    const s = middlewareRefundSetup([[refund("c1", 740), refund("c2", 9000)]], { policy: twoOrDeny });
    const agent = s.agent as unknown as Readable;
    const request = pendingApproval(await s.agent.invoke(ask() as never, config("q-mw-denied") as never))!;
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    await s.agent.invoke(approveAll(request) as never, as("q-mw-denied", "sam") as never);
    await s.agent.invoke(approveAll(pendingApproval(await agent.getState(bare("q-mw-denied")))!) as never, as("q-mw-denied", "sue") as never);
    expect(await recordsOf(agent, "q-mw-denied")).toEqual({ c1: "executed", c2: "denied" });
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
  });
});

// ── expiry ──────────────────────────────────────────────────────────────────────────────────────

describe("expiry: a late answer decides nothing, and nothing revives a lapsed call", () => {
  it("an answer at exactly expiresAt is late (approval_expired, nothing runs); one 1 ms before it runs once", async () => {
    const late = testClock();
    const a = refundSetup([[refund("c1", 740)]], { policy: oneMinute, clock: late.clock });
    const request = pendingApproval(await a.agent.invoke(ask(), config("x-at")))!;
    expect(request.requests[0]!.expiresAt).toBe(new Date(T0 + 60_000).toISOString());
    late.c.now = T0 + 60_000;
    expect(await codeOf(a.agent.invoke(approveAll(request), as("x-at", "sam")))).toBe("approval_expired");
    expect(a.refunds()).toEqual([]);
    expect(await recordsOf(a.agent, "x-at")).toEqual({ c1: "expired" });
    expect((await eventsOf(a.auditLog, "x-at", "approval.expired")).map((d) => [d.toolCallId, d.approverId, d.outcome])).toEqual([["c1", "sam", "expired"]]);

    const inTime = testClock();
    const b = refundSetup([[refund("c1", 740)]], { policy: oneMinute, clock: inTime.clock });
    const asked = pendingApproval(await b.agent.invoke(ask(), config("x-before")))!;
    inTime.c.now = T0 + 59_999;
    await b.agent.invoke(approveAll(asked), as("x-before", "sam"));
    expect(b.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
  });

  const perCall = refundsBy(
    "per-call-expiry",
    { id: "refund.soon", when: (r) => Number(r.tool.args.amount) <= 1000, effect: "require_approval", approverRoles: ["supervisor"], expiresIn: 60_000 },
    { id: "refund.big", when: (r) => Number(r.tool.args.amount) > 1000, effect: "require_approval", approverRoles: ["supervisor"] },
  );
  const twoCalls: Call[][] = [[refund("c1", 740), refund("c2", 2000)]];

  it("one message, one expiring call and one not: a late answer runs neither; its retry is refused; c2 then runs once on its own answer, c1 never", async () => {
    const t = testClock();
    const s = refundSetup(twoCalls, { policy: perCall, clock: t.clock });
    const request = pendingApproval(await s.agent.invoke(ask(), config("x-per-call")))!;
    expect(request.requests.map((r) => [r.toolCallId, r.expiresAt ?? null])).toEqual([
      ["c1", new Date(T0 + 60_000).toISOString()],
      ["c2", null],
    ]);
    t.c.now = T0 + 120_000;
    expect(await codeOf(s.agent.invoke(approveAll(request), as("x-per-call", "sam")))).toBe("approval_expired");
    expect(s.refunds()).toEqual([]);
    expect(await recordsOf(s.agent, "x-per-call")).toEqual({ c1: "expired", c2: "pending_approval" });
    expect((await eventsOf(s.auditLog, "x-per-call", "approval.expired")).map((d) => d.toolCallId)).toEqual(["c1"]);
    const asked = pendingApproval(await s.agent.getState(bare("x-per-call")))!;
    expect(asked.requests.map((r) => r.toolCallId)).toEqual(["c2"]);
    // The buggy client retries the late answer (keyed, both calls; positional, two decisions).
    const before = await snapshot(s, "x-per-call");
    expect(await codeOf(s.agent.invoke(approveAll(request), as("x-per-call", "sam")))).toBe("approval_decisions_mismatch");
    expect(await codeOf(s.agent.invoke(positional("approve", "approve"), as("x-per-call", "sam")))).toBe("approval_decisions_mismatch");
    await expectUnchanged(s, "x-per-call", before);
    await s.agent.invoke(positional("approve"), as("x-per-call", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 2000, toolCallId: "c2" }]);
    expect(await recordsOf(s.agent, "x-per-call")).toEqual({ c1: "expired", c2: "executed" });
  });

  // Was a leak, now closed (low: nothing unapproved runs, but the supervisor's approval was swallowed). The same
  // message on governanceMiddleware: after c1 lapsed (its expiry answered to the model), sam's
  // approve of c2 is accepted without an error and recorded (`approval.decided`, "approved"), but
  // c2 never runs and is never answered: the run ends, the customer's thread goes on with a dangling
  // call. Same cause as the denied-sibling case above: the pause in the model step does not run
  // what its answer lets run.
  // Fix: middleware/governance.ts `wrapModelCall` (pending branch): run the calls the answer lets
  // run (`runCalls`, as `answerHere` does) and go to the model.
  it("middleware: after one call of the message lapsed, the other's approval runs it once (c1 never)", async () => {
    const t = testClock();
    const s = middlewareRefundSetup(twoCalls, { policy: perCall, governance: { clock: t.clock } });
    const agent = s.agent as unknown as Readable;
    const request = pendingApproval(await s.agent.invoke(ask() as never, config("x-mw-per-call") as never))!;
    t.c.now = T0 + 120_000;
    expect(await codeOf(s.agent.invoke(approveAll(request) as never, as("x-mw-per-call", "sam") as never))).toBe("approval_expired");
    expect(await recordsOf(agent, "x-mw-per-call")).toEqual({ c1: "expired", c2: "pending_approval" });
    await s.agent.invoke(positional("approve") as never, as("x-mw-per-call", "sam") as never);
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 2000, toolCallId: "c2" }]);
    expect(await recordsOf(agent, "x-mw-per-call")).toEqual({ c1: "expired", c2: "executed" });
  });

  it("a lapsed request continued with invoke(null), by the approver or by the customer, is refused typed; nothing runs and no lapse is recorded for them", async () => {
    const t = testClock();
    const s = refundSetup([[refund("c1", 740)]], { policy: oneMinute, clock: t.clock });
    await s.agent.invoke(ask(), config("x-null"));
    t.c.now = T0 + 10 * 60_000;
    const before = await snapshot(s, "x-null");
    for (const who of ["sam", "cara"]) {
      expect(await codeOf(s.agent.invoke(null, as("x-null", who)))).toBe("thread_awaiting_approval");
    }
    expect(await codeOf(s.agent.invoke(null, config("x-null")))).toBe("thread_awaiting_approval");
    expect(s.refunds()).toEqual([]);
    await expectUnchanged(s, "x-null", before);
    expect(await eventsOf(s.auditLog, "x-null", "approval.expired")).toEqual([]);
  });

  it("a clock set back after a lapse was recorded does not revive the call: a later approve runs nothing", async () => {
    const t = testClock();
    const s = refundSetup([[refund("c1", 740)]], { policy: oneMinute, clock: t.clock });
    const request = pendingApproval(await s.agent.invoke(ask(), config("x-back")))!;
    t.c.now = T0 + 120_000;
    expect(await codeOf(s.agent.invoke(approveAll(request), as("x-back", "sue")))).toBe("approval_expired");
    // NTP steps the clock back to 10 s after the request, well before its expiresAt.
    t.c.now = T0 + 10_000;
    expect(await codeOf(s.agent.invoke(approveAll(request), as("x-back", "sam")))).toBe("thread_not_paused");
    expect(s.refunds()).toEqual([]);
    expect(await recordsOf(s.agent, "x-back")).toEqual({ c1: "expired" });
    expect((await s.auditLog.verify("x-back")).ok).toBe(true);
  });

  it("expiresIn of 0, negative, fractional, NaN or Infinity is refused when the policy is defined, typed", () => {
    const codes = [0, -60_000, 1.5, Number.NaN, Number.POSITIVE_INFINITY].map((expiresIn) => {
      try {
        refundsBy("bad-expiry", { id: "refund.bad", effect: "require_approval", approverRoles: ["supervisor"], expiresIn });
        return "defined";
      } catch (error) {
        return eartErrorOf(error)?.code ?? `not eart's: ${String(error)}`;
      }
    });
    expect(codes).toEqual(["policy_invalid", "policy_invalid", "policy_invalid", "policy_invalid", "policy_invalid"]);
  });

  // Was a leak, now closed (low: a misconfiguration, and nothing runs). definePolicy accepts any positive safe
  // integer as expiresIn (Cedar's `@expires_in("99999999d")` too), but an expiry past the last
  // date a Date holds (8.64e15 ms after 1970) makes `new Date(...).toISOString()` throw: every
  // call the rule matches ends its run with a plain RangeError ("Invalid time value"), not a
  // typed eart error, and not at construction where the mistake is.
  // Fix: src/policy/engine.ts (the rule schema's `expiresIn`) and src/policy/cedar.ts
  // `parseExpiresIn`: refuse an expiry no Date can hold (cap it, e.g. at 100 years), as
  // `PolicyDefinitionError`; guards/policy-gate.ts `expiryOf` to fail closed with a typed error.
  it("an expiresIn past the last Date is refused when the policy is defined (or the call pauses with a valid expiry), never a plain RangeError", async () => {
    let policy;
    try {
      policy = refundsBy("huge-expiry", { id: "refund.forever", effect: "require_approval", approverRoles: ["supervisor"], expiresIn: Number.MAX_SAFE_INTEGER });
    } catch (error) {
      expect(eartErrorOf(error)?.code).toBe("policy_invalid");
      return;
    }
    const s = refundSetup([[refund("c1", 740)]], { policy });
    const outcome = await s.agent.invoke(ask(), config("x-huge")).then(
      (r) => (pendingApproval(r) ? "paused" : "not paused"),
      (e: unknown) => eartErrorOf(e)?.code ?? `not eart's: ${String((e as Error)?.message ?? e)}`,
    );
    expect(outcome).toBe("paused");
    expect(s.refunds()).toEqual([]);
  });
});

// ── allowed decisions ───────────────────────────────────────────────────────────────────────────

describe("allowedDecisions: a kind of answer a rule leaves out is refused in every form", () => {
  it("where only approve and edit are offered, a reject keyed, positional or as a signed token is refused; state unchanged; a token approve then runs once", async () => {
    const sam = generateKeyPairSync("ed25519");
    const noReject = refundsBy("no-reject", { id: "refund.must-decide", effect: "require_approval", approverRoles: ["supervisor"], allowedDecisions: ["approve", "edit"] });
    const s = refundSetup([[refund("c1", 740)]], { policy: noReject, agent: { approvalKeys: { "sam-k": { approver: "sam", publicKey: sam.publicKey } } } });
    const request = pendingApproval(await s.agent.invoke(ask(), config("d-no-reject")))!;
    expect(request.requests[0]!.allowedDecisions).toEqual(["approve", "edit"]);
    const token = (decision: "approve" | "reject") =>
      signApprovalToken({ kid: "sam-k", threadId: "d-no-reject", toolCallId: "c1", digest: request.requests[0]!.digest, approver: "sam", decision, expiresInMs: 60_000 }, sam.privateKey);
    const before = await snapshot(s, "d-no-reject");
    const refused = {
      keyed: await codeOf(s.agent.invoke(resume({ decisions: [decide(request, "c1", "reject", { message: "no" })] }), as("d-no-reject", "sam"))),
      positional: await codeOf(s.agent.invoke(positional("reject"), as("d-no-reject", "sam"))),
      token: await codeOf(s.agent.invoke(resume({ decisions: [decide(request, "c1", "reject", { token: token("reject") })] }), bare("d-no-reject"))),
      respond: await codeOf(s.agent.invoke(resume({ decisions: [decide(request, "c1", "respond", { message: "Refunded." })] }), as("d-no-reject", "sam"))),
    };
    expect(refused).toEqual({ keyed: "approval_resume_invalid", positional: "approval_resume_invalid", token: "approval_resume_invalid", respond: "approval_resume_invalid" });
    expect(s.refunds()).toEqual([]);
    await expectUnchanged(s, "d-no-reject", before);
    expect((await eventsOf(s.auditLog, "d-no-reject", "approval.refused")).map((d) => d.code)).toEqual(Array(4).fill("approval_resume_invalid"));
    await s.agent.invoke(resume({ decisions: [decide(request, "c1", "approve", { token: token("approve") })] }), bare("d-no-reject"));
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
  });

  it("middleware: a positional answer editing a call the rule forbids editing, beside an allowed edit, is refused whole: neither edit is applied", async () => {
    const mixed = refundsBy(
      "mixed-edits",
      { id: "refund.fixed", when: (r) => Number(r.tool.args.amount) > 1000, effect: "require_approval", approverRoles: ["supervisor"], allowedDecisions: ["approve", "reject"] },
      { id: "refund.open", when: (r) => Number(r.tool.args.amount) <= 1000, effect: "require_approval", approverRoles: ["supervisor"] },
    );
    const s = middlewareRefundSetup([[refund("c1", 740), refund("c2", 2000)]], { policy: mixed });
    const agent = s.agent as unknown as Readable;
    const paused = await s.agent.invoke(ask() as never, config("d-mw-mixed") as never);
    const value = (paused as unknown as { __interrupt__: { value: { reviewConfigs: unknown } }[] }).__interrupt__[0]!.value;
    expect(value.reviewConfigs).toEqual([
      { actionName: "issue_refund", allowedDecisions: ["approve", "edit", "reject"] },
      { actionName: "issue_refund", allowedDecisions: ["approve", "reject"] },
    ]);
    const before = await snapshot({ agent, auditLog: s.auditLog }, "d-mw-mixed");
    const edits = (c2: number) =>
      resume({
        decisions: [
          { type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 700 } } },
          { type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: c2 } } },
        ],
      });
    expect(await codeOf(s.agent.invoke(edits(4900) as never, as("d-mw-mixed", "sam") as never))).toBe("approval_edit_not_permitted");
    expect(s.refunds()).toEqual([]);
    await expectUnchanged({ agent, auditLog: s.auditLog }, "d-mw-mixed", before);
    await s.agent.invoke(positional("approve", "approve") as never, as("d-mw-mixed", "sam") as never);
    expect(s.refunds().map((r) => [r.toolCallId, r.amount]).sort()).toEqual([
      ["c1", 740],
      ["c2", 2000],
    ]);
  });

  // Was a leak, now closed (low). The policy is redeployed to forbid edits of refunds (`allowedDecisions: ["approve",
  // "reject"]`) while a request made under the old one waits. An edit answered after the redeploy is
  // checked against the allowed decisions of the request as it was asked (old policy), then the
  // edited call is decided by the new policy, which only asks whether sam may approve it: the
  // $740 refund is changed to $4,900 and runs, though the policy in force says nobody may change it.
  // Fix: guards/policy-gate.ts `resolve`: for a record whose `verdict.version` is not the policy's,
  // decide the call again first and refuse a decision kind the new verdict's `allowedDecisions` leave out.
  it("an edit answered after a redeploy that forbids edits is refused; nothing runs", async () => {
    const checkpointer = new MemorySaver();
    const auditLog = new MemoryAuditLog();
    const open = refundsBy("edits-open", { id: "refund.supervisor", effect: "require_approval", approverRoles: ["supervisor"] });
    const fixed = refundsBy("edits-forbidden", { id: "refund.supervisor", effect: "require_approval", approverRoles: ["supervisor"], allowedDecisions: ["approve", "reject"] });
    const v1 = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, policy: open });
    const request = pendingApproval(await v1.agent.invoke(ask(), config("d-redeploy")))!;
    expect(request.requests[0]!.allowedDecisions).toBeUndefined();
    const v2 = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, policy: fixed });
    const edit = resume({ decisions: [decide(request, "c1", "edit", { args: { orderId: "1042", amount: 4900 } })] });
    expect(await codeOf(v2.agent.invoke(edit, as("d-redeploy", "sam")))).toBe("approval_edit_not_permitted");
    expect(v2.refunds()).toEqual([]);
  });

  it("respond cannot answer in place of a call that should run: naming the allowed sibling is refused; the allowed call runs once, the responded one never", async () => {
    const s = refundSetup([[refund("c1", 60, "1042"), refund("c2", 740)]]);
    const request = pendingApproval(await s.agent.invoke(ask(), config("d-respond")))!;
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["c2"]);
    const before = await snapshot(s, "d-respond");
    // c1's own digest, as anyone can compute it (thread, tool, arguments).
    const c1 = { toolCallId: "c1", type: "respond", digest: toolCallDigest("issue_refund", { orderId: "1042", amount: 60 }, "d-respond"), message: "Refunded $60." };
    const smuggled = [
      // The allowed $60 answered as if refunded, beside an approve of the $740.
      [c1, decide(request, "c2", "approve")],
      // Only the allowed call, answered in its place.
      [c1],
    ];
    for (const decisions of smuggled) {
      expect(await codeOf(s.agent.invoke(resume({ decisions }), as("d-respond", "sam")))).toBe("approval_decisions_mismatch");
    }
    expect(s.refunds()).toEqual([]);
    await expectUnchanged(s, "d-respond", before);
    await s.agent.invoke(resume({ decisions: [decide(request, "c2", "respond", { message: "Store credit issued instead." })] }), as("d-respond", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 60, toolCallId: "c1" }]);
    expect(await recordsOf(s.agent, "d-respond")).toEqual({ c1: "executed", c2: "responded" });
  });
});
