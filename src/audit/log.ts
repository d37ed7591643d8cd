import * as nodeCrypto from "node:crypto";
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { AUDIT_EVENT_TYPES, type AuditEventData, type AuditEventType } from "./events.js";
import { auditKeyId, headSigner, toPublicKey, verifyHeadSignature, type AuditPublicKey, type AuditSigningKey, type HeadSigner, type SignedChainHead } from "./signing.js";
import { canonicalJson, jsonString, plainCanonicalJson, sha256Hex } from "../internal/canonical.js";
import { globalHeadSigner, globalMismatch, nextGlobalEntry, type GlobalEntry, type GlobalHead, type SignedGlobalHead, type ThreadHead } from "./global.js";
import type { KeyObject } from "node:crypto";
import { AuditInputError, EartConfigError } from "../errors.js";
import { parseOptions } from "../internal/options.js";
import { InboxIndex, parsePendingOptions, type PendingOptions, type PendingTask } from "./inbox.js";

/** Every kind of audit event (each one's data: {@link AuditEventDataSchemas}). */
export const AuditEventTypeSchema = z.enum(AUDIT_EVENT_TYPES);
export type { AuditEventType };

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
/**
 * What a node hands to {@link AuditLog.append}, typed by event type: `data` is what that type
 * records ({@link AuditEventData}), so a producer that misspells or forgets a field does not compile.
 */
export type AuditEventInput = { [T in AuditEventType]: { threadId: string; type: T; data?: AuditEventData<T>; at?: string } }[AuditEventType];

/** Where the chain of a thread broke. */
export interface AuditBreak {
  seq: number;
  eventId: string | undefined;
  /**
   * `global_mismatch`: the thread's chain disagrees with its latest head in the store's global log
   * (rolled back, cut short, deleted whole, or never logged).
   */
  reason: "hash_mismatch" | "prev_hash_mismatch" | "sequence_gap" | "head_mismatch" | "malformed" | "signature_invalid" | "global_mismatch";
  expected: string;
  found: string;
}

/** What {@link AuditLog.verify} checks beyond the chain and the store's recorded head. */
export interface AuditVerifyOptions {
  /**
   * Check the thread's signed head with this Ed25519 public key (KeyObject or PEM): it must be
   * signed by this key and the chain must end exactly at it. A store that signs checks with its
   * own key when none is given.
   */
  publicKey?: AuditPublicKey;
  /**
   * A head seen earlier and kept outside the store (e.g. a signed head an auditor saved): the
   * chain must still contain it. This is what detects a rollback to an earlier head.
   */
  knownHead?: ChainHead;
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
  /**
   * Appends events atomically (all or none), each thread's in the given order; returns them as
   * stored: grouped by thread, threads in order of first appearance. A bad event anywhere in the
   * batch throws `AuditInputError` and stores nothing.
   */
  append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]>;
  /** Every event of a thread, in sequence order. */
  read(threadId: string): Promise<AuditEvent[]>;
  /** Recomputes the chain of a thread and reports the first broken link. */
  verify(threadId: string, options?: AuditVerifyOptions): Promise<AuditVerification>;
  /** Thread ids that have events. */
  listThreads(): Promise<string[]>;
  /** The thread's latest signed chain head, on stores given a `signingKey` (undefined when none is stored). */
  signedHead?(threadId: string): Promise<SignedChainHead | undefined>;
  /**
   * The global log over all threads (one entry per append; see `verifyGlobalLog`), with the
   * store's recorded global head and, on stores given a `signingKey`, its signed global head.
   */
  globalLog?(): Promise<GlobalLogSnapshot>;
  /** The global head as of now, signed on stores given a `signingKey`: what a witness keeps. */
  globalHead?(): Promise<{ head: GlobalHead | null; signed?: SignedGlobalHead }>;
  /**
   * What waits for a human, from the store's inbox index (kept in the transaction of every append,
   * so it says what the chain says): the open approval, recovery and escalation requests, oldest
   * first; with `role`, only those whose recorded roles include it. A listing, never an authority:
   * an answer is checked by the graph that asked. On the memory, SQLite and PostgreSQL stores.
   */
  pending?(options?: PendingOptions): Promise<PendingTask[]>;
}

/** A store's global log as read in one snapshot. */
export interface GlobalLogSnapshot {
  entries: GlobalEntry[];
  recorded: GlobalHead | null;
  signedHead?: SignedGlobalHead;
  /** The public key the store signs with, when it signs. */
  publicKey?: KeyObject;
}

/** The chain position an append continues from. */
export interface ChainHead {
  seq: number;
  hash: string;
}

