/** LangChain tools and chat models as eart's nodes take them: option schemas, indexing, argument checks. */
import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import type { StructuredToolInterface } from "@langchain/core/tools";
import { isGraphBubbleUp, isGraphInterrupt as isLangGraphInterrupt } from "@langchain/langgraph";
import { interopSafeParseAsync, isInteropZodSchema } from "@langchain/core/utils/types";
import { z } from "zod";
import { EartConfigError } from "../src/errors.js";
import { canonicalJson } from "../src/internal/canonical.js";

/** Result of checking model-proposed arguments against a tool's schema. */
export type ArgsCheck = { ok: true; args: Record<string, unknown> } | { ok: false; message: string };

/**
 * Checks arguments against a tool's zod schema, and returns them as the tool will read them (its
 * schema's defaults, coercions and transforms applied): what policy judges. A schema that makes
 * something other than an object of them (a string tool's `{ input }` becomes the string) gives
 * them back as the model sent them, so a rule can still read `args.input`. Tools described by
 * JSON schema are checked by the tool itself when it runs.
 */
export async function checkToolArgs(tool: StructuredToolInterface, args: unknown): Promise<ArgsCheck> {
  if (typeof args !== "object" || args === null || Array.isArray(args)) return { ok: false, message: "arguments must be an object" };
  if (!isInteropZodSchema(tool.schema)) return { ok: true, args: args as Record<string, unknown> };
  const result = await interopSafeParseAsync(tool.schema, args);
  if (result.success) {
    const data = result.data as unknown;
    const plain = typeof data === "object" && data !== null && !Array.isArray(data);
    return { ok: true, args: (plain ? data : args) as Record<string, unknown> };
  }
  const issues = (result.error as { issues?: { path?: PropertyKey[]; message: string }[] }).issues ?? [];
  const message = issues.map((i) => `${(i.path ?? []).map(String).join(".") || "(args)"}: ${i.message}`).join("; ");
  return { ok: false, message: message || String(result.error) };
}

/**
 * The record field that says how the tool reads a call's arguments when that differs from what
 * the model sent (`parsedArgs`: a default filled in, a string coerced, a transform applied): what
 * policy judged, what budgets count, what an approver is shown beside the arguments. Nothing when
 * they read the same, or when the tool's reading is not plain JSON (it is still what policy judged).
 */
export function parsedArgsField(args: Record<string, unknown>, parsed: Record<string, unknown>): { parsedArgs?: Record<string, unknown> } {
  if (parsed === args) return {};
  try {
    const text = canonicalJson(parsed);
    return text === canonicalJson(args) ? {} : { parsedArgs: JSON.parse(text) as Record<string, unknown> };
  } catch {
    return {};
  }
}

/** Indexes tools by name, refusing duplicates. */
export function indexTools(tools: readonly StructuredToolInterface[], field = "tools"): Map<string, StructuredToolInterface> {
  const byName = new Map<string, StructuredToolInterface>();
  for (const tool of tools) {
    if (byName.has(tool.name)) throw new EartConfigError(field, `two tools are named "${tool.name}"`);
    byName.set(tool.name, tool);
  }
  return byName;
}

/**
 * Errors that must pass through every catch: interrupts and other graph control flow, as
 * LangGraph raises them. LangGraph's own test reads a flag (`is_bubble_up`) and a name, which an
 * error a tool built from a downstream's body (`Object.assign(new Error(m), body)`) can carry: such
 * an error would pass for a pause, or end the run as if the graph had finished, with the call's
 * outcome unknown and nobody asked. Here the flag must come from LangGraph's class (the getter its
 * prototype defines), never from the error's own properties.
 */
export function isGraphControlFlow(error: unknown): boolean {
  // Not an object (a tool may throw null, a string, a number): no control flow, and LangGraph's own
  // tests would read a property of it.
  if (typeof error !== "object" || error === null || !isGraphBubbleUp(error) || Object.hasOwn(error, "is_bubble_up")) return false;
  for (let proto = Object.getPrototypeOf(error); proto !== null && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    if (typeof Object.getOwnPropertyDescriptor(proto, "is_bubble_up")?.get === "function") return true;
  }
  return false;
}

/** A LangGraph interrupt, as LangGraph raises it (see {@link isGraphControlFlow}). */
export function isGraphInterrupt(error: unknown): boolean {
  return typeof error === "object" && error !== null && isLangGraphInterrupt(error) && isGraphControlFlow(error) && Array.isArray((error as { interrupts?: unknown }).interrupts);
}

/** Option schema: LangChain tools. */
export const ToolsOption = z.array(
  z.custom<StructuredToolInterface>((v) => typeof (v as StructuredToolInterface)?.name === "string", "must be a LangChain tool"),
);


/** Option schema: a LangChain chat model. */
// Annotated: inferred, the declaration would name LangChain's message types through whichever
// installed package re-exports them (langchain, say), which a project without it cannot resolve.
export const ChatModelOption: z.ZodCustom<BaseChatModel, BaseChatModel> = z.custom<BaseChatModel>((v) => typeof (v as BaseChatModel)?.invoke === "function", "must be a chat model");
