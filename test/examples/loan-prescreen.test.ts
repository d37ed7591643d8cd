import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { Command, MemorySaver } from "@langchain/langgraph";
import { ApprovalError, MemoryAuditLog, pendingEscalation } from "eart";
import { scriptedModel } from "eart/testing";
import { describe, expect, it } from "vitest";
import { loanIdentities, openLoanAgent } from "../../examples/loan-prescreen/agent.js";
import { loanScript } from "../../examples/loan-prescreen/model.js";
import { loanPolicy } from "../../examples/loan-prescreen/policy.js";
import { run } from "../../examples/loan-prescreen/scenario.js";
import { reviewed, waitingCase } from "../support/reviews.js";

/** The thread acts for loan officer lena; a reviewer answers by resuming as themselves (the run's principal). */
const config = (threadId: string, userId = "lena") => ({ configurable: { thread_id: threadId, agent_id: "prescreen-agent", user_id: userId } });

async function setup() {
  const model = scriptedModel(loanScript);
  const auditLog = new MemoryAuditLog();
  const loan = await openLoanAgent({ model, auditLog, checkpointer: new MemorySaver() });
  const types = async (threadId: string) => (await auditLog.read(threadId)).map((e) => e.type);
  const eventsOf = async (threadId: string, type: string) => (await auditLog.read(threadId)).filter((e) => e.type === type).map((e) => e.data as Record<string, unknown>);
  /** Everything the model was sent, as one string per call. */
  const seen = () => model.calls.map((c) => (c.messages as BaseMessage[]).map((m) => String(m.content)).join("\n"));
  return { ...loan, model, auditLog, types, eventsOf, seen };
}

const ask = (text: string) => ({ messages: [new HumanMessage(text)] });

