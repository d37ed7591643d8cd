import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { canonicalJson } from "../internal/canonical.js";
import { IdentityImmutableError, IdentityResolutionError } from "../errors.js";
import { AgentIdentitySchema, type AgentIdentity } from "../identity/registry.js";
import type { ContextItem, DecisionRecord, ThreadContext } from "./records.js";

/**
 * Seals: what lets eart's nodes tell the records they wrote from records a caller of the thread
 * API wrote. Graph state is a view that `updateState`, `Command` and the checkpoint store can
 * write; the key that seals it lives in eart's own store (the effect ledger's), never in state.
 * A seal is an HMAC-SHA256 over the thread id and the canonical JSON of the record, so a record
 * sealed for one thread, one call or one status fits no other.
 */

/** Where a seal key comes from: the effect ledger's store (`sealKey()`), shared by every process on it. */
export interface SealKeySource {
  sealKey(): Promise<Uint8Array> | Uint8Array;
}

/** Bytes of a seal key. */
export const SEAL_KEY_BYTES = 32;

// One key per process for the stores that live in one process (the memory ledger): nodes built
// without a ledger still agree with each other.
let processKey: Uint8Array | undefined;

/**
 * The seal key of this process, made on first use: what in-memory stores seal with.
 * @example
 * ```ts
 * class MyLedger implements EffectLedger, SealKeySource { sealKey() { return processSealKey(); } … }
 * ```
 */
export function processSealKey(): Uint8Array {
  return (processKey ??= randomBytes(SEAL_KEY_BYTES));
}

/** The fields a seal covers: the record without its seal. */
function unsealed<T extends { seal?: string }>(record: T): Omit<T, "seal"> {
  if (record.seal === undefined) return record;
  const { seal: _seal, ...rest } = record;
  return rest;
}

// Records this process sealed or checked, with the key and thread they were sealed for. A run
// hands the same objects from node to node (a checkpoint round trip makes new ones), so each is
// hashed once, not at every step. Objects from outside the process are never in it.
const checked = new WeakMap<object, string>();

/**
 * The JSON of the records this process sealed or checked lately, by seal: a copy of one (LangGraph
 * copies state into each tool call's task; a checkpoint round trip makes new objects) whose JSON
 * is the very same text holds the same data, so its seal holds too, without hashing it again.
 * Anything else is checked in full. Bounded: the oldest entries go first.
 */
const recent = new Map<string, { mark: string; json: string }>();
const RECENT_LIMIT = 4_096;

function remember(record: { seal?: unknown }, mark: string): void {
  if (typeof record.seal !== "string") return;
  recent.delete(record.seal);
  recent.set(record.seal, { mark, json: JSON.stringify(record) });
  if (recent.size > RECENT_LIMIT) recent.delete(recent.keys().next().value!);
}

// Identities the binding sealed to replace a thread's bound one (Sealer.rebound), with that one's seal.
const replacing = new WeakMap<object, string>();

/** Whether this process sealed, or checked the seal of, this very object: it is eart's and valid. */
export function sealedHere(value: unknown): boolean {
  return typeof value === "object" && value !== null && checked.has(value);
}

/** Seals and checks records with one key. */
export class Sealer {
  readonly #key: Uint8Array;
  readonly #id: string;

  constructor(key: Uint8Array) {
    this.#key = key;
    // Sealers of one key (each node has its own) recognise each other's records.
    this.#id = createHash("sha256").update(key).digest("hex").slice(0, 16);
  }

  #mac(kind: string, threadId: string, body: unknown): string {
    return createHmac("sha256", this.#key).update(`eart.${kind}.v1\n${threadId}\n`).update(canonicalJson(body)).digest("base64url");
  }

  #valid(kind: string, threadId: string, record: { seal?: unknown }): boolean {
    if (typeof record.seal !== "string") return false;
    const mark = `${this.#id}|${kind}|${threadId}`;
    if (checked.get(record) === mark) return true;
    const seen = recent.get(record.seal);
    if (seen !== undefined && seen.mark === mark && seen.json === JSON.stringify(record)) {
      checked.set(record, mark);
      return true;
    }
    const expected = Buffer.from(this.#mac(kind, threadId, unsealed(record as { seal?: string })));
    const found = Buffer.from(record.seal);
    const valid = expected.length === found.length && timingSafeEqual(expected, found);
    if (valid) {
      checked.set(record, mark);
      remember(record, mark);
    }
    return valid;
  }

