import { AIMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { MemorySaver } from "@langchain/langgraph";
import { createAgent } from "langchain";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { definePolicy, MemoryAuditLog, MemoryEffectLedger } from "eart";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { answerableBy, createServerAgent, serveAgent } from "eart/server";
import { scriptedModel } from "eart/testing";
import { proofFor } from "../../server/proof.js";

/**
 * One agent served by graphs of both kinds on LangGraph server: eart's prebuilt agent and a
 * `createAgent` agent with governanceMiddleware (`serveAgent`), on one checkpointer and one audit
 * log. A graph of one kind does not see the open task of a thread the other kind ran: whichever
 * registered first, a supervisor may open the threads of both that wait for them, and nobody else.
 */
const identities = {
  roles: {
    customer: { description: "A customer", tools: ["issue_refund"] },
    supervisor: { description: "Approves refunds", tools: [] },
  },
  agents: [{ id: "support-agent", roles: ["support"], tools: ["issue_refund"] }],
  users: [
    { id: "cara", roles: ["customer"] },
    { id: "omar", roles: ["customer"] },
    { id: "sam", roles: ["supervisor"] },
  ],
};
const policy = definePolicy({ name: "p", rules: [{ id: "refund.supervisor", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"] }] });
const issueRefund = tool(async () => "refunded", { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) });
const model = () =>
  scriptedModel((messages: BaseMessage[]) =>
    messages.some((m) => AIMessage.isInstance(m)) ? new AIMessage("Done.") : new AIMessage({ content: "", tool_calls: [{ id: "c1", name: "issue_refund", args: { orderId: "1042", amount: 740 } }] }),
  );

/** A run as cara, authenticated by eart's server auth for that run. */
const asCara = (threadId: string) => {
  const runId = crypto.randomUUID();
  return { configurable: { thread_id: threadId, langgraph_auth_user: { identity: "cara", permissions: ["customer"], eart_proof: proofFor("cara", runId) } }, runId };
};
const REQUEST = { messages: [{ role: "user", content: "Please refund order 1042, $740" }] };

describe("answerableBy with a prebuilt and a createAgent graph serving one agent", () => {
  it("lets the supervisor open the waiting threads of both, the createAgent graph registered first; not another customer", async () => {
    const auditLog = new MemoryAuditLog();
    const ledger = new MemoryEffectLedger();
    const checkpointer = new MemorySaver();
    const governance = governanceMiddleware({ identities, policy, auditLog, ledger });
    const agent = serveAgent(guardAgent(createAgent({ model: model(), tools: [issueRefund], middleware: [governance] }), governance, { lock: false }), governance, { agentId: "support-agent" });
    const prebuilt = createServerAgent({ agentId: "support-agent", model: model(), tools: [issueRefund], identities, policy, ledger, threadLock: false, auditLog });
    // LangGraph server gives each graph it runs its checkpointer.
    (agent.graph as { checkpointer?: unknown }).checkpointer = checkpointer;
    (prebuilt as { checkpointer?: unknown }).checkpointer = checkpointer;

    await prebuilt.invoke(REQUEST, asCara("t-prebuilt"));
    await agent.invoke(REQUEST, asCara("t-middleware"));
    for (const threadId of ["t-prebuilt", "t-middleware"]) {
      expect((await auditLog.read(threadId)).map((e) => e.type), threadId).toContain("approval.requested");
      expect(await answerableBy(threadId, "sam"), threadId).toBe(true);
      expect(await answerableBy(threadId, "omar"), threadId).toBe(false);
      expect(await answerableBy(threadId, "cara"), threadId).toBe(false);
    }
  });
});
