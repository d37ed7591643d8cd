import { createHash } from "node:crypto";
import type { AuditEventData } from "../audit/events.js";
import { toolCallDigest } from "../internal/canonical.js";

/**
 * What eart keeps of a value it refuses (an answer, tool arguments nested too deep): enough to
 * read, never all of it, with the digest of the whole. The gate, the recovery step, the escalation
 * guard and the resume guard record their refusals through {@link refusalData}, so a refused
 * payload of any size or depth is on record, bounded.
 */

/**
 * How deep tool arguments and answers may nest: as deep as the resume guard lets a resume value
 * be (`guardResumes`). Deeper values are refused before anything walks them recursively (the
 * digest, the seal, the audit log), which would overflow the stack with an untyped `RangeError`.
 */
export const MAX_ARGUMENT_DEPTH = 64;

/**
 * The digest of a proposed call, whatever the model put in its arguments: `toolCallDigest`, or for
 * arguments that cannot be recorded as they are ({@link argumentsProblem}), {@link digestOf} the
 * call, which gives the same for plain JSON and never throws. What the model's output records
 * and the gate binds the call's decision to.
 */
export function proposedCallDigest(name: string, args: Record<string, unknown>, threadId: string): string {
  return argumentsProblem(args, MAX_ARGUMENT_DEPTH) ? digestOf({ threadId, name, args }) : toolCallDigest(name, args, threadId);
}

/**
 * Why tool arguments cannot be recorded as they are, and where: nested deeper than `max`, or a
 * number JSON cannot hold (NaN, Infinity: what `JSON.parse` makes of `1e309`). Walked without
 * recursion; undefined when they can.
 */
export function argumentsProblem(value: unknown, max: number): { path: (string | number)[]; why: string } | undefined {
  return walkProblem(value, max, true);
}

/** Where a value nests deeper than `max` (the path of the first object found there), walked without recursion. */
export function nestedTooDeep(value: unknown, max: number): (string | number)[] | undefined {
  return walkProblem(value, max, false)?.path;
}

/** The first place a value nests deeper than `max`, or (with `finite`) holds a number JSON cannot, walked without recursion. */
function walkProblem(value: unknown, max: number, finite: boolean): { path: (string | number)[]; why: string } | undefined {
  const todo: { value: unknown; path: (string | number)[] }[] = [{ value, path: [] }];
  while (todo.length > 0) {
    const { value, path } = todo.pop()!;
    if (finite && typeof value === "number" && !Number.isFinite(value)) return { path, why: `is ${value}, not a finite number` };
    if (typeof value !== "object" || value === null) continue;
    if (path.length >= max) return { path, why: `is nested deeper than ${max} levels` };
    const entries: [string | number, unknown][] = Array.isArray(value) ? [...value.entries()] : Object.entries(value);
    for (let i = entries.length - 1; i >= 0; i--) todo.push({ value: entries[i]![1], path: [...path, entries[i]![0]] });
  }
  return undefined;
}

/**
 * What the gate keeps of a value it refuses (in audit events and records): enough to read, never
 * all of it. Levels, entries per array or object, values in all, characters per string and in all.
 */
const KEEP = { depth: 8, entries: 100, values: 300, chars: 500, total: 10_000 } as const;

/**
 * A string cut to at most `max` characters, marked with its length. The cut never leaves part of
 * a token behind (a card number, a key or a phone number cut in two would no longer look like
 * one to redaction): a word the cut runs through goes, and so does a run of digits before it.
 */
export function cutText(text: string, max: number): string {
  let kept = text.slice(0, max);
  // Invisible format characters (zero-width spaces and joiners, \p{Cf}) count as part of a word or
  // a number: redaction reads through them, so a cut beside one must too.
  if (/[\p{L}\p{N}_\p{Cf}]/u.test(text.charAt(max))) kept = kept.replace(/[\p{L}\p{N}_\p{Cf}]+$/u, "");
  kept = kept.replace(/\p{N}[\p{N}\p{Cf}\s./\-\u2010-\u2015\u2212]*$/u, "");
  return `${kept}…[${text.length} characters]`;
}

/**
 * A bounded copy of a value, for the audit log: nesting beyond `KEEP.depth`, entries beyond
 * `KEEP.entries`, values beyond `KEEP.values` and text beyond `KEEP.chars` (per string, key
 * included) or `KEEP.total` (in all) are cut, and marked; `truncated` says whether anything was.
 * A small value comes back equal.
 */
