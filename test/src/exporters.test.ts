import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { AIMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { Command, END, MemorySaver, MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { BasicTracerProvider, BatchSpanProcessor, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterAll, describe, expect, it } from "vitest";
import {
  createBatchExporter,
  createJsonlExporter,
  createTraceExport,
  defineRedaction,
  EartConfigError,
  exportThread,
  MemoryAuditLog,
  pendingApproval,
  STANDARD_REDACTIONS,
  toolCallDigest,
  type AuditEvent,
  type AuditExporter,
  type AuditLog,
} from "eart";
import { sealEvents } from "../../src/audit/log.js";
import { type SendContext } from "../../src/export/core.js";
import { deterministicUuid7, redactEvent } from "../../src/export/segments.js";
import { createLangSmithExporter, langSmithRootRunId } from "eart/langsmith";
import { createOtelExporter, EartAttributes } from "eart/otel";
import { createTraceExportNode } from "eart/nodes";
import { scriptedModel } from "eart/testing";
import { langSmithRuns, redactedThreadLabel, refusedPort } from "../support/capture-server.js";
import { cleanups, server, track } from "../support/cleanups.js";
import { ask, config, refundSetup } from "../support/refund.js";

const dir = mkdtempSync(join(tmpdir(), "eart-export-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));


const CARD = "4111 1111 1111 1111";
const CARD_DIGITS = "4111111111111111";

function events(threadId: string, n: number, first = 0): AuditEvent[] {
  return sealEvents(null, Array.from({ length: first + n }, (_, i) => ({ threadId, type: "tool.retrying" as const, data: { i } }))).slice(first);
}

/** A send that waits until released; records every batch and the signal it got. */
function gatedSend() {
  const batches: AuditEvent[][] = [];
  const signals: AbortSignal[] = [];
  let release: () => void = () => {};
  let gate = new Promise<void>((r) => (release = r));
  return {
    batches,
    signals,
    open: () => release(),
    close: () => (gate = new Promise<void>((r) => (release = r))),
    send: async (batch: AuditEvent[], { signal }: SendContext) => {
      batches.push(batch);
      signals.push(signal);
      await gate;
    },
  };
}

const roots = (runs: Map<string, Record<string, any>>) => [...runs.values()].filter((r) => r.parent_run_id === undefined).sort((a, b) => a.start_time.localeCompare(b.start_time) || a.dotted_order.localeCompare(b.dotted_order));

/** The refund conversation: look up, refund $740 (with a card number in its reason), answer echoing the card. */
function refundModel() {
  return scriptedModel((messages: BaseMessage[]) => {
    const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
    if (turn === 0) return new AIMessage({ content: "", tool_calls: [{ id: "c1", name: "lookup_order", args: { orderId: "1042" } }] });
    if (turn === 1) {
      return new AIMessage({ content: "", tool_calls: [{ id: "c2", name: "issue_refund", args: { orderId: "1042", amount: 740, reason: `charged twice on card ${CARD}` } }] });
    }
    const last = messages.at(-1);
    return new AIMessage(`Refunded $740 to card ${CARD}: ${last && ToolMessage.isInstance(last) ? String(last.content) : "?"}`);
  });
}

describe("exporter factories validate their options", () => {
  it("names the bad field in an EartConfigError", () => {
    const bad: [() => unknown, string][] = [
      [() => createBatchExporter({ name: "x", send: async () => {}, maxQueueSize: 0 }), "maxQueueSize"],
      [() => createBatchExporter({ name: "x", send: "nope" as never }), "send"],
      [() => createJsonlExporter({}), "path"],
      [() => createJsonlExporter({ path: join(dir, "a"), stream: new PassThrough() }), "path"],
      [() => createLangSmithExporter({ apiUrl: "not a url" }), "apiUrl"],
      [() => createLangSmithExporter({ requestTimeoutMs: -1 }), "requestTimeoutMs"],
      [() => createOtelExporter({ tracer: {} as never }), "tracer"],
      [() => createOtelExporter({ unknown: 1 } as never), "options"],
      [() => createTraceExport({ auditLog: {} as never, exporters: [] }), "auditLog"],
      [() => createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [{}] as never }), "exporters"],
      [() => createTraceExportNode({ auditLog: new MemoryAuditLog(), exporters: [] }), "exporters"],
    ];
    for (const [make, field] of bad) {
      let caught: unknown;
      try {
        make();
      } catch (e) {
        caught = e;
      }
      expect(caught, field).toBeInstanceOf(EartConfigError);
      expect((caught as EartConfigError).field, field).toBe(field);
    }
  });
});

describe("the export queue", () => {
  it("drops a whole offer that does not fit and counts it; keeps what was accepted", async () => {
    const gated = gatedSend();
    const x = track(createBatchExporter({ name: "q", send: gated.send, maxQueueSize: 5, maxBatchSize: 100, flushIntervalMs: 60_000 }));
    expect(x.offer(events("t", 3))).toBe(true);
    expect(x.offer(events("t", 3, 3))).toBe(false);
    expect(x.offer(events("t", 2, 6))).toBe(true);
    expect(x.stats()).toMatchObject({ queued: 5, dropped: 3, exported: 0 });
    gated.open();
    expect(await x.flush({ timeoutMs: 5_000 })).toBe(true);
    expect(gated.batches.flat().map((e) => e.seq)).toEqual([0, 1, 2, 6, 7]);
    expect(x.stats()).toMatchObject({ queued: 0, inFlight: 0, exported: 5, dropped: 3, failed: 0 });
  });

  it("sends in the background in batches, in order, without anyone calling flush", async () => {
    const sent: number[][] = [];
    const x = track(createBatchExporter({ name: "q", send: async (b) => void sent.push(b.map((e) => e.seq)), maxBatchSize: 2, flushIntervalMs: 10 }));
    x.offer(events("t", 5));
    const until = Date.now() + 5_000;
    while (x.stats().exported < 5 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    expect(sent).toEqual([[0, 1], [2, 3], [4]]);
    expect(x.stats()).toMatchObject({ exported: 5, failed: 0, dropped: 0 });
  });

  it("counts a failed send as failed, keeps the error, and goes on with the next batch", async () => {
    let calls = 0;
    const x = track(
      createBatchExporter({
        name: "q",
        maxBatchSize: 2,
        flushIntervalMs: 60_000,
        send: async () => {
          calls += 1;
          if (calls === 1) throw new Error("collector said 503");
        },
      }),
    );
    x.offer(events("t", 4));
    expect(await x.flush({ timeoutMs: 5_000 })).toBe(true);
    expect(x.stats()).toMatchObject({ exported: 2, failed: 2, lastError: "Error: collector said 503" });
  });

  it("aborts a send that outlives exportTimeoutMs, counts it failed, and moves on to the next batch", async () => {
    const signals: AbortSignal[] = [];
    const x = track(
      createBatchExporter({
        name: "q",
        maxBatchSize: 1,
        flushIntervalMs: 60_000,
        exportTimeoutMs: 50,
        send: (_b, { signal }) => {
          signals.push(signal);
          // The first send hangs until its signal aborts it; the second succeeds.
          return signals.length === 1 ? new Promise<void>((_, fail) => signal.addEventListener("abort", () => fail(signal.reason))) : Promise.resolve();
        },
      }),
    );
    x.offer(events("t", 2));
    expect(await x.flush({ timeoutMs: 5_000 })).toBe(true);
    expect(signals).toHaveLength(2);
    expect(signals[0]!.aborted).toBe(true);
    expect(x.stats()).toMatchObject({ exported: 1, failed: 1 });
    expect(x.stats().lastError).toMatch(/did not finish within 50 ms/);
  });

  it("never overlaps sends: one that ignores its signal holds the next back, which then fails at its own deadline", async () => {
    let running = 0;
    let overlapped = false;
    let calls = 0;
    const x = track(
      createBatchExporter({
        name: "q",
        maxBatchSize: 1,
        flushIntervalMs: 60_000,
        exportTimeoutMs: 50,
        send: () => {
          calls += 1;
          running += 1;
          if (running > 1) overlapped = true;
          return new Promise<void>(() => {});
        },
      }),
    );
    x.offer(events("t", 2));
    expect(await x.flush({ timeoutMs: 5_000 })).toBe(true);
    expect(x.stats()).toMatchObject({ exported: 0, failed: 2 });
    expect(calls).toBe(1);
    expect(overlapped).toBe(false);
  });

  it("shutdown returns by its deadline against a send that never ends, counts what it abandons, and refuses later offers", async () => {
    const x = createBatchExporter({ name: "q", maxBatchSize: 2, flushIntervalMs: 0, exportTimeoutMs: 600_000, send: () => new Promise<void>(() => {}) });
    x.offer(events("t", 5));
    await new Promise((r) => setTimeout(r, 20));
    expect(x.stats()).toMatchObject({ inFlight: 2, queued: 3 });
    const start = Date.now();
    expect(await x.shutdown({ timeoutMs: 300 })).toBe(false);
    expect(Date.now() - start).toBeLessThan(5_000);
    expect(x.stats()).toMatchObject({ queued: 0, inFlight: 0, exported: 0, failed: 2, dropped: 3 });
    expect(x.offer(events("t", 1, 5))).toBe(false);
    expect(x.stats().dropped).toBe(4);
    // A second shutdown is the same one.
    expect(await x.shutdown()).toBe(false);
  });

  it("flush is bounded too, and reports false when it could not drain", async () => {
    const x = track(createBatchExporter({ name: "q", flushIntervalMs: 60_000, exportTimeoutMs: 600_000, send: () => new Promise<void>(() => {}) }));
    x.offer(events("t", 1));
    const start = Date.now();
    expect(await x.flush({ timeoutMs: 100 })).toBe(false);
    expect(Date.now() - start).toBeLessThan(5_000);
  });
});

describe("redactEvent", () => {
  it("redacts exactly what the redaction redacts, including the cases its quick screen must not miss", () => {
    const anchored = defineRedaction([...STANDARD_REDACTIONS, { id: "ticket", pattern: /^TKT-\d{4}$/ }, { id: "salary", fields: ["salary"] }]);
    const values: Record<string, unknown>[] = [
      { text: "nothing here", n: 4111111111111111, id: "7d4f1c2e-9b3a-4c5d-8e6f-0a1b2c3d4e5f" },
      { text: `card ${CARD}` },
      { text: `line one\n${CARD}` },
      { result: JSON.stringify({ note: `charged\n${CARD}` }) },
      { result: JSON.stringify({ inner: JSON.stringify({ card: "x" }) }) },
      { result: `  ${JSON.stringify([{ pan: 1 }])}` },
      { result: JSON.stringify({ note: "\u0034111 1111 1111 1111" }).replace("4111", "\\u0034111") },
      { iban: null, card: undefined, list: ["GB82 WEST 1234 5698 7654 32", "ok"] },
      { nested: { deeper: [{ ssn: "078-05-1120" }] } },
      { a: "x", b: "TKT-1234" },
      { a: "TKT-1234 and more" },
      { pay: { salary: 90_000 } },
      { digits: "4111 1111 1111 1112" },
    ];
    for (const data of values) {
      const [event] = sealEvents(null, [{ threadId: "t", type: "tool.succeeded", data }]);
      for (const redaction of [anchored, { rules: undefined, apply: anchored.apply } as never]) {
        expect(redactEvent(event!, redaction).data, JSON.stringify(data)).toEqual(anchored.apply(event!.data, undefined).value);
      }
    }
    const [withCardThread] = sealEvents(null, [{ threadId: `card-${CARD_DIGITS}`, type: "run.started" }]);
    expect(redactEvent(withCardThread!, anchored)).toMatchObject({ threadId: expect.stringMatching(redactedThreadLabel("card-[REDACTED:card_number]")), redacted: [{ path: "threadId", ruleId: "card_number" }] });
  });
});

describe("createTraceExport", () => {
  it("stores first, then offers the stored events to every exporter without waiting for them", async () => {
    const inner = new MemoryAuditLog();
    const gated = gatedSend();
    const offered: AuditEvent[][] = [];
    const spy: AuditExporter = { ...createBatchExporter({ name: "spy", send: async () => {} }), offer: (e) => (offered.push([...e]), true) };
    const blocked = createBatchExporter({ name: "blocked", send: gated.send, flushIntervalMs: 0 });
    const traceExport = track(createTraceExport({ auditLog: inner, exporters: [spy, blocked] }));
    const stored = await traceExport.append([
      { threadId: "t1", type: "run.started", data: { agentId: "a", userId: "u", request: null } },
      { threadId: "t1", type: "run.completed", data: { outcome: "answered" } },
    ]);
    // The blocked exporter's send has started and not finished: append did not wait for it.
    await new Promise((r) => setTimeout(r, 20));
    expect(gated.batches).toHaveLength(1);
    expect(blocked.stats().inFlight).toBe(2);
    expect(offered).toEqual([stored]);
    expect(await inner.read("t1")).toEqual(stored);
    expect(await traceExport.read("t1")).toEqual(stored);
    expect(await traceExport.verify("t1")).toMatchObject({ ok: true, count: 2 });
    expect(await traceExport.listThreads()).toEqual(["t1"]);
    expect(Object.keys(traceExport.stats())).toEqual(["spy", "blocked"]);
    gated.open();
  });

  it("forwards the inner log's other methods (verify options, signed heads, close)", async () => {
    const calls: unknown[][] = [];
    const memory = new MemoryAuditLog();
    class Inner {
      append = (events: Parameters<AuditLog["append"]>[0]) => memory.append(events);
      read = (threadId: string) => memory.read(threadId);
      listThreads = () => memory.listThreads();
      async verify(threadId: string, options?: unknown) {
        calls.push(["verify", threadId, options]);
        return memory.verify(threadId);
      }
      async signedHead(threadId: string) {
        calls.push(["signedHead", threadId]);
        return undefined;
      }
      async close() {
        calls.push(["close"]);
      }
    }
    const traceExport = createTraceExport({ auditLog: new Inner(), exporters: [] }) as ReturnType<typeof createTraceExport> & { signedHead(t: string): Promise<unknown>; close(): Promise<void> };
    await traceExport.verify("t", { knownHead: { seq: 0, hash: "h" } } as never);
    await traceExport.signedHead("t");
    await traceExport.close();
    expect(calls).toEqual([["verify", "t", { knownHead: { seq: 0, hash: "h" } }], ["signedHead", "t"], ["close"]]);
  });

  it("exports nothing when the inner append fails, and survives an exporter that throws", async () => {
    const offered: AuditEvent[][] = [];
    const spy: AuditExporter = { ...createBatchExporter({ name: "spy", send: async () => {} }), offer: (e) => (offered.push([...e]), true) };
    const thrower: AuditExporter = {
      ...createBatchExporter({ name: "thrower", send: async () => {} }),
      offer: () => {
        throw new Error("boom");
      },
    };
    const memory = new MemoryAuditLog();
    const failing: AuditLog = {
      append: async () => {
        throw new Error("disk full");
      },
      read: (t) => memory.read(t),
      verify: (t) => memory.verify(t),
      listThreads: () => memory.listThreads(),
    };
    await expect(createTraceExport({ auditLog: failing, exporters: [spy] }).append({ threadId: "t", type: "run.started" })).rejects.toThrow("disk full");
    expect(offered).toEqual([]);
    const ok = createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [thrower, spy] });
    expect(await ok.append({ threadId: "t", type: "run.started" })).toHaveLength(1);
    expect(offered).toHaveLength(1);
  });
});

describe("JSONL exporter", () => {
  it("appends one redacted line per event, keeping the envelope and listing what was redacted", async () => {
    const path = join(dir, "audit.jsonl");
    const inner = new MemoryAuditLog();
    const jsonl = createJsonlExporter({ path, flushIntervalMs: 60_000 });
    const traceExport = createTraceExport({ auditLog: inner, exporters: [jsonl] });
    await traceExport.append({ threadId: "t1", type: "run.started", data: { request: { text: `my card is ${CARD}` }, payment: { card: "5500000000000004" } } });
    await traceExport.append({ threadId: "t1", type: "run.completed", data: { outcome: "answered" } });
    expect(await traceExport.shutdown({ timeoutMs: 5_000 })).toBe(true);
    const text = readFileSync(path, "utf8");
    expect(text).not.toContain(CARD);
    expect(text).not.toContain("5500000000000004");
    const lines = text.trimEnd().split("\n").map((l) => JSON.parse(l));
    const stored = await inner.read("t1");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toEqual({
      ...stored[0],
      data: { request: { text: "my card is [REDACTED:card_number]" }, payment: { card: "[REDACTED:card_number]" } },
      redacted: expect.arrayContaining([
        { path: "data.request.text", ruleId: "card_number" },
        { path: "data.payment.card", ruleId: "card_number" },
      ]),
      // Each line carries the global head its append reached: a witness outside the store.
      globalHead: { gseq: 0, hash: (await inner.globalLog()).entries[0]!.hash },
    });
    expect(lines[0].redacted).toHaveLength(2);
    expect(lines[1]).toEqual({ ...stored[1], redacted: [], globalHead: (await inner.globalHead()).head });
    // The stored chain is untouched by the export.
    expect(stored[0]!.data).toEqual({ request: { text: `my card is ${CARD}` }, payment: { card: "5500000000000004" } });
  });

  it("writes to a stream, and redaction: false writes events as stored", async () => {
    const stream = new PassThrough();
    const chunks: string[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c.toString()));
    const jsonl = createJsonlExporter({ stream, redaction: false, flushIntervalMs: 60_000 });
    const [event] = sealEvents(null, [{ threadId: "t", type: "run.started", data: { text: CARD } }]);
    jsonl.offer([event!]);
    expect(await jsonl.shutdown()).toBe(true);
    expect(JSON.parse(chunks.join(""))).toEqual({ ...event, redacted: [] });
  });
});

