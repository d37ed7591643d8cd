/**
 * The refund agent as a LangChain v1 `createAgent` agent with eart's `governanceMiddleware`, on
 * LangGraph server: name `agent` in `langgraph.json` (`"refund-middleware":
 * "./examples/server/refund-middleware.ts:agent"`). The server keeps the checkpoints; eart's audit
 * log, effect ledger and thread lock live where `EART_STORE` says, as for examples/server/refund.ts.
 */
import Database from "better-sqlite3";
import pg from "pg";
import { createAgent } from "langchain";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { serveAgent, serverStores } from "eart/server";
import { refundAgentOptions } from "../refund/agent.js";

const stores = await serverStores();
const storage = stores.kind === "sqlite" ? new Database(stores.location) : new pg.Pool({ connectionString: process.env.EART_STORE });
if (storage instanceof Database) {
  storage.pragma("journal_mode = WAL");
  storage.pragma("busy_timeout = 5000");
}
const { options: refund } = await refundAgentOptions(storage);
const { auditLog, ledger, threadLock } = stores.forAgent;

const governance = governanceMiddleware({ identities: refund.identities, policy: refund.policy, execution: refund.execution, recoveryRoles: refund.recoveryRoles, auditLog, ledger });

/** The refund agent, acting as `support-agent` for the user eart's server auth authenticated. */
export const agent = serveAgent(
  guardAgent(createAgent({ model: refund.model, tools: refund.tools, systemPrompt: refund.systemPrompt, middleware: [governance] }), governance, { lock: threadLock }),
  governance,
  { agentId: "support-agent", graphId: "refund-middleware" },
);
