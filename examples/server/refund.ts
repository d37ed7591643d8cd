/**
 * The governed refund agent on LangGraph server: `langgraph.json` serves `graph` as "refund".
 * LangGraph server keeps the checkpoints; eart's audit log, effect ledger and thread lock live
 * where `EART_STORE` says (default `sqlite:.eart/server.sqlite` under `langgraph dev`; a
 * `postgres://` URL for a deployment), and so does the `refunds` table the refund tool writes.
 */
import Database from "better-sqlite3";
import pg from "pg";
import { createServerAgent, serverStores } from "eart/server";
import { refundAgentOptions } from "../refund/agent.js";

const stores = await serverStores();
const storage = stores.kind === "sqlite" ? new Database(stores.location) : new pg.Pool({ connectionString: process.env.EART_STORE });
if (storage instanceof Database) {
  storage.pragma("journal_mode = WAL");
  storage.pragma("busy_timeout = 5000");
}
const refund = await refundAgentOptions(storage);

/** The refund agent, acting as `support-agent` for the user eart's server auth authenticated. */
export const graph = createServerAgent({ agentId: "support-agent", graphId: "refund", ...refund.options, ...stores.forAgent });
