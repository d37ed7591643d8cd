/**
 * Regression red-team pass on THE FIXES of the last red-team rounds (commits 355a6fc … 81cc760),
 * attacked through the public API as an untrusted caller of the thread API (the customer, a
 * supervisor who answers, a client that retries, a model steered by a document) and as an insider
 * who can write the stores but holds no key:
 * 1. state writes refused on a thread that waits for a human (graphs/resume-guard.ts
 *    `assertNotWaiting`, `waitsInRecords`): bulkUpdateState with several supersteps, a fork from a
 *    checkpoint before the pause, another namespace (the path's own, in a user's own graph),
 *    `__copy__` / `__input__` / `__end__`, a `withConfig` copy, the middleware agent; a thread whose
 *    records wait but whose interrupt never came (a run cut between the decision and the pause);
 *    and, the other way, threads left refusing input although nothing waits (after a reject, an
 *    edit, an expiry answered, a re-request, a redeploy that escalates);
 * 2. a human's retry re-reserved against deny budgets (nodes/governed-tool-node.ts `reserveRetry`):
 *    budgets counted in thread state (no store), a retry after a permission refusal, budgets that
 *    only ask for approval, a tool that pauses itself;
 * 3. budget keys naming the scope kind, legacy keys read (src/policy/budget.ts): hostile thread ids
 *    against another counter's key, a legacy counter's window;
 * 4. escalation answers bound to the case digest (src/human-tasks/escalation.ts `caseDigest`);
 * 5. replay verifying chains (src/policy/replay.ts) against an insider who deletes a thread;
 * 6. quorums counted against the registry in force (guards/policy-gate.ts `withApproval`);
 * 7. resilience: a tool that pauses itself (both agents), arguments cloned per try, a tool raising
 *    LangGraph's own ParentCommand.
 *
 * Found by this pass, and closed (each a plain test with "Was a hole" above it):
 * - MEDIUM: budgets counted in the thread's state (no store): the attempt that paid and threw is
 *   counted nowhere, so the supervisor's retry "fits" and pays again past the deny cap;
 * - MEDIUM: replay over a store where an insider deleted a whole thread reports no change: the
 *   thread is missing from `listThreads`, and replay never reads the global log that still names it;
 * - LOW (over-reach of the retry fix): a retry after a `ToolPermissionError` (nothing acted) is
 *   charged as if the refused attempt had paid: an honest refund near the cap can never be retried;
 * - LOW (over-reach of the quorum fix): a policy engine's own `approverGroups` with a quorum (one
 *   finance officer and one supervisor) can never be approved: only holders of the first group
 *   count toward the quorum;
 * - LOW: two cases of one thread opened at the same clock reading share a digest: the reviewer's
 *   retried answer to the first decides the second;
 * - LOW (pre-existing, not introduced by the fix): a tool raising LangGraph's `ParentCommand`
 *   still passes as graph control flow: the run ends as finished with the call's outcome recorded
 *   nowhere and nobody asked.
 * Closed: the retry's check counts the earlier attempt, and the thread's own counters are charged
 * for it; a retry after a permission refusal is not charged again; replay reads the threads the
 * global log names; control flow other than an interrupt from a tool hands the call to a human;
 * each case has its own id, in its digest; a quorum is made up by holders of the verdict's roles
 * (policy's own, `quorumRoles`, where a budget added its approvers' group).
 *
 * Held (plain it): every state-write route on a waiting thread is refused with the request intact
 * and still answerable; a run cut before the pause is continued by its customer; nothing of the
 * honest flows strands a thread; require-approval budgets and a self-pausing tool are charged once
 * per attempt; hostile thread ids and legacy counters never reach another counter or another
 * window; a stale case answer is refused with a moving clock; replay names a deleted thread it is
 * asked about; a quorum without groups is met by any two approvers; a self-pausing tool pauses and
 * resumes on both agents; args a model can send clone.
 */
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { Command, END, interrupt, MemorySaver, MessagesAnnotation, Annotation, ParentCommand, START, StateGraph } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  caseDigest,
  defineBudgets,
  definePolicy,
  eartErrorOf,
  MemoryAuditLog,
  MemoryBudgetStore,
  MemoryEffectLedger,
  pendingApproval,
  pendingEscalation,
  pendingRecovery,
  replay,
  ToolPermissionError,
  verifyAuditStore,
  type AgentIdentity,
  type BudgetRuleInput,
  type BudgetStore,
  type DecisionRecord,
  type PolicyDecision,
  type PolicyEngine,
  type PolicyRequest,
} from "eart";
import { createGovernedToolPath, guardResumes, routeAfterGovernedTools, routeToGovernedTools } from "eart/graphs";
import { createIdentityBinding, createModelNode, GovernedChannels } from "eart/nodes";
import { SqliteAuditLog } from "eart/sqlite";
import { scriptedModel } from "eart/testing";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { decide } from "../support/decisions.js";
import { middlewareRefundSetup } from "../support/middleware-agent.js";
import { ask, config, refund, refundSetup, registry } from "../support/refund.js";
import { paysThenThrows, payEveryTime, recoveryOn, refundWith } from "../support/gateways.js";
import { reviewed } from "../support/reviews.js";

// ── fixtures ────────────────────────────────────────────────────────────────────────────────────

const closers: (() => unknown)[] = [];
afterAll(() => {
  for (const close of closers) close();
});

const DAY = new Date("2025-03-10T12:00:00.000Z");

const codeOf = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (error) {
    return eartErrorOf(error)?.code ?? `untyped: ${String((error as Error)?.message ?? error).slice(0, 300)}`;
  }
  return "no error";
};

