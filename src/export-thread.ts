import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { sealedDataJson, type AuditEvent } from "./audit.js";
import { EXPORT_DEFAULTS, type AuditExporter, type AuditSource, type ExporterStats } from "./export-core.js";
import { redactEvent } from "./export-segments.js";
import { portableRedaction, type PortableRedactionRule, type Redaction } from "./context.js";

/**
 * Exporters on a worker thread. The graph's thread only redacts each event (once, shared by every
 * exporter), writes it as JSON and posts it; the worker redacts, maps events to runs or spans,
 * serialises them and talks HTTP. Those cost several times what posting does, and would
 * otherwise run on the graph's event loop. The JSON of an event's data is the text the audit log
 * hashed (see `sealedDataJson`), so posting does not serialise data again.
 *
 * The queue bound holds across the thread boundary: events posted and not yet settled by the
 * worker (exported, failed or dropped) count against `maxQueueSize`. Flush and shutdown keep
 * their deadlines whatever the worker does; at shutdown's deadline the worker is terminated and
 * what it still held is counted as dropped. A redaction made by `defineRedaction` whose rules
 * can cross threads (`portableRedaction`) runs on the worker; any other (a custom `validate`
 * function, a hand-written redaction) runs on the graph's thread before events are posted, and
 * only redacted events leave it.
 */

/** How events reach the worker: as stored (it redacts with these rules, or not at all) or `pre`-redacted. */
export type WorkerRedaction = PortableRedactionRule[] | false | "pre";

/** What the worker builds: an exporter kind and its options (structured-cloneable). */
export interface WorkerExporterSpec {
  kind: "langsmith" | "otlp";
  name: string;
  /** The exporter's own options, without `redaction`; the worker applies none (events arrive redacted). */
  options: Record<string, unknown>;
  redaction: Redaction | false;
  maxQueueSize: number;
  maxBatchSize: number;
  flushIntervalMs: number;
  /** The environment the worker sees: the process's when the exporter was created (clients read their defaults from it). */
  env: Record<string, string | undefined>;
}

/** An event on the wire: redacted, with the raw thread id when redaction changed it (for ids and keys only, never exported). */
export type WireEvent = AuditEvent & { redacted: unknown[]; rawThreadId?: string };

/** Messages from the graph's thread to the worker. */
export type ToWorker =
  | { t: "events"; json: string; count: number }
  | { t: "flush" | "shutdown"; id: number; deadline: number }
  | { t: "read"; id: number; json?: string; error?: string };

/** Messages from the worker. */
export type FromWorker = { t: "stats"; stats: ExporterStats } | { t: "done"; id: number; ok: boolean; stats: ExporterStats } | { t: "read"; id: number; threadId: string };

/** How long posting waits for more events before it posts (a full batch goes at once), in ms. */
const POST_DELAY_MS = 20;
/** What a flush or shutdown leaves itself, out of its deadline, to hear the worker's answer. */
const REPLY_MARGIN_MS = 50;

const rawCache = new WeakMap<AuditEvent, string>();
const redactedCache = new WeakMap<Redaction | typeof NO_REDACTION, WeakMap<AuditEvent, string>>();
const NO_REDACTION = {};

/** Strings that need no escaping in JSON (ids, hashes, ISO times, event types, most thread ids). */
const PLAIN = /^[\w.:+-]*$/;
const quote = (v: string): string => (PLAIN.test(v) ? `"${v}"` : JSON.stringify(v));

/** The event as JSON, as stored: its data is the text the audit log hashed, when it has it. Cached per event. */
function rawWire(e: AuditEvent): string {
  const hit = rawCache.get(e);
  if (hit !== undefined) return hit;
  const data = sealedDataJson(e) ?? JSON.stringify(e.data);
  const json = `{"schemaVersion":${e.schemaVersion},"id":${quote(e.id)},"threadId":${quote(e.threadId)},"seq":${e.seq},"type":${quote(e.type)},"at":${quote(e.at)},"data":${data},"prevHash":${quote(e.prevHash)},"hash":${quote(e.hash)}}`;
  rawCache.set(e, json);
  return json;
}

