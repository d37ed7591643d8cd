import { AIMessage, HumanMessage } from "@langchain/core/messages";
import { Annotation, Command, END, MemorySaver, MessagesAnnotation, START, StateGraph } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { definePolicy, IdentityRegistry, MemoryAuditLog, MemoryEffectLedger, pendingApproval, ThreadStateError } from "eart";
import { createIdentityBinding, createModelNode, GovernedChannels } from "eart/nodes";
import { createGovernedToolPath, guardResumes, routeAfterGovernedTools, routeToGovernedTools } from "eart/graphs";
import { scriptedModel } from "eart/testing";
import { createRefundTools } from "../../examples/refund/tools.js";

// The README's "your own StateGraph" quick start, run as written.
describe("eart nodes inside a user's own graph", () => {
  it("governs tool calls beside the user's own channels", async () => {
    const db = new Database(":memory:");
    const tools = createRefundTools(db).all;
    const model = scriptedModel((messages) =>
      messages.some((m) => AIMessage.isInstance(m))
        ? new AIMessage("Refund sent.")
        : new AIMessage({ content: "", tool_calls: [{ id: "r1", name: "issue_refund", args: { orderId: "1042", amount: 250 } }] }),
    );

    // --- quick start ---
    const registry = IdentityRegistry.fromObject({
      roles: { customer: { tools: ["issue_refund", "lookup_order"] }, supervisor: { tools: ["*"] } },
      agents: [{ id: "support-agent", roles: ["support"], tools: ["issue_refund", "lookup_order"], dataScopes: ["orders"] }],
      users: [
        { id: "cara", roles: ["customer"] },
        { id: "sam", roles: ["supervisor"] },
      ],
    });
    const policy = definePolicy({
      name: "refunds",
      rules: [
        { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
        { id: "refund.small", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) <= 100, effect: "allow" },
        { id: "refund.supervisor", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) > 100, effect: "require_approval", approverRoles: ["supervisor"] },
      ],
    });
    const auditLog = new MemoryAuditLog();
    const ledger = new MemoryEffectLedger();

    const State = Annotation.Root({
      ...MessagesAnnotation.spec,
      ...GovernedChannels,
      ticketId: Annotation<string>(), // your own channels stay yours
    });

    const app = guardResumes(
      new StateGraph(State)
        .addNode("bindIdentity", createIdentityBinding({ registry, auditLog, ledger }))
        .addNode("agent", createModelNode({ model, tools, auditLog }))
        .addNode("tools", createGovernedToolPath({ policy, tools, registry, auditLog, ledger, recoveryRoles: ["supervisor"] }))
        .addEdge(START, "bindIdentity")
        .addEdge("bindIdentity", "agent")
        .addConditionalEdges("agent", routeToGovernedTools, { tools: "tools", end: END })
        .addConditionalEdges("tools", routeAfterGovernedTools, { agent: "agent", end: END })
        .compile({ checkpointer: new MemorySaver() }),
      { auditLog, ledger }, // refused answers are recorded; the ledger's key seals the answers it records
    );

    const config = { configurable: { thread_id: "ticket-7", agent_id: "support-agent", user_id: "cara" } };
    await app.invoke({ messages: [new HumanMessage("Refund $250 on order 1042")], ticketId: "T-7" }, config);
    const request = pendingApproval(await app.getState(config))!;
    // The approver is whoever resumes: sam, authenticated by your app (or langgraph_auth_user).
    const { toolCallId, digest } = request.requests[0]!;
    const done = await app.invoke(
      new Command({ resume: { decisions: [{ toolCallId, type: "approve", digest }] } }),
      { configurable: { thread_id: "ticket-7", user_id: "sam" } },
    );
    // --- end of quick start ---

    expect(request.requests[0]).toMatchObject({ name: "issue_refund", args: { orderId: "1042", amount: 250 }, approverRoles: ["supervisor"] });
    expect(done.ticketId).toBe("T-7");
    expect(done.identity).toMatchObject({ id: "support-agent", onBehalfOf: { id: "cara" } });
    expect((await auditLog.read("ticket-7")).find((e) => e.type === "approval.decided")?.data).toMatchObject({ approverId: "sam", status: "approved" });
    expect(done.messages.at(-1)?.content).toBe("Refund sent.");
    expect(db.prepare("SELECT amount FROM refunds").all()).toEqual([{ amount: 250 }]);
    expect(await auditLog.verify("ticket-7")).toMatchObject({ ok: true });
    await expect(app.invoke(new Command({ resume: {} }), config)).rejects.toBeInstanceOf(ThreadStateError);
  });
});
