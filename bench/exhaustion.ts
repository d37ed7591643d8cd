/**
 * Benchmark: what one hostile input costs, as it grows. Each case times a piece of eart's
 * screening on an input of size n and of size 8n (the shortest of three runs each, after a
 * warm-up) and prints the ratio: linear work gives about 8, the target is under 20. The inputs
 * are those of test/attacks/exhaustion-redteam.test.ts, which checks the same paths by counting
 * work (no timed assertions in tests):
 * - near-misses of every standard redaction rule (digit runs, failing checksums, IBAN and SSN shapes);
 * - many valid matches in one string (cards, IBANs, SSNs: the overlap of matches);
 * - an object keyed by thousands of card numbers (redacted keys told apart);
 * - a custom rule with `validate` on a long near-miss (an e-mail rule of known TLDs);
 * - JSON detection and the embedded-JSON finder (runs of `{"`, nested escaped JSON);
 * - retrieved items whose ids are card numbers (redacted ids told apart);
 * - the token hold-back on a JSON answer that never closes, in 3-character tokens.
 *
 * Usage: run by `npm run bench`, or alone: `npm run build && node dist/bench/exhaustion.js`.
 */
import { AIMessageChunk } from "@langchain/core/messages";
import { defineRedaction, STANDARD_REDACTIONS, type AgentIdentity, type Redaction, type RedactionRule } from "eart";
import { TokenHoldBack } from "../graphs/token-stream.js";
import { screenContext } from "../src/context/context.js";
import { cardNumber } from "../test/support/cards.js";

/** The input 8 times larger must take under 20 times longer. */
export const EXHAUSTION_TARGET_RATIO = 20;
const FACTOR = 8;

function fastest(f: () => unknown, runs = 3): number {
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    f();
    best = Math.min(best, performance.now() - t0);
  }
  return best;
}

function growth<T>(make: (n: number) => T, run: (x: T) => unknown, n: number): { small: string; large: string; ratio: number } {
  const small = make(n);
  const large = make(FACTOR * n);
  run(small);
  const ts = fastest(() => run(small));
  const tl = fastest(() => run(large));
  return { small: ts.toFixed(1), large: tl.toFixed(1), ratio: Math.round((tl / Math.max(ts, 0.5)) * 10) / 10 };
}

const STD = defineRedaction(STANDARD_REDACTIONS);
const ruleOf = (id: string) => defineRedaction([STANDARD_REDACTIONS.find((r) => r.id === id)!]);
const CARD = "4111111111111111";
const cardN = cardNumber;
const TLDS = new Set(["com", "org", "net", "io", "de", "uk"]);
const EMAIL: RedactionRule = { id: "email", pattern: /[\w.+-]+@[\w-]+(?:\.[\w-]+)+/g, validate: (m) => TLDS.has(m.slice(m.lastIndexOf(".") + 1).toLowerCase()) };
const nested = (levels: number, inner: string) => {
  let s = inner;
  for (let i = 0; i < levels; i++) s = JSON.stringify({ note: s });
  return s;
};
const tokens = (text: string) => {
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < text.length; i += 3) out.push({ event: "on_chat_model_stream", run_id: "r1", data: { chunk: new AIMessageChunk({ id: "m1", content: text.slice(i, i + 3) }) } });
  return out;
};
const holdBack = (redaction: Redaction, events: Record<string, unknown>[]) => {
  const held = new TokenHoldBack(redaction, undefined);
  for (const e of events) held.take(e);
  return held.flush();
};
const identity: AgentIdentity = {
  schemaVersion: 1,
  id: "support-agent",
  roles: ["support"],
  tools: ["lookup_order"],
  dataScopes: ["orders"],
  onBehalfOf: { id: "cara", roles: ["customer"] },
  source: "configurable.user_id",
};

/** Runs the cases and prints each one's times and ratio, and whether the target holds. */
export function runExhaustionBench(): void {
  const email = defineRedaction([EMAIL]);
  const cases: [string, () => { small: string; large: string; ratio: number }][] = [
    ["near-miss digit runs (standard rules)", () => growth((n) => "1 2 3 4 5 6 7 8 9 0 ".repeat(n), (s) => STD.apply(s, undefined), 500)],
    ["near-miss cards failing Luhn", () => growth((n) => "4111 1111 1111 1112 ".repeat(n), (s) => STD.apply(s, undefined), 500)],
    ["many valid cards in one string", () => growth((n) => `${CARD} `.repeat(n), (s) => ruleOf("card_number").apply(s, undefined), 4_000)],
    ["many valid IBANs in one string", () => growth((n) => "GB82WEST12345698765432 ".repeat(n), (s) => ruleOf("iban").apply(s, undefined), 2_000)],
    ["an object keyed by card numbers", () => growth((n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [cardN(i), "visa"])), (o) => STD.apply(o, undefined), 500)],
    ["custom e-mail rule on a dotted near-miss", () => growth((n) => `${"a.".repeat(n)}a@a.a`, (s) => email.apply(s, undefined), 25)],
    ["runs of {\" (JSON detection)", () => growth((n) => '{"'.repeat(n), (s) => STD.apply(s, undefined), 100_000)],
    ["nested escaped JSON", () => growth((n) => nested(6, "z".repeat(n)), (s) => STD.apply(s, undefined), 50_000)],
    [
      "retrieved items whose ids are card numbers",
      () => growth((k) => Array.from({ length: k }, (_, i) => ({ id: cardN(i), source: "orders-db", scope: "orders", content: `order ${i}`, labels: [] })), (items) => screenContext(items, identity, STD), 150),
    ],
    ["hold-back of a JSON answer that never closes", () => growth((n) => tokens(`{"note": "${"x".repeat(n)}`), (events) => holdBack(STD, events), 20_000)],
  ];
  const rows = cases.map(([name, run]) => ({ case: name, ...run() }));
  console.log("\nexhaustion: one hostile input, at n and 8n (ms, shortest of 3); linear is about 8x");
  console.table(rows.map((r) => ({ case: r.case, "n ms": r.small, "8n ms": r.large, ratio: `${r.ratio}x` })));
  const worst = Math.max(...rows.map((r) => r.ratio));
  console.log(`worst growth ${worst}x   target: under ${EXHAUSTION_TARGET_RATIO}x for 8x the input: ${worst < EXHAUSTION_TARGET_RATIO ? "MET" : "NOT MET"}`);
}

if (import.meta.url === `file://${process.argv[1]}`) runExhaustionBench();
