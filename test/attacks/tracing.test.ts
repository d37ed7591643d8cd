import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { RunnableLambda } from "@langchain/core/runnables";
import { tool } from "@langchain/core/tools";
import { LangChainTracer } from "@langchain/core/tracers/tracer_langchain";
import { Command, MemorySaver } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { createAgent } from "langchain";
import { Client } from "langsmith";
import { RunTree } from "langsmith/run_trees";
import { traceable } from "langsmith/traceable";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { MemoryAuditLog, MemoryEffectLedger } from "eart";
import { createGovernedAgent } from "eart/graphs";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { RedactingTracer, redactedTracing } from "eart/nodes";
import { scriptedModel } from "eart/testing";
import { standardRedaction } from "eart";
import identities from "../../examples/refund/identities.json" with { type: "json" };
import { refundScript } from "../../examples/refund/model.js";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { captureTraces, CARD, cards, lookupWithCard } from "../support/trace-capture.js";

/**
 * What LangChain's tracer sends to LangSmith while an eart agent runs. eart redacts a tool's
 * result, the model's answer and what the customer sends before the thread, the model and the
 * audit log hold them; with LangSmith tracing on (the default on LangGraph's platform once a key
 * is set), LangChain's tracer would send the raw ones as each run ended. Every test here sends the
 * traces to a local capture server through the real `langsmith` client and reads what arrived.
 */

const traces = captureTraces();
const traced = (from: number, clients?: readonly { awaitPendingTraceBatches(): Promise<void> }[]) => traces.traced(from, clients);

/** The refund conversation, the model repeating the card on file in its last answer. */
function scriptWithCard(messages: BaseMessage[]): AIMessage {
  const last = messages.at(-1);
  if (last && ToolMessage.isInstance(last) && last.name === "issue_refund" && last.status !== "error") return new AIMessage(`Refunded $740 to the card ${CARD}.`);
  return refundScript(messages);
}

/** A tool that reads the card on file back. */
const cardOnFile = tool(async () => `card on file ${CARD}`, { name: "card_on_file", description: "Reads the card on file", schema: z.object({}) });

function refundTools() {
  const tools = createRefundTools(new Database(":memory:"));
  return tools.all.map((t) => (t.name === "lookup_order" ? lookupWithCard : t));
}

type Runner = { invoke(input: unknown, config: unknown): Promise<unknown>; streamEvents?: unknown };

function middlewareAgent(options: { redaction?: false } = {}): Runner {
  const governance = governanceMiddleware({ identities, policy: refundPolicy, auditLog: new MemoryAuditLog(), ledger: new MemoryEffectLedger(), ...options });
  return guardAgent(createAgent({ model: scriptedModel(scriptWithCard), tools: refundTools(), checkpointer: new MemorySaver(), middleware: [governance] }), governance);
}

function prebuiltAgent(): Runner {
  return createGovernedAgent({ model: scriptedModel(scriptWithCard), tools: refundTools(), identities, policy: refundPolicy, checkpointer: new MemorySaver(), auditLog: new MemoryAuditLog(), ledger: new MemoryEffectLedger() });
}

function plainAgent(): Runner {
  return createAgent({ model: scriptedModel(scriptWithCard), tools: refundTools(), checkpointer: new MemorySaver() });
}

const ask = (threadId: string, extra: Record<string, unknown> = {}) => ({ configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" }, ...extra });
const approve = (threadId: string, extra: Record<string, unknown> = {}) => ({ configurable: { thread_id: threadId, user_id: "sam" }, ...extra });
const REQUEST = `Please refund order 1042 for $740. My card is ${CARD}.`;

/** The refund round trip: the customer's turn (pauses for sam on the governed agents), then sam's approval. */
async function conversation(agent: Runner, threadId: string, extra: Record<string, unknown> = {}): Promise<void> {
  const first = (await agent.invoke({ messages: [new HumanMessage(REQUEST)] }, ask(threadId, extra))) as { __interrupt__?: unknown[] };
  if (first.__interrupt__?.length) await agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), approve(threadId, extra));
}


