import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { AIMessage, HumanMessage, SystemMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { scriptedModel } from "eart/testing";
import { invoiceIdsIn, money, vendorIdsIn } from "./data.js";

/** What the clerk asked for: pay an invoice (and maybe write to the vendor), or only write to a vendor. */
export function parseFinanceRequest(text: string): { invoiceId?: string; vendorId?: string; email: boolean; topic: string } {
  const invoiceId = invoiceIdsIn(text)[0];
  const vendorId = vendorIdsIn(text)[0];
  const email = /\be-?mail\b/i.test(text);
  const topic = /\b(?:ask(?:ing)? (?:them |for )?|about )(.+?)[.!?]?$/i.exec(text.trim())?.[1] ?? "your invoices";
  return { ...(invoiceId ? { invoiceId } : {}), ...(vendorId ? { vendorId } : {}), email, topic };
}

/** A field of the retrieved context the model was shown, e.g. the vendor's e-mail address. */
function fromContext(messages: BaseMessage[], field: string): string | undefined {
  const context = messages.find((m) => SystemMessage.isInstance(m) && String(m.content).startsWith("Context retrieved"));
  return context ? new RegExp(`"${field}":"([^"]+)"`).exec(String(context.content))?.[1] : undefined;
}

/**
 * The accounts-payable conversation as a script. To pay an invoice: prepare the payment, ask to
 * execute it (finance decides), then, if asked, e-mail the vendor the remittance advice. To write
 * to a vendor: send the e-mail. The vendor's address comes from the retrieved context. Tool call
 * ids are derived from the turn, so a thread resumed in another process sees the same ids.
 */
export function financeScript(messages: BaseMessage[]): AIMessage {
  const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
  const last = messages[messages.length - 1];
  const request = [...messages].reverse().find((m) => HumanMessage.isInstance(m));
  const asked = parseFinanceRequest(request ? String(request.content) : "");
  const call = (suffix: string, name: string, args: Record<string, unknown>) =>
    new AIMessage({ content: "", tool_calls: [{ id: `call_${turn}_${suffix}`, name, args }] });
  const to = fromContext(messages, "email");
  const payment = messages.find((m) => ToolMessage.isInstance(m) && m.name === "prepare_payment" && m.status !== "error");
  const prepared = payment ? (JSON.parse(String(payment.content)) as { paymentId: string; vendorId: string; amountCents: number; currency: string }) : undefined;

  if (last && HumanMessage.isInstance(last)) {
    if (asked.invoiceId) return call("prepare", "prepare_payment", { invoiceId: asked.invoiceId });
    if (asked.vendorId && asked.email && to) {
      return call("email", "send_external_email", { to, subject: `Question about ${asked.topic}`, body: `Hello, could you please send us ${asked.topic}? Thank you.` });
    }
    return new AIMessage("Which invoice should I pay, or which vendor should I write to?");
  }
  if (!last || !ToolMessage.isInstance(last)) return new AIMessage("Anything else?");
  if (last.status === "error") {
    const what = last.name === "send_external_email" ? "I did not e-mail the vendor" : `${last.name} did not run`;
    const paid = messages.some((m) => ToolMessage.isInstance(m) && m.name === "execute_payment" && m.status !== "error");
    return new AIMessage(`${paid && prepared ? `Payment ${prepared.paymentId} was released. ` : ""}${what}: ${String(last.content)}`);
  }
  if (last.name === "prepare_payment" && prepared) {
    return call("execute", "execute_payment", { paymentId: prepared.paymentId, vendorId: prepared.vendorId, amountCents: prepared.amountCents });
  }
  if (last.name === "execute_payment" && prepared) {
    const amount = money(prepared.amountCents, prepared.currency);
    if (asked.email && to) {
      return call("email", "send_external_email", {
        to,
        subject: `Remittance advice ${asked.invoiceId}`,
        body: `We have paid ${amount} for invoice ${asked.invoiceId} (payment ${prepared.paymentId}).`,
      });
    }
    return new AIMessage(`Payment ${prepared.paymentId} of ${amount} was released [invoice:${asked.invoiceId}].`);
  }
  if (last.name === "send_external_email") return new AIMessage(`E-mail sent to ${to}.`);
  return new AIMessage("Anything else?");
}

/** `ChatOpenAI` when `OPENAI_API_KEY` is set, else the scripted model. */
export async function createFinanceModel(): Promise<BaseChatModel> {
  if (process.env.OPENAI_API_KEY) {
    const { ChatOpenAI } = await import("@langchain/openai");
    return new ChatOpenAI({ model: process.env.OPENAI_MODEL ?? "gpt-4o-mini", temperature: 0 });
  }
  return scriptedModel(financeScript);
}
