import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject, sign, verify } from "node:crypto";
import { z } from "zod";
import { canonicalJson } from "../internal/canonical.js";
import { EartConfigError } from "../errors.js";

/** An Ed25519 private key that signs chain heads: a `KeyObject`, or its PEM (PKCS#8). */
export type AuditSigningKey = KeyObject | string;

/** An Ed25519 public key that checks chain heads: a `KeyObject` or its PEM (SPKI). A private key also works. */
export type AuditPublicKey = KeyObject | string;

/** Version of the signed chain head record. */
export const SIGNED_HEAD_SCHEMA_VERSION = 1 as const;

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * A thread's chain head signed with Ed25519: it vouches that the thread's chain has `seq + 1`
 * events and ends with `hash`. Anyone holding the public key can check it; only the holder of the
 * private key can make one, so an edit of the stored chain and head by someone without the key is
 * detected.
 */
export const SignedChainHeadSchema = z
  .object({
    schemaVersion: z.literal(SIGNED_HEAD_SCHEMA_VERSION),
    alg: z.literal("Ed25519"),
    threadId: z.string().min(1),
    seq: z.number().int().nonnegative(),
    hash: z.string().regex(HEX64, "must be 64 hex digits"),
    /** SHA-256 (hex) of the signer's public key in DER (SPKI). */
    keyId: z.string().regex(HEX64, "must be 64 hex digits"),
    /** Ed25519 signature (base64url) over the canonical JSON of the other fields. */
    signature: z.string().min(1),
  })
  .strict();
export type SignedChainHead = z.output<typeof SignedChainHeadSchema>;

/** Result of {@link verifyHeadSignature}. */
export type HeadSignatureCheck =
  | { ok: true; head: SignedChainHead }
  | { ok: false; reason: "malformed" | "wrong_key" | "bad_signature"; expected: string; found: string };

/** The bytes an Ed25519 signature covers: every field but the signature, canonical JSON, with a purpose tag. */
function signedPayload(head: Omit<SignedChainHead, "signature">): Buffer {
  return Buffer.from(
    canonicalJson({
      purpose: "eart.audit.chain-head",
      schemaVersion: head.schemaVersion,
      alg: head.alg,
      threadId: head.threadId,
      seq: head.seq,
      hash: head.hash,
      keyId: head.keyId,
    }),
  );
}

function isEd25519(key: KeyObject): boolean {
  return key.asymmetricKeyType === "ed25519";
}

/**
 * Parses a signing key option: an Ed25519 private `KeyObject` or PKCS#8 PEM. Throws
 * {@link EartConfigError} naming `field` otherwise.
 * @example
 * ```ts
 * const key = toSigningKey(process.env.EART_AUDIT_SIGNING_KEY!);
 * ```
 */
export function toSigningKey(key: unknown, field = "signingKey"): KeyObject {
  let parsed: KeyObject;
  try {
    parsed = key instanceof KeyObject ? key : createPrivateKey(z.string().min(1).parse(key));
  } catch {
    throw new EartConfigError(field, "must be an Ed25519 private key (a KeyObject or a PKCS#8 PEM string)");
  }
  if (parsed.type !== "private" || !isEd25519(parsed)) throw new EartConfigError(field, "must be an Ed25519 private key");
  return parsed;
}

/**
 * Parses a public key argument: an Ed25519 public `KeyObject` or SPKI PEM (a private key is
 * reduced to its public half). Throws {@link EartConfigError} naming `field` otherwise.
 * @example
 * ```ts
 * const publicKey = toPublicKey(readFileSync("audit-signing.pub.pem", "utf8"));
 * ```
 */
export function toPublicKey(key: unknown, field = "publicKey"): KeyObject {
  let parsed: KeyObject;
  try {
    if (key instanceof KeyObject) parsed = key.type === "private" ? createPublicKey(key) : key;
    else parsed = createPublicKey(z.string().min(1).parse(key));
  } catch {
    throw new EartConfigError(field, "must be an Ed25519 public key (a KeyObject or a PEM string)");
  }
  if (parsed.type !== "public" || !isEd25519(parsed)) throw new EartConfigError(field, "must be an Ed25519 public key");
  return parsed;
}

