/**
 * eart on LangGraph server (`eart/server`): governed graphs for `langgraph.json`
 * ({@link createServerAgent}), eart's stores from configuration ({@link serverStores}), and custom
 * auth made for them ({@link createEartAuth}): bearer tokens mapped to users, the authenticated user
 * as the principal of new input and answers, owners and waiting approvers as the only readers of a
 * thread, and the custom app's middleware that narrows a reviewer's search to those threads
 * ({@link createEartHttpMiddleware}).
 */
export { answerableBy, createServerAgent, serveAgent, type ServeAgentOptions, type ServerAgentOptions } from "./agent.js";
export { createEartAuth, type EartAuth, type EartAuthOptions, type VerifyToken } from "./auth.js";
export { createEartHttpMiddleware, type EartHttpContext, type EartHttpMiddleware } from "./http.js";
export { serverStores, type ServerStores } from "./stores.js";
export { parseServerError, type ServerError } from "../src/errors.js";
