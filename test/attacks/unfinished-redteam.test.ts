/**
 * A red-team pass on the `thread_unfinished` refusal (graphs/resume-guard.ts `unfinishedCalls`):
 * new input is refused while the thread's newest AI message has a call eart recorded `allowed` or
 * `approved` that no tool message answers, until the thread is continued (`invoke(null)` by its
 * own human, or the operator's `continueThread`). Two ways it can go wrong: a thread STUCK FOR
 * GOOD (new input refused, and neither a continue nor `unfinishedThreads` / `continueThread`
 * moves it on), or a customer getting past it (a refund that may have paid is then lost to every
 * human: nothing asks, nothing in the inbox, the operator's listing forgets the thread).
 *
 * Attackers: cara (the customer, whose thread it is; she can call runs and `updateState`), a model
 * steered by a document (it chooses tool names and how many calls), and the deployment itself:
 * LangChain middleware composed with eart, a tool removed between deploys, a policy changed.
 *
 * Attacked: `createAgent` + `governanceMiddleware` + `guardAgent` (test/support/middleware-agent.ts)
 * with a custom `afterModel` that jumps to the end, `toolCallLimitMiddleware` (each exitBehavior,
 * listed before / after eart), `humanInTheLoopMiddleware` beside eart, structured output (tool
 * strategy), a tool named `extract-…`, `interruptBefore: ["tools"]`, a recursion-limit stop, a run
 * cancelled between the model and the tool step, an id-less call, a fork from an older checkpoint;
 * the prebuilt `createGovernedAgent` (test/support/refund.ts); a user's own graph with
 * `createGovernedToolPath` (graphs/tool-path.ts).
 *
 * Were holes in the refusal's first form (it held the thread for any unanswered call eart let run,
 * and read only the newest AI message), now closed (each a plain `it` with "Was a hole"): a run that
 * ENDED with an allowed call unanswered (a custom afterModel `jumpTo: "end"`; a tool named
 * `extract-…` that createAgent takes for structured output) or whose next step throws every time
 * (`toolCallLimitMiddleware({ exitBehavior: "error" })`) was refused new input for good; cara got
 * around the refusal by appending a message with `updateState`. Now the refusal holds only for a
 * call the effect ledger met or whose tool step is next, reads every unanswered call, and a state
 * write is refused like new input.
 *
 * HOLES (it.fails, each with its mechanism):
 * - MEDIUM: a user's graph with `createGovernedToolPath`: a run cut in the path's tool step leaves the
 *   decision records in the subgraph's checkpoint, none in the parent's state: cara's next message
 *   is taken, and the refund that paid is lost to every human.
 * - LOW: the tool removed by a deploy after a run was cut while it paid: the continue answers
 *   "Unknown tool" / "Not run" (checked before the effect ledger) and no human is asked.
 *
 * HELD (plain it): toolCallLimit "continue" / "end" before and after eart (the thread moves on,
 * blocked calls never ran); HITL beside eart (the customer's HITL answer moves the thread on);
 * `interruptBefore: ["tools"]`, a run cancelled between the model and the tool step, and a
 * recursion-limit stop (refused, then cara's continue runs the refund once and her message is
 * taken); the policy changed or the tool removed before anything ran (the continue answers "Not
 * run", nothing paid); the policy changed after a cut mid-refund (a supervisor is asked); a
 * structured-output call beside a refund; an id-less call; a fork from an older checkpoint (refused);
 * a wrapToolCall middleware that could answer with a Command and no ToolMessage (refused at guardAgent).
 */
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { Annotation, Command, END, MemorySaver, MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { createAgent, createMiddleware, humanInTheLoopMiddleware, toolCallLimitMiddleware, toolStrategy, type AgentMiddleware } from "langchain";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { definePolicy, eartErrorOf, IdentityRegistry, MemoryAuditLog, MemoryEffectLedger, pendingRecovery, type AuditLog, type PolicyEngine } from "eart";
import { continueThread, createGovernedAgent, createGovernedToolPath, defineApp, guardResumes, routeAfterGovernedTools, routeToGovernedTools, unfinishedThreads, type AppGraph } from "eart/graphs";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { createIdentityBinding, createModelNode, GovernedChannels } from "eart/nodes";
import { scriptedModel } from "eart/testing";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { middlewareRefundSetup } from "../support/middleware-agent.js";
import { answersTo, ask, config, refund, refundSetup, registry, turnsModel } from "../support/refund.js";

// ── fixtures ────────────────────────────────────────────────────────────────────────────────────

/** eart's error code of a refused run, "no error", or the message of an error that is not eart's. */
const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: unknown) => eartErrorOf(e)?.code ?? `not eart's: ${String((e as Error)?.message ?? e).slice(0, 200)}`);
const bare = (threadId: string) => ({ configurable: { thread_id: threadId } });

