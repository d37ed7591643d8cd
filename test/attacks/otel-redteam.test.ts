import { AsyncLocalStorage } from "node:async_hooks";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { awaitAllCallbacks } from "@langchain/core/callbacks/promises";
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { LangChainTracer } from "@langchain/core/tracers/tracer_langchain";
import { Command, MemorySaver } from "@langchain/langgraph";
import {
  context,
  propagation,
  ROOT_CONTEXT,
  trace,
  type Context,
  type ContextManager,
  type Span,
  type SpanOptions,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import Database from "better-sqlite3";
import { createAgent } from "langchain";
import { Client } from "langsmith";
import { RunTree } from "langsmith/run_trees";
import { getCurrentRunTree, withRunTree } from "langsmith/singletons/traceable";
import { traceable } from "langsmith/traceable";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { createTraceExport, defineRedaction, exportThread, MemoryAuditLog, MemoryEffectLedger, STANDARD_REDACTIONS, standardRedaction, type AuditLog } from "eart";
import { createGovernedAgent } from "eart/graphs";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { createOtelExporter } from "eart/otel";
import { scriptedModel } from "eart/testing";
import identities from "../../examples/refund/identities.json" with { type: "json" };
import { refundScript } from "../../examples/refund/model.js";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { redactedThreadLabel, startCaptureServer, type CaptureServer } from "../support/capture-server.js";
import { CARD, cardNamingModel, cards, lookupWithCard } from "../support/trace-capture.js";

/**
 * A red-team pass on the OpenTelemetry side of eart's redaction:
 *
 * 1. LangSmith in OTel mode (`LANGSMITH_TRACING_MODE=otel`, legacy `OTEL_ENABLED` /
 *    `LANGSMITH_OTEL_ENABLED`): the real `langsmith` 0.12 client hands runs to its OTel translator,
 *    which writes them as attributes, exceptions and statuses onto the active OTel span (and
 *    langsmith's `traceable` opens spans of its own). The global provider here records every
 *    write any span receives (even after the span ended, which the SDK would drop) besides
 *    exporting the spans to memory: a raw card in either is a leak.
 * 2. eart's own exporter (`createOtelExporter`): spans made from audit events, captureContent on.
 * 3. What else leaves the process on the tracing path: the distributed-tracing headers a tool
 *    sends downstream, OTel context propagation.
 *
 * Every attack runs a control that proves the capture sees the field it attacks (a plain
 * createAgent that leaks, an exporter with `redaction: false`, or the redacted marker in the very
 * attribute). The pass found two holes, both closed (sections 3 and 4): the distributed-tracing
 * headers a tool sends downstream, and JSON text whose parse loses what it says.
 */

// ---------------------------------------------------------------------------------------------
// OpenTelemetry harness: an AsyncLocalStorage context manager, a global provider whose spans
// record every write, and langsmith's OTel instances pointed at the API.

class AlsContextManager implements ContextManager {
  readonly #als = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.#als.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.#als.run(ctx, () => fn.call(thisArg, ...args));
  }
  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== "function") return target;
    const self = this;
    return function (this: unknown, ...a: unknown[]) {
      return self.with(ctx, () => (target as (...x: unknown[]) => unknown).apply(this, a));
    } as T;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.#als.disable();
    return this;
  }
}

/** Every write any span of the global provider received: what the OTel layer was handed. */
interface Write {
  span: string;
  method: string;
  args: unknown;
}
const writes: Write[] = [];
const plain = (args: unknown[]) => JSON.parse(JSON.stringify(args, (_k, v: unknown) => (v instanceof Error ? { name: v.name, message: v.message } : v)) ?? "null") as unknown;
const RECORDED = new Set(["setAttribute", "setAttributes", "addEvent", "recordException", "setStatus", "updateName", "addLink", "addLinks"]);

function recordingSpan(span: Span, name: string): Span {
  const proxy: Span = new Proxy(span, {
    get(target, property) {
      const value = Reflect.get(target, property, target) as unknown;
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        if (RECORDED.has(String(property))) writes.push({ span: name, method: String(property), args: plain(args) });
        const out = (value as (...a: unknown[]) => unknown).apply(target, args);
        return out === target ? proxy : out;
      };
    },
  });
  return proxy;
}

class RecordingTracer implements Tracer {
  constructor(private readonly inner: Tracer) {}
  startSpan(name: string, options?: SpanOptions, ctx?: Context): Span {
    writes.push({ span: name, method: "startSpan", args: plain([name, options ?? {}]) });
    return recordingSpan(this.inner.startSpan(name, options, ctx), name);
  }
  startActiveSpan<F extends (span: Span) => unknown>(name: string, ...rest: unknown[]): ReturnType<F> {
    const fn = rest.at(-1) as F;
    const options = (rest.length >= 2 ? rest[0] : undefined) as SpanOptions | undefined;
    const ctx = (rest.length >= 3 ? rest[1] : undefined) as Context | undefined;
    const parent = ctx ?? context.active();
    const span = this.startSpan(name, options, parent);
    return context.with(trace.setSpan(parent, span), fn, undefined, span) as ReturnType<F>;
  }
}

