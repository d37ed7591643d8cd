import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { AIMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  LedgerInputError,
  MemoryAuditLog,
  MemoryEffectLedger,
  Sealer,
  toolCallDigest,
  type AuditEvent,
  type AuditLog,
  type DecisionRecord,
  type EffectLedger,
  type LedgerKey,
} from "eart";
import { PostgresAuditLog, PostgresEffectLedger } from "eart/postgres";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedToolNode } from "eart/nodes";
import { countingPool, sqliteCommitCounter } from "../../bench/ledger.js";
import { PG_URL, specGround } from "../support/specs.js";

/**
 * The ledger and the audit log in one transaction domain (SQLite: one connection; PostgreSQL: one
 * pool) commit a governed tool call's claim with `tool.started` and its outcome with the outcome
 * event: two commits per first execution, nothing half-written, crashes recovered as before.
 * PostgreSQL is real (no skip: without it these cases fail, loudly).
 */

let ground: Awaited<ReturnType<typeof specGround>>;
beforeAll(async () => {
  ground = await specGround("ledger_audit_batch");
});
const closers: (() => unknown)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

const ARGS = { orderId: "1042", amount: 50 };
const CALL_ID = "c1";
const MESSAGE_ID = "m1";

interface Stores {
  ledger: EffectLedger;
  auditLog: AuditLog;
  /** Counts the durable commits of the stores' database. */
  counter: { start(): void | Promise<void>; stop(): number | Promise<number> };
  /** An audit log on the same database but another connection (SQLite) or pool (PostgreSQL): no shared transaction. */
  elsewhere(): AuditLog;
  /** Makes the database refuse the insert of `type` events of `threadId` (a trigger: a fault inside the store); returns its removal. */
  refuse(threadId: string, type: string): Promise<() => Promise<void>>;
  /** What a child process needs to open the same stores. */
  child: { sqlite?: string; postgres?: { url: string; schema: string } };
}

interface Backend {
  name: "SQLite" | "PostgreSQL";
  open(): Promise<Stores>;
}

let files = 0;
const backends: Backend[] = [
  {
    name: "SQLite",
    open: async () => {
      const file = join(ground.dir, `batch-${++files}.sqlite`);
      const db = new Database(file);
      db.pragma("journal_mode = WAL");
      db.pragma("busy_timeout = 5000");
      closers.push(() => db.close());
      const ledger = new SqliteEffectLedger({ database: db });
      const auditLog = new SqliteAuditLog({ database: db });
      let triggers = 0;
      return {
        ledger,
        auditLog,
        counter: sqliteCommitCounter(db),
        elsewhere: () => {
          const other = new SqliteAuditLog({ path: file });
          closers.push(() => other.close());
          return other;
        },
        refuse: async (threadId, type) => {
          const name = `eart_test_refuse_${++triggers}`;
          db.exec(
            `CREATE TRIGGER ${name} BEFORE INSERT ON eart_audit_events WHEN NEW.thread_id = '${threadId}' AND NEW.type = '${type}'
             BEGIN SELECT RAISE(ABORT, 'injected audit fault'); END`,
          );
          return async () => void db.exec(`DROP TRIGGER ${name}`);
        },
        child: { sqlite: file },
      };
    },
  },
  {
    name: "PostgreSQL",
    open: async () => {
      const counted = countingPool(ground.mainPool);
      const ledger = new PostgresEffectLedger({ pool: counted.pool });
      const auditLog = new PostgresAuditLog({ pool: counted.pool });
      // Their tables, before a trigger is put on one.
      await ledger.list("none");
      await auditLog.read("none");
      const schema = (await ground.mainPool.query<{ s: string }>("SELECT current_schema() AS s")).rows[0]!.s;
      let triggers = 0;
      return {
        ledger,
        auditLog,
        counter: counted.counter,
        elsewhere: () => new PostgresAuditLog({ pool: ground.otherPool }),
        refuse: async (threadId, type) => {
          const name = `eart_test_refuse_${++triggers}`;
          await ground.mainPool.query(`CREATE OR REPLACE FUNCTION eart_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected audit fault'; END $$`);
          await ground.mainPool.query(
            `CREATE TRIGGER ${name} BEFORE INSERT ON eart_audit_events FOR EACH ROW
             WHEN (NEW.thread_id = '${threadId}' AND NEW.type = '${type}') EXECUTE FUNCTION eart_test_refuse()`,
          );
          return async () => void (await ground.mainPool.query(`DROP TRIGGER ${name} ON eart_audit_events`));
        },
        child: { postgres: { url: PG_URL, schema } },
      };
    },
  },
];

