import { readEventData, REFUSAL_EVENT_TYPES, type AuditEventReading } from "../audit/events.js";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { z } from "zod";
import { globalHeadOf, type AuditEvent, type AuditEventType, type WitnessHead } from "../audit/log.js";
import { defineRedaction, STANDARD_REDACTIONS, type Redacted, type Redaction } from "../context/redaction.js";
import { EartConfigError } from "../errors.js";
import type { AuditSource } from "./core.js";

/**
 * How the trace exporters (LangSmith, OpenTelemetry) read a thread's audit events: as segments,
 * one per graph invocation. A segment starts with `run.started` (new input) or with the first
 * event after a pause (the resume: `approval.decided`, `escalation.decided`,
 * `tool.recovery_decided`, `approval.expired`…), and ends with `run.completed` or with a pause
 * (`approval.requested`, `escalation.requested`, `tool.recovery_requested`). A refused answer
 * (`approval.refused`, …) is a segment of its own: that resume ran nothing and the thread stays
 * paused. A resumed segment is linked to the paused one it continues.
 */

/** Option schema: a {@link Redaction}, or `false` to export values as stored. */
export const ExportRedactionOption = z.union([
  z.literal(false),
  z.custom<Redaction>((v) => typeof (v as Redaction)?.apply === "function", "must be a Redaction (defineRedaction) or false"),
]);

let standard: Redaction | undefined;
/**
 * `defineRedaction(STANDARD_REDACTIONS)`, compiled once: what exporters redact by default.
 * @example
 * ```ts
 * createJsonlExporter({ path: "audit.jsonl", redaction: standardRedaction() }); // the default, spelled out
 * ```
 */
export function standardRedaction(): Redaction {
  return (standard ??= defineRedaction(STANDARD_REDACTIONS));
}

/**
 * How a trace exporter redacts: a {@link Redaction}, `false` (values as stored), or a function
 * returning an event's redacted form (events redacted before they reached the export worker).
 */
export type ExportRedactor = Redaction | false | ((event: AuditEvent) => RedactedEvent);

/** An event as it leaves the process: `data` and `threadId` redacted, and where. */
export type RedactedEvent = AuditEvent & {
  redacted: Redacted[];
  /** The global head the event's append reached (signed when the store signs): a witness outside the store. */
  globalHead?: WitnessHead;
};

/** Whether redacting `value` could change it (see {@link Redaction.mayChange}); true when the redaction cannot say. */
const mayRedact = (redaction: Redaction, value: unknown): boolean => redaction.mayChange?.(value) ?? true;

/** The shortest `EART_EXPORT_THREAD_KEY` taken: a deployment secret, not a word. */
const MIN_THREAD_KEY_LENGTH = 16;
let threadKey: Buffer | undefined;

/**
 * The key of the digest a redacted thread id is exported with: `EART_EXPORT_THREAD_KEY` (a
 * deployment secret shared by every process that exports, so a thread keeps its label across
 * restarts), else a random key made once per process (labels then hold within the process).
 * A plain hash would not do: a card number or an IBAN in a thread id is guessable from it.
 */
export function exportThreadKey(): Buffer {
  if (threadKey) return threadKey;
  const configured = process.env.EART_EXPORT_THREAD_KEY;
  if (configured !== undefined && configured !== "") {
    if (configured.length < MIN_THREAD_KEY_LENGTH) {
      throw new EartConfigError("EART_EXPORT_THREAD_KEY", `must be at least ${MIN_THREAD_KEY_LENGTH} characters (a deployment secret)`);
    }
    return (threadKey = Buffer.from(configured, "utf8"));
  }
  return (threadKey = randomBytes(32));
}

/** Makes `key` (hex) the export thread key of this thread of the process: the export worker takes its parent's. */
export function useExportThreadKey(key: string): void {
  threadKey = Buffer.from(key, "hex");
}

