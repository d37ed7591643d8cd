import { AIMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { eartErrorOf, pendingApproval, pendingRecovery } from "eart";
import { middlewareRefundSetup } from "../support/middleware-agent.js";
import { ask, config, refund } from "../support/refund.js";

/**
 * Under `governanceMiddleware` the approval is answered in the tool step of the waiting call, and
 * the calls it lets run run in that same step (one pass of every afterModel hook per model
 * answer). If that step stops before it is saved (a cancelled run, a crash), LangGraph runs it
 * again with the answer it stored, under whoever continues the thread. The answer eart accepted
 * stands, as from who gave it (the audit log records it), recorded once; a later answer to the
 * same request changes nothing and is recorded as refused. Here a run is cancelled while the
 * approved refund is in its tool, and the people around the thread try to make use of it.
 */

const approve = () => new Command({ resume: { decisions: [{ type: "approve" }] } });
const rejectAll = () => new Command({ resume: { decisions: [{ type: "reject", message: "changed my mind" }] } });

/** A thread whose approved $740 refund was cancelled inside its tool, before the tool acted. */
async function cancelledWhileRunning(threadId: string) {
  const controller = new AbortController();
  let calls = 0;
  const s = middlewareRefundSetup([[refund("c1", 740)], []], {
    wrapRefund: (real) => async (args, cfg) => {
      calls += 1;
      if (calls === 1) {
        // The supervisor's run is cancelled while the tool is running (it had not acted yet).
        controller.abort(new Error("the supervisor's client went away"));
        throw new Error("cancelled");
      }
      return real(args, cfg);
    },
  });
  await s.agent.invoke(ask(), config(threadId));
  const cancelled = await s.agent.invoke(approve(), { ...config(threadId, "sam"), signal: controller.signal }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(cancelled).toBeDefined();
  expect(s.refunds()).toEqual([]);
  const events = await s.auditLog.read(threadId);
  expect(events.filter((e) => e.type === "approval.decided").map((e) => [e.data.toolCallId, e.data.approverId])).toEqual([["c1", "sam"]]);
  expect(events.filter((e) => e.type === "tool.cancelled").map((e) => e.data.outcome)).toEqual(["unknown"]);
  return { ...s, refundCalls: () => calls };
}

describe("an approval accepted in a step that did not finish", () => {
  it("the customer's continue does not turn sam's approval into her own (no self-approval refusal, no second approval.decided): the refund, whose outcome is unknown, goes to a human, never runs blindly", async () => {
    const s = await cancelledWhileRunning("stand-cara");
    const out = await s.agent.invoke(null as never, config("stand-cara", "cara"));
    const events = await s.auditLog.read("stand-cara");
    expect(events.filter((e) => e.type === "approval.decided")).toHaveLength(1);
    expect(events.filter((e) => e.type === "approval.refused")).toEqual([]);
    expect(pendingRecovery(out)?.requests.map((r) => [r.toolCallId, r.reason])).toEqual([["c1", "outcome_unknown"]]);
    expect(s.refundCalls()).toBe(1);
    expect(s.refunds()).toEqual([]);
    expect(await s.auditLog.verify("stand-cara")).toMatchObject({ ok: true });
  });

  it("a second supervisor's reject after the accepted approval is refused before it is stored (approval_already_answered, audited); a continue then acts on sam's approval (to recovery), once", async () => {
    const s = await cancelledWhileRunning("stand-sue");
    expect(eartErrorOf(await s.agent.invoke(rejectAll(), config("stand-sue", "sue")).catch((e: unknown) => e))?.code).toBe("approval_already_answered");
    const out = await s.agent.invoke(null as never, config("stand-sue", "sue"));
    const events = await s.auditLog.read("stand-sue");
    expect(events.filter((e) => e.type === "approval.decided").map((e) => [e.data.approverId, e.data.decision])).toEqual([["sam", "approve"]]);
    expect(events.filter((e) => e.type === "approval.refused").map((e) => e.data.code)).toEqual(["approval_already_answered"]);
    expect(pendingRecovery(out)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(s.refundCalls()).toBe(1);
    expect(await s.auditLog.verify("stand-sue")).toMatchObject({ ok: true });
  });

  it("the customer's own answer after the accepted approval (an edit to $9,000) is refused before it is stored, audited; nothing runs at $9,000", async () => {
    const s = await cancelledWhileRunning("stand-cara-answer");
    const edit = new Command({ resume: { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 9000 } } }] } });
    expect(eartErrorOf(await s.agent.invoke(edit, config("stand-cara-answer", "cara")).catch((e: unknown) => e))?.code).toBe("approval_already_answered");
    await s.agent.invoke(null as never, config("stand-cara-answer", "cara"));
    const events = await s.auditLog.read("stand-cara-answer");
    expect(events.filter((e) => e.type === "approval.decided").map((e) => [e.data.approverId, e.data.decision])).toEqual([["sam", "approve"]]);
    expect(events.filter((e) => e.type === "approval.refused").map((e) => e.data.code)).toEqual(["approval_already_answered"]);
    expect(s.refunds().filter((r) => r.amount === 9000)).toEqual([]);
    expect(s.refundCalls()).toBe(1);
  });

  it("an answer that was refused (the customer's self-approval) is never taken as accepted: her continue asks again, and sam's approval then runs the refund once", async () => {
    const s = middlewareRefundSetup([[refund("c1", 740)], []]);
    await s.agent.invoke(ask(), config("stand-refused"));
    expect(eartErrorOf(await s.agent.invoke(approve(), config("stand-refused", "cara")).catch((e: unknown) => e))?.code).toBe("approval_self_approval");
    const continued = await s.agent.invoke(null as never, config("stand-refused", "cara")).catch((e: unknown) => e);
    expect(s.refunds()).toEqual([]);
    expect(eartErrorOf(continued)?.code).toBe("thread_awaiting_approval");
    const paused = await s.agent.graph.getState(config("stand-refused"));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const done = await s.agent.invoke(approve(), config("stand-refused", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(AIMessage.isInstance(done.messages.at(-1))).toBe(true);
  });
});
