/** Wiring: the prebuilt governed agent, the resume guard, running threads and apps (`eart/graphs`). */
export { createGovernedAgent, type GovernedAgent, type GovernedAgentOptions } from "./governed-agent.js";
export { assertResumable, guardResumes } from "./resume-guard.js";
export { createGovernedToolPath, routeAfterGovernedTools, routeToGovernedTools, type GovernedToolPathOptions } from "./tool-path.js";
export { resumeThread, runThread, type ThreadRun, type ThreadRunOptions } from "./run-thread.js";
export { continueThread, defineApp, unfinishedThreads, type AppGraph, type EartApp, type UnfinishedThread } from "./app.js";
