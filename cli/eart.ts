#!/usr/bin/env node
/**
 * `eart`: the approver's command line. It opens the app a module registers with `defineApp`
 * (`--app <module>` or `EART_APP`): the audit log and the graphs, so it reads the same store as
 * the graphs and resumes them through exactly the same validation as any resume.
 *
 *   eart pending [--role R]                  what waits for a human, across threads
 *   eart show <thread>                       a readable timeline of a thread
 *   eart approve|reject|edit <thread> <toolCallId> --as <user> [--args json] [--message m]
 *   eart continue <thread>                   carry on a run that stopped before it finished
 *   eart audit verify [--thread T]           check the hash chains
 *   eart audit verify --all [--witness file] [--public-key pem]   the whole store: every chain,
 *                                            the global log, lost threads, rollback past a witness
 *   eart audit head [--out file]             the global head now (signed): keep it as a witness
 *   eart audit export --format jsonl [--thread T] [--out file]
 *   eart audit export --format otlp [--thread T] [--endpoint url]   spans over OTLP/HTTP
 *
 * `--json` prints machine-readable output. Exit codes: 0 ok, 1 refused or failed (a typed error,
 * a broken chain), 2 usage.
 *
 * What threads hold is written by customers, models and API clients: everything printed from
 * them (table cells, messages, ids, error messages) shows control, bidi and zero-width
 * characters and line breaks visibly (`\x1b`, `\n`, `\u202e`), and JSON output writes them as
 * `\uXXXX` escapes, so no thread can move the cursor or draw a line of its own.
 */
import { createWriteStream, readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  EartError,
  exportThread,
  pendingApproval,
  pendingEscalation,
  pendingRecovery,
  signApprovalToken,
  verifyAuditStore,
  type AuditEvent,
  type GlobalHead,
  type SignedGlobalHead,
} from "eart";
import { createOtelExporter } from "eart/otel";
import { continueThread, resumeThread, unfinishedThreads, type EartApp } from "eart/graphs";

class UsageError extends Error {}

const USAGE = `usage: eart [--app <module>] [--json] <command>
  pending [--role R]
  show <thread>
  approve <thread> <toolCallId> --as <user> [--key pem --kid id] [--message m]
  reject <thread> <toolCallId> --as <user> [--key pem --kid id] [--message m]
  edit <thread> <toolCallId> --as <user> --args <json> [--message m]
  continue <thread>
  audit verify [--thread T]
  audit verify --all [--witness file] [--public-key pem]
  audit head [--out file]
  audit export --format jsonl [--thread T] [--out file]
  audit export --format otlp [--thread T] [--endpoint http://127.0.0.1:4318/v1/traces]`;

const tty = process.stdout.isTTY === true && !process.env.NO_COLOR;
const paint = (code: number) => (text: string) => (tty ? `\u001b[${code}m${text}\u001b[0m` : text);
const bold = paint(1);
const dim = paint(2);
const red = paint(31);
const green = paint(32);
const yellow = paint(33);

/**
 * Characters a terminal acts on or that hide text: C0 and C1 controls, DEL, line and paragraph
 * separators, format characters (zero-width, bidi overrides and isolates, tags), lone surrogates
 * and invisible fillers. Thread content (a customer's message, a thread id, an approver's note)
 * holds whatever its writer chose, so nothing of it reaches the terminal raw: an escape sequence
 * or a line break would let it draw rows of its own.
 */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\u{e0100}-\u{e01ef}]/gu;
/** The same, but C0: JSON.stringify escapes those in strings, and its indentation is made of them. */
const UNPRINTABLE_IN_JSON = /[\u007f-\u009f\p{Cf}\p{Zl}\p{Zp}\p{Cs}\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\u{e0100}-\u{e01ef}]/gu;
const NAMED_ESCAPES: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
const hex = (n: number, width: number) => n.toString(16).padStart(width, "0");

