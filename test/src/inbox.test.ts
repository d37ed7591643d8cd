import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AIMessage } from "@langchain/core/messages";
import { Command } from "@langchain/langgraph";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { AuditInputError, AuditStoreError, EartConfigError, MemoryAuditLog, type AuditEventInput, type AuditLog } from "eart";
import { PostgresAuditLog } from "eart/postgres";
import { SqliteAuditLog } from "eart/sqlite";
import { scriptedModel } from "eart/testing";
import { InboxIndex, inboxChanges, type PendingTask } from "../../src/audit/inbox.js";
import { defineRedaction, STANDARD_REDACTIONS } from "../../src/context/redaction.js";
import { redactingAuditLog } from "../../nodes/redaction.js";
import { ask, config, refund, refundSetup } from "../support/refund.js";
import { reviewed, waitingCase } from "../support/reviews.js";

// A real PostgreSQL. No skip: without it the PostgreSQL cases fail, loudly.
const PG_URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
// A schema of this run's own: the index lists every thread of the store, so it must see only ours.
const SCHEMA = `inbox_${randomUUID().replace(/-/g, "")}`;
const pools: pg.Pool[] = [];
const newPool = (schema = SCHEMA) => {
  const pool = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${schema}` });
  pools.push(pool);
  return pool;
};
const admin = newPool();
await admin.query(`CREATE SCHEMA ${SCHEMA}`);
/** Schemas made beside this run's, one per PostgreSQL log: dropped at the end. */
const schemas: string[] = [];
const dir = mkdtempSync(join(tmpdir(), "eart-inbox-"));
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  const cleanup = new pg.Client({ connectionString: PG_URL });
  await cleanup.connect();
  for (const schema of [SCHEMA, ...schemas]) await cleanup.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
  await cleanup.end();
  rmSync(dir, { recursive: true, force: true });
});

const ev = (threadId: string, type: AuditEventInput["type"], data: Record<string, unknown> = {}): AuditEventInput => ({ threadId, type, data }) as AuditEventInput;
const requester = { agentId: "support-agent", userId: "cara" };

/** An approval request as the policy gate records it: one item per call, each with its roles. */
const approvalRequested = (threadId: string, calls: { id: string; roles: string[]; expiresAt?: string }[], since = "2030-01-01T00:00:00.000Z") =>
  ev(threadId, "approval.requested", {
    type: "eart.approval",
    threadId,
    requestedBy: requester,
    since,
    roles: [...new Set(calls.flatMap((c) => c.roles))],
    requests: calls.map((c) => ({
      toolCallId: c.id,
      name: "issue_refund",
      args: { orderId: "1042", amount: 740 },
      digest: `d-${c.id}`,
      requestedBy: requester,
      reasons: ["over the limit"],
      policyIds: ["refund.supervisor"],
      policyVersion: "v1",
      approverRoles: c.roles,
      ...(c.expiresAt ? { expiresAt: c.expiresAt } : {}),
    })),
  });
const approvalDecided = (threadId: string, toolCallId: string, status = "approved") =>
  ev(threadId, "approval.decided", { toolCallId, name: "issue_refund", digest: `d-${toolCallId}`, approverId: "sam", decision: "approve", status });
const refused = (threadId: string, type: "approval.refused" | "tool.recovery_refused" | "escalation.refused") =>
  ev(threadId, type, { code: "approval_self_approval", message: "cara cannot approve her own request", answer: { decisions: [{ toolCallId: "c1", type: "approve" }] } });

/** What each listed task is, in short: thread, kind, call. */
const keys = (tasks: readonly PendingTask[]) => tasks.map((t) => `${t.threadId}/${t.kind}/${t.toolCallId ?? "-"}`);

/** What replaying every thread's events says waits: the full scan the index stands in for. */
async function replayed(log: AuditLog, role?: string): Promise<PendingTask[]> {
  const index = new InboxIndex();
  for (const threadId of await log.listThreads()) for (const e of await log.read(threadId)) index.apply(e);
  return index.list(role === undefined ? {} : { role });
}

type Store = { name: string; open: () => Promise<AuditLog> };
const stores: Store[] = [
  { name: "memory", open: async () => new MemoryAuditLog() },
  { name: "SQLite", open: async () => new SqliteAuditLog({ path: join(dir, `${randomUUID()}.sqlite`) }) },
  {
    name: "PostgreSQL",
    open: async () => {
      // Each log in a schema of its own: its listing sees only its own threads.
      const schema = `${SCHEMA}_${randomUUID().slice(0, 8)}`;
      await admin.query(`CREATE SCHEMA ${schema}`);
      schemas.push(schema);
      return new PostgresAuditLog({ pool: newPool(schema) });
    },
  },
];

describe.each(stores)("the inbox index of the $name audit log", ({ open }) => {
  it("opens one entry per call of an approval request, with the call's own roles, and closes each as it is decided", async () => {
    const log = await open();
    await log.append([
      ev("t1", "run.started", { agentId: "support-agent", userId: "cara" }),
      approvalRequested("t1", [
        { id: "c1", roles: ["supervisor"], expiresAt: "2030-01-02T00:00:00.000Z" },
        { id: "c2", roles: ["finance"] },
      ]),
    ]);
    const [c1, c2] = await log.pending!();
    expect(c1).toEqual({
      threadId: "t1",
      kind: "approval",
      toolCallId: "c1",
      name: "issue_refund",
      roles: ["supervisor"],
      requestedBy: requester,
      since: "2030-01-01T00:00:00.000Z",
      expiresAt: "2030-01-02T00:00:00.000Z",
      seq: 1,
      at: expect.any(String),
    });
    expect(c2).toMatchObject({ toolCallId: "c2", roles: ["finance"], expiresAt: null });
    expect(keys(await log.pending!({ role: "supervisor" }))).toEqual(["t1/approval/c1"]);
    expect(keys(await log.pending!({ role: "finance" }))).toEqual(["t1/approval/c2"]);
    await log.append(approvalDecided("t1", "c1"));
    expect(keys(await log.pending!())).toEqual(["t1/approval/c2"]);
    expect(await log.pending!({ role: "supervisor" })).toEqual([]);
    await log.append(approvalDecided("t1", "c2"));
    expect(await log.pending!()).toEqual([]);
  });

  it("lists oldest first, by role exactly, and at most `limit`", async () => {
    const log = await open();
    await log.append([
      approvalRequested("late", [{ id: "c1", roles: ["supervisor"] }], "2030-01-03T00:00:00.000Z"),
      approvalRequested("early", [{ id: "c1", roles: ["supervisor", "finance"] }], "2030-01-01T00:00:00.000Z"),
      approvalRequested("middle", [{ id: "c1", roles: ["finance"] }], "2030-01-02T00:00:00.000Z"),
      approvalRequested("odd", [{ id: "c1", roles: ["super%visor", "a_b"] }], "2030-01-04T00:00:00.000Z"),
    ]);
    expect(keys(await log.pending!())).toEqual(["early/approval/c1", "middle/approval/c1", "late/approval/c1", "odd/approval/c1"]);
    expect(keys(await log.pending!({ role: "supervisor" }))).toEqual(["early/approval/c1", "late/approval/c1"]);
    expect(keys(await log.pending!({ role: "supervisor", limit: 1 }))).toEqual(["early/approval/c1"]);
    expect(keys(await log.pending!({ limit: 2 }))).toEqual(["early/approval/c1", "middle/approval/c1"]);
    // A role is a name, never a pattern or a part of one.
    for (const role of ["super", "Supervisor", "%", "_", "super_visor", "supervisor "]) expect(await log.pending!({ role })).toEqual([]);
    expect(keys(await log.pending!({ role: "super%visor" }))).toEqual(["odd/approval/c1"]);
  });

  it("a refused answer closes nothing: the thread still waits", async () => {
    const log = await open();
    await log.append([
      approvalRequested("t1", [{ id: "c1", roles: ["supervisor"] }]),
      ev("t2", "tool.recovery_requested", { toolCallId: "c9", name: "issue_refund", digest: "d", attempt: 1, reason: "outcome_unknown", error: null }),
      ev("t3", "escalation.requested", { reason: "low confidence", signals: [] }),
    ]);
    await log.append([refused("t1", "approval.refused"), refused("t2", "tool.recovery_refused"), refused("t3", "escalation.refused")]);
    expect(keys(await log.pending!()).sort()).toEqual(["t1/approval/c1", "t2/recovery/c9", "t3/escalation/-"]);
  });

  it("an event of one thread never opens or closes an entry of another, whatever thread id its data names", async () => {
    const log = await open();
    await log.append([approvalRequested("A", [{ id: "c1", roles: ["supervisor"] }]), ev("A", "escalation.requested", { reason: "r", signals: [] })]);
    // Thread B answers "A's" call and case: B's own events, so A still waits.
    await log.append([
      { ...approvalDecided("B", "c1"), data: { ...approvalDecided("B", "c1").data, threadId: "A" } } as AuditEventInput,
      ev("B", "approval.expired", { toolCallId: "c1", name: "issue_refund", digest: "d-c1", approverId: null, expiresAt: null, answeredAt: "x", outcome: "expired", threadId: "A" }),
      ev("B", "escalation.decided", { reviewerId: "sam", action: "close", reason: "r", message: "m", threadId: "A" }),
    ]);
    expect(keys(await log.pending!()).sort()).toEqual(["A/approval/c1", "A/escalation/-"]);
    // A request recorded on B that names A in its data waits on B, the thread that asked.
    await log.append({ ...approvalRequested("B", [{ id: "c7", roles: ["supervisor"] }]), data: { ...approvalRequested("A", [{ id: "c7", roles: ["supervisor"] }]).data } } as AuditEventInput);
    expect(keys(await log.pending!()).sort()).toEqual(["A/approval/c1", "A/escalation/-", "B/approval/c7"]);
  });

  it("follows a quorum (decided short of it, asked again), an expiry (answered or asked again), a recovery and an escalation", async () => {
    const log = await open();
    await log.append(approvalRequested("q", [{ id: "c1", roles: ["supervisor"] }]));
    // One of two approvals: the gate records the decision and asks again, in one append.
    const [, again] = await log.append([approvalDecided("q", "c1", "pending_approval"), approvalRequested("q", [{ id: "c1", roles: ["supervisor"] }])]);
    expect(await log.pending!()).toEqual([expect.objectContaining({ threadId: "q", toolCallId: "c1", seq: again!.seq })]);

    await log.append(approvalRequested("x", [{ id: "c1", roles: ["supervisor"] }, { id: "c2", roles: ["supervisor"] }]));
    const expired = (id: string, outcome: string) => ev("x", "approval.expired", { toolCallId: id, name: "issue_refund", digest: `d-${id}`, approverId: "sam", expiresAt: "e", answeredAt: "a", outcome });
    await log.append([expired("c1", "rerequested"), approvalRequested("x", [{ id: "c1", roles: ["supervisor"] }])]);
    expect(keys(await log.pending!({ role: "supervisor" }))).toEqual(["q/approval/c1", "x/approval/c1", "x/approval/c2"]);
    await log.append(expired("c2", "expired"));
    expect(keys(await log.pending!({ role: "supervisor" }))).toEqual(["q/approval/c1", "x/approval/c1"]);

    await log.append([
      ev("r", "tool.recovery_requested", { toolCallId: "c1", name: "issue_refund", digest: "d", attempt: 1, reason: "outcome_unknown", error: null }),
      ev("r", "tool.recovery_requested", { toolCallId: "c2", name: "issue_refund", digest: "d", attempt: 1, reason: "permission_refused", error: "no" }),
      ev("e", "escalation.requested", { reason: "low confidence", signals: [] }),
    ]);
    const recovery = (await log.pending!()).find((t) => t.threadId === "r" && t.toolCallId === "c1");
    // The request event records no roles (the interrupt carries them): listed, never under a role.
    expect(recovery).toMatchObject({ kind: "recovery", name: "issue_refund", roles: null, requestedBy: null });
    expect(keys(await log.pending!({ role: "supervisor" }))).toEqual(["q/approval/c1", "x/approval/c1"]);
    await log.append([ev("r", "tool.recovery_decided", { toolCallId: "c1", name: "issue_refund", digest: "d", attempt: 1, reason: "outcome_unknown", decision: "retry", resolverId: "sam", message: null })]);
    await log.append([ev("e", "escalation.decided", { reviewerId: "sam", action: "take_over", reason: "low confidence", message: "ok" })]);
    expect(keys(await log.pending!()).filter((k) => !k.startsWith("q/") && !k.startsWith("x/"))).toEqual(["r/recovery/c2"]);
    expect(await log.pending!()).toEqual(await replayed(log));
  });

  it("a batch refused for one bad event changes the index no more than the chain", async () => {
    const log = await open();
    await log.append(approvalRequested("t1", [{ id: "c1", roles: ["supervisor"] }]));
    await expect(log.append([approvalDecided("t1", "c1"), approvalRequested("t2", [{ id: "c1", roles: ["supervisor"] }]), ev("t3", "no.such" as AuditEventInput["type"])])).rejects.toThrow(AuditInputError);
    expect(keys(await log.pending!())).toEqual(["t1/approval/c1"]);
  });

  it("says what replaying every thread's events says, after many appends of many threads", async () => {
    const log = await open();
    let seed = 7;
    const next = (n: number) => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31), seed % n);
    const roles = ["supervisor", "finance", "operator"];
    for (let round = 0; round < 20; round++) {
      const batch: AuditEventInput[] = [];
      for (let j = 0; j < 10; j++) {
        const threadId = `t${next(12)}`;
        const call = `c${next(3)}`;
        const pick = next(8);
        if (pick < 3) batch.push(approvalRequested(threadId, [{ id: call, roles: [roles[next(3)]!] }], `2030-01-0${1 + next(9)}T00:00:00.000Z`));
        else if (pick === 3) batch.push(approvalDecided(threadId, call));
        else if (pick === 4) batch.push(refused(threadId, "approval.refused"));
        else if (pick === 5) batch.push(ev(threadId, "tool.recovery_requested", { toolCallId: call, name: "n", digest: "d", attempt: 1, reason: "r", error: null }));
        else if (pick === 6) batch.push(ev(threadId, "tool.recovery_decided", { toolCallId: call, name: "n", digest: "d", attempt: 1, reason: "r", decision: "abandon", resolverId: "sam", message: null }));
        else batch.push(ev(threadId, next(2) ? "escalation.requested" : "escalation.decided", { reason: "r", signals: [], reviewerId: "sam", action: "close", message: "m" }));
      }
      await log.append(batch);
    }
    expect(await log.pending!()).toEqual(await replayed(log));
    for (const role of roles) expect(await log.pending!({ role })).toEqual(await replayed(log, role));
    expect((await log.pending!()).length).toBeGreaterThan(0);
  });

  it("refuses bad options with EartConfigError naming them", async () => {
    const log = await open();
    await expect(log.pending!({ limit: 0 })).rejects.toThrow(EartConfigError);
    await expect(log.pending!({ role: "" })).rejects.toThrow(EartConfigError);
    await expect(log.pending!({ bogus: 1 } as never)).rejects.toThrow(EartConfigError);
  });

  it("is forwarded by a redacting audit log, and kept through it", async () => {
    const log = redactingAuditLog(await open(), defineRedaction(STANDARD_REDACTIONS));
    await log.append(approvalRequested("t1", [{ id: "c1", roles: ["supervisor"] }]));
    expect(keys(await log.pending!({ role: "supervisor" }))).toEqual(["t1/approval/c1"]);
  });
});

describe("the pure reading of events", () => {
  it("opens and closes only on requests and decisions, reading the request defensively", () => {
    const at = "2030-01-01T00:00:00.000Z";
    const read = (type: string, data: Record<string, unknown>) => inboxChanges({ threadId: "t", seq: 3, type: type as AuditEventInput["type"], at, data });
    for (const type of ["run.started", "policy.decided", "approval.refused", "tool.recovery_refused", "escalation.refused", "run.completed", "tool.succeeded"]) {
      expect(read(type, { toolCallId: "c1" })).toEqual([]);
    }
    // Items without a call id open nothing; roles that are not a list of names count as none recorded.
    expect(read("approval.requested", { requests: [{ name: "x" }, null, 7] })).toEqual([]);
    expect(read("approval.requested", { requests: "nope" })).toEqual([]);
    const [open] = read("approval.requested", { since: 5, requests: [{ toolCallId: "c1", approverRoles: [1] }] });
    expect(open).toEqual({ op: "open", task: expect.objectContaining({ toolCallId: "c1", roles: null, since: at, requestedBy: null }) });
    expect(read("approval.decided", {})).toEqual([]);
    expect(read("escalation.decided", {})).toEqual([{ op: "close", threadId: "t", kind: "escalation", toolCallId: null }]);
  });
});

describe("a store whose index is missing or behind is rebuilt from its events", () => {
  const workload = async (log: AuditLog) => {
    await log.append([approvalRequested("t1", [{ id: "c1", roles: ["supervisor"] }, { id: "c2", roles: ["finance"] }]), approvalRequested("t2", [{ id: "c1", roles: ["supervisor"] }])]);
    await log.append([approvalDecided("t1", "c2"), ev("t3", "escalation.requested", { reason: "r", signals: [] })]);
  };
  // The escalation waits since its event (now); the approvals since their requests' 2030.
  const expected = ["t3/escalation/-", "t1/approval/c1", "t2/approval/c1"];

  it("SQLite: a file written before the index, one appended to by a writer that does not keep it, and a damaged row", async () => {
    const path = join(dir, `${randomUUID()}.sqlite`);
    const first = new SqliteAuditLog({ path });
    await workload(first);
    first.close();
    // A file from before the index: its tables are not there.
    let db = new Database(path);
    db.exec(`DROP TABLE eart_inbox; DROP TABLE eart_inbox_roles; DROP TABLE eart_inbox_state;`);
    db.close();
    const reopened = new SqliteAuditLog({ path });
    expect(keys(await reopened.pending())).toEqual(expected);
    expect(keys(await reopened.pending({ role: "supervisor" }))).toEqual(["t1/approval/c1", "t2/approval/c1"]);
    // Kept from then on, in the appends' transactions.
    await reopened.append(approvalDecided("t2", "c1"));
    expect(keys(await reopened.pending())).toEqual(["t3/escalation/-", "t1/approval/c1"]);

    // A writer that does not keep the index appends (the rows go in, the index does not move on).
    db = new Database(path);
    const hidden = new SqliteAuditLog({ database: db });
    db.exec(`CREATE TEMP TRIGGER forget AFTER INSERT ON eart_inbox BEGIN DELETE FROM eart_inbox WHERE rowid = new.rowid; END;`);
    db.exec(`CREATE TEMP TRIGGER stay AFTER UPDATE OF gseq ON eart_inbox_state BEGIN UPDATE eart_inbox_state SET gseq = old.gseq; END;`);
    await hidden.append(approvalRequested("t4", [{ id: "c1", roles: ["supervisor"] }]));
    db.exec(`DROP TRIGGER forget; DROP TRIGGER stay;`);
    expect(db.prepare(`SELECT count(*) AS n FROM eart_inbox WHERE thread_id = 't4'`).get()).toEqual({ n: 0 });
    expect(db.prepare(`SELECT gseq < (SELECT max(gseq) FROM eart_audit_global) AS behind FROM eart_inbox_state`).get()).toEqual({ behind: 1 });
    expect(keys(await reopened.pending({ role: "supervisor" }))).toEqual(["t1/approval/c1", "t4/approval/c1"]);

    // A row edited behind the store's back, with the index current: said, not listed.
    db.prepare(`UPDATE eart_inbox SET task = '{"threadId":"t1"}' WHERE thread_id = 't1'`).run();
    await expect(reopened.pending()).rejects.toThrow(AuditStoreError);
    db.close();
    reopened.close();

    // Read-only (an auditor's copy, even one from before the index): nothing is written, the events are replayed.
    const old = new Database(path);
    old.exec(`DROP TABLE eart_inbox; DROP TABLE eart_inbox_roles; DROP TABLE eart_inbox_state;`);
    old.close();
    const readonly = new Database(path, { readonly: true, fileMustExist: true });
    const auditor = new SqliteAuditLog({ database: readonly });
    expect(keys(await auditor.pending({ role: "supervisor" }))).toEqual(["t1/approval/c1", "t4/approval/c1"]);
    expect(readonly.prepare(`SELECT count(*) AS n FROM sqlite_master WHERE name LIKE 'eart_inbox%'`).get()).toEqual({ n: 0 });
    readonly.close();
  });

  it("PostgreSQL: a database written before the index, and one left behind", async () => {
    const schema = `${SCHEMA}_rebuild`;
    await admin.query(`CREATE SCHEMA ${schema}`);
    try {
      const first = new PostgresAuditLog({ pool: newPool(schema) });
      await workload(first);
      await admin.query(`DROP TABLE ${schema}.eart_inbox, ${schema}.eart_inbox_state`);
      const reopened = new PostgresAuditLog({ pool: newPool(schema) });
      expect(keys(await reopened.pending())).toEqual(expected);
      await reopened.append(approvalDecided("t2", "c1"));
      expect(keys(await reopened.pending({ role: "supervisor" }))).toEqual(["t1/approval/c1"]);
      // Left behind (rows lost, the mark one entry back): rebuilt on the next listing.
      await admin.query(`DELETE FROM ${schema}.eart_inbox`);
      await admin.query(`UPDATE ${schema}.eart_inbox_state SET gseq = gseq - 1`);
      expect(keys(await reopened.pending())).toEqual(["t3/escalation/-", "t1/approval/c1"]);
      // Current, and kept by the next append.
      await reopened.append(approvalRequested("t5", [{ id: "c1", roles: ["supervisor"] }]));
      expect(keys(await reopened.pending({ role: "supervisor" }))).toEqual(["t1/approval/c1", "t5/approval/c1"]);
      const { rows } = await admin.query(`SELECT gseq::int AS covered, (SELECT max(gseq)::int FROM ${schema}.eart_audit_global) AS head FROM ${schema}.eart_inbox_state`);
      expect(rows[0].covered).toBe(rows[0].head);
    } finally {
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    }
  });
});

describe("the inbox of a governed agent", () => {
  it("lists a paused approval under the roles policy asks for, keeps it through a refused answer, and drops it once decided", async () => {
    const { agent, auditLog, refunds } = refundSetup([[refund("call_1", 740)]]);
    await agent.invoke(ask(), config("g1"));
    const [task] = await auditLog.pending!({ role: "supervisor" });
    expect(task).toMatchObject({ threadId: "g1", kind: "approval", toolCallId: "call_1", name: "issue_refund", roles: ["supervisor"], requestedBy: { agentId: "support-agent", userId: "cara" } });
    expect(await auditLog.pending!({ role: "finance" })).toEqual([]);
    const digest = ((await agent.getState(config("g1"))).tasks[0]!.interrupts[0]!.value as { requests: { digest: string }[] }).requests[0]!.digest;
    // The requester answers her own request: refused, and the call still waits.
    await expect(agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "call_1", type: "approve", digest }] } }), config("g1", "cara"))).rejects.toThrow();
    expect(keys(await auditLog.pending!())).toEqual(["g1/approval/call_1"]);
    await agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "call_1", type: "approve", digest }] } }), config("g1", "sam"));
    expect(refunds()).toHaveLength(1);
    expect(await auditLog.pending!()).toEqual([]);
  });

  it("lists a case paused for a reviewer with whom it is about, keeps it through an answer for another case, and drops it once answered", async () => {
    const unsure = scriptedModel(() => new AIMessage(JSON.stringify({ answer: "Probably fine.", confidence: 0.2 })));
    const { agent, auditLog } = refundSetup([], { agent: { model: unsure, escalation: { reviewerRoles: ["supervisor"], confidence: { threshold: 0.7 } } } });
    const request = waitingCase(await agent.invoke(ask("Is my refund approved?"), config("g2")));
    const [task] = await auditLog.pending!({ role: "supervisor" });
    expect(task).toMatchObject({ threadId: "g2", kind: "escalation", toolCallId: null, roles: ["supervisor"], requestedBy: { agentId: "support-agent", userId: "cara" } });
    // An answer naming another case: refused, and the case still waits.
    await expect(agent.invoke(new Command({ resume: reviewed({ digest: "0".repeat(64) }, "close", "Closed.") }), config("g2", "sam"))).rejects.toMatchObject({ code: "approval_digest_mismatch" });
    expect(keys(await auditLog.pending!())).toEqual(["g2/escalation/-"]);
    await agent.invoke(new Command({ resume: reviewed(request, "close", "Closed.") }), config("g2", "sam"));
    expect(await auditLog.pending!()).toEqual([]);
  });
});
