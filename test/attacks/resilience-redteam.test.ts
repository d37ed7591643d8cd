/**
 * Red-team pass on THE RESILIENCE LAYER of governed tool execution: timeouts, automatic retries,
 * circuit breakers and fallbacks (`execution` options of the prebuilt agent, passed to the governed
 * tool node), attacked as
 * - a customer, or a model steered by a document, who chooses tool arguments, starts many threads
 *   and may cancel their own runs;
 * - a tenant sharing the process (and so the tool node and its breakers) with another;
 * - a downstream service whose error bodies and results the attacker can influence.
 * The guarantees attacked: a call runs as decided, at most once per idempotency key unless the tool
 * is idempotent; nothing pays twice through a fallback; a human is told what may have happened;
 * budgets count every attempt that may have acted; secrets never reach the records.
 *
 * Not attacked again here (covered in execution-redteam, resilience, cancellation and
 * inbox-recovery tests): an idempotent or non-idempotent tool that timed out and pays late (no
 * fallback, no retry), a tool that fails after its effect with default options, a half-open trial
 * ended by bad arguments, bad-argument calls never opening the breaker, one trial between two
 * threads when half-open, a breaker opened by one customer failing closed for another (a human
 * decides), a forged eart.recovery interrupt, the cancelled run itself.
 *
 * Design, noted and not counted as holes:
 * - one breaker per tool per tool node (per process, per agent), shared by every thread and tenant:
 *   it guards the downstream, so a tenant whose calls make the tool fail with errors that count
 *   (not ToolArgumentError, not 401/403) opens it for all; they then get the fallback, or a human.
 *   Another process keeps its own breaker (less denial of service, not more);
 * - retries and backoff are the developer's configuration (`attempts` at most 100, `maxDelayMs`
 *   unbounded): nothing an attacker sends lengthens them; a non-idempotent tool is retried on
 *   generic errors and a generic error is followed by the fallback when the developer asks so
 *   (README: "any other error | retried per retry … exhausted → fallback");
 * - the fallback tool runs under the primary call's decision, with its arguments and idempotency
 *   key: it is the developer's alternative for the same action, not a call the model proposed.
 *
 * Found by this pass, and closed (each test below failed before its fix, `Was a hole` above it):
 * - HIGH: an idempotent refund whose run was cancelled while the gateway paid (outcome unknown) is
 *   run again on the thread's next run; with the breaker open it goes to the FALLBACK tool, which
 *   pays a second time through another gateway (the README's own configuration);
 * - MEDIUM: a breaker check that straddles the end of the cool-down (the open-breaker fast path
 *   reads the ledger between `state()` and `admit()`) takes the half-open trial and never gives it
 *   back: the tool is refused for every thread of every tenant until a human's retry succeeds;
 * - MEDIUM: a refund that paid and threw, whose retry the breaker then refused, is handed over as
 *   `circuit_open` (what a breaker says when the tool never ran): the supervisor's retry skips the
 *   budget re-check and pays a second time past the deny cap;
 * - MEDIUM: a retry (and the fallback) gets the very arguments object the previous try was given:
 *   a tool that converts them in place (JSON-schema tools get the call's own object) is retried
 *   with arguments nobody decided (a $60 refund paid as $6,000);
 * - LOW: a tool error whose `name` is "GraphInterrupt" (an error body copied onto the error) is
 *   taken for the tool's own interrupt(): the non-idempotent refund that paid runs again on every
 *   continue of the thread, without a human;
 * - LOW: a tool error carrying `is_bubble_up: true` is passed through as graph control flow, and
 *   LangGraph ends the run as finished: the refund paid, and nothing records or asks about it.
 *
 * Held: a forced fallback is recorded as the fallback's, never as the tool's success; a card
 * number echoed through failing tries, the breaker, the fallback's failure and result is redacted
 * everywhere; a `retryOn` that throws on an unexpected error shape fails closed.
 */
import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { Command } from "@langchain/langgraph";
import type Database from "better-sqlite3";
import { describe, expect, it, vi } from "vitest";
import { z } from "zod";
import {
  defineBudgets,
  MemoryBudgetStore,
  MemoryEffectLedger,
  pendingRecovery,
  type AuditEvent,
  type BudgetGuard,
  type LedgerEntry,
  type LedgerKey,
  type RecoveryRequest,
} from "eart";
import type { GovernedAgentOptions } from "eart/graphs";
import { executionContextOf } from "eart/nodes";
import { scriptedModel } from "eart/testing";
import { decide } from "../support/decisions.js";
import { config, refund, refundSetup, type Call } from "../support/refund.js";