const appSpans = new InMemorySpanExporter();
const appProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(appSpans)] });
const recordingProvider: TracerProvider = { getTracer: (name, version, options) => new RecordingTracer(appProvider.getTracer(name, version, options)) };

const spanText = (spans: readonly ReadableSpan[]) =>
  spans.map((s) => JSON.stringify({ name: s.name, attributes: s.attributes, events: s.events, status: s.status, links: s.links, resource: s.resource.attributes })).join("\n");
const writesText = (list: readonly Write[]) => list.map((w) => JSON.stringify(w)).join("\n");

// ---------------------------------------------------------------------------------------------
// LangSmith's environment: OTel mode, its (unused) endpoint on a local capture server. Restored after each test.

const ENV = [
  "LANGSMITH_TRACING",
  "LANGSMITH_TRACING_V2",
  "LANGCHAIN_TRACING_V2",
  "LANGCHAIN_TRACING",
  "LANGSMITH_TRACING_MODE",
  "OTEL_ENABLED",
  "LANGSMITH_OTEL_ENABLED",
  "LANGSMITH_ENDPOINT",
  "LANGSMITH_API_KEY",
  "LANGCHAIN_CALLBACKS_BACKGROUND",
] as const;
const savedEnv = Object.fromEntries(ENV.map((k) => [k, process.env[k]]));

let langsmithEndpoint: CaptureServer;
/** A downstream "payment service" on 127.0.0.1: records each request's headers and traces under the caller's trace (RunTree.fromHeaders), as langsmith's distributed tracing does. */
const downstream = { url: "", headers: [] as IncomingHttpHeaders[], server: undefined as Server | undefined };

beforeAll(async () => {
  langsmithEndpoint = await startCaptureServer();
  context.setGlobalContextManager(new AlsContextManager());
  trace.setGlobalTracerProvider(recordingProvider);
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
  // What langsmith's `initializeOTEL` does (setOTELInstances), without its async-hooks context manager (not installed).
  (globalThis as Record<symbol, unknown>)[Symbol.for("ls:otel_trace")] = trace;
  (globalThis as Record<symbol, unknown>)[Symbol.for("ls:otel_context")] = context;
  const serviceTrace = traceable(async (path: string) => ({ path, status: "captured" }), { name: "payments.service" });
  downstream.server = createServer((req, res) => {
    downstream.headers.push(req.headers);
    const parent = RunTree.fromHeaders(req.headers as Record<string, string>);
    const done = () => res.writeHead(200, { "content-type": "application/json" }).end("{}");
    if (!parent) return done();
    void withRunTree(parent, () => serviceTrace(req.url ?? "")).then(done, done);
  });
  await new Promise<void>((resolve) => downstream.server!.listen(0, "127.0.0.1", resolve));
  downstream.url = `http://127.0.0.1:${(downstream.server.address() as AddressInfo).port}`;
});

beforeEach(() => {
  for (const k of ENV) delete process.env[k];
  process.env.LANGSMITH_TRACING_MODE = "otel";
  process.env.LANGSMITH_ENDPOINT = langsmithEndpoint.url;
  process.env.LANGSMITH_API_KEY = "test-key";
  process.env.LANGCHAIN_CALLBACKS_BACKGROUND = "false";
});

afterEach(() => {
  for (const k of ENV) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
});

afterAll(async () => {
  await appProvider.shutdown();
  trace.disable();
  context.disable();
  propagation.disable();
  delete (globalThis as Record<symbol, unknown>)[Symbol.for("ls:otel_trace")];
  delete (globalThis as Record<symbol, unknown>)[Symbol.for("ls:otel_context")];
  await new Promise((resolve) => downstream.server?.close(resolve));
  await langsmithEndpoint.close();
});

type Flushable = { awaitPendingTraceBatches(): Promise<void> };

/** The traces so far handed to the OTel layer: every run batch processed, every span exported. */
async function otelFlushed(clients: readonly Flushable[] = []): Promise<void> {
  await awaitAllCallbacks();
  for (const c of [new LangChainTracer().client as unknown as Flushable, RunTree.getSharedClient() as unknown as Flushable, ...clients]) await c.awaitPendingTraceBatches();
  await appProvider.forceFlush();
}

/** Runs `attack` inside an application span (what the translator writes LangChain's runs onto); returns what the OTel layer got meanwhile. */
async function tracedDuring(attack: () => Promise<unknown>, clients: readonly Flushable[] = []): Promise<{ writes: Write[]; spans: ReadableSpan[]; text: string }> {
  appSpans.reset();
  const from = writes.length;
  await trace.getTracer("support-app").startActiveSpan("support.handle_ticket", async (span: Span) => {
    try {
      await attack();
    } finally {
      span.end();
    }
  });
  await otelFlushed(clients);
  const got = writes.slice(from);
  const spans = appSpans.getFinishedSpans();
  return { writes: got, spans, text: `${writesText(got)}\n${spanText(spans)}` };
}

