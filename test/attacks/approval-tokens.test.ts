/**
 * Signed approval tokens: a human answers out of band (a chat button, an e-mail link, the CLI)
 * with a token their own Ed25519 key signed. Tried as an attacker: expired, replayed, for another
 * thread, for another call, signed by an unknown key, tampered with, or signed by the requester.
 */
import { generateKeyPairSync } from "node:crypto";
import { Command } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { definePolicy, pendingApproval, signApprovalToken, type ApprovalRequest } from "eart";
import { ask, config, refund, refundSetup } from "../support/refund.js";

const sam = generateKeyPairSync("ed25519");
const sue = generateKeyPairSync("ed25519");
const cara = generateKeyPairSync("ed25519");
const approvalKeys = {
  "sam-2026": { approver: "sam", publicKey: sam.publicKey },
  "sue-2026": { approver: "sue", publicKey: sue.publicKey.export({ type: "spki", format: "pem" }).toString() },
  "cara-2026": { approver: "cara", publicKey: cara.publicKey },
};

/** A resume with no principal: the token alone says who answers. */
const bare = (threadId: string) => ({ configurable: { thread_id: threadId } });

async function paused(threadId: string, opts: Parameters<typeof refundSetup>[1] = {}) {
  const setup = refundSetup([[refund("c1", 740)]], { ...opts, agent: { approvalKeys, ...opts.agent } });
  const request = pendingApproval(await setup.agent.invoke(ask(), config(threadId)))!;
  return { ...setup, request };
}

const tokenFor = (request: ApprovalRequest, over: Partial<Parameters<typeof signApprovalToken>[0]> = {}, key = sam.privateKey) =>
  signApprovalToken(
    { kid: "sam-2026", threadId: request.threadId, toolCallId: "c1", digest: request.requests[0]!.digest, approver: "sam", decision: "approve", expiresInMs: 60_000, ...over },
    key,
  );
const answer = (request: ApprovalRequest, token: string, type: "approve" | "reject" | "edit" = "approve") => ({
  decisions: [{ toolCallId: "c1", type, digest: request.requests[0]!.digest, token, ...(type === "edit" ? { args: { orderId: "1042", amount: 700 } } : {}) }],
});

