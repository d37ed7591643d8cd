import { z } from "zod";
import { canonicalJson, sha256Hex } from "./canonical.js";
import { EartConfigError } from "./errors.js";
import type { AgentIdentity } from "./identity.js";
import type { ContextItem } from "./state.js";

/**
 * What an agent may see: retrieved items are kept only when the identity holds their data scope,
 * and sensitive values are redacted by field and by pattern before any model, tool argument or
 * audit record can hold them. Labels of what was retrieved raise the thread's sensitivity.
 */

/** One item as a provider returns it: where it comes from, its data scope, its labels, its content. */
export const RetrievedItemSchema = z
  .object({
    id: z.string().min(1),
    source: z.string().min(1),
    /** The data scope an identity needs to see this item (e.g. `orders`, `payments`, `credit`). */
    scope: z.string().min(1),
    /** Sensitivity labels (e.g. `payment_data`, `pii`); they raise the thread's sensitivity. */
    labels: z.array(z.string().min(1)).default([]),
    /** Text or JSON. */
    content: z.unknown(),
  })
  .strict();
export type RetrievedItem = z.input<typeof RetrievedItemSchema>;

const RedactionRuleSchema = z
  .object({
    id: z.string().min(1),
    /** Object keys whose values are redacted, wherever they occur in an item (e.g. `card`, `salary`). */
    fields: z.array(z.string().min(1)).default([]),
    /** A pattern redacted inside every string (global flag added if missing). */
    pattern: z.instanceof(RegExp).optional(),
    /** An extra check on a pattern match (e.g. the Luhn checksum of a card number). */
    validate: z.custom<(match: string) => boolean>((v) => typeof v === "function", "must be a function").optional(),
    /**
     * Roles of the human the agent acts for that may see the value; nobody when omitted.
     * A salary rule with `visibleTo: ["hr-manager"]` shows salaries to HR managers' agents only.
     */
    visibleTo: z.array(z.string().min(1)).default([]),
    /** A sensitivity label the thread gets when this rule finds something, seen or not. */
    label: z.string().min(1).optional(),
  })
  .strict()
  .refine((r) => r.fields.length > 0 || r.pattern !== undefined, { message: "a redaction rule needs fields or a pattern" });
export type RedactionRule = z.input<typeof RedactionRuleSchema>;
type ParsedRule = z.output<typeof RedactionRuleSchema>;

/** Luhn checksum of the digits of a string: how card numbers are told from other digit runs. */
export function luhnValid(text: string): boolean {
  const digits = text.replace(/\D/g, "");
  if (digits.length < 13 || digits.length > 19) return false;
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = Number(digits[digits.length - 1 - i]);
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/**
 * Ready-made rules: card numbers (13–19 digits, spaces or dashes, Luhn-checked), IBANs, US social
 * security numbers and UK national insurance numbers, each also by common field names.
 * @example
 * ```ts
 * const redaction = defineRedaction([...STANDARD_REDACTIONS, { id: "salary", fields: ["salary"], visibleTo: ["hr-manager"], label: "compensation" }]);
 * ```
 */
export const STANDARD_REDACTIONS: readonly RedactionRule[] = [
  { id: "card_number", fields: ["card", "cardNumber", "card_number", "pan"], pattern: /\b(?:\d[ -]?){12,18}\d\b/g, validate: luhnValid, label: "payment_data" },
  { id: "iban", fields: ["iban", "IBAN"], pattern: /\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b/g, label: "payment_data" },
  { id: "national_id", fields: ["ssn", "nationalId", "national_id", "nino"], pattern: /\b(?:\d{3}-\d{2}-\d{4}|[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D])\b/g, label: "pii" },
];

/** Where a value was redacted, and by which rule. Never the value. */
export interface Redacted {
  path: string;
  ruleId: string;
}

/** The outcome of redacting one value for one identity. */
export interface RedactionResult<T> {
  value: T;
  redacted: Redacted[];
  /** Labels of the rules that found something. */
  labels: string[];
}

/** A compiled set of redaction rules. */
export interface Redaction {
  readonly rules: readonly ParsedRule[];
  /** Redacts a value (string or JSON) for an identity; the input is not changed. */
  apply<T>(value: T, identity: Pick<AgentIdentity, "onBehalfOf"> | undefined): RedactionResult<T>;
  /**
   * A cheap over-approximation of "could `apply` find anything in this value": false means it
   * would change nothing and raise no label. Absent on hand-written redactions (assume true).
   */
  mayChange?(value: unknown): boolean;
}

const mark = (ruleId: string) => `[REDACTED:${ruleId}]`;

/** First non-blank character (as `trimStart` counts blanks) is `{` or `[`; no copy of the string. */
function looksLikeJson(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) return true;
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09 && c !== 0xa0 && c !== 0xfeff && !(c >= 0x2000 && c <= 0x200a) && c !== 0x2028 && c !== 0x2029 && c !== 0x3000 && c !== 0x0b && c !== 0x0c && c !== 0x1680 && c !== 0x202f && c !== 0x205f) return false;
  }
  return false;
}

