import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { EartConfigError } from "../errors.js";
import { globalHeadOf, sealedDataJson, type AuditEvent } from "../audit/log.js";
import { EXPORT_DEFAULTS, type AuditExporter, type AuditSource, type ExporterStats } from "./core.js";
import { exportThreadKey, redactEvent } from "./segments.js";
import { portableRedaction, type PortableRedactionRule, type Redaction } from "../context/redaction.js";

/**
 * Exporters on a worker thread: one thread per process, shared by every worker exporter
 * (LangSmith, OTLP), started with the first event any of them gets and ended when the last of
 * them has shut down. The graph's thread only writes each event as JSON (the JSON of its data is
 * the text the audit log hashed, see `sealedDataJson`) and posts it, once for all the exporters
 * it was offered to; the worker parses it once, redacts it once per redaction, and each exporter
 * maps events to runs or spans, serialises them and talks HTTP there. Those cost several times
 * what posting does, and would otherwise run on the graph's event loop.
 *
 * The queue bound holds across the thread boundary: events posted and not yet settled by the
 * worker (exported, failed or dropped) count against `maxQueueSize`. Flush and shutdown keep
 * their deadlines whatever the worker does; what an exporter's shutdown leaves unsettled at its
 * deadline is counted as dropped, and the worker is terminated once no exporter uses it. A
 * redaction made by `defineRedaction` whose rules can cross threads (`portableRedaction`) runs on
 * the worker; any other (a custom `validate` function, a hand-written redaction) runs on the
 * graph's thread before events are posted, and only redacted events leave it.
 */

/** How events reach the worker: as stored (it redacts with these rules, or not at all) or `pre`-redacted. */
export type WorkerRedaction = PortableRedactionRule[] | false | "pre";

/** What the worker builds for one exporter (structured-cloneable). */
export interface WorkerMemberSpec {
  kind: "langsmith" | "otlp";
  /** The exporter's own options, without `redaction`. */
  options: Record<string, unknown>;
  redaction: WorkerRedaction;
  /** The environment the exporter is built in: the process's when it was created (clients read their defaults from it). */
  env: Record<string, string | undefined>;
  /** The graph's thread's export thread key (hex), for redacted thread ids. */
  threadKey: string;
}

/** An event on the wire: as stored, or redacted with the raw thread id when redaction changed it (for ids and keys only, never exported). */
export type WireEvent = AuditEvent & { redacted?: unknown[]; rawThreadId?: string };

/** Messages from the graph's thread to the worker. `events` is JSON: `[{ "ids": [member…], "events": [WireEvent…] }…]`. */
export type ToWorker =
  | { t: "add"; member: number; spec: WorkerMemberSpec }
  | { t: "events"; json: string }
  | { t: "flush" | "shutdown"; member: number; id: number; deadline: number }
  | { t: "read"; id: number; json?: string; error?: string };

/** Messages from the worker. */
export type FromWorker =
  | { t: "stats"; member: number; stats: ExporterStats }
  | { t: "done"; member: number; id: number; ok: boolean; stats: ExporterStats }
  | { t: "read"; member: number; id: number; threadId: string };

/**
 * The export worker's scheduling priority on Linux (a nice value, 0–19), from
 * `EART_EXPORT_WORKER_NICE`; default 19, the lowest: the worker gets the CPU time the graphs'
 * threads leave, so exporting does not slow a busy process. What the worker cannot keep up
 * with waits in the bounded queue, and is dropped and counted beyond it. `0` runs it at the
 * process's own priority.
 * @example
 * ```ts
 * process.env.EART_EXPORT_WORKER_NICE = "10";
 * exportWorkerNice(); // 10
 * ```
 */
export function exportWorkerNice(): number {
  const raw = process.env.EART_EXPORT_WORKER_NICE;
  if (raw === undefined || raw.trim() === "") return 19;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 19) throw new EartConfigError("EART_EXPORT_WORKER_NICE", `must be an integer from 0 to 19, got "${raw}"`);
  return n;
}

/** How long posting waits for more events before it posts (a full batch goes at once), in ms. */
const POST_DELAY_MS = 100;
/** What a flush or shutdown leaves itself, out of its deadline, to hear the worker's answer. */
const REPLY_MARGIN_MS = 50;