/** The ledger without its shared commits: what every ledger did before (and a ledger of one's own does). */
function separate(inner: EffectLedger): EffectLedger {
  return {
    begin: (key, now) => inner.begin(key, now),
    retry: (key, attempt, now) => inner.retry(key, attempt, now),
    finish: (key, outcome, now) => inner.finish(key, outcome, now),
    get: (key) => inner.get(key),
    list: (threadId) => inner.list(threadId),
    sealKey: () => inner.sealKey(),
  };
}

/** The last AI message with one refund call, and its allowed record sealed with the ledger's key (as the policy gate writes it). */
async function stateFor(ledger: EffectLedger, threadId: string) {
  const digest = toolCallDigest("issue_refund", ARGS, threadId);
  const record: DecisionRecord = {
    schemaVersion: 1,
    toolCallId: CALL_ID,
    messageId: MESSAGE_ID,
    name: "issue_refund",
    args: ARGS,
    digest,
    verdict: { effect: "allow", reasons: [], policyIds: ["refund.small"], version: "v" },
    status: "allowed",
    approvals: [],
    requestedBy: { agentId: "support-agent", userId: "cara" },
    decidedAt: new Date(0).toISOString(),
  };
  const sealer = new Sealer(await ledger.sealKey());
  const key: LedgerKey = { threadId, toolCallId: CALL_ID, digest };
  return {
    key,
    state: { messages: [new AIMessage({ id: MESSAGE_ID, content: "", tool_calls: [{ id: CALL_ID, name: "issue_refund", args: ARGS }] })], decisions: [sealer.decision(threadId, record)] },
    config: { configurable: { thread_id: threadId } },
  };
}

/** The refund tool, counting its runs; `inside` runs in it (after the claim, before the effect). */
function refundTool(inside?: () => Promise<void>) {
  let runs = 0;
  const issue = tool(
    async ({ orderId, amount }) => {
      await inside?.();
      runs++;
      return `refunded ${amount} on ${orderId}`;
    },
    { name: "issue_refund", description: "Refund an order.", schema: z.object({ orderId: z.string(), amount: z.number() }) },
  );
  return { issue, runs: () => runs };
}

