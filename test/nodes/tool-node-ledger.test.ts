import { AIMessage, ToolMessage } from "@langchain/core/messages";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import {
  EartConfigError,
  EffectInProgressError,
  idempotencyKeyOf,
  MemoryAuditLog,
  MemoryEffectLedger,
  StateTamperError,
  toolCallDigest,
  type DecisionRecord,
  type EffectLedger,
  type LedgerKey,
} from "eart";
import { SqliteEffectLedger } from "eart/sqlite";
import { createGovernedToolNode, executionContextOf } from "eart/nodes";
import { tool } from "@langchain/core/tools";
import { z } from "zod";
import { createRefundTools } from "../../examples/refund/tools.js";
import { sealDecision, sealerOf } from "../support/sealing.js";

const cfg = { configurable: { thread_id: "l1" } };
const args = { orderId: "1042", amount: 50 };
const digest = toolCallDigest("issue_refund", args, "l1");
const key: LedgerKey = { threadId: "l1", toolCallId: "c1", digest };
const unsealed: DecisionRecord = {
  schemaVersion: 1,
  toolCallId: "c1",
  messageId: "m1",
  name: "issue_refund",
  args,
  digest,
  verdict: { effect: "allow", reasons: [], policyIds: ["refund.small"], version: "v" },
  status: "allowed",
  approvals: [],
  requestedBy: { agentId: "support-agent", userId: "cara" },
  decidedAt: new Date(0).toISOString(),
};
/** As the policy gate writes it, sealed with the process key (the memory ledger's). */
const record = sealDecision("l1", unsealed);
const state = () => ({ messages: [new AIMessage({ id: "m1", content: "", tool_calls: [{ id: "c1", name: "issue_refund", args }] })], decisions: [record] });

function setup(opts: { idempotent?: boolean; ledger?: EffectLedger } = {}) {
  const db = new Database(":memory:");
  const tools = createRefundTools(db);
  const auditLog = new MemoryAuditLog();
  const ledger = opts.ledger ?? new MemoryEffectLedger();
  const node = createGovernedToolNode({ tools: tools.all, auditLog, ledger, execution: { issue_refund: { idempotent: opts.idempotent ?? false } } });
  const rows = () => db.prepare("SELECT amount, idempotency_key AS key FROM refunds").all() as { amount: number; key: string }[];
  return { node, auditLog, ledger, rows };
}

