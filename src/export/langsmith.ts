import { Client } from "langsmith";
import type { RunCreate, RunUpdate } from "langsmith/schemas";
import { z } from "zod";
import { EartConfigError } from "../errors.js";
import { parseOptions } from "../internal/options.js";
import { callAttributes, EartAttributes as E, eventAttributes, segmentAttributes } from "./attributes.js";
import { createWorkerExporter } from "./thread.js";
import { createBatchExporter, ExportQueueOptionsSchema, type AuditExporter } from "./core.js";
import {
  compact,
  deterministicUuid7,
  ExportRedactionOption,
  SegmentTracker,
  standardRedaction,
  str,
  type ExportRedactor,
  type RedactedEvent,
  type Segment,
  type SegmentLink,
} from "./segments.js";

export { EartAttributes } from "./attributes.js";

/**
 * LangSmith exporter: a thread's audit events become LangSmith runs, sent with LangSmith's own
 * `Client` (`batchIngestRuns`, `POST /runs/batch`).
 *
 * - one root run (`chain`, named after the agent) per segment: a graph invocation, from
 *   `run.started` or a resume to `run.completed` or a pause. Its metadata and tags carry the
 *   governance facts: agent, user, policy decisions, policy ids and version, approvers, digests,
 *   how it ended (`eart.run.outcome`: completed, paused, refused, open) and why it waits;
 * - children: `chat` (`llm`) per model output, one `tool` run per execution (from `tool.started`
 *   to `tool.succeeded`/`tool.failed`), `policy <tool>` per decision, `approval <tool>` per
 *   approval decision, and one run per other event (identity, context, retries, escalations…);
 * - every run has `thread_id` metadata (LangSmith groups runs into a thread by it); a resumed
 *   root also has `eart.resumed_from.run_id` (the paused root's run id) and
 *   `eart.resumed_from.hash` (the hash of the event that paused it). Run ids are UUID v7 derived
 *   from the events, so another process resuming the thread names the paused run correctly, and
 *   exporting the same events again updates the same runs;
 * - everything is redacted before it is handed to the client.
 *
 * Bounds: the client is built with no retries of its own and `timeout_ms` = `requestTimeoutMs`,
 * and every request it makes also aborts when the send's deadline (`exportTimeoutMs`) passes or
 * the exporter shuts down. LangSmith's defaults (90 s per request, retries with backoff) would
 * otherwise let one dead endpoint hold a flush for about a minute and a half.
 */

/** Root run name when the agent is not known. */
const DEFAULT_ROOT_NAME = "eart-agent";
/** LangSmith's own limit of operations per batch request. */
const OPS_PER_REQUEST = 100;

const LangSmithExporterOptionsSchema = ExportQueueOptionsSchema.extend({
  /** Events per send (LangSmith takes 100 operations per request). Default 100. */
  maxBatchSize: z.number().int().positive().default(100),
  /** The exporter's name in stats. Default `langsmith`. */
  name: z.string().min(1).default("langsmith"),
  /** Defaults to the client's own: `LANGSMITH_ENDPOINT`, else LangSmith's cloud. */
  apiUrl: z.string().url().optional(),
  /** Defaults to `LANGSMITH_API_KEY`. */
  apiKey: z.string().min(1).optional(),
  /** For org-scoped keys; defaults to `LANGSMITH_WORKSPACE_ID`. */
  workspaceId: z.string().min(1).optional(),
  /** The project runs go to; defaults to `LANGSMITH_PROJECT`, else LangSmith's default project. */
  projectName: z.string().min(1).optional(),
  /** Applied to everything that leaves; default `defineRedaction(STANDARD_REDACTIONS)`. `false` sends values as stored. */
  redaction: ExportRedactionOption.optional(),
  /** The most one HTTP request may take, in ms. Default 5,000. */
  requestTimeoutMs: z.number().int().positive().default(5_000),
  /** A `fetch` to send with (a proxy agent, tests). Default the global `fetch`. */
  fetch: z.custom<typeof fetch>((v) => typeof v === "function", "must be a fetch function").optional(),
  /** Added to every root run. */
  tags: z.array(z.string().min(1)).default([]),
  /** Added to every run's metadata (e.g. `{ deployment: "eu-1" }`). */
  metadata: z.record(z.string(), z.string()).default({}),
  /** Threads whose state is kept in memory (to link a resume to its pause). Default 10,000. */
  maxThreads: z.number().int().positive().default(10_000),
  /**
   * Where mapping, serialising and HTTP run: `worker` (a worker thread; the graph's thread only
   * redacts and posts) or `main` (the graph's thread). Default `worker`, or `main` when `fetch`
   * is given (a function cannot cross to a worker).
   */
  thread: z.enum(["worker", "main"]).optional(),
}).strict();
export type LangSmithExporterOptions = z.input<typeof LangSmithExporterOptionsSchema>;

