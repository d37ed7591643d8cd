import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { fakeModel } from "@langchain/core/testing";
import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { Command, MemorySaver } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { createAgent, modelFallbackMiddleware, piiMiddleware, summarizationMiddleware, toolCallLimitMiddleware, type AgentMiddleware } from "langchain";
import { describe, expect, it } from "vitest";
import { defineRedaction, eartErrorOf, MemoryAuditLog, MemoryEffectLedger, pendingApproval, STANDARD_REDACTIONS, type AuditEvent } from "eart";
import { governanceMiddleware, guardAgent, type GovernanceMiddlewareOptions } from "eart/middleware";
import { scriptedModel } from "eart/testing";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { answersTo, ask, config, lookup, refund, registry, turnsModel, type Call } from "../support/refund.js";

/**
 * governanceMiddleware stacked with LangChain's own middleware (piiMiddleware,
 * toolCallLimitMiddleware, summarizationMiddleware, modelFallbackMiddleware): each still does its
 * job, and eart's guarantees still hold (no tool runs without eart's decision, an approved call
 * runs once, answers bound to their call, the audit chain verifies).
 *
 * The order of the list does not matter for these four (createAgent runs `afterModel` hooks in
 * reverse list order and nests `wrapModelCall` with the first in the list outermost): eart decides
 * every call inside its own `wrapModelCall` and pauses in the tool step, so
 * - toolCallLimitMiddleware, before or after eart, sees each model answer once and counts an
 *   approved call once (a pause in a model step would send the answer through the `afterModel`
 *   hooks again after the approval, and the limit would block what the supervisor approved);
 * - modelFallbackMiddleware, before or after eart, does not wrap the pause: a refused answer
 *   reaches its caller as eart's typed error, and the thread still waits;
 * - piiMiddleware and summarizationMiddleware work in either position.
 */

/** The refund agent of test/support/middleware-agent.ts, with the model and the whole middleware list chosen by the test. */
function setup(opts: {
  model: BaseChatModel;
  middleware: (governance: AgentMiddleware) => AgentMiddleware[];
  governance?: Partial<GovernanceMiddlewareOptions>;
}) {
  const db = new Database(":memory:");
  const tools = createRefundTools(db);
  const auditLog = new MemoryAuditLog();
  const governance = governanceMiddleware({ identities: registry, policy: refundPolicy, auditLog, ledger: new MemoryEffectLedger(), ...opts.governance });
  const agent = guardAgent(createAgent({ model: opts.model, tools: tools.all, checkpointer: new MemorySaver(), middleware: opts.middleware(governance) }), governance);
  const refunds = () => db.prepare(`SELECT order_id AS orderId, amount, tool_call_id AS toolCallId FROM refunds ORDER BY id`).all() as { orderId: string; amount: number; toolCallId: string }[];
  /** The audit event types of one call, in chain order. */
  const eventsOf = async (threadId: string, toolCallId: string) =>
    (await auditLog.read(threadId)).filter((e) => (e.data as { toolCallId?: string }).toolCallId === toolCallId).map((e) => e.type);
  return { agent, auditLog, db, refunds, eventsOf };
}

const approve = () => new Command({ resume: { decisions: [{ type: "approve" }] } });
// createAgent wraps what middleware throws (MiddlewareError, the original as cause): eartErrorOf finds eart's error in it.
const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: { message?: string }) => eartErrorOf(e)?.code ?? String(e.message));
const text = (messages: readonly BaseMessage[]) => messages.map((m) => (typeof m.content === "string" ? m.content : JSON.stringify(m.content))).join("\n");
const stateOf = async (agent: { graph: unknown }, threadId: string) =>
  (await (agent.graph as { getState: (c: unknown) => Promise<{ values: { messages: BaseMessage[]; runToolCallCount?: Record<string, number>; threadToolCallCount?: Record<string, number> } }> }).getState(config(threadId))).values;
/** Every message each call of a fake model was given. */
const seenBy = (model: { calls: { messages: BaseMessage[] }[] }) => model.calls.map((c) => c.messages);