describe("LangSmith tracing of an eart agent (LANGSMITH_TRACING=true)", () => {
  it("without eart (createAgent alone), the trace carries the card number: the tool's result and the model's answer as they were", async () => {
    process.env.LANGSMITH_TRACING = "true";
    const from = traces.server.requests.length;
    await conversation(plainAgent(), "plain-1");
    const text = await traced(from);
    expect(text).toContain("lookup_order");
    expect(cards(text)).toBeGreaterThanOrEqual(3);
  });

  it.each([
    ["createAgent + governanceMiddleware", middlewareAgent],
    ["the prebuilt governed agent", prebuiltAgent],
  ] as const)("%s: the runs reach LangSmith whole (the tool's, the model's, the graph's) but redacted: no card number anywhere", async (_name, make) => {
    process.env.LANGSMITH_TRACING = "true";
    const from = traces.server.requests.length;
    await conversation(make(), `governed-${_name.length}`);
    const text = await traced(from);
    // The runs are there, with their payloads: the lookup's result, the refund, the model's answer.
    expect(text).toContain("lookup_order");
    expect(text).toContain("issue_refund");
    expect(text).toContain("Refunded $740 to the card [REDACTED:card_number]");
    expect(text).toContain('\\"card\\":\\"[REDACTED:card_number]\\"');
    expect(cards(text)).toBe(0);
  });

  it("a tracer the caller passes (its own client and project, as LangGraph server makes one for langsmith_project) sends redacted too, to its own project", async () => {
    const from = traces.server.requests.length;
    const client = new Client({ apiUrl: traces.server.url, apiKey: "caller-key", autoBatchTracing: false });
    const tracer = new LangChainTracer({ client, replicas: [["caller-project", undefined]] });
    await conversation(middlewareAgent(), "caller-tracer-1", { callbacks: [tracer] });
    const text = await traced(from, [client]);
    expect(text).toContain("caller-project");
    // Sent by the caller's own client, to its own project…
    expect(traces.server.requests.slice(from).some((r) => r.headers["x-api-key"] === "caller-key")).toBe(true);
    expect(text).toContain("lookup_order");
    expect(cards(text)).toBe(0); // …redacted
  });

  it("streamEvents (LangGraph server's way of running a graph: its callbacks are a CallbackManager) is redacted too", async () => {
    process.env.LANGSMITH_TRACING = "true";
    const from = traces.server.requests.length;
    const agent = middlewareAgent() as unknown as { graph: { streamEvents(input: unknown, config: unknown): AsyncIterable<unknown> } };
    for await (const _ of agent.graph.streamEvents({ messages: [new HumanMessage(REQUEST)] }, { ...ask("events-1"), version: "v2" })) void _;
    for await (const _ of agent.graph.streamEvents(new Command({ resume: { decisions: [{ type: "approve" }] } }), { ...approve("events-1"), version: "v2" })) void _;
    const text = await traced(from);
    expect(text).toContain("issue_refund");
    expect(text).toContain("[REDACTED:card_number]");
    expect(cards(text)).toBe(0);
  });

  it("a tool that traces its own steps with langsmith's traceable: its child runs are redacted too", async () => {
    process.env.LANGSMITH_TRACING = "true";
    const fetchCard = traceable(async (orderId: string) => ({ orderId, card: CARD }), { name: "payments.fetch_card" });
    const lookup = tool(async ({ orderId }) => JSON.stringify(await fetchCard(orderId)), { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) });
    const tools = createRefundTools(new Database(":memory:")).all.map((t) => (t.name === "lookup_order" ? lookup : t));
    const governance = governanceMiddleware({ identities, policy: refundPolicy, auditLog: new MemoryAuditLog(), ledger: new MemoryEffectLedger() });
    const agent = guardAgent(createAgent({ model: scriptedModel(refundScript), tools, checkpointer: new MemorySaver(), middleware: [governance] }), governance);
    const from = traces.server.requests.length;
    await conversation(agent, "traceable-1");
    const text = await traced(from);
    expect(text).toContain("payments.fetch_card");
    expect(cards(text)).toBe(0);
  });

  it("an agent run inside a traceable of the application's own (LangChain adopts its client): the agent's runs are still redacted", async () => {
    process.env.LANGSMITH_TRACING = "true";
    const agent = middlewareAgent();
    const handle = traceable(async (threadId: string) => conversation(agent, threadId), { name: "support.handle_ticket" });
    const from = traces.server.requests.length;
    await handle("inside-traceable-1");
    const text = await traced(from);
    expect(text).toContain("support.handle_ticket");
    expect(text).toContain("lookup_order");
    expect(cards(text)).toBe(0);
  });

  it("with redaction: false the agent redacts nothing, traces included (the option says so)", async () => {
    process.env.LANGSMITH_TRACING = "true";
    const from = traces.server.requests.length;
    await conversation(middlewareAgent({ redaction: false }), "unredacted-1");
    expect(cards(await traced(from))).toBeGreaterThan(0);
  });
});

