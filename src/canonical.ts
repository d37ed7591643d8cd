import { createHash } from "node:crypto";
import { canonicalize } from "json-canonicalize";

/**
 * RFC 8785 canonical JSON of a value: sorted keys, no whitespace, normalised numbers.
 * @example
 * ```ts
 * canonicalJson({ b: 1, a: [2, "x"] }) // '{"a":[2,"x"],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  return canonicalize(value);
}

/**
 * Hex SHA-256 of a string.
 * @example
 * ```ts
 * sha256Hex("abc").length // 64
 * ```
 */
export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/**
 * The digest that binds a decision, an approval and a ledger entry to one exact tool call on one
 * thread: the SHA-256 of the canonical JSON of `{ threadId, name, args }`. The same call on
 * another thread has another digest, so an answer given on one thread never fits another.
 * @example
 * ```ts
 * toolCallDigest("issue_refund", { orderId: "1042", amount: 740 }, "refund-1042")
 * ```
 */
export function toolCallDigest(name: string, args: Record<string, unknown>, threadId: string): string {
  if (typeof threadId !== "string" || threadId === "") throw new TypeError("toolCallDigest needs the thread id: a digest binds a call to one thread");
  return sha256Hex(canonicalJson({ threadId, name, args }));
}
