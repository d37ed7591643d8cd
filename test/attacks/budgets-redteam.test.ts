/**
 * A red-team pass on budgets (`defineBudgets`), as an untrusted caller would attack them.
 *
 * Attacked: one large refund split across many threads and across concurrent runs (memory, two
 * SQLite handles on one file, two PostgreSQL pools); calls that fail cleanly, that pay and then
 * fail and are retried by a human, and calls an approver edits; window boundaries (23:59:59.999 /
 * 00:00:00.000 UTC, offsets in other time zones, an injected clock going backwards or broken);
 * counter keys (ids holding `:`, `|`, `%`, `__proto__`, 50,000-character ids, and two guards that
 * share one store); amounts as strings, NaN, ±Infinity, negative, objects with `valueOf`, 1e-9
 * fractions, and a `z.coerce.number()` tool schema; a budget store that is down (a throwing store,
 * PostgreSQL on a closed port).
 *
 * Held: reservations are atomic in every store (no split or race ever gets past a cap); windows are
 * UTC whatever the Date's offset, and a clock going back never reopens a spent window; a broken
 * clock or store denies and runs nothing (the guard says evaluationError), PostgreSQL faults are typed
 * StoreErrors; unmeasurable amounts are denied and write nothing; separators and `__proto__` in
 * ids never share counters; a call that throws stays charged (its reservation stays) and a
 * human retry of it is reserved again (an error does not prove nothing was paid); an approver's edit is charged at the edited amount and an
 * edit over a deny budget does not run.
 *
 * Closed since: a budget store outage was sealed as an ordinary budget denial (no
 * `evaluationError`): the verdict now says it could not be evaluated; a human "retry" of a refund
 * that paid and then threw ran a second payout no budget counted or checked: it is now reserved
 * again; counter keys did not name the scope kind, so two guards sharing one store with one rule
 * id (one per thread, one per user) shared counters and a caller choosing a thread id equal to
 * another user's id spent that user's budget: store keys now name the kind.
 */
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { Command, MemorySaver } from "@langchain/langgraph";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { PG_URL } from "../support/specs.js";
import { z } from "zod";
import {
  defineBudgets,
  definePolicy,
  eartErrorOf,
  IdentityRegistry,
  MemoryBudgetStore,
  pendingApproval,
  type AgentIdentity,
  type BudgetGuard,
  type BudgetRuleInput,
  type BudgetStore,
  type DecisionRecord,
} from "eart";
import { PostgresBudgetStore } from "eart/postgres";
import { SqliteBudgetStore } from "eart/sqlite";
import { decide } from "../support/decisions.js";
import { ask, config, refund, refundSetup } from "../support/refund.js";
import { paysThenThrows, recoveryOn, refundWith } from "../support/gateways.js";

// ── fixtures ────────────────────────────────────────────────────────────────────────────────────

const DAY = new Date("2025-03-10T12:00:00.000Z");
const fixedClock = (at: Date = DAY) => {
  const c = { now: at };
  return { c, clock: () => c.now };
};

const who = (user = "cara", agent = "support-agent"): AgentIdentity => ({
  schemaVersion: 1,
  id: agent,
  roles: ["support"],
  tools: ["issue_refund"],
  dataScopes: ["orders"],
  onBehalfOf: { id: user, roles: ["customer"] },
  source: "configurable.user_id",
});

const req = (threadId: string, amount: unknown, user = "cara", agent = "support-agent") => ({
  identity: who(user, agent),
  threadId,
  tool: { name: "issue_refund", args: { orderId: "1042", amount } as Record<string, unknown> },
  threadCounters: {},
});

const perUser = (max: number, onExceed: "deny" | "require_approval" = "deny", extra: Partial<BudgetRuleInput> = {}): BudgetRuleInput => ({
  id: "refunds.user",
  tools: ["issue_refund"],
  scope: "user",
  window: "day",
  maxSum: { arg: "amount", max },
  onExceed,
  ...(onExceed === "require_approval" ? { approverRoles: ["supervisor"] } : {}),
  ...extra,
});

