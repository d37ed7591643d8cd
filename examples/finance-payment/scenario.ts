/**
 * The finance-payment story, in-process on a fresh SQLite file (`.eart/finance-payment.sqlite`):
 *   1. Amy (accounts payable) asks to pay invoice INV-7731 and e-mail the vendor the remittance
 *      advice. The invoice, the vendor and its bank details are retrieved (the IBAN redacted for
 *      Amy's agent); the agent prepares the payment on its own and asks to execute it: the graph
 *      pauses for finance. Amy cannot approve her own payment; Fred (finance) approves; it runs
 *      once. The e-mail is then denied: the thread has read payment data.
 *   2. Amy asks the agent to e-mail a vendor about a delivery schedule: no payment data in that
 *      thread, so the e-mail goes out.
 *   3. Amy asks to pay invoice INV-7732; Fred rejects it: prepared, never executed.
 * Run with `npm run example -- finance-payment`.
 */
import { mkdirSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { HumanMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { EartError, pendingApproval, type ApprovalRequest, type DecisionRecord } from "eart";
import { openFinancePaymentAgent } from "./agent.js";
import type { ExecutionRow, OutboxRow, PaymentRow } from "./tools.js";

/** What the story did, for tests and readers. */
export interface FinancePaymentSummary {
  file: string;
  paid: {
    threadId: string;
    contextIds: string[];
    redacted: { itemId: string; path: string; ruleId: string }[];
    sensitivity: string[];
    request: ApprovalRequest["requests"][number];
    refusals: { approverId: string; code: string }[];
    approvedBy: string;
    /** Status of each tool call of the thread, by tool name, in order. */
    decisions: { name: string; status: DecisionRecord["status"]; policyIds: string[] }[];
    answer: string;
    auditTypes: string[];
  };
  emailOnly: { threadId: string; sensitivity: string[]; decisions: { name: string; status: DecisionRecord["status"]; policyIds: string[] }[]; answer: string };
  rejected: { threadId: string; request: ApprovalRequest["requests"][number]; answer: string };
  payments: PaymentRow[];
  executions: ExecutionRow[];
  outbox: OutboxRow[];
  verified: Record<string, { ok: boolean; count?: number }>;
}

const config = (threadId: string, userId: string) => ({ configurable: { thread_id: threadId, agent_id: "finance-agent", user_id: userId } });
const textOf = (result: { messages: { content: unknown }[] }) => String(result.messages[result.messages.length - 1]?.content ?? "");

/** Plays the story and returns its summary. */
export async function run(log: (line: string) => void): Promise<FinancePaymentSummary> {
  const file = resolve(".eart/finance-payment.sqlite");
  mkdirSync(dirname(file), { recursive: true });
  for (const suffix of ["", "-wal", "-shm"]) rmSync(file + suffix, { force: true });
  const { agent, auditLog, payments, executions, outbox, close } = await openFinancePaymentAgent({ file });
  try {
    const ask = async (threadId: string, userId: string, text: string) => {
      log(`\n[${threadId}] ${userId}: ${text}`);
      const result = await agent.invoke({ messages: [new HumanMessage(text)] }, config(threadId, userId));
      const retrieved = (await auditLog.read(threadId)).find((e) => e.type === "context.retrieved")?.data as {
        items: { id: string }[];
        redacted: { itemId: string; path: string; ruleId: string }[];
        sensitivity: string[];
      };
      log(`  context: ${retrieved.items.map((i) => i.id).join(", ") || "(none)"}; sensitivity: ${retrieved.sensitivity.join(", ") || "(none)"}`);
      for (const r of retrieved.redacted) log(`  redacted: ${r.itemId} ${r.path} (${r.ruleId})`);
      return { result, retrieved };
    };
    const decisionsOf = async (threadId: string) =>
      ((await agent.getState(config(threadId, "amy"))).values.decisions as DecisionRecord[]).map((d) => ({ name: d.name, status: d.status, policyIds: d.verdict.policyIds }));
    const answer = (threadId: string, approverId: string, request: ApprovalRequest["requests"][number], type: "approve" | "reject", message?: string) =>
      agent.invoke(
        new Command({ resume: { decisions: [{ toolCallId: request.toolCallId, type, digest: request.digest, ...(message ? { message } : {}) }] } }),
        config(threadId, approverId),
      );
    const showPause = (request: ApprovalRequest["requests"][number]) => {
      log(`  paused: ${request.name} ${JSON.stringify(request.args)}`);
      log(`    why: ${request.reasons.join("; ")} (policy ${request.policyIds.join(", ")}); approver roles: ${request.approverRoles.join(", ")}`);
    };

    // 1. Pay an invoice: prepared by the agent, executed only with finance; then no external e-mail.
    const paidThread = "ap-INV-7731";
    const { result: paused, retrieved } = await ask(paidThread, "amy", "Pay invoice INV-7731 and email Nordwind the remittance advice.");
    log(`  prepared: ${JSON.stringify(payments())}`);
    const request = pendingApproval(paused)?.requests[0];
    if (!request) throw new Error("expected the payment to wait for finance");
    showPause(request);
    const refusals: { approverId: string; code: string }[] = [];
    for (const approverId of ["amy", "tom"]) {
      try {
        await answer(paidThread, approverId, request, "approve");
        throw new Error(`${approverId}'s approval should have been refused`);
      } catch (error) {
        if (!(error instanceof EartError)) throw error;
        refusals.push({ approverId, code: error.code });
        log(`  ${approverId} tries to approve: refused (${error.code})`);
      }
    }
    const paid = await answer(paidThread, "fred", request, "approve");
    log(`  fred approves ${request.toolCallId}`);
    const paidDecisions = await decisionsOf(paidThread);
    for (const d of paidDecisions) log(`  ${d.name}: ${d.status} (${d.policyIds.join(", ")})`);
    log(`  agent: ${textOf(paid)}`);

    // 2. Only an e-mail: this thread never read payment data.
    const emailThread = "ap-V-204-mail";
    const { result: mailed, retrieved: mailContext } = await ask(emailThread, "amy", "Email vendor V-204 asking for their delivery schedule for August.");
    const mailDecisions = await decisionsOf(emailThread);
    for (const d of mailDecisions) log(`  ${d.name}: ${d.status} (${d.policyIds.join(", ")})`);
    log(`  agent: ${textOf(mailed)}`);

    // 3. A payment finance rejects.
    const rejectedThread = "ap-INV-7732";
    const { result: pausedAgain } = await ask(rejectedThread, "amy", "Pay invoice INV-7732.");
    const second = pendingApproval(pausedAgain)?.requests[0];
    if (!second) throw new Error("expected the second payment to wait for finance");
    showPause(second);
    const rejected = await answer(rejectedThread, "fred", second, "reject", "Already paid by card at the counter");
    log(`  fred rejects ${second.toolCallId}`);
    log(`  agent: ${textOf(rejected)}`);

    log(`\npayments: ${JSON.stringify(payments())}`);
    log(`executions: ${JSON.stringify(executions())}`);
    log(`outbox: ${JSON.stringify(outbox())}`);
    const events = await auditLog.read(paidThread);
    log(`audit trail of ${paidThread}:`);
    for (const e of events) {
      const d = e.data as Record<string, unknown>;
      const detail = [d.name, d.decision ?? d.effect, d.code, d.approverId, Array.isArray(d.policyIds) ? d.policyIds.join(",") : undefined]
        .filter((x) => x !== undefined && x !== null)
        .join(" ");
      log(`  #${String(e.seq).padStart(2)} ${e.type.padEnd(18)} ${detail}`);
    }
    const verified: FinancePaymentSummary["verified"] = {};
    for (const threadId of [paidThread, emailThread, rejectedThread]) {
      const v = await auditLog.verify(threadId);
      verified[threadId] = v.ok ? { ok: true, count: v.count } : { ok: false };
      log(`verify ${threadId}: ${v.ok ? `ok, ${v.count} events` : `broken at ${JSON.stringify(v.brokenAt)}`}`);
    }
    return {
      file,
      paid: {
        threadId: paidThread,
        contextIds: retrieved.items.map((i) => i.id),
        redacted: retrieved.redacted,
        sensitivity: retrieved.sensitivity,
        request,
        refusals,
        approvedBy: "fred",
        decisions: paidDecisions,
        answer: textOf(paid),
        auditTypes: events.map((e) => e.type),
      },
      emailOnly: { threadId: emailThread, sensitivity: mailContext.sensitivity, decisions: mailDecisions, answer: textOf(mailed) },
      rejected: { threadId: rejectedThread, request: second, answer: textOf(rejected) },
      payments: payments(),
      executions: executions(),
      outbox: outbox(),
      verified,
    };
  } finally {
    await close();
  }
}
