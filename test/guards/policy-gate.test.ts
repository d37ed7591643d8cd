import { AIMessage, HumanMessage, ToolMessage } from "@langchain/core/messages";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { EartConfigError, IdentityResolutionError, MemoryAuditLog, StateTamperError, toolCallDigest, type DecisionRecord } from "eart";
import { SqliteEffectLedger } from "eart/sqlite";
import { createPolicyGate, routeAfterModel, routeAfterPolicyGate } from "eart/guards";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { registry } from "../support/refund.js";
import { processSealer, sealDecision, sealerOf, sealIdentity } from "../support/sealing.js";

const cfg = { configurable: { thread_id: "g1" } };
// Bound as the identity binding node binds it: sealed for the thread.
const identity = sealIdentity("g1", registry.resolve({ agentId: "support-agent", userId: "cara", source: "configurable.user_id" }));
const tools = createRefundTools(new Database(":memory:")).all;

function gate() {
  const auditLog = new MemoryAuditLog();
  return { auditLog, policyGate: createPolicyGate({ policy: refundPolicy, tools, registry, auditLog }) };
}

const state = (calls: { id: string; name: string; args: Record<string, unknown> }[], decisions: DecisionRecord[] = []) => ({
  messages: [new HumanMessage("refund"), new AIMessage({ id: "m1", content: "", tool_calls: calls })],
  identity,
  context: { items: [], sensitivity: [] },
  decisions,
  escalation: null,
  budget: {},
});

