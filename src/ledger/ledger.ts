import { z } from "zod";
import { canonicalJson, jsonProblem, sha256Hex } from "../internal/canonical.js";
import { InputError, StoreError } from "../errors.js";
import { processSealKey } from "../decisions/seal.js";
import type { AuditEventInput, AuditLog } from "../audit/log.js";

/**
 * The effect ledger: one record per tool execution, keyed by (thread id, tool call id, digest),
 * written as `started` before the tool runs and `succeeded` / `failed` after. A node that runs
 * again (resume, retry, crash recovery) reads the record instead of running the tool again.
 */

/** Current schema version of a persisted {@link LedgerEntry}. */
export const LEDGER_SCHEMA_VERSION = 1 as const;

// No NUL: PostgreSQL text cannot hold it, and every store must accept the same keys.
const KeyPart = z
  .string()
  .min(1, "must be a non-empty string")
  .refine((s) => !s.includes("\u0000"), "must not contain NUL characters");

/**
 * The idempotency key of one tool execution. The same tool call id with another digest (an
 * edited call) is another key.
 */
export const LedgerKeySchema = z.object({ threadId: KeyPart, toolCallId: KeyPart, digest: KeyPart }).strict();
export type LedgerKey = z.output<typeof LedgerKeySchema>;

/** Where an execution stands: `started` with no outcome means the outcome is unknown. */
export const LedgerStatusSchema = z.enum(["started", "succeeded", "failed"]);
export type LedgerStatus = z.output<typeof LedgerStatusSchema>;

const IsoDate = z.string().refine((s) => !Number.isNaN(Date.parse(s)), "must be an ISO date");

/**
 * One execution as recorded. `attempt` counts the starts (1, then +1 per {@link EffectLedger.retry});
 * `startedAt` is when the current attempt started. `result` is set (JSON, possibly `null`) only
 * when `succeeded`, `error` only when `failed`.
 */
export const LedgerEntrySchema = z
  .object({
    schemaVersion: z.literal(LEDGER_SCHEMA_VERSION),
    key: LedgerKeySchema,
    status: LedgerStatusSchema,
    attempt: z.number().int().positive(),
    startedAt: IsoDate,
    finishedAt: IsoDate.optional(),
    result: z.unknown().optional(),
    error: z.string().optional(),
  })
  .strict()
  .superRefine((e, ctx) => {
    if ((e.status === "started") !== (e.finishedAt === undefined)) {
      ctx.addIssue({ code: "custom", path: ["finishedAt"], message: "is set exactly when the entry is finished" });
    }
    if (e.status !== "succeeded" && "result" in e) ctx.addIssue({ code: "custom", path: ["result"], message: "only a succeeded entry has a result" });
    if (e.status === "succeeded" && !("result" in e)) ctx.addIssue({ code: "custom", path: ["result"], message: "a succeeded entry has a result" });
    if ((e.status === "failed") !== (e.error !== undefined)) {
      ctx.addIssue({ code: "custom", path: ["error"], message: "is set exactly when the entry failed" });
    }
  });
export type LedgerEntry = z.output<typeof LedgerEntrySchema>;

/** The outcome handed to {@link EffectLedger.finish}. `result` must be JSON (use `null` for nothing). */
export const LedgerOutcomeSchema = z.discriminatedUnion("status", [
  z.object({ status: z.literal("succeeded"), result: z.unknown() }).strict(),
  z.object({ status: z.literal("failed"), error: z.string().min(1, "must be a non-empty string") }).strict(),
]);
export type LedgerOutcome = z.output<typeof LedgerOutcomeSchema>;

/** What {@link EffectLedger.begin} found: `claimed` when this caller created the entry. */
export type LedgerBegin = { claimed: boolean; entry: LedgerEntry };

/**
 * Audit events to commit with a ledger write ({@link EffectLedger.begin}, {@link EffectLedger.finish}):
 * appended to `log`, exactly as `log.append(events)` appends them, in the same transaction as the
 * write and only if the write happens (the key claimed, the entry finished). Given only to a ledger
 * whose {@link EffectLedger.commitsWith} says yes for `log`; any other refuses it.
 * @example
 * ```ts
 * if (ledger.commitsWith?.(auditLog)) {
 *   await ledger.begin(key, new Date(), { log: auditLog, events: [{ threadId, type: "tool.started", data }] });
 * }
 * ```
 */
