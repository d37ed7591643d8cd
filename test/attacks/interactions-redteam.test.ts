/**
 * A red-team pass on FEATURE INTERACTIONS: two features that each assume the other handled
 * something. Through the public API (the prebuilt `createGovernedAgent`, and `governanceMiddleware`
 * + `guardAgent` under `createAgent`), as the customer (cara), a buggy client that resends an old
 * answer, a model that echoes what it read (a redaction mark), and a payment gateway that pays and
 * then fails.
 *
 * Attacked:
 * - escalation × approval / allowed siblings (prebuilt, with a reviewer): a message proposing a
 *   call policy escalates beside one that needs a supervisor, or beside an allowed lookup;
 * - budgets × approval timing: a per-user budget that asks finance (or denies) past $1,000, and two
 *   $740 refunds each waiting for a supervisor on its own thread, approved one after the other;
 * - budgets × recovery: a refund that paid and then threw, abandoned or marked done by a
 *   supervisor, with the budget in a store and in thread state; an approver's edit raising the
 *   amount, paid, thrown, then retried under a deny budget;
 * - redaction × approvals: two calls whose arguments differ only in a card number (the model's raw
 *   card, and the `[REDACTED:card_number]` mark it echoes from what it read);
 * - ledger idempotency × edits: sam's edit ran; the model re-proposes the call under the same id
 *   with its original arguments, then under a new id; a client resends sam's first answer;
 * - multi-call messages: a policy denial, an allowed call that pays and throws and a call waiting
 *   for approval in one message (prebuilt); a denial beside a call waiting for approval, and an
 *   allowed call that pays and throws beside one waiting for approval (middleware).
 *
 * Were holes, now closed (each a plain `it` with "Was a hole"):
 * 1. medium: an escalated call beside a call that needs approval (or beside an allowed call) did
 *    not stop the agent: once the sibling was approved and run, the model took another turn with
 *    the case open and its allowed calls ran (a $50 refund on the very order the case is about)
 *    before any reviewer answered; the reviewer was then shown the model's last answer, not the
 *    escalated call. Now routeAfterTools (guards/routes.ts) goes to the review.
 * 2. medium: a budget that asks finance was skipped when approvals completed: each $740 refund fit
 *    the $1,000 budget when decided (a pending approval reserves nothing), and when sam approved,
 *    reserveApproved (guards/policy-gate.ts) enforced only budgets that deny: $1,480 was paid on
 *    supervisor approvals alone, finance never asked. Now the call waits for finance.
 * 3. medium-low: with budgets in thread state (no store), a refund that paid and threw and that a
 *    supervisor abandoned was never counted (governedTools charged only calls that `ran`): the next
 *    $90 fit a $100 per-thread cap, $180 paid. Now an abandoned attempt that may have acted is charged.
 * 4. low: on governanceMiddleware, a denied call beside a call waiting for approval was answered
 *    twice once the approval was given: actOnAnswer (middleware/governance.ts) read whether the
 *    denial was answered from its own step's input, which does not hold the sibling step's answer
 *    written in the same superstep. Now eart's answer carries the call's own id (answerOf).
 * HELD (plain it): a finance budget asked when decided holds; a deny budget holds across threads
 *    at approval; a store keeps an abandoned attempt's reservation and charges a marked-done call
 *    once; a retry after an edit is checked at the edited amount; calls sharing a digest through a
 *    redaction mark are still decided one by one, and no raw card reaches the tool, state or audit;
 *    an edited call that ran is never run again, its id cannot be reused and a resent old answer
 *    approves nothing; in a message mixing a denial, an allowed call that fails and an approval
 *    (prebuilt), and an allowed call that fails beside an approval (middleware), each call is
 *    answered once, the failure is recovered by a supervisor only and pays once.
 */
import { AIMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import {
  defineBudgets,
  definePolicy,
  eartErrorOf,
  MemoryBudgetStore,
  pendingApproval,
  pendingEscalation,
  pendingRecovery,
  type BudgetRuleInput,
} from "eart";
import { scriptedModel } from "eart/testing";
import { decide, held } from "../support/decisions.js";
import { ask, config, refund, refundSetup, type Call } from "../support/refund.js";
import { paysThenThrows, recoveryOn, refundWith } from "../support/gateways.js";
import { middlewareRefundSetup } from "../support/middleware-agent.js";

// ── fixtures ────────────────────────────────────────────────────────────────────────────────────

/** eart's error code of a refused run, "no error", or the message of an error that is not eart's. */
const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: unknown) => eartErrorOf(e)?.code ?? `not eart's: ${String((e as Error)?.message ?? e).slice(0, 300)}`);
const resume = (value: unknown) => new Command({ resume: value });
/** A resume (or a continue) as the given human: the run's principal. */
const as = (threadId: string, userId: string) => ({ configurable: { thread_id: threadId, user_id: userId } });
const bare = (threadId: string) => ({ configurable: { thread_id: threadId } });

/** How many tool messages answer each call id. */
const answerCounts = (messages: BaseMessage[]) =>
  messages.reduce<Record<string, number>>((n, m) => (ToolMessage.isInstance(m) ? { ...n, [m.tool_call_id]: (n[m.tool_call_id] ?? 0) + 1 } : n), {});

const DAY = new Date("2025-03-10T12:00:00.000Z");
const clock = () => DAY;
const perUser = (max: number, onExceed: "deny" | "require_approval", extra: Partial<BudgetRuleInput> = {}): BudgetRuleInput => ({
  id: "refunds.user",
  tools: ["issue_refund"],
  scope: "user",
  window: "day",
  maxSum: { arg: "amount", max },
  onExceed,
  ...(onExceed === "require_approval" ? { approverRoles: ["finance"] } : {}),
  ...extra,
});
const sumKey = "refunds.user|user|cara|2025-03-10|sum";
const spent = async (store: MemoryBudgetStore) => (await store.get([sumKey]))[sumKey];

/** Refunds of order 1043 over $50 go to a reviewer; otherwise the refund policy's tiers. */
const escalating = definePolicy({
  name: "escalating-1043",
  rules: [
    { id: "lookup", tools: ["lookup_order"], effect: "allow" },
    {
      id: "refund.review",
      tools: ["issue_refund"],
      when: (r) => r.tool.args.orderId === "1043" && Number(r.tool.args.amount) > 50,
      effect: "escalate",
      reason: "Refunds over $50 on order 1043 go to a reviewer",
    },
    { id: "refund.small", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) <= 100, effect: "allow" },
    { id: "refund.supervisor", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) > 100 && Number(r.tool.args.amount) <= 5000, effect: "require_approval", approverRoles: ["supervisor"] },
  ],
});

/** A model that proposes `turns[i]` on its i-th turn (counting its own messages), then says "done". */
function turns(list: Call[][]) {
  return scriptedModel((messages: BaseMessage[]) => {
    const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
    const calls = list[turn];
    return calls ? new AIMessage({ content: "", tool_calls: calls }) : new AIMessage("done");
  });
}

// ── escalation × approval ───────────────────────────────────────────────────────────────────────