/** Strings that need no escaping in JSON (ids, hashes, ISO times, event types, most thread ids). */
const PLAIN = /^[\w.:+-]*$/;
const quote = (v: string): string => (PLAIN.test(v) ? `"${v}"` : JSON.stringify(v));

/** The event as JSON, as stored: its data is the text the audit log hashed, when it has it. (Written once per post for every exporter it goes to.) */
function rawWire(e: AuditEvent): string {
  const data = sealedDataJson(e) ?? JSON.stringify(e.data);
  const head = globalHeadOf(e);
  return `{"schemaVersion":${e.schemaVersion},"id":${quote(e.id)},"threadId":${quote(e.threadId)},"seq":${e.seq},"type":${quote(e.type)},"at":${quote(e.at)},"data":${data},"prevHash":${quote(e.prevHash)},"hash":${quote(e.hash)}${head ? `,"globalHead":${JSON.stringify(head)}` : ""}}`;
}

/** The event as JSON, redacted here (each entry of a post is written once, for every exporter it goes to). */
function redactedWire(event: AuditEvent, redaction: Redaction): string {
  const r = redactEvent(event, redaction);
  const out: WireEvent = r.threadId === event.threadId ? r : { ...r, rawThreadId: event.threadId };
  return JSON.stringify(out);
}

/** The worker's script: next to this module when built; from `dist` when this module runs as TypeScript source (tests). */
function workerScript(): URL {
  const here = new URL("./worker.js", import.meta.url);
  if (existsSync(fileURLToPath(here))) return here;
  const built = new URL("../../dist/src/export/worker.js", import.meta.url);
  if (existsSync(fileURLToPath(built))) return built;
  throw new EartConfigError("exportWorker", `the export worker script was not found at ${fileURLToPath(here)} (build the package: npm run build)`);
}

const ZERO: ExporterStats = { queued: 0, inFlight: 0, exported: 0, dropped: 0, failed: 0 };

/** One exporter's side of the shared worker. */
interface Member {
  readonly id: number;
  /** Entries are shared by exporters whose events travel alike: as stored, or redacted by the same redaction. */
  readonly wireKey: object;
  readonly wire: (event: AuditEvent) => string;
  readonly delayMs: number;
  source: AuditSource | undefined;
  /** Offered and not yet posted. */
  buffered: number;
  posted(count: number): void;
  message(m: Exclude<FromWorker, { t: "read" }>): void;
  fail(reason: string): void;
}

const RAW = {};

/** The process's export worker and the exporters on it. */
class ExportHost {
  readonly worker: Worker;
  readonly members = new Map<number, Member>();
  // Each entry is written as JSON when it is queued: what waits for the post is text, and the
  // events themselves can be collected young.
  #pending: { events: readonly AuditEvent[] | undefined; wireKey: object; json: string; count: number; ids: number[] }[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #dead = false;

  constructor(nice: number) {
    this.worker = new Worker(workerScript(), { workerData: { nice } });
    this.worker.unref();
    this.worker.on("message", (m: FromWorker) => {
      const member = this.members.get(m.member);
      if (!member) return;
      if (m.t === "read") void this.#answerRead(member, m.id, m.threadId);
      else member.message(m);
    });
    this.worker.on("error", (error) => this.#fail(`${error.name}: ${error.message}`));
    this.worker.on("exit", (code) => this.#fail(`the export worker exited (code ${code})`));
  }

  #fail(reason: string): void {
    if (host === this) host = undefined;
    if (this.#dead) return;
    this.#dead = true;
    this.#pending = [];
    for (const m of this.members.values()) m.fail(reason);
    this.members.clear();
  }

  add(member: Member, spec: WorkerMemberSpec): void {
    this.members.set(member.id, member);
    this.worker.postMessage({ t: "add", member: member.id, spec } satisfies ToWorker);
  }

  /** Queues events of one exporter; the same events offered to several exporters in a row travel once. */
  enqueue(member: Member, events: readonly AuditEvent[]): void {
    const last = this.#pending.at(-1);
    if (last && last.events === events && last.wireKey === member.wireKey && !last.ids.includes(member.id)) last.ids.push(member.id);
    else {
      if (last) last.events = undefined;
      const list = new Array<string>(events.length);
      for (let i = 0; i < events.length; i++) list[i] = member.wire(events[i]!);
      this.#pending.push({ events, wireKey: member.wireKey, json: list.join(","), count: events.length, ids: [member.id] });
    }
    member.buffered += events.length;
    if (member.buffered >= MAX_POST_EVENTS) this.post();
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.post(), member.delayMs);
      this.#timer.unref?.();
    }
  }

