import { describe, expect, it } from "vitest";
import { DecisionRecordSchema, toolCallDigest, type DecisionRecord } from "eart";
import { emptyThreadContext, mergeBudget, mergeDecisions, mergeThreadContext } from "../../src/decisions/records.js";

const rec = (toolCallId: string, status: DecisionRecord["status"]): DecisionRecord =>
  DecisionRecordSchema.parse({
    schemaVersion: 1,
    toolCallId,
    messageId: "m",
    name: "lookup_order",
    args: { orderId: toolCallId },
    digest: toolCallDigest("lookup_order", { orderId: toolCallId }, "t1"),
    verdict: { effect: "allow", reasons: ["ok"], policyIds: ["p"], version: "v" },
    status,
    requestedBy: { agentId: "a", userId: "u" },
    decidedAt: "2024-01-01T00:00:00.000Z",
  });

describe("mergeThreadContext", () => {
  it("starts empty", () => {
    expect(mergeThreadContext(undefined, undefined)).toEqual({ items: [], sensitivity: [] });
    expect(emptyThreadContext()).toEqual({ items: [], sensitivity: [] });
  });

  it("merges items by id, the later write winning, and applies item defaults", () => {
    const first = mergeThreadContext(undefined, {
      items: [
        { id: "1", source: "orders", scope: "orders", labels: ["a"] },
        { id: "2", source: "orders", scope: "orders", labels: [] },
      ],
    });
    const second = mergeThreadContext(first, { items: [{ id: "1", source: "crm", scope: "pii" } as never] });
    expect(second.items).toEqual([
      { id: "1", source: "crm", scope: "pii", labels: [] },
      { id: "2", source: "orders", scope: "orders", labels: [] },
    ]);
  });

  it("sensitivity labels only grow, deduplicated and sorted", () => {
    const a = mergeThreadContext(undefined, { sensitivity: ["pii", "financial"] });
    const b = mergeThreadContext(a, { sensitivity: ["pii", "confidential"] });
    const c = mergeThreadContext(b, { sensitivity: [] });
    expect(b.sensitivity).toEqual(["confidential", "financial", "pii"]);
    expect(c.sensitivity).toEqual(["confidential", "financial", "pii"]);
  });

  it("refuses an item without a source", () => {
    expect(() => mergeThreadContext(undefined, { items: [{ id: "x", scope: "s" } as never] })).toThrow();
  });
});

describe("mergeDecisions", () => {
  it("appends new records and replaces records by toolCallId in place", () => {
    const merged = mergeDecisions([rec("c1", "pending_approval"), rec("c2", "allowed")], [rec("c1", "approved"), rec("c3", "denied")]);
    expect(merged.map((r) => [r.toolCallId, r.status])).toEqual([
      ["c1", "approved"],
      ["c2", "allowed"],
      ["c3", "denied"],
    ]);
  });

  it("keeps the current list for an empty or missing update and does not mutate its input", () => {
    const current = [rec("c1", "allowed")];
    expect(mergeDecisions(current, undefined)).toBe(current);
    expect(mergeDecisions(current, [])).toBe(current);
    expect(mergeDecisions(undefined, undefined)).toEqual([]);
    mergeDecisions(current, [rec("c1", "executed")]);
    expect(current[0]!.status).toBe("allowed");
  });

  it("a later record for the same id in one update wins", () => {
    expect(mergeDecisions([], [rec("c1", "allowed"), rec("c1", "executed")]).map((r) => r.status)).toEqual(["executed"]);
  });
});

describe("mergeBudget", () => {
  const key = "refunds.thread|t1|2025-03-10|sum";
  it("raises counters and adds new ones; a new window is a new key", () => {
    expect(mergeBudget({ [key]: 100 }, { [key]: 190, [`${key}-2`]: 5 })).toEqual({ [key]: 190, [`${key}-2`]: 5 });
  });
  it("never lowers a counter, and ignores values that are not finite numbers", () => {
    const current = { [key]: 100 };
    expect(mergeBudget(current, { [key]: 0 })).toEqual({ [key]: 100 });
    expect(mergeBudget(current, { [key]: Number.NaN, other: Number.POSITIVE_INFINITY, third: "5" as unknown as number })).toEqual({ [key]: 100 });
    expect(mergeBudget(current, undefined)).toEqual({ [key]: 100 });
    expect(current).toEqual({ [key]: 100 });
  });
});