describe("an escalated call beside calls that go on (prebuilt agent with a reviewer)", () => {
  // Was a hole (medium): guards/routes.ts routeAfterPolicyGate routes a message to "approval" /
  // "tools" before it looks at an escalated call ("end" → review only when nothing else is
  // runnable), and routeAfterTools always went back to "agent". So once sam approved the $740
  // sibling, the model took another turn with the case open and an allowed $50 refund on order
  // 1043 (the order the case is about: the escalated $60 split under the threshold) ran before any
  // reviewer answered; the case the reviewer was finally shown was the model's last answer ("done",
  // no tool calls), not the escalated call. Now routeAfterTools goes to the end (the review) when a
  // call of the message was escalated, once the calls beside it have run.
  it("after the approved sibling runs, the model takes no turn and nothing more runs before a reviewer answers the escalated call", async () => {
    const model = turns([[refund("big", 740), refund("esc", 60, "1043")], [refund("split", 50, "1043")]]);
    const s = refundSetup([], { policy: escalating, agent: { model, escalation: { reviewerRoles: ["supervisor"] } } });
    const request = pendingApproval(await s.agent.invoke(ask("Refund $740 on 1042 and $60 on 1043."), config("esc-appr")));
    // Setup: one call waits for a supervisor, the other is escalated and its case is open.
    expect(request?.requests.map((r) => r.toolCallId)).toEqual(["big"]);
    const before = await held(s.agent, "esc-appr");
    expect(before.statuses).toEqual({ big: "pending_approval", esc: "escalated" });
    expect(before.escalation).toMatchObject({ toolCallIds: ["esc"] });
    const calls = model.calls.length;
    const out = await s.agent.invoke(resume({ decisions: [decide(request!, "big", "approve")] }), as("esc-appr", "sam"));
    expect(s.refunds().map((r) => r.toolCallId)).toContain("big");
    // The safe outcome: the run stops at the case; the reviewer sees the escalated call.
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["big"]);
    expect(model.calls.length).toBe(calls);
    expect(pendingEscalation(out)?.proposed.toolCalls.map((c) => c.id)).toContain("esc");
  });

  // Was a hole (medium): the same routing (routeAfterPolicyGate prefers "tools" to "end";
  // routeAfterTools went to "agent"): an allowed lookup beside the escalated refund ran, and the
  // model was called again while the case was open; its next proposal (an allowed $50 refund on
  // order 1043) ran. Alone, an escalated call ends the run without calling the model again
  // (test/graphs/tool-path.test.ts); now beside an allowed call too.
  it("an allowed lookup beside the escalated refund: the model is not called again before the reviewer answers", async () => {
    const model = turns([[{ id: "look", name: "lookup_order", args: { orderId: "1043" } }, refund("esc", 60, "1043")], [refund("split", 50, "1043")]]);
    const s = refundSetup([], { policy: escalating, agent: { model, escalation: { reviewerRoles: ["supervisor"] } } });
    const out = await s.agent.invoke(ask("Look up 1043 and refund $60."), config("esc-look"));
    const after = await held(s.agent, "esc-look");
    // Setup: policy escalated the refund and opened a case; the lookup was allowed.
    expect(after.statuses).toMatchObject({ look: "executed", esc: "escalated" });
    expect((await s.auditLog.read("esc-look")).filter((e) => e.type === "escalation.requested").map((e) => e.data.toolCallIds)).toContainEqual(["esc"]);
    // The safe outcome: one model call, no refund, the case shows the escalated call.
    expect(s.refunds()).toEqual([]);
    expect(model.calls).toHaveLength(1);
    expect(pendingEscalation(out)?.proposed.toolCalls.map((c) => c.id)).toContain("esc");
  });
});

// ── budgets × approval ──────────────────────────────────────────────────────────────────────────