/** A run as the exporter tracks it. */
interface RunRef {
  id: string;
  traceId: string;
  dottedOrder: string;
  parentId: string | undefined;
}

/** `2026-11-23T23:23:08.597Z` + order 4 → `20261123T232308597004Z` (LangSmith's dotted-order stamp, µs). */
function stamp(at: string, order: number): string {
  const iso = at.length === 24 && at.endsWith("Z") ? at : new Date(Date.parse(at)).toISOString();
  const us = order % 1000;
  return `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}T${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}${iso.slice(20, 23)}${us < 10 ? "00" : us < 100 ? "0" : ""}${us}Z`;
}

/** A signal that aborts when any of `signals` does (`AbortSignal.any`, which Node has from 20.3). */
function anySignal(signals: AbortSignal[]): AbortSignal {
  if (typeof AbortSignal.any === "function") return AbortSignal.any(signals);
  const controller = new AbortController();
  for (const s of signals) {
    if (s.aborted) {
      controller.abort(s.reason);
      break;
    }
    s.addEventListener("abort", () => controller.abort(s.reason), { once: true, signal: controller.signal });
  }
  return controller.signal;
}

/**
 * A LangSmith endpoint answered with a redirect, which the exporter does not follow (it would carry
 * the API key to another origin): the batch counts as failed, and `lastError` names the status.
 */
class LangSmithRedirectError extends Error {
  readonly status: number;
  constructor(status: number) {
    super(`the LangSmith endpoint answered ${status || "a redirect"}; redirects are not followed (set apiUrl to the endpoint itself)`);
    this.name = "LangSmithRedirectError";
    this.status = status;
  }
}

/**
 * The root run id of a segment, from its first event: the same in every process.
 * @example
 * ```ts
 * const [first] = await auditLog.read("refund-1042");
 * langSmithRootRunId("refund-1042", { key: first.id, startedAt: first.at }); // the thread's first run in LangSmith
 * ```
 */
export function langSmithRootRunId(threadId: string, segment: Pick<SegmentLink<unknown>, "key" | "startedAt">): string {
  return deterministicUuid7(Date.parse(segment.startedAt), "langsmith.root", segment.key, threadId);
}


/**
 * Exports audit events to LangSmith as runs, in the background (see the module comment for the
 * mapping). Never blocks the graph: a bounded queue, one batch at a time, each bounded in time.
 * @example
 * ```ts
 * const langsmith = createLangSmithExporter({ projectName: "refunds" }); // LANGSMITH_API_KEY, LANGSMITH_ENDPOINT
 * const auditLog = createTraceExport({ auditLog: new SqliteAuditLog({ path }), exporters: [langsmith] });
 * ```
 */
export function createLangSmithExporter(options: LangSmithExporterOptions = {}): AuditExporter {
  const opts = parseOptions(LangSmithExporterOptionsSchema, options);
  const redaction = opts.redaction ?? standardRedaction();
  if ((opts.thread ?? (opts.fetch ? "main" : "worker")) === "main") return langSmithExporter(opts, redaction);
  if (opts.fetch) throw new EartConfigError("fetch", 'a fetch function cannot run on the export worker; pass thread: "main" with it');
  const { redaction: _r, fetch: _f, thread: _t, ...cloneable } = options;
  return createWorkerExporter("langsmith", cloneable, opts, redaction);
}

/**
 * The LangSmith exporter on the export worker, from the options given on the graph's thread; its
 * events arrive as stored (redacted here by `redaction`) or already redacted (a function).
 * @example
 * ```ts
 * const x = buildLangSmithExporter({ apiUrl }, standardRedaction());
 * ```
 */
