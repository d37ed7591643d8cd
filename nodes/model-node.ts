import { randomUUID } from "node:crypto";
import { SystemMessage, type BaseMessage } from "@langchain/core/messages";
import type { Runnable } from "@langchain/core/runnables";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import {
  AuditLogOption,
  EartConfigError,
  parseOptions,
  toolCallDigest,
  type AuditEventInput,
} from "../src/index.js";
import { assertNoPendingApproval, messageText, requireThreadId, ChatModelOption, ToolsOption } from "./runtime.js";
import type { GovernedState } from "./state.js";

const ModelNodeOptionsSchema = z
  .object({
    model: ChatModelOption,
    tools: ToolsOption,
    auditLog: AuditLogOption,
    systemPrompt: z.string().optional(),
  })
  .strict();
export type ModelNodeOptions = z.input<typeof ModelNodeOptionsSchema>;

/** A model turn: the message it produced, with an id, and the events that record it. */
export interface ModelStep {
  message: BaseMessage;
  toolCalls: { id?: string; name: string; args: Record<string, unknown> }[];
  events: AuditEventInput[];
}

/**
 * Builds the model turn shared by the node and the prebuilt agent: binds the tools once, calls
 * the model, and describes what it proposed.
 */
export function createModelStep(options: ModelNodeOptions) {
  const opts = parseOptions(ModelNodeOptionsSchema, options);
  const { model, tools, systemPrompt } = opts;
  if (tools.length > 0 && typeof model.bindTools !== "function") {
    throw new EartConfigError("model", "the model cannot call tools (it has no bindTools)");
  }
  const bound: Runnable<BaseMessage[], BaseMessage> = tools.length > 0 ? model.bindTools!(tools) : model;
  const system = systemPrompt ? new SystemMessage(systemPrompt) : undefined;

  return async function modelStep(messages: BaseMessage[], config: LangGraphRunnableConfig, threadId: string): Promise<ModelStep> {
    const response = await bound.invoke(system ? [system, ...messages] : messages, config);
    // Decisions and audit events name the proposing message, so it needs its id now, and in
    // lc_kwargs too: that is what a checkpointer serialises.
    if (!response.id) {
      const id = randomUUID();
      response.id = id;
      (response as { lc_kwargs: Record<string, unknown> }).lc_kwargs.id = id;
    }
    const toolCalls = (response as { tool_calls?: ModelStep["toolCalls"] }).tool_calls ?? [];
    const events: AuditEventInput[] = [
      {
        threadId,
        type: "model.output",
        data: {
          messageId: response.id,
          text: messageText(response),
          toolCalls: toolCalls.map((c) => ({ id: c.id ?? null, name: c.name, args: c.args, digest: toolCallDigest(c.name, c.args) })),
        },
      },
    ];
    if (toolCalls.length === 0) events.push({ threadId, type: "run.completed", data: { outcome: "answered", messageId: response.id } });
    return { message: response, toolCalls, events };
  };
}

/**
 * Node that calls the chat model with the thread's messages and the tools bound, and records what
 * it proposed (`model.output`) and, when it answers without tool calls, the run's outcome
 * (`run.completed`).
 * @example
 * ```ts
 * graph.addNode("agent", createModelNode({ model: new ChatOpenAI({ model: "gpt-4o-mini" }), tools, auditLog }));
 * ```
 */
export function createModelNode(options: ModelNodeOptions) {
  const modelStep = createModelStep(options);
  const { auditLog } = options;

  return async function agent(state: Pick<GovernedState, "messages"> & Partial<Pick<GovernedState, "decisions">>, config: LangGraphRunnableConfig): Promise<{ messages: BaseMessage[] }> {
    const threadId = requireThreadId(config);
    assertNoPendingApproval(state, threadId);
    const step = await modelStep(state.messages, config, threadId);
    await auditLog.append(step.events);
    return { messages: [step.message] };
  };
}
