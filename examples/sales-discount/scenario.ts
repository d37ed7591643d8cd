/**
 * The sales-discount story, in-process on a fresh SQLite file (`.eart/sales-discount.sqlite`):
 *   1. Rita asks for 8% on quote Q-1001: within the threshold, applied at once.
 *   2. Rita asks for 20% on quote Q-1002: the graph pauses for a sales manager. Rita cannot
 *      approve her own request, Nick (another rep) is not a manager; Max approves, it runs once.
 *   3. Rita asks for 35% on quote Q-1003: over the limit, denied; nothing is written.
 * Run with `npm run example -- sales-discount`.
 */
import { mkdirSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { HumanMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { EartError, pendingApproval, type ApprovalRequest } from "eart";
import { openSalesDiscountAgent } from "./agent.js";
import type { DiscountRow } from "./tools.js";

/** What the story did, for tests and readers. */
export interface SalesDiscountSummary {
  file: string;
  small: { threadId: string; paused: boolean; answer: string };
  large: {
    threadId: string;
    request: ApprovalRequest["requests"][number];
    /** The refused answers, in order: who tried and the error code. */
    refusals: { approverId: string; code: string }[];
    approvedBy: string;
    answer: string;
    auditTypes: string[];
  };
  overLimit: { threadId: string; paused: boolean; answer: string };
  discounts: DiscountRow[];
  verified: Record<string, { ok: boolean; count?: number }>;
}

const config = (threadId: string, userId: string) => ({ configurable: { thread_id: threadId, agent_id: "sales-agent", user_id: userId } });
const textOf = (result: { messages: { content: unknown }[] }) => String(result.messages[result.messages.length - 1]?.content ?? "");

/** Plays the story and returns its summary. */
export async function run(log: (line: string) => void): Promise<SalesDiscountSummary> {
  const file = resolve(".eart/sales-discount.sqlite");
  mkdirSync(dirname(file), { recursive: true });
  for (const suffix of ["", "-wal", "-shm"]) rmSync(file + suffix, { force: true });
  const { agent, auditLog, discounts, close } = await openSalesDiscountAgent({ file });
  try {
    const ask = async (threadId: string, userId: string, text: string) => {
      log(`\n[${threadId}] ${userId}: ${text}`);
      const result = await agent.invoke({ messages: [new HumanMessage(text)] }, config(threadId, userId));
      const retrieved = (await auditLog.read(threadId)).filter((e) => e.type === "context.retrieved").at(-1)?.data as
        | { items: { id: string }[]; dropped: { id: string; scope: string }[] }
        | undefined;
      if (retrieved) {
        log(`  context: ${retrieved.items.map((i) => i.id).join(", ")}`);
        for (const d of retrieved.dropped) log(`  dropped: ${d.id} (scope ${d.scope} not held by the agent)`);
      }
      return result;
    };

    // 1. Within the threshold.
    const small = await ask("sales-Q-1001", "rita", "Please apply 8% to quote Q-1001 because Acme renews early.");
    const smallPaused = pendingApproval(small) !== undefined;
    log(`  ${smallPaused ? "paused (unexpected)" : "no approval needed"}`);
    log(`  agent: ${textOf(small)}`);

    // 2. Above the threshold: a sales manager decides.
    const largeThread = "sales-Q-1002";
    const paused = await ask(largeThread, "rita", "Borealis wants 20% on quote Q-1002 because they sign for three years.");
    const approval = pendingApproval(paused);
    if (!approval) throw new Error("expected the 20% discount to wait for a sales manager");
    const request = approval.requests[0]!;
    log(`  paused: ${request.name} ${JSON.stringify(request.args)}`);
    log(`    why: ${request.reasons.join("; ")} (policy ${request.policyIds.join(", ")})`);
    log(`    approver roles: ${request.approverRoles.join(", ")}; requested by ${request.requestedBy.agentId} for ${request.requestedBy.userId}`);
    const decide = (approverId: string) =>
      agent.invoke(
        new Command({ resume: { decisions: [{ toolCallId: request.toolCallId, type: "approve", digest: request.digest }] } }),
        config(largeThread, approverId),
      );
    const refusals: { approverId: string; code: string }[] = [];
    for (const approverId of ["rita", "nick"]) {
      try {
        await decide(approverId);
        throw new Error(`${approverId}'s approval should have been refused`);
      } catch (error) {
        if (!(error instanceof EartError)) throw error;
        refusals.push({ approverId, code: error.code });
        log(`  ${approverId} tries to approve: refused (${error.code})`);
      }
    }
    const approved = await decide("max");
    log(`  max approves ${request.toolCallId}`);
    log(`  agent: ${textOf(approved)}`);

    // 3. Over the limit.
    const over = await ask("sales-Q-1003", "rita", "Cobalt asks for 35% on quote Q-1003.");
    const overPaused = pendingApproval(over) !== undefined;
    log(`  agent: ${textOf(over)}`);

    const rows = discounts();
    log(`\ndiscounts table: ${JSON.stringify(rows)}`);
    const events = await auditLog.read(largeThread);
    log(`audit trail of ${largeThread}:`);
    for (const e of events) {
      const d = e.data as Record<string, unknown>;
      const detail = [d.name, d.decision ?? d.effect, d.code, d.approverId].filter((x) => x !== undefined && x !== null).join(" ");
      log(`  #${String(e.seq).padStart(2)} ${e.type.padEnd(18)} ${detail}`);
    }
    const verified: SalesDiscountSummary["verified"] = {};
    for (const threadId of ["sales-Q-1001", largeThread, "sales-Q-1003"]) {
      const v = await auditLog.verify(threadId);
      verified[threadId] = v.ok ? { ok: true, count: v.count } : { ok: false };
      log(`verify ${threadId}: ${v.ok ? `ok, ${v.count} events` : `broken at ${JSON.stringify(v.brokenAt)}`}`);
    }
    return {
      file,
      small: { threadId: "sales-Q-1001", paused: smallPaused, answer: textOf(small) },
      large: { threadId: largeThread, request, refusals, approvedBy: "max", answer: textOf(approved), auditTypes: events.map((e) => e.type) },
      overLimit: { threadId: "sales-Q-1003", paused: overPaused, answer: textOf(over) },
      discounts: rows,
      verified,
    };
  } finally {
    await close();
  }
}
