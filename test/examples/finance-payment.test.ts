import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HumanMessage, ToolMessage } from "@langchain/core/messages";
import Database from "better-sqlite3";
import { Command, MemorySaver } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { MemoryAuditLog, pendingApproval, pendingRecovery, type AuditEvent, type ContextItem, type DecisionRecord } from "eart";
import { requestOf, scriptedModel } from "eart/testing";
import { openFinancePaymentAgent } from "../../examples/finance-payment/agent.js";
import { financeScript } from "../../examples/finance-payment/model.js";
import { financePolicy } from "../../examples/finance-payment/policy.js";
import { run } from "../../examples/finance-payment/scenario.js";

const IBAN = "DE89 3704 0044 0532 0130 00";
const config = (threadId: string, userId = "amy") => ({ configurable: { thread_id: threadId, agent_id: "finance-agent", user_id: userId } });
const types = (events: AuditEvent[]) => events.map((e) => e.type);
const ofType = (events: AuditEvent[], type: string) => events.filter((e) => e.type === type).map((e) => e.data as Record<string, unknown>);
const lastText = (result: { messages: { content: unknown }[] }) => String(result.messages.at(-1)?.content);

/** The example's agent with checkpoints and audit log in memory, and the scripted model kept to read its calls. */
async function setup() {
  const model = scriptedModel(financeScript);
  const auditLog = new MemoryAuditLog();
  const opened = await openFinancePaymentAgent({ model, checkpointer: new MemorySaver(), auditLog });
  const ask = (threadId: string, text: string, userId = "amy") => opened.agent.invoke({ messages: [new HumanMessage(text)] }, config(threadId, userId));
  // The approver is the principal of the resuming run; the decision names the digest of the call
  // it answers (kept per thread, so a late answer after the run finished is the same valid answer).
  const digests = new Map<string, string>();
  const decide = async (threadId: string, approverId: string, type: "approve" | "reject", message?: string) => {
    const item = pendingApproval(await opened.agent.getState(config(threadId)))?.requests.find((r) => r.toolCallId === "call_1_execute");
    if (item) digests.set(threadId, item.digest);
    const digest = digests.get(threadId) ?? "no-pending-call";
    return opened.agent.invoke(
      new Command({ resume: { decisions: [{ toolCallId: "call_1_execute", type, digest, ...(message ? { message } : {}) }] } }),
      config(threadId, approverId),
    );
  };
  const state = async (threadId: string, userId = "amy") =>
    (await opened.agent.getState(config(threadId, userId))).values as { decisions: DecisionRecord[]; context: { items: ContextItem[]; sensitivity: string[] } };
  return { ...opened, model, auditLog, ask, decide, state };
}

