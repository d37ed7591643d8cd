import { describe, expect, it } from "vitest";
import { DecisionTransitionError, type DecisionRecord, type DecisionStatus } from "eart";
import { ANSWERED_STATUSES, assertTransition, RUNNABLE_STATUSES, STATUS_OF_EFFECT, WAITING_STATUSES } from "../../src/decisions/lifecycle.js";
import { DecisionStatusSchema } from "../../src/decisions/records.js";

const record = (status: DecisionStatus, messageId = "m1"): DecisionRecord => ({
  schemaVersion: 1,
  toolCallId: "c1",
  messageId,
  name: "issue_refund",
  args: { orderId: "1042", amount: 740 },
  digest: "d",
  verdict: { effect: "allow", reasons: [], policyIds: [], version: "v" },
  status,
  approvals: [],
  requestedBy: { agentId: "a", userId: "u" },
  decidedAt: "2025-03-10T09:00:00.000Z",
});

describe("the decision lifecycle", () => {
  it("sorts every status into exactly one of runnable, waiting for a human, or answered", () => {
    for (const status of DecisionStatusSchema.options) {
      const homes = [RUNNABLE_STATUSES, WAITING_STATUSES, ANSWERED_STATUSES].filter((set) => set.has(status));
      expect(homes, status).toHaveLength(1);
    }
    expect(Object.values(STATUS_OF_EFFECT)).toEqual(["allowed", "denied", "pending_approval", "escalated"]);
  });

  it("lets a new call start only as a policy verdict makes it", () => {
    for (const status of ["allowed", "denied", "invalid", "pending_approval", "escalated"] as const) expect(() => assertTransition(undefined, record(status))).not.toThrow();
    for (const status of ["approved", "executed", "recovery_pending", "rejected"] as const) {
      expect(() => assertTransition(undefined, record(status))).toThrow(DecisionTransitionError);
    }
  });

  it("never runs a call that waits for a human, and never reopens an answered one", () => {
    const illegal: [DecisionStatus, DecisionStatus][] = [
      ["pending_approval", "executed"],
      ["pending_approval", "allowed"],
      ["recovery_pending", "executed"],
      ["executed", "allowed"],
      ["rejected", "approved"],
      ["denied", "allowed"],
      ["expired", "pending_approval"],
      ["blocked", "approved"],
    ];
    for (const [from, to] of illegal) {
      const error = (() => {
        try {
          assertTransition(record(from), record(to));
        } catch (e) {
          return e;
        }
      })();
      expect(error, `${from} -> ${to}`).toBeInstanceOf(DecisionTransitionError);
      expect(error).toMatchObject({ code: "state_tamper_detected", details: { toolCallId: "c1", from, to } });
    }
    const legal: [DecisionStatus, DecisionStatus][] = [
      ["pending_approval", "approved"],
      ["pending_approval", "pending_approval"],
      ["approved", "executed"],
      ["allowed", "recovery_pending"],
      ["recovery_pending", "approved"],
      ["executed", "executed"],
    ];
    for (const [from, to] of legal) expect(() => assertTransition(record(from), record(to)), `${from} -> ${to}`).not.toThrow();
  });

  it("a new model message that reuses a call id starts over", () => {
    expect(() => assertTransition(record("executed", "m1"), record("denied", "m2"))).not.toThrow();
    expect(() => assertTransition(record("executed", "m1"), record("executed", "m2"))).toThrow(DecisionTransitionError);
  });
});