describe("budgets when approvals complete", () => {
  it("control: a $740 refund proposed after another $740 ran waits for finance too; sam alone runs nothing", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(1000, "require_approval")], { store, clock });
    const a = refundSetup([[refund("a1", 740)]], { budgets });
    const first = pendingApproval(await a.agent.invoke(ask(), config("fin-seq-a")))!;
    await a.agent.invoke(resume({ decisions: [decide(first, "a1", "approve")] }), as("fin-seq-a", "sam"));
    expect(a.refunds().map((r) => r.amount)).toEqual([740]);
    const b = refundSetup([[refund("b1", 740)]], { budgets });
    const second = pendingApproval(await b.agent.invoke(ask(), config("fin-seq-b")))!;
    expect(second.requests[0]).toMatchObject({ toolCallId: "b1" });
    expect(second.requests[0]!.approverRoles).toEqual(expect.arrayContaining(["supervisor", "finance"]));
    await b.agent.invoke(resume({ decisions: [decide(second, "b1", "approve")] }), as("fin-seq-b", "sam"));
    expect(b.refunds()).toEqual([]);
    expect((await held(b.agent, "fin-seq-b")).statuses).toEqual({ b1: "pending_approval" });
  });

  // Was a hole (medium): a pending approval reserves nothing (guards/policy-gate.ts withinBudget:
  // only an allowed call is `reserve`d, one waiting is only `check`ed), so two $740 refunds decided
  // on two threads each fit the $1,000 budget that asks finance; when sam approved,
  // reserveApproved reserved with `{ only: "deny" }`, on the assumption that the approver approved
  // past the budgets that ask for approval. Nobody asked finance: $1,480 was paid on supervisor
  // approvals alone. The control above shows the same second refund waiting for finance when it
  // is decided after the first ran. Now a `require_approval` budget that no longer fits at
  // approval, and whose roles the recorded approvals do not cover, sends the call back to wait
  // for them, with sam's approval kept.
  it("two $740 refunds waiting on two threads: sam's approvals do not pay past the $1,000 finance budget", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(1000, "require_approval")], { store, clock });
    const a = refundSetup([[refund("a1", 740)]], { budgets });
    const b = refundSetup([[refund("b1", 740)]], { budgets });
    const ra = pendingApproval(await a.agent.invoke(ask(), config("fin-par-a")))!;
    const rb = pendingApproval(await b.agent.invoke(ask(), config("fin-par-b")))!;
    // Setup: both wait for a supervisor only (each fit the budget when decided).
    expect([ra.requests[0]!.approverRoles, rb.requests[0]!.approverRoles]).toEqual([["supervisor"], ["supervisor"]]);
    await a.agent.invoke(resume({ decisions: [decide(ra, "a1", "approve")] }), as("fin-par-a", "sam"));
    const again = pendingApproval(await b.agent.invoke(resume({ decisions: [decide(rb, "b1", "approve")] }), as("fin-par-b", "sam")));
    expect(a.refunds().map((r) => r.amount)).toEqual([740]);
    // The safe outcome: the second waits for finance, with sam's approval kept; at most $1,000 without finance.
    expect(b.refunds()).toEqual([]);
    expect(await spent(store)).toBeLessThanOrEqual(1000);
    expect(again?.requests[0]).toMatchObject({ toolCallId: "b1", approvedBy: ["sam"] });
    expect(again!.requests[0]!.approverRoles).toEqual(expect.arrayContaining(["supervisor", "finance"]));
    // Neither sam again nor cara meets the finance group; fay (finance) does, and the refund runs once.
    expect(await codeOf(b.agent.invoke(resume({ decisions: [decide(again!, "b1", "approve")] }), as("fin-par-b", "cara")))).toBe("approval_self_approval");
    await b.agent.invoke(resume({ decisions: [decide(again!, "b1", "approve")] }), as("fin-par-b", "fay"));
    expect(b.refunds().map((r) => r.amount)).toEqual([740]);
    expect(await spent(store)).toBe(1480);
  });

  it("a deny budget holds across threads at approval: the second approved $740 is denied and runs nothing", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(1000, "deny")], { store, clock });
    const a = refundSetup([[refund("a1", 740)]], { budgets });
    const b = refundSetup([[refund("b1", 740)]], { budgets });
    const ra = pendingApproval(await a.agent.invoke(ask(), config("deny-par-a")))!;
    const rb = pendingApproval(await b.agent.invoke(ask(), config("deny-par-b")))!;
    expect([ra.requests[0]!.toolCallId, rb.requests[0]!.toolCallId]).toEqual(["a1", "b1"]);
    await a.agent.invoke(resume({ decisions: [decide(ra, "a1", "approve")] }), as("deny-par-a", "sam"));
    await b.agent.invoke(resume({ decisions: [decide(rb, "b1", "approve")] }), as("deny-par-b", "sam"));
    expect(a.refunds().map((r) => r.amount)).toEqual([740]);
    expect(b.refunds()).toEqual([]);
    expect((await held(b.agent, "deny-par-b")).statuses).toEqual({ b1: "denied" });
    expect(await spent(store)).toBe(740);
  });
});

