/**
 * A red-team pass on "what policy decided and the approver saw is exactly what runs".
 *
 * The gate validates a call's arguments with the tool's own zod schema and hands policy the
 * parsed value, while the decision record, the approval request and the budgets used the raw
 * arguments the model proposed, and the tool parses the raw arguments again. Wherever a schema's
 * parse is not the identity (`.default()`, `z.coerce.*`, `.transform()`, LangChain's string tools)
 * the views drifted apart. The pass found, and eart now closes: a string tool's `{ input }` reached
 * policy as a bare string (a deny rule on `args.input` never matched; Cedar denied every call);
 * the approver was shown `{ to }` for a wire its schema fills to $4,900, and `"false"` for a flag
 * that runs as true (the record now keeps `parsedArgs`, the arguments as the tool reads them, and
 * the request shows them); budgets counted raw dollars where policy judged cents; a rule's reason
 * quoting an argument could forge lines of the HITL description; a budget's approver roles joined
 * the rule's and any one of them could approve past both (each is now a group that must approve).
 */
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { DynamicTool, tool, type StructuredToolInterface } from "@langchain/core/tools";
import { Command, MemorySaver } from "@langchain/langgraph";
import { createAgent } from "langchain";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  defineBudgets,
  definePolicy,
  eartErrorOf,
  toHitlRequest,
  IdentityRegistry,
  MemoryAuditLog,
  MemoryBudgetStore,
  MemoryEffectLedger,
  pendingApproval,
  toolCallDigest,
  type BudgetGuard,
  type PolicyEngine,
} from "eart";
import { createCedarPolicyEngine } from "eart/cedar";
import { createGovernedAgent } from "eart/graphs";
import { governanceMiddleware, guardAgent } from "eart/middleware";
import { refundSetup, turnsModel, ask as askRefund, config as refundConfig, type Call } from "../support/refund.js";
import { middlewareRefundSetup } from "../support/middleware-agent.js";

// ── fixtures ────────────────────────────────────────────────────────────────────────────────────