const sumKey = (user = "cara", day = "2025-03-10", rule = "refunds.user") => `${rule}|user|${user}|${day}|sum`;
const valueOf = async (store: BudgetStore, key: string) => (await store.get([key]))[key]!;

const recordsOf = async (agent: { getState: (c: unknown) => Promise<{ values: unknown }> }, threadId: string) =>
  ((await agent.getState(config(threadId))).values as { decisions: DecisionRecord[] }).decisions;

/** Reserves `amounts` all at once (Promise.all) on the guards, round-robin; returns what got through. */
async function raceReserve(guards: BudgetGuard[], amounts: number[], user = "cara") {
  const results = await Promise.all(amounts.map((a, i) => guards[i % guards.length]!.reserve(req(`t-${i}`, a, user))));
  return amounts.filter((_, i) => results[i]!.reserved);
}

const total = (xs: number[]) => xs.reduce((s, x) => s + x, 0);

// ── splitting and racing ────────────────────────────────────────────────────────────────────────

describe("splitting one refund across threads and concurrent runs", () => {
  it("a $740 refund asked for in $92.50 parts over eight threads: the fourth part needs a supervisor and does not run", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(300, "require_approval")], { store, clock: fixedClock().clock });
    let ran = 0;
    for (let i = 0; i < 8; i++) {
      const own = refundSetup([[refund(`p${i}`, 92.5)]], { budgets });
      const out = await own.agent.invoke(ask(), config(`split-${i}`));
      ran += own.refunds().length;
      if (i >= 3) {
        // Past $277.50 the part waits for a supervisor instead of running.
        expect(own.refunds()).toHaveLength(0);
        expect(pendingApproval(out)?.requests.map((r) => r.toolCallId)).toEqual([`p${i}`]);
      }
    }
    expect(ran).toBe(3);
    expect(await valueOf(store, sumKey())).toBe(277.5);
  });

  it("24 concurrent $50 reservations by two agents (two guards, one store) against a $300 user cap: exactly 6 get through", async () => {
    const store = new MemoryBudgetStore();
    const { clock } = fixedClock();
    const a = defineBudgets([perUser(300)], { store, clock });
    const b = defineBudgets([perUser(300)], { store, clock });
    const through = await raceReserve([a, b], Array.from({ length: 24 }, () => 50));
    expect(through).toHaveLength(6);
    expect(await valueOf(store, sumKey())).toBe(300);
  });

  it("two SQLite handles on one file race uneven amounts: the reserved total never passes the cap, and both handles agree", async () => {
    const dir = mkdtempSync(join(tmpdir(), "eart-budget-rt-"));
    try {
      const path = join(dir, "b.sqlite");
      const s1 = new SqliteBudgetStore({ path });
      const s2 = new SqliteBudgetStore({ path });
      const { clock } = fixedClock();
      const g1 = defineBudgets([perUser(500)], { store: s1, clock });
      const g2 = defineBudgets([perUser(500)], { store: s2, clock });
      const amounts = [120, 80, 200, 50, 95, 130, 75, 60, 110, 40, 99.99, 0.01, 150, 70];
      const through = await raceReserve([g1, g2], amounts);
      // Setup: the race had more demand than the cap.
      expect(total(amounts)).toBeGreaterThan(1000);
      expect(through.length).toBeGreaterThan(0);
      const stored = await valueOf(s1, sumKey());
      expect(stored).toBeCloseTo(total(through), 9);
      expect(stored).toBeLessThanOrEqual(500);
      expect(await valueOf(s2, sumKey())).toBe(stored);
      s1.close();
      s2.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ── PostgreSQL ──────────────────────────────────────────────────────────────────────────────────

// A real PostgreSQL (.ci/run starts it): no skip.
describe("PostgreSQL", () => {
  const stores: PostgresBudgetStore[] = [];
  afterAll(async () => {
    for (const s of stores) await s.close();
  });

  it("two pools (two processes' worth) race 30 $40 reservations on a $400 user cap: exactly 10 get through", async () => {
    const p1 = new PostgresBudgetStore({ connectionString: PG_URL });
    const p2 = new PostgresBudgetStore({ connectionString: PG_URL });
    stores.push(p1, p2);
    const user = `u-${randomUUID()}`;
    const { clock } = fixedClock();
    const g1 = defineBudgets([perUser(400)], { store: p1, clock });
    const g2 = defineBudgets([perUser(400)], { store: p2, clock });
    // Direct addWithin races are what reserve relies on; drive them through the guards.
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? g1 : g2).reserve(req(`pg-${i}`, 40, user))));
    // Setup: the guards answered every call (none failed on the store).
    expect(results).toHaveLength(30);
    const reserved = results.filter((r) => r.reserved).length;
    const denied = results.filter((r) => r.verdict?.effect === "deny").length;
    expect(reserved + denied).toBe(30);
    expect(reserved).toBe(10);
    expect(await valueOf(p2, sumKey(user))).toBe(400);
  });

  it("a 50,000-character user id (over PostgreSQL's index row limit) fails closed: denied or a typed store error, never reserved", async () => {
    const store = new PostgresBudgetStore({ connectionString: PG_URL });
    stores.push(store);
    const long = Array.from({ length: 50_000 }, (_, i) => String.fromCharCode(0x4e00 + ((i * 7919) % 20000))).join("");
    const budgets = defineBudgets([perUser(100)], { store, clock: fixedClock().clock });
    const outcome = await budgets.reserve(req("pg-long", 10, long)).then(
      (r) => ({ r, code: "no error" }),
      (e: unknown) => ({ r: undefined, code: eartErrorOf(e)?.code ?? `not eart's: ${String(e)}`.slice(0, 120) }),
    );
    // Either a deny verdict or a typed store error (which the gate turns into a deny); never reserved.
    expect(outcome.r?.reserved ?? false).toBe(false);
    if (outcome.r) expect(outcome.r.verdict?.effect).toBe("deny");
    else expect(outcome.code).toMatch(/^store_/);
  });
});

