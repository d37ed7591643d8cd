/**
 * eart: the runtime core. Identity, policy engines, the approval protocol, the audit log and
 * the state records shared by the nodes (`eart/nodes`), guards (`eart/guards`) and graphs
 * (`eart/graphs`).
 */
export * from "./errors.js";
export * from "./internal/canonical.js";
export * from "./identity/registry.js";
export * from "./policy/engine.js";
export * from "./decisions/records.js";
export * from "./human-tasks/approval.js";
export {
  authenticateHuman,
  checkHumanAnswer,
  HUMAN_TASK_TYPES,
  HumanTaskEnvelopeSchema,
  NamedHumanSchema,
  pendingHumanTask,
  type HumanAnswerDeps,
  type HumanTaskEnvelope,
  type HumanTaskType,
} from "./human-tasks/protocol.js";
export {
  AUDIT_SCHEMA_VERSION,
  AuditLogOption,
  AuditEventInputSchema,
  AuditEventSchema,
  AuditEventTypeSchema,
  AuditSigningKeyOption,
  continuesChain,
  GENESIS_HASH,
  MemoryAuditLog,
  sealEvents,
  sealedDataJson,
  verifyChain,
  type AuditBreak,
  type AuditEvent,
  type AuditEventInput,
  type AuditEventType,
  type AuditLog,
  type AuditVerification,
  type AuditVerifyOptions,
  type ChainHead,
  type GlobalLogSnapshot,
  type MemoryAuditLogOptions,
  type VerifyChainOptions,
} from "./audit/log.js";
export {
  GLOBAL_GENESIS_HASH,
  globalEntryHash,
  globalHeadSignatureProblem,
  SignedGlobalHeadSchema,
  verifyGlobalLog,
  type AuditStoreProblem,
  type GlobalEntry,
  type GlobalHead,
  type GlobalVerifyOptions,
  type SignedGlobalHead,
  type ThreadHead,
} from "./audit/global.js";
export { verifyAuditStore, type AuditStoreVerification } from "./audit/verify.js";
export { JsonlAuditLog, type JsonlAuditLogOptions } from "./audit/jsonl.js";
export {
  auditKeyId,
  generateAuditSigningKey,
  signChainHead,
  SIGNED_HEAD_SCHEMA_VERSION,
  SignedChainHeadSchema,
  verifyHeadSignature,
  type AuditPublicKey,
  type AuditSigningKey,
  type HeadSignatureCheck,
  type SignedChainHead,
} from "./audit/signing.js";
export { parseOptions } from "./internal/options.js";
export { recordedRequest, replay, type ReplayFlip, type ReplayReport } from "./policy/replay.js";
export {
  BudgetGuardOption,
  BudgetRequestSchema,
  BudgetRuleSchema,
  BudgetVerdictSchema,
  defineBudgets,
  MemoryBudgetStore,
  type BudgetGuard,
  type BudgetOptions,
  type BudgetRequest,
  type BudgetRuleInput,
  type BudgetStore,
  type BudgetVerdict,
} from "./policy/budget.js";
export {
  idempotencyKeyOf,
  LEDGER_SCHEMA_VERSION,
  LedgerEntrySchema,
  LedgerInputError,
  LedgerKeySchema,
  LedgerOutcomeSchema,
  LedgerStatusSchema,
  MemoryEffectLedger,
  type EffectLedger,
  type LedgerBegin,
  type LedgerEntry,
  type LedgerKey,
  type LedgerOutcome,
  type LedgerStatus,
} from "./ledger/ledger.js";
export { ledgerFor, threadLockFor } from "./stores/for-checkpointer.js";
export { ANSWERED_STATUSES, assertTransition, DecisionTransitionError, RUNNABLE_STATUSES, STATUS_OF_EFFECT, WAITING_STATUSES } from "./decisions/lifecycle.js";
export { approvalKeysFromFile, ApprovalTokenClaimsSchema, parseApprovalKeys, signApprovalToken, type ApprovalKeys, type ApprovalTokenClaims } from "./human-tasks/approval-token.js";
export { bindIdentityOnce, lazySealer, processSealKey, Sealer, SEAL_KEY_BYTES, type SealKeySource } from "./decisions/seal.js";
export * from "./tools/resilience.js";
export * from "./human-tasks/recovery.js";
export {
  holderLiveness,
  MemoryThreadLock,
  processInstance,
  type LockHolder,
  type ProcessInstance,
  type ReleaseThreadLock,
  type ThreadLock,
} from "./threads/lock.js";
export * from "./context/context.js";
export * from "./context/redaction.js";
export * from "./human-tasks/escalation.js";
export * from "./export/core.js";
export {
  deterministicUuid7,
  ExportRedactionOption,
  redactEvent,
  SegmentTracker,
  standardRedaction,
  type CallFacts,
  type ExportRedactor,
  type RedactedEvent,
  type Segment,
  type SegmentLink,
  type SegmentOutcome,
  type TraceHandlers,
  type WaitingFor,
} from "./export/segments.js";
export * from "./export/jsonl.js";