const valueOf = async (store: BudgetStore, key: string) => (await store.get([key]))[key]!;
const paidTotal = (rows: { amount: number }[]) => rows.reduce((s, r) => s + r.amount, 0);

/** The state API of a compiled graph, as any caller of the thread API reaches it. */
type Writable = {
  updateState(config: unknown, values: unknown, asNode?: string): Promise<unknown>;
  bulkUpdateState(config: unknown, supersteps: unknown): Promise<unknown>;
  withConfig(config: unknown): Writable & { invoke(input: unknown, config: unknown): Promise<unknown> };
  getState(config: unknown): Promise<{ values: Record<string, unknown>; tasks: readonly { interrupts?: readonly { id?: string }[] }[] }>;
  getStateHistory(config: unknown): AsyncIterable<{ config: { configurable?: Record<string, unknown> }; values: Record<string, unknown>; tasks: readonly unknown[] }>;
};
const writable = (graph: unknown) => graph as Writable;

/** What a thread holds that a refused write must leave as it was: its messages, records and waiting interrupts. */
async function held(graph: unknown, threadId: string) {
  const snapshot = await writable(graph).getState({ configurable: { thread_id: threadId } });
  const values = snapshot.values as { messages?: BaseMessage[]; decisions?: DecisionRecord[]; _eart?: { decisions?: DecisionRecord[] } };
  return {
    messages: (values.messages ?? []).map((m) => [m.getType(), m.id]),
    decisions: (values.decisions ?? values._eart?.decisions ?? []).map((d) => [d.toolCallId, d.status, d.digest]),
    interrupts: snapshot.tasks.flatMap((t) => (t.interrupts ?? []).map((i) => i.id)),
  };
}

const approvalOn = async (agent: { getState: (c: unknown) => Promise<unknown> }, threadId: string) => {
  const request = pendingApproval(await agent.getState(config(threadId)));
  if (!request) throw new Error(`expected a pending approval request on ${threadId}`);
  return request;
};

const amountOf = (r: PolicyRequest) => Number(r.tool.args.amount);