/**
 * A redacted thread id as exported: the redacted text and a keyed digest of the raw id, so two
 * threads whose ids differ only in what was redacted ("acct-<IBAN 1>", "acct-<IBAN 2>") stay two
 * threads in LangSmith and in tracing backends, and the digest tells nothing of the value.
 */
function threadLabel(redacted: string, raw: string): string {
  return `${redacted}~${createHmac("sha256", exportThreadKey()).update(raw, "utf8").digest("hex").slice(0, 16)}`;
}

const redactedCache = new WeakMap<Redaction, WeakMap<AuditEvent, RedactedEvent>>();
/** The thread id last screened: whether redaction may change it, and once asked, its exported label and what was redacted in it. */
let lastThread: { id: string; redaction: Redaction | undefined; hit: boolean; redacted?: { label: string; found: Redacted[] } } = { id: "", redaction: undefined, hit: false };

/** The exported form of the last screened thread id (redacted, then labelled), made once per thread. */
function redactedThread(redaction: Redaction): { label: string; found: Redacted[] } {
  if (lastThread.redacted) return lastThread.redacted;
  const { value, redacted } = redaction.apply(lastThread.id, undefined);
  return (lastThread.redacted = { label: redacted.length > 0 ? threadLabel(value, lastThread.id) : lastThread.id, found: redacted.map((r) => ({ ...r, path: "threadId" })) });
}

/**
 * Redacts an event for export, with nobody's roles (nothing is visible): `data` by field and
 * pattern, and the thread id by pattern (a redacted one gets a keyed digest of the raw id after
 * `~`: see {@link exportThreadKey}). The envelope (ids, seq, hashes, time) is kept, so the
 * hash no longer covers a redacted `data`; `redacted` lists the paths. The result is cached per
 * event object and redaction, so exporters sharing a redaction redact each event once.
 * @example
 * ```ts
 * redactEvent(event, standardRedaction()).data; // card numbers replaced by "[REDACTED:card_number]"
 * ```
 */
export function redactEvent(event: AuditEvent, redaction: Redaction | false): RedactedEvent {
  if (redaction === false) return withRedacted(event, event.threadId, event.data, []);
  let cache = redactedCache.get(redaction);
  const cached = cache?.get(event);
  if (cached) return cached;
  let out: RedactedEvent;
  // Consecutive events are mostly of one thread: its id is screened, redacted and labelled once.
  if (event.threadId !== lastThread.id || redaction !== lastThread.redaction) lastThread = { id: event.threadId, redaction, hit: mayRedact(redaction, event.threadId) };
  const threadHit = lastThread.hit;
  if (!threadHit && !mayRedact(redaction, event.data)) {
    out = withRedacted(event, event.threadId, event.data, []);
  } else {
    const data = redaction.apply(event.data, undefined);
    const thread = threadHit ? redactedThread(redaction) : { label: event.threadId, found: [] };
    out = withRedacted(event, thread.label, data.value, [
      ...thread.found.map((r) => ({ ...r })),
      ...data.redacted.map((r) => ({ ...r, path: `data.${r.path}` })),
    ]);
  }
  if (!cache) redactedCache.set(redaction, (cache = new WeakMap()));
  cache.set(event, out);
  return out;
}

/** The event with a new thread id, data and redactions (written out: much faster than a spread). */
function withRedacted(e: AuditEvent, threadId: string, data: Record<string, unknown>, redacted: Redacted[]): RedactedEvent {
  // Read back on the export worker, the head travels on the event itself.
  const globalHead = globalHeadOf(e) ?? (e as Partial<RedactedEvent>).globalHead;
  const out: RedactedEvent = { schemaVersion: e.schemaVersion, id: e.id, threadId, seq: e.seq, type: e.type, at: e.at, data, prevHash: e.prevHash, hash: e.hash, redacted };
  if (globalHead) out.globalHead = globalHead;
  return out;
}

