import { AIMessage, ToolMessage } from "@langchain/core/messages";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { Command, interrupt } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  ApprovalError,
  idempotencyKeyOf,
  MemoryEffectLedger,
  ModelUnavailableError,
  pendingRecovery,
  toolCallDigest,
  ToolPermissionError,
  ToolTimeoutError,
  type AuditEvent,
  type RecoveryRequest,
} from "eart";
import { executionContextOf } from "eart/nodes";
import { scriptedModel } from "eart/testing";
import { decide } from "../support/decisions.js";
import { ask, config, refund, refundSetup, turnsModel } from "../support/refund.js";

// $60 on order 1043 is allowed by the refund policy without approval: these runs go straight to the tools.
const small = (id = "c1") => refund(id, 60, "1043");
const askSmall = () => ask("Refund order 1043, $60.");
const of = (events: AuditEvent[], type: string) => events.filter((e) => e.type === type);
const noDelay = { initialDelayMs: 1, jitter: false } as const;

/**
 * Wraps the real issue_refund: `before(n)` runs before the n-th call (1-based) reaches the real
 * tool, and may throw or wait; the signal of each call is kept.
 */
function flaky(real: StructuredToolInterface, before: (n: number, signal: AbortSignal | undefined) => Promise<void> | void) {
  const seen: { n: number; signal: AbortSignal | undefined; key: string | undefined; attempt: number | undefined }[] = [];
  const wrapped = tool(
    async (args: Record<string, unknown>, cfg) => {
      const n = seen.length + 1;
      const signal = (cfg as { signal?: AbortSignal }).signal;
      const ctx = executionContextOf(cfg);
      seen.push({ n, signal, key: ctx?.idempotencyKey, attempt: ctx?.attempt });
      await before(n, signal);
      return real.invoke(args, cfg);
    },
    { name: real.name, description: real.description, schema: real.schema as z.ZodObject<z.ZodRawShape> },
  );
  return { tool: wrapped, seen };
}

const recoveryOf = async (setup: ReturnType<typeof refundSetup>, threadId: string): Promise<RecoveryRequest> => {
  const request = pendingRecovery(await setup.agent.getState(config(threadId)));
  if (!request) throw new Error("expected a pending recovery request");
  return request;
};

function withFlaky(before: Parameters<typeof flaky>[1], agent: Parameters<typeof refundSetup>[1]["agent"] = {}, turns = [[small()]]) {
  let handle: ReturnType<typeof flaky> | undefined;
  const ledger = new MemoryEffectLedger();
  const setup = refundSetup(turns, {
    tools: (t) => {
      handle = flaky(t.issueRefund, before);
      return [t.lookupOrder, t.viewPaymentDetails, handle.tool];
    },
    agent: { ledger, recoveryRoles: ["supervisor"], ...agent },
  });
  return { ...setup, ledger, seen: handle!.seen };
}

describe("retries", () => {
  it("recovers from transient failures, each try recorded in the ledger and the audit log", async () => {
    const s = withFlaky((n) => {
      if (n < 3) throw new Error(`ECONNRESET ${n}`);
    }, { execution: { issue_refund: { retry: { attempts: 3, ...noDelay } } } });
    const result = await s.agent.invoke(askSmall(), config("r-1"));
    expect(s.refunds()).toEqual([{ orderId: "1043", amount: 60, toolCallId: "c1" }]);
    expect(s.seen.map((x) => x.attempt)).toEqual([1, 2, 3]);
    // One key for every try: the tool can forward it.
    const key = { threadId: "r-1", toolCallId: "c1", digest: toolCallDigest("issue_refund", { orderId: "1043", amount: 60 }, "r-1") };
    expect(new Set(s.seen.map((x) => x.key))).toEqual(new Set([idempotencyKeyOf(key)]));
    expect(await s.ledger.get(key)).toMatchObject({ status: "succeeded", attempt: 3 });
    const events = await s.auditLog.read("r-1");
    expect(of(events, "tool.failed").map((e) => e.data.error)).toEqual(["ECONNRESET 1", "ECONNRESET 2"]);
    expect(of(events, "tool.retrying").map((e) => [e.data.try, e.data.delayMs])).toEqual([
      [2, 1],
      [3, 2],
    ]);
    expect(of(events, "tool.succeeded")[0]!.data).toMatchObject({ toolCallId: "c1", attempt: 3 });
    expect(result.messages.at(-1)!.content).toBe("done after 1 turns");
  });

  it("does not retry what retryOn rejects, and hands the call to a human", async () => {
    const s = withFlaky(() => {
      throw new Error("HTTP 400 from the payments API");
    }, { execution: { issue_refund: { retry: { attempts: 5, ...noDelay, retryOn: (e) => !/HTTP 4/.test(String(e)) } } } });
    await s.agent.invoke(askSmall(), config("r-2"));
    expect(s.seen).toHaveLength(1);
    const request = await recoveryOf(s, "r-2");
    expect(request.requests[0]).toMatchObject({ toolCallId: "c1", reason: "exhausted", attempt: 1, error: "HTTP 400 from the payments API", resolverRoles: ["supervisor"] });
    expect(s.refunds()).toEqual([]);
  });

  it("sends a permission refusal to a human without retrying it and without telling the model it erred", async () => {
    const s = withFlaky(() => {
      throw new ToolPermissionError("the payments API refused the agent's key");
    }, { execution: { issue_refund: { retry: { attempts: 3, ...noDelay } } } });
    const result = await s.agent.invoke(askSmall(), config("r-3"));
    expect(s.seen).toHaveLength(1);
    expect((await recoveryOf(s, "r-3")).requests[0]).toMatchObject({ reason: "permission_denied" });
    expect(result.messages.filter((m) => ToolMessage.isInstance(m))).toEqual([]);
    expect(of(await s.auditLog.read("r-3"), "tool.failed")[0]!.data).toMatchObject({ kind: "permission_denied" });
  });
});