const EVENT_TYPES: ReadonlySet<string> = new Set(AuditEventTypeSchema.options);

// One-shot hashing where Node has it (20.12+): about twice as fast as createHash for short input.
const sha256 = typeof nodeCrypto.hash === "function" ? (text: string) => nodeCrypto.hash("sha256", text, "hex") : sha256Hex;

/**
 * SHA-256 of the RFC 8785 canonical JSON of an event without its hash. The envelope's keys are
 * fixed, so it is written in their sorted order around the canonical JSON of `data`; the result is
 * byte-for-byte `canonicalJson` of the whole object.
 */
function hashOf(event: Omit<AuditEvent, "hash">, canonicalData: string = canonicalJson(event.data), sealing = false): string {
  // When sealing, the id (a fresh UUID) and the type (checked against the enum) need no escaping.
  const id = sealing ? `"${event.id}"` : jsonString(event.id);
  const type = sealing ? `"${event.type}"` : jsonString(event.type);
  return sha256(
    `{"at":${jsonString(event.at)},"data":${canonicalData},"id":${id},"prevHash":${jsonString(event.prevHash)},` +
      `"schemaVersion":${event.schemaVersion},"seq":${event.seq},"threadId":${jsonString(event.threadId)},"type":${type}}`,
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
 * Data as plain JSON, once, and its canonical JSON text: the text a store keeps and the hash
 * covers; the data handed back is that text parsed, so what is hashed is exactly what a store
 * reads back. Plain data is canonicalised directly; anything else goes through JSON.stringify
 * first (Dates become strings, undefined members disappear, as in JSON).
 */
function normaliseData(raw: unknown): { dataJson: string; data: Record<string, unknown> } {
  const value = raw ?? {};
  const copy: { value?: unknown } = {};
  let dataJson = plainCanonicalJson(value, copy);
  let data = copy.value;
  if (dataJson === undefined) {
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (error) {
      throw new AuditInputError(`data must be JSON-serialisable: ${(error as Error).message}`);
    }
    if (text !== undefined) {
      const parsed = JSON.parse(text) as unknown;
      dataJson = plainCanonicalJson(parsed, copy);
      data = copy.value;
      if (dataJson === undefined) {
        // Plain JSON, only nested deeper than the fast path goes: the library's way.
        dataJson = canonicalJson(parsed);
        data = JSON.parse(dataJson) as unknown;
      }
    }
  }
  if (dataJson === undefined || typeof data !== "object" || data === null || Array.isArray(data)) throw new AuditInputError("data must serialise to a JSON object");
  return { dataJson, data: data as Record<string, unknown> };
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

/** A global head as a witness keeps it: where the global log stood, signed when the store signs. */
export interface WitnessHead {
  gseq: number;
  hash: string;
  signed?: SignedGlobalHead;
}

/** The global head each appended event's append reached (see {@link globalHeadOf}). */
const appendedHeads = new WeakMap<AuditEvent, WitnessHead>();

/**
 * The global head (signed, on a store with a `signingKey`) that the append of `event` reached,
 * when `event` is the very object an append returned: what exporters carry out of the store as a
 * witness (`eart audit verify --witness`). Undefined for events read back from a store.
 * @example
 * ```ts
 * const [event] = await auditLog.append({ threadId: "t1", type: "run.started" });
 * globalHeadOf(event); // { gseq: 41, hash: "…", signed: { … } }
 * ```
 */
export function globalHeadOf(event: AuditEvent): WitnessHead | undefined {
  return appendedHeads.get(event);
}

/** Marks the events of one append with the global head it reached (for the stores). */
export function markAppended(events: readonly AuditEvent[], head: GlobalHead, signed: SignedGlobalHead | undefined): void {
  const witness: WitnessHead = { gseq: head.gseq, hash: head.hash, ...(signed ? { signed } : {}) };
  for (const e of events) appendedHeads.set(e, witness);
}

/** The canonical JSON text of each sealed event's data, as it was hashed (see {@link sealedDataJson}). */
const sealedJson = new WeakMap<AuditEvent, string>();

/**
 * The canonical JSON of an event's `data` as it was hashed and stored, when `event` is the very
 * object an append returned (exporters reuse it instead of serialising `data` again); undefined
 * for any other object, such as one read back from a store.
 * @example
 * ```ts
 * const [event] = await auditLog.append({ threadId: "t1", type: "run.started", data: { a: 1 } });
 * sealedDataJson(event); // '{"a":1}'
 * ```
 */
export function sealedDataJson(event: AuditEvent): string | undefined {
  return sealedJson.get(event);
}

/** {@link sealEvents}, also returning each event's data as the JSON text a store keeps (its RFC 8785 canonical form). */
export function sealEventsWithJson(head: ChainHead | null, inputs: readonly AuditEventInput[]): { event: AuditEvent; dataJson: string }[] {
  let seq = head ? head.seq + 1 : 0;
  let prevHash = head ? head.hash : GENESIS_HASH;
  const out: { event: AuditEvent; dataJson: string }[] = [];
  // One clock reading per append: the events of one call are recorded at the same time.
  let now: string | undefined;
  for (const input of inputs) {
    checkInput(input);
    const { dataJson, data } = normaliseData(input.data);
    // Built whole, with its hash field from the start (no copy per event: this is the hot path).
    const event: AuditEvent = {
      schemaVersion: AUDIT_SCHEMA_VERSION,
      id: randomUUID(),
      threadId: input.threadId,
      seq,
      type: input.type,
      at: input.at ?? (now ??= new Date().toISOString()),
      data,
      prevHash,
      hash: "",
    };
    event.hash = hashOf(event, dataJson, true);
    sealedJson.set(event, dataJson);
    out.push({ event, dataJson });
    prevHash = event.hash;
    seq += 1;
  }
  return out;
}

/** Where a chain of events stops being valid, checked from `from` (genesis when null). */
function firstBadLink(threadId: string, events: readonly unknown[], from: ChainHead | null): { brokenAt: AuditBreak } | { head: ChainHead | null } {
  let prevHash = from ? from.hash : GENESIS_HASH;
  const offset = from ? from.seq + 1 : 0;
  for (let i = 0; i < events.length; i++) {
    const position = offset + i;
    const parsed = AuditEventSchema.safeParse(events[i]);
    const rawId = (events[i] as { id?: unknown } | null)?.id;
    const eventId = typeof rawId === "string" ? rawId : undefined;
    if (!parsed.success || parsed.data.threadId !== threadId) {
      const found = parsed.success ? `threadId ${parsed.data.threadId}` : (parsed.error.issues[0]?.message ?? "malformed");
      return { brokenAt: { seq: position, eventId, reason: "malformed", expected: "a valid audit event", found } };
    }
    const event = parsed.data;
    if (event.seq !== position) return { brokenAt: { seq: position, eventId, reason: "sequence_gap", expected: String(position), found: String(event.seq) } };
    if (event.prevHash !== prevHash) return { brokenAt: { seq: position, eventId, reason: "prev_hash_mismatch", expected: prevHash, found: event.prevHash } };
    const { hash, ...unsealed } = event;
    // The stored data itself, not zod's copy of it: that copy drops an own "__proto__" member.
    const expected = hashOf({ ...unsealed, data: (events[i] as { data: Record<string, unknown> }).data });
    if (expected !== hash) return { brokenAt: { seq: position, eventId, reason: "hash_mismatch", expected, found: hash } };
    prevHash = hash;
  }
  return { head: events.length > 0 ? { seq: offset + events.length - 1, hash: prevHash } : from };
}

/**
 * Checks that `events` (one thread's, in stored order) continue the chain from `head` (genesis
 * when null); for a store that finds events after its last recorded head.
 * @example
 * ```ts
 * const result = continuesChain("t1", { seq: 4, hash }, tailEvents); // undefined when they do
 * ```
 */
export function continuesChain(threadId: string, head: ChainHead | null, events: readonly unknown[]): AuditBreak | undefined {
  const result = firstBadLink(threadId, events, head);
  return "brokenAt" in result ? result.brokenAt : undefined;
}

/** What {@link verifyChain} checks besides the events. */
export interface VerifyChainOptions extends AuditVerifyOptions {
  /** The thread's signed head as stored (checked when `publicKey` is given). */
  signedHead?: unknown;
  /**
   * The thread's latest head as the store's global log records it (`null`: the global log has no
   * entry for it); the chain must end exactly there. Not checked when undefined.
   */
  globalHead?: { seq: number; hash: string } | null;
  /** Why the global log cannot be trusted, when the store found it broken: the thread fails too. */
  globalProblem?: string;
}

const headText = (head: ChainHead | null) => (head ? `${head.seq}:${head.hash}` : `-1:${GENESIS_HASH}`);

/**
 * Checks a thread's events, as read from a store, against their chain and, when the store keeps
 * one, its recorded head. Detects changed, deleted, inserted and reordered events. With a
 * `publicKey`, also checks the signed head: signed by that key, for this thread, and the chain
 * ends exactly at it; with a `knownHead`, that the chain still contains it.
 * The first failure is reported, in this order: the events themselves, the recorded head, the
 * known head, the signed head.
 * @example
 * ```ts
 * const result = verifyChain("t1", await log.read("t1"));
 * // An auditor holding only the public key:
 * const checked = verifyChain("t1", exportedEvents, undefined, { signedHead, publicKey: publicKeyPem });
 * ```
 */
export function verifyChain(threadId: string, events: readonly unknown[], head?: ChainHead | null, options: VerifyChainOptions = {}): AuditVerification {
  const count = events.length;
  const fail = (brokenAt: AuditBreak): AuditVerification => ({ ok: false, threadId, count, brokenAt });
  const chain = firstBadLink(threadId, events, null);
  if ("brokenAt" in chain) return fail(chain.brokenAt);
  const end = chain.head;
  // The first position a head and the stored events disagree on.
  const headBreak = (expected: ChainHead | null): AuditBreak => ({
    seq: Math.min(count, (expected?.seq ?? -1) + 1),
    eventId: undefined,
    reason: "head_mismatch",
    expected: headText(expected),
    found: headText(end),
  });
  if (head !== undefined && headText(head) !== headText(end)) return fail(headBreak(head));
  const { knownHead, publicKey } = options;
  if (knownHead !== undefined) {
    if (!Number.isInteger(knownHead?.seq) || knownHead.seq < 0 || typeof knownHead.hash !== "string") {
      throw new EartConfigError("knownHead", "must be a chain head { seq, hash }");
    }
    const at = events[knownHead.seq] as AuditEvent | undefined;
    if (at?.hash !== knownHead.hash) {
      return fail({
        seq: Math.min(count, knownHead.seq),
        eventId: undefined,
        reason: "head_mismatch",
        expected: headText(knownHead),
        found: at ? `${knownHead.seq}:${at.hash}` : headText(end),
      });
    }
  }
  if (publicKey !== undefined) {
    const key = toPublicKey(publicKey);
    const signed = options.signedHead;
    if (signed === undefined || signed === null) {
      if (count > 0) return fail({ seq: 0, eventId: undefined, reason: "signature_invalid", expected: `a head signed by key ${auditKeyId(key)}`, found: "no signed head" });
    } else {
      const check = verifyHeadSignature(signed, key);
      if (!check.ok) return fail({ seq: 0, eventId: undefined, reason: "signature_invalid", expected: check.expected, found: check.found });
      if (check.head.threadId !== threadId) {
        return fail({ seq: 0, eventId: undefined, reason: "signature_invalid", expected: `a head of thread ${threadId}`, found: `a head of thread ${check.head.threadId}` });
      }
      const signedAt = { seq: check.head.seq, hash: check.head.hash };
      if (headText(signedAt) !== headText(end)) return fail(headBreak(signedAt));
    }
  }
  if (options.globalProblem !== undefined) {
    return fail({ seq: count, eventId: undefined, reason: "global_mismatch", expected: "an intact global log", found: options.globalProblem });
  }
  if (options.globalHead !== undefined) {
    const logged = options.globalHead ?? undefined;
    const problem = globalMismatch(end, logged);
    if (problem !== undefined) {
      return fail({ seq: Math.min(count, logged ? logged.seq + 1 : 0), eventId: undefined, reason: "global_mismatch", expected: logged ? headText(logged) : "no events", found: problem });
    }
  }
  return { ok: true, threadId, count, headHash: end ? end.hash : GENESIS_HASH };
}

/**
 * Groups inputs by thread, keeping their order; checks every input first, so a bad one anywhere
 * in a batch throws {@link AuditInputError} before anything is stored.
 */
function groupByThread(inputs: readonly AuditEventInput[]): Map<string, AuditEventInput[]> {
  for (const input of inputs) checkInput(input);
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

/** Option schema: an Ed25519 private key (KeyObject or PKCS#8 PEM) that signs chain heads. */
export const AuditSigningKeyOption = z.custom<AuditSigningKey>(
  (v) => v instanceof nodeCrypto.KeyObject || (typeof v === "string" && v.length > 0),
  "must be an Ed25519 private key (a KeyObject or a PEM string)",
);

const MemoryAuditLogOptionsSchema = z.object({ signingKey: AuditSigningKeyOption.optional() }).strict();

/** Options of {@link MemoryAuditLog}. */
export type MemoryAuditLogOptions = z.input<typeof MemoryAuditLogOptionsSchema>;

/**
 * Audit log held in memory: for tests and short-lived processes. With a `signingKey`, each
 * thread's head is signed after every append (see {@link AuditLog.signedHead}).
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
  readonly #signed = new Map<string, SignedChainHead>();
  readonly #signer: HeadSigner | undefined;
  readonly #globalSigner: { sign(head: GlobalHead): SignedGlobalHead } | undefined;
  readonly #global: GlobalEntry[] = [];
  /** Each thread's latest head in the global log. */
  readonly #logged = new Map<string, ThreadHead>();
  #signedGlobal: SignedGlobalHead | undefined;
  readonly #inbox = new InboxIndex();

  constructor(options: MemoryAuditLogOptions = {}) {
    const parsed = parseOptions(MemoryAuditLogOptionsSchema, options);
    this.#signer = parsed.signingKey === undefined ? undefined : headSigner(parsed.signingKey);
    this.#globalSigner = parsed.signingKey === undefined ? undefined : globalHeadSigner(parsed.signingKey);
  }

  async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
    // Seal every thread's events before storing any, so a bad event stores nothing.
    const sealed = [...groupByThread(toInputList(events))].map(([threadId, inputs]) => {
      const last = this.#threads.get(threadId)?.at(-1);
      return [threadId, sealEventsWithJson(last ? { seq: last.seq, hash: last.hash } : null, inputs)] as const;
    });
    const out: AuditEvent[] = [];
    const heads: ThreadHead[] = [];
    for (const [threadId, list] of sealed) {
      let chain = this.#threads.get(threadId);
      if (!chain) this.#threads.set(threadId, (chain = []));
      for (const { event, dataJson } of list) {
        chain.push({
          schemaVersion: event.schemaVersion,
          id: event.id,
          threadId: event.threadId,
          seq: event.seq,
          type: event.type,
          at: event.at,
          data: dataJson,
          prevHash: event.prevHash,
          hash: event.hash,
        });
        out.push(event);
        this.#inbox.apply(event);
      }
      const last = list[list.length - 1]!.event;
      heads.push({ threadId, seq: last.seq, hash: last.hash });
      if (this.#signer) this.#signed.set(threadId, this.#signer.sign({ threadId, seq: last.seq, hash: last.hash }));
    }
    if (heads.length > 0) {
      const entry = nextGlobalEntry(this.#global.at(-1) ?? null, heads);
      this.#global.push(entry);
      for (const h of entry.heads) this.#logged.set(h.threadId, h);
      if (this.#globalSigner) this.#signedGlobal = this.#globalSigner.sign(entry);
      markAppended(out, entry, this.#signedGlobal);
    }
    return out;
  }

  async globalLog(): Promise<GlobalLogSnapshot> {
    const last = this.#global.at(-1);
    return {
      entries: this.#global.map((e) => ({ ...e, heads: e.heads.map((h) => ({ ...h })) })),
      recorded: last ? { gseq: last.gseq, hash: last.hash } : null,
      ...(this.#signedGlobal ? { signedHead: { ...this.#signedGlobal } } : {}),
      ...(this.#signer ? { publicKey: this.#signer.publicKey } : {}),
    };
  }

  async globalHead(): Promise<{ head: GlobalHead | null; signed?: SignedGlobalHead }> {
    const last = this.#global.at(-1);
    return { head: last ? { gseq: last.gseq, hash: last.hash } : null, ...(this.#signedGlobal ? { signed: { ...this.#signedGlobal } } : {}) };
  }

  async read(threadId: string): Promise<AuditEvent[]> {
    return (this.#threads.get(threadId) ?? []).map((e) => ({ ...e, data: JSON.parse(e.data) as Record<string, unknown> }));
  }

  async verify(threadId: string, options: AuditVerifyOptions = {}): Promise<AuditVerification> {
    const logged = this.#logged.get(threadId);
    return verifyChain(threadId, await this.read(threadId), undefined, {
      ...options,
      publicKey: options.publicKey ?? this.#signer?.publicKey,
      signedHead: this.#signed.get(threadId),
      globalHead: logged ? { seq: logged.seq, hash: logged.hash } : null,
    });
  }

  async listThreads(): Promise<string[]> {
    return [...this.#threads.keys()].sort();
  }

  async signedHead(threadId: string): Promise<SignedChainHead | undefined> {
    const head = this.#signed.get(threadId);
    return head && { ...head };
  }

  async pending(options?: PendingOptions): Promise<PendingTask[]> {
    return this.#inbox.list(parsePendingOptions(options));
  }
}

type StoredEvent = Omit<AuditEvent, "data"> & { data: string };

export { groupByThread };

/** Option schema: an {@link AuditLog} (anything with its methods). */
export const AuditLogOption = z.custom<AuditLog>(
  (v) => typeof (v as AuditLog)?.append === "function" && typeof (v as AuditLog)?.read === "function",
  "must be an AuditLog",
);
