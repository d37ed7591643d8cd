import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { AIMessage, HumanMessage, SystemMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { scriptedModel } from "eart/testing";
import { candidateIdOf } from "./data.js";

/** The context items the model was shown (eart's context system message), by id, JSON parsed. */
export function contextShown(messages: BaseMessage[]): Map<string, Record<string, unknown>> {
  const items = new Map<string, Record<string, unknown>>();
  for (const m of messages) {
    if (!SystemMessage.isInstance(m) || typeof m.content !== "string" || !m.content.startsWith("Context retrieved")) continue;
    for (const line of m.content.split("\n").slice(1)) {
      const match = /^\[([^\]]+)\] \([^)]*\) (.*)$/.exec(line);
      if (!match) continue;
      try {
        items.set(match[1]!, JSON.parse(match[2]!) as Record<string, unknown>);
      } catch {
        // Not JSON: not an item this script reads.
      }
    }
  }
  return items;
}

/** The letter, from what the model was shown: the salary only if it could see it. */
export function offerLetter(candidate: Record<string, unknown>, requisition: Record<string, unknown>, baseSalary: number | null): string {
  return [
    `Dear ${String(candidate.name)},`,
    `We are pleased to offer you the position of ${String(requisition.title)} (level ${String(requisition.roleLevel)}) in ${String(requisition.department)}, starting ${String(candidate.startDate)}.`,
    baseSalary === null ? "Base salary: pending; HR will confirm it to you separately." : `Base salary: $${baseSalary.toLocaleString("en-US")} per year.`,
    `Requisition ${String(requisition.requisitionId)} (${String(requisition.status)}).`,
  ].join("\n");
}

/**
 * The offer conversation as a script, reading only the context it is shown: draft the letter
 * with the band's target salary when the figure is visible (else "pending"); when asked to send
 * it and the draft is complete, propose sending it with the terms it states; then report. Tool
 * call ids come from the turn.
 */
export function offerScript(messages: BaseMessage[]): AIMessage {
  const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
  const last = messages[messages.length - 1];
  const request = String(messages.find((m) => HumanMessage.isInstance(m))?.content ?? "");
  const candidateId = candidateIdOf(request);
  const shown = contextShown(messages);
  const candidate = shown.get(`candidate/${candidateId}`);
  const requisition = [...shown.entries()].find(([id]) => id.startsWith("requisition/"))?.[1];
  if (!candidateId || !candidate || !requisition) return new AIMessage("I could not find that candidate's requisition.");
  if (requisition.status !== "approved") return new AIMessage(`Requisition ${String(requisition.requisitionId)} is ${String(requisition.status)}: no offer yet.`);
  const band = shown.get(`band/${String(requisition.roleLevel)}`);
  const target = typeof band?.targetSalary === "number" ? band.targetSalary : null;

  if (last && HumanMessage.isInstance(last)) {
    return new AIMessage({
      content: "",
      tool_calls: [
        {
          id: `call_${turn}_draft`,
          name: "draft_offer",
          args: { candidateId, roleLevel: String(requisition.roleLevel), baseSalary: target, body: offerLetter(candidate, requisition, target) },
        },
      ],
    });
  }
  if (last && ToolMessage.isInstance(last) && last.name === "draft_offer") {
    if (last.status === "error") return new AIMessage(`The draft was not stored: ${String(last.content)}`);
    const draft = JSON.parse(String(last.content)) as { draftId: string; salaryStatus: string };
    if (/\bsend\b/i.test(request) && draft.salaryStatus === "included") {
      // The terms the draft states, so the approver sees what is sent.
      const terms = { draftId: draft.draftId, candidateId, roleLevel: String(requisition.roleLevel), baseSalary: target };
      return new AIMessage({ content: "", tool_calls: [{ id: `call_${turn}_send`, name: "send_offer", args: terms }] });
    }
    return new AIMessage(
      draft.salaryStatus === "included"
        ? `Draft ${draft.draftId} for ${String(candidate.name)} is ready, with the salary from band ${String(requisition.roleLevel)} [band/${String(requisition.roleLevel)}].`
        : `Draft ${draft.draftId} for ${String(candidate.name)} is ready; the salary is pending: an HR manager needs to add it.`,
    );
  }
  if (last && ToolMessage.isInstance(last) && last.name === "send_offer") {
    return last.status === "error"
      ? new AIMessage(`The offer was not sent: ${String(last.content)}`)
      : new AIMessage(`The offer to ${String(candidate.name)} has been sent.`);
  }
  return new AIMessage("Anything else?");
}

/** `ChatOpenAI` when `OPENAI_API_KEY` is set, else the scripted model. */
export async function createOfferModel(): Promise<BaseChatModel> {
  if (process.env.OPENAI_API_KEY) {
    const { ChatOpenAI } = await import("@langchain/openai");
    return new ChatOpenAI({ model: process.env.OPENAI_MODEL ?? "gpt-4o-mini", temperature: 0 });
  }
  return scriptedModel(offerScript);
}
