import { readdirSync, readFileSync } from "node:fs";
import { BasicTracerProvider } from "@opentelemetry/sdk-trace-base";
import { describe, expect, it, vi } from "vitest";
import {
  createTraceExport,
  defineRedaction,
  EartConfigError,
  exportThread,
  MemoryAuditLog,
  STANDARD_REDACTIONS,
  toolCallDigest,
  type AuditEvent,
  type AuditEventInput,
  type AuditExporter,
  type Redaction,
} from "eart";
import { sealedDataJson, sealEvents } from "../../src/audit/log.js";
import { luhnValid, portableRedaction, redactionFromPortable } from "../../src/context/redaction.js";
import { createLangSmithExporter, langSmithRootRunId, type LangSmithExporterOptions } from "eart/langsmith";
import { createOtelExporter } from "eart/otel";
import { langSmithRuns, redactedThreadLabel, type CaptureServer } from "../support/capture-server.js";
import { server, track } from "../support/cleanups.js";
import { ask, config, lookup, refundSetup } from "../support/refund.js";

/**
 * The exporters on a worker thread (src/export/thread.ts, src/export/worker.ts). Every worker the sources
 * start is counted here, so tests can say how many an exporter started and that shutdown ended
 * them. The worker script itself is loaded from dist (`npm run build` first).
 */
const workers = vi.hoisted(() => ({ started: 0, exited: 0, last: undefined as { terminate(): Promise<number> } | undefined }));
vi.mock("node:worker_threads", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:worker_threads")>();
  class CountedWorker extends actual.Worker {
    constructor(...args: ConstructorParameters<typeof actual.Worker>) {
      super(...args);
      workers.started += 1;
      workers.last = this;
      this.once("exit", () => (workers.exited += 1));
    }
  }
  return { ...actual, Worker: CountedWorker, default: { ...actual, Worker: CountedWorker } };
});

