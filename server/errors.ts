import { EART_ERROR_CODES, type EartErrorCode } from "../src/errors.js";

/** An error a LangGraph server run ended with, as a client reads it. */
export interface ServerError {
  /** The error's class name (`ApprovalError`, `ThreadStateError`, …). */
  name: string;
  /** eart's code when eart raised it (the message leads with it), else undefined. */
  code: EartErrorCode | undefined;
  message: string;
}

const CODES: ReadonlySet<string> = new Set(EART_ERROR_CODES);

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
  const code = match && CODES.has(match[1]!) ? (match[1] as EartErrorCode) : undefined;
  return { name: typeof error === "string" ? error : "Error", code, message: code ? match![2]! : text };
}
