import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import type { BaseCheckpointSaver } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import { IdentityRegistry, type AuditLog } from "eart";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedAgent } from "eart/graphs";
import { paymentContext, paymentRedaction } from "./data.js";
import identities from "./identities.json" with { type: "json" };
import { createFinanceModel } from "./model.js";
import { financePolicy } from "./policy.js";
import { createFinanceTools, type ExecutionRow, type OutboxRow, type PaymentRow } from "./tools.js";

/** The finance identities, from the JSON file beside this example. */
export function financeIdentities(): IdentityRegistry {
  return IdentityRegistry.fromObject(identities);
}

/** Options of {@link openFinancePaymentAgent}. */
export interface FinancePaymentAgentOptions {
  /** The SQLite file for checkpoints, audit log, ledger and the payment tables. Default: in memory. */
  file?: string;
  /** Checkpoints elsewhere (e.g. a `MemorySaver` in tests). */
  checkpointer?: BaseCheckpointSaver;
  /** The audit log elsewhere (e.g. a `MemoryAuditLog` in tests). */
  auditLog?: AuditLog;
  /** Default: {@link createFinanceModel}. */
  model?: BaseChatModel;
}

/**
 * What makes the accounts-payable agent, without its stores: the model (default
 * {@link createFinanceModel}), the finance tools on `db` (the SQLite database holding the
 * `payments`, `payment_executions` and `outbox` tables), identities, policy, the payment context
 * and its redaction. `openFinancePaymentAgent` adds the stores; the LangGraph server graph adds
 * eart's server stores (examples/server/scenarios.ts).
 */
export async function financePaymentAgentOptions(db: Database.Database, options: Pick<FinancePaymentAgentOptions, "model"> = {}) {
  const tools = createFinanceTools(db);
  return {
    tools,
    payments: tools.payments,
    executions: tools.executions,
    outbox: tools.outbox,
    options: {
      model: options.model ?? (await createFinanceModel()),
      tools: tools.all,
      identities: financeIdentities(),
      policy: financePolicy,
      // A payment the tools could not finish waits for a finance controller (retry, mark done, abandon).
      recoveryRoles: ["finance"],
      context: { providers: [paymentContext], redaction: paymentRedaction },
      systemPrompt:
        "You are an accounts-payable assistant. Prepare the payment of the invoice in the context, then ask to execute it; a finance controller decides. Never put bank details in an e-mail.",
    },
  };
}

/**
 * The governed accounts-payable agent. It retrieves the invoice, the vendor and the vendor's bank
 * details (IBANs redacted unless the agent acts for treasury; the thread is labelled
 * `payment_data`), prepares payments on its own, and never releases one without someone in
 * finance. Once the thread has seen payment data it may not e-mail outside the company.
 */
export async function openFinancePaymentAgent(options: FinancePaymentAgentOptions = {}): Promise<{
  agent: ReturnType<typeof createGovernedAgent>;
  auditLog: AuditLog;
  payments: () => PaymentRow[];
  executions: () => ExecutionRow[];
  outbox: () => OutboxRow[];
  close: () => Promise<void>;
}> {
  const db = new Database(options.file ?? ":memory:");
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const auditLog = options.auditLog ?? new SqliteAuditLog({ database: db });
  const made = await financePaymentAgentOptions(db, options);
  const agent = createGovernedAgent({
    ...made.options,
    checkpointer: options.checkpointer ?? new SqliteSaver(db),
    auditLog,
    ledger: new SqliteEffectLedger({ database: db }),
  });
  return {
    agent,
    auditLog,
    payments: made.payments,
    executions: made.executions,
    outbox: made.outbox,
    close: async () => {
      db.close();
    },
  };
}