/** A budget store whose every operation fails, as a store that is down does. */
const downStore = (): BudgetStore => {
  const fail = async (): Promise<never> => {
    throw new Error("ECONNREFUSED budget store");
  };
  return { get: fail, add: fail, addWithin: fail };
};

describe("a budget store that is down", () => {
  it("PostgreSQL on a closed port: check denies (evaluationError), reserve fails with a typed StoreError, nothing is reserved", async () => {
    const store = new PostgresBudgetStore({ connectionString: "postgres://postgres@127.0.0.1:1/test", timeoutMs: 2000 });
    try {
      const budgets = defineBudgets([perUser(100)], { store, clock: fixedClock().clock });
      const verdict = await budgets.check(req("down-1", 10));
      expect(verdict).toMatchObject({ effect: "deny", evaluationError: true });
      const code = await budgets.reserve(req("down-1", 10)).then(
        (r) => (r.reserved ? "reserved" : r.verdict?.evaluationError ? "denied:evaluationError" : "denied"),
        (e: unknown) => eartErrorOf(e)?.code ?? "untyped",
      );
      expect(["denied:evaluationError", "store_unavailable", "store_timeout"]).toContain(code);
    } finally {
      await store.close();
    }
  });

  // Was a hole (low): a store outage was recorded as an ordinary budget denial. BudgetGuard.reserve
  // and check return `{ effect: "deny", evaluationError: true }`, but the gate mapped every budget
  // deny through budgetDenial, which kept only reasons and policyIds: audit, metrics and the model
  // saw "denied by policy", so an outage looked like customers hitting their caps. The sealed
  // verdict now says `evaluationError: true`, as for a policy engine fault.
  it("a throwing store in the graph is recorded as an evaluation error, not as an exceeded budget", async () => {
    const s = refundSetup([[refund("c1", 60, "1043")]], { budgets: defineBudgets([perUser(300)], { store: downStore(), clock: fixedClock().clock }) });
    await s.agent.invoke(ask(), config("down-flag"));
    const [record] = await recordsOf(s.agent, "down-flag");
    // Setup: denied because of the budget store, and nothing ran.
    expect(record).toMatchObject({ toolCallId: "c1", status: "denied" });
    expect(record!.verdict.reasons.join(" ")).toContain("ECONNREFUSED");
    expect(s.refunds()).toEqual([]);
    // The guarantee: the verdict says the budget could not be evaluated.
    expect(record!.verdict).toMatchObject({ effect: "deny", evaluationError: true });
  });
});

