import { AIMessage } from "@langchain/core/messages";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import Database from "better-sqlite3";
import { describe, expect, it, vi } from "vitest";
import { z } from "zod";
import {
  AuditEventDataSchemas,
  EartError,
  idempotencyKeyOf,
  MemoryAuditLog,
  MemoryEffectLedger,
  pendingRecovery,
  toolCallDigest,
  ToolTimeoutError,
  type AuditEvent,
  type AuditLog,
  type DecisionRecord,
  type EffectLedger,
} from "eart";
import { createGovernedToolNode, executionContextOf } from "eart/nodes";
import { CircuitBreaker } from "../../src/tools/resilience.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { ask, config, refund, refundSetup } from "../support/refund.js";
import { sealDecision } from "../support/sealing.js";

// $60 on order 1043 is allowed without approval: these runs go straight to the tools.
const askSmall = () => ask("Refund order 1043, $60.");
const of = (events: AuditEvent[], type: string) => events.filter((e) => e.type === type);
const noDelay = { initialDelayMs: 1, jitter: false } as const;
const keyOf = (threadId: string) => ({ threadId, toolCallId: "c1", digest: toolCallDigest("issue_refund", { orderId: "1043", amount: 60 }, threadId) });
/** Events a cancelled run's tool node writes after the run has already ended (LangGraph does not wait for it). */
const settled = (auditLog: AuditLog, threadId: string, type = "tool.cancelled") =>
  vi.waitFor(async () => {
    const events = await auditLog.read(threadId);
    expect(of(events, type).length).toBeGreaterThan(0);
    return events;
  });
/** A promise and the function that resolves it. */
function latch() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}
/** Waits until the signal aborts, then rejects with its reason, as a tool honouring its signal does. */
const hang = (signal: AbortSignal | undefined) =>
  new Promise<never>((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason), { once: true }));

/**
 * The refund agent with issue_refund wrapped: `before(n, signal)` runs before the n-th call reaches
 * the real tool (and may throw or wait); a fallback tool that counts its calls; the ledger.
 */
function agentWith(
  threadId: string,
  before: (n: number, signal: AbortSignal | undefined) => Promise<void> | void,
  execution: Record<string, unknown>,
  ledger: EffectLedger = new MemoryEffectLedger(),
) {
  const seen: { attempt: number | undefined; key: string | undefined }[] = [];
  const fallbackCalls: unknown[] = [];
  const fallback = tool(
    async (args) => {
      fallbackCalls.push(args);
      return "queued";
    },
    { name: "queue_refund", schema: z.object({ orderId: z.string(), amount: z.number() }) },
  );
  const setup = refundSetup([[refund("c1", 60, "1043")]], {
    tools: (t) => {
      const real: StructuredToolInterface = t.issueRefund;
      const wrapped = tool(
        async (args: Record<string, unknown>, cfg) => {
          const ctx = executionContextOf(cfg);
          seen.push({ attempt: ctx?.attempt, key: ctx?.idempotencyKey });
          await before(seen.length, (cfg as { signal?: AbortSignal }).signal);
          return real.invoke(args, cfg);
        },
        { name: real.name, description: real.description, schema: real.schema as z.ZodObject<z.ZodRawShape> },
      );
      return [t.lookupOrder, t.viewPaymentDetails, wrapped];
    },
    agent: { ledger, recoveryRoles: ["supervisor"], execution: { issue_refund: { ...execution, fallback: { tool: fallback } } } },
  });
  const key = keyOf(threadId);
  return { ...setup, ledger, seen, fallbackCalls, key };
}

