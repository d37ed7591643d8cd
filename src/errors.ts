/**
 * Typed errors. Every error eart throws extends {@link EartError} and carries a stable `code`
 * from a closed union plus structured fields, so callers branch on data rather than prose.
 *
 * Caller misconfiguration ({@link EartConfigError}) and refused runtime input are separate
 * classes. Graph interrupts are never wrapped in any of these.
 */

/** Every code an {@link EartError} can carry. */
export const EART_ERROR_CODES = [
  "config_invalid",
  "identity_registry_invalid",
  "identity_unknown_agent",
  "identity_unknown_user",
  "identity_missing",
  "identity_unauthenticated",
  "identity_agent_refused",
  "identity_immutable",
  "policy_invalid",
  "approval_resume_invalid",
  "approval_decisions_mismatch",
  "approval_unauthorized",
  "approval_self_approval",
  "approval_digest_mismatch",
  "approval_edit_not_permitted",
  "approval_expired",
  "approval_unauthenticated",
  "approval_principal_mismatch",
  "approval_token_invalid",
  "approval_token_expired",
  "approval_token_replayed",
  "approval_already_answered",
  "state_write_refused",
  "state_tamper_detected",
  "thread_unknown",
  "thread_not_paused",
  "thread_awaiting_approval",
  "thread_of_another_graph",
  "thread_unbound",
  "thread_unfinished",
  "audit_store_failure",
  "audit_input_invalid",
  "ledger_input_invalid",
  "thread_busy",
  "thread_lock_lost",
  "effect_in_progress",
  "tool_timeout",
  "tool_arguments_invalid",
  "tool_permission_denied",
  "circuit_open",
  "model_unavailable",
  "input_too_deep",
  "tool_record_incomplete",
  "store_timeout",
  "store_unavailable",
  "store_failure",
] as const;

/** Every code an {@link EartError} can carry. */
export type EartErrorCode = (typeof EART_ERROR_CODES)[number];

const KNOWN_CODES: ReadonlySet<string> = new Set(EART_ERROR_CODES);

/** The store an error is about, and what it was doing. */
type StoreDetails = { store: StoreName; operation: string; retried?: boolean; pgCode?: string; timeoutMs?: number; [detail: string]: unknown };
type ThreadDetails = { threadId: string };
type CallDetails = { threadId: string; toolCallId: string; attempt: number };

/**
 * The `details` of each code whose details have a fixed shape; the others carry what their
 * refusal is about (`Record<string, unknown>`). {@link isEartError} narrows to these.
 */
export interface EartErrorDetailsByCode {
  config_invalid: { field: string; [detail: string]: unknown };
  identity_registry_invalid: { entry: string };
  policy_invalid: { ruleId?: string };
  thread_unknown: ThreadDetails;
  thread_not_paused: ThreadDetails;
  thread_awaiting_approval: ThreadDetails;
  thread_of_another_graph: ThreadDetails;
  thread_unbound: ThreadDetails;
  thread_unfinished: ThreadDetails;
  thread_busy: ThreadDetails & { holder?: string };
  thread_lock_lost: ThreadDetails;
  effect_in_progress: CallDetails;
  tool_record_incomplete: CallDetails & { resultPreview: string };
  tool_timeout: { tool: string; timeoutMs: number };
  circuit_open: { tool: string; openUntil: string };
  model_unavailable: { failures: { model: number; attempt: number; error: string }[] };
  input_too_deep: { limit: number; where: string };
  audit_input_invalid: { where: string };
  ledger_input_invalid: { where: string; field: string };
  store_timeout: StoreDetails;
  store_unavailable: StoreDetails;
  store_failure: StoreDetails;
  audit_store_failure: StoreDetails;
}

/** The `details` of an error with code `C`. */
export type EartErrorDetails<C extends EartErrorCode> = C extends keyof EartErrorDetailsByCode ? EartErrorDetailsByCode[C] : Readonly<Record<string, unknown>>;

