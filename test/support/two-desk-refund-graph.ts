/**
 * A graph the LangGraph server tests add beside the project's (never shipped): the refund agent
 * with two approving desks, as a deployment often has: a supervisor approves refunds over $100 up
 * to $500, finance approves larger ones. A reviewer of one desk must not find the other's threads.
 */
import Database from "better-sqlite3";
import { definePolicy } from "eart";
import { createServerAgent, serverStores } from "eart/server";
import { refundAgentOptions } from "../../examples/refund/agent.js";

const stores = await serverStores();
const db = new Database(stores.location);
db.pragma("journal_mode = WAL");
db.pragma("busy_timeout = 5000");
const refund = await refundAgentOptions(db);
const amount = (args: Record<string, unknown>) => Number(args.amount);

export const graph = createServerAgent({
  agentId: "support-agent",
  graphId: "two-desk-refund",
  ...refund.options,
  policy: definePolicy({
    name: "two-desk-refunds",
    rules: [
      { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
      { id: "refund.small", tools: ["issue_refund"], when: (r) => amount(r.tool.args) <= 100, effect: "allow" },
      { id: "refund.supervisor", tools: ["issue_refund"], when: (r) => amount(r.tool.args) > 100 && amount(r.tool.args) <= 500, effect: "require_approval", approverRoles: ["supervisor"] },
      { id: "refund.finance", tools: ["issue_refund"], when: (r) => amount(r.tool.args) > 500, effect: "require_approval", approverRoles: ["finance"] },
    ],
  }),
  ...stores.forAgent,
});
