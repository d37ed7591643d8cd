import { BaseCallbackHandler } from "@langchain/core/callbacks/base";
import { CallbackManager, type Callbacks } from "@langchain/core/callbacks/manager";
import type { RunnableConfig } from "@langchain/core/runnables";
import { LangChainTracer, type LangChainTracerFields } from "@langchain/core/tracers/tracer_langchain";
import type { Redaction } from "../src/context/redaction.js";

/**
 * What eart redacts keeps out of LangSmith traces too. LangChain's tracer sends every run of a
 * graph to LangSmith as it happened: a tool's raw result (the card number eart redacts before the
 * thread, the model and the audit log hold it), the model's raw answer, an error's text. The
 * redacting tracer sends each run through a client that redacts its payload first (inputs,
 * outputs, error, events, metadata), as nobody may see it, whichever LangSmith client, project or
 * replica the tracer was given.
 */

/** The run fields that carry data: everything a run sends but its ids, names, times and tags. */
const PAYLOAD = ["inputs", "outputs", "error", "events", "extra"] as const;

/** The tracer's LangSmith client (langsmith's `Client`), as far as eart uses it. */
type TraceClient = LangChainTracer["client"];

const REDACTING = Symbol.for("eart.redactingTraceClient");

/** A run's payload redacted as nobody may see it; a payload that is not JSON is dropped (fail closed). */
function screened(value: unknown, redaction: Redaction): unknown {
  let plain: unknown;
  try {
    // As the client would serialise it (messages by their toJSON), then redacted.
    plain = JSON.parse(JSON.stringify(value) ?? "null");
  } catch {
    return typeof value === "string" ? "[REDACTED:unserialisable]" : { redacted: "unserialisable" };
  }
  return redaction.apply(plain, undefined).value;
}

function redactedRun<R extends object>(run: R, redaction: Redaction): R {
  const out: Record<string, unknown> = { ...(run as Record<string, unknown>) };
  for (const key of PAYLOAD) if (out[key] !== undefined && out[key] !== null) out[key] = screened(out[key], redaction);
  return out as R;
}