/** The refund policy's shape with one knob per test: the supervisor rule's extras, or what happens above $100. */
const refundsWith = (name: string, over100: Record<string, unknown>) =>
  definePolicy({
    name,
    rules: [
      { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
      { id: "refund.small", tools: ["issue_refund"], when: (r) => amountOf(r) <= 100, effect: "allow" },
      { id: "refund.over100", tools: ["issue_refund"], when: (r) => amountOf(r) > 100 && amountOf(r) <= 5000, ...over100 } as never,
    ],
  });

// ── 1. state writes on a thread that waits for a human ──────────────────────────────────────────

describe("1. state writes on a thread that waits for a human", () => {
  it("bulkUpdateState over several supersteps, a fork from before the pause, another namespace, __copy__ / __input__ / __end__ and a withConfig copy are all refused; the request stands and is approved once", async () => {
    const s = refundSetup([[refund("c1", 740)]]);
    const c = config("w-routes");
    await s.agent.invoke(ask(), c);
    const request = await approvalOn(s.agent, "w-routes");
    const before = await held(s.agent, "w-routes");
    const g = writable(s.agent);
    // A checkpoint of the thread from before the pause (no interrupt, the proposal not yet made).
    const history: { config: { configurable?: Record<string, unknown> }; values: Record<string, unknown> }[] = [];
    for await (const snapshot of g.getStateHistory(c)) history.push(snapshot);
    const older = history.find((h) => ((h.values.decisions as DecisionRecord[] | undefined) ?? []).length === 0 && ((h.values.messages as unknown[] | undefined) ?? []).length > 0);
    expect(older?.config.configurable?.checkpoint_id).toBeTypeOf("string");

    const human = (text: string) => ({ messages: [new HumanMessage(text)] });
    const writes: [string, () => Promise<unknown>, string][] = [
      ["three supersteps", () => g.bulkUpdateState(c, [{ updates: [{ values: human("a") }] }, { updates: [{ values: human("b"), asNode: "agent" }] }, { updates: [{ values: human("c"), asNode: "tools" }] }]), "thread_awaiting_approval"],
      ["a fork from before the pause", () => g.updateState({ configurable: { thread_id: "w-routes", checkpoint_id: older!.config.configurable!.checkpoint_id } }, human("fork")), "state_write_refused"],
      ["another namespace", () => g.updateState({ configurable: { thread_id: "w-routes", checkpoint_ns: "policyGate:0" } }, human("ns")), "state_write_refused"],
      ["__copy__", () => g.bulkUpdateState(c, [{ updates: [{ values: undefined, asNode: "__copy__" }] }]), "thread_awaiting_approval"],
      ["__input__", () => g.updateState(c, human("as input"), "__input__"), "thread_awaiting_approval"],
      ["__end__ with null", () => g.updateState(c, null, "__end__"), "thread_awaiting_approval"],
      ["a withConfig copy's updateState", () => g.withConfig({ tags: ["copy"] }).updateState(c, human("copy")), "thread_awaiting_approval"],
      ["a withConfig copy's new input", () => g.withConfig({ tags: ["copy"] }).invoke(human("copy input"), c), "thread_awaiting_approval"],
    ];
    const got: [string, string][] = [];
    for (const [what, write] of writes) got.push([what, await codeOf(write())]);
    expect(got).toEqual(writes.map(([what, , code]) => [what, code]));
    expect(await held(s.agent, "w-routes")).toEqual(before);
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(new Command({ resume: { decisions: [decide(request, "c1", "approve")] } }), config("w-routes", "sam"));
    expect(s.refunds().map((r) => r.amount)).toEqual([740]);
  });

  it("the middleware agent: updateState, bulkUpdateState and a withConfig copy of its graph are refused while it waits; the request is then approved once", async () => {
    const s = middlewareRefundSetup([[refund("c1", 740)]]);
    const c = config("w-mw");
    await s.agent.invoke(ask(), c);
    const g = writable(s.agent.graph);
    const request = pendingApproval(await g.getState(c))!;
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const before = await held(s.agent.graph, "w-mw");
    const human = (text: string) => ({ messages: [new HumanMessage(text)] });
    const codes = [
      await codeOf(g.updateState(c, human("a"))),
      await codeOf(g.bulkUpdateState(c, [{ updates: [{ values: human("a") }] }, { updates: [{ values: human("b"), asNode: "model_request" }] }])),
      await codeOf(g.withConfig({ tags: ["copy"] }).updateState(c, human("c"))),
      await codeOf(s.agent.invoke(human("new input") as never, c)),
    ];
    expect(codes).toEqual(["thread_awaiting_approval", "thread_awaiting_approval", "thread_awaiting_approval", "thread_awaiting_approval"]);
    expect(await held(s.agent.graph, "w-mw")).toEqual(before);
    await s.agent.invoke(new Command({ resume: { decisions: [decide(request, "c1", "approve")] } }) as never, config("w-mw", "sam"));
    expect(s.refunds().map((r) => r.amount)).toEqual([740]);
  });

  it("the governed tool path as a subgraph of a user's own graph: writes in the path's namespace and at the root are refused while it waits", async () => {
    const db = new Database(":memory:");
    const tools = createRefundTools(db).all;
    const auditLog = new MemoryAuditLog();
    const ledger = new MemoryEffectLedger();
    const model = scriptedModel((messages: BaseMessage[]) =>
      messages.some((m) => AIMessage.isInstance(m)) ? new AIMessage("done") : new AIMessage({ content: "", tool_calls: [{ id: "r1", name: "issue_refund", args: { orderId: "1042", amount: 250 } }] }),
    );
    const State = Annotation.Root({ ...MessagesAnnotation.spec, ...GovernedChannels });
    const app = guardResumes(
      new StateGraph(State)
        .addNode("bindIdentity", createIdentityBinding({ registry, auditLog, ledger }))
        .addNode("agent", createModelNode({ model, tools, auditLog }))
        .addNode("tools", createGovernedToolPath({ policy: refundPolicy, tools, registry, auditLog, ledger, recoveryRoles: ["supervisor"] }))
        .addEdge(START, "bindIdentity")
        .addEdge("bindIdentity", "agent")
        .addConditionalEdges("agent", routeToGovernedTools, { tools: "tools", end: END })
        .addConditionalEdges("tools", routeAfterGovernedTools, { agent: "agent", end: END })
        .compile({ checkpointer: new MemorySaver() }),
      { auditLog },
    );
    const c = config("w-own");
    const request = pendingApproval(await app.invoke({ messages: [new HumanMessage("Refund order 1042")] }, c))!;
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["r1"]);
    // The path's own checkpoint namespace, as getState with subgraphs shows it.
    const shown = (await app.getState(c)) as unknown as { tasks: { state?: { configurable?: { checkpoint_ns?: string } } }[] };
    const ns = shown.tasks.map((t) => t.state?.configurable?.checkpoint_ns).find((n) => typeof n === "string" && n !== "");
    expect(ns).toMatch(/^tools:/);
    const before = await held(app, "w-own");
    const g = writable(app);
    const codes = [
      await codeOf(g.updateState({ configurable: { thread_id: "w-own", checkpoint_ns: ns } }, { messages: [] }, "policyGate")),
      await codeOf(g.updateState({ configurable: { thread_id: "w-own", checkpoint_ns: ns } }, { messages: [new HumanMessage("x")] })),
      await codeOf(g.updateState(c, { messages: [new HumanMessage("x")] }, "tools")),
      await codeOf(g.bulkUpdateState(c, [{ updates: [{ values: { messages: [] }, asNode: "agent" }] }, { updates: [{ values: { messages: [] }, asNode: "tools" }] }])),
      await codeOf(app.invoke({ messages: [new HumanMessage("forget it")] }, c)),
    ];
    expect(codes).toEqual(["state_write_refused", "state_write_refused", "thread_awaiting_approval", "thread_awaiting_approval", "thread_awaiting_approval"]);
    expect(await held(app, "w-own")).toEqual(before);
    await app.invoke(new Command({ resume: { decisions: [decide(request, "r1", "approve")] } }), config("w-own", "sam"));
    expect(db.prepare("SELECT amount FROM refunds").all()).toEqual([{ amount: 250 }]);
  });

  it("a run cut between the decision and the pause (recursion limit): records wait without an interrupt; new input and answers are refused, nothing runs, and the customer's continue brings the request back", async () => {
    const s = refundSetup([[refund("c1", 740)]]);
    expect(await codeOf(s.agent.invoke(ask(), { ...config("w-cut"), recursionLimit: 1 }))).toMatch(/Recursion limit/);
    const cut = await s.agent.getState(config("w-cut"));
    expect(pendingApproval(cut)).toBeUndefined();
    expect(((cut.values as { decisions: DecisionRecord[] }).decisions).map((d) => d.status)).toEqual(["pending_approval"]);
    expect(await codeOf(s.agent.invoke(ask("never mind, refund $4,000 instead"), config("w-cut")))).toBe("thread_awaiting_approval");
    expect(await codeOf(s.agent.invoke(new Command({ resume: { decisions: [] } }), config("w-cut", "sam")))).toBe("thread_not_paused");
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(null, config("w-cut"));
    const request = await approvalOn(s.agent, "w-cut");
    await s.agent.invoke(new Command({ resume: { decisions: [decide(request, "c1", "approve")] } }), config("w-cut", "sam"));
    expect(s.refunds().map((r) => r.amount)).toEqual([740]);
  });

  it("no honest flow leaves a thread refusing input once nothing waits: after a reject, an edit that ran, a lapse answered, a re-request approved, and a redeploy that escalates the call", async () => {
    const next = (s: { agent: { invoke(i: unknown, c: unknown): Promise<unknown> } }, threadId: string) => codeOf(s.agent.invoke(ask("Thanks. Anything else?"), config(threadId)));
    const answer = (request: Parameters<typeof decide>[0], type: string, extra: Record<string, unknown> = {}) => new Command({ resume: { decisions: [decide(request, "c1", type, extra)] } });

    // A reject.
    const r = refundSetup([[refund("c1", 740)]]);
    await r.agent.invoke(ask(), config("w-reject"));
    await r.agent.invoke(answer(await approvalOn(r.agent, "w-reject"), "reject", { message: "no" }), config("w-reject", "sam"));
    expect(await next(r, "w-reject")).toBe("no error");

    // An edit that ran.
    const e = refundSetup([[refund("c1", 740)]]);
    await e.agent.invoke(ask(), config("w-edit"));
    await e.agent.invoke(answer(await approvalOn(e.agent, "w-edit"), "edit", { args: { orderId: "1042", amount: 500 } }), config("w-edit", "sam"));
    expect(e.refunds().map((x) => x.amount)).toEqual([500]);
    expect(await next(e, "w-edit")).toBe("no error");

    // A lapse answered (onExpired "answer"), and a lapse re-requested then approved.
    const expiring = refundsWith("refunds-expiring", { effect: "require_approval", approverRoles: ["supervisor"], expiresIn: 60_000 });
    for (const onExpired of ["answer", "rerequest"] as const) {
      const clock = { now: DAY };
      const t = `w-lapse-${onExpired}`;
      const x = refundSetup([[refund("c1", 740)]], { policy: expiring, clock: () => clock.now, onExpired });
      await x.agent.invoke(ask(), config(t));
      const first = await approvalOn(x.agent, t);
      clock.now = new Date(DAY.getTime() + 61_000);
      expect(await codeOf(x.agent.invoke(answer(first, "approve"), config(t, "sam")))).toBe("approval_expired");
      if (onExpired === "rerequest") {
        const again = await approvalOn(x.agent, t);
        await x.agent.invoke(answer(again, "approve"), config(t, "sam"));
        expect(x.refunds().map((y) => y.amount)).toEqual([740]);
      } else {
        expect(x.refunds()).toEqual([]);
      }
      expect(await next(x, t)).toBe("no error");
    }

    // A redeploy whose policy escalates the call the supervisor then approves (no reviewer configured).
    const checkpointer = new MemorySaver();
    const auditLog = new MemoryAuditLog();
    const ledger = new MemoryEffectLedger();
    const v1 = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, agent: { ledger } });
    await v1.agent.invoke(ask(), config("w-redeploy"));
    const asked = await approvalOn(v1.agent, "w-redeploy");
    const v2 = refundSetup([[refund("c1", 740)]], { checkpointer, auditLog, agent: { ledger }, policy: refundsWith("refunds-v2", { effect: "escalate", reason: "Refunds over $100 go to a reviewer now" }) });
    await v2.agent.invoke(answer(asked, "approve"), config("w-redeploy", "sam"));
    const records = ((await v2.agent.getState(config("w-redeploy"))).values as { decisions: DecisionRecord[] }).decisions;
    expect(records.map((d) => d.status)).toEqual(["escalated"]);
    expect([...v1.refunds(), ...v2.refunds()]).toEqual([]);
    expect(await next(v2, "w-redeploy")).toBe("no error");
  });
});

