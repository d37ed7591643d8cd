/**
 * Redaction, attacked with generated secrets: valid card numbers (Luhn, 13–19 digits), IBANs
 * (mod-97, several countries) and US social security numbers, written the ways people and systems
 * write them (grouped with every kind of space, dash, dot or slash, full-width digits, invisible
 * characters between the digits, lowercase IBANs, glued to a word with `_` or to a label of
 * letters (`CC…`, `…exp`, `SSN…`), as a JSON number, as a JSON object key) and put in every
 * container a secret reaches the agent through (the message forms LangChain accepts, tool results,
 * artifacts and error messages, the model's answer).
 *
 * Two levels: `defineRedaction(STANDARD_REDACTIONS).apply` on every generated value (2,100), and
 * 120 cases (360 secrets) driven end to end through the governed refund agent, where no secret may
 * reach the checkpoint (state and raw storage), the audit log, the model, or the JSONL, LangSmith
 * and OpenTelemetry exports; then the same cases with the agent's redaction off, where the
 * exporters' own redaction must still hold. Everything is generated from fixed seeds: a failure
 * names its case or seed index, so it can be replayed.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { MemorySaver } from "@langchain/langgraph";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { createJsonlExporter, createTraceExport, defineRedaction, MemoryAuditLog, STANDARD_REDACTIONS, ToolArgumentError } from "eart";
import { luhnValid } from "../../src/context/redaction.js";
import { createLangSmithExporter } from "eart/langsmith";
import { createOtelExporter } from "eart/otel";
import { scriptedModel } from "eart/testing";
import { startCaptureServer } from "../support/capture-server.js";
import { config, refundSetup } from "../support/refund.js";
import { luhnCheckDigit } from "../support/cards.js";
import { rng } from "../support/rng.js";

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

type Kind = "card" | "iban" | "ssn";
const RULE_OF: Record<Kind, string> = { card: "card_number", iban: "iban", ssn: "national_id" };

type Rand = () => number;
const int = (r: Rand, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const digits = (r: Rand, n: number) => Array.from({ length: n }, () => String(int(r, 0, 9))).join("");
const letters = (r: Rand, n: number) => Array.from({ length: n }, () => String.fromCharCode(65 + int(r, 0, 25))).join("");
const alnum = (r: Rand, n: number) => Array.from({ length: n }, () => (r() < 0.3 ? String.fromCharCode(65 + int(r, 0, 25)) : String(int(r, 0, 9)))).join("");

function luhnOk(number: string): boolean {
  return luhnCheckDigit(number.slice(0, -1)) === number.slice(-1);
}

/** Issuer prefixes by length (Visa, Mastercard, Amex, Diners, Discover, JCB, UnionPay). */
const CARD_PREFIXES: Record<number, string[]> = {
  13: ["4"],
  14: ["36", "38", "300"],
  15: ["34", "37", "2131"],
  16: ["4", "51", "52", "53", "54", "55", "2221", "2720", "6011", "65", "3528", "62"],
  17: ["62", "6011"],
  18: ["62", "65", "3589"],
  19: ["4", "62", "6011", "3530"],
};
function card(r: Rand): string {
  const length = int(r, 13, 19);
  const prefix = pick(r, CARD_PREFIXES[length]!);
  const body = prefix + digits(r, length - prefix.length - 1);
  return body + luhnCheckDigit(body);
}

/** mod 97 of an IBAN rearranged (country and check digits last, letters as 10..35). */
function ibanMod97(iban: string): number {
  const moved = iban.slice(4) + iban.slice(0, 4);
  let rest = 0;
  for (const ch of moved) {
    const v = /[A-Z]/.test(ch) ? String(ch.charCodeAt(0) - 55) : ch;
    for (const d of v) rest = (rest * 10 + Number(d)) % 97;
  }
  return rest;
}
/** BBAN shapes of a few countries (lengths as registered). */
const IBAN_COUNTRIES: Record<string, (r: Rand) => string> = {
  DE: (r) => digits(r, 18),
  GB: (r) => letters(r, 4) + digits(r, 14),
  FR: (r) => digits(r, 10) + alnum(r, 11) + digits(r, 2),
  NL: (r) => letters(r, 4) + digits(r, 10),
  ES: (r) => digits(r, 20),
  IT: (r) => letters(r, 1) + digits(r, 10) + alnum(r, 12),
  BE: (r) => digits(r, 12),
  CH: (r) => digits(r, 5) + alnum(r, 12),
  PL: (r) => digits(r, 24),
};
function iban(r: Rand): string {
  const country = pick(r, Object.keys(IBAN_COUNTRIES));
  const bban = IBAN_COUNTRIES[country]!(r);
  const check = 98 - ibanMod97(`${country}00${bban}`);
  return `${country}${String(check).padStart(2, "0")}${bban}`;
}

/** A valid SSN: area 001–899 but not 666, group 01–99, serial 0001–9999. */
function ssn(r: Rand): string {
  let area = int(r, 1, 899);
  if (area === 666) area = 665;
  return `${String(area).padStart(3, "0")}${String(int(r, 1, 99)).padStart(2, "0")}${String(int(r, 1, 9999)).padStart(4, "0")}`;
}
const ssnOk = (s: string) => /^\d{9}$/.test(s) && !["000", "666"].includes(s.slice(0, 3)) && s[0] !== "9" && s.slice(3, 5) !== "00" && s.slice(5) !== "0000";

// ---------------------------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------------------------

const SPACES = [" ", "\u00A0", "\u2007", "\u202F", "\u3000", "\u2002", "\u2003", "\u2009", "\u205F"];
const DASHES = ["-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212"];
const INVISIBLE = ["\u200B", "\u200C", "\u200D", "\u200E", "\u200F", "\u202A", "\u202B", "\u202C", "\u202D", "\u202E", "\u2060", "\u2061", "\u2062", "\u2063", "\u2064", "\uFEFF", "\u00AD"];
const ALL_SEPARATORS = [...SPACES, ...DASHES, ".", "/"];

