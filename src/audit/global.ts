import * as nodeCrypto from "node:crypto";
import { sign, verify, type KeyObject } from "node:crypto";
import { z } from "zod";
import { auditKeyId, toPublicKey, toSigningKey, type AuditPublicKey, type AuditSigningKey } from "./signing.js";
import { canonicalJson, jsonString, sha256Hex } from "../internal/canonical.js";

/**
 * The global log every audit store keeps beside its per-thread chains: one entry per append, over
 * all threads, hash-chained with a global sequence (as transparency logs do). An entry lists the
 * head each thread it touched reached, so the global log knows the latest head of every thread
 * that ever appended: a thread rolled back, cut short or deleted whole disagrees with it, and the
 * global log itself cannot lose an entry without a gap or a broken link. With a signing key, the
 * global head is signed on every append; a copy of a signed global head kept outside the store
 * (a witness: an exporter's payload, a SIEM) proves a rollback of the whole store.
 */

/** The `prevHash` of the first global entry. */
export const GLOBAL_GENESIS_HASH = "0".repeat(64);

/** A thread's head as a global entry records it. */
export interface ThreadHead {
  threadId: string;
  seq: number;
  hash: string;
}

/** One append, as the global log records it. */
export interface GlobalEntry {
  gseq: number;
  heads: ThreadHead[];
  prevHash: string;
  hash: string;
}

/** Where the global log ends: its last entry's sequence and hash. */
export interface GlobalHead {
  gseq: number;
  hash: string;
}

const HEX64 = /^[0-9a-f]{64}$/;

/** A global head signed with Ed25519, as stores keep it and exporters carry it. */
export const SignedGlobalHeadSchema = z
  .object({
    schemaVersion: z.literal(1),
    alg: z.literal("Ed25519"),
    gseq: z.number().int().nonnegative(),
    hash: z.string().regex(HEX64, "must be 64 hex digits"),
    keyId: z.string().regex(HEX64, "must be 64 hex digits"),
    signature: z.string().min(1),
  })
  .strict();
export type SignedGlobalHead = z.output<typeof SignedGlobalHeadSchema>;

const sha256 = typeof nodeCrypto.hash === "function" ? (text: string) => nodeCrypto.hash("sha256", text, "hex") : sha256Hex;

/**
 * The hash of a global entry: SHA-256 over a purpose tag and the canonical JSON of its fields,
 * its heads in thread id order (however a store returns them).
 */
export function globalEntryHash(entry: Omit<GlobalEntry, "hash">): string {
  const sorted = entry.heads.length > 1 ? [...entry.heads].sort((a, b) => (a.threadId < b.threadId ? -1 : a.threadId > b.threadId ? 1 : 0)) : entry.heads;
  const heads = sorted.map((h) => `{"hash":${jsonString(h.hash)},"seq":${h.seq},"threadId":${jsonString(h.threadId)}}`).join(",");
  return sha256(`eart.audit.global.v1\n{"gseq":${entry.gseq},"heads":[${heads}],"prevHash":${jsonString(entry.prevHash)}}`);
}

/**
 * The entry an append adds after `head` (genesis when null), for the heads it set.
 * @example
 * ```ts
 * const entry = nextGlobalEntry(null, [{ threadId: "t1", seq: 0, hash }]); // { gseq: 0, … }
 * ```
 */
export function nextGlobalEntry(head: GlobalHead | null, heads: readonly ThreadHead[]): GlobalEntry {
  const unsealed = {
    gseq: head ? head.gseq + 1 : 0,
    heads: heads.map((h) => ({ threadId: h.threadId, seq: h.seq, hash: h.hash })),
    prevHash: head ? head.hash : GLOBAL_GENESIS_HASH,
  };
  return { ...unsealed, hash: globalEntryHash(unsealed) };
}

function globalPayload(head: Omit<SignedGlobalHead, "signature">): Buffer {
  return Buffer.from(canonicalJson({ purpose: "eart.audit.global-head", schemaVersion: head.schemaVersion, alg: head.alg, gseq: head.gseq, hash: head.hash, keyId: head.keyId }));
}

/**
 * Signs global heads with an audit signing key (the stores build one from their `signingKey`).
 * @example
 * ```ts
 * const signed = globalHeadSigner(privateKey).sign({ gseq: 41, hash });
 * ```
 */
export function globalHeadSigner(signingKey: AuditSigningKey | KeyObject): { sign(head: GlobalHead): SignedGlobalHead } {
  const privateKey = toSigningKey(signingKey);
  const keyId = auditKeyId(privateKey);
  return {
    sign(head) {
      const unsigned = { schemaVersion: 1 as const, alg: "Ed25519" as const, gseq: head.gseq, hash: head.hash, keyId };
      return { ...unsigned, signature: sign(null, globalPayload(unsigned), privateKey).toString("base64url") };
    },
  };
}

/** Checks a signed global head's signature with a public key alone: `undefined` when valid, else why not. */
export function globalHeadSignatureProblem(signed: unknown, publicKey: AuditPublicKey): string | undefined {
  const key = toPublicKey(publicKey);
  const parsed = SignedGlobalHeadSchema.safeParse(signed);
  if (!parsed.success) return `a malformed signed global head (${parsed.error.issues[0]?.message ?? "malformed"})`;
  const keyId = auditKeyId(key);
  if (parsed.data.keyId !== keyId) return `a global head signed by key ${parsed.data.keyId}, not ${keyId}`;
  const { signature, ...unsigned } = parsed.data;
  let valid = false;
  try {
    valid = verify(null, globalPayload(unsigned), key, Buffer.from(signature, "base64url"));
  } catch {
    valid = false;
  }
  return valid ? undefined : "a global head signature that does not verify";
}