async function until(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const CARD = "4111 1111 1111 1111";
const CARD_DIGITS = "4111111111111111";
const ZERO = { queued: 0, inFlight: 0, exported: 0, dropped: 0, failed: 0 };

const byId = (runs: Map<string, Record<string, any>>) => [...runs.entries()].sort(([a], [b]) => a.localeCompare(b));
const bodies = (capture: CaptureServer) => capture.requests.map((r) => r.body.toString("utf8")).join("\n");

/** A small refund thread as the governed agent records it: started, allowed, refunded, answered. */
function refundThreadInputs(threadId: string, reason = "charged twice", answer = "Refunded $740 for order 1042."): AuditEventInput[] {
  const args = { orderId: "1042", amount: 740, reason };
  const digest = toolCallDigest("issue_refund", args, threadId);
  const at = (i: number) => new Date(Date.parse("2026-03-02T10:00:00.000Z") + i * 250).toISOString();
  return [
    { threadId, at: at(0), type: "run.started", data: { agentId: "support-agent", userId: "cara", request: { text: `Please refund order 1042, ${reason}`, messageId: "m-1" } } },
    {
      threadId,
      at: at(1),
      type: "policy.decided",
      data: {
        toolCallId: "c1",
        name: "issue_refund",
        effect: "allow",
        status: "allowed",
        reasons: ["Refunds up to $1,000 are allowed"],
        policyIds: ["refund.small"],
        policyVersion: "a".repeat(64),
        digest,
        request: { tool: { name: "issue_refund", args } },
      },
    },
    { threadId, at: at(2), type: "tool.started", data: { toolCallId: "c1", name: "issue_refund", digest, attempt: 1 } },
    { threadId, at: at(3), type: "tool.succeeded", data: { toolCallId: "c1", name: "issue_refund", result: JSON.stringify({ refundId: "r-77", orderId: "1042", amount: 740 }) } },
    { threadId, at: at(4), type: "model.output", data: { text: answer, toolCalls: [], messageId: "m-2" } },
    { threadId, at: at(5), type: "run.completed", data: { outcome: "answered" } },
  ];
}

/** Exports `events` with one LangSmith exporter on `thread` to a fresh capture server, and flushes it. */
async function exportOn(thread: "worker" | "main", events: AuditEvent[], options: LangSmithExporterOptions = {}) {
  const capture = await server();
  const before = workers.started;
  const exporter = track(createLangSmithExporter({ apiUrl: capture.url, apiKey: "k", projectName: "eart-worker-tests", flushIntervalMs: 60_000, thread, ...options }));
  expect(exporter.offer(events)).toBe(true);
  expect(await exporter.flush({ timeoutMs: 10_000 })).toBe(true);
  expect(workers.started - before, `workers started by a ${thread} exporter`).toBe(thread === "worker" ? 1 : 0);
  return { capture, exporter, runs: langSmithRuns(capture.requests) };
}

describe("the LangSmith exporter on the worker thread", () => {
  for (const source of ["sealed by the append", "read back from the store"] as const) {
    it(`posts exactly the runs the main-thread exporter posts (events ${source})`, async () => {
      const log = new MemoryAuditLog();
      const appended = await log.append(refundThreadInputs("wk-same"));
      const events = source === "sealed by the append" ? appended : await log.read("wk-same");
      // The worker is handed the data JSON the log hashed only for events an append returned.
      expect(events.every((e) => (sealedDataJson(e) !== undefined) === (source === "sealed by the append"))).toBe(true);

      const onWorker = await exportOn("worker", events);
      const onMain = await exportOn("main", events);

      expect(onWorker.capture.requests.filter((r) => r.path === "/runs/batch").every((r) => r.method === "POST" && r.headers["x-api-key"] === "k")).toBe(true);
      expect(onWorker.runs.size).toBe(4);
      expect(byId(onWorker.runs)).toEqual(byId(onMain.runs));
      // Not two empty maps: the runs carry the mapping's ids, trace ids, dotted orders, metadata, tags and content.
      const root = [...onWorker.runs.values()].find((r) => r.parent_run_id === undefined)!;
      expect(root.id).toBe(langSmithRootRunId("wk-same", { key: events[0]!.id, startedAt: events[0]!.at }));
      expect(root).toMatchObject({
        trace_id: root.id,
        name: "support-agent",
        run_type: "chain",
        session_name: "eart-worker-tests",
        inputs: { input: "Please refund order 1042, charged twice", messageId: "m-1" },
        outputs: { outcome: "completed", output: "Refunded $740 for order 1042." },
        end_time: events[5]!.at,
      });
      expect(root.extra.metadata).toMatchObject({
        thread_id: "wk-same",
        "eart.agent.id": "support-agent",
        "eart.user.id": "cara",
        "eart.run.outcome": "completed",
        "eart.policy.decision": ["allow"],
        "eart.policy.ids": ["refund.small"],
        "eart.audit.head": events[5]!.hash,
      });
      expect(root.tags).toEqual(expect.arrayContaining(["eart", "agent:support-agent", "user:cara", "decision:allow", "policy:refund.small", "completed"]));
      const children = [...onWorker.runs.values()].filter((r) => r.parent_run_id === root.id);
      expect(children.map((c) => c.name).sort()).toEqual(["chat", "issue_refund", "policy issue_refund"]);
      expect(children.every((c) => c.trace_id === root.id && c.dotted_order.startsWith(`${root.dotted_order}.`))).toBe(true);
      expect(children.find((c) => c.name === "issue_refund")).toMatchObject({
        run_type: "tool",
        inputs: { toolCallId: "c1", args: { orderId: "1042", amount: 740, reason: "charged twice" } },
        end_time: events[3]!.at,
      });
      expect(JSON.parse(children.find((c) => c.name === "issue_refund")!.outputs.result)).toEqual({ refundId: "r-77", orderId: "1042", amount: 740 });
      expect(children.find((c) => c.name === "chat")!.outputs).toEqual({ text: "Refunded $740 for order 1042.", tool_calls: [] });
    });
  }

  it("redacts with the standard rules on the worker: no card number leaves, and a redacted thread id keeps the raw id's run ids", async () => {
    const threadId = `refund for ${CARD}`;
    const events = sealEvents(null, refundThreadInputs(threadId, `charged twice on card ${CARD}`, `Refunded $740 to card ${CARD}.`));
    const onWorker = await exportOn("worker", events);
    const onMain = await exportOn("main", events);

    const text = bodies(onWorker.capture);
    expect(text).not.toContain(CARD);
    expect(text).not.toContain(CARD_DIGITS);
    expect(text).toContain("[REDACTED:card_number]");
    const runs = [...onWorker.runs.values()];
    expect(runs).toHaveLength(4);
    // Every run's thread metadata is the redacted id.
    const label = runs[0]!.extra.metadata.thread_id;
    expect(label).toMatch(redactedThreadLabel("refund for [REDACTED:card_number]"));
    expect(runs.every((r) => r.extra.metadata.thread_id === label && r.extra.metadata["eart.thread.id"] === label)).toBe(true);
    const root = runs.find((r) => r.parent_run_id === undefined)!;
    expect(root.id).toBe(langSmithRootRunId(threadId, { key: events[0]!.id, startedAt: events[0]!.at }));
    expect(root.inputs.input).toBe("Please refund order 1042, charged twice on card [REDACTED:card_number]");
    expect(runs.find((r) => r.name === "issue_refund")!.inputs.args.reason).toBe("charged twice on card [REDACTED:card_number]");
    expect(runs.find((r) => r.name === "policy issue_refund")!.inputs.args.reason).toBe("charged twice on card [REDACTED:card_number]");
    expect(runs.find((r) => r.name === "chat")!.outputs.text).toBe("Refunded $740 to card [REDACTED:card_number].");
    // The same runs as on the graph's thread, ids included.
    expect(byId(onWorker.runs)).toEqual(byId(onMain.runs));
    expect(bodies(onMain.capture)).not.toContain(CARD);
  });

  it("applies a redaction that cannot cross threads (its own validate) on the graph's thread before posting", async () => {
    const emp = defineRedaction([{ id: "emp", pattern: /EMP-\d+/g, validate: (m) => m.endsWith("7") }]);
    expect(portableRedaction(emp)).toBeUndefined();
    const threadId = "review EMP-1237";
    const events = sealEvents(null, refundThreadInputs(threadId, "approved by EMP-1237 for EMP-1234", "EMP-1237 and EMP-1234 signed off the refund."));
    const onWorker = await exportOn("worker", events, { redaction: emp });
    const onMain = await exportOn("main", events, { redaction: emp });

    const text = bodies(onWorker.capture);
    expect(text).not.toContain("EMP-1237");
    expect(text).toContain("EMP-1234");
    expect(text).toContain("[REDACTED:emp]");
    const runs = [...onWorker.runs.values()];
    expect(runs.find((r) => r.name === "issue_refund")!.inputs.args.reason).toBe("approved by [REDACTED:emp] for EMP-1234");
    expect(runs.find((r) => r.name === "chat")!.outputs.text).toBe("[REDACTED:emp] and EMP-1234 signed off the refund.");
    expect(runs[0]!.extra.metadata.thread_id).toMatch(redactedThreadLabel("review [REDACTED:emp]"));
    expect(runs.every((r) => r.extra.metadata.thread_id === runs[0]!.extra.metadata.thread_id)).toBe(true);
    expect(runs.find((r) => r.parent_run_id === undefined)!.id).toBe(langSmithRootRunId(threadId, { key: events[0]!.id, startedAt: events[0]!.at }));
    expect(byId(onWorker.runs)).toEqual(byId(onMain.runs));
  });

  it("reads the history of a thread it first sees mid-way back across the thread boundary (pre-redacted, raw thread id kept)", async () => {
    const emp = defineRedaction([{ id: "emp", pattern: /EMP-\d+/g, validate: (m) => m.endsWith("7") }]);
    const threadId = "review EMP-1237";
    const args = { orderId: "1042", amount: 740 };
    const digest = toolCallDigest("issue_refund", args, threadId);
    const log = new MemoryAuditLog();
    const stored = await log.append([
      { threadId, type: "run.started", data: { agentId: "support-agent", userId: "cara", request: { text: "Refund order 1042" } } },
      { threadId, type: "policy.decided", data: { toolCallId: "c2", name: "issue_refund", effect: "require_approval", status: "pending", policyIds: ["refund.supervisor"], digest, request: { tool: { name: "issue_refund", args } } } },
      { threadId, type: "approval.requested", data: { requests: [{ toolCallId: "c2", name: "issue_refund", digest }] } },
      { threadId, type: "approval.decided", data: { toolCallId: "c2", name: "issue_refund", approverId: "sam", decision: "approve", digest, status: "approved" } },
      { threadId, type: "tool.started", data: { toolCallId: "c2", name: "issue_refund", digest, attempt: 1 } },
      { threadId, type: "tool.succeeded", data: { toolCallId: "c2", name: "issue_refund", result: "refunded" } },
      { threadId, type: "run.completed", data: { outcome: "answered" } },
    ]);
    const exportResume = async (thread: "worker" | "main") => {
      const capture = await server();
      const x = track(createLangSmithExporter({ apiUrl: capture.url, apiKey: "k", redaction: emp, flushIntervalMs: 60_000, thread }));
      // Only the resume: the exporter reads the paused segment from the audit log (on the graph's thread).
      await exportThread(log, threadId, [x], 2);
      expect(await x.flush({ timeoutMs: 10_000 })).toBe(true);
      expect(x.stats()).toMatchObject({ exported: 4, failed: 0 });
      return { capture, runs: langSmithRuns(capture.requests) };
    };
    const onWorker = await exportResume("worker");
    const onMain = await exportResume("main");
    const [root, ...others] = [...onWorker.runs.values()].filter((r) => r.parent_run_id === undefined);
    expect(others).toEqual([]);
    expect(root!.extra.metadata).toMatchObject({
      thread_id: expect.stringMatching(redactedThreadLabel("review [REDACTED:emp]")),
      "eart.segment.kind": "resume",
      // From the history read back: who, and which run it resumes (an id derived from the raw thread id).
      "eart.agent.id": "support-agent",
      "eart.user.id": "cara",
      "eart.resumed_from.run_id": langSmithRootRunId(threadId, { key: stored[0]!.id, startedAt: stored[0]!.at }),
      "eart.resumed_from.hash": stored[2]!.hash,
      "eart.approval.approver": "sam",
      "eart.run.outcome": "completed",
    });
    expect([...onWorker.runs.values()].find((r) => r.name === "issue_refund")!.extra.metadata).toMatchObject({ "eart.policy.decision": "require_approval", "eart.approval.approver": "sam" });
    expect(bodies(onWorker.capture)).not.toContain("EMP-1237");
    expect(byId(onWorker.runs)).toEqual(byId(onMain.runs));
  });

  it("holds maxQueueSize across the thread boundary against an endpoint that never answers, and accounts for every event at shutdown", async () => {
    const hanging = await server("hang");
    const before = workers.started;
    const langsmith = track(createLangSmithExporter({ apiUrl: hanging.url, apiKey: "k", maxQueueSize: 10, flushIntervalMs: 0, requestTimeoutMs: 60_000, exportTimeoutMs: 60_000 }));
    const events = sealEvents(null, Array.from({ length: 19 }, (_, i) => ({ threadId: "wk-bound", type: "tool.retrying" as const, data: { i } })));
    expect(langsmith.offer(events.slice(0, 8))).toBe(true);
    // Those 8 are now on the worker, in a request the endpoint never answers.
    await hanging.waitFor(() => hanging.received() > 0);
    expect(langsmith.offer(events.slice(8, 16))).toBe(false);
    expect(langsmith.stats().dropped).toBe(8);
    // Exactly up to the bound: 8 held by the worker + 2 fit, 1 more does not.
    expect(langsmith.offer(events.slice(16, 18))).toBe(true);
    expect(langsmith.offer(events.slice(18, 19))).toBe(false);
    expect(langsmith.stats()).toMatchObject({ exported: 0, dropped: 9 });
    expect(workers.started - before).toBe(1);

    const start = Date.now();
    expect(await langsmith.shutdown({ timeoutMs: 1_000 })).toBe(false);
    expect(Date.now() - start).toBeLessThan(5_000);
    const stats = langsmith.stats();
    expect(stats).toMatchObject({ queued: 0, inFlight: 0, exported: 0 });
    expect(stats.exported + stats.failed + stats.dropped).toBe(19);
    expect(langsmith.offer(events.slice(0, 1))).toBe(false);
    // The worker is gone and the request it left is closed.
    await until(() => workers.exited === workers.started);
    await hanging.waitFor(() => hanging.pending() === 0, 5_000);
  });

  // Shutdown right after the first offer, against an endpoint that never answers: the worker is
  // still loading when the deadline starts. Every event is counted once, and nothing stays in
  // flight (what the worker held is dropped, whatever it reports after). The deadline (10 s) leaves
  // a worker that loads slowly the time to send its request, so that the request is in flight when
  // the deadline ends: with 1 s, a worker starved of CPU (the suite runs three files on two cores)
  // had sent nothing yet, and the check that it had failed.
  it("after a shutdown that outran a still-starting worker, nothing is in flight and every event is counted once", async () => {
    const hanging = await server("hang");
    const langsmith = track(createLangSmithExporter({ apiUrl: hanging.url, apiKey: "k", flushIntervalMs: 0, requestTimeoutMs: 60_000, exportTimeoutMs: 60_000 }));
    const events = sealEvents(null, refundThreadInputs("wk-early-shutdown"));
    expect(langsmith.offer(events)).toBe(true);
    const start = Date.now();
    expect(await langsmith.shutdown({ timeoutMs: 10_000 })).toBe(false);
    expect(Date.now() - start).toBeLessThan(20_000);
    expect(hanging.received()).toBeGreaterThan(0);
    const { queued, inFlight, exported, failed, dropped } = langsmith.stats();
    expect({ queued, inFlight }).toEqual({ queued: 0, inFlight: 0 });
    expect(queued + inFlight + exported + failed + dropped).toBe(events.length);
  });

  it("has exact stats after flush: everything exported, nothing queued or in flight", async () => {
    const capture = await server();
    const langsmith = track(createLangSmithExporter({ apiUrl: capture.url, apiKey: "k", maxBatchSize: 4, flushIntervalMs: 60_000 }));
    const log = new MemoryAuditLog();
    const first = await log.append(refundThreadInputs("wk-stats-1"));
    const second = await log.append(refundThreadInputs("wk-stats-2"));
    expect(langsmith.offer(first)).toBe(true);
    expect(langsmith.offer(second)).toBe(true);
    expect(langsmith.stats()).toMatchObject({ exported: 0, queued: 12 });
    expect(await langsmith.flush()).toBe(true);
    expect(langsmith.stats()).toEqual({ ...ZERO, exported: 12 });
    // 12 events in batches of at most 4: three requests, both threads' runs complete.
    expect(capture.requests.filter((r) => r.path === "/runs/batch")).toHaveLength(3);
    const runs = [...langSmithRuns(capture.requests).values()];
    expect(runs.filter((r) => r.parent_run_id === undefined).map((r) => r.extra.metadata["eart.run.outcome"])).toEqual(["completed", "completed"]);
    expect(await langsmith.shutdown({ timeoutMs: 5_000 })).toBe(true);
    expect(langsmith.stats()).toEqual({ ...ZERO, exported: 12 });
    await until(() => workers.exited === workers.started);
  });

  it("never starts a worker when it never gets an event, and shuts down at once", async () => {
    const capture = await server();
    const before = workers.started;
    const exporters: AuditExporter[] = [
      track(createLangSmithExporter({ apiUrl: capture.url, apiKey: "k" })),
      track(createOtelExporter({ otlp: { url: `${capture.url}/v1/traces` } })),
    ];
    expect(exporters[0]!.offer([])).toBe(true);
    expect(await exporters[0]!.flush({ timeoutMs: 30_000 })).toBe(true);
    const start = Date.now();
    expect(await Promise.all(exporters.map((x) => x.shutdown({ timeoutMs: 30_000 })))).toEqual([true, true]);
    expect(Date.now() - start).toBeLessThan(5_000);
    for (const x of exporters) expect(x.stats()).toEqual(ZERO);
    // Closed: a later offer is dropped and counted, and still starts nothing.
    expect(exporters[1]!.offer(sealEvents(null, [{ threadId: "wk-idle", type: "run.started" }]))).toBe(false);
    expect(exporters[1]!.stats()).toEqual({ ...ZERO, dropped: 1 });
    expect(workers.started).toBe(before);
    expect(capture.received()).toBe(0);
  });
});

describe("the OpenTelemetry exporter with otlp (its own SDK pipeline on the worker)", () => {
  it("sends a refund run's spans over OTLP/HTTP with the configured resource", async () => {
    const collector = await server();
    const before = workers.started;
    const otel = createOtelExporter({ otlp: { url: `${collector.url}/v1/traces`, serviceName: "refunds", resourceAttributes: { "deployment.environment": "test" }, headers: { "x-tenant": "eu-1" } }, flushIntervalMs: 10 });
    const traceExport = track(createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [otel] }));
    const setup = refundSetup([[lookup("c1")]], { auditLog: traceExport });
    await setup.agent.invoke(ask("Where is order 1042?"), config("wk-otlp"));
    // flush() flushes the worker's SDK pipeline too: the collector has the spans when it returns.
    expect(await traceExport.flush({ timeoutMs: 10_000 })).toBe(true);
    const stored = await traceExport.read("wk-otlp");
    expect(traceExport.stats()).toEqual({ otel: { ...ZERO, exported: stored.length } });
    expect(workers.started - before).toBe(1);

    type OtlpValue = { stringValue?: string; intValue?: string | number; arrayValue?: unknown };
    type OtlpBody = { resourceSpans: { resource: { attributes: { key: string; value: OtlpValue }[] }; scopeSpans: { scope: { name: string }; spans: { name: string; kind: number; attributes: { key: string; value: OtlpValue }[] }[] }[] }[] };
    const posts = collector.requests.filter((r) => r.path === "/v1/traces");
    expect(posts.every((r) => r.method === "POST" && r.headers["x-tenant"] === "eu-1" && String(r.headers["content-type"]).startsWith("application/json"))).toBe(true);
    const resourceSpans = posts.flatMap((r) => (r.json as OtlpBody).resourceSpans);
    expect(resourceSpans.length).toBeGreaterThan(0);
    for (const rs of resourceSpans) {
      const resource = Object.fromEntries(rs.resource.attributes.map((a) => [a.key, a.value]));
      expect(resource["service.name"]).toEqual({ stringValue: "refunds" });
      expect(resource["deployment.environment"]).toEqual({ stringValue: "test" });
    }
    const spans = resourceSpans
      .flatMap((rs) => rs.scopeSpans)
      .flatMap((ss) => ss.spans.map((s) => ({ scope: ss.scope.name, name: s.name, attributes: Object.fromEntries(s.attributes.map((a) => [a.key, a.value])) })));
    expect(spans.map((s) => s.name).sort()).toEqual(["chat", "chat", "execute_tool lookup_order", "invoke_agent support-agent"]);
    expect(spans.every((s) => s.scope === "eart")).toBe(true);
    const operation = (name: string) => spans.find((s) => s.name === name)!.attributes["gen_ai.operation.name"];
    expect(operation("invoke_agent support-agent")).toEqual({ stringValue: "invoke_agent" });
    expect(operation("chat")).toEqual({ stringValue: "chat" });
    expect(operation("execute_tool lookup_order")).toEqual({ stringValue: "execute_tool" });
    const root = spans.find((s) => s.name === "invoke_agent support-agent")!;
    expect(root.attributes).toMatchObject({ "eart.thread.id": { stringValue: "wk-otlp" }, "eart.run.outcome": { stringValue: "completed" }, "eart.user.id": { stringValue: "cara" } });
    expect(spans.find((s) => s.name === "execute_tool lookup_order")!.attributes["gen_ai.tool.call.id"]).toEqual({ stringValue: "c1" });
  });
});