const fullWidth = (s: string, share = 1, r?: Rand) => s.replace(/[0-9]/g, (d) => (share >= 1 || r!() < share ? String.fromCharCode(0xff10 + Number(d)) : d));
/** Splits into groups of the given sizes (the last group takes the rest). */
function groups(s: string, sizes: number[]): string[] {
  const out: string[] = [];
  let at = 0;
  for (const size of sizes) {
    if (at >= s.length) break;
    out.push(s.slice(at, at + size));
    at += size;
  }
  if (at < s.length) out.push(s.slice(at));
  return out;
}
const fours = (s: string) => groups(s, Array(8).fill(4));
function randomGroups(r: Rand, s: string, min = 2, max = 6): string[] {
  const sizes: number[] = [];
  let total = 0;
  while (total < s.length) {
    const n = int(r, min, max);
    sizes.push(n);
    total += n;
  }
  return groups(s, sizes);
}
/** A run of 1–3 separators drawn from `pool`. */
const run = (r: Rand, pool: readonly string[]) => Array.from({ length: int(r, 1, 3) }, () => pick(r, pool)).join("");
/** Puts invisible characters between some of the characters. */
function sprinkle(r: Rand, s: string, share = 0.5): string {
  return [...s].map((c, i) => (i > 0 && r() < share ? pick(r, INVISIBLE) + c : c)).join("");
}
function mixedCase(r: Rand, s: string) {
  return [...s].map((c) => (r() < 0.5 ? c.toLowerCase() : c)).join("");
}

type Format = { name: string; render: (secret: string, r: Rand) => string };

const CARD_FORMATS: Format[] = [
  { name: "digits only", render: (s) => s },
  { name: "groups of 4, spaces", render: (s) => fours(s).join(" ") },
  { name: "groups of 4, dashes", render: (s) => fours(s).join("-") },
  { name: "4-6-5 (Amex style), spaces", render: (s) => groups(s, [4, 6, 5]).join(" ") },
  { name: "random groups, one separator", render: (s, r) => { const sep = pick(r, ALL_SEPARATORS); return randomGroups(r, s).join(sep); } },
  { name: "groups of 4, no-break spaces", render: (s) => fours(s).join("\u00A0") },
  { name: "groups of 4, double spaces", render: (s) => fours(s).join("  ") },
  { name: "groups of 4, dots", render: (s) => fours(s).join(".") },
  { name: "groups of 4, slashes", render: (s) => fours(s).join("/") },
  { name: "groups of 4, Unicode dashes", render: (s, r) => fours(s).map((g, i) => (i === 0 ? g : pick(r, DASHES.slice(1)) + g)).join("") },
  { name: "groups of 4, Unicode spaces", render: (s, r) => fours(s).map((g, i) => (i === 0 ? g : pick(r, SPACES.slice(1)) + g)).join("") },
  { name: "random groups, runs of up to 3 mixed separators", render: (s, r) => randomGroups(r, s).map((g, i) => (i === 0 ? g : run(r, ALL_SEPARATORS) + g)).join("") },
  { name: "full-width digits", render: (s) => fullWidth(s) },
  { name: "full-width digits, groups of 4, ideographic spaces", render: (s) => fullWidth(fours(s).join("\u3000")) },
  { name: "some full-width digits, dashes", render: (s, r) => fullWidth(fours(s).join("-"), 0.5, r) },
  { name: "invisible characters between digits", render: (s, r) => sprinkle(r, s) },
  { name: "invisible characters, groups of 4, spaces", render: (s, r) => sprinkle(r, fours(s).join(" ")) },
  { name: "full-width, invisible characters and mixed separators", render: (s, r) => sprinkle(r, fullWidth(randomGroups(r, s, 3, 5).map((g, i) => (i === 0 ? g : run(r, ALL_SEPARATORS) + g)).join(""), 0.6, r), 0.3) },
  { name: "glued to a word: card_<digits>", render: (s) => `card_${s}` },
  { name: "glued to a word: <digits>_exp", render: (s) => `${s}_exp` },
  { name: "glued to a word, grouped: pan_<4 4 4 4>", render: (s) => `pan_${fours(s).join(" ")}` },
  { name: "glued to letters: CC<digits>", render: (s) => `CC${s}` },
  { name: "glued to letters, grouped: visa<4 4 4 4>exp", render: (s) => `visa${fours(s).join(" ")}exp` },
  { name: "between other digit groups: 12 <4 4 4 4> 5", render: (s, r) => `${digits(r, int(r, 1, 4))} ${fours(s).join(" ")} ${digits(r, int(r, 1, 3))}` },
  { name: "after another digit group, dashes: 77-<4-4-4-4>", render: (s, r) => `${digits(r, 2)}-${fours(s).join("-")}` },
];
/** A card as a JSON number: only where the number is exact (13–16 digits). */
const NUMBER_FORMAT = "JSON number";

const IBAN_FORMATS: Format[] = [
  { name: "compact", render: (s) => s },
  { name: "groups of 4, spaces", render: (s) => fours(s).join(" ") },
  { name: "lowercase, compact", render: (s) => s.toLowerCase() },
  { name: "lowercase, groups of 4", render: (s) => fours(s).join(" ").toLowerCase() },
  { name: "mixed case, groups of 4", render: (s, r) => mixedCase(r, fours(s).join(" ")) },
  { name: "groups of 4, dashes", render: (s) => fours(s).join("-") },
  { name: "groups of 4, no-break spaces", render: (s) => fours(s).join("\u00A0") },
  { name: "groups of 4, double spaces", render: (s) => fours(s).join("  ") },
  { name: "groups of 4, Unicode spaces", render: (s, r) => fours(s).map((g, i) => (i === 0 ? g : pick(r, SPACES.slice(1)) + g)).join("") },
  { name: "groups of 4, Unicode dashes", render: (s, r) => fours(s).map((g, i) => (i === 0 ? g : pick(r, DASHES.slice(1)) + g)).join("") },
  { name: "groups of 4, runs of up to 3 spaces and dashes", render: (s, r) => fours(s).map((g, i) => (i === 0 ? g : run(r, [" ", "-", "\u00A0"]) + g)).join("") },
  { name: "invisible characters", render: (s, r) => sprinkle(r, s, 0.3) },
  { name: "full-width digits, groups of 4", render: (s) => fullWidth(fours(s).join(" ")) },
  { name: "lowercase, full-width digits, invisible characters", render: (s, r) => sprinkle(r, fullWidth(s.toLowerCase(), 0.5, r), 0.2) },
  { name: "glued to a word: iban_<compact>", render: (s) => `iban_${s}` },
  { name: "glued to a word: <compact>_eur", render: (s) => `${s}_eur` },
];

