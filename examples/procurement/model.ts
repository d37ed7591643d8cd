import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import { AIMessage, HumanMessage, SystemMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { scriptedModel } from "eart/testing";

/** The context items the model was shown (eart's context system message), by id, JSON parsed. */
export function contextShown(messages: BaseMessage[]): Map<string, Record<string, unknown>> {
  const items = new Map<string, Record<string, unknown>>();
  for (const m of messages) {
    if (!SystemMessage.isInstance(m) || typeof m.content !== "string" || !m.content.startsWith("Context retrieved")) continue;
    for (const line of m.content.split("\n").slice(1)) {
      const match = /^\[([^\]]+)\] \([^)]*\) (.*)$/.exec(line);
      if (!match) continue;
      try {
        // Retriever documents arrive as JSON text inside a JSON string.
        const parsed = JSON.parse(match[2]!) as unknown;
        items.set(match[1]!, (typeof parsed === "string" ? JSON.parse(parsed) : parsed) as Record<string, unknown>);
      } catch {
        // Not JSON: not an item this script reads.
      }
    }
  }
  return items;
}

/** A saving the context shows: a contract priced above its benchmark. */
export interface Opportunity {
  contractId: string;
  supplierId: string;
  supplier: string;
  unitPriceCents: number;
  targetUnitPriceCents: number;
  estimatedAnnualSavingsCents: number;
  cites: string[];
}

/** Contracts priced above the market benchmark, largest annual saving first. */
export function opportunities(shown: Map<string, Record<string, unknown>>): Opportunity[] {
  const found: Opportunity[] = [];
  for (const [id, contract] of shown) {
    if (!id.startsWith("contract/")) continue;
    const contractId = String(contract.contractId);
    const benchmark = shown.get(`benchmark/${contractId}`)?.medianUnitPriceCents;
    const units = shown.get(`spend/${contractId}`)?.annualUnits;
    const price = Number(contract.unitPriceCents);
    if (typeof benchmark !== "number" || typeof units !== "number" || !(price > benchmark)) continue;
    found.push({
      contractId,
      supplierId: String(contract.supplierId),
      supplier: String(contract.supplier),
      unitPriceCents: price,
      targetUnitPriceCents: benchmark,
      estimatedAnnualSavingsCents: (price - benchmark) * units,
      cites: [id, `spend/${contractId}`, `benchmark/${contractId}`],
    });
  }
  return found.sort((a, b) => b.estimatedAnnualSavingsCents - a.estimatedAnnualSavingsCents);
}

const dollars = (cents: number) => `$${(cents / 100).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;

/**
 * The procurement review as a script, reading only the context it is shown: find the contract
 * with the largest saving against its benchmark, recommend renegotiating it, then ask to open the
 * renegotiation, then report. Tool call ids come from the turn.
 */
export function procurementScript(messages: BaseMessage[]): AIMessage {
  const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
  const last = messages[messages.length - 1];
  const best = opportunities(contextShown(messages))[0];
  if (!best) return new AIMessage("Every supplier agreement is at or below its market benchmark; no renegotiation needed.");
  const target = { contractId: best.contractId, supplierId: best.supplierId, targetUnitPriceCents: best.targetUnitPriceCents };
  if (last && HumanMessage.isInstance(last)) {
    return new AIMessage({
      content: "",
      tool_calls: [
        {
          id: `call_${turn}_recommend`,
          name: "recommend_renegotiation",
          args: {
            ...target,
            estimatedAnnualSavingsCents: best.estimatedAnnualSavingsCents,
            rationale: `${best.supplier} charges ${dollars(best.unitPriceCents)} per unit against a benchmark of ${dollars(best.targetUnitPriceCents)} ${best.cites.map((c) => `[${c}]`).join(" ")}`,
          },
        },
      ],
    });
  }
  if (last && ToolMessage.isInstance(last) && last.name === "recommend_renegotiation") {
    return new AIMessage({ content: "", tool_calls: [{ id: `call_${turn}_initiate`, name: "initiate_renegotiation", args: target }] });
  }
  if (last && ToolMessage.isInstance(last) && last.name === "initiate_renegotiation") {
    return last.status === "error"
      ? new AIMessage(`I recommended renegotiating ${best.contractId} with ${best.supplier} (about ${dollars(best.estimatedAnnualSavingsCents)} a year), but it was not opened: ${String(last.content)}`)
      : new AIMessage(
          `Renegotiation of ${best.contractId} with ${best.supplier} is open, targeting ${dollars(best.targetUnitPriceCents)} per unit: about ${dollars(best.estimatedAnnualSavingsCents)} a year.`,
        );
  }
  return new AIMessage("Is there anything else to review?");
}

/** `ChatOpenAI` when `OPENAI_API_KEY` is set, else the scripted model. */
export async function createProcurementModel(): Promise<BaseChatModel> {
  if (process.env.OPENAI_API_KEY) {
    const { ChatOpenAI } = await import("@langchain/openai");
    return new ChatOpenAI({ model: process.env.OPENAI_MODEL ?? "gpt-4o-mini", temperature: 0 });
  }
  return scriptedModel(procurementScript);
}