describe("a run cancelled while a tool runs", () => {
  it("is not a tool failure: no retry, fallback, breaker count or recovery; the abort propagates; the next run runs the idempotent call once", async () => {
    const started = latch();
    const s = agentWith("x-1", async (n, signal) => {
      if (n === 1) {
        started.open();
        await hang(signal);
      }
    }, { idempotent: true, retry: { attempts: 3, ...noDelay }, breaker: { failureThreshold: 1, cooldownMs: 60_000 } });
    const controller = new AbortController();
    const run = s.agent.invoke(askSmall(), { ...config("x-1"), signal: controller.signal });
    await started.opened;
    controller.abort();
    const error = await run.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/abort/i);
    expect(error).not.toBeInstanceOf(EartError);

    const events = await settled(s.auditLog, "x-1");
    expect(s.seen).toHaveLength(1);
    expect(s.fallbackCalls).toEqual([]);
    for (const type of ["tool.failed", "tool.retrying", "tool.fallback", "tool.recovery_requested", "tool.circuit_opened"]) expect(of(events, type)).toEqual([]);
    const [cancelled] = of(events, "tool.cancelled");
    expect(cancelled!.data).toMatchObject({ toolCallId: "c1", name: "issue_refund", attempt: 1, try: 1, outcome: "unknown" });
    expect(AuditEventDataSchemas["tool.cancelled"].safeParse(cancelled!.data).success).toBe(true);
    expect(pendingRecovery(await s.agent.getState(config("x-1")))).toBeUndefined();
    expect(await s.ledger.get(s.key)).toMatchObject({ status: "started", attempt: 1 });
    expect(s.refunds()).toEqual([]);

    // Continuing the thread runs the call once more, under the same key. The breaker (threshold 1)
    // counted no failure: an open breaker would have sent the call to the fallback.
    const result = await s.agent.invoke(null, config("x-1"));
    expect(s.seen.map((x) => x.attempt)).toEqual([1, 2]);
    expect(s.seen[1]!.key).toBe(idempotencyKeyOf(s.key));
    expect(s.seen[1]!.key).toBe(s.seen[0]!.key);
    expect(s.fallbackCalls).toEqual([]);
    expect(s.refunds()).toEqual([{ orderId: "1043", amount: 60, toolCallId: "c1" }]);
    expect(await s.ledger.get(s.key)).toMatchObject({ status: "succeeded", attempt: 2 });
    expect(result.messages.at(-1)!.content).toBe("done after 1 turns");
    expect(of(await s.auditLog.read("x-1"), "tool.recovery_requested")).toEqual([]);
  });

  it("leaves a tool that is not idempotent to a human on the next run: it may have acted", async () => {
    const started = latch();
    const s = agentWith("x-2", async (n, signal) => {
      if (n === 1) {
        started.open();
        await hang(signal);
      }
    }, { retry: { attempts: 3, ...noDelay } });
    const controller = new AbortController();
    const run = s.agent.invoke(askSmall(), { ...config("x-2"), signal: controller.signal });
    await started.opened;
    controller.abort(new Error("client cancelled the run"));
    await expect(run).rejects.toThrow();
    const events = await settled(s.auditLog, "x-2");
    expect(of(events, "tool.cancelled")[0]!.data).toMatchObject({ attempt: 1, outcome: "unknown", reason: "client cancelled the run" });
    expect(of(events, "tool.recovery_requested")).toEqual([]);

    await s.agent.invoke(null, config("x-2"));
    expect(s.seen).toHaveLength(1);
    const request = pendingRecovery(await s.agent.getState(config("x-2")));
    expect(request?.requests[0]).toMatchObject({ toolCallId: "c1", reason: "outcome_unknown", attempt: 1, error: "the run was cancelled while the tool was running; it may have acted" });
    expect(await s.ledger.get(s.key)).toMatchObject({ status: "started", attempt: 1 });
  });
});

describe("a run cancelled before the tool started", () => {
  it("leaves the claimed ledger entry to the next run, which runs the call once (streamed run)", async () => {
    const controller = new AbortController();
    const inner = new MemoryEffectLedger();
    // The cancel lands right after the node claimed the call, before it calls the tool.
    const ledger: EffectLedger = {
      begin: async (k, now) => {
        const begun = await inner.begin(k, now);
        controller.abort();
        return begun;
      },
      retry: (k, a, now) => inner.retry(k, a, now),
      finish: (k, o, now) => inner.finish(k, o, now),
      get: (k) => inner.get(k),
      list: (t) => inner.list(t),
      sealKey: () => inner.sealKey(),
    };
    const s = agentWith("y-1", () => undefined, { retry: { attempts: 3, ...noDelay } }, ledger);
    const stream = await s.agent.stream(askSmall(), { ...config("y-1"), signal: controller.signal });
    const error = await (async () => {
      for await (const _ of stream);
    })().catch((e: unknown) => e);
    expect((error as Error).message).toMatch(/abort/i);

    const events = await settled(s.auditLog, "y-1");
    expect(s.seen).toEqual([]);
    expect(of(events, "tool.started")).toEqual([]);
    expect(of(events, "tool.cancelled")[0]!.data).toMatchObject({ attempt: 1, try: 1, outcome: "not_run" });
    expect(await inner.get(s.key)).toMatchObject({ status: "started", attempt: 1 });

    const result = await s.agent.invoke(null, config("y-1"));
    expect(s.seen.map((x) => x.attempt)).toEqual([2]);
    expect(s.refunds()).toHaveLength(1);
    expect(await inner.get(s.key)).toMatchObject({ status: "succeeded", attempt: 2 });
    expect(result.messages.at(-1)!.content).toBe("done after 1 turns");
    const after = await s.auditLog.read("y-1");
    expect(of(after, "tool.recovery_requested")).toEqual([]);
    // The attempt that never called the tool gets no reconstructed start.
    expect(of(after, "tool.started").map((e) => [e.data.attempt, e.data.reconstructed])).toEqual([[2, undefined]]);
  });

  it("ends a retry's backoff at once; the failed try is tried again by the next run, once", async () => {
    const controller = new AbortController();
    const s = agentWith("y-2", (n) => {
      if (n === 1) {
        setTimeout(() => controller.abort(), 20);
        throw new Error("ECONNRESET");
      }
    }, { retry: { attempts: 3, initialDelayMs: 60_000, jitter: false } });
    const startedAt = Date.now();
    await expect(s.agent.invoke(askSmall(), { ...config("y-2"), signal: controller.signal })).rejects.toThrow(/abort/i);
    const events = await settled(s.auditLog, "y-2");
    expect(Date.now() - startedAt).toBeLessThan(10_000);
    expect(of(events, "tool.failed").map((e) => e.data.error)).toEqual(["ECONNRESET"]);
    expect(of(events, "tool.cancelled")[0]!.data).toMatchObject({ attempt: 1, try: 2, outcome: "failed" });
    expect(s.fallbackCalls).toEqual([]);
    expect(of(events, "tool.recovery_requested")).toEqual([]);

    await s.agent.invoke(null, config("y-2"));
    expect(s.seen.map((x) => x.attempt)).toEqual([1, 2]);
    expect(s.refunds()).toHaveLength(1);
    expect(await s.ledger.get(s.key)).toMatchObject({ status: "succeeded", attempt: 2 });
  });
});