export function bounded(value: unknown): { value: unknown; truncated: boolean } {
  let values = 0;
  let room: number = KEEP.total;
  let truncated = false;
  const cut = (marker: string) => {
    truncated = true;
    return marker;
  };
  const text = (s: string): string => {
    const max = Math.max(0, Math.min(KEEP.chars, room));
    const kept = s.length > max ? cut(cutText(s, max)) : s;
    room -= kept.length;
    return kept;
  };
  const copy = (v: unknown, depth: number): unknown => {
    values += 1;
    if (v === null || v === undefined || typeof v === "boolean") return v;
    if (typeof v === "number") return Number.isFinite(v) ? v : String(v);
    if (typeof v === "string") return text(v);
    if (typeof v !== "object") return `[${typeof v}]`;
    if (depth >= KEEP.depth) return cut(`[nested deeper than ${KEEP.depth} levels]`);
    if (values > KEEP.values) return cut("[…]");
    if (Array.isArray(v)) {
      const items = v.slice(0, KEEP.entries).map((item) => copy(item, depth + 1));
      if (v.length > KEEP.entries) items.push(cut(`[${v.length - KEEP.entries} more items]`));
      return items;
    }
    const keys = Object.keys(v);
    const out: Record<string, unknown> = {};
    // Defined, not assigned: an own "__proto__" member stays a member.
    const put = (key: string, item: unknown) => Object.defineProperty(out, key, { value: item, enumerable: true, writable: true, configurable: true });
    for (const key of keys.slice(0, KEEP.entries)) put(text(key), copy((v as Record<string, unknown>)[key], depth + 1));
    if (keys.length > KEEP.entries) put("[…]", cut(`[${keys.length - KEEP.entries} more keys]`));
    return out;
  };
  const kept = copy(value, 0);
  return { value: kept, truncated };
}

/**
 * SHA-256 of the RFC 8785 canonical JSON of a value (the digest `sha256Hex(canonicalJson(v))`
 * gives for plain JSON), computed without recursion so that a hostile value nested thousands deep
 * still gets one. Values JSON cannot hold are written as JSON.stringify writes them (`null`, or
 * left out of an object); a cycle is written as `"[circular]"`.
 */
export function digestOf(value: unknown): string {
  const hash = createHash("sha256");
  type Step = { text: string } | { value: unknown } | { leave: object };
  const todo: Step[] = [{ value }];
  const open = new Set<object>();
  let buffer = "";
  const write = (text: string) => {
    buffer += text;
    if (buffer.length >= 65_536) {
      hash.update(buffer);
      buffer = "";
    }
  };
  const skipped = (v: unknown) => v === undefined || typeof v === "function" || typeof v === "symbol";
  while (todo.length > 0) {
    const step = todo.pop()!;
    if ("text" in step) {
      write(step.text);
      continue;
    }
    if ("leave" in step) {
      open.delete(step.leave);
      continue;
    }
    let v = step.value;
    if (typeof v === "object" && v !== null && typeof (v as { toJSON?: unknown }).toJSON === "function") v = (v as { toJSON(): unknown }).toJSON();
    if (typeof v === "string") write(JSON.stringify(v));
    else if (typeof v === "number") write(Number.isFinite(v) ? JSON.stringify(v) : "null");
    else if (typeof v === "boolean") write(v ? "true" : "false");
    else if (typeof v !== "object" || v === null) write("null");
    else if (open.has(v)) write('"[circular]"');
    else {
      open.add(v);
      const next: Step[] = [];
      if (Array.isArray(v)) {
        next.push({ text: "[" });
        v.forEach((item, i) => next.push(...(i > 0 ? [{ text: "," }] : []), { value: skipped(item) ? null : item }));
        next.push({ text: "]" });
      } else {
        const record = v as Record<string, unknown>;
        const keys = Object.keys(record).filter((k) => !skipped(record[k])).sort();
        next.push({ text: "{" });
        keys.forEach((k, i) => next.push({ text: `${i > 0 ? "," : ""}${JSON.stringify(k)}:` }, { value: record[k] }));
        next.push({ text: "}" });
      }
      next.push({ leave: v });
      for (let i = next.length - 1; i >= 0; i--) todo.push(next[i]!);
    }
  }
  hash.update(buffer);
  return hash.digest("hex");
}

/**
 * What the audit log keeps of a refused answer: the refusal, a bounded copy of the answer
 * (`answerTruncated` when cut) and the digest of all of it (`answerDigest`, the SHA-256 of its
 * canonical JSON), so that a refused payload of any size or depth is still on record.
 */
export function refusalData(error: { code: string; message: string; details: unknown }, answer: unknown): AuditEventData<"approval.refused"> {
  const kept = bounded(answer);
  const message = error.message.length > 2 * KEEP.chars ? cutText(error.message, 2 * KEEP.chars) : error.message;
  return { code: error.code, message, details: bounded(error.details).value, answer: kept.value, answerTruncated: kept.truncated, answerDigest: digestOf(answer) };
}

