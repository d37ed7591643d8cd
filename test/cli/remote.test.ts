import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDevServer, TOKENS, type DevServer } from "../support/langgraph-server.js";
import { answerWithoutRef, withListedRef } from "../support/cli-ref.js";

/**
 * `eart --url … --token …` against a real LangGraph dev server serving the refund agent (the
 * project's langgraph.json and eart's server auth): the built command line, in real processes,
 * with no app module, as supervisors, customers and strangers.
 */
const cli = resolve("dist/cli/eart.js");
let server: DevServer;

beforeAll(async () => {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run "npm run build" (npm test does) before these tests`);
  server = await startDevServer();
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

/** Runs the built command line (async: the server answers from another process), with no app module: EART_APP names one that does not exist. */
async function run(args: string[], env: Record<string, string> = {}) {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [cli, ...args], {
      env: { ...process.env, NO_COLOR: "1", EART_APP: "/nonexistent/app.js", EART_URL: "", EART_TOKEN: "", LANGSMITH_API_KEY: "", ...env },
      timeout: 60_000,
    });
    return { status: 0, out: stdout, err: stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { status: e.code ?? -1, out: String(e.stdout ?? ""), err: String(e.stderr ?? "") };
  }
}

/** Runs the built command line against the server as `user` (a demo token), or with `--token` given in `args`. */
/** The command line against the server as `user`; an answer names the ref `pending` lists to that user (cli-ref.ts). */
async function eart(args: string[], user?: string) {
  const as = ["--url", server.url, ...(user ? ["--token", TOKENS[user]!] : [])];
  if (answerWithoutRef(args)) {
    const listed = await run([...as, "pending", "--json"]);
    args = withListedRef(args, listed.status === 0 ? (JSON.parse(listed.out) as { threadId: string; ref: string | null }[]) : []);
  }
  return run([...as, ...args]);
}

const json = (out: string) => JSON.parse(out) as Record<string, unknown> & { error?: { code: string; message: string; details?: Record<string, unknown> } };

/** A customer's refund thread, paused on the supervisor's approval. */
async function pausedThread(customer = "cara", text = "Please refund order 1042, $740"): Promise<string> {
  const client = server.client(customer);
  const thread = await client.threads.create();
  await client.runs.wait(thread.thread_id, "refund", { input: { messages: [{ role: "user", content: text }] } });
  expect((await client.threads.get(thread.thread_id)).status).toBe("interrupted");
  return thread.thread_id;
}

function store<T>(read: (db: Database.Database) => T): T {
  const db = new Database(server.storeFile, { readonly: true });
  try {
    return read(db);
  } finally {
    db.close();
  }
}
const refundsOf = (threadId: string) => store((db) => db.prepare(`SELECT order_id AS orderId, amount FROM refunds WHERE tool_call_id IN (SELECT json_extract(data, '$.toolCallId') FROM eart_audit_events WHERE thread_id = ? AND type = 'tool.succeeded') ORDER BY id`).all(threadId));
const auditTypes = (threadId: string) => store((db) => (db.prepare(`SELECT type FROM eart_audit_events WHERE thread_id = ? ORDER BY seq`).all(threadId) as { type: string }[]).map((r) => r.type));

describe("eart against a LangGraph server", () => {
  it("lists a customer's refund for supervisors (by role), refuses the customer's own approval with its code, shows the refusal, and approves as the supervisor's token", async () => {
    const threadId = await pausedThread();

    const pending = await eart(["pending", "--json"], "sam");
    expect(pending.err).toBe("");
    expect(pending.status).toBe(0);
    const items = json(pending.out) as unknown as { kind: string; threadId: string; toolCallId: string; roles: string[]; requestedBy: string; refusal: unknown }[];
    expect(items).toContainEqual(expect.objectContaining({ kind: "approval", threadId, toolCallId: "call_1_refund", roles: ["supervisor"], requestedBy: "support-agent for cara", refusal: null }));
    expect((json((await eart(["pending", "--json", "--role", "finance"], "sam")).out) as unknown as { threadId: string }[]).map((i) => i.threadId)).not.toContain(threadId);
    const table = await eart(["pending"], "sam");
    expect(table.out.split("\n")[0]).toMatch(/^KIND\s+THREAD\s+REF\s+TOOL CALL\s+WHAT\s+ROLES\s+REQUESTED BY\s+SINCE\s+EXPIRES$/);

    // The customer answers her own request: the server refuses it, the thread keeps waiting, with the refusal.
    const self = await eart(["approve", threadId, "--all", "--json"], "cara");
    expect(self.status).toBe(1);
    expect(json(self.out).error).toMatchObject({ code: "approval_self_approval", message: expect.stringContaining("cara") });
    const selfHuman = await eart(["approve", threadId, "call_1_refund"], "cara");
    expect(selfHuman.status).toBe(1);
    expect(selfHuman.err).toContain("refused [approval_self_approval]");
    expect(refundsOf(threadId)).toEqual([]);
    const withRefusal = json((await eart(["pending", "--json"], "sam")).out) as unknown as { threadId: string; refusal: { code: string } | null }[];
    expect(withRefusal.find((i) => i.threadId === threadId)?.refusal).toMatchObject({ code: "approval_self_approval" });
    expect((await eart(["pending"], "sam")).out).toMatch(/LAST ANSWER REFUSED[^]*approval_self_approval/);

    const show = await eart(["show", threadId], "sam");
    expect(show.status).toBe(0);
    expect(show.out).toMatch(new RegExp(`^thread ${threadId} \\(interrupted, graph refund`));
    expect(show.out).toMatch(/approval\s+[0-9a-f]{12}\s+call_1_refund\s+issue_refund .*approval_self_approval/);
    expect(show.out).toMatch(/call_1_refund\s+issue_refund\s+\S+\s+require_approval\s+pending_approval/);

    const approved = await eart(["approve", threadId, "call_1_refund", "--message", "checked the photos", "--json"], "sam");
    expect(approved.err).toBe("");
    expect(approved.status).toBe(0);
    expect(json(approved.out)).toMatchObject({ threadId, toolCallId: "call_1_refund", decision: "approve", waiting: null, last: expect.stringContaining("has been issued") });
    expect(json(approved.out)).not.toHaveProperty("by");
    expect(refundsOf(threadId)).toEqual([{ orderId: "1042", amount: 740 }]);
    // The approver is the token's user, as the audit log records it.
    const decided = store((db) => db.prepare(`SELECT data FROM eart_audit_events WHERE thread_id = ? AND type = 'approval.decided'`).get(threadId) as { data: string });
    expect(JSON.parse(decided.data)).toMatchObject({ approverId: "sam", decision: "approve", message: "checked the photos" });
    expect(auditTypes(threadId).filter((t) => t === "approval.refused")).toHaveLength(2);

    // Answered: nothing waits. To another supervisor the thread is gone (the server's auth shows a
    // reviewer only threads that wait for them); its owner is told there is nothing to answer.
    expect((json((await eart(["pending", "--json"], "sue")).out) as unknown as { threadId: string }[]).map((i) => i.threadId)).not.toContain(threadId);
    expect(json((await eart(["approve", threadId, "--all", "--json"], "sue")).out).error!.code).toBe("http_404");
    const again = await eart(["approve", threadId, "--all", "--json"], "cara");
    expect(again.status).toBe(1);
    expect(json(again.out).error).toMatchObject({ code: "thread_not_paused", message: expect.stringContaining("is idle") });

    // The audit trail of the deployment, read by an auditor from its store alone while the server runs.
    const audit = await run(["--audit", `sqlite:${server.storeFile}`, "show", threadId]);
    expect(audit.status).toBe(0);
    expect(audit.out).toMatch(/approval\.refused\s+refused answer: approval_self_approval/);
    expect(audit.out).toMatch(/approval\.decided\s+issue_refund approve by sam: checked the photos → approved/);
    expect(audit.out).toMatch(/chain ok: \d+ events/);
  });

  it("decides and rejects with one resume (decide --reject all), reading the token from EART_URL and EART_TOKEN", async () => {
    const threadId = await pausedThread();
    const env = { EART_APP: "", EART_URL: server.url, EART_TOKEN: TOKENS.sue! };
    const listed = JSON.parse((await run(["--json", "pending"], env)).out) as { threadId: string; ref: string | null }[];
    const { status, out, err } = await run(withListedRef(["--json", "decide", threadId, "--reject", "all", "--message", "duplicate request"], listed), env);
    expect(err).toBe("");
    expect(status).toBe(0);
    expect(json(out)).toMatchObject({ threadId, decisions: [{ toolCallId: "call_1_refund", type: "reject" }], waiting: null });
    expect(refundsOf(threadId)).toEqual([]);
    const rejected = store((db) => db.prepare(`SELECT data FROM eart_audit_events WHERE thread_id = ? AND type = 'approval.decided'`).get(threadId) as { data: string });
    expect(JSON.parse(rejected.data)).toMatchObject({ approverId: "sue", decision: "reject", message: "duplicate request" });
  });

  it("says plainly when the server turns the token away (401), hides a thread (404), or cannot be reached", async () => {
    const threadId = await pausedThread();
    const stranger = await eart(["pending", "--json", "--token", "not-a-known-token-at-all"]);
    expect(stranger.status).toBe(1);
    expect(json(stranger.out).error).toMatchObject({ code: "http_401", details: { status: 401 } });
    const strangerHuman = await eart(["pending", "--token", "not-a-known-token-at-all"]);
    expect(strangerHuman.err).toMatch(/failed \[http_401\]: .*refused the credentials .*--token or EART_TOKEN/);
    // Another customer may not see cara's thread: to the server it does not exist.
    const omar = await eart(["approve", threadId, "--all", "--json"], "omar");
    expect(omar.status).toBe(1);
    expect(json(omar.out).error).toMatchObject({ code: "http_404", details: { status: 404, threadId } });
    expect((await eart(["show", threadId], "omar")).err).toContain(`No thread "${threadId}"`);
    expect(refundsOf(threadId)).toEqual([]);
    const down = await run(["--url", "http://127.0.0.1:9", "--token", "x", "--json", "pending"]);
    expect(down.status).toBe(1);
    expect(json(down.out).error!.code).toBe("server_unreachable");
  });

  it("refuses what only an app can do, and --as: the token names the approver", async () => {
    expect((await eart(["continue", "t1"], "sam")).status).toBe(2);
    expect((await eart(["audit", "verify"], "sam")).status).toBe(2);
    const as = await eart(["approve", "t1", "--all", "--as", "sam", "--json"], "sam");
    expect(as.status).toBe(2);
    expect(json(as.out).error!.message).toContain("bearer token");
  });
});
