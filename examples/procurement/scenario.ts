/**
 * Procurement: the agent compares supplier agreements with twelve months of spend and market
 * benchmarks, finds the contract priced furthest above the market, recommends renegotiating it
 * (allowed) and asks to open the renegotiation (a procurement manager must approve). Finance's
 * fred tries to approve and is refused; manager max approves, and the renegotiation opens once.
 */
import { mkdirSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { HumanMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { ApprovalError, pendingApproval } from "eart";
import { openProcurementAgent } from "./agent.js";
import type { RenegotiationRow } from "./tools.js";

/** What the story did, for tests and readers. */
export interface ProcurementScenarioSummary {
  file: string;
  threadId: string;
  retrievedIds: string[];
  recommendations: RenegotiationRow[];
  /** What waited for approval, and who could give it. */
  approval: { toolCallId: string; name: string; args: Record<string, unknown>; approverRoles: string[]; policyIds: string[] };
  renegotiationsBeforeApproval: RenegotiationRow[];
  refused: { approverId: string; code: string };
  approvedBy: string;
  renegotiations: RenegotiationRow[];
  answer: string;
  audit: { types: string[]; ok: boolean; count: number };
}

export async function run(log: (line: string) => void, options: { file?: string } = {}): Promise<ProcurementScenarioSummary> {
  const file = resolve(options.file ?? ".eart/procurement.sqlite");
  mkdirSync(dirname(file), { recursive: true });
  for (const suffix of ["", "-wal", "-shm"]) rmSync(file + suffix, { force: true });
  const { agent, auditLog, recommendations, renegotiations, close } = await openProcurementAgent({ file });
  const threadId = "procurement-review-q3";
  const config = { configurable: { thread_id: threadId, agent_id: "procurement-agent", user_id: "pia" } };
  try {
    const ask = "Review our supplier agreements for cost-saving opportunities.";
    log(`pia (procurement analyst): ${ask}`);
    const paused = await agent.invoke({ messages: [new HumanMessage(ask)] }, config);
    const retrieved = (await auditLog.read(threadId)).find((e) => e.type === "context.retrieved")?.data as { items: { id: string }[] };
    const retrievedIds = retrieved.items.map((i) => i.id);
    log(`retrieved: ${retrievedIds.join(", ")}`);
    log(`recommendation filed: ${JSON.stringify(recommendations())}`);
    const request = pendingApproval(paused);
    if (!request || request.requests.length !== 1) throw new Error("expected the renegotiation to wait for a procurement manager");
    const pending = request.requests[0]!;
    log(`paused: waiting for approval`);
    log(`  ${pending.toolCallId}  ${pending.name} ${JSON.stringify(pending.args)}`);
    log(`    why: ${pending.reasons.join("; ")}  (policy ${pending.policyIds.join(", ")})`);
    log(`    approver roles: ${pending.approverRoles.join(", ")}  requested by ${pending.requestedBy.agentId} for ${pending.requestedBy.userId}`);
    const renegotiationsBeforeApproval = renegotiations();
    log(`renegotiations opened so far: ${JSON.stringify(renegotiationsBeforeApproval)}`);

    const decisions = [{ toolCallId: pending.toolCallId, type: "approve" as const, digest: pending.digest }];
    let refused = { approverId: "fred", code: "" };
    try {
      await agent.invoke(new Command({ resume: { decisions } }), { configurable: { thread_id: threadId, user_id: "fred" } });
    } catch (error) {
      if (!(error instanceof ApprovalError)) throw error;
      refused = { approverId: "fred", code: error.code };
      log(`fred (finance) tries to approve: refused, ${error.code}: ${error.message}`);
    }
    log(`max (procurement manager) approves ${pending.toolCallId}`);
    const result = await agent.invoke(new Command({ resume: { decisions } }), { configurable: { thread_id: threadId, user_id: "max" } });
    const answer = String(result.messages[result.messages.length - 1]?.content ?? "");
    log(`agent: ${answer}`);
    log(`renegotiations table: ${JSON.stringify(renegotiations())}`);

    const events = await auditLog.read(threadId);
    log("audit trail:");
    for (const e of events) {
      const d = e.data as Record<string, unknown>;
      const detail = [d.name, d.effect, d.approverId, d.code, d.status].filter((x) => x !== undefined && x !== null).join(" ");
      log(`  #${String(e.seq).padStart(2)} ${e.type.padEnd(18)} ${detail}`);
    }
    const verified = await auditLog.verify(threadId);
    log(`verify: ${verified.ok ? `ok, ${verified.count} events` : JSON.stringify(verified.brokenAt)}`);
    return {
      file,
      threadId,
      retrievedIds,
      recommendations: recommendations(),
      approval: { toolCallId: pending.toolCallId, name: pending.name, args: pending.args, approverRoles: pending.approverRoles, policyIds: pending.policyIds },
      renegotiationsBeforeApproval,
      refused,
      approvedBy: "max",
      renegotiations: renegotiations(),
      answer,
      audit: { types: events.map((e) => e.type), ok: verified.ok, count: events.length },
    };
  } finally {
    await close();
  }
}