/** A problem `verifyGlobalLog` or a store-wide verify found. */
export interface AuditStoreProblem {
  kind:
    | "global_gap"
    | "global_link"
    | "global_hash"
    | "global_head"
    | "global_signature"
    | "rollback"
    | "missing_thread"
    | "thread_mismatch"
    | "unlogged_thread"
    | "thread_broken";
  gseq?: number;
  threadId?: string;
  detail: string;
}

/** What {@link verifyGlobalLog} and a store's `verifyAll` check besides the entries. */
export interface GlobalVerifyOptions {
  /** The store's recorded global head (its last entry, as it says). */
  recorded?: GlobalHead | null;
  /** The store's signed global head, checked with `publicKey`. */
  signedHead?: unknown;
  /** Ed25519 public key of the writers: the signed global head must verify and match the log's end. */
  publicKey?: AuditPublicKey;
  /**
   * A global head seen earlier and kept outside the store (a witness: from an exporter's payload,
   * a SIEM, a saved `eart audit head`): the log must still contain it, or the store was rolled back.
   * A signed one is checked with `publicKey` too.
   */
  witness?: GlobalHead | SignedGlobalHead;
}

/** The global log checked: its end, each thread's latest head in it, and what is wrong. */
export interface GlobalLogCheck {
  head: GlobalHead | null;
  latest: Map<string, { seq: number; hash: string; gseq: number }>;
  problems: AuditStoreProblem[];
}

/**
 * Checks a global log read from a store: consecutive sequence from 0 (no gaps), each entry linked
 * to the previous by hash and its own hash right, the recorded and signed heads at its end, and a
 * witness contained. Returns each thread's latest head as the log records it.
 * @example
 * ```ts
 * const { problems, latest } = verifyGlobalLog(entries, { publicKey, witness });
 * ```
 */
export function verifyGlobalLog(entries: readonly GlobalEntry[], options: GlobalVerifyOptions = {}): GlobalLogCheck {
  const problems: AuditStoreProblem[] = [];
  const latest = new Map<string, { seq: number; hash: string; gseq: number }>();
  let prev: GlobalEntry | undefined;
  for (const entry of entries) {
    const expectedSeq = prev ? prev.gseq + 1 : 0;
    if (entry.gseq !== expectedSeq) {
      problems.push({ kind: "global_gap", gseq: expectedSeq, detail: `global entries ${expectedSeq}..${entry.gseq - 1} are missing` });
    } else if (entry.prevHash !== (prev ? prev.hash : GLOBAL_GENESIS_HASH)) {
      problems.push({ kind: "global_link", gseq: entry.gseq, detail: `global entry ${entry.gseq} does not follow entry ${entry.gseq - 1}` });
    }
    if (globalEntryHash(entry) !== entry.hash) problems.push({ kind: "global_hash", gseq: entry.gseq, detail: `global entry ${entry.gseq} was changed after it was written` });
    for (const h of entry.heads) latest.set(h.threadId, { seq: h.seq, hash: h.hash, gseq: entry.gseq });
    prev = entry;
  }
  const head = prev ? { gseq: prev.gseq, hash: prev.hash } : null;
  const text = (h: GlobalHead | null | undefined) => (h ? `${h.gseq}:${h.hash}` : "none");
  if (options.recorded !== undefined && text(options.recorded) !== text(head)) {
    problems.push({ kind: "global_head", detail: `the store records global head ${text(options.recorded)}, the global log ends at ${text(head)}` });
  }
  if (options.publicKey !== undefined) {
    if (options.signedHead === undefined || options.signedHead === null) {
      if (head) problems.push({ kind: "global_signature", detail: "no signed global head" });
    } else {
      const problem = globalHeadSignatureProblem(options.signedHead, options.publicKey);
      const signed = options.signedHead as SignedGlobalHead;
      if (problem) problems.push({ kind: "global_signature", detail: problem });
      else if (text(signed) !== text(head)) problems.push({ kind: "global_signature", detail: `the signed global head is ${text(signed)}, the global log ends at ${text(head)}` });
    }
  }
  const { witness } = options;
  if (witness !== undefined) {
    if ("signature" in witness && options.publicKey !== undefined) {
      const problem = globalHeadSignatureProblem(witness, options.publicKey);
      if (problem) problems.push({ kind: "global_signature", detail: `the witness: ${problem}` });
    }
    const at = entries.find((e) => e.gseq === witness.gseq);
    if (!at || at.hash !== witness.hash) {
      problems.push({
        kind: "rollback",
        gseq: witness.gseq,
        detail: at
          ? `global entry ${witness.gseq} differs from the witness: the log was rewritten`
          : `the witness saw global entry ${witness.gseq}; the log ends at ${text(head)}: the store was rolled back`,
      });
    }
  }
  return { head, latest, problems };
}

/**
 * How a thread's own chain end compares with its latest head in the global log: undefined when
 * they agree (or neither knows the thread), else why not.
 */
export function globalMismatch(end: { seq: number; hash: string } | null, logged: { seq: number; hash: string } | undefined): string | undefined {
  if (!logged) return end ? `the global log has no entry for this thread, which has ${end.seq + 1} events` : undefined;
  if (!end) return `the global log records ${logged.seq + 1} events for this thread; the store has none: the thread was deleted`;
  if (end.seq !== logged.seq || end.hash !== logged.hash) {
    return `the global log records the thread's head at ${logged.seq}:${logged.hash}; its chain ends at ${end.seq}:${end.hash}${end.seq < logged.seq ? ": it was rolled back" : ""}`;
  }
  return undefined;
}