/**
 * Base class of every eart error.
 * @example
 * ```ts
 * try { await graph.invoke(new Command({ resume }), config); }
 * catch (e) { if (isEartError(e, "approval_unauthorized")) deny(); else throw e; }
 * ```
 */
export class EartError extends Error {
  readonly code: EartErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: EartErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/**
 * Whether a value is an error eart threw, with the given code when one is named. Reads the error's
 * shape (an `Error` whose `code` is one of {@link EART_ERROR_CODES}, with `details`), not its class:
 * it holds where `instanceof` fails, across realms (a worker, a `vm` context, an error revived from
 * a server response) and when two copies of eart are installed. Narrows `details` to what that
 * code carries ({@link EartErrorDetailsByCode}).
 * @example
 * ```ts
 * try { await agent.invoke(new Command({ resume }), config); }
 * catch (e) { if (isEartError(e, "approval_self_approval")) return "You cannot approve your own request."; throw e; }
 * ```
 */
export function isEartError<C extends EartErrorCode = EartErrorCode>(value: unknown, code?: C): value is EartError & { code: C; details: EartErrorDetails<C> } {
  try {
    return hasEartShape(value, code);
  } catch {
    return false; // a Proxy whose traps throw, a getter that throws: not an error eart made
  }
}

/**
 * The eart error a thrown value is, or wraps: LangChain's `createAgent` wraps what middleware
 * throws (a `MiddlewareError` with the original as `cause`), so an eart error raised by
 * `governanceMiddleware` reaches the caller inside one. Follows `cause` a few levels; undefined
 * when there is no eart error (of that code) there.
 * @example
 * ```ts
 * try { await agent.invoke(new Command({ resume }), config); }
 * catch (e) { if (eartErrorOf(e, "approval_self_approval")) return "You cannot approve your own request."; throw e; }
 * ```
 */
export function eartErrorOf<C extends EartErrorCode = EartErrorCode>(value: unknown, code?: C): (EartError & { code: C; details: EartErrorDetails<C> }) | undefined {
  let current: unknown = value;
  for (let depth = 0; depth < 8 && current !== undefined && current !== null; depth++) {
    if (isEartError(current, code)) return current;
    try {
      current = (current as { cause?: unknown }).cause;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function hasEartShape(value: unknown, code: EartErrorCode | undefined): boolean {
  if (typeof value !== "object" || value === null) return false;
  const e = value as { code?: unknown; details?: unknown; name?: unknown; message?: unknown };
  if (typeof e.code !== "string" || !KNOWN_CODES.has(e.code)) return false;
  if (typeof e.name !== "string" || !e.name.endsWith("Error") || typeof e.message !== "string") return false;
  if (typeof e.details !== "object" || e.details === null) return false;
  return code === undefined || e.code === code;
}

/**
 * A factory or registry was given options that do not validate. `field` names the bad option.
 * @example
 * ```ts
 * createPolicyGate({}) // throws EartConfigError { field: "policy" }
 * ```
 */
export class EartConfigError extends EartError {
  readonly field: string;
  constructor(field: string, message: string, details: Record<string, unknown> = {}) {
    super("config_invalid", `Invalid option "${field}": ${message}`, { field, ...details });
    this.field = field;
  }
}

/**
 * An identity registry (object or JSON file) that does not validate; `entry` names the bad entry,
 * e.g. `agents[1].tools`.
 * @example
 * ```ts
 * IdentityRegistry.fromObject({ agents: [{ id: "" }] }) // throws, entry "agents[0].id"
 * ```
 */
export class IdentityRegistryError extends EartError {
  readonly entry: string;
  constructor(entry: string, message: string) {
    super("identity_registry_invalid", `Identity registry entry ${entry}: ${message}`, { entry });
    this.entry = entry;
  }
}

/**
 * The run configuration names an agent or user the registry does not know, or names none.
 * Nothing runs.
 * @example
 * ```ts
 * await graph.invoke(input, { configurable: { thread_id: "t", agent_id: "ghost", user_id: "u" } }); // throws
 * ```
 */
export class IdentityResolutionError extends EartError {
  constructor(code: "identity_unknown_agent" | "identity_unknown_user" | "identity_missing" | "identity_unauthenticated" | "identity_agent_refused", message: string, details: Record<string, unknown> = {}) {
    super(code, message, details);
  }
}

/**
 * Something tried to change the identity already bound to a thread.
 * @example
 * ```ts
 * await graph.updateState(config, { identity: other }); // throws IdentityImmutableError
 * ```
 */
export class IdentityImmutableError extends EartError {
  constructor(boundAgentId: string, boundUserId: string, attempted: { agentId?: string; userId?: string }) {
    super(
      "identity_immutable",
      `The identity of this thread is bound to agent "${boundAgentId}" acting for "${boundUserId}" and cannot be changed`,
      { boundAgentId, boundUserId, attempted },
    );
  }
}

/**
 * A policy definition that does not validate (duplicate rule id, missing approver roles...).
 * @example
 * ```ts
 * definePolicy({ rules: [{ id: "a", effect: "require_approval" }] }) // throws: approverRoles missing
 * ```
 */
export class PolicyDefinitionError extends EartError {
  readonly ruleId: string | undefined;
  constructor(message: string, ruleId?: string) {
    super("policy_invalid", message, { ruleId });
    this.ruleId = ruleId;
  }
}

/** Codes of refused approval resumes. */
export type ApprovalErrorCode =
  | "approval_resume_invalid"
  | "approval_decisions_mismatch"
  | "approval_unauthorized"
  | "approval_self_approval"
  | "approval_digest_mismatch"
  | "approval_edit_not_permitted"
  | "approval_expired"
  | "approval_unauthenticated"
  | "approval_principal_mismatch"
  | "approval_token_invalid"
  | "approval_token_expired"
  | "approval_token_replayed"
  | "approval_already_answered";

/**
 * A resume value for an approval interrupt was refused. Nothing ran, and the thread stays paused
 * on the same request, so a correct resume still works.
 * @example
 * ```ts
 * catch (e) { if (e instanceof ApprovalError) console.error(e.code, e.toolCallId); }
 * ```
 */
export class ApprovalError extends EartError {
  readonly toolCallId: string | undefined;
  constructor(code: ApprovalErrorCode, message: string, details: Record<string, unknown> & { toolCallId?: string } = {}) {
    super(code, message, details);
    this.toolCallId = details.toolCallId;
  }
}

/**
 * A caller tried to write what only eart's nodes may write, or eart found graph state that its
 * own stores do not back. `state_write_refused`: a `Command` from outside carrying `update` or
 * `goto`, an `updateState` of an eart channel, LangGraph's `Overwrite` on an eart channel, or a
 * resume payload that could smuggle a prototype; nothing was stored. `state_tamper_detected`: a
 * decision record or an identity in state without eart's seal for this thread (forged through
 * `updateState`, `Command` or the checkpoint store); nothing ran, and the audit log has a
 * `state.tamper_detected` event.
 * @example
 * ```ts
 * await agent.invoke(new Command({ goto: "tools", update: { decisions } }), config); // throws StateTamperError "state_write_refused"
 * ```
 */
export class StateTamperError extends EartError {
  readonly threadId: string | undefined;
  constructor(code: "state_write_refused" | "state_tamper_detected", message: string, details: Record<string, unknown> & { threadId?: string } = {}) {
    super(code, message, details);
    this.threadId = details.threadId;
  }
}

/**
 * A resume was sent to a thread that does not exist or is not paused (LangGraph ignores such
 * resumes silently; eart refuses them), or new input was sent to a thread that waits for an
 * approval (answer the approval first) or whose last run stopped before it ran the calls eart let
 * run (`thread_unfinished`: continue it first).
 * @example
 * ```ts
 * await agent.invoke(new Command({ resume }), { configurable: { thread_id: "nope" } }); // throws
 * ```
 */
export class ThreadStateError extends EartError {
  readonly threadId: string;
  constructor(code: "thread_unknown" | "thread_not_paused" | "thread_awaiting_approval" | "thread_of_another_graph" | "thread_unbound" | "thread_unfinished", threadId: string, message: string) {
    super(code, message, { threadId });
    this.threadId = threadId;
  }
}


/**
 * Input a caller gave that eart refuses, before anything is written: the one class to catch for
 * refused data (an audit event, a ledger key or outcome, a value nested too deep). `where` says what
 * was being read. Its subclasses name the store or walk that refused it.
 * @example
 * ```ts
 * catch (e) { if (e instanceof InputError) return badRequest(e.code, e.where); }
 * ```
 */
export class InputError extends EartError {
  readonly where: string;
  constructor(code: "audit_input_invalid" | "ledger_input_invalid" | "input_too_deep", where: string, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(code, message, { where, ...details }, options);
    this.where = where;
  }
}

/**
 * An event handed to an audit log does not validate (unknown type, no thread id...). Nothing of
 * that append is stored.
 * @example
 * ```ts
 * await log.append({ threadId: "t1", type: "made.up" }); // throws AuditInputError
 * ```
 */
export class AuditInputError extends InputError {
  constructor(message: string) {
    super("audit_input_invalid", "audit event", `Invalid audit event: ${message}`);
  }
}

/**
 * Another run holds the thread's lock (a resume or run in this or another process). Nothing ran;
 * try again when that run has finished.
 * @example
 * ```ts
 * catch (e) { if (e instanceof ThreadBusyError) return reply(409, { thread: e.threadId }); }
 * ```
 */
export class ThreadBusyError extends EartError {
  readonly threadId: string;
  constructor(threadId: string, holder?: string) {
    super("thread_busy", `Thread "${threadId}" is busy: another run holds its lock${holder ? ` (${holder})` : ""}`, { threadId, ...(holder ? { holder } : {}) });
    this.threadId = threadId;
  }
}

/**
 * The effect ledger shows the same tool call being executed by another run right now (its
 * attempt changed under this one). Nothing ran here; the thread can be resumed once the other
 * run has finished. Use a thread lock (`createGovernedAgent` takes one by default) to get a
 * {@link ThreadBusyError} up front instead.
 * @example
 * ```ts
 * catch (e) { if (e instanceof EffectInProgressError) retryLater(e.toolCallId); }
 * ```
 */
export class EffectInProgressError extends EartError {
  readonly toolCallId: string;
  constructor(threadId: string, toolCallId: string, attempt: number) {
    super("effect_in_progress", `Tool call "${toolCallId}" of thread "${threadId}" is being executed by another run (attempt ${attempt})`, {
      threadId,
      toolCallId,
      attempt,
    });
    this.toolCallId = toolCallId;
  }
}

/**
 * A tool did not finish within its `timeout`; its `AbortSignal` was aborted with this error.
 * Whether it had its effect is unknown: an idempotent tool is retried, any other goes to a human.
 * @example
 * ```ts
 * tool(async (args, config) => fetch(url, { signal: config.signal }), { name: "pay", schema });
 * ```
 */
export class ToolTimeoutError extends EartError {
  constructor(tool: string, timeoutMs: number) {
    super("tool_timeout", `Tool ${tool} did not finish within ${timeoutMs} ms`, { tool, timeoutMs });
  }
}

/**
 * Thrown by a tool when the model's arguments are wrong in a way its schema cannot say (an order
 * that does not exist, an amount above the order's total). The only tool failure answered to the
 * model; nothing is retried.
 * @example
 * ```ts
 * if (!order) throw new ToolArgumentError(`no order ${orderId}`);
 * ```
 */
export class ToolArgumentError extends EartError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super("tool_arguments_invalid", message, details);
  }
}

/**
 * Thrown by a tool when the system it calls refuses the agent's credentials. Not retried and not
 * shown to the model as its mistake: audited and handed to a human.
 * @example
 * ```ts
 * if (res.status === 403) throw new ToolPermissionError("the payments API refused the agent's key");
 * ```
 */
export class ToolPermissionError extends EartError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super("tool_permission_denied", message, details);
  }
}

