/**
 * The refund story in two processes sharing one SQLite file:
 *   1. `request`: customer cara asks for a $740 refund; the graph pauses for a supervisor.
 *   2. `approve`: a new process loads the thread from the file, resumes as supervisor sam, and
 *      prints the outcome, the audit trail and the result of verify.
 * Run with no argument to play both, each in its own process.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { HumanMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { pendingApproval } from "eart";
import { openRefundAgent } from "./agent.js";

const file = resolve(process.env.EART_DEMO_FILE ?? ".eart/refund-demo.sqlite");
const threadId = "refund-1042";
const config = { configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" } };

async function request(): Promise<void> {
  const { agent, close } = await openRefundAgent(file);
  const text = "Hi, order 1042 arrived broken. Please refund $740.";
  console.log(`[process ${process.pid}] cara: ${text}`);
  const result = await agent.invoke({ messages: [new HumanMessage(text)] }, config);
  const approval = pendingApproval(result);
  if (!approval) throw new Error("expected the refund to wait for a supervisor");
  console.log(`[process ${process.pid}] paused: waiting for approval`);
  for (const r of approval.requests) {
    console.log(`  ${r.toolCallId}  ${r.name} ${JSON.stringify(r.args)}`);
    console.log(`    why: ${r.reasons.join("; ")}  (policy ${r.policyIds.join(", ")}, version ${r.policyVersion.slice(0, 12)})`);
    console.log(`    approver roles: ${r.approverRoles.join(", ")}  requested by ${r.requestedBy.agentId} for ${r.requestedBy.userId}`);
    console.log(`    digest: ${r.digest}`);
  }
  await close();
}

async function approve(): Promise<void> {
  const { agent, auditLog, refunds, close } = await openRefundAgent(file);
  const approval = pendingApproval(await agent.getState(config));
  if (!approval) throw new Error(`thread ${threadId} is not waiting for an approval`);
  console.log(`[process ${process.pid}] loaded ${threadId} from ${file}: ${approval.requests.length} call(s) waiting`);
  const decisions = approval.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve" as const, digest: r.digest }));
  console.log(`[process ${process.pid}] sam approves ${decisions.map((d) => d.toolCallId).join(", ")}`);
  const result = await agent.invoke(new Command({ resume: { decisions } }), { configurable: { thread_id: threadId, user_id: "sam" } });
  const last = result.messages[result.messages.length - 1];
  console.log(`[process ${process.pid}] agent: ${String(last?.content)}`);
  console.log(`refunds table: ${JSON.stringify(await refunds())}`);
  console.log("audit trail:");
  for (const e of await auditLog.read(threadId)) {
    const d = e.data as Record<string, unknown>;
    const detail = [d.name, d.decision ?? d.effect, d.approverId, d.status].filter((x) => x !== undefined && x !== null).join(" ");
    console.log(`  #${String(e.seq).padStart(2)} ${e.type.padEnd(18)} ${detail}  ${e.hash.slice(0, 12)}`);
  }
  const verification = await auditLog.verify(threadId);
  console.log(`verify: ${verification.ok ? `ok, ${verification.count} events, head ${verification.headHash.slice(0, 12)}` : JSON.stringify(verification.brokenAt)}`);
  await close();
  if (!verification.ok) process.exitCode = 1;
}

const step = process.argv[2];
if (step === "request") await request();
else if (step === "approve") await approve();
else {
  mkdirSync(dirname(file), { recursive: true });
  for (const suffix of ["", "-wal", "-shm"]) rmSync(file + suffix, { force: true });
  for (const s of ["request", "approve"]) {
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), s], { stdio: "inherit", env: { ...process.env, EART_DEMO_FILE: file } });
    if (child.status !== 0) process.exit(child.status ?? 1);
  }
}