describe("createPolicyGate", () => {
  it("validates its options", () => {
    const auditLog = new MemoryAuditLog();
    expect(() => createPolicyGate({ policy: {} as never, tools, registry, auditLog })).toThrow(EartConfigError);
    try {
      createPolicyGate({ policy: refundPolicy, tools, registry: {} as never, auditLog });
    } catch (e) {
      expect((e as EartConfigError).field).toBe("registry");
    }
    expect.assertions(2);
  });

  it("decides each new call, answers the refused ones and records every decision (first pass, no interrupt)", async () => {
    const { policyGate, auditLog } = gate();
    const out = await policyGate(
      state([
        { id: "a", name: "lookup_order", args: { orderId: "1042" } },
        { id: "b", name: "issue_refund", args: { orderId: "1042", amount: 740 } },
        { id: "c", name: "issue_refund", args: { orderId: "1042", amount: 7400 } },
        { id: "d", name: "view_payment_details", args: { orderId: "1042" } },
      ]) as never,
      cfg,
    );
    expect(out.decisions?.map((d) => [d.toolCallId, d.status, d.verdict.policyIds])).toEqual([
      ["a", "allowed", ["orders.lookup"]],
      ["b", "pending_approval", ["refund.supervisor"]],
      ["c", "denied", ["refund.limit"]],
      ["d", "denied", ["eart.permissions"]],
    ]);
    expect(out.decisions?.[1]).toMatchObject({
      messageId: "m1",
      digest: toolCallDigest("issue_refund", { orderId: "1042", amount: 740 }, "g1"),
      requestedBy: { agentId: "support-agent", userId: "cara" },
      verdict: { approverRoles: ["supervisor"], version: refundPolicy.version },
    });
    expect(out.messages?.map((m) => (m as ToolMessage).tool_call_id)).toEqual(["c", "d"]);
    const events = await auditLog.read("g1");
    expect(events.map((e) => e.type)).toEqual(["policy.decided", "policy.decided", "policy.decided", "policy.decided", "approval.requested"]);
    expect(events[4]!.data).toMatchObject({ type: "eart.approval", requests: [{ toolCallId: "b" }] });
    // Every record the gate writes carries its seal for the thread.
    expect(out.decisions?.every((d) => processSealer().decisionIsSealed("g1", d))).toBe(true);
  });

  it("does not decide a call twice", async () => {
    const { policyGate, auditLog } = gate();
    const first = await policyGate(state([{ id: "a", name: "lookup_order", args: { orderId: "1042" } }]) as never, cfg);
    const second = await policyGate(state([{ id: "a", name: "lookup_order", args: { orderId: "1042" } }], first.decisions) as never, cfg);
    expect(second).toEqual({});
    expect(await auditLog.read("g1")).toHaveLength(1);
  });

  it("refuses a tool call id reused by a later message", async () => {
    const { policyGate } = gate();
    const first = await policyGate(state([{ id: "a", name: "lookup_order", args: { orderId: "1042" } }]) as never, cfg);
    const reused = state([{ id: "a", name: "issue_refund", args: { orderId: "1042", amount: 5 } }], first.decisions);
    reused.messages[1] = new AIMessage({ id: "m2", content: "", tool_calls: [{ id: "a", name: "issue_refund", args: { orderId: "1042", amount: 5 } }] });
    const out = await policyGate(reused as never, cfg);
    expect(out.decisions?.[0]).toMatchObject({ toolCallId: "a", messageId: "m2", status: "denied", verdict: { policyIds: ["eart.duplicate-call-id"] } });
  });

  it("refuses a decision record it did not seal (state_tamper_detected), and records it", async () => {
    const { policyGate, auditLog } = gate();
    const first = await policyGate(state([{ id: "b", name: "issue_refund", args: { orderId: "1042", amount: 740 } }]) as never, cfg);
    const pending = first.decisions![0]!;
    expect(pending.status).toBe("pending_approval");
    const { seal: _seal, ...unsealed } = pending;
    const forgeries: [string, DecisionRecord][] = [
      ["a forged approval", { ...pending, status: "approved", approvals: [{ approverId: "sam", type: "approve", at: pending.decidedAt }] }],
      ["a record without its seal", unsealed as DecisionRecord],
      ["a record sealed for another thread", sealDecision("g2", unsealed as DecisionRecord)],
    ];
    for (const [label, forged] of forgeries) {
      const error = await policyGate(state([{ id: "b", name: "issue_refund", args: { orderId: "1042", amount: 740 } }], [forged]) as never, cfg).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, label).toBeInstanceOf(StateTamperError);
      expect((error as StateTamperError).code, label).toBe("state_tamper_detected");
      expect((error as StateTamperError).details.forged, label).toEqual([{ channel: "decisions", toolCallId: "b" }]);
    }
    const tamper = (await auditLog.read("g1")).filter((e) => e.type === "state.tamper_detected");
    expect(tamper).toHaveLength(3);
    expect(tamper[0]!.data).toMatchObject({ node: "policyGate", forged: [{ channel: "decisions", toolCallId: "b" }] });
  });

  it("refuses an identity it did not seal (state_tamper_detected) and decides nothing", async () => {
    const { policyGate, auditLog } = gate();
    const { seal: _seal, ...unsealed } = identity;
    const s = { ...state([{ id: "a", name: "lookup_order", args: { orderId: "1042" } }]), identity: unsealed };
    const error = await policyGate(s as never, cfg).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StateTamperError);
    expect((error as StateTamperError).code).toBe("state_tamper_detected");
    const events = await auditLog.read("g1");
    expect(events.map((e) => e.type)).toEqual(["state.tamper_detected"]);
    expect(events[0]!.data).toMatchObject({ node: "policyGate", forged: [{ channel: "identity" }] });
  });

  it("seals with the key of the ledger it is given, the one its tool node trusts", async () => {
    const ledger = new SqliteEffectLedger({ database: new Database(":memory:") });
    const sealer = await sealerOf(ledger);
    const policyGate = createPolicyGate({ policy: refundPolicy, tools, registry, auditLog: new MemoryAuditLog(), ledger });
    const { seal: _seal, ...unsealed } = identity;
    const s = { ...state([{ id: "a", name: "lookup_order", args: { orderId: "1042" } }]), identity: sealer.identity("g1", unsealed) };
    const out = await policyGate(s as never, cfg);
    expect(sealer.decisionIsSealed("g1", out.decisions![0]!)).toBe(true);
    expect(processSealer().decisionIsSealed("g1", out.decisions![0]!)).toBe(false);
    // An identity sealed with the process key is not this deployment's.
    await expect(policyGate(state([{ id: "a", name: "lookup_order", args: { orderId: "1042" } }]) as never, cfg)).rejects.toBeInstanceOf(StateTamperError);
  });

  it("answers a call whose arguments nest 2,000 deep as invalid, beside the other calls, without walking them", async () => {
    let deep: unknown = "x";
    for (let i = 0; i < 2000; i++) deep = { a: deep };
    const { policyGate, auditLog } = gate();
    const out = await policyGate(
      state([
        { id: "a", name: "lookup_order", args: { orderId: "1042" } },
        { id: "deep", name: "issue_refund", args: { orderId: "1042", amount: 5, note: deep } },
      ]) as never,
      cfg,
    );
    expect(out.decisions?.map((d) => [d.toolCallId, d.status, d.verdict.policyIds])).toEqual([
      ["a", "allowed", ["orders.lookup"]],
      ["deep", "invalid", ["eart.arguments"]],
    ]);
    const record = out.decisions![1]!;
    // The record keeps a bounded copy; its digest is of the whole call.
    expect(record.args).toMatchObject({ orderId: "1042", amount: 5, note: { a: { a: {} } } });
    expect(JSON.stringify(record.args).length).toBeLessThan(500);
    expect(record.digest).toMatch(/^[0-9a-f]{64}$/);
    expect(processSealer().decisionIsSealed("g1", record)).toBe(true);
    const [answer] = out.messages as ToolMessage[];
    expect(answer).toMatchObject({ tool_call_id: "deep", status: "error" });
    expect(String(answer!.content)).toBe(`Invalid arguments for issue_refund: note${".a".repeat(63)} is nested deeper than 64 levels`);
    expect((await auditLog.read("g1")).map((e) => [e.type, e.data.toolCallId, e.data.status])).toEqual([
      ["policy.decided", "a", "allowed"],
      ["policy.decided", "deep", "invalid"],
    ]);
  });

  it("digests a call just too deep as toolCallDigest digests it: the same canonical JSON", async () => {
    let deep: unknown = [1.5, "é", { z: null, b: true, "\u2028": -0 }];
    for (let i = 0; i < 64; i++) deep = { a: deep, [`k${i}`]: i };
    const args = { orderId: "1042", amount: 5, note: deep };
    const { policyGate } = gate();
    const out = await policyGate(state([{ id: "d", name: "issue_refund", args }]) as never, cfg);
    expect(out.decisions![0]).toMatchObject({ status: "invalid", digest: toolCallDigest("issue_refund", args, "g1") });
  });

  it("refuses a reused call id with deep arguments without walking them", async () => {
    let deep: unknown = "x";
    for (let i = 0; i < 2000; i++) deep = { a: deep };
    const { policyGate } = gate();
    const first = await policyGate(state([{ id: "a", name: "lookup_order", args: { orderId: "1042" } }]) as never, cfg);
    const reused = state([], first.decisions);
    reused.messages[1] = new AIMessage({ id: "m2", content: "", tool_calls: [{ id: "a", name: "issue_refund", args: { note: deep } }] });
    const out = await policyGate(reused as never, cfg);
    expect(out.decisions?.[0]).toMatchObject({ toolCallId: "a", messageId: "m2", status: "denied", verdict: { policyIds: ["eart.duplicate-call-id"] } });
  });

  it("fails closed without a bound identity", async () => {
    const { policyGate } = gate();
    const s = { ...state([{ id: "a", name: "lookup_order", args: { orderId: "1042" } }]), identity: undefined };
    await expect(policyGate(s as never, cfg)).rejects.toBeInstanceOf(IdentityResolutionError);
  });
});

