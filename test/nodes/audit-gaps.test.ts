import { AIMessage, ToolMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { describe, expect, it, vi } from "vitest";
import { z } from "zod";
import { MemoryAuditLog, MemoryEffectLedger, toolCallDigest, type AuditEventInput, type DecisionRecord, type LedgerKey } from "eart";
import { type RecoveryRecord } from "../../src/decisions/records.js";
import { createGovernedToolNode } from "eart/nodes";
import { sealDecisions } from "../support/sealing.js";

/**
 * A crash between a ledger write and the audit append after it (the claim and `tool.started`, the
 * finish and its outcome) leaves the ledger ahead of the audit log. The next run that meets the
 * entry writes what the log lacks from the ledger, marked `reconstructed: "ledger"`, before
 * anything else it records for the call. Each test builds the state such a crash leaves.
 */

const thread = "gap-1";
const cfg = { configurable: { thread_id: thread } };
const args = { orderId: "1042", amount: 50 };
const digest = toolCallDigest("issue_refund", args, thread);
const key: LedgerKey = { threadId: thread, toolCallId: "c1", digest };
const ids = { toolCallId: "c1", name: "issue_refund", digest };
const t0 = new Date("2030-01-01T10:00:00.000Z");

function recordOf(toolCallId: string, callArgs: Record<string, unknown>, recovery?: RecoveryRecord): DecisionRecord {
  return {
    schemaVersion: 1,
    toolCallId,
    messageId: "m1",
    name: "issue_refund",
    args: callArgs,
    digest: toolCallDigest("issue_refund", callArgs, thread),
    verdict: { effect: "allow", reasons: [], policyIds: ["refund.small"], version: "v" },
    status: "allowed",
    approvals: [],
    requestedBy: { agentId: "support-agent", userId: "cara" },
    decidedAt: t0.toISOString(),
    ...(recovery ? { recovery } : {}),
  };
}
const stateOf = (records: DecisionRecord[]) => ({
  messages: [new AIMessage({ id: "m1", content: "", tool_calls: records.map((r) => ({ id: r.toolCallId, name: r.name, args: r.args })) })],
  decisions: sealDecisions(thread, records),
});
const state = (recovery?: RecoveryRecord) => stateOf([recordOf("c1", args, recovery)]);
const resolved = (reason: RecoveryRecord["reason"], attempt: number, type: "retry" | "mark_done" | "abandon"): RecoveryRecord => ({
  reason,
  attempt,
  at: t0.toISOString(),
  resumeStatus: "allowed",
  resolution: { type, by: "sam", at: t0.toISOString(), ...(type === "mark_done" ? { result: "done by hand" } : {}) },
});

function setup(opts: { idempotent?: boolean; output?: string } = {}) {
  const calls: unknown[] = [];
  const refund = tool(
    async (input) => {
      calls.push(input);
      return opts.output ?? JSON.stringify({ refundId: 7, ...input, status: "refunded" });
    },
    { name: "issue_refund", schema: z.object({ orderId: z.string(), amount: z.number() }) },
  );
  const auditLog = new MemoryAuditLog();
  const ledger = new MemoryEffectLedger();
  const node = createGovernedToolNode({ tools: [refund], auditLog, ledger, execution: { issue_refund: { idempotent: opts.idempotent ?? false } } });
  /** The thread's events, type and data, in chain order. */
  const story = async () => (await auditLog.read(thread)).map((e) => ({ type: e.type, data: e.data }));
  /** Appends events as the crashed run had appended them. */
  const logged = (...events: [AuditEventInput["type"], Record<string, unknown>][]) =>
    auditLog.append(events.map(([type, data]) => ({ threadId: thread, type, data: { ...ids, ...data } })));
  return { node, auditLog, ledger, calls, story, logged };
}

describe("the governed tool node closes the audit gaps a crash leaves", () => {
  it("after a crash between the claim and `tool.started`: attempt 1's start is written from the ledger before the recovery request", async () => {
    const s = setup();
    await s.ledger.begin(key, t0);
    const out = await s.node(state(), cfg);
    expect(s.calls).toEqual([]);
    expect(out.decisions[0]).toMatchObject({ status: "recovery_pending", recovery: { reason: "outcome_unknown", attempt: 1 } });
    expect(await s.story()).toEqual([
      { type: "tool.started", data: { ...ids, attempt: 1, reconstructed: "ledger", startedAt: t0.toISOString() } },
      { type: "tool.recovery_requested", data: expect.objectContaining({ ...ids, reason: "outcome_unknown", attempt: 1 }) },
    ]);

    // The human retries: attempt 2 runs, and attempt 1's start is not written a second time.
    await s.node(state(resolved("outcome_unknown", 1, "retry")), cfg);
    expect(s.calls).toHaveLength(1);
    expect((await s.story()).map((e) => `${e.type} ${String(e.data.attempt)}${e.data.reconstructed ? " (ledger)" : ""}`)).toEqual([
      "tool.started 1 (ledger)",
      "tool.recovery_requested 1",
      "tool.started 2",
      "tool.succeeded 2",
    ]);
    expect(await s.auditLog.verify(thread)).toMatchObject({ ok: true });
  });

  it("an idempotent tool retried after that crash: attempt 1's start, then attempt 2's", async () => {
    const s = setup({ idempotent: true });
    await s.ledger.begin(key, t0);
    await s.node(state(), cfg);
    expect(s.calls).toHaveLength(1);
    expect((await s.story()).map((e) => [e.type, e.data.attempt, e.data.reconstructed])).toEqual([
      ["tool.started", 1, "ledger"],
      ["tool.started", 2, undefined],
      ["tool.succeeded", 2, undefined],
    ]);
  });

  it("writes every start the ledger counted and the log lacks; only the current one has a start time", async () => {
    const s = setup();
    await s.ledger.begin(key, t0);
    await s.logged(["tool.started", { attempt: 1, try: 1 }], ["tool.failed", { attempt: 1, try: 1, kind: "error", error: "ECONNRESET" }]);
    await s.ledger.retry(key, 1, new Date(t0.getTime() + 1_000));
    const t3 = new Date(t0.getTime() + 2_000);
    await s.ledger.retry(key, 2, t3); // attempts 2 and 3 claimed, their starts never reached the log
    await s.node(state(), cfg);
    expect((await s.story()).slice(2)).toEqual([
      { type: "tool.started", data: { ...ids, attempt: 2, reconstructed: "ledger", startedAt: null } },
      { type: "tool.started", data: { ...ids, attempt: 3, reconstructed: "ledger", startedAt: t3.toISOString() } },
      { type: "tool.recovery_requested", data: expect.objectContaining({ reason: "outcome_unknown", attempt: 3 }) },
    ]);
  });

  it("after a crash between the ledger's success and `tool.succeeded`: the success is written from the ledger before the replay", async () => {
    const s = setup();
    const content = JSON.stringify({ refundId: 7, status: "refunded" });
    await s.ledger.begin(key, t0);
    await s.logged(["tool.started", { attempt: 1, try: 1 }]);
    await s.ledger.finish(key, { status: "succeeded", result: { content } });
    const out = await s.node(state(), cfg);
    expect(s.calls).toEqual([]);
    expect((out.messages[0] as ToolMessage).content).toBe(content);
    expect(out.decisions[0]!.status).toBe("executed");
    expect(await s.story()).toEqual([
      { type: "tool.started", data: { ...ids, attempt: 1, try: 1 } },
      { type: "tool.succeeded", data: { ...ids, attempt: 1, result: content, truncated: false, reconstructed: "ledger" } },
      { type: "tool.replayed", data: { ...ids, attempt: 1, status: "succeeded" } },
    ]);
  });

  it("previews a long result as the normal path does", async () => {
    const s = setup();
    const content = "x".repeat(2_500);
    await s.ledger.begin(key, t0);
    await s.logged(["tool.started", { attempt: 1, try: 1 }]);
    await s.ledger.finish(key, { status: "succeeded", result: { content } });
    await s.node(state(), cfg);
    const succeeded = (await s.story()).find((e) => e.type === "tool.succeeded")!;
    expect(succeeded.data).toMatchObject({ result: "x".repeat(2_000), truncated: true, reconstructed: "ledger" });
  });

  it("a failure the log lacks: a try that failed before is not the outcome", async () => {
    const s = setup();
    const error = "Abandoned by sam. The action was not completed.";
    await s.ledger.begin(key, t0);
    await s.logged(
      ["tool.started", { attempt: 1, try: 1 }],
      ["tool.failed", { attempt: 1, try: 1, kind: "permission_denied", error: "403" }],
      ["tool.recovery_requested", { reason: "permission_denied", attempt: 1, error: "403" }],
    );
    await s.ledger.finish(key, { status: "failed", error }); // the abandon reached the ledger, not the log
    const out = await s.node(state(resolved("permission_denied", 1, "abandon")), cfg);
    expect(out.decisions[0]!.status).toBe("failed");
    expect((await s.story()).slice(3)).toEqual([
      { type: "tool.failed", data: { ...ids, attempt: 1, kind: "error", error, reconstructed: "ledger" } },
      { type: "tool.replayed", data: { ...ids, attempt: 1, status: "failed" } },
    ]);
  });

  it("writes nothing from the ledger when the log already tells the story", async () => {
    const s = setup();
    await s.node(state(), cfg);
    await s.node(state(), cfg); // replayed
    const events = await s.story();
    expect(events.map((e) => e.type)).toEqual(["tool.started", "tool.succeeded", "tool.replayed"]);
    expect(events.filter((e) => e.data.reconstructed !== undefined)).toEqual([]);
  });

  it("does not invent a start for a claim that never ran the tool", async () => {
    // The breaker refused attempt 2's try; the human abandons the call.
    const s = setup();
    await s.ledger.begin(key, t0);
    await s.logged(
      ["tool.started", { attempt: 1, try: 1 }],
      ["tool.failed", { attempt: 1, try: 1, kind: "error", error: "ECONNRESET" }],
      ["tool.retrying", { attempt: 1, try: 2, delayMs: 10, error: "ECONNRESET" }],
      ["tool.recovery_requested", { reason: "circuit_open", attempt: 2, error: "the circuit breaker is open" }],
    );
    await s.ledger.retry(key, 1, t0);
    await s.node(state(resolved("circuit_open", 2, "abandon")), cfg);
    expect((await s.story()).slice(4).map((e) => [e.type, e.data.attempt, e.data.kind, e.data.reconstructed])).toEqual([["tool.failed", 2, "abandoned", undefined]]);

    // A call marked done before it ever started (attempt 0), replayed after a crash lost its `tool.succeeded`.
    const m = setup();
    await m.logged(["tool.recovery_requested", { reason: "circuit_open", attempt: 0, error: "the circuit breaker is open" }]);
    await m.ledger.begin(key, t0);
    await m.ledger.finish(key, { status: "succeeded", result: { content: "done by hand" } });
    await m.node(state(resolved("circuit_open", 0, "mark_done")), cfg);
    expect((await m.story()).slice(1).map((e) => [e.type, e.data.attempt, e.data.reconstructed])).toEqual([
      ["tool.succeeded", 1, "ledger"],
      ["tool.replayed", 1, undefined],
    ]);
  });

  it("reads the audit log only for calls that meet an entry they did not claim, once per run", async () => {
    const s = setup();
    const read = vi.spyOn(s.auditLog, "read");
    await s.node(state(), cfg);
    expect(read).not.toHaveBeenCalled();

    const records = [recordOf("c2", { orderId: "1043", amount: 5 }), recordOf("c3", { orderId: "2001", amount: 9 })];
    for (const r of records) await s.ledger.begin({ threadId: thread, toolCallId: r.toolCallId, digest: r.digest }, t0);
    const out = await s.node(stateOf(records), cfg);
    expect(read).toHaveBeenCalledTimes(1);
    expect(out.decisions.filter((d) => d.toolCallId !== "c1").map((d) => d.status)).toEqual(["recovery_pending", "recovery_pending"]);
    const started = (await s.auditLog.read(thread)).filter((e) => e.type === "tool.started" && e.data.reconstructed === "ledger");
    expect(started.map((e) => e.data.toolCallId)).toEqual(["c2", "c3"]);
  });
});
