import { randomUUID } from "node:crypto";
import { z } from "zod";
import { canonicalJson, sha256Hex } from "./canonical.js";
import { AuditInputError } from "./errors.js";

/** Every kind of audit event. */
export const AuditEventTypeSchema = z.enum([
  "run.started",
  "identity.bound",
  "model.output",
  "policy.decided",
  "approval.requested",
  "approval.decided",
  "approval.refused",
  "approval.expired",
  "policy.shadow_flip",
  "tool.started",
  "tool.succeeded",
  "tool.failed",
  "tool.blocked",
  "tool.retrying",
  "tool.fallback",
  "tool.replayed",
  "tool.recovery_requested",
  "tool.recovery_decided",
  "tool.recovery_refused",
  "tool.circuit_opened",
  "model.failed",
  "context.retrieved",
  "escalation.requested",
  "escalation.decided",
  "escalation.refused",
  "budget.charge_failed",
  "run.completed",
]);
export type AuditEventType = z.output<typeof AuditEventTypeSchema>;

/** Current version of the audit event record. */
export const AUDIT_SCHEMA_VERSION = 1 as const;

/** The `prevHash` of the first event of every thread. */
export const GENESIS_HASH = "0".repeat(64);

/** An event as stored: versioned, sequenced per thread, and chained to the previous one by hash. */
export const AuditEventSchema = z.object({
  schemaVersion: z.literal(AUDIT_SCHEMA_VERSION),
  id: z.string(),
  threadId: z.string().min(1),
  seq: z.number().int().nonnegative(),
  type: AuditEventTypeSchema,
  at: z.string(),
  data: z.record(z.string(), z.unknown()),
  prevHash: z.string(),
  hash: z.string(),
});
export type AuditEvent = z.output<typeof AuditEventSchema>;

/** What a node hands to {@link AuditLog.append}; the log adds id, sequence and hashes. */
export const AuditEventInputSchema = z.object({
  threadId: z.string().min(1),
  type: AuditEventTypeSchema,
  data: z.record(z.string(), z.unknown()).default({}),
  at: z.string().optional(),
});
export type AuditEventInput = z.input<typeof AuditEventInputSchema>;

/** Where the chain of a thread broke. */
export interface AuditBreak {
  seq: number;
  eventId: string | undefined;
  reason: "hash_mismatch" | "prev_hash_mismatch" | "sequence_gap" | "head_mismatch" | "malformed";
  expected: string;
  found: string;
}

/** Result of {@link AuditLog.verify}. */
export type AuditVerification =
  | { ok: true; threadId: string; count: number; headHash: string }
  | { ok: false; threadId: string; count: number; brokenAt: AuditBreak };

/**
 * Append-only, hash-chained audit log: one chain per thread.
 * @example
 * ```ts
 * await log.append({ threadId: "t1", type: "run.started", data: { input: "refund 1042" } });
 * const events = await log.read("t1");
 * const result = await log.verify("t1"); // { ok: true, ... }
 * ```
 */
export interface AuditLog {
  /** Appends events atomically, in order; returns them as stored. */
  append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]>;
  /** Every event of a thread, in sequence order. */
  read(threadId: string): Promise<AuditEvent[]>;
  /** Recomputes the chain of a thread and reports the first broken link. */
  verify(threadId: string): Promise<AuditVerification>;
  /** Thread ids that have events. */
  listThreads(): Promise<string[]>;
}

/** The chain position an append continues from. */
export interface ChainHead {
  seq: number;
  hash: string;
}

const EVENT_TYPES: ReadonlySet<string> = new Set(AuditEventTypeSchema.options);

/**
 * SHA-256 of the RFC 8785 canonical JSON of an event without its hash. The envelope's keys are
 * fixed, so it is written in their sorted order around the canonical JSON of `data`; the result is
 * byte-for-byte `canonicalJson` of the whole object.
 */
function hashOf(event: Omit<AuditEvent, "hash">, canonicalData: string = canonicalJson(event.data)): string {
  return sha256Hex(
    `{"at":${JSON.stringify(event.at)},"data":${canonicalData},"id":${JSON.stringify(event.id)},"prevHash":${JSON.stringify(event.prevHash)},` +
      `"schemaVersion":${event.schemaVersion},"seq":${event.seq},"threadId":${JSON.stringify(event.threadId)},"type":${JSON.stringify(event.type)}}`,
  );
}

/** Checks an input cheaply (this runs on every step); the schema says the same, for callers. */
function checkInput(input: AuditEventInput): void {
  if (typeof input !== "object" || input === null) throw new AuditInputError("an audit event must be an object");
  if (typeof input.threadId !== "string" || input.threadId === "") throw new AuditInputError("threadId must be a non-empty string");
  if (!EVENT_TYPES.has(input.type)) throw new AuditInputError(`unknown audit event type "${String(input.type)}"`);
  if (input.data !== undefined && (typeof input.data !== "object" || input.data === null || Array.isArray(input.data))) {
    throw new AuditInputError("data must be an object");
  }
  if (input.at !== undefined && typeof input.at !== "string") throw new AuditInputError("at must be an ISO date string");
}

/**
 * Seals inputs of one thread onto its chain head. Data is normalised to plain JSON first, so
 * what is hashed is exactly what a store reads back.
 * @example
 * ```ts
 * const [event] = sealEvents(null, [{ threadId: "t1", type: "run.started" }]);
 * ```
 */
export function sealEvents(head: ChainHead | null, inputs: readonly AuditEventInput[]): AuditEvent[] {
  return sealEventsWithJson(head, inputs).map((s) => s.event);
}