// ── budgets × recovery ──────────────────────────────────────────────────────────────────────────

describe("budgets when a supervisor settles a refund that paid and threw", () => {
  it("with a store: an abandon keeps the attempt's reservation, and a mark_done charges it once, not twice", async () => {
    for (const answer of ["abandon", "mark_done"] as const) {
      const store = new MemoryBudgetStore();
      const budgets = defineBudgets([perUser(100, "deny")], { store, clock });
      const s = refundWith(paysThenThrows, [[refund("c1", 90, "1043")]], { budgets });
      await s.agent.invoke(ask(), config(`settle-${answer}`));
      const request = await recoveryOn(s.agent, `settle-${answer}`);
      // Setup: the gateway paid $90, then threw; the call waits for a supervisor.
      expect(s.refunds().map((r) => r.amount)).toEqual([90]);
      await s.agent.invoke(resume({ decisions: [decide(request, "c1", answer, answer === "mark_done" ? { result: "refunded" } : {})] }), as(`settle-${answer}`, "sam"));
      expect((await held(s.agent, `settle-${answer}`)).statuses).toEqual({ c1: answer === "abandon" ? "failed" : "executed" });
      expect(await spent(store)).toBe(90);
      // Cara's next $20 on another thread does not fit; $10 does.
      const next = refundSetup([[refund("n1", 20, "1043")], [refund("n2", 10, "1043")]], { budgets });
      await next.agent.invoke(ask("Refund $20, or $10."), config(`settle-${answer}-next`));
      expect((await held(next.agent, `settle-${answer}-next`)).statuses).toEqual({ n1: "denied", n2: "executed" });
      expect(await spent(store)).toBe(100);
    }
  });

  // Was a hole (medium-low): nodes/governed-tool-node.ts governedTools charged only calls whose
  // outcome `ran` (an abandon is recorded `failed`, never run), and without a budget store the
  // thread's `budget` channel holds only what was charged; the attempt that paid and threw had no
  // reservation to keep (with a store it stays: the test above). So after sam abandoned it, cara's
  // next $90 on the same thread fit the $100 per-thread cap: $180 paid. Now an abandoned attempt
  // that may have acted is charged as one that ran (a retry was counted already: `earlierAttempt`).
  it("in thread state: a refund that paid and threw, then abandoned, still counts: cara's next $90 does not fit the $100 cap", async () => {
    const budgets = defineBudgets([{ id: "refunds.thread", tools: ["issue_refund"], scope: "thread", window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "deny" }], { clock });
    const s = refundWith(paysThenThrows, [[refund("c1", 90, "1043")], [], [refund("c2", 90, "1043")]], { budgets });
    await s.agent.invoke(ask(), config("thread-abandon"));
    const request = await recoveryOn(s.agent, "thread-abandon");
    expect(s.refunds().map((r) => r.amount)).toEqual([90]);
    await s.agent.invoke(resume({ decisions: [decide(request, "c1", "abandon", { message: "gateway error" })] }), as("thread-abandon", "sam"));
    expect((await held(s.agent, "thread-abandon")).statuses).toEqual({ c1: "failed" });
    await s.agent.invoke(ask("Then refund another $90 on 1043."), config("thread-abandon"));
    // Setup: the model proposed the second refund.
    expect(Object.keys((await held(s.agent, "thread-abandon")).statuses)).toEqual(["c1", "c2"]);
    // The safe outcome: the second refund is denied; $90 paid in all.
    expect((await held(s.agent, "thread-abandon")).statuses.c2).toBe("denied");
    expect(s.refunds().map((r) => r.amount)).toEqual([90]);
  });

  it("a supervisor's edit raising $740 to $1,100 that paid and threw: the retry is checked at $1,100 against the $2,000 deny budget and does not run", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(2000, "deny")], { store, clock });
    const s = refundWith(paysThenThrows, [[refund("c1", 740)]], { budgets });
    const request = pendingApproval(await s.agent.invoke(ask(), config("edit-retry")))!;
    await s.agent.invoke(resume({ decisions: [decide(request, "c1", "edit", { args: { orderId: "1042", amount: 1100 } })] }), as("edit-retry", "sam"));
    const recovery = await recoveryOn(s.agent, "edit-retry");
    // Setup: the edited $1,100 paid, threw, and is reserved; the recovery shows the edited call.
    expect(s.refunds().map((r) => r.amount)).toEqual([1100]);
    expect(recovery.requests[0]!.args).toEqual({ orderId: "1042", amount: 1100 });
    expect(await spent(store)).toBe(1100);
    await s.agent.invoke(resume({ decisions: [decide(recovery, "c1", "retry")] }), as("edit-retry", "sue"));
    // Counted at the edited amount ($2,200 > $2,000), not the proposed $740 ($1,840 would fit).
    expect(s.refunds().map((r) => r.amount)).toEqual([1100]);
    const again = await recoveryOn(s.agent, "edit-retry");
    expect(again.requests[0]!.error).toMatch(/exceed the budget/);
    expect(await spent(store)).toBe(1100);
  });
});