describe("timeouts", () => {
  const hang = (_n: number, signal: AbortSignal | undefined) =>
    new Promise<void>((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason), { once: true }));

  it("aborts the tool's signal, and never re-runs a tool that is not idempotent: a human decides", async () => {
    const s = withFlaky(hang, { execution: { issue_refund: { timeout: 20, retry: { attempts: 3, ...noDelay } } } });
    await s.agent.invoke(askSmall(), config("t-1"));
    expect(s.seen).toHaveLength(1);
    expect(s.seen[0]!.signal?.aborted).toBe(true);
    expect(s.seen[0]!.signal?.reason).toBeInstanceOf(ToolTimeoutError);
    const request = await recoveryOf(s, "t-1");
    expect(request.requests[0]).toMatchObject({ reason: "timeout", attempt: 1, error: "Tool issue_refund did not finish within 20 ms" });
    expect((await s.ledger.list("t-1"))[0]).toMatchObject({ status: "started", attempt: 1 });

    // The supervisor abandons it: the model is told, the ledger records the failure, nothing ran.
    // The resolver is the resuming run's principal; `resolver` in the payload is a cross-check.
    const result = await s.agent.invoke(
      new Command({ resume: { resolver: { id: "sam" }, decisions: [decide(request, "c1", "abandon", { message: "customer called, refund by bank transfer" })] } }),
      config("t-1", "sam"),
    );
    const answer = result.messages.find((m): m is ToolMessage => ToolMessage.isInstance(m) && m.tool_call_id === "c1")!;
    expect(answer.status).toBe("error");
    expect(answer.content).toBe("Abandoned by sam: customer called, refund by bank transfer The action was not completed.");
    expect(result.decisions.find((d) => d.toolCallId === "c1")).toMatchObject({ status: "failed", recovery: { reason: "timeout", resolution: { type: "abandon", by: "sam" } } });
    expect((await s.ledger.list("t-1"))[0]).toMatchObject({ status: "failed" });
    expect(s.seen).toHaveLength(1);
    expect(s.refunds()).toEqual([]);
    expect(result.messages.at(-1)!.content).toBe("done after 1 turns");
    const decided = of(await s.auditLog.read("t-1"), "tool.recovery_decided");
    expect(decided.map((e) => [e.data.decision, e.data.resolverId, e.data.reason])).toEqual([["abandon", "sam", "timeout"]]);
  });

  it("retries an idempotent tool that timed out, with the same key", async () => {
    const s = withFlaky((n, signal) => (n === 1 ? hang(n, signal) : undefined), {
      execution: { issue_refund: { idempotent: true, timeout: 20, retry: { attempts: 2, ...noDelay } } },
    });
    await s.agent.invoke(askSmall(), config("t-2"));
    expect(s.seen.map((x) => x.attempt)).toEqual([1, 2]);
    expect(s.seen[0]!.key).toBe(s.seen[1]!.key);
    expect(s.refunds()).toHaveLength(1);
    expect(of(await s.auditLog.read("t-2"), "tool.failed")[0]!.data).toMatchObject({ kind: "timeout" });
  });
});

