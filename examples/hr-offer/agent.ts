import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import type { BaseCheckpointSaver } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import { IdentityRegistry, type AuditLog } from "eart";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedAgent } from "eart/graphs";
import { offerContext, offerRedaction } from "./data.js";
import { createOfferModel } from "./model.js";
import { offerPolicy } from "./policy.js";
import { createOfferTools } from "./tools.js";
import identities from "./identities.json" with { type: "json" };

/** The HR identities, from the JSON file beside this example. */
export function offerIdentities(): IdentityRegistry {
  return IdentityRegistry.fromObject(identities);
}

/** Options of {@link openOfferAgent}. */
export interface OfferAgentOptions {
  /** The SQLite file for checkpoints, audit log, effect ledger and the offer tables; in memory when omitted. */
  file?: string;
  /** Defaults to {@link createOfferModel}. */
  model?: BaseChatModel;
  /** Defaults to LangGraph's SQLite checkpointer on the same database. */
  checkpointer?: BaseCheckpointSaver;
  /** Defaults to eart's SQLite audit log on the same database. */
  auditLog?: AuditLog;
}

/**
 * What makes the offer-letter agent, without its stores: the model (default
 * {@link createOfferModel}), the offer tools on `db` (the SQLite database holding the
 * `offer_drafts` and `sent_offers` tables), identities, policy, the offer context with its
 * compensation redaction and required facts, and escalation to an HR manager. `openOfferAgent`
 * adds the stores; the LangGraph server graph adds eart's server stores (examples/server/scenarios.ts).
 */
export async function offerAgentOptions(db: Database.Database, options: Pick<OfferAgentOptions, "model"> = {}) {
  const tools = createOfferTools(db);
  return {
    tools,
    drafts: tools.drafts,
    sentOffers: tools.sentOffers,
    options: {
      model: options.model ?? (await createOfferModel()),
      tools: tools.all,
      identities: offerIdentities(),
      policy: offerPolicy,
      // An offer the tools could not finish sending waits for an HR director.
      recoveryRoles: ["hr-director"],
      systemPrompt:
        "You draft offer letters from the retrieved context: the role level, the requisition's approval status and the salary band. " +
        "Never guess a salary: if the band's figures are redacted, draft with baseSalary null and say the salary is pending. " +
        "Send an offer only when asked and the draft states the salary, with the draft's candidate, level and base salary.",
      context: {
        providers: [offerContext],
        redaction: offerRedaction,
        required: [
          { fact: "role_level", description: "the requisition's role level" },
          { fact: "approval_status", description: "the requisition's approval" },
          { fact: "salary_band", description: "the band of the role level" },
        ],
      },
      escalation: { reviewerRoles: ["hr-manager"] },
    },
  };
}

/**
 * The governed offer-letter agent. Each run retrieves the candidate, the requisition (role level,
 * approval status) and the salary band; compensation figures are redacted unless the agent acts
 * for an HR manager, in what the model sees, in tool results and in the audit log. A missing
 * requisition or band goes to an HR manager; sending an offer waits for an HR director, who is
 * shown the terms sent (a salary outside the level's band is marked as the exception it is).
 */
export async function openOfferAgent(options: OfferAgentOptions = {}) {
  const db = new Database(options.file ?? ":memory:");
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const auditLog = options.auditLog ?? new SqliteAuditLog({ database: db });
  const made = await offerAgentOptions(db, options);
  const agent = createGovernedAgent({
    ...made.options,
    checkpointer: options.checkpointer ?? new SqliteSaver(db),
    auditLog,
    ledger: new SqliteEffectLedger({ database: db }),
  });
  return {
    agent,
    auditLog,
    drafts: made.drafts,
    sentOffers: made.sentOffers,
    close: async () => {
      db.close();
    },
  };
}
