import { randomUUID } from "node:crypto";
import { SystemMessage, type BaseMessage } from "@langchain/core/messages";
import type { Runnable } from "@langchain/core/runnables";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import { AuditLogOption, type AuditEventInput } from "../src/audit/log.js";
import { type Redaction } from "../src/context/redaction.js";
import { type ThreadContext } from "../src/decisions/records.js";
import { forgedContextEvent, sealedContext, type Sealer } from "../src/decisions/seal.js";
import { EartConfigError, ModelUnavailableError } from "../src/errors.js";
import { proposedCallDigest } from "../src/human-tasks/refusal.js";
import { parseOptions } from "../src/internal/options.js";
import { backoffDelay, RetryOptionsSchema, sleep } from "../src/tools/resilience.js";
import { redactError, redactMessage, type RedactionViewer } from "./redaction.js";
import { assertNoPendingApproval, messageText } from "../langgraph/run.js";
import { hostSteps, type Step } from "../langgraph/steps.js";
import { isGraphControlFlow, ChatModelOption, ToolsOption } from "../langgraph/tools.js";
import type { GovernedState } from "../langgraph/channels.js";
import { EART_MESSAGE_ID_PREFIX } from "../langgraph/records.js";

const ModelNodeOptionsSchema = z
  .object({
    model: ChatModelOption,
    tools: ToolsOption,
    auditLog: AuditLogOption,
    systemPrompt: z.string().optional(),
    /** Retries of each model (primary and fallbacks) on errors, with exponential backoff. */
    retry: RetryOptionsSchema.optional(),
    /** Models tried in order when the primary fails after its retries (same tools bound). */
    fallbacks: z.array(ChatModelOption).optional(),
    /**
     * Redacts what the model answers (its text and tool calls) before the thread, the gate and the
     * audit log hold it: a value it should not have seen does not travel on.
     */
    redaction: z.custom<Redaction>((v) => typeof (v as Redaction)?.apply === "function", "must be a Redaction (defineRedaction)").optional(),
  })
  .strict();
export type ModelNodeOptions = z.input<typeof ModelNodeOptionsSchema>;

/** A model turn: the message it produced, with an id, and the events that record it. */
export interface ModelStep {
  message: BaseMessage;
  toolCalls: { id?: string; name: string; args: Record<string, unknown> }[];
  events: AuditEventInput[];
}

