import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Sealer, type DecisionRecord } from "eart";
import { processSealer } from "../support/sealing.js";

/**
 * Seals tell eart's records from records a caller wrote. A record's seal is checked once per
 * object, and a copy whose JSON is the very same text (LangGraph copies state into each tool
 * call's task, a checkpoint round trip makes new objects) is recognised without hashing it again.
 * These are the copies a caller of the thread API could try to slip through that shortcut.
 */

const THREAD = "seal-thread";

const record = (over: Partial<DecisionRecord> = {}): DecisionRecord =>
  ({
    schemaVersion: 1,
    toolCallId: "c1",
    messageId: "m1",
    name: "issue_refund",
    args: { orderId: "1042", amount: 740 },
    digest: "d".repeat(64),
    approvals: [],
    requestedBy: { agentId: "support-agent", userId: "cara" },
    decidedAt: "2026-12-06T12:00:00.000Z",
    status: "pending_approval",
    verdict: { effect: "require_approval", reasons: ["Refunds over $100 need a supervisor"], policyIds: ["refund.supervisor"], version: "v1", approverRoles: ["supervisor"] },
    ...over,
  }) as DecisionRecord;

const copy = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

describe("sealed records and their copies", () => {
  it("a copy of a sealed record (a checkpoint round trip) is sealed, and so is one with its keys in another order", () => {
    const sealer = processSealer();
    const sealed = sealer.decision(THREAD, record());
    expect(sealer.decisionIsSealed(THREAD, copy(sealed))).toBe(true);
    const reordered = Object.fromEntries(Object.entries(copy(sealed)).reverse()) as DecisionRecord;
    expect(sealer.decisionIsSealed(THREAD, reordered)).toBe(true);
  });

  it("a copy that keeps the seal but changes what it covers (the status, the amount, an approval, a field added) is refused, after the original was checked", () => {
    const sealer = processSealer();
    const sealed = sealer.decision(THREAD, record());
    expect(sealer.decisionIsSealed(THREAD, copy(sealed))).toBe(true);
    const forged: DecisionRecord[] = [
      { ...copy(sealed), status: "approved" },
      { ...copy(sealed), args: { orderId: "1042", amount: 9000 } },
      { ...copy(sealed), approvals: [{ approverId: "cara", type: "approve", at: "2026-12-06T12:01:00.000Z" }] as never },
      { ...copy(sealed), budgetReserved: true } as DecisionRecord,
    ];
    for (const f of forged) expect(sealer.decisionIsSealed(THREAD, f)).toBe(false);
    // The genuine copy still passes after the forgeries were looked at.
    expect(sealer.decisionIsSealed(THREAD, copy(sealed))).toBe(true);
  });

  it("a copy of a record sealed for another thread, or with another key, is refused", () => {
    const sealer = processSealer();
    const sealed = sealer.decision(THREAD, record());
    expect(sealer.decisionIsSealed(THREAD, copy(sealed))).toBe(true);
    expect(sealer.decisionIsSealed("another-thread", copy(sealed))).toBe(false);
    expect(new Sealer(randomBytes(32)).decisionIsSealed(THREAD, copy(sealed))).toBe(false);
  });

  it("an identity's copy is sealed for its thread, and a copy that acts for someone else is not", () => {
    const sealer = processSealer();
    const identity = sealer.identity(THREAD, { schemaVersion: 1, id: "support-agent", roles: ["support"], onBehalfOf: { id: "cara", roles: ["customer"] }, source: "configurable.user_id" } as never);
    expect(sealer.identityIsSealed(THREAD, copy(identity))).toBe(true);
    const other = copy(identity) as unknown as { onBehalfOf: { id: string; roles: string[] } };
    other.onBehalfOf = { id: "sam", roles: ["supervisor"] };
    expect(sealer.identityIsSealed(THREAD, other as never)).toBe(false);
    expect(sealer.identityIsSealed("another-thread", copy(identity))).toBe(false);
  });
});
