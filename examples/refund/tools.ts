import { tool } from "@langchain/core/tools";
import type Database from "better-sqlite3";
import { ToolArgumentError } from "eart";
import { z } from "zod";

/** Orders the demo knows. */
export const ORDERS: Record<string, { orderId: string; customer: string; total: number; status: string; card: string }> = {
  "1042": { orderId: "1042", customer: "cara", total: 740, status: "delivered", card: "4111 1111 1111 1111" },
  "1043": { orderId: "1043", customer: "cara", total: 60, status: "delivered", card: "4111 1111 1111 1111" },
  "2001": { orderId: "2001", customer: "omar", total: 9200, status: "delivered", card: "5500 0000 0000 0004" },
};

/**
 * The refund tools. `issue_refund` writes a row to the `refunds` table of the given database:
 * the side effect that must happen exactly once.
 */
export function createRefundTools(db: Database.Database) {
  db.exec(`CREATE TABLE IF NOT EXISTS refunds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    amount REAL NOT NULL,
    reason TEXT,
    tool_call_id TEXT,
    created_at TEXT NOT NULL
  )`);
  const insert = db.prepare(`INSERT INTO refunds (order_id, amount, reason, tool_call_id, created_at) VALUES (?, ?, ?, ?, ?)`);

  const lookupOrder = tool(
    async ({ orderId }) => {
      const order = ORDERS[orderId];
      if (!order) return `No order ${orderId}.`;
      const { card: _card, ...visible } = order;
      return JSON.stringify(visible);
    },
    {
      name: "lookup_order",
      description: "Look up an order by id: customer, total, status.",
      schema: z.object({ orderId: z.string().describe("The order id, e.g. 1042") }),
    },
  );

  const viewPaymentDetails = tool(
    async ({ orderId }) => JSON.stringify({ orderId, card: ORDERS[orderId]?.card ?? null }),
    {
      name: "view_payment_details",
      description: "Show the payment card of an order (finance only).",
      schema: z.object({ orderId: z.string() }),
    },
  );

  const issueRefund = tool(
    async ({ orderId, amount, reason }, config) => {
      const order = ORDERS[orderId];
      if (!order) throw new ToolArgumentError(`no order ${orderId}`);
      const toolCallId = (config as { toolCall?: { id?: string } } | undefined)?.toolCall?.id ?? null;
      const row = insert.run(orderId, amount, reason ?? null, toolCallId, new Date().toISOString());
      return JSON.stringify({ refundId: Number(row.lastInsertRowid), orderId, amount, status: "refunded" });
    },
    {
      name: "issue_refund",
      description: "Refund an amount in dollars for an order.",
      schema: z.object({
        orderId: z.string(),
        amount: z.number().positive().describe("Amount in dollars"),
        reason: z.string().optional(),
      }),
    },
  );

  return { lookupOrder, viewPaymentDetails, issueRefund, all: [lookupOrder, viewPaymentDetails, issueRefund] };
}
