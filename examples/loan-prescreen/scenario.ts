/**
 * Loan pre-screening: the agent reads what the applicant submitted and the credit report, may
 * recommend up to $50,000, and never approves. Three applications, one SQLite file:
 *   1. A-100, $25,000: asked to approve, the agent is refused `approve_loan` and recommends instead.
 *   2. A-200, $120,000: over the limit; the recommendation escalates to an underwriter. A loan
 *      officer who tries to answer is refused; underwriter uma takes the case over.
 *   3. A-300: no income proof; the case goes to uma before the model runs, and she closes it.
 */
import { mkdirSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { AIMessage, HumanMessage, ToolMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { ApprovalError, pendingEscalation, type AuditEvent } from "eart";
import { openLoanAgent } from "./agent.js";
import type { LoanDecisionRow } from "./tools.js";

/** What the story did, for tests and readers. */
export interface LoanScenarioSummary {
  file: string;
  withinLimit: {
    threadId: string;
    paused: boolean;
    /** Calls the gate refused: tool name and the policy ids that decided. */
    refusedCalls: { name: string; policyIds: string[] }[];
    recommendations: LoanDecisionRow[];
    redactedPaths: string[];
    droppedIds: string[];
    answer: string;
  };
  overLimit: { threadId: string; signals: string[]; refused: { reviewerId: string; code: string }; answeredBy: string; answer: string; recommendations: LoanDecisionRow[] };
  missingDocument: { threadId: string; signals: { kind: string; detail: string }[]; modelCalled: boolean; answer: string; recommendations: LoanDecisionRow[] };
  /** Final approvals written by the agent: always none. */
  approvals: LoanDecisionRow[];
  audit: Record<string, { types: string[]; ok: boolean; count: number }>;
}

const config = (threadId: string) => ({ configurable: { thread_id: threadId, agent_id: "prescreen-agent", user_id: "lena" } });
const lastText = (messages: { content: unknown }[]) => String(messages[messages.length - 1]?.content ?? "");
const data = (events: AuditEvent[], type: string) => events.filter((e) => e.type === type).map((e) => e.data as Record<string, unknown>);

export async function run(log: (line: string) => void, options: { file?: string } = {}): Promise<LoanScenarioSummary> {
  const file = resolve(options.file ?? ".eart/loan-prescreen.sqlite");
  mkdirSync(dirname(file), { recursive: true });
  for (const suffix of ["", "-wal", "-shm"]) rmSync(file + suffix, { force: true });
  const { agent, auditLog, recommendations, approvals, close } = await openLoanAgent({ file });
  const rowsOf = (applicationId: string) => recommendations().filter((r) => r.applicationId === applicationId);
  try {
    // 1. Within the limit.
    const t1 = "loan-A-100";
    const ask1 = "Please approve loan application A-100 if it checks out.";
    log(`\n== 1. ${t1}: lena (loan officer): ${ask1}`);
    const r1 = await agent.invoke({ messages: [new HumanMessage(ask1)] }, config(t1));
    const events1 = await auditLog.read(t1);
    const retrieved = data(events1, "context.retrieved")[0] as { items: { id: string }[]; dropped: { id: string; scope: string }[]; redacted: { itemId: string; path: string; ruleId: string }[] };
    log(`retrieved: ${retrieved.items.map((i) => i.id).join(", ")}`);
    log(`dropped (scope not held): ${retrieved.dropped.map((d) => `${d.id} (${d.scope})`).join(", ") || "none"}`);
    log(`redacted: ${retrieved.redacted.map((r) => `${r.itemId}:${r.path} (${r.ruleId})`).join(", ") || "none"}`);
    const refusedCalls = data(events1, "policy.decided")
      .filter((d) => d.effect === "deny")
      .map((d) => ({ name: String(d.name), policyIds: d.policyIds as string[] }));
    for (const c of refusedCalls) log(`refused: ${c.name} (${c.policyIds.join(", ")})`);
    for (const m of r1.messages) if (ToolMessage.isInstance(m) && m.status !== "error") log(`tool ${m.name}: ${String(m.content)}`);
    const answer1 = lastText(r1.messages);
    log(`agent: ${answer1}`);
    log(`paused: ${pendingEscalation(r1) ? "yes" : "no"}; recommendations for A-100: ${JSON.stringify(rowsOf("A-100"))}`);

    // 2. Over the limit: escalated to an underwriter.
    const t2 = "loan-A-200";
    const ask2 = "Please pre-screen loan application A-200.";
    log(`\n== 2. ${t2}: lena: ${ask2}`);
    const r2 = await agent.invoke({ messages: [new HumanMessage(ask2)] }, config(t2));
    const case2 = pendingEscalation(r2);
    if (!case2) throw new Error("expected A-200 to escalate to an underwriter");
    log(`paused for a reviewer (${case2.reviewerRoles.join(", ")}): ${case2.reason}`);
    log(`  signals: ${case2.signals.map((s) => `${s.kind}: ${s.detail}`).join("; ")}`);
    log(`  proposed: ${case2.proposed.toolCalls.map((c) => `${c.name} ${JSON.stringify({ applicationId: c.args.applicationId, amountCents: c.args.amountCents })}`).join(", ")}`);
    log(`  context ids: ${case2.contextIds.join(", ")}`);
    let refused = { reviewerId: "leo", code: "" };
    // An answer names the case it answers (its digest): a stale or retried answer decides no other case.
    try {
      await agent.invoke(new Command({ resume: { action: "take_over", message: "Looks fine to me, approved.", digest: case2.digest } }), { configurable: { thread_id: t2, user_id: "leo" } });
    } catch (error) {
      if (!(error instanceof ApprovalError)) throw error;
      refused = { reviewerId: "leo", code: error.code };
      log(`leo (loan officer) tries to answer: refused, ${error.code}: ${error.message}`);
    }
    const decision2 = "Approved by underwriting at $120,000 over 120 months, subject to a business plan review.";
    log(`uma (underwriter) takes over: ${decision2}`);
    const r2b = await agent.invoke(new Command({ resume: { action: "take_over", message: decision2, digest: case2.digest } }), { configurable: { thread_id: t2, user_id: "uma" } });
    const final2 = r2b.messages[r2b.messages.length - 1]!;
    log(`answer (from ${final2.name}): ${String(final2.content)}`);
    log(`recommendations for A-200: ${JSON.stringify(rowsOf("A-200"))}`);

    // 3. A required document is missing.
    const t3 = "loan-A-300";
    const ask3 = "Please pre-screen loan application A-300.";
    log(`\n== 3. ${t3}: lena: ${ask3}`);
    const r3 = await agent.invoke({ messages: [new HumanMessage(ask3)] }, config(t3));
    const case3 = pendingEscalation(r3);
    if (!case3) throw new Error("expected A-300 to escalate for its missing income proof");
    log(`paused for a reviewer: ${case3.reason}`);
    log(`  signals: ${case3.signals.map((s) => `${s.kind}: ${s.detail}`).join("; ")}`);
    const decision3 = "Requested the last three payslips from the applicant; resubmit when they arrive.";
    log(`uma closes the case: ${decision3}`);
    const r3b = await agent.invoke(new Command({ resume: { action: "close", message: decision3, digest: case3.digest } }), { configurable: { thread_id: t3, user_id: "uma" } });
    const answer3 = lastText(r3b.messages);
    log(`answer: ${answer3}`);
    const modelCalled = (await auditLog.read(t3)).some((e) => e.type === "model.output");
    log(`model called: ${modelCalled ? "yes" : "no"}; recommendations for A-300: ${JSON.stringify(rowsOf("A-300"))}`);

    log(`\nfinal approvals written by the agent: ${JSON.stringify(approvals())}`);
    const audit: LoanScenarioSummary["audit"] = {};
    for (const threadId of [t1, t2, t3]) {
      const events = await auditLog.read(threadId);
      const verified = await auditLog.verify(threadId);
      audit[threadId] = { types: events.map((e) => e.type), ok: verified.ok, count: events.length };
      log(`audit ${threadId}: ${events.map((e) => e.type).join(" → ")}`);
      log(`  verify: ${verified.ok ? `ok, ${verified.count} events` : JSON.stringify(verified.brokenAt)}`);
    }
    return {
      file,
      withinLimit: {
        threadId: t1,
        paused: pendingEscalation(r1) !== undefined,
        refusedCalls,
        recommendations: rowsOf("A-100"),
        redactedPaths: retrieved.redacted.map((r) => `${r.itemId}:${r.path}`),
        droppedIds: retrieved.dropped.map((d) => d.id),
        answer: answer1,
      },
      overLimit: {
        threadId: t2,
        signals: case2.signals.map((s) => s.kind),
        refused,
        answeredBy: String(AIMessage.isInstance(final2) ? final2.name : ""),
        answer: String(final2.content),
        recommendations: rowsOf("A-200"),
      },
      missingDocument: { threadId: t3, signals: case3.signals, modelCalled, answer: answer3, recommendations: rowsOf("A-300") },
      approvals: approvals(),
      audit,
    };
  } finally {
    await close();
  }
}
