/**
 * Red-team pass on the `eart` command line, the approver's and the auditor's tool, as an attacker:
 * a customer or a model writing what the approver reads (tool call ids, arguments, messages), a
 * requester or colleague trying to answer as someone else, a colleague answering the same thread
 * between an approver's listing and their answer, and an insider who edited the audit store the
 * auditor checks. Everything runs the built command line (dist/cli/eart.js) in real processes: in
 * app mode against scripted apps on SQLite (a module written to a temp folder here, and the CLI
 * tests' dist/test/processes/cli-app.js), in auditor mode (`--audit sqlite:`), and against one real
 * LangGraph dev server.
 *
 * Found, and now closed (each a test below that failed before its fix):
 *  - an answer bound to whatever waited when it was sent, not to what the approver listed: a call a
 *    second supervisor edited in between (quorum 2) was approved with its new arguments, and a
 *    stale `approve <thread> --all` on a server approved a new, larger request on the same thread.
 *    Every answer now names the REF `pending` lists for what it answers (`--ref`, required), and is
 *    refused (`task_changed`, nothing sent) when what waits is no longer exactly that;
 *  - `pending` cut arguments at 50 characters (table and --json alike): a long first field hid the
 *    amount; a recovery row showed no arguments at all. Rows now show the whole call, and --json
 *    items carry `args`, `parsedArgs`, `digest` (and a recovery's `attempt`);
 *  - a tool call id that is the word `all` turned "approve this one call" into "approve every
 *    call": every call is now named by `--all` only;
 *  - `audit verify` without `--all` silently ignored `--public-key` and `--witness`, and reported an
 *    id the store never recorded as "ok, 0 events": the key is used, a witness needs `--all`, an
 *    unknown id is `thread_unknown`;
 *  - `audit head --out` overwrote a witness the store had rolled back past, blessing the rollback:
 *    it now refuses (`witness_not_extended`) unless the store verifies against the witness;
 *  - `show` on a tampered event crashed with an internal TypeError instead of reporting the break.
 *
 * Held (it): escaping of model-chosen tool call ids, arguments and answers in every output; posing
 * as the requester (other spellings), a non-approver or the agent; polluted and invalid edits; an
 * unknown thread; `continue` on a waiting thread; command lines that read an id as a flag; redaction
 * in every output; a thread deleted whole (caught from the global log); on a server, another
 * tenant's token and the requester's own, and a customer's message with escapes and forged rows.
 */
