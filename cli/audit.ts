/**
 * The audit commands of `eart` (`show`, `audit verify|head|export`) on any `AuditLog`: the one an
 * app registers, or a store opened alone with `--audit` (auditor-only mode: no app module, no
 * graphs, no model, no tools).
 */
import { createWriteStream, existsSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { JsonlAuditLog, verifyAuditStore, type AuditEvent, type AuditLog, type GlobalHead, type SignedGlobalHead } from "eart";
import { bold, CliError, green, jsonText, printable, red, short, table, UsageError, type Cell, type Output } from "./output.js";

/** An audit log opened alone, and how to close it. */
export interface OpenedAuditLog {
  auditLog: AuditLog;
  close(): Promise<void>;
}

/**
 * Opens an audit store from `--audit`: `sqlite:<file>` (read-only; needs better-sqlite3),
 * `postgres://…` / `postgresql://…` (needs pg), or `jsonl:<file>`. Loads the audit log's module
 * and its driver only: not the checkpointers `eart/sqlite` and `eart/postgres` bring, nor LangChain.
 */
export async function openAuditStore(spec: string): Promise<OpenedAuditLog> {
  if (spec.startsWith("sqlite:")) {
    const path = resolve(spec.slice("sqlite:".length));
    if (!existsSync(path)) throw new CliError("audit_store_missing", `No SQLite file at ${path}`, { path });
    let Database: typeof import("better-sqlite3");
    try {
      Database = createRequire(import.meta.url)("better-sqlite3") as typeof import("better-sqlite3");
    } catch {
      throw new UsageError("--audit sqlite:<file> needs the better-sqlite3 package: npm install better-sqlite3");
    }
    // The audit log's own module, not the `eart/sqlite` entry point, which brings LangGraph's checkpointer.
    const { SqliteAuditLog } = await import("../src/stores/sqlite/audit-log.js");
    // Read-only: an auditor's check writes nothing, not even the tables of a file that has none.
    const db = new Database(path, { readonly: true, fileMustExist: true });
    db.pragma("busy_timeout = 5000");
    try {
      return { auditLog: new SqliteAuditLog({ database: db }), close: async () => void db.close() };
    } catch (error) {
      db.close();
      throw new CliError("audit_store_missing", `${path} holds no eart audit log (${(error as Error).message})`, { path });
    }
  }
  if (/^postgres(ql)?:\/\//.test(spec)) {
    const { PostgresAuditLog } = await import("../src/stores/postgres/audit-log.js");
    const auditLog = new PostgresAuditLog({ connectionString: spec });
    return { auditLog, close: () => auditLog.close() };
  }
  if (spec.startsWith("jsonl:")) {
    const path = resolve(spec.slice("jsonl:".length));
    if (!existsSync(path)) throw new CliError("audit_store_missing", `No JSONL audit log at ${path}`, { path });
    const auditLog = new JsonlAuditLog({ path });
    return { auditLog, close: async () => auditLog.close() };
  }
  throw new UsageError(`--audit takes sqlite:<file>, postgres://… or jsonl:<file>, not "${spec}"`);
}

/**
 * One line per event: what happened, in words. An event whose data is not as its type records it
 * (an edited store) is shown as its data: the verdict on the chain is still printed.
 */
export function describe(e: AuditEvent): string {
  try {
    return describeEvent(e);
  } catch {
    return short(e.data, 80);
  }
}

function describeEvent(e: AuditEvent): string {
  const d = e.data as Record<string, unknown>;
  const calls = (v: unknown) => ((v as { name: string; args: unknown }[] | undefined) ?? []).map((c) => `${c.name}(${short(c.args, 40)})`).join(", ");
  switch (e.type) {
    case "run.started":
      return `${d.userId} asked ${d.agentId}: ${short((d.request as { text?: string } | null)?.text ?? "", 70)}`;
    case "identity.bound":
      return `agent ${d.agentId} acts for ${d.userId} (${(d.userRoles as string[]).join(", ")}); tools ${(d.tools as string[]).join(", ")}`;
    case "context.retrieved":
      return `context ${((d.items as { id: string }[]) ?? []).map((i) => i.id).join(", ") || "none"}; dropped ${(d.dropped as unknown[]).length}, redacted ${(d.redacted as unknown[]).length}`;
    case "model.output":
      return (d.toolCalls as unknown[]).length > 0 ? `model proposes ${calls(d.toolCalls)}` : `model answers: ${short(d.text, 70)}`;
    case "policy.decided":
      return `${d.name} → ${d.effect} by ${(d.policyIds as string[]).join(", ")} (policy ${String(d.policyVersion).slice(0, 12)})`;
    case "approval.requested":
      return `waiting for ${((d.requests as { name: string; approverRoles: string[] }[]) ?? []).map((r) => `${r.name} (${r.approverRoles.join("/")})`).join(", ")}`;
    case "approval.decided":
      return `${d.name} ${d.decision} by ${d.approverId}${d.message ? `: ${d.message}` : ""} → ${d.status}`;
    case "approval.refused":
    case "tool.recovery_refused":
    case "escalation.refused":
      return `refused answer: ${d.code} ${short(d.message, 60)}`;
    case "tool.started":
      return `${d.name} started (attempt ${d.attempt ?? 1})`;
    case "tool.succeeded":
    case "tool.fallback":
      return `${d.name} ${e.type === "tool.fallback" ? "fell back" : "succeeded"}: ${short(d.result, 60)}`;
    case "tool.failed":
      return `${d.name} failed (${d.kind}): ${short(d.error, 60)}`;
    case "tool.interrupted":
      return `${d.name} asks a question (interrupt, attempt ${d.attempt ?? 1})`;
    case "tool.recovery_requested":
      return `${d.name} waits for recovery: ${d.reason}`;
    case "tool.recovery_decided":
      return `${d.name} ${d.decision} by ${d.resolverId}`;
    case "escalation.requested":
      return `escalated: ${short(d.reason, 70)}`;
    case "escalation.decided":
      return `review: ${d.action} by ${d.reviewerId}: ${short(d.message, 60)}`;
    case "run.completed":
      return `run completed (${d.outcome})`;
    default:
      return short(d, 80);
  }
}

/** `show <thread>`: the thread's timeline from the audit log, and whether its chain verifies. Returns the exit code. */
export async function showThread(auditLog: AuditLog, threadId: string, out: Output): Promise<number> {
  const events = await auditLog.read(threadId);
  if (events.length === 0) throw new UsageError(`thread "${threadId}" has no recorded events`);
  const verification = await auditLog.verify(threadId);
  out.print(
    () =>
      [
        bold(`thread ${printable(threadId)}`),
        table(["#", "AT", "EVENT", "WHAT"], events.map((e) => [String(e.seq), e.at, e.type, describe(e)])),
        verification.ok ? green(`chain ok: ${verification.count} events, head ${verification.headHash.slice(0, 12)}`) : red(printable(`chain BROKEN at #${verification.brokenAt.seq}: ${verification.brokenAt.reason}`)),
      ].join("\n"),
    { threadId, events: events.map((e) => ({ seq: e.seq, at: e.at, type: e.type, summary: describe(e), data: e.data })), verification },
  );
  return verification.ok ? 0 : 1;
}

/** Events the CLI's exporter queues at most; whenever the next offer would not fit, the CLI lets it drain. */
const OTLP_QUEUE_EVENTS = 2_048;
/** Events per offer. */
const OTLP_OFFER_EVENTS = 512;

/**
 * Sends threads as OpenTelemetry spans (the same mapping as `createOtelExporter`) over OTLP/HTTP.
 * The SDK packages are loaded here only; a deployment that never exports OTLP does not need them.
 * Events are offered in pieces, and whenever the exporter's queue has no room for the next one the
 * CLI waits for it to drain (spans handed over and sent), so a store of any size goes out in
 * bounded memory. Exit 0 only when the collector accepted every span that was created.
 */
async function exportOtlp(auditLog: AuditLog, threads: string[], endpoint: string | undefined, out: Output): Promise<number> {
  const url = endpoint ?? process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? "http://127.0.0.1:4318/v1/traces";
  let sdk: typeof import("@opentelemetry/sdk-trace-base");
  let otlp: typeof import("@opentelemetry/exporter-trace-otlp-http");
  let createOtelExporter: typeof import("eart/otel").createOtelExporter;
  try {
    [sdk, otlp, { createOtelExporter }] = await Promise.all([import("@opentelemetry/sdk-trace-base"), import("@opentelemetry/exporter-trace-otlp-http"), import("eart/otel")]);
  } catch {
    throw new UsageError("--format otlp needs @opentelemetry/api, @opentelemetry/sdk-trace-base and @opentelemetry/exporter-trace-otlp-http installed");
  }
  // Count what the collector accepted: the SDK only logs a failed delivery.
  const inner = new otlp.OTLPTraceExporter({ url });
  const delivery = { created: 0, sent: 0, failed: 0 };
  const counting: import("@opentelemetry/sdk-trace-base").SpanExporter = {
    export: (spans, done) =>
      inner.export(spans, (result) => {
        if (result.code === 0) delivery.sent += spans.length;
        else delivery.failed += spans.length;
        done(result);
      }),
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush(),
  };
  // The batch processor holds every span of a full queue's drain (at most one per event, plus the
  // open spans of the thread before), so it never drops one; what it would drop still shows, as
  // spans created and not accepted.
  const batch = new sdk.BatchSpanProcessor(counting, { maxQueueSize: 2 * OTLP_QUEUE_EVENTS, maxExportBatchSize: OTLP_OFFER_EVENTS });
  const processor: import("@opentelemetry/sdk-trace-base").SpanProcessor = {
    onStart: (span, context) => {
      delivery.created += 1;
      batch.onStart(span, context);
    },
    onEnd: (span) => batch.onEnd(span),
    forceFlush: () => batch.forceFlush(),
    shutdown: () => batch.shutdown(),
  };
  const provider = new sdk.BasicTracerProvider({ spanProcessors: [processor] });
  // Threads are exported one after the other, whole: the one before never comes back, so its
  // state (and its open spans, ended as `open`) goes as soon as the next one starts.
  const exporter = createOtelExporter({ tracerProvider: provider, maxQueueSize: OTLP_QUEUE_EVENTS, maxBatchSize: OTLP_OFFER_EVENTS, maxThreads: 1 });
  exporter.connect(auditLog);
  let events = 0;
  let notOffered = 0;
  let drained = true;
  for (const [i, t] of threads.entries()) {
    const all = await auditLog.read(t);
    for (let at = 0; at < all.length; at += OTLP_OFFER_EVENTS) {
      const piece = all.slice(at, at + OTLP_OFFER_EVENTS);
      // No room: let the queue drain first (an offer that does not fit would be dropped).
      if (exporter.stats().queued + piece.length > OTLP_QUEUE_EVENTS) drained = (await exporter.flush({ timeoutMs: 60_000 })) && drained;
      if (!exporter.offer(piece)) {
        // Counted as dropped by the exporter; the rest of the thread is not offered.
        notOffered += all.length - at - piece.length;
        break;
      }
      events += piece.length;
    }
    if (process.stderr.isTTY && threads.length > 20) process.stderr.write(`\r${i + 1}/${threads.length} threads`);
  }
  if (process.stderr.isTTY && threads.length > 20) process.stderr.write("\n");
  const flushed = await exporter.flush({ timeoutMs: 30_000 });
  await exporter.shutdown({ timeoutMs: 5_000 });
  await provider.shutdown();
  const stats = exporter.stats();
  const ok = drained && flushed && notOffered === 0 && stats.failed === 0 && stats.dropped === 0 && delivery.failed === 0 && delivery.sent > 0 && delivery.sent === delivery.created;
  const summary = { endpoint: url, threads: threads.length, events, eventsNotOffered: notOffered, spansCreated: delivery.created, spansSent: delivery.sent, spansFailed: delivery.failed, ...stats };
  if (out.json) console.log(jsonText(summary, 2));
  else
    console.error(
      `${ok ? green("sent") : red("NOT all sent")}: ${printable(`${events} events from ${threads.length} threads to ${url} (${delivery.sent} of ${delivery.created} spans accepted, ${delivery.failed} refused; events dropped ${stats.dropped + notOffered}, failed ${stats.failed})`)}`,
    );
  return ok ? 0 : 1;
}

/**
 * The witness in a file: a global head as `eart audit head` wrote it (signed or not), or the
 * newest `globalHead` in a JSONL export (`createJsonlExporter`).
 */
function witnessFrom(path: string): GlobalHead | SignedGlobalHead {
  const text = readFileSync(path, "utf8");
  const asHead = (v: unknown): GlobalHead | SignedGlobalHead | undefined => {
    const h = v as { gseq?: unknown; hash?: unknown; signed?: unknown } | null;
    if (h?.signed) return asHead(h.signed);
    return h && Number.isInteger(h.gseq) && typeof h.hash === "string" ? (h as GlobalHead | SignedGlobalHead) : undefined;
  };
  let best: GlobalHead | SignedGlobalHead | undefined;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      throw new UsageError(`${path} is neither a global head nor a JSONL export: a line is not JSON`);
    }
    const head = asHead((parsed as { globalHead?: unknown }).globalHead ?? parsed);
    if (head && (!best || head.gseq > best.gseq)) best = head;
  }
  if (!best) throw new UsageError(`${path} holds no global head`);
  return best;
}