const SSN_FORMATS: Format[] = [
  { name: "ddd-dd-dddd", render: (s) => groups(s, [3, 2, 4]).join("-") },
  { name: "ddd dd dddd", render: (s) => groups(s, [3, 2, 4]).join(" ") },
  { name: "ddd.dd.dddd", render: (s) => groups(s, [3, 2, 4]).join(".") },
  { name: "no-break spaces", render: (s) => groups(s, [3, 2, 4]).join("\u00A0") },
  { name: "Unicode dashes", render: (s, r) => groups(s, [3, 2, 4]).join(pick(r, DASHES.slice(1))) },
  { name: "Unicode spaces", render: (s, r) => groups(s, [3, 2, 4]).join(pick(r, SPACES.slice(1))) },
  { name: "runs of up to 3 separators", render: (s, r) => groups(s, [3, 2, 4]).map((g, i) => (i === 0 ? g : run(r, [" ", "-", ".", "\u00A0"]) + g)).join("") },
  { name: "double spaces", render: (s) => groups(s, [3, 2, 4]).join("  ") },
  { name: "full-width digits", render: (s) => fullWidth(groups(s, [3, 2, 4]).join("-")) },
  { name: "invisible characters", render: (s, r) => sprinkle(r, groups(s, [3, 2, 4]).join("-")) },
  { name: "full-width, invisible characters, dots", render: (s, r) => sprinkle(r, fullWidth(groups(s, [3, 2, 4]).join("."), 0.5, r), 0.3) },
  { name: "glued to a word: ssn_ddd-dd-dddd", render: (s) => `ssn_${groups(s, [3, 2, 4]).join("-")}` },
  { name: "glued to a word: ddd-dd-dddd_us", render: (s) => `${groups(s, [3, 2, 4]).join("-")}_us` },
  { name: "glued to letters: SSN<ddd-dd-dddd>", render: (s) => `SSN${groups(s, [3, 2, 4]).join("-")}` },
];

const FORMATS: Record<Kind, Format[]> = { card: CARD_FORMATS, iban: IBAN_FORMATS, ssn: SSN_FORMATS };
const GENERATE: Record<Kind, (r: Rand) => string> = { card, iban, ssn };

/** One generated secret: its canonical form, how it is written, and where it is put. */
interface Secret {
  seedIndex: number;
  kind: Kind;
  /** Canonical: digits (and uppercase letters for IBANs). */
  value: string;
  format: string;
  /** As written. */
  text: string;
}

/** A card whose digits are an exact JSON number. */
const numberable = (s: Secret) => s.kind === "card" && s.format !== NUMBER_FORMAT && Number.isSafeInteger(Number(s.value));

/**
 * `count` secrets of a kind; formats taken in turn (so each appears), the values and the
 * format's random choices from the seed. Every sixth card that fits is written as a JSON number.
 */
function generate(kind: Kind, count: number, seed: number): Secret[] {
  const r = rng(seed);
  const formats = FORMATS[kind];
  const out: Secret[] = [];
  for (let i = 0; i < count; i++) {
    const value = GENERATE[kind](r);
    if (kind === "card" && i % 6 === 5 && Number.isSafeInteger(Number(value))) {
      out.push({ seedIndex: i, kind, value, format: NUMBER_FORMAT, text: value });
      continue;
    }
    const format = formats[i % formats.length]!;
    out.push({ seedIndex: i, kind, value, format: format.name, text: format.render(value, r) });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Leak detection
// ---------------------------------------------------------------------------------------------

const INVISIBLE_RE = /[\u200B-\u200F\u202A-\u202E\u2060-\u2064\uFEFF\u00AD]/g;

/** A text as the secret check sees it: JSON escapes decoded, NFKC, invisible characters and everything but letters and digits removed, uppercase. */
function alnumView(output: string): string {
  return output
    .replace(/\\u([0-9a-fA-F]{4})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)))
    .normalize("NFKC")
    .replace(INVISIBLE_RE, "")
    .replace(/[^0-9A-Za-z]/g, "")
    .toUpperCase();
}
const secretView = (secret: string) => secret.replace(/[^0-9A-Za-z]/g, "").toUpperCase();

/** Whether the secret's letters and digits occur in the output, however it is written there. */
function leaks(secret: string, output: string): boolean {
  return alnumView(output).includes(secretView(secret));
}

/** A normalised output checked against many secrets (normalised once). */
function viewOf(output: string) {
  const view = alnumView(output);
  return (secret: string) => view.includes(secretView(secret));
}

