import { BaseCallbackHandler } from "@langchain/core/callbacks/base";
import { CallbackManager, type Callbacks } from "@langchain/core/callbacks/manager";
import type { RunnableConfig } from "@langchain/core/runnables";
import { LangChainTracer, type LangChainTracerFields } from "@langchain/core/tracers/tracer_langchain";
import { getCurrentRunTree } from "langsmith/singletons/traceable";
import type { Redaction } from "../src/context/redaction.js";

/**
 * What eart redacts keeps out of LangSmith traces too. LangChain's tracer sends every run of a
 * graph to LangSmith as it happened: a tool's raw result (the card number eart redacts before the
 * thread, the model and the audit log hold it), the model's raw answer, an error's text. The
 * redacting tracer sends each run through a client that redacts its payload first (inputs,
 * outputs, error, events, metadata, tags, name, serialised form) as nobody may see it, and sends
 * no attached files, whichever LangSmith client, project or replica the tracer was given.
 */

/** The run fields that can carry data: everything a run sends but its ids, times and order. */
const PAYLOAD = ["inputs", "outputs", "error", "events", "extra", "tags", "name", "serialized"] as const;

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
  // Files a traceable attaches (text, JSON, images) are not sent: eart cannot redact every format.
  if (out.attachments !== undefined) delete out.attachments;
  return out as R;
}

/** The client, sending every run it creates or updates redacted. The same client when it does already, with this redaction. */
function redactingClient(client: TraceClient, redaction: Redaction): TraceClient {
  const applied = (client as unknown as Record<symbol, ReadonlySet<Redaction> | undefined>)[REDACTING];
  if (applied?.has(redaction)) return client;
  // A client redacting with another redaction (a caller's narrower one) redacts with both.
  const both = new Set([...(applied ?? []), redaction]);
  return new Proxy(client, {
    get(target, property) {
      if (property === REDACTING) return both;
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

  /**
   * The run as LangSmith's run tree, for sending it and for code inside it (`getCurrentRunTree()`
   * in a tool): its metadata and tags redacted, as the run is sent, so the distributed-tracing
   * headers a tool sends downstream (`toHeaders()`: metadata and tags as baggage) and the runs a
   * downstream service traces under them carry no raw value either.
   */
  override getRunTreeWithTracingConfig(id: string): ReturnType<LangChainTracer["getRunTreeWithTracingConfig"]> {
    const tree = super.getRunTreeWithTracingConfig(id);
    const redaction = redactionOf.get(this);
    if (!tree || !redaction) return tree;
    const t = tree as unknown as { extra?: Record<string, unknown>; tags?: string[] };
    if (t.extra?.metadata !== undefined) t.extra = { ...t.extra, metadata: redaction.apply(t.extra.metadata, undefined).value };
    if (t.tags !== undefined) t.tags = redaction.apply(t.tags, undefined).value;
    return tree;
  }

  override copyWithTracingConfig(config: Parameters<LangChainTracer["copyWithTracingConfig"]>[0]): LangChainTracer {
    return RedactingTracer.of(super.copyWithTracingConfig(config), redactionOf.get(this)!);
  }

  /** The redacting twin of a tracer LangChain or a caller made (same client, project, replicas, tracing metadata, runs so far). */
  static of(tracer: LangChainTracer, redaction: Redaction): RedactingTracer {
    if (tracer instanceof RedactingTracer && redactionOf.get(tracer) === redaction) return tracer;
    // A tracer of another kind (a subclass, a caller's RedactingTracer with its own redaction) sends through its client, redacted by this redaction too.
    // Its constructor fields and run maps are LangChain's protected members: read as LangChain's own copy reads them.
    const own = tracer as unknown as { fields: LangChainTracerFields; runMap: unknown; runTreeMap: unknown };
    const copy = new RedactingTracer({ ...own.fields, client: tracer.client, projectName: tracer.projectName, exampleId: tracer.exampleId, replicas: tracer.replicas, redaction });
    const into = copy as unknown as { runMap: unknown; runTreeMap: unknown };
    into.runMap = own.runMap;
    into.runTreeMap = own.runTreeMap;
    return copy;
  }
}

/**
 * Whether LangChain will trace the run to LangSmith with a tracer of its own: tracing is on from
 * the environment (the variables LangChain reads), or from an enclosing langsmith `traceable` run.
 */
function tracingOn(): boolean {
  const tree = currentRunTree();
  if (tree?.tracingEnabled !== undefined) return tree.tracingEnabled === true;
  return ["LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_TRACING"].some((name) => process.env[name] === "true");
}

function currentRunTree(): { tracingEnabled?: boolean } | undefined {
  try {
    return getCurrentRunTree(true) as { tracingEnabled?: boolean } | undefined;
  } catch {
    return undefined;
  }
}

/** A LangSmith tracer, by what it does (LangChain's own test is its name, which a subclass may change). */
const isTracer = (handler: unknown): handler is LangChainTracer => {
  if (handler instanceof LangChainTracer) return true;
  const h = handler as { name?: unknown; getRunTreeWithTracingConfig?: unknown; copyWithTracingConfig?: unknown } | null;
  return h?.name === "langchain_tracer" || (typeof h?.getRunTreeWithTracingConfig === "function" && typeof h?.copyWithTracingConfig === "function");
};

/** Callbacks with every LangSmith tracer replaced by its redacting twin (and one added when `add`); the same callbacks when there is nothing to do. */
function redactedCallbacks(callbacks: Callbacks | undefined, redaction: Redaction, add: boolean): Callbacks | undefined {
  if (callbacks === undefined || Array.isArray(callbacks)) {
    const handlers = (callbacks ?? []) as (BaseCallbackHandler | Record<string, unknown>)[];
    if (!add && !handlers.some(isTracer)) return callbacks;
    const out = handlers.map((h) => (isTracer(h) ? RedactingTracer.of(h as LangChainTracer, redaction) : h));
    if (add && !out.some(isTracer)) out.push(new RedactingTracer({ redaction }));
    return out as Callbacks;
  }
  const manager = callbacks as CallbackManager;
  if (!add && !manager.handlers.some(isTracer)) return callbacks;
  const copy = manager.copy();
  for (const handler of [...copy.handlers]) {
    if (!isTracer(handler)) continue;
    const inheritable = copy.inheritableHandlers.includes(handler);
    copy.removeHandler(handler);
    copy.addHandler(RedactingTracer.of(handler, redaction), inheritable);
  }
  if (add && !copy.handlers.some(isTracer)) copy.addHandler(new RedactingTracer({ redaction }), true);
  return copy;
}

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
  const callbacks = redactedCallbacks(config?.callbacks, redaction, tracingOn());
  return callbacks === config?.callbacks ? config : ({ ...config, callbacks } as C);
}

/**
 * The configuration a graph was bound with (`withConfig({ callbacks })`), its LangSmith tracers
 * replaced by their redacting twins (LangGraph merges it into every run, beside the run's own).
 * @example
 * ```ts
 * copy.config = boundTracingRedacted(copy.config, redaction);
 * ```
 */
export function boundTracingRedacted<C extends RunnableConfig>(config: C | undefined, redaction: Redaction): C | undefined {
  const callbacks = redactedCallbacks(config?.callbacks, redaction, false);
  return callbacks === config?.callbacks ? config : ({ ...config, callbacks } as C);
}