// ── redaction × approvals ───────────────────────────────────────────────────────────────────────

describe("calls that redaction makes alike", () => {
  it("a raw card and the echoed [REDACTED:card_number] mark share a digest, yet each call is decided on its own; no raw card reaches the tool, the thread or the audit log", async () => {
    const seen: Record<string, unknown>[] = [];
    const s = refundWith(
      async (args, cfg, real) => {
        seen.push(args);
        return real.invoke(args, cfg as never);
      },
      [
        [
          { id: "raw", name: "issue_refund", args: { orderId: "1042", amount: 740, reason: "refund to card 4111 1111 1111 1111" } },
          { id: "echo", name: "issue_refund", args: { orderId: "1042", amount: 740, reason: "refund to card [REDACTED:card_number]" } },
        ],
      ],
    );
    const request = pendingApproval(await s.agent.invoke(ask(), config("marks")))!;
    const [raw, echo] = request.requests;
    // Setup: both wait; the model's raw card was redacted before the gate, so the two are alike.
    expect([raw!.toolCallId, echo!.toolCallId]).toEqual(["raw", "echo"]);
    expect(raw!.args).toEqual(echo!.args);
    expect(raw!.digest).toBe(echo!.digest);
    // sam approves the echoed call and rejects the other: the digest alone decides nothing.
    await s.agent.invoke(resume({ decisions: [decide(request, "raw", "reject", { message: "duplicate" }), decide(request, "echo", "approve")] }), as("marks", "sam"));
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["echo"]);
    expect((await held(s.agent, "marks")).statuses).toEqual({ raw: "rejected", echo: "executed" });
    expect(seen).toEqual([{ orderId: "1042", amount: 740, reason: "refund to card [REDACTED:card_number]" }]);
    const everything = JSON.stringify([(await s.agent.getState(bare("marks"))).values, await s.auditLog.read("marks")]);
    expect(everything).not.toMatch(/4111[ -]?1111/);
  });
});

// ── ledger idempotency × edits ──────────────────────────────────────────────────────────────────