// ── amounts ─────────────────────────────────────────────────────────────────────────────────────

describe("amounts an untrusted model can send", () => {
  it("strings, NaN, ±Infinity, negatives, objects with valueOf and bigints are denied and write nothing", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(300)], { store, clock: fixedClock().clock });
    const hostile: unknown[] = ["50", " 50 ", "5e1", NaN, Infinity, -Infinity, -10, -1e-9, { valueOf: () => 1 }, [50], null, true, BigInt(50)];
    for (const amount of hostile) {
      const { verdict, reserved } = await budgets.reserve(req("amt", amount));
      expect({ amount: String(amount), effect: verdict?.effect, reserved }).toEqual({ amount: String(amount), effect: "deny", reserved: false });
    }
    // A refund cannot refill the budget either.
    expect((await budgets.reserve(req("amt", 300))).reserved).toBe(true);
    expect((await budgets.reserve(req("amt", -300))).reserved).toBe(false);
    expect((await budgets.reserve(req("amt", 0.01))).reserved).toBe(false);
    expect(await valueOf(store, sumKey())).toBe(300);
  });

  it("1e-9 and 0.1 fractions: a thousand tiny reservations never pass the cap, float rounding included", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(1)], { store, clock: fixedClock().clock });
    let through = 0;
    for (let i = 0; i < 15; i++) if ((await budgets.reserve(req("frac", 0.1))).reserved) through++;
    // 0.1 summed ten times is 0.9999999999999999: ten fit, the eleventh would be 1.0999…
    expect(through).toBe(10);
    const afterTenths = await valueOf(store, sumKey());
    expect(afterTenths).toBeLessThanOrEqual(1);
    const tinyThrough = (await Promise.all(Array.from({ length: 1000 }, () => budgets.reserve(req("frac", 1e-9))))).filter((r) => r.reserved).length;
    // Whatever squeezes into the rounding gap stays within the cap.
    expect(afterTenths + tinyThrough * 1e-9).toBeLessThanOrEqual(1 + 1e-12);
    expect(await valueOf(store, sumKey())).toBeLessThanOrEqual(1);
  });

  it('a tool with z.coerce.number(): "250" from the model is counted as 250, and splitting it over threads hits the cap', async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([{ ...perUser(300), tools: ["pay"] }], { store, clock: fixedClock().clock });
    const paid: unknown[] = [];
    const pay = tool(
      async (args) => {
        paid.push(args);
        return "paid";
      },
      { name: "pay", description: "Pay an amount", schema: z.object({ orderId: z.string(), amount: z.coerce.number().positive() }) },
    );
    for (const t of ["co-1", "co-2"]) {
      const s = refundSetup([[{ id: "c1", name: "pay", args: { orderId: "1043", amount: "250" } }]], {
        budgets,
        tools: (tt) => [tt.lookupOrder, pay as unknown as StructuredToolInterface],
        agent: { identities: IdentityRegistry.fromObject({
          roles: { customer: { tools: ["*"] } },
          agents: [{ id: "support-agent", roles: ["support"], tools: ["lookup_order", "pay"] }],
          users: [{ id: "cara", roles: ["customer"] }],
        }), policy: definePolicy({ name: "p", rules: [{ id: "pay.ok", tools: ["pay", "lookup_order"], effect: "allow" }] }) },
      });
      await s.agent.invoke(ask(), config(t));
    }
    // Setup: the first payment ran with the coerced amount.
    expect(paid[0]).toEqual({ orderId: "1043", amount: 250 });
    expect(paid).toHaveLength(1);
    expect(await valueOf(store, sumKey())).toBe(250);
  });
});

