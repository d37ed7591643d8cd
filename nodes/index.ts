/** LangGraph node factories and the state channels they share (`eart/nodes`). */
export { GovernedAnnotation, GovernedChannels, type GovernedState, type GovernedUpdate } from "../langgraph/channels.js";
export { lastAIMessage, requireThreadId } from "../langgraph/run.js";
export { createIdentityBinding, identityClaimFromConfig, type IdentityBindingOptions } from "./identity-binding.js";
export { createModelNode, type ModelNodeOptions } from "./model-node.js";
export { createGovernedToolNode, executionContextOf, type ExecutionContext, type GovernedToolNodeOptions } from "./governed-tool-node.js";
export { createToolRecovery, type ToolRecoveryOptions } from "./tool-recovery.js";
export {
  createContextRetrieval,
  type ContextFunction,
  type ContextProvider,
  type ContextRetrievalOptions,
  type RequiredFact,
  type RetrieverLike,
} from "./context-retrieval.js";
export { createTraceExportNode, type TraceExportNodeOptions } from "./trace-export.js";
export { redactError, redactingAuditLog, redactMessage, redactRunInput, type RedactionViewer } from "./redaction.js";
export { RedactingTracer, redactedTracing } from "./tracing.js";