// ── 2. a human's retry, reserved again against the budgets ──────────────────────────────────────

describe("2. a human's retry of an attempt that may have acted", () => {
  // Was a hole, now closed (medium: the deny cap was exceeded by every retried amount; a human is in the loop but the
  // budget is the control meant to bound exactly this). Budgets counted in the thread's state (a
  // per-thread rule, no BudgetStore: the documented default for per-thread budgets) count a call
  // only when it `ran`: the first attempt, which paid and then threw (a gateway 502 after the
  // transfer), is counted nowhere. reserveRetry checks the supervisor's retry against counters
  // that do not hold that attempt, so the retry "fits" ($0 + $60 <= $100) and pays again: $120 paid
  // against a $100 per-thread deny cap, and the thread's counter says $60 (the model may then get
  // $40 more). With a store the gate's reservation stays and this is refused (budgets-redteam).
  // Fix: nodes/governed-tool-node.ts `reserveRetry`: count the earlier attempt in the check
  // (`pending: [{ name, args, reserved: true }]`, which `evaluate` counts for thread-state rules
  // only), and charge it with the retry (`charge` the call twice, or charge thread counters when
  // an attempt that started goes to a human in `toHuman`).
  it("budgets kept in thread state: the supervisor's retry of a refund that paid and threw is checked against the attempt that may have paid", async () => {
    const rule: BudgetRuleInput = { id: "refunds.thread", tools: ["issue_refund"], scope: "thread", window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "deny" };
    const budgets = defineBudgets([rule], { clock: () => DAY });
    const s = refundWith(
      paysThenThrows,
      [[refund("c1", 60, "1043")]],
      { budgets },
    );
    await s.agent.invoke(ask(), config("b-state"));
    const first = await recoveryOn(s.agent, "b-state");
    expect(s.refunds().map((r) => r.amount)).toEqual([60]);
    await s.agent.invoke(new Command({ resume: { decisions: [decide(first, "c1", "retry")] } }), config("b-state", "sam")).catch(() => undefined);
    expect(paidTotal(s.refunds())).toBeLessThanOrEqual(100);
  });

  // Was a hole, now closed (low: an over-reach of the retry fix; availability, fail closed). A tool that throws eart's
  // ToolPermissionError (or a 401/403) says the downstream refused: nothing acted, which the node
  // itself knows (CANCELLED_BEFORE_RECOVERY.permission_denied is "failed": run again under the
  // same key). Yet the supervisor's retry, once the permission is fixed, is reserved again as if
  // the refused attempt had paid: a $60 refund against a $100 cap needs $120 and is refused ("an
  // earlier attempt may have acted") though nothing was ever paid; the supervisor can only mark it
  // done (a false record) or abandon it. Fix: nodes/governed-tool-node.ts `execute` / `toHuman`:
  // record on the recovery whether a try of the attempt may have acted (not for a permission
  // refusal on its first try, as not for a breaker's), and in `runOne`'s retry path skip
  // `reserveRetry` when none may have: the gate's reservation covers the one attempt that acts.
  it("a retry after a permission refusal (nothing paid) is not charged for the refused attempt: the honest refund runs once", async () => {
    const store = new MemoryBudgetStore();
    const rule: BudgetRuleInput = { id: "refunds.user", tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "deny" };
    const budgets = defineBudgets([rule], { store, clock: () => DAY });
    const s = refundWith(
      async (args, _cfg, _real, n, db) => {
        if (n === 1) throw new ToolPermissionError("issue_refund", "the gateway key lacks the refund scope");
        return payEveryTime(db, args);
      },
      [[refund("c1", 60, "1043")]],
      { budgets },
    );
    await s.agent.invoke(ask(), config("b-perm"));
    const first = await recoveryOn(s.agent, "b-perm");
    expect(first.requests[0]).toMatchObject({ toolCallId: "c1", reason: "permission_denied" });
    await s.agent.invoke(new Command({ resume: { decisions: [decide(first, "c1", "retry")] } }), config("b-perm", "sam"));
    expect(s.refunds().map((r) => r.amount)).toEqual([60]);
    expect(await valueOf(store, "refunds.user|user|cara|2025-03-10|sum")).toBe(60);
  });

  it("budgets that only ask for approval: the retry runs (no deny budget binds) and each attempt that may have paid is counted once, never a third time", async () => {
    const store = new MemoryBudgetStore();
    const rule: BudgetRuleInput = { id: "refunds.user", tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "require_approval", approverRoles: ["supervisor"] };
    const budgets = defineBudgets([rule], { store, clock: () => DAY });
    const s = refundWith(
      paysThenThrows,
      [[refund("c1", 60, "1043")]],
      { budgets },
    );
    await s.agent.invoke(ask(), config("b-approval"));
    expect(await valueOf(store, "refunds.user|user|cara|2025-03-10|sum")).toBe(60);
    const first = await recoveryOn(s.agent, "b-approval");
    await s.agent.invoke(new Command({ resume: { decisions: [decide(first, "c1", "retry")] } }), config("b-approval", "sam"));
    expect(s.refunds().map((r) => r.amount)).toEqual([60, 60]);
    expect(pendingRecovery(await s.agent.getState(config("b-approval")))).toBeUndefined();
    expect(await valueOf(store, "refunds.user|user|cara|2025-03-10|sum")).toBe(120);
  });

  it("a refund tool that asks with interrupt() before paying, under a deny budget in a store: the pause is no retry, the answer runs it once and charges it once", async () => {
    const store = new MemoryBudgetStore();
    const rule: BudgetRuleInput = { id: "refunds.user", tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "deny" };
    const budgets = defineBudgets([rule], { store, clock: () => DAY });
    const answers: unknown[] = [];
    const s = refundWith(
      async (args, _cfg, _real, _n, db) => {
        answers.push(interrupt({ question: "Which card should the refund go to?" }));
        return payEveryTime(db, args);
      },
      [[refund("c1", 60, "1043")]],
      { budgets },
    );
    const paused = (await s.agent.invoke(ask(), config("b-ask"))) as { __interrupt__?: { value: unknown }[] };
    expect(paused.__interrupt__?.map((i) => i.value)).toEqual([{ question: "Which card should the refund go to?" }]);
    expect(s.refunds()).toEqual([]);
    const done = await s.agent.invoke(new Command({ resume: "the visa" }), config("b-ask"));
    expect(pendingRecovery(done)).toBeUndefined();
    expect(answers).toEqual(["the visa"]);
    expect(s.refunds().map((r) => r.amount)).toEqual([60]);
    expect(await valueOf(store, "refunds.user|user|cara|2025-03-10|sum")).toBe(60);
  });
});

