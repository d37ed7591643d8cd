import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import { IdentityRegistry, SqliteAuditLog } from "eart";
import { createGovernedAgent } from "eart/graphs";
import { createRefundModel } from "./model.js";
import { refundPolicy } from "./policy.js";
import { createRefundTools } from "./tools.js";
import identities from "./identities.json" with { type: "json" };

/** The refund identities, from the JSON file beside this example. */
export function refundIdentities(): IdentityRegistry {
  return IdentityRegistry.fromObject(identities);
}

/**
 * The governed refund agent on one SQLite file: LangGraph's SQLite checkpointer, eart's SQLite
 * audit log and the `refunds` table the refund tool writes to.
 */
export async function openRefundAgent(file: string): Promise<{
  agent: ReturnType<typeof createGovernedAgent>;
  auditLog: SqliteAuditLog;
  db: Database.Database;
  refunds: () => unknown[];
  close: () => void;
}> {
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const checkpointer = new SqliteSaver(db);
  const auditLog = new SqliteAuditLog({ database: db });
  const tools = createRefundTools(db);
  const agent = createGovernedAgent({
    model: await createRefundModel(),
    tools: tools.all,
    identities: refundIdentities(),
    policy: refundPolicy,
    checkpointer,
    auditLog,
    systemPrompt: "You are a customer-support agent. Look orders up before refunding them.",
  });
  const refunds = () => db.prepare(`SELECT order_id AS orderId, amount, tool_call_id AS toolCallId FROM refunds ORDER BY id`).all();
  return { agent, auditLog, db, refunds, close: () => db.close() };
}
