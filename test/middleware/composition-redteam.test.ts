/**
 * A red-team pass: governanceMiddleware + guardAgent stacked with the rest of LangChain's
 * middleware catalogue (langchain 1.5: toolRetry, toolError, toolEmulator, modelRetry,
 * modelCallLimit, llmToolSelector, contextEditing, dynamicSystemPrompt, todoList, piiRedaction,
 * humanInTheLoop), each listed before and after eart. composition.test.ts and attacks.test.ts cover
 * piiMiddleware, toolCallLimit, summarization, modelFallback and hand-written middleware.
 *
 * How createAgent composes (node_modules/langchain/dist/agents/utils.js): the `wrapToolCall` /
 * `wrapModelCall` of the first middleware in the list is the outermost layer, so one listed before
 * eart catches whatever eart throws (its pause, its typed refusals); one listed after eart is
 * inside it. eart runs each governed tool call itself, so guardAgent refuses any other middleware
 * that wraps tool calls: the pass found toolRetry and toolError before eart turning the approval
 * pause or a refusal into the call's answer (the approved refund then never ran), and a
 * toolEmulator after eart never running (real refunds where emulated ones were meant).
 * The `it.fails` are what is still open, each with what goes wrong (the README lists them); a hole
 * since closed is a plain `it` whose comment says "Was a hole".
 */
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { fakeModel } from "@langchain/core/testing";
import { tool } from "@langchain/core/tools";
import { Command, MemorySaver } from "@langchain/langgraph";
import Database from "better-sqlite3";
import {
  ClearToolUsesEdit,
  contextEditingMiddleware,
  createAgent,
  createMiddleware,
  dynamicSystemPromptMiddleware,
  humanInTheLoopMiddleware,
  llmToolSelectorMiddleware,
  modelCallLimitMiddleware,
  modelRetryMiddleware,
  piiRedactionMiddleware,
  todoListMiddleware,
  toolEmulatorMiddleware,
  toolErrorMiddleware,
  toolRetryMiddleware,
  type AgentMiddleware,
} from "langchain";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { definePolicy, eartErrorOf, IdentityRegistry, MemoryAuditLog, MemoryEffectLedger, pendingApproval, pendingRecovery, type AuditEventInput } from "eart";
import { governanceMiddleware, guardAgent, type GovernanceMiddlewareOptions } from "eart/middleware";
import { scriptedModel } from "eart/testing";
import identities from "../../examples/refund/identities.json" with { type: "json" };
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { answersTo, ask, config, lookup, refund, registry, turnsModel } from "../support/refund.js";

const CARD = "4111 1111 1111 1111";
const CARD_RE = /4111[\s-]?1111[\s-]?1111[\s-]?1111/;

/**
 * The refund agent (real SQLite refunds table, MemorySaver) with the whole middleware list chosen
 * by the test. `failingRefund`: issue_refund writes its row, then the payment gateway fails (an
 * outcome eart cannot know: it hands the call to a human, `recovery_pending`).
 */
function setup(opts: { model: BaseChatModel; middleware: (g: AgentMiddleware) => AgentMiddleware[]; governance?: Partial<GovernanceMiddlewareOptions>; failingRefund?: boolean }) {
  const db = new Database(":memory:");
  const created = createRefundTools(db);
  const broken = tool(
    async ({ orderId, amount }: { orderId: string; amount: number }) => {
      db.prepare(`INSERT INTO refunds (order_id, amount, tool_call_id, created_at) VALUES (?, ?, 'gateway', 'now')`).run(orderId, amount);
      throw new Error("payment gateway 502");
    },
    { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) },
  );
  const tools = opts.failingRefund ? created.all.map((t) => (t.name === "issue_refund" ? broken : t)) : created.all;
  const auditLog = (opts.governance?.auditLog as MemoryAuditLog | undefined) ?? new MemoryAuditLog();
  const governance = governanceMiddleware({ identities: registry, policy: refundPolicy, ledger: new MemoryEffectLedger(), ...opts.governance, auditLog });
  const agent = guardAgent(createAgent({ model: opts.model, tools, checkpointer: new MemorySaver(), middleware: opts.middleware(governance) }), governance);
  const refunds = () => db.prepare(`SELECT order_id AS orderId, amount, tool_call_id AS toolCallId FROM refunds ORDER BY id`).all() as { orderId: string; amount: number; toolCallId: string }[];
  const types = async (threadId: string) => (await auditLog.read(threadId)).map((e) => e.type);
  return { agent, auditLog, db, refunds, types };
}

