import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import { AuditLogOption } from "../src/audit/log.js";
import { exportThread, type AuditExporter } from "../src/export/core.js";
import { parseOptions } from "../src/internal/options.js";
import { requireThreadId } from "../langgraph/run.js";

const TraceExportNodeOptionsSchema = z
  .object({
    /** The audit log the graph writes to (not a `createTraceExport` wrapper: that exports already). */
    auditLog: AuditLogOption,
    exporters: z
      .array(z.custom<AuditExporter>((v) => typeof (v as AuditExporter)?.offer === "function", "must be an AuditExporter"))
      .min(1),
    /**
     * Wait for the exporters to send, up to this many ms, before the node returns. Default 0:
     * the node only queues the events (exporting never blocks the graph).
     */
    waitMs: z.number().int().nonnegative().default(0),
    /** Threads whose last exported `seq` (per exporter) this node remembers, so it exports only new events. Default 10,000. */
    maxThreads: z.number().int().positive().default(10_000),
  })
  .strict();
export type TraceExportNodeOptions = z.input<typeof TraceExportNodeOptionsSchema>;

/**
 * A node that exports the thread's audit events written since its last run (all of them the first
 * time in a process), read from the audit log: for a graph that wants an explicit export step,
 * e.g. before `END`, instead of wrapping its audit log with `createTraceExport`. It writes no
 * state and no audit event, and never fails the run because of an exporter. Events an exporter
 * refused (its queue full) are offered to it again on the node's next run on the thread.
 * @example
 * ```ts
 * graph.addNode("export", createTraceExportNode({ auditLog, exporters: [createJsonlExporter({ path: "audit.jsonl" })] }))
 *   .addEdge("agent", "export").addEdge("export", END);
 * ```
 */
export function createTraceExportNode(options: TraceExportNodeOptions) {
  const { auditLog, exporters, waitMs, maxThreads } = parseOptions(TraceExportNodeOptionsSchema, options);
  // Per thread, the last `seq` each exporter took (same order as `exporters`): one that refused an
  // offer is not moved past those events, and the others are not offered them twice.
  const exportedUpTo = new Map<string, number[]>();

  return async function traceExport(_state: unknown, config: LangGraphRunnableConfig): Promise<Record<string, never>> {
    const threadId = requireThreadId(config);
    const took = await exportThread(auditLog, threadId, exporters, exportedUpTo.get(threadId) ?? exporters.map(() => -1));
    exportedUpTo.delete(threadId);
    exportedUpTo.set(threadId, took);
    if (exportedUpTo.size > maxThreads) exportedUpTo.delete(exportedUpTo.keys().next().value!);
    if (waitMs > 0) await Promise.all(exporters.map((x) => Promise.resolve().then(() => x.flush({ timeoutMs: waitMs })).catch(() => false)));
    return {};
  };
}
