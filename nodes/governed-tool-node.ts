import { ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { ToolInputParsingException, type StructuredToolInterface } from "@langchain/core/tools";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import { readEventData, type AuditEventData } from "../src/audit/events.js";
import { HUMAN_TASK_TYPES } from "../src/human-tasks/protocol.js";
import { AuditLogOption, type AuditEvent, type AuditEventInput } from "../src/audit/log.js";
import { recordedRedactions, type Redacted, type Redaction } from "../src/context/redaction.js";
import { ANSWERED_STATUSES, RUNNABLE_STATUSES, WAITING_STATUSES } from "../src/decisions/lifecycle.js";
import { emptyThreadContext, type DecisionRecord, type RecoveryReason } from "../src/decisions/records.js";
import { lazySealer } from "../src/decisions/seal.js";
import { EartConfigError, EffectInProgressError, ToolRecordError, ToolTimeoutError } from "../src/errors.js";
import { IdentityRegistryOption } from "../src/identity/registry.js";
import { proposedCallDigest } from "../src/human-tasks/refusal.js";
import { parseOptions } from "../src/internal/options.js";
import { idempotencyKeyOf, MemoryEffectLedger, type LedgerEntry, type LedgerKey } from "../src/ledger/ledger.js";
import { BudgetGuardOption } from "../src/policy/budget.js";
import { PolicyEngineOption } from "../src/policy/engine.js";
import { CircuitBreaker, classifyToolError, backoffDelay, isRunCancelled, sleep, ToolExecutionOptionsSchema, type ParsedToolExecution } from "../src/tools/resilience.js";
import { answerOf, assertSealed, attemptEventFields, attemptEventIsSealed, recoveryRequestFields, sealDecisions, EffectLedgerOption } from "../langgraph/records.js";
import { answeredAfter, lastAIMessage, requireThreadId } from "../langgraph/run.js";
import { checkToolArgs, indexTools, isGraphControlFlow, isGraphInterrupt, ToolsOption } from "../langgraph/tools.js";
import { approvalsThatCount, decideRecordedCall } from "../langgraph/redecide.js";
import type { GovernedState } from "../langgraph/channels.js";

const GovernedToolNodeOptionsSchema = z
  .object({
    tools: ToolsOption.min(1),
    auditLog: AuditLogOption,
    /** Budgets to charge for each call that ran (the same guard the policy gate checks). */
    budgets: BudgetGuardOption.optional(),
    /**
     * Where executions are recorded so that none runs twice. Defaults to a
     * {@link MemoryEffectLedger}, which only protects within this process: give a SQLite or
     * PostgreSQL ledger for crash safety.
     */
    ledger: EffectLedgerOption.optional(),
    /** Per tool name (or `"*"` for every other tool): idempotency, timeout, retry, breaker, fallback. */
    execution: z.record(z.string(), ToolExecutionOptionsSchema).optional(),
    /**
     * Redaction (`defineRedaction`) applied to every tool result for the thread's identity before
     * the model, the ledger or the audit log sees it; labels it finds raise the thread's sensitivity.
     */
    redaction: z.custom<Redaction>((v) => typeof (v as Redaction)?.apply === "function", "must be a Redaction (defineRedaction)").optional(),
    /**
     * The policy in force, with the `registry` its approver roles are read from. A call allowed or
     * approved under another policy version (the service was redeployed between the decision and
     * the run, say after a crash) is decided again before it runs: it runs only if the policy in
     * force allows it, or asks for roles its earlier approvers hold (enough of them for the
     * quorum); otherwise it is blocked (`tool.blocked`, `policyChanged`) and the model told why.
     * The prebuilt agent passes both.
     */
    policy: PolicyEngineOption.optional(),
    registry: IdentityRegistryOption.optional(),
    /** The clock of circuit breakers and records; injectable for tests. */
    clock: z.custom<() => Date>((v) => typeof v === "function", "must be a function returning a Date").optional(),
    /**
     * The roles the recovery node lets resolve a call the tools could not finish (its `roles`),
     * recorded with each `tool.recovery_requested` so the audit log's inbox lists the request for
     * them (`pending({ role })`). Give the same roles as the recovery node; without them the
     * request records no roles and is listed only without a role filter.
     */
    recoveryRoles: z.array(z.string().min(1)).min(1).optional(),
  })
  .strict();
export type GovernedToolNodeOptions = z.input<typeof GovernedToolNodeOptionsSchema>;

const RESULT_PREVIEW = 2_000;
/** Tries of the ledger's finish after a tool returned, with backoff from FINISH_BACKOFF_MS. */
const FINISH_TRIES = 4;
const FINISH_BACKOFF_MS = 50;
/** `tool.failed` kinds written with a failed ledger entry; the other kinds are tries that failed. */
const FINISHED_FAILURE_KINDS: ReadonlySet<unknown> = new Set(["invalid_arguments", "abandoned"]);

type ToolCall = { id?: string; name: string; args: Record<string, unknown> };
/**
 * `ran`: charged to the budgets as a call that ran (it did, or a human abandoned an attempt that
 * may have acted); `reserved`: this run reserved the call against the budgets again (a human's retry);
 * `earlierAttempt`: it ran again after an attempt that may have acted, which the thread's own
 * counters are charged for too.
 */
type Outcome = { record?: DecisionRecord; message?: ToolMessage; events: AuditEventInput[]; ran?: boolean; labels?: string[]; reserved?: boolean; earlierAttempt?: boolean };

/** A copy of a call's arguments for one try; arguments that cannot be copied (a function a test's model put there) are handed as they are. */
function copyOf(args: Record<string, unknown>): Record<string, unknown> {
  try {
    return structuredClone(args);
  } catch {
    return args;
  }
}

/**
 * What a tool receives in `config.configurable.eart` when the governed tool node runs it: the
 * idempotency key to forward to the system it calls, and which attempt this is.
 * @example
 * ```ts
 * const pay = tool(async (args, config) => {
 *   const { idempotencyKey } = executionContextOf(config)!;
 *   return payments.create(args, { headers: { "Idempotency-Key": idempotencyKey }, signal: config.signal });
 * }, { name: "pay", schema });
 * ```
 */
export interface ExecutionContext {
  idempotencyKey: string;
  key: LedgerKey;
  attempt: number;
}

/** The {@link ExecutionContext} of a tool run by the governed tool node, from the tool's config. */
export function executionContextOf(config: unknown): ExecutionContext | undefined {
  return (config as { configurable?: { eart?: ExecutionContext } } | undefined)?.configurable?.eart;
}

/** The events the tool node writes about one call (each names the call: id, tool, digest). */
type ToolEventType = "tool.started" | "tool.succeeded" | "tool.failed" | "tool.blocked" | "tool.retrying" | "tool.fallback" | "tool.replayed" | "tool.recovery_requested" | "tool.circuit_opened" | "tool.cancelled" | "tool.interrupted";

/** Whether an interrupt a tool raised carries a value shaped as one of eart's human tasks. */
function posesAsHumanTask(error: unknown): boolean {
  const interrupts = (error as { interrupts?: unknown }).interrupts;
  return Array.isArray(interrupts) && interrupts.some((i) => (HUMAN_TASK_TYPES as readonly unknown[]).includes((i as { value?: { type?: unknown } } | null)?.value?.type));
}

/** What a ledger attempt cut short by a cancelled run may have done (`tool.cancelled`'s `outcome`). */
type CancelOutcome = AuditEventData<"tool.cancelled">["outcome"];
/**
 * What the attempt had done when a cancelled run was about to hand it to a human for `reason`:
 * an unknown outcome stays unknown, a failure is a failure, an open breaker never called the tool.
 */
const CANCELLED_BEFORE_RECOVERY: Readonly<Record<RecoveryReason, CancelOutcome>> = {
  outcome_unknown: "unknown",
  timeout: "unknown",
  exhausted: "failed",
  permission_denied: "failed",
  circuit_open: "not_run",
};

/**
 * Whether the attempt a human is asked about for `reason` may have acted: it started the tool,
 * which then threw, timed out or was lost. A breaker that refused the try ran nothing; a downstream
 * that refused the caller's permission did not act.
 */
const mayHaveActedBefore = (reason: RecoveryReason | undefined): boolean => reason !== "circuit_open" && reason !== "permission_denied";

/** What the tool node reads of the state. */
type ToolState = Pick<GovernedState, "messages" | "decisions"> & Partial<Pick<GovernedState, "identity" | "budget" | "context">>;

const errorText = (error: unknown): string => (error as Error)?.message ?? String(error);
const contentText = (content: unknown): string => (typeof content === "string" ? content : JSON.stringify(content));

/**
 * Node that runs the tool calls of the last AI message, each only if the decisions in state
 * allow exactly that call: a record with the same tool call id and the same digest, allowed or
 * approved, not yet run. A call without one is blocked and answered as such, never run.
 *
 * Every execution is recorded in the effect ledger under (thread, tool call id, digest):
 * `started` before the tool runs, `succeeded` / `failed` after. When the node runs again (resume,
 * retry, crash recovery) a finished entry is replayed without calling the tool; a `started` entry
 * with no outcome is retried with the same key when the tool is declared `idempotent`, and
 * otherwise handed to a human (`recovery_pending`, see `createToolRecovery`), never re-run
 * silently. Per tool: a timeout (the tool's `AbortSignal`), retries with exponential backoff, a
 * circuit breaker and a fallback; when they are exhausted the call goes to a human as well. The
 * `tool.started` and outcome events that a crash kept out of the audit log are written from the
 * ledger when the node meets the entry again, marked `reconstructed: "ledger"`.
 *
 * When the ledger and the audit log share one transaction domain (`ledger.commitsWith(auditLog)`:
 * the SQLite stores on one connection, the PostgreSQL ones on one pool, as `sqliteStores`,
 * `postgresStores` and the prebuilt agent's defaults open them), a first execution makes two
 * commits, the two a crash-safe call needs: the claim with `tool.started` before the tool, the
 * outcome with its event (and the call's events before it) after. A failed audit write then
 * leaves no claim; a crash between the two leaves the claim with its start, as above. Otherwise
 * they are four separate writes, in the same order.
 *
 * Only bad model arguments (schema failures, `ToolArgumentError`) go back to the model.
 * Permission refusals and infrastructure failures are audited and routed to a human. Graph
 * interrupts raised inside a tool pass through.
 *
 * A cancelled run (its `config.signal` aborted: a client or server cancel, a multitask
 * `interrupt` / `rollback`) is not a tool failure: no retry, fallback, breaker count or recovery
 * request; `tool.cancelled` is recorded and the abort is rethrown untouched. The ledger entry stays
 * `started`, and `tool.cancelled`'s `outcome` tells the next run what the attempt did: `not_run`
 * (cancelled before the tool was called) or `failed` (cancelled while waiting to retry a failed
 * try) run again under the same key; `unknown` (cancelled while the tool ran: it may have had its
 * effect) runs again only for an `idempotent` tool, and otherwise goes to a human, as after a crash.
 * @example
 * ```ts
 * graph.addNode("tools", createGovernedToolNode({
 *   tools, auditLog, ledger: new SqliteEffectLedger({ path: "eart.sqlite" }),
 *   execution: { issue_refund: { timeout: 5_000, retry: { attempts: 3 } } },
 * }));
 * ```
 */
export function createGovernedToolNode(options: GovernedToolNodeOptions) {
  const opts = parseOptions(GovernedToolNodeOptionsSchema, options);
  const { auditLog, budgets, redaction, policy, registry, recoveryRoles } = opts;
  if (policy && !registry) throw new EartConfigError("registry", "give the registry with the policy: approvals are checked again against the roles the policy in force asks for");
  const ledger = opts.ledger ?? new MemoryEffectLedger();
  // A ledger and an audit log in one transaction domain (SQLite on one connection, PostgreSQL on
  // one pool): a first execution makes the two durable commits a crash-safe call needs, the claim
  // with `tool.started` before the side effect and the outcome with its event after it, not four.
  const batched = ledger.commitsWith?.(auditLog) === true;
  const sealer = lazySealer(ledger);
  const clock = opts.clock ?? (() => new Date());
  const tools = indexTools(opts.tools);
  const execution = new Map<string, ParsedToolExecution>(Object.entries(opts.execution ?? {}));
  for (const name of execution.keys()) {
    if (name !== "*" && !tools.has(name)) throw new EartConfigError("execution", `"${name}" is not one of the tools`);
  }
  const defaults = ToolExecutionOptionsSchema.parse({});
  const specOf = (name: string): ParsedToolExecution => execution.get(name) ?? execution.get("*") ?? defaults;
  const breakers = new Map<string, CircuitBreaker>();
  for (const name of tools.keys()) {
    const breaker = specOf(name).breaker;
    if (breaker) breakers.set(name, new CircuitBreaker(breaker));
  }

  /** Runs the tool once, with its timeout and the execution context in its config. */
  async function invokeOnce(
    tool: StructuredToolInterface,
    call: ToolCall & { id: string },
    spec: ParsedToolExecution,
    context: ExecutionContext,
    config: LangGraphRunnableConfig,
  ): Promise<unknown> {
    // A copy for each try: a tool that changes its arguments in place (dollars to cents) must not
    // hand the next try, or the fallback, arguments other than those decided.
    const input = { type: "tool_call" as const, id: call.id, name: tool.name, args: copyOf(call.args) };
    const configurable = { ...config.configurable, eart: context };
    let output: unknown;
    if (spec.timeout === undefined) {
      output = await tool.invoke(input, { ...config, configurable });
    } else {
      // A signal of its own only when there is a timeout to abort it with (AbortSignal.any costs).
      const controller = new AbortController();
      const signal = config.signal ? AbortSignal.any([controller.signal, config.signal]) : controller.signal;
      const run = tool.invoke(input, { ...config, signal, configurable }) as Promise<unknown>;
      run.catch(() => {}); // settled after the timeout won: nobody waits for it any more
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const error = new ToolTimeoutError(call.name, spec.timeout!);
          controller.abort(error);
          reject(error);
        }, spec.timeout);
      });
      try {
        output = await Promise.race([run, timeout]);
      } finally {
        clearTimeout(timer);
      }
    }
    return output;
  }

  /**
   * What a tool returned, as its message. Runs after the point of no return: an output that cannot
   * be serialised is withheld, never a reason to run the tool again.
   */
  function asMessage(output: unknown, call: ToolCall & { id: string }): ToolMessage {
    if (ToolMessage.isInstance(output)) {
      // A tool answers its own call: the call id (and message id) of the message it returns
      // would answer another call of the message, or replace a message of the thread.
      return new ToolMessage({
        tool_call_id: call.id,
        name: call.name,
        content: output.content,
        status: output.status === "error" ? "error" : "success",
        ...(output.artifact !== undefined ? { artifact: output.artifact } : {}),
      });
    }
    let content: string;
    try {
      content = typeof output === "string" ? output : (JSON.stringify(output) ?? "null");
    } catch (error) {
      content = `The tool succeeded; its result was withheld because it could not be serialised (${errorText(error)}).`;
    }
    return new ToolMessage({ tool_call_id: call.id, name: call.name, content, status: "success" });
  }

  /**
   * Why a call decided under another policy version may no longer run under the one in force, or
   * undefined when it still may (see the `policy` option); the caller has checked the versions differ.
   */
  async function noLongerAllowed(record: DecisionRecord, call: ToolCall & { id: string }, state: ToolState, threadId: string): Promise<string | undefined> {
    const changed = `the policy changed since it was decided (version ${record.verdict.version} → ${policy!.version})`;
    if (!state.identity) return `${changed} and the thread has no bound identity to decide it again`;
    const verdict = await decideRecordedCall(policy!, tools.get(call.name)!, record, { identity: state.identity, context: state.context ?? emptyThreadContext(), threadId });
    if (verdict.effect === "allow") return undefined;
    if (verdict.effect === "require_approval") {
      const holders = new Set(approvalsThatCount(record.approvals, verdict, registry!).filter((a) => a.type === "approve" || a.type === "edit").map((a) => a.approverId));
      if (holders.size >= (verdict.quorum ?? 1)) return undefined;
      return `${changed} and it now needs approval by ${verdict.approverRoles.join(" or ")}${(verdict.quorum ?? 1) > 1 ? ` (${verdict.quorum} approvers)` : ""}; propose it again to ask for it`;
    }
    return `${changed} and the policy in force ${verdict.effect === "deny" ? "denies" : "escalates"} it: ${verdict.reasons.join("; ")}`;
  }

  async function runOne(
    call: ToolCall & { id: string },
    record: DecisionRecord | undefined,
    messageId: string,
    threadId: string,
    config: LangGraphRunnableConfig,
    state: ToolState,
    auditEvents: () => Promise<AuditEvent[]>,
  ): Promise<Outcome> {
    const identity = state.identity;
    const now = () => clock().toISOString();
    const screen = (text: string): string => (redaction ? redaction.apply(text, identity).value : text);
    const answer = (content: string, status: "success" | "error") =>
      new ToolMessage({ tool_call_id: call.id, name: call.name, content, status });
    const digest = proposedCallDigest(call.name, call.args, threadId);
    const ids = { toolCallId: call.id, name: call.name, digest };
    const events: AuditEventInput[] = [];
    const eventOf = <T extends ToolEventType>(type: T, data: Omit<AuditEventData<T>, keyof typeof ids>) => ({ threadId, type, data: { ...ids, ...data } }) as unknown as AuditEventInput;
    const event = <T extends ToolEventType>(type: T, data: Omit<AuditEventData<T>, keyof typeof ids>) => events.push(eventOf(type, data));
    /** eart's seal over what the next run reads back of an attempt event ({@link attemptEventFields}). */
    const sealEvent = async (type: "tool.cancelled" | "tool.interrupted", data: { attempt: number; try?: number; outcome?: string }) =>
      (await sealer()).event(threadId, type, attemptEventFields({ toolCallId: call.id, digest, ...data }));

    if (record && record.messageId === messageId && ANSWERED_STATUSES.has(record.status)) {
      // Answered without running: from the record's answer, unless the thread holds it already.
      const said = answeredAfter(state.messages, messageId, call.id) ? undefined : answerOf(record);
      return { events, ...(said ? { message: said } : {}) };
    }
    if (record && WAITING_STATUSES.has(record.status)) return { events };
    if (!record || record.messageId !== messageId || !RUNNABLE_STATUSES.has(record.status) || record.digest !== digest) {
      const why = !record || record.messageId !== messageId
        ? "no policy decision was recorded for this call"
        : record.digest !== digest
          ? "the call differs from the one that was allowed or approved"
          : `its decision is ${record.status}`;
      event("tool.blocked", { recordedDigest: record?.digest ?? null, reason: why });
      return {
        ...(record && record.messageId === messageId ? { record: { ...record, status: "blocked" as const } } : {}),
        message: answer(`Blocked: ${why}.`, "error"),
        events,
      };
    }

    const tool = tools.get(call.name);
    if (!tool) {
      event("tool.failed", { kind: "unknown_tool", error: "unknown tool" });
      return { record: { ...record, status: "invalid" }, message: answer(`Unknown tool "${call.name}".`, "error"), events };
    }

    const current: DecisionRecord = record;
    const spec = specOf(call.name);
    const breaker = breakers.get(call.name);
    const key: LedgerKey = { threadId, toolCallId: call.id, digest };
    // Decided under another policy version and not begun: decided again first. (A call the ledger
    // has met ran, or may have, under the decision it had: its entry is replayed or recovered.)
    if (policy && record.verdict.version !== policy.version && !(await ledger.get(key))) {
      const why = await noLongerAllowed(record, call, state, threadId);
      if (why) {
        event("tool.blocked", { reason: why, policyChanged: { from: record.verdict.version, to: policy.version } });
        return { record: { ...record, status: "blocked" }, message: answer(`Not run: ${why}.`, "error"), events };
      }
    }
    const resumeStatus = current.recovery?.resumeStatus ?? (current.status as "allowed" | "approved");

    const executed = (message: ToolMessage): Outcome => ({ record: { ...current, status: "executed", executedAt: now() }, message, events, ran: true });
    /**
     * Ends the call as cancelled with its run and throws `error` untouched, so LangGraph ends the
     * run as cancelled, not failed. Nothing of a failure happens: no `tool.failed`, retry,
     * fallback, breaker failure or recovery request, since the step is thrown away. The ledger
     * entry stays `started` at `attempt`: `tool.cancelled` (written now, with what the call had
     * still to write) tells the next run whether the attempt may have had its effect (`outcome`).
     */
    const cancelled = async (error: unknown, attempt: number, outcome: CancelOutcome, at: { try?: number } = {}): Promise<never> => {
      // Sealed: the next run reads it to run the attempt again without a human (not_run, failed).
      const eventSeal = await sealEvent("tool.cancelled", { attempt, try: at.try, outcome }).catch(() => undefined);
      event("tool.cancelled", { attempt, ...(at.try !== undefined ? { try: at.try } : {}), outcome, reason: screen(errorText(error)), ...(eventSeal ? { eventSeal } : {}) });
      try {
        await auditLog.append(events.splice(0));
      } catch {
        // The run still ends as cancelled. Without the event the next run reads the entry as an
        // unknown outcome (a human decides, or an idempotent tool runs again): the safe side.
      }
      throw error;
    };
    /**
     * The tool paused the run with `interrupt()`: recorded (`tool.interrupted`, with what the call
     * had still to write), and the interrupt rethrown untouched. The ledger entry stays `started`;
     * the next run sees that the tool paused itself and calls it again under a new attempt, instead
     * of taking the open entry for an unknown outcome. Without the event (its append failed) the
     * next run asks a human, as after a crash.
     */
    const interrupted = async (error: unknown, attempt: number, at: { try?: number } = {}): Promise<never> => {
      // An interrupt dressed as one of eart's human tasks is a forgery (eart never asks from inside
      // a tool): not recorded as the tool's own question, so answering it lets nothing run; the
      // call goes to a human as an unknown outcome.
      if (posesAsHumanTask(error)) throw error;
      // Sealed: the next run reads it to call the tool again for its answer, without a human.
      const eventSeal = await sealEvent("tool.interrupted", { attempt, try: at.try }).catch(() => undefined);
      event("tool.interrupted", { attempt, ...(at.try !== undefined ? { try: at.try } : {}), ...(eventSeal ? { eventSeal } : {}) });
      await auditLog.append(events.splice(0)).catch(() => undefined);
      throw error;
    };
    const toHuman = async (reason: RecoveryReason, attempt: number, error?: string, ifCancelled: CancelOutcome = CANCELLED_BEFORE_RECOVERY[reason]): Promise<Outcome> => {
      // A request made in a step the run throws away would wait for an answer nobody can give.
      if (isRunCancelled(config.signal)) return cancelled(config.signal!.reason, attempt, ifCancelled);
      // Sealed: what governanceMiddleware reads back on resume to ask again in the same step.
      const requestSeal = (await sealer()).event(threadId, "tool.recovery_requested", recoveryRequestFields({ toolCallId: call.id, digest, reason, attempt, roles: recoveryRoles ?? null }));
      event("tool.recovery_requested", { reason, attempt, error: error ?? null, ...(recoveryRoles ? { roles: [...recoveryRoles] } : {}), ...(current.requestedBy ? { requestedBy: current.requestedBy } : {}), requestSeal });
      return {
        record: { ...current, status: "recovery_pending", recovery: { reason, attempt, at: now(), resumeStatus, ...(error !== undefined ? { error } : {}), ...(recoveryRoles ? { roles: [...recoveryRoles] } : {}) } },
        events,
      };
    };
    /** The content a succeeded entry answered with. */
    const storedContent = (entry: LedgerEntry): unknown => {
      const stored = entry.result as { content?: unknown } | null;
      return stored && typeof stored === "object" && "content" in stored ? stored.content : contentText(entry.result);
    };
    /** Answers from a finished ledger entry: the tool is not called again. */
    const replay = (entry: LedgerEntry): Outcome => {
      event("tool.replayed", { attempt: entry.attempt, status: entry.status });
      if (entry.status === "succeeded") {
        return { record: { ...current, status: "executed", executedAt: entry.finishedAt ?? now() }, message: answer(storedContent(entry) as string, "success"), events };
      }
      return { record: { ...current, status: "failed", executedAt: entry.finishedAt ?? now() }, message: answer(entry.error ?? "failed", "error"), events };
    };
    /** Whether this call's outcome event went into the ledger's commit, should a finish that failed turn out recorded. */
    let finishedTogether = false;
    /**
     * Records the outcome in the ledger, and `last` (its event) after this call's other events:
     * batched, in the same commit as the outcome; otherwise left for the node's append, as the
     * events of a ledger without a shared commit are. A shared commit that fails and did not
     * commit is followed by the outcome alone, so an audit write never keeps the ledger from
     * recording what the tool did.
     */
    const finish = async (outcome: { status: "succeeded"; result: unknown } | { status: "failed"; error: string }, attempt: number, last: AuditEventInput) => {
      if (batched) {
        finishedTogether = true;
        try {
          if (!(await ledger.finish(key, outcome, clock(), { log: auditLog, events: [...events, last] }))) throw new EffectInProgressError(threadId, call.id, attempt);
          events.length = 0;
          return;
        } catch (error) {
          if (error instanceof EffectInProgressError) throw error;
          // What the failed commit left: unreadable (then it is unknown: the caller's to handle),
          // still started (nothing of it: the outcome goes alone), or finished by it (all of it).
          const entry = await ledger.get(key).catch(() => undefined);
          if (!entry) throw error;
          if (entry.status === outcome.status && entry.attempt === attempt) {
            events.length = 0;
            return;
          }
        }
      }
      finishedTogether = false;
      if (!(await ledger.finish(key, outcome, clock()))) throw new EffectInProgressError(threadId, call.id, attempt);
      events.push(last);
    };
    /**
     * Records a call whose tool has returned: past this point nothing may run it again. The
     * ledger's finish is retried with the result it already has; if it still fails, the run
     * stops with `ToolRecordError` (the entry stays started: the next run asks a human, as after
     * a crash), never as a failed call to retry.
     */
    const finishSucceeded = async (result: unknown, attempt: number, content: string, last: AuditEventInput) => {
      let lastError: unknown;
      for (let n = 0; n < FINISH_TRIES; n++) {
        try {
          return await finish({ status: "succeeded", result }, attempt, last);
        } catch (error) {
          if (error instanceof EffectInProgressError) throw error;
          lastError = error;
          // A finish whose reply was lost may have been recorded: then it is done (and its event
          // with it, when that finish was the shared commit).
          const entry = await ledger.get(key).catch(() => undefined);
          if (entry?.status === "succeeded" && entry.attempt === attempt) {
            if (finishedTogether) events.length = 0;
            else events.push(last);
            return;
          }
          // Not cut short by a cancelled run: the tool has acted, and an outcome recorded now is
          // replayed by the next run instead of going to a human as unknown.
          if (n + 1 < FINISH_TRIES) await sleep(FINISH_BACKOFF_MS * 2 ** n);
        }
      }
      throw new ToolRecordError(threadId, call.id, attempt, content.slice(0, RESULT_PREVIEW), lastError);
    };
    const succeed = async (raw: ToolMessage, attempt: number, type: "tool.succeeded" | "tool.fallback", extra: Record<string, unknown> = {}) => {
      // Redacted before anything keeps it: the model, the ledger (replays) and the audit log.
      // The artifact too: it is checkpointed with the message, though the model does not see it.
      let screened: { value: { content: unknown; artifact: unknown }; redacted: Redacted[]; labels: string[] } | undefined;
      let withheld: string | undefined;
      try {
        screened = redaction?.apply({ content: raw.content, artifact: raw.artifact }, identity);
      } catch (error) {
        // What cannot be redacted is not kept (fail closed); the tool did run, and that is recorded.
        withheld = errorText(error);
        screened = { value: { content: `The tool succeeded; its result was withheld because it could not be redacted (${withheld}).`, artifact: undefined }, redacted: [], labels: [] };
      }
      const message = screened
        ? new ToolMessage({ tool_call_id: raw.tool_call_id, name: raw.name, content: screened.value.content as ToolMessage["content"], status: raw.status, artifact: screened.value.artifact })
        : raw;
      const content = contentText(message.content);
      const outcome = eventOf(type, {
        attempt,
        result: content.slice(0, RESULT_PREVIEW),
        truncated: content.length > RESULT_PREVIEW,
        ...(screened && screened.redacted.length > 0 ? { redacted: recordedRedactions(screened.redacted) } : {}),
        ...(withheld !== undefined ? { withheld } : {}),
        ...extra,
      });
      await finishSucceeded({ content: message.content }, attempt, content, outcome);
      return { ...executed(message), ...(screened && screened.labels.length > 0 ? { labels: screened.labels } : {}) };
    };

    /**
     * Runs the tool under a claimed ledger attempt: timeout, retries, breaker, then fallback.
     * `claimedWithStart`: the claim committed the first try's `tool.started` (see the begin below),
     * which the breaker, closed, admitted: the first try goes straight to the tool.
     */
    async function execute(attempt: number, force: boolean, claimedWithStart = false, afterUnknown = false): Promise<Outcome> {
      const attempts = spec.retry?.attempts ?? 1;
      let reason: RecoveryReason = "exhausted";
      let lastError: string | undefined;
      // The last thing run timed out: it may still be acting, so its outcome is unknown.
      let lastTimedOut = false;
      for (let n = 1; ; n++) {
        const startedWithClaim = claimedWithStart && n === 1;
        // Claimed (begin or retry) but not called yet: a cancelled run leaves it to the next one.
        if (!startedWithClaim && isRunCancelled(config.signal)) return cancelled(config.signal!.reason, attempt, "not_run", { try: n });
        const admission = (force && n === 1) || startedWithClaim ? { admitted: true as const, trial: false } : (breaker?.admit(clock()) ?? { admitted: true as const, trial: false });
        if (!admission.admitted) {
          // A breaker that refuses the first try ran nothing; one that refuses a retry ends tries
          // that ran (and may have acted): that is what the human is told, and what a retry of
          // theirs is charged for.
          if (n === 1) {
            reason = "circuit_open";
            lastError = `the circuit breaker is open until ${admission.openUntil.toISOString()}`;
          } else {
            lastError = `${lastError ?? "the try failed"}; the circuit breaker then refused another try until ${admission.openUntil.toISOString()}`;
          }
          break;
        }
        try {
          if (!startedWithClaim) {
            event("tool.started", { attempt, try: n, ...(admission.trial ? { breakerTrial: true } : {}) });
            // Recorded before the side effect: a crash during the tool still leaves its start.
            await auditLog.append(events.splice(0));
          }
          if (isRunCancelled(config.signal)) return cancelled(config.signal!.reason, attempt, "not_run", { try: n });
          let returned: unknown;
          try {
            returned = await invokeOnce(tool!, call, spec, { idempotencyKey: idempotencyKeyOf(key), key, attempt }, config);
          } catch (error) {
            if (isGraphInterrupt(error)) return interrupted(error, attempt, { try: n });
            // Other graph control flow from inside a tool (a ParentCommand of a subgraph it ran)
            // would end the run as finished with the call's outcome unrecorded: the tool ran and
            // may have acted, so a human decides.
            if (isGraphControlFlow(error)) return toHuman("outcome_unknown", attempt, `the tool ended with LangGraph control flow (${(error as Error).name}), which eart does not follow from a tool`);
            if (error instanceof EffectInProgressError) throw error;
            // The run's signal, not the tool's timeout (that aborts only the tool's own signal).
            // Whatever the error says (the abort, or a failure the abort caused), the tool was
            // running when the run was cancelled: it may have acted.
            if (isRunCancelled(config.signal)) return cancelled(error, attempt, "unknown", { try: n });
            const kind = error instanceof ToolInputParsingException ? "arguments" : classifyToolError(error);
            // An error's text can echo what the tool was given or saw: redacted before the model,
            // the ledger, the recovery request and the audit log hold it.
            const text = screen(errorText(error));
            if (kind === "arguments") {
              const detail = error instanceof ToolInputParsingException ? await checkToolArgs(tool!, call.args) : undefined;
              const why = detail && !detail.ok ? screen(detail.message) : text;
              const content = `Invalid arguments for ${call.name}: ${why}`;
              await finish({ status: "failed", error: content }, attempt, eventOf("tool.failed", { attempt, kind: "invalid_arguments", error: why }));
              return { record: { ...current, status: "invalid" }, message: answer(content, "error"), events };
            }
            event("tool.failed", { attempt, try: n, kind: kind === "timeout" ? "timeout" : kind === "permission" ? "permission_denied" : "error", error: text });
            if (kind === "permission") return toHuman("permission_denied", attempt, text);
            if (breaker?.failure(clock())) event("tool.circuit_opened", { attempt, error: text });
            if (kind === "timeout" && !spec.idempotent) return toHuman("timeout", attempt, text);
            lastError = text;
            lastTimedOut = kind === "timeout";
            const retryable = spec.retry?.retryOn ? spec.retry.retryOn(error) : true;
            if (!retryable || n >= attempts) break;
            const delayMs = backoffDelay(spec.retry!, n);
            event("tool.retrying", { attempt, try: n + 1, delayMs, error: text });
            try {
              await sleep(delayMs, config.signal);
            } catch (error) {
              // Only an abort of the run ends the wait early. The try failed before it; the next
              // run tries again, as this one was about to.
              return cancelled(error, attempt, lastTimedOut ? "unknown" : "failed", { try: n + 1 });
            }
            // Each try is a start of its own in the ledger: a crash during it is an unknown outcome.
            const next = await ledger.retry(key, attempt, clock());
            if (!next) throw new EffectInProgressError(threadId, call.id, attempt);
            attempt = next.attempt;
            continue;
          }
          // The point of no return: the tool returned. Nothing from here on (redaction, the
          // ledger's finish, the audit) is a tool failure, so nothing here can run it again.
          breaker?.success();
          return await succeed(asMessage(returned, call), attempt, "tool.succeeded");
        } finally {
          // A half-open trial that ended with neither a success nor a failure recorded (a
          // cancelled run, bad arguments, a refusal for a human, a pause, an error of eart's) is
          // given back: kept, the breaker would refuse every later call for good.
          if (admission.trial) breaker?.release(admission);
        }
      }
      // What the attempt did, should the run be cancelled before its fallback or its human: a
      // refusing breaker never called the tool.
      let spent: CancelOutcome = reason === "circuit_open" ? "not_run" : lastTimedOut ? "unknown" : "failed";
      if (isRunCancelled(config.signal)) return cancelled(config.signal!.reason, attempt, spent);
      // A try that timed out may still be acting (a tool that ignores its signal pays late): a
      // fallback would act a second time, or answer as if nothing had; a human decides. So does a
      // run again over an attempt whose outcome is unknown (a crash or a cancellation while the
      // tool ran): that attempt may have acted, and a fallback cannot know the primary's key.
      if (lastTimedOut) return toHuman("timeout", attempt, lastError, spent);
      if (afterUnknown) return toHuman("outcome_unknown", attempt, `${lastError ?? "not run"}; an earlier attempt may have acted, so no fallback ran`, spent);
      const fallback = spec.fallback;
      if (fallback) {
        if ("value" in fallback) {
          const content = typeof fallback.value === "string" ? fallback.value : JSON.stringify(fallback.value);
          return succeed(answer(content, "success"), attempt, "tool.fallback", { fallback: "value", cause: lastError ?? null });
        }
        let returned: { output: unknown } | undefined;
        try {
          returned = { output: await invokeOnce(fallback.tool as StructuredToolInterface, call, specOf(call.name), { idempotencyKey: idempotencyKeyOf(key), key, attempt }, config) };
        } catch (error) {
          if (isGraphInterrupt(error)) return interrupted(error, attempt);
          if (isGraphControlFlow(error)) return toHuman("outcome_unknown", attempt, `the fallback ended with LangGraph control flow (${(error as Error).name}), which eart does not follow from a tool`);
          if (error instanceof EffectInProgressError) throw error;
          // The fallback was running: it may have acted.
          if (isRunCancelled(config.signal)) return cancelled(error, attempt, "unknown");
          spent = error instanceof ToolTimeoutError ? "unknown" : "failed";
          lastError = `fallback ${fallback.tool.name} failed: ${screen(errorText(error))}`;
          event("tool.failed", { attempt, kind: "fallback_failed", error: lastError });
        }
        if (returned) return succeed(asMessage(returned.output, call), attempt, "tool.fallback", { fallback: fallback.tool.name, cause: lastError ?? null });
      }
      return toHuman(reason, attempt, lastError, spent);
    }

    /** The human's resolution, when it is about this ledger attempt (0: the tool never started). */
    const resolutionFor = (attempt: number) =>
      current.recovery?.resolution && current.recovery.attempt === attempt ? current.recovery.resolution : undefined;

    /**
     * Adds to this call's events what the audit log lacks about an entry this run did not claim. A
     * crash between a ledger write and the audit append after it (the claim and `tool.started`, the
     * finish and its outcome, when they are separate commits; a retry's claim and its start; an
     * outcome whose shared commit failed) leaves the ledger ahead of the log; the ledger tells what
     * happened.
     * Read only on this recovery path: the common path (a claim) never reads the log.
     */
    const eventsOfCall = async () => (await auditEvents()).filter((e) => e.data.toolCallId === call.id && e.data.digest === digest);
    const reconstruct = async (entry: LedgerEntry): Promise<void> => {
      const mine = await eventsOfCall();
      const has = (attempt: number, type: AuditEventInput["type"], where: (data: Record<string, unknown>) => boolean = () => true) =>
        mine.some((e) => e.type === type && e.data.attempt === attempt && where(e.data));
      // Every attempt up to the entry's was claimed (the ledger counts claims), but some claims never
      // started the tool: the breaker refused the try (a circuit_open request, or the fallback ran),
      // a human marked done or abandoned a call that had not started (attempt 0), or the run was
      // cancelled before it called the tool.
      const beforeStart = resolutionFor(0);
      const unstarted = (attempt: number) =>
        has(attempt, "tool.recovery_requested", (d) => d.reason === "circuit_open") ||
        has(attempt, "tool.fallback") ||
        has(attempt, "tool.cancelled", (d) => d.outcome === "not_run") ||
        (attempt === 1 && beforeStart !== undefined && beforeStart.type !== "retry");
      for (let attempt = 1; attempt <= entry.attempt; attempt++) {
        if (has(attempt, "tool.started") || unstarted(attempt)) continue;
        // The ledger keeps only the current attempt's start time.
        event("tool.started", { attempt, reconstructed: "ledger", startedAt: attempt === entry.attempt ? entry.startedAt : null });
      }
      const attempt = entry.attempt;
      if (entry.status === "succeeded" && !has(attempt, "tool.succeeded") && !has(attempt, "tool.fallback")) {
        const content = contentText(storedContent(entry));
        event("tool.succeeded", { attempt, result: content.slice(0, RESULT_PREVIEW), truncated: content.length > RESULT_PREVIEW, reconstructed: "ledger" });
      }
      if (entry.status === "failed" && !has(attempt, "tool.failed", (d) => FINISHED_FAILURE_KINDS.has(d.kind) || d.reconstructed === "ledger")) {
        event("tool.failed", { attempt, kind: "error", error: entry.error, reconstructed: "ledger" });
      }
    };

    /** What `tool.cancelled` says the attempt did, when a cancelled run left it; unknown wins. */
    const cancelledOutcome = async (attempt: number): Promise<CancelOutcome | undefined> => {
      const seal = await sealer();
      const sealed = (await eventsOfCall()).filter((e) => e.type === "tool.cancelled" && attemptEventIsSealed(seal, threadId, e));
      const outcomes = sealed.flatMap((e) => {
        const data = readEventData(e, "tool.cancelled");
        return data?.attempt === attempt && data.outcome !== undefined ? [data.outcome] : [];
      });
      return outcomes.includes("unknown") ? "unknown" : outcomes[0];
    };

    // While the breaker is open a new call is not even recorded: it goes to a human (or the
    // fallback, in execute) without calling the tool. An existing entry is handled below.
    if (!resolutionFor(0) && breaker && breaker.state(clock()) === "open" && !spec.fallback && !(await ledger.get(key))) {
      const admission = breaker.admit(clock());
      if (!admission.admitted) return toHuman("circuit_open", 0, `the circuit breaker is open until ${admission.openUntil.toISOString()}`);
      // The cool-down ended meanwhile and this read took the half-open trial: given back, as the
      // call claims and is admitted below (kept, it would refuse every later call for good).
      if (admission.trial) breaker.release(admission);
    }

    // A cancelled run claims nothing: the next run finds the call as this one did.
    if (isRunCancelled(config.signal)) throw config.signal!.reason;
    // Batched, a claim commits the first try's `tool.started` with it, where nothing between the
    // two could differ: no human's resolution to apply first, and a closed breaker (or none),
    // whose admission changes nothing and admits. (Not claimed: nothing is appended.)
    const startsWithClaim = batched && !resolutionFor(0) && (!breaker || breaker.state(clock()) === "closed");
    // One round trip on the common path: claim the key, or learn what is recorded under it.
    const begun = await ledger.begin(key, clock(), startsWithClaim ? { log: auditLog, events: [eventOf("tool.started", { attempt: 1, try: 1 })] } : undefined);
    const entry = begun.entry;
    // Nothing is recorded for this call yet: what the log lacks comes before what this run adds.
    if (!begun.claimed) await reconstruct(entry);
    if (!begun.claimed && entry.status !== "started") return replay(entry);
    const resolution = resolutionFor(begun.claimed ? 0 : entry.attempt);

    if (resolution?.type === "mark_done") {
      const result = resolution.result;
      const content = typeof result === "string" ? result : JSON.stringify(result ?? null);
      return succeed(answer(content, "success"), entry.attempt, "tool.succeeded", { markedDoneBy: resolution.by });
    }
    if (resolution?.type === "abandon") {
      const content = `Abandoned by ${resolution.by}${resolution.message ? `: ${resolution.message}` : "."} The action was not completed.`;
      await finish({ status: "failed", error: content }, entry.attempt, eventOf("tool.failed", { attempt: entry.attempt, kind: "abandoned", error: content, by: resolution.by }));
      // An attempt that may have acted (it started the tool, which then threw, timed out or was
      // lost) is charged as one that ran: a thread's own counters (no budget store) would
      // otherwise give back what it may have spent; the store keeps its reservation already.
      const charged = entry.attempt >= 1 && mayHaveActedBefore(current.recovery?.reason);
      return { record: { ...current, status: "failed", executedAt: now() }, message: answer(content, "error"), events, ...(charged ? { ran: true } : {}) };
    }
    if (begun.claimed) return execute(entry.attempt, resolution !== undefined, startsWithClaim);

    // Started with no outcome: a crash, a timeout or a cancelled run in an earlier run, or a
    // failure a human decided to retry. Only an idempotent tool, a human's retry, or an attempt a
    // cancelled run recorded as not run (or failed, about to be retried) runs it again. A
    // cancellation while the tool ran, or none recorded (a crash, or the event was lost), leaves
    // the outcome unknown: a human decides, as exactly once asks.
    const outcome = await cancelledOutcome(entry.attempt);
    // A tool that paused itself with interrupt() is called again for its answer.
    const seal = await sealer();
    const paused = (await eventsOfCall()).some((e) => e.type === "tool.interrupted" && e.data.attempt === entry.attempt && attemptEventIsSealed(seal, threadId, e));
    const mayHaveActed = outcome !== "not_run" && outcome !== "failed" && !paused;
    if (!resolution && !spec.idempotent && mayHaveActed) {
      return toHuman("outcome_unknown", entry.attempt, outcome === "unknown" ? "the run was cancelled while the tool was running; it may have acted" : undefined);
    }
    // A new attempt of a call decided under another policy version (a human's retry, an idempotent
    // tool run again): decided again first. One the policy in force no longer lets run goes back to
    // a human, who may mark it done or abandon it (an earlier attempt may have acted: the model is
    // not told it did not run); a retry is decided again.
    if (policy && record.verdict.version !== policy.version) {
      const why = await noLongerAllowed(record, call, state, threadId);
      if (why) {
        event("tool.blocked", { reason: why, policyChanged: { from: record.verdict.version, to: policy.version } });
        return toHuman(current.recovery?.reason ?? "outcome_unknown", entry.attempt, `not run again: ${why}`);
      }
    }
    // A human's retry of an attempt that may have acted (it started the tool, which then threw,
    // timed out or was lost) may pay a second time: the budgets that deny are checked and reserved
    // again before it runs, with the earlier attempt counted. One that no longer fits, or cannot
    // be checked, sends the call back to a human, who may mark it done or abandon it.
    let reservedAgain = false;
    const retriesAfterEffect = resolution?.type === "retry" && mayHaveActedBefore(current.recovery?.reason);
    if (retriesAfterEffect) {
      const again = await reserveRetry(current, call, state, threadId);
      if (again.refused) {
        event("tool.blocked", { reason: again.refused });
        return toHuman(current.recovery?.reason ?? "outcome_unknown", entry.attempt, `not run again: ${again.refused}`);
      }
      reservedAgain = again.reserved;
    }
    const next = await ledger.retry(key, entry.attempt, clock());
    if (!next) throw new EffectInProgressError(threadId, call.id, entry.attempt);
    const ran = await execute(next.attempt, resolution !== undefined, false, mayHaveActed);
    return retriesAfterEffect ? { ...ran, ...(reservedAgain ? { reserved: true } : {}), earlierAttempt: true } : ran;
  }

  /**
   * Reserves a human's retry against the budgets that deny (the approvers approved past those that
   * ask for approval), as the gate reserved the first attempt: `refused` says why it may not run.
   */
  async function reserveRetry(
    record: DecisionRecord,
    call: ToolCall & { id: string },
    state: ToolState,
    threadId: string,
  ): Promise<{ refused?: string; reserved: boolean }> {
    if (!budgets) return { reserved: false };
    if (!state.identity) return { refused: "the budgets cannot be checked: the thread has no bound identity", reserved: false };
    try {
      const tool = { name: call.name, args: record.parsedArgs ?? call.args };
      // The earlier attempt counts as charged: a thread's own counters (no budget store) hold only
      // calls that finished, and it did not; the store holds its reservation already.
      const earlier = [{ name: call.name, args: tool.args, reserved: true }];
      const { verdict, reserved } = await budgets.reserve({ identity: state.identity, threadId, tool, threadCounters: { ...(state.budget ?? {}) }, pending: earlier }, { only: "deny" });
      if (verdict) return { refused: `an earlier attempt may have acted, and another would exceed the budget: ${verdict.reasons.join("; ")}`, reserved: false };
      return { reserved };
    } catch (error) {
      return { refused: `budget check failed: ${(error as Error)?.message ?? String(error)}`, reserved: false };
    }
  }

  /**
   * Charges the budgets for the calls that ran, one after another so each sees the totals the
   * previous left. A charge that fails is recorded; the call already ran and is not repeated.
   */
  async function charge(
    executed: { call: ToolCall & { id: string }; reserved: boolean; parsedArgs?: Record<string, unknown> }[],
    state: Partial<Pick<GovernedState, "identity" | "budget">>,
    threadId: string,
  ): Promise<Record<string, number>> {
    const update: Record<string, number> = {};
    if (!budgets || !state.identity) return update;
    const counters = { ...(state.budget ?? {}) };
    // Counted as policy judged them: the arguments as the tool reads them.
    for (const { call, reserved, parsedArgs } of executed) {
      try {
        // A call reserved by the gate is counted in the store already: only its thread's counters here.
        const totals = await budgets.charge(
          { identity: state.identity, threadId, tool: { name: call.name, args: parsedArgs ?? call.args }, threadCounters: counters },
          { crossThread: !reserved },
        );
        Object.assign(counters, totals);
        Object.assign(update, totals);
      } catch (error) {
        await auditLog.append({
          threadId,
          type: "budget.charge_failed",
          data: { toolCallId: call.id, name: call.name, error: (error as Error)?.message ?? String(error) },
        });
      }
    }
    return update;
  }

  return async function governedTools(
    state: ToolState,
    config: LangGraphRunnableConfig,
  ): Promise<{ decisions: DecisionRecord[]; messages: BaseMessage[]; budget?: Record<string, number>; context?: { items: []; sensitivity: string[] } }> {
    const threadId = requireThreadId(config);
    const message = lastAIMessage(state.messages);
    const calls = (message?.tool_calls ?? []) as ToolCall[];
    const records = new Map(state.decisions.map((d) => [d.toolCallId, d]));
    const withIds = calls.filter((c): c is ToolCall & { id: string } => typeof c.id === "string" && c.id !== "");
    // Only records eart sealed for this thread can let a call run: state is a view any caller of
    // the thread API can write.
    const seal = await sealer();
    const mine = withIds.flatMap((c) => (records.has(c.id) ? [records.get(c.id)!] : []));
    await assertSealed(seal, auditLog, threadId, "tools", state.identity, mine);
    // Read at most once per run, and only by a call that meets a ledger entry it did not claim.
    let audit: Promise<AuditEvent[]> | undefined;
    const auditEvents = () => (audit ??= auditLog.read(threadId));
    const running = withIds.map((c) => runOne(c, records.get(c.id), message!.id!, threadId, config, state, auditEvents));
    let results: Outcome[];
    try {
      results = await Promise.all(running);
    } catch (error) {
      if (isRunCancelled(config.signal)) {
        // The other calls share the signal and end promptly; what those that finished did is
        // recorded before the run ends (their ledger entries are finished: the next run replays them).
        const finished = (await Promise.allSettled(running)).flatMap((r) => (r.status === "fulfilled" ? r.value.events : []));
        if (finished.length > 0) await auditLog.append(finished).catch(() => undefined);
      }
      throw error;
    }
    const labels = [...new Set(results.flatMap((r) => r.labels ?? []))].sort();
    const events = results.flatMap((r) => r.events);
    if (events.length > 0) await auditLog.append(events);
    // Replayed executions were charged when they ran.
    const executed = withIds
      .flatMap((call, i) => {
        const ran = { call, ran: results[i]!.ran === true, reserved: records.get(call.id)?.budgetReserved === true || results[i]!.reserved === true, parsedArgs: records.get(call.id)?.parsedArgs };
        // The earlier attempt of a retry, whatever the retry did (one that failed again goes back
        // to a human, who may abandon it): the thread's own counters only (the store holds it).
        return results[i]!.earlierAttempt ? [ran, { ...ran, ran: true, reserved: true }] : [ran];
      })
      .filter((r) => r.ran);
    const budget = executed.length > 0 ? await charge(executed, state, threadId) : {};
    return {
      decisions: sealDecisions(seal, threadId, state.decisions, results.flatMap((r) => (r.record ? [r.record] : []))),
      messages: results.flatMap((r) => (r.message ? [r.message] : [])),
      ...(Object.keys(budget).length > 0 ? { budget } : {}),
      // What the tools returned raises the thread's sensitivity like retrieved context does.
      ...(labels.length > 0 ? { context: { items: [] as [], sensitivity: labels } } : {}),
    };
  };
}
