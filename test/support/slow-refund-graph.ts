/**
 * A graph the LangGraph server tests add beside the project's (never shipped): the refund agent
 * whose `issue_refund` waits, the first time it is called on a thread, until its run is cancelled
 * (or 60 s pass), so a test can cancel a run while a tool runs.
 */
import { tool } from "@langchain/core/tools";
import Database from "better-sqlite3";
import { z } from "zod";
import { createServerAgent, serverStores } from "eart/server";
import { refundAgentOptions } from "../../examples/refund/agent.js";

const stores = await serverStores();
const db = new Database(stores.location);
db.pragma("journal_mode = WAL");
db.pragma("busy_timeout = 5000");
const refund = await refundAgentOptions(db);
const slowed = new Set<string>();
const real = refund.tools.issueRefund;
const slowRefund = tool(
  async (args: Record<string, unknown>, config) => {
    const threadId = String((config as { configurable?: { thread_id?: unknown } }).configurable?.thread_id);
    if (!slowed.has(threadId)) {
      slowed.add(threadId);
      const signal = (config as { signal?: AbortSignal }).signal;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, 60_000);
        signal?.addEventListener("abort", () => {
          clearTimeout(timer);
          reject(signal.reason ?? new Error("aborted"));
        }, { once: true });
      });
    }
    return real.invoke(args, config);
  },
  { name: real.name, description: real.description, schema: real.schema as z.ZodObject<z.ZodRawShape> },
);

export const graph = createServerAgent({
  agentId: "support-agent",
  ...refund.options,
  tools: [refund.tools.lookupOrder, refund.tools.viewPaymentDetails, slowRefund],
  ...stores.forAgent,
});