/** The client, sending every run it creates or updates redacted. The same client when it does already. */
function redactingClient(client: TraceClient, redaction: Redaction): TraceClient {
  if ((client as unknown as Record<symbol, unknown>)[REDACTING]) return client;
  return new Proxy(client, {
    get(target, property) {
      if (property === REDACTING) return true;
      if (property === "createRun") return (run: object, ...rest: unknown[]) => (target.createRun as (...a: unknown[]) => unknown)(redactedRun(run, redaction), ...rest);
      if (property === "updateRun") return (id: string, run: object, ...rest: unknown[]) => (target.updateRun as (...a: unknown[]) => unknown)(id, redactedRun(run, redaction), ...rest);
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** Replicas (other projects or workspaces a run is also sent to) that name a client of their own send through a redacting one too. */
function redactingReplicas(replicas: unknown, redaction: Redaction): unknown {
  if (!Array.isArray(replicas)) return replicas;
  return replicas.map((r: unknown) => {
    const client = !Array.isArray(r) && typeof r === "object" && r !== null ? (r as { client?: TraceClient }).client : undefined;
    return client ? { ...(r as object), client: redactingClient(client, redaction) } : r;
  });
}

const redactionOf = new WeakMap<object, Redaction>();

/** Points the tracer's client and replicas at redacting ones (a function, not a method: LangChain's constructor calls updateFromRunTree before the subclass is set up). */
function redactTracer(tracer: LangChainTracer): void {
  const redaction = redactionOf.get(tracer);
  if (!redaction) return;
  const own = tracer as unknown as { fields: LangChainTracerFields };
  tracer.client = redactingClient(tracer.client, redaction);
  tracer.replicas = redactingReplicas(tracer.replicas, redaction) as typeof tracer.replicas;
  own.fields = { ...own.fields, client: tracer.client, ...(tracer.replicas ? { replicas: tracer.replicas } : {}) };
}

/**
 * LangChain's LangSmith tracer, sending every run redacted: its client (and any replica's) is
 * wrapped so that what a run carries (inputs, outputs, error, events, metadata) is redacted as
 * nobody may see it before it leaves the process. It stays redacting when LangChain copies it
 * (per-run tracing metadata) or points it at an enclosing `traceable` run's client.
 * @example
 * ```ts
 * const tracer = new RedactingTracer({ redaction: standardRedaction(), projectName: "refunds" });
 * await graph.invoke(input, { configurable: { thread_id: "t1" }, callbacks: [tracer] });
 * ```
 */
export class RedactingTracer extends LangChainTracer {
  constructor(fields: LangChainTracerFields & { redaction: Redaction }) {
    const { redaction, ...rest } = fields;
    super(rest);
    redactionOf.set(this, redaction);
    redactTracer(this);
  }

  override updateFromRunTree(runTree: Parameters<LangChainTracer["updateFromRunTree"]>[0]): void {
    super.updateFromRunTree(runTree);
    redactTracer(this);
  }

  override copyWithTracingConfig(config: Parameters<LangChainTracer["copyWithTracingConfig"]>[0]): LangChainTracer {
    return RedactingTracer.of(super.copyWithTracingConfig(config), redactionOf.get(this)!);
  }

  /** The redacting twin of a tracer LangChain or a caller made (same client, project, replicas, tracing metadata, runs so far). */
  static of(tracer: LangChainTracer, redaction: Redaction): RedactingTracer {
    if (tracer instanceof RedactingTracer && redactionOf.get(tracer) === redaction) return tracer;
    // Its constructor fields and run maps are LangChain's protected members: read as LangChain's own copy reads them.
    const own = tracer as unknown as { fields: LangChainTracerFields; runMap: unknown; runTreeMap: unknown };
    const copy = new RedactingTracer({ ...own.fields, client: tracer.client, projectName: tracer.projectName, exampleId: tracer.exampleId, replicas: tracer.replicas, redaction });
    const into = copy as unknown as { runMap: unknown; runTreeMap: unknown };
    into.runMap = own.runMap;
    into.runTreeMap = own.runTreeMap;
    return copy;
  }
}

/** Whether LangSmith tracing is on from the environment (the variables LangChain reads). */
function tracingFromEnv(): boolean {
  return ["LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_TRACING"].some((name) => process.env[name] === "true");
}

const isTracer = (handler: unknown): handler is LangChainTracer =>
  handler instanceof LangChainTracer || (handler as { name?: unknown } | null)?.name === "langchain_tracer";

/**
 * A run's configuration whose LangSmith tracing is redacted: every LangChain tracer in its
 * callbacks (one a caller passed, one LangGraph server made for `langsmith_project`) is replaced
 * by its redacting twin, and when tracing is on from the environment and no tracer is there, a
 * redacting one is added (LangChain then adds none of its own). The same configuration when no
 * tracing is on. eart's agents apply it to every run when their redaction is on.
 * @example
 * ```ts
 * await graph.invoke(input, redactedTracing({ configurable: { thread_id: "t1" } }, standardRedaction()));
 * ```
 */
export function redactedTracing<C extends RunnableConfig>(config: C | undefined, redaction: Redaction): C | undefined {
  const callbacks: Callbacks | undefined = config?.callbacks;
  const fromEnv = tracingFromEnv();
  if (callbacks === undefined || Array.isArray(callbacks)) {
    const handlers = (callbacks ?? []) as (BaseCallbackHandler | Record<string, unknown>)[];
    if (!fromEnv && !handlers.some(isTracer)) return config;
    const out = handlers.map((h) => (isTracer(h) ? RedactingTracer.of(h as LangChainTracer, redaction) : h));
    if (fromEnv && !out.some(isTracer)) out.push(new RedactingTracer({ redaction }));
    return { ...config, callbacks: out } as C;
  }
  const manager = callbacks as CallbackManager;
  if (!fromEnv && !manager.handlers.some(isTracer)) return config;
  const copy = manager.copy();
  for (const handler of [...copy.handlers]) {
    if (!isTracer(handler)) continue;
    const inheritable = copy.inheritableHandlers.includes(handler);
    copy.removeHandler(handler);
    copy.addHandler(RedactingTracer.of(handler, redaction), inheritable);
  }
  if (fromEnv && !copy.handlers.some(isTracer)) copy.addHandler(new RedactingTracer({ redaction }), true);
  return { ...config, callbacks: copy } as C;
}
