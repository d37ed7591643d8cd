import { z } from "zod";
import { EartConfigError } from "../errors.js";
import type { AgentIdentity } from "../identity/registry.js";

/**
 * Redaction: sensitive values found by field name and by pattern are replaced by
 * `[REDACTED:<rule>]` before any model, checkpoint, audit record or exporter holds them.
 *
 * Patterns match on a normalised view of each string (Unicode NFKC, zero-width and bidi controls
 * removed), so full-width digits, digits split by invisible characters or any kind of space still
 * match; what is replaced is the matching stretch of the original string. A pattern with a
 * `validate` (a checksum) that rejects a match is tried again on the match's shorter stretches
 * between separators, so digits glued before or after a card number do not hide it.
 */

/** Where a pattern's match is: the (normalised) text it was found in, and its start and end there. */
export interface MatchPlace {
  text: string;
  start: number;
  end: number;
}

const RedactionRuleSchema = z
  .object({
    id: z.string().min(1),
    /**
     * Object keys whose values are redacted, wherever they occur in a value (e.g. `card`,
     * `salary`). Keys match ignoring case and anything but letters and digits (`card_number`,
     * `cardNumber` and `CARD-NUMBER` are one key).
     */
    fields: z.array(z.string().min(1)).default([]),
    /** A pattern redacted inside every string, number and object key (global flag added if missing). */
    pattern: z.custom<RegExp>((v) => v instanceof RegExp, "must be a RegExp").optional(),
    /**
     * An extra check on a pattern match (e.g. the Luhn checksum of a card number), given the match
     * and where it is in the (normalised) text.
     */
    validate: z.custom<(match: string, around: MatchPlace) => boolean>((v) => typeof v === "function", "must be a function").optional(),
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

/**
 * Luhn checksum of the digits of a string: how card numbers are told from other digit runs. Given
 * where the match is (`around`, as a rule's `validate` is), a match that shares a character with a
 * UUID written there is no card (`aaf31022-5599-4213-96af-…`: a UUID's hex groups hold digit runs
 * between dashes, and eart's ids, LangGraph's checkpoint ids and LangChain's run ids are UUIDs that
 * must stay exact); a card written right after a UUID is still found, on the match's shorter
 * stretches. Nor is a match inside a hex digest (see {@link insideHexDigest}). Thirteen digits are a
 * card only with a 13-digit issuer's prefix (see {@link THIRTEEN_DIGIT_ISSUERS}).
 */
export function luhnValid(text: string, around?: MatchPlace): boolean {
  if (around && (overlapsUuid(around) || insideHexDigest(around))) return false;
  const digits = text.replace(/\D/g, "");
  if (digits.length < 13 || digits.length > 19) return false;
  if (digits.length === 13 && !THIRTEEN_DIGIT_ISSUERS.test(digits)) return false;
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
 * The only networks that issue 13-digit cards: Visa (4…) and Maestro (50…, 56…–69…). Any other
 * 13-digit run is no card, and the commonest one is an epoch-millisecond timestamp (`Date.now()`
 * in a tool's result: 1… from 2001 to 2033, 2… to 2065, 3… to 2096), which passes Luhn one time
 * in ten.
 */
const THIRTEEN_DIGIT_ISSUERS = /^(?:4|5[06-9]|6)/;

const UUID = /[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}/g;

/** Whether the match shares a character with a UUID written in its text. */
function overlapsUuid({ text, start, end }: MatchPlace): boolean {
  const from = Math.max(0, start - 35);
  const window = text.slice(from, Math.min(text.length, end + 35));
  if (!window.includes("-")) return false;
  UUID.lastIndex = 0;
  for (let m = UUID.exec(window); m !== null; m = UUID.exec(window)) {
    const a = from + m.index;
    if (a < end && start < a + m[0].length) return true;
    UUID.lastIndex = m.index + 1;
  }
  return false;
}

/**
 * Whether the match, written without separators, lies in a run of 32 or more hex digits with a
 * letter among them (an MD5, SHA-1 or SHA-256 digest: eart's hashes, an ETag): its digits are the
 * digest's, whatever letters stand before them (`…6e6cc55518472475883` is no card labelled `cc`).
 */
function insideHexDigest({ text, start, end }: MatchPlace): boolean {
  // Looked at up to 128 characters each side (a SHA-512 in hex): a match costs the same however
  // long the run of letters and digits around it.
  let a = start;
  let b = end;
  while (a > 0 && start - a < 128 && isAlnum(text, a - 1)) a--;
  while (b < text.length && b - end < 128 && isAlnum(text, b)) b++;
  if (b - a < 32) return false;
  let letter = false;
  for (let i = a; i < b; i++) {
    const c = text.charCodeAt(i) | 0x20;
    if (c >= 0x61 && c <= 0x66) letter = true;
    else if (c < 0x30 || c > 0x39) return false;
  }
  return letter;
}

/**
 * IBAN lengths by country, from the SWIFT IBAN registry: a payment reference that carries the
 * same mod-97 check digits (an ISO 11649 `RF…` creditor reference) names no country.
 */
const IBAN_LENGTHS: Readonly<Record<string, number>> = Object.fromEntries(
  (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 DK18 DO28 EE20 EG29 ES24 " +
    "FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 " +
    "LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 " +
    "RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30"
  )
    .split(" ")
    .map((e) => [e.slice(0, 2), Number(e.slice(2))]),
);

/**
 * ISO 13616 check of an IBAN (any case, any separators): a registered country, that country's
 * length, and mod 97 equal to 1. Given where the match is (`around`), no stretch of a UUID is one
 * (see {@link luhnValid}), nor the random tail of an identifier (see {@link identifierTail}).
 */
export function ibanValid(text: string, around?: MatchPlace): boolean {
  if (around && (overlapsUuid(around) || identifierTail(around))) return false;
  const s = text.replace(/[^0-9A-Za-z]/g, "").toUpperCase();
  if (IBAN_LENGTHS[s.slice(0, 2)] !== s.length || !/^[A-Z]{2}\d{2}[A-Z0-9]+$/.test(s)) return false;
  let rest = 0;
  for (const ch of s.slice(4) + s.slice(0, 4)) {
    const v = ch >= "A" ? ch.charCodeAt(0) - 55 : ch.charCodeAt(0) - 48;
    rest = (v >= 10 ? rest * 100 + v : rest * 10 + v) % 97;
  }
  return rest === 1;
}

/**
 * Whether the match is the random part of an identifier: glued by `_` to a word before it, written
 * without separators, and in mixed case after its first letter, as the base62 tail of an OpenAI
 * tool call id is (`call_vG37BkjrT0mutqcibgH8QjfW` holds a valid 24-long VG IBAN: about one id in
 * 500,000 does). An IBAN glued to its label is written in one case (`iban_DE89…`, `iban_de89…`,
 * `iban_De89…`) and is still found.
 */
function identifierTail({ text, start, end }: MatchPlace): boolean {
  if (start < 2 || text[start - 1] !== "_" || !isAlnum(text, start - 2)) return false;
  let upper = false;
  let lower = false;
  for (let i = start + 1; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c >= 65 && c <= 90) upper = true;
    else if (c >= 97 && c <= 122) lower = true;
    else if (c < 48 || c > 57) return false;
  }
  return upper && lower;
}

/**
 * A US social security number as issued (area not 000, 666 or 9xx; group not 00; serial not
 * 0000), or any UK national insurance number (the pattern already checks its letters).
 */
export function nationalIdValid(text: string): boolean {
  const digits = text.replace(/\D/g, "");
  if (digits.length !== 9 || !/^\d/.test(text)) return true;
  const area = digits.slice(0, 3);
  return area !== "000" && area !== "666" && area[0] !== "9" && digits.slice(3, 5) !== "00" && digits.slice(5) !== "0000";
}

/** Up to three separators between digit groups: spaces of every kind, dots, dashes, slashes. */
const SEP = "[\\s.\\-/\\u2010-\\u2015\\u2212]";
/** Word edges where `_` is an edge too (`card_4111…`). */
const START = "(?<![0-9A-Za-z])";
const END = "(?![0-9A-Za-z])";
/**
 * How many letters glued to a run of digits are read as a label (`CC4111…`, `visa4111…`,
 * `primaryAccountNumber4111…`, `…1111exp`, `SSN123-45-6789`), not as part of a longer code: the
 * digits are matched when the letters beside them run to a word edge within this many. A run of
 * digits inside a longer mix of letters and digits (an order code) is not (unless a word that
 * names a card stands right before it: {@link CARD_WORDS}), nor one inside a SHA-256 digest in
 * hex: a label, 19 digits and a label with 4 digits after it make 63 characters at most, fewer
 * than its 64.
 */
const LABEL = 20;
/**
 * Before a digit run: no digit, and no run of letters that is longer than {@link LABEL} or has a
 * digit before it. (Negative lookbehinds of bounded length: as fast as a plain word edge.)
 */
const DIGITS_START = `(?<![0-9])(?<![0-9][A-Za-z]{1,${LABEL}})(?<![A-Za-z]{${LABEL + 1}})`;
/** After a digit run: at most {@link LABEL} letters, then a word edge. */
const DIGITS_END = `(?=[A-Za-z]{0,${LABEL}}(?![0-9A-Za-z]))`;
/**
 * After a card's digits: a word edge, or a label of at most {@link LABEL} letters and then up to 4
 * digits before the edge (`…1111exp`, `…1111exp1229`, `…1111CVV737`: a card sent with its expiry or
 * code glued on).
 */
const CARD_END = `(?=(?:[A-Za-z]{1,${LABEL}}\\d{0,4})?(?![0-9A-Za-z]))`;
/** Thirteen to nineteen digits in any grouping. */
const CARD_DIGITS = `(?:${SEP}{0,3}\\d){12,18}`;
/** `word` matched in any case, one character class per letter (`cc` → `[Cc][Cc]`). */
const anyCase = (word: string): string => [...word].map((c) => `[${c.toUpperCase()}${c}]`).join("");
/**
 * Labels that name a card. Glued to a card's digits, one of these is a label even with a digit
 * right before it (`x1CC4111…`, `v2card4111…`), where other letters are read as part of a longer
 * code (an order code, a hex digest: of these words only `cc` is hex, and a digest's digit run
 * must also end at a word edge or a label to be read).
 */
const CARD_WORDS = ["cc", "ccn", "ccno", "ccnum", "card", "cardno", "cardnum", "cardnumber", "creditcard", "debitcard", "pan", "visa", "mc", "mastercard", "amex", "discover", "maestro", "jcb", "unionpay", "diners"];
/** {@link DIGITS_START}, or a digit and then one of the {@link CARD_WORDS} right before the card. */
const CARD_START = `(?<![0-9])(?:(?<![0-9][A-Za-z]{1,${LABEL}})|(?<=[0-9](?:${CARD_WORDS.map(anyCase).join("|")})))(?<![A-Za-z]{${LABEL + 1}})`;
/**
 * A card in a form-encoded body (`card=4111+1111+1111+1111&exp=1229`, `note=paid+with+4111+…`),
 * where each space is a `+`: right after a key's `=` or after a `+` that follows a word, digit
 * groups joined by single `+`s as cards are grouped (4-4-4-4 and 1–3 more digits, 4-6-5, 4-6-4,
 * 4-4-5), and no further `+` and digit after them. Not arithmetic: a sum's `+` follows a digit
 * (`100+1250+…`), a formula's `=` no key (`=1250+3400+…`), `1+1` has no such groups, and a longer
 * sum runs on (`x=1250+3400+2200+1800+900`); nor a phone number there, whose own `+` is written
 * `%2B` and whose groups are shorter (`%2B1+415+555+2671`). Thirteen digits must also have a
 * 13-digit card's prefix (see {@link luhnValid}).
 */
const FORM_CARD = `[1-9](?<=(?:[\\w\\]]=|[^\\d\\s]\\+)[1-9])\\d{3}\\+(?:\\d{4}\\+\\d{4}\\+\\d{4}(?:\\+\\d{1,3})?|\\d{6}\\+\\d{4,5}|\\d{4}\\+\\d{5})(?!\\+\\d)${CARD_END}`;

/**
 * Ready-made rules: card numbers (13–19 digits in any grouping, also `+`-grouped in a form-encoded
 * body, Luhn-checked, 13 digits only with a 13-digit issuer's prefix), IBANs (any case and
 * grouping, mod-97-checked, not an identifier's random tail), US social security numbers (grouped
 * by dashes, spaces or dots) and UK national insurance numbers, each also by common field names.
 * @example
 * ```ts
 * const redaction = defineRedaction([...STANDARD_REDACTIONS, { id: "salary", fields: ["salary"], visibleTo: ["hr-manager"], label: "compensation" }]);
 * ```
 */
export const STANDARD_REDACTIONS: readonly RedactionRule[] = [
  {
    id: "card_number",
    fields: ["card", "cardNumber", "pan"],
    // Not right after a "+" (an international phone number) unless it runs to 16 digits, which no
    // phone number does. Letters glued to it are a label (`CC4111…`, `4111…exp1229`, up to LABEL of
    // them) when the number does not start with 0 (no card does; a parcel's `JD01…` is no card).
    // The glued form first: both alternatives start at the same digit, and the first one that
    // matches is the one checked. Last, a card grouped by `+`s in a form-encoded body (FORM_CARD),
    // where a "+" before it is a space. Every form starts with a digit, which is checked first: the
    // lookbehinds run only there, not at every character.
    pattern: new RegExp(
      `(?=\\d)(?:(?:(?<!\\+)|(?=(?:\\d${SEP}{0,3}){15}\\d))(?:${CARD_START}[1-9]${CARD_DIGITS}${CARD_END}|${START}\\d${CARD_DIGITS}${END})|${FORM_CARD})`,
      "g",
    ),
    validate: luhnValid,
    label: "payment_data",
  },
  { id: "iban", fields: ["iban"], pattern: new RegExp(`${START}[A-Za-z]{2}\\d{2}(?:${SEP}{0,3}[A-Za-z0-9]){11,30}${END}`, "g"), validate: ibanValid, label: "payment_data" },
  {
    id: "national_id",
    fields: ["ssn", "nationalId", "nino"],
    pattern: new RegExp(
      // A US number may have a label glued to it (`SSN123-45-6789`); a UK one starts with letters
      // of its own, so only a word edge goes before it.
      `(?:${DIGITS_START}\\d{3}${SEP}{1,3}\\d{2}${SEP}{1,3}\\d{4}${DIGITS_END}|${START}[A-CEGHJ-PR-TW-Z]{2}${SEP}{0,3}\\d{2}${SEP}{0,3}\\d{2}${SEP}{0,3}\\d{2}${SEP}{0,3}[A-D]${END})`,
      "g",
    ),
    validate: nationalIdValid,
    label: "pii",
  },
];

/** Where a value was redacted, and by which rule. Never the value. */
export interface Redacted {
  path: string;
  ruleId: string;
}

/**
 * `name`, or when it is taken (two keys or ids redacted to the same mark), the first of `name#2`,
 * `name#3`… that is not. `next` remembers, per name, where to go on from, so that k names redacted
 * alike cost k tries, not k²/2.
 * @example
 * ```ts
 * distinctName("[REDACTED:card_number]", (n) => kept.has(n), next); // "[REDACTED:card_number]#2"
 * ```
 */
export function distinctName(name: string, taken: (name: string) => boolean, next: Map<string, number>): string {
  if (!taken(name)) return name;
  let n = next.get(name) ?? 2;
  let candidate = `${name}#${n}`;
  while (taken(candidate)) candidate = `${name}#${++n}`;
  next.set(name, n + 1);
  return candidate;
}

/** How many redactions, and how much of each path, an audit event keeps of what one value had redacted. */
const RECORDED_REDACTIONS = { entries: 50, pathChars: 200 } as const;

/**
 * What an audit event keeps of a value's redactions: the first 50, each path cut to 200
 * characters, and, when there were more, one entry per rule counting the rest (`path: "…<n> more"`).
 * A value built to be redacted a million times over (a key per card) records a bounded list, not a
 * list many times its own size.
 * @example
 * ```ts
 * recordedRedactions(screened.redacted); // [{ path: "cards[0]", ruleId: "card_number" }, …, { path: "…950 more", ruleId: "card_number" }]
 * ```
 */
export function recordedRedactions<R extends Redacted>(redacted: readonly R[]): (R | Redacted)[] {
  const cut = (path: string) => (path.length > RECORDED_REDACTIONS.pathChars ? `${path.slice(0, RECORDED_REDACTIONS.pathChars)}…` : path);
  const kept = redacted.slice(0, RECORDED_REDACTIONS.entries).map((r) => ({ ...r, path: cut(r.path) }));
  const more = new Map<string, number>();
  for (const r of redacted.slice(RECORDED_REDACTIONS.entries)) more.set(r.ruleId, (more.get(r.ruleId) ?? 0) + 1);
  return [...kept, ...[...more].map(([ruleId, n]) => ({ path: `…${n} more`, ruleId }))];
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
  /**
   * Redacts a value (string, number or JSON) for an identity; the input is not changed. Arrays
   * and objects nested deeper than {@link REDACTION_MAX_DEPTH} levels are replaced by
   * `[REDACTED:too_deep]`.
   * `fields: false` applies the patterns only (what an agent writes under a field name, such as a
   * salary in a draft, is its own proposal for policy to judge, not data it read).
   */
  apply<T>(value: T, identity: Pick<AgentIdentity, "onBehalfOf"> | undefined, options?: { fields?: boolean }): RedactionResult<T>;
  /**
   * A cheap over-approximation of "could `apply` find anything in this value": false means it
   * would change nothing and raise no label. Absent on hand-written redactions (assume true).
   */
  mayChange?(value: unknown): boolean;
}

/** How every redaction's mark begins: `[REDACTED:<rule>]`. */
export const REDACTION_MARK = "[REDACTED:";

const mark = (ruleId: string) => `${REDACTION_MARK}${ruleId}]`;

/**
 * How deep redaction walks arrays and objects: 256 levels (the value itself, when it is one, is
 * level 1; JSON text in a string counts from where the string is). What lies deeper is not looked
 * at, so it is not let through either: it is replaced by `[REDACTED:too_deep]` and listed in
 * `redacted` (rule `too_deep`). A mark rather than an error, because redaction runs where a
 * failure would lose more than the cut part: a tool's result after the tool ran, an audit event,
 * retrieved context. It also keeps every redacted value well within the canonical JSON limit
 * (512 levels) when an audit event or a digest wraps it.
 */
export const REDACTION_MAX_DEPTH = 256;
/** The rule id of a cut made by the depth limit. */
const TOO_DEEP = "too_deep";

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

/** The rule id of a value whose `toJSON` threw: what it serialises to cannot be read, so it is cut. */
const UNREADABLE = "unreadable";

/**
 * What an object with its own `toJSON` serialises to (a Date's text, a library object's JSON,
 * content that hands out other fields than it holds): redaction reads that, as every serialiser
 * downstream does. Undefined for an object without one, or whose `toJSON` returns itself.
 */
function toJsonView(v: object): { value: unknown } | { failed: true } | undefined {
  const toJSON = (v as { toJSON?: unknown }).toJSON;
  if (typeof toJSON !== "function") return undefined;
  try {
    const value = (toJSON as (key: string) => unknown).call(v, "");
    return value === v ? undefined : { value };
  } catch {
    return { failed: true };
  }
}

/** The rule id of JSON text re-written because its parse lost a member (a key given twice). */
const DUPLICATE_KEY = "duplicate_key";

/**
 * What `JSON.parse` loses of a JSON text (one that parses): whether a member's key comes again
 * later in the same object (only the last is kept, so a value in an earlier one is never looked
 * at), and where the numbers are that have more significant digits than a double holds (a
 * 16–19-digit card as a number is rounded, and no longer passes its checksum). One scan of the
 * text's tokens.
 */
function jsonLosses(s: string): { duplicateKey: boolean; unsafeNumbers: [number, number][] } {
  let duplicateKey = false;
  const unsafeNumbers: [number, number][] = [];
  // Per open container: the keys seen in an object, null for an array.
  const open: (Set<string> | null)[] = [];
  let expectKey = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      let escaped = false;
      while (j < s.length) {
        const d = s.charCodeAt(j);
        if (d === 0x5c) {
          escaped = true;
          j += 2;
        } else if (d === 0x22) break;
        else j++;
      }
      const keys = open.at(-1);
      if (expectKey && keys) {
        const key = escaped ? (JSON.parse(s.slice(i, j + 1)) as string) : s.slice(i + 1, j);
        if (keys.has(key)) duplicateKey = true;
        else keys.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b) {
      open.push(new Set());
      expectKey = true;
    } else if (c === 0x5b) {
      open.push(null);
    } else if (c === 0x7d || c === 0x5d) {
      open.pop();
    } else if (c === 0x2c) {
      expectKey = open.at(-1) != null;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      // Significant digits of the number's mantissa (leading zeros and the point do not count).
      let digits = 0;
      let j = i;
      for (; j < s.length; j++) {
        const d = s.charCodeAt(j);
        if (d >= 0x30 && d <= 0x39) {
          if (digits > 0 || d !== 0x30) digits++;
        } else if (d !== 0x2d && d !== 0x2e) break;
      }
      // Past the mantissa: an exponent's sign and digits.
      while (j < s.length && /[eE+\-0-9]/.test(s[j]!)) j++;
      if (digits > 15) unsafeNumbers.push([i, j]);
      i = j - 1;
    }
  }
  return { duplicateKey, unsafeNumbers };
}

/** The JSON text with each of `spans` (numbers too long for a double) written as a string of its digits. */
function quoteNumbers(s: string, spans: readonly [number, number][]): string {
  let out = "";
  let at = 0;
  for (const [a, b] of spans) {
    out += `${s.slice(at, a)}"${s.slice(a, b)}"`;
    at = b;
  }
  return out + s.slice(at);
}

/**
 * JSON inside text that is not JSON itself (`HTTP 409: {"salary": 91234}`, a log line): the span
 * from its first `{` or `[` to the last matching close, when that parses as an object or array.
 */
function embeddedJson(s: string): { start: number; end: number; value: object } | undefined {
  const start = s.search(/[{[]/);
  if (start < 0) return undefined;
  const end = s.lastIndexOf(s[start] === "{" ? "}" : "]");
  if (end <= start) return undefined;
  try {
    const value = JSON.parse(s.slice(start, end + 1)) as unknown;
    return value !== null && typeof value === "object" ? { start, end: end + 1, value } : undefined;
  } catch {
    return undefined;
  }
}

/** Combining and enclosing marks: drawn on the character before them. */
const MARK = /\p{M}/u;
const DECIMAL_DIGIT = /^\p{Nd}$/u;
/** Decimal digits of other scripts, by code point, and the ASCII digit each is. */
const digitsOf = new Map<number, string>();

/**
 * The ASCII digit a decimal digit of another script stands for (`٤` → `4`), or the text as it is.
 * Unicode writes each script's digits as a run of ten from zero: the digit is the distance from
 * the run's start, modulo 10 (runs of several sets of ten hold them one after the other).
 */
function asciiDigit(n: string): string {
  if (n.length > 2 || !DECIMAL_DIGIT.test(n)) return n;
  const cp = n.codePointAt(0)!;
  if (cp < 0x80) return n;
  let digit = digitsOf.get(cp);
  if (digit === undefined) {
    let start = cp;
    while (DECIMAL_DIGIT.test(String.fromCodePoint(start - 1))) start -= 1;
    digit = String((cp - start) % 10);
    if (digitsOf.size < 1_024) digitsOf.set(cp, digit);
  }
  return digit;
}

/** Characters that render as nothing: zero-width, bidi controls, soft hyphen, variation selectors. */
const INVISIBLE = /[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]/;
const NON_ASCII = /[^\x00-\x7f]/;

/**
 * The normalised view patterns match on, and where each of its characters came from in the
 * original (`from[i]`..`to[i]`). ASCII text is its own view.
 */
interface View {
  text: string;
  from?: number[];
  to?: number[];
}

function viewOf(s: string): View {
  if (!NON_ASCII.test(s)) return { text: s };
  let text = "";
  const from: number[] = [];
  const to: number[] = [];
  for (let i = 0; i < s.length; ) {
    const cp = s.codePointAt(i)!;
    const len = cp > 0xffff ? 2 : 1;
    const ch = len === 1 ? s[i]! : s.slice(i, i + 2);
    // Marks (an underline or a keycap on each digit, an accent written apart) are read past, as a
    // reader's eye does; digits of other scripts (Arabic-Indic, Devanagari…) read as the digits they are.
    if (!INVISIBLE.test(ch) && !MARK.test(ch)) {
      const n = cp < 0x80 ? ch : asciiDigit(ch.normalize("NFKC"));
      text += n;
      for (let k = 0; k < n.length; k++) {
        from.push(i);
        to.push(i + len);
      }
    } else if (to.length > 0) {
      // What is read past belongs to the character before it: a match that ends there takes it along.
      to[to.length - 1] = i + len;
    }
    i += len;
  }
  return { text, from, to };
}

/** Normalised text as one string, for the cheap screen of `mayChange`. */
const normalised = (s: string): string => (NON_ASCII.test(s) ? viewOf(s).text : s);

const isAlnum = (text: string, i: number): boolean => {
  const c = text.charCodeAt(i);
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
};

/** The longest object key a redaction remembers (its field rule, or that it was found clean), and how many it remembers. */
const MEMO_MAX_LENGTH = 1_024;
const MEMO_LIMIT = 8_192;

/** Remembers `value` for `key`, forgetting the oldest entry beyond {@link MEMO_LIMIT}. */
function remember<V>(memo: Map<string, V>, key: string, value: V): void {
  if (memo.size >= MEMO_LIMIT) memo.delete(memo.keys().next().value!);
  memo.set(key, value);
}

/** A field rule's key: case and everything but letters and digits ignored. */
const fieldKey = (k: string): string => normalised(k).replace(/[^0-9A-Za-z]/g, "").toLowerCase();

interface CompiledPattern {
  rule: ParsedRule;
  pattern: RegExp;
  /** The pattern, matching a whole candidate string (no `g`). */
  whole: RegExp;
}

/**
 * Spans of a pattern in (normalised) text. A match its `validate` rejects is tried on its
 * stretches from a group start to a group end (groups are runs of letters and digits), leftmost
 * first and longest first, so "ref 12 4111 1111 1111 1111 5" still yields the card.
 */
function spansOf(p: CompiledPattern, text: string): [number, number][] {
  const { pattern, rule } = p;
  const out: [number, number][] = [];
  // The stretches checked already, and what they gave: the next match (one character on) holds
  // most of the same ones ("1 1 1 …" would check each again at every digit).
  const checked = new Map<number, boolean>();
  pattern.lastIndex = 0;
  for (let m = pattern.exec(text); m !== null; m = pattern.exec(text)) {
    const s = m.index;
    const e = s + m[0].length;
    if (e === s) {
      pattern.lastIndex = s + 1;
      continue;
    }
    if (!rule.validate || rule.validate(m[0], { text, start: s, end: e })) {
      out.push([s, e]);
      continue;
    }
    const sub = validStretch(p, text, s, e, checked);
    if (sub === UNDECIDED) {
      // Too many stretches to try (a crafted near-miss, a custom rule's long match): the whole
      // match is redacted, never searched for seconds, never let through unread.
      out.push([s, e]);
      pattern.lastIndex = e;
    } else if (sub) {
      out.push(sub);
      pattern.lastIndex = sub[1];
    } else {
      pattern.lastIndex = s + 1;
    }
  }
  return out;
}

/** How many stretches of one match are tried against the rule before the match is taken whole. */
const STRETCH_TRIES = 256;
const UNDECIDED = "undecided";

function validStretch({ whole, rule }: CompiledPattern, text: string, s: number, e: number, checked: Map<number, boolean>): [number, number] | undefined | typeof UNDECIDED {
  const starts = [s];
  const ends = [e];
  for (let i = s + 1; i < e; i++) {
    const here = isAlnum(text, i);
    const before = isAlnum(text, i - 1);
    if (here && !before) starts.push(i);
    if (!here && before) ends.push(i);
  }
  ends.sort((a, b) => b - a);
  let tries = 0;
  for (const a of starts) {
    for (const b of ends) {
      if (b <= a) break;
      if (a === s && b === e) continue;
      if (++tries > STRETCH_TRIES) return UNDECIDED;
      const key = a * (text.length + 1) + b;
      let valid = checked.get(key);
      if (valid === undefined) {
        const candidate = text.slice(a, b);
        valid = whole.test(candidate) && rule.validate!(candidate, { text, start: a, end: b });
        checked.set(key, valid);
      }
      if (valid) return [a, b];
    }
  }
  return undefined;
}

/**
 * Compiles redaction rules once. Fields are matched by key at any depth, also inside strings that
 * hold JSON (a tool's result); patterns inside every string, number and object key, on the
 * normalised view. A rule's `visibleTo` roles of the human let the value through. With no
 * identity, nothing is visible.
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
  for (const r of parsed) for (const f of r.fields) if (!byField.has(fieldKey(f))) byField.set(fieldKey(f), r);
  // Object keys repeat (every audit event of a kind has the same ones): each is looked up once.
  const ruleOfKey = new Map<string, ParsedRule | null>();
  const fieldRule = (k: string): ParsedRule | undefined => {
    if (byField.size === 0) return undefined;
    const known = ruleOfKey.get(k);
    if (known !== undefined) return known ?? undefined;
    const rule = byField.get(fieldKey(k));
    if (k.length <= MEMO_MAX_LENGTH) remember(ruleOfKey, k, rule ?? null);
    return rule;
  };
  const patterns: CompiledPattern[] = parsed.flatMap((rule) =>
    rule.pattern
      ? [{ rule, pattern: new RegExp(rule.pattern.source, rule.pattern.flags), whole: new RegExp(`^(?:${rule.pattern.source})$`, rule.pattern.flags.replace(/[gy]/g, "")) }]
      : [],
  );
  // For mayChange: each pattern once, not global (no lastIndex), with `m` so that `^`/`$` hold at
  // the edges of every string when the strings are tested joined by newlines.
  const screens = patterns.map((p) => new RegExp(p.rule.pattern!.source, `${p.rule.pattern!.flags.replace(/[gym]/g, "")}m`));
  // Object keys the screens found nothing in (joined with the rest, as `mayChange` tests them):
  // the same keys recur in every event of a kind and are not tested again. Keys only: V8 keeps a
  // key's hash, while looking up any other string costs about what testing it does.
  const cleanKeys = new Map<string, true>();

  /**
   * Visits the value as `apply` does (strings holding JSON are parsed, and kept as text too;
   * numbers and keys are text too), stops at the first key a field rule names, and tests each
   * pattern once over all of it joined by newlines and normalised, ignoring `validate`.
   */
  function mayChange(value: unknown): boolean {
    const strings: string[] = [];
    const keys: string[] = [];
    let field = false;
    // `depth`: how many arrays and objects enclose `v`. A container past the limit is cut by
    // `apply`, so it "may change".
    const visit = (v: unknown, depth: number): void => {
      if (typeof v === "string") {
        strings.push(v);
        const json = parseJsonText(v);
        if (json !== undefined) {
          // A member the parse drops (its key comes again) is only in the text: rewritten by `apply`.
          if (jsonLosses(v).duplicateKey) field = true;
          else visit(json, depth);
        } else {
          // JSON inside text (an error message quoting a response body): its fields count too.
          const part = embeddedJson(v);
          if (part) {
            if (jsonLosses(v.slice(part.start, part.end)).duplicateKey) field = true;
            else visit(part.value, depth);
          }
        }
      } else if (typeof v === "number" || typeof v === "bigint") {
        strings.push(String(v));
      } else if (v !== null && typeof v === "object" && depth >= REDACTION_MAX_DEPTH) {
        field = true;
      } else if (Array.isArray(v)) {
        for (const x of v) if (!field) visit(x, depth + 1);
      } else if (v !== null && typeof v === "object") {
        // An object with its own toJSON is read as it serialises (a toJSON that throws: cut by `apply`).
        const view = toJsonView(v);
        if (view) {
          if ("failed" in view) field = true;
          else visit(view.value, depth + 1);
          return;
        }
        const o = v as Record<string, unknown>;
        for (const k in o) {
          const x = o[k];
          if (x !== null && x !== undefined && fieldRule(k)) field = true;
          if (field) return;
          if (!cleanKeys.has(k)) keys.push(k);
          visit(x, depth + 1);
        }
      }
    };
    visit(value, 0);
    if (field) return true;
    if (keys.length > 0) strings.push(...keys);
    if (strings.length === 0 || screens.length === 0) return false;
    const text = normalised(strings.length === 1 ? strings[0]! : strings.join("\n"));
    if (screens.some((p) => p.test(text))) return true;
    for (const k of keys) if (k.length <= MEMO_MAX_LENGTH) remember(cleanKeys, k, true);
    return false;
  }

  function apply<T>(value: T, identity: Pick<AgentIdentity, "onBehalfOf"> | undefined, options: { fields?: boolean } = {}): RedactionResult<T> {
    const fieldOf = options.fields === false ? () => undefined : fieldRule;
    const roles = new Set(identity?.onBehalfOf.roles ?? []);
    const hidden = new Set(parsed.filter((r) => !r.visibleTo.some((role) => roles.has(role))));
    const redacted: Redacted[] = [];
    const labels = new Set<string>();

    const text = (s: string, path: string): string => {
      if (patterns.length === 0 || s.length === 0) return s;
      const view = viewOf(s);
      // Where rules overlap (the digits inside an IBAN can pass for a card), the longest match
      // wins, then the earlier rule.
      const candidates: { a: number; b: number; rule: ParsedRule; order: number }[] = [];
      patterns.forEach((p, order) => {
        for (const [a, b] of spansOf(p, view.text)) candidates.push({ a, b, rule: p.rule, order });
      });
      if (candidates.length > 1) candidates.sort((x, y) => y.b - y.a - (x.b - x.a) || x.order - y.order || x.a - y.a);
      const found: typeof candidates = [];
      // What the matches kept so far cover: a candidate that overlaps one is dropped (linear in the
      // text, however many matches it holds).
      const covered = candidates.length > 1 ? new Uint8Array(view.text.length) : undefined;
      for (const c of candidates) {
        if (covered) {
          let overlaps = false;
          for (let i = c.a; i < c.b && !overlaps; i++) overlaps = covered[i] === 1;
          if (overlaps) continue;
          covered.fill(1, c.a, c.b);
        }
        if (c.rule.label) labels.add(c.rule.label);
        found.push(c);
      }
      const cut = found.filter((f) => hidden.has(f.rule)).sort((x, y) => x.a - y.a);
      if (cut.length === 0) return s;
      let out = "";
      let at = 0;
      for (const f of cut) {
        const start = view.from ? view.from[f.a]! : f.a;
        const end = view.to ? view.to[f.b - 1]! : f.b;
        out += s.slice(at, start) + mark(f.rule.id);
        at = end;
        redacted.push({ path, ruleId: f.rule.id });
      }
      return out + s.slice(at);
    };
    // `depth`: how many arrays and objects enclose `v`.
    const walk = (v: unknown, path: string, depth: number): unknown => {
      if (typeof v === "string") {
        // Tool results and retrieved documents are often JSON text: redact its fields too.
        const parsed = parseJsonText(v);
        if (parsed === undefined) {
          // JSON inside text: redacted as JSON text, the text around it by patterns.
          const part = embeddedJson(v);
          if (part) {
            const before = redacted.length;
            const inner = walk(v.slice(part.start, part.end), path, depth);
            if (redacted.length !== before) return text(v.slice(0, part.start), path) + String(inner) + text(v.slice(part.end), path);
          }
          return text(v, path);
        }
        // What the parse would lose is looked at too: a number too long for a double is read as
        // the string of its digits (a 19-digit card is still a card, and a rewrite never shows it
        // rounded), and a member whose key comes again is dropped by rewriting the text from what
        // was read (any JSON reader keeps the last).
        const losses = jsonLosses(v);
        const json = losses.unsafeNumbers.length > 0 ? (JSON.parse(quoteNumbers(v, losses.unsafeNumbers)) as object) : parsed;
        const before = redacted.length;
        const walked = walk(json, path, depth);
        if (losses.duplicateKey) {
          redacted.push({ path, ruleId: DUPLICATE_KEY });
          return JSON.stringify(walked);
        }
        return redacted.length === before ? v : JSON.stringify(walked); // unchanged text stays as it was
      }
      if (v !== null && typeof v === "object" && depth >= REDACTION_MAX_DEPTH) {
        redacted.push({ path, ruleId: TOO_DEEP });
        return mark(TOO_DEEP);
      }
      if (typeof v === "number" || typeof v === "bigint") {
        // A card stored as a JSON number is still a card.
        const s = String(v);
        const out = text(s, path);
        return out === s ? v : out;
      }
      if (Array.isArray(v)) return v.map((x, i) => walk(x, `${path}[${i}]`, depth + 1));
      if (v && typeof v === "object") {
        // What the object serialises to, as every serialiser downstream reads it.
        const view = toJsonView(v);
        if (view && "failed" in view) {
          redacted.push({ path, ruleId: UNREADABLE });
          return mark(UNREADABLE);
        }
        if (view) return walk(view.value, path, depth + 1);
      }
      if (v && typeof v === "object") {
        const out: Record<string, unknown> = {};
        // Defined, not assigned: an own "__proto__" member stays a member (assigned, it would set
        // the copy's prototype, and readers would see its fields as the object's own).
        const put = (key: string, item: unknown) => Object.defineProperty(out, key, { value: item, enumerable: true, writable: true, configurable: true });
        const taken = (key: string) => Object.hasOwn(out, key);
        const next = new Map<string, number>();
        for (const [k, x] of Object.entries(v)) {
          // A key can hold a value too (`{ "4111 1111 1111 1111": "visa" }`): the path names the
          // redacted key, never the value.
          let key = text(k, path ? `${path}.{key}` : "{key}");
          if (key !== k) key = distinctName(key, taken, next);
          const at = path ? `${path}.${key}` : key;
          const rule = fieldOf(k);
          if (rule && x !== null && x !== undefined) {
            if (rule.label) labels.add(rule.label);
            if (hidden.has(rule)) {
              redacted.push({ path: at, ruleId: rule.id });
              put(key, mark(rule.id));
              continue;
            }
          }
          put(key, walk(x, at, depth + 1));
        }
        return out;
      }
      return v;
    };
    return { value: walk(value, "", 0) as T, redacted, labels: [...labels].sort() };
  }

  const redaction: Redaction = { rules: parsed, apply, mayChange };
  compiled.add(redaction);
  return redaction;
}

/** Redactions made by {@link defineRedaction}: their rules say all they do. */
const compiled = new WeakSet<Redaction>();
/** `validate` functions a rule can name when it crosses to another thread. */
const PORTABLE_VALIDATORS: Record<string, (match: string, around?: MatchPlace) => boolean> = { luhn: luhnValid, iban: ibanValid, national_id: nationalIdValid };

/** A redaction rule as data: what crosses to a worker thread (a `validate` by name). */
export type PortableRedactionRule = Omit<ParsedRule, "validate"> & { validate?: string };

/**
 * A redaction's rules as structured-cloneable data, for building the same redaction on another
 * thread with {@link redactionFromPortable}; undefined when that cannot be done: a hand-written
 * redaction, or a rule whose `validate` is a function of its own (only eart's checksums travel).
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
