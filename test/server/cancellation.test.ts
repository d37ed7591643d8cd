import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDevServer, type DevServer } from "../support/langgraph-server.js";

/**
 * LangGraph server cancels a run when a newer one replaces it (`multitask_strategy: "interrupt"` or
 * `"rollback"`): for eart that is a cancellation, not a tool failure nobody needs to look at; the
 * replacing input waits until the cut call is run again (continue).
 */
let server: DevServer;
beforeAll(async () => {
  server = await startDevServer({}, { extraGraphs: { "slow-refund": "test/support/slow-refund-graph.ts:graph" } });
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

const auditTypes = (threadId: string) => server.auditTypes(threadId);

async function until<T>(probe: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("a run the server cancels while a tool runs", () => {
  for (const strategy of ["interrupt", "rollback"] as const) {
    // The replacing run is new input on a thread whose refund was cut while it ran (its outcome
    // unknown): eart refuses it (thread_unfinished) before anything is written, so the refund is
    // not dropped for a new turn that would refund again under another call id. The customer
    // continues the thread (input null): the refund runs again under its own idempotency key, once;
    // then her message is taken.
    it(`(${strategy}) records a cancellation, asks nobody to recover it, refuses the replacing input until the thread is continued, and refunds once`, async () => {
      const cara = server.client("cara");
      // The refunds of order 1043 this test makes (the store is the server's, shared by both tests).
      const base = server.rows("refunds", "amount", { sql: "order_id = ?", params: ["1043"] }).length;
      const refunds = () => server.rows("refunds", "amount", { sql: "order_id = ?", params: ["1043"] }).length - base;
      const thread = await cara.threads.create();
      const first = await cara.runs.create(thread.thread_id, "slow-refund", { input: { messages: [{ role: "user", content: "Refund order 1043, $60" }] } });
      // The refund (allowed: $60) is running and waits.
      await until(() => (auditTypes(thread.thread_id).includes("tool.started") && auditTypes(thread.thread_id).filter((t) => t === "tool.started").length >= 2 ? true : undefined));
      const replacing = await cara.runs
        .wait(thread.thread_id, "slow-refund", { input: { messages: [{ role: "user", content: "Refund order 1043, $60" }] }, multitaskStrategy: strategy })
        .then(() => "no error", (e: unknown) => String((e as Error)?.message ?? e));
      expect(replacing).toContain("thread_unfinished");
      const cancelled = await cara.runs.get(thread.thread_id, first.run_id).catch(() => undefined);
      // The server marks a run it interrupted so, and fails then deletes one it rolls back.
      if (cancelled) expect(cancelled.status).toBe(strategy === "interrupt" ? "interrupted" : "error");
      const types = await until(() => {
        const t = auditTypes(thread.thread_id);
        return t.includes("tool.cancelled") ? t : undefined;
      });
      expect(types).not.toContain("tool.failed");
      expect(types).not.toContain("tool.recovery_requested");
      expect(types.filter((t) => t === "tool.cancelled")).toHaveLength(1);
      // The cut attempt never reached the table.
      expect(refunds()).toBe(0);
      // Continued: the same call runs again (idempotent, its own key): one refund in all; then a message is taken.
      await cara.runs.wait(thread.thread_id, "slow-refund", { input: null });
      expect(refunds()).toBe(1);
      const state = await cara.threads.get(thread.thread_id);
      expect(state.status).toBe("idle");
      expect(JSON.stringify(state.interrupts ?? {})).not.toContain("eart.recovery");
      await cara.runs.wait(thread.thread_id, "slow-refund", { input: { messages: [{ role: "user", content: "Thanks" }] } });
      expect(refunds()).toBeGreaterThanOrEqual(1);
    });
  }
});
