import { execFile, spawnSync } from "node:child_process";
import { promisify } from "node:util";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { generateKeyPairSync } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { beforeAll, describe, expect, it } from "vitest";
import { startCaptureServer } from "../support/capture-server.js";
import { answerWithoutRef, withListedRef } from "../support/cli-ref.js";

// The command line runs from the build, in real processes, against the refund example's SQLite file.
const cli = resolve("dist/cli/eart.js");
const demo = resolve("dist/examples/refund/demo.js");
const app = resolve("dist/examples/refund/app.js");

beforeAll(() => {
  for (const f of [cli, demo, app]) if (!existsSync(f)) throw new Error(`${f} is missing: run "npm run build" (npm test does) before these tests`);
});

function run(file: string, args: string[], env: Record<string, string> = {}) {
  // An answer names the ref `pending` lists (cli-ref.ts).
  if (answerWithoutRef(args)) {
    const listed = spawn(file, ["pending", "--json"], env);
    args = withListedRef(args, listed.status === 0 ? (JSON.parse(listed.out) as { threadId: string; ref: string | null }[]) : []);
  }
  return spawn(file, args, env);
}

function spawn(file: string, args: string[], env: Record<string, string>) {
  const child = spawnSync(process.execPath, [cli, "--app", app, ...args], {
    env: { ...process.env, EART_DEMO_FILE: file, OPENAI_API_KEY: "", NO_COLOR: "1", ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { status: child.status, out: child.stdout, err: child.stderr };
}

/** A fresh SQLite file with the refund thread paused for a supervisor. */
function pausedThread(): string {
  const file = join(mkdtempSync(join(tmpdir(), "eart-cli-")), "demo.sqlite");
  const child = spawnSync(process.execPath, [demo, "request"], { env: { ...process.env, EART_DEMO_FILE: file, OPENAI_API_KEY: "" }, encoding: "utf8" });
  expect(child.status).toBe(0);
  return file;
}

/**
 * A fresh SQLite file with a refund thread paused for a supervisor, whose thread id and customer
 * message carry terminal escapes, line breaks, C1 controls and bidi overrides: what a customer or
 * a client of the thread API can write.
 */
function hostileThread(threadId: string, text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), "eart-cli-hostile-")), "demo.sqlite");
  const agentModule = resolve("dist/examples/refund/agent.js");
  const code = `
    const { openRefundAgent } = await import(${JSON.stringify(pathToFileURL(agentModule).href)});
    const { agent, close } = await openRefundAgent(process.env.EART_DEMO_FILE);
    const config = { configurable: { thread_id: JSON.parse(process.env.HOSTILE_THREAD), agent_id: "support-agent", user_id: "cara" } };
    await agent.invoke({ messages: [{ role: "user", content: JSON.parse(process.env.HOSTILE_TEXT) }] }, config);
    await close();`;
  const child = spawnSync(process.execPath, ["--input-type=module", "-e", code], {
    env: { ...process.env, EART_DEMO_FILE: file, OPENAI_API_KEY: "", HOSTILE_THREAD: JSON.stringify(threadId), HOSTILE_TEXT: JSON.stringify(text) },
    encoding: "utf8",
  });
  expect(child.stderr).toBe("");
  expect(child.status).toBe(0);
  return file;
}

