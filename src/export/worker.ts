import { readlinkSync } from "node:fs";
import { getPriority, setPriority } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import type { AuditEvent } from "../audit/log.js";
import { redactionFromPortable, type Redaction } from "../context/redaction.js";
import type { AuditExporter, ExporterStats } from "./core.js";
import { buildLangSmithExporter } from "./langsmith.js";
import { buildOtlpExporter, loadOtlpModules, type OtlpModules } from "./otel.js";
import { useExportThreadKey, type ExportRedactor, type RedactedEvent } from "./segments.js";
import type { FromWorker, ToWorker, WireEvent, WorkerMemberSpec, WorkerRedaction } from "./thread.js";

/**
 * The export worker (see thread.ts): builds the exporters the graph's thread adds and
 * feeds them the events it posts. Each posted entry is parsed once for every exporter it names.
 * Reads of a thread's earlier events go back to the graph's thread, which holds the audit log.
 */

const port = parentPort!;

/**
 * Lowers this thread's scheduling priority to `nice` (see `exportWorkerNice`). Linux keeps a nice
 * value per thread, set through the thread's id (from /proc/thread-self); elsewhere the worker
 * keeps the process's priority.
 */
function lowerPriority(nice: number): void {
  if (nice <= 0) return;
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    // Only ever lower it: a process already running nicer than `nice` keeps its own.
    if (Number.isInteger(tid) && tid > 0 && nice > getPriority(tid)) setPriority(tid, nice);
  } catch {
    // No /proc/thread-self (not Linux): the process's priority.
  }
}
lowerPriority((workerData as { nice: number }).nice);

/** One exporter on this worker: built (or being built), with the offers that arrived before it was. */
interface Member {
  spec: WorkerMemberSpec;
  exporter: AuditExporter | undefined;
  ready: Promise<AuditExporter>;
  early: AuditEvent[][];
  lastStats: string;
}
const members = new Map<number, Member>();

// Events redacted on the graph's thread (`pre`) arrive with the raw thread id apart, for ids and keys.
const redactedOf = new WeakMap<AuditEvent, RedactedEvent>();
function unwire(list: WireEvent[], pre: boolean): AuditEvent[] {
  if (!pre) return list;
  return list.map((w) => {
    if (w.rawThreadId === undefined) return w;
    const { rawThreadId, ...redacted } = w;
    const raw = { ...redacted, threadId: rawThreadId };
    redactedOf.set(raw, redacted as RedactedEvent);
    return raw;
  });
}
const preRedacted = (e: AuditEvent): RedactedEvent => redactedOf.get(e) ?? (e as RedactedEvent);

// One redaction object per rule set, so exporters with the same rules share each event's redaction.
const redactions = new Map<string, Redaction>();
function redactionFor(rules: WorkerRedaction): ExportRedactor {
  if (rules === "pre") return preRedacted;
  if (rules === false) return false;
  const key = JSON.stringify(rules, (_, v: unknown) => (v instanceof RegExp ? `/${v.source}/${v.flags}` : v));
  let r = redactions.get(key);
  if (!r) redactions.set(key, (r = redactionFromPortable(rules)));
  return r;
}

/** Runs `build` with the process environment set to `env` (clients read their defaults from it as they are built). */
function withEnv<T>(env: Record<string, string | undefined>, build: () => T): T {
  const saved = { ...process.env };
  const set = (to: Record<string, string | undefined>) => {
    for (const k of Object.keys(process.env)) if (!(k in to)) delete process.env[k];
    for (const [k, v] of Object.entries(to)) if (v !== undefined) process.env[k] = v;
  };
  set(env);
  try {
    return build();
  } finally {
    set(saved);
  }
}

let otlpModules: Promise<OtlpModules> | undefined;
const reads = new Map<number, { pre: boolean; resolve(events: AuditEvent[]): void; reject(error: Error): void }>();
let nextRead = 1;

async function build(id: number, spec: WorkerMemberSpec): Promise<AuditExporter> {
  const redaction = redactionFor(spec.redaction);
  const modules = spec.kind === "otlp" ? await (otlpModules ??= loadOtlpModules()) : undefined;
  const exporter = withEnv(spec.env, () => (modules ? buildOtlpExporter(modules, spec.options, redaction) : buildLangSmithExporter(spec.options, redaction)));
  exporter.connect({
    read: (threadId) =>
      new Promise<AuditEvent[]>((resolve, reject) => {
        const readId = nextRead++;
        reads.set(readId, { pre: spec.redaction === "pre", resolve, reject });
        port.postMessage({ t: "read", member: id, id: readId, threadId } satisfies FromWorker);
      }),
  });
  return exporter;
}

function report(): void {
  for (const [id, m] of members) {
    if (!m.exporter) continue;
    const stats: ExporterStats = m.exporter.stats();
    const now = JSON.stringify(stats);
    if (now === m.lastStats) continue;
    m.lastStats = now;
    port.postMessage({ t: "stats", member: id, stats } satisfies FromWorker);
  }
}
// Stats travel back on their own; flush and shutdown answer with them too.
setInterval(report, 100).unref();

port.on("message", (m: ToWorker) => {
  if (m.t === "add") {
    // Redacted thread ids get the digest the graph's thread gives them (its key, not one of the worker's own).
    useExportThreadKey(m.spec.threadKey);
    const ready = build(m.member, m.spec).then((exporter) => {
      member.exporter = exporter;
      for (const events of member.early) exporter.offer(events);
      member.early = [];
      return exporter;
    });
    const member: Member = { spec: m.spec, exporter: undefined, ready, early: [], lastStats: "" };
    // A failed build fails the worker: the graph's thread counts what it held as dropped.
    ready.catch((error: unknown) =>
      setImmediate(() => {
        throw error;
      }),
    );
    members.set(m.member, member);
  } else if (m.t === "events") {
    for (const entry of JSON.parse(m.json) as { ids: number[]; events: WireEvent[] }[]) {
      const first = members.get(entry.ids[0]!);
      if (!first) continue;
      const events = unwire(entry.events, first.spec.redaction === "pre");
      for (const id of entry.ids) {
        const member = members.get(id);
        if (member?.exporter) member.exporter.offer(events);
        else member?.early.push(events);
      }
    }
  } else if (m.t === "read") {
    const pending = reads.get(m.id);
    reads.delete(m.id);
    if (m.error !== undefined || m.json === undefined) pending?.reject(new Error(m.error ?? "no events"));
    else pending?.resolve(unwire(JSON.parse(m.json) as WireEvent[], pending?.pre ?? false));
  } else {
    const member = members.get(m.member);
    if (!member) return;
    void member.ready
      .then((exporter) => {
        const timeoutMs = Math.max(1, m.deadline - Date.now());
        return (m.t === "flush" ? exporter.flush({ timeoutMs }) : exporter.shutdown({ timeoutMs })).then((ok) => ({ ok, stats: exporter.stats() }));
      })
      .then(
        ({ ok, stats }) => port.postMessage({ t: "done", member: m.member, id: m.id, ok, stats } satisfies FromWorker),
        () => port.postMessage({ t: "done", member: m.member, id: m.id, ok: false, stats: member.exporter?.stats() ?? { queued: 0, inFlight: 0, exported: 0, dropped: 0, failed: 0 } } satisfies FromWorker),
      )
      .finally(() => {
        if (m.t === "shutdown") members.delete(m.member);
      });
  }
});