  #sealed<T extends { seal?: unknown }>(kind: string, threadId: string, sealed: T): T {
    const mark = `${this.#id}|${kind}|${threadId}`;
    checked.set(sealed, mark);
    remember(sealed, mark);
    return sealed;
  }

  /** The decision record with its seal for this thread (any earlier seal replaced). */
  decision(threadId: string, record: DecisionRecord): DecisionRecord {
    const body = unsealed(record);
    return this.#sealed("decision", threadId, { ...body, seal: this.#mac("decision", threadId, body) });
  }

  /** Whether eart sealed this exact decision record for this thread. */
  decisionIsSealed(threadId: string, record: DecisionRecord): boolean {
    return typeof record === "object" && record !== null && this.#valid("decision", threadId, record);
  }

  /** The identity with its seal for this thread. */
  identity(threadId: string, identity: AgentIdentity): AgentIdentity {
    const body = unsealed(identity);
    return this.#sealed("identity", threadId, { ...body, seal: this.#mac("identity", threadId, body) });
  }

  /**
   * The identity `current` becomes on its thread when the registry in force grants its agent and
   * human something else: sealed for the thread, and marked as replacing `current` (by its seal),
   * so the identity channel takes it ({@link bindIdentityOnce}) and nothing else.
   */
  rebound(threadId: string, current: AgentIdentity, resolved: AgentIdentity): AgentIdentity {
    const identity = this.identity(threadId, resolved);
    if (current.seal !== undefined) replacing.set(identity, current.seal);
    return identity;
  }

  /** Whether eart sealed this exact identity for this thread. */
  identityIsSealed(threadId: string, identity: AgentIdentity): boolean {
    return typeof identity === "object" && identity !== null && this.#valid("identity", threadId, identity);
  }

  /** The retrieved context item with its seal for this thread: what the retrieval kept, as it kept it. */
  contextItem(threadId: string, item: ContextItem): ContextItem {
    const body = unsealed(item);
    return this.#sealed("context", threadId, { ...body, seal: this.#mac("context", threadId, body) });
  }

  /** Whether eart's retrieval sealed this exact item for this thread. */
  contextItemIsSealed(threadId: string, item: ContextItem): boolean {
    return typeof item === "object" && item !== null && this.#valid("context", threadId, item);
  }

  /**
   * A seal over the fields of an audit event that eart reads back to act on (an answer it
   * accepted, a request a tool step made before its pause), for this thread and event type: the
   * audit log is append-only and hash-chained, but anyone who can write its store can append a
   * valid link; only eart's key makes a seal that holds.
   */
  event(threadId: string, type: string, fields: Record<string, unknown>): string {
    return this.#mac(`event.${type}`, threadId, fields);
  }

  /** Whether `seal` is eart's seal over these fields of an audit event of this type and thread ({@link Sealer.event}). */
  eventIsSealed(threadId: string, type: string, fields: Record<string, unknown>, seal: unknown): boolean {
    if (typeof seal !== "string") return false;
    const expected = Buffer.from(this.#mac(`event.${type}`, threadId, fields));
    const found = Buffer.from(seal);
    return expected.length === found.length && timingSafeEqual(expected, found);
  }
}

/**
 * The thread's context with only the items eart's retrieval sealed for it, and the ids of the
 * others (written past eart's guard: the checkpoint store, LangGraph's methods called directly).
 * What the model is shown and policy judges.
 * @example
 * ```ts
 * const { context, forged } = sealedContext(await sealer(), threadId, state.context);
 * ```
 */
export function sealedContext(sealer: Sealer, threadId: string, context: ThreadContext | undefined): { context: ThreadContext | undefined; forged: string[] } {
  if (!context || context.items.length === 0) return { context, forged: [] };
  const forged = context.items.filter((item) => !sealer.contextItemIsSealed(threadId, item)).map((item) => String((item as { id?: unknown })?.id));
  if (forged.length === 0) return { context, forged };
  return { context: { ...context, items: context.items.filter((item) => sealer.contextItemIsSealed(threadId, item)) }, forged };
}

/** The audit event of context items found unsealed (and not used) by a step. */
export function forgedContextEvent(threadId: string, node: string, forged: readonly string[]) {
  return { threadId, type: "state.tamper_detected" as const, data: { node, forged: forged.map((id) => ({ channel: "context", itemId: id })), outcome: "context_items_dropped" } };
}

/**
 * The sealer of a node, from its store: resolved once, on first use (a PostgreSQL store reads its
 * key with a query). Without a source, the process key.
 * @example
 * ```ts
 * const sealer = lazySealer(ledger);
 * const sealed = (await sealer()).decision(threadId, record);
 * ```
 */
export function lazySealer(source: unknown): () => Promise<Sealer> {
  let sealer: Promise<Sealer> | undefined;
  const keySource = typeof (source as SealKeySource | undefined)?.sealKey === "function" ? (source as SealKeySource) : undefined;
  return () =>
    (sealer ??= Promise.resolve(keySource ? keySource.sealKey() : processSealKey()).then(
      (key) => new Sealer(key),
      (error: unknown) => {
        sealer = undefined;
        throw error;
      },
    ));
}

/**
 * Reducer of the `identity` channel: the first identity written to a thread stays. Writing the
 * same identity again is a no-op; writing a different one, from a node or from
 * `graph.updateState`, throws {@link IdentityImmutableError}.
 * @example
 * ```ts
 * Annotation<AgentIdentity | undefined>({ reducer: bindIdentityOnce, default: () => undefined })
 * ```
 */
export function bindIdentityOnce(current: AgentIdentity | undefined, update: AgentIdentity | undefined): AgentIdentity | undefined {
  if (update === undefined || update === null) return current;
  // The binding node's own sealed identity on an unbound thread: built from the registry, valid.
  if ((current === undefined || current === null) && sealedHere(update)) return update;
  // The binding's re-resolution of the bound agent and human under the registry in force (their
  // grants changed since the thread was bound), made for this very identity.
  if (current?.seal !== undefined && replacing.get(update) === current.seal && current.id === update.id && current.onBehalfOf.id === update.onBehalfOf.id) return update;
  const parsed = AgentIdentitySchema.safeParse(update);
  if (!parsed.success) {
    if (current) throw new IdentityImmutableError(current.id, current.onBehalfOf.id, {});
    throw new IdentityResolutionError("identity_missing", `Refused a malformed identity: ${parsed.error.issues[0]?.message ?? "invalid"}`);
  }
  // An identity nobody sealed (planted through the state API before the first run) binds nothing:
  // the binding node reports it and binds from the run configuration, which replaces it here.
  if (current === undefined || current === null || current.seal === undefined) return parsed.data;
  if (canonicalJson(current) !== canonicalJson(parsed.data)) {
    throw new IdentityImmutableError(current.id, current.onBehalfOf.id, { agentId: parsed.data.id, userId: parsed.data.onBehalfOf.id });
  }
  return current;
}
