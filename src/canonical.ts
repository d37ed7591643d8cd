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
 * The digest that binds a decision or an approval to one exact tool call: the SHA-256 of the
 * canonical JSON of `{ name, args }`.
 * @example
 * ```ts
 * toolCallDigest("issue_refund", { orderId: "1042", amount: 740 })
 * ```
 */
export function toolCallDigest(name: string, args: Record<string, unknown>): string {
  return sha256Hex(canonicalJson({ name, args }));
}