const HEX = "0123456789abcdef";
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 16; i++) {
  HEX_VALUE[HEX.charCodeAt(i)] = i;
  HEX_VALUE[HEX.toUpperCase().charCodeAt(i)] = i;
}
const CANONICAL_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Positions of a dashed v4 UUID's random hex digits (not dashes, not the version or variant digit). */
const RANDOM_DIGITS = [...Array(36).keys()].filter((i) => ![8, 13, 14, 18, 19, 23].includes(i));
const masks = new Map<string, number[]>();

/**
 * A UUID v7 that is a function of a time, a kind and an id: time-ordered like the ids LangSmith
 * makes, and the same every time the same events are exported (so a re-export updates, not
 * duplicates). When `id` is a UUID (audit event ids are), its random digits are mixed with a mask
 * of `kind`; otherwise `kind`, `scope` and `id` are hashed (SHA-256).
 * @example
 * ```ts
 * deterministicUuid7(Date.parse(event.at), "langsmith.root", event.id); // "0193…-7…-8…"
 * ```
 */
export function deterministicUuid7(ms: number, kind: string, id: string, scope = ""): string {
  const ts = Math.max(0, Math.min(Math.trunc(ms), 2 ** 48 - 1)).toString(16).padStart(12, "0");
  let r = "";
  if (CANONICAL_UUID.test(id)) {
    let mask = masks.get(kind);
    if (mask === undefined) masks.set(kind, (mask = Array.from(createHash("sha256").update(`eart:${kind}`).digest("hex").slice(0, 19), (c) => HEX_VALUE[c.charCodeAt(0)]!)));
    for (let i = 0; i < 19; i++) r += HEX[HEX_VALUE[id.charCodeAt(RANDOM_DIGITS[i]!)]! ^ mask[i]!];
  } else {
    r = createHash("sha256").update(`eart:${kind}:${scope}:${id}`).digest("hex").slice(0, 19);
  }
  const variant = HEX[(HEX_VALUE[r.charCodeAt(3)]! & 0x3) | 0x8];
  return `${ts.slice(0, 8)}-${ts.slice(8, 12)}-7${r.slice(0, 3)}-${variant}${r.slice(4, 7)}-${r.slice(7, 19)}`;
}

/** What is known about one tool call of the thread, from its policy decision and approval. */
export interface CallFacts {
  toolCallId: string;
  name: string;
  digest?: string;
  args?: unknown;
  effect?: string;
  status?: string;
  policyIds: string[];
  policyVersion?: string;
  approverId?: string;
  approval?: string;
}

/** Why a segment waits. */
export type WaitingFor = "approval" | "escalation" | "recovery";

/**
 * How a segment ended: `completed` (`run.completed`), `paused` (waiting for a human), `refused`
 * (a resume that was refused), `open` (no end event: it failed, crashed, or is still running when
 * the exporter shut down).
 */
export type SegmentOutcome = "completed" | "paused" | "refused" | "open";

/** A paused segment, as a later one links to it. */
export interface SegmentLink<R> {
  /** Id of the segment's first event: with `startedAt`, what its LangSmith run id is derived from. */
  key: string;
  startedAt: string;
  /** Hash of the event that paused it; the resumed segment's first event has it as `prevHash`. */
  lastHash: string;
  /** The exporter's handle on it, when this process exported it. */
  root: R | undefined;
}

/** One graph invocation of a thread, with the governance facts it gathered. */
export interface Segment<R, T> {
  /** The raw thread id (for ids and keys; never exported as such). */
  threadId: string;
  /** The thread id as exported (redacted). */
  threadLabel: string;
  key: string;
  kind: "start" | "resume" | "continue";
  startedAt: string;
  firstSeq: number;
  lastSeq: number;
  lastAt: string;
  lastHash: string;
  /** The global head the segment's last exported append reached: a witness outside the store. */
  globalHead?: RedactedEvent["globalHead"];
  /** The (redacted) first event. */
  first: RedactedEvent;
  agentId: string | undefined;
  userId: string | undefined;
  effects: Set<string>;
  policyIds: Set<string>;
  policyVersions: Set<string>;
  approvers: Set<string>;
  digests: Set<string>;
  approvals: { toolCallId: string; approverId: string; decision: string; digest: string | undefined }[];
  resumedFrom: SegmentLink<R> | undefined;
  outcome: SegmentOutcome | undefined;
  waitingFor: WaitingFor | undefined;
  error: string | undefined;
  /** Text of the last model output. */
  output: string | undefined;
  /** Children created so far (orders them within a millisecond). */
  children: number;
  root: R | undefined;
  tools: Map<string, T>;
}