describe("finance-payment: the agent prepares, a human in finance always releases", () => {
  it("asks a finance controller, not a role nobody holds, about a release the bank link failed; the clerk may not answer it", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "eart-finance-")), "finance.sqlite");
    const opened = await openFinancePaymentAgent({ model: scriptedModel(financeScript), file });
    // The bank link is down: every release fails.
    const bank = new Database(file);
    bank.exec(`CREATE TRIGGER bank_down BEFORE INSERT ON payment_executions BEGIN SELECT RAISE(ABORT, 'bank link down'); END;`);
    try {
      await opened.agent.invoke({ messages: [new HumanMessage("Pay invoice INV-7731.")] }, config("t-bank", "amy"));
      const asked = pendingApproval(await opened.agent.getState(config("t-bank")))!.requests[0]!;
      await opened.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: asked.toolCallId, type: "approve", digest: asked.digest }] } }), config("t-bank", "fred")).catch(() => undefined);
      const recovery = pendingRecovery(await opened.agent.getState(config("t-bank")));
      expect(recovery?.roles).toEqual(["finance"]);
      const call = recovery!.requests[0]!;
      const abandon = (userId: string) =>
        opened.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: call.toolCallId, type: "abandon", digest: call.digest }] } }), config("t-bank", userId));
      await expect(abandon("amy")).rejects.toMatchObject({ code: "approval_self_approval" });
      await expect(abandon("tom")).rejects.toMatchObject({ code: "approval_unauthorized" });
      await abandon("fiona");
      expect(pendingRecovery(await opened.agent.getState(config("t-bank")))).toBeUndefined();
      expect(opened.executions()).toEqual([]);
    } finally {
      bank.close();
      await opened.close();
    }
  });

  it("prepares the payment on its own, pauses the execution for finance, and executes it once when finance approves", async () => {
    const s = await setup();
    const paused = await s.ask("t-pay", "Pay invoice INV-7731.");

    // Prepared (allowed), not executed: the execution waits for finance.
    expect(s.payments()).toEqual([{ paymentId: "PAY-INV-7731", invoiceId: "INV-7731", vendorId: "V-204", amountCents: 1_284_500, status: "prepared" }]);
    expect(s.executions()).toEqual([]);
    expect(pendingApproval(paused)?.requests).toEqual([
      expect.objectContaining({
        toolCallId: "call_1_execute",
        name: "execute_payment",
        args: { paymentId: "PAY-INV-7731", vendorId: "V-204", amountCents: 1_284_500 },
        policyIds: ["payment.finance"],
        approverRoles: ["finance"],
        requestedBy: { agentId: "finance-agent", userId: "amy" },
      }),
    ]);

    // The clerk who asked, a treasurer and another clerk: none of them is finance's approval.
    await expect(s.decide("t-pay", "amy", "approve")).rejects.toMatchObject({ code: "approval_self_approval" });
    await expect(s.decide("t-pay", "tom", "approve")).rejects.toMatchObject({ code: "approval_unauthorized" });
    await expect(s.decide("t-pay", "alan", "approve")).rejects.toMatchObject({ code: "approval_unauthorized" });
    expect(s.executions()).toEqual([]);
    expect(pendingApproval(await s.agent.getState(config("t-pay")))?.requests.map((r) => r.toolCallId)).toEqual(["call_1_execute"]);

    const done = await s.decide("t-pay", "fred", "approve");
    expect(lastText(done)).toBe("Payment PAY-INV-7731 of EUR 12,845.00 was released [invoice:INV-7731].");
    expect(s.executions()).toEqual([{ paymentId: "PAY-INV-7731", amountCents: 1_284_500, toolCallId: "call_1_execute" }]);
    expect(s.payments()[0]?.status).toBe("executed");

    // Nothing waits any more: a second approval is refused and nothing is paid twice.
    await expect(s.decide("t-pay", "fiona", "approve")).rejects.toMatchObject({ code: "thread_not_paused" });
    expect(s.executions()).toHaveLength(1);

    expect((await s.state("t-pay")).decisions.map((d) => [d.name, d.status, d.approvals.map((a) => a.approverId)])).toEqual([
      ["prepare_payment", "executed", []],
      ["execute_payment", "executed", ["fred"]],
    ]);
    const events = await s.auditLog.read("t-pay");
    expect(types(events)).toEqual([
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
      "approval.refused",
      "approval.decided",
      "tool.started",
      "tool.succeeded",
      "model.output",
      "run.completed",
    ]);
    expect(ofType(events, "policy.decided").map((d) => [d.name, d.effect, d.policyIds])).toEqual([
      ["prepare_payment", "allow", ["payment.prepare"]],
      ["execute_payment", "require_approval", ["payment.finance"]],
    ]);
    expect(ofType(events, "approval.refused").map((d) => d.code)).toEqual(["approval_self_approval", "approval_unauthorized", "approval_unauthorized"]);
    expect(ofType(events, "approval.decided")).toEqual([expect.objectContaining({ name: "execute_payment", decision: "approve", approverId: "fred" })]);
    expect(ofType(events, "tool.succeeded").map((d) => d.name)).toEqual(["prepare_payment", "execute_payment"]);
    expect(await s.auditLog.verify("t-pay")).toMatchObject({ ok: true, count: 18 });
  });

  it("even a one-cent payment waits for finance: no rule lets the agent execute a payment", async () => {
    const s = await setup();
    const paused = await s.ask("t-cent", "Pay invoice INV-7733.");
    expect(pendingApproval(paused)?.requests[0]).toMatchObject({ name: "execute_payment", args: { amountCents: 1 }, approverRoles: ["finance"] });
    expect(s.executions()).toEqual([]);

    // Whatever the amount, whoever the agent acts for, whatever the thread has seen.
    for (const amountCents of [1, 99, 1_284_500, 10_000_000_000]) {
      for (const user of [{ id: "amy", roles: ["accounts-payable"] }, { id: "fred", roles: ["finance"] }]) {
        for (const sensitivity of [[], ["payment_data"]]) {
          const decision = await financePolicy.decide(
            requestOf({ name: "", agent: { id: "finance-agent", roles: ["finance-agent"] }, user, tool: "execute_payment", args: { paymentId: "P-1", vendorId: "V-204", amountCents }, sensitivity, expect: { effect: "require_approval" } }),
          );
          expect(decision).toMatchObject({ effect: "require_approval", approverRoles: ["finance"], policyIds: ["payment.finance"] });
        }
      }
    }
  });

  it("denies the external e-mail after the thread read payment data, and sends it from a thread that never did", async () => {
    const s = await setup();
    // Thread 1: paying an invoice retrieves the vendor's bank details (labelled payment_data).
    await s.ask("t-remit", "Pay invoice INV-7731 and email Nordwind the remittance advice.");
    const paid = await s.decide("t-remit", "fred", "approve");
    expect(s.executions()).toHaveLength(1);
    expect(lastText(paid)).toBe(
      "Payment PAY-INV-7731 was released. I did not e-mail the vendor: Denied by policy: No external e-mail after reading payment data",
    );
    expect(s.outbox()).toEqual([]);
    const remit = await s.state("t-remit");
    expect(remit.context.sensitivity).toEqual(["payment_data"]);
    expect(remit.decisions.find((d) => d.name === "send_external_email")).toMatchObject({
      status: "denied",
      args: { to: "ap@nordwind.example", subject: "Remittance advice INV-7731" },
      verdict: { effect: "deny", policyIds: ["email.after-payment-data"] },
    });
    const remitEvents = await s.auditLog.read("t-remit");
    const emailDecision = ofType(remitEvents, "policy.decided").find((d) => d.name === "send_external_email");
    expect(emailDecision).toMatchObject({ effect: "deny", policyIds: ["email.after-payment-data"], request: { context: { sensitivity: ["payment_data"] } } });
    expect(remitEvents.filter((e) => e.type === "tool.started" && (e.data as { name: string }).name === "send_external_email")).toEqual([]);

    // Thread 2: only a vendor's contact record, no bank details: the same kind of e-mail goes out.
    const mailed = await s.ask("t-mail", "Email vendor V-204 asking for their delivery schedule for August.");
    expect(lastText(mailed)).toBe("E-mail sent to ap@nordwind.example.");
    expect(s.outbox()).toEqual([{ to: "ap@nordwind.example", subject: "Question about their delivery schedule for August", toolCallId: "call_0_email" }]);
    const mail = await s.state("t-mail");
    expect(mail.context.sensitivity).toEqual([]);
    expect(mail.context.items.map((i) => i.id)).toEqual(["vendor:V-204"]);
    const mailEvents = await s.auditLog.read("t-mail");
    expect(ofType(mailEvents, "policy.decided")).toEqual([
      expect.objectContaining({ name: "send_external_email", effect: "allow", policyIds: ["email.external"], request: expect.objectContaining({ context: { sensitivity: [], items: [expect.objectContaining({ id: "vendor:V-204" })] } }) }),
    ]);
    expect(await s.auditLog.verify("t-remit")).toMatchObject({ ok: true });
    expect(await s.auditLog.verify("t-mail")).toMatchObject({ ok: true, count: 9 });

    // The label alone makes the difference: the same e-mail, decided with and without it.
    const email = (sensitivity: string[]) =>
      financePolicy.decide(
        requestOf({ name: "", agent: { id: "finance-agent", roles: ["finance-agent"] }, tool: "send_external_email", args: { to: "ap@nordwind.example", subject: "Hi", body: "Hi" }, sensitivity, expect: { effect: "allow" } }),
      );
    expect(await email([])).toMatchObject({ effect: "allow", policyIds: ["email.external"] });
    expect(await email(["payment_data"])).toMatchObject({ effect: "deny", policyIds: ["email.after-payment-data"] });
  });

  it("redacts the IBAN for an accounts-payable clerk's agent and shows it to a treasurer's; both threads are payment_data", async () => {
    const s = await setup();
    await s.ask("t-amy", "Pay invoice INV-7731.");
    const amy = await s.state("t-amy");
    expect(amy.context.items.find((i) => i.id === "bank:V-204")?.content).toEqual({
      vendorId: "V-204",
      accountHolder: "Nordwind Logistics GmbH",
      iban: "[REDACTED:iban]",
      bic: "COBADEFFXXX",
    });
    expect(amy.context.sensitivity).toEqual(["payment_data"]);
    // The prepared payment names the account too: the tool result is redacted the same way.
    const prepared = (await s.agent.getState(config("t-amy"))).values.messages.find((m: unknown) => ToolMessage.isInstance(m) && m.name === "prepare_payment");
    expect(JSON.parse(String(prepared.content))).toMatchObject({ paymentId: "PAY-INV-7731", iban: "[REDACTED:iban]" });
    const amyEvents = await s.auditLog.read("t-amy");
    expect(ofType(amyEvents, "context.retrieved")[0]).toMatchObject({ redacted: [{ itemId: "bank:V-204", path: "iban", ruleId: "iban" }], sensitivity: ["payment_data"] });
    // A tool result is JSON text: the IBAN is found by its pattern (where: the whole content).
    expect(ofType(amyEvents, "tool.succeeded")[0]).toMatchObject({ name: "prepare_payment", redacted: [expect.objectContaining({ ruleId: "iban" })] });
    const amySaw = JSON.stringify(s.model.calls.map((c) => c.messages));
    expect(amySaw).toContain("[REDACTED:iban]");
    expect(amySaw).not.toContain("3704 0044");
    expect(JSON.stringify(amyEvents)).not.toContain("3704 0044");
    expect(JSON.stringify(amy)).not.toContain("3704 0044");

    const calls = s.model.calls.length;
    await s.ask("t-tom", "Pay invoice INV-7731 and email Nordwind the remittance advice.", "tom");
    const tom = await s.state("t-tom", "tom");
    expect(tom.context.items.find((i) => i.id === "bank:V-204")?.content).toMatchObject({ iban: IBAN });
    expect(JSON.stringify(s.model.calls.slice(calls).map((c) => c.messages))).toContain(IBAN);
    expect(ofType(await s.auditLog.read("t-tom"), "context.retrieved")[0]).toMatchObject({ redacted: [], sensitivity: ["payment_data"] });
    // Seen or not, the thread has read payment data: no external e-mail from it either.
    expect(tom.context.sensitivity).toEqual(["payment_data"]);
    await s.decide("t-tom", "fred", "approve");
    expect((await s.state("t-tom", "tom")).decisions.find((d) => d.name === "send_external_email")).toMatchObject({ status: "denied" });
    expect(s.outbox()).toEqual([]);
  });

  it("a payment finance rejects is never executed", async () => {
    const s = await setup();
    await s.ask("t-reject", "Pay invoice INV-7732.");
    const rejected = await s.decide("t-reject", "fred", "reject", "Already paid by card at the counter");
    expect(lastText(rejected)).toBe("execute_payment did not run: Rejected by fred: Already paid by card at the counter");
    expect(s.executions()).toEqual([]);
    expect(s.payments()).toEqual([expect.objectContaining({ paymentId: "PAY-INV-7732", status: "prepared" })]);
    await expect(s.decide("t-reject", "fiona", "approve")).rejects.toMatchObject({ code: "thread_not_paused" });
    expect(s.executions()).toEqual([]);

    expect((await s.state("t-reject")).decisions.find((d) => d.name === "execute_payment")).toMatchObject({
      status: "rejected",
      approvals: [expect.objectContaining({ approverId: "fred", type: "reject", message: "Already paid by card at the counter" })],
    });
    const events = await s.auditLog.read("t-reject");
    expect(ofType(events, "approval.decided")).toEqual([expect.objectContaining({ name: "execute_payment", decision: "reject", approverId: "fred", status: "rejected" })]);
    expect(ofType(events, "tool.started").map((d) => d.name)).toEqual(["prepare_payment"]);
    expect(await s.auditLog.verify("t-reject")).toMatchObject({ ok: true });
  });

  it("run() plays the story on a SQLite file and sums it up", async () => {
    const lines: string[] = [];
    const summary = await run((line) => lines.push(line));
    expect(summary.paid).toMatchObject({
      contextIds: ["invoice:INV-7731", "vendor:V-204", "bank:V-204"],
      redacted: [{ itemId: "bank:V-204", path: "iban", ruleId: "iban" }],
      sensitivity: ["payment_data"],
      request: { name: "execute_payment", approverRoles: ["finance"], requestedBy: { userId: "amy" } },
      refusals: [
        { approverId: "amy", code: "approval_self_approval" },
        { approverId: "tom", code: "approval_unauthorized" },
      ],
      approvedBy: "fred",
      decisions: [
        { name: "prepare_payment", status: "executed", policyIds: ["payment.prepare"] },
        { name: "execute_payment", status: "executed", policyIds: ["payment.finance"] },
        { name: "send_external_email", status: "denied", policyIds: ["email.after-payment-data"] },
      ],
    });
    expect(summary.emailOnly).toMatchObject({ sensitivity: [], decisions: [{ name: "send_external_email", status: "executed", policyIds: ["email.external"] }] });
    expect(summary.rejected.answer).toContain("Rejected by fred");
    expect(summary.executions).toEqual([{ paymentId: "PAY-INV-7731", amountCents: 1_284_500, toolCallId: "call_1_execute" }]);
    expect(summary.payments.map((p) => [p.paymentId, p.status])).toEqual([
      ["PAY-INV-7731", "executed"],
      ["PAY-INV-7732", "prepared"],
    ]);
    expect(summary.outbox).toHaveLength(1);
    expect(summary.verified).toEqual({
      "ap-INV-7731": { ok: true, count: 19 },
      "ap-V-204-mail": { ok: true, count: 9 },
      "ap-INV-7732": { ok: true, count: 13 },
    });
    const story = lines.join("\n");
    expect(story).toContain("redacted: bank:V-204 iban (iban)");
    expect(story).toContain("send_external_email: denied (email.after-payment-data)");
    expect(story).not.toContain("3704 0044");
  });
});
