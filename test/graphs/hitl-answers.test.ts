/**
 * LangChain's HITL protocol on eart's approval interrupt: the request fields in both spellings
 * (LangChain JS `HITLRequest`, Agent Chat UI's snake_case), and positional answers translated by
 * position into eart's keyed answer and checked by the one approval validator. Driven through the
 * prebuilt refund agent (a compiled graph with a checkpointer), asserting on the refunds table and
 * the audit log; tried as an attacker too.
 */
import { AIMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { definePolicy, MemoryAuditLog, pendingApproval, toHitlRequest, toolCallDigest, type AuditEvent, type AuditEventInput, type HITLRequest, type HITLResponse } from "eart";
import { continueThread, defineApp, unfinishedThreads } from "eart/graphs";
import { keyedFromPositional } from "../../src/human-tasks/hitl.js";
import { answersTo, ask, config, lookup, refund, refundSetup } from "../support/refund.js";

type Setup = ReturnType<typeof refundSetup>;

const codeOf = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (error) {
    return (error as { code?: string }).code ?? String(error);
  }
  return "no error";
};

/** The raw value of the one interrupt a paused run returned: what a HITL UI reads. */
function interruptValue(result: unknown): Record<string, unknown> {
  const interrupts = (result as { __interrupt__?: { value?: unknown }[] }).__interrupt__ ?? [];
  expect(interrupts).toHaveLength(1);
  return interrupts[0]!.value as Record<string, unknown>;
}

/** What LangGraph holds for a thread, to prove a refused answer changed nothing. */
const held = async (s: Setup, threadId: string) => {
  const state = await s.agent.getState(config(threadId));
  return JSON.stringify({ values: state.values, interrupts: state.tasks.flatMap((t) => t.interrupts ?? []).map((i) => (i as { value?: unknown }).value) });
};

const resume = (value: unknown) => new Command({ resume: value });
const typesOf = (events: AuditEvent[]) => events.map((e) => e.type);
const HITL_KEYS = ["actionRequests", "reviewConfigs", "action_requests", "review_configs"];

async function paused(turns: Parameters<typeof refundSetup>[0], threadId: string, opts: Parameters<typeof refundSetup>[1] = {}) {
  const s = refundSetup(turns, opts);
  const result = await s.agent.invoke(ask(), config(threadId));
  const request = pendingApproval(result)!;
  expect(request).toBeDefined();
  return { ...s, result, request };
}