/** The value of a string that holds a JSON object or array, else undefined. */
function parseJsonText(s: string): object | undefined {
  if (!looksLikeJson(s)) return undefined;
  try {
    const parsed = JSON.parse(s) as unknown;
    return parsed !== null && typeof parsed === "object" ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Compiles redaction rules once. Fields are matched by key at any depth, also inside strings that
 * hold JSON (a tool's result); patterns inside every string. A rule's `visibleTo` roles of the human let the value through.
 * With no identity, nothing is visible.
 * @example
 * ```ts
 * const redaction = defineRedaction(STANDARD_REDACTIONS);
 * redaction.apply("card 4111 1111 1111 1111", identity).value; // "card [REDACTED:card_number]"
 * ```
 */
export function defineRedaction(rules: readonly RedactionRule[]): Redaction {
  const parsed: ParsedRule[] = [];
  const ids = new Set<string>();
  for (const [i, rule] of rules.entries()) {
    const result = RedactionRuleSchema.safeParse(rule);
    if (!result.success) throw new EartConfigError(`redaction[${i}]`, result.error.issues[0]?.message ?? "invalid");
    if (ids.has(result.data.id)) throw new EartConfigError(`redaction[${i}]`, `two rules have the id "${result.data.id}"`);
    ids.add(result.data.id);
    const pattern = result.data.pattern;
    parsed.push({ ...result.data, ...(pattern ? { pattern: pattern.global ? pattern : new RegExp(pattern.source, `${pattern.flags}g`) } : {}) });
  }

  const byField = new Map<string, ParsedRule>();
  for (const r of parsed) for (const f of r.fields) if (!byField.has(f)) byField.set(f, r);
  // For mayChange: each pattern once, not global (no lastIndex), with `m` so that `^`/`$` hold at
  // the edges of every string when the strings are tested joined by newlines.
  const screens = parsed.flatMap((r) => (r.pattern ? [new RegExp(r.pattern.source, `${r.pattern.flags.replace(/[gym]/g, "")}m`)] : []));

  /**
   * Visits the value as `apply` does (strings holding JSON are parsed, and kept as text too),
   * stops at the first key a field rule names, and tests each pattern once over all strings
   * joined by newlines (a newline is a word boundary and, with `m`, a line edge, like a string's
   * own edges), ignoring `validate`.
   */
  function mayChange(value: unknown): boolean {
    const strings: string[] = [];
    let field = false;
    const visit = (v: unknown): void => {
      if (typeof v === "string") {
        strings.push(v);
        const json = parseJsonText(v);
        if (json !== undefined) visit(json);
      } else if (Array.isArray(v)) {
        for (const x of v) if (!field) visit(x);
      } else if (v !== null && typeof v === "object") {
        const o = v as Record<string, unknown>;
        for (const k in o) {
          const x = o[k];
          if (x !== null && x !== undefined && byField.has(k)) field = true;
          if (field) return;
          visit(x);
        }
      }
    };
    visit(value);
    if (field) return true;
    if (strings.length === 0) return false;
    const text = strings.length === 1 ? strings[0]! : strings.join("\n");
    return screens.some((p) => p.test(text));
  }

  function apply<T>(value: T, identity: Pick<AgentIdentity, "onBehalfOf"> | undefined): RedactionResult<T> {
    const roles = new Set(identity?.onBehalfOf.roles ?? []);
    const hidden = parsed.filter((r) => !r.visibleTo.some((role) => roles.has(role)));
    const redacted: Redacted[] = [];
    const labels = new Set<string>();

    const text = (s: string, path: string): string => {
      let out = s;
      for (const rule of parsed) {
        if (!rule.pattern) continue;
        out = out.replace(rule.pattern, (match) => {
          if (rule.validate && !rule.validate(match)) return match;
          if (rule.label) labels.add(rule.label);
          if (!hidden.includes(rule)) return match;
          redacted.push({ path, ruleId: rule.id });
          return mark(rule.id);
        });
      }
      return out;
    };
    const walk = (v: unknown, path: string): unknown => {
      if (typeof v === "string") {
        // Tool results and retrieved documents are often JSON text: redact its fields too.
        const json = parseJsonText(v);
        if (json === undefined) return text(v, path);
        const before = redacted.length;
        const walked = walk(json, path);
        return redacted.length === before ? v : JSON.stringify(walked); // unchanged text stays as it was
      }
      if (Array.isArray(v)) return v.map((x, i) => walk(x, `${path}[${i}]`));
      if (v && typeof v === "object") {
        const out: Record<string, unknown> = {};
        for (const [k, x] of Object.entries(v)) {
          const at = path ? `${path}.${k}` : k;
          const rule = byField.get(k);
          if (rule && x !== null && x !== undefined) {
            if (rule.label) labels.add(rule.label);
            if (hidden.includes(rule)) {
              redacted.push({ path: at, ruleId: rule.id });
              out[k] = mark(rule.id);
              continue;
            }
          }
          out[k] = walk(x, at);
        }
        return out;
      }
      return v;
    };
    return { value: walk(value, "") as T, redacted, labels: [...labels].sort() };
  }

  const redaction: Redaction = { rules: parsed, apply, mayChange };
  compiled.add(redaction);
  return redaction;
}

/** Redactions made by {@link defineRedaction}: their rules say all they do. */
const compiled = new WeakSet<Redaction>();
/** `validate` functions a rule can name when it crosses to another thread. */
const PORTABLE_VALIDATORS: Record<string, (match: string) => boolean> = { luhn: luhnValid };

/** A redaction rule as data: what crosses to a worker thread (a `validate` by name). */
export type PortableRedactionRule = Omit<ParsedRule, "validate"> & { validate?: string };

/**
 * A redaction's rules as structured-cloneable data, for building the same redaction on another
 * thread with {@link redactionFromPortable}; undefined when that cannot be done: a hand-written
 * redaction, or a rule whose `validate` is a function of its own (only `luhnValid` travels).
 * @example
 * ```ts
 * portableRedaction(defineRedaction(STANDARD_REDACTIONS)); // [{ id: "card_number", …, validate: "luhn" }, …]
 * ```
 */
export function portableRedaction(redaction: Redaction): PortableRedactionRule[] | undefined {
  if (!compiled.has(redaction)) return undefined;
  const out: PortableRedactionRule[] = [];
  for (const { validate, ...rule } of redaction.rules) {
    if (validate === undefined) {
      out.push(rule);
      continue;
    }
    const name = Object.keys(PORTABLE_VALIDATORS).find((k) => PORTABLE_VALIDATORS[k] === validate);
    if (name === undefined) return undefined;
    out.push({ ...rule, validate: name });
  }
  return out;
}

/**
 * The redaction {@link portableRedaction} described.
 * @example
 * ```ts
 * const same = redactionFromPortable(portableRedaction(redaction)!);
 * ```
 */
export function redactionFromPortable(rules: readonly PortableRedactionRule[]): Redaction {
  return defineRedaction(
    rules.map(({ validate, ...rule }) => {
      if (validate === undefined) return rule;
      const fn = PORTABLE_VALIDATORS[validate];
      if (!fn) throw new EartConfigError("redaction", `unknown validate "${validate}"`);
      return { ...rule, validate: fn };
    }),
  );
}

/** What a provider learns about the run: the query, the bound identity and the thread. */
export interface RetrievalRequest {
  query: string;
  identity: AgentIdentity;
  threadId: string;
}

/** Filters, redacts and labels retrieved items for an identity. */
export interface ScreenedContext {
  items: ContextItem[];
  dropped: { id: string; source: string; scope: string }[];
  redacted: (Redacted & { itemId: string })[];
  sensitivity: string[];
}

/**
 * Keeps the items whose scope the identity holds, redacts each, and adds a digest of what is kept
 * (SHA-256 of the canonical JSON of the redacted content) for provenance.
 * @example
 * ```ts
 * const { items, dropped, sensitivity } = screenContext(retrieved, identity, redaction);
 * ```
 */
export function screenContext(retrieved: readonly RetrievedItem[], identity: AgentIdentity, redaction: Redaction | undefined): ScreenedContext {
  const scopes = new Set(identity.dataScopes);
  const out: ScreenedContext = { items: [], dropped: [], redacted: [], sensitivity: [] };
  const labels = new Set<string>();
  for (const raw of retrieved) {
    const item = RetrievedItemSchema.parse(raw);
    if (!scopes.has(item.scope)) {
      out.dropped.push({ id: item.id, source: item.source, scope: item.scope });
      continue;
    }
    const screened = redaction ? redaction.apply(item.content, identity) : { value: item.content, redacted: [], labels: [] };
    for (const l of [...item.labels, ...screened.labels]) labels.add(l);
    out.redacted.push(...screened.redacted.map((r) => ({ ...r, itemId: item.id })));
    out.items.push({
      id: item.id,
      source: item.source,
      scope: item.scope,
      labels: [...new Set([...item.labels, ...screened.labels])].sort(),
      digest: sha256Hex(canonicalJson(screened.value ?? null)),
      content: screened.value,
    });
  }
  out.sensitivity = [...labels].sort();
  return out;
}
