import { coerceMessageLikeToMessage, type BaseMessage, type BaseMessageLike } from "@langchain/core/messages";
import type { AuditEventInput, AuditLog } from "../src/audit/log.js";
import type { Redacted, Redaction } from "../src/context/redaction.js";
import type { AgentIdentity } from "../src/identity/registry.js";

/** Whose roles `visibleTo` is checked against; none: nothing is visible. */
export type RedactionViewer = Pick<AgentIdentity, "onBehalfOf"> | undefined;

/** What a message carries that can hold a sensitive value. */
function carriedBy(message: BaseMessage): Record<string, unknown> {
  const m = message as BaseMessage & { tool_calls?: unknown; invalid_tool_calls?: unknown; artifact?: unknown };
  return {
    content: m.content,
    additional_kwargs: m.additional_kwargs,
    ...(m.tool_calls !== undefined ? { tool_calls: m.tool_calls } : {}),
    ...(m.invalid_tool_calls !== undefined ? { invalid_tool_calls: m.invalid_tool_calls } : {}),
    ...(m.artifact !== undefined ? { artifact: m.artifact } : {}),
  };
}

/**
 * One message of any form LangChain accepts (a message object, a string, `{ role, content }`,
 * `[role, text]`, content blocks), as a message whose content, tool calls, artifact and extra
 * fields are redacted for the viewer. The same object when nothing was found.
 * @example
 * ```ts
 * const { message } = redactMessage(["user", "my card is 4111 1111 1111 1111"], redaction, undefined);
 * message.content; // "my card is [REDACTED:card_number]"
 * ```
 */
export function redactMessage(
  like: BaseMessageLike,
  redaction: Redaction,
  viewer: RedactionViewer,
  options: { toolCallFields?: boolean } = {},
): { message: BaseMessage; redacted: Redacted[]; labels: string[] } {
  const message = coerceMessageLikeToMessage(like);
  const carried = carriedBy(message);
  if (redaction.mayChange && !redaction.mayChange(carried)) return { message, redacted: [], labels: [] };
  // Tool calls a model proposes are checked by patterns only when `toolCallFields` is false: a
  // salary the agent writes into a draft is a proposal for policy to judge, not data it read.
  const { tool_calls: calls, invalid_tool_calls: invalid, ...rest } = carried;
  const screened = redaction.apply(rest, viewer);
  const split = options.toolCallFields === false;
  const callsScreened = redaction.apply({ tool_calls: calls, invalid_tool_calls: invalid }, viewer, split ? { fields: false } : {});
  const redacted = [...screened.redacted, ...callsScreened.redacted];
  const labels = [...new Set([...screened.labels, ...callsScreened.labels])].sort();
  if (redacted.length === 0) return { message, redacted, labels };
  const value: Record<string, unknown> = { ...screened.value };
  if (calls !== undefined) value.tool_calls = callsScreened.value.tool_calls;
  if (invalid !== undefined) value.invalid_tool_calls = callsScreened.value.invalid_tool_calls;
  // Rebuilt with its own class from its constructor fields, with the redacted ones in place.
  const Ctor = message.constructor as new (fields: Record<string, unknown>) => BaseMessage;
  const fields = { ...(message as unknown as { lc_kwargs: Record<string, unknown> }).lc_kwargs, ...value };
  if (message.id !== undefined) fields.id = message.id;
  return { message: new Ctor(fields), redacted, labels };
}

/**
 * An error a model (or anything it calls) threw, as the caller and the middleware around eart may
 * see it: its message, stack and own fields redacted for no one's roles, its class kept (`instanceof`,
 * `name`, a `status` stay usable for retries), its `cause` left out (it may hold the raw text). The
 * same error when redaction finds nothing in it; values that are not errors are returned as they are.
 * @example
 * ```ts
 * catch (error) { throw redactError(error, redaction); }
 * ```
 */
export function redactError(error: unknown, redaction: Redaction | undefined): unknown {
  if (!redaction || !(error instanceof Error)) return error;
  const own: Record<string, unknown> = {};
  for (const key of Object.keys(error)) if (key !== "cause") own[key] = (error as unknown as Record<string, unknown>)[key];
  const carried = { message: error.message, stack: error.stack, own };
  if (redaction.mayChange && !redaction.mayChange(carried)) return error;
  const { value, redacted } = redaction.apply(carried, undefined);
  if (redacted.length === 0) return error;
  const safe = Object.create(Object.getPrototypeOf(error) as object) as Error;
  Object.assign(safe, value.own);
  Object.defineProperty(safe, "message", { value: value.message, writable: true, configurable: true });
  Object.defineProperty(safe, "stack", { value: value.stack, writable: true, configurable: true });
  if (safe.name !== error.name) Object.defineProperty(safe, "name", { value: error.name, writable: true, configurable: true });
  return safe;
}

/**
 * The input of a run with every message redacted (see {@link redactMessage}); other input as it is.
 * @example
 * ```ts
 * const safe = redactRunInput({ messages: [{ role: "user", content: "4111 1111 1111 1111" }] }, redaction, viewer);
 * ```
 */
export function redactRunInput(input: unknown, redaction: Redaction, viewer: RedactionViewer): unknown {
  const messages = (input as { messages?: unknown } | null)?.messages;
  if (messages === undefined || messages === null || typeof input !== "object") return input;
  const list = Array.isArray(messages) ? messages : [messages];
  return { ...(input as object), messages: list.map((m) => redactMessage(m as BaseMessageLike, redaction, viewer).message) };
}

/**
 * The audit log with every appended event's `data` redacted (no viewer: nothing visible) before
 * the store, its hash chain and its exporters see it. Everything else is the log itself.
 * @example
 * ```ts
 * const auditLog = redactingAuditLog(new SqliteAuditLog({ path }), defineRedaction(STANDARD_REDACTIONS));
 * ```
 */
export function redactingAuditLog<L extends AuditLog>(auditLog: L, redaction: Redaction): L {
  const screen = (event: AuditEventInput): AuditEventInput => {
    if (redaction.mayChange && !redaction.mayChange(event.data)) return event;
    const { value, redacted } = redaction.apply(event.data, undefined);
    return redacted.length === 0 ? event : ({ ...event, data: value } as AuditEventInput);
  };
  return new Proxy(auditLog, {
    get(target, property, receiver) {
      if (property === "append") {
        return (events: AuditEventInput | readonly AuditEventInput[]) =>
          target.append(Array.isArray(events) ? (events as readonly AuditEventInput[]).map(screen) : screen(events as AuditEventInput));
      }
      const value = Reflect.get(target, property, receiver) as unknown;
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
