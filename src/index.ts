/**
 * eart: the runtime core. What a user of the package needs from it, by explicit list: identity,
 * typed policy and budgets, the human tasks (approval, recovery, escalation) and their answers,
 * the audit log and its verification, the effect ledger and thread lock contracts with their
 * memory versions, redaction, trace export, and the typed errors. The nodes, guards and graphs
 * are `eart/nodes`, `eart/guards` and `eart/graphs`; the stores of each backend and the heavy
 * clients have their own entry points (`eart/sqlite`, `eart/postgres`, `eart/cedar`,
 * `eart/langsmith`, `eart/otel`), so importing this one loads no driver.
 */

// Errors: branch on `code` (isEartError works across realms and duplicate installs).
export {
  ApprovalError,
  AuditInputError,
  AuditStoreError,
  CircuitOpenError,
  EART_ERROR_CODES,
  EartConfigError,
  EartError,
  EffectInProgressError,
  IdentityImmutableError,
  IdentityRegistryError,
  IdentityResolutionError,
  InputError,
  InputTooDeepError,
  isEartError,
  ModelUnavailableError,
  PolicyDefinitionError,
  StateTamperError,
  StoreError,
  ThreadBusyError,
  ThreadLockLostError,
  ThreadStateError,
  ToolArgumentError,
  ToolPermissionError,
  ToolRecordError,
  ToolTimeoutError,
  parseServerError,
  eartErrorOf,
  type ServerError,
  type ApprovalErrorCode,
  type EartErrorCode,
  type EartErrorDetails,
  type EartErrorDetailsByCode,
  type StoreName,
} from "./errors.js";
export { DecisionTransitionError } from "./decisions/lifecycle.js";
export { LedgerInputError } from "./ledger/ledger.js";

// Identity.
export {
  IdentityRegistry,
  type AgentDefinition,
  type AgentIdentity,
  type IdentityRegistryDefinition,
  type Principal,
  type RoleDefinition,
  type UserDefinition,
} from "./identity/registry.js";

// Policy and budgets.
export {
  DEFAULT_DENY_POLICY_ID,
  MAX_APPROVAL_EXPIRY_MS,
  definePolicy,
  type PolicyConfig,
  type PolicyDecision,
  type PolicyDefinition,
  type PolicyDescription,
  type PolicyEffect,
  type PolicyEngine,
  type PolicyRequest,
  type PolicyRule,
} from "./policy/engine.js";
export { defineBudgets, MemoryBudgetStore, type BudgetGuard, type BudgetOptions, type BudgetRuleInput, type BudgetStore, type BudgetVerdict } from "./policy/budget.js";
export { toolCallDigest } from "./internal/canonical.js";
export { recordedRequest, replay, type ReplayFlip, type ReplayOptions, type ReplayReport, type UnreplayableDecision } from "./policy/replay.js";

// Decisions in state.
export {
  DecisionRecordSchema,
  type ApprovalRecord,
  type Budget,
  type ContextItem,
  type DecisionRecord,
  type DecisionStatus,
  type Escalation,
  type EscalationSignal,
  type RecoveryReason,
  type Review,
  type ThreadContext,
} from "./decisions/records.js";
export { Sealer } from "./decisions/seal.js";

// Human tasks: what waits for a human, and the answers.
export { HUMAN_TASK_TYPES, pendingHumanTask, type HumanTaskEnvelope, type HumanTaskType } from "./human-tasks/protocol.js";
export {
  isApprovalRequest,
  pendingApproval,
  toHitlRequest,
  validateApprovalResponse,
  type ApprovalDecision,
  type ApprovalRequest,
  type ApprovalRequestItem,
  type ApprovalResponse,
} from "./human-tasks/approval.js";
// LangChain's HITL request (beside eart's fields on the approval interrupt) and positional answer.
export { type HITLRequest, type HITLResponse } from "./human-tasks/hitl.js";
export { approvalKeysFromFile, parseApprovalKeys, signApprovalToken, type ApprovalKeys, type ApprovalTokenClaims } from "./human-tasks/approval-token.js";
export {
  isRecoveryRequest,
  pendingRecovery,
  validateRecoveryResponse,
  type RecoveryDecision,
  type RecoveryRequest,
  type RecoveryRequestItem,
  type RecoveryResponse,
} from "./human-tasks/recovery.js";
export {
  caseDigest,
  isEscalationRequest,
  pendingEscalation,
  validateEscalationResponse,
  type EscalationRequest,
  type EscalationResponse,
} from "./human-tasks/escalation.js";

// Audit.
export {
  AUDIT_SCHEMA_VERSION,
  AuditEventSchema,
  GENESIS_HASH,
  MemoryAuditLog,
  verifyChain,
  type AuditBreak,
  type AuditEvent,
  type AuditEventInput,
  type AuditEventType,
  type AuditLog,
  type AuditVerification,
  type AuditVerifyOptions,
  type MemoryAuditLogOptions,
} from "./audit/log.js";
export {
  AUDIT_EVENT_TYPES,
  AuditEventDataSchemas,
  isAuditEventOf,
  readEventData,
  type AuditEventData,
  type AuditEventReading,
} from "./audit/events.js";
export { JsonlAuditLog, type JsonlAuditLogOptions } from "./audit/jsonl.js";
export { InboxIndex, type PendingKind, type PendingOptions, type PendingTask } from "./audit/inbox.js";
export { verifyGlobalLog, type GlobalHead, type SignedGlobalHead } from "./audit/global.js";
export { verifyAuditStore, type AuditStoreVerification } from "./audit/verify.js";
export { generateAuditSigningKey, verifyHeadSignature, type AuditPublicKey, type AuditSigningKey, type SignedChainHead } from "./audit/signing.js";

// Effect ledger and thread lock: the contracts, the memory versions, and the ones that fit a checkpointer.
export { idempotencyKeyOf, MemoryEffectLedger, type EffectLedger, type LedgerEntry, type LedgerKey, type LedgerOutcome } from "./ledger/ledger.js";
export { MemoryThreadLock, withThreadFence, type ReleaseThreadLock, type ThreadFence, type ThreadLock } from "./threads/lock.js";
export { ledgerFor, threadLockFor } from "./stores/for-checkpointer.js";

// Tool execution options.
export { type RetryOptions, type ToolExecutionOptions } from "./tools/resilience.js";

// Context and redaction.
export { type RetrievalRequest, type RetrievedItem } from "./context/context.js";
export { defineRedaction, STANDARD_REDACTIONS, type MatchPlace, type Redaction, type RedactionRule } from "./context/redaction.js";
export { standardRedaction } from "./export/segments.js";

// Trace export.
export {
  createBatchExporter,
  createTraceExport,
  exportThread,
  type AuditExporter,
  type BatchExporterOptions,
  type ExporterStats,
  type TraceExport,
  type TraceExportOptions,
} from "./export/core.js";
export { createJsonlExporter, type JsonlExporterOptions } from "./export/jsonl.js";