describe("circuit breaker", () => {
  it("opens after repeated failures, fails fast while open, and closes after a successful trial", async () => {
    let now = new Date("2026-01-01T00:00:00Z");
    let broken = true;
    const s = withFlaky(
      () => {
        if (broken) throw new Error("payments API unavailable");
      },
      { clock: () => now, execution: { issue_refund: { breaker: { failureThreshold: 2, windowMs: 60_000, cooldownMs: 30_000 } } } },
    );
    await s.agent.invoke(askSmall(), config("b-1"));
    await s.agent.invoke(askSmall(), config("b-2"));
    expect(s.seen).toHaveLength(2);
    expect(of(await s.auditLog.read("b-2"), "tool.circuit_opened")).toHaveLength(1);

    // Open: the tool is not called at all.
    await s.agent.invoke(askSmall(), config("b-3"));
    expect(s.seen).toHaveLength(2);
    const waiting = await recoveryOf(s, "b-3");
    expect(waiting.requests[0]).toMatchObject({ reason: "circuit_open", attempt: 0 });
    expect(await s.ledger.list("b-3")).toEqual([]);

    // After the cool-down one trial goes through; it succeeds and the breaker closes.
    now = new Date(now.getTime() + 30_000);
    broken = false;
    await s.agent.invoke(askSmall(), config("b-4"));
    expect(of(await s.auditLog.read("b-4"), "tool.started")[0]!.data).toMatchObject({ breakerTrial: true });
    await s.agent.invoke(askSmall(), config("b-5"));
    expect(of(await s.auditLog.read("b-5"), "tool.started")[0]!.data.breakerTrial).toBeUndefined();
    expect(s.refunds()).toHaveLength(2);

    // The call that waited while the breaker was open is retried by a supervisor and runs once.
    await s.agent.invoke(new Command({ resume: { decisions: [decide(waiting, "c1", "retry")] } }), config("b-3", "sue"));
    expect(s.refunds()).toHaveLength(3);
    expect(await s.ledger.list("b-3")).toMatchObject([{ status: "succeeded", attempt: 1 }]);
  });
});

describe("fallbacks", () => {
  it("answers with the fallback value when the attempts are exhausted", async () => {
    const s = withFlaky(() => {
      throw new Error("payments API unavailable");
    }, { execution: { issue_refund: { retry: { attempts: 2, ...noDelay }, fallback: { value: "Refund queued for manual processing." } } } });
    const result = await s.agent.invoke(askSmall(), config("f-1"));
    expect(s.seen).toHaveLength(2);
    const answer = result.messages.find((m): m is ToolMessage => ToolMessage.isInstance(m) && m.tool_call_id === "c1")!;
    expect(answer.content).toBe("Refund queued for manual processing.");
    expect(of(await s.auditLog.read("f-1"), "tool.fallback")[0]!.data).toMatchObject({ fallback: "value", cause: "payments API unavailable" });
    expect((await s.ledger.list("f-1"))[0]).toMatchObject({ status: "succeeded", result: { content: "Refund queued for manual processing." } });
  });

  it("runs the fallback tool with the call's arguments", async () => {
    const queued: unknown[] = [];
    const queue = tool(
      async (args) => {
        queued.push(args);
        return "queued";
      },
      { name: "queue_refund", schema: z.object({ orderId: z.string(), amount: z.number() }) },
    );
    const s = withFlaky(() => {
      throw new Error("down");
    }, { execution: { issue_refund: { fallback: { tool: queue } } } });
    await s.agent.invoke(askSmall(), config("f-2"));
    expect(queued).toEqual([{ orderId: "1043", amount: 60 }]);
    expect(of(await s.auditLog.read("f-2"), "tool.fallback")[0]!.data).toMatchObject({ fallback: "queue_refund" });
  });
});

