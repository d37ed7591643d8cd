/**
 * A child process of the CLI tests: approves the refund thread of the demo file (EART_DEMO_FILE)
 * as sam, and dies right after `approval.decided` is recorded, before the gate's step is saved,
 * as a process killed at that moment would.
 */
import { Command } from "@langchain/langgraph";
import { pendingApproval, type AuditEventInput } from "eart";
import { openRefundAgent } from "../../examples/refund/agent.js";

const { agent, auditLog } = await openRefundAgent(process.env.EART_DEMO_FILE!);
const append = auditLog.append.bind(auditLog);
auditLog.append = async (events: AuditEventInput | readonly AuditEventInput[]) => {
  const stored = await append(events);
  if (stored.some((e) => e.type === "approval.decided")) process.exit(9);
  return stored;
};
const config = { configurable: { thread_id: "refund-1042", user_id: "sam" } };
const request = pendingApproval(await agent.getState(config))!;
await agent.invoke(new Command({ resume: { decisions: [{ toolCallId: request.requests[0]!.toolCallId, type: "approve", digest: request.requests[0]!.digest }] } }), config);
process.exit(0);