/** What an exporter does with a thread's events, segment by segment. */
export interface TraceHandlers<R, T> {
  startSegment(segment: Segment<R, T>, event: RedactedEvent): R;
  /** `segment.outcome` is set; `event` is the ending event (undefined for `open`). */
  endSegment(segment: Segment<R, T>, root: R, event: RedactedEvent | undefined): void;
  /** A `model.output`; `startAt` is the time of the step before it. */
  model(segment: Segment<R, T>, root: R, event: RedactedEvent, startAt: string): void;
  startTool(segment: Segment<R, T>, root: R, event: RedactedEvent, call: CallFacts | undefined): T;
  /** `event` is `tool.succeeded` / `tool.failed`, or undefined when the segment ended first. */
  endTool(segment: Segment<R, T>, root: R, tool: T, event: RedactedEvent | undefined, call: CallFacts | undefined): void;
  /** Any other event of the segment (policy decisions, approvals, identity, context, retries…). */
  step(segment: Segment<R, T>, root: R, event: RedactedEvent): void;
}

interface ThreadState<R, T> {
  agentId: string | undefined;
  userId: string | undefined;
  calls: Map<string, CallFacts>;
  current: Segment<R, T> | undefined;
  paused: SegmentLink<R> | undefined;
  lastSeq: number;
  lastAt: string | undefined;
}

const PAUSES: Partial<Record<AuditEventType, WaitingFor>> = {
  "approval.requested": "approval",
  "escalation.requested": "escalation",
  "tool.recovery_requested": "recovery",
};
/** Calls remembered per thread (for the approval and tool spans of later segments). */
const MAX_CALLS_PER_THREAD = 256;

/** The value when it is a non-empty string, else undefined (event data read by the trace exporters). */
export const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
/**
 * The object without undefined values and empty arrays: what the trace exporters send as run
 * fields, metadata or span attributes.
 * @example
 * ```ts
 * compact({ a: 1, b: undefined, c: [] }); // { a: 1 }
 * ```
 */
export function compact<V extends Record<string, unknown>>(o: V): V {
  const out: Record<string, unknown> = {};
  for (const k in o) {
    const v = o[k];
    if (v !== undefined && !(Array.isArray(v) && v.length === 0)) out[k] = v;
  }
  return out as V;
}
/** What the segment tracker reads of one event, each through its type's schema (see readEventData). */
interface EventFacts {
  who: AuditEventReading<"run.started" | "identity.bound" | "policy.decided"> | undefined;
  decided: AuditEventReading<"policy.decided"> | undefined;
  approved: AuditEventReading<"approval.decided"> | undefined;
  started: AuditEventReading<"tool.started"> | undefined;
  output: AuditEventReading<"model.output"> | undefined;
}

/** An event's facts, read once: only the reading of its own type is parsed. */
function factsOf(event: RedactedEvent): EventFacts {
  const decided = readEventData(event, "policy.decided");
  return {
    who: readEventData(event, "run.started") ?? readEventData(event, "identity.bound") ?? decided,
    decided,
    approved: readEventData(event, "approval.decided"),
    started: readEventData(event, "tool.started"),
    output: readEventData(event, "model.output"),
  };
}

const later = (a: string, b: string) => (Date.parse(a) >= Date.parse(b) ? a : b);