describe("createTraceExportNode", () => {
  it("exports the thread's new events each time it runs, and needs a thread id", async () => {
    const auditLog = new MemoryAuditLog();
    const stream = new PassThrough();
    const lines: string[] = [];
    stream.on("data", (c: Buffer) => lines.push(...c.toString().trimEnd().split("\n")));
    const jsonl = track(createJsonlExporter({ stream, flushIntervalMs: 60_000 }));
    const node = createTraceExportNode({ auditLog, exporters: [jsonl], waitMs: 5_000 });
    await auditLog.append([{ threadId: "n1", type: "run.started" }, { threadId: "n1", type: "model.output", data: { text: "hi" } }]);
    expect(await node({}, { configurable: { thread_id: "n1" } })).toEqual({});
    await auditLog.append({ threadId: "n1", type: "run.completed" });
    await node({}, { configurable: { thread_id: "n1" } });
    expect(lines.map((l) => JSON.parse(l).seq)).toEqual([0, 1, 2]);
    await expect(node({}, {})).rejects.toBeInstanceOf(EartConfigError);
  });

  it("runs as the last step of a compiled graph and exports what the run recorded", async () => {
    const auditLog = new MemoryAuditLog();
    const stream = new PassThrough();
    const lines: string[] = [];
    stream.on("data", (c: Buffer) => lines.push(...c.toString().trimEnd().split("\n")));
    const jsonl = track(createJsonlExporter({ stream, flushIntervalMs: 60_000 }));
    const graph = new StateGraph(MessagesAnnotation)
      .addNode("work", async (_state, config) => {
        await auditLog.append({ threadId: String(config.configurable?.thread_id), type: "model.output", data: { text: `card ${CARD}` } });
        return { messages: [new AIMessage("done")] };
      })
      .addNode("export", createTraceExportNode({ auditLog, exporters: [jsonl], waitMs: 5_000 }))
      .addEdge(START, "work")
      .addEdge("work", "export")
      .addEdge("export", END)
      .compile({ checkpointer: new MemorySaver() });
    for (let i = 0; i < 2; i++) await graph.invoke({ messages: [] }, { configurable: { thread_id: "g1" } });
    expect(lines.map((l) => JSON.parse(l) as AuditEvent).map((e) => [e.seq, e.data.text])).toEqual([
      [0, "card [REDACTED:card_number]"],
      [1, "card [REDACTED:card_number]"],
    ]);
  });
});