// ── 3. budget counter keys and legacy keys ──────────────────────────────────────────────────────

describe("3. budget counter keys name the scope kind; legacy keys are read", () => {
  const who = (user = "cara"): AgentIdentity => ({
    schemaVersion: 1,
    id: "support-agent",
    roles: ["support"],
    tools: ["issue_refund"],
    dataScopes: ["orders"],
    onBehalfOf: { id: user, roles: ["customer"] },
    source: "configurable.user_id",
  });
  const req = (threadId: string, amount: number, user = "cara") => ({ identity: who(user), threadId, tool: { name: "issue_refund", args: { orderId: "1042", amount } }, threadCounters: {} });
  const rule = (scope: "thread" | "user"): BudgetRuleInput => ({ id: "refunds", tools: ["issue_refund"], scope, window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "deny" });

  it("thread ids a customer chooses (the victim's id, with the kind, the window or separators, escaped or not) never reach another user's counter, new or legacy", async () => {
    const store = new MemoryBudgetStore();
    const perThread = defineBudgets([rule("thread")], { store, clock: () => DAY });
    const perUser = defineBudgets([rule("user")], { store, clock: () => DAY });
    const hostile = ["cara", "user|cara", "user%7Ccara", "cara|2025-03-10", "user|cara|2025-03-10", "cara:cara", "thread|user|cara", "refunds|user|cara"];
    for (const threadId of hostile) expect((await perThread.reserve(req(threadId, 100, "omar"))).reserved).toBe(true);
    // Every key the store holds is a per-thread key (kind "thread"), none cara's, none without a kind.
    const keys = hostile.map((t) => `refunds|thread|${t.replace(/[%|:]/g, (ch) => encodeURIComponent(ch))}|2025-03-10|sum`);
    expect(Object.values(await store.get(keys))).toEqual(hostile.map(() => 100));
    const legacyOfCara = "refunds|cara|2025-03-10|sum";
    expect(await valueOf(store, legacyOfCara)).toBe(0);
    // cara's per-user budget is whole: $100 fits, and a cent more does not.
    expect((await perUser.reserve(req("cara-1", 100))).reserved).toBe(true);
    expect((await perUser.check(req("cara-2", 0.01)))?.effect).toBe("deny");
  });

  it("a counter an earlier version kept (no kind in its key) counts within its window only: an upgrade restarts nothing, and a full one from yesterday denies nothing today", async () => {
    const store = new MemoryBudgetStore();
    const clock = { now: DAY };
    const perUser = defineBudgets([rule("user")], { store, clock: () => clock.now });
    await store.add({ "refunds|cara|2025-03-10|sum": 40, "refunds|cara|2025-03-09|sum": 5_000 });
    // Today: $40 was spent before the upgrade; $60 fits exactly (the limit is lowered once, not twice), a cent more does not.
    expect((await perUser.reserve(req("t-1", 60))).reserved).toBe(true);
    expect(await valueOf(store, "refunds|user|cara|2025-03-10|sum")).toBe(60);
    expect((await perUser.reserve(req("t-2", 0.01))).verdict?.effect).toBe("deny");
    // Tomorrow: yesterday's legacy counter (here the day before's) is another window: the full $100 fits.
    clock.now = new Date("2025-03-11T09:00:00.000Z");
    await store.add({ "refunds|cara|2025-03-10|sum": 10_000 });
    expect((await perUser.reserve(req("t-3", 100))).reserved).toBe(true);
  });
});