/**
 * Turns a stream of audit events into segments and calls an exporter's handlers: what the
 * LangSmith and OpenTelemetry exporters are built on, for writing another trace exporter. One per
 * exporter; it keeps a little state per thread (at most `maxThreads`, least recently used first
 * out: an evicted thread's open segment is ended as `open`). Events are redacted before any
 * handler sees them.
 * @example
 * ```ts
 * const tracker = new SegmentTracker<string, string>({
 *   startSegment: (s) => `run of ${s.agentId} on ${s.threadLabel}`,
 *   endSegment: (s, root) => console.log(root, s.outcome, [...s.approvers]),
 *   model: () => {}, startTool: (s, root, e) => e.id, endTool: () => {}, step: () => {},
 * }, { redaction: standardRedaction(), maxThreads: 1_000 });
 * await tracker.consume(await auditLog.read("t1"), auditLog);
 * ```
 */
export class SegmentTracker<R, T> {
  readonly #threads = new Map<string, ThreadState<R, T>>();
  readonly #handlers: TraceHandlers<R, T>;
  readonly #redact: (event: AuditEvent) => RedactedEvent;
  readonly #maxThreads: number;

  constructor(handlers: TraceHandlers<R, T>, options: { redaction: ExportRedactor; maxThreads: number }) {
    this.#handlers = handlers;
    const { redaction } = options;
    this.#redact = typeof redaction === "function" ? redaction : (event) => redactEvent(event, redaction);
    this.#maxThreads = options.maxThreads;
  }

  /**
   * Consumes events in order. A thread first seen after its start (another process began it) is
   * read from `source` first, silently, so agent, user, decisions and the paused segment are known.
   */
  async consume(events: readonly AuditEvent[], source: AuditSource | undefined): Promise<void> {
    let last: string | undefined;
    for (const event of events) {
      if (event.threadId === last) {
        this.#apply(this.#threads.get(last)!, event, false);
        continue;
      }
      last = event.threadId;
      let thread = this.#threads.get(event.threadId);
      if (!thread) {
        thread = this.#newThread(event.threadId);
        if (event.seq > 0 && source) {
          try {
            for (const earlier of await source.read(event.threadId)) {
              if (earlier.seq >= event.seq) break;
              this.#apply(thread, earlier, true);
            }
          } catch {
            // Without the history the segment is still exported, with fewer facts.
          }
        }
      } else {
        // Most recently used last.
        this.#threads.delete(event.threadId);
        this.#threads.set(event.threadId, thread);
      }
      this.#apply(thread, event, false);
    }
  }

  /**
   * Forgets what the tracker knows of these threads: called when a send of their events failed,
   * so that exporting them again (`exportThread`) maps them again instead of skipping them as
   * seen. A forgotten thread's later events read its history from the audit source, as for a
   * thread another process began. Its open spans or runs are left unfinished, not sent.
   */
  forget(threadIds: Iterable<string>): void {
    for (const id of threadIds) this.#threads.delete(id);
  }

  /** Ends every open segment as `open` (at shutdown, so spans are not left unfinished). */
  closeAll(): void {
    for (const thread of this.#threads.values()) if (thread.current) this.#end(thread, thread.current, "open", undefined, false);
  }

  #newThread(threadId: string): ThreadState<R, T> {
    const thread: ThreadState<R, T> = { agentId: undefined, userId: undefined, calls: new Map(), current: undefined, paused: undefined, lastSeq: -1, lastAt: undefined };
    this.#threads.set(threadId, thread);
    while (this.#threads.size > this.#maxThreads) {
      const [oldestId, oldest] = this.#threads.entries().next().value as [string, ThreadState<R, T>];
      if (oldest.current) this.#end(oldest, oldest.current, "open", undefined, false);
      this.#threads.delete(oldestId);
    }
    return thread;
  }

  #apply(thread: ThreadState<R, T>, raw: AuditEvent, silent: boolean): void {
    // The same event twice (a thread exported again in this process) is skipped.
    if (raw.seq <= thread.lastSeq) return;
    const event = this.#redact(raw);
    const d = event.data;
    // Each event read once through its type's schema, for the thread's facts and the segment's.
    const facts = factsOf(event);
    this.#learn(thread, facts);
    const h = this.#handlers;