describe("governed tool node with the effect ledger", () => {
  it("records started then succeeded, and gives the tool its idempotency key", async () => {
    const s = setup();
    const out = await s.node(state(), cfg);
    expect(s.rows()).toEqual([{ amount: 50, key: idempotencyKeyOf(key) }]);
    const entry = await s.ledger.get(key);
    expect(entry).toMatchObject({ status: "succeeded", attempt: 1, result: { content: (out.messages[0] as ToolMessage).content } });
  });

  it("replays a finished execution when the node runs again: the tool is not called, the answer is the same", async () => {
    const s = setup();
    const first = await s.node(state(), cfg);
    const again = await s.node(state(), cfg);
    expect(s.rows()).toHaveLength(1);
    expect(again.messages[0]!.content).toBe(first.messages[0]!.content);
    expect(again.decisions[0]!.status).toBe("executed");
    const events = await s.auditLog.read("l1");
    expect(events.map((e) => e.type)).toEqual(["tool.started", "tool.succeeded", "tool.replayed"]);
  });

  it("replays a recorded failure as a failure, without calling the tool", async () => {
    const s = setup();
    await s.ledger.begin(key);
    await s.ledger.finish(key, { status: "failed", error: "Invalid arguments for issue_refund: no such order" });
    const out = await s.node(state(), cfg);
    expect(s.rows()).toEqual([]);
    expect(out.decisions[0]!.status).toBe("failed");
    expect((out.messages[0] as ToolMessage).status).toBe("error");
  });

  it("hands an execution with an unknown outcome to a human when the tool is not idempotent", async () => {
    const s = setup();
    await s.ledger.begin(key); // a run that crashed after `started`
    const out = await s.node(state(), cfg);
    expect(s.rows()).toEqual([]);
    expect(out.messages).toEqual([]);
    expect(out.decisions[0]).toMatchObject({ status: "recovery_pending", recovery: { reason: "outcome_unknown", attempt: 1, resumeStatus: "allowed" } });
    // The start the crashed run never recorded is reconstructed from the ledger first.
    const events = await s.auditLog.read("l1");
    expect(events.map((e) => e.type)).toEqual(["tool.started", "tool.recovery_requested"]);
    expect(events[0]!.data).toMatchObject({ attempt: 1, reconstructed: "ledger" });
  });

  it("retries an execution with an unknown outcome under the same key when the tool is idempotent", async () => {
    const s = setup({ idempotent: true });
    await s.ledger.begin(key);
    await s.node(state(), cfg);
    expect(s.rows()).toEqual([{ amount: 50, key: idempotencyKeyOf(key) }]);
    expect(await s.ledger.get(key)).toMatchObject({ status: "succeeded", attempt: 2 });
  });

  it("throws EffectInProgressError and runs nothing when another run claimed the retry first", async () => {
    const inner = new MemoryEffectLedger();
    await inner.begin(key);
    const stale = await inner.get(key);
    await inner.retry(key, 1); // another process took attempt 2 meanwhile
    const ledger: EffectLedger = {
      begin: async () => ({ claimed: false, entry: stale! }),
      retry: (k, a, n) => inner.retry(k, a, n),
      finish: (k, o, n) => inner.finish(k, o, n),
      get: async () => stale,
      list: (t) => inner.list(t),
      sealKey: () => inner.sealKey(),
    };
    const s = setup({ idempotent: true, ledger });
    const error = await s.node(state(), cfg).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(EffectInProgressError);
    expect((error as EffectInProgressError).toolCallId).toBe("c1");
    expect(s.rows()).toEqual([]);
  });

  it("keys the ledger entry by the digest that covers the thread (the same call on another thread has another key)", async () => {
    const s = setup();
    await s.node(state(), cfg);
    expect((await s.ledger.list("l1")).map((e) => e.key)).toEqual([key]);
    expect(digest).not.toBe(toolCallDigest("issue_refund", args, "l2"));
  });

  it("trusts the seals of its ledger's store: a SQLite ledger's key, not the process key", async () => {
    const ledgerDb = new Database(":memory:");
    const ledger = new SqliteEffectLedger({ database: ledgerDb });
    const s = setup({ ledger });
    // Sealed with the process key: not this ledger's, so not the gate's of this deployment.
    const error = await s.node(state(), cfg).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StateTamperError);
    expect((error as StateTamperError).code).toBe("state_tamper_detected");
    expect(s.rows()).toEqual([]);
    // Sealed with the ledger's key, as a gate given the same ledger seals it: the call runs.
    const sealed = (await sealerOf(ledger)).decision("l1", unsealed);
    const out = await s.node({ ...state(), decisions: [sealed] }, cfg);
    expect(s.rows()).toEqual([{ amount: 50, key: idempotencyKeyOf(key) }]);
    expect(out.decisions[0]!.status).toBe("executed");
    // The key lives in the store: another ledger on the same database agrees.
    expect((await sealerOf(new SqliteEffectLedger({ database: ledgerDb }))).decisionIsSealed("l1", out.decisions[0]!)).toBe(true);
  });

  it("passes the attempt and key in the tool's config", async () => {
    const seen: unknown[] = [];
    const probe = tool(
      async (_args, config) => {
        seen.push(executionContextOf(config));
        return "ok";
      },
      { name: "issue_refund", schema: z.object({ orderId: z.string(), amount: z.number() }) },
    );
    const node = createGovernedToolNode({ tools: [probe], auditLog: new MemoryAuditLog() });
    await node(state(), cfg);
    expect(seen).toEqual([{ idempotencyKey: idempotencyKeyOf(key), key, attempt: 1 }]);
  });

  it("refuses execution options for a tool it does not have, and bad options", () => {
    const tools = createRefundTools(new Database(":memory:")).all;
    const bad: [unknown, string][] = [
      [{ refund_all: { timeout: 5 } }, "execution"],
      [{ issue_refund: { timeout: -1 } }, "execution"],
      [{ issue_refund: { retry: { attempts: 0 } } }, "execution"],
      [{ issue_refund: { breaker: {} } }, "execution"],
      [{ issue_refund: { fallback: {} } }, "execution"],
    ];
    for (const [execution, field] of bad) {
      let error: unknown;
      try {
        createGovernedToolNode({ tools, auditLog: new MemoryAuditLog(), execution: execution as never });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(EartConfigError);
      expect((error as EartConfigError).field).toBe(field);
    }
    expect(() => createGovernedToolNode({ tools, auditLog: new MemoryAuditLog(), ledger: {} as never })).toThrow(/ledger/);
  });
});