/**
 * A tool's circuit breaker is open: it failed too often recently, so calls fail fast until its
 * cool-down has passed.
 * @example
 * ```ts
 * catch (e) { if (e instanceof CircuitOpenError) console.log(e.details.openUntil); }
 * ```
 */
export class CircuitOpenError extends EartError {
  constructor(tool: string, openUntil: string) {
    super("circuit_open", `The circuit breaker of ${tool} is open until ${openUntil}`, { tool, openUntil });
  }
}

/**
 * Every chat model of the agent (the primary and its fallbacks) failed after its retries. Nothing
 * was recorded for the turn; the thread can be run again.
 * @example
 * ```ts
 * catch (e) { if (e instanceof ModelUnavailableError) console.error(e.details.failures); }
 * ```
 */
export class ModelUnavailableError extends EartError {
  constructor(failures: { model: number; attempt: number; error: string }[], options?: { cause?: unknown }) {
    super("model_unavailable", `Every model failed (${failures.length} attempts); last error: ${failures.at(-1)?.error ?? "none"}`, { failures }, options);
  }
}

/**
 * The connection that held a thread's lock was lost during the run (database restart, failover,
 * session killed). The run is aborted with this error, since another process may now take the
 * thread; what already ran is in the effect ledger, so resuming the thread later is safe.
 * @example
 * ```ts
 * catch (e) { if (e instanceof ThreadLockLostError) scheduleResume(e.threadId); }
 * ```
 */