describe("the approval interrupt carries LangChain's HITL request fields", () => {
  it("in both spellings, field for field, one per pending call in the order of the requests; allowed calls are not in it", async () => {
    // The lookup is allowed and runs; the two refunds wait, in the order the model proposed them.
    const { result, request, auditLog, refunds } = await paused([[lookup("l1"), refund("c1", 740), refund("c2", 250, "1043")]], "h-shape");
    expect(refunds()).toEqual([]);
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["c1", "c2"]);
    const value = interruptValue(result);
    const description = "Refunds over $100 up to $5,000 need a supervisor\nApprover roles: supervisor";
    const actions = [
      { name: "issue_refund", args: { orderId: "1042", amount: 740 }, description },
      { name: "issue_refund", args: { orderId: "1043", amount: 250 }, description },
    ];
    expect(value.actionRequests).toEqual(actions);
    expect(value.action_requests).toEqual(actions);
    expect(value.reviewConfigs).toEqual([
      { actionName: "issue_refund", allowedDecisions: ["approve", "edit", "reject"] },
      { actionName: "issue_refund", allowedDecisions: ["approve", "edit", "reject"] },
    ]);
    expect(value.review_configs).toEqual([
      { action_name: "issue_refund", allowed_decisions: ["approve", "edit", "reject"] },
      { action_name: "issue_refund", allowed_decisions: ["approve", "edit", "reject"] },
    ]);
    // Field for field: no key LangChain's ActionRequest / ReviewConfig (or Agent Chat UI's) lacks.
    for (const a of [...(value.actionRequests as object[]), ...(value.action_requests as object[])]) expect(Object.keys(a).sort()).toEqual(["args", "description", "name"]);
    for (const c of value.reviewConfigs as object[]) expect(Object.keys(c).sort()).toEqual(["actionName", "allowedDecisions"]);
    for (const c of value.review_configs as object[]) expect(Object.keys(c).sort()).toEqual(["action_name", "allowed_decisions"]);
    // The HITL view is typed as LangChain's HITLRequest; eart's own fields stay beside it.
    const hitl: HITLRequest = { actionRequests: value.actionRequests as HITLRequest["actionRequests"], reviewConfigs: value.reviewConfigs as HITLRequest["reviewConfigs"] };
    expect(hitl.actionRequests.map((a) => a.args)).toEqual(request.requests.map((r) => r.args));
    expect(value).toMatchObject({ type: "eart.approval", threadId: "h-shape", roles: ["supervisor"] });
    // pendingApproval reads the whole interrupt value; toHitlRequest gives the same HITL view of
    // a request read without it (from the audit log, below).
    expect(request).toEqual(value);
    expect(toHitlRequest(request)).toEqual(Object.fromEntries(HITL_KEYS.map((k) => [k, value[k]])));
    // The audit log keeps eart's request only: the HITL fields duplicate it.
    const requested = (await auditLog.read("h-shape")).filter((e) => e.type === "approval.requested");
    expect(requested).toHaveLength(1);
    for (const key of HITL_KEYS) expect(requested[0]!.data).not.toHaveProperty(key);
    expect(requested[0]!.data.requests).toEqual(request.requests);
    expect(toHitlRequest(requested[0]!.data as { requests: typeof request.requests })).toEqual(Object.fromEntries(HITL_KEYS.map((k) => [k, value[k]])));
  });

  it("describes quorum and expiry, and offers no positional approve of a call an approver edited since it was asked about", async () => {
    const quorum = definePolicy({
      name: "refunds-quorum",
      rules: [
        { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
        { id: "refund.two", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"], quorum: 2, expiresIn: 60_000, reason: "Refunds need two supervisors" },
      ],
    });
    const at = new Date("2026-01-01T10:00:00.000Z");
    const { request, agent, refunds } = await paused([[refund("c1", 740)]], "h-quorum", { policy: quorum, clock: () => at });
    expect(toHitlRequest(request).actionRequests[0]!.description).toBe("Refunds need two supervisors\nApprover roles: supervisor\nApprovals needed: 2 (so far: none)\nExpires at: 2026-01-01T10:01:00.000Z");
    // sam edits the refund to $4,999: a quorum call, so it waits for a second supervisor.
    const edit: HITLResponse = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 4999 } } }] };
    const afterEdit = await agent.invoke(resume(edit), config("h-quorum", "sam"));
    const again = pendingApproval(afterEdit)!;
    const hitl = interruptValue(afterEdit);
    expect(again.requests[0]).toMatchObject({ args: { orderId: "1042", amount: 4999 }, approvedBy: ["sam"], originalDigest: request.requests[0]!.digest });
    expect(hitl.reviewConfigs).toEqual([{ actionName: "issue_refund", allowedDecisions: ["edit", "reject"] }]);
    expect(hitl.review_configs).toEqual([{ action_name: "issue_refund", allowed_decisions: ["edit", "reject"] }]);
    expect((hitl.action_requests as { description: string }[])[0]!.description).toContain("Edited by an approver since it was requested");
    // sue, whose HITL UI still shows $740, clicks approve: a positional approve cannot show it saw
    // the edit, so it does not complete the quorum for $4,999.
    expect(await codeOf(agent.invoke(resume({ decisions: [{ type: "approve" }] }), config("h-quorum", "sue")))).toBe("approval_digest_mismatch");
    expect(refunds()).toEqual([]);
    // A keyed approve with the digest of the call as edited does.
    await agent.invoke(resume({ decisions: [{ toolCallId: "c1", type: "approve", digest: again.requests[0]!.digest }] }), config("h-quorum", "sue"));
    expect(refunds()).toEqual([{ orderId: "1042", amount: 4999, toolCallId: "c1" }]);
  });

  it("a positional decision of a type the review config does not offer is refused by the translation (edit: approval_edit_not_permitted)", () => {
    const digest = toolCallDigest("issue_refund", { orderId: "1042", amount: 740 }, "t");
    const target = { toolCallId: "c1", name: "issue_refund", digest, allowedDecisions: ["approve", "reject"] as const };
    const edit = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { amount: 1 } } }] };
    expect(() => keyedFromPositional(edit, [target])).toThrow(expect.objectContaining({ code: "approval_edit_not_permitted", toolCallId: "c1" }));
    expect(() => keyedFromPositional({ decisions: [{ type: "approve" }] }, [{ ...target, allowedDecisions: ["reject"] }])).toThrow(expect.objectContaining({ code: "approval_resume_invalid" }));
    expect(keyedFromPositional({ decisions: [{ type: "approve" }] }, [target])).toEqual({ decisions: [{ toolCallId: "c1", type: "approve", digest }] });
  });
});