describe("redactedTracing and RedactingTracer (for graphs of your own)", () => {
  it("with tracing off and no tracer given, the configuration is returned as it is (nothing is traced, nothing costs)", () => {
    const config = { configurable: { thread_id: "t" } };
    expect(redactedTracing(config, standardRedaction())).toBe(config);
  });

  it("with tracing on, one redacting tracer is added, LangChain adds none of its own, and a caller's tracer is replaced by its redacting twin", () => {
    process.env.LANGSMITH_TRACING = "true";
    const redaction = standardRedaction();
    const added = redactedTracing({}, redaction)!.callbacks as unknown[];
    expect(added).toHaveLength(1);
    expect(added[0]).toBeInstanceOf(RedactingTracer);
    const mine = new LangChainTracer({ projectName: "mine" });
    const replaced = redactedTracing({ callbacks: [mine] }, redaction)!.callbacks as LangChainTracer[];
    expect(replaced).toHaveLength(1);
    expect(replaced[0]).toBeInstanceOf(RedactingTracer);
    expect(replaced[0]!.projectName).toBe("mine");
    // Applied twice (a graph inside a graph), it stays one tracer.
    expect(redactedTracing({ callbacks: replaced }, redaction)!.callbacks).toEqual(replaced);
  });

  it.each(["itself", "a copy LangChain makes of it (per-run tracing metadata)"] as const)("pointed at an enclosing run's own client (LangChain does so inside a traceable), %s keeps redacting", async (which) => {
    const from = traces.server.requests.length;
    const raw = new Client({ apiUrl: traces.server.url, apiKey: "k", autoBatchTracing: false });
    const made = new RedactingTracer({ redaction: standardRedaction() });
    const tracer = which === "itself" ? made : made.copyWithTracingConfig({ metadata: { ls_agent_type: "root" } });
    tracer.updateFromRunTree(new RunTree({ name: "outer", client: raw, tracingEnabled: true }));
    await cardOnFile.invoke({}, { callbacks: [tracer] });
    const text = await traced(from, [raw]);
    expect(text).toContain("card on file [REDACTED:card_number]");
    expect(cards(text)).toBe(0);
  });

  it("a replica with a client of its own (another workspace) gets the run redacted too", async () => {
    const from = traces.server.requests.length;
    const main = new Client({ apiUrl: traces.server.url, apiKey: "main-key", autoBatchTracing: false });
    const other = new Client({ apiUrl: traces.server.url, apiKey: "replica-key", autoBatchTracing: false });
    const tracer = new LangChainTracer({ client: main, replicas: [{ projectName: "main-project" }, { projectName: "replica-project", client: other }] });
    await cardOnFile.invoke({}, redactedTracing({ callbacks: [tracer] }, standardRedaction()));
    const text = await traced(from, [main, other]);
    const byReplica = traces.server.requests.slice(from).filter((r) => r.headers["x-api-key"] === "replica-key");
    expect(byReplica.map((r) => r.body.toString("utf8")).join("\n")).toContain("card on file [REDACTED:card_number]");
    expect(text).toContain("replica-project");
    expect(cards(text)).toBe(0);
  });

  it("a payload it cannot read as JSON (a cycle) is not sent at all: it fails closed", async () => {
    const from = traces.server.requests.length;
    const client = new Client({ apiUrl: traces.server.url, apiKey: "k", autoBatchTracing: false });
    const cyclic: Record<string, unknown> = { note: `card ${CARD}` };
    cyclic.self = cyclic;
    await RunnableLambda.from((_: unknown) => "done").invoke(cyclic, { callbacks: [new RedactingTracer({ client, redaction: standardRedaction() })] });
    const text = await traced(from, [client]);
    expect(text).toContain('"inputs":{"redacted":"unserialisable"}');
    expect(cards(text)).toBe(0);
  });

  it("a RedactingTracer passed to a run of a plain graph sends the run redacted", async () => {
    const from = traces.server.requests.length;
    const client = new Client({ apiUrl: traces.server.url, apiKey: "k", autoBatchTracing: false });
    await cardOnFile.invoke({}, { callbacks: [new RedactingTracer({ client, redaction: standardRedaction() })] });
    const text = await traced(from, [client]);
    expect(text).toContain("card on file [REDACTED:card_number]");
    expect(cards(text)).toBe(0);
  });
});

describe("what streamEvents hands the caller (LangGraph server's stream_mode \"events\")", () => {
  /** Every event of the customer's turn, as the caller receives them. */
  async function eventsOf(agent: Runner, threadId: string): Promise<{ event: string; name?: string }[]> {
    const events: { event: string; name?: string }[] = [];
    const stream = (agent.streamEvents as (input: unknown, options: unknown) => AsyncIterable<{ event: string; name?: string }>).call(agent, { messages: [new HumanMessage(REQUEST)] }, { ...ask(threadId), version: "v2" });
    for await (const e of stream) events.push(e);
    return events;
  }

  it("without eart, the tool's raw result reaches the caller in on_tool_end (the control)", async () => {
    const events = await eventsOf(plainAgent(), "events-plain");
    expect(events.some((e) => e.event === "on_tool_end" && e.name === "lookup_order")).toBe(true);
    expect(cards(JSON.stringify(events))).toBeGreaterThan(0);
  });

  it.each([
    ["createAgent + governanceMiddleware", middlewareAgent],
    ["the prebuilt governed agent", prebuiltAgent],
  ] as const)("%s: the tool's end event is there, its result redacted: no card number in any event", async (_name, make) => {
    const events = await eventsOf(make(), `events-${_name}`);
    const toolEnd = events.filter((e) => e.event === "on_tool_end" && e.name === "lookup_order");
    expect(toolEnd.length).toBeGreaterThan(0);
    expect(JSON.stringify(toolEnd)).toContain("[REDACTED:card_number]");
    expect(cards(JSON.stringify(events))).toBe(0);
  });

  it("an encoded event stream (bytes eart cannot read) is refused, typed, before the run", async () => {
    const agent = prebuiltAgent() as unknown as { streamEvents(input: unknown, options: unknown): unknown };
    expect(() => agent.streamEvents({ messages: [new HumanMessage(REQUEST)] }, { ...ask("events-encoded"), version: "v2", encoding: "text/event-stream" })).toThrow(/Invalid option "encoding"/);
  });
});
