import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { HumanMessage } from "@langchain/core/messages";
import type { BaseCheckpointSaver } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import { defineRedaction, IdentityRegistry, STANDARD_REDACTIONS, type AuditLog } from "eart";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedAgent } from "eart/graphs";
import type { GovernedState, RequiredFact } from "eart/nodes";
import { applicantDocuments, applicationIdOf, creditBureau } from "./data.js";
import { createLoanModel } from "./model.js";
import { loanPolicy } from "./policy.js";
import { createLoanTools } from "./tools.js";
import identities from "./identities.json" with { type: "json" };

/** The loan identities, from the JSON file beside this example. */
export function loanIdentities(): IdentityRegistry {
  return IdentityRegistry.fromObject(identities);
}

/** What the agent must have before it may recommend: a missing one goes to an underwriter. */
export const LOAN_REQUIRED_FACTS: RequiredFact[] = [
  { fact: "identity_document", description: "a verified identity document" },
  { fact: "income_proof", description: "payslips or a tax return" },
  { fact: "credit_report", description: "the credit bureau report" },
];

/** The application the officer's newest request names (a follow-up that names none keeps the one before). */
function currentApplicationId(state: GovernedState): string | undefined {
  for (const m of [...state.messages].reverse()) {
    if (!HumanMessage.isInstance(m)) continue;
    const id = applicationIdOf(typeof m.content === "string" ? m.content : JSON.stringify(m.content));
    if (id) return id;
  }
  return undefined;
}

/**
 * What the checks read, of the application being screened only: a thread keeps every item it
 * retrieved, so an earlier application's report or payslips are still there and must not stand in
 * for this one's. The application item names its applicant (whose credit report it is); the
 * submitted documents carry the application's id in theirs (`A-100/payslips`).
 */
function applicationData(state: GovernedState): { report?: Record<string, number>; income?: Record<string, number> } {
  const applicationId = currentApplicationId(state);
  const items = state.context?.items ?? [];
  const contentOf = (item: { content?: unknown } | undefined) => item?.content as Record<string, unknown> | undefined;
  const application = contentOf(items.find((i) => i.labels.includes("loan_application") && contentOf(i)?.applicationId === applicationId));
  if (!applicationId || !application) return {};
  const report = items.find((i) => i.labels.includes("credit_report") && contentOf(i)?.applicantId === application.applicantId);
  const income = items.find((i) => i.labels.includes("income_proof") && i.id.startsWith(`${applicationId}/`));
  return { report: contentOf(report) as Record<string, number> | undefined, income: contentOf(income) as Record<string, number> | undefined };
}

/**
 * Two independent reads of the application being screened: the credit score band, and
 * affordability (debts under 40% of monthly income). When they disagree, an underwriter decides.
 * Each abstains (undefined) when its data is missing.
 */
export const LOAN_CHECKS = {
  creditScore: (state: GovernedState) => {
    const { report } = applicationData(state);
    return report ? (report.score! >= 680 ? "eligible" : "refer") : undefined;
  },
  affordability: (state: GovernedState) => {
    const { report, income } = applicationData(state);
    if (!report || typeof income?.annualIncomeCents !== "number") return undefined;
    return report.monthlyDebtCents! / (income.annualIncomeCents / 12) <= 0.4 ? "eligible" : "refer";
  },
};

/** Options of {@link openLoanAgent}. */
export interface LoanAgentOptions {
  /** The SQLite file for checkpoints, audit log, effect ledger and the loan tables; in memory when omitted. */
  file?: string;
  /** Defaults to {@link createLoanModel}. */
  model?: BaseChatModel;
  /** Defaults to LangGraph's SQLite checkpointer on the same database. */
  checkpointer?: BaseCheckpointSaver;
  /** Defaults to eart's SQLite audit log on the same database. */
  auditLog?: AuditLog;
}

/**
 * What makes the loan pre-screening agent, without its stores: the model (default
 * {@link createLoanModel}), the loan tools on `db` (the SQLite database holding the
 * `loan_recommendations` and `loan_approvals` tables), identities, policy, the applicant's
 * documents and credit report as context (national ids redacted, required facts), and escalation
 * to an underwriter (confidence under 0.7, checks that disagree). `openLoanAgent` adds the stores;
 * the LangGraph server graph adds eart's server stores (examples/server/scenarios.ts).
 */
export async function loanAgentOptions(db: Database.Database, options: Pick<LoanAgentOptions, "model"> = {}) {
  const tools = createLoanTools(db);
  return {
    tools,
    recommendations: tools.recommendations,
    approvals: tools.approvals,
    options: {
      model: options.model ?? (await createLoanModel()),
      tools: tools.all,
      identities: loanIdentities(),
      policy: loanPolicy,
      // A decision the tools could not record waits for an underwriter.
      recoveryRoles: ["underwriter"],
      systemPrompt:
        "You pre-screen loan applications. Use only the retrieved context and cite its ids. You may recommend an application " +
        "with recommend_loan; you never approve loans. Finish with JSON: {applicationId, recommendation, confidence (0-1)}.",
      context: {
        providers: [applicantDocuments, creditBureau],
        redaction: defineRedaction(STANDARD_REDACTIONS),
        required: LOAN_REQUIRED_FACTS,
      },
      escalation: { reviewerRoles: ["underwriter"], confidence: { threshold: 0.7 }, checks: LOAN_CHECKS },
    },
  };
}

/**
 * The governed loan pre-screening agent. At the start of each run it retrieves the application,
 * the submitted documents and the credit report (scopes `loan_documents` and `credit`; national
 * ids redacted), and escalates to an underwriter when a required document is missing. It may
 * recommend an application of up to $50,000, for the amount applied for; a larger one, checks
 * (of this application's data) that disagree or a confidence under 0.7 go to an underwriter, who
 * takes over, sends the case back or closes it. It never approves.
 */
export async function openLoanAgent(options: LoanAgentOptions = {}) {
  const db = new Database(options.file ?? ":memory:");
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const auditLog = options.auditLog ?? new SqliteAuditLog({ database: db });
  const made = await loanAgentOptions(db, options);
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
    approvals: made.approvals,
    close: async () => {
      db.close();
    },
  };
}