// ---------------------------------------------------------------------------------------------
// The refund agents (the order lookup of the payment system returns the card on file).

type Kind = "middleware" | "prebuilt";
const KINDS: Kind[] = ["middleware", "prebuilt"];
type Runner = { invoke(input: unknown, config?: unknown): Promise<unknown> };

/** The refund conversation, the model repeating the card on file in its last answer. */
function scriptWithCard(messages: BaseMessage[]): AIMessage {
  const last = messages.at(-1);
  if (last && ToolMessage.isInstance(last) && last.name === "issue_refund" && last.status !== "error") return new AIMessage(`Refunded $740 to the card ${CARD}.`);
  return refundScript(messages);
}

function refundTools(lookup: unknown = lookupWithCard): never {
  return createRefundTools(new Database(":memory:")).all.map((t) => (t.name === "lookup_order" ? lookup : t)) as never;
}

function makeAgent(kind: Kind | "plain", options: { lookup?: unknown; model?: unknown; auditLog?: AuditLog } = {}): Runner {
  const model = (options.model ?? scriptedModel(scriptWithCard)) as never;
  const tools = refundTools(options.lookup);
  const auditLog = options.auditLog ?? new MemoryAuditLog();
  if (kind === "plain") return createAgent({ model, tools, checkpointer: new MemorySaver() }) as unknown as Runner;
  if (kind === "prebuilt") return createGovernedAgent({ model, tools, identities, policy: refundPolicy, checkpointer: new MemorySaver(), auditLog, ledger: new MemoryEffectLedger() }) as unknown as Runner;
  const governance = governanceMiddleware({ identities, policy: refundPolicy, auditLog, ledger: new MemoryEffectLedger() });
  return guardAgent(createAgent({ model, tools, checkpointer: new MemorySaver(), middleware: [governance] }), governance) as unknown as Runner;
}

let threads = 0;
const thread = (name: string) => `${name}-${++threads}`;
const REQUEST = `Please refund order 1042 for $740. My card is ${CARD}.`;
const ask = (threadId: string, extra: Record<string, unknown> = {}) => ({ configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" }, ...extra });

/** The customer's turn, then (on the governed agents, which pause) sam's approval. */
async function conversation(agent: Runner, threadId: string, extra: Record<string, unknown> = {}, request = REQUEST): Promise<unknown> {
  const first = (await agent.invoke({ messages: [new HumanMessage(request)] }, ask(threadId, extra))) as { __interrupt__?: unknown[] };
  if (!first.__interrupt__?.length) return first;
  return agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), { configurable: { thread_id: threadId, user_id: "sam" }, ...extra });
}

/** A lookup that, like a payment system's client, traces its own call with langsmith's traceable (in OTel mode: a span of its own). */
function tracedLookup(fetch: (orderId: string) => Promise<unknown>) {
  const fetchCard = traceable(fetch, { name: "payments.fetch_card" });
  return tool(async ({ orderId }) => JSON.stringify(await fetchCard(orderId)), { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) });
}

const written = (got: readonly Write[], key: string) => got.filter((w) => w.method === "setAttribute" && (w.args as unknown[])[0] === key).map((w) => String((w.args as unknown[])[1]));

// =============================================================================================

