import { EartError } from "../errors.js";
import type { PolicyDecision } from "../policy/engine.js";
import type { DecisionRecord, DecisionStatus } from "./records.js";

/**
 * The lifecycle of one governed tool call, in one place: what each status means, and which
 * statuses a node may move a call to. The gate, the tool node, the recovery node and the routers
 * read it; every record a node writes is checked against it before it is sealed.
 *
 * ```
 * (new) ─▶ allowed ───────────────┬─▶ executed | failed | invalid | blocked
 *      ├─▶ pending_approval ─▶ approved ─┘        └─▶ recovery_pending ─▶ allowed | approved
 *      │        └─▶ rejected | responded | expired | denied | escalated
 *      └─▶ denied | invalid | escalated
 * ```
 */

/** Calls the tool node may run: allowed by policy or approved by a human. */
export const RUNNABLE_STATUSES: ReadonlySet<DecisionStatus> = new Set(["allowed", "approved"]);

/** Calls waiting for a human: an approval, or a recovery decision. */
export const WAITING_STATUSES: ReadonlySet<DecisionStatus> = new Set(["pending_approval", "recovery_pending"]);

/** Calls answered to the model already: nothing more happens to them. */
export const ANSWERED_STATUSES: ReadonlySet<DecisionStatus> = new Set([
  "denied",
  "invalid",
  "rejected",
  "responded",
  "expired",
  "escalated",
  "executed",
  "failed",
  "blocked",
]);

/** The status a policy verdict gives a call. */
export const STATUS_OF_EFFECT: Readonly<Record<PolicyDecision["effect"], DecisionStatus>> = {
  allow: "allowed",
  deny: "denied",
  require_approval: "pending_approval",
  escalate: "escalated",
};

const after = (...next: DecisionStatus[]) => new Set<DecisionStatus>(next);

/** Where a call may go from each status (a node writing the same status again is a no-op transition). */
const TRANSITIONS: Readonly<Record<DecisionStatus, ReadonlySet<DecisionStatus>>> = {
  allowed: after("allowed", "executed", "failed", "invalid", "blocked", "recovery_pending"),
  approved: after("approved", "executed", "failed", "invalid", "blocked", "recovery_pending"),
  pending_approval: after("pending_approval", "approved", "rejected", "responded", "expired", "denied", "escalated"),
  recovery_pending: after("recovery_pending", "allowed", "approved"),
  // A replay of a finished ledger entry answers it again, unchanged.
  executed: after("executed"),
  failed: after("failed"),
  denied: after("denied"),
  invalid: after("invalid"),
  rejected: after("rejected"),
  responded: after("responded"),
  expired: after("expired"),
  escalated: after("escalated"),
  blocked: after("blocked"),
};

/** What a new call may start as. */
const INITIAL: ReadonlySet<DecisionStatus> = after("allowed", "denied", "invalid", "pending_approval", "escalated");

/**
 * An eart node tried to move a call somewhere its lifecycle does not go: a bug in eart or in a
 * custom node, never the caller's input. Nothing is written.
 */
export class DecisionTransitionError extends EartError {
  constructor(toolCallId: string, from: DecisionStatus | undefined, to: DecisionStatus) {
    super("state_tamper_detected", `Tool call "${toolCallId}" cannot go from ${from ?? "(new)"} to ${to}`, { toolCallId, from: from ?? null, to });
  }
}

/**
 * Checks that `next` is a legal successor of `previous` (the record as it stands in state for the
 * same call and message; undefined for a new call, or a new message reusing the call id, which
 * starts over). Throws {@link DecisionTransitionError}.
 * @example
 * ```ts
 * assertTransition(previous, { ...previous, status: "executed" });
 * ```
 */
export function assertTransition(previous: DecisionRecord | undefined, next: DecisionRecord): void {
  const from = previous && previous.messageId === next.messageId ? previous.status : undefined;
  const legal = from === undefined ? INITIAL : TRANSITIONS[from];
  if (!legal.has(next.status)) throw new DecisionTransitionError(next.toolCallId, from, next.status);
}
