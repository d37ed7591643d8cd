import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  ApprovalError,
  EartError,
  IdentityRegistry,
  isApprovalRequest,
  pendingApproval,
  toolCallDigest,
  validateApprovalResponse,
  type AgentIdentity,
  type ApprovalErrorCode,
  type ApprovalRequest,
  type DecisionRecord,
} from "eart";
import { ApprovalRequestSchema, ApprovalResponseSchema, buildApprovalRequest } from "../../src/human-tasks/approval.js";
import { authenticateHuman } from "../../src/human-tasks/protocol.js";
import { principalFromConfig } from "../../src/identity/registry.js";
import { canonicalJson, sha256Hex } from "../../src/internal/canonical.js";

const registry = IdentityRegistry.fromObject({
  roles: {
    customer: { tools: ["lookup_order", "issue_refund"] },
    supervisor: { tools: ["*"] },
    finance: { tools: ["*"] },
  },
  agents: [{ id: "support-agent", roles: ["support"], tools: ["lookup_order", "issue_refund", "close_account"], dataScopes: ["orders"] }],
  users: [
    { id: "cara", roles: ["customer"] },
    { id: "omar", roles: ["customer"] },
    { id: "sam", roles: ["supervisor"] },
    { id: "fay", roles: ["finance"] },
    { id: "boss", roles: ["supervisor", "finance", "customer"] },
  ],
});
const identity = registry.resolve({ agentId: "support-agent", userId: "cara", source: "configurable.user_id" });

const THREAD = "thread-1";

const record = (toolCallId: string, name: string, args: Record<string, unknown>, approverRoles?: string[]): DecisionRecord => ({
  schemaVersion: 1,
  toolCallId,
  messageId: "msg-1",
  name,
  args,
  digest: toolCallDigest(name, args, THREAD),
  verdict: {
    effect: "require_approval",
    reasons: [`${name} needs approval`],
    policyIds: [`${name}.rule`],
    version: "a".repeat(64),
    ...(approverRoles ? { approverRoles } : {}),
  },
  status: "pending_approval",
  approvals: [],
  requestedBy: { agentId: "support-agent", userId: "cara" },
  decidedAt: "2024-01-01T00:00:00.000Z",
});

const refund = record("call_1", "issue_refund", { orderId: "1042", amount: 740 }, ["supervisor"]);
const close = record("call_2", "close_account", { accountId: "A-9" }, ["finance"]);
const request: ApprovalRequest = buildApprovalRequest(THREAD, [refund, close]);
const digest1 = request.requests[0]!.digest;
const digest2 = request.requests[1]!.digest;

/** Approves both pending calls with the digests of the request; no human named in the payload. */
const approveBoth = () => ({
  decisions: [
    { toolCallId: "call_1", type: "approve", digest: digest1 },
    { toolCallId: "call_2", type: "approve", digest: digest2 },
  ] as { toolCallId: string; type: string; digest?: unknown; message?: string; args?: Record<string, unknown> }[],
});

/**
 * Who answers: the resuming run's principal, from its configuration. `by` is the `user_id` of the
 * resume (`null`: a resume that names nobody, only the thread).
 */
const configOf = (by: string | null): Record<string, unknown> => (by === null ? { thread_id: THREAD } : { thread_id: THREAD, user_id: by });
const depsOf = (by: string | null, who: AgentIdentity = identity) => ({ registry, identity: who, principal: principalFromConfig(configOf(by)) });

function validate(raw: unknown, by: string | null = "boss", req: ApprovalRequest = request) {
  return validateApprovalResponse(raw, req, depsOf(by));
}

function refused(raw: unknown, code: ApprovalErrorCode, by: string | null = "boss", req: ApprovalRequest = request, who: AgentIdentity = identity): ApprovalError {
  let error: unknown;
  try {
    validateApprovalResponse(raw, req, depsOf(by, who));
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ApprovalError);
  expect(error).toBeInstanceOf(EartError);
  expect((error as ApprovalError).code).toBe(code);
  return error as ApprovalError;
}

