import { z } from "zod";
import type { AuditEvent, AuditEventInput, AuditLog, AuditVerification } from "../audit/log.js";
import { AuditLogOption } from "../audit/log.js";
import { parseOptions } from "../internal/options.js";

/**
 * Exporters: copies of sealed audit events sent to LangSmith, OpenTelemetry or a JSONL file, in
 * the background. The audit log stays the source of truth; an exporter never blocks the graph,
 * never throws into it, and loses (and counts) what it cannot send.
 */

/** What an exporter has done so far, counted in audit events. */
export interface ExporterStats {
  /** Waiting in the queue. */
  queued: number;
  /** Being sent right now. */
  inFlight: number;
  /** Sent (or handed to the tracer) without error. */
  exported: number;
  /** Never sent: the queue was full, the exporter was shut down, shutdown's deadline passed first, or the offer could not be taken (a redaction run at `offer` threw). */
  dropped: number;
  /** Sent, but the destination failed or timed out. Not retried: the audit log still has them. */
  failed: number;
  /** The last send error, as text. */
  lastError?: string;
}

/** Where an exporter reads a thread's earlier events (to continue a thread another process started). */
export interface AuditSource {
  read(threadId: string): Promise<AuditEvent[]>;
}

/** Options of {@link AuditExporter.flush} and {@link AuditExporter.shutdown}. */
export interface ExportDeadline {
  /** The most the call waits, in ms. */
  timeoutMs?: number;
}

/**
 * Receives sealed audit events and sends them somewhere in the background. `offer` never blocks
 * and never throws; it returns false when the events were dropped (queue full, or shut down).
 * @example
 * ```ts
 * const jsonl = createJsonlExporter({ path: "audit.jsonl" });
 * jsonl.offer(await auditLog.read("t1"));
 * await jsonl.shutdown({ timeoutMs: 5_000 });
 * jsonl.stats(); // { queued: 0, inFlight: 0, exported: 12, dropped: 0, failed: 0 }
 * ```
 */
export interface AuditExporter {
  readonly name: string;
  /** Queues events; all of them or none (a full queue drops the whole offer). */
  offer(events: readonly AuditEvent[]): boolean;
  /** Lets the exporter read a thread's earlier events when it first sees the thread mid-way. */
  connect(source: AuditSource): void;
  /** Sends everything queued so far; true when it all went out (sent or failed) within the deadline. */
  flush(options?: ExportDeadline): Promise<boolean>;
  /** Stops accepting events, flushes what it can by the deadline, then abandons the rest (counted as dropped). Always returns by the deadline. */
  shutdown(options?: ExportDeadline): Promise<boolean>;
  stats(): ExporterStats;
}

/** What a send gets: an abort signal (per batch timeout, or shutdown) and the audit source, if connected. */
export interface SendContext {
  signal: AbortSignal;
  source: AuditSource | undefined;
}

/**
 * Defaults shared by every exporter (the LangSmith exporter sends 100 events per batch).
 * @example
 * ```ts
 * createJsonlExporter({ path, maxQueueSize: EXPORT_DEFAULTS.maxQueueSize * 4 });
 * ```
 */
export const EXPORT_DEFAULTS = {
  maxQueueSize: 4096,
  maxBatchSize: 512,
  flushIntervalMs: 1_000,
  exportTimeoutMs: 10_000,
  flushTimeoutMs: 30_000,
  shutdownTimeoutMs: 5_000,
} as const;

/** Queue options every exporter accepts. */
export const ExportQueueOptionsSchema = z
  .object({
    /** Events held at most; an offer that does not fit is dropped whole and counted. Default 4,096. */
    maxQueueSize: z.number().int().positive().default(EXPORT_DEFAULTS.maxQueueSize),
    /** Events per send. Default 512. */
    maxBatchSize: z.number().int().positive().default(EXPORT_DEFAULTS.maxBatchSize),
    /** How long events wait for more before a send, in ms (a full batch goes at once). Default 1,000. */
    flushIntervalMs: z.number().int().nonnegative().default(EXPORT_DEFAULTS.flushIntervalMs),
    /** The most one send may take, in ms; it is then aborted and its events counted as failed. Default 10,000. */
    exportTimeoutMs: z.number().int().positive().default(EXPORT_DEFAULTS.exportTimeoutMs),
  })
  .strict();