describe("LangSmith exporter", () => {
  it("sends a refund thread as runs to LANGSMITH_ENDPOINT, with the governance facts as metadata and tags", async () => {
    const capture = await server();
    const previous = process.env.LANGSMITH_ENDPOINT;
    process.env.LANGSMITH_ENDPOINT = capture.url;
    let langsmith: AuditExporter;
    try {
      langsmith = createLangSmithExporter({ apiKey: "test-key", projectName: "eart-tests", flushIntervalMs: 10 });
    } finally {
      if (previous === undefined) delete process.env.LANGSMITH_ENDPOINT;
      else process.env.LANGSMITH_ENDPOINT = previous;
    }
    const traceExport = track(createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [langsmith] }));
    const setup = refundSetup([], { auditLog: traceExport, agent: { model: refundModel(), redaction: false } }); // the exporters' own redaction is under test
    await setup.agent.invoke(ask("Refund order 1042 please"), config("ls-1"));
    expect(await traceExport.flush({ timeoutMs: 10_000 })).toBe(true);
    expect(capture.requests.every((r) => r.method === "POST" && r.path === "/runs/batch" && r.headers["x-api-key"] === "test-key")).toBe(true);
    const runs = langSmithRuns(capture.requests);
    const [root] = roots(runs);
    // One vocabulary: every eart.* key LangSmith carries is one the OpenTelemetry spans use too.
    const vocabulary = new Set<string>(Object.values(EartAttributes));
    const keys = [...runs.values()].flatMap((r) => Object.keys((r as { extra?: { metadata?: Record<string, unknown> } }).extra?.metadata ?? {}));
    expect(keys.filter((k) => k.startsWith("eart.")).length).toBeGreaterThan(10);
    expect(keys.filter((k) => k.startsWith("eart.") && !vocabulary.has(k))).toEqual([]);
    expect(root).toMatchObject({
      name: "support-agent",
      run_type: "chain",
      session_name: "eart-tests",
      inputs: { input: "Refund order 1042 please" },
      outputs: { outcome: "paused", waitingFor: "approval" },
    });
    expect(root!.extra.metadata).toMatchObject({
      thread_id: "ls-1",
      "eart.agent.id": "support-agent",
      "eart.user.id": "cara",
      "eart.run.outcome": "paused",
      "eart.policy.decision": ["allow", "require_approval"],
      "eart.policy.ids": ["orders.lookup", "refund.supervisor"],
      "eart.policy.version": expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect(root!.tags).toEqual(expect.arrayContaining(["eart", "agent:support-agent", "user:cara", "decision:require_approval", "policy:refund.supervisor", "paused"]));
    const children = [...runs.values()].filter((r) => r.parent_run_id === root!.id);
    expect(children.every((c) => c.trace_id === root!.id && c.dotted_order.startsWith(`${root!.dotted_order}.`))).toBe(true);
    expect(children.map((c) => c.name)).toEqual(
      expect.arrayContaining(["identity.bound", "chat", "policy lookup_order", "lookup_order", "policy issue_refund", "approval.requested"]),
    );
    const lookupRun = children.find((c) => c.name === "lookup_order")!;
    expect(lookupRun).toMatchObject({ run_type: "tool", inputs: { toolCallId: "c1", args: { orderId: "1042" } } });
    expect(lookupRun.end_time).toBeDefined();
    expect(JSON.parse(lookupRun.outputs.result)).toMatchObject({ orderId: "1042", total: 740 });
    expect(children.find((c) => c.name === "policy issue_refund")!.extra.metadata).toMatchObject({
      "eart.policy.decision": "require_approval",
      "eart.tool.digest": toolCallDigest("issue_refund", { orderId: "1042", amount: 740, reason: `charged twice on card ${CARD}` }, "ls-1"),
    });
  });

  it("links a resume exported by another process to the paused run, reading the agent and user from the audit log", async () => {
    const capture = await server();
    const inner = new MemoryAuditLog();
    const first = createLangSmithExporter({ apiUrl: capture.url, apiKey: "k", flushIntervalMs: 10 });
    const setup = refundSetup([], { auditLog: createTraceExport({ auditLog: inner, exporters: [first] }), agent: { model: refundModel() } });
    const paused = await setup.agent.invoke(ask(), config("ls-2"));
    expect(await first.shutdown({ timeoutMs: 5_000 })).toBe(true);
    const pausedAt = (await inner.read("ls-2")).length;
    // "Another process": a new exporter, which sees only the resume's events.
    await setup.agent.invoke(
      new Command({ resume: { decisions: [{ toolCallId: "c2", type: "approve", digest: pendingApproval(paused)!.requests[0]!.digest }] } }),
      config("ls-2", "sam"),
    );
    expect(pendingApproval(paused)).toBeDefined();
    const second = track(createLangSmithExporter({ apiUrl: capture.url, apiKey: "k", flushIntervalMs: 10 }));
    await exportThread(inner, "ls-2", [second], pausedAt - 1);
    expect(await second.flush({ timeoutMs: 5_000 })).toBe(true);
    const [pausedRoot, resumedRoot] = roots(langSmithRuns(capture.requests));
    const stored = await inner.read("ls-2");
    expect(pausedRoot!.id).toBe(langSmithRootRunId("ls-2", { key: stored[0]!.id, startedAt: stored[0]!.at }));
    expect(resumedRoot!.extra.metadata).toMatchObject({
      thread_id: "ls-2",
      "eart.segment.kind": "resume",
      "eart.resumed_from.run_id": pausedRoot!.id,
      "eart.resumed_from.hash": stored[pausedAt - 1]!.hash,
      "eart.agent.id": "support-agent",
      "eart.user.id": "cara",
      "eart.approval.approver": "sam",
      "eart.run.outcome": "completed",
    });
    expect(pausedRoot!.extra.metadata["eart.audit.head"]).toBe(stored[pausedAt - 1]!.hash);
  });

  it("creates a run that is still going when its batch is sent, and updates it when it ends", async () => {
    const capture = await server();
    const langsmith = track(createLangSmithExporter({ apiUrl: capture.url, apiKey: "k", flushIntervalMs: 60_000 }));
    const events = sealEvents(null, [
      { threadId: "ls-4", type: "run.started", data: { agentId: "a", userId: "u", request: { text: "hi" } } },
      { threadId: "ls-4", type: "tool.started", data: { toolCallId: "x", name: "slow" } },
      { threadId: "ls-4", type: "tool.succeeded", data: { toolCallId: "x", name: "slow", result: "done" } },
      { threadId: "ls-4", type: "model.output", data: { text: "bye", toolCalls: [] } },
      { threadId: "ls-4", type: "run.completed", data: { outcome: "answered" } },
    ]);
    langsmith.offer(events.slice(0, 2));
    expect(await langsmith.flush({ timeoutMs: 5_000 })).toBe(true);
    langsmith.offer(events.slice(2));
    expect(await langsmith.flush({ timeoutMs: 5_000 })).toBe(true);
    const [first, second] = capture.requests.map((r) => r.json as { post: Record<string, any>[]; patch: Record<string, any>[] });
    const root = first!.post.find((r) => r.parent_run_id === undefined)!;
    expect(root).toMatchObject({ name: "a", extra: { metadata: { "eart.run.outcome": "running", "eart.agent.id": "a" } } });
    expect(root.end_time).toBeUndefined();
    expect(first!.post.find((r) => r.name === "slow")!.end_time).toBeUndefined();
    expect(second!.patch.map((p) => p.id).sort()).toEqual([root.id, first!.post.find((r) => r.name === "slow")!.id].sort());
    expect(second!.patch.find((p) => p.id === root.id)).toMatchObject({ end_time: events[4]!.at, outputs: { outcome: "completed", output: "bye" }, extra: { metadata: { "eart.run.outcome": "completed" } } });
    expect(second!.patch.find((p) => p.id !== root.id)).toMatchObject({ end_time: events[2]!.at, outputs: { result: "done" }, dotted_order: expect.stringMatching(new RegExp(`^${root.dotted_order}\\.`)) });
  });

  it("sends the same run ids when the same events are exported again", async () => {
    const capture = await server();
    const inner = new MemoryAuditLog();
    await inner.append([
      { threadId: "ls-3", type: "run.started", data: { agentId: "a", userId: "u", request: { text: "hi" } } },
      { threadId: "ls-3", type: "model.output", data: { text: "hello", toolCalls: [] } },
      { threadId: "ls-3", type: "run.completed", data: { outcome: "answered" } },
    ]);
    const ids: string[][] = [];
    for (let i = 0; i < 2; i++) {
      const before = capture.requests.length;
      const x = createLangSmithExporter({ apiUrl: capture.url, apiKey: "k" });
      await exportThread(inner, "ls-3", [x]);
      expect(await x.shutdown({ timeoutMs: 5_000 })).toBe(true);
      ids.push([...langSmithRuns(capture.requests.slice(before)).keys()].sort());
    }
    expect(ids[0]).toHaveLength(2);
    expect(ids[1]).toEqual(ids[0]);
    expect(ids[0]!.every((id) => /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id))).toBe(true);
    const eventId = "7d4f1c2e-9b3a-4c5d-8e6f-0a1b2c3d4e5f";
    expect(deterministicUuid7(1_700_000_000_000, "k", eventId)).toBe(deterministicUuid7(1_700_000_000_000, "k", eventId));
    expect(deterministicUuid7(1_700_000_000_000, "k", eventId)).not.toBe(deterministicUuid7(1_700_000_000_000, "other", eventId));
    expect(deterministicUuid7(1_700_000_000_000, "k", "1", "t1")).not.toBe(deterministicUuid7(1_700_000_000_000, "k", "1", "t2"));
    expect(deterministicUuid7(1_700_000_000_000, "k", eventId).startsWith("018bcfe5-6800-7")).toBe(true);
  });

  for (const [dead, thread] of [["hang", "worker"], ["refused", "worker"], ["hang", "main"], ["refused", "main"]] as const) {
    it(`a ${dead === "hang" ? "endpoint that accepts connections and never answers" : "endpoint that refuses connections"} neither holds the graph nor shutdown beyond its bound (thread: ${thread})`, async () => {
      const hanging = dead === "hang" ? await server("hang") : undefined;
      const apiUrl = hanging?.url ?? `http://127.0.0.1:${await refusedPort()}`;
      const langsmith = createLangSmithExporter({ apiUrl, apiKey: "k", flushIntervalMs: 0, requestTimeoutMs: 60_000, exportTimeoutMs: 60_000, thread });
      const traceExport = createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [langsmith] });
      const setup = refundSetup([], { auditLog: traceExport, agent: { model: refundModel() } });
      const paused = await setup.agent.invoke(ask(), config(`ls-${dead}`));
      await setup.agent.invoke(
        new Command({ resume: { decisions: [{ toolCallId: "c2", type: "approve", digest: pendingApproval(paused)!.requests[0]!.digest }] } }),
        config(`ls-${dead}`, "sam"),
      );
      expect(pendingApproval(paused)).toBeDefined();
      expect(setup.refunds()).toHaveLength(1);
      if (hanging) {
        // The graph finished while LangSmith's request was still unanswered.
        await hanging.waitFor(() => hanging.received() > 0);
        // On the worker, stats travel back within ~100 ms.
        await hanging.waitFor(() => langsmith.stats().inFlight > 0);
        expect(langsmith.stats().inFlight).toBeGreaterThan(0);
      }
      const start = Date.now();
      // Refused connections fail (drained: true: every send has failed, none is left to wait for);
      // a hanging request is abandoned at the bound (false). The worker runs at the lowest
      // priority: on a busy machine its report of a refused send may take more than a second, so
      // that case gets a bound it is not meant to reach.
      const bound = dead === "refused" ? 10_000 : 1_000;
      expect(await traceExport.shutdown({ timeoutMs: bound })).toBe(dead === "refused");
      expect(Date.now() - start).toBeLessThan(bound + 4_000);
      const stats = langsmith.stats();
      expect(stats.exported).toBe(0);
      expect(stats.failed + stats.dropped).toBe((await traceExport.read(`ls-${dead}`)).length);
      // A hanging send on the worker is aborted there; when the worker (at the lowest priority, on
      // a busy machine) reports it only after the deadline, the events count as dropped instead,
      // as documented. Anywhere else the send has failed by then.
      if (dead === "refused" || thread === "main") expect(stats.failed).toBeGreaterThan(0);
      if (stats.failed > 0) expect(stats.lastError).toMatch(dead === "hang" ? /shut ?down|deadline/i : /fetch failed|ECONNREFUSED|connect/i);
      // Nothing is left behind: shutdown aborted the request the endpoint never answered.
      if (hanging) await hanging.waitFor(() => hanging.pending() === 0, 5_000);
    });
  }

  it("tries a failing endpoint once per batch: the LangSmith client's own retries are off", async () => {
    const failing = await server(503);
    const langsmith = createLangSmithExporter({ apiUrl: failing.url, apiKey: "k", flushIntervalMs: 60_000 });
    langsmith.offer(sealEvents(null, [{ threadId: "ls-503", type: "run.started", data: { agentId: "a", userId: "u" } }]));
    expect(await langsmith.flush({ timeoutMs: 10_000 })).toBe(true);
    expect(langsmith.stats()).toMatchObject({ exported: 0, failed: 1 });
    expect(langsmith.stats().lastError).toMatch(/503/);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(failing.received()).toBe(1);
    await langsmith.shutdown();
  });
});

