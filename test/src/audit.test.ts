import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  AUDIT_SCHEMA_VERSION,
  AuditEventSchema,
  AuditStoreError,
  EartConfigError,
  GENESIS_HASH,
  MemoryAuditLog,
  verifyChain,
  type AuditEvent,
  type AuditEventInput,
  type AuditLog,
} from "eart";
import { sealEvents } from "../../src/audit/log.js";
import { canonicalJson, sha256Hex } from "../../src/internal/canonical.js";
import { SqliteAuditLog } from "eart/sqlite";

const dir = mkdtempSync(join(tmpdir(), "eart-audit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const tempDb = () => join(dir, `${randomUUID()}.sqlite`);

/** The hash of an event as the chain defines it, recomputed independently of the library. */
const expectedHash = (e: AuditEvent) =>
  sha256Hex(
    canonicalJson({
      schemaVersion: e.schemaVersion,
      id: e.id,
      threadId: e.threadId,
      seq: e.seq,
      type: e.type,
      at: e.at,
      data: e.data,
      prevHash: e.prevHash,
    }),
  );

function expectChained(events: AuditEvent[], threadId: string) {
  events.forEach((e, i) => {
    expect(AuditEventSchema.safeParse(e).success).toBe(true);
    expect(e.schemaVersion).toBe(1);
    expect(e.threadId).toBe(threadId);
    expect(e.seq).toBe(i);
    expect(e.prevHash).toBe(i === 0 ? GENESIS_HASH : events[i - 1]!.hash);
    expect(e.hash).toBe(expectedHash(e));
  });
}

const ev = (threadId: string, type: AuditEventInput["type"], data: Record<string, unknown> = {}): AuditEventInput => ({ threadId, type, data });

interface Backend {
  name: string;
  open(): { log: AuditLog; close(): void };
}

const backends: Backend[] = [
  { name: "MemoryAuditLog", open: () => ({ log: new MemoryAuditLog(), close: () => {} }) },
  {
    name: "SqliteAuditLog",
    open: () => {
      const log = new SqliteAuditLog({ path: tempDb() });
      return { log, close: () => log.close() };
    },
  },
];

describe("chain constants", () => {
  it("genesis is 64 zeros and the schema version is 1", () => {
    expect(GENESIS_HASH).toBe("0".repeat(64));
    expect(AUDIT_SCHEMA_VERSION).toBe(1);
  });
});

describe.each(backends)("AuditLog conformance: $name", (backend) => {
  let current: ReturnType<Backend["open"]> | undefined;
  const open = () => (current = backend.open()).log;
  afterEach(() => {
    current?.close();
    current = undefined;
  });

  it("appends a single event at seq 0 chained to genesis", async () => {
    const log = open();
    const [event, ...rest] = await log.append(ev("t1", "run.started", { input: "refund 1042" }));
    expect(rest).toEqual([]);
    expect(event).toMatchObject({
      schemaVersion: 1,
      threadId: "t1",
      seq: 0,
      type: "run.started",
      data: { input: "refund 1042" },
      prevHash: GENESIS_HASH,
    });
    expect(event!.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number.isNaN(Date.parse(event!.at))).toBe(false);
    expect(event!.hash).toBe(expectedHash(event!));
    expect(await log.read("t1")).toEqual([event]);
  });

  it("appends a batch in order and continues the chain across appends", async () => {
    const log = open();
    const first = await log.append([ev("t1", "run.started"), ev("t1", "identity.bound", { agentId: "a" }), ev("t1", "model.output")]);
    expect(first.map((e) => e.seq)).toEqual([0, 1, 2]);
    const second = await log.append(ev("t1", "policy.decided", { effect: "allow" }));
    expect(second[0]!.seq).toBe(3);
    expect(second[0]!.prevHash).toBe(first[2]!.hash);
    const third = await log.append([ev("t1", "tool.started"), ev("t1", "tool.succeeded")]);
    expect(third.map((e) => e.seq)).toEqual([4, 5]);
    const all = await log.read("t1");
    expect(all).toEqual([...first, ...second, ...third]);
    expect(all.map((e) => e.type)).toEqual(["run.started", "identity.bound", "model.output", "policy.decided", "tool.started", "tool.succeeded"]);
    expectChained(all, "t1");
    expect(await log.verify("t1")).toEqual({ ok: true, threadId: "t1", count: 6, headHash: all[5]!.hash });
  });

  it("keeps one independent chain per thread, also within one batch", async () => {
    const log = open();
    const out = await log.append([ev("a", "run.started"), ev("b", "run.started"), ev("a", "run.completed"), ev("b", "tool.failed")]);
    expect(out).toHaveLength(4);
    const a = await log.read("a");
    const b = await log.read("b");
    expect(a.map((e) => [e.seq, e.type])).toEqual([
      [0, "run.started"],
      [1, "run.completed"],
    ]);
    expect(b.map((e) => [e.seq, e.type])).toEqual([
      [0, "run.started"],
      [1, "tool.failed"],
    ]);
    expectChained(a, "a");
    expectChained(b, "b");
    await log.append(ev("a", "tool.started"));
    expect((await log.read("b")).length).toBe(2);
    expect((await log.verify("a")).count).toBe(3);
    expect(await log.verify("b")).toMatchObject({ ok: true, count: 2 });
    expect(new Set([...a, ...b].map((e) => e.id)).size).toBe(4);
  });

  it("lists threads that have events, sorted", async () => {
    const log = open();
    expect(await log.listThreads()).toEqual([]);
    await log.append([ev("thread-b", "run.started"), ev("thread-a", "run.started")]);
    await log.append(ev("thread-c", "run.started"));
    expect(await log.listThreads()).toEqual(["thread-a", "thread-b", "thread-c"]);
  });

  it("an unknown thread reads empty and verifies ok with count 0", async () => {
    const log = open();
    expect(await log.read("nope")).toEqual([]);
    expect(await log.verify("nope")).toEqual({ ok: true, threadId: "nope", count: 0, headHash: GENESIS_HASH });
  });

  it("an empty batch appends nothing", async () => {
    const log = open();
    expect(await log.append([])).toEqual([]);
    expect(await log.listThreads()).toEqual([]);
  });

  it("keeps a given `at` and stores data as plain JSON, exactly as hashed", async () => {
    const log = open();
    const [event] = await log.append({
      threadId: "t",
      type: "tool.succeeded",
      at: "2024-05-01T10:00:00.000Z",
      data: { when: new Date("2024-01-02T03:04:05.000Z"), skipped: undefined, nested: { n: 1.5, list: [1, "x", null] } },
    });
    expect(event!.at).toBe("2024-05-01T10:00:00.000Z");
    expect(event!.data).toEqual({ when: "2024-01-02T03:04:05.000Z", nested: { n: 1.5, list: [1, "x", null] } });
    expect(Object.keys(event!.data)).not.toContain("skipped");
    expect(await log.read("t")).toEqual([event]);
    expect((await log.verify("t")).ok).toBe(true);
  });

  it("defaults data to {}", async () => {
    const log = open();
    const [event] = await log.append({ threadId: "t", type: "run.started" });
    expect(event!.data).toEqual({});
  });

  it("returns copies: mutating returned or read events does not change the log", async () => {
    const log = open();
    const [appended] = await log.append(ev("t", "run.started", { amount: 1 }));
    appended!.data.amount = 999;
    const [read] = await log.read("t");
    expect(read!.data).toEqual({ amount: 1 });
    read!.data.amount = 500;
    read!.type = "tool.failed";
    expect((await log.read("t"))[0]).toMatchObject({ type: "run.started", data: { amount: 1 } });
    expect((await log.verify("t")).ok).toBe(true);
  });

  it.each([
    ["an unknown event type", { threadId: "t", type: "tool.exploded" }],
    ["an empty thread id", { threadId: "", type: "run.started" }],
    ["non-object data", { threadId: "t", type: "run.started", data: "x" }],
  ])("refuses %s and stores nothing", async (_label, bad) => {
    const log = open();
    await expect(log.append(bad as AuditEventInput)).rejects.toThrow();
    expect(await log.read("t")).toEqual([]);
    expect(await log.listThreads()).toEqual([]);
  });

  it("a batch with one bad event stores nothing, in the same thread", async () => {
    const log = open();
    await log.append(ev("t", "run.started"));
    await expect(log.append([ev("t", "model.output"), { threadId: "t", type: "bogus" } as unknown as AuditEventInput])).rejects.toThrow();
    expect((await log.read("t")).map((e) => e.type)).toEqual(["run.started"]);
    expect(await log.verify("t")).toMatchObject({ ok: true, count: 1 });
  });

  // AuditLog.append is documented as atomic: a batch spanning threads must not be half-written.
  it("a batch with one bad event stores nothing, across threads", async () => {
    const log = open();
    await expect(log.append([ev("a", "run.started"), { threadId: "b", type: "bogus" } as unknown as AuditEventInput])).rejects.toThrow();
    expect(await log.read("a")).toEqual([]);
    expect(await log.listThreads()).toEqual([]);
  });
});

describe("verifyChain", () => {
  const sealed = sealEvents(null, [ev("t", "run.started"), ev("t", "model.output", { text: "hi" }), ev("t", "run.completed")]);

  it("is ok for an empty thread with count 0, with or without a null head", () => {
    expect(verifyChain("t", [])).toEqual({ ok: true, threadId: "t", count: 0, headHash: GENESIS_HASH });
    expect(verifyChain("t", [], null)).toEqual({ ok: true, threadId: "t", count: 0, headHash: GENESIS_HASH });
  });

  it("is ok for a sealed chain and its head", () => {
    expect(verifyChain("t", sealed, { seq: 2, hash: sealed[2]!.hash })).toEqual({ ok: true, threadId: "t", count: 3, headHash: sealed[2]!.hash });
  });

  it("sealEvents continues from a head", () => {
    const more = sealEvents({ seq: 2, hash: sealed[2]!.hash }, [ev("t", "tool.started")]);
    expect(more[0]).toMatchObject({ seq: 3, prevHash: sealed[2]!.hash });
    expect(verifyChain("t", [...sealed, ...more]).ok).toBe(true);
  });

  it("reports an event of another thread as malformed", () => {
    const other = sealEvents(null, [ev("u", "run.started")]);
    const r = verifyChain("t", other);
    expect(r).toMatchObject({ ok: false, brokenAt: { seq: 0, reason: "malformed", found: "threadId u", eventId: other[0]!.id } });
  });

  it("reports a non-event as malformed", () => {
    const r = verifyChain("t", [sealed[0], { id: "x" }]);
    expect(r).toMatchObject({ ok: false, count: 2, brokenAt: { seq: 1, reason: "malformed", eventId: "x" } });
  });

  it("reports a changed field as hash_mismatch at that seq", () => {
    const tampered = structuredClone(sealed);
    tampered[1]!.at = "1999-01-01T00:00:00.000Z";
    const r = verifyChain("t", tampered);
    expect(r).toEqual({
      ok: false,
      threadId: "t",
      count: 3,
      brokenAt: { seq: 1, eventId: sealed[1]!.id, reason: "hash_mismatch", expected: expectedHash(tampered[1]!), found: sealed[1]!.hash },
    });
  });

  it("reports a missing head as head_mismatch", () => {
    expect(verifyChain("t", sealed, null)).toMatchObject({
      ok: false,
      brokenAt: { reason: "head_mismatch", seq: 0, expected: `-1:${GENESIS_HASH}`, found: `2:${sealed[2]!.hash}` },
    });
  });
});

describe("SqliteAuditLog", () => {
  const logs: SqliteAuditLog[] = [];
  afterEach(() => {
    for (const log of logs.splice(0)) log.close();
  });
  const openLog = (path: string) => {
    const log = new SqliteAuditLog({ path });
    logs.push(log);
    return log;
  };

  /** A file with thread "t" holding five events (seq 0..4) and thread "other" holding two. */
  async function seeded() {
    const path = tempDb();
    const log = openLog(path);
    const events = await log.append([
      ev("t", "run.started", { input: "refund 1042" }),
      ev("t", "identity.bound", { agentId: "support-agent", userId: "cara" }),
      ev("t", "policy.decided", { effect: "require_approval", amount: 740 }),
      ev("t", "approval.decided", { approverId: "sam" }),
      ev("t", "tool.succeeded", { refundId: "r-1" }),
    ]);
    await log.append([ev("other", "run.started"), ev("other", "run.completed")]);
    expect(await log.verify("t")).toMatchObject({ ok: true, count: 5 });
    return { path, log, events };
  }

  /** Runs SQL on the file through a separate connection, as an attacker with file access would. */
  function tamper(path: string, fn: (db: Database.Database) => void) {
    const db = new Database(path);
    try {
      fn(db);
    } finally {
      db.close();
    }
  }

  it("refuses invalid options with EartConfigError", () => {
    expect(() => new SqliteAuditLog({} as { path: string })).toThrow(EartConfigError);
    expect(() => new SqliteAuditLog({ path: "" })).toThrow(EartConfigError);
    expect(() => new SqliteAuditLog({ database: {} } as unknown as { database: Database.Database })).toThrow(EartConfigError);
  });

  it("fails to open a file in a missing directory with AuditStoreError", () => {
    let error: unknown;
    try {
      new SqliteAuditLog({ path: join(dir, "missing-dir", "x", "audit.sqlite") });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(AuditStoreError);
    expect((error as AuditStoreError).code).toBe("audit_store_failure");
  });

  it("stores events and the chain head in its tables", async () => {
    const { path, events } = await seeded();
    tamper(path, (db) => {
      const rows = db.prepare(`SELECT seq, id, hash, prev_hash, schema_version, data FROM eart_audit_events WHERE thread_id = 't' ORDER BY seq`).all() as {
        seq: number;
        id: string;
        hash: string;
        prev_hash: string;
        schema_version: number;
        data: string;
      }[];
      expect(rows.map((r) => r.seq)).toEqual([0, 1, 2, 3, 4]);
      expect(rows.map((r) => r.id)).toEqual(events.map((e) => e.id));
      expect(rows.every((r) => r.schema_version === 1)).toBe(true);
      expect(JSON.parse(rows[2]!.data)).toEqual({ effect: "require_approval", amount: 740 });
      expect(db.prepare(`SELECT seq, hash FROM eart_audit_heads WHERE thread_id = 't'`).get()).toEqual({ seq: 4, hash: events[4]!.hash });
    });
  });

  it("detects changed data of a middle event as hash_mismatch at its seq", async () => {
    const { path, log, events } = await seeded();
    tamper(path, (db) => db.prepare(`UPDATE eart_audit_events SET data = ? WHERE thread_id = 't' AND seq = 2`).run(JSON.stringify({ effect: "allow", amount: 740 })));
    const r = await log.verify("t");
    expect(r).toMatchObject({ ok: false, threadId: "t", count: 5, brokenAt: { seq: 2, reason: "hash_mismatch", eventId: events[2]!.id, found: events[2]!.hash } });
    expect(await log.verify("other")).toMatchObject({ ok: true, count: 2 });
  });

  it("detects a changed type, time or id of a middle event as hash_mismatch", async () => {
    for (const [column, value] of [
      ["type", "tool.failed"],
      ["at", "2000-01-01T00:00:00.000Z"],
      ["id", randomUUID()],
    ] as const) {
      const { path, log } = await seeded();
      tamper(path, (db) => db.prepare(`UPDATE eart_audit_events SET ${column} = ? WHERE thread_id = 't' AND seq = 3`).run(value));
      expect(await log.verify("t"), column).toMatchObject({ ok: false, brokenAt: { seq: 3, reason: "hash_mismatch" } });
    }
  });

  it("detects a changed event whose hash was recomputed as prev_hash_mismatch at the next seq", async () => {
    const { path, log, events } = await seeded();
    const forged: AuditEvent = { ...events[1]!, data: { agentId: "support-agent", userId: "sam" } };
    forged.hash = expectedHash(forged);
    tamper(path, (db) => db.prepare(`UPDATE eart_audit_events SET data = ?, hash = ? WHERE thread_id = 't' AND seq = 1`).run(JSON.stringify(forged.data), forged.hash));
    expect(await log.verify("t")).toMatchObject({
      ok: false,
      brokenAt: { seq: 2, reason: "prev_hash_mismatch", expected: forged.hash, found: events[1]!.hash, eventId: events[2]!.id },
    });
  });

  it("detects a deleted middle event as a sequence gap at its seq", async () => {
    const { path, log, events } = await seeded();
    tamper(path, (db) => db.prepare(`DELETE FROM eart_audit_events WHERE thread_id = 't' AND seq = 2`).run());
    expect(await log.verify("t")).toEqual({
      ok: false,
      threadId: "t",
      count: 4,
      brokenAt: { seq: 2, eventId: events[3]!.id, reason: "sequence_gap", expected: "2", found: "3" },
    });
  });

  it("detects a deleted middle event whose successors were renumbered, at its seq", async () => {
    const { path, log, events } = await seeded();
    tamper(path, (db) => {
      db.prepare(`DELETE FROM eart_audit_events WHERE thread_id = 't' AND seq = 2`).run();
      db.prepare(`UPDATE eart_audit_events SET seq = seq - 1 WHERE thread_id = 't' AND seq = 3`).run();
      db.prepare(`UPDATE eart_audit_events SET seq = seq - 1 WHERE thread_id = 't' AND seq = 4`).run();
      db.prepare(`UPDATE eart_audit_heads SET seq = 3 WHERE thread_id = 't'`).run();
    });
    expect(await log.verify("t")).toMatchObject({ ok: false, count: 4, brokenAt: { seq: 2, eventId: events[3]!.id } });
  });

  it("detects a deleted first event at seq 0", async () => {
    const { path, log } = await seeded();
    tamper(path, (db) => db.prepare(`DELETE FROM eart_audit_events WHERE thread_id = 't' AND seq = 0`).run());
    expect(await log.verify("t")).toMatchObject({ ok: false, brokenAt: { seq: 0, reason: "sequence_gap", expected: "0", found: "1" } });
  });

  it("detects a deleted last event as head_mismatch at its seq", async () => {
    const { path, log, events } = await seeded();
    tamper(path, (db) => db.prepare(`DELETE FROM eart_audit_events WHERE thread_id = 't' AND seq = 4`).run());
    expect(await log.verify("t")).toEqual({
      ok: false,
      threadId: "t",
      count: 4,
      brokenAt: { seq: 4, eventId: undefined, reason: "head_mismatch", expected: `4:${events[4]!.hash}`, found: `3:${events[3]!.hash}` },
    });
  });

  it("detects every event of a thread deleted as head_mismatch at seq 0", async () => {
    const { path, log, events } = await seeded();
    tamper(path, (db) => db.prepare(`DELETE FROM eart_audit_events WHERE thread_id = 't'`).run());
    expect(await log.verify("t")).toMatchObject({
      ok: false,
      count: 0,
      brokenAt: { seq: 0, reason: "head_mismatch", expected: `4:${events[4]!.hash}`, found: `-1:${GENESIS_HASH}` },
    });
  });

  it("detects a deleted head row", async () => {
    const { path, log } = await seeded();
    tamper(path, (db) => db.prepare(`DELETE FROM eart_audit_heads WHERE thread_id = 't'`).run());
    expect(await log.verify("t")).toMatchObject({ ok: false, brokenAt: { reason: "head_mismatch", expected: `-1:${GENESIS_HASH}` } });
  });

  const insertForged = (db: Database.Database, e: AuditEvent) =>
    db
      .prepare(
        `INSERT INTO eart_audit_events (thread_id, seq, id, type, at, schema_version, data, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(e.threadId, e.seq, e.id, e.type, e.at, e.schemaVersion, JSON.stringify(e.data), e.prevHash, e.hash);

  it("detects a forged event appended at the end with a wrong hash, at its seq", async () => {
    const { path, log, events } = await seeded();
    const [forged] = sealEvents({ seq: 4, hash: events[4]!.hash }, [ev("t", "tool.succeeded", { refundId: "r-2" })]);
    const bad = { ...forged!, hash: "f".repeat(64) };
    tamper(path, (db) => insertForged(db, bad));
    expect(await log.verify("t")).toMatchObject({ ok: false, count: 6, brokenAt: { seq: 5, reason: "hash_mismatch", eventId: forged!.id, found: "f".repeat(64) } });
  });

  it("detects a forged event appended at the end with a correctly chained hash, against the head", async () => {
    const { path, log, events } = await seeded();
    const [forged] = sealEvents({ seq: 4, hash: events[4]!.hash }, [ev("t", "tool.succeeded", { refundId: "r-2" })]);
    expect(forged!.hash).toBe(expectedHash(forged!));
    tamper(path, (db) => insertForged(db, forged!));
    const r = await log.verify("t");
    expect(r.ok).toBe(false);
    expect(r).toMatchObject({ count: 6, brokenAt: { reason: "head_mismatch", expected: `4:${events[4]!.hash}`, found: `5:${forged!.hash}` } });
  });

  // The break is at the first event the recorded head does not cover (seq 5), not past the end.
  it("reports the seq of a forged, correctly chained last event as the break position", async () => {
    const { path, log, events } = await seeded();
    const [forged] = sealEvents({ seq: 4, hash: events[4]!.hash }, [ev("t", "tool.succeeded", { refundId: "r-2" })]);
    tamper(path, (db) => insertForged(db, forged!));
    const r = await log.verify("t");
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.brokenAt.seq).toBe(5);
  });

  it("detects two events whose seqs were swapped", async () => {
    const { path, log, events } = await seeded();
    tamper(path, (db) => {
      const swap = db.transaction(() => {
        db.prepare(`UPDATE eart_audit_events SET seq = -1 WHERE thread_id = 't' AND seq = 1`).run();
        db.prepare(`UPDATE eart_audit_events SET seq = 1 WHERE thread_id = 't' AND seq = 2`).run();
        db.prepare(`UPDATE eart_audit_events SET seq = 2 WHERE thread_id = 't' AND seq = -1`).run();
      });
      swap();
    });
    const read = await log.read("t");
    expect(read.map((e) => e.id)).toEqual([events[0]!.id, events[2]!.id, events[1]!.id, events[3]!.id, events[4]!.id]);
    expect(await log.verify("t")).toMatchObject({
      ok: false,
      brokenAt: { seq: 1, reason: "prev_hash_mismatch", eventId: events[2]!.id, expected: events[0]!.hash, found: events[1]!.hash },
    });
  });

  it("detects events moved between threads", async () => {
    const { path, log } = await seeded();
    tamper(path, (db) => db.prepare(`UPDATE eart_audit_events SET thread_id = 'other', seq = 2 WHERE thread_id = 't' AND seq = 4`).run());
    expect(await log.verify("t")).toMatchObject({ ok: false, brokenAt: { seq: 4, reason: "head_mismatch" } });
    expect(await log.verify("other")).toMatchObject({ ok: false, brokenAt: { seq: 2, reason: "prev_hash_mismatch" } });
  });

  it("reports unreadable data and a wrong schema version as malformed at that seq", async () => {
    const { path, log, events } = await seeded();
    tamper(path, (db) => db.prepare(`UPDATE eart_audit_events SET data = '{not json' WHERE thread_id = 't' AND seq = 3`).run());
    expect(await log.verify("t")).toMatchObject({ ok: false, brokenAt: { seq: 3, reason: "malformed", eventId: events[3]!.id } });

    const second = await seeded();
    tamper(second.path, (db) => db.prepare(`UPDATE eart_audit_events SET schema_version = 2 WHERE thread_id = 't' AND seq = 1`).run());
    expect(await second.log.verify("t")).toMatchObject({ ok: false, brokenAt: { seq: 1, reason: "malformed" } });
  });

  it("a new instance on the same file reads, verifies and continues the same chain", async () => {
    const { path, log, events } = await seeded();
    log.close();
    logs.splice(logs.indexOf(log), 1);
    const reopened = openLog(path);
    expect(await reopened.read("t")).toEqual(events);
    expect(await reopened.verify("t")).toEqual({ ok: true, threadId: "t", count: 5, headHash: events[4]!.hash });
    expect(await reopened.listThreads()).toEqual(["other", "t"]);
    const [next] = await reopened.append(ev("t", "run.completed"));
    expect(next).toMatchObject({ seq: 5, prevHash: events[4]!.hash });
    const all = await reopened.read("t");
    expectChained(all, "t");
    expect(await reopened.verify("t")).toMatchObject({ ok: true, count: 6, headHash: next!.hash });
  });

  it("two instances on one file share one chain", async () => {
    const path = tempDb();
    const a = openLog(path);
    const b = openLog(path);
    await a.append(ev("t", "run.started"));
    await b.append(ev("t", "model.output"));
    await a.append(ev("t", "run.completed"));
    const read = await b.read("t");
    expect(read.map((e) => e.seq)).toEqual([0, 1, 2]);
    expectChained(read, "t");
    expect((await a.verify("t")).ok).toBe(true);
  });

  it("works on a shared database and does not close it", async () => {
    const db = new Database(tempDb());
    const log = new SqliteAuditLog({ database: db });
    await log.append(ev("t", "run.started"));
    log.close();
    expect(db.open).toBe(true);
    expect(db.prepare(`SELECT COUNT(*) AS n FROM eart_audit_events`).get()).toEqual({ n: 1 });
    db.close();
  });

  it("a failed append is an AuditStoreError", async () => {
    const log = new SqliteAuditLog({ path: tempDb() });
    log.close();
    await expect(log.append(ev("t", "run.started"))).rejects.toBeInstanceOf(AuditStoreError);
  });

  // AuditStoreError is documented as "an audit store could not be read or written".
  it("a failed read, verify or listThreads is an AuditStoreError", async () => {
    const log = new SqliteAuditLog({ path: tempDb() });
    log.close();
    await expect(log.read("t")).rejects.toBeInstanceOf(AuditStoreError);
    await expect(log.verify("t")).rejects.toBeInstanceOf(AuditStoreError);
    await expect(log.listThreads()).rejects.toBeInstanceOf(AuditStoreError);
  });
});

describe("SqliteAuditLog across processes", () => {
  const distEntry = join(process.cwd(), "dist", "src", "index.js");

  it("a second process appending to the same file keeps one contiguous, verifiable chain", async () => {
    expect(existsSync(distEntry), "run `npm run build` first").toBe(true);
    const path = tempDb();
    const log = new SqliteAuditLog({ path });
    await log.append(ev("shared", "run.started", { writer: "parent" }));

    const N = 150;
    const script = join(dir, `writer-${randomUUID()}.mjs`);
    writeFileSync(
      script,
      `import { SqliteAuditLog } from ${JSON.stringify(pathToFileURL(join(dirname(distEntry), "stores", "sqlite", "index.js")).href)};
const log = new SqliteAuditLog({ path: process.argv[2] });
process.stdout.write("ready\\n");
for (let i = 0; i < ${N}; i++) {
  await log.append(i % 10 === 0
    ? [{ threadId: "shared", type: "model.output", data: { writer: "child", i } }, { threadId: "shared", type: "model.output", data: { writer: "child", i, batch: true } }]
    : { threadId: "shared", type: "model.output", data: { writer: "child", i } });
  if (i % 3 === 0) await new Promise((r) => setTimeout(r, 1));
}
log.close();
process.stdout.write("done\\n");
`,
    );

    const child = spawn(process.execPath, [script, path], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (c: Buffer) => {
        stdout += c.toString();
        if (stdout.includes("ready")) resolve();
      });
      child.on("exit", () => reject(new Error(`child exited early: ${stderr}`)));
    });

    for (let i = 0; i < N; i++) {
      await log.append({ threadId: "shared", type: "tool.started", data: { writer: "parent", i } });
      if (i % 3 === 0) await new Promise((r) => setTimeout(r, 1));
    }

    expect(await exited, stderr).toBe(0);
    expect(stdout).toContain("done");

    const events = await log.read("shared");
    const childEvents = events.filter((e) => e.data.writer === "child");
    const parentEvents = events.filter((e) => e.data.writer === "parent");
    expect(childEvents).toHaveLength(N + N / 10);
    expect(parentEvents).toHaveLength(N + 1);
    expect(events).toHaveLength(1 + N + N + N / 10);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i));
    expectChained(events, "shared");
    expect(await log.verify("shared")).toEqual({ ok: true, threadId: "shared", count: events.length, headHash: events.at(-1)!.hash });
    // Each writer's events keep their own order inside the shared chain.
    expect(parentEvents.slice(1).map((e) => e.data.i)).toEqual([...Array(N).keys()]);
    // A child batch is contiguous: its two events sit next to each other.
    for (const e of events.filter((x) => x.data.batch === true)) {
      const prev = events[e.seq - 1]!;
      expect(prev.data).toEqual({ writer: "child", i: e.data.i });
    }
    log.close();
  });
});