export type ExportQueueOptions = z.input<typeof ExportQueueOptionsSchema>;

const BatchExporterOptionsSchema = ExportQueueOptionsSchema.extend({
  name: z.string().min(1),
  /**
   * Sends one batch; rejects on failure. Should stop when `signal` aborts: the queue stops waiting
   * for it then, but never starts the next send before it settles (so sends never overlap).
   */
  send: z.custom<(events: AuditEvent[], context: SendContext) => Promise<void>>((v) => typeof v === "function", "must be a function"),
  /** Runs after every flush (e.g. an SDK's own `forceFlush`), within the flush's deadline. */
  afterFlush: z.custom<(signal: AbortSignal) => Promise<void>>((v) => typeof v === "function", "must be a function").optional(),
  /** Releases resources at the end of shutdown (close a file), within its deadline. */
  close: z.custom<(signal: AbortSignal) => Promise<void>>((v) => typeof v === "function", "must be a function").optional(),
}).strict();
export type BatchExporterOptions = z.input<typeof BatchExporterOptionsSchema>;

/** An error a send was aborted with. */
class ExportAbortError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExportAbortError";
  }
}

/** Resolves after `ms`, or at once when `signal` aborts; the timer never keeps the process alive. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((done) => {
    if (signal?.aborted) return done();
    const timer = setTimeout(finish, Math.max(0, ms));
    timer.unref?.();
    function finish() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", finish);
      done();
    }
    signal?.addEventListener("abort", finish, { once: true });
  });
}

/** A promise that rejects when `signal` aborts (and never otherwise). */
function rejectOnAbort(signal: AbortSignal): { promise: Promise<never>; dispose(): void } {
  let onAbort = () => {};
  const promise = new Promise<never>((_, fail) => {
    onAbort = () => fail(signal.reason instanceof Error ? signal.reason : new ExportAbortError(String(signal.reason ?? "aborted")));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  promise.catch(() => {});
  return { promise, dispose: () => signal.removeEventListener("abort", onAbort) };
}

/**
 * The queue every eart exporter is built on, for writing your own (a SIEM's HTTP collector, a
 * message bus): bounded, batched, flushed in the background on a timer or when a batch is full,
 * one send at a time (so a thread's events go out in order), each send bounded by
 * `exportTimeoutMs`, and `shutdown` bounded by its deadline whatever the destination does.
 * @example
 * ```ts
 * const siem = createBatchExporter({
 *   name: "siem",
 *   send: async (events, { signal }) => {
 *     const res = await fetch(url, { method: "POST", body: JSON.stringify(events), signal });
 *     if (!res.ok) throw new Error(`siem answered ${res.status}`);
 *   },
 * });
 * ```
 */
export function createBatchExporter(options: BatchExporterOptions): AuditExporter {
  const opts = parseOptions(BatchExporterOptionsSchema, options);
  const { name, send, maxQueueSize, maxBatchSize, flushIntervalMs, exportTimeoutMs, afterFlush, close } = opts;
  let queue: AuditEvent[] = [];
  let inFlight = 0;
  let exported = 0;
  let dropped = 0;
  let failed = 0;
  let lastError: string | undefined;
  let source: AuditSource | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let draining: Promise<void> | undefined;
  let closed = false;
  let shutdownPromise: Promise<boolean> | undefined;
  // Aborted at the end of shutdown's deadline: stops the send in flight.
  const stop = new AbortController();
  let previousSend: Promise<unknown> = Promise.resolve();

  let timerDue = 0;
  function schedule(delay: number): void {
    if (closed || draining || queue.length === 0) return;
    const due = Date.now() + delay;
    if (timer !== undefined) {
      if (timerDue <= due) return;
      clearTimeout(timer);
    }
    timerDue = due;
    timer = setTimeout(() => {
      timer = undefined;
      void drain();
    }, delay);
    timer.unref?.();
  }

  async function sendOne(batch: AuditEvent[]): Promise<void> {
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(new ExportAbortError(`${name}: send did not finish within ${exportTimeoutMs} ms`)), exportTimeoutMs);
    timeout.unref?.();
    const onStop = () => controller.abort(new ExportAbortError(`${name}: shut down`));
    if (stop.signal.aborted) onStop();
    else stop.signal.addEventListener("abort", onStop, { once: true });
    const aborted = rejectOnAbort(controller.signal);
    inFlight = batch.length;
    // Sends never overlap: one abandoned after its deadline is waited for by the next (within the
    // next one's own deadline), so a send's state is never shared with another's.
    const raw = previousSend.then(() => {
      controller.signal.throwIfAborted();
      return send(batch, { signal: controller.signal, source });
    });
    previousSend = raw.catch(() => {});
    try {
      // The race makes the queue move on even if a destination ignores the signal.
      await Promise.race([raw, aborted.promise]);
      exported += batch.length;
    } catch (error) {
      failed += batch.length;
      lastError = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    } finally {
      inFlight = 0;
      clearTimeout(timeout);
      aborted.dispose();
      stop.signal.removeEventListener("abort", onStop);
    }
  }

  /**
   * Sends what is queued now, then keeps going only while full batches wait (so a busy graph is
   * exported in full batches, not one small send per step); `all` sends until the queue is empty.
   */
  function drain(all = false): Promise<void> {
    if (draining) return draining;
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    let due = queue.length;
    draining = (async () => {
      while ((all ? queue.length > 0 : due > 0 || queue.length >= maxBatchSize) && !stop.signal.aborted) {
        due -= Math.min(queue.length, maxBatchSize);
        const batch = queue.length <= maxBatchSize ? queue : queue.slice(0, maxBatchSize);
        queue = queue.length <= maxBatchSize ? [] : queue.slice(maxBatchSize);
        await sendOne(batch);
      }
    })().finally(() => {
      draining = undefined;
      if (queue.length > 0) schedule(queue.length >= maxBatchSize ? 0 : flushIntervalMs);
    });
    return draining;
  }

  /** Drains until the queue is empty or the deadline passes; true when empty. */
  async function drainUntil(deadline: number): Promise<boolean> {
    while ((queue.length > 0 || draining) && !stop.signal.aborted) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      const until = new AbortController();
      await Promise.race([drain(true), sleep(left, until.signal)]);
      until.abort();
    }
    return queue.length === 0 && !draining;
  }

  async function runBounded(step: ((signal: AbortSignal) => Promise<void>) | undefined, deadline: number): Promise<boolean> {
    if (!step) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    const controller = new AbortController();
    let ok = false;
    const done = Promise.resolve()
      .then(() => step(controller.signal))
      .then(() => (ok = true))
      .catch((error: unknown) => {
        lastError = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      });
    const wait = new AbortController();
    await Promise.race([done, sleep(left, wait.signal)]);
    wait.abort();
    controller.abort(new ExportAbortError(`${name}: deadline passed`));
    return ok;
  }

  return {
    name,
    offer(events) {
      if (events.length === 0) return true;
      if (closed || queue.length + events.length > maxQueueSize) {
        dropped += events.length;
        return false;
      }
      for (const e of events) queue.push(e);
      schedule(queue.length >= maxBatchSize ? 0 : flushIntervalMs);
      return true;
    },
    connect(s) {
      source = s;
    },
    async flush(options = {}) {
      const deadline = Date.now() + (options.timeoutMs ?? EXPORT_DEFAULTS.flushTimeoutMs);
      const drained = await drainUntil(deadline);
      const after = drained ? await runBounded(afterFlush, deadline) : false;
      return drained && after;
    },
    shutdown(options = {}) {
      shutdownPromise ??= (async () => {
        const deadline = Date.now() + (options.timeoutMs ?? EXPORT_DEFAULTS.shutdownTimeoutMs);
        closed = true;
        if (timer !== undefined) {
          clearTimeout(timer);
          timer = undefined;
        }
        let ok = await drainUntil(deadline);
        if (ok) ok = await runBounded(afterFlush, deadline);
        // Whatever is still out there is abandoned: the send in flight is aborted (and counted
        // as failed by it), the rest of the queue is dropped.
        stop.abort(new ExportAbortError(`${name}: shutdown deadline passed`));
        if (draining) await draining;
        dropped += queue.length;
        if (queue.length > 0) ok = false;
        queue = [];
        // Close gets what is left of the deadline, and at least a moment to release a file.
        const closedOk = await runBounded(close, Math.max(deadline, Date.now() + 100));
        return ok && closedOk;
      })();
      return shutdownPromise;
    },
    stats() {
      return { queued: queue.length, inFlight, exported, dropped, failed, ...(lastError !== undefined ? { lastError } : {}) };
    },
  };
}

