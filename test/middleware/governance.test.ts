import { AIMessage, type BaseMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { scriptedModel } from "eart/testing";
import { describe, expect, it } from "vitest";
import { definePolicy, eartErrorOf, pendingApproval, pendingRecovery } from "eart";
import { governanceMiddleware } from "eart/middleware";
import { refundPolicy } from "../../examples/refund/policy.js";
import { middlewareRefundSetup } from "../support/middleware-agent.js";
import { ask, config, lookup, refund, registry } from "../support/refund.js";

describe("governanceMiddleware on createAgent: the refund conversation", () => {
  it("pauses a $740 refund for a supervisor with eart's request and the HITL fields, and runs it once after the supervisor approves", async () => {
    const s = middlewareRefundSetup([[lookup("l1")], [refund("c1", 740)]]);
    const paused = await s.agent.invoke(ask(), config("m-1"));
    const request = pendingApproval(paused);
    expect(request).toMatchObject({ type: "eart.approval", roles: ["supervisor"], requests: [{ toolCallId: "c1", name: "issue_refund", args: { orderId: "1042", amount: 740 } }] });
    const value = (paused as { __interrupt__: { value: Record<string, unknown> }[] }).__interrupt__[0]!.value;
    expect(value.action_requests).toEqual([{ name: "issue_refund", args: { orderId: "1042", amount: 740 }, description: expect.any(String) }]);
    expect(s.refunds()).toEqual([]);
    const done = await s.agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), config("m-1", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(String(done.messages.at(-1)!.content)).toBe("done after 2 turns");
    const types = (await s.auditLog.read("m-1")).map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(["run.started", "identity.bound", "model.output", "policy.decided", "approval.requested", "approval.decided", "tool.started", "tool.succeeded"]));
    expect(await s.auditLog.verify("m-1")).toMatchObject({ ok: true });
  });
});