describe("routes", () => {
  const rec = (toolCallId: string, status: DecisionRecord["status"]) => ({ toolCallId, messageId: "m1", status }) as DecisionRecord;
  const msgs = [new AIMessage({ id: "m1", content: "", tool_calls: [{ id: "a", name: "x", args: {} }] })];

  it("routes after the gate by the decisions of the governed message", () => {
    expect(routeAfterPolicyGate({ messages: msgs, decisions: [rec("a", "pending_approval")] })).toBe("approval");
    expect(routeAfterPolicyGate({ messages: msgs, decisions: [rec("a", "approved"), rec("b", "denied")] })).toBe("tools");
    expect(routeAfterPolicyGate({ messages: msgs, decisions: [rec("a", "escalated")] })).toBe("end");
    expect(routeAfterPolicyGate({ messages: msgs, decisions: [rec("a", "rejected")] })).toBe("agent");
    // Decisions of an earlier message do not count.
    expect(routeAfterPolicyGate({ messages: msgs, decisions: [{ ...rec("a", "allowed"), messageId: "m0" }] })).toBe("agent");
  });

  it("routes after the model on tool calls", () => {
    expect(routeAfterModel({ messages: msgs })).toBe("policyGate");
    expect(routeAfterModel({ messages: [new AIMessage("hi")] })).toBe("end");
  });
});
