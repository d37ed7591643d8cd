import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { scriptedModel } from "eart/testing";
import { dollars, quoteIdsIn } from "./data.js";

/** Reads "Q-1002", "20%" and an optional "because …" from the rep's request. */
export function parseDiscountRequest(text: string): { quoteId: string; percent: number; reason: string } | undefined {
  const quoteId = quoteIdsIn(text)[0];
  const percent = /(\d+(?:\.\d+)?)\s*%/.exec(text)?.[1];
  if (!quoteId || !percent) return undefined;
  const reason = /\bbecause\s+(.+?)[.!]?$/i.exec(text.trim())?.[1] ?? "customer request";
  return { quoteId, percent: Number(percent), reason };
}

/**
 * The sales conversation as a script: apply the discount the rep asked for (the quote itself
 * comes as retrieved context), then report the outcome, citing the quote. Tool call ids are
 * derived from the turn, so a thread resumed in another process sees the same ids.
 */
export function salesScript(messages: BaseMessage[]): AIMessage {
  const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
  const last = messages[messages.length - 1];
  const request = [...messages].reverse().find((m) => HumanMessage.isInstance(m));
  const asked = request ? parseDiscountRequest(String(request.content)) : undefined;
  if (!asked) return new AIMessage("Which quote, and what discount in percent?");
  if (last && HumanMessage.isInstance(last)) {
    return new AIMessage({
      content: "",
      tool_calls: [{ id: `call_${turn}_discount`, name: "apply_discount", args: { quoteId: asked.quoteId, percent: asked.percent, reason: asked.reason } }],
    });
  }
  if (last && ToolMessage.isInstance(last) && last.name === "apply_discount") {
    if (last.status === "error") return new AIMessage(`I did not discount quote ${asked.quoteId}: ${String(last.content)}`);
    const result = JSON.parse(String(last.content)) as { newTotalCents: number; listTotalCents: number };
    return new AIMessage(
      `Applied ${asked.percent}% to quote ${asked.quoteId} [quote:${asked.quoteId}]: ${dollars(result.listTotalCents)} → ${dollars(result.newTotalCents)}.`,
    );
  }
  return new AIMessage("Anything else on your quotes?");
}

/** `ChatOpenAI` when `OPENAI_API_KEY` is set, else the scripted model. */
export async function createSalesModel(): Promise<BaseChatModel> {
  if (process.env.OPENAI_API_KEY) {
    const { ChatOpenAI } = await import("@langchain/openai");
    return new ChatOpenAI({ model: process.env.OPENAI_MODEL ?? "gpt-4o-mini", temperature: 0 });
  }
  return scriptedModel(salesScript);
}
