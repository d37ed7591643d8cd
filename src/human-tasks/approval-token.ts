import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { z } from "zod";
import { ApprovalError, EartConfigError } from "../errors.js";
import { sha256Hex } from "../internal/canonical.js";

/**
 * Signed approval tokens: how a human answers out of band (a chat button, an e-mail link, the
 * command line) without a session on the thread's API. The approver's own Ed25519 key signs one
 * decision, bound to the thread, the tool call, the call's digest, the approver, an expiry and a
 * nonce; the gate verifies it against the public keys it is configured with (by key id), and a
 * token is used at most once. A message beside the decision is the signer's only when the token
 * signs its digest too (`messageDigest`). Format: `base64url(claims JSON) "." base64url(signature)`.
 */

/** What a token says. `exp` is an ISO time after which it is refused. */
export const ApprovalTokenClaimsSchema = z
  .object({
    v: z.literal(1),
    /** Key id: which configured public key verifies it. */
    kid: z.string().min(1),
    threadId: z.string().min(1),
    toolCallId: z.string().min(1),
    digest: z.string().min(1),
    /** The human who signed. Must hold the roles the call needs, and not be the requester. */
    approver: z.string().min(1),
    decision: z.enum(["approve", "reject"]),
    exp: z.string().refine((s) => !Number.isNaN(Date.parse(s)), "must be an ISO time"),
    nonce: z.string().min(16),
    /**
     * Hex SHA-256 of the message the signer wrote beside the decision (`signApprovalToken`'s
     * `message`). A decision with a message needs it; one without a message must not have it.
     */
    messageDigest: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  })
  .strict();
export type ApprovalTokenClaims = z.output<typeof ApprovalTokenClaimsSchema>;

/** Public keys that verify tokens, by key id, each bound to the one approver it speaks for. */
export type ApprovalKeys = Record<string, { approver: string; publicKey: KeyObject | string }>;

const b64 = (data: Buffer | string) => Buffer.from(data).toString("base64url");
/** The `messageDigest` of a decision's message. */
const messageDigestOf = (message: string) => sha256Hex(message);
/** Private key material given where a public key is configured. */
const PRIVATE = "is a private key: only public keys belong in approvalKeys (the signer keeps the private key)";

/**
 * Signs an approval token with an approver's Ed25519 private key (a `KeyObject` or PEM). With a
 * `message` (a reject's reason, an approve's note) the token signs its digest: the decision must
 * then carry exactly that message, and a decision with a message is refused without it.
 * @example
 * ```ts
 * const token = signApprovalToken({ kid: "sam-2026", threadId, toolCallId, digest, approver: "sam", decision: "reject", message: "Not above $500.", expiresInMs: 15 * 60_000 }, samKey);
 * await agent.invoke(new Command({ resume: { decisions: [{ toolCallId, type: "reject", digest, message: "Not above $500.", token }] } }), { configurable: { thread_id: threadId } });
 * ```
 */
export function signApprovalToken(
  claims: Omit<ApprovalTokenClaims, "v" | "exp" | "nonce" | "messageDigest"> & { expiresInMs: number; now?: Date; message?: string },
  privateKey: KeyObject | string,
): string {
  const { expiresInMs, now = new Date(), message, ...rest } = claims;
  if (!Number.isFinite(expiresInMs) || expiresInMs <= 0) throw new EartConfigError("expiresInMs", "must be a positive number of milliseconds");
  if (message !== undefined && typeof message !== "string") throw new EartConfigError("message", "must be the text of the decision's message");
  const body: ApprovalTokenClaims = ApprovalTokenClaimsSchema.parse({
    v: 1,
    ...rest,
    exp: new Date(now.getTime() + expiresInMs).toISOString(),
    nonce: b64(randomBytes(18)),
    ...(message !== undefined ? { messageDigest: messageDigestOf(message) } : {}),
  });
  const key = typeof privateKey === "string" ? createPrivateKey(privateKey) : privateKey;
  if (key.asymmetricKeyType !== "ed25519") throw new EartConfigError("privateKey", "approval tokens are signed with an Ed25519 key");
  const payload = b64(JSON.stringify(body));
  return `${payload}.${b64(sign(null, Buffer.from(payload), key))}`;
}

/**
 * Parses and checks configured approval keys once (at a factory's construction): each an Ed25519
 * public key (never private key material, as a `KeyObject` or PEM: `createPublicKey` would take a
 * private PEM and derive its public half, making the configuration a signing secret), and each
 * public key speaking for one approver (one key under two approvers' ids lets one person make a
 * quorum of two).
 */