describe("toolCallDigest", () => {
  it("is the sha256 of the RFC 8785 canonical JSON of {threadId, name, args}", () => {
    const args = { orderId: "1042", amount: 740, meta: { z: 1, a: [true, null, "x"] } };
    const canonical = '{"args":{"amount":740,"meta":{"a":[true,null,"x"],"z":1},"orderId":"1042"},"name":"issue_refund","threadId":"thread-1"}';
    expect(canonicalJson({ threadId: THREAD, name: "issue_refund", args })).toBe(canonical);
    const expected = createHash("sha256").update(canonical).digest("hex");
    expect(toolCallDigest("issue_refund", args, THREAD)).toBe(expected);
    expect(sha256Hex(canonical)).toBe(expected);
  });

  it("normalises numbers the RFC 8785 way", () => {
    expect(canonicalJson({ a: 1.0, b: 1e21, c: -0, d: 0.000001 })).toBe('{"a":1,"b":1e+21,"c":0,"d":0.000001}');
    expect(toolCallDigest("t", { n: 1.0 }, THREAD)).toBe(toolCallDigest("t", { n: 1 }, THREAD));
  });

  it("is independent of key order", () => {
    expect(toolCallDigest("issue_refund", { orderId: "1042", amount: 740, x: { b: 2, a: 1 } }, THREAD)).toBe(
      toolCallDigest("issue_refund", { x: { a: 1, b: 2 }, amount: 740, orderId: "1042" }, THREAD),
    );
  });

  it("changes with the name, any argument value or type", () => {
    const base = toolCallDigest("issue_refund", { orderId: "1042", amount: 740 }, THREAD);
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    expect(toolCallDigest("issue_refunds", { orderId: "1042", amount: 740 }, THREAD)).not.toBe(base);
    expect(toolCallDigest("issue_refund", { orderId: "1042", amount: 741 }, THREAD)).not.toBe(base);
    expect(toolCallDigest("issue_refund", { orderId: "1042", amount: "740" }, THREAD)).not.toBe(base);
    expect(toolCallDigest("issue_refund", { orderId: "1042" }, THREAD)).not.toBe(base);
  });

  it("changes with the thread: the same call on another thread has another digest", () => {
    const base = toolCallDigest("issue_refund", { orderId: "1042", amount: 740 }, THREAD);
    expect(toolCallDigest("issue_refund", { orderId: "1042", amount: 740 }, "thread-2")).not.toBe(base);
    // Without a thread there is no digest: one that fitted every thread would bind nothing.
    expect(() => toolCallDigest("issue_refund", { orderId: "1042", amount: 740 }, "")).toThrow(TypeError);
  });

  it("sha256Hex matches a known vector", () => {
    expect(sha256Hex("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});

describe("buildApprovalRequest and isApprovalRequest", () => {
  it("lists every pending call with its digest, roles and requester", () => {
    expect(request).toEqual({
      type: "eart.approval",
      threadId: THREAD,
      // The envelope every human task carries: requester, oldest wait, and who may answer (the
      // union of the calls' roles; each call's own roles decide it).
      requestedBy: { agentId: "support-agent", userId: "cara" },
      since: "2024-01-01T00:00:00.000Z",
      roles: ["supervisor", "finance"],
      requests: [
        {
          toolCallId: "call_1",
          name: "issue_refund",
          args: { orderId: "1042", amount: 740 },
          digest: toolCallDigest("issue_refund", { amount: 740, orderId: "1042" }, THREAD),
          reasons: ["issue_refund needs approval"],
          policyIds: ["issue_refund.rule"],
          policyVersion: "a".repeat(64),
          approverRoles: ["supervisor"],
          requestedBy: { agentId: "support-agent", userId: "cara" },
        },
        {
          toolCallId: "call_2",
          name: "close_account",
          args: { accountId: "A-9" },
          digest: toolCallDigest("close_account", { accountId: "A-9" }, THREAD),
          reasons: ["close_account needs approval"],
          policyIds: ["close_account.rule"],
          policyVersion: "a".repeat(64),
          approverRoles: ["finance"],
          requestedBy: { agentId: "support-agent", userId: "cara" },
        },
      ],
    });
    expect(ApprovalRequestSchema.safeParse(request).success).toBe(true);
    expect(isApprovalRequest(request)).toBe(true);
  });

  it("gives an empty approverRoles list when the verdict has none", () => {
    const r = buildApprovalRequest("t", [record("c", "x", {})]);
    expect(r.requests[0]!.approverRoles).toEqual([]);
  });

  it.each([
    ["null", null],
    ["a string", "eart.approval"],
    ["a wrong type tag", { ...request, type: "approval" }],
    ["no requests", { ...request, requests: [] }],
    ["a request without digest", { ...request, requests: [{ ...request.requests[0], digest: undefined }] }],
    ["no threadId", { type: "eart.approval", requests: request.requests }],
  ])("isApprovalRequest is false for %s", (_label, value) => {
    expect(isApprovalRequest(value)).toBe(false);
  });
});

describe("pendingApproval", () => {
  it("finds the request in invoke's __interrupt__", () => {
    const result = { messages: [], __interrupt__: [{ id: "i1", value: { other: true } }, { id: "i2", value: request }] };
    expect(pendingApproval(result)).toEqual(request);
  });

  it("finds the request in getState's tasks[].interrupts", () => {
    const state = { values: {}, tasks: [{ id: "t0", interrupts: [] }, { id: "t1", interrupts: [{ id: "i", value: request }] }] };
    expect(pendingApproval(state)).toEqual(request);
  });

  it("is undefined when nothing waits or the interrupts are not approvals", () => {
    expect(pendingApproval(undefined)).toBeUndefined();
    expect(pendingApproval(null)).toBeUndefined();
    expect(pendingApproval({ messages: [] })).toBeUndefined();
    expect(pendingApproval({ __interrupt__: [{ value: { type: "eart.escalation" } }], tasks: [{}] })).toBeUndefined();
    expect(pendingApproval({ __interrupt__: [null, {}] })).toBeUndefined();
  });
});

describe("ApprovalResponseSchema", () => {
  it("accepts approve, reject with a message, and edit with args, each with its digest; the approver is optional", () => {
    const decisions = [
      { toolCallId: "a", type: "approve", message: "ok", digest: "da" },
      { toolCallId: "b", type: "reject", message: "no", digest: "db" },
      { toolCallId: "c", type: "edit", args: { amount: 100 }, digest: "dc" },
    ];
    const parsed = ApprovalResponseSchema.parse({ decisions });
    expect(parsed.decisions.map((d) => d.type)).toEqual(["approve", "reject", "edit"]);
    expect(parsed.decisions[2]!.args).toEqual({ amount: 100 });
    expect(parsed.approver).toBeUndefined();
    expect(ApprovalResponseSchema.parse({ approver: { id: "sam" }, decisions }).approver).toEqual({ id: "sam" });
  });

  it("refuses a decision without a digest", () => {
    expect(ApprovalResponseSchema.safeParse({ decisions: [{ toolCallId: "a", type: "approve" }] }).success).toBe(false);
    expect(ApprovalResponseSchema.safeParse({ decisions: [{ toolCallId: "a", type: "approve", digest: "" }] }).success).toBe(false);
  });
});

describe("validateApprovalResponse", () => {
  it("accepts a valid response and returns it with the request items and the approver (the run's principal)", () => {
    const { response, items, approverId } = validate(approveBoth(), "boss");
    expect(response).toEqual(approveBoth());
    expect(approverId).toBe("boss");
    expect([...items.keys()]).toEqual(["call_1", "call_2"]);
    expect(items.get("call_1")).toEqual(request.requests[0]);
  });

  it("accepts a payload that names the principal as the approver (a cross-check that holds)", () => {
    const raw = { approver: { id: "boss" }, ...approveBoth() };
    const { response, approverId } = validate(raw, "boss");
    expect(response).toEqual(raw);
    expect(approverId).toBe("boss");
  });

  it("takes the principal from langgraph_auth_user before user_id", () => {
    const principal = principalFromConfig({ thread_id: THREAD, langgraph_auth_user: { identity: "boss" }, user_id: "cara" });
    expect(validateApprovalResponse(approveBoth(), request, { registry, identity, principal }).approverId).toBe("boss");
  });

  it("accepts decisions in any order, with matching digests, edits and rejects", () => {
    const raw = {
      decisions: [
        { toolCallId: "call_2", type: "reject", message: "not today", digest: digest2 },
        { toolCallId: "call_1", type: "edit", args: { orderId: "1042", amount: 100 }, digest: digest1 },
      ],
    };
    expect(validate(raw, "boss").response).toEqual(raw);
  });

  it("accepts an approver holding one of each call's roles", () => {
    const single = buildApprovalRequest(THREAD, [refund]);
    const raw = { decisions: [{ toolCallId: "call_1", type: "approve", digest: digest1 }] };
    expect(validate(raw, "sam", single).approverId).toBe("sam");
  });

  describe("malformed → approval_resume_invalid", () => {
    const d1 = { toolCallId: "call_1", type: "approve", digest: digest1 };
    const d2 = { toolCallId: "call_2", type: "approve", digest: digest2 };
    it.each([
      ["not an object", "approve", ["(root)"]],
      ["null", null, []],
      ["missing digest", { decisions: [{ toolCallId: "call_1", type: "approve" }, d2] }, ["decisions", "0", "digest"]],
      ["empty digest", { decisions: [d1, { ...d2, digest: "" }] }, ["decisions", "1", "digest"]],
      ["approver without id", { approver: {}, decisions: [d1, d2] }, ["approver", "id"]],
      ["approver with empty id", { approver: { id: "" }, decisions: [d1, d2] }, ["approver", "id"]],
      ["approver as a string", { approver: "boss", decisions: [d1, d2] }, ["approver"]],
      ["extra key on approver", { approver: { id: "boss", roles: ["supervisor"] }, decisions: [d1, d2] }, ["approver"]],
      ["extra top-level key", { ...approveBoth(), force: true }, []],
      ["missing decisions", { approver: { id: "boss" } }, ["decisions"]],
      ["empty decisions", { decisions: [] }, ["decisions"]],
      ["unknown decision type", { decisions: [{ ...d1, type: "accept" }, d2] }, ["decisions", "0", "type"]],
      ["edit without args", { decisions: [{ ...d1, type: "edit" }, d2] }, ["decisions", "0", "args"]],
      ["args on approve", { decisions: [{ ...d1, args: { amount: 1 } }, d2] }, ["decisions", "0", "args"]],
      ["args on reject", { decisions: [d1, { ...d2, type: "reject", args: {} }] }, ["decisions", "1", "args"]],
      ["extra key on a decision", { decisions: [d1, { ...d2, approvedBy: "sam" }] }, ["decisions", "1"]],
      ["empty toolCallId", { decisions: [{ ...d1, toolCallId: "" }, d2] }, ["decisions", "0", "toolCallId"]],
      ["numeric digest", { decisions: [{ ...d1, digest: 1 }, d2] }, ["decisions", "0", "digest"]],
    ])("%s", (_label, raw, pathPrefix) => {
      const e = refused(raw, "approval_resume_invalid");
      expect(e.message).toMatch(/^Malformed approval response at /);
      const path = e.details.path as string[];
      expect(Array.isArray(path)).toBe(true);
      if (pathPrefix[0] !== "(root)") expect(path.slice(0, pathPrefix.length)).toEqual(pathPrefix);
    });

    it("is checked first: before who answers", () => {
      refused({ decisions: [{ toolCallId: "call_1", type: "approve" }, d2] }, "approval_resume_invalid", null);
      refused({ approver: { id: "sam" }, decisions: [{ ...d1, type: "accept" }, d2] }, "approval_resume_invalid", "cara");
    });
  });

  describe("decisions that do not match the request → approval_decisions_mismatch", () => {
    it("a decision for an unknown tool call", () => {
      const raw = approveBoth();
      raw.decisions.push({ toolCallId: "call_9", type: "approve", digest: digest1 });
      const e = refused(raw, "approval_decisions_mismatch");
      expect(e.toolCallId).toBe("call_9");
      expect(e.details.pending).toEqual(["call_1", "call_2"]);
    });

    it("two decisions for the same call", () => {
      const raw = approveBoth();
      raw.decisions.push({ toolCallId: "call_1", type: "reject", digest: digest1 });
      const e = refused(raw, "approval_decisions_mismatch");
      expect(e.toolCallId).toBe("call_1");
      expect(e.message).toContain("More than one decision");
    });

    it("a pending call without a decision", () => {
      const raw = { decisions: [{ toolCallId: "call_2", type: "approve", digest: digest2 }] };
      const e = refused(raw, "approval_decisions_mismatch");
      expect(e.toolCallId).toBe("call_1");
      expect(e.details.missing).toEqual(["call_1"]);
    });

    it("is checked before who answers", () => {
      const raw = { decisions: [{ toolCallId: "call_2", type: "approve", digest: digest2 }] };
      refused(raw, "approval_decisions_mismatch", null);
      refused({ approver: { id: "sam" }, ...raw }, "approval_decisions_mismatch", "cara");
    });
  });

  describe("no principal on the resume → approval_unauthenticated", () => {
    it("a resume whose configuration names only the thread", () => {
      const e = refused(approveBoth(), "approval_unauthenticated", null);
      expect(e.details).toEqual({});
    });

    it("even when the payload names an approver who could approve", () => {
      const e = refused({ approver: { id: "boss" }, ...approveBoth() }, "approval_unauthenticated", null);
      expect(e.details.named).toBe("boss");
    });

    it("an empty user_id is nobody", () => {
      expect(principalFromConfig({ thread_id: THREAD, user_id: "" })).toBeUndefined();
      refused(approveBoth(), "approval_unauthenticated", "");
    });

    it("is checked before the digests", () => {
      const raw = approveBoth();
      raw.decisions[0]!.digest = toolCallDigest("issue_refund", { orderId: "1042", amount: 7400 }, THREAD);
      refused(raw, "approval_unauthenticated", null);
    });
  });

  describe("a payload naming someone other than the principal → approval_principal_mismatch", () => {
    it("a principal who could approve, naming another approver", () => {
      const e = refused({ approver: { id: "sam" }, ...approveBoth() }, "approval_principal_mismatch", "boss");
      expect(e.details).toEqual({ approverId: "boss", named: "sam" });
    });

    it("a principal without the roles cannot borrow them by naming an approver who has them", () => {
      const e = refused({ approver: { id: "boss" }, ...approveBoth() }, "approval_principal_mismatch", "omar");
      expect(e.details).toEqual({ approverId: "omar", named: "boss" });
    });

    it("the requester naming a supervisor is refused as a mismatch, before self-approval", () => {
      const e = refused({ approver: { id: "boss" }, ...approveBoth() }, "approval_principal_mismatch", "cara");
      expect(e.details).toEqual({ approverId: "cara", named: "boss" });
    });

    it("is checked before the digests", () => {
      const raw = { approver: { id: "sam" }, ...approveBoth() };
      raw.decisions[1]!.digest = digest1;
      refused(raw, "approval_principal_mismatch", "boss");
    });
  });

  describe("self-approval → approval_self_approval", () => {
    it("the user the agent acts for", () => {
      const e = refused(approveBoth(), "approval_self_approval", "cara");
      expect(e.details.approverId).toBe("cara");
    });

    it("the user the agent acts for, naming themselves in the payload", () => {
      const e = refused({ approver: { id: "cara" }, ...approveBoth() }, "approval_self_approval", "cara");
      expect(e.details.approverId).toBe("cara");
    });

    it("the user the agent acts for, even if they held an approver role", () => {
      const bossIdentity = registry.resolve({ agentId: "support-agent", userId: "boss", source: "configurable.user_id" });
      const e = refused(approveBoth(), "approval_self_approval", "boss", request, bossIdentity);
      expect(e.details.approverId).toBe("boss");
    });

    it("the agent itself", () => {
      const e = refused(approveBoth(), "approval_self_approval", "support-agent");
      expect(e.details.approverId).toBe("support-agent");
    });
  });

  describe("unauthorised approver → approval_unauthorized", () => {
    it("an unknown approver", () => {
      const e = refused(approveBoth(), "approval_unauthorized", "mallory");
      expect(e.details.approverId).toBe("mallory");
    });

    it("an approver with none of the roles", () => {
      const e = refused(approveBoth(), "approval_unauthorized", "omar");
      expect(e.toolCallId).toBe("call_1");
      expect(e.details.approverRoles).toEqual(["supervisor"]);
    });

    it("an approver holding the roles of one call but not of the other", () => {
      const e = refused(approveBoth(), "approval_unauthorized", "sam");
      expect(e.toolCallId).toBe("call_2");
      expect(e.details).toMatchObject({ approverId: "sam", approverRoles: ["finance"] });
    });

    it("an approver for a call that names no approver roles", () => {
      const c1 = record("c1", "x", {});
      const noRoles = buildApprovalRequest(THREAD, [c1]);
      const e = refused({ decisions: [{ toolCallId: "c1", type: "approve", digest: c1.digest }] }, "approval_unauthorized", "boss", noRoles);
      expect(e.toolCallId).toBe("c1");
    });

    it("is checked before the digests", () => {
      const raw = approveBoth();
      raw.decisions[0]!.digest = digest2;
      refused(raw, "approval_unauthorized", "omar");
    });
  });

  describe("digest → approval_digest_mismatch", () => {
    it("a digest of a different call", () => {
      const other = toolCallDigest("issue_refund", { orderId: "1042", amount: 7400 }, THREAD);
      const raw = {
        decisions: [
          { toolCallId: "call_1", type: "approve", digest: other },
          { toolCallId: "call_2", type: "approve", digest: digest2 },
        ],
      };
      const e = refused(raw, "approval_digest_mismatch");
      expect(e.toolCallId).toBe("call_1");
      expect(e.details.expected).toBe(digest1);
      expect(e.details.found).toBe(other);
    });

    it("the digest of the other pending call", () => {
      const raw = {
        decisions: [
          { toolCallId: "call_1", type: "approve", digest: digest1 },
          { toolCallId: "call_2", type: "approve", digest: digest1 },
        ],
      };
      expect(refused(raw, "approval_digest_mismatch").toolCallId).toBe("call_2");
    });

    it("the digest of the same call on another thread", () => {
      const elsewhere = toolCallDigest("issue_refund", { orderId: "1042", amount: 740 }, "thread-2");
      const raw = {
        decisions: [
          { toolCallId: "call_1", type: "approve", digest: elsewhere },
          { toolCallId: "call_2", type: "approve", digest: digest2 },
        ],
      };
      const e = refused(raw, "approval_digest_mismatch");
      expect(e.toolCallId).toBe("call_1");
      expect(e.details).toMatchObject({ expected: digest1, found: elsewhere });
    });
  });

  it("does not mutate the request", () => {
    const before = structuredClone(request);
    try {
      validate(approveBoth(), "omar");
    } catch {
      /* refused */
    }
    validate(approveBoth(), "boss");
    expect(request).toEqual(before);
  });
});

describe("authenticateHuman", () => {
  const what = { verb: "approve", object: "approver" };
  const principal = (id: string) => principalFromConfig({ thread_id: THREAD, user_id: id });

  function refusedBy(fn: () => unknown, code: ApprovalErrorCode): ApprovalError {
    let error: unknown;
    try {
      fn();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ApprovalError);
    expect((error as ApprovalError).code).toBe(code);
    return error as ApprovalError;
  }

  it("returns the principal's id, whether or not the payload names them", () => {
    expect(authenticateHuman(undefined, ["supervisor"], { registry, identity, principal: principal("sam") }, what)).toBe("sam");
    expect(authenticateHuman({ id: "sam" }, ["supervisor"], { registry, identity, principal: principal("sam") }, what)).toBe("sam");
    expect(authenticateHuman(undefined, undefined, { registry, identity, principal: principal("omar") }, what)).toBe("omar");
  });

  it("refuses a resume with no principal with approval_unauthenticated, whatever the payload names", () => {
    const none = principalFromConfig({ thread_id: THREAD });
    expect(none).toBeUndefined();
    refusedBy(() => authenticateHuman(undefined, ["supervisor"], { registry, identity, principal: none }, what), "approval_unauthenticated");
    const e = refusedBy(() => authenticateHuman({ id: "sam" }, ["supervisor"], { registry, identity, principal: none }, what), "approval_unauthenticated");
    expect(e.details.named).toBe("sam");
  });

  it("refuses a payload naming a human other than the principal with approval_principal_mismatch", () => {
    const e = refusedBy(() => authenticateHuman({ id: "sam" }, ["supervisor"], { registry, identity, principal: principal("omar") }, what), "approval_principal_mismatch");
    expect(e.details).toEqual({ approverId: "omar", named: "sam" });
  });

  it("refuses the user the agent acts for, and the agent, with approval_self_approval", () => {
    refusedBy(() => authenticateHuman(undefined, undefined, { registry, identity, principal: principal("cara") }, what), "approval_self_approval");
    refusedBy(() => authenticateHuman(undefined, undefined, { registry, identity, principal: principal("support-agent") }, what), "approval_self_approval");
  });

  it("refuses an unknown principal, and one without the roles, with approval_unauthorized", () => {
    refusedBy(() => authenticateHuman(undefined, undefined, { registry, identity, principal: principal("ghost") }, what), "approval_unauthorized");
    const e = refusedBy(() => authenticateHuman(undefined, ["supervisor"], { registry, identity, principal: principal("omar") }, what), "approval_unauthorized");
    expect(e.details).toEqual({ approverId: "omar", roles: ["supervisor"] });
  });
});