import { execFile, spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { answerWithoutRef, withListedRef } from "../support/cli-ref.js";
import { startDevServer, TOKENS, type DevServer } from "../support/langgraph-server.js";

const cli = resolve("dist/cli/eart.js");
const cliApp = resolve("dist/test/processes/cli-app.js");
const dist = resolve("dist");

/** Characters a terminal acts on or hides (C0 but the line feeds the CLI writes itself, DEL, C1, separators, zero-width and bidi controls). */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/u;
const CARD = /4111[\s-]?1111[\s-]?1111[\s-]?1111/;

type Call = { id: string; name: string; args: Record<string, unknown> };
/** A scripted app: on the i-th model turn it proposes `turns[i]` (calls) or answers `turns[i]` (text). */
type Spec = { turns: (Call[] | string)[]; policy?: "refund" | "quorum" };

/**
 * The app module the command line opens (`--app`): the governed refund agent on one SQLite file
 * (RT_FILE), with a model scripted by RT_SPEC, and the refund policy or one that asks two
 * supervisors. `node app.mjs say <thread> <text> [user]` runs a turn as the customer. It lives in a
 * temp folder whose node_modules links to the project's, and imports eart from dist.
 */
function appModule(): string {
  const d = (p: string) => JSON.stringify(pathToFileURL(join(dist, p)).href);
  return `
import { resolve } from "node:path";
import Database from "better-sqlite3";
import { AIMessage, HumanMessage } from "@langchain/core/messages";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
const { createGovernedAgent, defineApp } = await import(${d("graphs/index.js")});
const { SqliteAuditLog, SqliteEffectLedger } = await import(${d("src/stores/sqlite/index.js")});
const { scriptedModel } = await import(${d("testing/index.js")});
const { definePolicy } = await import(${d("src/index.js")});
const { refundIdentities } = await import(${d("examples/refund/agent.js")});
const { refundPolicy } = await import(${d("examples/refund/policy.js")});
const { createRefundTools } = await import(${d("examples/refund/tools.js")});
const spec = JSON.parse(process.env.RT_SPEC ?? "{}");
const turns = spec.turns ?? [];
const model = scriptedModel((messages) => {
  const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
  const t = turns[turn];
  return Array.isArray(t) ? new AIMessage({ content: "", tool_calls: t }) : new AIMessage(typeof t === "string" ? t : "done after " + turn + " turns");
});
const quorumPolicy = definePolicy({ name: "refunds-two-supervisors", rules: [
  { id: "orders.lookup", tools: ["lookup_order"], effect: "allow", reason: "Order lookups are allowed" },
  { id: "refund.two", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) <= 5000, effect: "require_approval", approverRoles: ["supervisor"], quorum: 2, reason: "Refunds need two supervisors" },
  { id: "refund.limit", tools: ["issue_refund"], when: (r) => !(Number(r.tool.args.amount) <= 5000), effect: "deny", reason: "Refunds over $5,000 are not allowed" },
] });
function open() {
  const db = new Database(resolve(process.env.RT_FILE));
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const auditLog = new SqliteAuditLog({ database: db });
  const tools = createRefundTools(db);
  const agent = createGovernedAgent({ model, tools: tools.all, identities: refundIdentities(), policy: spec.policy === "quorum" ? quorumPolicy : refundPolicy,
    checkpointer: new SqliteSaver(db), auditLog, ledger: new SqliteEffectLedger({ database: db }), recoveryRoles: ["supervisor"] });
  return { db, agent, auditLog };
}
export default function app() {
  const { db, agent, auditLog } = open();
  return defineApp({ auditLog, graphs: { "support-agent": agent }, close: () => db.close() });
}
if (process.argv[2] === "say") {
  const { db, agent } = open();
  await agent.invoke({ messages: [new HumanMessage(process.argv[4])] }, { configurable: { thread_id: process.argv[3], agent_id: "support-agent", user_id: process.argv[5] ?? "cara" } });
  db.close();
}
`;
}

let appDir: string;
let app: string;

beforeAll(() => {
  for (const f of [cli, cliApp]) if (!existsSync(f)) throw new Error(`${f} is missing: run "npm run build" (npm test does) before these tests`);
  appDir = mkdtempSync(join(tmpdir(), "eart-cli-redteam-app-"));
  symlinkSync(resolve("node_modules"), join(appDir, "node_modules"), "dir");
  app = join(appDir, "app.mjs");
  writeFileSync(app, appModule());
});
afterAll(() => {
  if (appDir) rmSync(appDir, { recursive: true, force: true });
});

const baseEnv = { NO_COLOR: "1", OPENAI_API_KEY: "", EART_APP: "", EART_URL: "", EART_TOKEN: "", LANGSMITH_API_KEY: "", LANGSMITH_TRACING: "false" };

/** Runs the built command line with `args` (no mode added). */
function eartRaw(args: string[], env: Record<string, string> = {}) {
  const child = spawnSync(process.execPath, [cli, ...args], { env: { ...process.env, ...baseEnv, ...env }, encoding: "utf8", timeout: 90_000 });
  return { status: child.status, out: child.stdout, err: child.stderr };
}

const json = <T = Record<string, unknown> & { error?: { code: string; message: string; details?: Record<string, unknown> } }>(out: string) => JSON.parse(out) as T;

type InboxRow = { kind: string; threadId: string; ref: string | null; toolCallId: string | null; what: string; roles: string[]; refusal: { code: string } | null; args?: Record<string, unknown> };

/** A scripted app on a fresh SQLite file, with thread `threadId` started by the customer. */
function scripted(spec: Spec, threadId: string, text = "Please refund my order.") {
  const file = join(mkdtempSync(join(tmpdir(), "eart-cli-redteam-")), "app.sqlite");
  const env = { RT_FILE: file, RT_SPEC: JSON.stringify(spec) };
  const say = (thread: string, message: string, user = "cara") => {
    const child = spawnSync(process.execPath, [app, "say", thread, message, user], { env: { ...process.env, ...baseEnv, ...env }, encoding: "utf8", timeout: 90_000 });
    expect(child.stderr).toBe("");
    expect(child.status).toBe(0);
  };
  say(threadId, text);
  return {
    file,
    say,
    // An approver lists what waits, then answers it: the answer names the listed ref (cli-ref.ts).
    eart: (args: string[]) => eartRaw(["--app", app, ...withListedRef(args, answerWithoutRef(args) ? json<InboxRow[]>(eartRaw(["--app", app, "pending", "--json"], env).out) : [])], env),
    audit: (args: string[]) => eartRaw(["--audit", `sqlite:${file}`, ...args]),
    pending: () => json<InboxRow[]>(eartRaw(["--app", app, "pending", "--json"], env).out),
  };
}

function rows<T>(file: string, sql: string, ...params: unknown[]): T[] {
  const db = new Database(file, { readonly: true });
  try {
    const table = /FROM (\w+)/.exec(sql)?.[1];
    if (table && !db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(table)) return [];
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}
const refunds = (file: string) => rows<{ orderId: string; amount: number; toolCallId: string }>(file, `SELECT order_id AS orderId, amount, tool_call_id AS toolCallId FROM refunds ORDER BY id`);
const eventTypes = (file: string, threadId: string) => rows<{ type: string }>(file, `SELECT type FROM eart_audit_events WHERE thread_id = ? ORDER BY seq`, threadId).map((r) => r.type);

const refund = (id: string, amount: number, extra: Record<string, unknown> = {}): Call => ({ id, name: "issue_refund", args: { orderId: "1042", amount, ...extra } });

describe("eart approve: what the approver approves is what they were shown", () => {
  it("a call a second supervisor edited after the listing is not approved by the first supervisor's approve (quorum 2)", () => {
    const t = scripted({ policy: "quorum", turns: [[refund("c1", 740)]] }, "quorum-1");
    // Sue lists what waits: a $740 refund, no approvals yet.
    const seen = t.pending();
    expect(seen).toEqual([expect.objectContaining({ kind: "approval", threadId: "quorum-1", toolCallId: "c1", what: 'issue_refund {"orderId":"1042","amount":740} (0/2 approvals)' })]);
    const ref = seen[0]!.ref!;
    // Sam, the other supervisor, edits the call to $4,900: it counts as his approval and waits for a second one.
    const edited = t.eart(["edit", "quorum-1", "c1", "--args", '{"orderId":"1042","amount":4900}', "--as", "sam"]);
    expect(edited.status).toBe(0);
    expect(t.pending()).toEqual([expect.objectContaining({ toolCallId: "c1", what: 'issue_refund {"orderId":"1042","amount":4900} (1/2 approvals)' })]);
    expect(refunds(t.file)).toEqual([]);
    // Sue sends the approve she decided on after reading "$740", naming what she read.
    const sue = t.eart(["approve", "quorum-1", "c1", "--as", "sue", "--ref", ref, "--json"]);
    // The guarantee: no $4,900 refund on sue's word; her approve is refused as stale, nothing sent.
    expect(refunds(t.file)).toEqual([]);
    expect(sue.status).toBe(1);
    expect(json(sue.out).error?.code).toBe("task_changed");
    expect(eventTypes(t.file, "quorum-1").filter((e) => e === "approval.decided")).toHaveLength(1);
    // An answer that names nothing it read is not sent at all.
    const blind = t.eart(["approve", "quorum-1", "c1", "--as", "sue", "--ref", "", "--json"]);
    expect(blind.status).toBe(2);
    expect(refunds(t.file)).toEqual([]);
  });

  it("pending shows the whole call it asks about: a long first argument does not hide the amount, in the table or in --json", () => {
    const reason = "customer request: item arrived damaged, photos attached";
    const t = scripted({ turns: [[{ id: "c1", name: "issue_refund", args: { orderId: "1042", reason, amount: 4900 } }]] }, "long-1");
    // Setup: the thread waits on one call, whose recorded request does hold the amount.
    const requested = json<{ events: { type: string; data: { requests?: { args: Record<string, unknown> }[] } }[] }>(t.eart(["show", "long-1", "--json"]).out).events.find((e) => e.type === "approval.requested");
    expect(requested?.data.requests?.[0]?.args).toEqual({ orderId: "1042", reason, amount: 4900 });
    const table = t.eart(["pending"]);
    expect(table.status).toBe(0);
    expect(table.out.trimEnd().split("\n")).toHaveLength(2);
    const listed = t.pending();
    expect(listed).toEqual([expect.objectContaining({ kind: "approval", toolCallId: "c1" })]);
    // The guarantee: the approver can read the $4,900 before approving it.
    expect(table.out).toContain("4900");
    expect(JSON.stringify(listed)).toContain("4900");
  });

  it("a recovery row says which call (order and amount) a retry would run again", () => {
    const file = join(mkdtempSync(join(tmpdir(), "eart-cli-redteam-rec-")), "app.sqlite");
    const env = { EART_CLI_FILE: file, EART_CLI_SCENARIO: "recovery" };
    const started = spawnSync(process.execPath, [cliApp, "start", "rec-1"], { env: { ...process.env, ...baseEnv, ...env }, encoding: "utf8" });
    expect(started.status).toBe(0);
    const table = eartRaw(["--app", cliApp, "pending"], env);
    const listed = json<InboxRow[]>(eartRaw(["--app", cliApp, "pending", "--json"], env).out);
    // Setup: two calls (refunds of $50 and $40 on order 1043) wait for a recovery decision.
    expect(listed.map((i) => [i.kind, i.toolCallId])).toEqual([["recovery", "c1"], ["recovery", "c2"]]);
    // The guarantee: what retry re-runs is on the approver's screen.
    expect(table.out).toContain('"orderId":"1043"');
    expect(table.out).toMatch(/"amount":50\b/);
    expect(JSON.stringify(listed)).toMatch(/amount\\?":50\b/);
  });

  it("a model-chosen tool call id `all` does not turn approving that one call into approving every call", () => {
    const t = scripted({ turns: [[refund("all", 150), refund("c9", 4900)]] }, "all-1");
    expect(t.pending().map((i) => [i.toolCallId, i.what])).toEqual([
      ["all", 'issue_refund {"orderId":"1042","amount":150}'],
      ["c9", 'issue_refund {"orderId":"1042","amount":4900}'],
    ]);
    // One call alone is refused while others wait (documented): the approver relies on it.
    expect(t.eart(["approve", "all-1", "c9", "--as", "sam"]).status).toBe(1);
    const one = t.eart(["approve", "all-1", "all", "--as", "sam"]);
    // The guarantee: approving the $150 call named "all" approves it alone, or is refused; c9 ($4,900) is never refunded by it.
    expect(refunds(t.file).map((r) => r.toolCallId)).not.toContain("c9");
    expect(one.status).toBe(1);
  });

  it("model-chosen tool call ids, arguments and answers reach the terminal escaped, in pending, approve, show and --json", () => {
    const ESC = "\u001b";
    const forged = 'approval  esc-1  c2  issue_refund {"orderId":"1042","amount":50}';
    const id = `c1\r${ESC}[2K${ESC}[1A${forged}\u202e\u200b`;
    const reason = `ok\u009b2K${ESC}]8;;http://evil${ESC}\\\u2028\u202e\u0085`;
    const answer = `Done${ESC}[2J${ESC}[H\r\u0085issued\u2066\n${forged}`;
    const t = scripted({ turns: [[{ id, name: "issue_refund", args: { orderId: "1042", amount: 740, reason } }], answer] }, "esc-1");

    const table = t.eart(["pending"]);
    expect(table.status).toBe(0);
    expect(table.out).not.toMatch(RAW_CONTROL);
    const lines = table.out.trimEnd().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^approval\s+esc-1\s+[0-9a-f]{12}\s+c1\\r\\x1b\[2K\\x1b\[1Aapproval {2}esc-1/);
    const listed = t.eart(["pending", "--json"]);
    expect(listed.out).not.toMatch(RAW_CONTROL);
    expect(json<InboxRow[]>(listed.out)).toEqual([expect.objectContaining({ toolCallId: id })]);

    const approved = t.eart(["approve", "esc-1", id, "--as", "sam"]);
    expect(approved.status).toBe(0);
    expect(approved.out).not.toMatch(RAW_CONTROL);
    expect(approved.out.trimEnd().split("\n")).toEqual([expect.stringMatching(/^approved c1\\r\\x1b\[2K/), expect.stringMatching(/^agent: Done\\x1b\[2J\\x1b\[H\\r\\x85issued\\u2066\\n/)]);
    expect(refunds(t.file)).toEqual([{ orderId: "1042", amount: 740, toolCallId: id }]);

    const show = t.eart(["show", "esc-1"]);
    expect(show.status).toBe(0);
    expect(show.out).not.toMatch(RAW_CONTROL);
    const shown = show.out.trimEnd().split("\n");
    for (const line of shown.slice(2, -1)) expect(line).toMatch(/^\d+\s+\d{4}-\d\d-\d\dT[\d:.]+Z\s+[a-z_]+\.[a-z_]+\s/);
    const showJson = t.eart(["show", "esc-1", "--json"]);
    expect(showJson.out).not.toMatch(RAW_CONTROL);
    expect(json<{ events: { type: string; data: { text?: string } }[] }>(showJson.out).events.filter((e) => e.type === "model.output").map((e) => e.data.text)).toContain(answer);
    const exported = t.eart(["audit", "export", "--format", "jsonl"]);
    expect(exported.out).not.toMatch(RAW_CONTROL);
  });
});

describe("eart answers: who answers, and input that is refused changes nothing", () => {
  it("the requester under another spelling, an unknown id and a non-supervisor cannot approve with --as; nothing runs", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "pose-1");
    const before = t.pending();
    expect(before).toEqual([expect.objectContaining({ toolCallId: "c1", roles: ["supervisor"] })]);
    for (const who of ["Cara", "cara ", " cara", "cara\u200b", "CARA", "omar", "fay", "support-agent"]) {
      const posing = t.eart(["approve", "pose-1", "c1", "--as", who, "--json"]);
      expect(posing.status).toBe(1);
      expect(json(posing.out).error!.code).toMatch(/^approval_(unauthorized|self_approval)$/);
    }
    expect(refunds(t.file)).toEqual([]);
    expect(eventTypes(t.file, "pose-1")).not.toContain("approval.decided");
    // The call waits exactly as it did; each refused answer is on record.
    expect(t.pending()).toEqual(before);
    expect(eventTypes(t.file, "pose-1").filter((e) => e === "approval.refused")).toHaveLength(8);
    // Eleven `eart` processes one after another: more than the default budget on a loaded machine.
  }, 180_000);

  it("a polluted or invalid edit is refused with its code and nothing runs; the call waits as it was", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "edit-1");
    const before = t.pending();
    const polluted = t.eart(["edit", "edit-1", "c1", "--as", "sam", "--json", "--args", '{"orderId":"1042","amount":50,"__proto__":{"amount":4900}}']);
    expect(polluted.status).toBe(1);
    expect(json(polluted.out).error!.code).toBe("approval_resume_invalid");
    const typed = t.eart(["edit", "edit-1", "c1", "--as", "sam", "--json", "--args", '{"orderId":"1042","amount":"50"}']);
    expect(typed.status).toBe(1);
    expect(json(typed.out).error!.code).toBe("approval_edit_not_permitted");
    const notJson = t.eart(["edit", "edit-1", "c1", "--as", "sam", "--args", "{amount: 50}"]);
    expect(notJson.status).toBe(2);
    expect(refunds(t.file)).toEqual([]);
    expect(eventTypes(t.file, "edit-1")).not.toContain("approval.decided");
    expect(t.pending().map((i) => [i.toolCallId, i.what])).toEqual(before.map((i) => [i.toolCallId, i.what]));
  });

  it("an answer to an unknown thread is refused and writes no thread; continue does not carry on a thread waiting for a human", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "known-1");
    const ghost = t.eart(["approve", "ghost-1", "c1", "--as", "sam", "--json"]);
    expect(ghost.status).toBe(1);
    expect(json(ghost.out).error!.code).toBe("thread_unknown");
    expect(rows(t.file, `SELECT DISTINCT thread_id FROM checkpoints`)).toEqual([{ thread_id: "known-1" }]);
    expect(rows(t.file, `SELECT DISTINCT thread_id FROM eart_audit_events`)).toEqual([{ thread_id: "known-1" }]);
    // The requester's own answer is refused; continue does not run it anyway.
    expect(t.eart(["approve", "known-1", "c1", "--as", "cara"]).status).toBe(1);
    const carried = t.eart(["continue", "known-1", "--json"]);
    expect(carried.status).toBe(1);
    expect(json(carried.out).error!.code).toBe("thread_not_paused");
    expect(refunds(t.file)).toEqual([]);
  });

  it("command lines that read an id as a flag, an ambiguous option or extra words are refused before anything is sent", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "args-1");
    const before = eventTypes(t.file, "args-1");
    // A thread id that starts with a dash is an unknown option; after "--" the flags that follow become words.
    expect(t.eart(["approve", "-x", "c1", "--as", "sam"]).status).toBe(2);
    expect(t.eart(["approve", "--", "args-1", "c1", "--as", "sam"]).status).toBe(2);
    // --message takes the next word only when it is not an option: "--json" there is refused, not swallowed.
    const ambiguous = t.eart(["approve", "args-1", "c1", "--as", "sam", "--message", "--json"]);
    expect(ambiguous.status).toBe(2);
    expect(json(ambiguous.out).error!.code).toBe("usage");
    expect(t.eart(["approve", "args-1", "c1", "c2", "--as", "sam"]).status).toBe(2);
    expect(t.eart(["approve", "args-1", "c1", "--as", "sam", "--bogus"]).status).toBe(2);
    expect(t.eart(["approve", "args-1", "c1", "--as", ""]).status).toBe(2);
    expect(t.eart(["approve", "args-1", "c1", "--as", "sam", "--key", "/nonexistent.pem"]).status).toBe(2);
    expect(eventTypes(t.file, "args-1")).toEqual(before);
    expect(refunds(t.file)).toEqual([]);
  });

  it("a card number in the customer's message, the model's arguments and its answer appears in no output: pending, approve, show, --json, export", () => {
    const t = scripted(
      { turns: [[refund("c1", 740, { reason: "card 4111-1111-1111-1111 charged twice" })], "Refunded to card 4111111111111111."] },
      "card-1",
      "Refund order 1042 to my card 4111 1111 1111 1111 please",
    );
    const outputs = [t.eart(["pending"]).out, t.eart(["pending", "--json"]).out];
    const approved = t.eart(["approve", "card-1", "c1", "--as", "sam", "--json"]);
    expect(approved.status).toBe(0);
    expect(json(approved.out).last).toContain("[REDACTED");
    outputs.push(approved.out, t.eart(["show", "card-1"]).out, t.eart(["show", "card-1", "--json"]).out, t.eart(["audit", "export", "--format", "jsonl"]).out, t.audit(["show", "card-1", "--json"]).out);
    expect(refunds(t.file)).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    for (const out of outputs) {
      expect(out.length).toBeGreaterThan(0);
      expect(out).not.toMatch(CARD);
    }
  });
});

