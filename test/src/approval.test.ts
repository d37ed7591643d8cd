import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  ApprovalError,
  ApprovalRequestSchema,
  ApprovalResponseSchema,
  buildApprovalRequest,
  canonicalJson,
  EartError,
  IdentityRegistry,
  isApprovalRequest,
  pendingApproval,
  sha256Hex,
  toolCallDigest,
  validateApprovalResponse,
  type ApprovalErrorCode,
  type ApprovalRequest,
  type DecisionRecord,
} from "eart";

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

const record = (toolCallId: string, name: string, args: Record<string, unknown>, approverRoles?: string[]): DecisionRecord => ({
  schemaVersion: 1,
  toolCallId,
  messageId: "msg-1",
  name,
  args,
  digest: toolCallDigest(name, args),
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
const request: ApprovalRequest = buildApprovalRequest("thread-1", [refund, close]);

const approveBoth = (approver = "boss") => ({
  approver: { id: approver },
  decisions: [
    { toolCallId: "call_1", type: "approve" },
    { toolCallId: "call_2", type: "approve" },
  ],
});

function refused(raw: unknown, code: ApprovalErrorCode, req: ApprovalRequest = request): ApprovalError {
  let error: unknown;
  try {
    validateApprovalResponse(raw, req, { registry, identity });
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ApprovalError);
  expect(error).toBeInstanceOf(EartError);
  expect((error as ApprovalError).code).toBe(code);
  return error as ApprovalError;
}

describe("toolCallDigest", () => {
  it("is the sha256 of the RFC 8785 canonical JSON of {name, args}", () => {
    const args = { orderId: "1042", amount: 740, meta: { z: 1, a: [true, null, "x"] } };
    const canonical = '{"args":{"amount":740,"meta":{"a":[true,null,"x"],"z":1},"orderId":"1042"},"name":"issue_refund"}';
    expect(canonicalJson({ name: "issue_refund", args })).toBe(canonical);
    const expected = createHash("sha256").update(canonical).digest("hex");
    expect(toolCallDigest("issue_refund", args)).toBe(expected);
    expect(sha256Hex(canonical)).toBe(expected);
  });

  it("normalises numbers the RFC 8785 way", () => {
    expect(canonicalJson({ a: 1.0, b: 1e21, c: -0, d: 0.000001 })).toBe('{"a":1,"b":1e+21,"c":0,"d":0.000001}');
    expect(toolCallDigest("t", { n: 1.0 })).toBe(toolCallDigest("t", { n: 1 }));
  });

  it("is independent of key order", () => {
    expect(toolCallDigest("issue_refund", { orderId: "1042", amount: 740, x: { b: 2, a: 1 } })).toBe(
      toolCallDigest("issue_refund", { x: { a: 1, b: 2 }, amount: 740, orderId: "1042" }),
    );
  });

  it("changes with the name, any argument value or type", () => {
    const base = toolCallDigest("issue_refund", { orderId: "1042", amount: 740 });
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    expect(toolCallDigest("issue_refunds", { orderId: "1042", amount: 740 })).not.toBe(base);
    expect(toolCallDigest("issue_refund", { orderId: "1042", amount: 741 })).not.toBe(base);
    expect(toolCallDigest("issue_refund", { orderId: "1042", amount: "740" })).not.toBe(base);
    expect(toolCallDigest("issue_refund", { orderId: "1042" })).not.toBe(base);
  });

  it("sha256Hex matches a known vector", () => {
    expect(sha256Hex("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });
});

describe("buildApprovalRequest and isApprovalRequest", () => {
  it("lists every pending call with its digest, roles and requester", () => {
    expect(request).toEqual({
      type: "eart.approval",
      threadId: "thread-1",
      requests: [
        {
          toolCallId: "call_1",
          name: "issue_refund",
          args: { orderId: "1042", amount: 740 },
          digest: toolCallDigest("issue_refund", { amount: 740, orderId: "1042" }),
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
          digest: toolCallDigest("close_account", { accountId: "A-9" }),
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
  it("accepts approve, reject with a message, and edit with args and digest", () => {
    const parsed = ApprovalResponseSchema.parse({
      approver: { id: "sam" },
      decisions: [
        { toolCallId: "a", type: "approve", message: "ok" },
        { toolCallId: "b", type: "reject", message: "no" },
        { toolCallId: "c", type: "edit", args: { amount: 100 }, digest: "d" },
      ],
    });
    expect(parsed.decisions.map((d) => d.type)).toEqual(["approve", "reject", "edit"]);
    expect(parsed.decisions[2]!.args).toEqual({ amount: 100 });
  });
});

describe("validateApprovalResponse", () => {
  it("accepts a valid response and returns it with the request items", () => {
    const { response, items } = validateApprovalResponse(approveBoth("boss"), request, { registry, identity });
    expect(response).toEqual(approveBoth("boss"));
    expect([...items.keys()]).toEqual(["call_1", "call_2"]);
    expect(items.get("call_1")).toEqual(request.requests[0]);
  });

  it("accepts decisions in any order, with matching digests, edits and rejects", () => {
    const raw = {
      approver: { id: "boss" },
      decisions: [
        { toolCallId: "call_2", type: "reject", message: "not today", digest: request.requests[1]!.digest },
        { toolCallId: "call_1", type: "edit", args: { orderId: "1042", amount: 100 }, digest: request.requests[0]!.digest },
      ],
    };
    expect(validateApprovalResponse(raw, request, { registry, identity }).response).toEqual(raw);
  });

  it("accepts an approver holding one of each call's roles", () => {
    const single = buildApprovalRequest("t", [refund]);
    const raw = { approver: { id: "sam" }, decisions: [{ toolCallId: "call_1", type: "approve" }] };
    expect(validateApprovalResponse(raw, single, { registry, identity }).response.approver.id).toBe("sam");
  });

  describe("malformed → approval_resume_invalid", () => {
    const d1 = { toolCallId: "call_1", type: "approve" };
    const d2 = { toolCallId: "call_2", type: "approve" };
    it.each([
      ["not an object", "approve", ["(root)"]],
      ["null", null, []],
      ["missing approver", { decisions: [d1, d2] }, ["approver"]],
      ["approver without id", { approver: {}, decisions: [d1, d2] }, ["approver", "id"]],
      ["approver with empty id", { approver: { id: "" }, decisions: [d1, d2] }, ["approver", "id"]],
      ["approver as a string", { approver: "boss", decisions: [d1, d2] }, ["approver"]],
      ["extra key on approver", { approver: { id: "boss", roles: ["supervisor"] }, decisions: [d1, d2] }, ["approver"]],
      ["extra top-level key", { ...approveBoth(), force: true }, []],
      ["missing decisions", { approver: { id: "boss" } }, ["decisions"]],
      ["empty decisions", { approver: { id: "boss" }, decisions: [] }, ["decisions"]],
      ["unknown decision type", { approver: { id: "boss" }, decisions: [{ ...d1, type: "accept" }, d2] }, ["decisions", "0", "type"]],
      ["edit without args", { approver: { id: "boss" }, decisions: [{ ...d1, type: "edit" }, d2] }, ["decisions", "0", "args"]],
      ["args on approve", { approver: { id: "boss" }, decisions: [{ ...d1, args: { amount: 1 } }, d2] }, ["decisions", "0", "args"]],
      ["args on reject", { approver: { id: "boss" }, decisions: [d1, { ...d2, type: "reject", args: {} }] }, ["decisions", "1", "args"]],
      ["extra key on a decision", { approver: { id: "boss" }, decisions: [d1, { ...d2, approvedBy: "sam" }] }, ["decisions", "1"]],
      ["empty toolCallId", { approver: { id: "boss" }, decisions: [{ ...d1, toolCallId: "" }, d2] }, ["decisions", "0", "toolCallId"]],
      ["numeric digest", { approver: { id: "boss" }, decisions: [{ ...d1, digest: 1 }, d2] }, ["decisions", "0", "digest"]],
    ])("%s", (_label, raw, pathPrefix) => {
      const e = refused(raw, "approval_resume_invalid");
      expect(e.message).toMatch(/^Malformed approval response at /);
      const path = e.details.path as string[];
      expect(Array.isArray(path)).toBe(true);
      if (pathPrefix[0] !== "(root)") expect(path.slice(0, pathPrefix.length)).toEqual(pathPrefix);
    });
  });

  describe("decisions that do not match the request → approval_decisions_mismatch", () => {
    it("a decision for an unknown tool call", () => {
      const raw = approveBoth();
      raw.decisions.push({ toolCallId: "call_9", type: "approve" });
      const e = refused(raw, "approval_decisions_mismatch");
      expect(e.toolCallId).toBe("call_9");
      expect(e.details.pending).toEqual(["call_1", "call_2"]);
    });

    it("two decisions for the same call", () => {
      const raw = approveBoth();
      raw.decisions.push({ toolCallId: "call_1", type: "reject" });
      const e = refused(raw, "approval_decisions_mismatch");
      expect(e.toolCallId).toBe("call_1");
      expect(e.message).toContain("More than one decision");
    });

    it("a pending call without a decision", () => {
      const raw = { approver: { id: "boss" }, decisions: [{ toolCallId: "call_2", type: "approve" }] };
      const e = refused(raw, "approval_decisions_mismatch");
      expect(e.toolCallId).toBe("call_1");
      expect(e.details.missing).toEqual(["call_1"]);
    });
  });

  describe("self-approval → approval_self_approval", () => {
    it("the user the agent acts for", () => {
      const e = refused(approveBoth("cara"), "approval_self_approval");
      expect(e.details.approverId).toBe("cara");
    });

    it("the user the agent acts for, even if they held an approver role", () => {
      const bossIdentity = registry.resolve({ agentId: "support-agent", userId: "boss", source: "configurable.user_id" });
      let error: unknown;
      try {
        validateApprovalResponse(approveBoth("boss"), request, { registry, identity: bossIdentity });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ApprovalError);
      expect((error as ApprovalError).code).toBe("approval_self_approval");
    });

    it("the agent itself", () => {
      const e = refused(approveBoth("support-agent"), "approval_self_approval");
      expect(e.details.approverId).toBe("support-agent");
    });
  });

  describe("unauthorised approver → approval_unauthorized", () => {
    it("an unknown approver", () => {
      const e = refused(approveBoth("mallory"), "approval_unauthorized");
      expect(e.details.approverId).toBe("mallory");
    });

    it("an approver with none of the roles", () => {
      const e = refused(approveBoth("omar"), "approval_unauthorized");
      expect(e.toolCallId).toBe("call_1");
      expect(e.details.approverRoles).toEqual(["supervisor"]);
    });

    it("an approver holding the roles of one call but not of the other", () => {
      const e = refused(approveBoth("sam"), "approval_unauthorized");
      expect(e.toolCallId).toBe("call_2");
      expect(e.details).toMatchObject({ approverId: "sam", approverRoles: ["finance"] });
    });

    it("an approver for a call that names no approver roles", () => {
      const noRoles = buildApprovalRequest("t", [record("c1", "x", {})]);
      const e = refused({ approver: { id: "boss" }, decisions: [{ toolCallId: "c1", type: "approve" }] }, "approval_unauthorized", noRoles);
      expect(e.toolCallId).toBe("c1");
    });
  });

  describe("digest → approval_digest_mismatch", () => {
    it("a digest of a different call", () => {
      const raw = {
        approver: { id: "boss" },
        decisions: [
          { toolCallId: "call_1", type: "approve", digest: toolCallDigest("issue_refund", { orderId: "1042", amount: 7400 }) },
          { toolCallId: "call_2", type: "approve" },
        ],
      };
      const e = refused(raw, "approval_digest_mismatch");
      expect(e.toolCallId).toBe("call_1");
      expect(e.details.expected).toBe(request.requests[0]!.digest);
      expect(e.details.found).toBe(toolCallDigest("issue_refund", { orderId: "1042", amount: 7400 }));
    });

    it("the digest of the other pending call", () => {
      const raw = {
        approver: { id: "boss" },
        decisions: [
          { toolCallId: "call_1", type: "approve" },
          { toolCallId: "call_2", type: "approve", digest: request.requests[0]!.digest },
        ],
      };
      expect(refused(raw, "approval_digest_mismatch").toolCallId).toBe("call_2");
    });
  });

  it("does not mutate the request", () => {
    const before = structuredClone(request);
    try {
      validateApprovalResponse(approveBoth("omar"), request, { registry, identity });
    } catch {
      /* refused */
    }
    validateApprovalResponse(approveBoth("boss"), request, { registry, identity });
    expect(request).toEqual(before);
  });
});