/** Characters a terminal acts on or hides: C0 (but the line feeds the command line writes itself), DEL, C1, line and paragraph separators, zero-width and bidi controls. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/u;

const refunds = (file: string) => {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare(`SELECT order_id AS orderId, amount FROM refunds`).all();
  } finally {
    db.close();
  }
};

describe("eart, the approver's command line", () => {
  it("approves with a token signed by the approver's own key, and refuses a key that does not speak for the signer", () => {
    const file = pausedThread();
    const dir = mkdtempSync(join(tmpdir(), "eart-keys-"));
    const sam = generateKeyPairSync("ed25519");
    writeFileSync(join(dir, "sam.pem"), sam.privateKey.export({ type: "pkcs8", format: "pem" }));
    const keys = join(dir, "approval-keys.json");
    writeFileSync(keys, JSON.stringify({ "sam-1": { approver: "sam", publicKey: sam.publicKey.export({ type: "spki", format: "pem" }) } }));
    const env = { EART_APPROVAL_KEYS: keys };
    const posing = run(file, ["approve", "refund-1042", "call_1_refund", "--as", "sue", "--key", join(dir, "sam.pem"), "--kid", "sam-1"], env);
    expect(posing.status).toBe(1);
    expect(posing.err + posing.out).toContain("approval_token_invalid");
    expect(refunds(file)).toEqual([]);
    const signed = run(file, ["approve", "refund-1042", "call_1_refund", "--as", "sam", "--key", join(dir, "sam.pem"), "--kid", "sam-1", "--json"], env);
    expect(signed.status).toBe(0);
    expect(refunds(file)).toEqual([{ orderId: "1042", amount: 740 }]);
    const show = run(file, ["show", "refund-1042", "--json"], env);
    const decided = (JSON.parse(show.out) as { events: { type: string; data: Record<string, unknown> }[] }).events.find((e) => e.type === "approval.decided");
    expect(decided?.data).toMatchObject({ approverId: "sam", authenticatedBy: "approval_token" });
  });

  it("lists what waits, refuses a self-approval, approves as a supervisor, and shows the timeline", () => {
    const file = pausedThread();

    const pending = run(file, ["pending", "--json"]);
    expect(pending.status).toBe(0);
    const items = JSON.parse(pending.out) as { kind: string; threadId: string; toolCallId: string; roles: string[]; requestedBy: string; since: string }[];
    expect(items).toEqual([
      expect.objectContaining({ kind: "approval", threadId: "refund-1042", toolCallId: "call_1_refund", roles: ["supervisor"], requestedBy: "support-agent for cara" }),
    ]);
    expect(Date.parse(items[0]!.since)).not.toBeNaN();
    expect(JSON.parse(run(file, ["pending", "--json", "--role", "finance"]).out)).toEqual([]);
    const human = run(file, ["pending"]);
    expect(human.out.split("\n")[0]).toMatch(/^KIND\s+THREAD\s+REF\s+TOOL CALL\s+WHAT\s+ROLES\s+REQUESTED BY\s+SINCE\s+EXPIRES$/);
    expect(human.out).not.toContain("\u001b["); // no colours when not on a terminal

    const self = run(file, ["approve", "refund-1042", "call_1_refund", "--as", "cara"]);
    expect(self.status).toBe(1);
    expect(self.err).toContain("refused [approval_self_approval]");
    expect(refunds(file)).toEqual([]);

    const approved = run(file, ["approve", "refund-1042", "call_1_refund", "--as", "sam", "--json"]);
    expect(approved.status).toBe(0);
    expect(JSON.parse(approved.out)).toMatchObject({ threadId: "refund-1042", decision: "approve", by: "sam", waiting: null, last: "Your refund of $740 for order 1042 has been issued." });
    expect(refunds(file)).toEqual([{ orderId: "1042", amount: 740 }]);
    expect(JSON.parse(run(file, ["pending", "--json"]).out)).toEqual([]);

    const again = run(file, ["approve", "refund-1042", "call_1_refund", "--as", "sam"]);
    expect(again.status).toBe(1);
    expect(again.err).toContain("thread_not_paused");

    const show = run(file, ["show", "refund-1042"]);
    expect(show.status).toBe(0);
    expect(show.out).toMatch(/approval\.refused\s+refused answer: approval_self_approval/);
    expect(show.out).toMatch(/approval\.decided\s+issue_refund approve by sam → approved/);
    expect(show.out).toMatch(/chain ok: \d+ events/);
  });

  it("prints what threads hold with every control character escaped: a customer cannot draw a forged row in the approver's terminal", () => {
    const ESC = "\u001b";
    const forged = "99  2026-01-01T00:00:00.000Z  approval.decided  issue_refund approve by sam → approved";
    const threadId = `refund-1042\r${ESC}[2K${ESC}[1A${forged}\u202e\n`;
    const text = `\r${ESC}[2K${ESC}]0;eart\u0007\n${forged}\u0085\u009b2K\u2028\u202e Hi, order 1042 arrived broken. Please refund $740.\u007f\u200b`;
    const file = hostileThread(threadId, text);

    // The human-readable forms: no raw control character, and no line the command line did not write.
    const show = run(file, ["show", threadId]);
    expect(show.status).toBe(0);
    expect(show.out).not.toMatch(RAW_CONTROL);
    const lines = show.out.trimEnd().split("\n");
    expect(lines[0]).toBe("thread refund-1042\\r\\x1b[2K\\x1b[1A99  2026-01-01T00:00:00.000Z  approval.decided  issue_refund approve by sam → approved\\u202e\\n");
    expect(lines[1]).toMatch(/^#\s+AT\s+EVENT\s+WHAT$/);
    expect(lines.at(-1)).toMatch(/^chain ok: \d+ events/);
    for (const line of lines.slice(2, -1)) expect(line).toMatch(/^\d+\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+[a-z_]+\.[a-z_]+\s/);
    const started = lines.find((l) => /\srun\.started\s/.test(l))!;
    expect(started).toContain("cara asked support-agent: \\r\\x1b[2K\\x1b]0;eart\\x07\\n99  2026");
    // The forged row is text inside the row that quotes the customer, never a row of its own.
    expect(lines.slice(1).filter((l) => l.includes("approval.decided"))).toEqual([started]);

    const pending = run(file, ["pending"]);
    expect(pending.status).toBe(0);
    expect(pending.out).not.toMatch(RAW_CONTROL);
    const rows = pending.out.trimEnd().split("\n");
    expect(rows).toHaveLength(2);
    expect(rows[1]).toMatch(/^approval\s+refund-1042\\r\\x1b\[2K\\x1b\[1A99 .*\\u202e\\n\s+[0-9a-f]{12}\s+call_1_refund\s+issue_refund /);

    const inbox = run(file, ["pending", "--json"]);
    expect(inbox.out).not.toMatch(RAW_CONTROL);
    expect(JSON.parse(inbox.out)).toEqual([expect.objectContaining({ kind: "approval", threadId, toolCallId: "call_1_refund" })]);

    // An approver's own hostile text (a refused name, a message) is escaped the same way, in errors too.
    const posing = run(file, ["approve", threadId, "call_1_refund", "--as", `sam${ESC}[2K\r`]);
    expect(posing.status).toBe(1);
    expect(posing.err).toContain("sam\\x1b[2K\\r");
    expect(posing.err + posing.out).not.toMatch(RAW_CONTROL);
    const approved = run(file, ["approve", threadId, "call_1_refund", "--as", "sam", "--message", `ok\u009b1A\r${ESC}[2Kforged\u2029`]);
    expect(approved.status).toBe(0);
    expect(approved.out).not.toMatch(RAW_CONTROL);
    expect(refunds(file)).toEqual([{ orderId: "1042", amount: 740 }]);
    const after = run(file, ["show", threadId]);
    expect(after.out).not.toMatch(RAW_CONTROL);
    expect(after.out).toMatch(/approval\.refused\s+refused answer: approval_unauthorized .*sam\\x1b\[2K\\r/);
    expect(after.out).toContain("issue_refund approve by sam: ok\\x9b1A\\r\\x1b[2Kforged\\u2029 → approved");

    // --json stays JSON: the same values, every control character escaped by JSON itself.
    const json = run(file, ["show", threadId, "--json"]);
    expect(json.out).not.toMatch(RAW_CONTROL);
    const parsed = JSON.parse(json.out) as { threadId: string; events: { type: string; data: { request?: { text: string } } }[] };
    expect(parsed.threadId).toBe(threadId);
    expect(parsed.events.find((e) => e.type === "run.started")!.data.request!.text).toBe(text);
    const exported = run(file, ["audit", "export", "--format", "jsonl"]);
    expect(exported.out).not.toMatch(RAW_CONTROL);
    expect(exported.out.trimEnd().split("\n").map((l) => (JSON.parse(l) as { threadId: string }).threadId)).toContain(threadId);
  });

  it("verifies the audit chains, reports a tampered one precisely with exit code 1, and exports JSONL", () => {
    const file = pausedThread();
    const verified = run(file, ["audit", "verify", "--json"]);
    expect(verified.status).toBe(0);
    const [result] = JSON.parse(verified.out) as { ok: boolean; threadId: string; count: number }[];
    expect(result).toMatchObject({ ok: true, threadId: "refund-1042" });

    const out = join(mkdtempSync(join(tmpdir(), "eart-cli-export-")), "audit.jsonl");
    const exported = run(file, ["audit", "export", "--format", "jsonl", "--out", out]);
    expect(exported.status).toBe(0);
    const lines = readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l) as { seq: number; hash: string });
    expect(lines.map((l) => l.seq)).toEqual([...Array(result!.count).keys()]);

    const db = new Database(file);
    db.prepare(`UPDATE eart_audit_events SET data = json_set(data, '$.name', 'tampered') WHERE thread_id = 'refund-1042' AND seq = 3`).run();
    db.close();
    const broken = run(file, ["audit", "verify"]);
    expect(broken.status).toBe(1);
    expect(broken.out).toMatch(/refund-1042\s+-\s+BROKEN at #3 \(hash_mismatch\): expected [0-9a-f]{16}, found [0-9a-f]{16}/);
  });

  it("audit verify --all finds what per-thread checks cannot: a store restored from a backup (with a witness) and a thread deleted whole", () => {
    const file = pausedThread();
    const dir = mkdtempSync(join(tmpdir(), "eart-cli-witness-"));
    // The insider's backup, taken while the refund waits for a supervisor.
    const backup = join(dir, "backup.sqlite");
    const db = new Database(file);
    db.exec(`VACUUM INTO '${backup}'`);
    db.close();
    expect(run(file, ["approve", "refund-1042", "call_1_refund", "--as", "sam"]).status).toBe(0);
    expect(refunds(file)).toEqual([{ orderId: "1042", amount: 740 }]);
    // What an exporter or a SIEM kept outside the store: the global head after the refund.
    const witness = join(dir, "witness.json");
    expect(run(file, ["audit", "head", "--out", witness]).status).toBe(0);
    const kept = JSON.parse(readFileSync(witness, "utf8")) as { gseq: number; hash: string };
    expect(kept.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.parse(run(file, ["audit", "verify", "--all", "--json", "--witness", witness]).out)).toMatchObject({ ok: true, problems: [] });

    // The backup is restored: the approval and the refund are gone from the audit log.
    for (const suffix of ["-wal", "-shm"]) if (existsSync(file + suffix)) rmSync(file + suffix);
    copyFileSync(backup, file);
    // Every record in the store is genuine and consistent: the store alone cannot tell.
    expect(run(file, ["audit", "verify"]).status).toBe(0);
    expect(run(file, ["audit", "verify", "--all"]).status).toBe(0);
    // The witness can.
    const caught = run(file, ["audit", "verify", "--all", "--witness", witness]);
    expect(caught.status).toBe(1);
    expect(caught.out).toMatch(new RegExp(`rollback\\s+-\\s+the witness saw global entry ${kept.gseq}`));
    // A JSONL export is a witness too: its newest line's global head counts.
    const exported = join(dir, "export.jsonl");
    writeFileSync(exported, [{ seq: 0, globalHead: { gseq: 0, hash: "0".repeat(64) } }, { seq: 1, globalHead: kept }].map((l) => JSON.stringify(l)).join("\n") + "\n");
    expect(run(file, ["audit", "verify", "--all", "--witness", exported]).status).toBe(1);

    // A thread deleted whole (events and heads) is named by the global log.
    const edit = new Database(file);
    edit.exec(`DELETE FROM eart_audit_events WHERE thread_id = 'refund-1042'; DELETE FROM eart_audit_heads WHERE thread_id = 'refund-1042'`);
    edit.close();
    const lost = run(file, ["audit", "verify", "--all", "--json"]);
    expect(lost.status).toBe(1);
    expect((JSON.parse(lost.out) as { problems: unknown[] }).problems).toContainEqual(expect.objectContaining({ kind: "missing_thread", threadId: "refund-1042" }));
  });

  it("lists a thread whose approval was recorded just before its process died, and continues it without asking again", () => {
    const file = pausedThread();
    const died = spawnSync(process.execPath, [resolve("dist/test/processes/approve-and-die.js")], { env: { ...process.env, EART_DEMO_FILE: file, OPENAI_API_KEY: "" }, encoding: "utf8" });
    expect(died.status).toBe(9);
    expect(refunds(file)).toEqual([]);
    const pending = JSON.parse(run(file, ["pending", "--json"]).out) as { kind: string; threadId: string; what: string }[];
    // Not an approval to ask for again: sam's answer is on record.
    expect(pending).toEqual([expect.objectContaining({ kind: "unfinished", threadId: "refund-1042", what: expect.stringContaining("answered by sam") })]);
    const continued = run(file, ["continue", "refund-1042"]);
    expect(continued.status).toBe(0);
    expect(continued.out).toContain("continued to its end");
    expect(refunds(file)).toEqual([{ orderId: "1042", amount: 740 }]);
    expect(JSON.parse(run(file, ["pending", "--json"]).out)).toEqual([]);
    expect(run(file, ["continue", "refund-1042"]).status).toBe(1);
  });

  it("exports the threads as OpenTelemetry spans over OTLP/HTTP, and fails when the collector refuses them", async () => {
    const file = pausedThread();
    const runAsync = async (endpoint: string) => {
      try {
        const { stdout } = await promisify(execFile)(process.execPath, [cli, "--app", app, "--json", "audit", "export", "--format", "otlp", "--endpoint", endpoint], {
          env: { ...process.env, EART_DEMO_FILE: file, OPENAI_API_KEY: "", NO_COLOR: "1" },
          timeout: 60_000,
        });
        return { status: 0, out: stdout };
      } catch (error) {
        return { status: (error as { code?: number }).code ?? -1, out: String((error as { stdout?: string }).stdout ?? "") };
      }
    };
    const collector = await startCaptureServer("ok");
    try {
      const sent = await runAsync(`${collector.url}/v1/traces`);
      expect(sent.status).toBe(0);
      expect(JSON.parse(sent.out)).toMatchObject({ threads: 1, spansFailed: 0 });
      expect(JSON.parse(sent.out).spansSent).toBeGreaterThan(0);
      const bodies = collector.requests.filter((r) => r.method === "POST" && r.path === "/v1/traces").map((r) => JSON.stringify(r.json ?? r.body.toString("utf8")));
      expect(bodies.join("\n")).toContain("invoke_agent support-agent");
      expect(bodies.join("\n")).toContain("refund-1042");
    } finally {
      await collector.close();
    }
    const refusing = await startCaptureServer(503);
    try {
      const refused = await runAsync(`${refusing.url}/v1/traces`);
      expect(refused.status).toBe(1);
      expect(JSON.parse(refused.out).spansSent).toBe(0);
    } finally {
      await refusing.close();
    }
  });

  it("says how to use it: exit code 2 for usage errors", () => {
    const file = pausedThread();
    expect(run(file, ["edit", "refund-1042", "call_1_refund", "--as", "sam"]).status).toBe(2);
    expect(run(file, ["audit", "export", "--format", "xml"]).status).toBe(2);
    const none = spawnSync(process.execPath, [cli, "pending"], { env: { ...process.env, EART_APP: "" }, encoding: "utf8" });
    expect(none.status).toBe(2);
    expect(none.stderr).toContain("--app <module> or EART_APP");
  });
});