export interface LedgerAudit {
  log: AuditLog;
  events: readonly AuditEventInput[];
}

/**
 * Records tool executions by idempotency key, so that a call runs at most once per key. Every
 * operation is atomic in its store, also across processes for the SQLite and PostgreSQL stores.
 * @example
 * ```ts
 * const { claimed, entry } = await ledger.begin(key);
 * if (claimed) {
 *   const result = await tool.invoke(args);
 *   await ledger.finish(key, { status: "succeeded", result });
 * } else if (entry.status === "succeeded") {
 *   return entry.result; // recorded: never run again
 * }
 * ```
 */
export interface EffectLedger {
  /**
   * Records that an execution is about to start. Returns `{ claimed: true }` with a new entry
   * (attempt 1) when this caller created it, or `{ claimed: false }` with the existing entry, in
   * any status, unchanged. With `audit`, its events are appended in the same commit as the claim,
   * and not at all when the key was not claimed; a failed append leaves no claim.
   */
  begin(key: LedgerKey, now?: Date, audit?: LedgerAudit): Promise<LedgerBegin>;
  /**
   * Claims a retry of an execution whose outcome is unknown: bumps `attempt` (and sets
   * `startedAt`) only if the entry is still `started` at `expectedAttempt` (compare-and-set).
   * Returns the updated entry, or `undefined` when it is missing or changed meanwhile.
   */
  retry(key: LedgerKey, expectedAttempt: number, now?: Date): Promise<LedgerEntry | undefined>;
  /**
   * Records the outcome of a `started` entry. `false` when the entry is missing or already
   * finished: a finished entry is never changed. With `audit`, its events are appended in the same
   * commit as the outcome, and not at all when it returns `false`; a failed append records no outcome.
   */
  finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date, audit?: LedgerAudit): Promise<boolean>;
  /**
   * Whether this ledger can commit `log`'s events in its own transactions (the `audit` argument of
   * `begin` and `finish`): true only when both live in one transaction domain, e.g. the SQLite
   * ledger and audit log on the very same database connection, or the PostgreSQL ones on the same
   * pool. The governed tool node then makes the two durable commits a crash-safe call needs (the
   * claim with `tool.started`, the outcome with its event) instead of four. Optional: a ledger
   * without it gets no `audit`.
   */
  commitsWith?(log: AuditLog): boolean;
  /** The entry of a key, or `undefined`. */
  get(key: LedgerKey): Promise<LedgerEntry | undefined>;
  /** Every entry of a thread, by `startedAt`, then tool call id, then digest. */
  list(threadId: string): Promise<LedgerEntry[]>;
  /**
   * The key that seals eart's records in graph state, kept in this ledger's store and the same for
   * every process that shares it (the memory ledger: the process's key). A ledger that wraps
   * another forwards it.
   */
  sealKey(): Promise<Uint8Array> | Uint8Array;
}

/**
 * A call to an {@link EffectLedger} with input that does not validate (bad key, outcome, attempt
 * or date, or a result that is not JSON). Nothing is written. `field` names the bad argument.
 * @example
 * ```ts
 * await ledger.finish(key, { status: "succeeded", result: new Map() }); // throws LedgerInputError { field: "outcome" }
 * ```
 */
export class LedgerInputError extends InputError {
  readonly field: string;
  constructor(field: string, message: string) {
    super("ledger_input_invalid", `effect-ledger ${field}`, `Invalid effect-ledger input "${field}": ${message}`, { field });
    this.field = field;
  }
}

export function parseWith<S extends z.ZodType>(schema: S, field: string, value: unknown): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const at = issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
  throw new LedgerInputError(field, `${at}${issue.message}`);
}

/**
 * The events of a ledger write's `audit`, checked against the ledger's own store: `undefined` for
 * none (no audit, or no events), else the events. Throws {@link LedgerInputError} (field `audit`)
 * when the ledger cannot commit them with its write (`shares` says whether it can for that log).
 */