describe("OpenTelemetry exporter", () => {
  function inMemory() {
    const memory = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(memory)] });
    cleanups.push(() => provider.shutdown());
    return { memory, provider };
  }

  it("emits invoke_agent, chat and execute_tool spans with gen_ai and eart attributes", async () => {
    const { memory, provider } = inMemory();
    const otel = createOtelExporter({ tracerProvider: provider, flushIntervalMs: 10 });
    const traceExport = track(createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [otel] }));
    const setup = refundSetup([], { auditLog: traceExport, agent: { model: refundModel() } });
    await setup.agent.invoke(ask(), config("ot-1"));
    expect(await traceExport.flush({ timeoutMs: 5_000 })).toBe(true);
    const spans = memory.getFinishedSpans();
    expect(spans.map((s) => s.name).sort()).toEqual(["chat", "chat", "execute_tool lookup_order", "invoke_agent support-agent"]);
    const root = spans.find((s) => s.name.startsWith("invoke_agent"))!;
    expect(root.attributes).toMatchObject({
      "gen_ai.operation.name": "invoke_agent",
      "gen_ai.agent.name": "support-agent",
      "gen_ai.conversation.id": "ot-1",
      "eart.thread.id": "ot-1",
      "eart.user.id": "cara",
      "eart.run.outcome": "paused",
      "eart.waiting_for": "approval",
      "eart.policy.decision": ["allow", "require_approval"],
      "eart.policy.ids": ["orders.lookup", "refund.supervisor"],
      "eart.policy.version": expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect(root.events.map((e) => e.name)).toEqual(["eart.identity.bound", "eart.policy.decided", "eart.policy.decided", "eart.approval.requested"]);
    expect(root.events[2]!.attributes).toMatchObject({ "eart.policy.decision": "require_approval", "gen_ai.tool.name": "issue_refund", "eart.policy.ids": ["refund.supervisor"] });
    const tool = spans.find((s) => s.name === "execute_tool lookup_order")!;
    expect(tool.attributes).toMatchObject({
      "gen_ai.operation.name": "execute_tool",
      "gen_ai.tool.name": "lookup_order",
      "gen_ai.tool.call.id": "c1",
      "gen_ai.tool.type": "function",
      "eart.policy.decision": "allow",
      "eart.tool.digest": toolCallDigest("lookup_order", { orderId: "1042" }, "ot-1"),
    });
    for (const s of spans.filter((x) => x !== root)) {
      expect(s.spanContext().traceId).toBe(root.spanContext().traceId);
      expect(s.parentSpanContext?.spanId).toBe(root.spanContext().spanId);
    }
    const vocabulary = new Set<string>(Object.values(EartAttributes));
    const keys = spans.flatMap((s) => [...Object.keys(s.attributes), ...s.events.flatMap((e) => Object.keys(e.attributes ?? {}))]);
    expect(keys.filter((k) => k.startsWith("eart.") && !vocabulary.has(k))).toEqual([]);
    // Content is not captured by default.
    expect(JSON.stringify(spans.map((s) => s.attributes))).not.toContain("Refund");
    expect(spans.find((s) => s.name === "chat")!.attributes["gen_ai.output.messages"]).toBeUndefined();
  });

  it("sends the spans over OTLP/HTTP to a collector", async () => {
    const collector = await server();
    const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${collector.url}/v1/traces` }))] });
    cleanups.push(() => provider.shutdown());
    const otel = createOtelExporter({ tracerProvider: provider, flushIntervalMs: 10 });
    const traceExport = track(createTraceExport({ auditLog: new MemoryAuditLog(), exporters: [otel] }));
    const setup = refundSetup([], { auditLog: traceExport, agent: { model: refundModel() } });
    await setup.agent.invoke(ask(), config("ot-2"));
    // flush() also flushes the provider: the collector has the spans when it returns.
    expect(await traceExport.flush({ timeoutMs: 10_000 })).toBe(true);
    const spans = collector.requests
      .filter((r) => r.path === "/v1/traces")
      .flatMap((r) => (r.json as { resourceSpans: { scopeSpans: { scope: { name: string }; spans: { name: string; attributes: { key: string; value: Record<string, unknown> }[] }[] }[] }[] }).resourceSpans)
      .flatMap((rs) => rs.scopeSpans)
      .flatMap((ss) => ss.spans.map((s) => ({ scope: ss.scope.name, name: s.name, attributes: Object.fromEntries(s.attributes.map((a) => [a.key, a.value])) })));
    expect(spans.map((s) => s.name).sort()).toEqual(["chat", "chat", "execute_tool lookup_order", "invoke_agent support-agent"]);
    expect(spans.every((s) => s.scope === "eart")).toBe(true);
    const root = spans.find((s) => s.name === "invoke_agent support-agent")!;
    expect(root.attributes["gen_ai.operation.name"]).toEqual({ stringValue: "invoke_agent" });
    expect(root.attributes["eart.waiting_for"]).toEqual({ stringValue: "approval" });
    expect(root.attributes["eart.policy.decision"]).toEqual({ arrayValue: { values: [{ stringValue: "allow" }, { stringValue: "require_approval" }] } });
    expect(spans.find((s) => s.name === "execute_tool lookup_order")!.attributes["gen_ai.tool.call.id"]).toEqual({ stringValue: "c1" });
  });

  it("captures content only when asked, redacted", async () => {
    const { memory, provider } = inMemory();
    const otel = createOtelExporter({ tracerProvider: provider, captureContent: true });
    const auditLog = new MemoryAuditLog();
    await auditLog.append([
      { threadId: "ot-3", type: "run.started", data: { agentId: "a", userId: "u", request: { text: "x" } } },
      { threadId: "ot-3", type: "model.output", data: { text: `your card ${CARD}`, toolCalls: [] } },
      { threadId: "ot-3", type: "run.completed", data: { outcome: "answered" } },
    ]);
    await exportThread(auditLog, "ot-3", [otel]);
    expect(await otel.shutdown({ timeoutMs: 5_000 })).toBe(true);
    const chat = memory.getFinishedSpans().find((s) => s.name === "chat")!;
    expect(chat.attributes["gen_ai.output.messages"]).toContain("your card [REDACTED:card_number]");
    expect(JSON.stringify(chat.attributes)).not.toContain(CARD);
  });

  it("ends a segment left open at shutdown, marked incomplete", async () => {
    const { memory, provider } = inMemory();
    const otel = createOtelExporter({ tracerProvider: provider });
    otel.offer(sealEvents(null, [{ threadId: "ot-4", type: "run.started", data: { agentId: "a", userId: "u" } }, { threadId: "ot-4", type: "tool.started", data: { toolCallId: "x", name: "slow" } }]));
    expect(await otel.shutdown({ timeoutMs: 5_000 })).toBe(true);
    const spans = memory.getFinishedSpans();
    expect(spans.find((s) => s.name === "invoke_agent a")!.attributes).toMatchObject({ "eart.run.outcome": "open", "error.type": "incomplete" });
    expect(spans.find((s) => s.name === "execute_tool slow")!.attributes["error.type"]).toBe("interrupted");
  });
});

describe("end to end: the governed refund agent through an approval, exported to LangSmith, OpenTelemetry and JSONL", () => {
  it("exports both runs with their governance facts, links the resume to the pause, and never lets the card number out", async () => {
    const capture = await server();
    const { memory, provider } = (() => {
      const m = new InMemorySpanExporter();
      const p = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(m)] });
      cleanups.push(() => p.shutdown());
      return { memory: m, provider: p };
    })();
    const path = join(dir, "e2e.jsonl");
    const inner = new MemoryAuditLog();
    const traceExport = track(
      createTraceExport({
        auditLog: inner,
        exporters: [
          createLangSmithExporter({ apiUrl: capture.url, apiKey: "k", flushIntervalMs: 10 }),
          createOtelExporter({ tracerProvider: provider, captureContent: true, flushIntervalMs: 10 }),
          createJsonlExporter({ path, flushIntervalMs: 10 }),
        ],
      }),
    );
    const setup = refundSetup([], { auditLog: traceExport, agent: { model: refundModel(), redaction: false } }); // the exporters' own redaction is under test
    const threadId = "e2e-1042";
    const paused = await setup.agent.invoke(ask(`Refund order 1042 ($740), it was charged twice on my card ${CARD}`), config(threadId));
    const request = pendingApproval(paused)!;
    expect(request.requests.map((r) => r.name)).toEqual(["issue_refund"]);
    const done = await setup.agent.invoke(
      new Command({ resume: { approver: { id: "sam" }, decisions: [{ toolCallId: "c2", type: "approve", digest: request.requests[0]!.digest }] } }),
      config(threadId, "sam"),
    );
    expect(String(done.messages.at(-1)!.content)).toContain("Refunded $740");
    expect(setup.refunds()).toHaveLength(1);
    expect(await traceExport.shutdown({ timeoutMs: 10_000 })).toBe(true);

    const stored = await inner.read(threadId);
    const pauseEvent = stored.find((e) => e.type === "approval.requested")!;
    // The card number is in the audit log (the request, the refund's reason, the model's answer):
    // the exporters had something to redact.
    expect(JSON.stringify(stored)).toContain(CARD);
    expect(traceExport.stats()).toEqual({
      langsmith: { queued: 0, inFlight: 0, exported: stored.length, dropped: 0, failed: 0 },
      otel: { queued: 0, inFlight: 0, exported: stored.length, dropped: 0, failed: 0 },
      jsonl: { queued: 0, inFlight: 0, exported: stored.length, dropped: 0, failed: 0 },
    });

    // LangSmith: the paused run and the resumed run, linked, with the approver on the resumed one.
    const runs = langSmithRuns(capture.requests);
    const [pausedRoot, resumedRoot, ...more] = roots(runs);
    expect(more).toEqual([]);
    expect(pausedRoot!.extra.metadata).toMatchObject({ thread_id: threadId, "eart.run.outcome": "paused", "eart.waiting_for": "approval", "eart.audit.head": pauseEvent.hash });
    expect(resumedRoot!.extra.metadata).toMatchObject({
      thread_id: threadId,
      "eart.agent.id": "support-agent",
      "eart.user.id": "cara",
      "eart.run.outcome": "completed",
      "eart.approval.approver": "sam",
      "eart.approvals": [{ toolCallId: "c2", approverId: "sam", decision: "approve", digest: request.requests[0]!.digest }],
      "eart.policy.ids": ["refund.supervisor"],
      "eart.policy.version": request.requests[0]!.policyVersion,
      "eart.resumed_from.run_id": pausedRoot!.id,
      "eart.resumed_from.hash": pauseEvent.hash,
    });
    expect(resumedRoot!.tags).toEqual(expect.arrayContaining(["approver:sam", "resumed", "completed"]));
    const refundRun = [...runs.values()].find((r) => r.name === "issue_refund" && r.run_type === "tool")!;
    expect(refundRun.parent_run_id).toBe(resumedRoot!.id);
    expect(refundRun.extra.metadata).toMatchObject({ "eart.approval.approver": "sam", "eart.policy.decision": "require_approval", "eart.tool.digest": request.requests[0]!.digest });
    expect(refundRun.inputs.args.reason).toBe("charged twice on card [REDACTED:card_number]");
    expect([...runs.values()].find((r) => r.name === "approval issue_refund")!.extra.metadata).toMatchObject({ "eart.approval.approver": "sam", "eart.approval.decision": "approve" });

    // OpenTelemetry: two invoke_agent spans, the resumed one linked to the paused one.
    const spans = memory.getFinishedSpans();
    const agents = spans.filter((s) => s.name === "invoke_agent support-agent").sort((a, b) => a.attributes["eart.audit.first_seq"] as number - (b.attributes["eart.audit.first_seq"] as number));
    expect(agents).toHaveLength(2);
    const [pausedSpan, resumedSpan] = agents as [ReadableSpan, ReadableSpan];
    expect(pausedSpan.attributes).toMatchObject({ "eart.run.outcome": "paused", "eart.audit.head": pauseEvent.hash });
    expect(resumedSpan.attributes).toMatchObject({ "eart.run.outcome": "completed", "eart.approval.approver": "sam", "eart.resumed_from.hash": pauseEvent.hash, "eart.segment.kind": "resume" });
    expect(resumedSpan.links).toHaveLength(1);
    expect(resumedSpan.links[0]).toMatchObject({ context: pausedSpan.spanContext(), attributes: { "eart.link.type": "resumed_from" } });
    const refundSpan = spans.find((s) => s.name === "execute_tool issue_refund")!;
    expect(refundSpan.parentSpanContext?.spanId).toBe(resumedSpan.spanContext().spanId);
    expect(refundSpan.attributes).toMatchObject({ "eart.approval.approver": "sam", "eart.policy.decision": "require_approval", "eart.tool.digest": request.requests[0]!.digest });
    expect(String(refundSpan.attributes["gen_ai.tool.call.arguments"])).toContain("[REDACTED:card_number]");

    // JSONL: every event, in order, with the stored hashes.
    const lines = readFileSync(path, "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as AuditEvent);
    expect(lines.map((l) => [l.seq, l.hash])).toEqual(stored.map((e) => [e.seq, e.hash]));

    // Witnesses: each export carries the global head the store reached, out of the store.
    const finalHead = (await inner.globalHead()).head!;
    const witness = `${finalHead.gseq}:${finalHead.hash}`;
    expect(JSON.stringify([...runs.values()].map((r) => r.extra.metadata))).toContain(witness);
    expect(JSON.stringify(spans.map((s) => ({ attributes: s.attributes, events: s.events })))).toContain(witness);
    expect((lines.at(-1) as AuditEvent & { globalHead?: unknown }).globalHead).toEqual(finalHead);

    // Redaction: the card never left, in any form.
    const outbound = [
      capture.requests.map((r) => r.body.toString("utf8")).join("\n"),
      JSON.stringify(spans.map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, links: s.links }))),
      readFileSync(path, "utf8"),
    ];
    for (const text of outbound) {
      expect(text).not.toContain(CARD);
      expect(text).not.toContain(CARD_DIGITS);
      expect(text).toContain("[REDACTED:card_number]");
    }
  });
});