/**
 * A model that decides from the newest message only (summarization removes older ones, so a
 * script counting turns would lose its place): the customer's request → look up 1042; its answer →
 * look up 1043; that answer → the $740 refund; the refund's answer → "done".
 */
function conversationModel() {
  return scriptedModel((messages) => {
    const last = messages.at(-1);
    if (HumanMessage.isInstance(last)) return new AIMessage({ content: "", tool_calls: [lookup("l1")] });
    if (ToolMessage.isInstance(last) && last.tool_call_id === "l1") return new AIMessage({ content: "", tool_calls: [lookup("l2", "1043")] });
    if (ToolMessage.isInstance(last) && last.tool_call_id === "l2") return new AIMessage({ content: "", tool_calls: [refund("c1", 740)] });
    if (ToolMessage.isInstance(last) && last.tool_call_id === "c1") return new AIMessage(`done: ${String(last.content)}`);
    return new AIMessage("unexpected");
  });
}

const EMAIL = "cara.customer@example.com";
const CARD = "4111 1111 1111 1111";
const sensitiveAsk = () => ask(`Please refund order 1042, $740. Write to ${EMAIL}; the card was ${CARD}.`);

describe("piiMiddleware with governanceMiddleware", () => {
  it.each(["before", "after"] as const)("listed %s eart: the model never sees the e-mail address, and the 740-dollar refund still pauses for sam and runs once", async (where) => {
    const model = turnsModel([[refund("c1", 740)]]);
    const pii = [piiMiddleware("email", { strategy: "redact" }), piiMiddleware("credit_card", { strategy: "mask" })];
    const s = setup({ model, middleware: (g) => (where === "before" ? [...pii, g] : [g, ...pii]) });
    const paused = await s.agent.invoke(sensitiveAsk(), config(`pii-${where}`));
    expect(pendingApproval(paused)?.requests.map((r) => [r.toolCallId, r.args])).toEqual([["c1", { orderId: "1042", amount: 740 }]]);
    expect(s.refunds()).toEqual([]);
    const done = await s.agent.invoke(approve(), config(`pii-${where}`, "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(answersTo(done.messages, "c1")).toHaveLength(1);
    expect(String(done.messages.at(-1)!.content)).toBe("done after 1 turns");

    // Every model call saw the request without the raw values: the address as piiMiddleware
    // redacts it; the card already redacted by eart (guardAgent redacts what callers send, before
    // piiMiddleware sees it), so LangChain's mask never had a card to mask.
    const seen = seenBy(model);
    expect(seen).toHaveLength(2);
    for (const messages of seen) {
      expect(text(messages)).not.toContain(EMAIL);
      expect(text(messages)).not.toMatch(/4111[\s-]?1111[\s-]?1111[\s-]?1111/);
      expect(text(messages)).toContain("[REDACTED_EMAIL]");
      expect(text(messages)).toContain("[REDACTED:card_number]");
    }
    // And the thread as it now stands holds neither.
    expect(text((await stateOf(s.agent, `pii-${where}`)).messages)).not.toContain(EMAIL);
    expect(await s.auditLog.verify(`pii-${where}`)).toMatchObject({ ok: true });
  });

  it("keeps the e-mail address out of eart's audit log only through eart's own redaction: eart records the request (run.started) before piiMiddleware's beforeModel runs", async () => {
    const email = { id: "email", pattern: /[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}/g, label: "pii" };
    const model = turnsModel([[refund("c1", 740)]]);
    const s = setup({
      model,
      middleware: (g) => [piiMiddleware("email", { strategy: "redact" }), g],
      governance: { redaction: defineRedaction([...STANDARD_REDACTIONS, email]) },
    });
    await s.agent.invoke(sensitiveAsk(), config("pii-audit"));
    await s.agent.invoke(approve(), config("pii-audit", "sam"));
    expect(s.refunds()).toHaveLength(1);
    const events: AuditEvent[] = await s.auditLog.read("pii-audit");
    const started = events.find((e) => e.type === "run.started")!;
    expect(JSON.stringify(started.data)).toContain("[REDACTED:email]");
    expect(JSON.stringify(events)).not.toContain(EMAIL);
    for (const messages of seenBy(model)) expect(text(messages)).not.toContain(EMAIL);
    // Every checkpoint, the input's included: the address was redacted before the thread held it.
    const history: string[] = [];
    for await (const snapshot of (s.agent.graph as { getStateHistory: (c: unknown) => AsyncIterable<{ values: unknown }> }).getStateHistory(config("pii-audit"))) history.push(JSON.stringify(snapshot.values));
    expect(history.length).toBeGreaterThan(3);
    for (const values of history) expect(values).not.toContain(EMAIL);
  });
});

describe("toolCallLimitMiddleware with governanceMiddleware", () => {
  it("listed before eart: the second refund over a run limit of 1 is blocked by LangChain and never runs; eart ran only what it decided", async () => {
    const s = setup({
      model: turnsModel([[refund("a", 60), refund("b", 80, "1043")]]),
      middleware: (g) => [toolCallLimitMiddleware({ toolName: "issue_refund", runLimit: 1 }), g],
    });
    const out = await s.agent.invoke(ask("Refund $60 on 1042 and $80 on 1043."), config("limit-1"));
    expect(pendingApproval(out)).toBeUndefined();
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 60, toolCallId: "a" }]);
    expect(answersTo(out.messages, "b").map((m) => [m.status, String(m.content)])).toEqual([["error", "Tool call limit exceeded. Do not call 'issue_refund' again."]]);
    // eart decided both (policy allows each), ran the one LangChain let through, and nothing else.
    expect(await s.eventsOf("limit-1", "a")).toEqual(["policy.decided", "tool.started", "tool.succeeded"]);
    expect(await s.eventsOf("limit-1", "b")).toEqual(["policy.decided"]);
    expect(await s.auditLog.verify("limit-1")).toMatchObject({ ok: true });
  });

  it("listed before eart: a $740 refund waiting for sam is counted once; after the approval it runs once, and a $60 one over the limit is blocked", async () => {
    const s = setup({
      model: turnsModel([[refund("c1", 740), refund("c2", 60, "1043")]]),
      middleware: (g) => [toolCallLimitMiddleware({ toolName: "issue_refund", runLimit: 1 }), g],
    });
    const paused = await s.agent.invoke(ask(), config("limit-2"));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(s.refunds()).toEqual([]);
    const done = await s.agent.invoke(approve(), config("limit-2", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(answersTo(done.messages, "c1")).toHaveLength(1);
    expect(answersTo(done.messages, "c2").map((m) => m.status)).toEqual(["error"]);
    // The thread's count holds the calls LangChain let through: c1 once, although its message passed the hooks before and after the pause.
    expect((await stateOf(s.agent, "limit-2")).threadToolCallCount).toEqual({ issue_refund: 1 });
    expect(await s.eventsOf("limit-2", "c2")).toEqual(["policy.decided"]);
    expect((await s.eventsOf("limit-2", "c1")).filter((t) => t === "tool.succeeded")).toHaveLength(1);
    expect(await s.auditLog.verify("limit-2")).toMatchObject({ ok: true });
  });

  it("listed after eart too: the limit sees the paused message once (eart pauses in the tool step, not in another model step), and the refund sam approved runs once", async () => {
    const s = setup({
      model: turnsModel([[refund("c1", 740)]]),
      middleware: (g) => [g, toolCallLimitMiddleware({ toolName: "issue_refund", runLimit: 1 })],
    });
    await s.agent.invoke(ask(), config("limit-3"));
    // Counted once before the pause (one call, within the limit)…
    expect((await stateOf(s.agent, "limit-3")).runToolCallCount).toEqual({ issue_refund: 1 });
    const done = await s.agent.invoke(approve(), config("limit-3", "sam"));
    // …and not again after the answer: the approved call runs in the step that took the answer.
    expect((await stateOf(s.agent, "limit-3")).threadToolCallCount).toEqual({ issue_refund: 1 });
    expect(answersTo(done.messages, "c1").map((m) => m.status)).toEqual(["success"]);
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(await s.eventsOf("limit-3", "c1")).toEqual(["policy.decided", "approval.decided", "tool.started", "tool.succeeded"]);
    expect(await s.auditLog.verify("limit-3")).toMatchObject({ ok: true });
  });
});

describe("summarizationMiddleware with governanceMiddleware", () => {
  it.each(["before", "after"] as const)(
    "listed %s eart: older messages are summarized, and the thread paused for the 740-dollar refund resumes and runs it once, the approval bound to that call",
    async (where) => {
      const summarizer = scriptedModel(() => new AIMessage("SUMMARY: cara asked for a refund of order 1042; both orders were looked up."));
      const summarization = summarizationMiddleware({ model: summarizer, trigger: { messages: 4 }, keep: { messages: 2 } });
      const model = conversationModel();
      const s = setup({ model, middleware: (g) => (where === "before" ? [summarization, g] : [g, summarization]) });
      const threadId = `summary-${where}`;
      const paused = await s.agent.invoke(ask(), config(threadId));
      // Summarized before the third model call: the request and the first lookup are gone.
      expect(summarizer.callCount).toBe(1);
      const third = seenBy(model)[2]!;
      expect(String(third[0]!.content)).toMatch(/^Here is a summary of the conversation to date:\s+SUMMARY: cara asked/);
      expect(third.some((m) => ToolMessage.isInstance(m) && m.tool_call_id === "l1")).toBe(false);
      const held = (await stateOf(s.agent, threadId)).messages;
      expect(held.map((m) => m.getType())).toEqual(["human", "ai", "tool", "ai"]);
      expect(held.some((m) => ToolMessage.isInstance(m) && m.tool_call_id === "l1")).toBe(false);

      const request = pendingApproval(paused)!;
      expect(request.requests.map((r) => [r.toolCallId, r.name, r.args])).toEqual([["c1", "issue_refund", { orderId: "1042", amount: 740 }]]);
      expect(s.refunds()).toEqual([]);

      const done = await s.agent.invoke(approve(), config(threadId, "sam"));
      expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
      expect(String(done.messages.at(-1)!.content)).toMatch(/^done: .*"refunded"/);
      // Summarized again before the last call: eart's decisions live in its own channels, not in messages.
      expect(summarizer.callCount).toBe(2);
      const events = await s.auditLog.read(threadId);
      const decided = events.filter((e) => e.type === "approval.decided");
      expect(decided.map((e) => [e.data.toolCallId, e.data.digest, e.data.approverId])).toEqual([["c1", request.requests[0]!.digest, "sam"]]);
      expect((await s.eventsOf(threadId, "c1")).filter((t) => t === "tool.succeeded")).toHaveLength(1);
      expect(await s.auditLog.verify(threadId)).toMatchObject({ ok: true });
    },
  );
});

describe("modelFallbackMiddleware with governanceMiddleware", () => {
  const fallbackCalls: Call[][] = [[refund("c1", 740), refund("big", 9200, "1099")]];

  it("listed after eart: the fallback's calls are governed: the $740 refund pauses for sam and runs once, the $9,200 one is denied and never runs", async () => {
    const primary = fakeModel().alwaysThrow(new Error("primary model unavailable"));
    const fallback = turnsModel(fallbackCalls);
    const s = setup({ model: primary, middleware: (g) => [g, modelFallbackMiddleware(fallback)] });
    const paused = await s.agent.invoke(ask(), config("fallback-1"));
    expect(primary.callCount).toBe(1);
    expect(fallback.callCount).toBe(1);
    expect(pendingApproval(paused)?.requests.map((r) => [r.toolCallId, r.args])).toEqual([["c1", { orderId: "1042", amount: 740 }]]);
    expect(String(answersTo(paused.messages, "big")[0]?.content)).toMatch(/not allowed/);
    expect(s.refunds()).toEqual([]);
    // A refused answer is still eart's typed error.
    expect(await codeOf(s.agent.invoke(approve(), config("fallback-1", "cara")))).toBe("approval_self_approval");
    const done = await s.agent.invoke(approve(), config("fallback-1", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(String(done.messages.at(-1)!.content)).toBe("done after 1 turns");
    expect(await s.eventsOf("fallback-1", "big")).toEqual(["policy.decided"]);
    expect((await s.eventsOf("fallback-1", "c1")).filter((t) => t === "tool.succeeded")).toHaveLength(1);
    // The fallback's answers are what eart recorded as the model's output.
    expect((await s.auditLog.read("fallback-1")).filter((e) => e.type === "model.output")).toHaveLength(2);
    expect(await s.auditLog.verify("fallback-1")).toMatchObject({ ok: true });
  });

  it("listed before eart: the calls are still governed, and a refused answer is refused to its caller, typed (the pause is in the tool step, which the fallback does not wrap); the thread still waits", async () => {
    const primary = fakeModel().alwaysThrow(new Error("primary model unavailable"));
    const fallback = turnsModel(fallbackCalls);
    const s = setup({ model: primary, middleware: (g) => [modelFallbackMiddleware(fallback), g] });
    const paused = await s.agent.invoke(ask(), config("fallback-2"));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(eartErrorOf(await s.agent.invoke(approve(), config("fallback-2", "cara")).catch((e: unknown) => e))?.code).toBe("approval_self_approval");
    expect(pendingApproval(await s.agent.graph.getState(config("fallback-2")))?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    expect((await s.auditLog.read("fallback-2")).filter((e) => e.type === "approval.refused")).toHaveLength(1);
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(approve(), config("fallback-2", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(await s.eventsOf("fallback-2", "big")).toEqual(["policy.decided"]);
    expect(await s.auditLog.verify("fallback-2")).toMatchObject({ ok: true });
  });
});

describe("all four with governanceMiddleware in one agent", () => {
  it("the refund round trip: pause, sam approves, the refund runs once, the audit chain verifies", async () => {
    const primary = fakeModel().alwaysThrow(new Error("primary model unavailable"));
    const fallback = conversationModel();
    const summarizer = scriptedModel(() => new AIMessage("SUMMARY: cara asked for a refund of order 1042."));
    const s = setup({
      model: primary,
      middleware: (g) => [
        summarizationMiddleware({ model: summarizer, trigger: { messages: 4 }, keep: { messages: 2 } }),
        piiMiddleware("email", { strategy: "redact" }),
        toolCallLimitMiddleware({ toolName: "issue_refund", runLimit: 1 }),
        g,
        modelFallbackMiddleware(fallback),
      ],
    });
    const paused = await s.agent.invoke(sensitiveAsk(), config("all-four"));
    const request = pendingApproval(paused)!;
    expect(request.requests.map((r) => [r.toolCallId, r.args])).toEqual([["c1", { orderId: "1042", amount: 740 }]]);
    expect(s.refunds()).toEqual([]);
    const done = await s.agent.invoke(approve(), config("all-four", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(String(done.messages.at(-1)!.content)).toMatch(/^done: .*"refunded"/);

    // Each did its job: every answer came from the fallback, none saw the address, the history was
    // summarized, and the refund was counted once against the limit.
    expect(primary.callCount).toBe(fallback.callCount);
    expect(fallback.callCount).toBe(4);
    for (const messages of seenBy(fallback)) expect(text(messages)).not.toContain(EMAIL);
    expect(summarizer.callCount).toBe(2);
    expect((await stateOf(s.agent, "all-four")).threadToolCallCount).toEqual({ issue_refund: 1 });
    // And eart's: the approval bound to the call, the refund run once, the chain intact.
    const events = await s.auditLog.read("all-four");
    expect(events.filter((e) => e.type === "approval.decided").map((e) => [e.data.toolCallId, e.data.digest])).toEqual([["c1", request.requests[0]!.digest]]);
    expect((await s.eventsOf("all-four", "c1")).filter((t) => t === "tool.started")).toHaveLength(1);
    expect(await s.auditLog.verify("all-four")).toMatchObject({ ok: true });
  });
});
