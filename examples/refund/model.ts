import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { scriptedModel } from "eart/testing";

/** Reads "order 1042" and "$740" from the customer's request. */
export function parseRefundRequest(text: string): { orderId: string; amount: number } | undefined {
  const orderId = /order\s+#?(\d+)/i.exec(text)?.[1];
  const amount = /\$\s?([\d,]+(?:\.\d+)?)/.exec(text)?.[1];
  if (!orderId || !amount) return undefined;
  return { orderId, amount: Number(amount.replace(/,/g, "")) };
}

/**
 * The refund conversation as a script: look the order up, propose the refund the customer asked
 * for, then report what happened. Tool call ids are derived from the turn, so a thread resumed in
 * another process sees the same ids.
 */
export function refundScript(messages: BaseMessage[]): AIMessage {
  const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
  const last = messages[messages.length - 1];
  const request = [...messages].reverse().find((m) => HumanMessage.isInstance(m));
  const asked = request ? parseRefundRequest(String(request.content)) : undefined;
  if (!asked) return new AIMessage("Which order should I refund, and how much?");
  if (last && HumanMessage.isInstance(last)) {
    return new AIMessage({ content: "", tool_calls: [{ id: `call_${turn}_lookup`, name: "lookup_order", args: { orderId: asked.orderId } }] });
  }
  if (last && ToolMessage.isInstance(last) && last.name === "lookup_order") {
    return new AIMessage({
      content: "",
      tool_calls: [
        { id: `call_${turn}_refund`, name: "issue_refund", args: { orderId: asked.orderId, amount: asked.amount, reason: "customer request" } },
      ],
    });
  }
  if (last && ToolMessage.isInstance(last) && last.name === "issue_refund") {
    return last.status === "error"
      ? new AIMessage(`I could not refund order ${asked.orderId}: ${String(last.content)}`)
      : new AIMessage(`Your refund of $${asked.amount} for order ${asked.orderId} has been issued.`);
  }
  return new AIMessage("Is there anything else I can help with?");
}

/** `ChatOpenAI` when `OPENAI_API_KEY` is set, else the scripted model. */
export async function createRefundModel(): Promise<BaseChatModel> {
  if (process.env.OPENAI_API_KEY) {
    const { ChatOpenAI } = await import("@langchain/openai");
    return new ChatOpenAI({ model: process.env.OPENAI_MODEL ?? "gpt-4o-mini", temperature: 0 });
  }
  return scriptedModel(refundScript);
}