/** {@link sealEvents}, also returning each event's data as the JSON text a store keeps. */
export function sealEventsWithJson(head: ChainHead | null, inputs: readonly AuditEventInput[]): { event: AuditEvent; dataJson: string }[] {
  let seq = head ? head.seq + 1 : 0;
  let prevHash = head ? head.hash : GENESIS_HASH;
  const out: { event: AuditEvent; dataJson: string }[] = [];
  for (const input of inputs) {
    checkInput(input);
    // Normalise data to plain JSON once; hash exactly what a store will read back.
    const dataJson = JSON.stringify(input.data ?? {});
    const data = JSON.parse(dataJson) as Record<string, unknown>;
    const unsealed = {
      schemaVersion: AUDIT_SCHEMA_VERSION,
      id: randomUUID(),
      threadId: input.threadId,
      seq,
      type: input.type,
      at: input.at ?? new Date().toISOString(),
      data,
      prevHash,
    };
    const event = { ...unsealed, hash: hashOf(unsealed, canonicalJson(data)) };
    out.push({ event, dataJson });
    prevHash = event.hash;
    seq += 1;
  }
  return out;
}

/**
 * Checks a thread's events, as read from a store, against their chain and, when the store keeps
 * one, its recorded head. Detects changed, deleted, inserted and reordered events.
 * @example
 * ```ts
 * const result = verifyChain("t1", await log.read("t1"));
 * ```
 */
export function verifyChain(threadId: string, events: readonly unknown[], head?: ChainHead | null): AuditVerification {
  let prevHash = GENESIS_HASH;
  for (let i = 0; i < events.length; i++) {
    const parsed = AuditEventSchema.safeParse(events[i]);
    const rawId = (events[i] as { id?: unknown } | null)?.id;
    const eventId = typeof rawId === "string" ? rawId : undefined;
    if (!parsed.success || parsed.data.threadId !== threadId) {
      const found = parsed.success ? `threadId ${parsed.data.threadId}` : (parsed.error.issues[0]?.message ?? "malformed");
      return { ok: false, threadId, count: events.length, brokenAt: { seq: i, eventId, reason: "malformed", expected: "a valid audit event", found } };
    }
    const event = parsed.data;
    if (event.seq !== i) {
      return { ok: false, threadId, count: events.length, brokenAt: { seq: i, eventId, reason: "sequence_gap", expected: String(i), found: String(event.seq) } };
    }
    if (event.prevHash !== prevHash) {
      return { ok: false, threadId, count: events.length, brokenAt: { seq: i, eventId, reason: "prev_hash_mismatch", expected: prevHash, found: event.prevHash } };
    }
    const { hash, ...unsealed } = event;
    const expected = hashOf(unsealed);
    if (expected !== hash) {
      return { ok: false, threadId, count: events.length, brokenAt: { seq: i, eventId, reason: "hash_mismatch", expected, found: hash } };
    }
    prevHash = hash;
  }
  if (head !== undefined) {
    const expectedHead = head ? `${head.seq}:${head.hash}` : `-1:${GENESIS_HASH}`;
    const foundHead = `${events.length - 1}:${prevHash}`;
    if (expectedHead !== foundHead) {
      return {
        ok: false,
        threadId,
        count: events.length,
        // The first position the recorded head and the stored events disagree on.
        brokenAt: { seq: Math.min(events.length, (head?.seq ?? -1) + 1), eventId: undefined, reason: "head_mismatch", expected: expectedHead, found: foundHead },
      };
    }
  }
  return { ok: true, threadId, count: events.length, headHash: prevHash };
}

function groupByThread(inputs: readonly AuditEventInput[]): Map<string, AuditEventInput[]> {
  const groups = new Map<string, AuditEventInput[]>();
  for (const input of inputs) {
    const list = groups.get(input.threadId);
    if (list) list.push(input);
    else groups.set(input.threadId, [input]);
  }
  return groups;
}

/** Normalises the argument of `append` to a list. */
export function toInputList(events: AuditEventInput | readonly AuditEventInput[]): readonly AuditEventInput[] {
  return Array.isArray(events) ? (events as readonly AuditEventInput[]) : [events as AuditEventInput];
}

/**
 * Audit log held in memory: for tests and short-lived processes.
 * @example
 * ```ts
 * const auditLog = new MemoryAuditLog();
 * const agent = createGovernedAgent({ ..., auditLog });
 * ```
 */
export class MemoryAuditLog implements AuditLog {
  // Data is kept as JSON text: appends hand out the sealed objects themselves, reads parse fresh
  // copies, and nothing a caller holds can change what is stored.
  readonly #threads = new Map<string, StoredEvent[]>();

  async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
    // Seal every thread's events before storing any, so a bad event stores nothing.
    const sealed = [...groupByThread(toInputList(events))].map(([threadId, inputs]) => {
      const last = this.#threads.get(threadId)?.at(-1);
      return [threadId, sealEventsWithJson(last ? { seq: last.seq, hash: last.hash } : null, inputs)] as const;
    });
    const out: AuditEvent[] = [];
    for (const [threadId, list] of sealed) {
      let chain = this.#threads.get(threadId);
      if (!chain) this.#threads.set(threadId, (chain = []));
      for (const { event, dataJson } of list) {
        chain.push({ ...event, data: dataJson });
        out.push(event);
      }
    }
    return out;
  }

  async read(threadId: string): Promise<AuditEvent[]> {
    return (this.#threads.get(threadId) ?? []).map((e) => ({ ...e, data: JSON.parse(e.data) as Record<string, unknown> }));
  }

  async verify(threadId: string): Promise<AuditVerification> {
    return verifyChain(threadId, await this.read(threadId));
  }

  async listThreads(): Promise<string[]> {
    return [...this.#threads.keys()].sort();
  }
}

type StoredEvent = Omit<AuditEvent, "data"> & { data: string };

export { groupByThread };
