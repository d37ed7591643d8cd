/**
 * The refund conversation the benchmark runs, and the two agents it runs on: a bare LangGraph
 * agent and eart's governed agent, with the same scripted model and the same tools.
 */
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { END, MemorySaver, MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import { ToolNode } from "@langchain/langgraph/prebuilt";
import { definePolicy, MemoryAuditLog, type AuditLog, type DecisionRecord } from "eart";
import { createGovernedAgent } from "eart/graphs";
import { scriptedModel } from "eart/testing";
import { z } from "zod";

/** What the customer asks, in every thread. */
export const REQUEST = "Please refund order 1043 for $60.";
/** The model's final answer once the refund has run. */
export const ANSWER = "Your refund of $60 for order 1043 has been issued.";
/** Model calls per conversation: lookup, refund, answer. */
export const MODEL_CALLS_PER_THREAD = 3;

const ORDERS: Record<string, { orderId: string; customer: string; total: number; status: string }> = {
  "1043": { orderId: "1043", customer: "cara", total: 60, status: "delivered" },
};

/**
 * The conversation as a script: look the order up, refund it, then answer. Any other turn (an
 * error tool result, an unexpected message) gets a different answer, so a broken path fails the
 * conversation check instead of being timed.
 */
export function refundScript(messages: BaseMessage[]): AIMessage {
  const last = messages[messages.length - 1];
  if (last && HumanMessage.isInstance(last)) {
    return new AIMessage({ content: "", tool_calls: [{ id: "call_lookup", name: "lookup_order", args: { orderId: "1043" } }] });
  }
  if (last && ToolMessage.isInstance(last) && last.status !== "error") {
    if (last.name === "lookup_order") {
      return new AIMessage({ content: "", tool_calls: [{ id: "call_refund", name: "issue_refund", args: { orderId: "1043", amount: 60 } }] });
    }
    if (last.name === "issue_refund") return new AIMessage(ANSWER);
  }
  return new AIMessage(`Unexpected turn after: ${last ? String(last.content) : "nothing"}`);
}

/** The refund tools and the count of refunds each thread issued. */
export interface RefundTools {
  tools: StructuredToolInterface[];
  /** Refunds issued, by thread id. */
  refundsByThread: Map<string, number>;
}

/**
 * `lookup_order` and `issue_refund`: real LangChain tools with zod schemas doing trivial
 * in-memory work. `issue_refund` counts its runs per thread.
 * @example
 * ```ts
 * const { tools, refundsByThread } = createRefundTools();
 * ```
 */
export function createRefundTools(): RefundTools {
  const refundsByThread = new Map<string, number>();
  const lookupOrder = tool(
    async ({ orderId }) => {
      const order = ORDERS[orderId];
      return order ? JSON.stringify(order) : `No order ${orderId}.`;
    },
    {
      name: "lookup_order",
      description: "Look up an order by id: customer, total, status.",
      schema: z.object({ orderId: z.string() }),
    },
  );
  const issueRefund = tool(
    async ({ orderId, amount }, config) => {
      const threadId = String(config?.configurable?.thread_id ?? "");
      refundsByThread.set(threadId, (refundsByThread.get(threadId) ?? 0) + 1);
      return JSON.stringify({ orderId, amount, status: "refunded" });
    },
    {
      name: "issue_refund",
      description: "Refund an amount in dollars for an order.",
      schema: z.object({ orderId: z.string(), amount: z.number().positive() }),
    },
  );
  return { tools: [lookupOrder, issueRefund], refundsByThread };
}

/** The final state of one conversation, as much of it as the check needs. */
export interface Outcome {
  messages: BaseMessage[];
  /** Present on the governed agent only. */
  decisions?: DecisionRecord[];
}

/** One agent under test: runs the refund conversation on a fresh thread. */
export interface Variant {
  name: string;
  run(threadId: string): Promise<Outcome>;
  /** Deletes the thread's checkpoints (a finished conversation no longer held in this process's heap). */
  forget(threadId: string): Promise<void>;
  refundsByThread: Map<string, number>;
}

/**
 * A bare LangGraph agent: model node, `ToolNode`, the usual conditional edge, `MemorySaver`.
 * @example
 * ```ts
 * const bare = createBareVariant(3_000);
 * await bare.run("t1");
 * ```
 */
export function createBareVariant(modelTurns: number): Variant {
  const { tools, refundsByThread } = createRefundTools();
  const model = scriptedModel(refundScript, { turns: modelTurns }).bindTools(tools);
  const checkpointer = new MemorySaver();
  const graph = new StateGraph(MessagesAnnotation)
    .addNode("agent", async (state: typeof MessagesAnnotation.State) => ({ messages: [await model.invoke(state.messages)] }))
    .addNode("tools", new ToolNode(tools))
    .addEdge(START, "agent")
    .addConditionalEdges("agent", (state) => {
      const last = state.messages[state.messages.length - 1];
      return last && AIMessage.isInstance(last) && (last.tool_calls?.length ?? 0) > 0 ? "tools" : END;
    }, ["tools", END])
    .addEdge("tools", "agent")
    .compile({ checkpointer });
  return {
    name: "bare",
    refundsByThread,
    run: (threadId) => graph.invoke({ messages: [new HumanMessage(REQUEST)] }, { configurable: { thread_id: threadId } }),
    forget: (threadId) => checkpointer.deleteThread(threadId),
  };
}

/** Who may do what: the support agent, acting for customer cara. */
const IDENTITIES = {
  roles: { customer: { description: "A customer asking about their own orders", tools: ["lookup_order", "issue_refund"] } },
  agents: [{ id: "support-agent", roles: ["support"], tools: ["lookup_order", "issue_refund"], dataScopes: ["orders"] }],
  users: [{ id: "cara", name: "Cara (customer)", roles: ["customer"] }],
};

/** Lookups are allowed, refunds up to $100 are allowed; everything else is denied by default. */
const POLICY = definePolicy({
  name: "bench-refunds",
  rules: [
    { id: "orders.lookup", tools: ["lookup_order"], effect: "allow", reason: "Order lookups are allowed" },
    {
      id: "refund.small",
      tools: ["issue_refund"],
      when: (r) => Number(r.tool.args.amount) <= 100,
      effect: "allow",
      reason: "Refunds up to $100 are allowed",
    },
  ],
});

/**
 * eart's prebuilt governed agent on the same model script and tools, with `MemorySaver` and a
 * `MemoryAuditLog` (or the audit log given, e.g. one wrapped by `createTraceExport`).
 * @example
 * ```ts
 * const governed = createGovernedVariant(3_000);
 * await governed.run("t1");
 * ```
 */
export function createGovernedVariant<L extends AuditLog = MemoryAuditLog>(modelTurns: number, options: { name?: string; auditLog?: L; redaction?: false } = {}): Variant & { auditLog: L } {
  const { tools, refundsByThread } = createRefundTools();
  const auditLog = options.auditLog ?? (new MemoryAuditLog() as AuditLog as L);
  const checkpointer = new MemorySaver();
  const agent = createGovernedAgent({
    model: scriptedModel(refundScript, { turns: modelTurns }),
    tools,
    identities: IDENTITIES,
    policy: POLICY,
    checkpointer,
    auditLog,
    ...(options.redaction === false ? { redaction: false as const } : {}),
  });
  return {
    name: options.name ?? "governed",
    refundsByThread,
    auditLog,
    run: (threadId) =>
      agent.invoke(
        { messages: [new HumanMessage(REQUEST)] },
        { configurable: { thread_id: threadId, agent_id: "support-agent", user_id: "cara" } },
      ),
    forget: (threadId) => checkpointer.deleteThread(threadId),
  };
}

/**
 * Throws unless the thread completed the conversation: six messages ending in the text answer,
 * the refund run exactly once, and (governed) every decision executed.
 * @example
 * ```ts
 * assertCompleted(bare, "t1", await bare.run("t1"));
 * ```
 */
export function assertCompleted(variant: Variant, threadId: string, outcome: Outcome): void {
  const fail = (why: string): never => {
    throw new Error(`${variant.name} thread ${threadId} did not complete the refund conversation: ${why}`);
  };
  const { messages } = outcome;
  const last = messages[messages.length - 1];
  if (!last || !AIMessage.isInstance(last) || (last.tool_calls?.length ?? 0) > 0 || last.content !== ANSWER) {
    fail(`last message is ${last ? JSON.stringify(last.content) : "missing"}`);
  }
  if (messages.length !== 6) fail(`expected 6 messages, got ${messages.length}`);
  const refunds = variant.refundsByThread.get(threadId) ?? 0;
  if (refunds !== 1) fail(`issue_refund ran ${refunds} times`);
  if (outcome.decisions !== undefined) {
    const statuses = outcome.decisions.map((d) => `${d.name}:${d.status}`).join(",");
    if (statuses !== "lookup_order:executed,issue_refund:executed") fail(`decisions are ${statuses}`);
  }
}