// createAgent wraps what middleware throws (MiddlewareError, the original as cause): eartErrorOf finds eart's error in it.
const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: { message?: string }) => eartErrorOf(e)?.code ?? String(e.message));
const approveKeyed = (request: NonNullable<ReturnType<typeof pendingApproval>>) => ({ decisions: request.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve", digest: r.digest })) });

describe("governanceMiddleware: what LangChain's HITL middleware lets through", () => {
  it("refuses the customer's own approval, a supervisor named in the payload, and an unknown approver; nothing runs and the request stands", async () => {
    const s = middlewareRefundSetup([[refund("c1", 740)]]);
    const request = pendingApproval(await s.agent.invoke(ask(), config("m-2")))!;
    expect(await codeOf(s.agent.invoke(new Command({ resume: approveKeyed(request) }), config("m-2", "cara")))).toBe("approval_self_approval");
    expect(await codeOf(s.agent.invoke(new Command({ resume: { ...approveKeyed(request), approver: { id: "sam" } } }), config("m-2", "cara")))).toBe("approval_principal_mismatch");
    expect(await codeOf(s.agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), config("m-2", "mallory")))).toBe("approval_unauthorized");
    expect(await codeOf(s.agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), config("m-2", "omar")))).toBe("approval_unauthorized");
    expect(s.refunds()).toEqual([]);
    expect(pendingApproval(await s.agent.getState(config("m-2")))?.requests[0]!.digest).toBe(request.requests[0]!.digest);
    const refused = (await s.auditLog.read("m-2")).filter((e) => e.type === "approval.refused");
    expect(refused).toHaveLength(4);
    await s.agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), config("m-2", "sam"));
    expect(s.refunds()).toHaveLength(1);
  });

  it("answers each of three calls as decided: approve, edit (checked by policy again), reject; none is dropped", async () => {
    const s = middlewareRefundSetup([[refund("a", 200), refund("b", 300, "1043"), refund("c", 400)]]);
    const request = pendingApproval(await s.agent.invoke(ask(), config("m-3")))!;
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["a", "b", "c"]);
    const done = await s.agent.invoke(
      new Command({
        resume: {
          decisions: [
            { type: "approve" },
            { type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1043", amount: 60 } } },
            { type: "reject", message: "Duplicate of a" },
          ],
        },
      }),
      config("m-3", "sam"),
    );
    expect(s.refunds().map((r) => [r.toolCallId, r.orderId, r.amount])).toEqual(
      expect.arrayContaining([
        ["a", "1042", 200],
        ["b", "1043", 60],
      ]),
    );
    expect(s.refunds()).toHaveLength(2);
    const rejected = done.messages.find((m: { tool_call_id?: string; status?: string }) => m.tool_call_id === "c");
    expect(String(rejected?.content)).toContain("Duplicate of a");
  });

  it("refuses an edit past policy ($9,000) and a digest from another thread; the supervisor's valid answer still works", async () => {
    const s = middlewareRefundSetup([[refund("c1", 740)], [], [refund("c1", 740)]]);
    const request = pendingApproval(await s.agent.invoke(ask(), config("m-4")))!;
    expect(await codeOf(s.agent.invoke(new Command({ resume: { decisions: [{ type: "edit", edited_action: { name: "issue_refund", args: { orderId: "1042", amount: 9000 } } }] } }), config("m-4", "sam")))).toBe("approval_edit_not_permitted");
    const other = pendingApproval(await s.agent.invoke(ask(), config("m-4b")))!;
    expect(other.requests[0]!.digest).not.toBe(request.requests[0]!.digest);
    expect(await codeOf(s.agent.invoke(new Command({ resume: approveKeyed(other) }), config("m-4", "sam")))).toBe("approval_digest_mismatch");
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(new Command({ resume: approveKeyed(request) }), config("m-4", "sam"));
    expect(s.refunds()).toHaveLength(1);
  });

  it("denies a refund over $5,000 without asking anyone, and runs an allowed $60 one without a pause", async () => {
    const s = middlewareRefundSetup([[refund("big", 9200, "1099"), refund("small", 60, "1043")]]);
    const out = await s.agent.invoke(ask(), config("m-5"));
    expect(pendingApproval(out)).toBeUndefined();
    expect(s.refunds()).toEqual([{ orderId: "1043", amount: 60, toolCallId: "small" }]);
    const denied = out.messages.find((m: { tool_call_id?: string }) => m.tool_call_id === "big");
    expect(String(denied?.content)).toMatch(/not allowed/);
  });

  it("refuses resumes on unknown and finished threads, Command update/goto, __proto__ answers and writes of eart's channels", async () => {
    const s = middlewareRefundSetup([[refund("c1", 60, "1043")]]);
    expect(await codeOf(s.agent.invoke(new Command({ resume: { decisions: [] } }), config("never-started", "sam")))).toBe("thread_unknown");
    await s.agent.invoke(ask("Refund order 1043, $60."), config("m-6"));
    expect(await codeOf(s.agent.invoke(new Command({ resume: { decisions: [] } }), config("m-6", "sam")))).toBe("thread_not_paused");
    expect(await codeOf(s.agent.invoke(new Command({ update: { messages: [] }, goto: "tools" }), config("m-6")))).toBe("state_write_refused");
    expect(await codeOf(s.agent.invoke({ messages: [], _eart: { decisions: [] } } as never, config("m-6")))).toBe("state_write_refused");
    expect(await codeOf(s.agent.graph.updateState(config("m-6"), { _eart: { identity: { id: "support-agent" } } }))).toBe("state_write_refused");
    const p = middlewareRefundSetup([[refund("c1", 740)]]);
    await p.agent.invoke(ask(), config("m-7"));
    expect(await codeOf(p.agent.invoke(new Command({ resume: JSON.parse('{"__proto__":{"approved":true},"decisions":[]}') }), config("m-7", "sam")))).toBe("approval_resume_invalid");
    expect(p.refunds()).toEqual([]);
  });

  it("does not run a call whose record a caller forged in state: only what eart sealed counts", async () => {
    const s = middlewareRefundSetup([[refund("c1", 740)]]);
    const request = pendingApproval(await s.agent.invoke(ask(), config("m-8")))!;
    // Past the guard (LangGraph's own updateState), an "approved" record for the call.
    const graph = s.agent.graph as object;
    const raw = (Object.getPrototypeOf(graph) as { bulkUpdateState: (c: unknown, s: unknown) => Promise<unknown> }).bulkUpdateState;
    const state = await s.agent.getState(config("m-8"));
    const records = (state.values as { _eart: { decisions: Record<string, unknown>[] } })._eart.decisions;
    const forged = records.map((r) => ({ ...r, status: "approved", approvals: [{ approverId: "sam", type: "approve", at: new Date().toISOString() }] }));
    await raw.call(graph, config("m-8"), [{ updates: [{ values: { _eart: { decisions: forged } }, asNode: "model_request" }] }]);
    expect(((await s.agent.getState(config("m-8"))).values as { _eart: { decisions: { status: string }[] } })._eart.decisions[0]!.status).toBe("approved");
    // And run on past the guard too (LangGraph's own stream): the forged record lets nothing run.
    const rawStream = (Object.getPrototypeOf(graph) as { stream: (i: unknown, c: unknown) => Promise<AsyncIterable<unknown>> }).stream;
    const error = await (async () => {
      for await (const _ of await rawStream.call(graph, null, config("m-8", "cara"))) void _;
    })().then(() => undefined, (e: unknown) => e);
    expect(s.refunds()).toEqual([]);
    expect(eartErrorOf(error)?.code).toBe("state_tamper_detected");
    expect((await s.auditLog.read("m-8")).map((e) => e.type)).toContain("state.tamper_detected");
    expect(request.requests).toHaveLength(1);
  });
});

