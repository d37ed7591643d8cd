import { AIMessage, type BaseMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { tool } from "@langchain/core/tools";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { pendingApproval, pendingEscalation, pendingHumanTask, pendingRecovery, ToolPermissionError } from "eart";
import { HumanTaskEnvelopeSchema } from "../../src/human-tasks/protocol.js";
import { scriptedModel } from "eart/testing";
import { ask, config, refund, refundSetup } from "../support/refund.js";
import { reviewed, waitingCase } from "../support/reviews.js";

/** The three human tasks of the refund agent: an approval, a recovery and an escalation, paused. */
async function pausedOnEach() {
  const approval = refundSetup([[refund("c1", 740)]]);
  await approval.agent.invoke(ask(), config("h-approval"));

  const refusedByPayments = tool(
    async () => {
      throw new ToolPermissionError("payments refused the agent's key");
    },
    { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) },
  );
  const recovery = refundSetup([[refund("c1", 50)]], { agent: { recoveryRoles: ["supervisor"] }, tools: (t) => [t.lookupOrder, refusedByPayments] });
  await recovery.agent.invoke(ask(), config("h-recovery"));

  const unsure = scriptedModel((_: BaseMessage[]) => new AIMessage(JSON.stringify({ answer: "Probably fine.", confidence: 0.2 })));
  const escalation = refundSetup([], { agent: { model: unsure, escalation: { reviewerRoles: ["supervisor"], confidence: { threshold: 0.7 } } } });
  await escalation.agent.invoke(ask("Is my refund approved?"), config("h-escalation"));

  return {
    approval: { ...approval, state: await approval.agent.getState(config("h-approval")) },
    recovery: { ...recovery, state: await recovery.agent.getState(config("h-recovery")) },
    escalation: { ...escalation, state: await escalation.agent.getState(config("h-escalation")) },
  };
}

describe("one human-task protocol: approval, recovery and escalation", () => {
  it("every kind carries the same envelope: type, thread, requester, since, and the roles that may answer", async () => {
    const { approval, recovery, escalation } = await pausedOnEach();
    const tasks = [pendingHumanTask(approval.state), pendingHumanTask(recovery.state), pendingHumanTask(escalation.state)];
    expect(tasks.map((t) => t?.type)).toEqual(["eart.approval", "eart.recovery", "eart.escalation"]);
    for (const [task, thread] of tasks.map((t, i) => [t, ["h-approval", "h-recovery", "h-escalation"][i]] as const)) {
      expect(HumanTaskEnvelopeSchema.parse(task)).toMatchObject({
        threadId: thread,
        requestedBy: { agentId: "support-agent", userId: "cara" },
        roles: ["supervisor"],
      });
      expect(Number.isNaN(Date.parse(task!.since))).toBe(false);
    }
    // The kind's own reader sees the same value, with its own fields.
    expect(pendingApproval(approval.state)).toMatchObject({ ...tasks[0], requests: [{ toolCallId: "c1", approverRoles: ["supervisor"] }] });
    expect(pendingRecovery(recovery.state)).toMatchObject({ ...tasks[1], requests: [{ toolCallId: "c1", reason: "permission_denied" }] });
    expect(pendingEscalation(escalation.state)).toMatchObject({ ...tasks[2], reviewerRoles: ["supervisor"] });
    // A finished or never-paused thread has none.
    expect(pendingHumanTask(await approval.agent.getState(config("nobody")))).toBeUndefined();
  });

  it("one answer check for all three: unauthenticated, self-decided, unauthorised and misnamed answers are refused alike", async () => {
    const { approval, recovery, escalation } = await pausedOnEach();
    const digestOf = (r: { requests: { digest: string }[] } | undefined) => r!.requests[0]!.digest;
    const answers = {
      approval: { agent: approval.agent, thread: "h-approval", answer: { decisions: [{ toolCallId: "c1", type: "approve", digest: digestOf(pendingApproval(approval.state)) }] }, named: "approver" },
      recovery: { agent: recovery.agent, thread: "h-recovery", answer: { decisions: [{ toolCallId: "c1", type: "abandon", digest: digestOf(pendingRecovery(recovery.state)) }] }, named: "resolver" },
      escalation: { agent: escalation.agent, thread: "h-escalation", answer: reviewed(waitingCase(escalation.state), "close", "Closed."), named: "reviewer" },
    };
    for (const [kind, { agent, thread, answer, named }] of Object.entries(answers)) {
      const noPrincipal = { configurable: { thread_id: thread } };
      const refusal = async (resume: unknown, cfg: object) => {
        try {
          await agent.invoke(new Command({ resume }), cfg);
        } catch (error) {
          return (error as { code?: string }).code;
        }
        return "accepted";
      };
      expect([kind, await refusal(answer, noPrincipal)]).toEqual([kind, "approval_unauthenticated"]);
      expect([kind, await refusal(answer, config(thread, "cara"))]).toEqual([kind, "approval_self_approval"]);
      // omar is another customer, not a supervisor.
      expect([kind, await refusal(answer, config(thread, "omar"))]).toEqual([kind, "approval_unauthorized"]);
      expect([kind, await refusal({ ...answer, [named]: { id: "sue" } }, config(thread, "sam"))]).toEqual([kind, "approval_principal_mismatch"]);
      // Still waiting, and the right person can answer.
      expect(pendingHumanTask(await agent.getState(config(thread)))?.type).toBe(`eart.${kind}`);
      await agent.invoke(new Command({ resume: answer }), config(thread, "sam"));
      expect(pendingHumanTask(await agent.getState(config(thread)))).toBeUndefined();
    }
    expect(approval.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(recovery.refunds()).toEqual([]);
  });
});