export function parseAudit(audit: unknown, shares: (log: AuditLog) => boolean): readonly AuditEventInput[] | undefined {
  if (audit === undefined) return undefined;
  const a = audit as Partial<LedgerAudit> | null;
  if (typeof a !== "object" || a === null || !Array.isArray(a.events) || typeof a.log?.append !== "function") {
    throw new LedgerInputError("audit", "must be { log, events } with an audit log and an array of events");
  }
  if (!shares(a.log)) throw new LedgerInputError("audit", "this ledger cannot commit that audit log's events in its own transactions (see commitsWith): append them yourself");
  return a.events.length === 0 ? undefined : a.events;
}

export const parseKey = (key: unknown): LedgerKey => parseWith(LedgerKeySchema, "key", key);
export const parseThreadId = (threadId: unknown): string => parseWith(KeyPart, "threadId", threadId);
export const parseAttempt = (attempt: unknown): number =>
  parseWith(z.number().int().positive("must be a positive integer"), "expectedAttempt", attempt);

export function isoOf(now: unknown): string {
  const at = now ?? new Date();
  if (!(at instanceof Date) || Number.isNaN(at.getTime())) throw new LedgerInputError("now", "must be a valid Date");
  return at.toISOString();
}

/** The validated outcome, with its result as JSON text. */
export type ParsedOutcome = { status: "succeeded"; resultJson: string } | { status: "failed"; error: string };

export function parseOutcome(outcome: unknown): ParsedOutcome {
  const parsed = parseWith(LedgerOutcomeSchema, "outcome", outcome);
  if (parsed.status === "failed") return parsed;
  const problem = jsonProblem(parsed.result);
  if (problem) {
    const at = problem.path.reduce<string>((out, part) => (typeof part === "number" ? `${out}[${part}]` : `${out}.${part}`), "result");
    throw new LedgerInputError("outcome", `the result must be JSON-serialisable: ${at} ${problem.why} (use null for no result)`);
  }
  return { status: "succeeded", resultJson: JSON.stringify(parsed.result) };
}

/**
 * A stable string for an idempotency key (the SHA-256 hex of its canonical JSON), for a tool to
 * forward to the system it calls, e.g. as an `Idempotency-Key` header.
 * @example
 * ```ts
 * fetch(url, { method: "POST", headers: { "Idempotency-Key": idempotencyKeyOf(key) }, body });
 * ```
 */
export function idempotencyKeyOf(key: LedgerKey): string {
  const { threadId, toolCallId, digest } = parseKey(key);
  return sha256Hex(canonicalJson({ threadId, toolCallId, digest }));
}

/** A stored row, in the column names of both SQL stores. */
export interface LedgerRow {
  thread_id: string;
  tool_call_id: string;
  digest: string;
  schema_version: number;
  status: string;
  attempt: number;
  started_at: string | Date;
  finished_at: string | Date | null;
  result: string | null;
  error: string | null;
}

const iso = (v: string | Date): string => (v instanceof Date ? v.toISOString() : v);

/** A row as an entry, re-validated: a corrupt row is reported, never returned. */
export function entryOfRow(row: LedgerRow): LedgerEntry {
  let result: { result?: unknown } = {};
  try {
    if (row.result !== null) result = { result: JSON.parse(row.result) as unknown };
  } catch (error) {
    throw new StoreError("store_failure", "effect_ledger", "read", `the stored result of ${row.thread_id}/${row.tool_call_id} is not JSON`, { threadId: row.thread_id, toolCallId: row.tool_call_id }, { cause: error });
  }
  const entry = {
    schemaVersion: Number(row.schema_version),
    key: { threadId: row.thread_id, toolCallId: row.tool_call_id, digest: row.digest },
    status: row.status,
    attempt: Number(row.attempt),
    startedAt: iso(row.started_at),
    ...(row.finished_at !== null ? { finishedAt: iso(row.finished_at) } : {}),
    ...result,
    ...(row.error !== null ? { error: row.error } : {}),
  };
  const parsed = LedgerEntrySchema.safeParse(entry);
  if (!parsed.success) {
    throw new StoreError("store_failure", "effect_ledger", "read", `the stored entry ${row.thread_id}/${row.tool_call_id} is invalid: ${parsed.error.issues[0]?.message}`, { threadId: row.thread_id, toolCallId: row.tool_call_id });
  }
  return parsed.data;
}