// ── 4. escalation answers carry the case digest ─────────────────────────────────────────────────

describe("4. a reviewer's answer names the case it answers", () => {
  /** A model that always answers the same text with the same low confidence (a template agent). */
  const sameAnswer = () => scriptedModel((_m: BaseMessage[]) => new AIMessage(JSON.stringify({ answer: "Yes, your refund is approved.", confidence: 0.4 })));
  const review = { reviewerRoles: ["supervisor"], confidence: { threshold: 0.7 } };

  it("the digest shown is the case's own (caseDigest of what is shown); a stale answer to an earlier, identical case of the thread is refused when the clock moved", async () => {
    let tick = 0;
    const s = refundSetup([], { clock: () => new Date(DAY.getTime() + 1_000 * tick++), agent: { model: sameAnswer(), escalation: review } });
    const first = pendingEscalation(await s.agent.invoke(ask("Is my refund approved?"), config("e-moving")))!;
    expect(first.digest).toBe(caseDigest(first));
    const stale = reviewed(first, "close", "Not approved.");
    await s.agent.invoke(new Command({ resume: stale }), config("e-moving", "sam"));
    const second = pendingEscalation(await s.agent.invoke({ messages: [new HumanMessage("Is it approved now?")] }, config("e-moving")))!;
    expect(second.proposed).toEqual(first.proposed);
    expect(await codeOf(s.agent.invoke(new Command({ resume: stale }), config("e-moving", "sam")))).toBe("approval_digest_mismatch");
    const done = await s.agent.invoke(new Command({ resume: reviewed(second, "take_over", "It is approved.") }), config("e-moving", "sam"));
    expect(pendingEscalation(done)).toBeUndefined();
  });

  // Was a hole, now closed: each case has its own random id, which the digest covers. It was (low: needs two cases of one thread opened at the same clock reading: a frozen or coarse
  // clock, which `clock` lets a deployment give). caseDigest binds the thread, reason, signals,
  // proposal, context ids and `since` (the clock's reading when the case opened), nothing that is
  // the case's own: a template agent giving the same uncertain answer twice opens a second case
  // whose digest is the first's, and the reviewer's retried "close" to the first case (a client
  // retry, a stale screen) decides the second, unseen. Fix: guards/escalation-guard.ts (first
  // pass): give each case an id of its own (a random id, or the seq of its escalation.requested
  // event) in the `escalation` record, and src/human-tasks/escalation.ts `caseDigest`: cover it.
  it("two cases of one thread opened at the same clock reading do not share a digest: the retried answer to the first is refused on the second", async () => {
    const s = refundSetup([], { clock: () => DAY, agent: { model: sameAnswer(), escalation: review } });
    const first = pendingEscalation(await s.agent.invoke(ask("Is my refund approved?"), config("e-frozen")))!;
    const stale = reviewed(first, "close", "Not approved.");
    await s.agent.invoke(new Command({ resume: stale }), config("e-frozen", "sam"));
    const second = pendingEscalation(await s.agent.invoke({ messages: [new HumanMessage("Is it approved now?")] }, config("e-frozen")))!;
    expect(second).toBeDefined();
    expect(await codeOf(s.agent.invoke(new Command({ resume: stale }), config("e-frozen", "sam")))).toBe("approval_digest_mismatch");
  });
});