describe("recovery by a human", () => {
  const failing = () =>
    withFlaky(() => {
      throw new Error("payments API unavailable");
    });

  it("refuses a resolver without the role, the requester, and a malformed answer; nothing runs and the request stays", async () => {
    const s = failing();
    await s.agent.invoke(askSmall(), config("h-1"));
    const request = await recoveryOf(s, "h-1");
    const digest = request.requests[0]!.digest;
    expect(digest).toBe(toolCallDigest("issue_refund", { orderId: "1043", amount: 60 }, "h-1"));
    // [resume value, principal of the resuming run (null: nobody), expected code]
    const cases: [unknown, string | null, string][] = [
      [{ decisions: [{ toolCallId: "c1", type: "retry", digest }] }, "fay", "approval_unauthorized"],
      [{ decisions: [{ toolCallId: "c1", type: "retry", digest }] }, "cara", "approval_self_approval"],
      [{ decisions: [{ toolCallId: "c1", type: "mark_done", digest }] }, "sam", "approval_resume_invalid"],
      [{ decisions: [{ toolCallId: "c1", type: "retry" }] }, "sam", "approval_resume_invalid"],
      [{ decisions: [{ toolCallId: "c9", type: "retry", digest }] }, "sam", "approval_decisions_mismatch"],
      [{ decisions: [{ toolCallId: "c1", type: "retry", digest }] }, null, "approval_unauthenticated"],
      [{ resolver: { id: "sam" }, decisions: [{ toolCallId: "c1", type: "retry", digest }] }, "sue", "approval_principal_mismatch"],
      [{ decisions: [{ toolCallId: "c1", type: "retry", digest: toolCallDigest("issue_refund", { orderId: "1043", amount: 60 }, "h-other") }] }, "sam", "approval_digest_mismatch"],
    ];
    for (const [resume, as, code] of cases) {
      const by = as === null ? { configurable: { thread_id: "h-1" } } : config("h-1", as);
      const error = await s.agent.invoke(new Command({ resume }), by).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApprovalError);
      expect((error as ApprovalError).code).toBe(code);
      expect((await recoveryOf(s, "h-1")).requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    }
    expect(s.seen).toHaveLength(1);
    expect(s.refunds()).toEqual([]);
    expect(of(await s.auditLog.read("h-1"), "tool.recovery_refused")).toHaveLength(cases.length);
  });

  it("marks a call done with the result the human recorded; the tool is not called again", async () => {
    const s = failing();
    await s.agent.invoke(askSmall(), config("h-2"));
    const request = await recoveryOf(s, "h-2");
    const result = await s.agent.invoke(
      new Command({ resume: { decisions: [decide(request, "c1", "mark_done", { result: { refundId: 77, status: "refunded" } })] } }),
      config("h-2", "sam"),
    );
    expect(s.seen).toHaveLength(1);
    const answer = result.messages.find((m): m is ToolMessage => ToolMessage.isInstance(m) && m.tool_call_id === "c1")!;
    expect(answer.content).toBe('{"refundId":77,"status":"refunded"}');
    expect((await s.ledger.list("h-2"))[0]).toMatchObject({ status: "succeeded" });
    expect(result.decisions[0]).toMatchObject({ status: "executed", recovery: { resolution: { type: "mark_done", by: "sam" } } });
    expect(await s.auditLog.verify("h-2")).toMatchObject({ ok: true });
  });

  it("refuses new input while a call waits for recovery", async () => {
    const s = failing();
    await s.agent.invoke(askSmall(), config("h-3"));
    const error = await s.agent.invoke(ask("hello?"), config("h-3")).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe("thread_awaiting_approval");
    expect(s.model.callCount).toBe(1);
  });
});

describe("model retries and fallbacks", () => {
  const failingModel = (failures: number) => {
    let calls = 0;
    const model = scriptedModel(() => {
      calls += 1;
      if (calls <= failures) throw new Error(`rate limited ${calls}`);
      return new AIMessage("primary answered");
    });
    return model;
  };

  it("retries the model, then falls back to the next one, each failure audited", async () => {
    const fallback = turnsModel([]);
    const s = refundSetup([], { agent: { model: failingModel(99), modelRetry: { attempts: 2, ...noDelay }, fallbackModels: [fallback] } });
    const result = await s.agent.invoke(ask("hello"), config("m-1"));
    expect(result.messages.at(-1)!.content).toBe("done after 0 turns");
    const failed = of(await s.auditLog.read("m-1"), "model.failed");
    expect(failed.map((e) => [e.data.model, e.data.attempt, e.data.next, e.data.error])).toEqual([
      [0, 1, "retry", "rate limited 1"],
      [0, 2, "fallback", "rate limited 2"],
    ]);
  });

  it("throws ModelUnavailableError when every model fails, and records the failures", async () => {
    const s = refundSetup([], { agent: { model: failingModel(99), fallbackModels: [failingModel(99)] } });
    const error = await s.agent.invoke(ask("hello"), config("m-2")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelUnavailableError);
    expect((error as ModelUnavailableError).details.failures).toHaveLength(2);
    expect(of(await s.auditLog.read("m-2"), "model.failed").map((e) => e.data.next)).toEqual(["fallback", "none"]);
  });

  it("a model error that echoes a card number reaches the caller redacted: in the error's message, its failures and its cause", async () => {
    const echoing = scriptedModel(() => {
      throw Object.assign(new Error('Could not parse the arguments {"card": "4111 1111 1111 1111"}'), { status: 400 });
    });
    const s = refundSetup([], { agent: { model: echoing } });
    const error = (await s.agent.invoke(ask("hello"), config("m-3")).catch((e: unknown) => e)) as ModelUnavailableError;
    expect(error).toBeInstanceOf(ModelUnavailableError);
    expect(error.message).toContain('{"card":"[REDACTED:card_number]"}');
    expect(JSON.stringify(error.details)).toContain("[REDACTED:card_number]");
    // The model's own error stays an Error of its class, with its status (for retries), without the raw text.
    const cause = error.cause as Error & { status?: number };
    expect(cause).toBeInstanceOf(Error);
    expect(cause.status).toBe(400);
    for (const text of [error.message, error.stack, JSON.stringify(error.details), cause.message, cause.stack]) expect(text).not.toMatch(/4111 1111 1111 1111/);
    expect(JSON.stringify(await s.auditLog.read("m-3"))).not.toMatch(/4111 1111 1111 1111/);
  });
});

