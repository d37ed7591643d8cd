import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { approveAll, interruptOf, startDevServer, type DevServer, type ServedInterrupt } from "../support/langgraph-server.js";

/**
 * The five scenario agents on a real LangGraph dev server (the project's langgraph.json, eart's
 * server auth and demo tokens), driven by the SDK: each requester's run pauses for the scenario's
 * approver (or reviewer), who answers; the side effect happens once. A requester who answers their
 * own request is refused, and the thread keeps waiting with nothing done.
 */
let server: DevServer;
beforeAll(async () => {
  server = await startDevServer();
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

type Interrupt = ServedInterrupt;
/** Rows of a scenario table in the server's store file (none before the table exists). */
const rows = <T = Record<string, unknown>>(table: string, columns = "*") => server.rows<T>(table, columns);
const auditTypes = (threadId: string) => server.auditTypes(threadId);

/** A requester's new thread, run on `graphId` with `text`, paused for a human. */
async function pausedThread(graphId: string, requester: string, text: string): Promise<{ threadId: string; request: Interrupt }> {
  const client = server.client(requester);
  const thread = await client.threads.create();
  await client.runs.wait(thread.thread_id, graphId, { input: { messages: [{ role: "user", content: text }] } });
  return { threadId: thread.thread_id, request: await interruptOf(client, thread.thread_id) };
}

const approve = approveAll;
const lastMessage = (values: unknown) => (values as { messages: { content: string; name?: string }[] }).messages.at(-1)!;

/** The scenarios whose side effect waits for an approver role (`require_approval`). */
const APPROVALS = [
  {
    graphId: "finance-payment",
    requester: "amy",
    approver: "fred",
    roles: ["finance"],
    ask: "Pay invoice INV-7731.",
    pending: { name: "execute_payment", args: { paymentId: "PAY-INV-7731", vendorId: "V-204", amountCents: 1_284_500 } },
    effects: () => rows("payment_executions", "payment_id AS paymentId, amount_cents AS amountCents"),
    effect: { paymentId: "PAY-INV-7731", amountCents: 1_284_500 },
    answer: /Payment PAY-INV-7731 of EUR 12,845\.00 was released/,
  },
  {
    graphId: "hr-offer",
    requester: "hana",
    approver: "dora",
    roles: ["hr-director"],
    ask: "Draft and send the offer letter for candidate CAND-7.",
    pending: { name: "send_offer" },
    effects: () => rows("sent_offers", "candidate_id AS candidateId"),
    effect: { candidateId: "CAND-7" },
    answer: /The offer to Jordan Lee has been sent/,
  },
  {
    graphId: "procurement",
    requester: "pia",
    approver: "max",
    roles: ["procurement-manager"],
    ask: "Review our supplier agreements for cost-saving opportunities.",
    pending: { name: "initiate_renegotiation" },
    effects: () => rows("renegotiations", "contract_id AS contractId"),
    effect: { contractId: expect.any(String) },
    answer: /Renegotiation of C-\d+ with .* is open/,
  },
  {
    graphId: "sales-discount",
    requester: "rita",
    approver: "max",
    roles: ["sales-manager"],
    ask: "Borealis wants 20% on quote Q-1002 because they sign for three years.",
    pending: { name: "apply_discount", args: { quoteId: "Q-1002", percent: 20 } },
    effects: () => rows("discounts", "quote_id AS quoteId, percent"),
    effect: { quoteId: "Q-1002", percent: 20 },
    answer: /Applied 20% to quote Q-1002/,
  },
] as const;

describe.each(APPROVALS)("the $graphId agent on LangGraph server", (s) => {
  it(`pauses ${s.requester}'s request for ${s.roles.join(", ")}; ${s.approver} approves and the side effect happens once`, async () => {
    const before = s.effects().length;
    const { threadId, request } = await pausedThread(s.graphId, s.requester, s.ask);
    expect(request.value.type).toBe("eart.approval");
    expect(request.value.roles).toEqual(s.roles);
    expect(request.value.requests).toHaveLength(1);
    expect(request.value.requests![0]).toMatchObject(s.pending);
    expect(s.effects()).toHaveLength(before);

    const approver = server.client(s.approver);
    await approver.runs.wait(threadId, s.graphId, { command: { resume: approve(request) } });
    const thread = await approver.threads.get(threadId);
    expect(thread.status).toBe("idle");
    expect(lastMessage(thread.values).content).toMatch(s.answer);
    expect(s.effects().slice(before)).toEqual([s.effect]);
    const types = auditTypes(threadId);
    expect(types.filter((t) => t === "approval.decided")).toHaveLength(1);
    expect(types).not.toContain("approval.refused");
  });

  it(`refuses ${s.requester}'s approval of their own request: the thread stays interrupted with the refusal, nothing runs`, async () => {
    const before = s.effects().length;
    const { threadId, request } = await pausedThread(s.graphId, s.requester, s.ask);
    const requester = server.client(s.requester);
    await requester.runs.wait(threadId, s.graphId, { command: { resume: approve(request) } });
    const now = await interruptOf(requester, threadId);
    expect(now.value.refusal?.code).toBe("approval_self_approval");
    expect(now.value.requests).toEqual(request.value.requests);
    expect(s.effects()).toHaveLength(before);
    const types = auditTypes(threadId);
    expect(types).toContain("approval.refused");
    expect(types).not.toContain("approval.decided");
  });
});

/** The loan agent never approves: over its limit the case goes to an underwriter, who answers it. */
describe("the loan-prescreen agent on LangGraph server", () => {
  const ASK = "Please pre-screen loan application A-200.";
  const recommendations = () => rows("loan_recommendations", "application_id AS applicationId, amount_cents AS amountCents");
  const approvals = () => rows("loan_approvals");

  it("recommends within its limit on its own, once", async () => {
    const before = recommendations().length;
    const lena = server.client("lena");
    const thread = await lena.threads.create();
    await lena.runs.wait(thread.thread_id, "loan-prescreen", { input: { messages: [{ role: "user", content: "Please pre-screen loan application A-100." }] } });
    expect((await lena.threads.get(thread.thread_id)).status).toBe("idle");
    expect(recommendations().slice(before)).toEqual([{ applicationId: "A-100", amountCents: 2_500_000 }]);
  });

  it("escalates lena's $120,000 application to an underwriter; uma takes the case over and the thread ends idle", async () => {
    const before = recommendations().length;
    const { threadId, request } = await pausedThread("loan-prescreen", "lena", ASK);
    expect(request.value.type).toBe("eart.escalation");
    expect(request.value.roles).toEqual(["underwriter"]);
    expect(request.value.reason).toBe("Loans over $50,000 go to an underwriter");
    // The case names itself: an answer carries its digest.
    expect(request.value.digest).toMatch(/^[0-9a-f]{64}$/);

    const uma = server.client("uma");
    const decision = "Approved by underwriting at $120,000 over 120 months, subject to a business plan review.";
    await uma.runs.wait(threadId, "loan-prescreen", { command: { resume: { action: "take_over", message: decision, digest: request.value.digest } } });
    const thread = await uma.threads.get(threadId);
    expect(thread.status).toBe("idle");
    expect(lastMessage(thread.values)).toMatchObject({ content: decision, name: "uma" });
    // Over its limit the agent recommends nothing, and it never approves: the underwriter decided.
    expect(recommendations()).toHaveLength(before);
    expect(approvals()).toEqual([]);
    const types = auditTypes(threadId);
    expect(types.filter((t) => t === "escalation.decided")).toHaveLength(1);
    expect(types).not.toContain("escalation.refused");
  });

  it("refuses lena's answer to her own case: the thread stays interrupted with the refusal", async () => {
    const before = recommendations().length;
    const { threadId, request } = await pausedThread("loan-prescreen", "lena", ASK);
    const lena = server.client("lena");
    // Her answer names the case (its digest): only who answers is wrong.
    await lena.runs.wait(threadId, "loan-prescreen", { command: { resume: { action: "take_over", message: "Looks fine to me, approved.", digest: request.value.digest } } });
    const now = await interruptOf(lena, threadId);
    expect(now.value.refusal?.code).toBe("approval_self_approval");
    expect(now.value.type).toBe("eart.escalation");
    expect(now.value.reason).toBe(request.value.reason);
    expect(now.value.digest).toBe(request.value.digest);
    expect(recommendations()).toHaveLength(before);
    expect(approvals()).toEqual([]);
    const types = auditTypes(threadId);
    expect(types).toContain("escalation.refused");
    expect(types).not.toContain("escalation.decided");
  });
});
