/** The one way eart's nodes ask a human: interrupt, read the newest answer, record a refusal and ask again. */
import { getConfig, interrupt, isGraphInterrupt } from "@langchain/langgraph";
import { ApprovalError } from "../src/errors.js";
import { digestOf } from "../src/human-tasks/refusal.js";
import type { AuditLog } from "../src/audit/log.js";
import type { Sealer } from "../src/decisions/seal.js";
import { attemptEventIsSealed } from "./records.js";
import type { Principal } from "../src/identity/registry.js";

/**
 * Pauses with `interrupt(request)` and returns the newest answer given to it. LangGraph keeps
 * every resume value of a task, refused ones too, and replays them in order when the node re-runs:
 * only the newest counts, so a refused answer is never checked again (the policy, the roles or the
 * clock may have changed since it was refused). Must be the first statement with an effect in the
 * calling node, which re-runs from its start on resume.
 */
export function newestAnswer(request: unknown): unknown {
  return answersGiven(request).at(-1);
}

/**
 * Pauses with `interrupt(request)` like {@link newestAnswer}, and returns every answer given to
 * it, oldest first (at least one): a step that finds one of them accepted before (see
 * {@link acceptedBefore}) acts on that one. With `count`, only the first `count` answers are read:
 * the ones after them answer a later `interrupt()` of the same step (a tool's own question, asked
 * after the step acted on the accepted answer), which reads them in turn.
 */
export function answersGiven(request: unknown, count?: number): unknown[] {
  const answers = [interrupt(request)];
  if (count !== undefined) {
    while (answers.length < count) answers.push(interrupt(request));
    return answers;
  }
  const left = answersLeft();
  if (left !== undefined) {
    // As many more as LangGraph holds: no last call that only throws to say there are none.
    for (let i = 0; i < left; i++) answers.push(interrupt(request));
    return answers;
  }
  for (;;) {
    try {
      answers.push(interrupt(request));
    } catch (error) {
      if (!isGraphInterrupt(error)) throw error;
      return answers;
    }
  }
}

/**
 * The answers the running task holds and has not read yet (the stored resume values after the
 * current `interrupt()`, then a resume given to no interrupt in particular), without reading them:
 * empty outside a task, or where the scratchpad is not as expected.
 */
export function storedAnswers(): unknown[] {
  let pad: { resume?: unknown; interruptCounter?: unknown; nullResume?: unknown } | undefined;
  try {
    pad = getConfig()?.configurable?.[SCRATCHPAD];
  } catch {
    return [];
  }
  if (!pad || !Array.isArray(pad.resume) || typeof pad.interruptCounter !== "number") return [];
  return [...pad.resume.slice(pad.interruptCounter + 1), ...(pad.nullResume !== undefined ? [pad.nullResume] : [])];
}

/**
 * Whether the running task holds answers to a pause it made before (LangGraph runs it again from
 * its start on resume): false outside a task, or where the scratchpad is not as expected.
 */
export function holdsAnswers(): boolean {
  return (answersLeft() ?? 0) > 0;
}

/**
 * How many more answers `interrupt()` would return in the running task, read from the task's
 * scratchpad as `interrupt()` reads it (the answers stored after the current one, and a resume
 * given to no interrupt in particular); undefined where the scratchpad is not as expected.
 */
function answersLeft(): number | undefined {
  let pad: { resume?: unknown; interruptCounter?: unknown; nullResume?: unknown } | undefined;
  try {
    pad = getConfig()?.configurable?.[SCRATCHPAD] as typeof pad;
  } catch {
    return undefined;
  }
  if (!pad || !Array.isArray(pad.resume) || typeof pad.interruptCounter !== "number") return undefined;
  const stored = Math.max(0, pad.resume.length - 1 - pad.interruptCounter);
  return stored + (pad.nullResume !== undefined ? 1 : 0);
}

/** Where LangGraph keeps a task's resume values (the key `interrupt()` reads). */
const SCRATCHPAD = "__pregel_scratchpad";

