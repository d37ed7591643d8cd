import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { Command, MemorySaver } from "@langchain/langgraph";
import { ApprovalError, MemoryAuditLog, pendingApproval, ThreadStateError } from "eart";
import { scriptedModel } from "eart/testing";
import { describe, expect, it } from "vitest";
import { openProcurementAgent } from "../../examples/procurement/agent.js";
import { procurementScript } from "../../examples/procurement/model.js";
import { run } from "../../examples/procurement/scenario.js";

/** The thread acts for analyst pia; an approver answers by resuming as themselves (the run's principal). */
const config = (threadId: string, userId = "pia") => ({ configurable: { thread_id: threadId, agent_id: "procurement-agent", user_id: userId } });
const ASK = { messages: [new HumanMessage("Review our supplier agreements for cost-saving opportunities.")] };
const TARGET = { contractId: "C-17", supplierId: "SUP-ACME", targetUnitPriceCents: 1_180 };

async function setup() {
  const model = scriptedModel(procurementScript);
  const auditLog = new MemoryAuditLog();
  const p = await openProcurementAgent({ model, auditLog, checkpointer: new MemorySaver() });
  const types = async (threadId: string) => (await auditLog.read(threadId)).map((e) => e.type);
  const eventsOf = async (threadId: string, type: string) => (await auditLog.read(threadId)).filter((e) => e.type === type).map((e) => e.data as Record<string, unknown>);
  return { ...p, model, auditLog, types, eventsOf };
}

