import type Database from "better-sqlite3";
import type { StructuredToolInterface } from "@langchain/core/tools";
import { pendingRecovery } from "eart";
import { config } from "./refund.js";

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