/**
 * How a refused answer ends the run: `"throw"` (the default) throws the {@link ApprovalError} to
 * the caller; `"interrupt"` pauses again on the same request with `refusal: { code, message }`
 * beside it, so the thread stays interrupted and its interrupt says why (LangGraph server: a
 * thrown error would turn the run and the thread into `error` and hide the request). Read from
 * `configurable.eart_refusals`, which eart's server graphs set (`createServerAgent`).
 */
export type RefusalMode = "throw" | "interrupt";

/** The refusal mode of the running graph ({@link RefusalMode}). */
function refusalMode(): RefusalMode {
  let configurable: Record<string, unknown> | undefined;
  try {
    configurable = getConfig()?.configurable;
  } catch {
    configurable = undefined;
  }
  return configurable?.eart_refusals === "interrupt" ? "interrupt" : "throw";
}

/** The key of an answer that stands for one refused before LangGraph could store it ({@link refusedAnswer}). */
export const REFUSED_ANSWER_KEY = "eart_refused";

/**
 * What a host resumes with in refusal mode `"interrupt"` when it refused an answer before LangGraph
 * stored it (too deep, not JSON: `guardResumes` already recorded the refusal): the step pauses again
 * with this refusal beside its request, as for an answer the step refused itself. Only the host
 * writes it: `createServerAgent` renames the key in a client's answer, so one is checked as any answer.
 * @example
 * ```ts
 * await graph.stream(new Command({ resume: refusedAnswer(error) }), config);
 * ```
 */
export function refusedAnswer(error: { code: string; message: string }): { [REFUSED_ANSWER_KEY]: { code: string; message: string } } {
  return { [REFUSED_ANSWER_KEY]: { code: error.code, message: error.message } };
}

/** The refusal a {@link refusedAnswer} carries, or undefined for any other answer. */
function refusalIn(answer: unknown): { code: string; message: string } | undefined {
  if (typeof answer !== "object" || answer === null || !Object.hasOwn(answer, REFUSED_ANSWER_KEY) || Object.keys(answer).length !== 1) return undefined;
  const refusal = (answer as Record<string, unknown>)[REFUSED_ANSWER_KEY] as { code?: unknown; message?: unknown } | null;
  if (typeof refusal?.code !== "string" || typeof refusal.message !== "string") return undefined;
  return { code: refusal.code.slice(0, 100), message: refusal.message.slice(0, 2_000) };
}

/**
 * Checks a human's answer: returns what `check` makes of it, or, when `check` refuses it with an
 * {@link ApprovalError}, records the refusal with `onRefused` and throws the error (nothing ran;
 * the thread stays paused on the same request). In refusal mode `"interrupt"` it pauses again on
 * `request` with the refusal beside it instead ({@link RefusalMode}); the refused answer is never
 * read again ({@link newestAnswer}).
 */
export async function acceptAnswer<T>(
  answer: unknown,
  check: (answer: unknown) => T | Promise<T>,
  onRefused: (error: ApprovalError, answer: unknown) => Promise<void>,
  request?: object,
): Promise<T> {
  const refused = request !== undefined ? refusalIn(answer) : undefined;
  if (refused && refusalMode() === "interrupt") interrupt({ ...request, refusal: refused });
  try {
    return await check(answer);
  } catch (error) {
    if (!(error instanceof ApprovalError)) throw error;
    await onRefused(error, answer);
    if (request !== undefined && refusalMode() === "interrupt") {
      // The refusal is recorded; this pause comes after the answers already given, so on resume
      // the next answer is the newest and this one is not checked again.
      interrupt({ ...request, refusal: { code: error.code, message: error.message } });
    }
    throw error;
  }
}

/**
 * The one interrupt helper of eart's human tasks (approval, recovery, review): pauses with
 * `interrupt(request)`, takes the newest answer ({@link newestAnswer}) and checks it
 * ({@link acceptAnswer}). `check` throws an {@link ApprovalError} to refuse.
 */
export async function interruptForAnswer<T>(request: unknown, check: (answer: unknown) => T | Promise<T>, onRefused: (error: ApprovalError, answer: unknown) => Promise<void>): Promise<T> {
  return acceptAnswer(newestAnswer(request), check, onRefused, request as object);
}