describe("HITL answers run through the one approval validator", () => {
  it("an approve by the authorised supervisor runs the refund once, and the same answer again runs nothing", async () => {
    const { agent, refunds, auditLog, request } = await paused([[refund("c1", 740)]], "h-approve");
    await agent.invoke(resume({ decisions: [{ type: "approve" }] }), config("h-approve", "sam"));
    expect(refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    const decided = (await auditLog.read("h-approve")).filter((e) => e.type === "approval.decided");
    expect(decided.map((e) => e.data)).toEqual([
      expect.objectContaining({ toolCallId: "c1", decision: "approve", approverId: "sam", authenticatedBy: "configurable.user_id", digest: request.requests[0]!.digest, status: "approved" }),
    ]);
    // Used once: the thread moved on, so the same answer finds nothing to answer.
    expect(await codeOf(agent.invoke(resume({ decisions: [{ type: "approve" }] }), config("h-approve", "sam")))).toBe("thread_not_paused");
    expect(refunds()).toHaveLength(1);
    expect((await auditLog.read("h-approve")).filter((e) => e.type === "tool.started")).toHaveLength(1);
    expect(await auditLog.verify("h-approve")).toMatchObject({ ok: true });
  });

  it("an edit is evaluated by policy again: past the limit it is refused and nothing runs; within it the edited call runs (either spelling)", async () => {
    const s = await paused([[refund("c1", 740)]], "h-edit");
    const before = await held(s, "h-edit");
    const tooMuch = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 6000 } } }] };
    expect(await codeOf(s.agent.invoke(resume(tooMuch), config("h-edit", "sam")))).toBe("approval_edit_not_permitted");
    // Arguments the tool's schema refuses are refused the same way.
    const invalid = { decisions: [{ type: "edit", edited_action: { name: "issue_refund", args: { orderId: "1042", amount: "lots" } } }] };
    expect(await codeOf(s.agent.invoke(resume(invalid), config("h-edit", "sam")))).toBe("approval_edit_not_permitted");
    expect(s.refunds()).toEqual([]);
    expect(await held(s, "h-edit")).toBe(before);
    const refusals = (await s.auditLog.read("h-edit")).filter((e) => e.type === "approval.refused");
    expect(refusals.map((e) => e.data.code)).toEqual(["approval_edit_not_permitted", "approval_edit_not_permitted"]);
    expect(refusals[0]!.data.answer).toEqual(tooMuch);

    // Agent Chat UI's spelling: edited_action.
    const fine = { decisions: [{ type: "edit", edited_action: { name: "issue_refund", args: { orderId: "1042", amount: 500 } } }] };
    const done = await s.agent.invoke(resume(fine), config("h-edit", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 500, toolCallId: "c1" }]);
    // The history shows the call that ran, and the decision records the original digest.
    const proposing = (done.messages as BaseMessage[]).filter((m) => AIMessage.isInstance(m) && (m.tool_calls?.length ?? 0) > 0);
    expect((proposing.at(-1) as AIMessage).tool_calls![0]!.args).toEqual({ orderId: "1042", amount: 500 });
    const decided = (await s.auditLog.read("h-edit")).find((e) => e.type === "approval.decided")!;
    expect(decided.data).toMatchObject({ decision: "edit", originalDigest: s.request.requests[0]!.digest, digest: toolCallDigest("issue_refund", { orderId: "1042", amount: 500 }, "h-edit") });
  });

  it("decisions bind by position: a reject with a message answers only its own call, the approve beside it runs", async () => {
    const { agent, refunds } = await paused([[refund("c1", 740), refund("c2", 250, "1043")]], "h-order");
    const result = await agent.invoke(resume({ decisions: [{ type: "reject", message: "duplicate of an earlier refund" }, { type: "approve" }] }), config("h-order", "sam"));
    expect(refunds()).toEqual([{ orderId: "1043", amount: 250, toolCallId: "c2" }]);
    const toC1 = answersTo(result.messages as BaseMessage[], "c1");
    expect(toC1.map((m: ToolMessage) => [m.content, m.status])).toEqual([["Rejected by sam: duplicate of an earlier refund", "error"]]);
    expect(answersTo(result.messages as BaseMessage[], "c2").map((m: ToolMessage) => m.status)).toEqual(["success"]);
  });

  it("refuses a wrong number of decisions, keyed and positional items mixed, unknown keys and types; nothing runs and the request stands", async () => {
    const s = await paused([[refund("c1", 740), refund("c2", 250, "1043")]], "h-bad");
    const before = await held(s, "h-bad");
    const digest = s.request.requests[0]!.digest;
    const edited = { name: "issue_refund", args: { orderId: "1042", amount: 90 } };
    const cases: [string, unknown, string][] = [
      ["one decision for two calls", { decisions: [{ type: "approve" }] }, "approval_decisions_mismatch"],
      ["three decisions for two calls", { decisions: [{ type: "approve" }, { type: "approve" }, { type: "approve" }] }, "approval_decisions_mismatch"],
      ["keyed and positional mixed", { decisions: [{ toolCallId: "c1", type: "approve", digest }, { type: "approve" }] }, "approval_resume_invalid"],
      ["a positional item with only a digest", { decisions: [{ type: "approve", digest }, { type: "approve" }] }, "approval_resume_invalid"],
      ["an unknown key on an approve", { decisions: [{ type: "approve", toolCall: "c2" }, { type: "approve" }] }, "approval_resume_invalid"],
      ["a token on a positional decision", { decisions: [{ type: "approve", token: "x.y.z" }, { type: "approve" }] }, "approval_resume_invalid"],
      ["eart's args on a positional edit", { decisions: [{ type: "edit", args: edited.args }, { type: "approve" }] }, "approval_resume_invalid"],
      ["both spellings of the edited action", { decisions: [{ type: "edit", editedAction: edited, edited_action: edited }, { type: "approve" }] }, "approval_resume_invalid"],
      ["an edit without its action", { decisions: [{ type: "edit" }, { type: "approve" }] }, "approval_resume_invalid"],
      ["an unknown key in the edited action", { decisions: [{ type: "edit", editedAction: { ...edited, id: "c2" } }, { type: "approve" }] }, "approval_resume_invalid"],
      ["a respond (not a HITL decision)", { decisions: [{ type: "respond", message: "no" }, { type: "approve" }] }, "approval_resume_invalid"],
      ["Agent Inbox's accept", { decisions: [{ type: "accept", args: null }, { type: "approve" }] }, "approval_resume_invalid"],
      ["a message that is not text", { decisions: [{ type: "reject", message: 5 }, { type: "approve" }] }, "approval_resume_invalid"],
      ["an unknown key beside decisions", { decisions: [{ type: "approve" }, { type: "approve" }], approveAll: true }, "approval_resume_invalid"],
      ["a '__proto__' member beside the decisions", JSON.parse('{"decisions":[{"type":"approve"},{"type":"approve"}],"__proto__":{"approver":{"id":"sam"}}}'), "approval_resume_invalid"],
      ["an edit that makes it another tool's call", { decisions: [{ type: "edit", editedAction: { name: "lookup_order", args: { orderId: "1042" } } }, { type: "approve" }] }, "approval_edit_not_permitted"],
    ];
    for (const [label, answer, code] of cases) {
      expect([label, await codeOf(s.agent.invoke(resume(answer), config("h-bad", "sam")))]).toEqual([label, code]);
    }
    expect(s.refunds()).toEqual([]);
    expect(await held(s, "h-bad")).toBe(before);
    const events = await s.auditLog.read("h-bad");
    expect(events.filter((e) => e.type === "approval.refused")).toHaveLength(cases.length);
    expect(events.filter((e) => e.type === "approval.decided")).toEqual([]);
    // The right answer still works.
    await s.agent.invoke(resume({ decisions: [{ type: "approve" }, { type: "reject" }] }), config("h-bad", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
  });

  it("who may answer is unchanged: the customer, the agent, a colleague without the role, nobody, and a named approver who is not the sender are refused", async () => {
    const s = await paused([[refund("c1", 740)]], "h-who");
    const approve = { decisions: [{ type: "approve" }] };
    const ownEdit = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 99 } } }] };
    expect(await codeOf(s.agent.invoke(resume(approve), config("h-who", "cara")))).toBe("approval_self_approval");
    expect(await codeOf(s.agent.invoke(resume(ownEdit), config("h-who", "cara")))).toBe("approval_self_approval");
    expect(await codeOf(s.agent.invoke(resume(approve), config("h-who", "support-agent")))).toBe("approval_self_approval");
    // On LangGraph server the authenticated user wins over a user_id the client slipped in.
    expect(await codeOf(s.agent.invoke(resume(approve), config("h-who", "sam", { langgraph_auth_user: { identity: "cara" } })))).toBe("approval_self_approval");
    expect(await codeOf(s.agent.invoke(resume(approve), config("h-who", "fay")))).toBe("approval_unauthorized");
    expect(await codeOf(s.agent.invoke(resume(approve), { configurable: { thread_id: "h-who" } }))).toBe("approval_unauthenticated");
    expect(await codeOf(s.agent.invoke(resume({ ...approve, approver: { id: "sam" } }), config("h-who", "cara")))).toBe("approval_principal_mismatch");
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(resume(approve), config("h-who", "sam"));
    expect(s.refunds()).toHaveLength(1);
  });

  it("an answer keyed by the interrupt it answers binds a HITL answer to that pause; a stale interrupt id is refused", async () => {
    const quorum = definePolicy({
      name: "q",
      rules: [
        { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
        { id: "refund.two", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"], quorum: 2 },
      ],
    });
    const s = await paused([[refund("c1", 740)]], "h-keyed-id", { policy: quorum });
    const interruptId = (result: unknown) => (result as { __interrupt__: { id: string }[] }).__interrupt__[0]!.id;
    const firstId = interruptId(s.result);
    const afterSam = await s.agent.invoke(resume({ [firstId]: { decisions: [{ type: "approve" }] } }), config("h-keyed-id", "sam"));
    const secondId = interruptId(afterSam);
    expect(secondId).not.toBe(firstId);
    // An answer given for the first pause does not land on the second.
    expect(await codeOf(s.agent.invoke(resume({ [firstId]: { decisions: [{ type: "approve" }] } }), config("h-keyed-id", "sue")))).toBe("approval_resume_invalid");
    expect(s.refunds()).toEqual([]);
    await s.agent.invoke(resume({ [secondId]: { decisions: [{ type: "approve" }] } }), config("h-keyed-id", "sue"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
  });
});

/** An audit log that fails right after recording an event of one type: a process that died there. */
class DiesAfter extends MemoryAuditLog {
  armed = true;
  dropRefusals = false;
  constructor(private readonly type: AuditEventInput["type"]) {
    super();
  }
  override async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
    if (this.dropRefusals && [events].flat().some((e) => e.type === "approval.refused")) throw new Error("the audit store is down");
    const stored = await super.append(events);
    if (this.armed && stored.some((e) => e.type === this.type)) {
      this.armed = false;
      throw new Error(`the process died after ${this.type}`);
    }
    return stored;
  }
}

describe("a HITL answer recorded before a crash is continued, not asked again", () => {
  it("continueThread acts on the recorded positional answer once", async () => {
    const auditLog = new DiesAfter("approval.decided");
    const s = await paused([[refund("c1", 740), refund("c2", 250, "1043")]], "h-crash", { auditLog });
    const answer = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 700 } } }, { type: "reject", message: "no" }] };
    await expect(s.agent.invoke(resume(answer), config("h-crash", "sam"))).rejects.toThrow("the process died after approval.decided");
    expect(pendingApproval(await s.agent.getState(config("h-crash")))).toBeDefined();
    const app = defineApp({ auditLog, graphs: { "support-agent": s.agent } });
    expect(await unfinishedThreads(app)).toEqual([expect.objectContaining({ threadId: "h-crash", kind: "answered", answeredBy: "sam" })]);
    const run = await continueThread(app, "h-crash");
    expect(run.approval).toBeUndefined();
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 700, toolCallId: "c1" }]);
    expect(typesOf(await auditLog.read("h-crash")).filter((t) => t === "tool.started")).toHaveLength(1);
    expect(await unfinishedThreads(app)).toEqual([]);
  });

  it("the recorded approver's own continue (invoke(null)) goes through the resume guard", async () => {
    const auditLog = new DiesAfter("approval.decided");
    const s = await paused([[refund("c1", 740)]], "h-crash-null", { auditLog });
    await expect(s.agent.invoke(resume({ decisions: [{ type: "approve" }] }), config("h-crash-null", "sam"))).rejects.toThrow();
    await s.agent.invoke(null, config("h-crash-null", "sam"));
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
  });

  it("a positional answer stored after the recorded one (its refusal never recorded) is not continued as the recorded approver's", async () => {
    const auditLog = new DiesAfter("approval.decided");
    const s = await paused([[refund("c1", 740)]], "h-crash-forged", { auditLog });
    await expect(s.agent.invoke(resume({ decisions: [{ type: "approve" }] }), config("h-crash-forged", "sam"))).rejects.toThrow();
    const edit = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 4900 } } }] };
    // Through the guard, the customer's own edit is refused before LangGraph stores it: sam's stands.
    expect(await codeOf(s.agent.invoke(resume(edit), config("h-crash-forged", "cara")))).toBe("approval_already_answered");
    // Past the guard (LangGraph's own stream, as an insider): refused by the gate, but the audit
    // store fails before the refusal is recorded, so LangGraph keeps her answer as the newest while
    // eart's log ends with sam's approval.
    auditLog.dropRefusals = true;
    const raw = (Object.getPrototypeOf(s.agent) as { stream: (i: unknown, c: unknown) => Promise<AsyncIterable<unknown>> }).stream;
    await expect((async () => { for await (const _ of await raw.call(s.agent, resume(edit), config("h-crash-forged", "cara"))) void _; })()).rejects.toThrow("the audit store is down");
    const app = defineApp({ auditLog, graphs: { "support-agent": s.agent } });
    await expect(continueThread(app, "h-crash-forged")).rejects.toMatchObject({ code: "state_tamper_detected" });
    expect(await codeOf(s.agent.invoke(null, config("h-crash-forged", "sam")))).toBe("thread_awaiting_approval");
    expect(s.refunds()).toEqual([]);
  });

  it("a redeployed agent over the same SQLite checkpointer and audit log continues the stored HITL answer", async () => {
    const checkpointer = new SqliteSaver(new Database(":memory:"));
    const auditLog = new DiesAfter("approval.decided");
    const s = await paused([[refund("c1", 740)]], "h-crash-redeploy", { auditLog, checkpointer });
    await expect(s.agent.invoke(resume({ decisions: [{ type: "approve" }] }), config("h-crash-redeploy", "sam"))).rejects.toThrow();
    const redeployed = refundSetup([[refund("c1", 740)]], { auditLog, checkpointer });
    const app = defineApp({ auditLog, graphs: { "support-agent": redeployed.agent } });
    await continueThread(app, "h-crash-redeploy");
    expect(redeployed.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(s.refunds()).toEqual([]);
  });
});