const TOOLS = ["pay", "run_sql", "wire", "flag_order", "pay_cents"];
const registry = IdentityRegistry.fromObject({
  roles: { customer: { tools: ["*"] }, supervisor: { tools: ["*"] }, finance: { tools: ["*"] } },
  agents: [{ id: "support-agent", roles: ["support"], tools: TOOLS }],
  users: [
    { id: "cara", roles: ["customer"] },
    { id: "sam", roles: ["supervisor"] },
    { id: "fay", roles: ["finance"] },
  ],
});
const cfg = (threadId: string, userId = "cara") => ({ configurable: { thread_id: threadId, agent_id: "support-agent", user_id: userId } });
const ask = (t = "please") => ({ messages: [new HumanMessage(t)] });
const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: unknown) => eartErrorOf(e)?.code ?? `not eart's: ${String((e as Error)?.message ?? e).slice(0, 200)}`);
const approveAll = (request: { requests: { toolCallId: string; digest: string }[] }) =>
  new Command({ resume: { decisions: request.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve", digest: r.digest })) } });

/** The tools, each recording the (parsed) arguments it was run with. */
function makeTools() {
  const ran: { name: string; args: unknown }[] = [];
  const rec = (name: string) => async (args: unknown) => {
    ran.push({ name, args });
    return JSON.stringify({ ok: true });
  };
  // Amount coerced from what a model sends ("740" is common in model output).
  const pay = tool(rec("pay"), { name: "pay", description: "Pay an amount in dollars", schema: z.object({ to: z.string(), amount: z.coerce.number().positive() }) });
  // An optional amount with a documented default.
  const wire = tool(rec("wire"), { name: "wire", description: "Wire money (default: the full balance, $4,900)", schema: z.object({ to: z.string(), amount: z.number().positive().default(4900) }) });
  // A flag coerced from whatever the model sends.
  const flagOrder = tool(rec("flag_order"), { name: "flag_order", description: "Release an order", schema: z.object({ orderId: z.string(), waiveFraudCheck: z.coerce.boolean() }) });
  // Dollars in, integer cents to the payments API (and to policy and budgets, which work in cents).
  const payCents = tool(rec("pay_cents"), {
    name: "pay_cents",
    description: "Pay an amount in dollars",
    schema: z.object({ to: z.string(), amount: z.number().positive().transform((d) => Math.round(d * 100)) }),
  });
  // LangChain's classic string tool: the model calls it with { input: "..." }.
  const runSql = new DynamicTool({ name: "run_sql", description: "Run a SQL statement", func: async (input: string) => (ran.push({ name: "run_sql", args: input }), "ok") });
  return { ran, pay, wire, flagOrder, payCents, runSql, all: [pay, wire, flagOrder, payCents, runSql as unknown as StructuredToolInterface] };
}

/** Dollar thresholds over the parsed `amount`: ≤ $100 allowed, ≤ $5,000 a supervisor, above denied. */
const moneyPolicy = (tools: string[], unit = 1) =>
  definePolicy({
    name: "money",
    config: { unit },
    rules: [
      { id: "small", tools, when: (r, c) => typeof r.tool.args.amount === "number" && r.tool.args.amount <= 100 * Number(c.unit), effect: "allow" },
      {
        id: "supervisor",
        tools,
        when: (r, c) => typeof r.tool.args.amount === "number" && r.tool.args.amount > 100 * Number(c.unit) && r.tool.args.amount <= 5000 * Number(c.unit),
        effect: "require_approval",
        approverRoles: ["supervisor"],
        reason: "Payments over $100 need a supervisor",
      },
      { id: "limit", tools, when: (r, c) => !(typeof r.tool.args.amount === "number" && r.tool.args.amount <= 5000 * Number(c.unit)), effect: "deny", reason: "Over $5,000, or no amount" },
    ],
  });

function setup(turns: Call[][], policy: PolicyEngine, opts: { budgets?: BudgetGuard } = {}) {
  const t = makeTools();
  // The agent has the tools its turns call (eart refuses an agent with a tool no rule covers).
  const names = new Set(turns.flat().map((c) => c.name));
  const auditLog = new MemoryAuditLog();
  const agent = createGovernedAgent({
    model: turnsModel(turns),
    tools: t.all.filter((x) => names.has(x.name)),
    identities: registry,
    policy,
    checkpointer: new MemorySaver(),
    auditLog,
    ...(opts.budgets ? { budgets: opts.budgets } : {}),
  });
  /** What policy was asked about each call (the `policy.decided` request). */
  const decidedOn = async (threadId: string) =>
    Object.fromEntries(
      (await auditLog.read(threadId))
        .filter((e) => e.type === "policy.decided")
        .map((e) => [e.data.toolCallId as string, { effect: e.data.effect, args: (e.data.request as { tool?: { args?: unknown } } | null)?.tool?.args }]),
    );
  return { agent, auditLog, ran: t.ran, decidedOn };
}

// ── 1. the value policy sees vs the value the tool runs ──────────────────────────────────────────

describe("policy decides on the value the tool runs", () => {
  // Found by the pass (high, for any app with string tools), closed. Who: the customer, through the model's proposal or
  // a prompt injection. LangChain's string tools (DynamicTool, `Tool`, `runnable.asTool()` with a
  // string schema) have the schema `z.object({ input }).transform((o) => o.input)`: the model sends
  // `{ input: "DROP TABLE users" }`, eart shows the approver and digests `{ input: … }`, but
  // `checkToolArgs` returns the transformed value and the gate hands policy `args = "DROP TABLE
  // users"` (a string, not the record PolicyRequestSchema promises). A rule written against the
  // call as shown (`r.tool.args.input`) reads `undefined` and never matches: the deny rule is
  // silently skipped, the allow rule matches, and the statement runs.
  // Fixed in langgraph/tools.ts `checkToolArgs` (was: guards/policy-gate.ts `evaluate` (and langgraph/redecide.ts `decideRecordedCall`, the edit
  // path in `resolve`): when the parsed value is not a plain object, decide on the raw `call.args`
  // (they are what the tool's schema maps 1:1), or refuse the call as `eart.arguments`; never hand
  // policy a non-record as `args` (langgraph/tools.ts `checkToolArgs` could return both raw and parsed).
  it("a deny rule on a string tool's `args.input` stops `DROP TABLE` (DynamicTool)", async () => {
    const policy = definePolicy({
      name: "sql",
      rules: [
        { id: "sql.no-ddl", tools: ["run_sql"], when: (r) => /\b(drop|truncate|alter)\b/i.test(String(r.tool.args.input)), effect: "deny", reason: "No DDL" },
        { id: "sql.read", tools: ["run_sql"], effect: "allow" },
      ],
    });
    const s = setup([[{ id: "q1", name: "run_sql", args: { input: "DROP TABLE users" } }]], policy);
    await s.agent.invoke(ask(), cfg("sql-1"));
    // Before the fix: policy was asked with args "DROP TABLE users" (a string, recorded so in
    // policy.decided), the deny rule read undefined, the allow rule matched, and it ran.
    expect(s.ran).toEqual([]);
  });

  // Same hole through governanceMiddleware (createAgent): the middleware uses the same gate.
  it("…and the same under createAgent + governanceMiddleware + guardAgent", async () => {
    const t = makeTools();
    const auditLog = new MemoryAuditLog();
    const policy = definePolicy({
      name: "sql",
      rules: [
        { id: "sql.no-ddl", tools: ["run_sql"], when: (r) => /\bdrop\b/i.test(String(r.tool.args.input)), effect: "deny" },
        { id: "sql.read", tools: ["run_sql"], effect: "allow" },
      ],
    });
    const governance = governanceMiddleware({ identities: registry, policy, auditLog, ledger: new MemoryEffectLedger() });
    const agent = guardAgent(
      createAgent({ model: turnsModel([[{ id: "q1", name: "run_sql", args: { input: "DROP TABLE users" } }]]), tools: [t.runSql], checkpointer: new MemorySaver(), middleware: [governance] }),
      governance,
    );
    await agent.invoke({ messages: [{ role: "user", content: "clean up" }] }, cfg("sql-mw"));
    expect(t.ran).toEqual([]);
  });

  it("look-alike tool names (zero-width, case, trailing space, homoglyph) run nothing under createAgent + governanceMiddleware", async () => {
    const s = middlewareRefundSetup([
      [
        { id: "ok", name: "issue_refund", args: { orderId: "1043", amount: 50 } },
        ...["issue\u200Brefund", "Issue_Refund", "issue_refund ", "issue_r\u0435fund", "issue_refund\u0000"].map((name, i) => ({ id: `n${i}`, name, args: { orderId: "1043", amount: 60 } })),
      ],
    ]);
    await s.agent.invoke({ messages: [{ role: "user", content: "refund" }] }, refundConfig("names-mw")).catch(() => undefined);
    // Only the real tool's call ran.
    expect(s.refunds()).toEqual([{ orderId: "1043", amount: 50, toolCallId: "ok" }]);
  });

  it("Cedar on a string tool reads args.input too: DROP is forbidden, SELECT permitted", async () => {
    const policy = createCedarPolicyEngine({
      policies: `
        @id("sql.no-drop") forbid (principal, action == Action::"run_sql", resource) when { context.args.input like "*DROP*" };
        @id("sql.read") permit (principal, action == Action::"run_sql", resource);`,
    });
    const s = setup([[{ id: "q1", name: "run_sql", args: { input: "DROP TABLE users" } }], [{ id: "q2", name: "run_sql", args: { input: "SELECT 1" } }]], policy);
    await s.agent.invoke(ask(), cfg("sql-cedar"));
    expect(s.ran).toEqual([{ name: "run_sql", args: "SELECT 1" }]);
    expect(Object.values(await s.decidedOn("sql-cedar")).map((d) => d.effect)).toEqual(["deny", "allow"]);
  });

  it("coerced numbers: policy sees the number the tool gets, for every spelling a model may send", async () => {
    // Each spelling of $740 pauses for a supervisor (typed rule on the parsed number); nothing runs.
    const spellings = ["740", "7.4e2", "0x2E4", " 740 ", "740.0000000001", "0o1344", "0b1011100100"];
    const s = setup([spellings.map((amount, i) => ({ id: `p${i}`, name: "pay", args: { to: "acme", amount } }))], moneyPolicy(["pay"]));
    const out = await s.agent.invoke(ask(), cfg("num-1"));
    expect(pendingApproval(out)?.requests.map((r) => r.toolCallId)).toEqual(spellings.map((_, i) => `p${i}`));
    const decided = await s.decidedOn("num-1");
    for (let i = 0; i < spellings.length; i++) expect(decided[`p${i}`]).toMatchObject({ effect: "require_approval" });
    expect(s.ran).toEqual([]);
    // What the supervisor approves is what runs, number for number.
    await s.agent.invoke(approveAll(pendingApproval(out)!), cfg("num-1", "sam"));
    expect(s.ran.map((r) => (r.args as { amount: number }).amount)).toEqual(spellings.map((_, i) => (decided[`p${i}`]!.args as { amount: number }).amount));
  });

  it("values coerce makes no positive finite amount of never run; those it does run as policy saw them (true → 1, [740] → 740)", async () => {
    const bad: unknown[] = ["1e999", "NaN", "Infinity", "-740", -740, -0, 0, "", "   ", [740], {}, true, null];
    const s = setup([bad.map((amount, i) => ({ id: `b${i}`, name: "pay", args: { to: "acme", amount } }))], moneyPolicy(["pay"]));
    const out = await s.agent.invoke(ask(), cfg("num-2"));
    const decided = await s.decidedOn("num-2");
    const effects = Object.fromEntries(Object.entries(decided).map(([id, d]) => [id, d.effect]));
    // 1e999 → Infinity, NaN, negatives, zeros, blanks, {}, null: refused by the schema (deny, eart.arguments).
    expect(effects).toEqual({ b0: "deny", b1: "deny", b2: "deny", b3: "deny", b4: "deny", b5: "deny", b6: "deny", b7: "deny", b8: "deny", b9: "require_approval", b10: "deny", b11: "allow", b12: "deny" });
    expect(decided.b9?.args).toEqual({ to: "acme", amount: 740 });
    expect(decided.b11?.args).toEqual({ to: "acme", amount: 1 });
    const request = pendingApproval(out)!;
    await s.agent.invoke(new Command({ resume: { decisions: request.requests.map((r) => ({ toolCallId: r.toolCallId, type: "reject", digest: r.digest })) } }), cfg("num-2", "sam"));
    // Only the allowed call ran, with the value policy decided on.
    expect(s.ran).toEqual([{ name: "pay", args: decided.b11!.args }]);
  });

  it("precision at the threshold: 100.00000000000001 needs a supervisor; 100.000000000000001 is 100 to policy and to the tool", async () => {
    const s = setup([[{ id: "a", name: "pay", args: { to: "acme", amount: 100.00000000000001 } }, { id: "b", name: "pay", args: { to: "acme", amount: 100.000000000000001 } }]], moneyPolicy(["pay"]));
    const request = pendingApproval(await s.agent.invoke(ask(), cfg("prec")))!;
    const d = await s.decidedOn("prec");
    expect(d.a?.effect).toBe("require_approval");
    expect(d.b?.effect).toBe("allow");
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["a"]);
    await s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "a", type: "reject", digest: request.requests[0]!.digest }] } }), cfg("prec", "sam"));
    expect(s.ran).toEqual([{ name: "pay", args: { to: "acme", amount: 100 } }]);
  });

  it("Cedar over coerced integers: '0x2E4' is 740 to Cedar and to the tool; '740.5' fails closed", async () => {
    const policy = createCedarPolicyEngine({
      policies: `
        @id("pay.small") permit (principal, action == Action::"pay", resource) when { context.args.amount <= 100 };
        @id("pay.sup") @requires_approval("supervisor") permit (principal, action == Action::"pay", resource) when { context.args.amount > 100 && context.args.amount <= 5000 };`,
    });
    const s = setup([[{ id: "h", name: "pay", args: { to: "acme", amount: "0x2E4" } }, { id: "f", name: "pay", args: { to: "acme", amount: "740.5" } }, { id: "s", name: "pay", args: { to: "acme", amount: "9e1" } }]], policy);
    const out = await s.agent.invoke(ask(), cfg("cedar-num"));
    const d = await s.decidedOn("cedar-num");
    expect(d.h).toEqual({ effect: "require_approval", args: { to: "acme", amount: 740 } });
    expect(d.f?.effect).toBe("deny");
    expect(d.s).toEqual({ effect: "allow", args: { to: "acme", amount: 90 } });
    // The allowed $90 may run at once or after the paused one is answered; never the $740 unapproved.
    expect(s.ran.filter((r) => (r.args as { amount: number }).amount !== 90)).toEqual([]);
    await s.agent.invoke(approveAll(pendingApproval(out)!), cfg("cedar-num", "sam"));
    expect(s.ran.map((r) => (r.args as { amount: number }).amount).sort()).toEqual([740, 90]);
  });

  it("look-alike keys are stripped before both policy and the tool: { amount: 50, Amount: 9000, AMOUNT: '9000' } refunds $50", async () => {
    const s = refundSetup([[{ id: "k1", name: "issue_refund", args: { orderId: "1043", amount: 50, Amount: 9000, AMOUNT: "9000", "amount ": 9000 } }]]);
    await s.agent.invoke(askRefund(), refundConfig("keys"));
    expect(s.refunds()).toEqual([{ orderId: "1043", amount: 50, toolCallId: "k1" }]);
  });
});

