/**
 * A red-team pass on POLICY, IDENTITY AND BUDGETS, as an attacker: a customer steering the model's
 * tool names and arguments, a colleague who can resume threads, concurrent threads and agents
 * spending one budget, and an operator changing the identity registry under open threads.
 *
 * Attacked: typed rules and Cedar with hostile argument values (numbers as strings, NaN, Infinity,
 * 1e309, -0, arrays, nested objects, `__proto__` / `constructor` names) and hostile entity / action
 * ids (quotes, `::`, newlines); look-alike and prototype-named tool names at the gate and in the
 * rule index; budgets with negative amounts, an approver's edit, concurrent approvals on shared
 * SQLite and PostgreSQL stores, and a clock that crosses midnight between the check and the
 * reservation; approvals by the requester (also as a quorum member), by the agent, by principals
 * whose ids are role names, prototype names or hold a role called "*", by users without roles, by
 * an approver demoted since the request; a policy engine that never answers.
 *
 * Found, and now closed (each a test below that failed before its fix):
 * 1. A per-thread deny budget kept without a budget store was exceeded when a supervisor edited one
 *    call of a message beside an allowed sibling: the approval's reservation counted the thread's
 *    counters alone (which hold what ran), not the message's other calls yet to run. They count now.
 * 2. Revocation did not reach open threads: a user removed from the registry (or whose grants were
 *    narrowed) kept acting on a thread bound before, after a redeploy with the new registry. The
 *    binding now reads the bound agent and human from the registry in force at each step: one gone
 *    is refused, changed grants rebind the thread (`identity.bound` with `rebound: true`).
 * 3. The shipped example policy and tool read `ORDERS[orderId]` through the prototype: orderId
 *    "constructor" / "__proto__" / "toString" passed the ownership rule and refunded an order that
 *    does not exist, without a human (now own entries only: `orderOf`).
 * 4. A non-finite number in the model's arguments (`1e309` in its JSON is Infinity) made the model
 *    step throw a plain Error while digesting the call: nothing ran, but untyped, taking the
 *    message's valid calls down with it. Such a call is now answered to the model as invalid.
 * Everything else held. One limit noted, not a leak: a policy engine that never answers is not
 * timed out (the run waits; nothing runs).
 */
import { Command, MemorySaver } from "@langchain/langgraph";
import { tool } from "@langchain/core/tools";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  defineBudgets,
  definePolicy,
  eartErrorOf,
  IdentityRegistry,
  MemoryAuditLog,
  MemoryBudgetStore,
  pendingApproval,
  type AgentIdentity,
  type ApprovalRequest,
  type PolicyDecision,
  type PolicyEngine,
  type PolicyRequest,
} from "eart";
import { createCedarPolicyEngine } from "eart/cedar";
import { createGovernedAgent } from "eart/graphs";
import { SqliteBudgetStore } from "eart/sqlite";
import { PostgresBudgetStore } from "eart/postgres";
import identities from "../../examples/refund/identities.json" with { type: "json" };
import { ORDERS } from "../../examples/refund/tools.js";
import { answersTo, ask, config, customerIdentity, refund, refundSetup, registry as refundRegistry, turnsModel, type Call } from "../support/refund.js";
import { middlewareRefundSetup } from "../support/middleware-agent.js";

const PG_URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";

// ── helpers ─────────────────────────────────────────────────────────────────────────────────────

/** A resume as the given human (the run's principal). */
const as = (threadId: string, userId: string) => ({ configurable: { thread_id: threadId, user_id: userId } });
const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => "no error",
    (e: unknown) => eartErrorOf(e)?.code ?? `not eart's: ${String((e as Error)?.message ?? e).slice(0, 200)}`,
  );
