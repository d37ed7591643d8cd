import { AIMessage, HumanMessage, ToolMessage } from "@langchain/core/messages";
import { Command, MemorySaver } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { MemoryAuditLog, pendingApproval, type AuditEvent } from "eart";
import { scriptedModel } from "eart/testing";
import { openSalesDiscountAgent } from "../../examples/sales-discount/agent.js";
import { salesScript } from "../../examples/sales-discount/model.js";
import { run } from "../../examples/sales-discount/scenario.js";

const config = (threadId: string, userId = "rita") => ({ configurable: { thread_id: threadId, agent_id: "sales-agent", user_id: userId } });
const types = (events: AuditEvent[]) => events.map((e) => e.type);
const ofType = (events: AuditEvent[], type: string) => events.filter((e) => e.type === type).map((e) => e.data as Record<string, unknown>);
const lastText = (result: { messages: { content: unknown }[] }) => String(result.messages.at(-1)?.content);

/** The example's agent with checkpoints and audit log in memory, and the scripted model kept to read its calls. */
async function setup() {
  const model = scriptedModel(salesScript);
  const auditLog = new MemoryAuditLog();
  const opened = await openSalesDiscountAgent({ model, checkpointer: new MemorySaver(), auditLog });
  // The approver is the principal of the resuming run; the decision names the digest of the call
  // it answers (kept per call, so a late answer after the run finished is the same valid answer).
  const digests = new Map<string, string>();
  const approve = async (threadId: string, approverId: string, toolCallId: string) => {
    const item = pendingApproval(await opened.agent.getState(config(threadId)))?.requests.find((r) => r.toolCallId === toolCallId);
    if (item) digests.set(`${threadId}/${toolCallId}`, item.digest);
    const digest = digests.get(`${threadId}/${toolCallId}`) ?? "no-pending-call";
    return opened.agent.invoke(new Command({ resume: { decisions: [{ toolCallId, type: "approve", digest }] } }), config(threadId, approverId));
  };
  return { ...opened, model, auditLog, approve };
}

