import type { Attributes, AttributeValue, Context, Span, Tracer, TracerProvider } from "@opentelemetry/api";
import { createRequire } from "node:module";
import { z } from "zod";
import { EartConfigError } from "../errors.js";
import { parseOptions } from "../internal/options.js";
import { createBatchExporter, EXPORT_DEFAULTS, ExportQueueOptionsSchema, type AuditExporter } from "./core.js";
import { callAttributes, EartAttributes, eventAttributes, segmentAttributes } from "./attributes.js";
import { createWorkerExporter } from "./thread.js";
import { compact, ExportRedactionOption, SegmentTracker, standardRedaction, str, type ExportRedactor, type RedactedEvent, type Segment } from "./segments.js";

export { EartAttributes } from "./attributes.js";

/**
 * OpenTelemetry exporter: a thread's audit events become spans following the GenAI semantic
 * conventions (development status, as of semconv 1.37–1.38), through `@opentelemetry/api` only:
 * the application's SDK (its processors and exporters) sends them.
 *
 * - `invoke_agent <agent>` (INTERNAL) per segment (a graph invocation, see `SegmentTracker`),
 *   with the segment's governance facts as `eart.*` attributes, and every other audit event of
 *   the segment (policy decisions, approvals, identity, context, retries…) as a span event
 *   `eart.<type>`; a resumed segment's span links to the paused one's (same process), and
 *   always carries `eart.resumed_from.hash`, the hash of the event that paused the thread, which
 *   the paused span has as `eart.audit.hash`;
 * - `chat` (CLIENT) per model output, from the step before it to the output;
 * - `execute_tool <tool>` (INTERNAL) per tool execution, with the call's policy decision,
 *   policy version, approver and digest.
 *
 * Content (model text, tool arguments and results) is left out unless `captureContent` is set,
 * and redacted when it is. `@opentelemetry/api` is loaded on the first export, so it is an
 * optional peer dependency: only applications that use this exporter need it.
 */

/**
 * GenAI semantic convention attribute names (the published constants are deprecated or incubating).
 * @example
 * ```ts
 * const tools = spans.filter((s) => s.attributes[GenAiAttributes.OPERATION_NAME] === GenAiOperations.EXECUTE_TOOL);
 * ```
 */
export const GenAiAttributes = {
  OPERATION_NAME: "gen_ai.operation.name",
  PROVIDER_NAME: "gen_ai.provider.name",
  AGENT_ID: "gen_ai.agent.id",
  AGENT_NAME: "gen_ai.agent.name",
  CONVERSATION_ID: "gen_ai.conversation.id",
  REQUEST_MODEL: "gen_ai.request.model",
  RESPONSE_ID: "gen_ai.response.id",
  OUTPUT_TYPE: "gen_ai.output.type",
  OUTPUT_MESSAGES: "gen_ai.output.messages",
  TOOL_NAME: "gen_ai.tool.name",
  TOOL_CALL_ID: "gen_ai.tool.call.id",
  TOOL_TYPE: "gen_ai.tool.type",
  TOOL_CALL_ARGUMENTS: "gen_ai.tool.call.arguments",
  TOOL_CALL_RESULT: "gen_ai.tool.call.result",
  ERROR_TYPE: "error.type",
} as const;

/**
 * Values of `gen_ai.operation.name` eart emits.
 * @example
 * ```ts
 * span.attributes[GenAiAttributes.OPERATION_NAME] === GenAiOperations.INVOKE_AGENT;
 * ```
 */
export const GenAiOperations = {
  INVOKE_AGENT: "invoke_agent",
  CHAT: "chat",
  EXECUTE_TOOL: "execute_tool",
} as const;


// SpanKind and SpanStatusCode values of @opentelemetry/api (not imported: the API loads lazily).
const SPAN_KIND_INTERNAL = 0;
const SPAN_KIND_CLIENT = 2;
const STATUS_ERROR = 2;

