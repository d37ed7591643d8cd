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
 * What makes the procurement agent, without its stores: the model (default
 * {@link createProcurementModel}), the procurement tools on `db` (the SQLite database holding the
 * `renegotiation_recommendations` and `renegotiations` tables), identities, policy, and the
 * contracts, spend and benchmarks as context. `openProcurementAgent` adds the stores; the
 * LangGraph server graph adds eart's server stores (examples/server/scenarios.ts).
 */
export async function procurementAgentOptions(db: Database.Database, options: Pick<ProcurementAgentOptions, "model"> = {}) {
  const tools = createProcurementTools(db);
  return {
    tools,
    recommendations: tools.recommendations,
    renegotiations: tools.renegotiations,
    options: {
      model: options.model ?? (await createProcurementModel()),
      tools: tools.all,
      identities: procurementIdentities(),
      policy: procurementPolicy,
      // A renegotiation the tools could not open waits for a procurement manager.
      recoveryRoles: ["procurement-manager"],
      systemPrompt:
        "You review supplier agreements for savings. Compare each contract's unit price with its market benchmark and twelve months " +
        "of spend, cite context ids, recommend renegotiating the largest opportunity with recommend_renegotiation, then open it " +
        "with initiate_renegotiation (a procurement manager approves it).",
      context: { providers: [{ name: "contracts", retriever: new ContractRetriever() }, spendData, priceBenchmarks] },
    },
  };
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
  const made = await procurementAgentOptions(db, options);
  const agent = createGovernedAgent({
    ...made.options,
    checkpointer: options.checkpointer ?? new SqliteSaver(db),
    auditLog,
    ledger: new SqliteEffectLedger({ database: db }),
  });
  return {
    agent,
    auditLog,
    recommendations: made.recommendations,
    renegotiations: made.renegotiations,
    close: async () => {
      db.close();
    },
  };
}