    if (raw.type === "run.started") {
      if (thread.current) this.#end(thread, thread.current, "open", undefined, silent);
      this.#start(thread, raw, event, "start", silent);
    } else if (REFUSAL_EVENT_TYPES.has(raw.type)) {
      // A refused resume: its own segment, linked to the paused one, which stays the one to resume.
      if (thread.current) this.#end(thread, thread.current, "open", undefined, silent);
      const paused = thread.paused;
      const segment = this.#start(thread, raw, event, "resume", silent);
      segment.resumedFrom = paused;
      thread.paused = paused;
      segment.error = `${raw.type}: ${str(d.code) ?? "refused"}`;
      if (!silent) h.step(segment, segment.root!, event);
      this.#end(thread, segment, "refused", event, silent);
      thread.lastSeq = raw.seq;
      thread.lastAt = raw.at;
      return;
    } else if (!thread.current) {
      this.#start(thread, raw, event, thread.paused ? "resume" : "continue", silent);
    }

    const segment = thread.current!;
    // A segment begun in the history read silently (another process ran its start) gets its root now.
    if (!silent && segment.root === undefined) segment.root = h.startSegment(segment, segment.first);
    const root = segment.root as R;
    this.#gather(segment, thread, facts);
    const call = str(d.toolCallId) ? thread.calls.get(str(d.toolCallId)!) : undefined;
    const waiting = PAUSES[raw.type];

    if (raw.type === "run.started") {
      // The segment's root carries it.
    } else if (raw.type === "model.output") {
      if (!silent) h.model(segment, root, event, later(thread.lastAt ?? raw.at, segment.startedAt));
    } else if (raw.type === "tool.started") {
      const id = str(d.toolCallId) ?? event.id;
      const open = segment.tools.get(id);
      if (open !== undefined && !silent) h.endTool(segment, root, open, undefined, call);
      segment.tools.delete(id);
      if (!silent) segment.tools.set(id, h.startTool(segment, root, event, call));
    } else if ((raw.type === "tool.succeeded" || raw.type === "tool.failed") && segment.tools.has(str(d.toolCallId) ?? "")) {
      const id = str(d.toolCallId)!;
      if (!silent) h.endTool(segment, root, segment.tools.get(id)!, event, call);
      segment.tools.delete(id);
    } else if (raw.type !== "run.completed" && !silent) {
      h.step(segment, root, event);
    }