const OtelExporterOptionsSchema = ExportQueueOptionsSchema.extend({
  /** The exporter's name in stats. Default `otel`. */
  name: z.string().min(1).default("otel"),
  /** The tracer to use. Default `tracerProvider.getTracer("eart")`, else the global provider's. */
  tracer: z.custom<Tracer>((v) => typeof (v as Tracer)?.startSpan === "function", "must be an OpenTelemetry Tracer").optional(),
  /** The provider to get the tracer from and to `forceFlush` on flush and shutdown (default the global one). */
  tracerProvider: z.custom<TracerProvider>((v) => typeof (v as TracerProvider)?.getTracer === "function", "must be an OpenTelemetry TracerProvider").optional(),
  /** Adds model text, tool arguments and results (redacted) as `gen_ai.*` content attributes. Default false. */
  captureContent: z.boolean().default(false),
  /** Applied to everything that leaves; default `defineRedaction(STANDARD_REDACTIONS)`. `false` sends values as stored. */
  redaction: ExportRedactionOption.optional(),
  /** Threads whose state is kept in memory (open spans, the paused span to link to). Default 10,000. */
  maxThreads: z.number().int().positive().default(10_000),
  /**
   * Send spans over OTLP/HTTP (JSON) from a worker thread, with an SDK pipeline of eart's own
   * (`BatchSpanProcessor` + `OTLPTraceExporter`), instead of through `tracer`/`tracerProvider` on
   * the graph's thread. Needs `@opentelemetry/sdk-trace-base`, `@opentelemetry/resources` and
   * `@opentelemetry/exporter-trace-otlp-http` installed.
   */
  otlp: z
    .object({
      /** Default the SDK's: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`, else http://localhost:4318/v1/traces. */
      url: z.string().url().optional(),
      headers: z.record(z.string(), z.string()).optional(),
      /** `service.name` of the spans' resource. Default `OTEL_SERVICE_NAME`, else `eart`. */
      serviceName: z.string().min(1).optional(),
      resourceAttributes: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
    })
    .strict()
    .optional(),
}).strict();
export type OtelExporterOptions = z.input<typeof OtelExporterOptionsSchema>;

type Api = typeof import("@opentelemetry/api");
interface RootSpan {
  span: Span;
  context: Context;
}

/** Attributes without undefined values or empty arrays. */
const attrs = (o: Record<string, AttributeValue | undefined>): Attributes => compact(o) as Attributes;
const strs = (v: unknown): string[] | undefined => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : undefined);
const json = (v: unknown): string | undefined => (v === undefined ? undefined : typeof v === "string" ? v : JSON.stringify(v));

/**
 * Exports audit events as OpenTelemetry spans (see the module comment for the mapping), in the
 * background. Spans are created with the events' times; the SDK's processors export them.
 * @example
 * ```ts
 * const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] });
 * const otel = createOtelExporter({ tracerProvider: provider });
 * const auditLog = createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [otel] });
 * ```
 */
export function createOtelExporter(options: OtelExporterOptions = {}): AuditExporter {
  const opts = parseOptions(OtelExporterOptionsSchema, options);
  const require = createRequire(import.meta.url);
  try {
    require.resolve("@opentelemetry/api");
  } catch {
    throw new EartConfigError("tracerProvider", "the OpenTelemetry exporter needs @opentelemetry/api (npm install @opentelemetry/api)");
  }
  const redaction = opts.redaction ?? standardRedaction();
  if (!opts.otlp) return otelExporter(opts, redaction);
  if (opts.tracer || opts.tracerProvider) throw new EartConfigError("otlp", "give otlp (spans sent from a worker thread) or tracer/tracerProvider (spans through your SDK), not both");
  for (const pkg of OTLP_PACKAGES) {
    try {
      require.resolve(pkg);
    } catch {
      throw new EartConfigError("otlp", `otlp needs ${OTLP_PACKAGES.join(", ")} installed (${pkg} is missing)`);
    }
  }
  const { redaction: _r, ...cloneable } = options;
  return createWorkerExporter("otlp", cloneable, opts, redaction);
}