/**
 * Which asking of a call an answer is for: the approvals it had gathered and its expiry (an
 * approval asked again for a quorum, or after it lapsed, is another asking), or the attempt a
 * recovery request is about. Sealed with the accepted answer, so an answer copied from an earlier
 * asking stands for none later.
 */
export function requestRound(item: { approvedBy?: readonly unknown[]; expiresAt?: string; attempt?: number }): string {
  return item.attempt !== undefined ? `attempt ${item.attempt}` : `${item.approvedBy?.length ?? 0}|${item.expiresAt ?? ""}`;
}

/** What {@link acceptedBefore} looks for: the request's calls, by digest. */
export interface AcceptedAnswerQuery {
  /** The event that asks (`approval.requested`, `tool.recovery_requested`): acceptances before the newest one that names a call do not count. */
  requested: string;
  /** The event that records an accepted answer per call (`approval.decided`, `tool.recovery_decided`). */
  decided: string;
  /** The waiting calls, each with the digest it was asked under and the asking it waits on ({@link requestRound}). */
  calls: readonly { toolCallId: string; digest: string; round: string }[];
}

/**
 * The fields of an event recording an accepted answer that {@link acceptedBefore} acts on, as
 * `answerSeal` seals them ({@link Sealer.event}): the call, the digest it was asked under, the
 * answer's digest, who gave it and who authenticated them.
 */
export function acceptedAnswerFields(data: { toolCallId: string; digest: string; round: unknown; answerDigest: string; by: string; authenticatedBy: string | null }): Record<string, unknown> {
  return { toolCallId: data.toolCallId, digest: data.digest, round: data.round ?? null, answerDigest: data.answerDigest, by: data.by, authenticatedBy: data.authenticatedBy };
}

/** The fields of an `escalation.decided` event a continue acts on, as `answerSeal` seals them: who reviewed, what they decided, their message, and the case they answered (its digest). */
export function reviewAnswerFields(data: { by: string; action: unknown; message: unknown; digest: unknown }): Record<string, unknown> {
  return { by: data.by, action: data.action ?? null, message: data.message ?? null, case: data.digest ?? null };
}

/**
 * Whether an event recording a human's answer (`approval.decided`, `tool.recovery_decided`,
 * `escalation.decided`) carries eart's `answerSeal` over the fields eart acts on: only those are
 * answers eart accepted. A link appended to the audit store by anyone else (the chain still
 * verifies) carries none that holds.
 */
export function answerIsSealed(sealer: Sealer, threadId: string, event: { type: string; data: Record<string, unknown> }): boolean {
  const d = event.data;
  if (event.type === "escalation.decided") return sealer.eventIsSealed(threadId, event.type, reviewAnswerFields({ by: String(d.reviewerId), action: d.action, message: d.message, digest: d.digest }), d.answerSeal);
  if (typeof d.answerDigest !== "string") return false;
  const fields = acceptedAnswerFields({
    toolCallId: String(d.toolCallId),
    digest: String(d.originalDigest ?? d.digest),
    round: d.round,
    answerDigest: d.answerDigest,
    by: String(d.approverId ?? d.resolverId),
    authenticatedBy: (d.authenticatedBy ?? null) as string | null,
  });
  return sealer.eventIsSealed(threadId, event.type, fields, d.answerSeal);
}

/**
 * How many of the stored answers a step reads when a tool of its only call asked its own question
 * after the step acted on the accepted answer ({@link acceptedBefore}'s `askedSince`): through the
 * accepted one and the copies of it right after it (LangGraph keeps the answer it was given once
 * more while the step stays paused, and a refused copy of the same answer may come before), so a
 * continue hands the tool no answer nobody gave it. Undefined when the accepted answer is not stored.
 */
function answersThrough(stored: readonly unknown[], answerDigest: string): number | undefined {
  let at = stored.findIndex((a) => digestOf(a) === answerDigest);
  if (at < 0) return undefined;
  while (at + 1 < stored.length && digestOf(stored[at + 1]) === answerDigest) at += 1;
  return at + 1;
}

