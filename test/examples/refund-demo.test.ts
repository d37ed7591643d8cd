import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { beforeAll, describe, expect, it } from "vitest";
import { SqliteAuditLog } from "eart/sqlite";

// The demo runs from the build, in real child processes, as `npm run demo` does.
const demo = resolve("dist/examples/refund/demo.js");

function run(file: string, step?: string) {
  const child = spawnSync(process.execPath, [demo, ...(step ? [step] : [])], {
    env: { ...process.env, EART_DEMO_FILE: file, OPENAI_API_KEY: "" },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { status: child.status, out: child.stdout, err: child.stderr };
}

const refundRows = (file: string) => {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare(`SELECT order_id AS orderId, amount, tool_call_id AS toolCallId FROM refunds`).all();
  } finally {
    db.close();
  }
};

beforeAll(() => {
  if (!existsSync(demo)) throw new Error(`${demo} is missing: run "npm run build" (npm test does) before these tests`);
});

describe("refund demo across two processes on one SQLite file", () => {
  it("pauses in the first process and resumes, once, in the second", () => {
    const file = join(mkdtempSync(join(tmpdir(), "eart-demo-")), "demo.sqlite");

    const first = run(file, "request");
    expect(first.err).toBe("");
    expect(first.status).toBe(0);
    expect(first.out).toContain("paused: waiting for approval");
    expect(first.out).toContain("issue_refund");
    expect(first.out).toContain("approver roles: supervisor");
    expect(refundRows(file)).toEqual([]);

    const second = run(file, "approve");
    expect(second.err).toBe("");
    expect(second.status).toBe(0);
    const firstPid = /\[process (\d+)\]/.exec(first.out)?.[1];
    const secondPid = /\[process (\d+)\]/.exec(second.out)?.[1];
    expect(firstPid).toBeDefined();
    expect(secondPid).not.toBe(firstPid);
    expect(second.out).toContain("Your refund of $740 for order 1042 has been issued.");
    expect(second.out).toMatch(/verify: ok, 14 events/);
    expect(refundRows(file)).toEqual([{ orderId: "1042", amount: 740, toolCallId: "call_1_refund" }]);

    // A second approval of the same thread is refused: nothing is waiting, nothing runs again.
    const again = run(file, "approve");
    expect(again.status).not.toBe(0);
    expect(again.err).toContain("not waiting for an approval");
    expect(refundRows(file)).toHaveLength(1);
  });

  it("plays the whole story with no argument, as npm run demo does", () => {
    const file = join(mkdtempSync(join(tmpdir(), "eart-demo-")), "demo.sqlite");
    const whole = run(file);
    expect(whole.status).toBe(0);
    expect(whole.out).toContain("paused: waiting for approval");
    expect(whole.out).toContain("sam approves call_1_refund");
    expect(whole.out).toMatch(/verify: ok/);
  });
});

describe("a tampered audit file is detected", () => {
  let file: string;

  beforeAll(() => {
    file = join(mkdtempSync(join(tmpdir(), "eart-tamper-")), "demo.sqlite");
    expect(run(file).status).toBe(0);
  });

  /** Copies the demo file, applies `tamper` to the copy with plain SQL, and verifies the copy. */
  async function verifyAfter(tamper: (db: Database.Database) => void) {
    const copy = `${file}.${Math.random().toString(36).slice(2)}.sqlite`;
    const source = new Database(file);
    await source.backup(copy);
    source.close();
    const db = new Database(copy);
    tamper(db);
    db.close();
    const log = new SqliteAuditLog({ path: copy });
    try {
      return await log.verify("refund-1042");
    } finally {
      log.close();
    }
  }

  it("verifies untouched", async () => {
    expect(await verifyAfter(() => {})).toMatchObject({ ok: true, count: 14 });
  });

  it("detects a changed event", async () => {
    const result = await verifyAfter((db) =>
      db.prepare(`UPDATE eart_audit_events SET data = replace(data, '"sam"', '"mallory"') WHERE thread_id = 'refund-1042' AND type = 'approval.decided'`).run(),
    );
    expect(result).toMatchObject({ ok: false, brokenAt: { seq: 9, reason: "hash_mismatch" } });
  });

  it("detects a deleted event", async () => {
    const result = await verifyAfter((db) => db.prepare(`DELETE FROM eart_audit_events WHERE thread_id = 'refund-1042' AND seq = 8`).run());
    expect(result).toMatchObject({ ok: false, brokenAt: { seq: 8, reason: "sequence_gap" } });
  });

  it("detects a deleted last event through the recorded head", async () => {
    const result = await verifyAfter((db) => db.prepare(`DELETE FROM eart_audit_events WHERE thread_id = 'refund-1042' AND seq = 13`).run());
    expect(result).toMatchObject({ ok: false, brokenAt: { reason: "head_mismatch" } });
  });

  it("detects reordered events", async () => {
    const result = await verifyAfter((db) => {
      db.prepare(`UPDATE eart_audit_events SET seq = -1 WHERE thread_id = 'refund-1042' AND seq = 4`).run();
      db.prepare(`UPDATE eart_audit_events SET seq = 4 WHERE thread_id = 'refund-1042' AND seq = 5`).run();
      db.prepare(`UPDATE eart_audit_events SET seq = 5 WHERE thread_id = 'refund-1042' AND seq = -1`).run();
    });
    expect(result.ok).toBe(false);
    expect(result.ok ? -1 : result.brokenAt.seq).toBe(4);
  });

  it("detects an inserted event", async () => {
    const result = await verifyAfter((db) => {
      db.prepare(`UPDATE eart_audit_events SET seq = seq + 1000 WHERE thread_id = 'refund-1042' AND seq >= 9`).run();
      db.prepare(`UPDATE eart_audit_events SET seq = seq - 999 WHERE thread_id = 'refund-1042' AND seq >= 1000`).run();
      const row = db.prepare(`SELECT * FROM eart_audit_events WHERE thread_id = 'refund-1042' AND seq = 10`).get() as Record<string, unknown>;
      db.prepare(
        `INSERT INTO eart_audit_events (thread_id, seq, id, type, at, schema_version, data, prev_hash, hash) VALUES (?, 9, 'forged', 'approval.decided', ?, 1, '{"approverId":"mallory"}', ?, ?)`,
      ).run("refund-1042", row.at, row.prev_hash, row.hash);
    });
    expect(result).toMatchObject({ ok: false, brokenAt: { seq: 9, reason: "hash_mismatch" } });
  });
});
