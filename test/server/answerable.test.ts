import { AIMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { MemorySaver } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { definePolicy, MemoryAuditLog, MemoryEffectLedger } from "eart";
import { answerableBy, createEartAuth, createServerAgent } from "eart/server";
import { scriptedModel } from "eart/testing";
import { proofFor } from "../../server/proof.js";
import { narrowedSearches, type NarrowedSearch } from "../../server/http.js";

/**
 * Who may open a thread they do not own on LangGraph server (`answerableBy`, which eart's auth asks
 * on every read and run of another user's thread). Two graphs may serve one agent, as the server
 * tests' slow variant of the refund agent does beside the project's: the one the server has not
 * run yet has no checkpointer, and whichever module finished loading first registered first.
 */
const identities = {
  roles: {
    customer: { description: "A customer", tools: ["issue_refund"] },
    supervisor: { description: "Approves refunds", tools: [] },
    finance: { description: "Finance staff: answers nothing on this agent", tools: [] },
  },
  agents: [{ id: "support-agent", roles: ["support"], tools: ["issue_refund"] }],
  users: [
    { id: "cara", roles: ["customer"] },
    { id: "omar", roles: ["customer"] },
    { id: "sam", roles: ["supervisor"] },
    { id: "fiona", roles: ["finance"] },
  ],
};

function servedGraph(auditLog: MemoryAuditLog, graphId?: string) {
  const issueRefund = tool(async () => "refunded", { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) });
  const model = scriptedModel((messages: BaseMessage[]) =>
    messages.some((m) => AIMessage.isInstance(m)) ? new AIMessage("Done.") : new AIMessage({ content: "", tool_calls: [{ id: "c1", name: "issue_refund", args: { orderId: "1042", amount: 740 } }] }),
  );
  return createServerAgent({
    agentId: "support-agent",
    model,
    tools: [issueRefund],
    identities,
    policy: definePolicy({ name: "p", rules: [{ id: "refund.supervisor", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"] }] }),
    ledger: new MemoryEffectLedger(),
    threadLock: false,
    auditLog,
    ...(graphId ? { graphId } : {}),
  });
}

describe("answerableBy with two graphs serving one agent", () => {
  it("lets the supervisor open a thread waiting for them when the graph registered first has never run; nobody else (another customer, a colleague of another role, the owner)", async () => {
    const auditLog = new MemoryAuditLog();
    // Registered first and never given a checkpointer: the server has run nothing on it.
    servedGraph(auditLog);
    const runner = servedGraph(auditLog);
    // LangGraph server gives the graph it runs its checkpointer.
    (runner as { checkpointer?: unknown }).checkpointer = new MemorySaver();
    const runId = crypto.randomUUID();
    await runner.invoke(
      { messages: [{ role: "user", content: "Please refund order 1042, $740" }] },
      { configurable: { thread_id: "t-waiting", langgraph_auth_user: { identity: "cara", permissions: ["customer"], eart_proof: proofFor("cara", runId) } }, runId },
    );
    expect((await auditLog.read("t-waiting")).map((e) => e.type)).toContain("approval.requested");

    expect(await answerableBy("t-waiting", "sam")).toBe(true);
    expect(await answerableBy("t-waiting", "omar")).toBe(false);
    // A colleague whose role this request does not ask for.
    expect(await answerableBy("t-waiting", "fiona")).toBe(false);
    expect(await answerableBy("t-waiting", "cara")).toBe(false);
    expect(await answerableBy("t-unknown", "sam")).toBe(false);
  });
});

describe("eart's auth on a reviewer's search", () => {
  // The server calls the handler with the authenticated user and the search's filters.
  type SearchHandler = (request: { user: { identity: string; permissions: string[] }; value: Record<string, unknown> }) => Promise<unknown>;
  const handlerOf = (auth: ReturnType<typeof createEartAuth>) => (auth as unknown as { "~handlerCache": { callbacks: Record<string, SearchHandler> } })["~handlerCache"].callbacks["threads:search"]!;
  const sam = { identity: "sam", permissions: ["supervisor"] };
  const interrupted = { status: "interrupted", metadata: { graph_id: "desk" } };

  it("lists a reviewer's own threads only, unless eart's HTTP middleware filters the answer; never by values", async () => {
    servedGraph(new MemoryAuditLog(), "desk");
    const search = handlerOf(createEartAuth({ tokens: { "token-of-sam-supervisor": "sam" } }));
    // Without the middleware (no custom app mounted it): the server would answer whole threads of
    // the graph, those waiting for other roles too.
    expect(await search({ user: sam, value: interrupted })).toEqual({ owner: "sam" });
    // Through it: the graph's interrupted threads, marked for the middleware to narrow.
    const scope: NarrowedSearch = {};
    expect(await narrowedSearches().run(scope, () => search({ user: sam, value: interrupted }))).toEqual({ graph_id: "desk" });
    expect(scope.reviewer).toBe("sam");
    // A values filter would count or find threads the reviewer may not open.
    const probing: NarrowedSearch = {};
    expect(await narrowedSearches().run(probing, () => search({ user: sam, value: { ...interrupted, values: { messages: {} } } }))).toEqual({ owner: "sam" });
    expect(probing.reviewer).toBeUndefined();
    // A customer is no reviewer, middleware or not.
    const customer: NarrowedSearch = {};
    expect(await narrowedSearches().run(customer, () => search({ user: { identity: "cara", permissions: ["customer"] }, value: interrupted }))).toEqual({ owner: "cara" });
    expect(customer.reviewer).toBeUndefined();
  });
});
