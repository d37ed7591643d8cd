import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { MemorySaver, type BaseCheckpointSaver } from "@langchain/langgraph";
import { z } from "zod";
import Database from "better-sqlite3";
import { createAgent, type AgentMiddleware } from "langchain";
import { MemoryAuditLog, MemoryEffectLedger, type AuditLog, type EffectLedger, type PolicyEngine } from "eart";
import { governanceMiddleware, guardAgent, type GovernanceMiddlewareOptions } from "eart/middleware";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { registry, turnsModel, type Call } from "./refund.js";

/**
 * The refund agent as a LangChain v1 `createAgent` agent with `governanceMiddleware`, a scripted
 * model proposing `turns`, and a real refunds table (SQLite in memory) to count side effects.
 */
export function middlewareRefundSetup(
  turns: Call[][],
  opts: {
    policy?: PolicyEngine;
    checkpointer?: BaseCheckpointSaver;
    auditLog?: AuditLog;
    ledger?: EffectLedger;
    database?: Database.Database;
    /** Middleware around eart's (before it in the list), and after it. */
    before?: AgentMiddleware[];
    after?: AgentMiddleware[];
    governance?: Partial<GovernanceMiddlewareOptions>;
    /** Replaces the scripted model of `turns`. */
    model?: ReturnType<typeof turnsModel>;
    /** false: the agent without guardAgent (what the middleware holds on its own). */
    guard?: boolean;
    /** Wraps issue_refund's function (to make it fail, say). */
    wrapRefund?: (real: (args: Record<string, unknown>, config: unknown) => Promise<unknown>) => (args: Record<string, unknown>, config: unknown) => Promise<unknown>;
  } = {},
) {
  const db = opts.database ?? new Database(":memory:");
  const created = createRefundTools(db);
  const tools = opts.wrapRefund ? { ...created, all: created.all.map((t) => (t.name === "issue_refund" ? wrapped(t, opts.wrapRefund!) : t)) } : created;
  const auditLog = opts.auditLog ?? new MemoryAuditLog();
  const ledger = opts.ledger ?? new MemoryEffectLedger();
  const model = opts.model ?? turnsModel(turns);
  const governance = governanceMiddleware({ identities: registry, policy: opts.policy ?? refundPolicy, auditLog, ledger, ...opts.governance });
  const unguarded = createAgent({
    model,
    tools: tools.all,
    checkpointer: opts.checkpointer ?? new MemorySaver(),
    middleware: [...(opts.before ?? []), governance, ...(opts.after ?? [])],
  });
  const agent = opts.guard === false ? unguarded : guardAgent(unguarded, governance);
  const refunds = () =>
    db.prepare(`SELECT order_id AS orderId, amount, tool_call_id AS toolCallId FROM refunds ORDER BY id`).all() as { orderId: string; amount: number; toolCallId: string }[];
  return { agent, auditLog, ledger, model, db, tools, refunds };
}

/** A copy of a LangChain tool whose function is wrapped. */
function wrapped(t: StructuredToolInterface, wrap: (real: (args: Record<string, unknown>, config: unknown) => Promise<unknown>) => (args: Record<string, unknown>, config: unknown) => Promise<unknown>): StructuredToolInterface {
  const real = (args: Record<string, unknown>, config: unknown) => t.invoke(args, config as never);
  return tool(wrap(real) as never, { name: t.name, description: t.description, schema: t.schema as z.ZodObject<z.ZodRawShape> }) as unknown as StructuredToolInterface;
}
