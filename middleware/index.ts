/**
 * eart for LangChain v1 agents (`eart/middleware`): {@link governanceMiddleware} for `createAgent`,
 * built on the same steps as eart's nodes. Needs `langchain` (an optional peer) installed.
 */
export { GOVERNANCE_CHANNEL_NAMES, governanceMiddleware, guardAgent, type GovernanceMiddlewareOptions } from "./governance.js";
