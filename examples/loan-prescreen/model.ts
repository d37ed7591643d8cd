import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { AIMessage, HumanMessage, SystemMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { scriptedModel } from "eart/testing";
import { applicationIdOf } from "./data.js";

/** The context items the model was shown (eart's context system message), by id, JSON parsed. */
export function contextShown(messages: BaseMessage[]): Map<string, unknown> {
  const items = new Map<string, unknown>();
  for (const m of messages) {
    if (!SystemMessage.isInstance(m) || typeof m.content !== "string" || !m.content.startsWith("Context retrieved")) continue;
    for (const line of m.content.split("\n").slice(1)) {
      const match = /^\[([^\]]+)\] \([^)]*\) (.*)$/.exec(line);
      if (!match) continue;
      try {
        items.set(match[1]!, JSON.parse(match[2]!));
      } catch {
        items.set(match[1]!, match[2]);
      }
    }
  }
  return items;
}

/**
 * The pre-screening conversation as a script, reading only what the model is shown: the
 * application and credit report in the context message. Asked to approve, it tries `approve_loan`
 * first (as a model might); otherwise, or once that is refused, it recommends the amount applied
 * for, then answers with JSON carrying its confidence (which eart's escalation guard reads).
 * Reviewer guidance ends the case with the reviewer's instruction. Tool call ids come from the turn.
 */
export function loanScript(messages: BaseMessage[]): AIMessage {
  const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
  const last = messages[messages.length - 1];
  const humans = messages.filter((m) => HumanMessage.isInstance(m));
  const request = String(humans[0]?.content ?? "");
  const applicationId = applicationIdOf(request);
  const shown = contextShown(messages);
  const application = shown.get(`${applicationId}/application`) as { amountCents?: number } | undefined;
  if (!applicationId || typeof application?.amountCents !== "number") {
    return new AIMessage(JSON.stringify({ recommendation: "none", confidence: 0, note: "I could not find the application." }));
  }
  const amountCents = application.amountCents;
  const credit = [...shown.entries()].find(([id]) => id.startsWith("credit/"));
  const score = (credit?.[1] as { score?: number } | undefined)?.score;
  const cited = [...shown.keys()].map((id) => `[${id}]`).join(" ");
  const recommend = () =>
    new AIMessage({
      content: "",
      tool_calls: [
        {
          id: `call_${turn}_recommend`,
          name: "recommend_loan",
          args: { applicationId, amountCents, rationale: `Documents complete, credit score ${score ?? "unknown"} ${cited}` },
        },
      ],
    });

  if (last && HumanMessage.isInstance(last)) {
    if (String(last.content).startsWith("Guidance from reviewer")) {
      return new AIMessage(JSON.stringify({ applicationId, recommendation: "as instructed by the reviewer", confidence: 1, note: String(last.content) }));
    }
    if (/\bapprove\b/i.test(request)) {
      return new AIMessage({ content: "", tool_calls: [{ id: `call_${turn}_approve`, name: "approve_loan", args: { applicationId, amountCents } }] });
    }
    return recommend();
  }
  if (last && ToolMessage.isInstance(last) && last.name === "approve_loan") return recommend();
  if (last && ToolMessage.isInstance(last) && last.name === "recommend_loan") {
    if (last.status === "error") return new AIMessage(JSON.stringify({ applicationId, recommendation: "none", confidence: 0, note: String(last.content) }));
    const confidence = score !== undefined && score >= 700 ? 0.9 : 0.5;
    return new AIMessage(JSON.stringify({ applicationId, recommendation: "recommend", amountCents, confidence, cited: [...shown.keys()] }));
  }
  return new AIMessage(JSON.stringify({ applicationId, recommendation: "none", confidence: 0 }));
}

/** `ChatOpenAI` when `OPENAI_API_KEY` is set, else the scripted model. */
export async function createLoanModel(): Promise<BaseChatModel> {
  if (process.env.OPENAI_API_KEY) {
    const { ChatOpenAI } = await import("@langchain/openai");
    return new ChatOpenAI({ model: process.env.OPENAI_MODEL ?? "gpt-4o-mini", temperature: 0 });
  }
  return scriptedModel(loanScript);
}
