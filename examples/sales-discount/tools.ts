import { tool } from "@langchain/core/tools";
import type Database from "better-sqlite3";
import { ToolArgumentError } from "eart";
import { executionContextOf } from "eart/nodes";
import { z } from "zod";
import { quoteOf } from "./data.js";

/** A discount as the `discounts` table holds it. */
export interface DiscountRow {
  quoteId: string;
  percent: number;
  newTotalCents: number;
  toolCallId: string | null;
}

/**
 * The sales tools. `apply_discount` writes the discounted total of a quote to the `discounts`
 * table: the side effect that must happen once, and only as allowed or approved. It forwards
 * eart's idempotency key to a unique column, so a replay returns the first row.
 */
export function createSalesTools(db: Database.Database) {
  db.exec(`CREATE TABLE IF NOT EXISTS discounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    quote_id TEXT NOT NULL,
    percent REAL NOT NULL,
    new_total_cents INTEGER NOT NULL,
    reason TEXT,
    tool_call_id TEXT,
    idempotency_key TEXT UNIQUE
  )`);
  const insert = db.prepare(
    `INSERT INTO discounts (quote_id, percent, new_total_cents, reason, tool_call_id, idempotency_key) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (idempotency_key) DO NOTHING`,
  );

  const applyDiscount = tool(
    async ({ quoteId, percent, reason }, config) => {
      const quote = quoteOf(quoteId);
      if (!quote) throw new ToolArgumentError(`no quote ${quoteId}`);
      const newTotalCents = Math.round(quote.listTotalCents * (1 - percent / 100));
      const toolCallId = (config as { toolCall?: { id?: string } } | undefined)?.toolCall?.id ?? null;
      insert.run(quoteId, percent, newTotalCents, reason ?? null, toolCallId, executionContextOf(config)?.idempotencyKey ?? null);
      return JSON.stringify({ quoteId, percent, listTotalCents: quote.listTotalCents, newTotalCents, status: "discounted" });
    },
    {
      name: "apply_discount",
      description: "Apply a percentage discount to a quote's list total.",
      schema: z.object({
        quoteId: z.string().describe("The quote id, e.g. Q-1001"),
        percent: z.number().positive().max(100).describe("Discount in percent of the list total"),
        reason: z.string().optional(),
      }),
    },
  );

  const discounts = (): DiscountRow[] =>
    db.prepare(`SELECT quote_id AS quoteId, percent, new_total_cents AS newTotalCents, tool_call_id AS toolCallId FROM discounts ORDER BY id`).all() as DiscountRow[];

  return { applyDiscount, all: [applyDiscount], discounts };
}