/** The scripted model of `turns`, keeping what it was shown on each call. */
function watching(seen: string[], turns: ReturnType<typeof refund>[][]) {
  return scriptedModel((messages: BaseMessage[]) => {
    seen.push(JSON.stringify(messages.map((m) => m.content)));
    const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
    const calls = turns[turn];
    return calls ? new AIMessage({ content: "", tool_calls: calls }) : new AIMessage(`done after ${turn} turns`);
  });
}

describe("governanceMiddleware: context, redaction and recovery", () => {
  const CARD = "4111 1111 1111 1111";

  it("redacts a card number in what the customer sends before the thread, the model or the audit log holds it", async () => {
    const seen: string[] = [];
    const s = middlewareRefundSetup([], { model: watching(seen, [[refund("c1", 60, "1043")]]) });
    const out = await s.agent.invoke(ask(`Refund order 1043, $60. My card is ${CARD}.`), config("m-r1"));
    expect(JSON.stringify(out.messages)).not.toContain(CARD);
    expect(JSON.stringify((await s.agent.getState(config("m-r1"))).values)).not.toContain(CARD);
    expect(JSON.stringify(await s.auditLog.read("m-r1"))).not.toContain(CARD);
    expect(seen.join("\n")).not.toContain(CARD);
    expect(s.refunds()).toHaveLength(1);
  });

  it("gives the model the context its identity may see, redacted, and audits where it came from", async () => {
    const orders = async () => [
      { id: "order-1042", source: "orders-db", scope: "orders", labels: [], content: { orderId: "1042", total: 740, card: CARD } },
      { id: "payroll-7", source: "hr-db", scope: "payroll", labels: ["compensation"], content: { salary: 91000 } },
    ];
    const prompts: string[] = [];
    const s = middlewareRefundSetup([], { model: watching(prompts, []), governance: { context: { providers: [orders] } } });
    await s.agent.invoke(ask("What did order 1042 cost?"), config("m-c1"));
    expect(prompts[0]).toContain("order-1042");
    expect(prompts[0]).not.toContain(CARD);
    expect(prompts[0]).not.toContain("91000");
    const retrieved = (await s.auditLog.read("m-c1")).find((e) => e.type === "context.retrieved")!.data as { items: { id: string }[]; dropped: { id: string }[] };
    expect(retrieved.items.map((i) => i.id)).toEqual(["order-1042"]);
    expect(retrieved.dropped.map((i) => i.id)).toEqual(["payroll-7"]);
    expect(JSON.stringify(retrieved)).not.toContain(CARD);
  });

  it("hands a call the tools could not finish to a human (recovery), and runs it once when they retry", async () => {
    let failures = 1;
    const s = middlewareRefundSetup([[refund("c1", 60, "1043")]], {
      governance: { recoveryRoles: ["supervisor"], execution: { issue_refund: { retry: { attempts: 1 } } } },
      wrapRefund: (real) => async (args, cfg) => {
        if (failures-- > 0) throw new Error("payment provider unavailable");
        return real(args, cfg);
      },
    });
    const paused = await s.agent.invoke(ask("Refund order 1043, $60."), config("m-rec"));
    const waiting = pendingRecovery(paused);
    expect(waiting).toMatchObject({ type: "eart.recovery", roles: ["supervisor"], requests: [{ toolCallId: "c1" }] });
    expect(s.refunds()).toEqual([]);
    // The customer may not decide it; the supervisor retries.
    const retry = { decisions: [{ toolCallId: "c1", type: "retry", digest: waiting!.requests[0]!.digest }] };
    expect(await codeOf(s.agent.invoke(new Command({ resume: retry }), config("m-rec", "cara")))).toMatch(/^approval_/);
    await s.agent.invoke(new Command({ resume: retry }), config("m-rec", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1043", amount: 60, toolCallId: "c1" }]);
    expect((await s.auditLog.read("m-rec")).map((e) => e.type)).toEqual(expect.arrayContaining(["tool.failed", "tool.recovery_requested", "tool.recovery_decided", "tool.succeeded"]));
  });

  // The message's only unfinished call is handed to a human in its own tool step (no model step
  // can skip or catch that pause); the step runs again on each answer and reads back the request it
  // made, from the audit log. These are the ways that could go wrong.
  it("a retry that fails again is asked about again in the same step (attempt 2); the answer sam gave for attempt 1, sent again, is refused; his answer to attempt 2 settles it", async () => {
    let calls = 0;
    const s = middlewareRefundSetup([[refund("c1", 60, "1043")]], {
      governance: { recoveryRoles: ["supervisor"] },
      wrapRefund: (real) => async (args, cfg) => {
        calls += 1;
        if (calls <= 2) throw new Error("payment provider unavailable");
        return real(args, cfg);
      },
    });
    const first = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("m-rec-again")));
    expect(first?.requests.map((r) => [r.toolCallId, r.attempt])).toEqual([["c1", 1]]);
    const retry = (attempt: number) => new Command({ resume: { decisions: [{ toolCallId: "c1", type: "retry", digest: first!.requests[0]!.digest, attempt }] } });
    const second = pendingRecovery(await s.agent.invoke(retry(1), config("m-rec-again", "sam")));
    expect(second?.requests.map((r) => [r.toolCallId, r.attempt])).toEqual([["c1", 2]]);
    expect(calls).toBe(2);
    expect(eartErrorOf(await s.agent.invoke(retry(1), config("m-rec-again", "sam")).catch((e: unknown) => e))?.code).toMatch(/^approval_/);
    expect(calls).toBe(2);
    const done = await s.agent.invoke(retry(2), config("m-rec-again", "sam"));
    expect(pendingRecovery(done)).toBeUndefined();
    expect(calls).toBe(3);
    expect(s.refunds()).toEqual([{ orderId: "1043", amount: 60, toolCallId: "c1" }]);
    const events = await s.auditLog.read("m-rec-again");
    expect(events.filter((e) => e.type === "tool.recovery_requested").map((e) => e.data.attempt)).toEqual([1, 2]);
    expect(events.filter((e) => e.type === "tool.recovery_decided").map((e) => [e.data.attempt, e.data.decision])).toEqual([[1, "retry"], [2, "retry"]]);
    expect(await s.auditLog.verify("m-rec-again")).toMatchObject({ ok: true });
  });

  it("an idempotent tool the supervisor abandons is not run again when the step resumes (the request is read back, not the call re-run); asked once, answered once", async () => {
    let calls = 0;
    const s = middlewareRefundSetup([[refund("c1", 60, "1043")]], {
      governance: { recoveryRoles: ["supervisor"], execution: { issue_refund: { idempotent: true } } },
      wrapRefund: () => async () => {
        calls += 1;
        throw new Error("payment provider unavailable");
      },
    });
    const waiting = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("m-rec-idem")));
    expect(waiting?.requests.map((r) => [r.toolCallId, r.reason])).toEqual([["c1", "exhausted"]]);
    const done = await s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "abandon", digest: waiting!.requests[0]!.digest }] } }), config("m-rec-idem", "sam"));
    expect(calls).toBe(1);
    expect(pendingRecovery(done)).toBeUndefined();
    const events = await s.auditLog.read("m-rec-idem");
    expect(events.filter((e) => e.type === "tool.recovery_requested")).toHaveLength(1);
    expect(events.filter((e) => e.type === "tool.started")).toHaveLength(1);
    expect(events.filter((e) => e.type === "tool.failed").map((e) => e.data.kind)).toEqual(["error", "abandoned"]);
  });

  it("the customer cannot settle her own unfinished refund, nor write its record through the state API; the thread stays paused for the supervisor", async () => {
    const s = middlewareRefundSetup([[refund("c1", 60, "1043")]], {
      governance: { recoveryRoles: ["supervisor"] },
      wrapRefund: () => async () => {
        throw new Error("payment provider unavailable");
      },
    });
    const waiting = pendingRecovery(await s.agent.invoke(ask("Refund order 1043, $60."), config("m-rec-own")));
    const markDone = new Command({ resume: { decisions: [{ toolCallId: "c1", type: "mark_done", digest: waiting!.requests[0]!.digest, result: "refunded" }] } });
    expect(eartErrorOf(await s.agent.invoke(markDone, config("m-rec-own", "cara")).catch((e: unknown) => e))?.code).toBe("approval_self_approval");
    const forged = { _eart: { decisions: [{ toolCallId: "c1", status: "executed" }] } };
    expect(eartErrorOf(await (s.agent.graph as { updateState: (c: unknown, v: unknown) => Promise<unknown> }).updateState(config("m-rec-own"), forged).catch((e: unknown) => e))?.code).toBe("state_write_refused");
    expect(eartErrorOf(await s.agent.invoke(new Command({ update: forged, resume: markDone.resume }), config("m-rec-own", "cara")).catch((e: unknown) => e))?.code).toBe("state_write_refused");
    const still = await (s.agent.graph as { getState: (c: unknown) => Promise<unknown> }).getState(config("m-rec-own"));
    expect(pendingRecovery(still as never)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const done = await s.agent.invoke(markDone, config("m-rec-own", "sam"));
    expect(pendingRecovery(done)).toBeUndefined();
    const events = await s.auditLog.read("m-rec-own");
    expect(events.filter((e) => e.type === "tool.recovery_decided").map((e) => e.data.resolverId)).toEqual(["sam"]);
    expect(events.filter((e) => e.type === "tool.succeeded").map((e) => e.data.markedDoneBy)).toEqual(["sam"]);
  });
});