describe("1. LangSmith in OpenTelemetry mode: the runs written onto OTel spans", () => {
  it("control: without eart (createAgent alone) the spans carry the card (tool result, model answer, the traceable's own span)", async () => {
    process.env.LANGSMITH_TRACING = "true";
    const agent = makeAgent("plain", { lookup: tracedLookup(async (orderId) => ({ orderId, card: CARD })) });
    const got = await tracedDuring(() => conversation(agent, thread("plain")));
    expect((new LangChainTracer().client as unknown as { tracingMode: string }).tracingMode).toBe("otel");
    expect(written(got.writes, "gen_ai.completion").length).toBeGreaterThan(3);
    expect(got.spans.map((s) => s.name)).toEqual(expect.arrayContaining(["support.handle_ticket", "payments.fetch_card"]));
    // Exported spans too, not only the writes: the SDK kept a raw card.
    expect(cards(spanText(got.spans))).toBeGreaterThan(0);
    expect(cards(got.text)).toBeGreaterThan(3);
  });

  it.each(KINDS)("%s: every run written onto the spans is redacted (tool result, the customer's message, the model's answer, a traceable's own span)", async (kind) => {
    process.env.LANGSMITH_TRACING = "true";
    const agent = makeAgent(kind, { lookup: tracedLookup(async (orderId) => ({ orderId, card: CARD })) });
    const got = await tracedDuring(() => conversation(agent, thread(kind)));
    const text = writesText(got.writes);
    // The runs are there with their payloads: the lookup, the refund, the model's last answer.
    expect(written(got.writes, "langsmith.trace.name")).toEqual(expect.arrayContaining(["lookup_order", "issue_refund", "payments.fetch_card"]));
    expect(text).toContain("Refunded $740 to the card [REDACTED:card_number]");
    const fetchSpan = got.spans.find((s) => s.name === "payments.fetch_card");
    expect(String(fetchSpan?.attributes["gen_ai.completion"])).toContain("[REDACTED:card_number]");
    expect(cards(got.text)).toBe(0);
  });

  it.each(["OTEL_ENABLED", "LANGSMITH_OTEL_ENABLED"] as const)("OTel mode from the legacy %s, a caller's client in callbacks (tracing env off): redacted on both agents, raw without eart", async (name) => {
    delete process.env.LANGSMITH_TRACING_MODE;
    process.env[name] = "true";
    const client = new Client({ apiUrl: langsmithEndpoint.url, apiKey: "caller-key" });
    expect((client as unknown as { tracingMode: string }).tracingMode).toBe("otel");
    const run = (kind: Kind | "plain") => tracedDuring(() => conversation(makeAgent(kind), thread(`${name}-${kind}`), { callbacks: [new LangChainTracer({ client })] }), [client]);
    const control = await run("plain");
    expect(cards(control.text)).toBeGreaterThan(0);
    for (const kind of KINDS) {
      const got = await run(kind);
      expect(written(got.writes, "langsmith.trace.name"), kind).toEqual(expect.arrayContaining(["lookup_order", "issue_refund"]));
      expect(writesText(got.writes), kind).toContain("[REDACTED:card_number]");
      expect(cards(got.text), kind).toBe(0);
    }
  });

  it.each(KINDS)("%s: errors recorded as OTel exceptions and statuses (a tool's traceable that throws with the card, a user id that is the card)", async (kind) => {
    process.env.LANGSMITH_TRACING = "true";
    const failing = () =>
      tracedLookup(async () => {
        throw new Error(`card ${CARD} declined by the bank`);
      });
    const control = await tracedDuring(() => conversation(makeAgent("plain", { lookup: failing() }), thread("plain-error")).catch(() => undefined));
    expect(cards(control.writes.filter((w) => w.method === "recordException").map((w) => JSON.stringify(w)).join("\n"))).toBeGreaterThan(0);

    const got = await tracedDuring(async () => {
      await conversation(makeAgent(kind, { lookup: failing() }), thread(`${kind}-error`)).catch(() => undefined);
      // An unknown user: the identity error names the user id it was given.
      await makeAgent(kind).invoke({ messages: [new HumanMessage("hi")] }, { configurable: { thread_id: thread("who"), agent_id: "support-agent", user_id: CARD } }).catch(() => undefined);
    });
    const exceptions = writesText(got.writes.filter((w) => w.method === "recordException"));
    expect(exceptions).toContain("declined by the bank");
    expect(exceptions).toContain("Unknown user");
    expect(exceptions).toContain("[REDACTED:card_number]");
    expect(got.writes.some((w) => w.method === "setStatus" && (w.args as { code: number }[])[0]?.code === 2)).toBe(true);
    expect(cards(got.text)).toBe(0);
  });

  it.each(KINDS)("%s: a tool-call id and an unknown tool name carrying the card, proposed by the model (gen_ai.tool.call.id, the model run's output)", async (kind) => {
    process.env.LANGSMITH_TRACING = "true";
    const proposing = () => {
      return cardNamingModel();
    };
    const control = await tracedDuring(() => makeAgent("plain", { model: proposing() }).invoke({ messages: [new HumanMessage("Look up order 1042")] }, ask(thread("plain-ids"))));
    expect(written(control.writes, "gen_ai.tool.call.id").some((v) => cards(v) > 0)).toBe(true);

    const got = await tracedDuring(() => makeAgent(kind, { model: proposing() }).invoke({ messages: [new HumanMessage("Look up order 1042")] }, ask(thread(`${kind}-ids`))));
    expect(written(got.writes, "gen_ai.tool.call.id")).toContain("call_[REDACTED:card_number]");
    expect(cards(got.text)).toBe(0);
  });

  it.each(KINDS)("%s: called from the application's own traceable (its span, its output: the agent's answer) with a non-eart client", async (kind) => {
    process.env.LANGSMITH_TRACING = "true";
    const handle = (agent: Runner, id: string) => traceable(async (threadId: string) => conversation(agent, threadId), { name: "support.handle_ticket_traced" })(id);
    const control = await tracedDuring(() => handle(makeAgent("plain"), thread("plain-app")));
    expect(cards(writesText(control.writes.filter((w) => w.span === "support.handle_ticket_traced")))).toBeGreaterThan(0);

    const got = await tracedDuring(() => handle(makeAgent(kind), thread(`${kind}-app`)));
    const appSpanWrites = got.writes.filter((w) => w.span === "support.handle_ticket_traced");
    // The traceable's own output (the agent's final state) was written onto its span, redacted as the thread holds it.
    expect(written(appSpanWrites, "gen_ai.completion").some((v) => v.includes("Refunded $740 to the card [REDACTED:card_number]"))).toBe(true);
    expect(cards(got.text)).toBe(0);
  });
});

// =============================================================================================