/** The first 8-character piece of the secret still in the output: a partial redaction. */
function remnant(secret: string, view: string, size = 8): string | undefined {
  const s = secretView(secret);
  for (let i = 0; i + size <= s.length; i++) if (view.includes(s.slice(i, i + size))) return s.slice(i, i + size);
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Containers (unit level): ordinary text and JSON around the secret. No field names the standard
// rules know (card, pan, iban, ssn…), and no digits next to the secret except where a format puts
// them there, so that a leak can only be the secret's own digits.
// ---------------------------------------------------------------------------------------------

const SENTENCES = [
  "Please refund order 1042, I paid with {S} last week.",
  "card on file: {S}",
  "{S}",
  "My details ({S}) are attached.",
  "Use {S}. Thanks!",
  "Hi team,\nthe customer's number is {S}\nregards, Cara",
  '"{S}"',
  "number={S}&amount=740",
  "Kontonummer: {S}; Betrag 1.234,56 EUR",
  "<b>{S}</b>",
  "Charged twice to {S}, see ticket T-88.",
  "Refund to {S}, not to the other one.",
];
const sentence = (r: Rand, s: string) => pick(r, SENTENCES).replace("{S}", s);

type Container = { name: string; wrap: (text: string, r: Rand, secret: Secret) => unknown };

const TEXT_CONTAINERS: Container[] = [
  { name: "plain string", wrap: (s, r) => sentence(r, s) },
  { name: "content blocks", wrap: (s, r) => [{ type: "text", text: sentence(r, s) }] },
  { name: "{ role: user, content }", wrap: (s, r) => ({ role: "user", content: sentence(r, s) }) },
  { name: "{ role: user, content: blocks }", wrap: (s, r) => ({ role: "user", content: [{ type: "text", text: "Hello." }, { type: "text", text: sentence(r, s) }] }) },
  { name: "[user, text] tuple", wrap: (s, r) => ["user", sentence(r, s)] },
  { name: "tool result: JSON text", wrap: (s, r) => JSON.stringify({ orderId: "1042", status: "delivered", note: sentence(r, s) }) },
  { name: "tool result: nested JSON text", wrap: (s, r) => JSON.stringify({ result: JSON.stringify({ history: [{ note: sentence(r, s) }] }) }) },
  { name: "tool artifact object", wrap: (s, r) => ({ orderId: "1042", payment: { method: "card", note: sentence(r, s) } }) },
  { name: "tool error message", wrap: (s) => `Error: the gateway declined the charge on ${s} (reason: do not honour)` },
  { name: "JSON object key", wrap: (s) => ({ payments: { [s]: "on file" } }) },
  { name: "JSON object key, in JSON text", wrap: (s) => JSON.stringify({ payments: { [s]: "on file" } }) },
];
const NUMBER_CONTAINERS: Container[] = [
  { name: "JSON number value", wrap: (_s, _r, x) => ({ orderId: "1042", ref: Number(x.value) }) },
  { name: "JSON number in an array", wrap: (_s, _r, x) => ({ refs: [Number(x.value), "n/a"] }) },
  { name: "JSON number in JSON text", wrap: (_s, _r, x) => `{"orderId":"1042","ref":${x.value}}` },
  { name: "JSON number in nested JSON text", wrap: (_s, _r, x) => JSON.stringify({ result: `{"lines":[{"ref":${x.value},"qty":2}]}` }) },
  { name: "bare JSON number", wrap: (_s, _r, x) => Number(x.value) },
];

interface UnitCase extends Secret {
  container: string;
  input: unknown;
}

function unitCases(): UnitCase[] {
  const r = rng(7_001);
  const secrets = [...generate("card", 900, 1_001), ...generate("iban", 600, 2_001), ...generate("ssn", 600, 3_001)];
  return secrets.map((secret, i) => {
    const pool = secret.format === NUMBER_FORMAT ? NUMBER_CONTAINERS : TEXT_CONTAINERS;
    // In turn for the first rounds (each container meets many formats), then at random.
    const container = i < pool.length * 40 ? pool[i % pool.length]! : pick(r, pool);
    return { ...secret, container: container.name, input: container.wrap(secret.text, r, secret) };
  });
}

const show = (s: string) => JSON.stringify(s).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

// ---------------------------------------------------------------------------------------------
// Unit level
// ---------------------------------------------------------------------------------------------

describe("the generator makes real secrets", () => {
  it("cards pass Luhn (ours and eart's), IBANs pass mod-97, SSNs are valid; formats all appear", () => {
    const cases = unitCases();
    expect(cases.length).toBeGreaterThanOrEqual(2_000);
    for (const c of cases) {
      if (c.kind === "card") {
        expect(c.value.length, c.value).toBeGreaterThanOrEqual(13);
        expect(c.value.length, c.value).toBeLessThanOrEqual(19);
        expect(luhnOk(c.value), c.value).toBe(true);
        expect(luhnValid(c.value), c.value).toBe(true);
      }
      if (c.kind === "iban") expect(ibanMod97(c.value), c.value).toBe(1);
      if (c.kind === "ssn") expect(ssnOk(c.value), c.value).toBe(true);
      // Every format keeps the secret: the leak check finds it in the raw input.
      expect(leaks(c.value, JSON.stringify(c.input)), `${c.format} in ${c.container}: ${show(JSON.stringify(c.input))}`).toBe(true);
    }
    // A checksum that is off by one is not valid: the generator's checks can fail.
    expect(luhnOk("4111111111111112")).toBe(false);
    expect(ibanMod97("GB82WEST12345698765433")).not.toBe(1);
    const formats = new Set(cases.map((c) => `${c.kind}:${c.format}`));
    for (const kind of ["card", "iban", "ssn"] as const) for (const f of FORMATS[kind]) expect(formats, `${kind}: ${f.name}`).toContain(`${kind}:${f.name}`);
    expect(formats).toContain(`card:${NUMBER_FORMAT}`);
    const containers = new Set(cases.map((c) => c.container));
    for (const c of [...TEXT_CONTAINERS, ...NUMBER_CONTAINERS]) expect(containers, c.name).toContain(c.name);
  });
});

describe("defineRedaction(STANDARD_REDACTIONS).apply on every generated secret", () => {
  const redaction = defineRedaction(STANDARD_REDACTIONS);
  const cases = unitCases();

  for (const kind of ["card", "iban", "ssn"] as const) {
    const mine = cases.filter((c) => c.kind === kind);
    it(`${kind}s: ${mine.length} values; neither the secret nor 8 of its characters in a row survive, and each is reported`, () => {
      const failures: string[] = [];
      const byFormat = new Map<string, number>();
      for (const c of mine) {
        let problem: string | undefined;
        let output = "";
        try {
          const result = redaction.apply(c.input, undefined);
          output = JSON.stringify(result.value);
          const view = alnumView(output);
          if (leaks(c.value, output)) problem = "the secret is in the output";
          else if (remnant(c.value, view)) problem = `a piece of it is in the output (${remnant(c.value, view)})`;
          else if (result.redacted.length === 0) problem = "nothing reported as redacted";
          else if (!output.includes("[REDACTED:")) problem = "no redaction mark in the output";
        } catch (error) {
          problem = `apply threw ${String(error)}`;
        }
        if (problem) {
          byFormat.set(c.format, (byFormat.get(c.format) ?? 0) + 1);
          failures.push(`#${c.seedIndex} ${c.value} as "${c.format}" in ${c.container}: ${problem}\n    input  ${show(JSON.stringify(c.input))}\n    output ${show(output)}`);
        }
      }
      if (failures.length > 0) console.log(`${kind}: ${failures.length}/${mine.length} leaked; by format:`, Object.fromEntries(byFormat));
      expect(failures.slice(0, 40), `${failures.length} of ${mine.length} ${kind}s leaked`).toEqual([]);
    });
  }

  it("the rule that found a secret is the one for its kind (cards as card_number, IBANs as iban, SSNs as national_id)", () => {
    const wrong: string[] = [];
    for (const c of cases) {
      const result = redaction.apply(c.input, undefined);
      const rules = new Set(result.redacted.map((x) => x.ruleId));
      // An IBAN whose account digits also make a valid card must still be redacted whole, as an IBAN.
      const ok = rules.has(RULE_OF[c.kind]);
      if (!ok) wrong.push(`#${c.seedIndex} ${c.kind} "${c.format}" in ${c.container}: ${[...rules].join(",") || "none"}`);
    }
    expect(wrong.slice(0, 60), `${wrong.length} found by another rule or none`).toEqual([]);
  });

  it("what apply reports as redacted (paths, rule ids, labels) never holds a secret: not even one that was an object key", () => {
    const found: string[] = [];
    for (const c of cases) {
      const { redacted, labels } = redaction.apply(c.input, undefined);
      const report = JSON.stringify({ redacted, labels });
      if (leaks(c.value, report)) found.push(`#${c.seedIndex} ${c.kind} "${c.format}" in ${c.container}: ${show(report).slice(0, 300)}`);
    }
    expect(found.slice(0, 10), `${found.length} reports hold their secret`).toEqual([]);
  });

  it("the input is not changed, and the redacted text reads as the text around a mark", () => {
    const c = { text: "card on file: 4111 1111 1111 1111, thanks", nested: { list: ["GB82 WEST 1234 5698 7654 32"] } };
    const before = JSON.stringify(c);
    const result = redaction.apply(c, undefined);
    expect(JSON.stringify(c)).toBe(before);
    expect(result.value).toEqual({ text: "card on file: [REDACTED:card_number], thanks", nested: { list: ["[REDACTED:iban]"] } });
  });
});

// ---------------------------------------------------------------------------------------------
// End to end: the governed refund agent
// ---------------------------------------------------------------------------------------------

/** How a user's text enters the agent: every message form LangChain accepts. */
const INPUT_FORMS: { name: string; second?: true; input: (text: string) => { messages: unknown } }[] = [
  { name: "HumanMessage, string content", input: (t) => ({ messages: [new HumanMessage(t)] }) },
  { name: "HumanMessage, content blocks", input: (t) => ({ messages: [new HumanMessage({ content: [{ type: "text", text: t }] })] }) },
  { name: "{ role: user, content }", input: (t) => ({ messages: [{ role: "user", content: t }] }) },
  { name: "{ role: user, content: blocks }", input: (t) => ({ messages: [{ role: "user", content: [{ type: "text", text: t }] }] }) },
  { name: "{ type: human, content }", input: (t) => ({ messages: [{ type: "human", content: t }] }) },
  { name: "[user, text] tuple", input: (t) => ({ messages: [["user", t]] }) },
  { name: "[human, text] tuple", input: (t) => ({ messages: [["human", t]] }) },
  { name: "plain string in the list", input: (t) => ({ messages: [t] }) },
  { name: "a single string, not in a list", input: (t) => ({ messages: t }) },
  { name: "a single { role: user, content }, not in a list", input: (t) => ({ messages: { role: "user", content: t } }) },
  // After a first run on the thread (which called the tool): a later message is redacted too.
  { name: "HumanMessage, on the thread's second run", second: true, input: (t) => ({ messages: [new HumanMessage(t)] }) },
  { name: "[user, text] tuple, on the thread's second run", second: true, input: (t) => ({ messages: [["user", t]] }) },
];

type ToolReply = [unknown, unknown];
/** How a tool hands a secret back: content, artifact, error, JSON number, object key. */
const TOOL_FORMS: { name: string; needsNumber?: boolean; reply: (s: Secret, callId: string) => ToolReply }[] = [
  { name: "result text", reply: (s) => [`Order found; it was paid with ${s.text}.`, undefined] },
  { name: "result JSON text", reply: (s) => [JSON.stringify({ orderId: "1042", status: "delivered", note: `paid with ${s.text}` }), undefined] },
  { name: "result content blocks", reply: (s) => [[{ type: "text", text: `paid with ${s.text}` }], undefined] },
  { name: "artifact", reply: (s) => ["Payment details are attached.", { orderId: "1042", payment: { note: `paid with ${s.text}` } }] },
  { name: "ToolMessage returned by the tool, with an artifact", reply: (s, id) => [new ToolMessage({ tool_call_id: id, name: "lookup_order", content: `paid with ${s.text}`, artifact: { raw: s.text } }), undefined] },
  { name: "ToolArgumentError message", reply: (s) => { throw new ToolArgumentError(`no order paid with ${s.text}`); } },
  { name: "Error message", reply: (s) => { throw new Error(`payment gateway declined ${s.text}`); } },
  { name: "JSON number in the result", needsNumber: true, reply: (s) => [{ orderId: "1042", ref: Number(s.value) }, undefined] },
  { name: "JSON number in the artifact", needsNumber: true, reply: (s) => ["See the artifact.", { orderId: "1042", ref: Number(s.value) }] },
  { name: "object key in the result", reply: (s) => [JSON.stringify({ payments: { [s.text]: "on file" } }), undefined] },
];

interface E2ECase {
  key: string;
  threadId: string;
  inputForm: string;
  toolForm: string;
  /** Typed by the user. */
  typed: Secret;
  /** Handed back by the tool. */
  returned: Secret;
  /** Written by the model in its answer. */
  answered: Secret;
}

/** 120 cases: each input form and each tool form in turn, secrets of every kind and format, no secret used twice. */
function e2eCases(count = 120): E2ECase[] {
  const r = rng(14);
  const shuffled = <T>(xs: T[]) => xs.map((x) => [r(), x] as const).sort((a, b) => a[0] - b[0]).map(([, x]) => x);
  const pool = [...generate("card", 400, 11), ...generate("iban", 200, 12), ...generate("ssn", 200, 13)].filter((s) => s.format !== NUMBER_FORMAT);
  const unused = new Map<string, Secret[]>([
    ["card", shuffled(pool.filter((s) => s.kind === "card"))],
    ["number", shuffled(pool.filter(numberable))],
    ["iban", shuffled(pool.filter((s) => s.kind === "iban"))],
    ["ssn", shuffled(pool.filter((s) => s.kind === "ssn"))],
  ]);
  const used = new Set<string>();
  const take = (k: string): Secret => {
    const list = unused.get(k)!;
    let s = list.pop()!;
    while (used.has(s.value)) s = list.pop()!;
    used.add(s.value);
    return s;
  };
  const kinds = ["card", "iban", "ssn"];
  return Array.from({ length: count }, (_, i) => {
    const inputForm = INPUT_FORMS[i % INPUT_FORMS.length]!;
    // A second run cannot follow a run paused for recovery (a failed tool): that case gets the plain result instead.
    const planned = TOOL_FORMS[i % TOOL_FORMS.length]!;
    const toolForm = inputForm.second && planned.name === "Error message" ? TOOL_FORMS[0]! : planned;
    const typed = take(kinds[i % 3]!);
    const returned = toolForm.needsNumber ? take("number") : take(kinds[(i + 1) % 3]!);
    const answered = take(kinds[(i + 2) % 3]!);
    const key = `k${i}`;
    return { key, threadId: `redact-${key}`, inputForm: inputForm.name, toolForm: toolForm.name, typed, returned, answered };
  });
}

/** Every value of every table of a SQLite database (blobs read as UTF-8), and each table's row count. */
function dumpSqlite(db: { prepare(sql: string): { all(): unknown[] } }): { text: string; rows: Record<string, number> } {
  const tables = (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all() as { name: string }[]).map((t) => t.name);
  const out: string[] = [];
  const rows: Record<string, number> = {};
  for (const t of tables) {
    const all = db.prepare(`SELECT * FROM "${t}"`).all() as Record<string, unknown>[];
    rows[t] = all.length;
    for (const row of all) {
      for (const v of Object.values(row)) out.push(Buffer.isBuffer(v) || v instanceof Uint8Array ? Buffer.from(v).toString("utf8") : String(v));
    }
  }
  return { text: out.join("\n"), rows };
}

/** Every byte array of a MemorySaver's storage and writes, read as UTF-8. */
function dumpMemorySaver(saver: MemorySaver): string {
  const out: string[] = [];
  const visit = (v: unknown): void => {
    if (v instanceof Uint8Array) out.push(Buffer.from(v).toString("utf8"));
    else if (typeof v === "string") out.push(v);
    else if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === "object") Object.values(v).forEach(visit);
  };
  visit(saver.storage);
  visit(saver.writes);
  return out.join("\n");
}