/** The event as JSON, redacted here; cached per event and redaction. */
function redactedWire(event: AuditEvent, redaction: Redaction | false): string {
  const key = redaction === false ? NO_REDACTION : redaction;
  let cache = redactedCache.get(key);
  const hit = cache?.get(event);
  if (hit !== undefined) return hit;
  const r = redactEvent(event, redaction);
  const out: WireEvent = r.threadId === event.threadId ? r : { ...r, rawThreadId: event.threadId };
  const json = JSON.stringify(out);
  if (!cache) redactedCache.set(key, (cache = new WeakMap()));
  cache.set(event, json);
  return json;
}

/** The worker's script: next to this module when built; from `dist` when this module runs as TypeScript source (tests). */
function workerScript(): URL {
  const here = new URL("./export-worker.js", import.meta.url);
  if (existsSync(fileURLToPath(here))) return here;
  const built = new URL("../dist/src/export-worker.js", import.meta.url);
  if (existsSync(fileURLToPath(built))) return built;
  throw new Error(`eart: the export worker script was not found at ${fileURLToPath(here)} (build the package: npm run build)`);
}

const ZERO: ExporterStats = { queued: 0, inFlight: 0, exported: 0, dropped: 0, failed: 0 };

/**
 * An exporter whose work runs on a worker thread (started at the first event). Used by
 * `createLangSmithExporter` and `createOtelExporter({ otlp })` unless `thread: "main"`.
 * @example
 * ```ts
 * const x = createWorkerExporter({ kind: "langsmith", name: "langsmith", options: { apiUrl }, redaction: standardRedaction(), maxQueueSize: 4096, maxBatchSize: 100, flushIntervalMs: 1_000 });
 * ```
 */