describe("2. eart's OpenTelemetry exporter (createOtelExporter, captureContent on)", () => {
  /** The audit log exported to two in-memory OTel pipelines: eart's default redaction, and a control with `redaction: false`. */
  function exportedLog() {
    const redacted = new InMemorySpanExporter();
    const raw = new InMemorySpanExporter();
    const providers = [new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(redacted)] }), new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(raw)] })];
    const auditLog = createTraceExport({
      auditLog: new MemoryAuditLog(),
      exporters: [
        createOtelExporter({ name: "otel", tracerProvider: providers[0], captureContent: true, flushIntervalMs: 10 }),
        createOtelExporter({ name: "otel-raw", tracerProvider: providers[1], captureContent: true, flushIntervalMs: 10, redaction: false }),
      ],
    });
    return {
      auditLog,
      async spans() {
        expect(await auditLog.flush({ timeoutMs: 10_000 })).toBe(true);
        return { redacted: redacted.getFinishedSpans(), raw: raw.getFinishedSpans() };
      },
      async close() {
        await auditLog.shutdown({ timeoutMs: 2_000 });
        await Promise.all(providers.map((p) => p.shutdown()));
      },
    };
  }

  /** A model that proposes, on its first turn, calls whose id, name and arguments carry the card; then the refund (reason with the card); then answers with it. */
  function hostileModel() {
    let turn = 0;
    return scriptedModel((messages: BaseMessage[]) => {
      const last = messages.at(-1);
      if (turn++ === 0)
        return new AIMessage({
          content: `Looking up order 1042 for card ${CARD}`,
          tool_calls: [
            { id: `call_${CARD}`, name: "lookup_order", args: { orderId: "1042", note: CARD } },
            { id: "c2", name: `x_${CARD.replace(/ /g, "")}`, args: {} },
          ],
        });
      if (last && ToolMessage.isInstance(last) && last.name !== "issue_refund" && turn <= 3)
        return new AIMessage({ content: "", tool_calls: [{ id: "r1", name: "issue_refund", args: { orderId: "1042", amount: 740, reason: `card ${CARD}` } }] });
      return new AIMessage(`Refunded to ${CARD}`);
    });
  }

  it.each(KINDS)(
    "%s: a card in the thread id, a configurable value, the customer's message, the tool result, the model's text, tool-call id, tool name and arguments, a refused self-approval and sam's reject: no span carries it",
    async (kind) => {
      const x = exportedLog();
      try {
        const agent = makeAgent(kind, { model: hostileModel(), auditLog: x.auditLog });
        const threadId = `t-${CARD}-${++threads}`;
        const first = (await agent.invoke({ messages: [new HumanMessage(REQUEST)] }, ask(threadId, { configurable: { ...ask(threadId).configurable, note: CARD } }))) as { __interrupt__?: unknown[] };
        if (first.__interrupt__?.length) {
          // cara answers her own request (refused: approval.refused, with her answer), then sam rejects with the card in his message.
          await agent.invoke(new Command({ resume: { decisions: [{ type: "reject", message: `cancel, card ${CARD}` }] } }), { configurable: { thread_id: threadId, user_id: "cara" } }).catch(() => undefined);
          await agent.invoke(new Command({ resume: { decisions: [{ type: "reject", message: `No: card ${CARD} is blocked` }] } }), { configurable: { thread_id: threadId, user_id: "sam" } });
        }
        const { redacted, raw } = await x.spans();
        // Control: the same events exported with `redaction: false` carry the card (the thread id, which the audit log keys raw).
        expect(cards(spanText(raw))).toBeGreaterThan(0);
        // The spans are there, with the attacked fields, redacted.
        const names = redacted.map((s) => s.name);
        expect(names).toEqual(expect.arrayContaining(["invoke_agent support-agent", "chat", "execute_tool lookup_order"]));
        expect([...new Set(redacted.map((s) => s.attributes["gen_ai.conversation.id"]))]).toEqual([expect.stringMatching(redactedThreadLabel(`t-[REDACTED:card_number]-${threads}`))]);
        expect(redacted.find((s) => s.name === "execute_tool lookup_order")?.attributes["gen_ai.tool.call.id"]).toBe("call_[REDACTED:card_number]");
        expect(String(redacted.find((s) => s.name === "execute_tool lookup_order")?.attributes["gen_ai.tool.call.result"])).toContain('"card":"[REDACTED:card_number]"');
        const text = spanText(redacted);
        expect(text).toContain("x_[REDACTED:card_number]");
        // Both agents paused for sam: cara's own answer was refused (her answer is in the event), sam's reject recorded.
        const refused = redacted.flatMap((s) => s.events).find((e) => e.name === "eart.approval.refused");
        expect(String(refused?.attributes?.["eart.event.data"])).toContain("cancel, card [REDACTED:card_number]");
        expect(redacted.flatMap((s) => s.events).find((e) => e.name === "eart.approval.decided")?.attributes?.["eart.approval.decision"]).toBe("reject");
        expect(cards(text)).toBe(0);
      } finally {
        await x.close();
      }
    },
  );

  it.each(KINDS)("%s: a tool failing with the card in its error (the tool span's status message)", async (kind) => {
    const x = exportedLog();
    try {
      const failing = tool(
        async () => {
          throw new Error(`card ${CARD} declined by the bank`);
        },
        { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) },
      );
      await makeAgent(kind, { lookup: failing, auditLog: x.auditLog }).invoke({ messages: [new HumanMessage(REQUEST)] }, ask(thread(`fail-${CARD}`))).catch(() => undefined);
      const { redacted, raw } = await x.spans();
      expect(cards(spanText(raw))).toBeGreaterThan(0);
      const toolSpan = redacted.find((s) => s.name === "execute_tool lookup_order");
      expect(toolSpan?.status.code).toBe(2);
      expect(toolSpan?.status.message).toContain("declined by the bank");
      expect(cards(spanText(redacted))).toBe(0);
    } finally {
      await x.close();
    }
  });

  it("the OTLP pipeline on the export worker (`otlp`), with the standard redaction (redacted on the worker) and with a custom `validate` (redacted before posting, the raw thread id travelling apart): no card reaches the collector", async () => {
    const collectors = await Promise.all([startCaptureServer(), startCaptureServer(), startCaptureServer()]);
    const custom = defineRedaction([...STANDARD_REDACTIONS, { id: "order_ref", pattern: /\bORD-\d{6}\b/g, validate: (m: string) => m.length > 0 }]);
    const otlp = (i: number) => ({ url: `${collectors[i]!.url}/v1/traces`, serviceName: "refunds" });
    const auditLog = createTraceExport({
      auditLog: new MemoryAuditLog(),
      exporters: [
        createOtelExporter({ name: "standard", otlp: otlp(0), captureContent: true, flushIntervalMs: 10 }),
        createOtelExporter({ name: "custom", otlp: otlp(1), captureContent: true, flushIntervalMs: 10, redaction: custom }),
        createOtelExporter({ name: "raw", otlp: otlp(2), captureContent: true, flushIntervalMs: 10, redaction: false }),
      ],
    });
    try {
      await conversation(makeAgent("prebuilt", { auditLog }), `t-${CARD}-otlp-${++threads}`);
      expect(await auditLog.flush({ timeoutMs: 20_000 })).toBe(true);
      const bodies = collectors.map((c) => c.requests.map((r) => r.body.toString("utf8")).join("\n"));
      // Control: the spans arrived at every collector; the one without redaction has the card (the thread id, keyed raw in the audit log).
      for (const b of bodies) expect(b).toContain("invoke_agent support-agent");
      expect(cards(bodies[2]!)).toBeGreaterThan(0);
      for (const b of bodies.slice(0, 2)) {
        expect(b).toContain("t-[REDACTED:card_number]-otlp");
        expect(b).toContain("Refunded $740 to the card [REDACTED:card_number]");
        expect(cards(b)).toBe(0);
      }
    } finally {
      await auditLog.shutdown({ timeoutMs: 5_000 });
      await Promise.all(collectors.map((c) => c.close()));
    }
  });

  it.each(KINDS)("%s: a resumed thread first seen by an exporter mid-way (another process began it): the history it reads silently is redacted too", async (kind) => {
    const x = exportedLog();
    const late = new InMemorySpanExporter();
    const lateProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(late)] });
    const lateExporter = createOtelExporter({ tracerProvider: lateProvider, captureContent: true, flushIntervalMs: 10 });
    try {
      const agent = makeAgent(kind, { auditLog: x.auditLog });
      const threadId = `t-${CARD}-late-${++threads}`;
      const first = (await agent.invoke({ messages: [new HumanMessage(REQUEST)] }, ask(threadId))) as { __interrupt__?: unknown[] };
      const pausedAt = (await x.auditLog.read(threadId)).at(-1)!.seq;
      if (first.__interrupt__?.length) await agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), { configurable: { thread_id: threadId, user_id: "sam" } });
      // Only the events after the pause are offered: the exporter reads the thread's start from the log.
      const offered = await exportThread(x.auditLog, threadId, [lateExporter], kind === "prebuilt" ? pausedAt : 0);
      expect(offered).toBeGreaterThan(0);
      expect(await lateExporter.flush({ timeoutMs: 10_000 })).toBe(true);
      const spans = late.getFinishedSpans();
      expect(spans.length).toBeGreaterThan(0);
      expect(spans.find((s) => s.name.startsWith("invoke_agent"))?.attributes["eart.user.id"]).toBe("cara");
      expect([...new Set(spans.map((s) => s.attributes["gen_ai.conversation.id"]))]).toEqual([expect.stringMatching(redactedThreadLabel(`t-[REDACTED:card_number]-late-${threads}`))]);
      expect(cards(spanText(spans))).toBe(0);
    } finally {
      await lateExporter.shutdown({ timeoutMs: 2_000 });
      await lateProvider.shutdown();
      await x.close();
    }
  });
});