const approveAll = (request: Pick<ApprovalRequest, "requests">) =>
  new Command({ resume: { decisions: request.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve", digest: r.digest })) } });
const total = (rows: { amount: number }[]) => rows.reduce((sum, r) => sum + r.amount, 0);

/** The example's identities with changes: extra users, users replaced by id, users removed. */
function registryWith(change: { add?: { id: string; roles: string[] }[]; replace?: Record<string, string[]>; remove?: string[]; roles?: Record<string, { tools: string[] }> }) {
  const users = identities.users
    .filter((u) => !(change.remove ?? []).includes(u.id))
    .map((u) => (change.replace?.[u.id] ? { ...u, roles: change.replace[u.id]! } : u));
  return IdentityRegistry.fromObject({ ...identities, roles: { ...identities.roles, ...change.roles }, users: [...users, ...(change.add ?? [])] });
}

const cedarRequest = (name: string, args: Record<string, unknown>, identity: AgentIdentity = { ...customerIdentity(), tools: ["issue_refund", "lookup_order"] }): PolicyRequest => ({
  identity,
  tool: { name, args },
  context: { items: [], sensitivity: [] },
  threadId: "t-cedar",
});
const decide = (engine: PolicyEngine, r: PolicyRequest) => engine.decide(r) as PolicyDecision;

// ── 1. hostile argument values reaching rules ───────────────────────────────────────────────────

describe("hostile argument values never slip past a deny rule", () => {
  it("the example refund policy at the gate: numbers as strings, -0, negatives, arrays, objects, booleans, null, 9e15 run nothing; a genuine $50 runs", async () => {
    const hostile: unknown[] = ["1e3", " 500", "0x1F4", "9000", "", -0, -500, [9000], [50], { valueOf: 50 }, { amount: 50 }, true, null, 9e15, Number.MAX_VALUE];
    const calls: Call[] = hostile.map((amount, i) => ({ id: `h${i}`, name: "issue_refund", args: { orderId: "1042", amount } }));
    const { agent, refunds, auditLog } = refundSetup([[...calls, refund("ok", 50, "1043")]]);
    const out = await agent.invoke(ask(), config("hv1"));
    // Setup: the control ran, so the gate and the tool work.
    expect(refunds().map((r) => r.toolCallId)).toContain("ok");
    // Guarantee: nothing hostile ran, and nothing hostile waits for a human either.
    expect(refunds()).toEqual([{ orderId: "1043", amount: 50, toolCallId: "ok" }]);
    expect(pendingApproval(out)).toBeUndefined();
    const effects = (await auditLog.read("hv1")).filter((e) => e.type === "policy.decided" && e.data.toolCallId !== "ok").map((e) => e.data.effect);
    expect(effects).toHaveLength(hostile.length);
    expect(effects.every((e) => e === "deny")).toBe(true);
  });

  // Was a hole (low: it failed closed, but untyped, and took the whole message down). Who: a
  // customer who gets the model to write `1e309` (JSON.parse reads it as Infinity; NaN and
  // -Infinity likewise from a scripted or non-JSON model). The model step digested the arguments
  // with canonical JSON, which throws a plain Error on a non-finite number: no call of the message
  // was decided and the caller got an error that is not eart's. Such arguments are now digested as
  // a refused payload is, and the call is answered to the model as invalid (`eart.arguments`).
  it("a non-finite amount (1e309 in the model's JSON) is answered to the model as invalid; its valid sibling still runs", async () => {
    const infinite = JSON.parse('{"orderId":"1042","amount":1e309}') as Record<string, unknown>;
    // Setup: what the model's JSON gives is Infinity, and the sibling alone runs.
    expect(infinite.amount).toBe(Infinity);
    const control = refundSetup([[refund("c0", 50, "1043")]]);
    await control.agent.invoke(ask(), config("inf-control"));
    expect(control.refunds().map((r) => r.toolCallId)).toEqual(["c0"]);
    const { agent, refunds, auditLog } = refundSetup([[refund("c0", 50, "1043"), { id: "c1", name: "issue_refund", args: infinite }]]);
    // Guarantee: a typed answer to bad model arguments, not a crash of the step. Observed: a plain Error, nothing decided.
    expect(await codeOf(agent.invoke(ask(), config("inf")))).toBe("no error");
    const decided = Object.fromEntries((await auditLog.read("inf")).filter((e) => e.type === "policy.decided").map((e) => [e.data.toolCallId, e.data.policyIds]));
    expect(decided.c1).toEqual(["eart.arguments"]);
    expect(refunds().map((r) => r.toolCallId)).toEqual(["c0"]);
  });

  it("Cedar: a cap over integer cents is never passed by a string, a set, a record, a non-safe integer or a missing value", () => {
    const engine = createCedarPolicyEngine({
      policies: `
        @id("refund.small") permit(principal, action == Action::"issue_refund", resource) when { context.args.amount <= 100000 };
        @id("refund.cap") forbid(principal, action == Action::"issue_refund", resource) when { context.args.amount > 100000 };`,
    });
    // Setup: the engine allows a genuine small amount and denies a big one.
    expect(decide(engine, cedarRequest("issue_refund", { orderId: "1042", amount: 500 })).effect).toBe("allow");
    expect(decide(engine, cedarRequest("issue_refund", { orderId: "1042", amount: 200_000 })).policyIds).toEqual(["refund.cap"]);
    const hostile: unknown[] = ["1e3", " 500", "0x1F4", "500", [500], [200_000], { value: 500 }, NaN, Infinity, -Infinity, 1e309, 1.5, 2 ** 53, 2 ** 63, true, null, undefined, "500\"; permit(principal, action, resource);"];
    const allowed = hostile.filter((amount) => decide(engine, cedarRequest("issue_refund", { orderId: "1042", amount })).effect !== "deny");
    expect(allowed).toEqual([]);
  });

  it("Cedar: entity and action ids built from arguments cannot be injected (quotes, `::`, newlines, NUL, prototype names)", () => {
    const engine = createCedarPolicyEngine({
      policies: `@id("refund.own") permit(principal, action == Action::"issue_refund", resource) when { resource.owner == context.onBehalfOf.id };`,
      entities: [
        { uid: { type: "Order", id: "1042" }, attrs: { owner: "cara" } },
        { uid: { type: "Order", id: "2001" }, attrs: { owner: "omar" } },
      ],
      resources: { issue_refund: (args) => ({ type: "Order", id: String(args.orderId) }) },
    });
    // Setup: cara's own order is allowed, omar's denied.
    expect(decide(engine, cedarRequest("issue_refund", { orderId: "1042", amount: 5 })).effect).toBe("allow");
    expect(decide(engine, cedarRequest("issue_refund", { orderId: "2001", amount: 5 })).effect).toBe("deny");
    const ids = ['2001" || true || "', 'Order::"1042"', '1042"} when { true', "2001\n", "1042 ", "2001\u0000", "", "__proto__", "constructor", 'Order::"2001"::"1042"'];
    const through = ids.filter((orderId) => decide(engine, cedarRequest("issue_refund", { orderId, amount: 5 })).effect !== "deny");
    expect(through).toEqual([]);
    // The action is the tool name: look-alikes and quoted names are other actions, denied by default.
    const names = ['issue_refund" || true || "', "issue_refund ", "Issue_Refund", "issue\u200brefund", 'Action::"issue_refund"', "__proto__"];
    expect(names.filter((n) => decide(engine, cedarRequest(n, { orderId: "1042", amount: 5 })).effect !== "deny")).toEqual([]);
  });

  // Was a hole (low in the library, real in the shipped example). Who: a customer, through the
  // model. The example's policy and tool read a plain object by the order id, so "constructor",
  // "__proto__", "toString" found Object.prototype members: the ownership rule saw no owner (so did
  // not deny), the tool saw a truthy "order" and refunded it: $100 on an order that does not exist,
  // with no human, 3 times in one message. Both now read own entries only (`orderOf`).
  it("the example's ownership rule: an orderId naming an Object.prototype member refunds nothing", async () => {
    const { agent, refunds, auditLog } = refundSetup([[refund("c1", 100, "constructor"), refund("c2", 100, "__proto__"), refund("c3", 100, "toString"), refund("ctl", 100, "2002")]]);
    await agent.invoke(ask(), config("proto-order"));
    // Setup: none of these is an order, and the ownership rule does deny another customer's order.
    expect(["constructor", "__proto__", "toString"].some((id) => Object.hasOwn(ORDERS, id))).toBe(false);
    const effects = Object.fromEntries((await auditLog.read("proto-order")).filter((e) => e.type === "policy.decided").map((e) => [e.data.toolCallId, e.data.policyIds]));
    expect(effects.ctl).toEqual(["orders.own"]);
    // Guarantee: no refund on an order that does not exist.
    expect(refunds().filter((r) => !Object.hasOwn(ORDERS, r.orderId))).toEqual([]);
  });
});

// ── 2. tool names ───────────────────────────────────────────────────────────────────────────────

describe("tool names a rule keyed by name would miss", () => {
  it("a naive policy (deny issue_refund by name, allow '*') would allow look-alikes; the prebuilt agent runs none of them", async () => {
    const naive = definePolicy({
      name: "naive",
      rules: [
        { id: "refund.never", tools: ["issue_refund"], effect: "deny", reason: "No refunds" },
        { id: "everything.else", tools: "*", effect: "allow" },
      ],
    });
    const names = ["Issue_Refund", "issue_refund ", " issue_refund", "issue\u200brefund", "issue_refund\u200b", "\u0456ssue_refund", "ｉｓｓｕｅ_ｒｅｆｕｎｄ", "__proto__", "constructor", "toString", "hasOwnProperty"];
    // Setup: the engine alone misses every look-alike (its "*" rule allows them) and denies the real name.
    expect(decide(naive, cedarRequest("issue_refund", {})).effect).toBe("deny");
    expect(names.filter((n) => decide(naive, cedarRequest(n, {})).effect === "allow")).toEqual(names);
    const calls: Call[] = names.map((name, i) => ({ id: `n${i}`, name, args: { orderId: "1042", amount: 50 } }));
    const { agent, refunds, auditLog } = refundSetup([[...calls, { id: "look", name: "lookup_order", args: { orderId: "1042" } }]], { policy: naive });
    const out = await agent.invoke(ask(), config("names"));
    // Setup: the control lookup ran.
    expect(String(answersTo(out.messages, "look")[0]?.content)).toContain('"orderId":"1042"');
    // Guarantee: no refund, each look-alike answered as an unknown tool, decided by eart before policy.
    expect(refunds()).toEqual([]);
    const decided = (await auditLog.read("names")).filter((e) => e.type === "policy.decided" && e.data.toolCallId !== "look");
    expect(decided.map((e) => e.data.policyIds)).toEqual(names.map(() => ["eart.unknown-tool"]));
  });

  it("the typed rule index: prototype-named tools find no rule keyed by another tool, and are denied by default", () => {
    const policy = definePolicy({ name: "named", rules: [{ id: "refund.ok", tools: ["issue_refund"], effect: "allow" }] });
    expect(decide(policy, cedarRequest("issue_refund", {})).effect).toBe("allow");
    const names = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", "__defineGetter__", "issue_refund\u0000"];
    expect(names.map((n) => decide(policy, cedarRequest(n, {})).policyIds)).toEqual(names.map(() => ["eart.default-deny"]));
  });
});

// ── 3. budgets ──────────────────────────────────────────────────────────────────────────────────

/** A registry and agent over one tool, `adjust_credit`, whose schema takes any finite amount (a credit or a reversal). */
function creditSetup(turns: Call[][], budgets: ReturnType<typeof defineBudgets>) {
  const ran: number[] = [];
  const adjustCredit = tool(async ({ amount }) => (ran.push(amount), "ok"), {
    name: "adjust_credit",
    description: "Credit (or, negative, reverse) an amount on the customer's account",
    schema: z.object({ amount: z.number() }),
  });
  const registry = IdentityRegistry.fromObject({
    roles: { customer: { tools: ["*"] } },
    agents: [{ id: "support-agent", roles: ["support"], tools: ["adjust_credit"] }],
    users: [{ id: "cara", roles: ["customer"] }],
  });
  const auditLog = new MemoryAuditLog();
  const agent = createGovernedAgent({
    model: turnsModel(turns),
    tools: [adjustCredit],
    identities: registry,
    policy: definePolicy({ name: "credits", rules: [{ id: "credit.any", tools: ["adjust_credit"], effect: "allow" }] }),
    checkpointer: new MemorySaver(),
    auditLog,
    budgets,
  });
  return { agent, ran, auditLog };
}

describe("budgets cannot be refilled or exceeded", () => {
  it("a reversal of -500 does not lower the spent total: after $90 of a $100 budget, $60 is still refused", async () => {
    const budgets = defineBudgets([{ id: "credit.day", tools: ["adjust_credit"], scope: "user", window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "deny" }], {
      store: new MemoryBudgetStore(),
    });
    const credit = (id: string, amount: number): Call => ({ id, name: "adjust_credit", args: { amount } });
    const { agent, ran, auditLog } = creditSetup([[credit("a1", 90)], [credit("a2", -500)], [credit("a3", -0.0000001)], [credit("a4", 60)]], budgets);
    await agent.invoke(ask(), config("neg"));
    // Setup: the first credit ran under the budget.
    expect(ran[0]).toBe(90);
    // Guarantee: no negative amount ran, and the total stays within the limit.
    expect(ran).toEqual([90]);
    const decided = Object.fromEntries((await auditLog.read("neg")).filter((e) => e.type === "policy.decided").map((e) => [e.data.toolCallId, e.data.effect]));
    expect(decided).toEqual({ a1: "allow", a2: "deny", a3: "deny", a4: "deny" });
  });

  it("a supervisor's edit past a per-user deny budget is denied, not run", async () => {
    const budgets = defineBudgets([{ id: "refunds.user", tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 500 }, onExceed: "deny" }], {
      store: new MemoryBudgetStore(),
    });
    const { agent, refunds } = refundSetup([[refund("c1", 150)]], { budgets });
    const request = pendingApproval(await agent.invoke(ask(), config("edit-deny")))!;
    expect(request.requests.map((r) => [r.toolCallId, r.approverRoles])).toEqual([["c1", ["supervisor"]]]);
    const edit = { decisions: [{ toolCallId: "c1", type: "edit", args: { orderId: "1042", amount: 900 }, digest: request.requests[0]!.digest }] };
    const out = await agent.invoke(new Command({ resume: edit }), as("edit-deny", "sam"));
    expect(refunds()).toEqual([]);
    expect(String(answersTo(out.messages, "c1").at(-1)?.content)).toContain("Denied");
  });

  it("control: with a budget store, a supervisor's edit beside an allowed sibling cannot exceed a per-thread deny budget", async () => {
    const budgets = defineBudgets([{ id: "refunds.thread", tools: ["issue_refund"], scope: "thread", window: "day", maxSum: { arg: "amount", max: 250 }, onExceed: "deny" }], {
      store: new MemoryBudgetStore(),
    });
    const { agent, refunds } = refundSetup([[refund("c1", 90), refund("c2", 150, "1043")]], { budgets });
    const request = pendingApproval(await agent.invoke(ask(), config("sib-store")))!;
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["c2"]);
    const edit = { decisions: [{ toolCallId: "c2", type: "edit", args: { orderId: "1043", amount: 200 }, digest: request.requests[0]!.digest }] };
    await agent.invoke(new Command({ resume: edit }), as("sib-store", "sam"));
    expect(refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(total(refunds())).toBeLessThanOrEqual(250);
  });

  // Was a hole (medium). Who: a supervisor editing a call (no collusion needed: the edit is within
  // his role, and deny budgets are documented to hold after approval). Without a budget store,
  // per-thread counters live in the `budget` channel and are charged only after the tools ran. The
  // first pass counts the message's calls together, but the approval's reservation checked each
  // approved call against the thread's counters alone: the allowed sibling c1 ($90, not yet run)
  // was not counted, and c2 edited from $150 to $200 fitted on its own: $290 against $250. The
  // message's calls that will run and have not count now, as in the first pass.
  it("without a budget store, a supervisor's edit beside an allowed sibling cannot exceed a per-thread deny budget", async () => {
    const budgets = defineBudgets([{ id: "refunds.thread", tools: ["issue_refund"], scope: "thread", window: "day", maxSum: { arg: "amount", max: 250 }, onExceed: "deny" }]);
    const { agent, refunds, auditLog } = refundSetup([[refund("c1", 90), refund("c2", 150, "1043")]], { budgets });
    const request = pendingApproval(await agent.invoke(ask(), config("sib")))!;
    // Setup: c1 ($90) is allowed and waits with the message; c2 ($150, $240 in all) asks a supervisor.
    expect(request.requests.map((r) => [r.toolCallId, r.approverRoles])).toEqual([["c2", ["supervisor"]]]);
    const first = Object.fromEntries((await auditLog.read("sib")).filter((e) => e.type === "policy.decided").map((e) => [e.data.toolCallId, e.data.effect]));
    expect(first).toEqual({ c1: "allow", c2: "require_approval" });
    expect(refunds()).toEqual([]);
    const edit = { decisions: [{ toolCallId: "c2", type: "edit", args: { orderId: "1043", amount: 200 }, digest: request.requests[0]!.digest }] };
    await agent.invoke(new Command({ resume: edit }), as("sib", "sam")).catch(() => undefined);
    // Guarantee: what ran on the thread stays within the deny budget (it was $90 + $200 = $290).
    expect(total(refunds())).toBeLessThanOrEqual(250);
  });

  it("a clock that crosses midnight between the check and the reservation never lets a day exceed its limit", async () => {
    const store = new MemoryBudgetStore();
    let now = Date.parse("2025-03-10T23:59:59.980Z");
    const budgets = defineBudgets([{ id: "refunds.midnight", tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 150 }, onExceed: "deny" }], {
      store,
      clock: () => new Date(now++), // one millisecond per read: checks and reservations straddle midnight
    });
    const identity = { ...customerIdentity(), tools: ["issue_refund"] };
    let reserved = 0;
    // Waves of five concurrent reservations, the second or third of which meets midnight.
    for (let wave = 0; wave < 4; wave++) {
      const results = await Promise.all(
        Array.from({ length: 5 }, (_, i) => budgets.reserve({ identity, threadId: `m${wave}-${i}`, tool: { name: "issue_refund", args: { orderId: "1042", amount: 60 } }, threadCounters: {} })),
      );
      reserved += results.filter((r) => r.reserved).length;
    }
    const days = await store.get(["refunds.midnight|user|cara|2025-03-10|sum", "refunds.midnight|user|cara|2025-03-11|sum"]);
    // Setup: the clock did cross midnight, and both days took reservations.
    expect(now).toBeGreaterThan(Date.parse("2025-03-11T00:00:00Z"));
    expect(Object.values(days).every((v) => v > 0)).toBe(true);
    // Guarantee: neither day is over its limit, and every reservation is counted in one of them.
    expect(Object.values(days).every((v) => v <= 150)).toBe(true);
    expect(reserved * 60).toBe(days["refunds.midnight|user|cara|2025-03-10|sum"]! + days["refunds.midnight|user|cara|2025-03-11|sum"]!);
  });

  for (const backend of ["SQLite", "PostgreSQL"] as const) {
    it(`two agents (own store handles on one ${backend} database) approving two threads of one customer at once do not both fit a per-user deny budget`, async () => {
      const dir = backend === "SQLite" ? mkdtempSync(join(tmpdir(), "eart-rt-")) : undefined;
      const pool = backend === "PostgreSQL" ? new pg.Pool({ connectionString: PG_URL }) : undefined;
      const stores: { close(): unknown }[] = [];
      try {
        const id = `refunds.user-${randomUUID()}`;
        const guard = () => {
          const store = dir ? new SqliteBudgetStore({ path: join(dir, "budgets.sqlite") }) : new PostgresBudgetStore({ pool: pool! });
          stores.push(store);
          return defineBudgets([{ id, tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 1000 }, onExceed: "deny" }], { store });
        };
        const a = refundSetup([[refund("c1", 740)]], { budgets: guard() });
        const b = refundSetup([[refund("c1", 740)]], { budgets: guard() });
        const [ra, rb] = [pendingApproval(await a.agent.invoke(ask(), config("race-a"))), pendingApproval(await b.agent.invoke(ask(), config("race-b")))];
        // Setup: both threads wait for a supervisor; each $740 fits the $1,000 budget alone.
        expect([ra?.requests[0]?.approverRoles, rb?.requests[0]?.approverRoles]).toEqual([["supervisor"], ["supervisor"]]);
        await Promise.all([a.agent.invoke(approveAll(ra!), as("race-a", "sam")), b.agent.invoke(approveAll(rb!), as("race-b", "sam"))]);
        // Guarantee: one of them ran.
        expect(a.refunds().length + b.refunds().length).toBe(1);
      } finally {
        for (const s of stores) await s.close();
        await pool?.end();
        if (dir) rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

// ── 4. approvals: authorised, different humans ─────────────────────────────────────────────────

describe("approvals only by authorised humans other than the requester", () => {
  it("a quorum of two on a supervisor's own refund: not by himself, not by the agent, not twice by one colleague, not by finance", async () => {
    const reg = registryWith({ add: [{ id: "sid", roles: ["supervisor"] }] });
    const policy = definePolicy({
      name: "two-supervisors",
      rules: [
        { id: "lookup", tools: ["lookup_order"], effect: "allow" },
        { id: "refund.two", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"], quorum: 2 },
      ],
    });
    const { agent, refunds } = refundSetup([[refund("c1", 740)]], { policy, agent: { identities: reg } });
    const t = "quorum-self";
    const request = pendingApproval(await agent.invoke(ask(), config(t, "sam")))!;
    expect(request.requests[0]).toMatchObject({ quorum: 2, approverRoles: ["supervisor"] });
    expect(await codeOf(agent.invoke(approveAll(request), as(t, "sam")))).toBe("approval_self_approval");
    expect(await codeOf(agent.invoke(approveAll(request), as(t, "support-agent")))).toBe("approval_self_approval");
    expect(await codeOf(agent.invoke(approveAll(request), as(t, "fay")))).toBe("approval_unauthorized");
    await agent.invoke(approveAll(request), as(t, "sue"));
    const again = pendingApproval(await agent.getState(as(t, "sue")))!;
    expect(again.requests[0]?.approvedBy).toEqual(["sue"]);
    await agent.invoke(approveAll(again), as(t, "sue"));
    const still = pendingApproval(await agent.getState(as(t, "sue")))!;
    expect(still.requests[0]?.approvedBy).toEqual(["sue"]);
    expect(await codeOf(agent.invoke(approveAll(still), as(t, "sam")))).toBe("approval_self_approval");
    expect(refunds()).toEqual([]);
    await agent.invoke(approveAll(still), as(t, "sid"));
    expect(refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
  });

  it("principals named like roles or prototype members, holding a role called '*', or no role at all approve nothing; sam still can", async () => {
    const reg = registryWith({
      roles: { "*": { tools: ["*"] } },
      add: [
        { id: "supervisor", roles: ["customer"] },
        { id: "__proto__", roles: ["customer"] },
        { id: "constructor", roles: ["customer"] },
        { id: "star", roles: ["*"] },
        { id: "nobody", roles: [] },
      ],
    });
    const { agent, refunds } = refundSetup([[refund("c1", 740)]], { agent: { identities: reg } });
    const request = pendingApproval(await agent.invoke(ask(), config("roleish")))!;
    expect(request.requests[0]?.approverRoles).toEqual(["supervisor"]);
    const codes: Record<string, string> = {};
    for (const who of ["supervisor", "__proto__", "constructor", "star", "nobody", "toString", "hasOwnProperty", "Sam", "sam ", "ｓａｍ"]) {
      codes[who] = await codeOf(agent.invoke(approveAll(request), as("roleish", who)));
    }
    expect(Object.entries(codes).filter(([, code]) => code !== "approval_unauthorized")).toEqual([]);
    expect(refunds()).toEqual([]);
    await agent.invoke(approveAll(request), as("roleish", "sam"));
    expect(refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
  });

  it("a requester with no roles gets no tools; one whose id is '__proto__' gets a customer's grants and cannot refund another customer's order", async () => {
    const reg = registryWith({ add: [{ id: "nobody", roles: [] }, { id: "__proto__", roles: ["customer"] }] });
    expect(reg.resolve({ agentId: "support-agent", userId: "nobody", source: "configurable.user_id" }).tools).toEqual([]);
    expect(reg.resolve({ agentId: "support-agent", userId: "__proto__", source: "configurable.user_id" }).tools).toEqual(["issue_refund", "lookup_order"]);
    const a = refundSetup([[refund("c1", 50)]], { agent: { identities: reg } });
    await a.agent.invoke(ask(), config("no-roles", "nobody"));
    const b = refundSetup([[refund("c1", 50)]], { agent: { identities: reg } });
    await b.agent.invoke(ask(), config("proto-user", "__proto__"));
    expect([...a.refunds(), ...b.refunds()]).toEqual([]);
    const policyIds = async (s: typeof a, t: string) => (await s.auditLog.read(t)).filter((e) => e.type === "policy.decided").map((e) => e.data.policyIds);
    expect(await policyIds(a, "no-roles")).toEqual([["eart.permissions"]]);
    expect(await policyIds(b, "proto-user")).toEqual([["orders.own"]]);
  });

  it("an approver demoted after the request (a redeploy with the new registry) can no longer approve; a supervisor still can", async () => {
    const checkpointer = new MemorySaver();
    const before = refundSetup([[refund("c1", 740)]], { checkpointer });
    const request = pendingApproval(await before.agent.invoke(ask(), config("demoted")))!;
    expect(refundRegistry.userHasAnyRole("sam", ["supervisor"])).toBe(true);
    const after = refundSetup([[refund("c1", 740)]], { checkpointer, agent: { identities: registryWith({ replace: { sam: ["customer"] } }) } });
    expect(await codeOf(after.agent.invoke(approveAll(request), as("demoted", "sam")))).toBe("approval_unauthorized");
    expect(after.refunds()).toEqual([]);
    await after.agent.invoke(approveAll(request), as("demoted", "sue"));
    expect(after.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
  });
});

// ── 5. identity revocation and fail-closed policy ──────────────────────────────────────────────

describe("identity and policy fail closed", () => {
  // Was a hole (medium). Who: a customer (or an agent) whose access was revoked, on a thread opened
  // before. The binding kept the identity bound to the thread (its effective tools and roles, as
  // resolved then) and only compared ids on new input: after a redeploy with a registry that no
  // longer has "cara" (or no longer grants her `issue_refund`), a new request on her open thread
  // still refunded, while a new thread was refused. The binding now resolves the bound agent and
  // human against the registry in force at each step.
  it("a customer removed from the registry cannot keep refunding on a thread she opened before", async () => {
    const checkpointer = new MemorySaver();
    const turns = [[refund("c1", 50)], [], [refund("c2", 60, "1043")]];
    const before = refundSetup(turns, { checkpointer });
    await before.agent.invoke(ask(), config("revoked"));
    const revoked = registryWith({ remove: ["cara"] });
    const after = refundSetup(turns, { checkpointer, agent: { identities: revoked } });
    // Setup: the first refund ran, and the new registry refuses cara on a new thread.
    expect(before.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(await codeOf(after.agent.invoke(ask(), config("revoked-new")))).toBe("identity_unknown_user");
    // Guarantee: nothing runs for a user the registry in force does not know; she is told why.
    expect(await codeOf(after.agent.invoke(ask("and order 1043, $60"), config("revoked")))).toBe("identity_unknown_user");
    expect(after.refunds()).toEqual([]);
  });

  it("a customer whose role no longer grants refunds is refused the refund on her open thread: the thread is rebound, on record", async () => {
    const checkpointer = new MemorySaver();
    const auditLog = new MemoryAuditLog();
    const turns = [[refund("c1", 50)], [], [refund("c2", 60, "1043")]];
    const before = refundSetup(turns, { checkpointer, auditLog });
    await before.agent.invoke(ask(), config("narrowed"));
    expect(before.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    const after = refundSetup(turns, { checkpointer, auditLog, agent: { identities: registryWith({ roles: { customer: { tools: ["lookup_order"] } } }) } });
    await after.agent.invoke(ask("and order 1043, $60"), config("narrowed"));
    expect(after.refunds()).toEqual([]);
    const events = await auditLog.read("narrowed");
    expect(events.filter((e) => e.type === "policy.decided" && e.data.toolCallId === "c2").map((e) => e.data.policyIds)).toEqual([["eart.permissions"]]);
    expect(events.filter((e) => e.type === "identity.bound").map((e) => [e.data.rebound ?? false, e.data.tools])).toEqual([
      [false, ["issue_refund", "lookup_order"]],
      [true, ["lookup_order"]],
    ]);
    // Rebound once: the next run on the thread keeps the new binding, with no event of its own.
    await after.agent.invoke(ask("thanks"), config("narrowed"));
    expect((await auditLog.read("narrowed")).filter((e) => e.type === "identity.bound")).toHaveLength(2);
    expect((await auditLog.verify("narrowed")).ok).toBe(true);
  });

  it("governanceMiddleware: a removed customer is refused on her open thread, a narrowed one is rebound and refused the refund", async () => {
    const checkpointer = new MemorySaver();
    const auditLog = new MemoryAuditLog();
    const turns = [[refund("c1", 50)], [], [refund("c2", 60, "1043")]];
    const before = middlewareRefundSetup(turns, { checkpointer, auditLog });
    await before.agent.invoke(ask(), config("mw-removed"));
    await before.agent.invoke(ask(), config("mw-narrowed"));
    expect(before.refunds().map((r) => r.toolCallId)).toEqual(["c1", "c1"]);
    const removed = middlewareRefundSetup(turns, { checkpointer, auditLog, governance: { identities: registryWith({ remove: ["cara"] }) } });
    expect(await codeOf(removed.agent.invoke(ask("and order 1043, $60"), config("mw-removed")))).toBe("identity_unknown_user");
    const narrowed = middlewareRefundSetup(turns, { checkpointer, auditLog, governance: { identities: registryWith({ roles: { customer: { tools: ["lookup_order"] } } }) } });
    await narrowed.agent.invoke(ask("and order 1043, $60"), config("mw-narrowed"));
    expect([...removed.refunds(), ...narrowed.refunds()]).toEqual([]);
    const events = await auditLog.read("mw-narrowed");
    expect(events.filter((e) => e.type === "policy.decided" && e.data.toolCallId === "c2").map((e) => e.data.policyIds)).toEqual([["eart.permissions"]]);
    expect(events.filter((e) => e.type === "identity.bound" && e.data.rebound === true).map((e) => e.data.tools)).toEqual([["lookup_order"]]);
  });

  it("a policy engine that never answers runs nothing (no timeout: the run waits, it does not fail open)", async () => {
    const hanging: PolicyEngine = { version: "hanging", decide: () => new Promise<PolicyDecision>(() => {}) };
    const { agent, refunds } = refundSetup([[refund("c1", 50)]], { policy: hanging });
    const outcome = await Promise.race([
      agent.invoke(ask(), config("hang")).then(() => "finished", () => "failed"),
      new Promise((resolve) => setTimeout(() => resolve("still waiting"), 500)),
    ]);
    expect(outcome).toBe("still waiting");
    expect(refunds()).toEqual([]);
  });

  it("new input on a bound thread from a look-alike of its customer (case, NFKC width, zero-width, trailing space) is refused; nothing runs", async () => {
    const { agent, refunds } = refundSetup([[refund("c1", 50)], [], [refund("c2", 60, "1043")], [], [refund("c3", 70, "1043")]]);
    await agent.invoke(ask(), config("lookalike"));
    // Setup: the thread is cara's and her first refund ran.
    expect(refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    const codes: string[] = [];
    for (const who of ["Cara", "CARA", "ｃａｒａ", "car\u0430", "cara ", "ca\u200bra", "sam"]) codes.push(await codeOf(agent.invoke(ask("refund 1043"), config("lookalike", who))));
    expect(codes.filter((c) => c !== "identity_immutable")).toEqual([]);
    expect(refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    // cara herself still can.
    await agent.invoke(ask("refund 1043"), config("lookalike"));
    expect(refunds().map((r) => r.toolCallId)).toEqual(["c1", "c2"]);
  });
});
