import { Command } from "@langchain/langgraph";
import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MemoryEffectLedger, pendingApproval, StoreError } from "eart";
import { ask, config, refund, refundSetup } from "../support/refund.js";

// A real PostgreSQL (.ci/run starts it). No skip: without it this suite fails, loudly.
const url = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const savers: PostgresSaver[] = [];

function saver(): PostgresSaver {
  const s = PostgresSaver.fromConnString(url, { schema: "eart_test" });
  savers.push(s);
  return s;
}

beforeAll(async () => {
  await saver().setup();
});

afterAll(async () => {
  await Promise.all(savers.map((s) => s.end()));
});

describe("the governed agent on LangGraph's PostgreSQL checkpointer", () => {
  it("pauses with one saver and resumes with another connection, running the refund once", async () => {
    const threadId = `pg-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const first = refundSetup([[refund("c1", 740)]], { checkpointer: saver() });
    const request = pendingApproval(await first.agent.invoke(ask(), config(threadId)));
    expect(request?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);

    // A second agent, its own connection pool, shares only the database (and the refunds table).
    const second = refundSetup([[refund("c1", 740)]], { checkpointer: saver(), auditLog: first.auditLog });
    const state = await second.agent.getState(config(threadId));
    expect(pendingApproval(state)).toEqual(request);
    const approve = new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest: request!.requests[0]!.digest }] } });
    // cara, for whom the agent acts, cannot approve her own refund.
    const refused = await second.agent.invoke(approve, config(threadId, "cara")).catch((e: unknown) => e);
    expect((refused as { code?: string }).code).toBe("approval_self_approval");
    expect(second.refunds()).toEqual([]);
    await second.agent.invoke(approve, config(threadId, "sam"));
    expect(second.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(first.refunds()).toEqual([]);
    const events = await first.auditLog.read(threadId);
    expect(events.filter((e) => e.type === "tool.succeeded")).toHaveLength(1);
    expect(await first.auditLog.verify(threadId)).toMatchObject({ ok: true });
  });
});

describe("the PostgresSaver's pool, whatever ledger and lock the agent is given", () => {
  it("gets eart's error listeners: a dropped connection fails a statement, not the process", async () => {
    const s = saver();
    const pool = (s as unknown as { pool: { listenerCount(event: string): number } }).pool;
    const before = { error: pool.listenerCount("error"), connect: pool.listenerCount("connect") };
    refundSetup([], { checkpointer: s, agent: { ledger: new MemoryEffectLedger(), threadLock: false } });
    expect(pool.listenerCount("error")).toBe(before.error + 1);
    expect(pool.listenerCount("connect")).toBe(before.connect + 1);
    // Once per pool, however many agents share it.
    refundSetup([], { checkpointer: s, agent: { ledger: new MemoryEffectLedger(), threadLock: false } });
    expect(pool.listenerCount("error")).toBe(before.error + 1);
  });

  it("a statement whose connection the server terminated runs once more on a new connection, and the run goes on", async () => {
    const tag = `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
    const [schema, app] = [`eart_saver_fault_${tag}`, `eart_saver_fault_${tag}`];
    const admin = new pg.Pool({ connectionString: url, max: 2 });
    const at = new URL(url);
    at.searchParams.set("application_name", app);
    const s = PostgresSaver.fromConnString(at.toString(), { schema });
    savers.push(s);
    try {
      await s.setup();
      const agent = refundSetup([[refund("c1", 740)]], { checkpointer: s, agent: { ledger: new MemoryEffectLedger(), threadLock: false } });
      // The checkpoints table is held: the saver's first statement waits on it, and then its session is terminated.
      const holder = await admin.connect();
      await holder.query(`BEGIN; LOCK TABLE "${schema}".checkpoints IN ACCESS EXCLUSIVE MODE`);
      const run = agent.agent.invoke(ask(), config(`saver-fault-${tag}`)).catch((e: unknown) => e);
      let terminated = 0;
      while (terminated === 0) {
        await new Promise((r) => setTimeout(r, 20));
        const { rows } = await admin.query<{ n: number }>(
          `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
          [app],
        );
        terminated = rows[0]!.n;
      }
      await holder.query("COMMIT");
      holder.release();
      const result = await run;
      expect(result).not.toBeInstanceOf(Error);
      expect(pendingApproval(result as Parameters<typeof pendingApproval>[0])?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    } finally {
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.end();
    }
  });

  it("a database that cannot be reached fails the run with a typed store error of the checkpointer, not a raw driver error", async () => {
    const s = PostgresSaver.fromConnString("postgresql://postgres@127.0.0.1:1/test");
    savers.push(s);
    const agent = refundSetup([[refund("c1", 50)]], { checkpointer: s, agent: { ledger: new MemoryEffectLedger(), threadLock: false } });
    const error = await agent.agent.invoke(ask(), config("saver-down")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreError);
    expect(error).toMatchObject({ code: "store_unavailable", store: "checkpointer", details: { retried: true } });
    expect(agent.refunds()).toEqual([]);
  });
});
