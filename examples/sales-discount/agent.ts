import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import type { BaseCheckpointSaver } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import { IdentityRegistry, type AuditLog } from "eart";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedAgent } from "eart/graphs";
import { quoteContext } from "./data.js";
import identities from "./identities.json" with { type: "json" };
import { createSalesModel } from "./model.js";
import { salesDiscountPolicy } from "./policy.js";
import { createSalesTools, type DiscountRow } from "./tools.js";

/** The sales identities, from the JSON file beside this example. */
export function salesIdentities(): IdentityRegistry {
  return IdentityRegistry.fromObject(identities);
}

/** Options of {@link openSalesDiscountAgent}. */
export interface SalesDiscountAgentOptions {
  /** The SQLite file for checkpoints, audit log, ledger and the `discounts` table. Default: in memory. */
  file?: string;
  /** Checkpoints elsewhere (e.g. a `MemorySaver` in tests). */
  checkpointer?: BaseCheckpointSaver;
  /** The audit log elsewhere (e.g. a `MemoryAuditLog` in tests). */
  auditLog?: AuditLog;
  /** Default: {@link createSalesModel}. */
  model?: BaseChatModel;
}

/**
 * What makes the sales agent, without its stores: the model (default {@link createSalesModel}),
 * the discount tool on `db` (the SQLite database holding the `discounts` table), identities,
 * policy and the quote context. `openSalesDiscountAgent` adds the stores; the LangGraph server
 * graph adds eart's server stores (examples/server/scenarios.ts).
 */
export async function salesDiscountAgentOptions(db: Database.Database, options: Pick<SalesDiscountAgentOptions, "model"> = {}) {
  const tools = createSalesTools(db);
  return {
    tools,
    discounts: tools.discounts,
    options: {
      model: options.model ?? (await createSalesModel()),
      tools: tools.all,
      identities: salesIdentities(),
      policy: salesDiscountPolicy,
      // A discount the tools could not apply waits for a sales manager.
      recoveryRoles: ["sales-manager"],
      context: { providers: [quoteContext] },
      systemPrompt: "You are a sales assistant. Apply the discount the account executive asks for to their quote in the context, and cite the quote.",
    },
  };
}

/**
 * The governed sales agent. It reads the quote (retrieved context, scope-filtered: internal cost
 * sheets are dropped) and applies discounts to the quotes of the human it acts for: up to 10%
 * alone, above that with a sales manager other than the quote's owner, above 30% never; a
 * colleague's quote, never. Everything lives in one SQLite file unless a checkpointer or audit
 * log is given.
 */
export async function openSalesDiscountAgent(options: SalesDiscountAgentOptions = {}): Promise<{
  agent: ReturnType<typeof createGovernedAgent>;
  auditLog: AuditLog;
  discounts: () => DiscountRow[];
  close: () => Promise<void>;
}> {
  const db = new Database(options.file ?? ":memory:");
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const auditLog = options.auditLog ?? new SqliteAuditLog({ database: db });
  const made = await salesDiscountAgentOptions(db, options);
  const agent = createGovernedAgent({
    ...made.options,
    checkpointer: options.checkpointer ?? new SqliteSaver(db),
    auditLog,
    ledger: new SqliteEffectLedger({ database: db }),
  });
  return {
    agent,
    auditLog,
    discounts: made.discounts,
    close: async () => {
      db.close();
    },
  };
}