describe("allowedDecisions from policy", () => {
  const noEdit = definePolicy({
    name: "refunds-no-edit",
    rules: [
      { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
      { id: "refund.small", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) <= 100, effect: "allow" },
      {
        id: "refund.supervisor",
        tools: ["issue_refund"],
        when: (r) => Number(r.tool.args.amount) > 100,
        effect: "require_approval",
        approverRoles: ["supervisor"],
        allowedDecisions: ["approve", "reject"],
        reason: "Refunds over $100 need a supervisor, who may not change them",
      },
    ],
  });

  it("leaves edit out of the HITL review config and refuses an edit, keyed or positional, where the rule forbids it", async () => {
    const setup = refundSetup([[refund("c1", 740)]], { agent: { policy: noEdit } });
    const paused = await setup.agent.invoke(ask(), config("ad-1"));
    const value = (paused as { __interrupt__: { value: Record<string, unknown> }[] }).__interrupt__[0]!.value;
    const request = pendingApproval(paused)!;
    expect(request.requests[0]!.allowedDecisions).toEqual(["approve", "reject"]);
    expect(value.reviewConfigs).toEqual([{ actionName: "issue_refund", allowedDecisions: ["approve", "reject"] }]);
    expect(value.review_configs).toEqual([{ action_name: "issue_refund", allowed_decisions: ["approve", "reject"] }]);
    const { digest } = request.requests[0]!;
    const refusedWith = async (resume: unknown) => setup.agent.invoke(new Command({ resume }), config("ad-1", "sam")).then(() => "ran", (e: { code?: string }) => e.code);
    expect(await refusedWith({ decisions: [{ toolCallId: "c1", type: "edit", digest, args: { orderId: "1042", amount: 50 } }] })).toBe("approval_edit_not_permitted");
    expect(await refusedWith({ decisions: [{ type: "edit", edited_action: { name: "issue_refund", args: { orderId: "1042", amount: 50 } } }] })).toBe("approval_edit_not_permitted");
    expect(await refusedWith({ decisions: [{ toolCallId: "c1", type: "respond", digest, message: "store credit" }] })).toBe("approval_resume_invalid");
    expect(setup.refunds()).toEqual([]);
    await setup.agent.invoke(new Command({ resume: { decisions: [{ type: "approve" }] } }), config("ad-1", "sam"));
    expect(setup.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
  });

  it("is part of the policy version only where a rule sets it, and must include approve", () => {
    const same = definePolicy({ name: "p", rules: [{ id: "r", tools: ["t"], effect: "require_approval", approverRoles: ["a"] }] });
    const restricted = definePolicy({ name: "p", rules: [{ id: "r", tools: ["t"], effect: "require_approval", approverRoles: ["a"], allowedDecisions: ["approve", "reject"] }] });
    expect(restricted.version).not.toBe(same.version);
    expect(() => definePolicy({ name: "p", rules: [{ id: "r", tools: ["t"], effect: "require_approval", approverRoles: ["a"], allowedDecisions: ["reject"] }] })).toThrow(/must include "approve"/);
    expect(() => definePolicy({ name: "p", rules: [{ id: "r", tools: ["t"], effect: "allow", allowedDecisions: ["approve"] }] })).toThrow(/only a require_approval rule/);
  });
});