describe("procurement renegotiation", () => {
  it("finds the contract priced above its benchmark, recommends it, and waits for a procurement manager", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ASK, config("p1"));

    // Contracts came through the LangChain retriever, spend and benchmarks through functions.
    const shown = (s.model.calls[0]!.messages as BaseMessage[]).map((m) => String(m.content)).join("\n");
    expect(shown).toContain('[contract/C-17] (contract-repository) {"contractId":"C-17"');
    expect(shown).toContain('[benchmark/C-17] (market-benchmark-feed) {"contractId":"C-17"');
    expect(shown).toContain('[spend/C-17] (erp-spend-cube) {"contractId":"C-17","annualUnits":12000');

    // Acme: $14.50 vs $11.80 on 12,000 boxes = $32,400 a year; the larger of the two above benchmark.
    expect(s.recommendations()).toEqual([{ ...TARGET, toolCallId: "call_0_recommend" }]);
    const [recommendCall] = await s.eventsOf("p1", "tool.started");
    expect(recommendCall).toMatchObject({ name: "recommend_renegotiation", toolCallId: "call_0_recommend" });
    const firstOutput = (await s.eventsOf("p1", "model.output"))[0]!.toolCalls as { args: Record<string, unknown> }[];
    expect(firstOutput[0]!.args).toMatchObject({ ...TARGET, estimatedAnnualSavingsCents: 3_240_000 });

    const request = pendingApproval(paused);
    expect(request?.requests).toHaveLength(1);
    expect(request!.requests[0]).toMatchObject({
      toolCallId: "call_1_initiate",
      name: "initiate_renegotiation",
      args: TARGET,
      approverRoles: ["procurement-manager"],
      policyIds: ["procurement.initiate"],
      requestedBy: { agentId: "procurement-agent", userId: "pia" },
    });
    expect(s.renegotiations()).toEqual([]);
  });

  it("refuses a non-manager approver and the requester, then opens the renegotiation once on a manager's approval", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ASK, config("p2"));
    const pending = pendingApproval(paused)!.requests[0]!;
    const approve = (id: string) =>
      s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: pending.toolCallId, type: "approve", digest: pending.digest }] } }), config("p2", id));

    const before = await s.agent.getState(config("p2"));
    const refused = await approve("fred").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ApprovalError);
    expect((refused as ApprovalError).code).toBe("approval_unauthorized");
    const self = await approve("pia").catch((e: unknown) => e);
    expect((self as ApprovalError).code).toBe("approval_self_approval");
    expect(s.renegotiations()).toEqual([]);
    const after = await s.agent.getState(config("p2"));
    expect(after.values.messages).toHaveLength(before.values.messages.length);
    expect(pendingApproval(after)).toEqual(pendingApproval(before));

    const result = await approve("max");
    expect(result.messages.at(-1)!.content).toBe("Renegotiation of C-17 with Acme Safety Supply is open, targeting $11.80 per unit: about $32,400.00 a year.");
    expect(s.renegotiations()).toEqual([{ ...TARGET, toolCallId: "call_1_initiate" }]);

    // The approval is used: a second one finds nothing waiting, and nothing runs again.
    const again = await approve("max").catch((e: unknown) => e);
    expect(again).toBeInstanceOf(ThreadStateError);
    expect((again as ThreadStateError).code).toBe("thread_not_paused");
    expect(s.renegotiations()).toHaveLength(1);
    expect(s.recommendations()).toHaveLength(1);
  });

  it("leaves the whole round trip in a verifiable audit trail", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ASK, config("p3"));
    const pending = pendingApproval(paused)!.requests[0]!;
    await s.agent
      .invoke(new Command({ resume: { decisions: [{ toolCallId: pending.toolCallId, type: "approve", digest: pending.digest }] } }), config("p3", "fred"))
      .catch(() => undefined);
    await s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: pending.toolCallId, type: "approve", digest: pending.digest }] } }), config("p3", "max"));

    expect(await s.types("p3")).toEqual([
      "run.started",
      "identity.bound",
      "context.retrieved",
      "model.output",
      "policy.decided",
      "tool.started",
      "tool.succeeded",
      "model.output",
      "policy.decided",
      "approval.requested",
      "approval.refused",
      "approval.decided",
      "tool.started",
      "tool.succeeded",
      "model.output",
      "run.completed",
    ]);
    const [retrieved] = await s.eventsOf("p3", "context.retrieved");
    expect((retrieved!.items as { id: string; source: string; scope: string }[]).map((i) => `${i.id} ${i.scope}`)).toEqual([
      "contract/C-17 contracts",
      "contract/C-22 contracts",
      "contract/C-31 contracts",
      "spend/C-17 spend",
      "spend/C-22 spend",
      "spend/C-31 spend",
      "benchmark/C-17 market_data",
      "benchmark/C-22 market_data",
      "benchmark/C-31 market_data",
    ]);
    expect((await s.eventsOf("p3", "policy.decided")).map((d) => [d.name, d.effect, d.policyIds])).toEqual([
      ["recommend_renegotiation", "allow", ["procurement.recommend"]],
      ["initiate_renegotiation", "require_approval", ["procurement.initiate"]],
    ]);
    const [requested] = await s.eventsOf("p3", "approval.requested");
    expect((requested!.requests as { toolCallId: string; approverRoles: string[] }[]).map((r) => [r.toolCallId, r.approverRoles])).toEqual([
      ["call_1_initiate", ["procurement-manager"]],
    ]);
    const [refusal] = await s.eventsOf("p3", "approval.refused");
    expect(refusal).toMatchObject({ code: "approval_unauthorized", details: { approverId: "fred", toolCallId: "call_1_initiate" } });
    const [decided] = await s.eventsOf("p3", "approval.decided");
    expect(decided).toMatchObject({ toolCallId: "call_1_initiate", name: "initiate_renegotiation", decision: "approve", approverId: "max", status: "approved", digest: pending.digest });
    expect((await s.eventsOf("p3", "tool.succeeded")).map((d) => d.name)).toEqual(["recommend_renegotiation", "initiate_renegotiation"]);
    expect(await s.auditLog.verify("p3")).toMatchObject({ ok: true, count: 16 });
  });

  it("opens nothing when the manager rejects, and tells the agent why", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ASK, config("p4"));
    const pending = pendingApproval(paused)!.requests[0]!;
    const result = await s.agent.invoke(
      new Command({
        resume: { decisions: [{ toolCallId: pending.toolCallId, type: "reject", digest: pending.digest, message: "Acme's contract renews in March; wait for the tender." }] },
      }),
      config("p4", "max"),
    );
    expect(s.renegotiations()).toEqual([]);
    expect(String(result.messages.at(-1)!.content)).toContain("was not opened");
    expect(String(result.messages.at(-1)!.content)).toContain("wait for the tender");
    expect(await s.eventsOf("p4", "approval.decided")).toEqual([expect.objectContaining({ decision: "reject", approverId: "max", status: "rejected" })]);
    expect((await s.eventsOf("p4", "tool.started")).map((d) => d.name)).toEqual(["recommend_renegotiation"]);
  });

  it("plays the whole story with run()", async () => {
    const lines: string[] = [];
    const file = join(mkdtempSync(join(tmpdir(), "eart-procurement-")), "procurement.sqlite");
    const summary = await run((line) => lines.push(line), { file });

    expect(summary.retrievedIds).toHaveLength(9);
    expect(summary.recommendations).toEqual([{ ...TARGET, toolCallId: "call_0_recommend" }]);
    expect(summary.approval).toEqual({
      toolCallId: "call_1_initiate",
      name: "initiate_renegotiation",
      args: TARGET,
      approverRoles: ["procurement-manager"],
      policyIds: ["procurement.initiate"],
    });
    expect(summary.renegotiationsBeforeApproval).toEqual([]);
    expect(summary.refused).toEqual({ approverId: "fred", code: "approval_unauthorized" });
    expect(summary.renegotiations).toEqual([{ ...TARGET, toolCallId: "call_1_initiate" }]);
    expect(summary.answer).toContain("about $32,400.00 a year");
    expect(summary.audit).toMatchObject({ ok: true, count: 16 });
    expect(summary.audit.types.filter((t) => t.startsWith("approval."))).toEqual(["approval.requested", "approval.refused", "approval.decided"]);
    expect(lines.join("\n")).toContain("approver roles: procurement-manager");
  });
});