/** Text as the terminal may show it: every unprintable character written visibly (`\x1b`, `\n`, `\u202e`). */
function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => {
    const named = NAMED_ESCAPES[c];
    if (named) return named;
    const cp = c.codePointAt(0)!;
    return cp < 0x100 ? `\\x${hex(cp, 2)}` : cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${hex(cp, 4)}`;
  });
}

/**
 * JSON text with the unprintable characters JSON.stringify leaves raw (DEL, C1, U+2028/2029,
 * bidi and zero-width characters…) written as `\uXXXX` escapes too: the same JSON value, safe on
 * a terminal. They can only occur inside strings, where the escape means the same character.
 */
function jsonText(value: unknown, indent?: number): string {
  return (JSON.stringify(value, null, indent) ?? "null").replace(UNPRINTABLE_IN_JSON, (c) => {
    let out = "";
    for (let i = 0; i < c.length; i++) out += `\\u${hex(c.charCodeAt(i), 4)}`;
    return out;
  });
}

/** A table cell: thread content (escaped when printed), or the command line's own coloured status. */
type Cell = string | { text: string; paint: (text: string) => string };

/** Columns aligned to their widest cell. Every cell is escaped ({@link printable}) before it is measured or painted. */
function table(header: string[], rows: Cell[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === "string" ? { text: printable(c), paint: (t: string) => t } : { text: printable(c.text), paint: c.paint })));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]?.text.length ?? 0)));
  const line = (row: { text: string; paint: (t: string) => string }[]) =>
    row.map((c, i) => c.paint(i === row.length - 1 ? c.text : c.text + " ".repeat(Math.max(0, widths[i]! - c.text.length)))).join("  ");
  return [bold(line(header.map((h) => ({ text: h, paint: (t: string) => t })))), ...cells.map(line)].join("\n");
}

const short = (value: unknown, max = 60): string => {
  const text = typeof value === "string" ? value : (JSON.stringify(value) ?? String(value));
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
};

async function loadApp(modulePath: string | undefined): Promise<EartApp> {
  const path = modulePath ?? process.env.EART_APP;
  if (!path) throw new UsageError("say which app to open: --app <module> or EART_APP (a module that default-exports defineApp(...))");
  const mod = (await import(pathToFileURL(resolve(path)).href)) as { default?: unknown };
  const exported = mod.default;
  const app = (typeof exported === "function" ? await (exported as () => unknown)() : exported) as EartApp | undefined;
  if (!app || typeof app.graphFor !== "function") throw new UsageError(`${path} must default-export defineApp(...) or a function returning it`);
  return app;
}

/** One item waiting for a human, as the inbox shows it. */
interface InboxItem {
  /** `unfinished`: a run stopped before it finished; `eart continue <thread>` carries it on. */
  kind: "approval" | "recovery" | "review" | "unfinished";
  threadId: string;
  toolCallId: string | null;
  what: string;
  roles: string[];
  requestedBy: string;
  since: string | null;
  expiresAt: string | null;
}

async function inbox(app: EartApp): Promise<InboxItem[]> {
  const items: InboxItem[] = [];
  const unfinished = new Map((await unfinishedThreads(app)).map((u) => [u.threadId, u]));
  for (const threadId of await app.auditLog.listThreads()) {
    const stopped = unfinished.get(threadId);
    if (stopped) {
      // An answer already recorded is continued, never asked for again.
      const what = stopped.kind === "answered" ? `answered by ${stopped.answeredBy ?? "?"}, not yet acted on: eart continue` : `stopped before ${stopped.next.join(", ")}: eart continue`;
      items.push({ kind: "unfinished", threadId, toolCallId: null, what, roles: [], requestedBy: `${stopped.agentId ?? "?"} for ${stopped.userId ?? "?"}`, since: stopped.since ?? null, expiresAt: null });
      continue;
    }
    const events = await app.auditLog.read(threadId);
    let graph;
    try {
      graph = await app.graphFor(threadId);
    } catch {
      continue; // a thread of an agent this app does not run
    }
    const state = await graph.getState({ configurable: { thread_id: threadId } });
    const requestedAt = [...events].reverse().find((e) => e.type === "approval.requested")?.at ?? null;
    for (const r of pendingApproval(state)?.requests ?? []) {
      items.push({
        kind: "approval",
        threadId,
        toolCallId: r.toolCallId,
        what: `${r.name} ${short(r.args, 50)}`,
        roles: r.approverRoles,
        requestedBy: `${r.requestedBy.agentId} for ${r.requestedBy.userId}`,
        since: requestedAt,
        expiresAt: r.expiresAt ?? null,
      });
    }
    for (const r of pendingRecovery(state)?.requests ?? []) {
      items.push({ kind: "recovery", threadId, toolCallId: r.toolCallId, what: `${r.name}: ${r.reason}`, roles: r.resolverRoles, requestedBy: `${r.requestedBy.agentId} for ${r.requestedBy.userId}`, since: r.since, expiresAt: null });
    }
    const review = pendingEscalation(state);
    if (review) {
      items.push({ kind: "review", threadId, toolCallId: null, what: short(review.reason, 60), roles: review.reviewerRoles, requestedBy: `${review.requestedBy.agentId} for ${review.requestedBy.userId}`, since: review.since, expiresAt: null });
    }
  }
  return items;
}

/** One line per event: what happened, in words. */
function describe(e: AuditEvent): string {
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

/**
 * Sends threads as OpenTelemetry spans (the same mapping as `createOtelExporter`) over OTLP/HTTP.
 * The SDK packages are loaded here only; a deployment that never exports OTLP does not need them.
 */
async function exportOtlp(app: EartApp, threads: string[], endpoint: string | undefined, json: boolean): Promise<number> {
  const url = endpoint ?? process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? "http://127.0.0.1:4318/v1/traces";
  let sdk: typeof import("@opentelemetry/sdk-trace-base");
  let otlp: typeof import("@opentelemetry/exporter-trace-otlp-http");
  try {
    [sdk, otlp] = await Promise.all([import("@opentelemetry/sdk-trace-base"), import("@opentelemetry/exporter-trace-otlp-http")]);
  } catch {
    throw new UsageError("--format otlp needs @opentelemetry/api, @opentelemetry/sdk-trace-base and @opentelemetry/exporter-trace-otlp-http installed");
  }
  // Count what the collector accepted: the SDK only logs a failed delivery.
  const inner = new otlp.OTLPTraceExporter({ url });
  const delivery = { sent: 0, failed: 0 };
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
  const provider = new sdk.BasicTracerProvider({ spanProcessors: [new sdk.BatchSpanProcessor(counting)] });
  const exporter = createOtelExporter({ tracerProvider: provider });
  let events = 0;
  for (const [i, t] of threads.entries()) {
    events += (await exportThread(app.auditLog, t, [exporter])) + 1;
    if (process.stderr.isTTY && threads.length > 20) process.stderr.write(`\r${i + 1}/${threads.length} threads`);
  }
  const flushed = await exporter.flush({ timeoutMs: 30_000 });
  await exporter.shutdown({ timeoutMs: 5_000 });
  await provider.shutdown();
  const stats = exporter.stats();
  const ok = flushed && stats.failed === 0 && stats.dropped === 0 && delivery.failed === 0 && delivery.sent > 0;
  const summary = { endpoint: url, threads: threads.length, events, spansSent: delivery.sent, spansFailed: delivery.failed, ...stats };
  if (json) console.log(jsonText(summary, 2));
  else console.error(`${ok ? green("sent") : red("NOT all sent")}: ${printable(`${events} events from ${threads.length} threads to ${url} (${delivery.sent} spans accepted, ${delivery.failed} refused; dropped ${stats.dropped})`)}`);
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

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      app: { type: "string" },
      json: { type: "boolean", default: false },
      role: { type: "string" },
      as: { type: "string" },
      args: { type: "string" },
      message: { type: "string" },
      thread: { type: "string" },
      format: { type: "string" },
      out: { type: "string" },
      endpoint: { type: "string" },
      key: { type: "string" },
      kid: { type: "string" },
      all: { type: "boolean", default: false },
      witness: { type: "string" },
      "public-key": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  // Human output escapes thread content where it is composed (table cells, printable()); JSON is escaped by jsonText.
  const print = (human: () => string, machine: unknown) => console.log(values.json ? jsonText(machine, 2) : human());

  if (!["pending", "show", "approve", "reject", "edit", "continue", "audit"].includes(command)) throw new UsageError(`unknown command "${command}"`);
  const app = await loadApp(values.app);
  try {
    if (command === "pending") {
      const items = (await inbox(app)).filter((i) => !values.role || i.roles.includes(values.role));
      print(
        () =>
          items.length === 0
            ? dim("nothing waits")
            : table(
                ["KIND", "THREAD", "TOOL CALL", "WHAT", "ROLES", "REQUESTED BY", "SINCE", "EXPIRES"],
                items.map((i): Cell[] => [i.kind, i.threadId, i.toolCallId ?? "-", i.what, i.roles.join(","), i.requestedBy, i.since ?? "-", i.expiresAt ? { text: i.expiresAt, paint: yellow } : "-"]),
              ),
        items,
      );
      return 0;
    }

    if (command === "continue") {
      const threadId = rest[0];
      if (!threadId) throw new UsageError("continue needs a thread id");
      const run = await continueThread(app, threadId);
      const waiting = run.approval ? "approval" : run.recovery ? "recovery" : null;
      print(() => `${threadId}: ${waiting ? `continued, now waits for ${waiting}` : "continued to its end"}`, { threadId, waiting });
      return 0;
    }

    if (command === "show") {
      const threadId = rest[0];
      if (!threadId) throw new UsageError("show needs a thread id");
      const events = await app.auditLog.read(threadId);
      if (events.length === 0) throw new UsageError(`thread "${threadId}" has no recorded events`);
      const verification = await app.auditLog.verify(threadId);
      print(
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

    if (command === "approve" || command === "reject" || command === "edit") {
      const [threadId, toolCallId] = rest;
      if (!threadId || !toolCallId) throw new UsageError(`${command} needs <thread> <toolCallId>`);
      if (!values.as) throw new UsageError(`${command} needs --as <user>: who decides`);
      let args: Record<string, unknown> | undefined;
      if (command === "edit") {
        if (!values.args) throw new UsageError("edit needs --args <json>: the arguments to run instead");
        try {
          args = JSON.parse(values.args) as Record<string, unknown>;
        } catch {
          throw new UsageError("--args must be JSON");
        }
      }
      const graph = await app.graphFor(threadId);
      // The decision names the digest of the call the operator saw listed; a call changed since is refused.
      const item = pendingApproval(await graph.getState({ configurable: { thread_id: threadId } }))?.requests.find((r) => r.toolCallId === toolCallId);
      const digest = item?.digest ?? "none";
      let token: string | undefined;
      if (values.key !== undefined) {
        // Signed with the approver's own key: the graph verifies it against the approver's public key.
        if (command === "edit") throw new UsageError("--key signs approve and reject only; an edit is made as a principal (--as)");
        if (!values.kid) throw new UsageError("--key needs --kid <key id>: which of the graph's approval keys verifies it");
        token = signApprovalToken(
          { kid: values.kid, threadId, toolCallId, digest, approver: values.as, decision: command, expiresInMs: 5 * 60_000 },
          readFileSync(values.key, "utf8"),
        );
      }
      const decision = { toolCallId, type: command, digest, ...(args ? { args } : {}), ...(values.message ? { message: values.message } : {}), ...(token ? { token } : {}) };
      // Without a key the command line is a trusted in-process app: the human it runs as is the resume's principal.
      const run = await resumeThread(graph, { decisions: [decision] }, { configurable: { thread_id: threadId, ...(token ? {} : { user_id: values.as }) } });
      const messages = ((run.values as { messages?: { content?: unknown }[] }).messages ?? []);
      const last = messages[messages.length - 1];
      const waiting = run.approval ? "approval" : run.recovery ? "recovery" : pendingEscalation(await graph.getState({ configurable: { thread_id: threadId } })) ? "review" : null;
      print(
        () => `${green({ approve: "approved", reject: "rejected", edit: "edited" }[command])} ${printable(`${toolCallId} on ${threadId} as ${values.as}`)}\n${waiting ? yellow(`now waits for a ${waiting}`) : `agent: ${printable(short(last?.content ?? "", 200))}`}`,
        { threadId, toolCallId, decision: command, by: values.as, waiting, last: last?.content ?? null },
      );
      return 0;
    }

    // audit
    const sub = rest[0];
    if (sub === "verify" && values.all) {
      const witness = values.witness ? witnessFrom(values.witness) : undefined;
      const publicKey = values["public-key"] ? readFileSync(values["public-key"], "utf8") : undefined;
      const report = await verifyAuditStore(app.auditLog, { ...(witness ? { witness } : {}), ...(publicKey ? { publicKey } : {}) });
      const head = report.globalHead ? `${report.globalHead.gseq}:${report.globalHead.hash.slice(0, 12)}` : "empty";
      print(
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
      if (typeof app.auditLog.globalHead !== "function") throw new UsageError("this audit log keeps no global log");
      const { head, signed } = await app.auditLog.globalHead();
      const text = `${jsonText(signed ?? head)}\n`;
      if (values.out) writeFileSync(values.out, text);
      print(() => (values.out ? printable(`global head ${head ? `${head.gseq}:${head.hash}` : "none"} written to ${values.out}`) : text.trimEnd()), signed ?? head);
      return 0;
    }
    if (sub === "verify") {
      const threads = values.thread ? [values.thread] : await app.auditLog.listThreads();
      const results = await Promise.all(threads.map(async (t) => app.auditLog.verify(t)));
      const broken = results.filter((r) => !r.ok);
      print(
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
      const threads = values.thread ? [values.thread] : await app.auditLog.listThreads();
      if (values.format === "otlp") return await exportOtlp(app, threads, values.endpoint, values.json === true);
      const out = values.out ? createWriteStream(values.out) : process.stdout;
      let count = 0;
      for (const [i, t] of threads.entries()) {
        for (const e of await app.auditLog.read(t)) {
          out.write(`${jsonText(e)}\n`);
          count++;
        }
        if (process.stderr.isTTY && threads.length > 20) process.stderr.write(`\r${i + 1}/${threads.length} threads`);
      }
      if (process.stderr.isTTY && threads.length > 20) process.stderr.write("\n");
      if (values.out) {
        await new Promise<void>((done, fail) => (out as ReturnType<typeof createWriteStream>).end((error?: Error | null) => (error ? fail(error) : done())));
        console.error(printable(`${count} events from ${threads.length} threads written to ${values.out}`));
      }
      return 0;
    }
    throw new UsageError(`unknown audit command "${sub ?? ""}": use verify, head or export`);
  } finally {
    await app.close?.();
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  if (error instanceof UsageError || (error as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    console.error(`eart: ${printable((error as Error).message)}\n${USAGE}`);
    process.exitCode = 2;
  } else if (error instanceof EartError) {
    console.error(red(`eart: refused [${error.code}]: ${printable(error.message)}`));
    process.exitCode = 1;
  } else {
    // A stack keeps its line breaks; what a message quotes from a thread is escaped.
    console.error(red(`eart: ${((error as Error)?.stack ?? String(error)).split("\n").map(printable).join("\n")}`));
    process.exitCode = 1;
  }
}
