import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { ApprovalError, caseDigest, definePolicy, pendingEscalation, type AuditEvent, type RetrievedItem } from "eart";
import { scriptedModel } from "eart/testing";
import { refundPolicy } from "../../examples/refund/policy.js";
import { ask, config, refund, refundSetup } from "../support/refund.js";
import { reviewed, waitingCase } from "../support/reviews.js";

const types = (events: AuditEvent[]) => events.map((e) => e.type);
const answerOf = (confidence: number) => new AIMessage(JSON.stringify({ answer: "Refund 1042 looks fine.", confidence }));

/** A model that answers with JSON carrying a confidence; after reviewer guidance it is sure. */
const unsureModel = () => {
  const seen: BaseMessage[][] = [];
  const model = scriptedModel((messages: BaseMessage[]) => {
    seen.push(messages);
    const guided = messages.some((m) => HumanMessage.isInstance(m) && String(m.content).startsWith("Guidance from reviewer"));
    return answerOf(guided ? 0.95 : 0.4);
  });
  return { model, seen };
};

describe("the escalation guard in the governed agent", () => {
  it("low confidence: pauses with the case; a reviewer takes over and answers in the agent's place", async () => {
    const { model } = unsureModel();
    const s = refundSetup([], { agent: { model, escalation: { reviewerRoles: ["supervisor"], confidence: { threshold: 0.7 } } } });
    const paused = await s.agent.invoke(ask("Is my refund for order 1042 approved?"), config("e-1"));
    const request = pendingEscalation(paused)!;
    expect(request).toMatchObject({
      type: "eart.escalation",
      threadId: "e-1",
      signals: [{ kind: "low_confidence", detail: "the model reported confidence 0.4, below 0.7" }],
      proposed: { text: JSON.stringify({ answer: "Refund 1042 looks fine.", confidence: 0.4 }), toolCalls: [] },
      reviewerRoles: ["supervisor"],
      requestedBy: { agentId: "support-agent", userId: "cara" },
    });
    // The case names itself: the digest of what the reviewer is shown, which an answer carries.
    expect(request.digest).toBe(caseDigest(request));
    // The reviewer is the principal of the resuming run, not a name in the payload.
    const done = await s.agent.invoke(new Command({ resume: reviewed(request, "take_over", "Yes, approved today.") }), config("e-1", "sam"));
    const last = done.messages.at(-1)!;
    expect(AIMessage.isInstance(last) && last.content).toBe("Yes, approved today.");
    expect(last.name).toBe("sam");
    expect(done.escalation).toBeNull();
    expect(pendingEscalation(await s.agent.getState(config("e-1")))).toBeUndefined();
    // The thread still acts for the human it was bound to.
    expect(done.identity?.onBehalfOf.id).toBe("cara");
    const events = await s.auditLog.read("e-1");
    expect(types(events).slice(-2)).toEqual(["escalation.requested", "escalation.decided"]);
    expect(events.at(-1)!.data).toMatchObject({ reviewerId: "sam", action: "take_over" });
    expect(await s.auditLog.verify("e-1")).toMatchObject({ ok: true });
  });

  it("send back: the guidance goes to the agent, which answers again, confidently", async () => {
    const { model, seen } = unsureModel();
    const s = refundSetup([], { agent: { model, escalation: { reviewerRoles: ["supervisor"], confidence: { threshold: 0.7 } } } });
    const paused = await s.agent.invoke(ask("Is my refund approved?"), config("e-2"));
    const done = await s.agent.invoke(new Command({ resume: reviewed(waitingCase(paused), "send_back", "Check the delivery date first.") }), config("e-2", "sue"));
    expect(seen).toHaveLength(2);
    expect(seen[1]!.some((m) => HumanMessage.isInstance(m) && m.content === "Guidance from reviewer sue: Check the delivery date first.")).toBe(true);
    expect(done.messages.at(-1)!.content).toBe(JSON.stringify({ answer: "Refund 1042 looks fine.", confidence: 0.95 }));
    expect(pendingEscalation(await s.agent.getState(config("e-2")))).toBeUndefined();
  });

  it("a case sent back is not raised again for the same signals: the agent's next answer ends the run", async () => {
    const s = refundSetup([], { agent: { escalation: { reviewerRoles: ["supervisor"], checks: { score: () => "approve", income: () => "decline" } } } });
    const paused = await s.agent.invoke(ask("hello"), config("e-6"));
    const done = await s.agent.invoke(new Command({ resume: reviewed(waitingCase(paused), "send_back", "Income was verified by phone.") }), config("e-6", "sam"));
    expect(pendingEscalation(await s.agent.getState(config("e-6")))).toBeUndefined();
    expect(done.messages.at(-1)!.content).toBe("done after 1 turns");
    expect(s.model.callCount).toBe(2);
    // New input with the same disagreement, not after a send back, is escalated again.
    const again = await s.agent.invoke(ask("and now?"), config("e-6"));
    expect(pendingEscalation(again)?.signals.map((sg) => sg.kind)).toEqual(["checks_disagree"]);
  });

  it("checks that disagree escalate; close ends the case", async () => {
    const s = refundSetup([], {
      agent: { escalation: { reviewerRoles: ["supervisor"], checks: { score: () => "approve", income: () => "decline", fraud: () => undefined } } },
    });
    const paused = await s.agent.invoke(ask("hello"), config("e-3"));
    expect(pendingEscalation(paused)!.signals).toEqual([{ kind: "checks_disagree", detail: 'score: "approve"; income: "decline"' }]);
    // A payload that names the reviewer is a cross-check: it holds when it names the principal.
    const done = await s.agent.invoke(new Command({ resume: reviewed(waitingCase(paused), "close", "duplicate case", { reviewer: { id: "sam" } }) }), config("e-3", "sam"));
    expect(done.messages.at(-1)!.content).toBe("Case closed by sam: duplicate case");
  });

  it("a policy escalate verdict goes to the reviewer with the proposed call", async () => {
    const policy = definePolicy({
      name: "escalating",
      rules: [{ id: "orders.lookup", tools: ["lookup_order"], effect: "allow" }, { id: "refund.review", tools: ["issue_refund"], effect: "escalate", reason: "Refunds go to a supervisor this week" }],
    });
    const s = refundSetup([[refund("c1", 60, "1043")]], { policy, agent: { escalation: { reviewerRoles: ["supervisor"] } } });
    const paused = await s.agent.invoke(ask("Refund order 1043, $60."), config("e-4"));
    const request = pendingEscalation(paused)!;
    expect(request.signals).toEqual([{ kind: "policy", detail: "Refunds go to a supervisor this week" }]);
    expect(request.proposed.toolCalls).toEqual([{ id: "c1", name: "issue_refund", args: { orderId: "1043", amount: 60 } }]);
    expect(paused.messages.some((m) => ToolMessage.isInstance(m) && m.tool_call_id === "c1")).toBe(true);
    const requested = (await s.auditLog.read("e-4")).filter((e) => e.type === "escalation.requested");
    expect(requested.map((e) => e.data)).toEqual([
      {
        reason: "Refunds go to a supervisor this week",
        signals: [{ kind: "policy", detail: "Refunds go to a supervisor this week" }],
        toolCallIds: ["c1"],
        roles: ["supervisor"],
        requestedBy: { agentId: "support-agent", userId: "cara" },
      },
    ]);
    await s.agent.invoke(new Command({ resume: reviewed(request, "take_over", "Refunded by hand.") }), config("e-4", "sam"));
    expect(s.refunds()).toEqual([]);
  });

  it("refuses a reviewer without the role, the requester, a mismatched or missing principal, a malformed answer and one for another case; the case stays open", async () => {
    const { model } = unsureModel();
    const s = refundSetup([], { agent: { model, escalation: { reviewerRoles: ["supervisor"], confidence: { threshold: 0.7 } } } });
    const request = waitingCase(await s.agent.invoke(ask("Is my refund approved?"), config("e-5")));
    // Each answer carries the case's digest, so that only the property under test is wrong.
    // [resume value, who resumes (the run's user_id; null: nobody), expected code]
    const cases: [unknown, string | null, string][] = [
      [reviewed(request, "take_over", "ok"), "fay", "approval_unauthorized"],
      [reviewed(request, "take_over", "ok"), "cara", "approval_self_approval"],
      [reviewed(request, "close", "ok"), "nobody", "approval_unauthorized"],
      [reviewed(request, "take_over", "ok", { reviewer: { id: "sam" } }), "fay", "approval_principal_mismatch"],
      [reviewed(request, "take_over", "ok", { reviewer: { id: "sam" } }), null, "approval_unauthenticated"],
      [{ ...reviewed(request, "take_over", "ok"), action: "approve" }, "sam", "approval_resume_invalid"],
      [reviewed(request, "take_over", ""), "sam", "approval_resume_invalid"],
      // An answer that names no case, and one that names another.
      [{ action: "take_over", message: "ok" }, "sam", "approval_resume_invalid"],
      [reviewed({ digest: "0".repeat(64) }, "take_over", "ok"), "sam", "approval_digest_mismatch"],
    ];
    for (const [resume, by, code] of cases) {
      const cfg = by === null ? { configurable: { thread_id: "e-5" } } : config("e-5", by);
      const error = await s.agent.invoke(new Command({ resume }), cfg).catch((e: unknown) => e);
      expect(error, code).toBeInstanceOf(ApprovalError);
      expect((error as ApprovalError).code).toBe(code);
      expect(pendingEscalation(await s.agent.getState(config("e-5")))).toBeDefined();
    }
    expect(types(await s.auditLog.read("e-5")).filter((t) => t === "escalation.refused")).toHaveLength(cases.length);
    const newInput = await s.agent.invoke(ask("hello?"), config("e-5")).catch((e: unknown) => e);
    expect((newInput as { code?: string }).code).toBe("thread_awaiting_approval");
    // Only the newest answer counts: the refused ones are never checked again.
    const done = await s.agent.invoke(new Command({ resume: reviewed(request, "take_over", "Approved.") }), config("e-5", "sam"));
    expect(done.messages.at(-1)!.content).toBe("Approved.");
    expect((await s.auditLog.read("e-5")).at(-1)!.data).toMatchObject({ reviewerId: "sam", action: "take_over" });
  });
});

