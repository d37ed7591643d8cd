/**
 * An app for the CLI tests (`eart --app dist/test/processes/cli-app.js`), on one SQLite file
 * (`EART_CLI_FILE`), in one of three scenarios (`EART_CLI_SCENARIO`), each paused on a human task
 * of its own kind:
 *   - `multi`: the model proposes three refunds in one turn, all above the supervisor limit;
 *   - `recovery`: two $50 refunds the payments system refuses, waiting for a human to recover them;
 *   - `review`: an unsure model, escalated to a reviewer.
 * `EART_CLI_AGENT` names the agent the app registers the graph under (default `support-agent`,
 * the agent the threads run): another name makes an app that does not register the threads' agent.
 *
 *   node dist/test/processes/cli-app.js start <thread>   starts a thread as cara and stops at its pause
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import { tool } from "@langchain/core/tools";
import Database from "better-sqlite3";
import { z } from "zod";
import { ToolPermissionError } from "eart";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedAgent, defineApp } from "eart/graphs";
import { scriptedModel } from "eart/testing";
import { refundIdentities } from "../../examples/refund/agent.js";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";

type Call = { id: string; name: string; args: Record<string, unknown> };

/** A model that proposes `turns[i]` on its i-th turn, then answers with text (the same in every process). */
const turnsModel = (turns: Call[][]) =>
  scriptedModel((messages: BaseMessage[]) => {
    const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
    const calls = turns[turn];
    return calls ? new AIMessage({ content: "", tool_calls: calls }) : new AIMessage(`done after ${turn} turns`);
  });

const refund = (id: string, orderId: string, amount: number): Call => ({ id, name: "issue_refund", args: { orderId, amount } });

/** The scenario's graph, its audit log and a close. */
function openScenario(file: string, scenario: string) {
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const auditLog = new SqliteAuditLog({ database: db });
  const tools = createRefundTools(db);
  const common = { identities: refundIdentities(), policy: refundPolicy, checkpointer: new SqliteSaver(db), auditLog, ledger: new SqliteEffectLedger({ database: db }) };
  let agent;
  if (scenario === "multi") {
    agent = createGovernedAgent({ ...common, model: turnsModel([[refund("c1", "1042", 740), refund("c2", "1042", 300), refund("c3", "1043", 250)]]), tools: tools.all });
  } else if (scenario === "recovery") {
    const refusedByPayments = tool(
      async () => {
        throw new ToolPermissionError("payments refused the agent's key");
      },
      { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) },
    );
    agent = createGovernedAgent({ ...common, model: turnsModel([[refund("c1", "1043", 50), refund("c2", "1043", 40)]]), tools: [tools.lookupOrder, refusedByPayments], recoveryRoles: ["supervisor"] });
  } else if (scenario === "review") {
    const unsure = scriptedModel((_: BaseMessage[]) => new AIMessage(JSON.stringify({ answer: "Probably fine.", confidence: 0.2 })));
    agent = createGovernedAgent({ ...common, model: unsure, tools: tools.all, escalation: { reviewerRoles: ["supervisor"], confidence: { threshold: 0.7 } } });
  } else {
    throw new Error(`unknown EART_CLI_SCENARIO "${scenario}"`);
  }
  const refunds = () => db.prepare(`SELECT order_id AS orderId, amount, tool_call_id AS toolCallId FROM refunds ORDER BY id`).all();
  return { agent, auditLog, refunds, close: () => db.close() };
}

export default function cliApp() {
  const { agent, auditLog, close } = openScenario(resolve(process.env.EART_CLI_FILE!), process.env.EART_CLI_SCENARIO ?? "multi");
  return defineApp({ auditLog, graphs: { [process.env.EART_CLI_AGENT || "support-agent"]: agent }, close });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url) && process.argv[2] === "start") {
  const { agent, close } = openScenario(resolve(process.env.EART_CLI_FILE!), process.env.EART_CLI_SCENARIO ?? "multi");
  const text = process.env.EART_CLI_SCENARIO === "review" ? "Is my refund approved?" : "Please refund my orders.";
  await agent.invoke({ messages: [new HumanMessage(text)] }, { configurable: { thread_id: process.argv[3]!, agent_id: "support-agent", user_id: "cara" } });
  close();
}
