import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import type { BaseCheckpointSaver } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import { IdentityRegistry, type AuditLog } from "eart";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedAgent } from "eart/graphs";
import { ContractRetriever, priceBenchmarks, spendData } from "./data.js";
import { createProcurementModel } from "./model.js";
import { procurementPolicy } from "./policy.js";
import { createProcurementTools } from "./tools.js";
import identities from "./identities.json" with { type: "json" };

/** The procurement identities, from the JSON file beside this example. */
export function procurementIdentities(): IdentityRegistry {
  return IdentityRegistry.fromObject(identities);
}

/** Options of {@link openProcurementAgent}. */
export interface ProcurementAgentOptions {
  /** The SQLite file for checkpoints, audit log, effect ledger and the procurement tables; in memory when omitted. */
  file?: string;
  /** Defaults to {@link createProcurementModel}. */
  model?: BaseChatModel;
  /** Defaults to LangGraph's SQLite checkpointer on the same database. */
  checkpointer?: BaseCheckpointSaver;
  /** Defaults to eart's SQLite audit log on the same database. */
  auditLog?: AuditLog;
}

/**
 * The governed procurement agent. Each run retrieves the supplier contracts (a LangChain
 * retriever), twelve months of spend and market benchmarks; the agent may recommend a
 * renegotiation, and opening one waits for a procurement manager's approval.
 */
export async function openProcurementAgent(options: ProcurementAgentOptions = {}) {
  const db = new Database(options.file ?? ":memory:");
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const auditLog = options.auditLog ?? new SqliteAuditLog({ database: db });
  const tools = createProcurementTools(db);
  const agent = createGovernedAgent({
    model: options.model ?? (await createProcurementModel()),
    tools: tools.all,
    identities: procurementIdentities(),
    policy: procurementPolicy,
    checkpointer: options.checkpointer ?? new SqliteSaver(db),
    auditLog,
    ledger: new SqliteEffectLedger({ database: db }),
    systemPrompt:
      "You review supplier agreements for savings. Compare each contract's unit price with its market benchmark and twelve months " +
      "of spend, cite context ids, recommend renegotiating the largest opportunity with recommend_renegotiation, then open it " +
      "with initiate_renegotiation (a procurement manager approves it).",
    context: { providers: [{ name: "contracts", retriever: new ContractRetriever() }, spendData, priceBenchmarks] },
  });
  return {
    agent,
    auditLog,
    recommendations: tools.recommendations,
    renegotiations: tools.renegotiations,
    close: async () => {
      db.close();
    },
  };
}