describe("one export worker per process", () => {
  it("carries LangSmith and OTLP exporters on one thread, keeps the other going when one shuts down, and ends with the last", async () => {
    const langsmithServer = await server();
    const collector = await server();
    const before = { started: workers.started, exited: workers.exited };
    const langsmith = track(createLangSmithExporter({ apiUrl: langsmithServer.url, apiKey: "k", flushIntervalMs: 10 }));
    const otel = track(createOtelExporter({ otlp: { url: `${collector.url}/v1/traces` }, flushIntervalMs: 10 }));
    const log = new MemoryAuditLog();
    const traceExport = createTraceExport({ auditLog: log, exporters: [langsmith, otel] });
    await traceExport.append(refundThreadInputs("wk-shared-1"));
    expect(await traceExport.flush({ timeoutMs: 10_000 })).toBe(true);
    expect(workers.started - before.started).toBe(1);
    expect(traceExport.stats()).toEqual({ langsmith: { ...ZERO, exported: 6 }, otel: { ...ZERO, exported: 6 } });

    // LangSmith leaves; the worker stays for OTLP, which still exports.
    expect(await langsmith.shutdown({ timeoutMs: 5_000 })).toBe(true);
    expect(workers.exited).toBe(before.exited);
    const spansBefore = collector.requests.length;
    await traceExport.append(refundThreadInputs("wk-shared-2"));
    expect(await otel.flush({ timeoutMs: 10_000 })).toBe(true);
    expect(collector.requests.length).toBeGreaterThan(spansBefore);
    expect(otel.stats()).toEqual({ ...ZERO, exported: 12 });
    // The one that left refuses (and counts) what it is offered now.
    expect(langsmith.stats()).toEqual({ ...ZERO, exported: 6, dropped: 6 });
    expect([...langSmithRuns(langsmithServer.requests).values()].every((r) => r.extra?.metadata?.thread_id !== "wk-shared-2")).toBe(true);

    // The last one out ends the worker; a new exporter starts a new one.
    expect(await otel.shutdown({ timeoutMs: 5_000 })).toBe(true);
    await until(() => workers.exited === before.exited + 1);
    const again = track(createLangSmithExporter({ apiUrl: langsmithServer.url, apiKey: "k", flushIntervalMs: 10 }));
    again.offer(await log.append(refundThreadInputs("wk-shared-3")));
    expect(await again.flush({ timeoutMs: 10_000 })).toBe(true);
    expect(workers.started - before.started).toBe(2);
  });

  it("survives its worker dying: every exporter counts what the worker held as dropped, says why, and refuses what comes after", async () => {
    const hanging = await server("hang");
    const collector = await server("hang");
    const langsmith = track(createLangSmithExporter({ apiUrl: hanging.url, apiKey: "k", flushIntervalMs: 0, requestTimeoutMs: 60_000, exportTimeoutMs: 60_000 }));
    const otel = track(createOtelExporter({ otlp: { url: `${collector.url}/v1/traces` }, flushIntervalMs: 0, exportTimeoutMs: 60_000 }));
    const traceExport = createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [langsmith, otel] });
    await traceExport.append(refundThreadInputs("wk-crash"));
    await hanging.waitFor(() => hanging.received() > 0);
    // The graph's thread has heard that a send is in flight.
    await until(() => langsmith.stats().inFlight > 0);
    const before = workers.exited;
    // The worker goes away with a send in flight (as a crash would).
    await workers.last!.terminate();
    await until(() => workers.exited === before + 1);
    for (const x of [langsmith, otel]) {
      const stats = x.stats();
      expect(stats).toMatchObject({ queued: 0, inFlight: 0, exported: 0, failed: 0, dropped: 6 });
      expect(stats.lastError).toMatch(/export worker exited/);
    }
    // The graph goes on: appends still store, and the exporters refuse and count.
    await traceExport.append(refundThreadInputs("wk-crash-2"));
    expect((await traceExport.read("wk-crash-2")).length).toBe(6);
    expect(langsmith.stats().dropped).toBe(12);
    expect(otel.stats().dropped).toBe(12);
    expect(await traceExport.flush({ timeoutMs: 1_000 })).toBe(false);
    expect(await traceExport.shutdown({ timeoutMs: 1_000 })).toBe(false);
  });

  it("builds each exporter in the environment it was created in, though they share the worker", async () => {
    const first = await server();
    const second = await server();
    const saved = process.env.LANGSMITH_ENDPOINT;
    try {
      process.env.LANGSMITH_ENDPOINT = first.url;
      const a = track(createLangSmithExporter({ apiKey: "k", flushIntervalMs: 10 }));
      process.env.LANGSMITH_ENDPOINT = second.url;
      const b = track(createLangSmithExporter({ apiKey: "k", flushIntervalMs: 10 }));
      const before = workers.started;
      a.offer(sealEvents(null, refundThreadInputs("wk-env-a")));
      b.offer(sealEvents(null, refundThreadInputs("wk-env-b")));
      expect(await Promise.all([a.flush({ timeoutMs: 10_000 }), b.flush({ timeoutMs: 10_000 })])).toEqual([true, true]);
      expect(workers.started - before).toBe(1);
      const threadsAt = (s: CaptureServer) => new Set([...langSmithRuns(s.requests).values()].map((r) => r.extra?.metadata?.thread_id));
      expect(threadsAt(first)).toEqual(new Set(["wk-env-a"]));
      expect(threadsAt(second)).toEqual(new Set(["wk-env-b"]));
    } finally {
      if (saved === undefined) delete process.env.LANGSMITH_ENDPOINT;
      else process.env.LANGSMITH_ENDPOINT = saved;
    }
  });
});