describe("context in the governed agent", () => {
  it("a missing required fact escalates before the model is called", async () => {
    const docs = async (): Promise<RetrievedItem[]> => [{ id: "o-1042", source: "orders", scope: "orders", labels: ["order"], content: "order 1042" }];
    const s = refundSetup([[refund("c1", 60, "1043")]], {
      policy: refundPolicy,
      agent: { context: { providers: [docs], required: [{ fact: "order" }, { fact: "receipt" }] }, escalation: { reviewerRoles: ["supervisor"] } },
    });
    const paused = await s.agent.invoke(ask(), config("x-1"));
    expect(pendingEscalation(paused)).toMatchObject({ signals: [{ kind: "missing_context", detail: "receipt" }], contextIds: ["o-1042"] });
    expect(s.model.callCount).toBe(0);
    const events = await s.auditLog.read("x-1");
    expect(types(events)).toEqual(["run.started", "identity.bound", "context.retrieved", "escalation.requested"]);
    expect(events[0]!.data).toMatchObject({ userId: "cara", request: { text: "Please refund order 1042, $740." } });
  });

  it("the model sees the retrieved items, and the thread's sensitivity only rises", async () => {
    let n = 0;
    const docs = async (): Promise<RetrievedItem[]> => (n++ === 0 ? [{ id: "o-1042", source: "orders", scope: "orders", labels: ["customer_data"], content: "order 1042: delivered" }] : []);
    const seen: BaseMessage[][] = [];
    const model = scriptedModel((messages: BaseMessage[]) => {
      seen.push(messages);
      return new AIMessage("ok");
    });
    const s = refundSetup([], { agent: { model, context: { providers: [docs] } } });
    const first = await s.agent.invoke(ask("order 1042?"), config("x-2"));
    expect(first.context.sensitivity).toEqual(["customer_data"]);
    expect(String(seen[0]![0]!.content)).toContain("[o-1042] (orders) order 1042: delivered");
    const second = await s.agent.invoke(ask("thanks"), config("x-2"));
    expect(second.context.sensitivity).toEqual(["customer_data"]);
  });
});

describe("what users type", () => {
  it("is redacted before it enters the thread when the agent has a redaction", async () => {
    const { defineRedaction, STANDARD_REDACTIONS } = await import("eart");
    const seen: BaseMessage[][] = [];
    const model = scriptedModel((messages: BaseMessage[]) => {
      seen.push(messages);
      return new AIMessage("noted");
    });
    const s = refundSetup([], { agent: { model, context: { providers: [async () => []], redaction: defineRedaction(STANDARD_REDACTIONS) } } });
    const done = await s.agent.invoke(ask("Refund to my card 4111 1111 1111 1111 please"), config("u-1"));
    expect(JSON.stringify(seen)).not.toContain("4111 1111");
    expect(String(done.messages[0]!.content)).toBe("Refund to my card [REDACTED:card_number] please");
    expect(JSON.stringify(await s.auditLog.read("u-1"))).not.toContain("4111 1111");
  });
});
