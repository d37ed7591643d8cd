import type { StructuredToolInterface } from "@langchain/core/tools";
import { z } from "zod";
import { ToolArgumentError, ToolPermissionError, ToolTimeoutError } from "../errors.js";

/**
 * How the governed tool node runs one tool: whether it is idempotent, its timeout, retries,
 * circuit breaker and fallback. Parsed once, at construction.
 */

/** Retries with exponential backoff (tools and models). */
export const RetryOptionsSchema = z
  .object({
    /** Total attempts, the first included (1 = no retry). */
    attempts: z.number().int().min(1).max(100).default(1),
    /** Delay before the first retry; each next one is `factor` times longer, up to `maxDelayMs`. */
    initialDelayMs: z.number().int().nonnegative().default(200),
    factor: z.number().min(1).default(2),
    maxDelayMs: z.number().int().nonnegative().default(10_000),
    /** Full jitter (a random delay up to the computed one). Turn off for reproducible tests. */
    jitter: z.boolean().default(true),
    /**
     * Which errors are worth another attempt. Default: every error except bad arguments,
     * permission refusals and timeouts of tools not declared idempotent.
     */
    retryOn: z.custom<(error: unknown) => boolean>((v) => typeof v === "function", "must be a function").optional(),
  })
  .strict();

const BreakerOptionsSchema = z
  .object({
    /** Failures within `windowMs` that open the breaker. */
    failureThreshold: z.number().int().min(1),
    windowMs: z.number().int().positive().default(60_000),
    /** How long the breaker stays open before it lets one trial call through (half-open). */
    cooldownMs: z.number().int().positive().default(30_000),
  })
  .strict();

const FallbackSchema = z.union([
  z.object({ tool: z.custom<StructuredToolInterface>((v) => typeof (v as StructuredToolInterface)?.invoke === "function", "must be a LangChain tool") }).strict(),
  z.object({ value: z.unknown() }).strict().refine((f) => "value" in f, { message: "give the fallback value" }),
]);

/**
 * Options for one tool of the governed tool node.
 * @example
 * ```ts
 * const execution: ToolExecutionOptions = {
 *   idempotent: true,
 *   timeout: 5_000,
 *   retry: { attempts: 3, initialDelayMs: 100 },
 *   breaker: { failureThreshold: 5, windowMs: 60_000, cooldownMs: 30_000 },
 *   fallback: { value: "The payments service is unavailable; try again later." },
 * };
 * ```
 */
export const ToolExecutionOptionsSchema = z
  .object({
    /**
     * The tool may run again with the same idempotency key without a second effect (it forwards
     * the key, e.g. as an Idempotency-Key header). Only then is an execution whose outcome is
     * unknown (crash, timeout, a run cancelled while the tool ran) retried automatically;
     * otherwise a human decides.
     */
    idempotent: z.boolean().default(false),
    /** Milliseconds before the tool's `AbortSignal` is aborted with a `ToolTimeoutError`. */
    timeout: z.number().int().positive().optional(),
    retry: RetryOptionsSchema.optional(),
    breaker: BreakerOptionsSchema.optional(),
    /** Used when the tool's attempts are exhausted or its breaker is open. */
    fallback: FallbackSchema.optional(),
  })
  .strict();
export type ToolExecutionOptions = z.input<typeof ToolExecutionOptionsSchema>;
export type ParsedToolExecution = z.output<typeof ToolExecutionOptionsSchema>;
export type RetryOptions = z.output<typeof RetryOptionsSchema>;
export type BreakerOptions = z.output<typeof BreakerOptionsSchema>;

/** What kind of failure an error thrown by a tool is. */
export type ToolFailureKind = "arguments" | "permission" | "timeout" | "error";

/**
 * Classifies a tool error: bad model arguments (the only kind answered to the model), a
 * permission refusal (401/403 or {@link ToolPermissionError}), a timeout, or any other failure.
 */
export function classifyToolError(error: unknown): ToolFailureKind {
  if (error instanceof ToolArgumentError) return "arguments";
  if (error instanceof ToolPermissionError) return "permission";
  if (error instanceof ToolTimeoutError) return "timeout";
  const status = (error as { status?: unknown; statusCode?: unknown } | null)?.status ?? (error as { statusCode?: unknown } | null)?.statusCode;
  if (status === 401 || status === 403) return "permission";
  return "error";
}