describe("eart's own tool timeout is still a failure (the run has a signal that never aborts)", () => {
  it("retries an idempotent tool that timed out", async () => {
    const s = agentWith("z-1", (n, signal) => (n === 1 ? hang(signal) : undefined), { idempotent: true, timeout: 20, retry: { attempts: 2, ...noDelay } });
    const controller = new AbortController();
    await s.agent.invoke(askSmall(), { ...config("z-1"), signal: controller.signal });
    expect(s.seen.map((x) => x.attempt)).toEqual([1, 2]);
    expect(s.refunds()).toHaveLength(1);
    const events = await s.auditLog.read("z-1");
    expect(of(events, "tool.failed")[0]!.data).toMatchObject({ kind: "timeout", error: "Tool issue_refund did not finish within 20 ms" });
    expect(of(events, "tool.retrying")).toHaveLength(1);
    expect(of(events, "tool.cancelled")).toEqual([]);
  });

  it("hands a tool that is not idempotent to a human after its timeout", async () => {
    const reasons: unknown[] = [];
    const s = agentWith("z-2", (_n, signal) => {
      signal?.addEventListener("abort", () => reasons.push(signal.reason), { once: true });
      return hang(signal);
    }, { timeout: 20, retry: { attempts: 3, ...noDelay } });
    const controller = new AbortController();
    await s.agent.invoke(askSmall(), { ...config("z-2"), signal: controller.signal });
    expect(s.seen).toHaveLength(1);
    expect(reasons[0]).toBeInstanceOf(ToolTimeoutError);
    expect(controller.signal.aborted).toBe(false);
    expect(pendingRecovery(await s.agent.getState(config("z-2")))?.requests[0]).toMatchObject({ reason: "timeout", attempt: 1 });
    expect(of(await s.auditLog.read("z-2"), "tool.cancelled")).toEqual([]);
  });
});

describe("the node called directly", () => {
  const args = { orderId: "1042", amount: 50 };
  const digest = toolCallDigest("issue_refund", args, "n1");
  const record: DecisionRecord = sealDecision("n1", {
    schemaVersion: 1,
    toolCallId: "c1",
    messageId: "m1",
    name: "issue_refund",
    args,
    digest,
    verdict: { effect: "allow", reasons: [], policyIds: ["refund.small"], version: "v" },
    status: "allowed",
    approvals: [],
    requestedBy: { agentId: "support-agent", userId: "cara" },
    decidedAt: new Date(0).toISOString(),
  });
  const state = () => ({ messages: [new AIMessage({ id: "m1", content: "", tool_calls: [{ id: "c1", name: "issue_refund", args }] })], decisions: [record] });

  it("claims nothing when the run is already cancelled, and rethrows the abort reason untouched", async () => {
    const auditLog = new MemoryAuditLog();
    const ledger = new MemoryEffectLedger();
    const node = createGovernedToolNode({ tools: createRefundTools(new Database(":memory:")).all, auditLog, ledger });
    const controller = new AbortController();
    const reason = new Error("cancelled by the server");
    controller.abort(reason);
    const error = await node(state(), { configurable: { thread_id: "n1" }, signal: controller.signal }).catch((e: unknown) => e);
    expect(error).toBe(reason);
    expect(await ledger.list("n1")).toEqual([]);
    expect(await auditLog.read("n1")).toEqual([]);
  });
});

describe("circuit breaker", () => {
  it("gives back the half-open trial of a cancelled call, counting nothing", () => {
    const breaker = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 1_000 });
    const t0 = new Date("2026-01-01T00:00:00Z");
    breaker.failure(t0);
    const later = new Date(t0.getTime() + 1_000);
    expect(breaker.admit(later)).toEqual({ admitted: true, trial: true });
    expect(breaker.admit(later).admitted).toBe(false);
    breaker.cancellation();
    expect(breaker.state(later)).toBe("half_open");
    expect(breaker.admit(later)).toEqual({ admitted: true, trial: true });
  });
});

describe("the thread lock of a cancelled run", () => {
  it("is released when the run is cancelled before anyone read its stream: the next run is not refused as busy", async () => {
    const s = agentWith("x-lock", () => undefined, { idempotent: true });
    const controller = new AbortController();
    const stream = await s.agent.stream(askSmall(), { ...config("x-lock"), signal: controller.signal });
    controller.abort();
    // The stream is never read. A lock held forever would refuse this run with thread_busy.
    await expect(s.agent.invoke(null, config("x-lock"))).resolves.toBeDefined();
    void stream;
  });
});