export class ThreadLockLostError extends EartError {
  readonly threadId: string;
  constructor(threadId: string, cause?: unknown) {
    super("thread_lock_lost", `The lock of thread "${threadId}" was lost during the run: ${(cause as Error)?.message ?? "connection lost"}`, { threadId }, { cause });
    this.threadId = threadId;
  }
}

/**
 * A tool returned, but its result could not be recorded in the effect ledger even after retries
 * (the store is down). The call is not run again and not reported as failed: its ledger entry
 * stays started, so the next run hands it to a human (or re-runs an idempotent tool), as after a
 * crash at that point. `resultPreview` is what the tool returned (redacted).
 * @example
 * ```ts
 * catch (e) { if (e instanceof ToolRecordError) alertOperator(e.toolCallId, e.resultPreview); }
 * ```
 */
export class ToolRecordError extends EartError {
  readonly toolCallId: string;
  readonly resultPreview: string;
  constructor(threadId: string, toolCallId: string, attempt: number, resultPreview: string, cause: unknown) {
    super(
      "tool_record_incomplete",
      `Tool call "${toolCallId}" of thread "${threadId}" succeeded (attempt ${attempt}), but its result could not be recorded: ${(cause as Error)?.message ?? String(cause)}`,
      { threadId, toolCallId, attempt, resultPreview },
      { cause },
    );
    this.toolCallId = toolCallId;
    this.resultPreview = resultPreview;
  }
}