/**
 * The delay before retry number `retry` (1 for the first retry): exponential, capped, with full
 * jitter when enabled.
 * @example
 * ```ts
 * backoffDelay({ attempts: 3, initialDelayMs: 100, factor: 2, maxDelayMs: 1000, jitter: false }, 2); // 200
 * ```
 */
export function backoffDelay(retry: RetryOptions, n: number, random: () => number = Math.random): number {
  const base = Math.min(retry.maxDelayMs, retry.initialDelayMs * retry.factor ** Math.max(0, n - 1));
  return retry.jitter ? Math.floor(random() * base) : base;
}

/** Where a breaker stands at a given time. */
export type BreakerAdmission = { admitted: true; trial: boolean } | { admitted: false; openUntil: Date };

/**
 * A circuit breaker: opens after `failureThreshold` failures within `windowMs`; while open,
 * calls fail fast; after `cooldownMs` one trial call is let through (half-open): its success
 * closes the breaker, its failure opens it again.
 * @example
 * ```ts
 * const breaker = new CircuitBreaker({ failureThreshold: 3, windowMs: 60_000, cooldownMs: 30_000 });
 * const admission = breaker.admit(new Date());
 * ```
 */
export class CircuitBreaker {
  readonly #options: BreakerOptions;
  #failures: number[] = [];
  #openedAt: number | undefined;
  /** The admission of the half-open trial in flight, if any: only its holder can give it back. */
  #trial: BreakerAdmission | undefined;

  constructor(options: z.input<typeof BreakerOptionsSchema>) {
    this.#options = BreakerOptionsSchema.parse(options);
  }

  /** `closed`, `open` or `half_open` at `now`. */
  state(now: Date): "closed" | "open" | "half_open" {
    if (this.#openedAt === undefined) return "closed";
    return now.getTime() - this.#openedAt >= this.#options.cooldownMs ? "half_open" : "open";
  }

  /** Whether a call may go through now; a half-open breaker admits one trial at a time. */
  admit(now: Date): BreakerAdmission {
    const state = this.state(now);
    if (state === "closed") return { admitted: true, trial: false };
    if (state === "half_open" && this.#trial === undefined) {
      this.#trial = { admitted: true, trial: true };
      return this.#trial;
    }
    const openUntil = new Date((this.#openedAt ?? now.getTime()) + this.#options.cooldownMs);
    return { admitted: false, openUntil: openUntil.getTime() > now.getTime() ? openUntil : now };
  }

  /** Records a success: the breaker closes and forgets past failures. */
  success(): void {
    this.#failures = [];
    this.#openedAt = undefined;
    this.#trial = undefined;
  }

  /**
   * Records a call that was cancelled with its run (see {@link isRunCancelled}): neither a success
   * nor a failure, so nothing is counted; the half-open trial it held is given back, or the breaker
   * would wait for that trial's outcome for ever. Call it only for a call admitted as the trial.
   */
  cancellation(): void {
    this.#trial = undefined;
  }

  /**
   * Gives back the trial this admission holds when its try ended without a success, a failure or
   * a cancellation being recorded (bad arguments, a refusal sent to a human, a pause, an error of
   * eart's own): nothing is counted. A trial already settled, or another's, is left as it is.
   */
  release(admission: BreakerAdmission): void {
    if (this.#trial === admission) this.#trial = undefined;
  }

  /** Records a failure. Returns true when this failure opened the breaker. */
  failure(now: Date): boolean {
    const t = now.getTime();
    if (this.#trial !== undefined || this.#openedAt !== undefined) {
      this.#trial = undefined;
      this.#openedAt = t;
      return true;
    }
    this.#failures = [...this.#failures.filter((f) => t - f < this.#options.windowMs), t];
    if (this.#failures.length >= this.#options.failureThreshold) {
      this.#openedAt = t;
      this.#failures = [];
      return true;
    }
    return false;
  }
}

/**
 * Whether the run was cancelled: the run's `AbortSignal` (a node's `config.signal`) is aborted, by
 * a client or server cancel, a LangGraph server multitask `interrupt` / `rollback`, `abort()` on
 * the controller of `graph.invoke(input, { signal })`, or LangGraph throwing the step away (a step
 * timeout, another node of the step failing). The step's outcome is discarded, so it is not a tool
 * failure: nothing is retried, counted by a breaker, or handed to a human. A tool's own `timeout`
 * aborts only the signal eart gives that tool, never the run's, so it is a failure, not this.
 * @example
 * ```ts
 * if (isRunCancelled(config.signal)) throw error; // untouched: LangGraph ends the run as cancelled
 * ```
 */
export function isRunCancelled(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