describe("an edited call, its id and its original arguments", () => {
  it("sam's edit runs once at $500; c1 re-proposed with the original $740 is refused; a new id waits for approval again; sam's first answer resent approves nothing", async () => {
    const s = refundSetup([[refund("c1", 740)], [refund("c1", 740)], [refund("c2", 740)]]);
    const request = pendingApproval(await s.agent.invoke(ask(), config("edit-reuse")))!;
    const original = request.requests[0]!.digest;
    const out = await s.agent.invoke(resume({ decisions: [decide(request, "c1", "edit", { args: { orderId: "1042", amount: 500 } })] }), as("edit-reuse", "sam"));
    // Setup: the edit ran; the model re-proposed c1 (same id, original args), then c2 (original args).
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 500, toolCallId: "c1" }]);
    const next = pendingApproval(out);
    expect(next?.requests.map((r) => r.toolCallId)).toEqual(["c2"]);
    const st = await held(s.agent, "edit-reuse");
    expect(st.statuses).toEqual({ c1: "denied", c2: "pending_approval" });
    expect(st.messages.filter((m) => ToolMessage.isInstance(m) && m.tool_call_id === "c1").map((m) => String(m.content))).toEqual([
      expect.stringContaining("refunded"),
      expect.stringMatching(/already used/),
    ]);
    // c2 is the original refund again (same thread, same arguments: same digest).
    expect(next!.requests[0]!.digest).toBe(original);
    // A client resending sam's first answer: it names c1, which waits for nothing.
    const resent = { decisions: [{ toolCallId: "c1", type: "approve", digest: original }] };
    expect(await codeOf(s.agent.invoke(resume(resent), as("edit-reuse", "sam")))).not.toBe("no error");
    expect(await codeOf(s.agent.invoke(resume({ decisions: [decide(next!, "c2", "approve")] }), as("edit-reuse", "cara")))).toBe("approval_self_approval");
    expect(s.refunds()).toHaveLength(1);
    expect((await held(s.agent, "edit-reuse")).statuses.c2).toBe("pending_approval");
  });
});

// ── multi-call messages ─────────────────────────────────────────────────────────────────────────

describe("the prebuilt agent: one message mixing a denial, an allowed call that fails and an approval", () => {
  it("each call is answered once, the approved one runs once, the failure is recovered by a supervisor only and pays once", async () => {
    let n = 0;
    const s = refundWith(
      async (args, cfg, real) => {
        const paid = await real.invoke(args, cfg as never);
        if (args.orderId === "1043" && ++n === 1) throw new Error("gateway 502 after the transfer");
        return paid;
      },
      [[refund("no", 60, "2002"), refund("ok", 60, "1043"), refund("big", 740)]],
    );
    const request = pendingApproval(await s.agent.invoke(ask(), config("pb-mix")))!;
    // Setup: omar's order denied, the $60 allowed (it waits with its message), the $740 waits.
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["big"]);
    expect((await held(s.agent, "pb-mix")).statuses).toEqual({ no: "denied", ok: "allowed", big: "pending_approval" });
    const out = await s.agent.invoke(resume({ decisions: [decide(request, "big", "approve")] }), as("pb-mix", "sam"));
    const recovery = pendingRecovery(out);
    expect(recovery?.requests.map((r) => r.toolCallId)).toEqual(["ok"]);
    expect(s.refunds().map((r) => r.toolCallId).sort()).toEqual(["big", "ok"]);
    const retry = { decisions: [decide(recovery!, "ok", "retry")] };
    expect(await codeOf(s.agent.invoke(resume(retry), as("pb-mix", "cara")))).toBe("approval_self_approval");
    expect(await codeOf(s.agent.invoke(resume(retry), as("pb-mix", "omar")))).not.toBe("no error");
    await s.agent.invoke(resume(retry), as("pb-mix", "sam"));
    const after = await held(s.agent, "pb-mix");
    expect(after.statuses).toEqual({ no: "denied", ok: "executed", big: "executed" });
    expect(answerCounts(after.messages)).toEqual({ no: 1, ok: 1, big: 1 });
    expect(n).toBe(2);
    expect(s.refunds().map((r) => r.toolCallId).sort()).toEqual(["big", "ok"]);
  });
});