/** The stores behind a {@link StoreError}. */
export type StoreName = "effect_ledger" | "thread_lock" | "budget_store" | "checkpointer" | "audit_log";

/**
 * An eart store (the effect ledger, a thread lock, the budget counters) did not answer. An
 * internal fault, never a verdict: the operation did nothing that the caller can rely on, and the
 * run stops (fail closed); run or resume the thread again once the store is back.
 * - `store_timeout`: no answer within the store's bound (`timeoutMs`), e.g. every connection of
 *   the pool is busy or the server hangs;
 * - `store_unavailable`: the connection was lost or could not be made (server restarted, session
 *   terminated, network down). A read is retried once on a new connection before this is thrown
 *   (`details.retried`);
 * - `store_failure`: the store answered with an error (a bug, a full disk, a corrupt row).
 * @example
 * ```ts
 * catch (e) { if (e instanceof StoreError && e.code !== "store_failure") retryLater(threadId); }
 * ```
 */
export class StoreError extends EartError {
  readonly store: StoreName;
  readonly operation: string;
  constructor(
    code: "store_timeout" | "store_unavailable" | "store_failure" | "audit_store_failure",
    store: StoreName,
    operation: string,
    message: string,
    details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    // An audit log's messages name their store and what failed themselves.
    super(code, code === "audit_store_failure" ? message : `${store} ${operation}: ${message}`, { store, operation, ...details }, options);
    this.store = store;
    this.operation = operation;
  }
}

