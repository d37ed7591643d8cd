/** Wiring: the prebuilt governed agent and the resume guard. */
export * from "./governed-agent.js";
export * from "./resume-guard.js";
export * from "./run-thread.js";
export * from "./app.js";