describe("governanceMiddleware: one message mixing a denial, an approval and a failure", () => {
  // Was a hole (low): createAgent runs each call in its own task of one superstep: the denied
  // call's step answers it (its sealed record's answer), the approval's step pauses. On resume only
  // the paused step runs again, and middleware/governance.ts actOnAnswer answers "calls answered
  // without running … whose own steps did not answer them yet" by `answeredAfter(state.messages)`,
  // reading the step's input, which does not hold the sibling's answer written in the same
  // superstep. The thread answered the denied call twice: the model read two tool results for one
  // call (a provider checking call/result pairs may refuse the thread). Now eart's answer to a call
  // has the call's own id (langgraph/records.ts answerOf): the second write replaces the first.
  it("a call policy denies beside one waiting for approval: after the approval each call is answered once", async () => {
    const s = middlewareRefundSetup([[refund("no", 60, "2002"), refund("big", 740)]]);
    const request = pendingApproval(await s.agent.invoke(ask(), config("mw-deny")));
    // Setup: omar's order is denied, the $740 waits.
    expect(request?.requests.map((r) => r.toolCallId)).toEqual(["big"]);
    expect((await held(s.agent, "mw-deny")).statuses).toEqual({ no: "denied", big: "pending_approval" });
    await s.agent.invoke(resume({ decisions: [decide(request!, "big", "approve")] }), as("mw-deny", "sam"));
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["big"]);
    expect(answerCounts((await held(s.agent, "mw-deny")).messages)).toEqual({ no: 1, big: 1 });
  });

  it("an allowed refund that pays and throws beside one waiting for approval: answered once each, recovered only by a supervisor, paid once", async () => {
    let n = 0;
    const s = middlewareRefundSetup([[refund("ok", 60, "1043"), refund("big", 740)]], {
      governance: { recoveryRoles: ["supervisor"] },
      wrapRefund: (real) => async (args, cfg) => {
        const paid = await real(args, cfg);
        if (args.orderId === "1043" && ++n === 1) throw new Error("gateway 502 after the transfer");
        return paid;
      },
    });
    const request = pendingApproval(await s.agent.invoke(ask(), config("mw-fail")))!;
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["big"]);
    expect(s.refunds()).toEqual([]);
    const out = await s.agent.invoke(resume({ decisions: [decide(request, "big", "approve")] }), as("mw-fail", "sam"));
    const recovery = pendingRecovery(out);
    // Setup: the approved refund ran; the allowed one paid, threw, and waits for a supervisor.
    expect(recovery?.requests.map((r) => r.toolCallId)).toEqual(["ok"]);
    expect(s.refunds().map((r) => r.toolCallId).sort()).toEqual(["big", "ok"]);
    const retry = { decisions: [decide(recovery!, "ok", "retry")] };
    expect(await codeOf(s.agent.invoke(resume(retry), as("mw-fail", "cara")))).toBe("approval_self_approval");
    expect(await codeOf(s.agent.invoke(resume(retry), as("mw-fail", "fay")))).not.toBe("no error");
    expect(n).toBe(1);
    await s.agent.invoke(resume(retry), as("mw-fail", "sue"));
    const after = await held(s.agent, "mw-fail");
    expect(after.statuses).toEqual({ ok: "executed", big: "executed" });
    expect(answerCounts(after.messages)).toEqual({ ok: 1, big: 1 });
    // The retry reached the gateway under the same idempotency key: no second payout row.
    expect(n).toBe(2);
    expect(s.refunds().map((r) => r.toolCallId).sort()).toEqual(["big", "ok"]);
  });
});