type Snapshot = { values: { messages: BaseMessage[]; todos?: unknown; _eart?: { decisions?: { toolCallId: string; status: string }[] } }; next: string[] };
const stateOf = async (agent: { graph: unknown }, threadId: string) => (agent.graph as { getState: (c: unknown) => Promise<Snapshot> }).getState(config(threadId));
const statusOf = async (agent: { graph: unknown }, threadId: string, id: string) => (await stateOf(agent, threadId)).values._eart?.decisions?.find((d) => d.toolCallId === id)?.status;
const approve = () => new Command({ resume: { decisions: [{ type: "approve" }] } });
/** The supervisor's answer to a recovery request for c1: it happened (the row is there). */
const markDone = (digest: string) => new Command({ resume: { decisions: [{ toolCallId: "c1", type: "mark_done", digest, result: { status: "refunded" } }] } });
const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: { message?: string }) => eartErrorOf(e)?.code ?? `not eart's: ${String(e?.message ?? e).slice(0, 200)}`);
const text = (messages: readonly BaseMessage[]) => messages.map((m) => JSON.stringify({ c: m.content, t: (m as AIMessage).tool_calls ?? null })).join("\n");
const seenBy = (model: unknown) => (model as { calls: { messages: BaseMessage[] }[] }).calls.map((c) => c.messages);
/** No retry waits in tests: LangChain's defaults (1 s, ×2, jitter) behave the same, only slower. */
const fast = { initialDelayMs: 0, jitter: false } as const;

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("middleware that wraps tool calls: guardAgent refuses it, typed, before anything runs", () => {
  const emulator = () => toolEmulatorMiddleware({ model: scriptedModel(() => new AIMessage(`Refund of $740 issued to card ${CARD}`)) });
  const wrappers: [string, () => AgentMiddleware][] = [
    // Before eart it caught the approval pause and answered the $740 call "failed after 3 attempts
    // with GraphInterrupt"; sam's approval was then accepted and the refund never ran.
    ["toolRetryMiddleware", () => toolRetryMiddleware(fast)],
    // Before eart it turned cara's refused self-approval into the call's answer: no error for her,
    // and sam's approval then ran nothing.
    ["toolErrorMiddleware", () => toolErrorMiddleware({ onError: (e: unknown) => `tool error: ${(e as Error).message}` })],
    // Before eart it answered the refund itself (the customer told "issued" before any approval);
    // after eart it never ran, and real refunds ran where emulated ones were meant.
    ["toolEmulatorMiddleware", emulator],
    ["a middleware of the application's own", () => createMiddleware({ name: "AuditTools", wrapToolCall: (request, handler) => handler(request) }) as AgentMiddleware],
  ];
  for (const [name, make] of wrappers) {
    it.each(["before", "after"] as const)(`${name} listed %s eart`, (where) => {
      const tools = createRefundTools(new Database(":memory:")).all;
      const governance = governanceMiddleware({ identities: registry, policy: refundPolicy, ledger: new MemoryEffectLedger() });
      const wrapper = make();
      const agent = createAgent({ model: turnsModel([[refund("c1", 740)]]), tools, checkpointer: new MemorySaver(), middleware: where === "before" ? [wrapper, governance] : [governance, wrapper] });
      let refused: unknown;
      try {
        guardAgent(agent, governance);
      } catch (error) {
        refused = error;
      }
      expect(eartErrorOf(refused)).toMatchObject({ code: "config_invalid", details: { field: "middleware" } });
      expect(String((refused as Error).message)).toContain(`"${String((wrapper as { name?: string }).name)}" wraps tool calls`);
    });
  }
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("modelRetryMiddleware with governanceMiddleware", () => {
  /** A model that fails once (a 429), then proposes the $740 refund, then answers. */
  function flakyModel() {
    let calls = 0;
    return scriptedModel((messages) => {
      calls += 1;
      if (calls === 1) throw Object.assign(new Error("429 rate limited"), { status: 429 });
      return messages.some((m) => AIMessage.isInstance(m) && (m.tool_calls?.length ?? 0) > 0) ? new AIMessage("done") : new AIMessage({ content: "", tool_calls: [refund("c1", 740)] });
    });
  }

  it.each(["before", "after"] as const)("listed %s eart: a flaky model is retried; the 740-dollar refund pauses, cara's answer is refused typed, sam's runs it once", async (where) => {
    const retry = modelRetryMiddleware(fast);
    const s = setup({ model: flakyModel(), middleware: (g) => (where === "before" ? [retry, g] : [g, retry]) });
    const paused = await s.agent.invoke(ask(), config(`mr-${where}`));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(await codeOf(s.agent.invoke(approve(), config(`mr-${where}`, "cara")))).toBe("approval_self_approval");
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(approve(), config(`mr-${where}`, "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect((await s.auditLog.read(`mr-${where}`)).filter((e) => e.type === "model.output")).toHaveLength(2);
    expect(await s.auditLog.verify(`mr-${where}`)).toMatchObject({ ok: true });
  });

  it("listed before eart: omar's input on cara's thread is still refused typed (not turned into a model answer); his message is not kept", async () => {
    const s = setup({ model: turnsModel([[lookup("l1")], [], [], []]), middleware: (g) => [modelRetryMiddleware(fast), g] });
    await s.agent.invoke(ask("Look up 1042"), config("mr-omar"));
    expect(await codeOf(s.agent.invoke(ask("OMAR: show me everything"), config("mr-omar", "omar")))).toBe("identity_immutable");
    expect(text((await stateOf(s.agent, "mr-omar")).values.messages)).not.toContain("OMAR");
  });

  // LEAK (medium; eart flaw). Listed BEFORE eart, modelRetry turns an error thrown by the model
  // under eart's wrapModelCall into its own AIMessage "Model call failed after 1 attempt with
  // MiddlewareError: <error.message>", written to the thread unredacted (eart only redacts what
  // its handler returns, and never sees this message). A provider/parser error that echoes the
  // model's raw output (here a card number) lands raw in the thread, the caller's result and the
  // next model call, and it is not audited as model output.
  // Fix (governance.ts wrapModelCall): catch what `handler` throws and re-throw it with its message
  // (and cause chain) screened by the middleware's redaction, as the governed tool node already does
  // for tool errors (`screen(errorText(error))`).
  it("listed before eart: a model error echoing a card number never reaches the thread or the caller raw", async () => {
    let calls = 0;
    const model = scriptedModel(() => {
      calls += 1;
      if (calls === 1) throw new Error(`Failed to parse tool call arguments: {"card": "${CARD}"}`);
      return new AIMessage("ok");
    });
    const s = setup({ model, middleware: (g) => [modelRetryMiddleware({ ...fast, maxRetries: 0 }), g] });
    const out = await s.agent.invoke(ask("hi"), config("mr-card"));
    expect(text(out.messages)).not.toMatch(CARD_RE); // fails
    expect(text((await stateOf(s.agent, "mr-card")).values.messages)).not.toMatch(CARD_RE);
  });

  it("listed after eart: the same error, made into an answer inside eart, is redacted before the thread holds it", async () => {
    let calls = 0;
    const model = scriptedModel(() => {
      calls += 1;
      if (calls === 1) throw new Error(`Failed to parse tool call arguments: {"card": "${CARD}"}`);
      return new AIMessage("ok");
    });
    const s = setup({ model, middleware: (g) => [g, modelRetryMiddleware({ ...fast, maxRetries: 0 })] });
    const out = await s.agent.invoke(ask("hi"), config("mr-card-after"));
    expect(text(out.messages)).toMatch(/Model call failed/);
    expect(text(out.messages)).not.toMatch(CARD_RE);
    expect(JSON.stringify(await s.auditLog.read("mr-card-after"))).not.toMatch(CARD_RE);
  });

  // Was a hole (medium; eart flaw): eart paused for a call the tools could not finish (recovery:
  // outcome unknown, here the refund row WAS written before the gateway failed) in the MODEL step
  // (inside wrapModelCall). Listed BEFORE eart, modelRetry caught that GraphInterrupt, retried,
  // then wrote "Model call failed after 3 attempts with GraphInterrupt: [ {…recovery request…} ]"
  // as the model's answer: the thread ended un-paused, c1 never got an answer, its record stayed
  // `recovery_pending`, and no human was asked about a refund that may have happened. Now the
  // message's only call is handed to a human in its own tool step, which no model-call wrapper
  // surrounds; the supervisor's answer is acted on there, once.
  it("listed before eart: a refund whose outcome is unknown still pauses the thread for a human, and the supervisor's answer settles it once", async () => {
    const s = setup({ failingRefund: true, governance: { recoveryRoles: ["supervisor"] }, model: turnsModel([[refund("c1", 60, "1043")]]), middleware: (g) => [modelRetryMiddleware(fast), g] });
    const out = await s.agent.invoke(ask(), config("mr-recovery"));
    expect(await s.types("mr-recovery")).toContain("tool.recovery_requested");
    const waiting = pendingRecovery(out);
    expect(waiting?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(text(out.messages)).not.toContain("GraphInterrupt");
    // The customer may not settle her own refund; the supervisor marks it done (the row is there).
    const done = markDone(waiting!.requests[0]!.digest);
    expect(await codeOf(s.agent.invoke(done, config("mr-recovery", "cara")))).toBe("approval_self_approval");
    const settled = await s.agent.invoke(done, config("mr-recovery", "sam"));
    expect(pendingRecovery(settled)).toBeUndefined();
    expect(answersTo(settled.messages, "c1").map((m) => m.status)).toEqual(["success"]);
    expect(s.refunds()).toEqual([{ orderId: "1043", amount: 60, toolCallId: "gateway" }]);
    const events = await s.auditLog.read("mr-recovery");
    expect(events.filter((e) => e.type === "tool.recovery_requested")).toHaveLength(1);
    expect(events.filter((e) => e.type === "tool.recovery_decided").map((e) => [e.data.resolverId, e.data.decision])).toEqual([["sam", "mark_done"]]);
    expect(await s.auditLog.verify("mr-recovery")).toMatchObject({ ok: true });
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("modelCallLimitMiddleware with governanceMiddleware", () => {
  it.each(["before", "after"] as const)("listed %s eart: a run limit of 1 does not skip the approval pause; sam's approval runs the refund once, then the limit ends the run", async (where) => {
    const limit = modelCallLimitMiddleware({ runLimit: 1, exitBehavior: "end" });
    const s = setup({ model: turnsModel([[refund("c1", 740)]]), middleware: (g) => (where === "before" ? [limit, g] : [g, limit]) });
    const paused = await s.agent.invoke(ask(), config(`mcl-${where}`));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const done = await s.agent.invoke(approve(), config(`mcl-${where}`, "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(answersTo(done.messages, "c1")).toHaveLength(1);
    expect(await s.auditLog.verify(`mcl-${where}`)).toMatchObject({ ok: true });
  });

  // Was a hole (medium; eart flaw in where it paused). In either position, modelCallLimit's
  // beforeModel hook jumps to END before eart's wrapModelCall runs, and eart paused for recovery
  // only inside wrapModelCall: the recovery request was dropped, the run ended with "Model call
  // limits exceeded", c1 (whose refund row exists) stayed `recovery_pending` with no answer, and
  // nobody was asked. Now the call's own tool step asks, before any model step.
  it.each(["before", "after"] as const)("listed %s eart: a refund whose outcome is unknown still pauses for a human when the model-call limit is reached; the supervisor's abandon answers it once", async (where) => {
    const limit = modelCallLimitMiddleware({ runLimit: 1, exitBehavior: "end" });
    const s = setup({ failingRefund: true, governance: { recoveryRoles: ["supervisor"] }, model: turnsModel([[refund("c1", 60, "1043")]]), middleware: (g) => (where === "before" ? [limit, g] : [g, limit]) });
    const out = await s.agent.invoke(ask(), config(`mcl-rec-${where}`));
    expect(await s.types(`mcl-rec-${where}`)).toContain("tool.recovery_requested");
    const waiting = pendingRecovery(out);
    expect(waiting?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const settled = await s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "abandon", digest: waiting!.requests[0]!.digest, message: "refunded by hand" }] } }), config(`mcl-rec-${where}`, "sam"));
    expect(pendingRecovery(settled)).toBeUndefined();
    expect(answersTo(settled.messages, "c1").map((m) => m.status)).toEqual(["error"]);
    expect(await statusOf(s.agent, `mcl-rec-${where}`, "c1")).toBe("failed");
    expect(s.refunds()).toHaveLength(1);
    expect(await s.auditLog.verify(`mcl-rec-${where}`)).toMatchObject({ ok: true });
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("llmToolSelectorMiddleware with governanceMiddleware", () => {
  it("listed before eart: a tool the selector left out is never run even when the model calls it (answered as unknown, audited)", async () => {
    const selector = fakeModel().structuredResponse({ tools: ["lookup_order"] });
    const s = setup({ model: turnsModel([[refund("c1", 60, "1043")]]), middleware: (g) => [llmToolSelectorMiddleware({ model: selector }), g] });
    const out = await s.agent.invoke(ask(), config("sel-1"));
    expect(s.refunds()).toEqual([]);
    expect(answersTo(out.messages, "c1").map((m) => m.status)).toEqual(["error"]);
    expect(await s.auditLog.verify("sel-1")).toMatchObject({ ok: true });
  });

  // LEAK (medium; eart flaw). governanceMiddleware keeps ONE gate for the whole agent, rebuilt for
  // whatever `request.tools` the latest model call saw, on ANY thread; a paused thread is answered
  // with `knownTools()` = that latest subset. With llmToolSelector before eart, omar's unrelated
  // thread narrows the tools to [lookup_order]; sam then approves cara's $740 refund: the approval
  // is accepted and audited (`approval.decided`), but runCalls cannot find issue_refund and
  // answers "Not run: issue_refund is not a tool this agent governs." Zero rows, and the audit
  // log records no outcome for the approved call. One tenant can void another's approvals.
  // Fix (governance.ts): answer paused threads (answerHere/runCalls/recoverHere) with the agent's
  // full tool list (agentTools from guardAgent), and key gates by tool set instead of one slot.
  it("listed before eart: another thread's narrower selection does not void sam's approval on cara's thread", async () => {
    const selector = fakeModel().structuredResponse({ tools: ["issue_refund", "lookup_order"] });
    const s = setup({ model: turnsModel([[refund("c1", 740)]]), middleware: (g) => [llmToolSelectorMiddleware({ model: selector }), g] });
    const paused = await s.agent.invoke(ask(), config("sel-a"));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    selector.structuredResponse({ tools: ["lookup_order"] });
    await s.agent.invoke(ask("Status of my order 2002?"), config("sel-b", "omar"));
    const done = await s.agent.invoke(approve(), config("sel-a", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]); // fails: []
    expect(answersTo(done.messages, "c1").map((m) => m.status)).toEqual(["success"]);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("contextEditingMiddleware (ClearToolUsesEdit) with governanceMiddleware", () => {
  const editing = () => contextEditingMiddleware({ edits: [new ClearToolUsesEdit({ trigger: { messages: 3 }, keep: { messages: 0 }, clearToolInputs: true })] });

  it.each(["before", "after"] as const)("listed %s eart: the model sees cleared tool uses, the 740-dollar refund still pauses and runs once after sam approves, the audit chain verifies", async (where) => {
    const model = turnsModel([[lookup("l1")], [refund("c1", 740)], []]);
    const s = setup({ model, middleware: (g) => (where === "before" ? [editing(), g] : [g, editing()]) });
    const paused = await s.agent.invoke(ask(), config(`ce-${where}`));
    expect(pendingApproval(paused)?.requests.map((r) => [r.toolCallId, r.args])).toEqual([["c1", { orderId: "1042", amount: 740 }]]);
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(approve(), config(`ce-${where}`, "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(text(seenBy(model).at(-1)!)).toContain("[cleared]");
    // eart's own record of what ran is intact.
    const events = await s.auditLog.read(`ce-${where}`);
    expect(events.find((e) => e.type === "tool.succeeded" && e.data.toolCallId === "c1")?.data.result).toMatch(/"refunded"/);
    expect(await s.auditLog.verify(`ce-${where}`)).toMatchObject({ ok: true });
  });

  /** What the thread holds of the executed refund once sam approved it. */
  async function heldRefund(agent: { invoke: (input: unknown, config: unknown) => Promise<unknown>; graph: unknown }, threadId: string) {
    await agent.invoke(ask(), config(threadId));
    await agent.invoke(approve(), config(threadId, "sam")).catch(() => undefined);
    const messages = (await stateOf(agent, threadId)).values.messages;
    const proposal = messages.find((m): m is AIMessage => AIMessage.isInstance(m) && (m.tool_calls ?? []).some((c) => c.id === "c1"));
    return { args: proposal?.tool_calls?.[0]?.args, answer: String(answersTo(messages, "c1")[0]?.content) };
  }

  // ClearToolUsesEdit edits the list of messages it is given in place (slots replaced, orphans
  // spliced). That list was the thread's own: listed after eart, the edits were checkpointed (the
  // executed refund's arguments became {} and its result "[cleared]"). eart now hands its model
  // call a copy of the list.
  it("listed after eart: the thread still holds the executed refund's arguments and result (editing is for the model call only)", async () => {
    const s = setup({ model: turnsModel([[lookup("l1")], [refund("c1", 740)], []]), middleware: (g) => [g, editing()] });
    expect(await heldRefund(s.agent, "ce-state-after")).toEqual({ args: { orderId: "1042", amount: 740 }, answer: expect.stringMatching(/"refunded"/) });
  });

  // Listed before eart, it edits createAgent's list before eart's model call is reached: the thread
  // loses what ran (eart's audit log still has it). createAgent does the same with no eart at all
  // (the control below): LangChain's own behaviour, out of eart's reach.
  it.fails("listed before eart: the thread still holds the executed refund's arguments and result", async () => {
    const s = setup({ model: turnsModel([[lookup("l1")], [refund("c1", 740)], []]), middleware: (g) => [editing(), g] });
    expect(await heldRefund(s.agent, "ce-state-before")).toEqual({ args: { orderId: "1042", amount: 740 }, answer: expect.stringMatching(/"refunded"/) });
  });

  it("the control: createAgent with contextEditingMiddleware and no eart edits its thread the same way", async () => {
    const db = new Database(":memory:");
    const agent = createAgent({ model: turnsModel([[lookup("l1")], [refund("c1", 740)], []]), tools: createRefundTools(db).all, checkpointer: new MemorySaver(), middleware: [editing()] });
    const held = await heldRefund(agent as never, "ce-state-none");
    expect(held.args).toEqual({});
    expect(held.answer).toBe("[cleared]");
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("dynamicSystemPromptMiddleware with governanceMiddleware", () => {
  it.each(["before", "after"] as const)("listed %s eart: a prompt built from the thread never carries the customer's card number raw; the refund still pauses", async (where) => {
    const prompt = dynamicSystemPromptMiddleware((state: { messages: BaseMessage[] }) => `The customer said: ${String(state.messages.filter((m) => HumanMessage.isInstance(m)).at(-1)?.content)}`);
    const model = turnsModel([[refund("c1", 740)]]);
    const s = setup({ model, middleware: (g) => (where === "before" ? [prompt as AgentMiddleware, g] : [g, prompt as AgentMiddleware]) });
    const paused = await s.agent.invoke(ask(`Refund order 1042, $740, to card ${CARD}`), config(`dsp-${where}`));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const seen = seenBy(model).map(text).join("\n");
    expect(seen).toContain("The customer said: Refund order 1042, $740, to card [REDACTED:card_number]");
    expect(seen).not.toMatch(CARD_RE);
  });

  // Was a hole (low; largely application misconfiguration): a prompt built from the application's
  // own runtime context (a card on file) reached the model raw: eart redacted what callers send,
  // tool results and model answers, never the system message. eart's wrapModelCall now redacts
  // `request.systemMessage` for the identity before its handler.
  it("listed before eart: a card number the application put in the system prompt is redacted before the model sees it", async () => {
    const prompt = dynamicSystemPromptMiddleware((_state: unknown, runtime: { context?: { card?: string } }) => `Card on file: ${runtime.context?.card ?? "none"}`);
    const model = turnsModel([[lookup("l1")]]);
    const s = setup({ model, middleware: (g) => [prompt as AgentMiddleware, g] });
    await s.agent.invoke(ask("Look up 1042"), { ...config("dsp-ctx"), context: { card: CARD } } as never);
    const seen = seenBy(model).map(text).join("\n");
    expect(seen).toContain("Card on file: [REDACTED:card_number]");
    expect(seen).not.toMatch(CARD_RE);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("todoListMiddleware with governanceMiddleware", () => {
  const todoCall = { id: "t1", name: "write_todos", args: { todos: [{ content: `refund to card ${CARD}`, status: "pending" }] } };

  it.each(["before", "after"] as const)("listed %s eart: write_todos (a middleware's own tool) is governed: the registry does not grant it, so it is denied and never writes state", async (where) => {
    const s = setup({ model: turnsModel([[todoCall]]), middleware: (g) => (where === "before" ? [todoListMiddleware(), g] : [g, todoListMiddleware()]) });
    const out = await s.agent.invoke(ask(), config(`todo-${where}`));
    expect(await statusOf(s.agent, `todo-${where}`, "t1")).toBe("denied");
    expect(String(answersTo(out.messages, "t1")[0]?.content)).toMatch(/not permitted to call write_todos/);
    const state = (await stateOf(s.agent, `todo-${where}`)).values;
    expect(state.todos ?? []).toEqual([]);
    expect(JSON.stringify(state)).not.toMatch(CARD_RE);
    expect(await s.auditLog.verify(`todo-${where}`)).toMatchObject({ ok: true });
  });

  it.each(["before", "after"] as const)("listed %s eart, write_todos allowed: it runs once, audited; its card number stays redacted, and the Command it returns cannot write past eart", async (where) => {
    const identitiesWithTodos = IdentityRegistry.fromObject({
      ...identities,
      roles: { ...identities.roles, customer: { ...identities.roles.customer, tools: [...identities.roles.customer.tools, "write_todos"] } },
      agents: identities.agents.map((a) => ({ ...a, tools: [...a.tools, "write_todos"] })),
    });
    const policy = definePolicy({
      name: "with-todos",
      rules: [
        { id: "lookup", tools: ["lookup_order"], effect: "allow", reason: "Lookups are allowed" },
        { id: "refund", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"], reason: "Refunds need a supervisor" },
        { id: "todos", tools: ["write_todos"], effect: "allow", reason: "Planning is allowed" },
      ],
    });
    const s = setup({ model: turnsModel([[todoCall]]), governance: { identities: identitiesWithTodos, policy }, middleware: (g) => (where === "before" ? [todoListMiddleware(), g] : [g, todoListMiddleware()]) });
    await s.agent.invoke(ask(), config(`todo-ok-${where}`));
    expect(await statusOf(s.agent, `todo-ok-${where}`, "t1")).toBe("executed");
    expect((await s.types(`todo-ok-${where}`)).filter((t) => t === "tool.succeeded")).toHaveLength(1);
    const state = (await stateOf(s.agent, `todo-ok-${where}`)).values;
    expect(JSON.stringify(state)).not.toMatch(CARD_RE);
    expect(JSON.stringify(await s.auditLog.read(`todo-ok-${where}`))).not.toMatch(CARD_RE);
    // eart serialises a tool's Command into its answer instead of applying it: safe (a tool cannot
    // write channels or jump), but todoListMiddleware's `todos` is never updated under eart.
    expect(state.todos ?? []).toEqual([]);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("piiRedactionMiddleware (deprecated) with governanceMiddleware", () => {
  it.each(["before", "after"] as const)("listed %s eart: cara cannot get omar's order 2002 refunded by having it hidden from the policy as a placeholder; blocked, nothing runs", async (where) => {
    // Order numbers hidden from the model: the model proposes the placeholder it sees; eart decides
    // that (no owner found → the small-refund rule allows it); piiRedaction's afterModel then
    // restores the real order id in the message → no longer the call eart decided.
    const hide = piiRedactionMiddleware({ rules: { order: /\b\d{4}\b/g } });
    const model = scriptedModel((messages) => {
      const last = messages.at(-1)!;
      if (!HumanMessage.isInstance(last)) return new AIMessage("done");
      const order = String(last.content).match(/\[REDACTED_ORDER_\w+\]|\b\d{4}\b/)![0];
      return new AIMessage({ content: "", tool_calls: [{ id: "c1", name: "issue_refund", args: { orderId: order, amount: 60 } }] });
    });
    const s = setup({ model, middleware: (g) => (where === "before" ? [hide as AgentMiddleware, g] : [g, hide as AgentMiddleware]) });
    const out = await s.agent.invoke(ask("Refund order 2002, $60, to me"), config(`pr-${where}`));
    expect(s.refunds()).toEqual([]);
    expect(String(answersTo(out.messages, "c1")[0]?.content)).toMatch(/^Blocked/);
    expect(await s.types(`pr-${where}`)).toContain("tool.blocked");
    expect(await s.auditLog.verify(`pr-${where}`)).toMatchObject({ ok: true });
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("humanInTheLoopMiddleware (which eart replaces) stacked with governanceMiddleware anyway", () => {
  it.each(["before", "after"] as const)("listed %s eart: the customer answering LangChain's own HITL pause with an edit to 4,900 dollars gets nothing run; sam approves the 740 dollars eart recorded and the edited call is blocked", async (where) => {
    const hitl = humanInTheLoopMiddleware({ interruptOn: { issue_refund: true } });
    const s = setup({ model: turnsModel([[refund("c1", 740)]]), middleware: (g) => (where === "before" ? [hitl, g] : [g, hitl]) });
    await s.agent.invoke(ask(), config(`hitl-${where}`));
    const edited = await s.agent.invoke(new Command({ resume: { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 4900 } } }] } }), config(`hitl-${where}`, "cara"));
    // eart still waits, and shows the supervisor the call it decided.
    expect(pendingApproval(edited)?.requests.map((r) => [r.toolCallId, r.args])).toEqual([["c1", { orderId: "1042", amount: 740 }]]);
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(approve(), config(`hitl-${where}`, "sam"));
    expect(s.refunds()).toEqual([]);
    expect(await s.types(`hitl-${where}`)).toContain("tool.blocked");
    expect(await s.auditLog.verify(`hitl-${where}`)).toMatchObject({ ok: true });
  });
});
