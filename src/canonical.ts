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
  const fast = plainCanonical(value);
  return fast ?? canonicalize(value);
}

/**
 * RFC 8785 for plain JSON (what eart hashes and seals: records it built, parsed JSON): keys sorted
 * by UTF-16 code units, strings and finite numbers as ECMAScript's JSON.stringify writes them,
 * which is what the RFC specifies. Anything else (a class instance, `toJSON`, a non-finite number,
 * `undefined` in an array) returns undefined and takes the general path.
 */
function plainCanonical(value: unknown): string | undefined {
  switch (typeof value) {
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "number":
      return Number.isFinite(value) ? JSON.stringify(value) : undefined;
    case "object": {
      if (value === null) return "null";
      if (Array.isArray(value)) {
        let out = "[";
        for (let i = 0; i < value.length; i++) {
          const item = plainCanonical(value[i]);
          if (item === undefined) return undefined;
          out += i === 0 ? item : `,${item}`;
        }
        return `${out}]`;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) return undefined;
      if (typeof (value as { toJSON?: unknown }).toJSON === "function") return undefined;
      let out = "{";
      let first = true;
      for (const key of Object.keys(value).sort()) {
        const v = (value as Record<string, unknown>)[key];
        // Skipped as JSON.stringify skips them.
        if (v === undefined || typeof v === "function" || typeof v === "symbol") continue;
        const item = plainCanonical(v);
        if (item === undefined) return undefined;
        out += `${first ? "" : ","}${JSON.stringify(key)}:${item}`;
        first = false;
      }
      return `${out}}`;
    }
    default:
      return undefined;
  }
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
  // The model node, the gate and the tool node digest the same arguments object of a call in one
  // run: computed once. A changed call (an edit, a forged message) is another object.
  const cached = typeof args === "object" && args !== null ? digests.get(args) : undefined;
  if (cached && cached.threadId === threadId && cached.name === name) return cached.digest;
  const digest = sha256Hex(canonicalJson({ threadId, name, args }));
  if (typeof args === "object" && args !== null) digests.set(args, { threadId, name, digest });
  return digest;
}

const digests = new WeakMap<object, { threadId: string; name: string; digest: string }>();
