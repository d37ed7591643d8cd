import { AIMessage, AIMessageChunk } from "@langchain/core/messages";
import { describe, expect, it } from "vitest";
import { defineRedaction, STANDARD_REDACTIONS } from "eart";
import { TokenHoldBack } from "../../graphs/token-stream.js";

const redaction = defineRedaction(STANDARD_REDACTIONS);
const TEXT = "Noted: the card you spelled is 4111 1111 1111 1111. I will refund order 1042 for $740 today.";

/** The model's tokens as on_chat_model_stream events (three characters each), then its end event. */
function modelRun(text: string) {
  const tokens: Record<string, unknown>[] = [];
  for (let i = 0; i < text.length; i += 3) tokens.push({ event: "on_chat_model_stream", run_id: "r1", data: { chunk: new AIMessageChunk({ id: "m1", content: text.slice(i, i + 3) }) } });
  return { tokens, end: { event: "on_chat_model_end", run_id: "r1", data: { output: new AIMessage({ id: "m1", content: text }) } } };
}
const textOf = (events: unknown[]) =>
  events
    .filter((e) => (e as { event: string }).event === "on_chat_model_stream")
    .map((e) => String(((e as { data: { chunk: AIMessageChunk } }).data.chunk).content))
    .join("");

describe("the model's token stream, held back per message (graphs/token-stream.ts)", () => {
  it("a card split across tokens goes out redacted: what the caller joins is the redacted answer, and no prefix of it spells the card", () => {
    const held = new TokenHoldBack(redaction, undefined);
    const { tokens, end } = modelRun(TEXT);
    const out: unknown[] = [];
    const joined: string[] = [];
    for (const t of tokens) {
      out.push(...held.take(t));
      joined.push(textOf(out));
    }
    out.push(...held.take(end));
    expect(textOf(out)).toBe("Noted: the card you spelled is [REDACTED:card_number]. I will refund order 1042 for $740 today.");
    for (const text of joined) expect(text.replace(/\D/g, "")).not.toContain("4111111111111111");
    // Each token still goes out as an event of its own, in order, the message chunks of their class.
    expect(out.filter((e) => (e as { event: string }).event === "on_chat_model_stream").length).toBeGreaterThanOrEqual(tokens.length);
    expect(out.at(-1)).toBe(end);
  });

  it("what is held goes out when the stream ends without the model's end event", () => {
    const held = new TokenHoldBack(redaction, undefined);
    const { tokens } = modelRun(TEXT);
    const out = tokens.flatMap((t) => held.take(t));
    out.push(...held.flush());
    expect(textOf(out)).toBe("Noted: the card you spelled is [REDACTED:card_number]. I will refund order 1042 for $740 today.");
  });

  it("text that is JSON is held until it is whole (its fields are redacted as JSON)", () => {
    const held = new TokenHoldBack(redaction, undefined);
    const json = JSON.stringify({ note: "x".repeat(200), pan: "not a pattern" });
    const { tokens, end } = modelRun(json);
    const before = tokens.flatMap((t) => held.take(t));
    expect(textOf(before)).toBe("");
    expect(textOf([...before, ...held.take(end)])).toContain('"pan":"[REDACTED:card_number]"');
  });
});
