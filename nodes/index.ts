/** LangGraph node factories and the state channels they share. */
export * from "../langgraph/channels.js";
export * from "./identity-binding.js";
export * from "./model-node.js";
export * from "./governed-tool-node.js";
export { lastAIMessage, requireThreadId } from "../langgraph/run.js";
export { EffectLedgerOption } from "../langgraph/records.js";
export * from "./tool-recovery.js";
export * from "./context-retrieval.js";
export * from "./trace-export.js";
export { redactingAuditLog, redactMessage, redactRunInput, type RedactionViewer } from "./redaction.js";