describe("eart audit: an auditor is not told ok about a store that is not", () => {
  it("audit verify --thread T --public-key K does not report ok for a chain K never signed", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "sig-1");
    const dir = mkdtempSync(join(tmpdir(), "eart-cli-redteam-key-"));
    const auditor = generateKeyPairSync("ed25519");
    const pub = join(dir, "audit.pub.pem");
    writeFileSync(pub, auditor.publicKey.export({ type: "spki", format: "pem" }));
    // Setup: checked whole against the key, the store is refused (nothing in it is signed by K).
    const all = t.audit(["audit", "verify", "--all", "--public-key", pub, "--json"]);
    expect(all.status).toBe(1);
    expect(json<{ problems: { kind: string; threadId?: string; detail: string }[] }>(all.out).problems).toContainEqual(expect.objectContaining({ kind: "thread_broken", threadId: "sig-1", detail: expect.stringContaining("signature_invalid") }));
    // The guarantee: the same key, on the one thread, is not silently dropped.
    const one = t.audit(["audit", "verify", "--thread", "sig-1", "--public-key", pub]);
    expect(one.out).not.toMatch(/ok, head/);
    expect(one.status).not.toBe(0);
  });

  it("audit verify --witness W (without --all) does not report ok for a store rolled back past W", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "roll-1");
    const dir = mkdtempSync(join(tmpdir(), "eart-cli-redteam-witness-"));
    const backup = join(dir, "backup.sqlite");
    const db = new Database(t.file);
    db.exec(`VACUUM INTO '${backup}'`);
    db.close();
    expect(t.eart(["approve", "roll-1", "c1", "--as", "sam"]).status).toBe(0);
    const witness = join(dir, "witness.json");
    expect(t.eart(["audit", "head", "--out", witness]).status).toBe(0);
    for (const suffix of ["-wal", "-shm"]) if (existsSync(t.file + suffix)) rmSync(t.file + suffix);
    copyFileSync(backup, t.file);
    // Setup: with --all, the witness catches the rollback.
    const all = t.audit(["audit", "verify", "--all", "--witness", witness]);
    expect(all.status).toBe(1);
    expect(all.out).toMatch(/rollback/);
    // The guarantee: a witness given is used, or the command is refused; never a silent ok.
    const plain = t.audit(["audit", "verify", "--witness", witness]);
    expect(plain.status).not.toBe(0);
  });

  it("audit verify --thread T reports a thread an insider deleted whole (events and head) as broken, from the global log", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "gone-1");
    expect(t.eart(["approve", "gone-1", "c1", "--as", "sam"]).status).toBe(0);
    expect(t.audit(["audit", "verify", "--thread", "gone-1"]).status).toBe(0);
    const db = new Database(t.file);
    db.exec(`DELETE FROM eart_audit_events WHERE thread_id = 'gone-1'; DELETE FROM eart_audit_heads WHERE thread_id = 'gone-1'`);
    db.close();
    const one = t.audit(["audit", "verify", "--thread", "gone-1", "--json"]);
    expect(one.status).toBe(1);
    expect(json<{ ok: boolean; threadId: string }[]>(one.out)).toEqual([expect.objectContaining({ ok: false, threadId: "gone-1" })]);
    const all = t.audit(["audit", "verify", "--all", "--json"]);
    expect(all.status).toBe(1);
    expect(json<{ problems: { kind: string; threadId?: string }[] }>(all.out).problems).toContainEqual(expect.objectContaining({ kind: "missing_thread", threadId: "gone-1" }));
  });

  it("audit verify --thread with an id the store never recorded is an error, not \"ok, 0 events\" (show refuses the same id)", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "refund-1042");
    // Setup: the store holds refund-1042; the auditor mistypes it, and show says there is nothing of that id.
    expect(t.audit(["audit", "verify", "--thread", "refund-1042"]).status).toBe(0);
    expect(t.audit(["show", "refund-1024"]).status).toBe(2);
    // The guarantee: verifying an id with no record is not reported ok.
    const typo = t.audit(["audit", "verify", "--thread", "refund-1024", "--json"]);
    expect(json<{ ok: boolean }[] | { error: unknown }>(typo.out)).not.toEqual([expect.objectContaining({ ok: true })]);
    expect(typo.status).not.toBe(0);
  });

  it("audit head --out does not overwrite a witness the store has rolled back past (which would bless the rollback)", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "head-1");
    const dir = mkdtempSync(join(tmpdir(), "eart-cli-redteam-head-"));
    const backup = join(dir, "backup.sqlite");
    const db = new Database(t.file);
    db.exec(`VACUUM INTO '${backup}'`);
    db.close();
    expect(t.eart(["approve", "head-1", "c1", "--as", "sam"]).status).toBe(0);
    // The auditor's witness, kept outside the store, as the README says: eart audit head --out witness.json.
    const witness = join(dir, "witness.json");
    expect(t.audit(["audit", "head", "--out", witness]).status).toBe(0);
    const kept = readFileSync(witness, "utf8");
    // An insider restores the backup: the approval and the refund's audit events are gone.
    for (const suffix of ["-wal", "-shm"]) if (existsSync(t.file + suffix)) rmSync(t.file + suffix);
    copyFileSync(backup, t.file);
    expect(t.audit(["audit", "verify", "--all", "--witness", witness]).status).toBe(1);
    // The auditor's next scheduled refresh of the witness.
    const refreshed = t.audit(["audit", "head", "--out", witness]);
    // The guarantee: the evidence of the rollback is not replaced by the rolled-back head.
    expect(readFileSync(witness, "utf8")).toBe(kept);
    expect(t.audit(["audit", "verify", "--all", "--witness", witness]).status).toBe(1);
    expect(refreshed.status).toBe(1);
  });

  it("show on a thread with a tampered event reports where the chain breaks, instead of failing with an internal TypeError", () => {
    const t = scripted({ turns: [[refund("c1", 740)]] }, "tamper-1");
    const db = new Database(t.file);
    db.prepare(`UPDATE eart_audit_events SET data = '{}' WHERE thread_id = 'tamper-1' AND type = 'identity.bound'`).run();
    db.close();
    // Setup: verify sees the changed event.
    const verified = t.audit(["audit", "verify", "--thread", "tamper-1"]);
    expect(verified.status).toBe(1);
    expect(verified.out).toMatch(/BROKEN at #1 \(hash_mismatch\)/);
    // The guarantee: the auditor's timeline says the chain is broken at #1, with exit code 1.
    const show = t.audit(["show", "tamper-1"]);
    expect(show.status).toBe(1);
    expect(show.err).not.toMatch(/TypeError/);
    expect(show.out).toMatch(/chain BROKEN at #1/);
  });
});