const OTLP_PACKAGES = ["@opentelemetry/sdk-trace-base", "@opentelemetry/resources", "@opentelemetry/exporter-trace-otlp-http"] as const;

/** The SDK packages the `otlp` pipeline is built from. */
export interface OtlpModules {
  sdk: typeof import("@opentelemetry/sdk-trace-base");
  resources: typeof import("@opentelemetry/resources");
  exporter: typeof import("@opentelemetry/exporter-trace-otlp-http");
}

/**
 * Loads the SDK packages of the `otlp` pipeline.
 * @example
 * ```ts
 * const modules = await loadOtlpModules();
 * ```
 */
export async function loadOtlpModules(): Promise<OtlpModules> {
  const [sdk, resources, exporter] = await Promise.all([import("@opentelemetry/sdk-trace-base"), import("@opentelemetry/resources"), import("@opentelemetry/exporter-trace-otlp-http")]);
  return { sdk, resources, exporter };
}

/**
 * The OTLP exporter on the export worker: builds the SDK pipeline (reading the SDK's environment
 * variables as it is built), then maps events to spans through it; shutdown also shuts the
 * pipeline down.
 * @example
 * ```ts
 * const x = buildOtlpExporter(await loadOtlpModules(), { otlp: { url: "http://127.0.0.1:4318/v1/traces" } }, standardRedaction());
 * ```
 */
export function buildOtlpExporter(modules: OtlpModules, options: Record<string, unknown>, redaction: ExportRedactor): AuditExporter {
  const { sdk, resources, exporter } = modules;
  const opts = parseOptions(OtelExporterOptionsSchema, options);
  const otlp = opts.otlp ?? {};
  const provider = new sdk.BasicTracerProvider({
    resource: resources.resourceFromAttributes({ "service.name": otlp.serviceName ?? process.env.OTEL_SERVICE_NAME ?? "eart", ...otlp.resourceAttributes }),
    spanProcessors: [
      new sdk.BatchSpanProcessor(
        new exporter.OTLPTraceExporter({ ...(otlp.url ? { url: otlp.url } : {}), ...(otlp.headers ? { headers: otlp.headers } : {}), timeoutMillis: opts.exportTimeoutMs }),
        { maxQueueSize: Math.max(2_048, opts.maxQueueSize * 2), maxExportBatchSize: 512, scheduledDelayMillis: opts.flushIntervalMs },
      ),
    ],
  });
  // eart's own OTLP pipeline: a batch counts as exported once the SDK has sent it, not when its
  // spans were handed over (a worker that dies then would lose them counted as exported).
  const inner = otelExporter({ ...opts, otlp: undefined, tracerProvider: provider }, redaction, { flushEachSend: true });
  return {
    ...inner,
    async shutdown(o = {}) {
      const deadline = Date.now() + (o.timeoutMs ?? EXPORT_DEFAULTS.shutdownTimeoutMs);
      const ok = await inner.shutdown({ timeoutMs: Math.max(1, deadline - Date.now() - 20) });
      let stopped = false;
      await Promise.race([provider.shutdown().then(() => (stopped = true), () => {}), new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref?.())]);
      return ok && stopped;
    },
  };
}