export function createWorkerExporter(spec: WorkerExporterSpec): AuditExporter {
  const { name, redaction, maxQueueSize, maxBatchSize } = spec;
  const portable = redaction === false ? false : portableRedaction(redaction);
  const workerRedaction: WorkerRedaction = portable ?? "pre";
  const wire = portable === undefined ? (e: AuditEvent) => redactedWire(e, redaction) : rawWire;
  let worker: Worker | undefined;
  let dead: string | undefined;
  let source: AuditSource | undefined;
  let buffer: AuditEvent[] = [];
  let postTimer: ReturnType<typeof setTimeout> | undefined;
  let posted = 0;
  let droppedHere = 0;
  let worker_: ExporterStats = ZERO;
  let closed = false;
  let finalised = false;
  let shutdownPromise: Promise<boolean> | undefined;
  let nextId = 1;
  const waiting = new Map<number, (reply: { ok: boolean; stats: ExporterStats }) => void>();

  const settled = () => worker_.exported + worker_.dropped + worker_.failed;
  /** Posted and not yet settled by the worker: its queue and its send in flight. */
  const inWorker = () => Math.max(0, posted - settled());

  function fail(reason: string): void {
    if (dead) return;
    dead = reason;
    // Whatever the worker held, and whatever waits here, will never be sent.
    droppedHere += inWorker() + buffer.length;
    posted = settled();
    buffer = [];
    for (const done of waiting.values()) done({ ok: false, stats: worker_ });
    waiting.clear();
  }

  function start(): Worker {
    if (worker) return worker;
    const { redaction: _, env, ...cloneable } = spec;
    const w = new Worker(workerScript(), { workerData: { ...cloneable, redaction: workerRedaction }, env });
    w.unref();
    w.on("message", (m: FromWorker) => {
      // After shutdown has settled its account, nothing the worker says changes it.
      if (finalised) return;
      if (m.t === "stats") worker_ = m.stats;
      else if (m.t === "done") {
        worker_ = m.stats;
        waiting.get(m.id)?.({ ok: m.ok, stats: m.stats });
        waiting.delete(m.id);
      } else if (m.t === "read") void answerRead(w, m.id, m.threadId);
    });
    w.on("error", (error) => fail(`${error.name}: ${error.message}`));
    w.on("exit", (code) => fail(closed ? "shut down" : `the export worker exited (code ${code})`));
    worker = w;
    return w;
  }

  async function answerRead(w: Worker, id: number, threadId: string): Promise<void> {
    try {
      if (!source) throw new Error("no audit source connected");
      const events = await source.read(threadId);
      w.postMessage({ t: "read", id, json: `[${events.map(wire).join(",")}]` } satisfies ToWorker);
    } catch (error) {
      w.postMessage({ t: "read", id, error: error instanceof Error ? error.message : String(error) } satisfies ToWorker);
    }
  }

  function post(): void {
    if (postTimer !== undefined) {
      clearTimeout(postTimer);
      postTimer = undefined;
    }
    if (buffer.length === 0 || dead) return;
    const events = buffer;
    buffer = [];
    const parts = new Array<string>(events.length);
    for (let i = 0; i < events.length; i++) parts[i] = wire(events[i]!);
    posted += events.length;
    start().postMessage({ t: "events", json: `[${parts.join(",")}]`, count: events.length } satisfies ToWorker);
  }

  /** Asks the worker to flush or shut down; resolves with its answer, or undefined at the deadline. */
  function request(t: "flush" | "shutdown", deadline: number): Promise<{ ok: boolean; stats: ExporterStats } | undefined> {
    const w = worker;
    if (!w || dead) return Promise.resolve(undefined);
    const id = nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        waiting.delete(id);
        resolve(undefined);
      }, Math.max(0, deadline - Date.now()));
      waiting.set(id, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      // A point in time, not a duration: the worker may read it late (still loading), and must
      // still answer before this side stops waiting.
      w.postMessage({ t, id, deadline: deadline - REPLY_MARGIN_MS } satisfies ToWorker);
    });
  }

  return {
    name,
    offer(events) {
      if (events.length === 0) return true;
      if (closed || dead || buffer.length + inWorker() + events.length > maxQueueSize) {
        droppedHere += events.length;
        return false;
      }
      for (const e of events) buffer.push(e);
      start();
      if (buffer.length >= maxBatchSize) post();
      else if (postTimer === undefined) {
        postTimer = setTimeout(post, Math.min(POST_DELAY_MS, spec.flushIntervalMs));
        postTimer.unref?.();
      }
      return true;
    },
    connect(s) {
      source = s;
    },
    async flush(options = {}) {
      const deadline = Date.now() + (options.timeoutMs ?? EXPORT_DEFAULTS.flushTimeoutMs);
      post();
      if (!worker) return !dead;
      const reply = await request("flush", deadline);
      return reply?.ok === true && buffer.length === 0 && inWorker() === 0;
    },
    shutdown(options = {}) {
      shutdownPromise ??= (async () => {
        const deadline = Date.now() + (options.timeoutMs ?? EXPORT_DEFAULTS.shutdownTimeoutMs);
        post();
        closed = true;
        if (!worker) return !dead;
        const reply = await request("shutdown", deadline);
        // Whatever the worker has not settled by now is dropped, and its last word is final.
        finalised = true;
        const left = inWorker();
        droppedHere += left;
        worker_ = { ...worker_, queued: 0, inFlight: 0 };
        posted = settled();
        const w = worker;
        // Terminated whatever it answered: its sends were aborted by its own shutdown, or are
        // abandoned now. Bounded: a worker stuck in native code is left to exit with the process.
        await Promise.race([w.terminate(), new Promise((r) => setTimeout(r, Math.max(0, Math.min(100, deadline - Date.now()))).unref?.())]);
        return reply?.ok === true && left === 0;
      })();
      return shutdownPromise;
    },
    stats() {
      const lastError = worker_.lastError ?? (dead && dead !== "shut down" ? dead : undefined);
      return {
        queued: buffer.length + Math.max(0, inWorker() - worker_.inFlight),
        inFlight: worker_.inFlight,
        exported: worker_.exported,
        dropped: droppedHere + worker_.dropped,
        failed: worker_.failed,
        ...(lastError !== undefined ? { lastError } : {}),
      };
    },
  };
}