const noDelay = { initialDelayMs: 1, jitter: false } as const;
const of = (events: AuditEvent[], type: string) => events.filter((e) => e.type === type);
const T0 = new Date("2026-01-01T00:00:00Z");
const COOLDOWN = 30_000;
const breaker = { failureThreshold: 2, windowMs: 60_000, cooldownMs: COOLDOWN };
// $60 on order 1043 (cara's) or 2002 (omar's) is allowed by the refund policy without approval.
const small = (id = "c1", orderId = "1043"): Call => refund(id, 60, orderId);
const omar = (threadId: string) => config(threadId, "omar");

/** A model whose first turn proposes the calls written in the thread's first human message. */
function callsFromAsk() {
  return scriptedModel((messages: BaseMessage[]) => {
    const turn = messages.filter((m) => AIMessage.isInstance(m)).length;
    if (turn > 0) return new AIMessage(`done after ${turn} turns`);
    const human = messages.find((m) => HumanMessage.isInstance(m))!;
    return new AIMessage({ content: "", tool_calls: JSON.parse(String(human.content).replace(/^CALLS /, "")) as Call[] });
  });
}
const askCalls = (...calls: Call[]) => ({ messages: [new HumanMessage(`CALLS ${JSON.stringify(calls)}`)] });

/** A gateway row: with `key`, a second insert under the same key pays nothing (it dedupes). */
function pay(db: Database.Database, args: Record<string, unknown>, key: string | null = null): string {
  db.prepare(`INSERT INTO refunds (order_id, amount, tool_call_id, idempotency_key, created_at) VALUES (?, ?, 'x', ?, ?) ON CONFLICT (idempotency_key) DO NOTHING`).run(
    String(args.orderId),
    Number(args.amount),
    key,
    T0.toISOString(),
  );
  return JSON.stringify({ orderId: args.orderId, amount: args.amount, status: "refunded" });
}

type Body = (args: Record<string, unknown>, cfg: { signal?: AbortSignal }, n: number, db: Database.Database) => Promise<unknown>;

/**
 * The prebuilt refund agent (scripted by the thread's first message, supervisors recover, an
 * injected clock) with issue_refund's body replaced by `body`; `seen` counts the calls that reached it.
 */
function agentWith(body: Body, agent: Partial<GovernedAgentOptions> = {}, opts: { budgets?: BudgetGuard; schema?: unknown } = {}) {
  const clock = { now: T0 };
  const ledger = agent.ledger ?? new MemoryEffectLedger();
  const seen: { args: Record<string, unknown>; attempt: number | undefined; key: string | undefined }[] = [];
  const holder: { db?: Database.Database } = {};
  const setup = refundSetup([], {
    ...(opts.budgets ? { budgets: opts.budgets } : {}),
    tools: (t) => {
      const real = t.issueRefund;
      const issueRefund = tool(
        async (args: Record<string, unknown>, cfg) => {
          const ctx = executionContextOf(cfg);
          seen.push({ args: structuredClone(args), attempt: ctx?.attempt, key: ctx?.idempotencyKey });
          return body(args, cfg as { signal?: AbortSignal }, seen.length, holder.db!);
        },
        { name: real.name, description: real.description, schema: (opts.schema ?? real.schema) as z.ZodObject<z.ZodRawShape> },
      );
      return [t.lookupOrder, t.viewPaymentDetails, issueRefund as unknown as StructuredToolInterface];
    },
    agent: { model: callsFromAsk(), ledger, recoveryRoles: ["supervisor"], clock: () => clock.now, ...agent },
  });
  holder.db = setup.db;
  const paid = () => setup.refunds().map((r) => `${r.orderId}:${r.amount}`);
  return { ...setup, ledger, clock, seen, paid };
}

const recoveryOf = async (agent: { getState: (c: ReturnType<typeof config>) => Promise<unknown> }, threadId: string): Promise<RecoveryRequest> => {
  const request = pendingRecovery(await agent.getState(config(threadId)));
  if (!request) throw new Error(`expected a pending recovery request on ${threadId}`);
  return request;
};

