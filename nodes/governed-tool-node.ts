import { ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { ToolInputParsingException } from "@langchain/core/tools";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import {
  AuditLogOption,
  BudgetGuardOption,
  parseOptions,
  toolCallDigest,
  type DecisionRecord,
  type DecisionStatus,
} from "../src/index.js";
import { checkToolArgs, indexTools, isGraphControlFlow, lastAIMessage, requireThreadId, ToolsOption } from "./runtime.js";
import type { GovernedState } from "./state.js";

const GovernedToolNodeOptionsSchema = z
  .object({
    tools: ToolsOption.min(1),
    auditLog: AuditLogOption,
    /** Budgets to charge for each call that ran (the same guard the policy gate checks). */
    budgets: BudgetGuardOption.optional(),
  })
  .strict();
export type GovernedToolNodeOptions = z.input<typeof GovernedToolNodeOptionsSchema>;

/** Statuses whose call has been answered to the model already. */
const ANSWERED: ReadonlySet<DecisionStatus> = new Set(["denied", "invalid", "rejected", "responded", "expired", "escalated", "executed", "failed", "blocked"]);
const RUNNABLE: ReadonlySet<DecisionStatus> = new Set(["allowed", "approved"]);
const RESULT_PREVIEW = 2_000;

type ToolCall = { id?: string; name: string; args: Record<string, unknown> };

/**
 * Node that runs the tool calls of the last AI message, each only if the decisions in state
 * allow exactly that call: a record with the same tool call id and the same digest, allowed or
 * approved, not yet run. A call without one is blocked and answered as such, never run. Arguments
 * are validated against the tool's schema; bad model arguments go back to the model as an error
 * `ToolMessage`. Graph interrupts raised inside a tool pass through.
 * @example
 * ```ts
 * graph.addNode("tools", createGovernedToolNode({ tools, auditLog })).addEdge("tools", "agent");
 * ```
 */
export function createGovernedToolNode(options: GovernedToolNodeOptions) {
  const opts = parseOptions(GovernedToolNodeOptionsSchema, options);
  const { auditLog, budgets } = opts;
  const tools = indexTools(opts.tools);

  async function runOne(
    call: ToolCall & { id: string },
    record: DecisionRecord | undefined,
    messageId: string,
    threadId: string,
    config: LangGraphRunnableConfig,
  ): Promise<{ record?: DecisionRecord; message?: ToolMessage }> {
    const now = () => new Date().toISOString();
    const answer = (content: string, status: "success" | "error") =>
      new ToolMessage({ tool_call_id: call.id, name: call.name, content, status });
    const digest = toolCallDigest(call.name, call.args);

    if (record && record.messageId === messageId && ANSWERED.has(record.status)) return {};
    if (record?.status === "pending_approval") return {};
    if (!record || record.messageId !== messageId || !RUNNABLE.has(record.status) || record.digest !== digest) {
      const why = !record || record.messageId !== messageId
        ? "no policy decision was recorded for this call"
        : record.digest !== digest
          ? "the call differs from the one that was allowed or approved"
          : `its decision is ${record.status}`;
      await auditLog.append({
        threadId,
        type: "tool.blocked",
        data: { toolCallId: call.id, name: call.name, digest, recordedDigest: record?.digest ?? null, reason: why },
      });
      return {
        ...(record && record.messageId === messageId ? { record: { ...record, status: "blocked" as const } } : {}),
        message: answer(`Blocked: ${why}.`, "error"),
      };
    }

    const tool = tools.get(call.name);
    if (!tool) {
      await auditLog.append({ threadId, type: "tool.failed", data: { toolCallId: call.id, name: call.name, digest, kind: "unknown_tool", error: "unknown tool" } });
      return { record: { ...record, status: "invalid" }, message: answer(`Unknown tool "${call.name}".`, "error") };
    }

    // The gate validated these exact arguments (same digest); the tool validates them again
    // itself before it runs, and a parse failure there is answered as bad arguments.
    await auditLog.append({ threadId, type: "tool.started", data: { toolCallId: call.id, name: call.name, digest } });
    try {
      const output = await tool.invoke({ type: "tool_call", id: call.id, name: call.name, args: call.args }, config);
      const message = ToolMessage.isInstance(output)
        ? output
        : answer(typeof output === "string" ? output : JSON.stringify(output), "success");
      const content = typeof message.content === "string" ? message.content : JSON.stringify(message.content);
      await auditLog.append({
        threadId,
        type: "tool.succeeded",
        data: { toolCallId: call.id, name: call.name, digest, result: content.slice(0, RESULT_PREVIEW), truncated: content.length > RESULT_PREVIEW },
      });
      return { record: { ...record, status: "executed", executedAt: now() }, message };
    } catch (error) {
      if (isGraphControlFlow(error)) throw error;
      if (error instanceof ToolInputParsingException) {
        const detail = await checkToolArgs(tool, call.args);
        const text = detail.ok ? error.message : detail.message;
        await auditLog.append({ threadId, type: "tool.failed", data: { toolCallId: call.id, name: call.name, digest, kind: "invalid_arguments", error: text } });
        return { record: { ...record, status: "invalid" }, message: answer(`Invalid arguments for ${call.name}: ${text}`, "error") };
      }
      const text = (error as Error)?.message ?? String(error);
      await auditLog.append({ threadId, type: "tool.failed", data: { toolCallId: call.id, name: call.name, digest, kind: "error", error: text } });
      return { record: { ...record, status: "failed", executedAt: now() }, message: answer(`Tool ${call.name} failed: ${text}`, "error") };
    }
  }

  /**
   * Charges the budgets for the calls that ran, one after another so each sees the totals the
   * previous left. A charge that fails is recorded; the call already ran and is not repeated.
   */
  async function charge(
    executed: { call: ToolCall & { id: string } }[],
    state: Partial<Pick<GovernedState, "identity" | "budget">>,
    threadId: string,
  ): Promise<Record<string, number>> {
    const update: Record<string, number> = {};
    if (!budgets || !state.identity) return update;
    const counters = { ...(state.budget ?? {}) };
    for (const { call } of executed) {
      try {
        const totals = await budgets.charge({ identity: state.identity, threadId, tool: { name: call.name, args: call.args }, threadCounters: counters });
        Object.assign(counters, totals);
        Object.assign(update, totals);
      } catch (error) {
        await auditLog.append({
          threadId,
          type: "budget.charge_failed",
          data: { toolCallId: call.id, name: call.name, error: (error as Error)?.message ?? String(error) },
        });
      }
    }
    return update;
  }

  return async function governedTools(
    state: Pick<GovernedState, "messages" | "decisions"> & Partial<Pick<GovernedState, "identity" | "budget">>,
    config: LangGraphRunnableConfig,
  ): Promise<{ decisions: DecisionRecord[]; messages: BaseMessage[]; budget?: Record<string, number> }> {
    const threadId = requireThreadId(config);
    const message = lastAIMessage(state.messages);
    const calls = (message?.tool_calls ?? []) as ToolCall[];
    const records = new Map(state.decisions.map((d) => [d.toolCallId, d]));
    const withIds = calls.filter((c): c is ToolCall & { id: string } => typeof c.id === "string" && c.id !== "");
    const results = await Promise.all(withIds.map((c) => runOne(c, records.get(c.id), message!.id!, threadId, config)));
    const executed = withIds.map((call, i) => ({ call, record: results[i]!.record })).filter((r) => r.record?.status === "executed");
    const budget = executed.length > 0 ? await charge(executed, state, threadId) : {};
    return {
      decisions: results.flatMap((r) => (r.record ? [r.record] : [])),
      messages: results.flatMap((r) => (r.message ? [r.message] : [])),
      ...(Object.keys(budget).length > 0 ? { budget } : {}),
    };
  };
}