// =============================================================================================

describe("3. the distributed-tracing headers a tool sends downstream carry the run's metadata redacted", () => {
  // Found by this pass (both agents): a tool that calls another service the way langsmith documents
  // distributed tracing (`getCurrentRunTree().toHeaders()`) sent `baggage: langsmith-metadata=…,
  // langsmith-tags=…` built from its run's in-memory run tree, which eart did not redact (it
  // redacted a run only when the client sent it). The run's metadata holds the thread id, every
  // configurable value and config.metadata, its tags config.tags: a card in any of them (a
  // customer's thread id or a value of her run's configurable on LangGraph server) left the
  // process raw, and the downstream service, tracing under the caller's trace
  // (RunTree.fromHeaders), wrote them onto its span. RedactingTracer now hands out the run tree
  // (`getRunTreeWithTracingConfig`, what `getCurrentRunTree()` is inside a LangChain run) with its
  // metadata and tags redacted.

  const seen = new Map<Kind, { headers: string; service: Write[]; own: Write[] }>();

  beforeAll(async () => {
    for (const kind of KINDS) {
      for (const k of ENV) delete process.env[k];
      Object.assign(process.env, { LANGSMITH_TRACING_MODE: "otel", LANGSMITH_ENDPOINT: langsmithEndpoint.url, LANGSMITH_API_KEY: "test-key", LANGCHAIN_CALLBACKS_BACKGROUND: "false", LANGSMITH_TRACING: "true" });
      try {
        const lookup = tool(
          async ({ orderId }) => {
            const response = await fetch(`${downstream.url}/orders/${orderId}`, { headers: getCurrentRunTree().toHeaders() as unknown as Record<string, string> });
            await response.text();
            return JSON.stringify({ orderId, total: 740, status: "delivered" });
          },
          { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) },
        );
        const from = downstream.headers.length;
        const threadId = `t-${CARD}-${kind}`;
        const got = await tracedDuring(() =>
          makeAgent(kind, { lookup }).invoke({ messages: [new HumanMessage(REQUEST)] }, { configurable: { ...ask(threadId).configurable, note: `card ${CARD}` }, metadata: { ticket: `card ${CARD}` }, tags: [`card ${CARD}`] }),
        );
        seen.set(kind, {
          headers: decodeURIComponent(JSON.stringify(downstream.headers.slice(from))),
          service: got.writes.filter((w) => w.span === "payments.service"),
          own: got.writes.filter((w) => w.span !== "payments.service"),
        });
      } finally {
        for (const k of ENV) {
          if (savedEnv[k] === undefined) delete process.env[k];
          else process.env[k] = savedEnv[k];
        }
      }
    }
  });

  it.each(KINDS)("%s control: the request reached the service with langsmith's headers, the service traced under them, and eart's own trace holds the same fields redacted", (kind) => {
    const s = seen.get(kind)!;
    expect(s.headers).toContain("langsmith-trace");
    expect(s.headers).toContain("langsmith-metadata=");
    expect(s.headers).toContain('"thread_id"');
    expect(written(s.service, "langsmith.trace.name")).toContain("payments.service");
    expect(written(s.service, "langsmith.metadata.thread_id").length).toBeGreaterThan(0);
    expect(written(s.own, "langsmith.metadata.thread_id")).toContain(`t-[REDACTED:card_number]-${kind}`);
    expect(written(s.own, "langsmith.metadata.note")).toContain("card [REDACTED:card_number]");
    expect(cards(writesText(s.own))).toBe(0);
  });

  it.each(KINDS)("%s: the headers sent downstream hold no raw card (they carry thread_id, note, ticket and the tag raw)", (kind) => {
    expect(cards(seen.get(kind)!.headers)).toBe(0);
  });

  it.each(KINDS)("%s: the downstream service's span (traced under the propagated parent) holds no raw card", (kind) => {
    expect(cards(writesText(seen.get(kind)!.service))).toBe(0);
  });

  it.each(KINDS)("%s (held): OTel's own W3C propagation from inside a tool (traceparent, baggage) carries no configurable value", async (kind) => {
    process.env.LANGSMITH_TRACING = "true";
    const carriers: Record<string, string>[] = [];
    const lookup = tool(
      async ({ orderId }) => {
        const carrier: Record<string, string> = {};
        propagation.inject(context.active(), carrier);
        carriers.push(carrier);
        return JSON.stringify({ orderId, total: 740, status: "delivered" });
      },
      { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) },
    );
    await tracedDuring(() => makeAgent(kind, { lookup }).invoke({ messages: [new HumanMessage(REQUEST)] }, { configurable: { ...ask(`t-${CARD}-w3c-${kind}`).configurable, note: CARD }, metadata: { ticket: CARD } }));
    expect(carriers.length).toBeGreaterThan(0);
    expect(carriers[0]!.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    expect(cards(JSON.stringify(carriers))).toBe(0);
  });
});