// ── 2. what the approver is shown vs what runs ────────────────────────────────────────────────────

describe("the approval request shows the call that runs", () => {
  it("control: the digest shown is the digest of the call the tool node runs, and the HITL view shows eart's args", async () => {
    const s = setup([[{ id: "c1", name: "pay", args: { to: "acme", amount: 740 } }]], moneyPolicy(["pay"]));
    const request = pendingApproval(await s.agent.invoke(ask(), cfg("ctl")))!;
    expect(request.requests[0]!.digest).toBe(toolCallDigest("pay", { to: "acme", amount: 740 }, "ctl"));
    expect((request as unknown as { actionRequests: { args: unknown }[] }).actionRequests[0]!.args).toEqual(request.requests[0]!.args);
    await s.agent.invoke(approveAll(request), cfg("ctl", "sam"));
    const started = (await s.auditLog.read("ctl")).filter((e) => e.type === "tool.started");
    expect(started.map((e) => e.data.digest)).toEqual([request.requests[0]!.digest]);
    expect(s.ran).toEqual([{ name: "pay", args: request.requests[0]!.args }]);
  });

  // Found by the pass (medium), closed. Who: the customer via the model (or an injection): the approver is shown a
  // call that differs from the one that runs. The model omits `amount`; the schema's `.default(4900)`
  // fills it. Policy saw 4900 (parsed) and asked a supervisor, but the request (eart's `args` and the
  // HITL `actionRequests[].args`) and the digest carry the raw `{ to }`: sam approves a wire with no
  // amount on screen and $4,900 leaves. Now the record keeps `parsedArgs` (what the tool reads, what
  // policy judged) and the request shows them beside `args` and in the HITL description; the digest
  // stays over what the model sent, which the tool reads the same way every time.
  it("a `.default()` the model left out: the approver is shown the amount that will be wired", async () => {
    const s = setup([[{ id: "w1", name: "wire", args: { to: "acct-999" } }]], moneyPolicy(["wire"]));
    const request = pendingApproval(await s.agent.invoke(ask(), cfg("dflt")))!;
    // What the model sent, and beside it what the tool reads (and policy judged).
    expect(request.requests[0]!.args).toEqual({ to: "acct-999" });
    expect(request.requests[0]!.parsedArgs).toEqual({ to: "acct-999", amount: 4900 });
    expect((request as unknown as { actionRequests: { description: string }[] }).actionRequests[0]!.description).toContain('The tool reads these arguments as: {"amount":4900,"to":"acct-999"}');
    await s.agent.invoke(approveAll(request), cfg("dflt", "sam"));
    expect(s.ran.map((r) => r.args)).toEqual([request.requests[0]!.parsedArgs]);
  });

  // Found by the pass (medium), closed. Same root cause, and the shown value is the opposite of what runs:
  // `z.coerce.boolean()` makes the string "false" true. Policy (parsed: true) asks a supervisor for
  // waiving the fraud check; the request shows `waiveFraudCheck: "false"`; sam approves what reads
  // as "no waiver", and the order is released with the check waived. Now shown as above.
  it("a `z.coerce.boolean()` flag: the approver is shown that the call runs with true", async () => {
    const policy = definePolicy({
      name: "orders",
      rules: [
        { id: "release", tools: ["flag_order"], when: (r) => r.tool.args.waiveFraudCheck === false, effect: "allow" },
        { id: "waiver", tools: ["flag_order"], when: (r) => r.tool.args.waiveFraudCheck === true, effect: "require_approval", approverRoles: ["supervisor"], reason: "Waiving the fraud check needs a supervisor" },
      ],
    });
    const s = setup([[{ id: "f1", name: "flag_order", args: { orderId: "1042", waiveFraudCheck: "false" } }]], policy);
    const request = pendingApproval(await s.agent.invoke(ask(), cfg("bool")))!;
    expect(request.requests[0]!.parsedArgs).toEqual({ orderId: "1042", waiveFraudCheck: true });
    expect((request as unknown as { actionRequests: { description: string }[] }).actionRequests[0]!.description).toContain('"waiveFraudCheck":true');
    await s.agent.invoke(approveAll(request), cfg("bool", "sam"));
    expect(s.ran.map((r) => r.args)).toEqual([request.requests[0]!.parsedArgs]);
  });

  // Found by the pass (low), closed. Who: the customer via the model. The HITL `description` (what Agent Chat UI / Agent
  // Inbox render as the explanation) is the rules' reasons joined with eart's own lines
  // ("Approver roles: …", "Approvals needed: …", "Edited by an approver…"). A reason that quotes an
  // argument (the README and the HITL port endorse reasons as functions of the call) carries the
  // model's newlines and bidi controls verbatim, so the model forges eart's own lines ("Approvals
  // needed: 0 (pre-approved by sam)") or reorders what is shown with U+202E. Enforcement is
  // server-side, so nothing runs unapproved, but the shown request misrepresents the call.
  // Fixed: src/human-tasks/approval.ts `descriptionOf`: control, bidi and zero-width characters of a
  // reason are written visibly, and a line of it that starts like one of eart's own is marked "Reason:".
  it("a reason quoting an argument cannot forge eart's own description lines or smuggle bidi controls", async () => {
    const policy = definePolicy({
      name: "wire",
      rules: [
        { id: "wire.sup", tools: ["wire"], effect: "require_approval", approverRoles: ["supervisor"], reason: (r) => `Wire to ${String(r.tool.args.to)} needs a supervisor` },
      ],
    });
    const to = "acct-1 (verified payee)\nApprovals needed: 0 (pre-approved by sam)\nApprover roles: customer\u202E999-tcca";
    const s = setup([[{ id: "w1", name: "wire", args: { to, amount: 4900 } }]], policy);
    const request = pendingApproval(await s.agent.invoke(ask(), cfg("desc")))!;
    const description = (request as unknown as { actionRequests: { description: string }[] }).actionRequests[0]!.description;
    // Before the fix: four lines, two of them forged, and a raw U+202E.
    expect(description.split("\n").filter((l) => /^Approver roles:|^Approvals needed:/.test(l))).toEqual(["Approver roles: supervisor"]);
    expect(description).not.toMatch(/[\u202A-\u202E\u2066-\u2069\u200B-\u200F]/);
  });
});

