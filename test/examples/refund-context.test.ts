import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { Command, MemorySaver } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineRedaction, MemoryAuditLog, MemoryEffectLedger, pendingApproval, STANDARD_REDACTIONS, type RetrievedItem } from "eart";
import { createGovernedAgent } from "eart/graphs";
import { scriptedModel } from "eart/testing";
import { refundIdentities } from "../../examples/refund/agent.js";
import { refundScript } from "../../examples/refund/model.js";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools, ORDERS } from "../../examples/refund/tools.js";

/**
 * A support agent never receives a card number: not in a message to the model, not in a tool
 * call's arguments, not in the approval request, the state, the effect ledger or the audit log.
 * The card (4111 1111 1111 1111) and an IBAN reach the agent from two places: the customer's
 * order history (retrieved context) and the refund tool's result.
 */

const CARD = /4111\D{0,3}1111\D{0,3}1111\D{0,3}1111/;
const IBAN = /DE89\D{0,3}3704\D{0,3}0044/;

/** The customer's order history, card and refund account included, as the order system returns it. */
async function orderHistory({ identity }: { identity: { onBehalfOf: { id: string } } }): Promise<RetrievedItem[]> {
  const customer = identity.onBehalfOf.id;
  const orders = Object.values(ORDERS).filter((o) => o.customer === customer);
  return [
    ...orders.map((o) => ({
      id: `order:${o.orderId}`,
      source: "orders.history",
      scope: "orders",
      content: { ...o, note: `Paid with card ${o.card}; receipt sent.` },
    })),
    {
      id: `payout:${customer}`,
      source: "billing.refund-accounts",
      scope: "orders",
      content: { customer, iban: "DE89 3704 0044 0532 0130 00", note: "Fallback for refunds: DE89 3704 0044 0532 0130 00" },
    },
    // Out of the support agent's scopes: dropped before anything sees it.
    { id: `wallet:${customer}`, source: "billing.wallet", scope: "payments", content: { cards: ["4111 1111 1111 1111"] } },
  ];
}

/**
 * A careless model: it copies the card it sees in the context into the refund's reason, and the
 * card the refund went back to into its answer. Only redaction keeps the card out of its output.
 */
function leakyScript(messages: BaseMessage[]): AIMessage {
  const reply = refundScript(messages);
  const context = messages.map((m) => String(m.content)).find((c) => c.startsWith("Context retrieved"));
  const card = context ? /"card":"([^"]+)"/.exec(context)?.[1] : undefined;
  const calls = reply.tool_calls ?? [];
  if (calls.some((c) => c.name === "issue_refund")) {
    return new AIMessage({
      content: "",
      tool_calls: calls.map((c) => (c.name === "issue_refund" ? { ...c, args: { ...c.args, reason: `customer request; card on file ${card}` } } : c)),
    });
  }
  const result = [...messages].reverse().find((m) => m.getType() === "tool" && (m as { name?: string }).name === "issue_refund");
  if (result && calls.length === 0) {
    const to = /"refundedTo":"([^"]+)"/.exec(String(result.content))?.[1];
    return new AIMessage(`${String(reply.content)} It goes back to ${to}.`);
  }
  return reply;
}