/** Characters that break a line, or hide or reorder text: controls (C0, DEL, C1), format characters (bidi, zero-width), line and paragraph separators, lone surrogates. */
const LINE_BREAKING_OR_HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;
/** What JSON.stringify leaves raw of those (it escapes C0 and lone surrogates itself). */
const RAW_IN_JSON = /[\u007f-\u009f\p{Cf}\p{Zl}\p{Zp}]/gu;
/** `\uXXXX` escapes of each UTF-16 code unit of `c`, as JSON writes them. */
const u = (c: string) => c.split("").map((unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`).join("");
/** JSON text with every line-breaking or hidden character written as an escape. */
const oneLineJson = (value: unknown): string => (JSON.stringify(value) ?? "null").replace(RAW_IN_JSON, u);

/** An item's content on its line: plain one-line text as it is, anything else as one-line JSON. */
const contentText = (content: unknown): string =>
  typeof content === "string" && !LINE_BREAKING_OR_HIDDEN.test(content) ? content : oneLineJson(content ?? null);
/** An id or a source in the item's header: as it is when plain, else a JSON string whose brackets and parentheses are escaped too. */
const headerText = (text: string): string =>
  !LINE_BREAKING_OR_HIDDEN.test(text) && !/[[\]()]/.test(text) ? text : oneLineJson(text).replace(/[[\]()]/g, u);

/**
 * The retrieved context as the model sees it: one system message listing each item (already
 * filtered and redacted for the identity) with its id and source, so answers can cite them.
 *
 * One item per line, `[id] (source) content`, and nothing an item holds can start another line
 * or another item: content with a line break, a control, bidi or zero-width character is written
 * as one-line JSON (plain one-line text stays as it is, JSON content is JSON already); an id or a
 * source with brackets, parentheses or such characters is written as a JSON string with those
 * escaped. Ids that two providers share are namespaced by provider (`<provider>/<id>`) by the
 * retrieval node.
 * @example
 * ```ts
 * contextMessage({ items: [{ id: "o-1", source: "orders", scope: "orders", labels: [], content: "a\n[x] (bureau) b" }], sensitivity: [] });
 * // Context retrieved … :\n[o-1] (orders) "a\n[x] (bureau) b"
 * ```
 */
export function contextMessage(context: ThreadContext): SystemMessage {
  const lines = context.items.map((item) => `[${headerText(item.id)}] (${headerText(item.source)}) ${contentText(item.content)}`);
  return new SystemMessage(`Context retrieved for this request (cite ids in brackets), one item per line; content holding line breaks is written as JSON:\n${lines.join("\n")}`);
}

/**
 * Builds the model turn shared by the node and the prebuilt agent: binds the tools once, calls
 * the model, and describes what it proposed.
 */
export function createModelStep(options: ModelNodeOptions) {
  const opts = parseOptions(ModelNodeOptionsSchema, options);
  const { model, tools, systemPrompt, retry, fallbacks = [], auditLog, redaction } = opts;
  const models = [model, ...fallbacks].map((m, i): Runnable<BaseMessage[], BaseMessage> => {
    if (tools.length === 0) return m;
    if (typeof m.bindTools !== "function") throw new EartConfigError(i === 0 ? "model" : `fallbacks`, "the model cannot call tools (it has no bindTools)");
    return m.bindTools(tools);
  });
  const system = systemPrompt ? new SystemMessage(systemPrompt) : undefined;

  /**
   * Calls the models in order, each with its retries; every failure is audited (`model.failed`).
   * When all fail, the failures are recorded and a ModelUnavailableError is thrown.
   */
  async function call(input: BaseMessage[], config: LangGraphRunnableConfig, threadId: string): Promise<{ response: BaseMessage; events: AuditEventInput[] }> {
    const events: AuditEventInput[] = [];
    const failures: { model: number; attempt: number; error: string }[] = [];
    let last: unknown;
    for (let m = 0; m < models.length; m++) {
      const attempts = retry?.attempts ?? 1;
      for (let attempt = 1; attempt <= attempts; attempt++) {
        try {
          const response = await models[m]!.invoke(input, config);
          return { response, events };
        } catch (error) {
          if (isGraphControlFlow(error)) throw error;
          // What the model's error says is redacted before the audit log or the caller holds it.
          last = redactError(error, redaction);
          const text = (last as Error)?.message ?? String(redaction ? redaction.apply(String(error), undefined).value : error);
          failures.push({ model: m, attempt, error: text });
          const next = attempt < attempts ? "retry" : m + 1 < models.length ? "fallback" : "none";
          events.push({ threadId, type: "model.failed", data: { model: m, modelName: modelName(m), attempt, error: text, next } });
          if (next === "retry") await sleep(backoffDelay(retry!, attempt), config.signal);
        }
      }
    }
    await auditLog.append(events);
    throw new ModelUnavailableError(failures, { cause: last });
  }
  const modelName = (i: number): string => {
    const m = i === 0 ? model : fallbacks[i - 1]!;
    return (m as { model?: string }).model ?? m.getName?.() ?? `model ${i}`;
  };

  return async function modelStep(messages: BaseMessage[], config: LangGraphRunnableConfig, threadId: string, context?: ThreadContext, viewer?: RedactionViewer): Promise<ModelStep> {
    const prefix = [...(system ? [system] : []), ...(context && context.items.length > 0 ? [contextMessage(context)] : [])];
    const called = await call(prefix.length > 0 ? [...prefix, ...messages] : messages, config, threadId);
    const answer = modelAnswer(called.response, threadId, { redaction, viewer, held: messages });
    return { ...answer, events: [...called.events, ...answer.events] };
  };
}

/**
 * What eart makes of a model's answer, wherever the model was called (the model node, or
 * `createAgent`'s model call under `governanceMiddleware`): the answer redacted as the viewer may
 * see it, given an id if it has none (decisions and audit events name it), and its events:
 * `model.output` with each proposed call's digest, and `run.completed` when it proposes none.
 */
export function modelAnswer(
  called: BaseMessage,
  threadId: string,
  options: { redaction?: Redaction | undefined; viewer?: RedactionViewer | undefined; held?: readonly BaseMessage[] } = {},
): { message: BaseMessage; toolCalls: ModelStep["toolCalls"]; events: AuditEventInput[] } {
  const { redaction, viewer, held = [] } = options;
  const response = redaction ? redactMessage(called, redaction, viewer, { toolCallFields: false }).message : called;
  // Decisions and audit events name the proposing message, so it needs its id now, and in
  // lc_kwargs too: that is what a checkpointer serialises. A new one too when the provider's id is
  // one the thread holds (providers that repeat ids: LangGraph would put the answer in the held
  // message's place) or one of eart's own messages' ids: the answer is a message of its own.
  if (!response.id || response.id.startsWith(EART_MESSAGE_ID_PREFIX) || held.some((m) => m.id === response.id)) {
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
        toolCalls: toolCalls.map((c) => ({ id: c.id ?? null, name: c.name, args: c.args, digest: proposedCallDigest(c.name, c.args, threadId) })),
      },
    },
  ];
  if (toolCalls.length === 0) events.push({ threadId, type: "run.completed", data: { outcome: "answered", messageId: response.id } });
  return { message: response, toolCalls, events };
}

/**
 * Node that calls the chat model with the thread's messages (after the retrieved context, if any)
 * and the tools bound, and records what
 * it proposed (`model.output`) and, when it answers without tool calls, the run's outcome
 * (`run.completed`).
 * @example
 * ```ts
 * graph.addNode("agent", createModelNode({ model: new ChatOpenAI({ model: "gpt-4o-mini" }), tools, auditLog }));
 * ```
 */
export function createModelNode(options: ModelNodeOptions) {
  const step = modelTurnStep(createModelStep(options), { asIdentity: false });
  return hostSteps<ModelState, { messages?: BaseMessage[] }>(options.auditLog, [step], { before: (state, { threadId }) => assertNoPendingApproval(state, threadId) });
}

/** What the model step reads of the state. */
type ModelState = Pick<GovernedState, "messages"> & Partial<Pick<GovernedState, "decisions" | "context" | "identity">>;

/**
 * A model turn as a {@link Step}: calls the model with the thread's messages (and retrieved
 * context), and adds its answer to `messages`. With `asIdentity`, what the model's answer shows is
 * redacted as the thread's bound identity may see it.
 */
export function modelTurnStep<S extends ModelState>(modelStep: ReturnType<typeof createModelStep>, options: { asIdentity: boolean; sealer?: () => Promise<Sealer> }): Step<S, { messages?: BaseMessage[] }> {
  return async (state, { config, threadId }) => {
    // With the retrieval's sealer, only items it sealed for this thread are shown to the model.
    const held = options.sealer ? sealedContext(await options.sealer(), threadId, state.context) : { context: state.context, forged: [] };
    const turn = await modelStep(state.messages, config, threadId, held.context, options.asIdentity ? state.identity : undefined);
    const events = held.forged.length > 0 ? [forgedContextEvent(threadId, "agent", held.forged), ...turn.events] : turn.events;
    return { update: { messages: [turn.message] }, events };
  };
}
