import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { z } from "zod";
import { ApprovalError, EartConfigError } from "../errors.js";

/**
 * Signed approval tokens: how a human answers out of band (a chat button, an e-mail link, the
 * command line) without a session on the thread's API. The approver's own Ed25519 key signs one
 * decision, bound to the thread, the tool call, the call's digest, the approver, an expiry and a
 * nonce; the gate verifies it against the public keys it is configured with (by key id), and a
 * token is used at most once. Format: `base64url(claims JSON) "." base64url(signature)`.
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
  })
  .strict();
export type ApprovalTokenClaims = z.output<typeof ApprovalTokenClaimsSchema>;

/** Public keys that verify tokens, by key id, each bound to the one approver it speaks for. */
export type ApprovalKeys = Record<string, { approver: string; publicKey: KeyObject | string }>;

const b64 = (data: Buffer | string) => Buffer.from(data).toString("base64url");

/**
 * Signs an approval token with an approver's Ed25519 private key (a `KeyObject` or PEM).
 * @example
 * ```ts
 * const token = signApprovalToken({ kid: "sam-2026", threadId, toolCallId, digest, approver: "sam", decision: "approve", expiresInMs: 15 * 60_000 }, samKey);
 * await agent.invoke(new Command({ resume: { decisions: [{ toolCallId, type: "approve", digest, token }] } }), { configurable: { thread_id: threadId } });
 * ```
 */
export function signApprovalToken(
  claims: Omit<ApprovalTokenClaims, "v" | "exp" | "nonce"> & { expiresInMs: number; now?: Date },
  privateKey: KeyObject | string,
): string {
  const { expiresInMs, now = new Date(), ...rest } = claims;
  if (!Number.isFinite(expiresInMs) || expiresInMs <= 0) throw new EartConfigError("expiresInMs", "must be a positive number of milliseconds");
  const body: ApprovalTokenClaims = ApprovalTokenClaimsSchema.parse({
    v: 1,
    ...rest,
    exp: new Date(now.getTime() + expiresInMs).toISOString(),
    nonce: b64(randomBytes(18)),
  });
  const key = typeof privateKey === "string" ? createPrivateKey(privateKey) : privateKey;
  if (key.asymmetricKeyType !== "ed25519") throw new EartConfigError("privateKey", "approval tokens are signed with an Ed25519 key");
  const payload = b64(JSON.stringify(body));
  return `${payload}.${b64(sign(null, Buffer.from(payload), key))}`;
}

/** Parses and checks configured approval keys once (at a factory's construction). */
export function parseApprovalKeys(keys: ApprovalKeys | undefined): Map<string, { approver: string; publicKey: KeyObject }> {
  const out = new Map<string, { approver: string; publicKey: KeyObject }>();
  for (const [kid, entry] of Object.entries(keys ?? {})) {
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
    out.set(kid, { approver: entry.approver, publicKey });
  }
  return out;
}

/**
 * Verifies a token for one decision: a known key id whose key speaks for the token's approver, a
 * valid signature, not expired, and bound to this thread, this call, this digest and this
 * decision type. Returns the claims; throws `approval_token_invalid` / `approval_token_expired`.
 * (Single use is checked by the caller against the nonces the thread already used.)
 */
export function verifyApprovalToken(
  token: string,
  expected: { threadId: string; toolCallId: string; digest: string; decision: string },
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