/** The exporters' stats by name (a second exporter with the same name gets `name#2`). */
export type TraceExportStats = Record<string, ExporterStats>;

/**
 * An {@link AuditLog} that writes through to another one and then hands the stored events to
 * exporters, without waiting for them. Pass it to the agent as its `auditLog`. Other methods of
 * the inner log are forwarded; closing it stays the caller's (`traceExport.auditLog`).
 */
export interface TraceExport extends AuditLog {
  readonly auditLog: AuditLog;
  readonly exporters: readonly AuditExporter[];
  /** Flushes every exporter (in parallel), within one deadline; true when all are drained. */
  flush(options?: ExportDeadline): Promise<boolean>;
  /** Shuts every exporter down (in parallel), within one deadline. Default 5,000 ms. */
  shutdown(options?: ExportDeadline): Promise<boolean>;
  stats(): TraceExportStats;
}

const TraceExportOptionsSchema = z
  .object({
    /** The audit log events are stored in first: the source of truth. */
    auditLog: AuditLogOption,
    exporters: z.array(
      z.custom<AuditExporter>(
        (v) => typeof (v as AuditExporter)?.offer === "function" && typeof (v as AuditExporter)?.shutdown === "function",
        "must be an AuditExporter (createLangSmithExporter, createOtelExporter, createJsonlExporter, createBatchExporter)",
      ),
    ),
  })
  .strict();
