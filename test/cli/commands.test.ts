import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { beforeAll, describe, expect, it } from "vitest";
import { answerWithoutRef, withListedRef } from "../support/cli-ref.js";

// The command line's commands beyond one call's approval, from the build, in real processes, on
// the SQLite file of a test app (dist/test/processes/cli-app.js) paused on each kind of human task.
const cli = resolve("dist/cli/eart.js");
const app = resolve("dist/test/processes/cli-app.js");

beforeAll(() => {
  for (const f of [cli, app]) if (!existsSync(f)) throw new Error(`${f} is missing: run "npm run build" (npm test does) before these tests`);
});

type Scenario = "multi" | "recovery" | "review";

/** A fresh SQLite file with thread `threadId` of `scenario` paused for a human. */
function paused(scenario: Scenario, threadId: string, file = join(mkdtempSync(join(tmpdir(), "eart-cli-cmd-")), "app.sqlite")): string {
  const child = spawnSync(process.execPath, [app, "start", threadId], { env: { ...process.env, EART_CLI_FILE: file, EART_CLI_SCENARIO: scenario, OPENAI_API_KEY: "" }, encoding: "utf8" });
  expect(child.stderr).toBe("");
  expect(child.status).toBe(0);
  return file;
}

/** Runs the built command line; with a scenario, against the test app on `file`. An answer names the ref `pending` lists (cli-ref.ts). */
function eart(args: string[], options: { file?: string; scenario?: Scenario; env?: Record<string, string>; node?: string[] } = {}) {
  if (options.scenario && answerWithoutRef(args)) {
    const listed = spawn(["pending", "--json"], options);
    args = withListedRef(args, listed.status === 0 ? (JSON.parse(listed.out) as { threadId: string; ref: string | null }[]) : []);
  }
  return spawn(args, options);
}