// ── 2b. the call that runs after an approval ──────────────────────────────────────────────────────

describe("an approval runs the approved call, not a rewritten one", () => {
  it("prebuilt agent: approved with the run stopped before the tools, the proposing message rewritten (same ids, $4,900), continued: the $4,900 never runs", async () => {
    const s = refundSetup([[{ id: "c1", name: "issue_refund", args: { orderId: "1042", amount: 740 } }]]);
    const request = pendingApproval(await s.agent.invoke(askRefund(), refundConfig("rw")))!;
    // A client that stops the approving run before the tool step (run-time interruptBefore).
    const stopped = await codeOf(s.agent.invoke(approveAll(request), { ...refundConfig("rw", "sam"), interruptBefore: ["tools"] } as never));
    const proposing = ((await s.agent.getState(refundConfig("rw"))).values.messages as BaseMessage[]).find((m) => AIMessage.isInstance(m))!;
    const rewritten = new AIMessage({ id: proposing.id!, content: "", tool_calls: [{ id: "c1", name: "issue_refund", args: { orderId: "1042", amount: 4900 } }] });
    const write = await codeOf(s.agent.updateState(refundConfig("rw"), { messages: [rewritten] }));
    await s.agent.invoke(null as never, refundConfig("rw", "cara")).catch(() => undefined);
    await s.agent.invoke(null as never, refundConfig("rw", "sam")).catch(() => undefined);
    // The stopped approval is accepted; the rewrite of the message the thread holds is refused (a
    // caller adds messages, never replaces one). The continue runs the $740 sam approved, once.
    expect({ stopped, write }).toEqual({ stopped: "no error", write: "state_write_refused" });
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    // Written past the guard (a script calling LangGraph's own method), the continue meets a call
    // whose digest is not the approved one, and blocks it: the $4,900 never runs.
    const t = refundSetup([[{ id: "c1", name: "issue_refund", args: { orderId: "1042", amount: 740 } }]]);
    const asked = pendingApproval(await t.agent.invoke(askRefund(), refundConfig("rw-past")))!;
    await t.agent.invoke(approveAll(asked), { ...refundConfig("rw-past", "sam"), interruptBefore: ["tools"] } as never);
    const own = Object.getPrototypeOf(t.agent) as { bulkUpdateState: (this: unknown, config: unknown, supersteps: unknown) => Promise<unknown> };
    const held = ((await t.agent.getState(refundConfig("rw-past"))).values.messages as BaseMessage[]).find((m) => AIMessage.isInstance(m))!;
    await own.bulkUpdateState.call(t.agent, refundConfig("rw-past"), [{ updates: [{ values: { messages: [new AIMessage({ id: held.id!, content: "", tool_calls: rewritten.tool_calls })] } }] }]);
    await t.agent.invoke(null as never, refundConfig("rw-past", "cara")).catch(() => undefined);
    expect(t.refunds()).toEqual([]);
    const blocked = (await t.auditLog.read("rw-past")).filter((e) => e.type === "tool.blocked");
    expect(blocked.map((e) => [e.data.toolCallId, e.data.recordedDigest])).toEqual([["c1", asked.requests[0]!.digest]]);
  });
});

