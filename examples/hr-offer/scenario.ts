/**
 * Offer letters with compensation redacted by role:
 *   1. Recruiter rita asks for CAND-7's offer letter. The salary band is retrieved, but its
 *      figures are redacted before the model sees them; the draft says the salary is pending, and
 *      no figure appears in the thread's messages or audit log.
 *   2. HR manager hana asks for the same letter and to send it. She may see the band: the draft
 *      states the salary, and sending waits for an HR director. Rita cannot approve it; dora does.
 */
import { mkdirSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { HumanMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { ApprovalError, pendingApproval } from "eart";
import { openOfferAgent } from "./agent.js";
import { salaryFiguresIn } from "./data.js";
import type { OfferDraftRow, SentOfferRow } from "./tools.js";

/** What the story did, for tests and readers. */
export interface OfferScenarioSummary {
  file: string;
  recruiter: {
    threadId: string;
    retrievedIds: string[];
    redacted: { itemId: string; path: string; ruleId: string }[];
    sensitivity: string[];
    draft: OfferDraftRow | undefined;
    answer: string;
    paused: boolean;
    /** Salary figures found in the thread's messages or audit log: none. */
    salaryFiguresInThread: string[];
  };
  manager: {
    threadId: string;
    redacted: { itemId: string; path: string; ruleId: string }[];
    draft: OfferDraftRow | undefined;
    approval: { toolCallId: string; name: string; args: Record<string, unknown>; approverRoles: string[] };
    refused: { approverId: string; code: string };
    sent: SentOfferRow[];
    answer: string;
  };
  audit: Record<string, { types: string[]; ok: boolean; count: number }>;
}

const config = (threadId: string, userId: string) => ({ configurable: { thread_id: threadId, agent_id: "offer-agent", user_id: userId } });

export async function run(log: (line: string) => void, options: { file?: string } = {}): Promise<OfferScenarioSummary> {
  const file = resolve(options.file ?? ".eart/hr-offer.sqlite");
  mkdirSync(dirname(file), { recursive: true });
  for (const suffix of ["", "-wal", "-shm"]) rmSync(file + suffix, { force: true });
  const { agent, auditLog, drafts, sentOffers, close } = await openOfferAgent({ file });
  const retrievedOf = async (threadId: string) =>
    (await auditLog.read(threadId)).find((e) => e.type === "context.retrieved")!.data as { items: { id: string }[]; redacted: { itemId: string; path: string; ruleId: string }[] };
  try {
    // 1. The recruiter.
    const t1 = "offer-CAND-7-rita";
    const ask1 = "Draft the offer letter for candidate CAND-7.";
    log(`== 1. ${t1}: rita (recruiter): ${ask1}`);
    const r1 = await agent.invoke({ messages: [new HumanMessage(ask1)] }, config(t1, "rita"));
    const retrieved1 = await retrievedOf(t1);
    log(`retrieved: ${retrieved1.items.map((i) => i.id).join(", ")}`);
    log(`redacted for rita: ${retrieved1.redacted.map((r) => `${r.itemId}:${r.path}`).join(", ")}`);
    const draft1 = drafts().at(-1);
    log(`draft ${draft1?.draftId} (salary ${draft1?.salaryStatus}):\n  ${draft1?.body.split("\n").join("\n  ")}`);
    const answer1 = String(r1.messages[r1.messages.length - 1]?.content ?? "");
    log(`agent: ${answer1}`);
    const thread1 = JSON.stringify((await agent.getState(config(t1, "rita"))).values) + JSON.stringify(await auditLog.read(t1));
    const found = salaryFiguresIn(thread1);
    log(`salary figures in rita's thread (messages, context, tool calls, audit log): ${found.length === 0 ? "none" : found.join(", ")}`);

    // 2. The HR manager.
    const t2 = "offer-CAND-7-hana";
    const ask2 = "Draft and send the offer letter for candidate CAND-7.";
    log(`\n== 2. ${t2}: hana (HR manager): ${ask2}`);
    const r2 = await agent.invoke({ messages: [new HumanMessage(ask2)] }, config(t2, "hana"));
    const retrieved2 = await retrievedOf(t2);
    log(`redacted for hana: ${retrieved2.redacted.map((r) => `${r.itemId}:${r.path}`).join(", ") || "nothing"}`);
    const draft2 = drafts().at(-1);
    log(`draft ${draft2?.draftId} (salary ${draft2?.salaryStatus}):\n  ${draft2?.body.split("\n").join("\n  ")}`);
    const request = pendingApproval(r2);
    if (!request || request.requests.length !== 1) throw new Error("expected sending the offer to wait for an HR director");
    const pending = request.requests[0]!;
    log(`paused: ${pending.name} ${JSON.stringify(pending.args)} waits for ${pending.approverRoles.join(", ")} (${pending.reasons.join("; ")})`);
    const decisions = [{ toolCallId: pending.toolCallId, type: "approve" as const, digest: pending.digest }];
    let refused = { approverId: "rita", code: "" };
    try {
      await agent.invoke(new Command({ resume: { decisions } }), config(t2, "rita"));
    } catch (error) {
      if (!(error instanceof ApprovalError)) throw error;
      refused = { approverId: "rita", code: error.code };
      log(`rita (recruiter) tries to approve: refused, ${error.code}`);
    }
    log(`dora (HR director) approves ${pending.toolCallId}`);
    const r2b = await agent.invoke(new Command({ resume: { decisions } }), config(t2, "dora"));
    const answer2 = String(r2b.messages[r2b.messages.length - 1]?.content ?? "");
    log(`agent: ${answer2}`);
    log(`sent offers: ${JSON.stringify(sentOffers())}`);

    const audit: OfferScenarioSummary["audit"] = {};
    for (const threadId of [t1, t2]) {
      const events = await auditLog.read(threadId);
      const verified = await auditLog.verify(threadId);
      audit[threadId] = { types: events.map((e) => e.type), ok: verified.ok, count: events.length };
      log(`audit ${threadId}: ${events.map((e) => e.type).join(" → ")}`);
      log(`  verify: ${verified.ok ? `ok, ${verified.count} events` : JSON.stringify(verified.brokenAt)}`);
    }
    return {
      file,
      recruiter: {
        threadId: t1,
        retrievedIds: retrieved1.items.map((i) => i.id),
        redacted: retrieved1.redacted,
        sensitivity: (await agent.getState(config(t1, "rita"))).values.context.sensitivity,
        draft: draft1,
        answer: answer1,
        paused: pendingApproval(r1) !== undefined,
        salaryFiguresInThread: found,
      },
      manager: {
        threadId: t2,
        redacted: retrieved2.redacted,
        draft: draft2,
        approval: { toolCallId: pending.toolCallId, name: pending.name, args: pending.args, approverRoles: pending.approverRoles },
        refused,
        sent: sentOffers(),
        answer: answer2,
      },
      audit,
    };
  } finally {
    await close();
  }
}