// =============================================================================================

describe("4. JSON text whose parse loses what it says (a duplicate key, a 19-digit number): redacted for what it says", () => {
  // Found by this pass, not OTel's own (the hole was in redaction itself, src/context/redaction.ts):
  // a string holding JSON was parsed, its value redacted, and the text kept as it was when nothing
  // in the parsed value was redacted. JSON.parse loses what the text still holds: of a key given
  // twice it keeps the last member (`{"note":"paid with 4111 1111 1111 1111","note":"paid"}`), and
  // it rounds a number beyond 2^53 (`{"account":4111111111111111110}`, a Luhn-valid 19-digit card,
  // parses to 4111111111111111000). The raw text reached the thread, the model's input, the audit
  // log, eart's OTel spans (gen_ai.tool.call.result) and LangSmith's (gen_ai.completion), on both
  // agents. Now a long number is read as the string of its digits, and a text with a key given
  // twice is rewritten from what was read (test/src/redaction.test.ts has the cases).
  const BIG = "4111111111111111110";
  const dupResult = (orderId: string) => `{"orderId":"${orderId}","note":"paid with ${CARD}","note":"paid","account":${BIG}}`;
  const dupLookup = () => tool(async ({ orderId }) => dupResult(orderId), { name: "lookup_order", description: "Look up an order by id", schema: z.object({ orderId: z.string() }) });
  const leaked = (text: string) => cards(text) + (text.match(new RegExp(BIG, "g"))?.length ?? 0);
  const ASK = "Please refund order 1042 for $740.";

  /** Per agent: eart's OTel exporter spans, LangSmith's OTel writes and spans, and the thread's state, after the lookup returned the JSON text. */
  const seen = new Map<Kind, { eartSpans: ReadableSpan[]; langsmith: { writes: Write[]; text: string }; state: string }>();

  beforeAll(async () => {
    for (const kind of KINDS) {
      const memory = new InMemorySpanExporter();
      const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(memory)] });
      const auditLog = createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [createOtelExporter({ tracerProvider: provider, captureContent: true, flushIntervalMs: 10 })] });
      for (const k of ENV) delete process.env[k];
      Object.assign(process.env, { LANGSMITH_TRACING_MODE: "otel", LANGSMITH_ENDPOINT: langsmithEndpoint.url, LANGSMITH_API_KEY: "test-key", LANGCHAIN_CALLBACKS_BACKGROUND: "false", LANGSMITH_TRACING: "true" });
      try {
        let state: unknown;
        const langsmith = await tracedDuring(async () => {
          state = await makeAgent(kind, { lookup: dupLookup(), auditLog }).invoke({ messages: [new HumanMessage(ASK)] }, ask(thread("dup")));
        });
        expect(await auditLog.flush({ timeoutMs: 10_000 })).toBe(true);
        seen.set(kind, { eartSpans: memory.getFinishedSpans(), langsmith, state: JSON.stringify(state) });
      } finally {
        for (const k of ENV) {
          if (savedEnv[k] === undefined) delete process.env[k];
          else process.env[k] = savedEnv[k];
        }
        await auditLog.shutdown({ timeoutMs: 2_000 });
        await provider.shutdown();
      }
    }
  });

  it("control: both are cards by eart's own rule when written as text, or as JSON that round-trips", () => {
    const r = standardRedaction();
    expect(r.apply(`account ${BIG}`, undefined).value).toBe("account [REDACTED:card_number]");
    expect(r.apply(`paid with ${CARD}`, undefined).value).toBe("paid with [REDACTED:card_number]");
    expect(r.apply(`{"note":"paid with ${CARD}"}`, undefined).value).toBe('{"note":"paid with [REDACTED:card_number]"}');
    expect(r.apply(`{"account":4111111111111111}`, undefined).value).toBe('{"account":"[REDACTED:card_number]"}');
  });

  it.each(KINDS)("%s control: the lookup's result reached eart's tool span, LangSmith's tool run and the thread", (kind) => {
    const s = seen.get(kind)!;
    const toolSpan = s.eartSpans.find((x) => x.name === "execute_tool lookup_order");
    expect(String(toolSpan?.attributes["gen_ai.tool.call.result"])).toContain('"orderId":"1042"');
    expect(written(s.langsmith.writes, "langsmith.trace.name")).toContain("lookup_order");
    expect(written(s.langsmith.writes, "gen_ai.completion").some((v) => v.includes('\\"orderId\\":\\"1042\\"'))).toBe(true);
    expect(s.state).toContain('\\"orderId\\":\\"1042\\"');
  });

  it.each(KINDS)("%s: eart's OTel exporter spans (gen_ai.tool.call.result) hold no raw card", (kind) => {
    expect(leaked(spanText(seen.get(kind)!.eartSpans))).toBe(0);
  });

  it.each(KINDS)("%s: LangSmith's OTel spans (the tool run's gen_ai.completion) hold no raw card", (kind) => {
    expect(leaked(seen.get(kind)!.langsmith.text)).toBe(0);
  });

  it.each(KINDS)("%s: the thread (what the model and the checkpoint hold) keeps no raw card", (kind) => {
    expect(leaked(seen.get(kind)!.state)).toBe(0);
  });
});
