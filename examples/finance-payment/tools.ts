import { tool } from "@langchain/core/tools";
import type Database from "better-sqlite3";
import { ToolArgumentError } from "eart";
import { executionContextOf } from "eart/nodes";
import { z } from "zod";
import { invoiceOf, vendorOf } from "./data.js";

/** A payment as the `payments` table holds it. */
export interface PaymentRow {
  paymentId: string;
  invoiceId: string;
  vendorId: string;
  amountCents: number;
  status: "prepared" | "executed";
}

/** A release of money: one row in `payment_executions`. */
export interface ExecutionRow {
  paymentId: string;
  amountCents: number;
  toolCallId: string | null;
}

/** One message that left the company: a row in `outbox`. */
export interface OutboxRow {
  to: string;
  subject: string;
  toolCallId: string | null;
}

const toolCallIdOf = (config: unknown) => (config as { toolCall?: { id?: string } } | undefined)?.toolCall?.id ?? null;

/**
 * The finance tools, over one SQLite database. `prepare_payment` drafts a payment for an invoice
 * (the payee's bank details come from the vendor master, never from the model) and reports the
 * payment as stored: an invoice prepared or paid before is not prepared again; `execute_payment`
 * releases a prepared payment: a row in `payment_executions`, the side effect that must happen
 * once and only with a finance approval. It releases only a payment still `prepared`, for the
 * vendor and amount prepared, and marks it `executed` in the same transaction, so a second
 * approval of the same payment (another thread, another week) pays nothing. `send_external_email`
 * writes to the `outbox`. Each forwards eart's idempotency key to a unique column.
 */
export function createFinanceTools(db: Database.Database) {
  db.exec(`
    CREATE TABLE IF NOT EXISTS payments (
      payment_id TEXT PRIMARY KEY,
      invoice_id TEXT NOT NULL,
      vendor_id TEXT NOT NULL,
      amount_cents INTEGER NOT NULL,
      iban TEXT NOT NULL,
      status TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS payment_executions (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      payment_id TEXT NOT NULL,
      amount_cents INTEGER NOT NULL,
      tool_call_id TEXT,
      idempotency_key TEXT UNIQUE
    );
    CREATE TABLE IF NOT EXISTS outbox (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      recipient TEXT NOT NULL,
      subject TEXT NOT NULL,
      body TEXT NOT NULL,
      tool_call_id TEXT,
      idempotency_key TEXT UNIQUE
    );`);

  const insertPayment = db.prepare(
    `INSERT INTO payments (payment_id, invoice_id, vendor_id, amount_cents, iban, status) VALUES (?, ?, ?, ?, ?, 'prepared') ON CONFLICT (payment_id) DO NOTHING`,
  );
  const paymentById = db.prepare(`SELECT vendor_id AS vendorId, amount_cents AS amountCents, status FROM payments WHERE payment_id = ?`);
  const executionByKey = db.prepare(`SELECT 1 FROM payment_executions WHERE idempotency_key = ?`);
  const markExecuted = db.prepare(`UPDATE payments SET status = 'executed' WHERE payment_id = ? AND vendor_id = ? AND amount_cents = ? AND status = 'prepared'`);
  const insertExecution = db.prepare(
    `INSERT INTO payment_executions (payment_id, amount_cents, tool_call_id, idempotency_key) VALUES (?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING`,
  );
  type StoredPayment = { vendorId: string; amountCents: number; status: PaymentRow["status"] };

  const preparePayment = tool(
    async ({ invoiceId }) => {
      const invoice = invoiceOf(invoiceId);
      if (!invoice) throw new ToolArgumentError(`no invoice ${invoiceId}`);
      const vendor = vendorOf(invoice.vendorId)!;
      const paymentId = `PAY-${invoiceId}`;
      insertPayment.run(paymentId, invoiceId, vendor.vendorId, invoice.amountCents, vendor.bank.iban);
      // What is stored, not what this call meant to store: an invoice paid before says "executed".
      const stored = paymentById.get(paymentId) as StoredPayment;
      // The draft names the account it will pay to: redacted for whoever may not see it.
      return JSON.stringify({
        paymentId,
        invoiceId,
        vendorId: stored.vendorId,
        payee: vendor.bank.accountHolder,
        iban: vendor.bank.iban,
        amountCents: stored.amountCents,
        currency: invoice.currency,
        status: stored.status,
      });
    },
    {
      name: "prepare_payment",
      description: "Draft the payment of a vendor invoice. The payment is not released until executed. An invoice paid already is reported with status executed.",
      schema: z.object({ invoiceId: z.string().describe("The invoice id, e.g. INV-7731") }),
    },
  );

  const executePayment = tool(
    async ({ paymentId, vendorId, amountCents }, config) => {
      const key = executionContextOf(config)?.idempotencyKey ?? null;
      db.transaction(() => {
        // A retry of this very call (same idempotency key) after it committed: released already, by it.
        if (key !== null && executionByKey.get(key)) return;
        // Release only what is still prepared, as prepared: the status changes with the release or not at all.
        if (markExecuted.run(paymentId, vendorId, amountCents).changes !== 1) {
          const payment = paymentById.get(paymentId) as StoredPayment | undefined;
          if (!payment) throw new ToolArgumentError(`no prepared payment ${paymentId}`);
          if (payment.status !== "prepared") throw new ToolArgumentError(`payment ${paymentId} is ${payment.status}, not prepared: it is not released again`);
          throw new ToolArgumentError(`payment ${paymentId} is for ${payment.amountCents} cents to ${payment.vendorId}`);
        }
        insertExecution.run(paymentId, amountCents, toolCallIdOf(config), key);
      })();
      return JSON.stringify({ paymentId, amountCents, bankReference: `BNK-${paymentId}`, status: "executed" });
    },
    {
      name: "execute_payment",
      description: "Release a prepared payment to the vendor's bank. Always needs a finance approval.",
      schema: z.object({
        paymentId: z.string(),
        vendorId: z.string(),
        amountCents: z.number().int().positive().describe("Amount in cents, as prepared"),
      }),
    },
  );

  const sendExternalEmail = tool(
    async ({ to, subject, body }, config) => {
      db.prepare(`INSERT INTO outbox (recipient, subject, body, tool_call_id, idempotency_key) VALUES (?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING`).run(
        to,
        subject,
        body,
        toolCallIdOf(config),
        executionContextOf(config)?.idempotencyKey ?? null,
      );
      return JSON.stringify({ to, subject, status: "sent" });
    },
    {
      name: "send_external_email",
      description: "Send an e-mail to someone outside the company.",
      schema: z.object({ to: z.string().email(), subject: z.string().min(1), body: z.string().min(1) }),
    },
  );

  return {
    preparePayment,
    executePayment,
    sendExternalEmail,
    all: [preparePayment, executePayment, sendExternalEmail],
    payments: (): PaymentRow[] =>
      db.prepare(`SELECT payment_id AS paymentId, invoice_id AS invoiceId, vendor_id AS vendorId, amount_cents AS amountCents, status FROM payments ORDER BY rowid`).all() as PaymentRow[],
    executions: (): ExecutionRow[] =>
      db.prepare(`SELECT payment_id AS paymentId, amount_cents AS amountCents, tool_call_id AS toolCallId FROM payment_executions ORDER BY id`).all() as ExecutionRow[],
    outbox: (): OutboxRow[] => db.prepare(`SELECT recipient AS "to", subject, tool_call_id AS toolCallId FROM outbox ORDER BY id`).all() as OutboxRow[],
  };
}