/**
 * The id of a signing key: SHA-256 (hex) of its public key in DER (SPKI). Stored in each signed
 * head, so a verifier sees which key signed it.
 * @example
 * ```ts
 * auditKeyId(publicKey) // "3f1c…" (64 hex digits)
 * ```
 */
export function auditKeyId(key: AuditPublicKey | AuditSigningKey): string {
  const publicKey = toPublicKey(key, "key");
  return createHash("sha256").update(publicKey.export({ type: "spki", format: "der" })).digest("hex");
}

/**
 * A new Ed25519 key pair for signing chain heads, and its key id. Keep the private key with the
 * writers (`signingKey` option of every audit store); hand the public key to auditors.
 * @example
 * ```ts
 * const { privateKey, publicKey } = generateAuditSigningKey();
 * writeFileSync("audit-signing.pem", privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
 * writeFileSync("audit-signing.pub.pem", publicKey.export({ type: "spki", format: "pem" }));
 * ```
 */
export function generateAuditSigningKey(): { privateKey: KeyObject; publicKey: KeyObject; keyId: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { privateKey, publicKey, keyId: auditKeyId(publicKey) };
}

/** A parsed signing key with its key id, ready to sign many heads. */
export interface HeadSigner {
  keyId: string;
  publicKey: KeyObject;
  sign(head: { threadId: string; seq: number; hash: string }): SignedChainHead;
}

/**
 * A signer for chain heads (the stores build one from their `signingKey` option).
 * @example
 * ```ts
 * const signer = headSigner(privateKey);
 * const signed = signer.sign({ threadId: "t1", seq: 4, hash });
 * ```
 */
export function headSigner(signingKey: AuditSigningKey, field = "signingKey"): HeadSigner {
  const privateKey = toSigningKey(signingKey, field);
  const publicKey = createPublicKey(privateKey);
  const keyId = auditKeyId(publicKey);
  return {
    keyId,
    publicKey,
    sign(head) {
      const unsigned = { schemaVersion: SIGNED_HEAD_SCHEMA_VERSION, alg: "Ed25519" as const, threadId: head.threadId, seq: head.seq, hash: head.hash, keyId };
      return { ...unsigned, signature: sign(null, signedPayload(unsigned), privateKey).toString("base64url") };
    },
  };
}

/**
 * Signs a thread's chain head with an Ed25519 private key.
 * @example
 * ```ts
 * const events = await log.read("t1");
 * const signed = signChainHead({ threadId: "t1", seq: events.length - 1, hash: events.at(-1)!.hash }, privateKey);
 * ```
 */
export function signChainHead(head: { threadId: string; seq: number; hash: string }, signingKey: AuditSigningKey): SignedChainHead {
  return headSigner(signingKey).sign(head);
}

/**
 * Checks a signed chain head with a public key alone: that it is well formed, names that key, and
 * that its signature covers exactly its thread, seq and hash. It says nothing about the events:
 * `verify(threadId, { publicKey })` of a store (or `verifyChain` with `signedHead`) also checks
 * that the chain ends at this head.
 * @example
 * ```ts
 * const check = verifyHeadSignature(await log.signedHead!("t1"), publicKeyPem);
 * if (!check.ok) console.error(check.reason, check.expected, check.found);
 * ```
 */
export function verifyHeadSignature(head: unknown, publicKey: AuditPublicKey): HeadSignatureCheck {
  const key = toPublicKey(publicKey);
  const keyId = auditKeyId(key);
  const parsed = SignedChainHeadSchema.safeParse(head);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { ok: false, reason: "malformed", expected: "a signed chain head", found: issue ? `${issue.path.join(".") || "head"}: ${issue.message}` : "malformed" };
  }
  const signed = parsed.data;
  if (signed.keyId !== keyId) return { ok: false, reason: "wrong_key", expected: `key ${keyId}`, found: `key ${signed.keyId}` };
  const { signature, ...unsigned } = signed;
  let valid = false;
  try {
    valid = verify(null, signedPayload(unsigned), key, Buffer.from(signature, "base64url"));
  } catch {
    valid = false;
  }
  if (!valid) return { ok: false, reason: "bad_signature", expected: `a valid Ed25519 signature by key ${keyId}`, found: "a signature that does not verify" };
  return { ok: true, head: signed };
}