describe("sales-discount: discounts up to 10% are the agent's, above need a sales manager", () => {
  it("applies an 8% discount at once, without a pause, from the retrieved quote", async () => {
    const s = await setup();
    const result = await s.agent.invoke({ messages: [new HumanMessage("Please apply 8% to quote Q-1001 because Acme renews early.")] }, config("t-small"));

    expect(pendingApproval(result)).toBeUndefined();
    expect(s.discounts()).toEqual([{ quoteId: "Q-1001", percent: 8, newTotalCents: 2_208_000, toolCallId: "call_0_discount" }]);
    expect(lastText(result)).toBe("Applied 8% to quote Q-1001 [quote:Q-1001]: $24,000.00 → $22,080.00.");

    const events = await s.auditLog.read("t-small");
    expect(types(events)).toEqual([
      "run.started",
      "identity.bound",
      "context.retrieved",
      "model.output",
      "policy.decided",
      "tool.started",
      "tool.succeeded",
      "model.output",
      "run.completed",
    ]);
    expect(ofType(events, "policy.decided")[0]).toMatchObject({ name: "apply_discount", effect: "allow", policyIds: ["discount.small"], userId: "rita" });
    // The internal cost sheet is out of the agent's scopes: dropped before the model saw anything.
    expect(ofType(events, "context.retrieved")[0]).toMatchObject({
      items: [{ id: "quote:Q-1001" }, { id: "account:Acme Tools" }],
      dropped: [{ id: "cost:Q-1001", scope: "pricing-internal" }],
    });
    const seen = JSON.stringify(s.model.calls.map((c) => c.messages));
    expect(seen).toContain("Q-1001");
    expect(seen).toContain("listTotalCents");
    expect(seen).not.toContain("unitCostCents");
    expect(await s.auditLog.verify("t-small")).toMatchObject({ ok: true, count: 9 });
  });

  it("pauses a 20% discount for a sales manager; the rep and a non-manager are refused; the manager's approval runs it exactly once", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(
      { messages: [new HumanMessage("Borealis wants 20% on quote Q-1002 because they sign for three years.")] },
      config("t-large"),
    );
    const approval = pendingApproval(paused);
    expect(approval?.requests).toEqual([
      expect.objectContaining({
        toolCallId: "call_0_discount",
        name: "apply_discount",
        args: { quoteId: "Q-1002", percent: 20, reason: "they sign for three years" },
        policyIds: ["discount.manager"],
        reasons: ["Discounts over 10% need a sales manager"],
        approverRoles: ["sales-manager"],
        requestedBy: { agentId: "sales-agent", userId: "rita" },
      }),
    ]);
    expect(s.discounts()).toEqual([]);

    // The requesting rep cannot approve their own discount; another rep is no manager.
    await expect(s.approve("t-large", "rita", "call_0_discount")).rejects.toMatchObject({ code: "approval_self_approval" });
    await expect(s.approve("t-large", "nick", "call_0_discount")).rejects.toMatchObject({ code: "approval_unauthorized" });
    await expect(s.approve("t-large", "mallory", "call_0_discount")).rejects.toMatchObject({ code: "approval_unauthorized" });
    expect(s.discounts()).toEqual([]);
    const still = pendingApproval(await s.agent.getState(config("t-large")));
    expect(still?.requests.map((r) => r.digest)).toEqual(approval!.requests.map((r) => r.digest));

    const done = await s.approve("t-large", "max", "call_0_discount");
    expect(pendingApproval(done)).toBeUndefined();
    expect(lastText(done)).toBe("Applied 20% to quote Q-1002 [quote:Q-1002]: $168,000.00 → $134,400.00.");
    expect(s.discounts()).toEqual([{ quoteId: "Q-1002", percent: 20, newTotalCents: 13_440_000, toolCallId: "call_0_discount" }]);
    expect(done.messages.filter((m) => ToolMessage.isInstance(m) && m.tool_call_id === "call_0_discount")).toHaveLength(1);

    // A second approval finds nothing waiting: refused, and nothing runs again.
    await expect(s.approve("t-large", "mia", "call_0_discount")).rejects.toMatchObject({ code: "thread_not_paused" });
    expect(s.discounts()).toHaveLength(1);

    const state = await s.agent.getState(config("t-large"));
    expect(state.values.decisions).toEqual([
      expect.objectContaining({ toolCallId: "call_0_discount", status: "executed", approvals: [expect.objectContaining({ approverId: "max", type: "approve" })] }),
    ]);
    const events = await s.auditLog.read("t-large");
    expect(types(events)).toEqual([
      "run.started",
      "identity.bound",
      "context.retrieved",
      "model.output",
      "policy.decided",
      "approval.requested",
      "approval.refused",
      "approval.refused",
      "approval.refused",
      "approval.decided",
      "tool.started",
      "tool.succeeded",
      "model.output",
      "run.completed",
    ]);
    expect(ofType(events, "approval.refused").map((d) => d.code)).toEqual(["approval_self_approval", "approval_unauthorized", "approval_unauthorized"]);
    expect(ofType(events, "approval.decided")).toEqual([expect.objectContaining({ name: "apply_discount", decision: "approve", approverId: "max", status: "approved" })]);
    expect(ofType(events, "tool.succeeded")).toEqual([expect.objectContaining({ toolCallId: "call_0_discount", name: "apply_discount" })]);
    expect(await s.auditLog.verify("t-large")).toMatchObject({ ok: true, count: 14 });
  });

  it("a sales manager who asks for a discount on their own quote cannot approve it either", async () => {
    const s = await setup();
    const paused = await s.agent.invoke({ messages: [new HumanMessage("Give 25% on quote Q-2001 because Delta doubles its seats.")] }, config("t-mia", "mia"));
    expect(pendingApproval(paused)?.requests[0]).toMatchObject({ approverRoles: ["sales-manager"], requestedBy: { userId: "mia" } });
    await expect(s.approve("t-mia", "mia", "call_0_discount")).rejects.toMatchObject({ code: "approval_self_approval" });
    expect(s.discounts()).toEqual([]);
    await s.approve("t-mia", "max", "call_0_discount");
    expect(s.discounts()).toEqual([{ quoteId: "Q-2001", percent: 25, newTotalCents: 2_250_000, toolCallId: "call_0_discount" }]);
  });

  it("denies a discount over 30%: no pause, nothing written, the model is told why", async () => {
    const s = await setup();
    const result = await s.agent.invoke({ messages: [new HumanMessage("Cobalt asks for 35% on quote Q-1003.")] }, config("t-over"));
    expect(pendingApproval(result)).toBeUndefined();
    expect(s.discounts()).toEqual([]);
    expect(lastText(result)).toBe("I did not discount quote Q-1003: Denied by policy: Discounts over 30% are not allowed");
    const events = await s.auditLog.read("t-over");
    expect(ofType(events, "policy.decided")).toEqual([expect.objectContaining({ effect: "deny", status: "denied", policyIds: ["discount.limit"] })]);
    expect(types(events)).not.toContain("tool.started");
    expect(types(events)).not.toContain("approval.requested");
    expect(result.messages.filter((m) => AIMessage.isInstance(m))).toHaveLength(2);
  });

  it("run() plays the story on a SQLite file and sums it up", async () => {
    const lines: string[] = [];
    const summary = await run((line) => lines.push(line));
    expect(summary.small).toMatchObject({ paused: false, answer: expect.stringContaining("Applied 8% to quote Q-1001") });
    expect(summary.large.request).toMatchObject({ name: "apply_discount", args: { quoteId: "Q-1002", percent: 20 }, approverRoles: ["sales-manager"] });
    expect(summary.large.refusals).toEqual([
      { approverId: "rita", code: "approval_self_approval" },
      { approverId: "nick", code: "approval_unauthorized" },
    ]);
    expect(summary.large.approvedBy).toBe("max");
    expect(summary.large.auditTypes.filter((t) => t === "tool.succeeded")).toHaveLength(1);
    expect(summary.overLimit).toMatchObject({ paused: false, answer: expect.stringContaining("Discounts over 30% are not allowed") });
    expect(summary.discounts.map((d) => [d.quoteId, d.percent])).toEqual([
      ["Q-1001", 8],
      ["Q-1002", 20],
    ]);
    expect(summary.verified).toEqual({
      "sales-Q-1001": { ok: true, count: 9 },
      "sales-Q-1002": { ok: true, count: 13 },
      "sales-Q-1003": { ok: true, count: 7 },
    });
    expect(summary.file).toMatch(/\.eart[/\\]sales-discount\.sqlite$/);
    const story = lines.join("\n");
    expect(story).toContain("dropped: cost:Q-1002 (scope pricing-internal not held by the agent)");
    expect(story).toContain("rita tries to approve: refused (approval_self_approval)");
    expect(story).toContain("verify sales-Q-1002: ok, 13 events");
  });
});