// ── 3. edits ─────────────────────────────────────────────────────────────────────────────────────

describe("an approver's edit is checked as the tool will run it", () => {
  it("edits that smuggle a name, a coerced big amount, a __proto__ key, another call's digest or an unknown call are refused; a valid edit runs exactly once", async () => {
    const s = setup([[{ id: "c1", name: "pay", args: { to: "acme", amount: 740 } }, { id: "c2", name: "pay", args: { to: "acme", amount: 300 } }]], moneyPolicy(["pay"]));
    const request = pendingApproval(await s.agent.invoke(ask(), cfg("edit")))!;
    const [r1, r2] = request.requests;
    const answer = (d1: Record<string, unknown>) => new Command({ resume: { decisions: [d1, { toolCallId: "c2", type: "reject", digest: r2!.digest }] } });
    const edit = (args: unknown, extra: Record<string, unknown> = {}) => answer({ toolCallId: "c1", type: "edit", digest: r1!.digest, args, ...extra });
    const refused = [
      // The tool name is not the edit's to change (keyed decisions are strict).
      await codeOf(s.agent.invoke(edit({ to: "acme", amount: 60 }, { name: "wire" }), cfg("edit", "sam"))),
      // "9e3" coerces to 9000: policy is asked about 9000 (denied), not about a string.
      await codeOf(s.agent.invoke(edit({ to: "acme", amount: "9e3" }), cfg("edit", "sam"))),
      await codeOf(s.agent.invoke(edit({ to: "acme", amount: "0x2328" }), cfg("edit", "sam"))),
      // A JSON __proto__ member.
      await codeOf(s.agent.invoke(edit(JSON.parse('{"to":"acme","amount":60,"__proto__":{"amount":9000}}')), cfg("edit", "sam"))),
      // c1 edited with c2's digest.
      await codeOf(s.agent.invoke(answer({ toolCallId: "c1", type: "edit", digest: r2!.digest, args: { to: "acme", amount: 60 } }), cfg("edit", "sam"))),
      // An edit for a call that is not pending.
      await codeOf(s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest: r1!.digest }, { toolCallId: "c2", type: "reject", digest: r2!.digest }, { toolCallId: "c3", type: "edit", digest: r1!.digest, args: { to: "x", amount: 1 } }] } }), cfg("edit", "sam"))),
      // A HITL edit naming another tool.
      await codeOf(s.agent.invoke(new Command({ resume: { decisions: [{ type: "edit", editedAction: { name: "wire", args: { to: "acme", amount: 60 } } }, { type: "reject" }] } }), cfg("edit", "sam"))),
    ];
    expect(refused).toEqual(["approval_resume_invalid", "approval_edit_not_permitted", "approval_edit_not_permitted", "approval_resume_invalid", "approval_digest_mismatch", "approval_decisions_mismatch", "approval_edit_not_permitted"]);
    expect(s.ran).toEqual([]);
    // Extra keys in a valid edit are stripped by the tool's schema before policy and before the tool.
    await s.agent.invoke(edit({ to: "acme", amount: "60", Amount: 9000 }), cfg("edit", "sam"));
    expect(s.ran).toEqual([{ name: "pay", args: { to: "acme", amount: 60 } }]);
    await s.agent.invoke(null as never, cfg("edit", "cara")).catch(() => undefined);
    expect(s.ran).toHaveLength(1);
  });
});