type Snapshot = { values: { messages: BaseMessage[]; decisions?: Rec[]; _eart?: { decisions?: Rec[] } }; next: string[]; tasks: readonly { interrupts?: readonly unknown[] }[] };
type Rec = { toolCallId: string; status: string };
type Agent = {
  invoke(input: unknown, config: object): Promise<unknown>;
  getState(config: object): Promise<Snapshot>;
  updateState(config: object, values: unknown, asNode?: string): Promise<unknown>;
};
/** The graph a guarded createAgent agent runs (the prebuilt agent is its own graph). */
const graphOf = (agent: unknown): Agent => ((agent as { graph?: unknown }).graph ?? agent) as Agent;
const state = (agent: unknown, threadId: string) => graphOf(agent).getState(bare(threadId));
const statusesOf = async (agent: unknown, threadId: string) => {
  const values = (await state(agent, threadId)).values;
  return (values._eart?.decisions ?? values.decisions ?? []).map((d) => [d.toolCallId, d.status]);
};
const said = async (agent: unknown, threadId: string, text: string) => (await state(agent, threadId)).values.messages.some((m) => HumanMessage.isInstance(m) && m.content === text);
/** The app an operator runs `eart pending` / `eart continue` with. */
const appOf = (agent: unknown, auditLog: AuditLog) => defineApp({ auditLog, graphs: { "support-agent": graphOf(agent) as unknown as AppGraph } });
const listed = async (agent: unknown, auditLog: AuditLog) => (await unfinishedThreads(appOf(agent, auditLog))).map((t) => t.threadId);

/** issue_refund's body: it pays, then the run is cut while it still holds the call (a cancelled run; a crash is the same for the thread). */
const paysThenCut = (controller: AbortController) => (real: (a: Record<string, unknown>, c: unknown) => Promise<unknown>) => async (args: Record<string, unknown>, cfg: unknown) => {
  await real(args, cfg);
  controller.abort(new Error("the worker went away"));
  await new Promise((r) => setTimeout(r, 20));
  return "refunded";
};
const refundSchema = z.object({ orderId: z.string(), amount: z.number() });

/** The prebuilt agent whose issue_refund pays and then has its run cut. */
function prebuiltCut(threadOpts: { checkpointer?: MemorySaver; auditLog?: MemoryAuditLog; ledger?: MemoryEffectLedger } = {}) {
  const controller = new AbortController();
  const s = refundSetup([[refund("c1", 60)]], {
    ...(threadOpts.checkpointer ? { checkpointer: threadOpts.checkpointer } : {}),
    ...(threadOpts.auditLog ? { auditLog: threadOpts.auditLog } : {}),
    tools: (t) => [t.lookupOrder, tool(async (args: Record<string, unknown>, cfg) => paysThenCut(controller)((a, c) => t.issueRefund.invoke(a as never, c as never))(args, cfg), { name: "issue_refund", description: t.issueRefund.description, schema: refundSchema }) as unknown as StructuredToolInterface],
    agent: { ledger: threadOpts.ledger ?? new MemoryEffectLedger(), recoveryRoles: ["supervisor"] },
  });
  return { ...s, controller };
}

/** The middleware agent whose issue_refund pays and then has its run cut. */
function middlewareCut(opts: Parameters<typeof middlewareRefundSetup>[1] = {}) {
  const controller = new AbortController();
  const s = middlewareRefundSetup([[refund("c1", 60)]], { ...opts, wrapRefund: paysThenCut(controller), governance: { recoveryRoles: ["supervisor"], ...opts.governance } });
  return { ...s, controller };
}