export const byStartThenCall = (a: LedgerEntry, b: LedgerEntry): number =>
  cmp(a.startedAt, b.startedAt) || cmp(a.key.toolCallId, b.key.toolCallId) || cmp(a.key.digest, b.key.digest);
export const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * An effect ledger in memory: for tests and single-process runs. Entries are copied in and out,
 * so a caller cannot change what is recorded.
 * @example
 * ```ts
 * const ledger = new MemoryEffectLedger();
 * const { claimed } = await ledger.begin({ threadId: "t1", toolCallId: "call_1", digest });
 * ```
 */
export class MemoryEffectLedger implements EffectLedger {
  readonly #entries = new Map<string, LedgerEntry>();

  /** The process's seal key: state sealed here is trusted by this process only, as the entries are. */
  sealKey(): Uint8Array {
    return processSealKey();
  }

  static #id(key: LedgerKey): string {
    return canonicalJson([key.threadId, key.toolCallId, key.digest]);
  }

  static #copy(entry: LedgerEntry): LedgerEntry {
    return JSON.parse(JSON.stringify(entry)) as LedgerEntry;
  }

  // Each method validates first and then reads and writes with no await in between: atomic.

  /** False: in memory there is no commit to share, and a ledger write's `audit` is refused. */
  commitsWith(_log: AuditLog): boolean {
    return false;
  }

  async begin(key: LedgerKey, now?: Date, audit?: LedgerAudit): Promise<LedgerBegin> {
    const k = parseKey(key);
    const startedAt = isoOf(now);
    parseAudit(audit, () => false);
    const id = MemoryEffectLedger.#id(k);
    const existing = this.#entries.get(id);
    if (existing) return { claimed: false, entry: MemoryEffectLedger.#copy(existing) };
    // Built from validated parts: valid by construction, no second parse.
    const entry: LedgerEntry = { schemaVersion: LEDGER_SCHEMA_VERSION, key: { ...k }, status: "started", attempt: 1, startedAt };
    this.#entries.set(id, entry);
    return { claimed: true, entry: MemoryEffectLedger.#copy(entry) };
  }

  async retry(key: LedgerKey, expectedAttempt: number, now?: Date): Promise<LedgerEntry | undefined> {
    const k = parseKey(key);
    const attempt = parseAttempt(expectedAttempt);
    const startedAt = isoOf(now);
    const id = MemoryEffectLedger.#id(k);
    const existing = this.#entries.get(id);
    if (!existing || existing.status !== "started" || existing.attempt !== attempt) return undefined;
    const entry: LedgerEntry = { ...existing, attempt: attempt + 1, startedAt };
    this.#entries.set(id, entry);
    return MemoryEffectLedger.#copy(entry);
  }

  async finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date, audit?: LedgerAudit): Promise<boolean> {
    const k = parseKey(key);
    const parsed = parseOutcome(outcome);
    const finishedAt = isoOf(now);
    parseAudit(audit, () => false);
    const id = MemoryEffectLedger.#id(k);
    const existing = this.#entries.get(id);
    if (!existing || existing.status !== "started") return false;
    const entry: LedgerEntry = {
      ...existing,
      status: parsed.status,
      finishedAt,
      ...(parsed.status === "succeeded" ? { result: JSON.parse(parsed.resultJson) as unknown } : { error: parsed.error }),
    };
    this.#entries.set(id, entry);
    return true;
  }

  async get(key: LedgerKey): Promise<LedgerEntry | undefined> {
    const entry = this.#entries.get(MemoryEffectLedger.#id(parseKey(key)));
    return entry && MemoryEffectLedger.#copy(entry);
  }

  async list(threadId: string): Promise<LedgerEntry[]> {
    const id = parseThreadId(threadId);
    return [...this.#entries.values()]
      .filter((e) => e.key.threadId === id)
      .sort(byStartThenCall)
      .map((e) => MemoryEffectLedger.#copy(e));
  }
}

export const TABLE = "eart_effect_ledger";
export const KEY_TABLE = "eart_seal_keys";
export const COLUMNS = "thread_id, tool_call_id, digest, schema_version, status, attempt, started_at, finished_at, result, error";