export type TraceExportOptions = z.input<typeof TraceExportOptionsSchema>;

function statsByName(exporters: readonly AuditExporter[]): TraceExportStats {
  const out: TraceExportStats = {};
  for (const x of exporters) {
    let key = x.name;
    for (let i = 2; key in out; i++) key = `${x.name}#${i}`;
    out[key] = x.stats();
  }
  return out;
}

/**
 * Wraps an audit log so every append is also exported. `append` stores the events in the inner
 * log first (an append that fails there fails as before, and exports nothing), then offers the
 * stored events to each exporter's queue and returns: exporting never adds a wait to the graph.
 * @example
 * ```ts
 * const traceExport = createTraceExport({
 *   auditLog: new SqliteAuditLog({ path: ".eart/agent.sqlite" }),
 *   exporters: [createLangSmithExporter(), createOtelExporter(), createJsonlExporter({ path: "audit.jsonl" })],
 * });
 * const agent = createGovernedAgent({ ...options, auditLog: traceExport });
 * // at exit
 * await traceExport.shutdown({ timeoutMs: 5_000 });
 * ```
 */
export function createTraceExport(options: TraceExportOptions): TraceExport {
  const { auditLog, exporters } = parseOptions(TraceExportOptionsSchema, options);
  const source: AuditSource = { read: (threadId) => auditLog.read(threadId) };
  for (const x of exporters) x.connect(source);
  const all = (run: (x: AuditExporter) => Promise<boolean>) => Promise.all(exporters.map(run)).then((r) => r.every(Boolean));
  // Every other method of the inner log (verify with its options, signedHead, close…) is forwarded
  // as it is, so the wrapper is that log plus export.
  const forwarded: Record<string, unknown> = {};
  const inner = auditLog as unknown as Record<string, unknown>;
  for (let o: object | null = auditLog; o && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
    for (const key of Object.getOwnPropertyNames(o)) {
      if (key !== "constructor" && !(key in forwarded) && typeof inner[key] === "function") forwarded[key] = (...args: unknown[]) => (inner[key] as (...a: unknown[]) => unknown).apply(auditLog, args);
    }
  }
  return {
    ...(forwarded as object),
    auditLog,
    exporters,
    async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
      const stored = await auditLog.append(events);
      for (const x of exporters) {
        try {
          x.offer(stored);
        } catch {
          // An exporter must not throw here; if one does, the graph still goes on.
        }
      }
      return stored;
    },
    read: (threadId: string): Promise<AuditEvent[]> => auditLog.read(threadId),
    verify: (...args: Parameters<AuditLog["verify"]>): Promise<AuditVerification> => auditLog.verify(...args),
    listThreads: (): Promise<string[]> => auditLog.listThreads(),
    flush: (o) => all((x) => x.flush(o)),
    shutdown: (o) => all((x) => x.shutdown(o)),
    stats: () => statsByName(exporters),
  };
}