const KINDS = ["prebuilt", "middleware"] as const;
function cutOf(kind: (typeof KINDS)[number], shared: { checkpointer: MemorySaver; auditLog: MemoryAuditLog; ledger: MemoryEffectLedger; database?: Database.Database }) {
  if (kind === "prebuilt") {
    const s = prebuiltCut(shared);
    return { agent: s.agent as unknown, auditLog: s.auditLog, refunds: s.refunds, db: s.db, controller: s.controller };
  }
  const s = middlewareCut({ ...shared, database: shared.database ?? new Database(":memory:") });
  return { agent: s.agent as unknown, auditLog: s.auditLog, refunds: s.refunds, db: s.db, controller: s.controller };
}
const run = (agent: unknown, input: unknown, cfg: object) => (agent as { invoke(i: unknown, c: object): Promise<unknown> }).invoke(input, cfg);

// ── threads stuck for good ──────────────────────────────────────────────────────────────────────

describe("a run that ENDS with a call eart allowed and nothing answered", () => {
  // Was a hole (medium), in the first form of the refusal: graphs/resume-guard.ts unfinishedCalls
  // refused new input whatever the graph's next step was. A custom afterModel returning
  // `jumpTo: "end"` (LangChain's documented guardrail pattern) ends the run after eart's
  // wrapModelCall recorded the $60 refund `allowed`: `next` is empty, nothing to continue, and every
  // message cara sent after was refused, for good. Now only calls the effect ledger met, or whose
  // tool step is next, hold the thread: this one ran nothing and has nothing next.
  it.each(["before", "after"] as const)("a custom afterModel jumpTo end listed %s eart: cara's next message is taken (nothing ran, nothing to continue)", async (where) => {
    const stop = createMiddleware({ name: "StopAfterModel", afterModel: { canJumpTo: ["end"], hook: () => ({ jumpTo: "end" as const }) } }) as AgentMiddleware;
    const s = middlewareRefundSetup([[refund("c1", 60)]], where === "before" ? { before: [stop] } : { after: [stop] });
    const t = `jump-${where}`;
    expect(await codeOf(s.agent.invoke(ask(), config(t)))).toBe("no error");
    // The attack's setup: the run ended with c1 allowed and unanswered, nothing ran.
    expect({ next: (await state(s.agent, t)).next, statuses: await statusesOf(s.agent, t), refunds: s.refunds().length }).toEqual({ next: [], statuses: [["c1", "allowed"]], refunds: 0 });
    // Everything anyone can do: cara continues, the operator lists and continues.
    const continued = await codeOf(s.agent.invoke(null, config(t)));
    const operator = await codeOf(continueThread(appOf(s.agent, s.auditLog), t));
    const inList = await listed(s.agent, s.auditLog);
    // Live: cara's next message is taken.
    expect({ next: await codeOf(s.agent.invoke(ask("Anyone there?"), config(t))), continued, operator, inList }).toMatchObject({ next: "no error" });
  });

  // Was a hole (medium), in the first form of the refusal: langchain toolCallLimitMiddleware with
  // exitBehavior "error": its afterModel throws ToolCallLimitExceededError after eart allowed both
  // refunds in the model step (saved). The thread's next step is that afterModel: every continue
  // replays the throw, and new input was refused (thread_unfinished) for good. Now the refusal
  // holds only for a tool step that began or is next: the next message starts a new turn.
  it.each(["before", "after"] as const)("toolCallLimitMiddleware exitBehavior error listed %s eart: after the limit's error, cara's next message is taken", async (where) => {
    const limit = toolCallLimitMiddleware({ runLimit: 1, exitBehavior: "error" }) as AgentMiddleware;
    const s = middlewareRefundSetup([[refund("c1", 60), refund("c2", 50)]], where === "before" ? { before: [limit] } : { after: [limit] });
    const t = `limit-error-${where}`;
    // The attack's setup: the limit's error ended the run after eart allowed both calls; nothing ran.
    expect(await codeOf(s.agent.invoke(ask(), config(t)))).toMatch(/^not eart's: Tool call limit reached/);
    expect({ statuses: await statusesOf(s.agent, t), refunds: s.refunds().length }).toEqual({ statuses: [["c1", "allowed"], ["c2", "allowed"]], refunds: 0 });
    const continued = await codeOf(s.agent.invoke(null, config(t)));
    const operator = await codeOf(continueThread(appOf(s.agent, s.auditLog), t));
    // Live: after cara's continue and the operator's, her next message is taken.
    expect({ next: await codeOf(s.agent.invoke(ask("Anyone there?"), config(t))), continued, operator }).toMatchObject({ next: "no error" });
  });

  // Was a hole (low), in the first form of the refusal: langchain's createAgent model router
  // (ReactAgent #createModelRouter) ends the run when every call of the model's message is named
  // `extract-…` (its structured-output prefix), even for a tool of the agent; eart's wrapModelCall
  // allowed the call, and every message of the thread was refused for good. Now a call nothing ran
  // and no step is to run holds nothing.
  it("a model that calls only the agent's extract-invoice tool: cara's next message is taken", async () => {
    const identities = IdentityRegistry.fromObject({ roles: { customer: { tools: ["*"] } }, agents: [{ id: "support-agent", roles: ["support"], tools: ["extract-invoice"], dataScopes: [] }], users: [{ id: "cara", roles: ["customer"] }] });
    const policy = definePolicy({ name: "invoices", rules: [{ id: "extract", tools: ["extract-invoice"], effect: "allow" }] });
    let ran = 0;
    const extract = tool(async () => (ran++, "invoice 1042: $60"), { name: "extract-invoice", description: "Reads an invoice", schema: z.object({ orderId: z.string() }) });
    const auditLog = new MemoryAuditLog();
    const governance = governanceMiddleware({ identities, policy, auditLog, ledger: new MemoryEffectLedger() });
    const agent = guardAgent(createAgent({ model: turnsModel([[{ id: "x1", name: "extract-invoice", args: { orderId: "1042" } }]]), tools: [extract], checkpointer: new MemorySaver(), middleware: [governance] }), governance);
    expect(await codeOf(agent.invoke(ask(), config("extract")))).toBe("no error");
    // The attack's setup: x1 allowed, never run, the run ended.
    expect({ statuses: await statusesOf(agent, "extract"), ran, next: (await state(agent, "extract")).next }).toEqual({ statuses: [["x1", "allowed"]], ran: 0, next: [] });
    const continued = await codeOf(agent.invoke(null, config("extract")));
    const operator = await codeOf(continueThread(appOf(agent, auditLog), "extract"));
    expect({ next: await codeOf(agent.invoke(ask("Anyone there?"), config("extract"))), continued, operator }).toMatchObject({ next: "no error" });
  });
});

// ── getting around the refusal ──────────────────────────────────────────────────────────────────

describe("cara gets past the refusal after a run cut while her refund paid", () => {
  for (const kind of KINDS) {
    // Was a hole (medium), in the first form of the refusal: graphs/resume-guard.ts unfinishedCalls
    // read only `lastAIMessage`, which stops at the newest message that is not a tool message, and
    // the guarded updateState checked under the lock only records that wait: cara appended any
    // message (an AI "it went through") with updateState, and her next message was taken: the
    // refund that paid stayed `allowed` with its attempt open, lost to every human. Now every
    // unanswered call eart let run is read, and a state write is refused like new input.
    it(`${kind}: a message appended with updateState does not let cara's next message past the refund that may have paid`, async () => {
      const s = cutOf(kind, { checkpointer: new MemorySaver(), auditLog: new MemoryAuditLog(), ledger: new MemoryEffectLedger() });
      await codeOf(run(s.agent, ask(), { ...config("slip"), signal: s.controller.signal }));
      // The attack's setup: the refund paid, the thread is listed, input refused, and cara's write is taken.
      expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
      expect(await listed(s.agent, s.auditLog)).toEqual(["slip"]);
      expect(await codeOf(run(s.agent, ask("Hello?"), config("slip")))).toBe("thread_unfinished");
      const write = await codeOf(graphOf(s.agent).updateState(config("slip"), { messages: [new AIMessage("Your refund went through.")] }));
      const next = await codeOf(run(s.agent, ask("Great, and the other order?"), config("slip")));
      // Safe: the write or the message is refused, and the refund is still before a human.
      expect({ write, next }).not.toEqual({ write: "no error", next: "no error" });
      expect(await listed(s.agent, s.auditLog)).toEqual(["slip"]);
    });
  }

  // HOLE (medium): graphs/tool-path.ts createGovernedToolPath is a subgraph: the gate's `allowed`
  // record and the tool step's ledger attempt are in the subgraph's checkpoint; the parent's state
  // (what graphs/resume-guard.ts unfinishedCalls reads) holds no decision until the path finishes.
  // A run cut while the refund paid leaves the parent with the proposing message and no records:
  // cara's next message is taken, the path's checkpoint is dropped, no recovery request, nothing in
  // the inbox, unfinishedThreads forgets the thread.
  it.fails("a user's graph with createGovernedToolPath: cara's next message after a run cut while her refund paid is refused until the thread is continued", async () => {
    const db = new Database(":memory:");
    const real = createRefundTools(db);
    const controller = new AbortController();
    const cut = tool(async (args: { orderId: string; amount: number }, cfg) => paysThenCut(controller)((a, c) => real.issueRefund.invoke(a as never, c as never))(args, cfg), { name: "issue_refund", description: "Refund an order", schema: refundSchema });
    const tools = [real.lookupOrder, cut] as StructuredToolInterface[];
    const auditLog = new MemoryAuditLog();
    const ledger = new MemoryEffectLedger();
    const State = Annotation.Root({ ...MessagesAnnotation.spec, ...GovernedChannels });
    const app = guardResumes(
      new StateGraph(State)
        .addNode("bindIdentity", createIdentityBinding({ registry, auditLog, ledger }))
        .addNode("agent", createModelNode({ model: turnsModel([[refund("c1", 60)]]), tools, auditLog }))
        .addNode("tools", createGovernedToolPath({ policy: refundPolicy, tools, registry, auditLog, ledger, recoveryRoles: ["supervisor"] }))
        .addEdge(START, "bindIdentity")
        .addEdge("bindIdentity", "agent")
        .addConditionalEdges("agent", routeToGovernedTools, { tools: "tools", end: END })
        .addConditionalEdges("tools", routeAfterGovernedTools, { agent: "agent", end: END })
        .compile({ checkpointer: new MemorySaver() }),
      { auditLog, ledger },
    );
    await codeOf(app.invoke(ask(), { ...config("path"), signal: controller.signal }));
    // The attack's setup: the refund paid, the operator's listing shows the thread as stopped.
    expect((db.prepare("SELECT tool_call_id AS id FROM refunds").all() as { id: string }[]).map((r) => r.id)).toEqual(["c1"]);
    expect(await listed(app, auditLog)).toEqual(["path"]);
    // Safe: cara's message is refused and the thread is still listed to continue.
    expect(await codeOf(app.invoke(ask("Hello? Did it go through?"), config("path")))).toBe("thread_unfinished");
    expect(await listed(app, auditLog)).toEqual(["path"]);
  });

  it("a fork from the checkpoint before the refund (configurable.checkpoint_id) is refused; the thread still waits to be continued", async () => {
    const s = middlewareRefundSetup([[refund("c1", 60)]]);
    await s.agent.invoke(ask(), { ...config("fork"), interruptBefore: ["tools"] } as never);
    const history: { config: { configurable: { checkpoint_id: string } }; values: { messages?: unknown[] } }[] = [];
    for await (const h of (graphOf(s.agent) as unknown as { getStateHistory(c: object): AsyncIterable<(typeof history)[number]> }).getStateHistory(bare("fork"))) history.push(h);
    const before = history.find((h) => (h.values.messages?.length ?? 0) === 1);
    // The setup: an older checkpoint without the proposing message exists, and the thread refuses input.
    expect(before).toBeDefined();
    expect(await codeOf(s.agent.invoke(ask("Hello?"), config("fork")))).toBe("thread_unfinished");
    const fork = await codeOf(s.agent.invoke(ask("Start over"), { configurable: { ...config("fork").configurable, checkpoint_id: before!.config.configurable.checkpoint_id } }));
    expect(fork).not.toBe("no error");
    expect({ said: await said(s.agent, "fork", "Start over"), next: (await state(s.agent, "fork")).next }).toEqual({ said: false, next: ["tools"] });
  });
});

// ── a deploy between runs ───────────────────────────────────────────────────────────────────────

describe("the agent redeployed between the cut run and its continue", () => {
  for (const kind of KINDS) {
    // HOLE (low): nodes/governed-tool-node.ts (prebuilt: `tools.get(call.name)` → "Unknown tool",
    // status invalid) and middleware/governance.ts wrapToolCall (`!tool` → notGoverned: "Not run:
    // issue_refund is not a tool this agent governs") answer a call whose tool is gone BEFORE the
    // effect ledger is read. After a run cut while the refund paid (its attempt open), a deploy that
    // removes or renames issue_refund: cara's continue tells the model and her "not run", records it
    // as a tool failure, and asks no human about a payment that went out.
    it.fails(`${kind}: issue_refund removed after a run was cut while it paid: the continue hands the call to a supervisor`, async () => {
      const shared = { checkpointer: new MemorySaver(), auditLog: new MemoryAuditLog(), ledger: new MemoryEffectLedger(), database: new Database(":memory:") };
      const s = cutOf(kind, shared);
      await codeOf(run(s.agent, ask(), { ...config("gone"), signal: s.controller.signal }));
      // The attack's setup: the refund paid, and the new deploy has no issue_refund.
      expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
      const tools = createRefundTools(s.db);
      let next: unknown;
      if (kind === "prebuilt") {
        next = createGovernedAgent({ model: turnsModel([]), tools: [tools.lookupOrder], identities: registry, policy: refundPolicy, checkpointer: shared.checkpointer, auditLog: shared.auditLog, ledger: shared.ledger, recoveryRoles: ["supervisor"], skipChecks: ["policy_tool_unknown"] });
      } else {
        const governance = governanceMiddleware({ identities: registry, policy: refundPolicy, auditLog: shared.auditLog, ledger: shared.ledger, recoveryRoles: ["supervisor"] });
        next = guardAgent(createAgent({ model: turnsModel([]), tools: [tools.lookupOrder], checkpointer: shared.checkpointer, middleware: [governance] }), governance);
      }
      expect(await codeOf(run(next, null, config("gone")))).toBe("no error");
      // Safe: a supervisor is asked about the payment (listed in the inbox); the model is not told "not run".
      expect((await shared.auditLog.pending!()).map((p) => [p.kind, p.toolCallId])).toEqual([["recovery", "c1"]]);
      expect(s.refunds()).toHaveLength(1);
    });
  }

  it.each(["denied", "removed"] as const)("middleware: before anything ran (interruptBefore tools), the refund %s by the new deploy: cara's continue answers it, nothing pays, her next message is taken", async (change) => {
    const shared = { checkpointer: new MemorySaver(), auditLog: new MemoryAuditLog(), ledger: new MemoryEffectLedger(), database: new Database(":memory:") };
    const s = middlewareRefundSetup([[refund("c1", 60)]], shared);
    await s.agent.invoke(ask(), { ...config("redeploy"), interruptBefore: ["tools"] } as never);
    expect(await codeOf(s.agent.invoke(ask("Hello?"), config("redeploy")))).toBe("thread_unfinished");
    const strict: PolicyEngine = definePolicy({ name: "strict", rules: [{ id: "orders.lookup", tools: ["lookup_order"], effect: "allow" }, { id: "refunds.off", tools: ["issue_refund"], effect: "deny", reason: "No refunds today" }] });
    const tools = createRefundTools(shared.database);
    const governance = governanceMiddleware({ identities: registry, policy: change === "denied" ? strict : refundPolicy, auditLog: shared.auditLog, ledger: shared.ledger });
    const agent = guardAgent(createAgent({ model: turnsModel([]), tools: change === "removed" ? [tools.lookupOrder] : tools.all, checkpointer: shared.checkpointer, middleware: [governance] }), governance);
    expect(await codeOf(agent.invoke(null, config("redeploy")))).toBe("no error");
    expect(answersTo((await state(agent, "redeploy")).values.messages, "c1").map((m) => [m.status, String(m.content).slice(0, 8)])).toEqual([["error", "Not run:"]]);
    expect(s.refunds()).toEqual([]);
    expect(await codeOf(agent.invoke(ask("Thanks"), config("redeploy")))).toBe("no error");
  });

  it("prebuilt: the policy changed after a run was cut while the refund paid: cara's continue hands it to a supervisor, not to the new policy", async () => {
    const shared = { checkpointer: new MemorySaver(), auditLog: new MemoryAuditLog(), ledger: new MemoryEffectLedger() };
    const s = cutOf("prebuilt", shared);
    await codeOf(run(s.agent, ask(), { ...config("repolicy"), signal: s.controller.signal }));
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    const strict = definePolicy({ name: "strict", rules: [{ id: "orders.lookup", tools: ["lookup_order"], effect: "allow" }, { id: "refunds.off", tools: ["issue_refund"], effect: "deny", reason: "No refunds today" }] });
    const agent = createGovernedAgent({ model: turnsModel([]), tools: createRefundTools(s.db).all, identities: registry, policy: strict, checkpointer: shared.checkpointer, auditLog: shared.auditLog, ledger: shared.ledger, recoveryRoles: ["supervisor"] });
    expect(await codeOf(agent.invoke(null as never, config("repolicy")))).toBe("no error");
    expect(pendingRecovery(await agent.getState(bare("repolicy")))?.requests.map((r) => [r.toolCallId, r.reason])).toEqual([["c1", "outcome_unknown"]]);
    expect(await codeOf(agent.invoke(ask("Hello?"), config("repolicy")))).toBe("thread_awaiting_approval");
    expect(s.refunds()).toHaveLength(1);
  });
});

// ── compositions that hold ──────────────────────────────────────────────────────────────────────

describe("LangChain middleware beside eart that answers or waits", () => {
  it.each([
    ["continue", "before"],
    ["continue", "after"],
    ["end", "before"],
    ["end", "after"],
  ] as const)("toolCallLimitMiddleware exitBehavior %s listed %s eart: the blocked refund never runs and cara's next message is taken", async (exitBehavior, where) => {
    const limit = toolCallLimitMiddleware({ runLimit: 1, exitBehavior }) as AgentMiddleware;
    const s = middlewareRefundSetup([[refund("c1", 60), refund("c2", 50)]], where === "before" ? { before: [limit] } : { after: [limit] });
    const t = `limit-${exitBehavior}-${where}`;
    expect(await codeOf(s.agent.invoke(ask(), config(t)))).toBe("no error");
    // The setup: c2 was blocked by the limit (its answer is LangChain's), after eart allowed it.
    expect(answersTo((await state(s.agent, t)).values.messages, "c2").map((m) => String(m.content))).toEqual(["Tool call limit exceeded. Do not make additional tool calls."]);
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(exitBehavior === "continue" ? ["c1"] : []);
    expect(await codeOf(s.agent.invoke(ask("Thanks"), config(t)))).toBe("no error");
    expect(s.refunds().filter((r) => r.toolCallId === "c2")).toEqual([]);
  });

  it.each(["before", "after"] as const)("humanInTheLoopMiddleware listed %s eart: while it waits, her HITL answer runs the $60 refund once and her next message is taken", async (where) => {
    const hitl = humanInTheLoopMiddleware({ interruptOn: { issue_refund: true } }) as AgentMiddleware;
    const s = middlewareRefundSetup([[refund("c1", 60)]], where === "before" ? { before: [hitl] } : { after: [hitl] });
    const t = `hitl-${where}`;
    await s.agent.invoke(ask(), config(t));
    expect((await state(s.agent, t)).tasks.some((task) => (task.interrupts?.length ?? 0) > 0)).toBe(true);
    expect(await codeOf(s.agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), config(t)))).toBe("no error");
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(await codeOf(s.agent.invoke(ask("Thanks"), config(t)))).toBe("no error");
    expect(s.refunds()).toHaveLength(1);
  });

  it("a structured-output call beside a refund: the run ends on the structured answer, the refund never runs, and cara's next message is taken", async () => {
    const model = scriptedModel((messages: BaseMessage[]) =>
      messages.some((m) => AIMessage.isInstance(m)) ? new AIMessage("done") : new AIMessage({ content: "", tool_calls: [refund("c1", 60), { id: "s1", name: "refund_summary", args: { summary: "refunded" } }] }),
    );
    const db = new Database(":memory:");
    const auditLog = new MemoryAuditLog();
    const governance = governanceMiddleware({ identities: registry, policy: refundPolicy, auditLog, ledger: new MemoryEffectLedger() });
    const agent = guardAgent(createAgent({ model, tools: createRefundTools(db).all, checkpointer: new MemorySaver(), middleware: [governance], responseFormat: toolStrategy(z.object({ summary: z.string() }).meta({ title: "refund_summary" })) }), governance);
    const out = (await agent.invoke(ask(), config("structured"))) as { structuredResponse?: unknown };
    expect(out.structuredResponse).toEqual({ summary: "refunded" });
    expect(await codeOf(agent.invoke(ask("Thanks"), config("structured")))).toBe("no error");
    expect(db.prepare("SELECT * FROM refunds").all()).toEqual([]);
  });

  it("a middleware whose wrapToolCall could answer with a Command and no ToolMessage is refused at guardAgent", () => {
    const sneaky = createMiddleware({ name: "Shortcut", wrapToolCall: async () => new Command({ update: {} }) as never }) as AgentMiddleware;
    expect(() => middlewareRefundSetup([[refund("c1", 60)]], { after: [sneaky] })).toThrow(expect.objectContaining({ code: "config_invalid" }));
  });
});

