import { AIMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { MemorySaver } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { definePolicy, MemoryAuditLog, MemoryEffectLedger } from "eart";
import { createServerAgent } from "eart/server";
import { scriptedModel } from "eart/testing";
import { proofFor } from "../../server/proof.js";

/**
 * The proof eart's server auth gives a run's `langgraph_auth_user` is for that run only. LangGraph
 * server keeps every run's configuration in the thread's `config`, where the thread's readers see
 * it (test/server/attacks.test.ts): a proof read there must authenticate no other run. Where no
 * custom auth runs, the server hands a client's own `langgraph_auth_user` to the graph, so these
 * runs are the ones a client can make with a proof it read.
 */
const identities = {
  roles: { customer: { description: "A customer", tools: ["lookup_order"] }, supervisor: { description: "Approves", tools: [] } },
  agents: [{ id: "support-agent", roles: ["support"], tools: ["lookup_order"] }],
  users: [
    { id: "cara", roles: ["customer"] },
    { id: "sam", roles: ["supervisor"] },
  ],
};

function servedGraph() {
  const lookup = tool(async () => "order 1043: $60", { name: "lookup_order", description: "Look an order up", schema: z.object({ orderId: z.string() }) });
  const auditLog = new MemoryAuditLog();
  const graph = createServerAgent({
    agentId: "support-agent",
    model: scriptedModel(() => new AIMessage("Hello.")),
    tools: [lookup],
    identities,
    policy: definePolicy({ name: "p", rules: [{ id: "lookup", tools: ["lookup_order"], effect: "allow" }] }),
    ledger: new MemoryEffectLedger(),
    threadLock: false,
    auditLog,
  });
  // LangGraph server gives the graph its checkpointer.
  (graph as { checkpointer?: unknown }).checkpointer = new MemorySaver();
  const run = (threadId: string, user: unknown, runId?: string) =>
    graph.invoke({ messages: [{ role: "user", content: "hi" }] }, { configurable: { thread_id: threadId, langgraph_auth_user: user }, ...(runId ? { runId } : {}) });
  return { auditLog, run };
}

describe("the server user's proof", () => {
  it("authenticates the run it was made for", async () => {
    const { auditLog, run } = servedGraph();
    const runId = crypto.randomUUID();
    const out = await run("t-own", { identity: "cara", permissions: ["customer"], eart_proof: proofFor("cara", runId) }, runId);
    expect(String(out.messages.at(-1)?.content)).toBe("Hello.");
    expect((await auditLog.read("t-own")).find((e) => e.type === "identity.bound")?.data).toMatchObject({ userId: "cara", source: "configurable.langgraph_auth_user" });
  });

  it("authenticates no other run: a proof copied from a thread's config, one for another user, none, or a run without an id", async () => {
    const { auditLog, run } = servedGraph();
    const earlier = crypto.randomUUID();
    const leaked = { identity: "sam", permissions: ["supervisor"], eart_proof: proofFor("sam", earlier) };
    const attempts: [string, unknown, string | undefined][] = [
      ["replayed in a new run", leaked, crypto.randomUUID()],
      ["with its identity changed", { ...leaked, identity: "cara" }, earlier],
      ["in a run without an id", leaked, undefined],
      ["without a proof", { identity: "sam", permissions: ["supervisor"] }, crypto.randomUUID()],
      ["the proof of the old, unbound form", { identity: "sam", eart_proof: "x".repeat(43) }, crypto.randomUUID()],
    ];
    for (const [name, user, runId] of attempts) {
      const threadId = `t-${name.replaceAll(" ", "-")}`;
      await expect(run(threadId, user, runId), name).rejects.toMatchObject({ code: "identity_unauthenticated" });
      expect(await auditLog.read(threadId), name).toEqual([]);
    }
  });
});
