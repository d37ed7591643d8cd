import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { Command, MemorySaver } from "@langchain/langgraph";
import { ApprovalError, MemoryAuditLog, pendingApproval, pendingEscalation } from "eart";
import { scriptedModel } from "eart/testing";
import { describe, expect, it } from "vitest";
import { openOfferAgent } from "../../examples/hr-offer/agent.js";
import { salaryFiguresIn } from "../../examples/hr-offer/data.js";
import { offerScript } from "../../examples/hr-offer/model.js";
import { run } from "../../examples/hr-offer/scenario.js";
import { reviewed, waitingCase } from "../support/reviews.js";

const config = (threadId: string, userId: string) => ({ configurable: { thread_id: threadId, agent_id: "offer-agent", user_id: userId } });
const ask = (text: string) => ({ messages: [new HumanMessage(text)] });

async function setup(script: (messages: BaseMessage[]) => AIMessage = offerScript) {
  const model = scriptedModel(script);
  const auditLog = new MemoryAuditLog();
  const offers = await openOfferAgent({ model, auditLog, checkpointer: new MemorySaver() });
  const eventsOf = async (threadId: string, type: string) => (await auditLog.read(threadId)).filter((e) => e.type === type).map((e) => e.data as Record<string, unknown>);
  /** Every message of every model call, as text. */
  const modelInput = () => model.calls.flatMap((c) => (c.messages as BaseMessage[]).map((m) => JSON.stringify({ content: m.content, tool_calls: (m as AIMessage).tool_calls ?? [] })));
  return { ...offers, model, auditLog, eventsOf, modelInput };
}

const figuresIn = salaryFiguresIn;

