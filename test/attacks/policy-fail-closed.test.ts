/**
 * Policy fails closed, through the public API: a rule condition that does not decide (async,
 * a Promise, a truthy non-boolean) never lets a call through; a limit the rules read from
 * configuration is part of the policy version, so an approval given after a redeploy is checked
 * again; and hostile payloads at the gate (a tool call, an edit or a resume nested ~2,000 deep, a
 * multi-megabyte answer) get typed errors and leave a bounded audit trail.
 */
import { AIMessage, HumanMessage, ToolMessage } from "@langchain/core/messages";
import { Annotation, Command, END, MemorySaver, MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import {
  ApprovalError,
  definePolicy,
  MemoryAuditLog,
  MemoryEffectLedger,
  pendingApproval,
  PolicyDefinitionError,
  type ApprovalRequest,
  type DecisionRecord,
  type PolicyEngine,
  type PolicyRule,
} from "eart";
import { canonicalJson, sha256Hex } from "../../src/internal/canonical.js";
import { continueThread, defineApp } from "eart/graphs";
import { createGovernedToolNode, createIdentityBinding, GovernedChannels } from "eart/nodes";
import { createPolicyGate, routeAfterModel, routeAfterPolicyGate } from "eart/guards";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { answersTo, ask, config, refund, refundSetup, registry } from "../support/refund.js";

const amountOf = (r: { tool: { args: Record<string, unknown> } }) => Number(r.tool.args.amount);
const as = (threadId: string, userId: string) => ({ configurable: { thread_id: threadId, user_id: userId } });
const approve = (request: ApprovalRequest, id = "c1") => ({
  decisions: [{ toolCallId: id, type: "approve", digest: request.requests.find((r) => r.toolCallId === id)!.digest }],
});

/** `{ a: { a: … "x" } }`, `depth` levels deep. */
const nested = (depth: number, leaf: unknown = "x"): Record<string, unknown> => {
  let value: unknown = leaf;
  for (let i = 0; i < depth; i++) value = { a: value };
  return value as Record<string, unknown>;
};

/** The refund policy with one extra rule in front of it. */
const withRule = (rule: PolicyRule): PolicyEngine =>
  definePolicy({
    name: "refunds-plus",
    rules: [
      rule,
      { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
      { id: "refund.any", tools: ["issue_refund"], effect: "allow", reason: "Refunds are allowed" },
    ],
  });

describe("a rule condition that does not decide denies the call", () => {
  // Each was skipped today, and the refund ran.
  const misbehaving: [string, () => unknown][] = [
    ["a Promise resolving true", () => Promise.resolve(true)],
    ["a Promise that rejects", () => Promise.reject(new Error("limits service down"))],
    ["a thenable", () => ({ then: (ok: (v: boolean) => void) => ok(true) })],
    ["the number 1", () => 1],
    ['the string "yes"', () => "yes"],
    ["an empty object", () => ({})],
    ["undefined", () => undefined],
  ];
  for (const [label, when] of misbehaving) {
    it(`a deny rule whose when returns ${label}: the refund does not run, the model is told why`, async () => {
      const policy = withRule({ id: "refund.blocked-orders", tools: ["issue_refund"], when: when as never, effect: "deny", reason: "Order is blocked" });
      const { agent, refunds, auditLog } = refundSetup([[refund("c1", 50)]], { policy });
      const done = await agent.invoke(ask(), config(`t-${label}`));
      expect(refunds()).toEqual([]);
      const [answer] = answersTo(done.messages, "c1");
      expect(String(answer?.content)).toMatch(/^Denied by policy: policy rule refund\.blocked-orders did not decide: its when returned .+, not a boolean/);
      const decided = (await auditLog.read(`t-${label}`)).find((e) => e.type === "policy.decided")!;
      expect(decided.data).toMatchObject({ effect: "deny", policyIds: ["refund.blocked-orders"] });
    });
  }

  it("an async function as when is refused when the policy is defined, naming the rule", () => {
    const error = (() => {
      try {
        withRule({ id: "refund.blocked-orders", tools: ["issue_refund"], when: (async () => true) as never, effect: "deny" });
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(PolicyDefinitionError);
    expect(error).toMatchObject({ code: "policy_invalid", ruleId: "refund.blocked-orders" });
    expect((error as Error).message).toMatch(/rules\.0\.when: .*synchronous/);
  });

  it("on an allow, escalate or require_approval rule too, a misbehaving when never gives an allow", async () => {
    for (const effect of ["allow", "escalate", "require_approval"] as const) {
      const policy = definePolicy({
        rules: [
          { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
          { id: "refund.flaky", tools: ["issue_refund"], when: (() => "true") as never, effect, ...(effect === "require_approval" ? { approverRoles: ["supervisor"] } : {}) },
        ],
      });
      const { agent, refunds } = refundSetup([[refund("c1", 50)]], { policy });
      const done = await agent.invoke(ask(), config(`t-${effect}`));
      expect(pendingApproval(done)).toBeUndefined();
      expect(refunds()).toEqual([]);
      expect(String(answersTo(done.messages, "c1")[0]?.content)).toContain("policy rule refund.flaky did not decide");
    }
  });
});

describe("the policy version covers the configuration a decision depends on", () => {
  /** The refund policy with its limit declared as configuration, as the README says to. */
  const refundsWithLimit = (refundLimit: number) =>
    definePolicy({
      name: "refunds",
      config: { refundLimit },
      rules: [
        { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
        { id: "refund.small", tools: ["issue_refund"], when: (r) => amountOf(r) <= 100, effect: "allow" },
        {
          id: "refund.supervisor",
          tools: ["issue_refund"],
          when: (r, c) => amountOf(r) > 100 && amountOf(r) <= c.refundLimit,
          effect: "require_approval",
          approverRoles: ["supervisor"],
        },
        {
          id: "refund.limit",
          tools: ["issue_refund"],
          when: (r, c) => !(amountOf(r) <= c.refundLimit),
          effect: "deny",
          reason: (_r, c) => `Refunds over $${c.refundLimit} are not allowed`,
        },
      ],
    });

  it("a $4,000 refund requested under a $5,000 limit and approved after a redeploy with a $1,000 limit does not run", async () => {
    const before = refundsWithLimit(5000);
    const after = refundsWithLimit(1000);
    expect(after.version).not.toBe(before.version);
    const checkpointer = new MemorySaver();
    const first = refundSetup([[refund("c1", 4000)]], { policy: before, checkpointer });
    const request = pendingApproval(await first.agent.invoke(ask(), config("t-limit")))!;
    expect(request.requests[0]).toMatchObject({ policyVersion: before.version, approverRoles: ["supervisor"] });
    // The redeploy: same thread store and audit log, the limit lowered in configuration.
    const second = refundSetup([[refund("c1", 4000)]], { policy: after, checkpointer, auditLog: first.auditLog });
    const done = await second.agent.invoke(new Command({ resume: approve(request) }), as("t-limit", "sam"));
    expect(second.refunds()).toEqual([]);
    expect(answersTo(done.messages, "c1")[0]?.content).toBe("Denied by policy: Refunds over $1000 are not allowed");
    const decided = (await second.auditLog.read("t-limit")).find((e) => e.type === "approval.decided")!;
    expect(decided.data).toMatchObject({
      approverId: "sam",
      decision: "approve",
      status: "denied",
      effect: "deny",
      policyIds: ["refund.limit"],
      policyVersion: after.version,
      requestedUnderVersion: before.version,
    });
    expect(await second.auditLog.verify("t-limit")).toMatchObject({ ok: true });
  });

  /**
   * sam approves under one deploy, the approval is saved, and the process dies before the tools step
   * began (the ledger's first write fails); another deploy continues the thread.
   */
  async function approvedThenRedeployed(threadId: string, afterPolicy: PolicyEngine) {
    class DiesBeforeBegin extends MemoryEffectLedger {
      armed = true;
      override async begin(...args: Parameters<MemoryEffectLedger["begin"]>) {
        if (this.armed) {
          this.armed = false;
          throw new Error("the process died before the tool began");
        }
        return super.begin(...args);
      }
    }
    const ledger = new DiesBeforeBegin();
    const checkpointer = new MemorySaver();
    const first = refundSetup([[refund("c1", 4000)]], { policy: refundsWithLimit(5000), checkpointer, agent: { ledger } });
    const request = pendingApproval(await first.agent.invoke(ask(), config(threadId)))!;
    await expect(first.agent.invoke(new Command({ resume: approve(request) }), as(threadId, "sam"))).rejects.toThrow("the process died before the tool began");
    const second = refundSetup([[refund("c1", 4000)], []], { policy: afterPolicy, checkpointer, auditLog: first.auditLog, agent: { ledger }, tools: () => first.tools.all });
    const run = await continueThread(defineApp({ auditLog: first.auditLog, graphs: { "support-agent": second.agent } }), threadId);
    return { first, run };
  }

  it("an approved refund that had not begun when the service was redeployed with a lower limit is decided again, and does not run", async () => {
    const after = refundsWithLimit(1000);
    const { first, run } = await approvedThenRedeployed("t-crash-limit", after);
    expect(first.refunds()).toEqual([]);
    const messages = run.values.messages as ToolMessage[];
    expect(String(answersTo(messages, "c1")[0]?.content)).toMatch(/^Not run: the policy changed since it was decided \(version .+ → .+\) and the policy in force denies it: Refunds over \$1000 are not allowed\.$/);
    const blocked = (await first.auditLog.read("t-crash-limit")).find((e) => e.type === "tool.blocked")!;
    expect(blocked.data).toMatchObject({ toolCallId: "c1", policyChanged: { from: refundsWithLimit(5000).version, to: after.version } });
    expect((run.values.decisions as DecisionRecord[]).find((d) => d.toolCallId === "c1")).toMatchObject({ status: "blocked" });
    expect(await first.auditLog.verify("t-crash-limit")).toMatchObject({ ok: true });
  });

  it("decided again under a new version that asks for the role the approver holds, the approved refund runs once", async () => {
    const { first } = await approvedThenRedeployed("t-crash-same", refundsWithLimit(6000));
    expect(first.refunds()).toEqual([{ orderId: "1042", amount: 4000, toolCallId: "c1" }]);
    expect((await first.auditLog.read("t-crash-same")).filter((e) => e.type === "tool.blocked")).toEqual([]);
  });

  it("the same limit after a redeploy keeps the version: the approval runs the refund", async () => {
    const checkpointer = new MemorySaver();
    const first = refundSetup([[refund("c1", 4000)]], { policy: refundsWithLimit(5000), checkpointer });
    const request = pendingApproval(await first.agent.invoke(ask(), config("t-same")))!;
    const second = refundSetup([[refund("c1", 4000)]], { policy: refundsWithLimit(5000), checkpointer, auditLog: first.auditLog });
    await second.agent.invoke(new Command({ resume: approve(request) }), as("t-same", "sam"));
    expect(second.refunds()).toEqual([{ orderId: "1042", amount: 4000, toolCallId: "c1" }]);
  });

  it("a declared version (a config hash, a deploy id) changes the policy version with it", () => {
    const rules: PolicyRule[] = [{ id: "refund.any", tools: ["issue_refund"], effect: "allow" }];
    const v1 = definePolicy({ name: "refunds", version: "limits-2026-03-01", rules });
    const v2 = definePolicy({ name: "refunds", version: "limits-2026-03-09", rules });
    expect(v1.version).not.toBe(v2.version);
    expect(definePolicy({ name: "refunds", version: "limits-2026-03-01", rules }).version).toBe(v1.version);
  });

  it("a value held only in a closure is not in the version: that is why it must be declared", () => {
    const closureOnly = (limit: number) => definePolicy({ rules: [{ id: "refund.limit", tools: ["issue_refund"], when: (r) => amountOf(r) > limit, effect: "deny" }] });
    expect(closureOnly(1000).version).toBe(closureOnly(5000).version);
  });

  it("asked again under new approver roles, earlier approvals by holders of the old roles do not count toward the new quorum", async () => {
    const twoSupervisors = definePolicy({
      name: "refunds-q1",
      rules: [{ id: "orders.lookup", tools: ["lookup_order"], effect: "allow" }, { id: "refund.two-supervisors", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"], quorum: 2 }],
    });
    const twoFinance = definePolicy({
      name: "refunds-q2",
      rules: [{ id: "orders.lookup", tools: ["lookup_order"], effect: "allow" }, { id: "refund.two-finance", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["finance"], quorum: 2 }],
    });
    const checkpointer = new MemorySaver();
    const first = refundSetup([[refund("c1", 740)]], { policy: twoSupervisors, checkpointer });
    const request = pendingApproval(await first.agent.invoke(ask(), config("t-quorum")))!;
    const afterSam = pendingApproval(await first.agent.invoke(new Command({ resume: approve(request) }), as("t-quorum", "sam")))!;
    expect(afterSam.requests[0]).toMatchObject({ approvedBy: ["sam"], quorum: 2 });
    // Redeploy: two people from finance must approve now.
    const second = refundSetup([[refund("c1", 740)]], { policy: twoFinance, checkpointer, auditLog: first.auditLog });
    const reasked = pendingApproval(await second.agent.invoke(new Command({ resume: approve(afterSam) }), as("t-quorum", "sue")))!;
    expect(reasked.requests[0]).toMatchObject({ approverRoles: ["finance"], quorum: 2, approvedBy: [] });
    // One finance approval is one of two: sam's and sue's supervisor approvals are not finance's.
    const afterFay = await second.agent.invoke(new Command({ resume: approve(reasked) }), as("t-quorum", "fay"));
    expect(second.refunds()).toEqual([]);
    expect(pendingApproval(afterFay)?.requests[0]).toMatchObject({ approvedBy: ["fay"], quorum: 2 });
  });
});

describe("hostile payloads at the gate", () => {
  /** The gate in a user's own graph with their own model node (no audit of its output) and no resume guard. */
  function ownGraph(args: Record<string, unknown>) {
    const db = new Database(":memory:");
    const tools = createRefundTools(db).all;
    const auditLog = new MemoryAuditLog();
    const State = Annotation.Root({ ...MessagesAnnotation.spec, ...GovernedChannels });
    let turn = 0;
    const app = new StateGraph(State)
      .addNode("bindIdentity", createIdentityBinding({ registry, auditLog }))
      .addNode("agent", async () => ({
        messages: [turn++ === 0 ? new AIMessage({ content: "", tool_calls: [{ id: "c1", name: "issue_refund", args }] }) : new AIMessage("done")],
      }))
      .addNode("policyGate", createPolicyGate({ policy: refundPolicy, tools, registry, auditLog }))
      .addNode("tools", createGovernedToolNode({ tools, auditLog }))
      .addEdge(START, "bindIdentity")
      .addEdge("bindIdentity", "agent")
      .addConditionalEdges("agent", routeAfterModel, { policyGate: "policyGate", end: END })
      .addConditionalEdges("policyGate", routeAfterPolicyGate, { approval: "policyGate", tools: "tools", agent: "agent", end: END })
      .addEdge("tools", "agent")
      .compile({ checkpointer: new MemorySaver() });
    const refunds = () => db.prepare("SELECT order_id AS orderId, amount FROM refunds").all();
    return { app, auditLog, refunds };
  }
  const start = { messages: [new HumanMessage("Refund order 1042")] };
  const cfg = (userId = "cara") => ({ configurable: { thread_id: "h1", agent_id: "support-agent", user_id: userId } });

  it("tool arguments nested 2,000 deep are answered to the model as invalid, recorded and audited; nothing runs", async () => {
    const { app, auditLog, refunds } = ownGraph({ orderId: "1042", amount: 50, note: nested(2000) });
    const done = await app.invoke(start, cfg());
    expect(refunds()).toEqual([]);
    const [answer] = answersTo(done.messages, "c1");
    expect(answer).toBeInstanceOf(ToolMessage);
    expect(String(answer!.content)).toMatch(/^Invalid arguments for issue_refund: note(\.a)+ is nested deeper than 64/);
    const record = (done.decisions as DecisionRecord[]).find((d) => d.toolCallId === "c1")!;
    expect(record).toMatchObject({ status: "invalid", verdict: { effect: "deny", policyIds: ["eart.arguments"] } });
    expect(record.digest).toMatch(/^[0-9a-f]{64}$/);
    const decided = (await auditLog.read("h1")).find((e) => e.type === "policy.decided")!;
    expect(decided.data).toMatchObject({ toolCallId: "c1", status: "invalid", digest: record.digest });
    expect(JSON.stringify(decided.data).length).toBeLessThan(20_000);
    expect(await auditLog.verify("h1")).toMatchObject({ ok: true });
  });

  it("edit arguments nested 2,000 deep are refused with a typed error, audited with their digest, and the request still stands", async () => {
    const { app, auditLog, refunds } = ownGraph({ orderId: "1042", amount: 740 });
    const request = pendingApproval(await app.invoke(start, cfg()))!;
    const edit = { decisions: [{ toolCallId: "c1", type: "edit", digest: request.requests[0]!.digest, args: { orderId: "1042", amount: 50, note: nested(2000) } }] };
    const error = await app.invoke(new Command({ resume: edit }), cfg("sam")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApprovalError);
    expect(error).toMatchObject({ code: "approval_resume_invalid" });
    expect((error as Error).message).toMatch(/^Refused resume value at decisions\.0\.args\.note(\.a)+: it is nested deeper than 64/);
    const refused = (await auditLog.read("h1")).filter((e) => e.type === "approval.refused");
    expect(refused).toHaveLength(1);
    expect(refused[0]!.data).toMatchObject({ code: "approval_resume_invalid", answerTruncated: true });
    expect(refused[0]!.data.answerDigest).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(refused[0]!.data).length).toBeLessThan(20_000);
    expect(refunds()).toEqual([]);
    // The supervisor's correct answer still works.
    await app.invoke(new Command({ resume: approve(request) }), cfg("sam"));
    expect(refunds()).toEqual([{ orderId: "1042", amount: 740 }]);
    expect(await auditLog.verify("h1")).toMatchObject({ ok: true });
  });

  it("a refused resume nested 2,000 deep is refused with a typed error and audited", async () => {
    const { app, auditLog, refunds } = ownGraph({ orderId: "1042", amount: 740 });
    const request = pendingApproval(await app.invoke(start, cfg()))!;
    for (const resume of [{ ...approve(request), extra: nested(2000) }, nested(2000)]) {
      const error = await app.invoke(new Command({ resume }), cfg("sam")).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApprovalError);
      expect(error).toMatchObject({ code: "approval_resume_invalid" });
    }
    const refused = (await auditLog.read("h1")).filter((e) => e.type === "approval.refused");
    expect(refused.map((e) => e.data.code)).toEqual(["approval_resume_invalid", "approval_resume_invalid"]);
    expect(refused[0]!.data.answerDigest).not.toBe(refused[1]!.data.answerDigest);
    expect(refunds()).toEqual([]);
  });

  it("the prebuilt agent's resume guard, which refuses a deep or non-JSON answer before LangGraph stores it, still audits it on the waiting thread", async () => {
    const s = refundSetup([[refund("c1", 740)]]);
    const request = pendingApproval(await s.agent.invoke(ask(), config("deep-1")))!;
    const deep = { ...approve(request), extra: nested(2000) };
    const error = await s.agent.invoke(new Command({ resume: deep }), config("deep-1", "sam")).catch((e: unknown) => e);
    expect(error).toMatchObject({ name: "ApprovalError", code: "approval_resume_invalid" });
    const notJson = { decisions: [{ ...approve(request).decisions[0]!, amount: Number.NaN }] };
    await expect(s.agent.invoke(new Command({ resume: notJson }), config("deep-1", "fay"))).rejects.toMatchObject({ code: "approval_resume_invalid" });
    const refused = (await s.auditLog.read("deep-1")).filter((e) => e.type === "approval.refused");
    expect(refused.map((e) => [e.data.code, e.data.claimedBy])).toEqual([
      ["approval_resume_invalid", "sam"],
      ["approval_resume_invalid", "fay"],
    ]);
    expect(refused[0]!.data).toMatchObject({ answerTruncated: true, answerDigest: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(JSON.stringify(refused[0]!.data).length).toBeLessThan(20_000);
    // A thread that waits for nobody gets no record from a stranger's payload.
    await expect(s.agent.invoke(new Command({ resume: deep }), config("deep-unknown", "sam"))).rejects.toMatchObject({ code: "approval_resume_invalid" });
    expect(await s.auditLog.read("deep-unknown")).toEqual([]);
    // The request still stands, and sam's answer is acted on.
    await s.agent.invoke(new Command({ resume: approve(request) }), config("deep-1", "sam"));
    expect(s.refunds().map((r) => r.amount)).toEqual([740]);
    expect(await s.auditLog.verify("deep-1")).toMatchObject({ ok: true });
  });

  it("a refused answer of megabytes is audited truncated, with the digest of the whole answer", async () => {
    const { app, auditLog } = ownGraph({ orderId: "1042", amount: 740 });
    const request = pendingApproval(await app.invoke(start, cfg()))!;
    // fay (finance) may not approve refunds; her answer carries 5 MB of text.
    const answer = { decisions: [{ ...approve(request).decisions[0]!, message: "please refund ".repeat(360_000) }] };
    await expect(app.invoke(new Command({ resume: answer }), cfg("fay"))).rejects.toMatchObject({ code: "approval_unauthorized" });
    const [refused] = (await auditLog.read("h1")).filter((e) => e.type === "approval.refused");
    expect(refused!.data).toMatchObject({ code: "approval_unauthorized", answerTruncated: true, answerDigest: sha256Hex(canonicalJson(answer)) });
    expect(JSON.stringify(refused!.data).length).toBeLessThan(20_000);
    const kept = refused!.data.answer as { decisions: { toolCallId: string; message: string }[] };
    expect(kept.decisions[0]!.toolCallId).toBe("c1");
    expect(kept.decisions[0]!.message).toMatch(/^please refund please refund .*…\[5040000 characters\]$/);
  });

  it("a refused answer is never cut inside a token: no partial card number is left for redaction to miss", async () => {
    const { app, auditLog } = ownGraph({ orderId: "1042", amount: 740 });
    const request = pendingApproval(await app.invoke(start, cfg()))!;
    // The card number straddles the cut (at 500 characters).
    const message = `${"note ".repeat(98)}4111 1111 1111 1111 ${"and more ".repeat(100)}`;
    const answer = { decisions: [{ ...approve(request).decisions[0]!, message }] };
    await expect(app.invoke(new Command({ resume: answer }), cfg("fay"))).rejects.toMatchObject({ code: "approval_unauthorized" });
    const [refused] = (await auditLog.read("h1")).filter((e) => e.type === "approval.refused");
    const kept = (refused!.data.answer as { decisions: { message: string }[] }).decisions[0]!.message;
    expect(kept).toBe(`${"note ".repeat(98)}…[${message.length} characters]`);
    expect(kept).not.toMatch(/4111|1111/);
  });

  it("a small refused answer is audited as it was given", async () => {
    const { app, auditLog } = ownGraph({ orderId: "1042", amount: 740 });
    const request = pendingApproval(await app.invoke(start, cfg()))!;
    const answer = approve(request);
    await expect(app.invoke(new Command({ resume: answer }), cfg("fay"))).rejects.toMatchObject({ code: "approval_unauthorized" });
    const [refused] = (await auditLog.read("h1")).filter((e) => e.type === "approval.refused");
    expect(refused!.data).toMatchObject({ answer, answerTruncated: false, answerDigest: sha256Hex(canonicalJson(answer)) });
  });
});