// ── 5. replay against an insider ────────────────────────────────────────────────────────────────

describe("5. replay: an insider who deletes a thread", () => {
  const stricter = definePolicy({
    name: "refunds-stricter",
    rules: [
      { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
      { id: "refund.none", tools: ["issue_refund"], effect: "deny" },
    ],
  });
  /** A SQLite audit store holding a $740 request the stricter policy flips, then every row of that thread deleted (events, head, signed head); the global log kept. */
  async function deletedThread(threadId: string) {
    const db = new Database(":memory:");
    const log = new SqliteAuditLog({ database: db });
    closers.push(() => log.close());
    const setup = refundSetup([[refund("r1", 740)]], { auditLog: log });
    await setup.agent.invoke(ask(), config(threadId));
    expect((await replay(log, stricter)).flips.map((f) => [f.threadId, f.toolCallId])).toEqual([[threadId, "r1"]]);
    for (const table of ["eart_audit_events", "eart_audit_heads", "eart_audit_signed_heads"]) db.prepare(`DELETE FROM ${table} WHERE thread_id = ?`).run(threadId);
    // The store as a whole says so.
    expect((await verifyAuditStore(log)).problems.map((p) => [p.kind, p.threadId])).toEqual([["missing_thread", threadId]]);
    return log;
  }

  it("asked about the deleted thread by id, replay lists it as unverified, never as unchanged", async () => {
    const log = await deletedThread("r-named");
    const report = await replay(log, stricter, { threadIds: ["r-named"] });
    expect(report.unverified.map((u) => u.threadId)).toEqual(["r-named"]);
  });

  // Was a hole, now closed (medium: the operator rolling out a policy was told nothing changes, for exactly the
  // decisions an insider wanted out of sight; no key needed). replay lists the threads from
  // `listThreads()` (the threads with events) and verifies each one's chain; a thread deleted
  // whole (its events, head and signed head) is in no list, so the report reads threads 0,
  // evaluated 0, flips [], unverified [], although the store's global log still records the
  // thread and `verifyAuditStore` reports it missing. Fix: src/policy/replay.ts `replay`: without
  // `threadIds`, also take the threads the global log names (`auditLog.globalLog()` →
  // `verifyGlobalLog(...).latest`, as verifyAuditStore does) and list those the store lost in
  // `unverified`.
  it("replay over every thread names a thread deleted whole (the global log still records it), instead of reporting no change", async () => {
    const log = await deletedThread("r-gone");
    const report = await replay(log, stricter).catch((error: unknown) => error);
    expect(report instanceof Error || JSON.stringify(report).includes('"r-gone"')).toBe(true);
  });
});

// ── 6. quorums against the registry in force ────────────────────────────────────────────────────

describe("6. quorums", () => {
  /** A policy engine of one's own asking for two distinct approvers for refunds, optionally in two groups. */
  const twoDesks = (groups: boolean): PolicyEngine => ({
    version: groups ? "two-desks-grouped-1" : "two-desks-1",
    decide: (r: PolicyRequest): PolicyDecision =>
      r.tool.name === "issue_refund"
        ? {
            effect: "require_approval",
            reasons: ["a finance officer and a supervisor approve refunds"],
            policyIds: ["two-desks"],
            version: groups ? "two-desks-grouped-1" : "two-desks-1",
            approverRoles: ["finance", "supervisor"],
            quorum: 2,
            ...(groups ? { approverGroups: [["finance"], ["supervisor"]] } : {}),
          }
        : { effect: "allow", reasons: ["lookups"], policyIds: ["lookups"], version: groups ? "two-desks-grouped-1" : "two-desks-1" },
  });
  const approveTwice = async (engine: PolicyEngine, threadId: string) => {
    const s = refundSetup([[refund("c1", 740)]], { policy: engine });
    await s.agent.invoke(ask(), config(threadId));
    await s.agent.invoke(new Command({ resume: { decisions: [decide(await approvalOn(s.agent, threadId), "c1", "approve")] } }), config(threadId, "fay"));
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(new Command({ resume: { decisions: [decide(await approvalOn(s.agent, threadId), "c1", "approve")] } }), config(threadId, "sam"));
    return s;
  };

  it("a quorum of two over finance or supervisor (no groups) is met by one of each, and the refund runs once", async () => {
    const s = await approveTwice(twoDesks(false), "q-plain");
    expect(s.refunds().map((r) => r.amount)).toEqual([740]);
  });

  // Was a hole, now closed: the quorum's roles are the verdict's (`quorumRoles` where a budget added a group). It was (low: an over-reach of the quorum fix; fail closed, but a legitimate request can never be
  // approved, and while it waits the thread refuses all new input). `withApproval` now counts toward
  // the quorum only approvers holding `approverGroups[0]`, assuming group 0 is policy's and the rest
  // are budgets'. A PolicyEngine's own decision may carry approverGroups (the public contract:
  // "every group needs an approval by a holder of one of its roles, beside the quorum"): two groups
  // [finance], [supervisor] with quorum 2 means one of each. fay (finance) and sam (supervisor)
  // approve; the request even shows "Approvals needed: 2 (so far: fay, sam)" and every group met,
  // yet the record stays pending_approval: only a second finance officer could complete it. Fix:
  // guards/policy-gate.ts `withApproval` (and `budgetApproval`): count holders of the policy
  // decision's own roles (`approverRoles` as the engine gave them, or every group the engine gave,
  // recorded apart from the groups budgets add), not only the first group.
  it("an engine's own approver groups (finance and supervisor, quorum 2): one approver of each completes it and the refund runs once", async () => {
    const s = await approveTwice(twoDesks(true), "q-groups");
    expect(pendingApproval(await s.agent.getState(config("q-groups")))).toBeUndefined();
    expect(s.refunds().map((r) => r.amount)).toEqual([740]);
  });
});

// ── 7. resilience fixes: what still passes through ──────────────────────────────────────────────

describe("7. resilience: a tool's own pause, cloned arguments, LangGraph's control flow", () => {
  it("the middleware agent: a governed refund that asks with interrupt() pauses, gets its answer on resume, and pays once without a recovery request", async () => {
    const asked: unknown[] = [];
    const s = middlewareRefundSetup([[refund("c1", 60, "1043")]], {
      wrapRefund: (real) => async (args, cfg) => {
        asked.push(interrupt({ question: "Which card?" }));
        return real(args, cfg);
      },
    });
    const paused = (await s.agent.invoke(ask() as never, config("r-mw-ask"))) as { __interrupt__?: { value: unknown }[] };
    expect(paused.__interrupt__?.map((i) => i.value)).toEqual([{ question: "Which card?" }]);
    const done = await s.agent.invoke(new Command({ resume: "the visa" }) as never, config("r-mw-ask"));
    expect(pendingRecovery(done)).toBeUndefined();
    expect(asked).toEqual(["the visa"]);
    expect(s.refunds().map((r) => r.amount)).toEqual([60]);
    expect((await s.auditLog.read("r-mw-ask")).filter((e) => e.type === "tool.recovery_requested")).toEqual([]);
  });

  it("arguments a model can send (nested, unicode, huge and tiny numbers, a JSON __proto__ member) clone for every try; a tool whose schema transforms them gets the same value each try and pays once", async () => {
    const seen: unknown[] = [];
    const raw = JSON.parse('{"orderId":"1043","amount":60,"reason":"  carte bleue ☃ 💳  ","meta":{"tags":["a",{"b":[1e308,5e-324,-0]}],"__proto__":{"amount":6000}}}') as Record<string, unknown>;
    const s = refundSetup([[{ id: "c1", name: "issue_refund", args: raw }]], {
      tools: (t) => [
        t.lookupOrder,
        tool(
          async (args: { orderId: string; amount: number; reason: string; meta: unknown }, cfg) => {
            seen.push(structuredClone(args));
            if (seen.length === 1) throw new Error("gateway 503, nothing sent");
            return t.issueRefund.invoke({ orderId: args.orderId, amount: args.amount, reason: args.reason }, cfg as never);
          },
          {
            name: "issue_refund",
            description: "Refund an amount in dollars for an order.",
            schema: z.object({ orderId: z.string(), amount: z.number().positive(), reason: z.string().transform((r) => r.trim()), meta: z.unknown() }),
          },
        ) as unknown as StructuredToolInterface,
      ],
      agent: { execution: { issue_refund: { retry: { attempts: 2, initialDelayMs: 1, jitter: false } } } },
    });
    await s.agent.invoke(ask(), config("r-clone"));
    expect(seen).toHaveLength(2);
    expect(seen[1]).toEqual(seen[0]);
    expect((seen[0] as { reason: string }).reason).toBe("carte bleue ☃ 💳");
    expect(s.refunds().map((r) => r.amount)).toEqual([60]);
  });

  // Was a hole, now closed (low; pre-existing, not introduced by the fix, which made forged flags fail but still
  // lets every LangGraph bubble-up class through from inside a tool). A governed tool that raises
  // LangGraph's own ParentCommand (a handoff tool, a tool wrapping a subgraph that routes its
  // parent) passes `isGraphControlFlow` and is rethrown from the tool node; at the agent's root
  // LangGraph ends the run as finished. The refund started (tool.started is audited) and may have
  // paid, yet nothing records an outcome, no human is asked, the record stays "allowed" with no
  // answer, and the thread takes new input as if nothing were open: the failure the resilience fix
  // meant to close for forged flags. Fix: nodes/governed-tool-node.ts `execute` (the tool's catch,
  // and the fallback's): let only `isGraphInterrupt` through from a tool; any other bubble-up from
  // inside a tool is an outcome nobody knows (`toHuman("outcome_unknown", …)`), or is recorded
  // (`tool.interrupted`-like) before it is rethrown so the next run asks a human.
  it("a tool that raises LangGraph's ParentCommand leaves a recorded outcome or a human to ask, never a run that ends as finished with nothing said", async () => {
    const s = refundSetup([[refund("c1", 60, "1043")]], {
      tools: (t) => [
        t.lookupOrder,
        tool(
          async (args: Record<string, unknown>, cfg) => {
            await t.issueRefund.invoke(args, cfg as never);
            throw new ParentCommand(new Command({ graph: Command.PARENT, goto: "agent", update: { messages: [new AIMessage("handed off")] } }));
          },
          { name: "issue_refund", description: "Refund an amount in dollars for an order.", schema: z.object({ orderId: z.string(), amount: z.number() }) },
        ) as unknown as StructuredToolInterface,
      ],
    });
    await s.agent.invoke(ask(), config("r-parent")).catch(() => undefined);
    expect(s.refunds().map((r) => r.amount)).toEqual([60]);
    const outcomes = (await s.auditLog.read("r-parent")).filter((e) => e.data.toolCallId === "c1" && ["tool.succeeded", "tool.failed", "tool.recovery_requested", "tool.cancelled", "tool.interrupted"].includes(e.type));
    expect(outcomes.length > 0 || pendingRecovery(await s.agent.getState(config("r-parent"))) !== undefined).toBe(true);
  });
});