function otelExporter(opts: z.output<typeof OtelExporterOptionsSchema>, redaction: ExportRedactor, how: { flushEachSend?: boolean } = {}): AuditExporter {
  const { name, captureContent, maxThreads } = opts;
  let api: Api | undefined;
  let tracer: Tracer | undefined = opts.tracer;

  type Seg = Segment<RootSpan, Span>;
  const A = GenAiAttributes;
  const E = EartAttributes;

  const rootAttributes = (s: Seg): Attributes =>
    attrs({
      [A.OPERATION_NAME]: GenAiOperations.INVOKE_AGENT,
      [A.AGENT_NAME]: s.agentId,
      [A.AGENT_ID]: s.agentId,
      [A.CONVERSATION_ID]: s.threadLabel,
      ...segmentAttributes(s),
    });

  const common = (s: Seg) => ({ [A.CONVERSATION_ID]: s.threadLabel, [E.THREAD_ID]: s.threadLabel, [A.AGENT_NAME]: s.agentId });


  function stepAttributes(e: RedactedEvent): Attributes {
    const d = e.data;
    const base = {
      ...eventAttributes(e),
      [A.TOOL_CALL_ID]: str(d.toolCallId),
      [A.TOOL_NAME]: str(d.name),
      [E.TOOL_DIGEST]: str(d.digest),
    };
    if (e.type === "policy.decided") {
      return attrs({ ...base, [E.POLICY_DECISION]: str(d.effect), [E.POLICY_IDS]: strs(d.policyIds), [E.POLICY_VERSION]: str(d.policyVersion), [E.POLICY_REASONS]: strs(d.reasons) });
    }
    if (e.type === "approval.decided") {
      return attrs({ ...base, [E.APPROVAL_APPROVER]: str(d.approverId), [E.APPROVAL_DECISION]: str(d.decision), [E.POLICY_IDS]: strs(d.policyIds), [E.POLICY_VERSION]: str(d.policyVersion) });
    }
    return attrs({ ...base, ...(captureContent ? { [E.EVENT_DATA]: json(d) } : {}) });
  }

  const tracker = new SegmentTracker<RootSpan, Span>(
    {
      startSegment(s) {
        const paused = s.resumedFrom?.root?.span.spanContext();
        const span = tracer!.startSpan(
          `${GenAiOperations.INVOKE_AGENT} ${s.agentId ?? "eart-agent"}`,
          {
            kind: SPAN_KIND_INTERNAL,
            startTime: new Date(s.startedAt),
            // The full set is written when the segment ends, once its facts are known.
            attributes: attrs({ [A.OPERATION_NAME]: GenAiOperations.INVOKE_AGENT, [A.AGENT_NAME]: s.agentId, [A.CONVERSATION_ID]: s.threadLabel, [E.THREAD_ID]: s.threadLabel }),
            links: paused ? [{ context: paused, attributes: { [E.LINK_TYPE]: "resumed_from" } }] : [],
          },
          api!.ROOT_CONTEXT,
        );
        return { span, context: api!.trace.setSpan(api!.ROOT_CONTEXT, span) };
      },
      endSegment(s, root) {
        root.span.updateName(`${GenAiOperations.INVOKE_AGENT} ${s.agentId ?? "eart-agent"}`);
        root.span.setAttributes(rootAttributes(s));
        if (s.outcome === "refused" || s.outcome === "open") {
          root.span.setAttribute(A.ERROR_TYPE, s.outcome === "refused" ? "refused" : "incomplete");
          root.span.setStatus({ code: STATUS_ERROR, message: s.error ?? "the run ended without run.completed or a pause" });
        }
        root.span.end(new Date(s.lastAt));
      },
      model(s, root, e, startAt) {
        const d = e.data;
        const calls = Array.isArray(d.toolCalls) ? d.toolCalls.length : 0;
        const span = tracer!.startSpan(
          GenAiOperations.CHAT,
          {
            kind: SPAN_KIND_CLIENT,
            startTime: new Date(startAt),
            attributes: attrs({
              [A.OPERATION_NAME]: GenAiOperations.CHAT,
              ...common(s),
              [A.RESPONSE_ID]: str(d.messageId),
              [A.OUTPUT_TYPE]: "text",
              [E.MESSAGE_TOOL_CALLS]: calls,
              [E.AUDIT_SEQ]: e.seq,
              [E.AUDIT_HASH]: e.hash,
              ...(captureContent ? { [A.OUTPUT_MESSAGES]: json([{ role: "assistant", parts: [{ type: "text", content: d.text ?? "" }], tool_calls: d.toolCalls ?? [] }]) } : {}),
            }),
          },
          root.context,
        );
        span.end(new Date(e.at));
      },
      startTool(s, root, e, call) {
        const d = e.data;
        const toolName = str(d.name) ?? call?.name ?? "tool";
        return tracer!.startSpan(
          `${GenAiOperations.EXECUTE_TOOL} ${toolName}`,
          {
            kind: SPAN_KIND_INTERNAL,
            startTime: new Date(e.at),
            attributes: attrs({
              [A.OPERATION_NAME]: GenAiOperations.EXECUTE_TOOL,
              ...common(s),
              [A.TOOL_NAME]: toolName,
              [A.TOOL_CALL_ID]: str(d.toolCallId),
              [A.TOOL_TYPE]: "function",
              ...callAttributes(call),
              [E.TOOL_DIGEST]: str(d.digest) ?? call?.digest,
              [E.TOOL_ATTEMPT]: typeof d.attempt === "number" ? d.attempt : undefined,
              [E.AUDIT_SEQ]: e.seq,
              ...(captureContent && call?.args !== undefined ? { [A.TOOL_CALL_ARGUMENTS]: json(call.args) } : {}),
            }),
          },
          root.context,
        );
      },
      endTool(s, _root, span, e, call) {
        const d = e?.data ?? {};
        span.setAttributes(attrs(callAttributes(call)));
        if (e) span.setAttributes(attrs({ [E.AUDIT_HASH]: e.hash }));
        if (!e || e.type === "tool.failed") {
          span.setAttribute(A.ERROR_TYPE, e ? (str(d.kind) ?? "_OTHER") : "interrupted");
          span.setStatus({ code: STATUS_ERROR, message: e ? String(d.error ?? "failed") : "the run ended before the tool finished" });
        } else if (captureContent) {
          span.setAttribute(A.TOOL_CALL_RESULT, json(d.result) ?? "");
        }
        span.end(new Date(e?.at ?? s.lastAt));
      },
      step(_s, root, e) {
        root.span.addEvent(`eart.${e.type}`, stepAttributes(e), new Date(e.at));
      },
    },
    { redaction, maxThreads },
  );

  /** The provider to force-flush: the given one, else the global one's delegate (an SDK provider). */
  function flushable(): { forceFlush(): Promise<void> } | undefined {
    if (!api) return undefined;
    const provider = (opts.tracerProvider ?? api.trace.getTracerProvider()) as TracerProvider & { forceFlush?: () => Promise<void>; getDelegate?: () => TracerProvider };
    if (typeof provider.forceFlush === "function") return provider as { forceFlush(): Promise<void> };
    const delegate = provider.getDelegate?.() as (TracerProvider & { forceFlush?: () => Promise<void> }) | undefined;
    return typeof delegate?.forceFlush === "function" ? (delegate as { forceFlush(): Promise<void> }) : undefined;
  }

  return createBatchExporter({
    name,
    maxQueueSize: opts.maxQueueSize,
    maxBatchSize: opts.maxBatchSize,
    flushIntervalMs: opts.flushIntervalMs,
    exportTimeoutMs: opts.exportTimeoutMs,
    async send(events, { source }) {
      api ??= await import("@opentelemetry/api");
      tracer ??= (opts.tracerProvider ?? api.trace.getTracerProvider()).getTracer("eart");
      try {
        await tracker.consume(events, source);
        if (how.flushEachSend) await flushable()?.forceFlush();
      } catch (error) {
        // Not kept as seen: exporting these threads again (`exportThread`) maps them again.
        tracker.forget(new Set(events.map((e) => e.threadId)));
        throw error;
      }
    },
    async afterFlush() {
      await flushable()?.forceFlush();
    },
    async close() {
      // Open segments (a run still going, or one that failed) end as `open`, so they are exported.
      if (!api) return;
      tracker.closeAll();
      await flushable()?.forceFlush();
    },
  });
}