    segment.lastSeq = raw.seq;
    segment.lastAt = raw.at;
    segment.lastHash = raw.hash;
    if (event.globalHead) segment.globalHead = event.globalHead;
    thread.lastSeq = raw.seq;
    thread.lastAt = raw.at;
    if (raw.type === "run.completed") this.#end(thread, segment, "completed", event, silent);
    else if (waiting) {
      segment.waitingFor = waiting;
      this.#end(thread, segment, "paused", event, silent);
    }
  }

  /** Thread-level facts: who, and what was decided for each call. */
  #learn(thread: ThreadState<R, T>, { who, decided, approved }: EventFacts): void {
    if (who) {
      thread.agentId = who.agentId ?? thread.agentId;
      thread.userId = who.userId ?? thread.userId;
    }
    if (decided?.toolCallId) {
      const id = decided.toolCallId;
      const request = decided.request as { tool?: { args?: unknown } } | null | undefined;
      thread.calls.delete(id);
      thread.calls.set(id, {
        toolCallId: id,
        name: decided.name ?? "tool",
        ...(decided.digest ? { digest: decided.digest } : {}),
        ...(request?.tool?.args !== undefined ? { args: request.tool.args } : {}),
        ...(decided.effect ? { effect: decided.effect } : {}),
        ...(decided.status ? { status: decided.status } : {}),
        policyIds: decided.policyIds ?? [],
        ...(decided.policyVersion ? { policyVersion: decided.policyVersion } : {}),
      });
      if (thread.calls.size > MAX_CALLS_PER_THREAD) thread.calls.delete(thread.calls.keys().next().value!);
    }
    if (approved?.toolCallId) {
      const id = approved.toolCallId;
      const call = thread.calls.get(id) ?? { toolCallId: id, name: approved.name ?? "tool", policyIds: approved.policyIds ?? [] };
      thread.calls.set(id, {
        ...call,
        ...(approved.approverId ? { approverId: approved.approverId } : {}),
        ...(approved.decision ? { approval: approved.decision } : {}),
        ...(approved.digest ? { digest: approved.digest } : {}),
        ...(approved.status ? { status: approved.status } : {}),
        ...(approved.policyVersion ? { policyVersion: approved.policyVersion } : {}),
        ...((approved.policyIds ?? []).length > 0 ? { policyIds: approved.policyIds! } : {}),
      });
    }
  }

  /** Segment-level facts, gathered for the root run / span. */
  #gather(segment: Segment<R, T>, thread: ThreadState<R, T>, { decided, approved, started, output }: EventFacts): void {
    segment.agentId = thread.agentId ?? segment.agentId;
    segment.userId = thread.userId ?? segment.userId;
    for (const facts of [decided, approved]) {
      for (const p of facts?.policyIds ?? []) segment.policyIds.add(p);
      if (facts?.policyVersion) segment.policyVersions.add(facts.policyVersion);
    }
    if (decided?.effect) segment.effects.add(decided.effect);
    const digest = decided?.digest ?? started?.digest;
    if (digest) segment.digests.add(digest);
    if (approved?.approverId) {
      segment.approvers.add(approved.approverId);
      segment.approvals.push({ toolCallId: approved.toolCallId ?? "", approverId: approved.approverId, decision: approved.decision ?? "", digest: approved.digest });
      if (approved.digest) segment.digests.add(approved.digest);
    }
    if (output?.text !== undefined) segment.output = output.text;
  }

  #start(thread: ThreadState<R, T>, raw: AuditEvent, event: RedactedEvent, kind: Segment<R, T>["kind"], silent: boolean): Segment<R, T> {
    const segment: Segment<R, T> = {
      threadId: raw.threadId,
      threadLabel: event.threadId,
      key: raw.id,
      kind,
      startedAt: raw.at,
      firstSeq: raw.seq,
      lastSeq: raw.seq,
      lastAt: raw.at,
      lastHash: raw.hash,
      first: event,
      agentId: thread.agentId,
      userId: thread.userId,
      effects: new Set(),
      policyIds: new Set(),
      policyVersions: new Set(),
      approvers: new Set(),
      digests: new Set(),
      approvals: [],
      resumedFrom: kind === "resume" ? thread.paused : undefined,
      outcome: undefined,
      waitingFor: undefined,
      error: undefined,
      output: undefined,
      children: 0,
      root: undefined,
      tools: new Map(),
    };
    thread.paused = undefined;
    thread.current = segment;
    if (!silent) segment.root = this.#handlers.startSegment(segment, event);
    return segment;
  }

  #end(thread: ThreadState<R, T>, segment: Segment<R, T>, outcome: SegmentOutcome, event: RedactedEvent | undefined, silent: boolean): void {
    segment.outcome = outcome;
    if (!silent && segment.root !== undefined) {
      for (const [id, tool] of segment.tools) this.#handlers.endTool(segment, segment.root, tool, undefined, thread.calls.get(id));
      this.#handlers.endSegment(segment, segment.root, event);
    }
    segment.tools.clear();
    if (thread.current === segment) thread.current = undefined;
    if (outcome === "paused") thread.paused = { key: segment.key, startedAt: segment.startedAt, lastHash: segment.lastHash, root: segment.root };
    // Calls are looked up by later segments only across a pause; a finished run's can go.
    else if (outcome === "completed") thread.calls.clear();
  }
}