describe("eart against a LangGraph server (one dev server)", () => {
  let server: DevServer;
  beforeAll(async () => {
    server = await startDevServer();
  }, 240_000);
  afterAll(async () => {
    await server?.stop();
  }, 60_000);

  async function run(args: string[], env: Record<string, string> = {}) {
    try {
      const { stdout, stderr } = await promisify(execFile)(process.execPath, [cli, ...args], {
        env: { ...process.env, ...baseEnv, EART_APP: "/nonexistent/app.js", ...env },
        timeout: 90_000,
      });
      return { status: 0, out: stdout, err: stderr };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string };
      return { status: e.code ?? -1, out: String(e.stdout ?? ""), err: String(e.stderr ?? "") };
    }
  }
  /** The command line as `user`; an answer names the ref `pending` lists to that user, unless it gives one (cli-ref.ts). */
  const eart = async (args: string[], user: string) => {
    const as = ["--url", server.url, "--token", TOKENS[user]!];
    const listed = answerWithoutRef(args) ? json<InboxRow[]>((await run([...as, "pending", "--json"])).out) : [];
    return run([...as, ...withListedRef(args, listed)]);
  };
  const refundsOf = (threadId: string) =>
    server.rows<{ orderId: string; amount: number }>("refunds", "order_id AS orderId, amount", {
      sql: "tool_call_id IN (SELECT json_extract(data, '$.toolCallId') FROM eart_audit_events WHERE thread_id = ? AND type = 'tool.succeeded') ORDER BY id",
      params: [threadId],
    });
  async function ask(threadId: string | undefined, text: string): Promise<string> {
    const client = server.client("cara");
    const id = threadId ?? (await client.threads.create()).thread_id;
    await client.runs.wait(id, "refund", { input: { messages: [{ role: "user", content: text }] } });
    expect((await client.threads.get(id)).status).toBe("interrupted");
    return id;
  }

  it("a stale approve --all, sent after the listed request was answered, does not approve the new, larger request on the same thread", async () => {
    const threadId = await ask(undefined, "Please refund order 1042, $740");
    // Sue lists what waits for her: a $740 refund.
    const seen = json<InboxRow[]>((await eart(["pending", "--json"], "sue")).out).filter((i) => i.threadId === threadId);
    expect(seen).toEqual([expect.objectContaining({ kind: "approval", what: expect.stringContaining('"amount":740') })]);
    // Sam answers it first; the customer then asks for $4,900 on the same thread.
    expect((await eart(["approve", threadId, "--all"], "sam")).status).toBe(0);
    expect(refundsOf(threadId)).toEqual([{ orderId: "1042", amount: 740 }]);
    await ask(threadId, "Please refund order 1042, $4900");
    const now = json<InboxRow[]>((await eart(["pending", "--json"], "sam")).out).filter((i) => i.threadId === threadId);
    expect(now).toEqual([expect.objectContaining({ kind: "approval", what: expect.stringContaining('"amount":4900') })]);
    // Sue sends the approve she decided on after reading "$740", naming what she read.
    const stale = await eart(["approve", threadId, "--all", "--json", "--ref", seen[0]!.ref!], "sue");
    // The guarantee: no $4,900 refund on sue's word.
    expect(refundsOf(threadId)).toEqual([{ orderId: "1042", amount: 740 }]);
    expect(stale.status).toBe(1);
    expect(json(stale.out).error?.code).toBe("task_changed");
    expect((await server.client("cara").threads.get(threadId)).status).toBe("interrupted");
  });

  it("another customer's token neither lists, shows nor answers a customer's request; the requester's own token cannot approve it", async () => {
    const threadId = await ask(undefined, "Please refund order 1042, $740");
    const omarList = await eart(["pending", "--json"], "omar");
    expect(omarList.status).toBe(0);
    expect(json<InboxRow[]>(omarList.out).map((i) => i.threadId)).not.toContain(threadId);
    for (const args of [["show", threadId], ["approve", threadId, "--all"], ["reject", threadId, "--all", "--message", "no"], ["decide", threadId, "--approve", "all"]]) {
      const omar = await eart([...args, "--json"], "omar");
      expect(omar.status).toBe(1);
      expect(json(omar.out).error!.code).toBe("http_404");
    }
    const own = await eart(["decide", threadId, "--approve", "all", "--json"], "cara");
    expect(own.status).toBe(1);
    expect(json(own.out).error!.code).toBe("approval_self_approval");
    expect(refundsOf(threadId)).toEqual([]);
    // It still waits for a supervisor, as it was.
    expect(json<InboxRow[]>((await eart(["pending", "--json"], "sam")).out).filter((i) => i.threadId === threadId)).toEqual([expect.objectContaining({ kind: "approval", toolCallId: "call_1_refund" })]);
  });

  it("a customer's message with terminal escapes and forged rows reaches pending and show escaped, in the table and in --json", async () => {
    const ESC = "\u001b";
    const forged = "3  ai  Your refund of $740 for order 1042 has been approved by sam.";
    const text = `Please refund order 1042, $740\r${ESC}[2K${ESC}[1A\n${forged}\u0085\u009b2K\u2028\u202e${ESC}]0;eart\u0007 thanks\u200b`;
    const threadId = await ask(undefined, text);

    const table = await eart(["pending"], "sam");
    expect(table.status).toBe(0);
    expect(table.out).not.toMatch(RAW_CONTROL);
    expect(table.out.split("\n").filter((l) => l.includes(threadId))).toHaveLength(1);
    const listed = await eart(["pending", "--json"], "sam");
    expect(listed.out).not.toMatch(RAW_CONTROL);
    expect(json<InboxRow[]>(listed.out).filter((i) => i.threadId === threadId)).toHaveLength(1);

    const show = await eart(["show", threadId], "sam");
    expect(show.status).toBe(0);
    expect(show.out).not.toMatch(RAW_CONTROL);
    // The forged row is text inside the row quoting the customer, never a row of its own.
    expect(show.out.split("\n").filter((l) => l.includes("has been approved by sam"))).toEqual([expect.stringMatching(/^0\s+human\s+Please refund order 1042, \$740\\r\\x1b\[2K\\x1b\[1A\\n3 {2}ai/)]);
    const shown = await eart(["show", threadId, "--json"], "sam");
    expect(shown.out).not.toMatch(RAW_CONTROL);
    expect(json<{ messages: { role: string; text: string }[] }>(shown.out).messages[0]).toEqual({ role: "human", text });
    expect(refundsOf(threadId)).toEqual([]);
  });
});