// ── windows and clocks ──────────────────────────────────────────────────────────────────────────

describe("window boundaries and clocks", () => {
  it("23:59:59.999Z and 00:00:00.000Z are two UTC days; a +01:00 or −05:00 wall clock never opens a third window", async () => {
    const store = new MemoryBudgetStore();
    const { c, clock } = fixedClock(new Date("2025-03-10T23:59:59.999Z"));
    const budgets = defineBudgets([perUser(100)], { store, clock });
    expect((await budgets.reserve(req("w", 100))).reserved).toBe(true);
    // The same instant written in other zones (and 00:30 local in Paris = 23:30Z) is still the 10th.
    for (const local of ["2025-03-11T00:59:59.999+01:00", "2025-03-10T18:59:59.999-05:00", "2025-03-11T00:30:00+01:00"]) {
      c.now = new Date(local);
      expect((await budgets.reserve(req("w", 1))).verdict?.effect).toBe("deny");
    }
    // 19:00 in New York on the 10th is midnight UTC: the documented fixed window rolls over.
    c.now = new Date("2025-03-10T19:00:00.000-05:00");
    expect((await budgets.reserve(req("w", 100))).reserved).toBe(true);
    expect((await budgets.reserve(req("w", 0.01))).reserved).toBe(false);
    expect(await valueOf(store, sumKey("cara", "2025-03-10"))).toBe(100);
    expect(await valueOf(store, sumKey("cara", "2025-03-11"))).toBe(100);
  });

  it("a clock going backwards lands in the spent window (never a fresh one); an invalid or throwing clock denies and writes nothing", async () => {
    const store = new MemoryBudgetStore();
    const { c, clock } = fixedClock(new Date("2025-03-10T10:00:00Z"));
    const budgets = defineBudgets([perUser(100)], { store, clock });
    expect((await budgets.reserve(req("back", 100))).reserved).toBe(true);
    c.now = new Date("2025-03-11T10:00:00Z");
    expect((await budgets.reserve(req("back", 100))).reserved).toBe(true);
    c.now = new Date("2025-03-10T23:59:59Z"); // backwards, into the spent day
    expect((await budgets.reserve(req("back", 1))).verdict?.effect).toBe("deny");
    c.now = new Date(NaN);
    expect(await budgets.reserve(req("back", 1))).toMatchObject({ reserved: false, verdict: { effect: "deny", evaluationError: true } });
    const throwing = defineBudgets([perUser(100)], {
      store,
      clock: () => {
        throw new Error("NTP unreachable");
      },
    });
    expect(await throwing.reserve(req("back", 1))).toMatchObject({ reserved: false, verdict: { effect: "deny", evaluationError: true } });
    expect(await valueOf(store, sumKey("cara", "2025-03-10"))).toBe(100);
    expect(await valueOf(store, sumKey("cara", "2025-03-11"))).toBe(100);
  });
});

// ── keys ────────────────────────────────────────────────────────────────────────────────────────