describe("offer letters with compensation redacted by role", () => {
  it("keeps every salary figure from a recruiter's thread; the draft says the salary is pending", async () => {
    const s = await setup();
    const result = await s.agent.invoke(ask("Draft the offer letter for candidate CAND-7."), config("rita-1", "rita"));

    // What the model received: the band exists, its figures do not.
    expect(s.model.calls.length).toBe(2);
    for (const call of s.model.calls) {
      const text = (call.messages as BaseMessage[]).map((m) => String(m.content)).join("\n");
      expect(text).toContain('[band/L4] (compensation-bands) {"roleLevel":"L4","currency":"USD","minSalary":"[REDACTED:salary]","targetSalary":"[REDACTED:salary]"');
      expect(figuresIn(text)).toEqual([]);
    }
    expect(figuresIn(s.modelInput().join("\n"))).toEqual([]);

    // What it proposed: a draft without a salary.
    const [output] = await s.eventsOf("rita-1", "model.output");
    const [draftCall] = output!.toolCalls as { name: string; args: { baseSalary: unknown; body: string } }[];
    expect(draftCall).toMatchObject({ name: "draft_offer", args: { baseSalary: null } });
    expect(draftCall!.args.body).toContain("Base salary: pending");
    expect(s.drafts()).toEqual([
      expect.objectContaining({ draftId: "D-1", candidateId: "CAND-7", roleLevel: "L4", baseSalary: null, salaryStatus: "pending", toolCallId: "call_0_draft" }),
    ]);
    expect(result.messages.at(-1)!.content).toBe("Draft D-1 for Jordan Lee is ready; the salary is pending: an HR manager needs to add it.");
    expect(pendingApproval(result)).toBeUndefined();
    expect(s.sentOffers()).toEqual([]);

    // Nothing kept holds a figure: state (messages, context, decisions) and the audit log.
    const state = await s.agent.getState(config("rita-1", "rita"));
    expect(figuresIn(JSON.stringify(state.values))).toEqual([]);
    expect(figuresIn(JSON.stringify(await s.auditLog.read("rita-1")))).toEqual([]);
    expect(state.values.context.sensitivity).toEqual(["approval_status", "candidate", "compensation", "role_level", "salary_band"]);
    const [retrieved] = await s.eventsOf("rita-1", "context.retrieved");
    expect(retrieved!.redacted).toEqual(
      ["minSalary", "targetSalary", "maxSalary", "signOnBonus"].map((path) => ({ itemId: "band/L4", path, ruleId: "salary" })),
    );
    const [bound] = await s.eventsOf("rita-1", "identity.bound");
    expect(bound!.tools).toEqual(["draft_offer", "get_candidate"]);
    expect(await s.auditLog.verify("rita-1")).toMatchObject({ ok: true, count: 9 });
  });

  it("denies a recruiter's draft that states a salary anyway (a guessing model)", async () => {
    const guessing = (messages: BaseMessage[]) =>
      messages.some((m) => ToolMessage.isInstance(m))
        ? new AIMessage("I could not store that draft.")
        : new AIMessage({
            content: "",
            tool_calls: [{ id: "call_0_draft", name: "draft_offer", args: { candidateId: "CAND-7", roleLevel: "L4", baseSalary: 150_000, body: "Base salary: $150,000." } }],
          });
    const s = await setup(guessing);
    await s.agent.invoke(ask("Draft the offer letter for candidate CAND-7."), config("rita-2", "rita"));
    expect(s.drafts()).toEqual([]);
    expect((await s.eventsOf("rita-2", "policy.decided")).map((d) => [d.effect, d.policyIds])).toEqual([["deny", ["offer.draft.salary"]]]);
    expect(await s.eventsOf("rita-2", "tool.started")).toEqual([]);
  });

  it("redacts salary fields in tool results for a recruiter (get_candidate holds the expected salary)", async () => {
    const lookup = (messages: BaseMessage[]) =>
      messages.some((m) => ToolMessage.isInstance(m))
        ? new AIMessage("Looked the candidate up.")
        : new AIMessage({ content: "", tool_calls: [{ id: "call_0_lookup", name: "get_candidate", args: { candidateId: "CAND-7" } }] });
    const s = await setup(lookup);
    const result = await s.agent.invoke(ask("Look up candidate CAND-7."), config("rita-3", "rita"));
    const answer = result.messages.find((m: BaseMessage) => ToolMessage.isInstance(m));
    expect(String(answer?.content)).toContain("Jordan Lee");
    expect(String(answer?.content)).toContain('"expectedSalary":"[REDACTED:salary]"');
    expect(figuresIn(s.modelInput().join("\n"))).toEqual([]);
    expect(figuresIn(JSON.stringify(await s.auditLog.read("rita-3")))).toEqual([]);
  });

  it("shows the band to an HR manager, and sending the offer waits for an HR director", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ask("Draft and send the offer letter for candidate CAND-7."), config("hana-1", "hana"));

    const seen = (s.model.calls[0]!.messages as BaseMessage[]).map((m) => String(m.content)).join("\n");
    expect(seen).toContain('"minSalary":148000,"targetSalary":165000,"maxSalary":182000');
    expect(s.drafts()).toEqual([expect.objectContaining({ draftId: "D-1", baseSalary: 165_000, salaryStatus: "included", toolCallId: "call_0_draft" })]);
    expect(s.drafts()[0]!.body).toContain("Base salary: $165,000 per year.");
    // The detector the recruiter's tests rely on does find figures where they are visible.
    expect(figuresIn(seen)).toEqual(expect.arrayContaining(["148000", "165000", "182000"]));
    // The audit log is redacted for no one's roles: salary fields are redacted there even on an
    // HR manager's thread (the letter's own text is not a salary field).
    const audit = JSON.stringify(await s.auditLog.read("hana-1"));
    expect(audit).toContain("[REDACTED:salary]");
    expect(figuresIn(audit)).not.toContain("165000");
    const [retrieved] = await s.eventsOf("hana-1", "context.retrieved");
    expect(retrieved!.redacted).toEqual([]);
    expect(retrieved!.sensitivity).toContain("compensation");

    const request = pendingApproval(paused);
    expect(request?.requests).toEqual([
      expect.objectContaining({
        toolCallId: "call_1_send",
        name: "send_offer",
        args: { draftId: "D-1", candidateId: "CAND-7", roleLevel: "L4", baseSalary: 165_000 },
        approverRoles: ["hr-director"],
        policyIds: ["offer.send"],
        requestedBy: { agentId: "offer-agent", userId: "hana" },
      }),
    ]);
    expect(s.sentOffers()).toEqual([]);

    // The approver is the principal of the resuming run; the decision names the digest it saw.
    const digest = request!.requests[0]!.digest;
    const approve = (id: string) =>
      s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "call_1_send", type: "approve", digest }] } }), config("hana-1", id));
    const byRecruiter = await approve("rita").catch((e: unknown) => e);
    expect(byRecruiter).toBeInstanceOf(ApprovalError);
    expect((byRecruiter as ApprovalError).code).toBe("approval_unauthorized");
    const byHerself = await approve("hana").catch((e: unknown) => e);
    expect((byHerself as ApprovalError).code).toBe("approval_self_approval");
    expect(s.sentOffers()).toEqual([]);

    const result = await approve("dora");
    expect(result.messages.at(-1)!.content).toBe("The offer to Jordan Lee has been sent.");
    expect(s.sentOffers()).toEqual([{ draftId: "D-1", candidateId: "CAND-7", toolCallId: "call_1_send" }]);
    expect((await s.auditLog.read("hana-1")).map((e) => e.type)).toEqual([
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
      "approval.refused",
      "approval.decided",
      "tool.started",
      "tool.succeeded",
      "model.output",
      "run.completed",
    ]);
    expect(await s.eventsOf("hana-1", "approval.decided")).toEqual([expect.objectContaining({ name: "send_offer", approverId: "dora", status: "approved" })]);
    expect(await s.auditLog.verify("hana-1")).toMatchObject({ ok: true, count: 17 });
  });

  it("sends a level without a salary band to an HR manager before the model drafts anything", async () => {
    const s = await setup();
    const paused = await s.agent.invoke(ask("Draft the offer letter for candidate CAND-8."), config("rita-4", "rita"));
    expect(pendingEscalation(paused)).toMatchObject({
      signals: [{ kind: "missing_context", detail: "salary_band: the band of the role level" }],
      reviewerRoles: ["hr-manager"],
      contextIds: ["candidate/CAND-8", "requisition/REQ-412"],
    });
    expect(s.model.calls).toHaveLength(0);
    expect(s.drafts()).toEqual([]);
    const result = await s.agent.invoke(
      new Command({ resume: reviewed(waitingCase(paused), "close", "L7 band is being set by the comp committee; offer on hold.") }),
      config("rita-4", "hana"),
    );
    expect(result.messages.at(-1)!.content).toBe("Case closed by hana: L7 band is being set by the comp committee; offer on hold.");
    expect((await s.auditLog.read("rita-4")).map((e) => e.type)).toEqual(["run.started", "identity.bound", "context.retrieved", "escalation.requested", "escalation.decided"]);
  });

  it("plays the whole story with run()", async () => {
    const lines: string[] = [];
    const file = join(mkdtempSync(join(tmpdir(), "eart-hr-")), "hr.sqlite");
    const summary = await run((line) => lines.push(line), { file });

    expect(summary.recruiter).toMatchObject({
      retrievedIds: ["candidate/CAND-7", "requisition/REQ-311", "band/L4"],
      draft: { draftId: "D-1", baseSalary: null, salaryStatus: "pending" },
      paused: false,
      salaryFiguresInThread: [],
    });
    expect(summary.recruiter.sensitivity).toContain("compensation");
    expect(summary.recruiter.redacted.map((r) => r.path)).toEqual(["minSalary", "targetSalary", "maxSalary", "signOnBonus"]);
    expect(summary.recruiter.draft!.body).toContain("Base salary: pending");
    expect(summary.manager).toMatchObject({
      redacted: [],
      draft: { draftId: "D-2", baseSalary: 165_000, salaryStatus: "included" },
      approval: { toolCallId: "call_1_send", name: "send_offer", args: { draftId: "D-2" }, approverRoles: ["hr-director"] },
      refused: { approverId: "rita", code: "approval_unauthorized" },
      sent: [{ draftId: "D-2", candidateId: "CAND-7", toolCallId: "call_1_send" }],
      answer: "The offer to Jordan Lee has been sent.",
    });
    for (const a of Object.values(summary.audit)) expect(a.ok).toBe(true);
    const recruiterPart = lines.slice(0, lines.findIndex((l) => l.includes("== 2."))).join("\n");
    expect(figuresIn(recruiterPart)).toEqual([]);
    expect(lines.join("\n")).toContain("Base salary: $165,000 per year.");
  });
});
