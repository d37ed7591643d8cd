import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { MemorySaver, type BaseCheckpointSaver } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { IdentityRegistry, MemoryAuditLog, type AgentIdentity, type AuditLog, type BudgetGuard, type PolicyEngine } from "eart";
import { createGovernedAgent, type GovernedAgentOptions } from "eart/graphs";
import { scriptedModel } from "eart/testing";
import identities from "../../examples/refund/identities.json" with { type: "json" };
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";

export type Call = { id: string; name: string; args: Record<string, unknown> };

/** A model that proposes `turns[i]` on its i-th turn, then answers with text. */
export function turnsModel(turns: Call[][]) {
  return scriptedModel((messages: BaseMessage[]) => {
    const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
    const calls = turns[turn];
    return calls ? new AIMessage({ content: "", tool_calls: calls }) : new AIMessage(`done after ${turn} turns`);
  });
}

export const registry = IdentityRegistry.fromObject(identities);

export const config = (threadId: string, userId = "cara", extra: Record<string, unknown> = {}) => ({
  configurable: { thread_id: threadId, agent_id: "support-agent", user_id: userId, ...extra },
});

/** The refund agent in memory, with a real refunds table (SQLite in memory) to count side effects. */
export function refundSetup(
  turns: Call[][],
  opts: {
    policy?: PolicyEngine;
    checkpointer?: BaseCheckpointSaver;
    auditLog?: AuditLog;
    clock?: () => Date;
    onExpired?: "answer" | "rerequest";
    budgets?: BudgetGuard;
    /** Any other option of the agent (ledger, execution, recoveryRoles, threadLock, model retry…). */
    agent?: Partial<GovernedAgentOptions>;
    /** Replaces the refund tools (same database). */
    tools?: (tools: ReturnType<typeof createRefundTools>) => GovernedAgentOptions["tools"];
  } = {},
) {
  const db = new Database(":memory:");
  const tools = createRefundTools(db);
  const auditLog = opts.auditLog ?? new MemoryAuditLog();
  const model = turnsModel(turns);
  const agent = createGovernedAgent({
    model,
    tools: opts.tools ? opts.tools(tools) : tools.all,
    identities: registry,
    policy: opts.policy ?? refundPolicy,
    checkpointer: opts.checkpointer ?? new MemorySaver(),
    auditLog,
    ...(opts.clock ? { clock: opts.clock } : {}),
    ...(opts.onExpired ? { onExpired: opts.onExpired } : {}),
    ...(opts.budgets ? { budgets: opts.budgets } : {}),
    ...opts.agent,
  });
  const refunds = () =>
    db.prepare(`SELECT order_id AS orderId, amount, tool_call_id AS toolCallId FROM refunds ORDER BY id`).all() as {
      orderId: string;
      amount: number;
      toolCallId: string;
    }[];
  return { agent, auditLog, model, db, tools, refunds };
}

export const ask = (text = "Please refund order 1042, $740.") => ({ messages: [new HumanMessage(text)] });

export const refund = (id: string, amount: number, orderId = "1042"): Call => ({ id, name: "issue_refund", args: { orderId, amount } });
export const lookup = (id: string, orderId = "1042"): Call => ({ id, name: "lookup_order", args: { orderId } });

/** Tool messages answering a call id. */
export const answersTo = (messages: BaseMessage[], id: string) =>
  messages.filter((m): m is ToolMessage => ToolMessage.isInstance(m) && m.tool_call_id === id);

/** The support agent's identity acting for cara, with her roles and its data scopes as a test needs them. */
export const customerIdentity = (roles: string[] = ["customer"], dataScopes = ["orders", "kb"]): AgentIdentity => ({
  schemaVersion: 1,
  id: "support-agent",
  roles: ["support"],
  tools: ["lookup_order"],
  dataScopes,
  onBehalfOf: { id: "cara", roles },
  source: "configurable.user_id",
});
