/** LangChain tools and chat models as eart's nodes take them: option schemas, indexing, argument checks. */
import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import type { StructuredToolInterface } from "@langchain/core/tools";
import { interopSafeParseAsync, isInteropZodSchema } from "@langchain/core/utils/types";
import { z } from "zod";
import { EartConfigError } from "../src/errors.js";

/** Result of checking model-proposed arguments against a tool's schema. */
export type ArgsCheck = { ok: true; args: Record<string, unknown> } | { ok: false; message: string };

/**
 * Checks arguments against a tool's zod schema. Tools described by JSON schema are checked by the
 * tool itself when it runs.
 */
export async function checkToolArgs(tool: StructuredToolInterface, args: unknown): Promise<ArgsCheck> {
  if (typeof args !== "object" || args === null || Array.isArray(args)) return { ok: false, message: "arguments must be an object" };
  if (!isInteropZodSchema(tool.schema)) return { ok: true, args: args as Record<string, unknown> };
  const result = await interopSafeParseAsync(tool.schema, args);
  if (result.success) return { ok: true, args: result.data as Record<string, unknown> };
  const issues = (result.error as { issues?: { path?: PropertyKey[]; message: string }[] }).issues ?? [];
  const message = issues.map((i) => `${(i.path ?? []).map(String).join(".") || "(args)"}: ${i.message}`).join("; ");
  return { ok: false, message: message || String(result.error) };
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

/** Errors that must pass through every catch: interrupts and other graph control flow. */
export { isGraphBubbleUp as isGraphControlFlow, isGraphInterrupt } from "@langchain/langgraph";

/** Option schema: LangChain tools. */
export const ToolsOption = z.array(
  z.custom<StructuredToolInterface>((v) => typeof (v as StructuredToolInterface)?.name === "string", "must be a LangChain tool"),
);


/** Option schema: a LangChain chat model. */
// Annotated: inferred, the declaration would name LangChain's message types through whichever
// installed package re-exports them (langchain, say), which a project without it cannot resolve.
export const ChatModelOption: z.ZodCustom<BaseChatModel, BaseChatModel> = z.custom<BaseChatModel>((v) => typeof (v as BaseChatModel)?.invoke === "function", "must be a chat model");