/**
 * The answers given to `request` (pausing with it when none is stored: the first statement with
 * an effect is the interrupt), the answer eart accepted before for it ({@link acceptedBefore}),
 * looked up before the answers are read, and that answer among them (`standing`). When a tool of
 * the step's only call (`onlyCall`) asked its own question after the accepted answer, only the
 * answers through it are read: the later ones are the tool's, left for its interrupt(). Not for a
 * step of several calls: they share its interrupts in the order they ask, and a call replayed from
 * the ledger asks no more, so its answer would go to the next.
 */
export async function answersToRequest(
  request: unknown,
  auditLog: Pick<AuditLog, "read">,
  threadId: string,
  query: AcceptedAnswerQuery,
  sealer: Sealer,
  onlyCall: boolean,
): Promise<{ answers: unknown[]; accepted: Awaited<ReturnType<typeof acceptedBefore>>; standing: unknown }> {
  const stored = storedAnswers();
  const accepted = stored.length > 0 ? await acceptedBefore(auditLog, threadId, query, sealer) : undefined;
  const through = accepted?.askedSince && onlyCall ? answersThrough(stored, accepted.answerDigest) : undefined;
  const answers = answersGiven(request, through);
  return { answers, accepted, standing: accepted ? answers.find((a) => digestOf(a) === accepted.answerDigest) : undefined };
}

/**
 * The answer eart accepted before for this same request, and from whom: the step that accepts an
 * answer may also act on it (run the approved calls), and if the process stopped before the step
 * was saved, LangGraph runs it again, with the answers it stored, under whoever continues the
 * thread. The audit log (eart's own, append-only) says which answer was accepted (its digest) and
 * who gave it; that answer stands, checked as from them, and is not recorded twice. Only events
 * eart sealed count (`answerSeal`, {@link acceptedAnswerFields}): a link appended by someone who
 * can write the audit store names no approver the step acts as. Undefined when no answer to this
 * request was accepted (every call of it, by one principal).
 */
export async function acceptedBefore(
  auditLog: Pick<AuditLog, "read">,
  threadId: string,
  query: AcceptedAnswerQuery,
  sealer: Sealer,
): Promise<{ principal: Principal; answerDigest: string; askedSince: boolean } | undefined> {
  const waiting = new Map(query.calls.map((c) => [c.toolCallId, c.digest]));
  const rounds = new Map(query.calls.map((c) => [c.toolCallId, c.round]));
  const events = await auditLog.read(threadId);
  let newest: { answerDigest: string; id: string; source: unknown } | undefined;
  // Whether a tool of these calls asked its own question (`tool.interrupted`) after the answer was
  // accepted: the answers stored after the accepted one are that tool's.
  let askedSince = false;
  const covered = new Set<string>();
  for (let i = events.length - 1; i >= 0; i--) {
    const event = events[i]!;
    const data = event.data as Record<string, unknown>;
    if (!newest && event.type === "tool.interrupted" && waiting.has(data.toolCallId as string) && attemptEventIsSealed(sealer, threadId, event)) askedSince = true;
    if (event.type === query.requested) {
      const named = [...((data.requests as { toolCallId?: unknown }[] | undefined) ?? []).map((r) => r.toolCallId), data.toolCallId];
      if (named.some((id) => typeof id === "string" && waiting.has(id))) break;
    }
    if (event.type !== query.decided || typeof data.answerDigest !== "string") continue;
    const id = data.toolCallId as string;
    const digest = (data.originalDigest ?? data.digest) as string;
    // Under the digest and for the asking the call waits on: a copy of an answer to an earlier asking is not one.
    if (waiting.get(id) !== digest || data.round !== rounds.get(id)) continue;
    const by = String(data.approverId ?? data.resolverId);
    if (!answerIsSealed(sealer, threadId, event)) continue;
    newest ??= { answerDigest: data.answerDigest, id: by, source: data.authenticatedBy };
    if (data.answerDigest === newest.answerDigest && by === newest.id && data.authenticatedBy === newest.source) covered.add(id);
  }
  if (!newest || covered.size !== waiting.size) return undefined;
  if (newest.source !== "configurable.user_id" && newest.source !== "configurable.langgraph_auth_user") return undefined;
  return { principal: { id: newest.id, source: newest.source }, answerDigest: newest.answerDigest, askedSince };
}