/** The options the audit commands read. */
export interface AuditOptions {
  all?: boolean;
  thread?: string;
  witness?: string;
  "public-key"?: string;
  out?: string;
  format?: string;
  endpoint?: string;
}

/** `audit verify|head|export`. Returns the exit code. */
export async function auditCommand(auditLog: AuditLog, sub: string | undefined, values: AuditOptions, out: Output): Promise<number> {
  if (sub === "verify" && values.all) {
    const witness = values.witness ? witnessFrom(values.witness) : undefined;
    const publicKey = values["public-key"] ? readFileSync(values["public-key"], "utf8") : undefined;
    const report = await verifyAuditStore(auditLog, { ...(witness ? { witness } : {}), ...(publicKey ? { publicKey } : {}) });
    const head = report.globalHead ? `${report.globalHead.gseq}:${report.globalHead.hash.slice(0, 12)}` : "empty";
    out.print(
      () =>
        [
          printable(`${report.threads} threads, ${report.events} events, global head ${head}${witness ? `, witness at ${witness.gseq}` : ""}`),
          report.ok
            ? green("ok")
            : table(
                ["PROBLEM", "THREAD", "DETAIL"],
                report.problems.map((p): Cell[] => [{ text: p.kind, paint: red }, p.threadId ?? "-", p.detail]),
              ),
        ].join("\n"),
      report,
    );
    return report.ok ? 0 : 1;
  }
  if (sub === "head") {
    if (typeof auditLog.globalHead !== "function") throw new UsageError("this audit log keeps no global log");
    if (values.out && existsSync(values.out)) {
      // A witness is replaced only by a head of a store that still holds it: refreshing it over a
      // store rolled back past it (a backup restored) would erase the evidence.
      const witness = witnessFrom(values.out);
      const report = await verifyAuditStore(auditLog, { witness });
      if (!report.ok) {
        throw new CliError(
          "witness_not_extended",
          `${values.out} holds a head (${witness.gseq}) the store does not verify against (${report.problems.map((p) => p.kind).join(", ")}): not overwritten. Run audit verify --all --witness ${values.out}; remove the file yourself only if the store was replaced on purpose`,
          { witness: values.out, problems: report.problems },
        );
      }
    }
    const { head, signed } = await auditLog.globalHead();
    const text = `${jsonText(signed ?? head)}\n`;
    if (values.out) writeFileSync(values.out, text);
    out.print(() => (values.out ? printable(`global head ${head ? `${head.gseq}:${head.hash}` : "none"} written to ${values.out}`) : text.trimEnd()), signed ?? head);
    return 0;
  }
  if (sub === "verify") {
    // A witness is about the whole store (its global log): checked by --all only, never dropped.
    if (values.witness) throw new UsageError("--witness checks the whole store: audit verify --all --witness <file>");
    const publicKey = values["public-key"] ? readFileSync(values["public-key"], "utf8") : undefined;
    const threads = values.thread ? [values.thread] : await auditLog.listThreads();
    const results = await Promise.all(threads.map(async (t) => auditLog.verify(t, publicKey ? { publicKey } : undefined)));
    const unknown = values.thread !== undefined && results[0]?.ok === true && results[0].count === 0;
    if (unknown) throw new CliError("thread_unknown", `The audit store holds no events of thread "${values.thread}" and its global log names none: nothing to verify (check the id)`, { threadId: values.thread });
    const broken = results.filter((r) => !r.ok);
    out.print(
      () =>
        table(
          ["THREAD", "EVENTS", "STATUS"],
          results.map((r): Cell[] =>
            r.ok
              ? [r.threadId, String(r.count), { text: `ok, head ${r.headHash.slice(0, 12)}`, paint: green }]
              : [r.threadId, "-", { text: `BROKEN at #${r.brokenAt.seq} (${r.brokenAt.reason}): expected ${r.brokenAt.expected.slice(0, 16)}, found ${r.brokenAt.found.slice(0, 16)}`, paint: red }],
          ),
        ),
      results,
    );
    return broken.length > 0 ? 1 : 0;
  }
  if (sub === "export") {
    if (values.format !== "jsonl" && values.format !== "otlp") throw new UsageError("export needs --format jsonl or --format otlp");
    const threads = values.thread ? [values.thread] : await auditLog.listThreads();
    if (values.format === "otlp") return await exportOtlp(auditLog, threads, values.endpoint, out);
    const sink = values.out ? createWriteStream(values.out) : process.stdout;
    let count = 0;
    for (const [i, t] of threads.entries()) {
      for (const e of await auditLog.read(t)) {
        sink.write(`${jsonText(e)}\n`);
        count++;
      }
      if (process.stderr.isTTY && threads.length > 20) process.stderr.write(`\r${i + 1}/${threads.length} threads`);
    }
    if (process.stderr.isTTY && threads.length > 20) process.stderr.write("\n");
    if (values.out) {
      await new Promise<void>((done, fail) => (sink as ReturnType<typeof createWriteStream>).end((error?: Error | null) => (error ? fail(error) : done())));
      console.error(printable(`${count} events from ${threads.length} threads written to ${values.out}`));
    }
    return 0;
  }
  throw new UsageError(`unknown audit command "${sub ?? ""}": use verify, head or export`);
}
