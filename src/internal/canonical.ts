import { createHash } from "node:crypto";
import { canonicalize } from "json-canonicalize";
import { InputTooDeepError } from "../errors.js";

/**
 * How deep arrays and objects may nest in what eart writes as canonical JSON (audit events,
 * digests of tool calls, identities, context): 512 levels, far beyond real data, well within the
 * stack of the recursive writer (which overflows after about 1,500).
 */
export const CANONICAL_JSON_MAX_DEPTH = 512;

/**
 * RFC 8785 canonical JSON of a value: sorted keys, no whitespace, normalised numbers. Arrays and
 * objects nested deeper than {@link CANONICAL_JSON_MAX_DEPTH} levels throw
 * {@link InputTooDeepError} (`input_too_deep`), never a stack overflow.
 * @example
 * ```ts
 * canonicalJson({ b: 1, a: [2, "x"] }) // '{"a":[2,"x"],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  const plain = plainCanonicalJson(value);
  if (plain !== undefined) return plain;
  if (nestsDeeper(value, CANONICAL_JSON_MAX_DEPTH)) throw new InputTooDeepError(CANONICAL_JSON_MAX_DEPTH, "canonical JSON");
  try {
    return canonicalize(value);
  } catch (error) {
    // What the walk above cannot see: a toJSON that returns a deep value.
    if (error instanceof RangeError && /call stack/i.test(error.message)) throw new InputTooDeepError(CANONICAL_JSON_MAX_DEPTH, "canonical JSON", { cause: error });
    throw error;
  }
}

/**
 * Whether arrays and objects nest deeper than `limit` levels in a value (the value itself, when
 * it is one, is level 1). Recurses at most `limit + 1` frames; stops at a cycle (the writer
 * reports it) and at an object with `toJSON` (what it returns is not walked here).
 * @example
 * ```ts
 * nestsDeeper({ a: [{}] }, 2) // true
 * ```
 */
export function nestsDeeper(value: unknown, limit: number): boolean {
  const ancestors = new Set<object>();
  const deeper = (v: unknown, depth: number): boolean => {
    if (v === null || typeof v !== "object" || typeof (v as { toJSON?: unknown }).toJSON === "function") return false;
    if (depth > limit) return true;
    if (ancestors.has(v)) return false;
    ancestors.add(v);
    try {
      if (Array.isArray(v)) {
        for (const x of v) if (deeper(x, depth + 1)) return true;
      } else {
        for (const k of Object.keys(v)) if (deeper((v as Record<string, unknown>)[k], depth + 1)) return true;
      }
      return false;
    } finally {
      ancestors.delete(v);
    }
  };
  return deeper(value, 1);
}

/** A string JSON.stringify writes as-is between quotes: no quote, backslash, control character or surrogate. */
const PLAIN_STRING = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;

/** A JSON string as JSON.stringify writes it (RFC 8785 uses the same serialisation). */
export function jsonString(value: string): string {
  return PLAIN_STRING.test(value) ? `"${value}"` : JSON.stringify(value);
}

/** Nesting beyond this is left to the general path (which also reports cycles). */
const MAX_FAST_DEPTH = 64;

/**
 * RFC 8785 canonical JSON of a value that is plain JSON already (plain objects and arrays,
 * strings, finite numbers, booleans, null; members that are undefined, functions or symbols are
 * skipped, as JSON.stringify skips them), written directly: keys sorted by UTF-16 code units,
 * ECMAScript number and string serialisation, which is what the RFC specifies. Undefined for
 * anything else (a class instance, `toJSON`, a non-finite number, `undefined` in an array, deep
 * nesting), which then takes the general path.
 *
 * With `copy`, it also leaves in `copy.value` a fresh copy of the value, equal to `JSON.parse`
 * of the returned text (keys in the same order, -0 as 0), which saves parsing it again.
 * @example
 * ```ts
 * const copy: { value?: unknown } = {};
 * plainCanonicalJson({ b: 1, a: [2] }, copy) // '{"a":[2],"b":1}', copy.value { a: [2], b: 1 }
 * ```
 */