describe("loan pre-screening", () => {
  it("recommends an application within $50,000 without pausing, from scoped and redacted context", async () => {
    const s = await setup();
    const result = await s.agent.invoke(ask("Pre-screen loan application A-100."), config("a100"));

    expect(pendingEscalation(result)).toBeUndefined();
    expect((await s.agent.getState(config("a100"))).next).toEqual([]);
    expect(s.recommendations()).toEqual([{ applicationId: "A-100", amountCents: 2_500_000, toolCallId: "call_0_recommend" }]);
    expect(s.approvals()).toEqual([]);
    expect(JSON.parse(String(result.messages.at(-1)!.content))).toMatchObject({ applicationId: "A-100", recommendation: "recommend", confidence: 0.9 });

    // The model saw the documents it may see, with the national id redacted and no bank statement.
    const first = s.seen()[0]!;
    expect(first).toContain("[A-100/payslips] (document-store)");
    expect(first).toContain('"nationalId":"[REDACTED:national_id]"');
    expect(first).not.toContain("123-45-6789");
    expect(first).not.toContain("A-100/bank-statement");
    expect(first).not.toContain("DE89");

    expect(await s.types("a100")).toEqual([
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
    const [retrieved] = await s.eventsOf("a100", "context.retrieved");
    expect((retrieved!.items as { id: string }[]).map((i) => i.id)).toEqual(["A-100/application", "A-100/passport", "A-100/payslips", "credit/P-100"]);
    expect(retrieved!.dropped).toEqual([{ id: "A-100/bank-statement", source: "document-store", scope: "banking" }]);
    expect(retrieved!.redacted).toEqual([{ itemId: "A-100/passport", path: "nationalId", ruleId: "national_id" }]);
    expect(retrieved!.missing).toEqual([]);
    expect(JSON.stringify(await s.auditLog.read("a100"))).not.toContain("123-45-6789");
    const [decided] = await s.eventsOf("a100", "policy.decided");
    expect(decided).toMatchObject({ name: "recommend_loan", effect: "allow", policyIds: ["loan.recommend"] });
    expect(await s.auditLog.verify("a100")).toMatchObject({ ok: true, count: 9 });
  });

  it("never runs approve_loan: the model's proposal is refused and it recommends instead", async () => {
    const s = await setup();
    const result = await s.agent.invoke(ask("Approve loan application A-100."), config("approve"));

    expect(s.approvals()).toEqual([]);
    expect(s.recommendations()).toEqual([{ applicationId: "A-100", amountCents: 2_500_000, toolCallId: "call_1_recommend" }]);
    const proposed = result.messages.find((m: BaseMessage) => AIMessage.isInstance(m) && m.tool_calls?.[0]?.name === "approve_loan") as AIMessage | undefined;
    expect(proposed?.tool_calls?.[0]).toMatchObject({ id: "call_0_approve", args: { applicationId: "A-100", amountCents: 2_500_000 } });
    const decisions = await s.eventsOf("approve", "policy.decided");
    expect(decisions.map((d) => [d.name, d.effect, d.policyIds])).toEqual([
      ["approve_loan", "deny", ["eart.permissions"]],
      ["recommend_loan", "allow", ["loan.recommend"]],
    ]);
    expect((await s.eventsOf("approve", "tool.started")).map((d) => d.name)).toEqual(["recommend_loan"]);

    // The second lock: even an identity that held approve_loan would be denied by the policy.
    const identity = { ...loanIdentities().resolve({ agentId: "prescreen-agent", userId: "lena", source: "configurable.user_id" }) };
    const decision = await loanPolicy.decide({
      identity: { ...identity, tools: [...identity.tools, "approve_loan"] },
      tool: { name: "approve_loan", args: { applicationId: "A-100", amountCents: 100 } },
      context: { items: [], sensitivity: [] },
    });
    expect(decision).toMatchObject({ effect: "deny", policyIds: ["loan.approve.never"] });
  });

  it("escalates an application over $50,000 to an underwriter, who takes it over", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ask("Pre-screen loan application A-200."), config("a200"));

    const request = pendingEscalation(paused);
    expect((await s.auditLog.pending!({ role: "underwriter" })).filter((t) => t.threadId === "a200").map((t) => [t.kind, t.roles])).toEqual([["escalation", ["underwriter"]]]);
    expect(request).toMatchObject({
      type: "eart.escalation",
      threadId: "a200",
      reason: "Loans over $50,000 go to an underwriter",
      signals: [{ kind: "policy", detail: "Loans over $50,000 go to an underwriter" }],
      reviewerRoles: ["underwriter"],
      requestedBy: { agentId: "prescreen-agent", userId: "lena" },
      contextIds: ["A-200/application", "A-200/passport", "A-200/tax-return", "credit/P-200"],
    });
    expect(request!.proposed.toolCalls).toEqual([
      { id: "call_0_recommend", name: "recommend_loan", args: expect.objectContaining({ applicationId: "A-200", amountCents: 12_000_000 }) },
    ]);
    expect(s.recommendations()).toEqual([]);
    expect(await s.eventsOf("a200", "tool.started")).toEqual([]);
    const [decided] = await s.eventsOf("a200", "policy.decided");
    expect(decided).toMatchObject({ name: "recommend_loan", effect: "escalate", status: "escalated", policyIds: ["loan.underwriter"] });

    const result = await s.agent.invoke(
      new Command({ resume: reviewed(request!, "take_over", "Approved by underwriting at $120,000.") }),
      config("a200", "uma"),
    );
    const last = result.messages.at(-1)!;
    expect(AIMessage.isInstance(last)).toBe(true);
    expect(last.name).toBe("uma");
    expect(last.content).toBe("Approved by underwriting at $120,000.");
    expect((await s.agent.getState(config("a200"))).next).toEqual([]);
    expect(s.recommendations()).toEqual([]);
    expect(s.approvals()).toEqual([]);
    expect(await s.eventsOf("a200", "escalation.decided")).toEqual([
      { reviewerId: "uma", action: "take_over", message: "Approved by underwriting at $120,000.", reason: "Loans over $50,000 go to an underwriter", digest: expect.stringMatching(/^[0-9a-f]{64}$/), answerSeal: expect.any(String) },
    ]);
    const types = await s.types("a200");
    expect(types).toEqual([
      "run.started",
      "identity.bound",
      "context.retrieved",
      "model.output",
      "policy.decided",
      "escalation.requested",
      "escalation.decided",
    ]);
    expect(types.at(-1)).toBe("escalation.decided");
    expect(types.filter((t) => t.startsWith("tool.") || t === "run.completed")).toEqual([]);
    expect(await s.auditLog.verify("a200")).toMatchObject({ ok: true, count: types.length });
  });

  it("records a policy escalation as escalation.requested before it is decided", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ask("Pre-screen loan application A-200."), config("a200-audit"));
    await s.agent.invoke(new Command({ resume: reviewed(waitingCase(paused), "close", "Declined.") }), config("a200-audit", "uma"));
    const types = await s.types("a200-audit");
    expect(types).toContain("escalation.requested");
    expect(types.indexOf("policy.decided")).toBeLessThan(types.indexOf("escalation.requested"));
    expect(types.indexOf("escalation.requested")).toBeLessThan(types.indexOf("escalation.decided"));
    // Written right after the turn's policy.decided events, before the pause.
    expect(types).toEqual([
      "run.started",
      "identity.bound",
      "context.retrieved",
      "model.output",
      "policy.decided",
      "escalation.requested",
      "escalation.decided",
    ]);
    expect(await s.eventsOf("a200-audit", "escalation.requested")).toEqual([
      {
        reason: "Loans over $50,000 go to an underwriter",
        signals: [{ kind: "policy", detail: "Loans over $50,000 go to an underwriter" }],
        toolCallIds: ["call_0_recommend"],
        roles: ["underwriter"],
        requestedBy: { agentId: "prescreen-agent", userId: "lena" },
      },
    ]);
    expect(await s.eventsOf("a200-audit", "escalation.decided")).toEqual([
      { reviewerId: "uma", action: "close", message: "Declined.", reason: "Loans over $50,000 go to an underwriter", digest: expect.stringMatching(/^[0-9a-f]{64}$/), answerSeal: expect.any(String) },
    ]);
    expect(await s.auditLog.verify("a200-audit")).toMatchObject({ ok: true, count: 7 });
  });

  it("escalates a missing income proof before the model runs, and makes no recommendation", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ask("Pre-screen loan application A-300."), config("a300"));

    const request = pendingEscalation(paused);
    expect(request?.signals).toEqual([{ kind: "missing_context", detail: "income_proof: payslips or a tax return" }]);
    expect(request?.reason).toBe("Required context is missing: income_proof");
    expect(request?.proposed).toEqual({ text: "", toolCalls: [] });
    expect(request?.contextIds).toEqual(["A-300/application", "A-300/passport", "credit/P-300"]);
    expect(s.model.calls).toHaveLength(0);
    const [retrieved] = await s.eventsOf("a300", "context.retrieved");
    expect(retrieved!.missing).toEqual(["income_proof"]);
    expect(await s.eventsOf("a300", "escalation.requested")).toEqual([
      {
        reason: "Required context is missing: income_proof",
        signals: [{ kind: "missing_context", detail: "income_proof: payslips or a tax return" }],
        roles: ["underwriter"],
        requestedBy: { agentId: "prescreen-agent", userId: "lena" },
      },
    ]);
    // The case is in the underwriters' inbox, and in nobody else's.
    expect((await s.auditLog.pending!({ role: "underwriter" })).filter((t) => t.threadId === "a300").map((t) => [t.kind, t.roles])).toEqual([["escalation", ["underwriter"]]]);
    expect((await s.auditLog.pending!({ role: "applicant" })).filter((t) => t.threadId === "a300")).toEqual([]);

    const result = await s.agent.invoke(new Command({ resume: reviewed(request!, "close", "Asked the applicant for payslips.") }), config("a300", "uma"));
    expect(result.messages.at(-1)!.content).toBe("Case closed by uma: Asked the applicant for payslips.");
    expect(s.model.calls).toHaveLength(0);
    expect(s.recommendations()).toEqual([]);
    expect(await s.types("a300")).toEqual(["run.started", "identity.bound", "context.retrieved", "escalation.requested", "escalation.decided"]);
    expect(await s.auditLog.verify("a300")).toMatchObject({ ok: true, count: 5 });
  });

  it("refuses a reviewer without the underwriter role, changes nothing, then accepts an underwriter", async () => {
    const s = await setup();
    await s.agent.invoke(ask("Pre-screen loan application A-200."), config("refused"));
    const before = await s.agent.getState(config("refused"));
    const request = waitingCase(before);

    // The answer names the case: only who answers is wrong.
    const attempt = (id: string) =>
      s.agent.invoke(new Command({ resume: reviewed(request, "take_over", "Approved, looks fine.") }), config("refused", id));
    const error = await attempt("leo").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApprovalError);
    expect((error as ApprovalError).code).toBe("approval_unauthorized");
    // The loan officer the agent acts for may not review her own case either.
    const self = await attempt("lena").catch((e: unknown) => e);
    expect((self as ApprovalError).code).toBe("approval_self_approval");

    const after = await s.agent.getState(config("refused"));
    expect(after.values.messages).toHaveLength(before.values.messages.length);
    expect(after.values.escalation).toEqual(before.values.escalation);
    expect(pendingEscalation(after)).toEqual(request);
    expect(await s.eventsOf("refused", "escalation.decided")).toEqual([]);
    expect((await s.eventsOf("refused", "escalation.refused")).map((d) => d.code)).toEqual(["approval_unauthorized", "approval_self_approval"]);
    expect(s.recommendations()).toEqual([]);

    const result = await s.agent.invoke(
      new Command({ resume: reviewed(request, "take_over", "Referred for a business plan review.") }),
      config("refused", "uma"),
    );
    expect(result.messages.at(-1)).toMatchObject({ name: "uma", content: "Referred for a business plan review." });
    expect(await s.eventsOf("refused", "escalation.decided")).toEqual([
      expect.objectContaining({ reviewerId: "uma", action: "take_over" }),
    ]);
    expect(pendingEscalation(await s.agent.getState(config("refused")))).toBeUndefined();
    expect(await s.auditLog.verify("refused")).toMatchObject({ ok: true });
  });

  it("sends a case whose checks disagree to an underwriter, who decides it", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ask("Pre-screen loan application A-400."), config("a400"));

    expect(pendingEscalation(paused)?.signals).toEqual([{ kind: "checks_disagree", detail: 'creditScore: "eligible"; affordability: "refer"' }]);
    expect(JSON.parse(pendingEscalation(paused)!.proposed.text)).toMatchObject({ applicationId: "A-400", recommendation: "recommend" });
    // The guard reads the model's final answer, so the (non-binding) recommendation is already recorded.
    expect(s.recommendations()).toEqual([{ applicationId: "A-400", amountCents: 3_000_000, toolCallId: "call_0_recommend" }]);

    const decision = "Declined: debts exceed 40% of income.";
    const result = await s.agent.invoke(new Command({ resume: reviewed(waitingCase(paused), "take_over", decision) }), config("a400", "uma"));
    expect(result.messages.at(-1)).toMatchObject({ name: "uma", content: decision });
    expect(pendingEscalation(await s.agent.getState(config("a400")))).toBeUndefined();
    expect((await s.types("a400")).slice(-3)).toEqual(["run.completed", "escalation.requested", "escalation.decided"]);
    expect(await s.eventsOf("a400", "escalation.decided")).toEqual([expect.objectContaining({ reviewerId: "uma", action: "take_over" })]);
    expect(s.approvals()).toEqual([]);
  });

  it("plays the whole story with run()", async () => {
    const lines: string[] = [];
    const file = join(mkdtempSync(join(tmpdir(), "eart-loan-")), "loan.sqlite");
    const summary = await run((line) => lines.push(line), { file });

    expect(summary.withinLimit).toMatchObject({
      paused: false,
      refusedCalls: [{ name: "approve_loan", policyIds: ["eart.permissions"] }],
      recommendations: [{ applicationId: "A-100", amountCents: 2_500_000, toolCallId: "call_1_recommend" }],
      redactedPaths: ["A-100/passport:nationalId"],
      droppedIds: ["A-100/bank-statement"],
    });
    expect(summary.overLimit).toMatchObject({
      signals: ["policy"],
      refused: { reviewerId: "leo", code: "approval_unauthorized" },
      answeredBy: "uma",
      recommendations: [],
    });
    expect(summary.missingDocument).toMatchObject({
      signals: [{ kind: "missing_context", detail: "income_proof: payslips or a tax return" }],
      modelCalled: false,
      recommendations: [],
    });
    expect(summary.approvals).toEqual([]);
    for (const a of Object.values(summary.audit)) expect(a.ok).toBe(true);
    expect(summary.audit["loan-A-200"]!.types).toEqual(expect.arrayContaining(["escalation.refused", "escalation.decided"]));
    expect(summary.audit["loan-A-300"]!.types).toEqual(["run.started", "identity.bound", "context.retrieved", "escalation.requested", "escalation.decided"]);
    const text = lines.join("\n");
    expect(text).toContain("dropped (scope not held): A-100/bank-statement (banking)");
    expect(text).toContain("refused, approval_unauthorized");
    expect(text).not.toContain("123-45-6789");
  });
});