/** The refund agent with context retrieval, redaction on or off, and everything it produced kept to inspect. */
async function refundThread(threadId: string, redact: boolean) {
  const db = new Database(":memory:");
  const tools = createRefundTools(db);
  // The payment processor answers with the card the money went back to.
  const issueRefund = tool(
    async (args, config) => {
      // Called with the tool call in its config, the refund tool answers with a ToolMessage.
      const out: unknown = await tools.issueRefund.invoke(args, config);
      const result = JSON.parse(ToolMessage.isInstance(out) ? String(out.content) : String(out)) as Record<string, unknown>;
      return JSON.stringify({ ...result, refundedTo: `card ${ORDERS[args.orderId]!.card}` });
    },
    { name: "issue_refund", description: tools.issueRefund.description, schema: z.object({ orderId: z.string(), amount: z.number().positive(), reason: z.string().optional() }) },
  );
  const model = scriptedModel(leakyScript);
  const auditLog = new MemoryAuditLog();
  const ledger = new MemoryEffectLedger();
  const agent = createGovernedAgent({
    model,
    tools: [tools.lookupOrder, issueRefund],
    identities: refundIdentities(),
    policy: refundPolicy,
    checkpointer: new MemorySaver(),
    auditLog,
    ledger,
    context: { providers: [orderHistory], ...(redact ? { redaction: defineRedaction(STANDARD_REDACTIONS) } : {}) },
    // Redaction is on by default: the unredacted run opts out.
    ...(redact ? {} : { redaction: false as const }),
  });
  const config = { configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" } };

  const paused = await agent.invoke({ messages: [new HumanMessage("Hi, order 1042 arrived broken. Please refund $740.")] }, config);
  const approval = pendingApproval(paused);
  if (!approval) throw new Error("expected the $740 refund to wait for a supervisor");
  // Supervisor sam approves: he is the principal of the resuming run, and names each call's digest.
  const done = await agent.invoke(
    new Command({ resume: { decisions: approval.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve", digest: r.digest })) } }),
    { configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "sam" } },
  );
  const state = await agent.getState(config);
  const messages = state.values.messages as BaseMessage[];

  return {
    answer: String(done.messages.at(-1)?.content),
    approval,
    refunds: db.prepare(`SELECT order_id AS orderId, amount, reason FROM refunds`).all() as { orderId: string; amount: number; reason: string }[],
    /** Everything the model was sent, call by call. */
    modelInputs: JSON.stringify(model.calls.map((c) => c.messages)),
    toolArgs: JSON.stringify(messages.flatMap((m) => (AIMessage.isInstance(m) ? (m.tool_calls ?? []).map((c) => c.args) : []))),
    stateMessages: JSON.stringify(messages),
    state: JSON.stringify(state.values),
    context: state.values.context as { items: { id: string; content: unknown }[]; sensitivity: string[] },
    ledger: JSON.stringify(await ledger.list(threadId)),
    events: await auditLog.read(threadId),
    audit: JSON.stringify(await auditLog.read(threadId)),
    verify: await auditLog.verify(threadId),
  };
}

describe("refund agent with retrieved context: no card number reaches the agent", () => {
  it("redacts the card and the IBAN from context, tool results and everything downstream of them", async () => {
    const run = await refundThread("ctx-redacted", true);

    // The conversation went through: approval, one refund, a final answer.
    expect(run.approval.requests).toEqual([expect.objectContaining({ name: "issue_refund", args: expect.objectContaining({ orderId: "1042", amount: 740 }) })]);
    expect(run.refunds).toEqual([{ orderId: "1042", amount: 740, reason: "customer request; card on file [REDACTED:card_number]" }]);
    expect(run.answer).toBe("Your refund of $740 for order 1042 has been issued. It goes back to card [REDACTED:card_number].");

    // Nowhere: model inputs, tool arguments, approval payload, state messages, state, ledger, audit.
    for (const [where, text] of Object.entries({
      modelInputs: run.modelInputs,
      toolArgs: run.toolArgs,
      approval: JSON.stringify(run.approval),
      stateMessages: run.stateMessages,
      state: run.state,
      ledger: run.ledger,
      audit: run.audit,
    })) {
      expect(text, where).not.toMatch(CARD);
      expect(text, where).not.toMatch(IBAN);
      expect(text, where).not.toContain("4111111111111111");
    }
    // What the model was given instead.
    expect(run.modelInputs).toContain('\\"card\\":\\"[REDACTED:card_number]\\"');
    expect(run.modelInputs).toContain("Paid with card [REDACTED:card_number]; receipt sent.");
    expect(run.modelInputs).toContain('\\"iban\\":\\"[REDACTED:iban]\\"');
    expect(run.modelInputs).not.toContain("wallet:cara");
    expect(run.toolArgs).toContain("card on file [REDACTED:card_number]");
    expect(run.ledger).toContain("card [REDACTED:card_number]");

    // Provenance without values: which paths were redacted, what was dropped; the thread is labelled.
    const retrieved = run.events.find((e) => e.type === "context.retrieved")!.data as Record<string, unknown>;
    expect(retrieved.items).toEqual([
      expect.objectContaining({ id: "order:1042", scope: "orders", labels: ["payment_data"] }),
      expect.objectContaining({ id: "order:1043", scope: "orders", labels: ["payment_data"] }),
      expect.objectContaining({ id: "payout:cara", scope: "orders", labels: ["payment_data"] }),
    ]);
    expect(retrieved.redacted).toEqual([
      { itemId: "order:1042", path: "card", ruleId: "card_number" },
      { itemId: "order:1042", path: "note", ruleId: "card_number" },
      { itemId: "order:1043", path: "card", ruleId: "card_number" },
      { itemId: "order:1043", path: "note", ruleId: "card_number" },
      { itemId: "payout:cara", path: "iban", ruleId: "iban" },
      { itemId: "payout:cara", path: "note", ruleId: "iban" },
    ]);
    expect(retrieved.dropped).toEqual([{ id: "wallet:cara", source: "billing.wallet", scope: "payments" }]);
    expect(retrieved.sensitivity).toEqual(["payment_data"]);
    expect(run.context.sensitivity).toContain("payment_data");
    const succeeded = run.events.filter((e) => e.type === "tool.succeeded").map((e) => e.data as Record<string, unknown>);
    expect(succeeded.find((d) => d.name === "issue_refund")).toMatchObject({ redacted: [expect.objectContaining({ ruleId: "card_number" })] });
    expect(run.verify).toMatchObject({ ok: true });
  });

  it("without redaction the same run leaks the card everywhere the test looks (the checks above can fail)", async () => {
    const run = await refundThread("ctx-open", false);
    expect(run.refunds).toEqual([{ orderId: "1042", amount: 740, reason: "customer request; card on file 4111 1111 1111 1111" }]);
    expect(run.answer).toBe("Your refund of $740 for order 1042 has been issued. It goes back to card 4111 1111 1111 1111.");
    for (const text of [run.modelInputs, run.toolArgs, JSON.stringify(run.approval), run.stateMessages, run.state, run.ledger, run.audit]) {
      expect(text).toMatch(CARD);
    }
    expect(run.modelInputs).toMatch(IBAN);
    // Scope filtering still applies: the wallet is dropped even without redaction.
    expect(run.modelInputs).not.toContain("wallet:cara");
    // No redaction rule matched, and the provider labelled nothing: the thread is not labelled.
    expect(run.context.sensitivity).toEqual([]);
  });
});
