import { awaitAllCallbacks } from "@langchain/core/callbacks/promises";
import { CallbackManager, type CallbackManagerForLLMRun } from "@langchain/core/callbacks/manager";
import { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { AIMessage, AIMessageChunk, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { ChatGenerationChunk, type ChatResult } from "@langchain/core/outputs";
import { RunnableLambda } from "@langchain/core/runnables";
import { tool } from "@langchain/core/tools";
import { LangChainTracer } from "@langchain/core/tracers/tracer_langchain";
import { FakeListChatModel } from "@langchain/core/utils/testing";
import { Command, END, MemorySaver, MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { createAgent } from "langchain";
import { Client } from "langsmith";
import { getCurrentRunTree, traceable } from "langsmith/traceable";
import { LangChainTracer as OtherCoreTracer } from "lowest-langchain-core/tracers/tracer_langchain";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineRedaction, MemoryAuditLog, MemoryEffectLedger, STANDARD_REDACTIONS } from "eart";
import { createGovernedAgent } from "eart/graphs";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { RedactingTracer } from "eart/nodes";
import { scriptedModel } from "eart/testing";
import identities from "../../examples/refund/identities.json" with { type: "json" };
import { refundScript } from "../../examples/refund/model.js";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { captureTraces, CARD, cardNamingModel, cards, lookupWithCard } from "../support/trace-capture.js";

/**
 * Red-team pass on the redacted LangSmith tracing of eart's agents (nodes/tracing.ts, wired in
 * graphs/governed-agent.ts `redactIncoming`). Every test runs one of the two eart agents with
 * redaction on, sends the traces through the real `langsmith` client to a local capture server,
 * and looks for the raw card number in what arrived: each asserts the trace arrived and holds no
 * raw card. The first group were holes when the pass found them (each comment says what leaked
 * and how badly); all are closed.
 */

const traces = captureTraces();

// ---------------------------------------------------------------------------------------------
// The agents: the refund conversation, whose order lookup returns the card on file.

type Agent = { invoke(input: unknown, config?: unknown): Promise<unknown>; withConfig(config: unknown): Agent; graph?: Graph };
// The compiled graph, as an application reaches it (typed loosely: the attacks call LangGraph's API as any caller would).
type Graph = any;
type Kind = "middleware" | "prebuilt";
const KINDS: Kind[] = ["middleware", "prebuilt"];

function makeAgent(kind: Kind, options: { lookup?: unknown; model?: unknown; execution?: unknown; modelRetry?: unknown; fallbackModels?: unknown[] } = {}): Agent {
  const tools = createRefundTools(new Database(":memory:")).all.map((t) => (t.name === "lookup_order" ? (options.lookup ?? lookupWithCard) : t));
  const model = options.model ?? scriptedModel(refundScript);
  if (kind === "prebuilt") {
    return createGovernedAgent({
      model: model as never,
      tools: tools as never,
      identities,
      policy: refundPolicy,
      checkpointer: new MemorySaver(),
      auditLog: new MemoryAuditLog(),
      ledger: new MemoryEffectLedger(),
      ...(options.execution ? { execution: options.execution as never } : {}),
      ...(options.modelRetry ? { modelRetry: options.modelRetry as never } : {}),
      ...(options.fallbackModels ? { fallbackModels: options.fallbackModels as never } : {}),
    }) as unknown as Agent;
  }
  const governance = governanceMiddleware({ identities, policy: refundPolicy, auditLog: new MemoryAuditLog(), ledger: new MemoryEffectLedger(), ...(options.execution ? { execution: options.execution as never } : {}) });
  return guardAgent(createAgent({ model: model as never, tools: tools as never, checkpointer: new MemorySaver(), middleware: [governance] }), governance) as unknown as Agent;
}
/** The compiled LangGraph graph of the agent (the prebuilt agent is one; createAgent's is `.graph`). */
const graphOf = (agent: Agent): Graph => agent.graph ?? agent;

let threads = 0;
const thread = (name: string) => `${name}-${++threads}`;
const ask = (threadId: string, extra: Record<string, unknown> = {}) => ({ configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" }, ...extra });
const REQUEST = `Please refund order 1042 for $740. My card is ${CARD}.`;
const request = () => ({ messages: [new HumanMessage(REQUEST)] });

/** A LangSmith client of the caller's own (sends every run as it happens). */
const callerClient = () => new Client({ apiUrl: traces.server.url, apiKey: "caller-key", autoBatchTracing: false });

type Flushable = { awaitPendingTraceBatches(): Promise<void> };
const traced = (from: number, clients: readonly Flushable[] = []) => traces.traced(from, clients);

/** Runs `attack`, and returns what reached the capture server meanwhile. */
async function tracedDuring(attack: () => Promise<unknown>, clients: readonly Flushable[] = []): Promise<string> {
  const from = traces.server.requests.length;
  await attack();
  return traced(from, clients);
}


/** The trace arrived (the marker run is there) and carries no raw card. */
function expectRedactedTrace(text: string, marker = "lookup_order"): void {
  expect(text).toContain(marker);
  expect(cards(text)).toBe(0);
}

const drain = async (stream: AsyncIterable<unknown>) => {
  for await (const _ of stream) void _;
};

/** A canned-answer chat model (its answers are among its constructor options) that "binds" tools by ignoring them. */
class TalkingModel extends FakeListChatModel {
  override bindTools() {
    return this as never;
  }
}

/** A chat model (not serialisable: nothing of it in `serialized`) that streams its answer one character at a time. */
class StreamingAnswerModel extends BaseChatModel {
  constructor(private readonly answer: string) {
    super({});
  }
  _llmType(): string {
    return "streaming-answer";
  }
  override bindTools() {
    return this as never;
  }
  async _generate(): Promise<ChatResult> {
    return { generations: [{ text: this.answer, message: new AIMessage(this.answer) }] };
  }
  override async *_streamResponseChunks(_messages: BaseMessage[], _options: unknown, runManager?: CallbackManagerForLLMRun): AsyncGenerator<ChatGenerationChunk> {
    for (const ch of this.answer) {
      const chunk = new ChatGenerationChunk({ text: ch, message: new AIMessageChunk(ch) });
      yield chunk;
      await runManager?.handleLLMNewToken(ch, undefined, undefined, undefined, undefined, { chunk });
    }
  }
}

// ---------------------------------------------------------------------------------------------

describe("found by the pass, closed: a raw card number reached LangSmith while the agent's redaction was on", () => {
  // Was CRITICAL. Runnable.transform (what RunnableSequence.stream calls on every step, so
  // `prep.pipe(agent.graph).stream(...)`) goes straight to Pregel._streamIterator: redactIncoming
  // wraps only `graph.stream`, so neither the input redaction nor redactedTracing (nor
  // guardResumes: lock, caller-input and resume checks) runs. LangChain's own tracer sends the
  // raw request in the graph's, every node's and every model call's inputs, and the raw card is
  // also checkpointed in the thread.
  // Now: a guarded graph's transform is refused, typed, before anything runs or is traced.
  it.each(KINDS)("%s: piped into a RunnableSequence and streamed (the graph's transform): refused, typed; nothing runs, nothing is checkpointed", async (kind) => {
    process.env.LANGSMITH_TRACING = "true";
    const graph = graphOf(makeAgent(kind));
    const threadId = thread("pipe");
    const from = traces.server.requests.length;
    await expect(
      (async () => drain(await RunnableLambda.from((x: unknown) => x).pipe(graph as never).stream(request(), ask(threadId))))(),
    ).rejects.toThrow(/guarded graph runs through invoke, stream or streamEvents/);
    await awaitAllCallbacks();
    const text = traces.server.requests.slice(from).map((r) => r.body.toString("utf8")).join("\n");
    // Nothing of the agent ran (the application's own sequence traced its own input: not eart's to redact).
    expect(text).not.toContain("lookup_order");
    expect(text).not.toContain("model_request");
    expect((await (graph as unknown as { getState(c: unknown): Promise<{ values: { messages?: unknown[] } }> }).getState(ask(threadId))).values.messages ?? []).toEqual([]);
  });

  // Was HIGH. An application's own traced run (a node of its graph, a tool of another agent, a
  // RunnableLambda) with the caller's tracer in its callbacks and tracing off in the environment
  // calls the agent without passing its config on. LangGraph takes the enclosing run's callbacks
  // from AsyncLocalStorage (ensureLangGraphConfig merges them in); redactedTracing only looks at
  // `options.callbacks` and the env, so it returns the config unchanged and the caller's raw
  // tracer traces the agent's tool results. (nodes/tracing.ts redactedTracing: `if (!fromEnv &&
  // !handlers.some(isTracer)) return config`.)
  it.each(KINDS)("%s: called from inside an application's traced graph node (the tracer reaches the agent through AsyncLocalStorage)", async (kind) => {
    const client = callerClient();
    const agent = makeAgent(kind);
    const outer = new StateGraph(MessagesAnnotation)
      .addNode("support", async () => {
        await agent.invoke(request(), ask(thread("als-off")));
        return {};
      })
      .addEdge(START, "support")
      .addEdge("support", END)
      .compile();
    const text = await tracedDuring(() => outer.invoke({ messages: [new HumanMessage("ticket 7")] }, { callbacks: [new LangChainTracer({ client })] }), [client]);
    expectRedactedTrace(text);
  });

  // Was HIGH. A tracer bound with withConfig lives in the copy's own config (Pregel merges
  // `this.config` with the run's options in ensureLangGraphConfig). The withConfig overrides in
  // createGovernedAgent and guardAgent redact what callers send but pass `config.callbacks`
  // through untouched, and redactIncoming's stream only redacts `options`: with tracing off the
  // bound raw tracer is the only one; with tracing on it runs beside the redacting one.
  it.each([
    ["middleware", "graph.withConfig", false],
    ["middleware", "agent.withConfig", true],
    ["prebuilt", "withConfig", false],
    ["prebuilt", "withConfig", true],
  ] as const)("%s: a tracer bound with %s (LANGSMITH_TRACING=%s)", async (kind, how, envOn) => {
    if (envOn) process.env.LANGSMITH_TRACING = "true";
    const client = callerClient();
    const agent = makeAgent(kind);
    const bound = (how === "agent.withConfig" ? agent : graphOf(agent)).withConfig({ callbacks: [new LangChainTracer({ client })] });
    const text = await tracedDuring(() => bound.invoke(request(), ask(thread("withconfig"))), [client]);
    expectRedactedTrace(text);
  });

  // Was HIGH. Programmatic tracing without the env: a `traceable({ tracingEnabled: true })` around
  // the agent. LangChain turns tracing on from the enclosing run tree
  // (`traceableRunTree?.tracingEnabled ?? isTracingEnabled()` in CallbackManager._configureSync)
  // and adds its own plain LangChainTracer; eart's tracingFromEnv() reads the env only.
  it.each(KINDS)("%s: inside a traceable with tracingEnabled: true and no tracing env", async (kind) => {
    const client = callerClient();
    const agent = makeAgent(kind);
    const handle = traceable(async (ticket: string) => agent.invoke(request(), ask(thread(ticket))), { name: "support.handle_ticket", tracingEnabled: true, client });
    const text = await tracedDuring(() => handle("traceable-enabled"), [client]);
    expectRedactedTrace(text, "support.handle_ticket");
    expect(text).toContain("lookup_order");
  });

  // Was MEDIUM. isTracer recognises a tracer by `instanceof LangChainTracer`, which LangChain answers
  // by `name === "langchain_tracer"`: a subclass that names itself (for its logs, or to run
  // beside LangChain's default one) is not recognised, not replaced, and sends raw (with tracing
  // off it is the only tracer; with tracing on it runs beside eart's).
  it.each(KINDS)("%s: a LangChainTracer subclass with a name of its own, passed in callbacks", async (kind) => {
    class NamedTracer extends LangChainTracer {
      override name = "payments_langsmith_tracer";
    }
    const client = callerClient();
    const text = await tracedDuring(() => makeAgent(kind).invoke(request(), ask(thread("named"), { callbacks: [new NamedTracer({ client })] })), [client]);
    expectRedactedTrace(text);
  });

  // Was MEDIUM. updateState / bulkUpdateState (an operator's edit, LangGraph Studio) run the node's
  // writers as a traced RunnableSequence ("<graph>UpdateState"), with the caller's config. The
  // wrapper in redactIncoming redacts the messages in the values but does not pass the config
  // through redactedTracing: LangChain's plain tracer sends the run's metadata (config.metadata,
  // configurable values it copies there) and every value that is not a message.
  it.each(KINDS.flatMap((kind) => [[kind, "metadata"], [kind, "a value that is not a message"]] as const))("%s: updateState traced by LangChain's own tracer (%s)", async (kind, variant) => {
    process.env.LANGSMITH_TRACING = "true";
    const graph = graphOf(makeAgent(kind));
    const id = thread("update-state");
    // A $60 refund runs without a pause: a thread waiting for a human takes no state write.
    await graph.invoke({ messages: [new HumanMessage(`Please refund order 1043 for $60. My card is ${CARD}.`)] }, ask(id));
    const text = await tracedDuring(() =>
      variant === "metadata"
        ? graph.updateState({ ...ask(id), metadata: { operator_note: `customer read out ${CARD}` } }, { messages: [new AIMessage("An operator note.")] })
        : graph.updateState(ask(id), { messages: [new AIMessage("An operator note.")], note: `customer read out ${CARD}` }),
    );
    expectRedactedTrace(text, "UpdateState");
  });

  // Was MEDIUM. PAYLOAD in nodes/tracing.ts is inputs, outputs, error, events, extra: a run's `tags`
  // go out as given, on every run of the agent (LangChain copies inheritable tags to each child).
  // Tags are caller-controlled (a ticket label, LangGraph server's run tags, a tracer's `tags`).
  it.each(KINDS.flatMap((kind) => [[kind, "config.tags"], [kind, "the tracer's own tags"]] as const))("%s: a card in %s", async (kind, where) => {
    const client = callerClient();
    const label = `ticket card ${CARD}`;
    const config =
      where === "config.tags" ? ask(thread("tags"), { tags: [label], callbacks: [new LangChainTracer({ client })] }) : ask(thread("tags"), { callbacks: [new LangChainTracer({ client, tags: [label] })] });
    const text = await tracedDuring(() => makeAgent(kind).invoke(request(), config), [client]);
    expectRedactedTrace(text);
  });

  // Was MEDIUM-LOW. `runName` becomes the root run's `name`, which is not in PAYLOAD either.
  it.each(KINDS)("%s: a card in runName (the root run's name)", async (kind) => {
    process.env.LANGSMITH_TRACING = "true";
    const text = await tracedDuring(() => makeAgent(kind).invoke(request(), ask(thread("run-name"), { runName: `refund for card ${CARD}` })));
    expectRedactedTrace(text);
  });

  // Was LOW-MEDIUM. A traceable step inside a tool attaches what it fetched (a statement, an
  // invoice): run attachments go out as multipart parts that the redacting client never looks at.
  it.each(KINDS)("%s: a text attachment of a traceable child run inside a tool", async (kind) => {
    process.env.LANGSMITH_TRACING = "true";
    const statement = traceable(
      async (orderId: string) => {
        const run = getCurrentRunTree();
        run.attachments = { ...(run.attachments ?? {}), statement: ["text/plain", new TextEncoder().encode(`Statement for card ${CARD}`)] };
        return { orderId };
      },
      { name: "payments.statement" },
    );
    const lookup = tool(async ({ orderId }) => JSON.stringify(await statement(orderId)), { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) });
    const text = await tracedDuring(() => makeAgent(kind, { lookup }).invoke(request(), ask(thread("attachment"))));
    expectRedactedTrace(text, "payments.statement");
  });

  // Was LOW-MEDIUM. A caller's own RedactingTracer (the README's recipe for graphs of your own), made
  // with another redaction (here: national ids only). RedactingTracer.of makes the agent's twin
  // over `tracer.client`, which is already a redacting proxy, and redactingClient returns any
  // client marked REDACTING as it is, whatever redaction it applies: the agent's own redaction
  // is never applied and the card goes out.
  it.each(KINDS)("%s: a caller's RedactingTracer built with a narrower redaction", async (kind) => {
    const client = callerClient();
    const idsOnly = defineRedaction(STANDARD_REDACTIONS.filter((rule) => rule.id === "national_id"));
    const text = await tracedDuring(() => makeAgent(kind).invoke(request(), ask(thread("narrow"), { callbacks: [new RedactingTracer({ client, redaction: idsOnly })] })), [client]);
    expectRedactedTrace(text);
  });

  // Was LOW. A run's `serialized` (everything a serialisable component was constructed with, secrets
  // aside: a chat model's kwargs) goes out as it is. Here a canned-answer model; any model
  // option holding customer data does the same.
  it("prebuilt: the model's constructor options (the LLM run's `serialized`)", async () => {
    process.env.LANGSMITH_TRACING = "true";
    const model = new TalkingModel({ responses: [`Your card on file is ${CARD}.`] });
    const text = await tracedDuring(() => makeAgent("prebuilt", { model }).invoke({ messages: [new HumanMessage("Which card do you have for me?")] }, ask(thread("serialized"))));
    expectRedactedTrace(text, "Your card on file is [REDACTED:card_number]");
  });
});

// ---------------------------------------------------------------------------------------------

describe("attacks that held: the trace arrives, redacted", () => {
  describe.each(KINDS)("%s", (kind) => {
    it("a card in config.metadata, in configurable values and in the thread id (all become run metadata: redacted)", async () => {
      process.env.LANGSMITH_TRACING = "true";
      const config = { configurable: { ...ask(thread(`t-${CARD}`)).configurable, note: CARD }, metadata: { note: CARD } };
      expectRedactedTrace(await tracedDuring(() => makeAgent(kind).invoke(request(), config)));
    });

    it("a tool that throws with the card in its message, then retries and a fallback value with the card", async () => {
      process.env.LANGSMITH_TRACING = "true";
      const failing = tool(
        async () => {
          throw new Error(`card ${CARD} declined by the bank`);
        },
        { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) },
      );
      const execution = { lookup_order: { retry: { attempts: 2, initialDelayMs: 1, jitter: false }, fallback: { value: `fallback for card ${CARD}` } } };
      const text = await tracedDuring(() => makeAgent(kind, { lookup: failing, execution }).invoke(request(), ask(thread("tool-throws"))));
      expectRedactedTrace(text);
      expect(text).toContain("declined by the bank");
    });

    it("a tool timed out, whose abort error carries the card", async () => {
      process.env.LANGSMITH_TRACING = "true";
      const slow = tool(
        async (_args, config) =>
          new Promise<string>((resolve, reject) => {
            const timer = setTimeout(() => resolve("late"), 500);
            config?.signal?.addEventListener("abort", () => {
              clearTimeout(timer);
              reject(new Error(`aborted while charging ${CARD}`));
            });
          }),
        { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) },
      );
      const text = await tracedDuring(() => makeAgent(kind, { lookup: slow, execution: { lookup_order: { timeout: 20 } } }).invoke(request(), ask(thread("timeout"))));
      expectRedactedTrace(text);
    });

    it("a model that fails with the card in its error (retries and a fallback model on the prebuilt agent)", async () => {
      process.env.LANGSMITH_TRACING = "true";
      const failing = (what: string) =>
        scriptedModel(() => {
          throw new Error(`${what} echoed ${CARD}`);
        });
      const options = kind === "prebuilt" ? { model: failing("gateway"), modelRetry: { attempts: 2, initialDelayMs: 1, jitter: false }, fallbackModels: [failing("fallback")] } : { model: failing("gateway") };
      const text = await tracedDuring(() => makeAgent(kind, options).invoke(request(), ask(thread("model-fails"))).catch(() => undefined));
      expectRedactedTrace(text, "echoed");
    });

    it.each([
      ["a reject message with the card", { decisions: [{ type: "reject", message: `No: card ${CARD} is blocked` }] }],
      ["garbage keys and values carrying the card (refused)", { [CARD]: CARD, decisions: [{ type: "approve", [CARD]: 1 }] }],
      ["a bare string carrying the card (refused)", `reject ${CARD}`],
    ] as const)("a resume: %s", async (_what, resume) => {
      process.env.LANGSMITH_TRACING = "true";
      const agent = makeAgent(kind);
      const id = thread("resume");
      await agent.invoke(request(), ask(id));
      const text = await tracedDuring(() => agent.invoke(new Command({ resume }), { configurable: { thread_id: id, user_id: "sam" } }).catch(() => undefined));
      expect(text).toContain("/runs");
      expect(cards(text)).toBe(0);
    });

    it("a tool-call id and an unknown tool name carrying the card, proposed by the model", async () => {
      process.env.LANGSMITH_TRACING = "true";
      const model = cardNamingModel();
      expectRedactedTrace(await tracedDuring(() => makeAgent(kind, { model }).invoke({ messages: [new HumanMessage("Look up order 1042")] }, ask(thread("tool-call-id")))));
    });

    it.each([
      ["stream with messages, updates and subgraphs", (g: Graph, c: object) => g.stream(request(), { ...c, streamMode: ["messages", "updates"], subgraphs: true })],
      ["streamEvents v1", (g: Graph, c: object) => g.streamEvents(request(), { ...c, version: "v1" })],
      ["streamEvents v2", (g: Graph, c: object) => g.streamEvents(request(), { ...c, version: "v2" })],
      ["streamEvents v3", (g: Graph, c: object) => g.streamEvents(request(), { ...c, version: "v3" })],
      ["streamLog", (g: Graph, c: object) => g.streamLog(request(), c)],
    ] as const)("the graph's %s", async (_how, run) => {
      process.env.LANGSMITH_TRACING = "true";
      const graph = graphOf(makeAgent(kind));
      expectRedactedTrace(await tracedDuring(async () => drain(await run(graph, ask(thread("stream"))))));
    });

    it("batch, and three threads of one agent at once", async () => {
      process.env.LANGSMITH_TRACING = "true";
      const agent = makeAgent(kind);
      const text = await tracedDuring(async () => {
        await graphOf(agent).batch([request(), request()], [ask(thread("batch")), ask(thread("batch"))]);
        await Promise.all([1, 2, 3].map(() => agent.invoke(request(), ask(thread("concurrent")))));
      });
      expect(text.match(/"name":"lookup_order"/g)?.length ?? 0).toBeGreaterThanOrEqual(5);
      expectRedactedTrace(text);
    });

    it("callbacks given as a CallbackManager holding the caller's tracer, tracing off in the env", async () => {
      const client = callerClient();
      const manager = new CallbackManager();
      manager.addHandler(new LangChainTracer({ client }), true);
      expectRedactedTrace(await tracedDuring(() => makeAgent(kind).invoke(request(), ask(thread("manager"), { callbacks: manager })), [client]));
    });

    it("a tracer made by another copy of @langchain/core (duck-typed instanceof)", async () => {
      const client = callerClient();
      const tracer = new OtherCoreTracer({ client } as never);
      expectRedactedTrace(await tracedDuring(() => makeAgent(kind).invoke(request(), ask(thread("other-core"), { callbacks: [tracer] })), [client]));
    });

    it("called from an application's graph node with tracing on in the env (the enclosing run's tracer via AsyncLocalStorage)", async () => {
      process.env.LANGSMITH_TRACING = "true";
      const agent = makeAgent(kind);
      const outer = new StateGraph(MessagesAnnotation)
        .addNode("support", async () => {
          await agent.invoke(request(), ask(thread("als-on")));
          return {};
        })
        .addEdge(START, "support")
        .addEdge("support", END)
        .compile();
      expectRedactedTrace(await tracedDuring(() => outer.invoke({ messages: [new HumanMessage("ticket 7")] })));
    });

    it("called from an application's RunnableLambda that passes its config on, caller's tracer, tracing off in the env", async () => {
      const client = callerClient();
      const agent = makeAgent(kind);
      const handle = RunnableLambda.from(async (_ticket: string, config) => agent.invoke(request(), { ...config, ...ask(thread("lambda")) }));
      expectRedactedTrace(await tracedDuring(() => handle.invoke("ticket 7", { callbacks: [new LangChainTracer({ client })] }), [client]));
    });

    it("a tool's traceable child that names a client of its own", async () => {
      process.env.LANGSMITH_TRACING = "true";
      const client = callerClient();
      const fetchCard = traceable(async (orderId: string) => ({ orderId, card: CARD }), { name: "payments.fetch_card", client });
      const lookup = tool(async ({ orderId }) => JSON.stringify(await fetchCard(orderId)), { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) });
      expectRedactedTrace(await tracedDuring(() => makeAgent(kind, { lookup }).invoke(request(), ask(thread("own-client"))), [client]), "payments.fetch_card");
    });

    it("a model answer streamed token by token (streamMode messages): token events carry no text, the answer is redacted", async () => {
      process.env.LANGSMITH_TRACING = "true";
      const model = new StreamingAnswerModel(`Your card on file is ${CARD}.`);
      const graph = graphOf(makeAgent(kind, { model }));
      const text = await tracedDuring(async () => drain(await graph.stream({ messages: [new HumanMessage("Which card do you have for me?")] }, { ...ask(thread("tokens")), streamMode: "messages" })));
      expect(text).toContain("new_token");
      expect(text).not.toContain('"token":');
      expectRedactedTrace(text, "Your card on file is [REDACTED:card_number]");
    });
  });

  it.each(["LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"] as const)("tracing on from %s", async (name) => {
    process.env[name] = "true";
    expectRedactedTrace(await tracedDuring(() => makeAgent("prebuilt").invoke(request(), ask(thread(name)))));
  });

  it("with LANGSMITH_OTEL_ENABLED the runs LangSmith's client hands to its OpenTelemetry translator are redacted", async () => {
    // In OTel mode the client sends no HTTP runs: its batches go to the OTel translator (which
    // exports runs that have an active OTel span). What it is handed is what could leave.
    process.env.LANGSMITH_OTEL_ENABLED = "true";
    const client = new Client({ apiUrl: traces.server.url, apiKey: "otel-key" });
    expect((client as unknown as { langSmithToOTELTranslator?: unknown }).langSmithToOTELTranslator).toBeDefined();
    const handed: unknown[] = [];
    (client as unknown as { _sendBatchToOTELTranslator(batch: { item: unknown }[]): void })._sendBatchToOTELTranslator = (batch) => void handed.push(...batch.map((b) => b.item));
    for (const kind of KINDS) await makeAgent(kind).invoke(request(), ask(thread("otel"), { callbacks: [new LangChainTracer({ client })] }));
    await awaitAllCallbacks();
    await client.awaitPendingTraceBatches();
    expectRedactedTrace(JSON.stringify(handed));
  });

});
