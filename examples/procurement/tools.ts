import { tool } from "@langchain/core/tools";
import type Database from "better-sqlite3";
import { ToolArgumentError } from "eart";
import { executionContextOf } from "eart/nodes";
import { z } from "zod";
import { CONTRACTS } from "./data.js";

/** A row of `renegotiation_recommendations` or `renegotiations`. */
export interface RenegotiationRow {
  contractId: string;
  supplierId: string;
  targetUnitPriceCents: number;
  toolCallId: string | null;
}

const toolCallIdOf = (config: unknown) => (config as { toolCall?: { id?: string } } | undefined)?.toolCall?.id ?? null;

/**
 * The procurement tools, writing to the given SQLite database: `recommend_renegotiation` files a
 * recommendation for the category team; `initiate_renegotiation` opens the renegotiation (the
 * supplier gets a notice), the step a procurement manager must approve. Both forward eart's
 * idempotency key to a unique column.
 */
export function createProcurementTools(db: Database.Database) {
  for (const table of ["renegotiation_recommendations", "renegotiations"]) {
    db.exec(`CREATE TABLE IF NOT EXISTS ${table} (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      contract_id TEXT NOT NULL,
      supplier_id TEXT NOT NULL,
      target_unit_price_cents INTEGER NOT NULL,
      note TEXT,
      tool_call_id TEXT,
      idempotency_key TEXT UNIQUE
    )`);
  }
  const insert = (table: string) =>
    db.prepare(
      `INSERT INTO ${table} (contract_id, supplier_id, target_unit_price_cents, note, tool_call_id, idempotency_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING`,
    );
  const insertRecommendation = insert("renegotiation_recommendations");
  const insertRenegotiation = insert("renegotiations");
  const rows = (table: string) => (): RenegotiationRow[] =>
    db
      .prepare(`SELECT contract_id AS contractId, supplier_id AS supplierId, target_unit_price_cents AS targetUnitPriceCents, tool_call_id AS toolCallId FROM ${table} ORDER BY id`)
      .all() as RenegotiationRow[];
  const contractOf = (contractId: string, supplierId: string) => {
    const contract = CONTRACTS.find((c) => c.contractId === contractId);
    if (!contract || contract.supplierId !== supplierId) throw new ToolArgumentError(`no contract ${contractId} with supplier ${supplierId}`);
    return contract;
  };
  const target = {
    contractId: z.string().describe("The contract id, e.g. C-17"),
    supplierId: z.string().describe("The supplier id, e.g. SUP-ACME"),
    targetUnitPriceCents: z.number().int().positive().describe("The unit price to negotiate towards, in cents"),
  };

  const recommendRenegotiation = tool(
    async ({ contractId, supplierId, targetUnitPriceCents, estimatedAnnualSavingsCents, rationale }, config) => {
      contractOf(contractId, supplierId);
      insertRecommendation.run(contractId, supplierId, targetUnitPriceCents, rationale, toolCallIdOf(config), executionContextOf(config)?.idempotencyKey ?? null);
      return JSON.stringify({ contractId, supplierId, targetUnitPriceCents, estimatedAnnualSavingsCents, status: "recommended" });
    },
    {
      name: "recommend_renegotiation",
      description: "File a recommendation to renegotiate a supplier contract, with the target price and the estimated annual savings.",
      schema: z.object({
        ...target,
        estimatedAnnualSavingsCents: z.number().int().nonnegative().describe("Estimated savings over twelve months, in cents"),
        rationale: z.string().describe("Why, citing the context ids"),
      }),
    },
  );

  const initiateRenegotiation = tool(
    async ({ contractId, supplierId, targetUnitPriceCents }, config) => {
      const contract = contractOf(contractId, supplierId);
      insertRenegotiation.run(contractId, supplierId, targetUnitPriceCents, `notice sent to ${contract.supplier}`, toolCallIdOf(config), executionContextOf(config)?.idempotencyKey ?? null);
      return JSON.stringify({ contractId, supplierId, targetUnitPriceCents, status: "renegotiation_opened", notified: contract.supplier });
    },
    {
      name: "initiate_renegotiation",
      description: "Open a renegotiation with a supplier: sends them a formal notice. Needs a procurement manager's approval.",
      schema: z.object(target),
    },
  );

  return {
    recommendRenegotiation,
    initiateRenegotiation,
    all: [recommendRenegotiation, initiateRenegotiation],
    recommendations: rows("renegotiation_recommendations"),
    renegotiations: rows("renegotiations"),
  };
}