describe("counter keys", () => {
  it("ids holding ':', '|', '%', '__proto__' or 'constructor' never share a counter, in memory and in SQLite", async () => {
    const pairRule: BudgetRuleInput = { ...perUser(100), id: "refunds.pair", scope: "agent+user" };
    for (const store of [new MemoryBudgetStore(), new SqliteBudgetStore({ path: ":memory:" })] as BudgetStore[]) {
      const budgets = defineBudgets([perUser(100), pairRule], { store, clock: fixedClock().clock });
      // Spend the whole cap of user "a:b" acting through agent "x".
      expect((await budgets.reserve(req("k", 100, "a:b", "x"))).reserved).toBe(true);
      const neighbours: [string, string][] = [
        ["a", "x"],
        ["b", "x:a"],
        ["a%3Ab", "x"],
        ["a|b", "x"],
        ["__proto__", "x"],
        ["constructor", "x"],
        ["a:b:", "x"],
      ];
      for (const [user, agent] of neighbours) {
        const r = await budgets.reserve(req("k", 100, user, agent));
        expect({ user, agent, reserved: r.reserved }).toEqual({ user, agent, reserved: true });
      }
      // And the first user is still spent.
      expect((await budgets.reserve(req("k", 1, "a:b", "x"))).reserved).toBe(false);
      expect(Object.getPrototypeOf(await store.get([sumKey("__proto__")]))).toBe(Object.prototype);
    }
  });

  it("a 50,000-character user id gets its own counter in SQLite, distinct from its 49,999-character prefix", async () => {
    const store = new SqliteBudgetStore({ path: ":memory:" });
    const budgets = defineBudgets([perUser(100)], { store, clock: fixedClock().clock });
    const long = "u".repeat(50_000);
    expect((await budgets.reserve(req("long", 100, long))).reserved).toBe(true);
    expect((await budgets.reserve(req("long", 1, long))).reserved).toBe(false);
    expect((await budgets.reserve(req("long", 100, long.slice(1)))).reserved).toBe(true);
    store.close();
  });

  // Was a leak: keys were `rule|scopeKey|window|…` and never named the scope kind, so two guards on
  // one store (two agents, two deployments) with the same rule id, one counted per thread and one
  // per user, shared counters: a thread the caller named "cara" spent user cara's daily refund cap
  // in the other guard. Now a store key names the kind (`rule|user|cara|…`).
  it("two guards sharing a store with one rule id: a thread named after a user does not spend that user's budget", async () => {
    const store = new MemoryBudgetStore();
    const { clock } = fixedClock();
    const perThread = defineBudgets([{ ...perUser(300), scope: "thread" }], { store, clock });
    const perUserGuard = defineBudgets([perUser(300)], { store, clock });
    // Setup: the attacker's thread is named after the victim and spends its own thread budget.
    expect((await perThread.reserve(req("cara", 300, "mallory"))).reserved).toBe(true);
    // The guarantee: cara, who has spent nothing, can still be refunded.
    expect((await perUserGuard.reserve(req("t-cara", 100, "cara"))).reserved).toBe(true);
  });

  it("counters written under the keys of before (no scope kind) still count after an upgrade: no window restarts", async () => {
    const store = new MemoryBudgetStore();
    const { clock } = fixedClock();
    // Setup: cara was refunded $250 today by a version that keyed counters without the kind.
    await store.add({ "refunds.user|cara|2025-03-10|sum": 250 });
    const budgets = defineBudgets([perUser(300)], { store, clock });
    expect((await budgets.check(req("t-1", 100)))?.effect).toBe("deny");
    expect((await budgets.reserve(req("t-1", 100))).reserved).toBe(false);
    // What is left of her cap still fits, and is counted under the new key only.
    expect((await budgets.reserve(req("t-1", 50))).reserved).toBe(true);
    expect(await valueOf(store, sumKey())).toBe(50);
    expect(await valueOf(store, "refunds.user|cara|2025-03-10|sum")).toBe(250);
    expect((await budgets.reserve(req("t-2", 1))).reserved).toBe(false);
  });

  it("a counter of before that is not a number denies (fail closed), as a malformed counter does", async () => {
    const inner = new MemoryBudgetStore();
    const store: BudgetStore = {
      get: async (keys) => ({ ...(await inner.get(keys)), "refunds.user|cara|2025-03-10|sum": Number.NaN }),
      add: (increments) => inner.add(increments),
      addWithin: (increments, limits) => inner.addWithin(increments, limits),
    };
    const budgets = defineBudgets([perUser(300)], { store, clock: fixedClock().clock });
    const { verdict, reserved } = await budgets.reserve(req("t-1", 1));
    expect(reserved).toBe(false);
    expect(verdict).toMatchObject({ effect: "deny", evaluationError: true });
  });
});