  /** Posts everything queued, as one message. */
  post(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    const entries = this.#pending;
    if (entries.length === 0 || this.#dead) return;
    this.#pending = [];
    const parts: string[] = [];
    for (const { json, count, ids } of entries) {
      parts.push(`{"ids":[${ids.join(",")}],"events":[${json}]}`);
      for (const id of ids) {
        const m = this.members.get(id);
        if (!m) continue;
        m.buffered -= count;
        m.posted(count);
      }
    }
    this.worker.postMessage({ t: "events", json: `[${parts.join(",")}]` } satisfies ToWorker);
  }

  /** Drops an exporter's queued events (its shutdown could not wait for them); returns how many. */
  unqueue(member: Member): number {
    let n = 0;
    for (const entry of this.#pending) {
      const at = entry.ids.indexOf(member.id);
      if (at < 0) continue;
      entry.ids.splice(at, 1);
      n += entry.count;
    }
    this.#pending = this.#pending.filter((e) => e.ids.length > 0);
    member.buffered = 0;
    return n;
  }

  request(member: Member, t: "flush" | "shutdown", deadline: number, waiting: Map<number, (reply: { ok: boolean; stats: ExporterStats }) => void>): Promise<{ ok: boolean; stats: ExporterStats } | undefined> {
    if (this.#dead) return Promise.resolve(undefined);
    const id = nextRequest++;
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
      this.worker.postMessage({ t, member: member.id, id, deadline: deadline - REPLY_MARGIN_MS } satisfies ToWorker);
    });
  }

  /** An exporter is done with the worker; the last one out terminates it (bounded by `deadline`). */
  async remove(member: Member, deadline: number): Promise<void> {
    this.members.delete(member.id);
    if (this.members.size > 0) return;
    if (host === this) host = undefined;
    this.#dead = true;
    await Promise.race([this.worker.terminate(), new Promise((r) => setTimeout(r, Math.max(0, Math.min(100, deadline - Date.now()))).unref?.())]);
  }

  async #answerRead(member: Member, id: number, threadId: string): Promise<void> {
    try {
      if (!member.source) throw new Error("no audit source connected");
      const events = await member.source.read(threadId);
      this.worker.postMessage({ t: "read", id, json: `[${events.map(member.wire).join(",")}]` } satisfies ToWorker);
    } catch (error) {
      this.worker.postMessage({ t: "read", id, error: error instanceof Error ? error.message : String(error) } satisfies ToWorker);
    }
  }
}

/** Events held for one post at most: a bigger backlog goes at once. */
const MAX_POST_EVENTS = 512;
let host: ExportHost | undefined;
let nextMember = 1;
let nextRequest = 1;

/**
 * An exporter whose work runs on the process's export worker (joined at its first event), built
 * there from `options` (the caller's, structured-cloneable) in the environment of now. Used by
 * `createLangSmithExporter` and `createOtelExporter({ otlp })` unless `thread: "main"`.
 * @example
 * ```ts
 * const x = createWorkerExporter("langsmith", { apiUrl }, { name: "langsmith", maxQueueSize: 4096, flushIntervalMs: 1_000 }, standardRedaction());
 * ```
 */
