/**
 * Custom auth for the LangGraph dev server (`langgraph.json`): bearer tokens from a demo token
 * file (`EART_TOKENS_FILE`, default examples/server/tokens.json) mapped to the users of the served
 * graphs. A deployment passes `verifyToken` for its identity provider instead of a token file.
 */
import { fileURLToPath } from "node:url";
import { createEartAuth, type EartAuth } from "eart/server";

export const auth: EartAuth = createEartAuth({
  tokens: process.env.EART_TOKENS_FILE ?? fileURLToPath(new URL("./tokens.json", import.meta.url)),
  // The request headers a run keeps (LangGraph server would keep every x-* header and user-agent
  // in the thread's config, for everyone who reads the thread).
  runHeaders: ["x-request-id"],
});