describe("a tool that asks with interrupt()", () => {
  it("pauses the run without a failure; the answer reaches the tool on a new attempt under the same key, and the refund runs once", async () => {
    const answers: unknown[] = [];
    const s = withFlaky(() => {
      answers.push(interrupt({ question: "Which card should the refund go to?" }));
    });
    const paused = await s.agent.invoke(askSmall(), config("ti-1"));
    expect((paused.__interrupt__ as { value: unknown }[]).map((i) => i.value)).toEqual([{ question: "Which card should the refund go to?" }]);
    expect(s.refunds()).toEqual([]);
    const done = await s.agent.invoke(new Command({ resume: "the visa" }), config("ti-1"));
    expect(pendingRecovery(done)).toBeUndefined();
    expect(answers).toEqual(["the visa"]);
    expect(s.refunds()).toEqual([{ orderId: "1043", amount: 60, toolCallId: "c1" }]);
    const key = { threadId: "ti-1", toolCallId: "c1", digest: toolCallDigest("issue_refund", { orderId: "1043", amount: 60 }, "ti-1") };
    expect(s.seen.map((x) => [x.attempt, x.key])).toEqual([
      [1, idempotencyKeyOf(key)],
      [2, idempotencyKeyOf(key)],
    ]);
    expect(await s.ledger.get(key)).toMatchObject({ status: "succeeded", attempt: 2 });
    const events = await s.auditLog.read("ti-1");
    expect(events.filter((e) => e.type.startsWith("tool.")).map((e) => [e.type, e.data.attempt])).toEqual([
      ["tool.started", 1],
      ["tool.interrupted", 1],
      ["tool.started", 2],
      ["tool.succeeded", 2],
    ]);
    expect(await s.auditLog.verify("ti-1")).toMatchObject({ ok: true });
  });

  it("a tool whose pause was not recorded (the audit append failed) goes to a human on the next run, as an outcome nobody knows", async () => {
    const s = withFlaky(() => {
      interrupt({ question: "Which card?" });
    });
    const append = s.auditLog.append.bind(s.auditLog);
    s.auditLog.append = async (events) => {
      const list = Array.isArray(events) ? events : [events];
      if (list.some((e) => e.type === "tool.interrupted")) throw new Error("audit store down");
      return append(events);
    };
    await s.agent.invoke(askSmall(), config("ti-2"));
    const after = await s.agent.invoke(new Command({ resume: "the visa" }), config("ti-2"));
    expect(pendingRecovery(after)?.requests.map((r) => [r.toolCallId, r.reason])).toEqual([["c1", "outcome_unknown"]]);
    expect(s.refunds()).toEqual([]);
  });
});

describe("recovery requests in the audit log's inbox", () => {
  it("are listed for the roles that may resolve them (the agent's recoveryRoles), not for others", async () => {
    const s = withFlaky(() => {
      throw new ToolPermissionError("the payment provider refused the key");
    });
    await s.agent.invoke(askSmall(), config("inbox-rec"));
    expect((await recoveryOf(s, "inbox-rec")).roles).toEqual(["supervisor"]);
    const forSupervisors = await s.auditLog.pending!({ role: "supervisor" });
    expect(forSupervisors.filter((t) => t.threadId === "inbox-rec").map((t) => [t.kind, t.toolCallId, t.roles])).toEqual([["recovery", "c1", ["supervisor"]]]);
    expect((await s.auditLog.pending!({ role: "operator" })).filter((t) => t.threadId === "inbox-rec")).toEqual([]);
    expect((await s.auditLog.pending!({ role: "customer" })).filter((t) => t.threadId === "inbox-rec")).toEqual([]);
  });
});