export function parseApprovalKeys(keys: ApprovalKeys | undefined): Map<string, { approver: string; publicKey: KeyObject }> {
  const out = new Map<string, { approver: string; publicKey: KeyObject }>();
  /** By the key's SPKI DER (base64): the key id and approver it was first configured for. */
  const speaksFor = new Map<string, { kid: string; approver: string }>();
  for (const [kid, entry] of Object.entries(keys ?? {})) {
    const given: unknown = entry.publicKey;
    if (typeof given === "string" ? /PRIVATE KEY/.test(given) || parsesAsPrivateKey(given) : (given as { type?: unknown } | null)?.type === "private") {
      throw new EartConfigError(`approvalKeys.${kid}`, PRIVATE);
    }
    let publicKey: KeyObject;
    try {
      publicKey = typeof entry.publicKey === "string" ? createPublicKey(entry.publicKey) : entry.publicKey;
    } catch (error) {
      throw new EartConfigError(`approvalKeys.${kid}`, `not a public key: ${(error as Error).message}`);
    }
    if (publicKey.type !== "public" || publicKey.asymmetricKeyType !== "ed25519") {
      throw new EartConfigError(`approvalKeys.${kid}`, "must be an Ed25519 public key");
    }
    if (typeof entry.approver !== "string" || entry.approver === "") throw new EartConfigError(`approvalKeys.${kid}.approver`, "must name the approver the key speaks for");
    const spki = publicKey.export({ type: "spki", format: "der" }).toString("base64");
    const first = speaksFor.get(spki);
    if (first && first.approver !== entry.approver) {
      throw new EartConfigError(`approvalKeys.${kid}`, `is the public key of "${first.kid}", which speaks for "${first.approver}": one public key speaks for one approver`);
    }
    if (!first) speaksFor.set(spki, { kid, approver: entry.approver });
    out.set(kid, { approver: entry.approver, publicKey });
  }
  return out;
}

/** Whether PEM text holds a private key that Node reads. */
function parsesAsPrivateKey(pem: string): boolean {
  try {
    createPrivateKey(pem);
    return true;
  } catch {
    return false;
  }
}

/**
 * Verifies a token for one decision: a known key id whose key speaks for the token's approver, a
 * valid signature, not expired, and bound to this thread, this call, this digest, this
 * decision type and the message beside the decision (its digest signed, or no message and none
 * signed). Returns the claims; throws `approval_token_invalid` / `approval_token_expired`.
 * (Single use is checked by the caller against the nonces the thread already used.)
 */
export function verifyApprovalToken(
  token: string,
  expected: { threadId: string; toolCallId: string; digest: string; decision: string; message?: string },
  keys: ReadonlyMap<string, { approver: string; publicKey: KeyObject }>,
  now: Date,
): ApprovalTokenClaims {
  const refuse = (why: string, code: "approval_token_invalid" | "approval_token_expired" = "approval_token_invalid"): never => {
    throw new ApprovalError(code, `Approval token for "${expected.toolCallId}" refused: ${why}`, { toolCallId: expected.toolCallId });
  };
  const parts = token.split(".");
  if (parts.length !== 2 || !parts[0] || !parts[1]) refuse("not a token");
  let claims: ApprovalTokenClaims;
  try {
    claims = ApprovalTokenClaimsSchema.parse(JSON.parse(Buffer.from(parts[0]!, "base64url").toString("utf8")));
  } catch {
    return refuse("its claims do not parse");
  }
  // What the claims say is quoted only once the signature holds: before, it is anyone's text, and
  // the refusal is shown beside the request to the thread's other readers.
  const key = keys.get(claims.kid);
  if (!key) refuse("unknown key id");
  if (key!.approver !== claims.approver) refuse("its key does not speak for the approver it names");
  if (!verify(null, Buffer.from(parts[0]!), key!.publicKey, Buffer.from(parts[1]!, "base64url"))) refuse("bad signature");
  const binding: [string, string, string][] = [
    ["thread", claims.threadId, expected.threadId],
    ["tool call", claims.toolCallId, expected.toolCallId],
    ["digest", claims.digest, expected.digest],
    ["decision", claims.decision, expected.decision],
  ];
  for (const [what, found, wanted] of binding) if (found !== wanted) refuse(`it was signed for another ${what}`);
  // A token signs a decision, not text a relayer puts beside it: a message is the signer's only
  // when its digest is signed (one the graph redacted no longer matches, and is refused too).
  const said = expected.message === undefined ? undefined : messageDigestOf(expected.message);
  if (claims.messageDigest !== said) {
    refuse(said === undefined ? "it signs a message the decision does not carry" : claims.messageDigest === undefined ? "it signs no message, and the decision carries one" : "it was signed for another message");
  }
  if (Date.parse(claims.exp) <= now.getTime()) refuse(`it expired at ${claims.exp}`, "approval_token_expired");
  return claims;
}

/**
 * Reads approval keys from a JSON file: `{ "<key id>": { "approver": "<user id>", "publicKey": "<PEM>" } }`,
 * checked as `parseApprovalKeys` checks them. Only public keys belong there.
 * @example
 * ```ts
 * createGovernedAgent({ ...options, approvalKeys: approvalKeysFromFile("/etc/eart/approval-keys.json") });
 * ```
 */
export function approvalKeysFromFile(path: string): ApprovalKeys {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new EartConfigError("approvalKeys", `cannot read ${path}: ${(error as Error).message}`);
  }
  const parsed = z.record(z.string().min(1), z.object({ approver: z.string().min(1), publicKey: z.string().min(1) }).strict()).safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new EartConfigError(`approvalKeys.${issue.path.join(".")}`, issue.message);
  }
  parseApprovalKeys(parsed.data);
  return parsed.data;
}
