import { tool } from "@langchain/core/tools";
import type Database from "better-sqlite3";
import { ToolArgumentError } from "eart";
import { executionContextOf } from "eart/nodes";
import type pg from "pg";
import { z } from "zod";

/** Orders the demo knows. */
export const ORDERS: Record<string, { orderId: string; customer: string; total: number; status: string; card: string }> = {
  "1042": { orderId: "1042", customer: "cara", total: 740, status: "delivered", card: "4111 1111 1111 1111" },
  "1043": { orderId: "1043", customer: "cara", total: 60, status: "delivered", card: "4111 1111 1111 1111" },
  "2002": { orderId: "2002", customer: "omar", total: 740, status: "delivered", card: "5500 0000 0000 0004" },
  "2001": { orderId: "2001", customer: "omar", total: 9200, status: "delivered", card: "5500 0000 0000 0004" },
};

/** The order with this id, or undefined: an own entry only ("constructor" or "__proto__" is no order). */
export function orderOf(orderId: string): (typeof ORDERS)[string] | undefined {
  return Object.hasOwn(ORDERS, orderId) ? ORDERS[orderId] : undefined;
}

/** A refund as the `refunds` table holds it. */
export interface RefundRow {
  refundId: number;
  orderId: string;
  amount: number;
}

type RefundInsert = (orderId: string, amount: number, reason: string | null, toolCallId: string | null, key: string | null) => Promise<RefundRow>;

/** The `refunds` table in SQLite: created if missing; an insert with a known idempotency key returns the first row. */
function sqliteRefunds(db: Database.Database): RefundInsert {
  db.exec(`CREATE TABLE IF NOT EXISTS refunds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    amount REAL NOT NULL,
    reason TEXT,
    tool_call_id TEXT,
    idempotency_key TEXT UNIQUE,
    created_at TEXT NOT NULL
  )`);
  const insert = db.prepare(
    `INSERT INTO refunds (order_id, amount, reason, tool_call_id, idempotency_key, created_at) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (idempotency_key) DO NOTHING`,
  );
  const byKey = db.prepare(`SELECT id AS refundId, order_id AS orderId, amount FROM refunds WHERE idempotency_key = ?`);
  return async (orderId, amount, reason, toolCallId, key) => {
    const row = insert.run(orderId, amount, reason, toolCallId, key, new Date().toISOString());
    if (row.changes === 1) return { refundId: Number(row.lastInsertRowid), orderId, amount };
    return byKey.get(key) as RefundRow;
  };
}

/** The same table in PostgreSQL. */
function postgresRefunds(pool: pg.Pool): RefundInsert {
  let ready: Promise<unknown> | undefined;
  return async (orderId, amount, reason, toolCallId, key) => {
    await (ready ??= createPostgresRefunds(pool).catch((error: unknown) => {
      // A failed attempt (a dropped connection) is tried again by the next refund.
      ready = undefined;
      throw error;
    }));
    const { rows } = await pool.query<{ refundId: number; orderId: string; amount: number }>(
      `WITH inserted AS (
         INSERT INTO refunds (order_id, amount, reason, tool_call_id, idempotency_key) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id, order_id, amount
       )
       SELECT id AS "refundId", order_id AS "orderId", amount FROM inserted
       UNION ALL
       SELECT id, order_id, amount FROM refunds WHERE idempotency_key = $5 AND NOT EXISTS (SELECT 1 FROM inserted)`,
      [orderId, amount, reason, toolCallId, key],
    );
    return rows[0]!;
  };
}

/**
 * Creates the `refunds` table if it is missing, under a transaction-scoped advisory lock: processes
 * that start together on a new database (workers of one deployment) would otherwise race in
 * PostgreSQL's catalog (`CREATE TABLE IF NOT EXISTS` is not safe to run from several at once).
 */
async function createPostgresRefunds(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await client.query(`SELECT pg_advisory_xact_lock(hashtext('eart_example_refunds_table'))`);
    await client.query(`CREATE TABLE IF NOT EXISTS refunds (
      id SERIAL PRIMARY KEY,
      order_id TEXT NOT NULL,
      amount DOUBLE PRECISION NOT NULL,
      reason TEXT,
      tool_call_id TEXT,
      idempotency_key TEXT UNIQUE,
      created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )`);
    await client.query("COMMIT");
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/**
 * The refund tools. `issue_refund` writes a row to the `refunds` table of the given database
 * (SQLite, or a PostgreSQL pool): the side effect that must happen exactly once. It forwards the
 * idempotency key eart gives it to a unique column, so running it again with the same key returns
 * the first refund instead of paying twice: it may be declared `idempotent`.
 */
export function createRefundTools(db: Database.Database | pg.Pool) {
  const insert = "prepare" in db ? sqliteRefunds(db) : postgresRefunds(db);

  const lookupOrder = tool(
    async ({ orderId }) => {
      const order = orderOf(orderId);
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
    async ({ orderId }) => JSON.stringify({ orderId, card: orderOf(orderId)?.card ?? null }),
    {
      name: "view_payment_details",
      description: "Show the payment card of an order (finance only).",
      schema: z.object({ orderId: z.string() }),
    },
  );

  const issueRefund = tool(
    async ({ orderId, amount, reason }, config) => {
      const order = orderOf(orderId);
      if (!order) throw new ToolArgumentError(`no order ${orderId}`);
      const toolCallId = (config as { toolCall?: { id?: string } } | undefined)?.toolCall?.id ?? null;
      const row = await insert(orderId, amount, reason ?? null, toolCallId, executionContextOf(config)?.idempotencyKey ?? null);
      return JSON.stringify({ refundId: row.refundId, orderId, amount: row.amount, status: "refunded" });
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