/** A thread's state as a caller of the graph reads it: values (messages by their fields too) and pending interrupts. */
async function stateText(agent: { getState(c: unknown): Promise<{ values: Record<string, unknown>; tasks: readonly { interrupts?: readonly unknown[]; error?: unknown }[] }> }, threadId: string) {
  const s = await agent.getState({ configurable: { thread_id: threadId } });
  const messages = ((s.values.messages as BaseMessage[] | undefined) ?? []).map((m) => ({ ...m }));
  return JSON.stringify({ values: s.values, messages, tasks: s.tasks.map((t) => ({ interrupts: t.interrupts, error: String(t.error ?? "") })) });
}

/** The first line that holds the secret, shortened around the thread's events: to say where a leak is. */
function excerpt(lines: readonly string[], secret: string): string {
  const line = lines.find((l) => leaks(secret, l));
  if (line === undefined) return "(spread over lines)";
  try {
    const event = JSON.parse(line) as Record<string, unknown>;
    if (typeof event.type === "string") {
      // The event's field that holds it (its data, or the list of what was redacted).
      const field = Object.keys(event).find((k) => leaks(secret, JSON.stringify(event[k]))) ?? "?";
      return `event ${event.type}, field ${field}: ${show(JSON.stringify(event[field])).slice(0, 400)}`;
    }
  } catch {
    // not a JSON line
  }
  return show(line.length > 400 ? `${line.slice(0, 400)}…` : line);
}