// ── charged exactly once ────────────────────────────────────────────────────────────────────────

describe("each call is charged exactly once", () => {
  it("a refund that threw stays charged (never zero); the supervisor's retry is reserved again, since an error does not prove nothing was paid", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(200)], { store, clock: fixedClock().clock });
    const s = refundWith(
      async (args, cfg, real, n) => {
        if (n === 1) throw new Error("gateway 502: nothing was transferred");
        return real.invoke(args, cfg as never);
      },
      [[refund("c1", 60, "1043")]],
      { budgets },
    );
    await s.agent.invoke(ask(), config("once-1"));
    const first = await recoveryOn(s.agent, "once-1");
    // Setup: nothing paid, the call is with a human, its reservation is held.
    expect(s.refunds()).toEqual([]);
    expect(first.requests[0]).toMatchObject({ toolCallId: "c1" });
    expect(await valueOf(store, sumKey())).toBe(60);
    await s.agent.invoke(new Command({ resume: { decisions: [decide(first, "c1", "retry")] } }), config("once-1", "sam"));
    expect(s.refunds()).toHaveLength(1);
    // Counted for each attempt that may have paid (fail closed), and once in the store per attempt.
    expect(await valueOf(store, sumKey())).toBe(120);
  });

  // Was a leak: a refund that paid and then threw (a gateway 502 after the transfer) went to a
  // human, whose "retry" ran it again with no budget check and no charge (the gate's one
  // reservation covered the call id, not each attempt that may act): two $60 payouts for cara
  // against a $100 per-user deny cap. Now a human's retry of an attempt that started the tool is
  // reserved again against the budgets that deny; one that no longer fits goes back to the human.
  it("a supervisor's retry of a refund that paid and then threw is checked and charged against the deny cap", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(100)], { store, clock: fixedClock().clock });
    const s = refundWith(
      paysThenThrows,
      [[refund("c1", 60, "1043")]],
      { budgets },
    );
    await s.agent.invoke(ask(), config("twice-1"));
    const first = await recoveryOn(s.agent, "twice-1");
    // Setup: attempt 1 paid $60, the call waits for a human, $60 is reserved.
    expect(s.refunds().map((r) => r.amount)).toEqual([60]);
    expect(await valueOf(store, sumKey())).toBe(60);
    await s.agent.invoke(new Command({ resume: { decisions: [decide(first, "c1", "retry")] } }), config("twice-1", "sam")).catch(() => undefined);
    // The guarantee: what was paid for cara today is what the budget counts, and within its cap.
    const paid = total(s.refunds().map((r) => r.amount));
    expect(paid).toBeLessThanOrEqual(100);
    expect(await valueOf(store, sumKey())).toBeGreaterThanOrEqual(paid);
    // The call is back with a human, who is told why, and may mark it done or abandon it.
    const again = await recoveryOn(s.agent, "twice-1");
    expect(again.requests[0]).toMatchObject({ toolCallId: "c1" });
    expect(JSON.stringify(again.requests[0])).toMatch(/exceed the budget/);
    await s.agent.invoke(new Command({ resume: { decisions: [decide(again, "c1", "mark_done", { result: "refunded by the gateway" })] } }), config("twice-1", "sam"));
    expect((await recordsOf(s.agent, "twice-1")).find((r) => r.toolCallId === "c1")?.status).toBe("executed");
    expect(s.refunds().map((r) => r.amount)).toEqual([60]);
  });

  it("a retry whose budget store is down does not run: the call goes back to a human", async () => {
    const inner = new MemoryBudgetStore();
    let down = false;
    const store: BudgetStore = {
      get: (keys) => inner.get(keys),
      add: (increments) => inner.add(increments),
      addWithin: (increments, limits) => (down ? Promise.reject(new Error("budget store unreachable")) : inner.addWithin(increments, limits)),
    };
    const budgets = defineBudgets([perUser(500)], { store, clock: fixedClock().clock });
    const s = refundWith(
      paysThenThrows,
      [[refund("c1", 60, "1043")]],
      { budgets },
    );
    await s.agent.invoke(ask(), config("retry-down"));
    const first = await recoveryOn(s.agent, "retry-down");
    down = true;
    await s.agent.invoke(new Command({ resume: { decisions: [decide(first, "c1", "retry")] } }), config("retry-down", "sam")).catch(() => undefined);
    expect(s.refunds().map((r) => r.amount)).toEqual([60]);
    const again = await recoveryOn(s.agent, "retry-down");
    expect(JSON.stringify(again.requests[0])).toMatch(/budget check failed/);
  });

  it("an approver's edit is charged at the edited amount; an edit past a deny cap does not run and charges nothing", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(300)], { store, clock: fixedClock().clock });
    const edit = async (threadId: string, amount: number) => {
      const s = refundSetup([[refund("c1", 150)]], { budgets });
      const request = pendingApproval(await s.agent.invoke(ask(), config(threadId)));
      // Setup: policy sends a $150 refund to a supervisor; nothing is reserved while it waits.
      expect(request?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
      await s.agent
        .invoke(new Command({ resume: { decisions: [decide(request!, "c1", "edit", { args: { orderId: "1042", amount } })] } }), config(threadId, "sam"))
        .catch(() => undefined);
      return s;
    };
    const up = await edit("edit-up", 400);
    expect(up.refunds()).toEqual([]);
    expect((await recordsOf(up.agent, "edit-up")).find((r) => r.toolCallId === "c1")?.status).not.toBe("executed");
    expect(await valueOf(store, sumKey())).toBe(0);
    const down = await edit("edit-down", 120);
    expect(down.refunds().map((r) => r.amount)).toEqual([120]);
    expect(await valueOf(store, sumKey())).toBe(120);
  });

  it("two threads each waiting for approval of $200 under a $300 deny cap: both approved, only one runs", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(300)], { store, clock: fixedClock().clock });
    const a = refundSetup([[refund("c1", 200)]], { budgets, checkpointer: new MemorySaver() });
    const b = refundSetup([[refund("c1", 200)]], { budgets, checkpointer: new MemorySaver() });
    const ra = pendingApproval(await a.agent.invoke(ask(), config("ap-a")))!;
    const rb = pendingApproval(await b.agent.invoke(ask(), config("ap-b")))!;
    // Setup: both wait for a supervisor, and each fits the cap alone.
    expect([ra.requests.length, rb.requests.length]).toEqual([1, 1]);
    const approve = (r: typeof ra) => new Command({ resume: { decisions: [decide(r, "c1", "approve")] } });
    await Promise.all([a.agent.invoke(approve(ra), config("ap-a", "sam")), b.agent.invoke(approve(rb), config("ap-b", "sue"))]);
    expect(a.refunds().length + b.refunds().length).toBe(1);
    expect(await valueOf(store, sumKey())).toBe(200);
  });

  it("a call the tool's schema rejects (amount 'lots') is neither run nor charged", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets([perUser(300)], { store, clock: fixedClock().clock });
    const s = refundSetup([[{ id: "c1", name: "issue_refund", args: { orderId: "1043", amount: "lots" } }]], { budgets });
    await s.agent.invoke(ask(), config("bad-args"));
    expect(s.refunds()).toEqual([]);
    expect(await valueOf(store, sumKey())).toBe(0);
  });
});