/**
 * An audit store could not be read or written: the {@link StoreError} of the audit log (store
 * `audit_log`, code `audit_store_failure`). Raised, never swallowed: a step that cannot be recorded
 * does not run.
 * @example
 * ```ts
 * catch (e) { if (e instanceof StoreError) alertOps(e.store, e.message); }
 * ```
 */
export class AuditStoreError extends StoreError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("audit_store_failure", "audit_log", "access", message, {}, options);
  }
}

/**
 * A value nests arrays and objects deeper than eart walks: `limit` levels (512 for canonical JSON
 * and digests, 256 for retrieved context). Thrown instead of a stack overflow; `where` says what
 * was being read. Nothing was written.
 * @example
 * ```ts
 * catch (e) { if (e instanceof InputTooDeepError) console.error(e.details.limit, e.details.where); }
 * ```
 */
export class InputTooDeepError extends InputError {
  readonly limit: number;
  constructor(limit: number, where: string, options?: { cause?: unknown }) {
    super("input_too_deep", where, `${where} nests arrays and objects deeper than ${limit} levels`, { limit }, options);
    this.limit = limit;
  }
}

/** An error a LangGraph server run ended with, as a client reads it. */
export interface ServerError {
  /** The error's class name (`ApprovalError`, `ThreadStateError`, …). */
  name: string;
  /** eart's code when eart raised it (the message leads with it), else undefined. */
  code: EartErrorCode | undefined;
  message: string;
}


/**
 * Reads the `{ error, message }` LangGraph server sends for a failed run (in `runs.wait`'s
 * `__error__`, a stream's `error` event, or the Error the SDK throws with it) back into eart's code
 * and message.
 * @example
 * ```ts
 * const out = await client.runs.wait(threadId, "refund", { command: { resume } });
 * const failed = parseServerError((out as { __error__?: unknown }).__error__);
 * if (failed?.code === "thread_awaiting_approval") …
 * ```
 */
export function parseServerError(value: unknown): ServerError | undefined {
  if (value instanceof Error) {
    // The SDK throws the server's `{ error, message }` as the text of an Error.
    const json = /\{[\s\S]*\}\s*$/.exec(value.message)?.[0];
    if (json) {
      try {
        return parseServerError(JSON.parse(json));
      } catch {
        // not the server's body
      }
    }
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const { error, message } = value as { error?: unknown; message?: unknown };
  if (typeof error !== "string" && typeof message !== "string") return undefined;
  const text = typeof message === "string" ? message : "";
  // A run that failed before it started (the server's own wrapper) nests the body in the message.
  if (text.startsWith("{")) {
    try {
      const inner = parseServerError(JSON.parse(text));
      if (inner) return inner;
    } catch {
      // plain text
    }
  }
  const match = /^([a-z_]+): ([\s\S]*)$/.exec(text);
  const code = match && KNOWN_CODES.has(match[1]!) ? (match[1] as EartErrorCode) : undefined;
  return { name: typeof error === "string" ? error : "Error", code, message: code ? match![2]! : text };
}