const textOf = (content: unknown): string =>
  typeof content === "string" ? content : Array.isArray(content) ? content.map((b) => (typeof b === "string" ? b : String((b as { text?: unknown }).text ?? ""))).join(" ") : "";

/** What one pass of the cases through the agent left behind, everywhere a secret could go. */
interface Traces {
  cases: E2ECase[];
  modelInputs: string[];
  toolCalls: string[];
  runErrors: string[];
  threads: Map<string, { state: string; audit: string }>;
  raw: string;
  rawRows: Record<string, number>;
  jsonl: string;
  langsmith: string;
  otlp: string;
  exported: Record<string, { exported: number; dropped: number; failed: number }>;
  storedEvents: number;
}

/**
 * Runs every case through the refund agent (SQLite checkpointer, an audit log exported to
 * LangSmith and OTLP capture servers and a JSONL file), one thread per case, and collects what each
 * place holds. `agentRedaction: false` turns the agent's redaction off (the exporters keep theirs).
 */
async function driveCases(cases: E2ECase[], dir: string, agentRedaction?: false): Promise<Traces> {
  const byKey = new Map(cases.map((c) => [c.key, c]));
  const t: Traces = { cases, modelInputs: [], toolCalls: [], runErrors: [], threads: new Map(), raw: "", rawRows: {}, jsonl: "", langsmith: "", otlp: "", exported: {}, storedEvents: 0 };
  const langsmithServer = await startCaptureServer();
  const collector = await startCaptureServer();
  const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${collector.url}/v1/traces` }))] });
  try {
    const path = join(dir, `audit-${agentRedaction === false ? "off" : "on"}.jsonl`);
    const batch = { flushIntervalMs: 10, maxQueueSize: 100_000 };
    const traceExport = createTraceExport({
      auditLog: new MemoryAuditLog(),
      exporters: [
        createLangSmithExporter({ apiUrl: langsmithServer.url, apiKey: "k", ...batch }),
        createOtelExporter({ tracerProvider: provider, captureContent: true, ...batch }),
        createJsonlExporter({ path, ...batch }),
      ],
    });
    const checkpointer = SqliteSaver.fromConnString(":memory:");
    const model = scriptedModel(
      (messages: BaseMessage[]) => {
        t.modelInputs.push(JSON.stringify(messages), JSON.stringify(messages.map((m) => ({ ...m }))));
        const human = messages.find((m) => HumanMessage.isInstance(m));
        const key = /case (k\d+)/.exec(textOf(human?.content))?.[1] ?? "none";
        const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
        if (turn === 0) return new AIMessage({ content: "", tool_calls: [{ id: `call-${key}`, name: "lookup_order", args: { orderId: key } }] });
        const answered = byKey.get(key)?.answered;
        return new AIMessage(answered ? `Done with ${key}. The payment on file is ${answered.text}.` : `Done with ${key}.`);
      },
      { turns: 10_000 },
    );
    const lookup = tool(
      async ({ orderId }, runConfig) => {
        t.toolCalls.push(orderId);
        const c = byKey.get(orderId)!;
        const callId = (runConfig as { toolCall?: { id?: string } }).toolCall?.id ?? `call-${orderId}`;
        return TOOL_FORMS.find((f) => f.name === c.toolForm)!.reply(c.returned, callId);
      },
      { name: "lookup_order", description: "Look up an order.", schema: z.object({ orderId: z.string() }), responseFormat: "content_and_artifact" },
    );
    const agentOptions = { model, ...(agentRedaction === false ? { redaction: agentRedaction } : {}) };
    const { agent } = refundSetup([], { checkpointer, auditLog: traceExport, agent: agentOptions, tools: (tools) => [lookup, tools.issueRefund] });

    for (const c of cases) {
      const text = `case ${c.key}: ${sentence(rng(c.typed.seedIndex), c.typed.text)}`;
      const form = INPUT_FORMS.find((f) => f.name === c.inputForm)!;
      try {
        if (form.second) await agent.invoke({ messages: [new HumanMessage(`case ${c.key}: hello`)] }, config(c.threadId));
        await agent.invoke(form.input(text) as never, config(c.threadId));
      } catch (error) {
        t.runErrors.push(`${c.key} (${c.inputForm} / ${c.toolForm}): ${String(error).slice(0, 300)}`);
      }
      const audit = await traceExport.read(c.threadId);
      t.storedEvents += audit.length;
      t.threads.set(c.threadId, { state: await stateText(agent, c.threadId), audit: JSON.stringify(audit) });
    }
    ({ text: t.raw, rows: t.rawRows } = dumpSqlite((checkpointer as unknown as { db: { prepare(sql: string): { all(): unknown[] } } }).db));
    await traceExport.flush({ timeoutMs: 30_000 });
    await traceExport.shutdown({ timeoutMs: 30_000 });
    await provider.forceFlush();
    t.exported = traceExport.stats() as Traces["exported"];
    t.jsonl = readFileSync(path, "utf8");
    t.langsmith = langsmithServer.requests.map((r) => r.body.toString("utf8")).join("\n");
    t.otlp = collector.requests.map((r) => r.body.toString("utf8")).join("\n");
    return t;
  } finally {
    await provider.shutdown();
    await langsmithServer.close();
    await collector.close();
  }
}

/** Each case's three secrets, with what to call them in a failure. */
const secretsOf = (c: E2ECase) => [
  { secret: c.typed, via: `typed as ${c.inputForm}` },
  { secret: c.returned, via: `returned by the tool as ${c.toolForm}` },
  { secret: c.answered, via: "written by the model in its answer" },
];
const describeLeak = (c: E2ECase, x: { secret: Secret; via: string }, where: string) =>
  `${c.key}: ${x.secret.kind} ${x.secret.value} written "${x.secret.format}" (${show(x.secret.text)}), ${x.via} -> ${where}`;

/** Leaks of every case's secrets in one text shared by all threads, each with the line it is in. */
function leaksIn(cases: E2ECase[], text: string, where: string): string[] {
  const found = viewOf(text);
  const lines = text.split("\n");
  return cases.flatMap((c) => secretsOf(c).filter((x) => found(x.secret.value)).map((x) => `${describeLeak(c, x, where)}, in ${excerpt(lines, x.secret.value)}`));
}

const dir = mkdtempSync(join(tmpdir(), "eart-redaction-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("end to end: secrets typed by the user, returned by a tool or written by the model never reach the checkpoint, the audit log, the model or an export", () => {
  const cases = e2eCases();
  let t: Traces;
  beforeAll(async () => {
    t = await driveCases(cases, dir);
  }, 120_000);

  it("every run completed, every case reached the model and the tool", () => {
    expect(cases).toHaveLength(120);
    expect(new Set(cases.map((c) => c.inputForm)).size).toBe(INPUT_FORMS.length);
    expect(new Set(cases.map((c) => c.toolForm)).size).toBe(TOOL_FORMS.length);
    expect(t.runErrors).toEqual([]);
    expect([...new Set(t.toolCalls)].sort()).toEqual(cases.map((c) => c.key).sort());
    // Every case's key got through to the model: the messages were delivered, only redacted.
    for (const c of cases) expect(t.modelInputs.some((m) => m.includes(`case ${c.key}:`)), c.key).toBe(true);
  });

  it("the checkpoint: the state a caller reads (values, messages, interrupts)", () => {
    const found: string[] = [];
    for (const c of cases) {
      const { state } = t.threads.get(c.threadId)!;
      // The state holds the thread: the user's redacted message, the tool call, the model's answer.
      expect(state, c.key).toContain(`case ${c.key}:`);
      expect(state, c.key).toContain("[REDACTED:");
      expect(state, c.key).toContain(`call-${c.key}`);
      const has = viewOf(state);
      for (const x of secretsOf(c)) if (has(x.secret.value)) found.push(describeLeak(c, x, "checkpoint state"));
    }
    expect(found).toEqual([]);
  });

  it("the checkpointer's raw storage: every table of its SQLite database (checkpoints, writes, ledger)", () => {
    // The checkpoints, their writes and the effect ledger (tool results and errors kept for replays) share the database.
    expect(t.rawRows).toMatchObject({ checkpoints: expect.any(Number), writes: expect.any(Number), eart_effect_ledger: cases.length });
    // The dump reads the stored messages and the ledger's entries: every case's thread is in it.
    for (const c of cases) expect(t.raw, c.key).toContain(`case ${c.key}:`);
    expect(t.raw).toContain("[REDACTED:");
    expect(leaksIn(cases, t.raw, "SQLite checkpointer storage")).toEqual([]);
  });

  it("the audit log", () => {
    const found: string[] = [];
    for (const c of cases) {
      const { audit } = t.threads.get(c.threadId)!;
      expect(audit, c.key).toContain(`call-${c.key}`);
      const has = viewOf(audit);
      for (const x of secretsOf(c)) if (has(x.secret.value)) found.push(describeLeak(c, x, "audit log"));
    }
    expect(found).toEqual([]);
  });

  it("the model's input, on every turn", () => {
    expect(t.modelInputs.length).toBeGreaterThanOrEqual(cases.length * 2);
    expect(leaksIn(cases, t.modelInputs.join("\n"), "model input")).toEqual([]);
  });

  it("the exports: JSONL, LangSmith, OpenTelemetry (OTLP/HTTP), each of which received every thread", () => {
    expectExportsClean(t);
  });
});

/** Every exporter sent every stored event, and no secret is in what any of them sent. */
function expectExportsClean(t: Traces) {
  for (const name of ["langsmith", "otel", "jsonl"]) expect(t.exported[name], name).toMatchObject({ exported: t.storedEvents, dropped: 0, failed: 0 });
  for (const [where, text] of [["JSONL file", t.jsonl], ["LangSmith requests", t.langsmith], ["OTLP requests", t.otlp]] as const) {
    // Every thread reached each of them: the payloads are the runs checked here.
    for (const c of t.cases) expect(text, `${where}: ${c.threadId}`).toContain(`"${c.threadId}"`);
    expect(text, where).toContain("[REDACTED:");
  }
  expect([...leaksIn(t.cases, t.jsonl, "JSONL export"), ...leaksIn(t.cases, t.langsmith, "LangSmith export"), ...leaksIn(t.cases, t.otlp, "OTLP export")]).toEqual([]);
}

describe("with the agent's redaction off, the exporters still redact everything they send", () => {
  it("the same cases, the secrets in the audit log, none in the JSONL, LangSmith or OTLP payloads", async () => {
    const cases = e2eCases();
    const t = await driveCases(cases, dir, false);
    expect(t.runErrors).toEqual([]);
    // The audit log holds the secrets this time: the exporters have something to redact.
    const audit = [...t.threads.values()].map((x) => x.audit).join("\n");
    expect(leaksIn(cases, audit, "audit log").length).toBeGreaterThan(cases.length);
    expectExportsClean(t);
  }, 120_000);
});

describe("other ways a caller puts a message into a thread", () => {
  const CARD = "4539 1488 0343 6467";
  /** A refund agent whose model records what it is shown and answers at once. */
  function setup() {
    const seen: string[] = [];
    const model = scriptedModel((messages: BaseMessage[]) => {
      seen.push(JSON.stringify(messages));
      return new AIMessage("ok");
    });
    const auditLog = new MemoryAuditLog();
    const { agent } = refundSetup([], { auditLog, agent: { model } });
    const everywhere = async (threadId: string) => ({
      state: await stateText(agent, threadId),
      audit: JSON.stringify(await auditLog.read(threadId)),
      model: seen.join("\n"),
    });
    return { agent, seen, everywhere };
  }
  const leaked = (where: Record<string, string>) => Object.entries(where).filter(([, text]) => leaks(CARD, text)).map(([w]) => w);

  it("stream(), streamEvents() and batch() redact like invoke()", async () => {
    const { agent, seen, everywhere } = setup();
    const input = () => ({ messages: [new HumanMessage(`case s1: my card ${CARD}`)] });
    for await (const _ of await agent.stream(input(), config("via-stream"))) void _;
    for await (const _ of agent.streamEvents(input(), { version: "v2", ...config("via-events") })) void _;
    await agent.batch([input()], [config("via-batch")]);
    expect(seen).toHaveLength(3);
    for (const threadId of ["via-stream", "via-events", "via-batch"]) {
      const where = await everywhere(threadId);
      expect(where.state, threadId).toContain("[REDACTED:card_number]");
      expect(leaked(where), threadId).toEqual([]);
    }
  });

  it("updateState with a user's message (an operator's edit, LangGraph Studio): the checkpoint and the next model call hold no card", async () => {
    const { agent, seen, everywhere } = setup();
    await agent.invoke({ messages: [new HumanMessage("hello")] }, config("via-update"));
    const written = await agent
      .updateState({ configurable: { thread_id: "via-update" } }, { messages: [new HumanMessage(`my card ${CARD}`)] })
      .then(() => "stored", (error: unknown) => `refused: ${String(error)}`);
    if (written === "stored") await agent.invoke({ messages: [new HumanMessage("go on")] }, config("via-update"));
    // Refusing the write is as good as redacting it; storing it as sent is not.
    expect(seen.length).toBeGreaterThanOrEqual(1);
    expect(leaked(await everywhere("via-update")), written).toEqual([]);
  });
});

describe("redaction: false opts out", () => {
  it("the card typed by the user and returned by a tool is then kept, everywhere the checks above look", async () => {
    const typed = "4539 1488 0343 6467";
    const returned = "5500-0000-0000-0004";
    const seen: string[] = [];
    const model = scriptedModel((messages: BaseMessage[]) => {
      seen.push(JSON.stringify(messages));
      const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
      return turn === 0 ? new AIMessage({ content: "", tool_calls: [{ id: "c1", name: "lookup_order", args: { orderId: "1042" } }] }) : new AIMessage("ok");
    });
    const lookup = tool(async () => `paid with ${returned}`, { name: "lookup_order", description: "Look up an order.", schema: z.object({ orderId: z.string() }) });
    const run = async (redaction?: false) => {
      const auditLog = new MemoryAuditLog();
      const saver = new MemorySaver();
      const agentOptions = { model, ...(redaction === false ? { redaction } : {}) };
      const { agent } = refundSetup([], { checkpointer: saver, auditLog, agent: agentOptions, tools: (t) => [lookup, t.issueRefund] });
      seen.length = 0;
      await agent.invoke({ messages: [new HumanMessage(`my card ${typed}`)] }, config("opt-out"));
      return { state: await stateText(agent, "opt-out"), raw: dumpMemorySaver(saver), audit: JSON.stringify(await auditLog.read("opt-out")), model: seen.join("\n") };
    };
    const off = await run(false);
    for (const [where, text] of Object.entries(off)) {
      expect(leaks(typed, text), `typed card in ${where}`).toBe(true);
      expect(leaks(returned, text), `returned card in ${where}`).toBe(true);
    }
    // The same run with the default: nothing of either card anywhere.
    const on = await run();
    for (const [where, text] of Object.entries(on)) {
      expect(leaks(typed, text), `typed card in ${where}`).toBe(false);
      expect(leaks(returned, text), `returned card in ${where}`).toBe(false);
    }
  });
});