export function createWorkerExporter(
  kind: WorkerMemberSpec["kind"],
  options: Record<string, unknown>,
  queue: { name: string; maxQueueSize: number; flushIntervalMs: number },
  redaction: Redaction | false,
): AuditExporter {
  const { name, maxQueueSize, flushIntervalMs } = queue;
  const portable = redaction === false ? false : portableRedaction(redaction);
  // A redaction that cannot cross threads is applied here, before posting.
  const redactHere = redaction !== false && portable === undefined ? redaction : undefined;
  const memberSpec: WorkerMemberSpec = { kind, options, redaction: portable ?? "pre", env: { ...process.env }, threadKey: exportThreadKey().toString("hex") };
  // Read now, so a bad value fails here; the first exporter to start the worker sets its priority.
  const nice = exportWorkerNice();
  let joined: ExportHost | undefined;
  let dead: string | undefined;
  let posted = 0;
  let droppedHere = 0;
  let errorHere: string | undefined;
  let worker_: ExporterStats = ZERO;
  let closed = false;
  let finalised = false;
  let shutdownPromise: Promise<boolean> | undefined;
  const waiting = new Map<number, (reply: { ok: boolean; stats: ExporterStats }) => void>();

  const settled = () => worker_.exported + worker_.dropped + worker_.failed;
  /** Posted and not yet settled by the worker: its queue and its send in flight. */
  const inWorker = () => Math.max(0, posted - settled());

  const member: Member = {
    id: nextMember++,
    wireKey: redactHere ?? RAW,
    wire: redactHere ? (e) => redactedWire(e, redactHere) : rawWire,
    delayMs: Math.min(POST_DELAY_MS, flushIntervalMs),
    source: undefined,
    buffered: 0,
    posted(count) {
      posted += count;
    },
    message(m) {
      // After shutdown (or the worker's death) has settled its account, nothing the worker says changes it.
      if (finalised || dead) return;
      worker_ = m.stats;
      if (m.t === "done") {
        waiting.get(m.id)?.({ ok: m.ok, stats: m.stats });
        waiting.delete(m.id);
      }
    },
    fail(reason) {
      if (dead || finalised) return;
      dead = reason;
      // Whatever the worker held, and whatever waits here, will never be sent.
      droppedHere += inWorker() + member.buffered;
      member.buffered = 0;
      worker_ = { ...worker_, queued: 0, inFlight: 0 };
      posted = settled();
      for (const done of waiting.values()) done({ ok: false, stats: worker_ });
      waiting.clear();
    },
  };

  /** The worker this exporter is on, joined (or started) at its first event. */
  function join(): ExportHost {
    if (joined) return joined;
    host ??= new ExportHost(nice);
    host.add(member, memberSpec);
    return (joined = host);
  }

  return {
    name,
    offer(events) {
      if (events.length === 0) return true;
      if (closed || dead || member.buffered + inWorker() + events.length > maxQueueSize) {
        droppedHere += events.length;
        return false;
      }
      try {
        join().enqueue(member, events);
      } catch (error) {
        // A redaction applied here that throws (a rule's own `validate`), or a worker that cannot
        // start: the offer is refused and counted, never thrown into the graph.
        droppedHere += events.length;
        errorHere = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
        return false;
      }
      return true;
    },
    connect(s) {
      member.source = s;
    },
    async flush(options = {}) {
      const deadline = Date.now() + (options.timeoutMs ?? EXPORT_DEFAULTS.flushTimeoutMs);
      if (!joined) return !dead;
      joined.post();
      const reply = await joined.request(member, "flush", deadline, waiting);
      return reply?.ok === true && member.buffered === 0 && inWorker() === 0;
    },
    shutdown(options = {}) {
      shutdownPromise ??= (async () => {
        const deadline = Date.now() + (options.timeoutMs ?? EXPORT_DEFAULTS.shutdownTimeoutMs);
        closed = true;
        const h = joined;
        if (!h) return !dead;
        h.post();
        const reply = await h.request(member, "shutdown", deadline, waiting);
        // Whatever the worker has not settled by now is dropped, and its last word is final.
        finalised = true;
        const left = inWorker() + h.unqueue(member);
        droppedHere += left;
        worker_ = { ...worker_, queued: 0, inFlight: 0 };
        posted = settled();
        await h.remove(member, deadline);
        return reply?.ok === true && left === 0;
      })();
      return shutdownPromise;
    },
    stats() {
      const lastError = worker_.lastError ?? dead ?? errorHere;
      return {
        queued: member.buffered + Math.max(0, inWorker() - worker_.inFlight),
        inFlight: worker_.inFlight,
        exported: worker_.exported,
        dropped: droppedHere + worker_.dropped,
        failed: worker_.failed,
        ...(lastError !== undefined ? { lastError } : {}),
      };
    },
  };
}
