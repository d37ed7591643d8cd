import { parentPort, workerData } from "node:worker_threads";
import type { AuditEvent } from "./audit.js";
import type { AuditExporter, ExporterStats } from "./export-core.js";
import { buildLangSmithExporter } from "./export-langsmith.js";
import { buildOtlpExporter } from "./export-otel.js";
import type { RedactedEvent } from "./export-segments.js";
import type { FromWorker, ToWorker, WireEvent, WorkerExporterSpec, WorkerRedaction } from "./export-thread.js";
import { redactionFromPortable } from "./context.js";

/**
 * The export worker (see export-thread.ts): builds one exporter from `workerData` and feeds it
 * the events the graph's thread posts, already redacted. Reads of a thread's earlier events go
 * back to the graph's thread, which holds the audit log.
 */

const port = parentPort!;
const spec = workerData as Omit<WorkerExporterSpec, "redaction" | "env"> & { redaction: WorkerRedaction };
const pre = spec.redaction === "pre";

// Events arrive as stored, or redacted already (`pre`): then the raw thread id (when redaction
// changed it) is kept apart, for ids and keys.
const redactedOf = new WeakMap<AuditEvent, RedactedEvent>();
function unwire(list: WireEvent[]): AuditEvent[] {
  if (!pre) return list;
  return list.map((w) => {
    if (w.rawThreadId === undefined) return w as RedactedEvent;
    const { rawThreadId, ...redacted } = w;
    const raw = { ...redacted, threadId: rawThreadId };
    redactedOf.set(raw, redacted as RedactedEvent);
    return raw;
  });
}
const redaction =
  spec.redaction === "pre" ? (e: AuditEvent): RedactedEvent => redactedOf.get(e) ?? (e as RedactedEvent) : spec.redaction === false ? false : redactionFromPortable(spec.redaction);

const reads = new Map<number, { resolve(events: AuditEvent[]): void; reject(error: Error): void }>();
let nextRead = 1;

const exporter: AuditExporter = spec.kind === "langsmith" ? buildLangSmithExporter(spec.options, redaction) : await buildOtlpExporter(spec.options, redaction);
exporter.connect({
  read: (threadId) =>
    new Promise<AuditEvent[]>((resolve, reject) => {
      const id = nextRead++;
      reads.set(id, { resolve, reject });
      port.postMessage({ t: "read", id, threadId } satisfies FromWorker);
    }),
});

let last = "";
function report(): void {
  const stats: ExporterStats = exporter.stats();
  const now = JSON.stringify(stats);
  if (now === last) return;
  last = now;
  port.postMessage({ t: "stats", stats } satisfies FromWorker);
}
// Stats travel back on their own; flush and shutdown answer with them too.
setInterval(report, 100).unref();

port.on("message", (m: ToWorker) => {
  if (m.t === "events") {
    exporter.offer(unwire(JSON.parse(m.json) as WireEvent[]));
  } else if (m.t === "read") {
    const pending = reads.get(m.id);
    reads.delete(m.id);
    if (m.error !== undefined || m.json === undefined) pending?.reject(new Error(m.error ?? "no events"));
    else pending?.resolve(unwire(JSON.parse(m.json) as WireEvent[]));
  } else {
    const timeoutMs = Math.max(1, m.deadline - Date.now());
    const run = m.t === "flush" ? exporter.flush({ timeoutMs }) : exporter.shutdown({ timeoutMs });
    void run.then(
      (ok) => port.postMessage({ t: "done", id: m.id, ok, stats: exporter.stats() } satisfies FromWorker),
      () => port.postMessage({ t: "done", id: m.id, ok: false, stats: exporter.stats() } satisfies FromWorker),
    );
  }
});
