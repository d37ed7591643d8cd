import { definePolicy } from "eart";
import { orderOf } from "./tools.js";

const amountOf = (args: Record<string, unknown>) => Number(args.amount);

/**
 * Refunds up to $100 are allowed; above $100 up to $5,000 need a supervisor; above $5,000 are
 * denied. Order lookups are allowed. A customer's agent may not look up or refund another
 * customer's order. Everything else is denied by default.
 */
export const refundPolicy = definePolicy({
  name: "refunds",
  rules: [
    {
      id: "orders.own",
      tools: ["lookup_order", "issue_refund"],
      // The order's customer, from the order system; the agent acts for the thread's human.
      when: (r) => {
        const owner = orderOf(String(r.tool.args.orderId))?.customer;
        return r.identity.onBehalfOf.roles.includes("customer") && owner !== undefined && owner !== r.identity.onBehalfOf.id;
      },
      effect: "deny",
      reason: "A customer's orders are theirs alone: this order belongs to another customer",
    },
    { id: "orders.lookup", tools: ["lookup_order"], effect: "allow", reason: "Order lookups are allowed" },
    {
      id: "refund.small",
      tools: ["issue_refund"],
      when: (r) => amountOf(r.tool.args) <= 100,
      effect: "allow",
      reason: "Refunds up to $100 are allowed",
    },
    {
      id: "refund.supervisor",
      tools: ["issue_refund"],
      when: (r) => amountOf(r.tool.args) > 100 && amountOf(r.tool.args) <= 5000,
      effect: "require_approval",
      approverRoles: ["supervisor"],
      reason: "Refunds over $100 up to $5,000 need a supervisor",
    },
    {
      id: "refund.limit",
      tools: ["issue_refund"],
      when: (r) => !(amountOf(r.tool.args) <= 5000),
      effect: "deny",
      reason: "Refunds over $5,000 are not allowed",
    },
  ],
});
