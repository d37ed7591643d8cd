import { readFileSync } from "node:fs";
import { AIMessage } from "@langchain/core/messages";
import { Command, MemorySaver } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { createAgent } from "langchain";
import { describe, expect, it } from "vitest";
import { definePolicy, IdentityRegistry, MemoryAuditLog, MemoryEffectLedger, pendingApproval } from "eart";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { scriptedModel } from "eart/testing";
import { createRefundTools } from "../../examples/refund/tools.js";

const QUICK_START = "## Quick start: LangChain v1 `createAgent` with eart's middleware";

// The README's createAgent quick start, run as written (and held to the README's text below).
describe("governanceMiddleware, the README's quick start", () => {
  it("pauses the $250 refund for sam and runs it once after his HITL-shaped approve", async () => {
    const db = new Database(":memory:");
    const tools = createRefundTools(db).all;
    const model = scriptedModel((messages) =>
      messages.some((m) => AIMessage.isInstance(m))
        ? new AIMessage("Refund sent.")
        : new AIMessage({ content: "", tool_calls: [{ id: "r1", name: "issue_refund", args: { orderId: "1042", amount: 250 } }] }),
    );
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

    // --- quick start ---
    const governance = governanceMiddleware({ identities: registry, policy, auditLog, ledger });
    const agent = guardAgent(createAgent({ model, tools, checkpointer: new MemorySaver(), middleware: [governance] }), governance);

    const config = { configurable: { thread_id: "refund-1042", agent_id: "support-agent", user_id: "cara" } };
    const paused = await agent.invoke({ messages: [{ role: "user", content: "Refund $250 on order 1042" }] }, config);
    const request = pendingApproval(paused); // eart's request; paused.__interrupt__[0].value also has LangChain's HITL fields
    const done = await agent.invoke(
      new Command({ resume: { decisions: [{ type: "approve" }] } }), // LangChain's HITL answer, or eart's keyed one
      { configurable: { thread_id: "refund-1042", user_id: "sam" } }, // the approver is who resumes, never a name in the payload
    );
    // --- end of quick start ---

    expect(request?.requests[0]).toMatchObject({ name: "issue_refund", args: { orderId: "1042", amount: 250 }, approverRoles: ["supervisor"] });
    expect(done.messages.at(-1)?.content).toBe("Refund sent.");
    expect(db.prepare("SELECT amount FROM refunds").all()).toEqual([{ amount: 250 }]);
    expect((await auditLog.read("refund-1042")).find((e) => e.type === "approval.decided")?.data).toMatchObject({ approverId: "sam", status: "approved" });
    expect(await auditLog.verify("refund-1042")).toMatchObject({ ok: true });
  });

  it("is the code the README shows", () => {
    const readme = readFileSync("README.md", "utf8");
    const section = readme.slice(readme.indexOf(QUICK_START));
    expect(readme.indexOf(QUICK_START)).toBeGreaterThan(0);
    const block = /```ts\n([\s\S]*?)```/.exec(section)![1]!;
    const source = readFileSync(new URL(import.meta.url), "utf8");
    const quick = source.slice(source.indexOf("// --- quick start ---"), source.indexOf("// --- end of quick start ---"));
    const code = (text: string) =>
      text
        .split("\n")
        .map((l) => l.replace(/\/\/.*$/, "").trim())
        .filter((l) => l !== "" && !l.startsWith("import "));
    expect(code(block)).toEqual(code(quick));
  });
});
