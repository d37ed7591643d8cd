import type { RunnableConfig } from "@langchain/core/runnables";
import { z } from "zod";
import { AuditLogOption, EartConfigError, parseOptions, type AuditEvent, type AuditLog } from "../src/index.js";

/** The part of a compiled graph an app exposes: what `resumeThread` and `getState` need. */
export interface AppGraph {
  invoke(input: unknown, config?: RunnableConfig): Promise<unknown>;
  getState(config: RunnableConfig): Promise<{ createdAt?: string; values: unknown; tasks: readonly { interrupts?: readonly unknown[] }[] }>;
  checkpointer?: unknown;
}

const AppSchema = z
  .object({
    auditLog: AuditLogOption,
    /** The graphs by agent id (the `agent_id` the threads were started with). */
    graphs: z.record(
      z.string().min(1),
      z.custom<AppGraph>((v) => typeof (v as AppGraph)?.invoke === "function" && typeof (v as AppGraph)?.getState === "function", "must be a compiled graph"),
    ),
    /** Closes what the app opened (databases, pools). */
    close: z.custom<() => unknown>((v) => typeof v === "function", "must be a function").optional(),
  })
  .strict()
  .refine((a) => Object.keys(a.graphs).length > 0, { path: ["graphs"], message: "register at least one graph" });

/** What the `eart` command line (and other tools) open: the audit log and the graphs that write it. */
export interface EartApp {
  auditLog: AuditLog;
  graphs: Record<string, AppGraph>;
  close?: () => unknown;
  /** The graph that runs a thread: the one of the agent that started it (from the audit log). */
  graphFor(threadId: string): Promise<AppGraph>;
}

/** The agent a thread runs, from its first `identity.bound` or `run.started` event. */
export function agentOfThread(events: readonly AuditEvent[]): string | undefined {
  for (const e of events) {
    if ((e.type === "identity.bound" || e.type === "run.started") && typeof e.data.agentId === "string") return e.data.agentId;
  }
  return undefined;
}

/**
 * Registers an app's graphs and the audit log they write, so that the `eart` command line can list
 * what waits for a human, show threads and resume them through the same validation as any resume.
 * A module passed to `eart --app <module>` (or `EART_APP`) default-exports the app, or a function
 * returning it.
 * @example
 * ```ts
 * export default async () => {
 *   const { agent, auditLog, close } = await openRefundAgent(".eart/refund-demo.sqlite");
 *   return defineApp({ auditLog, graphs: { "support-agent": agent }, close });
 * };
 * ```
 */
export function defineApp(app: { auditLog: AuditLog; graphs: Record<string, AppGraph>; close?: () => unknown }): EartApp {
  const parsed = parseOptions(AppSchema, app);
  const names = Object.keys(parsed.graphs);
  return {
    ...parsed,
    async graphFor(threadId: string): Promise<AppGraph> {
      const agentId = agentOfThread(await parsed.auditLog.read(threadId));
      const graph = agentId !== undefined ? parsed.graphs[agentId] : names.length === 1 ? parsed.graphs[names[0]!] : undefined;
      if (!graph) {
        throw new EartConfigError("graphs", agentId ? `no graph is registered for agent "${agentId}" (thread "${threadId}")` : `thread "${threadId}" has no recorded agent, and the app has several graphs`);
      }
      return graph;
    },
  };
}