/** The most events `exportThread` offers an exporter at a time. */
const OFFER_EVENTS = EXPORT_DEFAULTS.maxBatchSize;

/**
 * Offers a thread's events with `seq` above `afterSeq` (all by default) to exporters, read from
 * the audit log: to export a thread on demand, or again (LangSmith run ids are derived from the
 * events, so the same runs are sent again, not new ones). Never waits for a send and never throws
 * for an exporter (one whose offer throws has refused it). Events are offered in order, 512 at a
 * time, and an exporter is offered no more once it refused some (its queue full, shut down, or it
 * could not take them). Returns the last `seq` every exporter took (`afterSeq` when one took
 * none), so a later call from there offers the rest. Given one `afterSeq` per exporter (same
 * order), it reads the log once and returns the last `seq` each exporter took.
 * @example
 * ```ts
 * const last = await exportThread(auditLog, "refund-1042", [jsonl]);
 * const [jsonlAt, otelAt] = await exportThread(auditLog, "refund-1042", [jsonl, otel], [last, -1]);
 * ```
 */
export async function exportThread(auditLog: AuditSource, threadId: string, exporters: readonly AuditExporter[], afterSeq?: number): Promise<number>;
export async function exportThread(auditLog: AuditSource, threadId: string, exporters: readonly AuditExporter[], afterSeq: readonly number[]): Promise<number[]>;
export async function exportThread(auditLog: AuditSource, threadId: string, exporters: readonly AuditExporter[], afterSeq: number | readonly number[] = -1): Promise<number | number[]> {
  const after = exporters.map((_, i) => (typeof afterSeq === "number" ? afterSeq : (afterSeq[i] ?? -1)));
  const all = await auditLog.read(threadId);
  // Exporters at the same point get the same pieces: the export worker posts each once for all of them.
  const pieces = new Map<number, AuditEvent[][]>();
  const piecesAfter = (at: number): AuditEvent[][] => {
    let p = pieces.get(at);
    if (!p) {
      const events = all.filter((e) => e.seq > at);
      p = [];
      for (let i = 0; i < events.length; i += OFFER_EVENTS) p.push(events.length <= OFFER_EVENTS ? events : events.slice(i, i + OFFER_EVENTS));
      pieces.set(at, p);
    }
    return p;
  };
  const took = [...after];
  const taking = exporters.map((x) => {
    try {
      x.connect(auditLog);
      return true;
    } catch {
      return false;
    }
  });
  const rounds = Math.max(0, ...after.map((at) => piecesAfter(at).length));
  for (let k = 0; k < rounds; k++) {
    for (const [i, x] of exporters.entries()) {
      const piece = piecesAfter(after[i]!)[k];
      if (!taking[i] || !piece) continue;
      try {
        if (x.offer(piece)) {
          took[i] = piece.at(-1)!.seq;
          continue;
        }
      } catch {
        // An exporter must not throw; one that does has not taken the events, and stops nobody.
      }
      taking[i] = false;
    }
  }
  if (typeof afterSeq !== "number") return took;
  return took.length > 0 ? Math.min(...took) : Math.max(afterSeq, all.at(-1)?.seq ?? afterSeq);
}
