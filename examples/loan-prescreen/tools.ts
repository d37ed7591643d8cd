import { tool } from "@langchain/core/tools";
import type Database from "better-sqlite3";
import { ToolArgumentError } from "eart";
import { executionContextOf } from "eart/nodes";
import { z } from "zod";
import { applicationOf } from "./data.js";

/** A row of `loan_recommendations` or `loan_approvals`. */
export interface LoanDecisionRow {
  applicationId: string;
  amountCents: number;
  toolCallId: string | null;
}

const toolCallIdOf = (config: unknown) => (config as { toolCall?: { id?: string } } | undefined)?.toolCall?.id ?? null;

/**
 * The loan tools, writing to two tables of the given SQLite database: `recommend_loan` records a
 * recommendation for an underwriter to act on; `approve_loan` records a final approval, the
 * decision only an underwriter makes. Both forward eart's idempotency key to a unique column.
 * `recommend_loan` recommends an application for the amount applied for and refuses any other:
 * policy decides on the call's `amountCents`, so the call that runs must state the application's
 * own amount (a $120,000 application quoted "at $49,999" would pass the $50,000 limit).
 */
export function createLoanTools(db: Database.Database) {
  for (const table of ["loan_recommendations", "loan_approvals"]) {
    db.exec(`CREATE TABLE IF NOT EXISTS ${table} (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      application_id TEXT NOT NULL,
      amount_cents INTEGER NOT NULL,
      note TEXT,
      tool_call_id TEXT,
      idempotency_key TEXT UNIQUE
    )`);
  }
  const insert = (table: string) =>
    db.prepare(`INSERT INTO ${table} (application_id, amount_cents, note, tool_call_id, idempotency_key) VALUES (?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING`);
  const insertRecommendation = insert("loan_recommendations");
  const insertApproval = insert("loan_approvals");
  const rows = (table: string) => (): LoanDecisionRow[] =>
    db.prepare(`SELECT application_id AS applicationId, amount_cents AS amountCents, tool_call_id AS toolCallId FROM ${table} ORDER BY id`).all() as LoanDecisionRow[];

  const schema = z.object({
    applicationId: z.string().describe("The application id, e.g. A-100"),
    amountCents: z.number().int().positive().describe("The loan amount in cents"),
  });

  const recommendLoan = tool(
    async ({ applicationId, amountCents, rationale }, config) => {
      const application = applicationOf(applicationId);
      if (!application) throw new ToolArgumentError(`no application ${applicationId}`);
      if (amountCents !== application.amountCents) {
        throw new ToolArgumentError(`application ${applicationId} is for ${application.amountCents} cents: recommend the amount applied for, not ${amountCents}`);
      }
      insertRecommendation.run(applicationId, amountCents, rationale, toolCallIdOf(config), executionContextOf(config)?.idempotencyKey ?? null);
      return JSON.stringify({ applicationId, amountCents, status: "recommended", next: "an underwriter makes the final decision" });
    },
    {
      name: "recommend_loan",
      description: "Record a recommendation to approve a loan application for the amount applied for, with the rationale. It is not an approval.",
      schema: schema.extend({ rationale: z.string().describe("Why, citing the context ids") }),
    },
  );

  const approveLoan = tool(
    async ({ applicationId, amountCents }, config) => {
      insertApproval.run(applicationId, amountCents, null, toolCallIdOf(config), executionContextOf(config)?.idempotencyKey ?? null);
      return JSON.stringify({ applicationId, amountCents, status: "approved" });
    },
    { name: "approve_loan", description: "Give final approval to a loan application (underwriters only).", schema },
  );

  return {
    recommendLoan,
    approveLoan,
    all: [recommendLoan, approveLoan],
    recommendations: rows("loan_recommendations"),
    approvals: rows("loan_approvals"),
  };
}