function spawn(args: string[], options: { file?: string; scenario?: Scenario; env?: Record<string, string>; node?: string[] }) {
  const appArgs = options.scenario ? ["--app", app] : [];
  const child = spawnSync(process.execPath, [...(options.node ?? []), cli, ...appArgs, ...args], {
    env: { ...process.env, NO_COLOR: "1", OPENAI_API_KEY: "", EART_APP: "", EART_URL: "", EART_TOKEN: "", ...(options.file ? { EART_CLI_FILE: options.file } : {}), ...(options.scenario ? { EART_CLI_SCENARIO: options.scenario } : {}), ...options.env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { status: child.status, out: child.stdout, err: child.stderr };
}

const json = (out: string) => JSON.parse(out) as Record<string, unknown> & { error?: { code: string; message: string; details?: Record<string, unknown> } };

const rows = (file: string, sql: string) => {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare(sql).all();
  } finally {
    db.close();
  }
};
const refunds = (file: string) => rows(file, `SELECT tool_call_id AS toolCallId, amount FROM refunds ORDER BY tool_call_id`);
const eventTypes = (file: string, threadId: string) => (rows(file, `SELECT type FROM eart_audit_events WHERE thread_id = '${threadId}' ORDER BY seq`) as { type: string }[]).map((r) => r.type);

describe("eart decide, approve --all: one answer for every call of a model turn", () => {
  it("decides three pending calls at once (two approved, one rejected with its own message), after refusing answers that leave calls undecided", () => {
    const file = paused("multi", "multi-1");
    const on = { file, scenario: "multi" as const };
    const pending = json(eart(["pending", "--json"], on).out) as unknown as { kind: string; toolCallId: string }[];
    expect(pending.map((p) => [p.kind, p.toolCallId])).toEqual([["approval", "c1"], ["approval", "c2"], ["approval", "c3"]]);

    // One call's answer is not an answer to the request: refused before anything is sent.
    const one = eart(["approve", "multi-1", "c1", "--as", "sam", "--json"], on);
    expect(one.status).toBe(1);
    expect(json(one.out).error).toMatchObject({ code: "approval_decisions_mismatch", details: { missing: ["c2", "c3"] } });
    expect(json(one.out).error!.message).toContain("eart decide multi-1");
    const partial = eart(["decide", "multi-1", "--approve", "c1,c2", "--as", "sam"], on);
    expect(partial.status).toBe(1);
    expect(partial.err).toContain("refused [approval_decisions_mismatch]");
    expect(partial.err).toContain("undecided: c3");
    const unknown = eart(["decide", "multi-1", "--approve", "all", "--reject", "c9", "--as", "sam", "--json"], on);
    expect(json(unknown.out).error).toMatchObject({ code: "approval_decisions_mismatch", details: { toolCallId: "c9" } });
    // Contradictions in the command line are usage errors.
    expect(eart(["decide", "multi-1", "--approve", "c1", "--reject", "c1", "--as", "sam"], on).status).toBe(2);
    expect(eart(["decide", "multi-1", "--approve", "all", "--reject", "all", "--as", "sam"], on).status).toBe(2);
    expect(eart(["decide", "multi-1", "--as", "sam"], on).status).toBe(2);
    // Nothing was sent: no refusal on record, no refund.
    expect(eventTypes(file, "multi-1")).not.toContain("approval.refused");
    expect(refunds(file)).toEqual([]);

    const decided = eart(["decide", "multi-1", "--approve", "c1", "--approve", "c2", "--reject", "c3", "--message-for", "c3=duplicate of c2", "--as", "sam", "--json"], on);
    expect(decided.err).toBe("");
    expect(decided.status).toBe(0);
    expect(json(decided.out)).toEqual({
      threadId: "multi-1",
      decisions: [
        { toolCallId: "c1", type: "approve" },
        { toolCallId: "c2", type: "approve" },
        { toolCallId: "c3", type: "reject" },
      ],
      by: "sam",
      waiting: null,
      last: "done after 1 turns",
    });
    expect(refunds(file)).toEqual([
      { toolCallId: "c1", amount: 740 },
      { toolCallId: "c2", amount: 300 },
    ]);
    // One answer: the three decisions recorded together, the reject with its own message.
    const show = eart(["show", "multi-1"], on);
    expect(show.out.match(/approval\.decided/g)).toHaveLength(3);
    expect(show.out).toMatch(/issue_refund reject by sam: duplicate of c2 → rejected/);
    expect(show.out).toMatch(/issue_refund approve by sam → approved/);
    expect(json(eart(["pending", "--json"], on).out)).toEqual([]);
  });

  it("approve --all approves every pending call with one resume; reject --all rejects them all", () => {
    const file = paused("multi", "multi-all");
    paused("multi", "multi-none", file);
    const on = { file, scenario: "multi" as const };
    const human = eart(["approve", "multi-all", "--all", "--as", "sue"], on);
    expect(human.status).toBe(0);
    expect(human.out).toBe("decided on multi-all: approved c1, c2, c3 as sue\nagent: done after 1 turns\n");
    const rejected = eart(["reject", "multi-none", "--all", "--as", "sam", "--message", "not eligible", "--json"], on);
    expect(rejected.status).toBe(0);
    expect((json(rejected.out).decisions as { type: string }[]).map((d) => d.type)).toEqual(["reject", "reject", "reject"]);
    expect((refunds(file) as { toolCallId: string }[]).map((r) => r.toolCallId)).toEqual(["c1", "c2", "c3"]);
    expect(rows(file, `SELECT thread_id AS t, count(*) AS n FROM eart_audit_events WHERE type = 'approval.decided' GROUP BY thread_id ORDER BY thread_id`)).toEqual([
      { t: "multi-all", n: 3 },
      { t: "multi-none", n: 3 },
    ]);
    expect(eart(["approve", "multi-all", "c1", "--all", "--as", "sam"], on).status).toBe(2);
    expect(eart(["edit", "multi-all", "--all", "--args", "{}", "--as", "sam"], on).status).toBe(2);
  });
});

describe("eart recover and eart review: the other human tasks", () => {
  it("recover marks both refused calls done with their result, after refusing an unknown action, a missing result and an answer for one call of two", () => {
    const file = paused("recovery", "rec-1");
    const on = { file, scenario: "recovery" as const };
    const pending = json(eart(["pending", "--json"], on).out) as unknown as { kind: string; toolCallId: string; what: string }[];
    expect(pending).toEqual([
      expect.objectContaining({ kind: "recovery", toolCallId: "c1", what: 'issue_refund {"orderId":"1043","amount":50}: permission_denied (attempt 1)', args: { orderId: "1043", amount: 50 }, attempt: 1 }),
      expect.objectContaining({ kind: "recovery", toolCallId: "c2", what: 'issue_refund {"orderId":"1043","amount":40}: permission_denied (attempt 1)', args: { orderId: "1043", amount: 40 }, attempt: 1 }),
    ]);
    const badAction = eart(["recover", "rec-1", "--all", "--action", "redo", "--as", "sam", "--json"], on);
    expect(badAction.status).toBe(2);
    expect(json(badAction.out).error).toEqual({ code: "usage", message: 'recover --action must be one of retry, mark_done, abandon, not "redo"' });
    expect(eart(["recover", "rec-1", "--all", "--action", "mark_done", "--as", "sam"], on).status).toBe(2);
    expect(eart(["recover", "rec-1", "--all", "--action", "retry", "--result", "{}", "--as", "sam"], on).status).toBe(2);
    const one = eart(["recover", "rec-1", "c1", "--action", "abandon", "--as", "sam", "--json"], on);
    expect(json(one.out).error).toMatchObject({ code: "approval_decisions_mismatch", details: { missing: ["c2"] } });
    // An approval command on a thread waiting for a recovery says what it waits for.
    const wrongKind = eart(["approve", "rec-1", "--all", "--as", "sam", "--json"], on);
    expect(wrongKind.status).toBe(1);
    expect(json(wrongKind.out).error).toMatchObject({ code: "task_not_pending", details: { waitsFor: "recovery", asked: "approval" } });

    const done = eart(["recover", "rec-1", "c1,c2", "--action", "mark_done", "--result", '{"refundId":77}', "--as", "sam", "--json"], on);
    expect(done.status).toBe(0);
    expect(json(done.out)).toEqual({ threadId: "rec-1", action: "mark_done", toolCallIds: ["c1", "c2"], by: "sam", waiting: null, last: "done after 1 turns" });
    const decided = rows(file, `SELECT data FROM eart_audit_events WHERE thread_id = 'rec-1' AND type = 'tool.recovery_decided' ORDER BY seq`) as { data: string }[];
    expect(decided.map((r) => JSON.parse(r.data) as Record<string, unknown>)).toEqual([
      expect.objectContaining({ toolCallId: "c1", decision: "mark_done", resolverId: "sam" }),
      expect.objectContaining({ toolCallId: "c2", decision: "mark_done", resolverId: "sam" }),
    ]);
    expect(json(eart(["pending", "--json"], on).out)).toEqual([]);
  });

  it("recover --all abandons every call waiting for recovery", () => {
    const file = paused("recovery", "rec-2");
    const abandoned = eart(["recover", "rec-2", "--all", "--action", "abandon", "--message", "payments is down", "--as", "sue"], { file, scenario: "recovery" });
    expect(abandoned.status).toBe(0);
    expect(abandoned.out).toBe("recovered c1, c2 on rec-2 with abandon as sue\nagent: done after 1 turns\n");
    expect(refunds(file)).toEqual([]);
  });

  it("review answers an escalation: a message is required, the requester may not review, a supervisor takes over", () => {
    const file = paused("review", "rev-1");
    const on = { file, scenario: "review" as const };
    expect(json(eart(["pending", "--json"], on).out)).toEqual([expect.objectContaining({ kind: "review", threadId: "rev-1", toolCallId: null, roles: ["supervisor"] })]);
    expect(eart(["review", "rev-1", "--action", "take_over", "--as", "sam"], on).status).toBe(2);
    expect(eart(["review", "rev-1", "--action", "approve", "--message", "ok", "--as", "sam"], on).status).toBe(2);
    const self = eart(["review", "rev-1", "--action", "take_over", "--message", "Approved.", "--as", "cara", "--json"], on);
    expect(self.status).toBe(1);
    expect(json(self.out).error).toMatchObject({ code: "approval_self_approval" });
    // The answer the command line sends names the case it answers (its digest), refused for who sent it only.
    const refusals = rows(file, `SELECT data FROM eart_audit_events WHERE thread_id = 'rev-1' AND type = 'escalation.refused' ORDER BY seq`) as { data: string }[];
    expect(refusals.map((r) => JSON.parse(r.data) as Record<string, unknown>)).toEqual([
      expect.objectContaining({ code: "approval_self_approval", answer: { action: "take_over", message: "Approved.", digest: expect.stringMatching(/^[0-9a-f]{64}$/) } }),
    ]);
    const taken = eart(["review", "rev-1", "--action", "take_over", "--message", "Your refund is approved.", "--as", "sam", "--json"], on);
    expect(taken.status).toBe(0);
    expect(json(taken.out)).toEqual({ threadId: "rev-1", action: "take_over", message: "Your refund is approved.", by: "sam", waiting: null, last: "Your refund is approved." });
    expect(eventTypes(file, "rev-1")).toEqual(expect.arrayContaining(["escalation.refused", "escalation.decided"]));
    const again = eart(["review", "rev-1", "--action", "close", "--message", "again", "--as", "sam", "--json"], on);
    expect(again.status).toBe(1);
    expect(json(again.out).error!.code).toBe("thread_not_paused");
  });
});

describe("eart pending on an app that does not register every agent", () => {
  it("fails with exit code 1, naming the agent and its threads, instead of leaving them out", () => {
    const file = paused("multi", "orphan-1");
    const other = { file, scenario: "multi" as const, env: { EART_CLI_AGENT: "billing-agent" } };
    const human = eart(["pending"], other);
    expect(human.status).toBe(1);
    expect(human.out).toBe("");
    expect(human.err).toContain('no graph is registered for agent "support-agent" (thread "orphan-1")');
    const machine = eart(["pending", "--json"], other);
    expect(machine.status).toBe(1);
    expect(json(machine.out).error).toMatchObject({ code: "config_invalid", details: { threads: [{ threadId: "orphan-1", reason: expect.stringContaining('agent "support-agent"') }] } });
    // The app that registers the agent lists the thread.
    expect((json(eart(["pending", "--json"], { file, scenario: "multi" }).out) as unknown as unknown[]).length).toBe(3);
  });
});

describe("errors as JSON, usage and --version", () => {
  it("--json prints every error as one JSON object on stdout: usage (exit 2), refusals and failures (exit 1)", () => {
    const unknownOption = eart(["--json", "pending", "--bogus"]);
    expect(unknownOption.status).toBe(2);
    expect(unknownOption.err).toBe("");
    expect(json(unknownOption.out).error).toMatchObject({ code: "usage", message: expect.stringContaining("--bogus") });
    const noApp = eart(["pending", "--json"]);
    expect(noApp.status).toBe(2);
    expect(json(noApp.out).error).toMatchObject({ code: "usage", message: expect.stringContaining("--app <module> or EART_APP") });
    const unknownCommand = eart(["--json", "frobnicate"]);
    expect(json(unknownCommand.out)).toEqual({ error: { code: "usage", message: 'unknown command "frobnicate"' } });
    const modes = eart(["--json", "--url", "http://127.0.0.1:9", "--audit", "sqlite:x", "pending"]);
    expect(modes.status).toBe(2);
    expect(json(modes.out).error!.message).toContain("different modes");
    const remoteAs = eart(["--json", "--url", "http://127.0.0.1:9", "approve", "t", "c1", "--as", "sam"]);
    expect(remoteAs.status).toBe(2);
    expect(json(remoteAs.out).error!.message).toContain("--as is not used with --url");
    // Without --json, the same errors are lines on stderr.
    const human = eart(["frobnicate"]);
    expect(human.out).toBe("");
    expect(human.err).toMatch(/^eart: unknown command "frobnicate"\nusage: eart /);
  });

  it("--json escapes what an error quotes from the command line or a thread", () => {
    const file = paused("multi", "esc-1");
    const hostile = eart(["decide", "esc-1", "--approve", "all", "--reject", "c9\u001b[2K\u202e", "--as", "sam", "--json"], { file, scenario: "multi" });
    expect(hostile.status).toBe(1);
    expect(hostile.out).not.toMatch(/[\u001b\u202e]/);
    expect(json(hostile.out).error!.details!.toolCallId).toBe("c9\u001b[2K\u202e");
    const plain = eart(["decide", "esc-1", "--approve", "all", "--reject", "c9\u001b[2K\u202e", "--as", "sam"], { file, scenario: "multi" });
    expect(plain.err).toContain("c9\\x1b[2K\\u202e");
  });

  it("--version prints the package's version", () => {
    const { version } = JSON.parse(readFileSync(resolve("package.json"), "utf8")) as { version: string };
    const plain = eart(["--version"]);
    expect(plain.status).toBe(0);
    expect(plain.out).toBe(`${version}\n`);
    expect(json(eart(["--version", "--json"]).out)).toEqual({ version });
  });
});

describe("auditor-only mode: --audit <store>, without an app", () => {
  /** A module-resolution hook that logs every module a process loads. */
  function loadLog(): { node: string[]; loaded: () => string[] } {
    const dir = mkdtempSync(join(tmpdir(), "eart-cli-hook-"));
    const log = join(dir, "loaded.log");
    writeFileSync(log, "");
    writeFileSync(join(dir, "hook.mjs"), `import { appendFileSync } from "node:fs";\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + "\\n"); return r; }\n`);
    writeFileSync(join(dir, "register.mjs"), `import { register } from "node:module";\nregister(${JSON.stringify(pathToFileURL(join(dir, "hook.mjs")).href)});\n`);
    return { node: ["--import", pathToFileURL(join(dir, "register.mjs")).href], loaded: () => readFileSync(log, "utf8").split("\n").filter(Boolean) };
  }

  it("verifies, shows and exports a SQLite store with no app module, loading no graph, model, tool or LangChain module, and writing nothing", () => {
    const file = paused("multi", "aud-1");
    paused("review", "aud-2", file);
    const before = readFileSync(file);
    // EART_APP names a module that does not exist: --audit never opens an app.
    const env = { EART_APP: "/nonexistent/app.js" };
    const hook = loadLog();
    const verified = eart(["--audit", `sqlite:${file}`, "audit", "verify", "--json"], { env, node: hook.node });
    expect(verified.err).toBe("");
    expect(verified.status).toBe(0);
    expect((json(verified.out) as unknown as { threadId: string; ok: boolean }[]).map((r) => [r.threadId, r.ok])).toEqual([
      ["aud-1", true],
      ["aud-2", true],
    ]);
    const loaded = hook.loaded();
    expect(loaded.some((u) => u.includes("/dist/src/stores/sqlite/audit-log.js"))).toBe(true);
    expect(loaded.filter((u) => /\/dist\/(graphs|nodes|guards|langgraph|examples|test)\/|node_modules\/@langchain\/|node_modules\/langsmith\//.test(u))).toEqual([]);

    const all = eart(["--audit", `sqlite:${file}`, "audit", "verify", "--all", "--json"], { env });
    expect(json(all.out)).toMatchObject({ ok: true, threads: 2, problems: [] });
    const head = eart(["--audit", `sqlite:${file}`, "audit", "head"], { env });
    expect(head.status).toBe(0);
    expect(JSON.parse(head.out)).toMatchObject({ gseq: expect.any(Number), hash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const exported = eart(["--audit", `sqlite:${file}`, "audit", "export", "--format", "jsonl"], { env });
    const lines = exported.out.trimEnd().split("\n").map((l) => JSON.parse(l) as { threadId: string; hash: string });
    expect(new Set(lines.map((l) => l.threadId))).toEqual(new Set(["aud-1", "aud-2"]));
    const show = eart(["--audit", `sqlite:${file}`, "show", "aud-1"], { env });
    expect(show.status).toBe(0);
    expect(show.out).toMatch(/approval\.requested\s+waiting for issue_refund \(supervisor\)/);
    // Read-only: the store's file is as it was.
    expect(readFileSync(file).equals(before)).toBe(true);

    // A tampered event is caught the same way as with the app.
    const db = new Database(file);
    db.prepare(`UPDATE eart_audit_events SET data = json_set(data, '$.name', 'tampered') WHERE thread_id = 'aud-1' AND seq = 2`).run();
    db.close();
    const broken = eart(["--audit", `sqlite:${file}`, "audit", "verify"], { env });
    expect(broken.status).toBe(1);
    expect(broken.out).toMatch(/aud-1\s+-\s+BROKEN at #2 \(hash_mismatch\)/);
  });

  it("an app's command line never loads the LangGraph SDK or the remote mode: only --url does", () => {
    const file = paused("multi", "sdk-1");
    const hook = loadLog();
    const listed = eart(["pending", "--json"], { file, scenario: "multi", node: hook.node });
    expect(listed.status).toBe(0);
    const loaded = hook.loaded();
    expect(loaded.some((u) => u.includes("/dist/graphs/"))).toBe(true);
    expect(loaded.filter((u) => /node_modules\/@langchain\/langgraph-sdk\/|\/dist\/cli\/remote\.js/.test(u))).toEqual([]);
  });

  it("refuses what needs an app, and names a store that is not there", () => {
    const file = paused("multi", "aud-3");
    const pending = eart(["--audit", `sqlite:${file}`, "pending", "--json"]);
    expect(pending.status).toBe(2);
    expect(json(pending.out).error!.message).toContain("show and audit only");
    const missing = eart(["--audit", `sqlite:${file}.missing`, "audit", "verify", "--json"]);
    expect(missing.status).toBe(1);
    expect(json(missing.out).error).toMatchObject({ code: "audit_store_missing" });
    expect(existsSync(`${file}.missing`)).toBe(false);
    expect(eart(["--audit", "mysql://x", "audit", "verify"]).status).toBe(2);
  });
});

describe("eart pending reads the threads the inbox index lists, and shows what their state says", () => {
  it("lists by role from the index; a row forged into the index shows nothing the thread does not ask", () => {
    const file = paused("multi", "idx-1");
    const on = { file, scenario: "multi" as const };
    const listed = (args: string[]) => (json(eart(["pending", "--json", ...args], on).out) as unknown as { threadId: string; toolCallId: string; roles: string[] }[]).map((i) => `${i.threadId}/${i.toolCallId}/${i.roles.join(",")}`);
    expect(listed(["--role", "supervisor"])).toEqual(["idx-1/c1/supervisor", "idx-1/c2/supervisor", "idx-1/c3/supervisor"]);
    expect(listed(["--role", "finance"])).toEqual([]);
    // Rows written into the index behind the store's back: a call the thread does not ask about, a
    // thread that does not exist, and the thread again under another role. The state decides.
    const db = new Database(file);
    const forge = db.prepare(`INSERT OR REPLACE INTO eart_inbox (thread_id, kind, item, since, task) VALUES (?, 'approval', ?, '2000-01-01T00:00:00.000Z', ?)`);
    const role = db.prepare(`INSERT OR REPLACE INTO eart_inbox_roles (role, since, thread_id, kind, item) VALUES ('finance', '2000-01-01T00:00:00.000Z', ?, 'approval', ?)`);
    for (const [threadId, item] of [["idx-1", "c99"], ["ghost", "c1"]] as const) {
      forge.run(threadId, item, JSON.stringify({ threadId, kind: "approval", toolCallId: item, name: "issue_refund", roles: ["finance"], requestedBy: null, since: "2000-01-01T00:00:00.000Z", expiresAt: null, seq: 0, at: "2000-01-01T00:00:00.000Z" }));
      role.run(threadId, item);
    }
    db.close();
    expect(listed([])).toEqual(["idx-1/c1/supervisor", "idx-1/c2/supervisor", "idx-1/c3/supervisor"]);
    expect(listed(["--role", "finance"])).toEqual([]);
  });
});