describe("governanceMiddleware: its options", () => {
  it("refuses options it does not take (budgets, shadow policies) and a missing identity registry at construction", () => {
    expect(() => governanceMiddleware({ identities: registry, policy: refundPolicy, budgets: {} } as never)).toThrow(/budgets/);
    expect(() => governanceMiddleware({ identities: registry, policy: refundPolicy, shadowPolicy: refundPolicy } as never)).toThrow(/shadowPolicy/);
    expect(() => governanceMiddleware({ policy: refundPolicy } as never)).toThrow(/identities/);
  });

  it("checks the policy against the agent's tools and identities once it knows the tools: an approver role nobody has is refused before anything runs", async () => {
    const policy = definePolicy({ name: "typo", rules: [{ id: "all", tools: "*", effect: "require_approval", approverRoles: ["supervisr"] }] });
    const s = middlewareRefundSetup([[refund("c1", 740)]], { policy });
    const error = await s.agent.invoke(ask(), config("m-opt")).then(() => undefined, (e: unknown) => e);
    expect(eartErrorOf(error, "config_invalid")?.message).toMatch(/supervisr/);
    expect(s.refunds()).toEqual([]);
  });
});

describe("governanceMiddleware: its state", () => {
  it("is private: the agent's input and output schemas offer clients messages, none of eart's channels", () => {
    const s = middlewareRefundSetup([]);
    const builder = (s.agent.graph as unknown as { builder: { _inputRuntimeDefinition: { getInputJsonSchema(): { properties?: object } }; _outputRuntimeDefinition: { getJsonSchema(): { properties?: object } } } }).builder;
    const input = Object.keys(builder._inputRuntimeDefinition.getInputJsonSchema().properties ?? {});
    const output = Object.keys(builder._outputRuntimeDefinition.getJsonSchema().properties ?? {});
    expect(input).toContain("messages");
    expect(input.filter((k) => k.startsWith("_eart"))).toEqual([]);
    expect(output.filter((k) => k.startsWith("_eart"))).toEqual([]);
  });
});
