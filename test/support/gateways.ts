import type Database from "better-sqlite3";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import type { z } from "zod";
import { MemoryEffectLedger, pendingRecovery, type BudgetGuard } from "eart";
import { config, refundSetup, type Call } from "./refund.js";

/** The body of a refund tool a test puts in `issue_refund`'s place: the call's arguments, its config, the real tool, the call's number, the refunds database. */
export type RefundBody = (args: Record<string, unknown>, cfg: unknown, real: StructuredToolInterface, n: number, db: Database.Database) => Promise<unknown>;

/** A gateway that pays every time it is called (it does not dedupe by idempotency key). */
export const payEveryTime = (db: Database.Database, args: Record<string, unknown>) => {
  db.prepare(`INSERT INTO refunds (order_id, amount, tool_call_id, idempotency_key, created_at) VALUES (?, ?, 'x', NULL, ?)`).run(
    String(args.orderId),
    Number(args.amount),
    new Date(0).toISOString(),
  );
  return JSON.stringify({ orderId: args.orderId, amount: args.amount, status: "refunded" });
};

/** A gateway that pays on every call, and answers its first with a 502 after the transfer. */
export const paysThenThrows: RefundBody = async (args, _cfg, _real, n, db) => {
  const paid = payEveryTime(db, args);
  if (n === 1) throw new Error("gateway 502 after the transfer");
  return paid;
};

/** The recovery request a thread waits on (throws when it waits on none). */
export const recoveryOn = async (agent: { getState: (c: unknown) => Promise<unknown> }, threadId: string) => {
  const request = pendingRecovery(await agent.getState(config(threadId)));
  if (!request) throw new Error(`expected a pending recovery request on ${threadId}`);
  return request;
};

/**
 * The refund agent (an effect ledger, supervisors resolve recoveries) with issue_refund's body
 * replaced by `body`, which gets the real tool, the call's number and the refunds database.
 */
export function refundWith(body: RefundBody, turns: Call[][], opts: { budgets?: BudgetGuard; execution?: Record<string, unknown> } = {}) {
  let n = 0;
  const holder: { db?: Database.Database } = {};
  const setup = refundSetup(turns, {
    ...(opts.budgets ? { budgets: opts.budgets } : {}),
    tools: (t) => [
      t.lookupOrder,
      t.viewPaymentDetails,
      tool(async (args: Record<string, unknown>, cfg) => body(args, cfg, t.issueRefund, ++n, holder.db!), {
        name: t.issueRefund.name,
        description: t.issueRefund.description,
        schema: t.issueRefund.schema as z.ZodObject<z.ZodRawShape>,
      }) as unknown as StructuredToolInterface,
    ],
    agent: { ledger: new MemoryEffectLedger(), recoveryRoles: ["supervisor"], ...(opts.execution ? { execution: opts.execution as never } : {}) },
  });
  holder.db = setup.db;
  return setup;
}