const thread = (label: string) => `batch-${label}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
/** An event as compared across threads: its type and data without the digest (which covers the thread id). */
const shape = (e: AuditEvent) => {
  const { digest: _digest, ...data } = e.data as Record<string, unknown>;
  return { type: e.type, data };
};

describe.each(backends)("ledger and audit log in one transaction domain: $name", (backend) => {
  it("commitsWith says yes only for the audit log on the very same connection or pool; an audit it cannot share is refused and nothing is written", async () => {
    const s = await backend.open();
    expect(s.ledger.commitsWith?.(s.auditLog)).toBe(true);
    const elsewhere = s.elsewhere();
    expect(s.ledger.commitsWith?.(elsewhere)).toBe(false);
    expect(s.ledger.commitsWith?.(new MemoryAuditLog())).toBe(false);
    expect(new MemoryEffectLedger().commitsWith(s.auditLog)).toBe(false);

    const threadId = thread("refused");
    const { key } = await stateFor(s.ledger, threadId);
    const events = [{ threadId, type: "tool.started" as const, data: { toolCallId: CALL_ID, name: "issue_refund", digest: key.digest, attempt: 1, try: 1 } }];
    await expect(s.ledger.begin(key, new Date(), { log: elsewhere, events })).rejects.toSatisfy((e) => e instanceof LedgerInputError && e.field === "audit");
    await expect(new MemoryEffectLedger().begin(key, new Date(), { log: s.auditLog, events })).rejects.toBeInstanceOf(LedgerInputError);
    expect(await s.ledger.get(key)).toBeUndefined();
    expect(await s.auditLog.read(threadId)).toEqual([]);
  });

  it("a first execution makes two commits, the claim with tool.started before the tool and the outcome with tool.succeeded after it; events and entry are those of separate writes", async () => {
    const s = await backend.open();
    const together = thread("together");
    const apart = thread("apart");

    // Inside the tool: one commit so far, holding the claim and its start, nothing else.
    const seen: unknown[] = [];
    const probe = async () => {
      const key = (await stateFor(s.ledger, together)).key;
      seen.push({ entry: (await s.ledger.get(key))?.status, events: (await s.auditLog.read(together)).map((e) => e.type), commits: await s.counter.stop() });
    };
    const batchedTool = refundTool(probe);
    const batched = createGovernedToolNode({ tools: [batchedTool.issue], auditLog: s.auditLog, ledger: s.ledger });
    const a = await stateFor(s.ledger, together);
    await s.counter.start();
    const out = await batched(a.state, a.config);
    const commitsTogether = await s.counter.stop();
    expect(out.decisions.map((d) => d.status)).toEqual(["executed"]);
    expect(batchedTool.runs()).toBe(1);
    expect(seen).toEqual([{ entry: "started", events: ["tool.started"], commits: 1 }]);
    expect(commitsTogether).toBe(2);

    const apartTool = refundTool();
    const unbatched = createGovernedToolNode({ tools: [apartTool.issue], auditLog: s.auditLog, ledger: separate(s.ledger) });
    const b = await stateFor(s.ledger, apart);
    await s.counter.start();
    await unbatched(b.state, b.config);
    const commitsApart = await s.counter.stop();
    expect(apartTool.runs()).toBe(1);
    // Before: the claim, tool.started, the outcome, tool.succeeded (with the node's other events).
    expect(commitsApart).toBe(4);

    const eventsTogether = await s.auditLog.read(together);
    const eventsApart = await s.auditLog.read(apart);
    expect(eventsTogether.map((e) => e.type)).toEqual(["tool.started", "tool.succeeded"]);
    expect(eventsTogether.map(shape)).toEqual(eventsApart.map(shape));
    expect(eventsTogether[1]!.data).toMatchObject({ attempt: 1, result: "refunded 50 on 1042", truncated: false });
    const entryTogether = await s.ledger.get(a.key);
    const entryApart = await s.ledger.get(b.key);
    expect(entryTogether).toMatchObject({ status: "succeeded", attempt: 1 });
    expect({ ...entryTogether, key: undefined, startedAt: undefined, finishedAt: undefined }).toEqual({ ...entryApart, key: undefined, startedAt: undefined, finishedAt: undefined });
    for (const id of [together, apart]) expect(await s.auditLog.verify(id)).toMatchObject({ ok: true, count: 2 });
    // The global log and the inbox index are kept by the shared commits as by the log's own appends.
    const global = await s.auditLog.globalLog!();
    const logged = (threadId: string) => global.entries.filter((e) => e.heads.some((h) => h.threadId === threadId)).length;
    expect([logged(together), logged(apart)]).toEqual([2, 2]);
    expect(global.recorded).toEqual({ gseq: global.entries.at(-1)!.gseq, hash: global.entries.at(-1)!.hash });
    await expect(s.auditLog.pending!()).resolves.toEqual(expect.any(Array));
  });

  it("an audit write that fails inside the claim's commit leaves no claim: the tool does not run, and the next run runs it once", async () => {
    const s = await backend.open();
    const threadId = thread("started-fault");
    const refund = refundTool();
    const node = createGovernedToolNode({ tools: [refund.issue], auditLog: s.auditLog, ledger: s.ledger });
    const { key, state, config } = await stateFor(s.ledger, threadId);
    const restore = await s.refuse(threadId, "tool.started");
    await expect(node(state, config)).rejects.toThrow(/injected audit fault/);
    expect(refund.runs()).toBe(0);
    expect(await s.ledger.get(key)).toBeUndefined();
    expect(await s.auditLog.read(threadId)).toEqual([]);
    await restore();

    const out = await node(state, config);
    expect(out.decisions.map((d) => d.status)).toEqual(["executed"]);
    expect(refund.runs()).toBe(1);
    const events = await s.auditLog.read(threadId);
    expect(events.map((e) => e.type)).toEqual(["tool.started", "tool.succeeded"]);
    expect(events.some((e) => "reconstructed" in e.data)).toBe(false);
    expect(await s.auditLog.verify(threadId)).toMatchObject({ ok: true, count: 2 });
  });

  it("the ledger's own writes roll back with a refused audit append: no claim, no outcome, no event", async () => {
    const s = await backend.open();
    const threadId = thread("direct");
    const { key } = await stateFor(s.ledger, threadId);
    const ids = { toolCallId: CALL_ID, name: "issue_refund", digest: key.digest };
    // Data that is not JSON: the audit log refuses it, inside the ledger's transaction.
    const bad = [{ threadId, type: "tool.started" as const, data: { ...ids, attempt: 1, try: 1, note: 10n } as never }];
    await expect(s.ledger.begin(key, new Date(), { log: s.auditLog, events: bad })).rejects.toThrow();
    expect(await s.ledger.get(key)).toBeUndefined();

    const started = [{ threadId, type: "tool.started" as const, data: { ...ids, attempt: 1, try: 1 } }];
    expect((await s.ledger.begin(key, new Date(), { log: s.auditLog, events: started })).claimed).toBe(true);
    // Not claimed again: nothing appended.
    expect((await s.ledger.begin(key, new Date(), { log: s.auditLog, events: started })).claimed).toBe(false);
    const failed = [{ threadId, type: "tool.failed" as const, data: { ...ids, attempt: 1, kind: "error" as const, error: "declined", note: 10n } as never }];
    await expect(s.ledger.finish(key, { status: "failed", error: "declined" }, new Date(), { log: s.auditLog, events: failed })).rejects.toThrow();
    expect(await s.ledger.get(key)).toMatchObject({ status: "started", attempt: 1 });
    expect((await s.auditLog.read(threadId)).map((e) => e.type)).toEqual(["tool.started"]);

    const outcome = [{ threadId, type: "tool.failed" as const, data: { ...ids, attempt: 1, kind: "error" as const, error: "declined" } }];
    expect(await s.ledger.finish(key, { status: "failed", error: "declined" }, new Date(), { log: s.auditLog, events: outcome })).toBe(true);
    // A finished entry is never finished again, and the events of a finish that did nothing are not appended.
    expect(await s.ledger.finish(key, { status: "failed", error: "again" }, new Date(), { log: s.auditLog, events: outcome })).toBe(false);
    expect((await s.auditLog.read(threadId)).map((e) => e.type)).toEqual(["tool.started", "tool.failed"]);
    expect(await s.auditLog.verify(threadId)).toMatchObject({ ok: true, count: 2 });
  });

  it("an audit write that fails inside the outcome's commit does not keep the ledger from recording what the tool did; the event reaches the log on the next run", async () => {
    const s = await backend.open();
    const threadId = thread("outcome-fault");
    const refund = refundTool();
    const node = createGovernedToolNode({ tools: [refund.issue], auditLog: s.auditLog, ledger: s.ledger });
    const { key, state, config } = await stateFor(s.ledger, threadId);
    const restore = await s.refuse(threadId, "tool.succeeded");
    // The outcome is recorded alone; the node's own append of its event fails as well, and says so.
    await expect(node(state, config)).rejects.toThrow(/injected audit fault/);
    expect(refund.runs()).toBe(1);
    expect(await s.ledger.get(key)).toMatchObject({ status: "succeeded", attempt: 1, result: { content: "refunded 50 on 1042" } });
    expect((await s.auditLog.read(threadId)).map((e) => e.type)).toEqual(["tool.started"]);
    await restore();

    const out = await node(state, config);
    expect(refund.runs()).toBe(1);
    expect(out.decisions.map((d) => d.status)).toEqual(["executed"]);
    const events = await s.auditLog.read(threadId);
    expect(events.map((e) => e.type)).toEqual(["tool.started", "tool.succeeded", "tool.replayed"]);
    expect(events[1]!.data).toMatchObject({ attempt: 1, reconstructed: "ledger" });
    expect(await s.auditLog.verify(threadId)).toMatchObject({ ok: true, count: 3 });
  });

  for (const idempotent of [false, true]) {
    it(`a process killed inside the tool, between the two commits, leaves the claim with its tool.started; the next run ${idempotent ? "retries the idempotent tool under the same key" : "asks a human (outcome unknown) and runs nothing"}`, async () => {
      const s = await backend.open();
      const threadId = thread(`killed-${idempotent ? "idem" : "nonidem"}`);
      const child = await runKilledChild(s.child, threadId);
      expect(child.signal).toBe("SIGKILL");
      expect(child.stdout).toContain("in_tool");

      const { key, state, config } = await stateFor(s.ledger, threadId);
      expect(await s.ledger.get(key)).toMatchObject({ status: "started", attempt: 1 });
      const crashed = await s.auditLog.read(threadId);
      expect(crashed.map((e) => e.type)).toEqual(["tool.started"]);
      expect(crashed[0]!.data).toMatchObject({ attempt: 1, try: 1 });
      expect("reconstructed" in crashed[0]!.data).toBe(false);

      const refund = refundTool();
      const node = createGovernedToolNode({ tools: [refund.issue], auditLog: s.auditLog, ledger: s.ledger, execution: { issue_refund: { idempotent } } });
      const out = await node(state, config);
      const events = await s.auditLog.read(threadId);
      if (idempotent) {
        expect(refund.runs()).toBe(1);
        expect(out.decisions.map((d) => d.status)).toEqual(["executed"]);
        expect(await s.ledger.get(key)).toMatchObject({ status: "succeeded", attempt: 2 });
        expect(events.map((e) => [e.type, e.data.attempt])).toEqual([
          ["tool.started", 1],
          ["tool.started", 2],
          ["tool.succeeded", 2],
        ]);
      } else {
        expect(refund.runs()).toBe(0);
        expect(out.decisions[0]).toMatchObject({ status: "recovery_pending", recovery: { reason: "outcome_unknown", attempt: 1 } });
        expect(await s.ledger.get(key)).toMatchObject({ status: "started", attempt: 1 });
        // The start was committed with the claim: nothing to reconstruct.
        expect(events.map((e) => e.type)).toEqual(["tool.started", "tool.recovery_requested"]);
        expect(events.some((e) => "reconstructed" in e.data)).toBe(false);
      }
      expect(await s.auditLog.verify(threadId)).toMatchObject({ ok: true });
    });
  }
});

const DIST = (path: string) => new URL(`../../dist/${path}`, import.meta.url).href;

/**
 * Runs one first execution of the refund call on `threadId` in a child process on the same stores
 * (built eart: `dist`), whose tool kills the process with SIGKILL: after the claim's commit, before
 * any effect or outcome.
 */
async function runKilledChild(where: Stores["child"], threadId: string): Promise<{ signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  if (!existsSync(new URL(DIST("src/index.js")))) throw new Error("dist is missing: build before these tests (npx tsc -p tsconfig.json)");
  const script = `
    const eart = await import(${JSON.stringify(DIST("src/index.js"))});
    const { createGovernedToolNode } = await import(${JSON.stringify(DIST("nodes/index.js"))});
    const { AIMessage } = await import("@langchain/core/messages");
    const { tool } = await import("@langchain/core/tools");
    const { z } = await import("zod");
    const where = ${JSON.stringify(where)};
    const threadId = ${JSON.stringify(threadId)};
    let ledger, auditLog;
    if (where.sqlite) {
      const { default: Database } = await import("better-sqlite3");
      const { SqliteAuditLog, SqliteEffectLedger } = await import(${JSON.stringify(DIST("src/stores/sqlite/index.js"))});
      const db = new Database(where.sqlite);
      db.pragma("journal_mode = WAL");
      db.pragma("busy_timeout = 5000");
      ledger = new SqliteEffectLedger({ database: db });
      auditLog = new SqliteAuditLog({ database: db });
    } else {
      const { default: pg } = await import("pg");
      const { PostgresAuditLog, PostgresEffectLedger } = await import(${JSON.stringify(DIST("src/stores/postgres/index.js"))});
      const pool = new pg.Pool({ connectionString: where.postgres.url, options: "-c search_path=" + where.postgres.schema });
      ledger = new PostgresEffectLedger({ pool });
      auditLog = new PostgresAuditLog({ pool });
    }
    if (!ledger.commitsWith(auditLog)) throw new Error("the child's stores do not share a transaction domain");
    const args = ${JSON.stringify(ARGS)};
    const record = {
      schemaVersion: 1, toolCallId: ${JSON.stringify(CALL_ID)}, messageId: ${JSON.stringify(MESSAGE_ID)}, name: "issue_refund", args,
      digest: eart.toolCallDigest("issue_refund", args, threadId),
      verdict: { effect: "allow", reasons: [], policyIds: ["refund.small"], version: "v" },
      status: "allowed", approvals: [], requestedBy: { agentId: "support-agent", userId: "cara" }, decidedAt: new Date(0).toISOString(),
    };
    const sealer = new eart.Sealer(await ledger.sealKey());
    const issue = tool(async () => {
      process.stdout.write("in_tool\\n", () => process.kill(process.pid, "SIGKILL"));
      return new Promise(() => {});
    }, { name: "issue_refund", description: "Refund an order.", schema: z.object({ orderId: z.string(), amount: z.number() }) });
    const node = createGovernedToolNode({ tools: [issue], auditLog, ledger });
    await node(
      { messages: [new AIMessage({ id: ${JSON.stringify(MESSAGE_ID)}, content: "", tool_calls: [{ id: ${JSON.stringify(CALL_ID)}, name: "issue_refund", args }] })], decisions: [sealer.decision(threadId, record)] },
      { configurable: { thread_id: threadId } },
    );
    console.log("not killed");
  `;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"], cwd: new URL("../..", import.meta.url).pathname });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += String(d)));
  child.stderr.on("data", (d: Buffer) => (stderr += String(d)));
  const signal = await new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
  if (signal !== "SIGKILL") throw new Error(`the child was not killed in the tool: ${stdout}\n${stderr}`);
  return { signal, stdout, stderr };
}