/** A fallback tool paying through another gateway (it cannot dedupe by eart's key), and what it paid. */
function backupGateway(body: (args: Record<string, unknown>, n: number) => unknown = () => "paid through the backup gateway") {
  const backup: Record<string, unknown>[] = [];
  const backupPayout = tool(
    async (args: Record<string, unknown>) => {
      backup.push(args);
      return body(args, backup.length);
    },
    { name: "backup_payout", schema: z.object({ orderId: z.string(), amount: z.number() }) },
  );
  return { backup, backupPayout: backupPayout as unknown as StructuredToolInterface };
}

/** A promise and the function that opens it. */
function latch() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("circuit breaker", () => {
  /** A ledger whose `get` of one call runs `hook` first (to end the cool-down while it is read). */
  class HookedLedger extends MemoryEffectLedger {
    hook: ((key: LedgerKey) => void) | undefined;
    override async get(key: LedgerKey): Promise<LedgerEntry | undefined> {
      this.hook?.(key);
      return super.get(key);
    }
  }

  // Was a hole (medium: availability for every thread of every tenant, for the life of the process).
  // Now the fast path gives back a trial it took, and the call is admitted (and run) below.
  // While the breaker is open and there is no fallback, runOne's fast path checks
  // `breaker.state(clock())`, awaits `ledger.get(key)`, then calls `breaker.admit(clock())`. When
  // the cool-down ends during that read (a PostgreSQL or SQLite ledger takes milliseconds; a busy
  // tool meets the end of every cool-down), `admit` hands out the half-open TRIAL, which the fast
  // path ignores and never gives back; execute() then asks the breaker again, is refused (the
  // trial is "in flight"), and sends the call to a human. From then on every call of every
  // tenant is refused as `circuit_open` until a supervisor's retry of one succeeds. The attacker
  // only needs to keep the breaker opening (see the shared-breaker note) and to call at the end of
  // the cool-down. Fix: nodes/governed-tool-node.ts runOne, the open-breaker fast path: give the
  // admission back when it was admitted (`if (admission.admitted) breaker.release(admission)`), or
  // decide it from one `clock()` reading with `state()` only.
  it("a call whose breaker check straddles the end of the cool-down does not wedge the breaker: a later valid refund gets its trial and runs", async () => {
    const ledger = new HookedLedger();
    const s = agentWith(async (args, _cfg, _n, db) => {
      if (args.orderId === "2002") throw new Error("upstream: order 2002 is locked");
      return pay(db, args);
    }, { ledger, execution: { issue_refund: { breaker } } });
    await s.agent.invoke(askCalls(small("c1", "2002")), omar("wedge-omar-1"));
    await s.agent.invoke(askCalls(small("c1", "2002")), omar("wedge-omar-2"));
    expect(of(await s.auditLog.read("wedge-omar-2"), "tool.circuit_opened")).toHaveLength(1);
    // The cool-down ends while cara's call reads the ledger on the open-breaker fast path.
    ledger.hook = (key) => {
      if (key.threadId !== "wedge-cara-1") return;
      ledger.hook = undefined;
      s.clock.now = new Date(T0.getTime() + COOLDOWN);
    };
    await s.agent.invoke(askCalls(small()), config("wedge-cara-1"));
    // Setup: the straddling call met the open-breaker path; the cool-down ended during its read,
    // so it runs as the half-open trial (before the fix it took the trial and kept it).
    expect(s.seen).toHaveLength(3);
    expect(s.paid()).toEqual(["1043:60"]);
    // Two more cool-downs, the payments API healthy for cara: her next refund must run too.
    s.clock.now = new Date(T0.getTime() + 3 * COOLDOWN);
    await s.agent.invoke(askCalls(small()), config("wedge-cara-2"));
    expect(pendingRecovery(await s.agent.getState(config("wedge-cara-2")))).toBeUndefined();
    expect(s.paid()).toEqual(["1043:60", "1043:60"]);
  });

  // Design (shared breaker), checked on the fallback side: omar's failing refunds force cara's
  // refund onto the fallback. What must hold: her refund is not run, and the fallback's answer is
  // recorded as the fallback's (tool.fallback, with the breaker as its cause), never as
  // issue_refund's success, in the audit log and in what a replay answers.
  it("a breaker opened by omar forces cara's refund onto the fallback value: the tool is not run, and the answer is recorded as the fallback's, never as the refund's success", async () => {
    const s = agentWith(async (args, _cfg, _n, db) => {
      if (args.orderId === "2002") throw new Error("upstream: order 2002 is locked");
      return pay(db, args);
    }, { execution: { issue_refund: { breaker, fallback: { value: "Refund queued for manual processing." } } } });
    await s.agent.invoke(askCalls(small("c1", "2002")), omar("ff-omar-1"));
    await s.agent.invoke(askCalls(small("c1", "2002")), omar("ff-omar-2"));
    expect(of(await s.auditLog.read("ff-omar-2"), "tool.circuit_opened")).toHaveLength(1);
    const out = await s.agent.invoke(askCalls(small()), config("ff-cara"));
    expect(s.seen).toHaveLength(2);
    expect(s.paid()).toEqual([]);
    const events = await s.auditLog.read("ff-cara");
    expect(of(events, "tool.started")).toEqual([]);
    expect(of(events, "tool.succeeded")).toEqual([]);
    expect(of(events, "tool.fallback")[0]!.data).toMatchObject({ toolCallId: "c1", fallback: "value", cause: expect.stringMatching(/circuit breaker is open/) });
    const answer = out.messages.find((m: BaseMessage) => m.getType() === "tool");
    expect(answer?.content).toBe("Refund queued for manual processing.");
    // Continuing the thread replays the recorded fallback; it never runs the refund late.
    await s.agent.invoke(null, config("ff-cara"));
    expect(s.seen).toHaveLength(2);
    expect(s.paid()).toEqual([]);
  });

  // Was a hole (medium: a second payout past a deny budget, and a human misinformed). Now a retry the
  // breaker refuses is handed over as the failure of the try that ran (`exhausted`). A refund pays and
  // then throws (a gateway 502 after the transfer); the failure opens the breaker (threshold 1,
  // or a tenant's failures just before), so the RETRY is refused, and the call goes to a human as
  // `circuit_open`, with "the circuit breaker is open" as its error: what eart says of a call the
  // tool never ran. The supervisor's `retry` then skips the budget re-check that a retry of an
  // attempt that may have acted gets (`reason !== "circuit_open"` in runOne), and pays again:
  // $120 paid for cara against a $100 per-user deny cap, $60 counted. Fix: nodes/governed-tool-node.ts
  // execute(): when the breaker refuses a retry (n > 1), hand the call over as `exhausted` with the
  // failed try's error (or skip reserveRetry in runOne only when no try of the call started).
  it("a refund that paid and threw, whose retry the breaker refused, is not handed over as 'circuit_open': the supervisor's retry is checked against the deny cap", async () => {
    const store = new MemoryBudgetStore();
    const budgets = defineBudgets(
      [{ id: "refunds.user", tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 100 }, onExceed: "deny" }],
      { store, clock: () => T0 },
    );
    const s = agentWith(
      async (args, _cfg, n, db) => {
        const receipt = pay(db, args);
        if (n === 1) throw new Error("gateway 502 after the transfer");
        return receipt;
      },
      { execution: { issue_refund: { retry: { attempts: 2, ...noDelay }, breaker: { failureThreshold: 1, cooldownMs: COOLDOWN } } } },
      { budgets },
    );
    await s.agent.invoke(askCalls(small()), config("co-1"));
    const first = await recoveryOf(s.agent, "co-1");
    // Setup: try 1 paid $60 and threw; its failure opened the breaker, which refused the retry:
    // handed over as the failure of a try that ran, not as a call the breaker kept from running.
    expect(s.paid()).toEqual(["1043:60"]);
    expect(of(await s.auditLog.read("co-1"), "tool.circuit_opened")).toHaveLength(1);
    expect(first.requests[0]).toMatchObject({ toolCallId: "c1", reason: "exhausted", attempt: 2 });
    expect(JSON.stringify(first.requests[0])).toMatch(/gateway 502 after the transfer.*circuit breaker then refused/);
    await s.agent.invoke(new Command({ resume: { decisions: [decide(first, "c1", "retry")] } }), config("co-1", "sam")).catch(() => undefined);
    // The guarantee: what was paid for cara today is what the budget counts, and within its cap.
    const paid = s.refunds().reduce((sum, r) => sum + r.amount, 0);
    expect(paid).toBeLessThanOrEqual(100);
    expect((await store.get(["refunds.user|user|cara|2026-01-01|sum"]))["refunds.user|user|cara|2026-01-01|sum"]).toBeGreaterThanOrEqual(paid);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("fallbacks", () => {
  // Was a hole, now closed: a run again over an attempt whose outcome is unknown never falls back
  // (a human decides, `outcome_unknown`). It was (high: a double payout, with the README's own configuration: idempotent + breaker +
  // fallback tool). Cara's refund is cancelled by her own client while the gateway pays (it
  // ignores the abort): outcome unknown, `tool.cancelled` says so. An idempotent tool is run again
  // on the thread's next run, under the same key; but when the breaker is open by then (omar's
  // failing refunds, or the very outage that made the gateway hang), execute() finds no try it
  // ran that timed out and runs the FALLBACK tool, another gateway that cannot dedupe by eart's
  // key: $60 paid twice. The code takes the same path when the re-run's tries fail (a gateway
  // answering 409 "request in progress" for the key; read, not tested here). eart refuses the fallback after a try that timed out for
  // exactly this reason; an earlier attempt whose outcome is unknown is the same case. Fix:
  // nodes/governed-tool-node.ts runOne/execute(): when an idempotent call is run again over an
  // attempt whose outcome is unknown, never fall back (hand it to a human, `outcome_unknown`),
  // as for `lastTimedOut`.
  it("an idempotent refund cancelled while the gateway paid is not paid again by the fallback when the breaker is open on the next run", async () => {
    const { backup, backupPayout } = backupGateway();
    const started = latch();
    const s = agentWith(
      async (args, cfg, _n, db) => {
        if (args.orderId === "2002") throw new Error("upstream: order 2002 is locked");
        const key = executionContextOf(cfg)!.idempotencyKey;
        if (!cfg.signal?.aborted && s.paid().length === 0) {
          started.open();
          // The gateway keeps going after the abort, and pays.
          await new Promise<void>((resolve) => cfg.signal?.addEventListener("abort", () => resolve(), { once: true }));
        }
        return pay(db, args, key);
      },
      { execution: { issue_refund: { idempotent: true, breaker, fallback: { tool: backupPayout } } } },
    );
    const controller = new AbortController();
    const run = s.agent.invoke(askCalls(small()), { ...config("cx-cara"), signal: controller.signal });
    await started.opened;
    controller.abort();
    await run.catch(() => undefined);
    await vi.waitFor(async () => expect(of(await s.auditLog.read("cx-cara"), "tool.cancelled")).toHaveLength(1));
    await vi.waitFor(() => expect(s.paid()).toEqual(["1043:60"]));
    // Omar's failing refunds open the shared breaker (his calls go to the fallback: his own).
    await s.agent.invoke(askCalls(small("c1", "2002")), omar("cx-omar-1"));
    await s.agent.invoke(askCalls(small("c1", "2002")), omar("cx-omar-2"));
    expect(of(await s.auditLog.read("cx-omar-2"), "tool.circuit_opened")).toHaveLength(1);
    // Cara's thread goes on.
    await s.agent.invoke(null, config("cx-cara"));
    // The guarantee: one payout for the call; while it may have paid, a human decides.
    expect(backup.filter((b) => b.orderId === "1043")).toEqual([]);
    expect((await recoveryOf(s.agent, "cx-cara")).requests[0]).toMatchObject({ toolCallId: "c1" });
  });

  // Held. A card number the gateway echoes in its errors (the customer chose the order, the note,
  // the amount: the downstream's text is attacker-influenced) and a fallback that echoes it in its
  // error and then in its result: nothing the resilience layer writes keeps it (tool.failed,
  // tool.retrying, tool.circuit_opened, the fallback's failure, the recovery request, the ledger,
  // the model's answer).
  it("a card number echoed by failing tries, the breaker, the fallback's failure and the fallback's result is redacted in every record", async () => {
    const { backupPayout } = backupGateway((_args, n) => {
      if (n === 1) throw new Error("backup declined card 4111111111111111");
      return "paid to card 4111-1111-1111-1111 through the backup gateway";
    });
    const s = agentWith(
      async (args) => {
        throw new Error(`card 4111 1111 1111 1111 declined for order ${String(args.orderId)}`);
      },
      { execution: { issue_refund: { retry: { attempts: 2, ...noDelay }, breaker, fallback: { tool: backupPayout } } } },
    );
    await s.agent.invoke(askCalls(small()), config("sx-1"));
    const request = await recoveryOf(s.agent, "sx-1");
    const out = await s.agent.invoke(askCalls(small()), config("sx-2"));
    // Setup: every path ran (two tries, the breaker opened, the fallback failed, then answered).
    expect(s.seen).toHaveLength(2);
    const events = [...(await s.auditLog.read("sx-1")), ...(await s.auditLog.read("sx-2"))];
    for (const type of ["tool.failed", "tool.retrying", "tool.circuit_opened", "tool.fallback", "tool.recovery_requested"]) expect(of(events, type).length).toBeGreaterThan(0);
    const kept = JSON.stringify({
      events,
      request,
      ledger: [...(await s.ledger.list("sx-1")), ...(await s.ledger.list("sx-2"))],
      state: [(await s.agent.getState(config("sx-1"))).values, (await s.agent.getState(config("sx-2"))).values],
      out: out.messages,
    });
    expect(kept).toMatch(/declined/);
    expect(kept.replace(/\D/g, "")).not.toMatch(/4111111111111111/);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("retries", () => {
  // Was a hole, now closed: each try and the fallback get a copy of the decided arguments. It was
  // (medium: a tool run with arguments nobody decided). invokeOnce() hands every try (and the
  // fallback) `call.args`, the call's own object: LangChain passes it straight to a tool described
  // by JSON schema (a zod schema parses into fresh objects, except the values it does not parse:
  // z.any(), z.unknown(), z.custom()). A tool that normalises its input in place (dollars to cents, say) and then fails on
  // a transient error is retried with the converted arguments and converts them again: policy
  // allowed a $60 refund, the gateway is asked for 600,000 cents. Fix: nodes/governed-tool-node.ts
  // invokeOnce(): give each try its own copy (`args: structuredClone(call.args)`).
  it("a JSON-schema refund that converts its arguments in place and fails once is retried with the arguments as decided", async () => {
    const jsonSchema = { type: "object", properties: { orderId: { type: "string" }, amount: { type: "number" } }, required: ["orderId", "amount"] };
    const cents: number[] = [];
    const s = agentWith(
      async (args, _cfg, n, db) => {
        args.amount = Math.round(Number(args.amount) * 100); // the gateway wants cents
        cents.push(Number(args.amount));
        if (n === 1) throw new Error("ECONNRESET");
        return pay(db, { ...args, amount: Number(args.amount) / 100 });
      },
      { execution: { issue_refund: { idempotent: true, retry: { attempts: 2, ...noDelay } } } },
      { schema: jsonSchema },
    );
    await s.agent.invoke(askCalls(small()), config("mut-1"));
    // Setup: two tries; the first one failed.
    expect(s.seen).toHaveLength(2);
    expect(s.seen.map((x) => x.args)).toEqual([{ orderId: "1043", amount: 60 }, { orderId: "1043", amount: 60 }]);
    expect(cents).toEqual([6000, 6000]);
    expect(s.paid()).toEqual(["1043:60"]);
  });

  // Was a hole, now closed: only an error of LangGraph's class (its prototype's `is_bubble_up`) is a
  // pause or control flow. It was (low: likelihood; the impact is a payout on every continue of the thread, without a
  // human). Needs a tool that copies a downstream's error body onto its error
  // (`Object.assign(new Error(body.message), body)`) and a body whose `name` the attacker
  // influences. eart takes any error named "GraphInterrupt" for the tool's own interrupt(): it
  // records `tool.interrupted` and rethrows it (LangGraph then fails the run with a TypeError, as
  // the error has no `interrupts`; with an `interrupts` array in the body it pauses for real). The
  // thread's next run takes the entry for a tool that paused itself and calls the non-idempotent
  // refund again under a new attempt, instead of handing an unknown outcome to a human: one
  // payout per continue. Fix: nodes/governed-tool-node.ts execute() (and the fallback's catch):
  // take as the tool's pause only a real `GraphInterrupt` (an instance of LangGraph's class, as
  // `interrupt()` throws, with interrupts); any other error that only claims the name is a failure
  // whose outcome is unknown (a human decides).
  it("a refund that pays and throws an error named GraphInterrupt (its gateway's error body) is not run again without a human", async () => {
    const s = agentWith(async (args, _cfg, _n, db) => {
      pay(db, args);
      const body = { name: "GraphInterrupt", message: "payment held for review", code: "held" };
      throw Object.assign(new Error(body.message), body);
    });
    await s.agent.invoke(askCalls(small()), config("gi-1")).catch(() => undefined);
    // Setup: it paid; the error is the tool's failure, not its pause (before the fix it was).
    expect(s.paid()).toEqual(["1043:60"]);
    expect(of(await s.auditLog.read("gi-1"), "tool.interrupted")).toHaveLength(0);
    expect((await recoveryOf(s.agent, "gi-1")).requests[0]).toMatchObject({ toolCallId: "c1" });
    await s.agent.invoke(null, config("gi-1")).catch(() => undefined);
    await s.agent.invoke(null, config("gi-1")).catch(() => undefined);
    // The guarantee: the refund ran once; whether it paid is for a human to say.
    expect(s.seen).toHaveLength(1);
    expect(s.paid()).toEqual(["1043:60"]);
  });

  // Was a hole, now closed as the one above. It was (low: an effect nobody is told about; the same precondition, a body carrying
  // `is_bubble_up: true`). eart rethrows untouched every error LangGraph would call control flow
  // (`isGraphBubbleUp`: any object with `is_bubble_up === true`), and LangGraph ends the run on one
  // that is neither an interrupt nor a ParentCommand as if the graph had finished: the refund
  // paid, its decision stays `allowed` with no answer, the ledger entry stays `started`, the audit
  // log stops at `tool.started`, no human is asked, and the thread's next message goes on as if
  // nothing had been tried. Fix: nodes/governed-tool-node.ts execute() (and the fallback's catch):
  // pass through only errors LangGraph raised (instances of its GraphInterrupt / ParentCommand);
  // anything else is a tool failure, recorded and routed as one.
  it("a refund that pays and throws an error carrying is_bubble_up (graph control flow, from an error body) is recorded and goes to a human, not silently dropped", async () => {
    const s = agentWith(async (args, _cfg, _n, db) => {
      pay(db, args);
      throw Object.assign(new Error("payment held for review"), { code: "held", is_bubble_up: true });
    });
    await s.agent.invoke(askCalls(small()), config("bu-1")).catch(() => undefined);
    await s.agent.invoke(null, config("bu-1")).catch(() => undefined);
    // Setup: it paid once.
    expect(s.paid()).toEqual(["1043:60"]);
    expect(s.seen).toHaveLength(1);
    // The guarantee: a call whose outcome is unknown is recorded as tried and failed, and a human decides.
    expect(of(await s.auditLog.read("bu-1"), "tool.failed")).toHaveLength(1);
    expect((await recoveryOf(s.agent, "bu-1")).requests[0]).toMatchObject({ toolCallId: "c1" });
  });

  // Held. `retryOn` is the developer's predicate, but the errors it reads are shaped by the
  // downstream: one that throws on an unexpected shape (`e.response.status` of an error without a
  // response) must not turn into a retry, a fallback, or a second run on the thread's next run.
  it("a retryOn that throws on an error of an unexpected shape fails closed: the refund ran once, and the next run asks a human", async () => {
    const { backup, backupPayout } = backupGateway();
    const s = agentWith(
      async (args, _cfg, _n, db) => {
        pay(db, args);
        throw new Error("gateway 502 after the transfer");
      },
      {
        execution: {
          issue_refund: {
            retry: { attempts: 3, ...noDelay, retryOn: (e: unknown) => (e as { response: { status: number } }).response.status >= 500 },
            fallback: { tool: backupPayout },
          },
        },
      },
    );
    await s.agent.invoke(askCalls(small()), config("ro-1")).catch(() => undefined);
    await s.agent.invoke(null, config("ro-1")).catch(() => undefined);
    expect(s.seen).toHaveLength(1);
    expect(s.paid()).toEqual(["1043:60"]);
    expect(backup).toEqual([]);
    expect((await recoveryOf(s.agent, "ro-1")).requests[0]).toMatchObject({ toolCallId: "c1" });
  });
});