describe("signed approval tokens", () => {
  it("a valid token approves with no session on the thread; the relaying service is recorded, not trusted", async () => {
    const { agent, request, refunds, auditLog } = await paused("tok-1");
    await agent.invoke(new Command({ resume: answer(request, tokenFor(request)) }), { configurable: { thread_id: "tok-1", user_id: "omar" } });
    expect(refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    const decided = (await auditLog.read("tok-1")).find((e) => e.type === "approval.decided")!;
    expect(decided.data).toMatchObject({ approverId: "sam", authenticatedBy: "approval_token", relayedBy: "omar" });
  });

  it("refuses expired, other-thread, other-call, unknown-key, wrong-signer and tampered tokens, and runs nothing", async () => {
    const { agent, request, refunds } = await paused("tok-2");
    const other = (await paused("tok-other")).request;
    const valid = tokenFor(request);
    const [claims, signature] = valid.split(".") as [string, string];
    const tampered = `${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(claims, "base64url").toString()), approver: "sue", kid: "sue-2026" })).toString("base64url")}.${signature}`;
    const cases: [string, string][] = [
      ["expired", tokenFor(request, { expiresInMs: 1, now: new Date(Date.now() - 60_000) })],
      ["another thread", tokenFor(other)],
      ["another digest", tokenFor(request, { digest: other.requests[0]!.digest })],
      ["another decision", tokenFor(request, { decision: "reject" })],
      ["unknown key id", tokenFor(request, { kid: "sam-2019" })],
      ["a key that speaks for someone else", tokenFor(request, { approver: "sue" })],
      ["signed by another key", tokenFor(request, {}, sue.privateKey)],
      ["tampered claims", tampered],
      ["not a token", "hello.world"],
    ];
    const codes = [];
    for (const [, token] of cases) {
      const error = await agent.invoke(new Command({ resume: answer(request, token) }), bare("tok-2")).catch((e: unknown) => e);
      codes.push((error as { code?: string }).code);
    }
    expect(codes).toEqual([
      "approval_token_expired",
      ...Array.from({ length: cases.length - 1 }, () => "approval_token_invalid"),
    ]);
    expect(refunds()).toEqual([]);
    // The thread still waits for, and takes, a valid token.
    await agent.invoke(new Command({ resume: answer(request, valid) }), bare("tok-2"));
    expect(refunds()).toHaveLength(1);
  });

  it("a token is used once: sam's token cannot count twice towards a quorum of two", async () => {
    const policy = definePolicy({
      name: "two-supervisors",
      rules: [
        { id: "refund.two", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"], quorum: 2 },
        { id: "lookup", tools: ["lookup_order"], effect: "allow" },
      ],
    });
    const { agent, request, refunds } = await paused("tok-3", { policy });
    const token = tokenFor(request);
    await agent.invoke(new Command({ resume: answer(request, token) }), bare("tok-3"));
    expect(pendingApproval(await agent.getState(bare("tok-3")))?.requests[0]?.approvedBy).toEqual(["sam"]);
    await expect(agent.invoke(new Command({ resume: answer(request, token) }), bare("tok-3"))).rejects.toMatchObject({ code: "approval_token_replayed" });
    const sues = tokenFor(request, { kid: "sue-2026", approver: "sue" }, sue.privateKey);
    await agent.invoke(new Command({ resume: answer(request, sues) }), bare("tok-3"));
    expect(refunds()).toHaveLength(1);
  });

  it("the requester's own valid token is a self-approval; a token cannot edit; tokens are all or nothing", async () => {
    const { agent, request, refunds } = await paused("tok-4");
    const own = tokenFor(request, { kid: "cara-2026", approver: "cara" }, cara.privateKey);
    await expect(agent.invoke(new Command({ resume: answer(request, own) }), bare("tok-4"))).rejects.toMatchObject({ code: "approval_self_approval" });
    await expect(agent.invoke(new Command({ resume: answer(request, tokenFor(request), "edit") }), bare("tok-4"))).rejects.toMatchObject({ code: "approval_token_invalid" });
    expect(refunds()).toEqual([]);
  });

  it("a graph without approval keys accepts no token", async () => {
    const setup = refundSetup([[refund("c1", 740)]]);
    const request = pendingApproval(await setup.agent.invoke(ask(), config("tok-5")))!;
    await expect(setup.agent.invoke(new Command({ resume: answer(request, tokenFor(request)) }), bare("tok-5"))).rejects.toMatchObject({ code: "approval_token_invalid" });
    expect(setup.refunds()).toEqual([]);
  });
});

describe("a token beside what the approver wrote", () => {
  it("a token signs its reject's message: one the graph redacts (a card number) no longer matches and is refused, nothing of it stored; the message as signed is kept byte for byte", async () => {
    const { agent, request, refunds, auditLog } = await paused("tok-redact");
    const message = "send it to card 4111 1111 1111 1111 instead";
    const signed = tokenFor(request, { decision: "reject", message });
    const resume = { decisions: [{ toolCallId: "c1", type: "reject", digest: request.requests[0]!.digest, token: signed, message }] };
    // The graph redacts the message before it holds it: the token signed another text.
    const refused = await agent.invoke(new Command({ resume }), bare("tok-redact")).then(() => "no error", (e: { code?: string }) => e.code);
    expect(refused).toBe("approval_token_invalid");
    expect(refunds()).toEqual([]);
    const state = await agent.getState(bare("tok-redact"));
    expect(JSON.stringify(state)).not.toMatch(/4111 1111 1111 1111/);
    expect(JSON.stringify(await auditLog.read("tok-redact"))).not.toMatch(/4111 1111 1111 1111/);
    // A message without data the graph redacts is kept as signed, and the reject is sam's.
    const plain = "wrong order: ask the customer for the order number";
    const done = await agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "reject", digest: request.requests[0]!.digest, token: tokenFor(request, { decision: "reject", message: plain }), message: plain }] } }), bare("tok-redact"));
    expect(refunds()).toEqual([]);
    const decided = (await auditLog.read("tok-redact")).find((e) => e.type === "approval.decided")!;
    expect(decided.data).toMatchObject({ approverId: "sam", authenticatedBy: "approval_token", decision: "reject", message: plain });
    expect(JSON.stringify(done.messages)).toContain(plain);
  });
});