export function plainCanonicalJson(value: unknown, copy?: { value?: unknown }, depth = 0): string | undefined {
  switch (typeof value) {
    case "string":
      if (copy) copy.value = value;
      return jsonString(value);
    case "number":
      if (!Number.isFinite(value)) return undefined;
      if (copy) copy.value = value === 0 ? 0 : value;
      return JSON.stringify(value);
    case "boolean":
      if (copy) copy.value = value;
      return value ? "true" : "false";
    case "object": {
      if (value === null) {
        if (copy) copy.value = null;
        return "null";
      }
      if (depth > MAX_FAST_DEPTH || typeof (value as { toJSON?: unknown }).toJSON === "function") return undefined;
      if (Array.isArray(value)) {
        const items: unknown[] | undefined = copy ? new Array(value.length) : undefined;
        let out = "[";
        for (let i = 0; i < value.length; i++) {
          const item = plainCanonicalJson(value[i], copy, depth + 1);
          if (item === undefined) return undefined;
          if (items) items[i] = copy!.value;
          out += i === 0 ? item : `,${item}`;
        }
        if (copy) copy.value = items;
        return `${out}]`;
      }
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) return undefined;
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record).sort();
      const members: Record<string, unknown> | undefined = copy ? {} : undefined;
      let out = "{";
      let first = true;
      for (const key of keys) {
        const v = record[key];
        if (v === undefined || typeof v === "function" || typeof v === "symbol") continue;
        const item = plainCanonicalJson(v, copy, depth + 1);
        if (item === undefined) return undefined;
        if (members) {
          // An own "__proto__" member, as JSON.parse makes it (plain assignment would set the prototype).
          if (key === "__proto__") Object.defineProperty(members, key, { value: copy!.value, enumerable: true, writable: true, configurable: true });
          else members[key] = copy!.value;
        }
        out += `${first ? "" : ","}${jsonString(key)}:${item}`;
        first = false;
      }
      if (copy) copy.value = members;
      return `${out}}`;
    }
    default:
      return undefined;
  }
}

/** Where a value stops being plain JSON, and why (`why` reads after the path: "is a Map, not a plain object"). */
export interface JsonProblem {
  path: (string | number)[];
  why: string;
}

/**
 * Why a value is not plain JSON that a store writes and reads back equal (a non-finite number,
 * `undefined`, a function, a class instance, a symbol key, a cycle), or undefined. `forbiddenKeys`
 * refuses member names (`__proto__`, which LangGraph's checkpoint reader turns into a prototype);
 * `refuseAccessors` refuses getters and setters instead of reading them; `maxDepth` bounds nesting
 * ({@link CANONICAL_JSON_MAX_DEPTH} by default, so a deep value is a problem, never a stack overflow).
 * @example
 * ```ts
 * jsonProblem({ at: new Date() }) // { path: ["at"], why: "is a Date, not a plain object" }
 * ```
 */
export function jsonProblem(
  value: unknown,
  options: { forbiddenKeys?: ReadonlySet<string>; refuseAccessors?: boolean; maxDepth?: number } = {},
  path: (string | number)[] = [],
  stack: object[] = [],
): JsonProblem | undefined {
  const problem = (why: string): JsonProblem => ({ path: [...path], why });
  if (options.maxDepth === undefined) options = { ...options, maxDepth: CANONICAL_JSON_MAX_DEPTH };
  if (value === null || typeof value === "string" || typeof value === "boolean") return undefined;
  if (typeof value === "number") return Number.isFinite(value) ? undefined : problem(`is ${value}, not a finite number`);
  if (typeof value !== "object") return problem(`is ${typeof value === "undefined" ? "undefined" : `a ${typeof value}`}`);
  if (options.maxDepth !== undefined && path.length >= options.maxDepth) return problem(`is nested deeper than ${options.maxDepth}`);
  if (stack.includes(value)) return problem("is a circular reference");
  stack.push(value);
  try {
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const found = jsonProblem(value[i], options, [...path, i], stack);
        if (found) return found;
      }
      return undefined;
    }
    const proto = Object.getPrototypeOf(value) as unknown;
    if (proto !== Object.prototype && proto !== null) return problem(`is a ${(value as object).constructor?.name ?? "non-plain object"}, not a plain object`);
    if (Object.getOwnPropertySymbols(value).length > 0) return problem("has symbol keys");
    for (const key of Object.keys(value)) {
      if (options.forbiddenKeys?.has(key)) return { path: [...path, key], why: "is a key that is not accepted" };
      if (options.refuseAccessors) {
        const descriptor = Object.getOwnPropertyDescriptor(value, key)!;
        if (descriptor.get || descriptor.set) return { path: [...path, key], why: "is an accessor" };
      }
      const found = jsonProblem((value as Record<string, unknown>)[key], options, [...path, key], stack);
      if (found) return found;
    }
    return undefined;
  } finally {
    stack.pop();
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

/**
 * Whether a function's source shows what it does: a bound function, a Proxy or a built-in prints
 * `[native code]` whatever it decides, so a version hashed from it cannot tell two apart.
 * @example
 * ```ts
 * hasReadableSource((r) => r.amount <= 100); // true
 * hasReadableSource(((r) => r.amount <= 100).bind(null)); // false
 * ```
 */
export function hasReadableSource(fn: (...args: never[]) => unknown): boolean {
  return !/\{\s*\[native code\]\s*\}\s*$/.test(Function.prototype.toString.call(fn));
}