export function buildLangSmithExporter(options: Record<string, unknown>, redaction: ExportRedactor): AuditExporter {
  return langSmithExporter(parseOptions(LangSmithExporterOptionsSchema, { ...options, thread: "main" }), redaction);
}

function langSmithExporter(opts: z.output<typeof LangSmithExporterOptionsSchema>, redaction: ExportRedactor): AuditExporter {
  const { name, apiUrl, apiKey, workspaceId, projectName, requestTimeoutMs, tags: extraTags, metadata: extraMetadata, maxThreads } = opts;
  const baseFetch = opts.fetch ?? globalThis.fetch;
  // The send in flight's signal: every request the client makes for it is aborted with it.
  let sendSignal: AbortSignal | undefined;
  const boundedFetch = (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    const signals = [AbortSignal.timeout(requestTimeoutMs), ...(init?.signal ? [init.signal] : []), ...(sendSignal ? [sendSignal] : [])];
    // Redirects are never followed: a followed 301/302/303 would carry the API key to whatever
    // origin `Location` names (as a GET, so the batch would look sent while nothing was ingested).
    const response = await baseFetch(input, { ...init, redirect: "manual", signal: anySignal(signals) });
    if (response.type === "opaqueredirect" || (response.status >= 300 && response.status < 400)) {
      await response.body?.cancel().catch(() => {});
      throw new LangSmithRedirectError(response.status);
    }
    return response;
  }) as typeof fetch;
  const client = new Client({
    ...(apiUrl ? { apiUrl } : {}),
    ...(apiKey ? { apiKey } : {}),
    ...(workspaceId ? { workspaceId } : {}),
    autoBatchTracing: false,
    timeout_ms: requestTimeoutMs,
    // No retries inside the client: a failed batch is counted, and the audit log keeps it.
    callerOptions: { maxRetries: 0 },
    fetchImplementation: boundedFetch,
    omitTracedRuntimeInfo: true,
    disablePromptCache: true,
  });
  const project = projectName ?? process.env.LANGSMITH_PROJECT ?? process.env.LANGCHAIN_PROJECT;

  let creates: RunCreate[] = [];
  let updates: RunUpdate[] = [];
  // Roots created in the batch being mapped: completed in place when they also end in it (one
  // create instead of a create and an update), or given their facts so far at the batch's end.
  const newRoots = new Map<string, { create: RunCreate; segment: Segment<RunRef, RunRef> }>();

  type Seg = Segment<RunRef, RunRef>;

  const rootMetadata = (s: Seg): Record<string, unknown> =>
    compact({
      ...extraMetadata,
      thread_id: s.threadLabel,
      ...segmentAttributes(s),
      [E.APPROVALS]: s.approvals,
      [E.RESUMED_FROM_RUN_ID]: s.resumedFrom ? langSmithRootRunId(s.threadId, s.resumedFrom) : undefined,
    });

  const rootTags = (s: Seg): string[] => [
    ...new Set([
      "eart",
      ...extraTags,
      ...(s.agentId ? [`agent:${s.agentId}`] : []),
      ...(s.userId ? [`user:${s.userId}`] : []),
      ...[...s.effects].map((e) => `decision:${e}`),
      ...[...s.policyIds].map((p) => `policy:${p}`),
      ...[...s.approvers].map((a) => `approver:${a}`),
      ...(s.kind === "resume" ? ["resumed"] : []),
      ...(s.outcome ? [s.outcome] : []),
    ]),
  ];

  const eventMetadata = (s: Seg, e: RedactedEvent, extra: Record<string, unknown> = {}) =>
    compact({
      ...extraMetadata,
      thread_id: s.threadLabel,
      [E.THREAD_ID]: s.threadLabel,
      [E.EVENT_TYPE]: e.type,
      ...eventAttributes(e),
      ...extra,
    });

  const callMetadata = callAttributes;

  function child(
    s: Seg,
    root: RunRef,
    e: RedactedEvent,
    run: { kind: string; name: string; runType: string; start: string; end?: string; inputs?: Record<string, unknown>; outputs?: Record<string, unknown>; metadata?: Record<string, unknown>; tags?: string[]; error?: string },
  ): RunRef {
    const id = deterministicUuid7(Date.parse(run.start), `langsmith.${run.kind}`, e.id, s.threadId);
    s.children += 1;
    const ref: RunRef = { id, traceId: root.traceId, dottedOrder: `${root.dottedOrder}.${stamp(run.start, s.children)}${id}`, parentId: root.id };
    creates.push(
      compact({
        id,
        trace_id: ref.traceId,
        dotted_order: ref.dottedOrder,
        parent_run_id: root.id,
        name: run.name,
        run_type: run.runType,
        start_time: run.start,
        end_time: run.end,
        inputs: run.inputs ?? {},
        outputs: run.outputs,
        error: run.error,
        extra: { metadata: eventMetadata(s, e, run.metadata) },
        tags: run.tags,
        session_name: project,
      }) as RunCreate,
    );
    return ref;
  }

  const tracker = new SegmentTracker<RunRef, RunRef>(
    {
      startSegment(s, e) {
        const id = langSmithRootRunId(s.threadId, s);
        const ref: RunRef = { id, traceId: id, dottedOrder: `${stamp(s.startedAt, 0)}${id}`, parentId: undefined };
        const d = e.data;
        const request = d.request as { text?: unknown; messageId?: unknown } | null | undefined;
        const create = compact({
          id,
          trace_id: id,
          dotted_order: ref.dottedOrder,
          name: DEFAULT_ROOT_NAME,
          run_type: "chain",
          start_time: s.startedAt,
          inputs: e.type === "run.started" ? compact({ input: request?.text ?? null, messageId: request?.messageId ?? undefined }) : { resume: { event: e.type, ...d } },
          session_name: project,
        }) as RunCreate;
        creates.push(create);
        newRoots.set(id, { create, segment: s });
        return ref;
      },
      endSegment(s, root, e) {
        const outputs =
          s.outcome === "completed"
            ? compact({ outcome: "completed", output: s.output })
            : s.outcome === "paused"
              ? { outcome: "paused", waitingFor: s.waitingFor, request: e?.data ?? null }
              : { outcome: s.outcome };
        const end = compact({
          name: s.agentId ?? DEFAULT_ROOT_NAME,
          end_time: s.lastAt,
          outputs,
          error: s.error ?? (s.outcome === "open" ? "the run ended without run.completed or a pause (it failed, or its process stopped)" : undefined),
          extra: { metadata: rootMetadata(s) },
          tags: rootTags(s),
        });
        const created = newRoots.get(root.id);
        if (created) {
          Object.assign(created.create, end);
          newRoots.delete(root.id);
        } else {
          updates.push({ id: root.id, trace_id: root.traceId, dotted_order: root.dottedOrder, ...end, ...(project ? { session_name: project } : {}) } as RunUpdate);
        }
      },
      model(s, root, e, startAt) {
        const d = e.data;
        child(s, root, e, {
          kind: "chat",
          name: "chat",
          runType: "llm",
          start: startAt,
          end: e.at,
          outputs: { text: d.text ?? "", tool_calls: d.toolCalls ?? [] },
          metadata: { [E.MESSAGE_ID]: d.messageId },
        });
      },
      startTool(s, root, e, call) {
        const d = e.data;
        return child(s, root, e, {
          kind: "tool",
          name: str(d.name) ?? call?.name ?? "tool",
          runType: "tool",
          start: e.at,
          inputs: compact({ toolCallId: d.toolCallId, args: call?.args }),
          metadata: { ...callMetadata(call), [E.TOOL_DIGEST]: d.digest ?? call?.digest, [E.TOOL_ATTEMPT]: d.attempt, [E.TOOL_TRY]: d.try },
        });
      },
      endTool(s, _root, tool, e, call) {
        const d = e?.data ?? {};
        updates.push(
          compact({
            id: tool.id,
            trace_id: tool.traceId,
            dotted_order: tool.dottedOrder,
            parent_run_id: tool.parentId,
            end_time: e?.at ?? s.lastAt,
            outputs: e?.type === "tool.succeeded" ? compact({ result: d.result, truncated: d.truncated }) : undefined,
            error: !e ? "interrupted: the run ended before the tool finished" : e.type === "tool.failed" ? String(d.error ?? d.kind ?? "failed") : undefined,
            extra: { metadata: eventMetadata(s, e ?? s.first, callMetadata(call)) },
            session_name: project,
          }) as RunUpdate,
        );
      },
      step(s, root, e) {
        const d = e.data;
        if (e.type === "policy.decided") {
          const request = d.request as { tool?: { args?: unknown } } | undefined;
          child(s, root, e, {
            kind: "policy",
            name: `policy ${str(d.name) ?? "tool"}`,
            runType: "chain",
            start: e.at,
            end: e.at,
            inputs: compact({ tool: d.name, toolCallId: d.toolCallId, args: request?.tool?.args }),
            outputs: compact({ effect: d.effect, status: d.status, reasons: d.reasons, policyIds: d.policyIds, policyVersion: d.policyVersion, approverRoles: d.approverRoles ?? undefined }),
            metadata: { [E.TOOL_CALL_ID]: d.toolCallId, [E.TOOL_DIGEST]: d.digest, [E.POLICY_DECISION]: d.effect, [E.POLICY_IDS]: d.policyIds, [E.POLICY_VERSION]: d.policyVersion },
            tags: [...(str(d.effect) ? [`decision:${str(d.effect)}`] : []), ...((d.policyIds as string[] | undefined) ?? []).map((p) => `policy:${p}`)],
          });
        } else if (e.type === "approval.decided") {
          child(s, root, e, {
            kind: "approval",
            name: `approval ${str(d.name) ?? "tool"}`,
            runType: "chain",
            start: e.at,
            end: e.at,
            inputs: compact({ tool: d.name, toolCallId: d.toolCallId, digest: d.digest }),
            outputs: compact({ decision: d.decision, status: d.status, approverId: d.approverId, message: d.message ?? undefined }),
            metadata: {
              [E.TOOL_CALL_ID]: d.toolCallId,
              [E.TOOL_DIGEST]: d.digest,
              [E.APPROVAL_APPROVER]: d.approverId,
              [E.APPROVAL_DECISION]: d.decision,
              [E.POLICY_IDS]: d.policyIds,
              [E.POLICY_VERSION]: d.policyVersion,
            },
            tags: str(d.approverId) ? [`approver:${str(d.approverId)}`] : [],
          });
        } else {
          child(s, root, e, { kind: "event", name: e.type, runType: "chain", start: e.at, end: e.at, outputs: d, ...(s.error && e.type.endsWith(".refused") ? { error: s.error } : {}) });
        }
      },
    },
    { redaction, maxThreads },
  );

  return createBatchExporter({
    name,
    maxQueueSize: opts.maxQueueSize,
    maxBatchSize: opts.maxBatchSize,
    flushIntervalMs: opts.flushIntervalMs,
    exportTimeoutMs: opts.exportTimeoutMs,
    async send(events, { signal, source }) {
      creates = [];
      updates = [];
      try {
        await tracker.consume(events, source);
        // Roots still running: sent with the facts they have so far (their end updates them).
        for (const { create, segment } of newRoots.values()) {
          create.name = segment.agentId ?? DEFAULT_ROOT_NAME;
          create.extra = { metadata: rootMetadata(segment) };
          create.tags = rootTags(segment);
        }
        const runCreates = creates;
        const runUpdates = updates;
        creates = [];
        updates = [];
        sendSignal = signal;
        // LangSmith takes at most 100 operations per request; a create and its update in the same
        // request are merged by the client.
        for (let i = 0, j = 0; i < runCreates.length || j < runUpdates.length; ) {
          const c = runCreates.slice(i, i + OPS_PER_REQUEST);
          const u = runUpdates.slice(j, j + Math.max(0, OPS_PER_REQUEST - c.length));
          i += c.length;
          j += u.length;
          signal.throwIfAborted();
          await client.batchIngestRuns({ runCreates: c, runUpdates: u });
        }
      } catch (error) {
        // The tracker saw these events while mapping them; had it kept them as seen, a later
        // `exportThread` of the same threads would send nothing and count them exported.
        tracker.forget(new Set(events.map((e) => e.threadId)));
        throw error;
      } finally {
        newRoots.clear();
        creates = [];
        updates = [];
        sendSignal = undefined;
      }
    },
  });
}