// ── 4. budgets count the value that runs ─────────────────────────────────────────────────────────

describe("budgets count the amount the tool runs", () => {
  const centsBudget = (scope: "user" | "thread", store?: MemoryBudgetStore) =>
    defineBudgets(
      [{ id: "pay.day", tools: ["pay_cents"], scope, window: "day", maxSum: { arg: "amount", max: 20_000 }, onExceed: "deny", reason: "At most $200 (20,000 cents) a day" }],
      store ? { store } : {},
    );

  it("control: one $150 approved payment (15,000 cents) fits the 20,000-cent budget and runs", async () => {
    const s = setup([[{ id: "p1", name: "pay_cents", args: { to: "acme", amount: 150 } }]], moneyPolicy(["pay_cents"], 100), { budgets: centsBudget("user", new MemoryBudgetStore()) });
    const request = pendingApproval(await s.agent.invoke(ask(), cfg("b0")))!;
    expect((await s.decidedOn("b0")).p1?.args).toEqual({ to: "acme", amount: 15_000 });
    await s.agent.invoke(approveAll(request), cfg("b0", "sam"));
    expect(s.ran).toEqual([{ name: "pay_cents", args: { to: "acme", amount: 15_000 } }]);
  });

  // Found by the pass (medium), closed. Who: the customer via the model, with an approver who approves each call within
  // his role (a deny budget is meant to hold after approval). The gate checks budgets on the parsed
  // amount (15,000 cents), but counts pending siblings (`through`, from `record.args`) and reserves
  // approved calls (`reserveApproved`, from `r.args`) on the RAW amount (150): two approved $150
  // payments reserve 300 "cents" and both run, 30,000 cents against a 20,000-cent deny budget.
  // Fixed: guards/policy-gate.ts `reserveApproved` and the `through` list in `decideNew`, and
  // nodes/governed-tool-node.ts `charge`: use the parsed arguments policy decided on (keep them on
  // the record, or parse `record.args` with the tool's schema as `decideRecordedCall` does).
  it("two approved $150 payments in one message do not both fit a 20,000-cent per-user deny budget", async () => {
    const s = setup(
      [[{ id: "p1", name: "pay_cents", args: { to: "acme", amount: 150 } }, { id: "p2", name: "pay_cents", args: { to: "acme", amount: 150 } }]],
      moneyPolicy(["pay_cents"], 100),
      { budgets: centsBudget("user", new MemoryBudgetStore()) },
    );
    const request = pendingApproval(await s.agent.invoke(ask(), cfg("b1")))!;
    await s.agent.invoke(approveAll(request), cfg("b1", "sam"));
    // Before the fix: both ran (30,000 cents).
    expect(s.ran.reduce((sum, r) => sum + (r.args as { amount: number }).amount, 0)).toBeLessThanOrEqual(20_000);
  });

  // Found by the pass (medium), closed. Same root cause on the allowed path without a budget store: the tool node charges
  // per-thread counters with `call.args` (raw dollars: 90) while the gate checks parsed cents (9,000),
  // so three allowed $90 payments (27,000 cents) all pass a 20,000-cent per-thread deny budget.
  // Fixed: nodes/governed-tool-node.ts `charge`: charge the parsed arguments.
  it("three allowed $90 payments on one thread do not all fit a 20,000-cent per-thread deny budget", async () => {
    const turns = [1, 2, 3].map((i) => [{ id: `p${i}`, name: "pay_cents", args: { to: "acme", amount: 90 } }]);
    const s = setup(turns, moneyPolicy(["pay_cents"], 100), { budgets: centsBudget("thread") });
    await s.agent.invoke(ask(), cfg("b2"));
    // Before the fix: all three ran (27,000 cents); thread counter 180.
    expect(s.ran.reduce((sum, r) => sum + (r.args as { amount: number }).amount, 0)).toBeLessThanOrEqual(20_000);
  });
  it("control: an over-budget call policy allows outright waits for finance; the supervisor cannot approve it", async () => {
    const budgets = defineBudgets(
      [{ id: "pay.finance", tools: ["pay"], scope: "user", window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "require_approval", approverRoles: ["finance"], reason: "Over $100 a day needs finance" }],
      { store: new MemoryBudgetStore() },
    );
    const s = setup([[{ id: "p1", name: "pay", args: { to: "acme", amount: 90 } }], [{ id: "p2", name: "pay", args: { to: "acme", amount: 90 } }]], moneyPolicy(["pay"]), { budgets });
    const request = pendingApproval(await s.agent.invoke(ask(), cfg("bf0")))!;
    expect(request.requests.map((r) => [r.toolCallId, r.approverRoles])).toEqual([["p2", ["finance"]]]);
    expect(await codeOf(s.agent.invoke(approveAll(request), cfg("bf0", "sam")))).toBe("approval_unauthorized");
    expect(s.ran).toHaveLength(1);
  });

  // Was a hole (medium): a require_approval budget's roles were merged into the policy verdict's
  // approverRoles as a union, and any ONE of them could answer. So a $250 call that needs a
  // supervisor by policy AND finance by the budget was approved by the supervisor alone, while a
  // $90 over-budget call (policy: allow) needed finance (control above): the bigger call got the
  // weaker check. Now the budget's roles are a group of their own (`approverGroups`): each group
  // needs an approval by a holder of one of its roles.
  const financeBudget = () =>
    defineBudgets(
      [{ id: "pay.finance", tools: ["pay"], scope: "user", window: "day", maxSum: { arg: "amount", max: 300 }, onExceed: "require_approval", approverRoles: ["finance"], reason: "Over $300 a day needs finance" }],
      { store: new MemoryBudgetStore() },
    );
  it("an over-budget $250 that also needs a supervisor by policy still needs finance (the budget's role); both approving runs it once", async () => {
    const s = setup([[{ id: "p1", name: "pay", args: { to: "acme", amount: 250 } }], [{ id: "p2", name: "pay", args: { to: "acme", amount: 250 } }]], moneyPolicy(["pay"]), { budgets: financeBudget() });
    const first = pendingApproval(await s.agent.invoke(ask(), cfg("bf1")))!;
    const second = pendingApproval(await s.agent.invoke(approveAll(first), cfg("bf1", "sam")))!;
    expect(s.ran).toHaveLength(1);
    expect(second.requests.map((r) => [r.toolCallId, r.approverRoles, r.approverGroups])).toEqual([["p2", ["supervisor", "finance"], [["supervisor"], ["finance"]]]]);
    // The supervisor's approval is kept, and the call waits for finance.
    const third = pendingApproval(await s.agent.invoke(approveAll(second), cfg("bf1", "sam")))!;
    expect(s.ran).toHaveLength(1);
    expect(third.requests.map((r) => [r.toolCallId, r.approvedBy])).toEqual([["p2", ["sam"]]]);
    expect(toHitlRequest(third).actionRequests[0]!.description).toContain("Needs an approval from each of: supervisor; and finance (so far: sam)");
    // Sam again adds nothing (as a second approval by one approver toward a quorum); finance completes it.
    const fourth = pendingApproval(await s.agent.invoke(approveAll(third), cfg("bf1", "sam")))!;
    expect(s.ran).toHaveLength(1);
    expect(fourth.requests.map((r) => [r.toolCallId, r.approvedBy])).toEqual([["p2", ["sam"]]]);
    await s.agent.invoke(approveAll(fourth), cfg("bf1", "fay"));
    expect(s.ran.map((r) => (r.args as { amount: number }).amount)).toEqual([250, 250]);
    expect((await s.auditLog.verify("bf1")).ok).toBe(true);
  });
  it("finance approving first still waits for the supervisor policy asks for; a supervisor's edit past the budget waits for finance", async () => {
    const s = setup([[{ id: "p1", name: "pay", args: { to: "acme", amount: 250 } }], [{ id: "p2", name: "pay", args: { to: "acme", amount: 250 } }]], moneyPolicy(["pay"]), { budgets: financeBudget() });
    const first = pendingApproval(await s.agent.invoke(ask(), cfg("bf2")))!;
    const second = pendingApproval(await s.agent.invoke(approveAll(first), cfg("bf2", "sam")))!;
    const waiting = pendingApproval(await s.agent.invoke(approveAll(second), cfg("bf2", "fay")))!;
    expect(waiting.requests.map((r) => [r.toolCallId, r.approvedBy])).toEqual([["p2", ["fay"]]]);
    expect(s.ran).toHaveLength(1);
    // Sam edits the call (still over the budget): the edit counts for the supervisor only; finance again.
    const edit = new Command({ resume: { decisions: [{ toolCallId: "p2", type: "edit", digest: waiting.requests[0]!.digest, args: { to: "acme", amount: 200 } }] } });
    const afterEdit = pendingApproval(await s.agent.invoke(edit, cfg("bf2", "sam")))!;
    expect(s.ran).toHaveLength(1);
    expect(afterEdit.requests.map((r) => [r.toolCallId, r.args, r.approvedBy, r.approverGroups])).toEqual([["p2", { to: "acme", amount: 200 }, ["sam"], [["supervisor"], ["finance"]]]]);
    await s.agent.invoke(approveAll(afterEdit), cfg("bf2", "fay"));
    expect(s.ran.map((r) => (r.args as { amount: number }).amount)).toEqual([250, 200]);
  });
});