/** Nice values of this process's threads (Linux), by thread id. */
function threadNices(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]));
    } catch {
      // The thread ended while we looked.
    }
  }
  return out;
}

describe.runIf(process.platform === "linux")("the export worker's scheduling priority", () => {
  const niced = (nice: number) => [...threadNices().values()].filter((n) => n === nice).length;
  async function exportOnce(threadId: string): Promise<AuditExporter> {
    const s = await server();
    const x = track(createLangSmithExporter({ apiUrl: s.url, apiKey: "k", flushIntervalMs: 10 }));
    x.offer(sealEvents(null, refundThreadInputs(threadId)));
    expect(await x.flush({ timeoutMs: 10_000 })).toBe(true);
    expect(x.stats()).toEqual({ ...ZERO, exported: 6 });
    return x;
  }
  const withNice = async (value: string | undefined, body: () => Promise<void>) => {
    const saved = process.env.EART_EXPORT_WORKER_NICE;
    try {
      if (value === undefined) delete process.env.EART_EXPORT_WORKER_NICE;
      else process.env.EART_EXPORT_WORKER_NICE = value;
      await body();
    } finally {
      if (saved === undefined) delete process.env.EART_EXPORT_WORKER_NICE;
      else process.env.EART_EXPORT_WORKER_NICE = saved;
    }
  };

  it("runs the worker, and only it, at the lowest priority by default, and at EART_EXPORT_WORKER_NICE when set", async () => {
    await withNice(undefined, async () => {
      expect(niced(19)).toBe(0);
      const before = workers.exited;
      const x = await exportOnce("wk-nice-default");
      // The worker's thread, and no other thread of the process (the graph's included).
      expect(niced(19)).toBe(1);
      expect(threadNices().get(process.pid)).toBe(0);
      expect(await x.shutdown({ timeoutMs: 5_000 })).toBe(true);
      await until(() => workers.exited === before + 1);
      expect(niced(19)).toBe(0);
    });
    await withNice("7", async () => {
      const x = await exportOnce("wk-nice-7");
      expect(niced(7)).toBe(1);
      expect(niced(19)).toBe(0);
      expect(await x.shutdown({ timeoutMs: 5_000 })).toBe(true);
    });
  });

  it("refuses a value that is not a nice value, naming the variable, before any worker starts", async () => {
    for (const bad of ["20", "-1", "low", "2.5"]) {
      await withNice(bad, async () => {
        const before = workers.started;
        let error: unknown;
        try {
          createLangSmithExporter({ apiUrl: "http://127.0.0.1:9", apiKey: "k" });
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(EartConfigError);
        expect((error as EartConfigError).field).toBe("EART_EXPORT_WORKER_NICE");
        expect((error as Error).message).toContain(`"${bad}"`);
        expect(workers.started).toBe(before);
      });
    }
  });
});

describe("the OpenTelemetry exporter with otlp, against a collector that never answers", () => {
  it("keeps shutdown within its bound and accounts for every event", async () => {
    const hanging = await server("hang");
    const otel = track(createOtelExporter({ otlp: { url: `${hanging.url}/v1/traces` }, flushIntervalMs: 0, exportTimeoutMs: 60_000 }));
    const events = sealEvents(null, refundThreadInputs("wk-otlp-hang"));
    expect(otel.offer(events)).toBe(true);
    // Mapped to spans and handed to the worker's SDK, which is stuck sending them.
    await hanging.waitFor(() => hanging.received() > 0);
    const start = Date.now();
    expect(await otel.shutdown({ timeoutMs: 1_000 })).toBe(false);
    expect(Date.now() - start).toBeLessThan(5_000);
    const stats = otel.stats();
    expect(stats).toMatchObject({ queued: 0, inFlight: 0 });
    expect(stats.exported + stats.failed + stats.dropped).toBe(events.length);
    await until(() => workers.exited === workers.started);
    await hanging.waitFor(() => hanging.pending() === 0, 5_000);
  });
});

describe("worker exporter options", () => {
  function configError(make: () => unknown): EartConfigError {
    let caught: unknown;
    try {
      make();
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(EartConfigError);
    return caught as EartConfigError;
  }

  it("refuses what cannot run on the worker, naming the field", async () => {
    const provider = new BasicTracerProvider();
    const before = workers.started;
    expect(configError(() => createLangSmithExporter({ fetch: globalThis.fetch, thread: "worker" })).field).toBe("fetch");
    expect(configError(() => createLangSmithExporter({ thread: "elsewhere" as never })).field).toBe("thread");
    expect(configError(() => createOtelExporter({ otlp: {}, tracerProvider: provider })).field).toBe("otlp");
    expect(configError(() => createOtelExporter({ otlp: {}, tracer: provider.getTracer("x") })).field).toBe("otlp");
    expect(configError(() => createOtelExporter({ otlp: { url: "http://127.0.0.1:4318/v1/traces", endpoint: "x" } as never })).field).toBe("otlp");
    expect(configError(() => createOtelExporter({ otlp: { url: "not a url" } })).field).toBe("otlp");
    // A fetch function alone picks the graph's thread, and is what sends.
    const capture = await server();
    let fetched = 0;
    const fetch = ((input: Parameters<typeof globalThis.fetch>[0], init?: RequestInit) => {
      fetched += 1;
      return globalThis.fetch(input, init);
    }) as typeof globalThis.fetch;
    const langsmith = track(createLangSmithExporter({ apiUrl: capture.url, apiKey: "k", fetch, flushIntervalMs: 60_000 }));
    expect(langsmith.offer(sealEvents(null, [{ threadId: "wk-fetch", type: "run.started", data: { agentId: "a", userId: "u" } }]))).toBe(true);
    expect(await langsmith.flush({ timeoutMs: 10_000 })).toBe(true);
    expect(fetched).toBeGreaterThan(0);
    expect(langSmithRuns(capture.requests).size).toBe(1);
    expect(workers.started).toBe(before);
  });
});

describe("portableRedaction and redactionFromPortable", () => {
  const salary = { id: "salary", fields: ["salary"], visibleTo: ["hr-manager"], label: "compensation" };
  const samples: unknown[] = [
    `card ${CARD}`,
    "not a card: 4111 1111 1111 1112",
    "IBAN GB82 WEST 1234 5698 7654 32",
    "SSN 123-45-6789, NI AB 12 34 56 C",
    { card: "anything", nested: { iban: "x", ssn: null }, salary: 91_000, note: `pay with ${CARD_DIGITS}` },
    { result: JSON.stringify({ pan: "5500000000000004", note: "ok" }) },
    ["plain", 42, null, { cardNumber: 1 }],
  ];
  const hr = { onBehalfOf: { roles: ["hr-manager"] } } as never;

  it("round-trips the standard rules (their checksums by name) into a redaction that redacts the same", () => {
    const original = defineRedaction([...STANDARD_REDACTIONS, salary]);
    const portable = portableRedaction(original)!;
    expect(portable).toEqual([
      { id: "card_number", fields: ["card", "cardNumber", "pan"], pattern: STANDARD_REDACTIONS[0]!.pattern, validate: "luhn", visibleTo: [], label: "payment_data" },
      { id: "iban", fields: ["iban"], pattern: STANDARD_REDACTIONS[1]!.pattern, validate: "iban", visibleTo: [], label: "payment_data" },
      { id: "national_id", fields: ["ssn", "nationalId", "nino"], pattern: STANDARD_REDACTIONS[2]!.pattern, validate: "national_id", visibleTo: [], label: "pii" },
      { id: "salary", fields: ["salary"], visibleTo: ["hr-manager"], label: "compensation" },
    ]);
    // What a worker receives: a structured clone.
    const copy = redactionFromPortable(structuredClone(portable));
    expect(portableRedaction(copy)).toEqual(portable);
    for (const value of samples) {
      expect(copy.apply(value, undefined), JSON.stringify(value)).toEqual(original.apply(value, undefined));
      expect(copy.apply(value, hr), JSON.stringify(value)).toEqual(original.apply(value, hr));
      expect(copy.mayChange!(value)).toBe(original.mayChange!(value));
    }
    // The samples exercise the rules, the Luhn check and visibleTo.
    expect(copy.apply(samples[0], undefined).value).toBe("card [REDACTED:card_number]");
    expect(copy.apply(samples[1], undefined).value).toBe("not a card: 4111 1111 1111 1112");
    expect(copy.apply(samples[2], undefined).value).toBe("IBAN [REDACTED:iban]");
    expect(copy.apply(samples[3], undefined).value).toBe("SSN [REDACTED:national_id], NI [REDACTED:national_id]");
    expect(copy.apply(samples[4], undefined).value).toMatchObject({ card: "[REDACTED:card_number]", salary: "[REDACTED:salary]", note: "pay with [REDACTED:card_number]" });
    expect(copy.apply(samples[4], hr).value).toMatchObject({ salary: 91_000 });
    expect(JSON.parse((copy.apply(samples[5], undefined).value as { result: string }).result)).toEqual({ pan: "[REDACTED:card_number]", note: "ok" });
  });

  it("says a redaction is portable only when its rules are all it does", () => {
    const withLuhn = defineRedaction([{ id: "acct", pattern: /ACCT-[\d ]+\d/, validate: luhnValid }]);
    expect(portableRedaction(withLuhn)).toEqual([{ id: "acct", fields: [], pattern: /ACCT-[\d ]+\d/g, validate: "luhn", visibleTo: [] }]);
    expect(redactionFromPortable(portableRedaction(withLuhn)!).apply(`ACCT-${CARD_DIGITS} ACCT-4111111111111112`, undefined).value).toBe("[REDACTED:acct] ACCT-4111111111111112");
    expect(portableRedaction(defineRedaction([{ id: "emp", pattern: /EMP-\d+/g, validate: (m) => m.endsWith("7") }]))).toBeUndefined();
    // One rule with a function of its own is enough.
    expect(portableRedaction(defineRedaction([...STANDARD_REDACTIONS, { id: "emp", pattern: /EMP-\d+/g, validate: (m) => m.length > 5 }]))).toBeUndefined();
    const handWritten: Redaction = { rules: [], apply: (value) => ({ value, redacted: [], labels: [] }) };
    expect(portableRedaction(handWritten)).toBeUndefined();
    // Even when its rules look portable: what apply does is its own.
    expect(portableRedaction({ ...defineRedaction(STANDARD_REDACTIONS) })).toBeUndefined();
  });

  it("refuses a validate name it does not know", () => {
    let caught: unknown;
    try {
      redactionFromPortable([{ id: "x", fields: [], pattern: /x/g, visibleTo: [], validate: "checksum" }]);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(EartConfigError);
    expect((caught as EartConfigError).field).toBe("redaction");
    expect((caught as EartConfigError).message).toContain("checksum");
  });
});

describe("sealedDataJson", () => {
  it("is the canonical JSON the log hashed, for the very events an append returned, and nothing else", async () => {
    const log = new MemoryAuditLog();
    const data = { text: "refund", amount: 740, order: { id: "1042", items: [2, "b", { z: true, a: null }] } };
    const [event] = await log.append({ threadId: "wk-json", type: "model.output", data });
    const sorted = (v: unknown): unknown =>
      Array.isArray(v) ? v.map(sorted) : v !== null && typeof v === "object" ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, x]) => [k, sorted(x)])) : v;
    expect(sealedDataJson(event!)).toBe(JSON.stringify(sorted(data)));
    expect(sealedDataJson(event!)).toBe('{"amount":740,"order":{"id":"1042","items":[2,"b",{"a":null,"z":true}]},"text":"refund"}');
    expect(JSON.parse(sealedDataJson(event!)!)).toEqual(event!.data);
    const [readBack] = await log.read("wk-json");
    expect(readBack).toEqual(event);
    expect(sealedDataJson(readBack!)).toBeUndefined();
    expect(sealedDataJson({ ...event! })).toBeUndefined();
    const [sealed] = sealEvents(null, [{ threadId: "wk-json", type: "run.started", data: { b: 1, a: 2 } }]);
    expect(sealedDataJson(sealed!)).toBe('{"a":2,"b":1}');
  });
});