// ── runs stopped before the tool step ───────────────────────────────────────────────────────────

describe("a run stopped between the model and the tool step (nothing ran)", () => {
  type Stop = "interruptBefore" | "cancelled" | "recursionLimit";
  const stops: Stop[] = ["interruptBefore", "cancelled", "recursionLimit"];
  it.each(stops)("%s: cara's message is refused; her continue runs the $60 refund once; then her message is taken", async (stop) => {
    const s = middlewareRefundSetup([[refund("c1", 60)]]);
    const t = `stop-${stop}`;
    if (stop === "interruptBefore") await s.agent.invoke(ask(), { ...config(t), interruptBefore: ["tools"] } as never);
    if (stop === "recursionLimit") await codeOf(s.agent.invoke(ask(), { ...config(t), recursionLimit: 1 } as never));
    if (stop === "cancelled") {
      const controller = new AbortController();
      await codeOf(
        (async () => {
          const stream = await (s.agent as unknown as { stream(i: unknown, c: unknown): Promise<AsyncIterable<Record<string, unknown>>> }).stream(ask(), { ...config(t), signal: controller.signal, streamMode: "updates" });
          for await (const chunk of stream) if ("model_request" in chunk) controller.abort(new Error("cancelled by the customer"));
        })(),
      );
    }
    // The setup: stopped before the tool step, c1 allowed, nothing ran.
    expect({ next: (await state(s.agent, t)).next, statuses: await statusesOf(s.agent, t), refunds: s.refunds().length }).toEqual({ next: ["tools"], statuses: [["c1", "allowed"]], refunds: 0 });
    expect(await codeOf(s.agent.invoke(ask("Hello?"), config(t)))).toBe("thread_unfinished");
    expect(await listed(s.agent, s.auditLog)).toEqual([t]);
    expect(await codeOf(s.agent.invoke(null, config(t)))).toBe("no error");
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(await codeOf(s.agent.invoke(ask("Thanks"), config(t)))).toBe("no error");
    expect(s.refunds()).toHaveLength(1);
  });

  it("an id-less call beside an allowed refund is refused before anything is stored; cara's next message runs", async () => {
    let turn = 0;
    const model = scriptedModel(() => (turn++ === 0 ? new AIMessage({ content: "", tool_calls: [{ name: "issue_refund", args: { orderId: "1042", amount: 60 } } as never, refund("c2", 50)] }) : new AIMessage("How can I help?")));
    const s = middlewareRefundSetup([], { model: model as never });
    expect(await codeOf(s.agent.invoke(ask(), config("idless")))).toBe("config_invalid");
    expect(await statusesOf(s.agent, "idless")).toEqual([]);
    expect(await codeOf(s.agent.invoke(ask("Hello?"), config("idless")))).toBe("no error");
    expect(s.refunds()).toEqual([]);
  });
});
