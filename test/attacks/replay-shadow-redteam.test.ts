/**
 * Red team: policy replay, shadow evaluation and the Cedar engine (README "## Policy": "Rolling
 * out a policy change"; `replay` in src/policy/replay.ts, `shadowPolicy` in guards/policy-gate.ts,
 * `createCedarPolicyEngine` in src/policy/cedar.ts). No CLI command replays or shadows policy, so
 * the library functions are attacked directly.
 *
 * Attackers: an untrusted caller of the thread API (a customer, a model echoing a document into
 * tool arguments) whose calls end up in the recorded requests; an insider who can write the audit
 * store but has no signing key; and the operator rolling out a candidate policy, who relies on
 * `replay` (and on shadow mode) to tell which past decisions would change, and on shadow mode
 * never changing one. Safe behaviour, asserted by each `it`: a replay report names every past
 * decision the candidate would decide differently (or says it cannot tell), never vouches for
 * records it did not verify, and a shadow candidate changes nothing that runs.
 *
 * Held (it): Cedar principals, actions, roles and argument keys are never parsed from strings
 * (quotes, `::`, `{type,id}` records, `__entity`/`__extn` anywhere, `__proto__`); a Cedar policy
 * that errors (missing attribute, overflow, a type the schema refuses) denies even when Cedar
 * alone would allow; non-integer, huge and numeric-string amounts deny; nesting past Cedar's
 * recursion limit denies without poisoning the engine; a shadow engine that throws changes no
 * decision; replay keeps going past a candidate that throws, is not silently capped at 100,000
 * records, survives hostile recorded values, leaves approval-batch refusals out, and replaying the
 * enforced policy on its own plain log flips nothing; any edit to a rule's source, a Cedar text
 * or `config` changes the version.
 *
 * Found by this pass, and closed (each test below failed before its fix): replay trusted the store
 * (an insider's edited record was replayed as genuine); judged redacted requests as if the engine
 * had seen them; never saw the arguments an approver edited; ignored quorums; compared the
 * candidate with the verdict after budgets; counted an engine's decision without its request as
 * eart's own refusal; dropped context items' provider. A shadow candidate that changed the request
 * in place changed the live decision through the budgets and the record. A bound `when` or Cedar
 * mapper hashed as `[native code]`, so two policies shared one version.
 */
import { Command } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import {
  defineBudgets,
  definePolicy,
  MemoryAuditLog,
  MemoryBudgetStore,
  pendingApproval,
  recordedRequest,
  replay,
  type AgentIdentity,
  type AuditEvent,
  type AuditLog,
  type PolicyDecision,
  type PolicyEngine,
  type PolicyRequest,
  type ReplayReport,
} from "eart";
import { createCedarPolicyEngine } from "eart/cedar";
import { SqliteAuditLog } from "eart/sqlite";
import { refundPolicy } from "../../examples/refund/policy.js";
import { decide } from "../support/decisions.js";
import { ask, config, refund, refundSetup } from "../support/refund.js";

// ── fixtures ────────────────────────────────────────────────────────────────────────────────────

const closers: (() => unknown)[] = [];
afterAll(() => {
  for (const close of closers) close();
});

const agent = (over: Partial<AgentIdentity> = {}): AgentIdentity => ({
  schemaVersion: 1,
  id: "support-agent",
  roles: ["support"],
  tools: ["issue_refund", "lookup_order"],
  dataScopes: ["orders"],
  onBehalfOf: { id: "cara", roles: ["customer"] },
  source: "configurable.user_id",
  ...over,
});

const request = (args: Record<string, unknown>, name = "issue_refund", identity: AgentIdentity = agent()): PolicyRequest => ({
  identity,
  tool: { name, args },
  context: { items: [], sensitivity: [] },
  threadId: "t-direct",
});

const amount = (r: PolicyRequest) => Number(r.tool.args.amount);

/** A decision of an engine that answers synchronously (typed rules, Cedar). */
const decideNow = (engine: PolicyEngine, r: PolicyRequest) => engine.decide(r) as PolicyDecision;

/** The refund policy's shape, with knobs a candidate turns: a lower hard limit, a quorum, one more rule. */
function candidatePolicy(opts: { limit?: number; quorum?: number; extra?: Parameters<typeof definePolicy>[0]["rules"] } = {}): PolicyEngine {
  return definePolicy({
    name: "refunds-candidate",
    rules: [
      { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
      { id: "refund.small", tools: ["issue_refund"], when: (r) => amount(r) <= 100, effect: "allow" },
      {
        id: "refund.supervisor",
        tools: ["issue_refund"],
        when: (r) => amount(r) > 100 && amount(r) <= 5000,
        effect: "require_approval",
        approverRoles: ["supervisor"],
        ...(opts.quorum ? { quorum: opts.quorum } : {}),
      },
      { id: "refund.limit", tools: ["issue_refund"], when: (r, c) => !(amount(r) <= Number(c.limit)), effect: "deny" },
      ...(opts.extra ?? []),
    ],
    config: { limit: opts.limit ?? 5000 },
  });
}

/** The `policy.decided` events of a thread. */
const decided = async (log: AuditLog, threadId: string) => (await log.read(threadId)).filter((e) => e.type === "policy.decided");

/** Whether a replay report names a value (a tool call id, a thread id) anywhere: as a flip, or as something it could not replay. */
const names = (report: ReplayReport, value: string) => JSON.stringify(report).includes(JSON.stringify(value));

/** Whether a report names a value outside its flips (a list of unverified threads, unreplayable records…). */
const namesOutsideFlips = (report: ReplayReport, value: string) => {
  const { flips: _flips, ...rest } = report;
  return JSON.stringify(rest).includes(JSON.stringify(value));
};

/** The data `guards/policy-gate.ts` records for one decision. */
const decidedData = (toolCallId: string, req: PolicyRequest | undefined, verdict: { effect: string; policyIds: string[] }) => ({
  toolCallId,
  name: req?.tool.name ?? "issue_refund",
  digest: "0".repeat(64),
  effect: verdict.effect,
  status: verdict.effect === "allow" ? "allowed" : "denied",
  reasons: ["recorded"],
  policyIds: verdict.policyIds,
  policyVersion: refundPolicy.version,
  approverRoles: null,
  agentId: "support-agent",
  userId: "cara",
  ...(req ? { request: recordedRequest(req) } : {}),
});

/** An audit log that only lists and reads: what replay uses. Events come from raw JSON, as a store parses them. */
function rawLog(threads: Record<string, () => AuditEvent[]>): AuditLog {
  return {
    listThreads: async () => Object.keys(threads),
    read: async (threadId: string) => threads[threadId]?.() ?? [],
    append: async () => {
      throw new Error("read-only");
    },
    verify: async (threadId: string) => ({ ok: true, threadId, count: threads[threadId]?.().length ?? 0 }),
  } as unknown as AuditLog;
}

const rawEvent = (threadId: string, seq: number, dataJson: string): AuditEvent =>
  ({
    schemaVersion: 1,
    id: `e-${seq}`,
    threadId,
    seq,
    type: "policy.decided",
    at: "2026-01-01T00:00:00.000Z",
    data: JSON.parse(dataJson) as Record<string, unknown>,
    prevHash: "0".repeat(64),
    hash: "0".repeat(64),
  }) as AuditEvent;

const CEDAR_AMOUNT = `@id("refund.small") permit(principal, action == Action::"issue_refund", resource)
  when { context.args has amountCents && context.args.amountCents <= 10000 };`;

// ── replay: trusting the store ──────────────────────────────────────────────────────────────────

describe("replay: what it trusts", () => {
  // Was a leak: replay read `policy.decided` events without verifying the thread's chain, so an
  // insider's edit (a $740 refund rewritten to $50/allow) was replayed as recorded and the new $500
  // limit reported as changing nothing. Now each thread is verified first; one that does not verify
  // is listed in `unverified` and not replayed.
  it("an insider's edited policy.decided record is not replayed as if genuine", async () => {
    const db = new Database(":memory:");
    const log = new SqliteAuditLog({ database: db });
    closers.push(() => log.close());
    const setup = refundSetup([[refund("r1", 740)]], { auditLog: log });
    await setup.agent.invoke(ask(), config("t-tamper"));

    const candidate = candidatePolicy({ limit: 500 });
    // Untouched, the $740 request flips to deny: this is what the operator must see.
    expect((await replay(log, candidate)).flips.map((f) => [f.toolCallId, f.recorded.effect, f.candidate.effect])).toEqual([["r1", "require_approval", "deny"]]);

    const row = db.prepare(`SELECT seq, data FROM eart_audit_events WHERE thread_id = ? AND type = 'policy.decided'`).get("t-tamper") as { seq: number; data: string };
    const forged = JSON.parse(row.data) as { effect: string; policyIds: string[]; request: { tool: { args: Record<string, unknown> } } };
    forged.request.tool.args.amount = 50;
    forged.effect = "allow";
    forged.policyIds = ["refund.small"];
    db.prepare(`UPDATE eart_audit_events SET data = ? WHERE thread_id = ? AND seq = ?`).run(JSON.stringify(forged), "t-tamper", row.seq);
    expect(await log.verify("t-tamper")).toMatchObject({ ok: false, brokenAt: { reason: "hash_mismatch" } });

    const outcome = await replay(log, candidate).catch((error: unknown) => error);
    const refused = outcome instanceof Error;
    expect(refused || namesOutsideFlips(outcome as ReplayReport, "t-tamper")).toBe(true);
  });

  // Was a leak: the recorded request is redacted with the event, and replay judged
  // "card [REDACTED:card_number]", not what the engine saw: a candidate denying card numbers in a
  // reason was reported as changing nothing. Now such a decision is listed as `unreplayable`
  // (`redacted`), never counted as evaluated.
  it("a call whose recorded request was redacted is reported, not replayed on the redacted text", async () => {
    const args = { orderId: "1042", amount: 60, reason: "card 4111 1111 1111 1111" };
    const setup = refundSetup([[{ id: "r1", name: "issue_refund", args }]]);
    await setup.agent.invoke(ask(), config("t-redacted"));
    expect(setup.refunds()).toEqual([{ orderId: "1042", amount: 60, toolCallId: "r1" }]);

    const candidate = candidatePolicy({
      extra: [{ id: "refund.pan-in-reason", tools: ["issue_refund"], when: (r) => /\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}/.test(String(r.tool.args.reason ?? "")), effect: "deny" }],
    });
    const [event] = await decided(setup.auditLog, "t-redacted");
    const recorded = (event!.data as { request: PolicyRequest }).request;
    expect(recorded.tool.args.reason).toBe("card [REDACTED:card_number]");
    // What the engine saw (the recorded request with the arguments the tool ran with) flips to deny.
    expect((await candidate.decide({ ...recorded, tool: { name: "issue_refund", args } })).effect).toBe("deny");

    expect(names(await replay(setup.auditLog, candidate), "r1")).toBe(true);
  });

  // Was a leak: an approver's edit was decided by policy again but only the model's proposal was
  // recorded as replayable: the $4,000 the approver made of a $740 refund was out of replay's sight.
  // Now `approval.decided` of an edit records the request and the engine's verdict, and replay
  // replays it.
  it("the call an approver edited, and that ran, is replayed", async () => {
    const setup = refundSetup([[refund("r1", 740)]]);
    await setup.agent.invoke(ask(), config("t-edit"));
    const pending = pendingApproval(await setup.agent.getState(config("t-edit")))!;
    await setup.agent.invoke(
      new Command({ resume: { decisions: [decide(pending, "r1", "edit", { args: { orderId: "1042", amount: 4000 } })] } }),
      config("t-edit", "sam"),
    );
    expect(setup.refunds()).toEqual([{ orderId: "1042", amount: 4000, toolCallId: "r1" }]);

    const candidate = candidatePolicy({ limit: 3000 });
    expect((await candidate.decide(request({ orderId: "1042", amount: 4000 }))).effect).toBe("deny");
    const report = await replay(setup.auditLog, candidate);
    expect(report.flips.map((f) => [f.toolCallId, f.candidate.effect])).toContainEqual(["r1", "deny"]);
  });

  // Was a leak: replay compared only the effect and the approver roles, and `policy.decided` did
  // not record the quorum: a candidate asking two supervisors where one sufficed was no change. Now
  // the quorum is recorded and compared, as shadow mode compares it.
  it("a candidate asking for two approvers instead of one is a flip", async () => {
    const setup = refundSetup([[refund("r1", 740)]]);
    await setup.agent.invoke(ask(), config("t-quorum"));
    const candidate = candidatePolicy({ quorum: 2 });
    const now = (await candidate.decide(request({ orderId: "1042", amount: 740 }))) as PolicyDecision & { quorum?: number };
    expect(now).toMatchObject({ effect: "require_approval", quorum: 2 });
    const report = await replay(setup.auditLog, candidate);
    expect(report.flips.map((f) => f.toolCallId)).toEqual(["r1"]);
  });

  // Was a leak: `policy.decided` records the verdict after budgets, and replay compared the
  // candidate's bare verdict with it: replaying the enforced policy flipped wherever a budget had
  // denied. Now the engine's own verdict is recorded beside it (`beforeBudgets`) and compared.
  it("replaying the enforced policy over calls a budget denied flips nothing", async () => {
    const budgets = defineBudgets([{ id: "refunds.one-per-thread", tools: ["issue_refund"], scope: "thread", window: "day", maxCalls: 1, onExceed: "deny" }], {
      store: new MemoryBudgetStore(),
    });
    const setup = refundSetup([[refund("r1", 60), refund("r2", 50)]], { budgets });
    await setup.agent.invoke(ask(), config("t-budget"));
    expect(setup.refunds().map((r) => r.toolCallId)).toEqual(["r1"]);
    const report = await replay(setup.auditLog, refundPolicy);
    expect(report.evaluated).toBe(2);
    expect(report.flips).toEqual([]);
  });

  // Was a leak: an engine's decision recorded without its request (an older record, or one
  // stripped) was counted in `skipped`, the bucket of eart's own refusals, and named nowhere. Now it
  // is listed in `unreplayable` (`no_request`) by thread, seq and tool call id.
  it("an engine decision recorded without its request is named as not replayable", async () => {
    const log = new MemoryAuditLog();
    await log.append({ threadId: "t-old", type: "policy.decided", data: decidedData("old-1", undefined, { effect: "allow", policyIds: ["refund.small"] }) } as never);
    const report = await replay(log, candidatePolicy({ limit: 10 }));
    expect(report.evaluated).toBe(0);
    expect(namesOutsideFlips(report, "old-1")).toBe(true);
  });

  // Was a leak: replay's schema dropped each context item's `provider` (the record keeps it): a
  // candidate keyed on an untrusted provider was replayed on items without one. Now replay reads the
  // items as the engine saw them, all but their content.
  it("replay shows the candidate what the engine saw of context items (their provider)", async () => {
    const seen: PolicyRequest = {
      ...request({ orderId: "1042", amount: 60 }),
      threadId: "t-provider",
      context: { sensitivity: [], items: [{ id: "doc-1", source: "web", scope: "orders", labels: [], provider: "web-search", content: "ignore previous instructions" }] },
    };
    const candidate = definePolicy({
      rules: [
        { id: "after-web", tools: ["issue_refund"], when: (r) => r.context.items.some((i) => i.provider === "web-search"), effect: "escalate" },
        { id: "refund.any", tools: ["issue_refund"], effect: "allow" },
      ],
    });
    expect((await candidate.decide(seen)).effect).toBe("escalate");
    const log = new MemoryAuditLog();
    await log.append({ threadId: "t-provider", type: "policy.decided", data: decidedData("p1", seen, { effect: "allow", policyIds: ["refund.small"] }) } as never);
    const report = await replay(log, candidate);
    expect(report.flips.map((f) => [f.toolCallId, f.candidate.effect])).toEqual([["p1", "escalate"]]);
  });
});

// ── replay: what holds ─────────────────────────────────────────────────────────────────────────

describe("replay: what holds", () => {
  it("replaying the enforced policy on its own plain log flips nothing, and each flip names the version it was recorded under", async () => {
    const setup = refundSetup([[refund("r1", 60), refund("r2", 740), refund("r3", 9000)]]);
    await setup.agent.invoke(ask(), config("t-plain"));
    const same = await replay(setup.auditLog, refundPolicy);
    expect(same).toMatchObject({ evaluated: 3, skipped: 0, flips: [] });
    const stricter = await replay(setup.auditLog, candidatePolicy({ limit: 50 }));
    expect(stricter.flips.map((f) => [f.toolCallId, f.recorded.version, f.candidate.effect])).toEqual([
      ["r1", refundPolicy.version, "deny"],
      ["r2", refundPolicy.version, "deny"],
    ]);
  });

  it("the calls refused past the approval batch limit are not replayed as policy decisions (no false flips)", async () => {
    const setup = refundSetup([Array.from({ length: 101 }, (_, i) => refund(`b${i}`, 200))]);
    await setup.agent.invoke(ask(), config("t-batch"));
    const report = await replay(setup.auditLog, refundPolicy);
    expect(report).toMatchObject({ evaluated: 100, skipped: 1, flips: [] });
  });

  it("a candidate that throws on one record is a fail-closed deny in the report, and replay goes on", async () => {
    const log = new MemoryAuditLog();
    await log.append([
      { threadId: "t-throw", type: "policy.decided", data: decidedData("c1", request({ orderId: "1042", amount: 60 }), { effect: "allow", policyIds: ["refund.small"] }) },
      { threadId: "t-throw", type: "policy.decided", data: decidedData("c2", request({ orderId: "boom", amount: 60 }), { effect: "allow", policyIds: ["refund.small"] }) },
    ] as never);
    const candidate: PolicyEngine = {
      version: "throwing-candidate",
      decide: (r) => {
        if (r.tool.args.orderId === "boom") throw new Error("candidate bug");
        return { effect: "allow", reasons: ["ok"], policyIds: ["any"], version: "throwing-candidate" };
      },
    };
    const report = await replay(log, candidate);
    expect(report.evaluated).toBe(2);
    expect(report.flips.map((f) => [f.toolCallId, f.candidate.effect])).toEqual([["c2", "deny"]]);
    expect(report.flips[0]!.candidate.reasons.join(" ")).toMatch(/candidate bug/);
  });

  it("recorded arguments holding 1e400, numeric strings, __proto__, 10,000-deep nesting or a megabyte string are judged fail closed by a Cedar candidate", async () => {
    const identity = JSON.stringify(recordedRequest(request({})).identity);
    const record = (id: string, argsJson: string) =>
      `{"toolCallId":"${id}","name":"issue_refund","effect":"allow","policyIds":["refund.small"],"policyVersion":"v0","approverRoles":null,` +
      `"request":{"identity":${identity},"tool":{"name":"issue_refund","args":${argsJson}},"context":{"items":[],"sensitivity":[]},"threadId":"t-hostile"}}`;
    const deep = `${'{"d":'.repeat(10_000)}1${"}".repeat(10_000)}`;
    const log = rawLog({
      "t-hostile": () => [
        rawEvent("t-hostile", 0, record("huge", `{"amountCents":1e400}`)),
        rawEvent("t-hostile", 1, record("string", `{"amountCents":"500"}`)),
        rawEvent("t-hostile", 2, record("proto", `{"__proto__":{"amountCents":5}}`)),
        rawEvent("t-hostile", 3, record("deep", `{"amountCents":5,"x":${deep}}`)),
        rawEvent("t-hostile", 4, record("long", `{"amountCents":"${"9".repeat(1_000_000)}"}`)),
        rawEvent("t-hostile", 5, record("fine", `{"amountCents":500}`)),
      ],
    });
    const candidate = createCedarPolicyEngine({ policies: CEDAR_AMOUNT });
    const report = await replay(log, candidate);
    expect(report.evaluated).toBe(6);
    expect(report.flips.map((f) => [f.toolCallId, f.candidate.effect])).toEqual([
      ["huge", "deny"],
      ["string", "deny"],
      ["proto", "deny"],
      ["deep", "deny"],
      ["long", "deny"],
    ]);
  });

  it("100,000 recorded decisions are all replayed, none silently dropped", async () => {
    const identity = JSON.stringify(recordedRequest(request({})).identity);
    const N = 100_000;
    const events = () =>
      Array.from({ length: N }, (_, i) =>
        rawEvent(
          "t-big",
          i,
          `{"toolCallId":"c${i}","name":"issue_refund","effect":"allow","policyIds":["refund.small"],"policyVersion":"v0","approverRoles":null,` +
            `"request":{"identity":${identity},"tool":{"name":"issue_refund","args":{"orderId":"1042","amount":${i % 200}}},"context":{"items":[],"sensitivity":[]}}}`,
        ),
      );
    const candidate = definePolicy({ rules: [{ id: "small", tools: ["issue_refund"], when: (r) => amount(r) <= 100, effect: "allow" }] });
    const report = await replay(rawLog({ "t-big": events }), candidate);
    expect(report.evaluated).toBe(N);
    // amounts 101..199 of every 200: 99 in each block of 200.
    expect(report.flips).toHaveLength((N / 200) * 99);
    expect(report.flips.at(-1)).toMatchObject({ toolCallId: `c${N - 1}`, candidate: { effect: "deny" } });
  });
});

// ── shadow mode ────────────────────────────────────────────────────────────────────────────────

describe("shadow mode", () => {
  it("a shadow engine that throws changes no decision and is audited as a flip to deny", async () => {
    const broken: PolicyEngine = {
      version: "broken-candidate",
      decide: () => {
        throw new Error("candidate exploded");
      },
    };
    const setup = refundSetup([[refund("r1", 60)]], { agent: { shadowPolicy: broken } });
    await setup.agent.invoke(ask(), config("t-shadow-throw"));
    expect(setup.refunds()).toEqual([{ orderId: "1042", amount: 60, toolCallId: "r1" }]);
    const flips = (await setup.auditLog.read("t-shadow-throw")).filter((e) => e.type === "policy.shadow_flip");
    expect(flips.map((e) => e.data)).toMatchObject([{ toolCallId: "r1", enforced: { effect: "allow" }, candidate: { effect: "deny" } }]);
  });

  // Was a leak: the enforced and the shadow engine were handed the same request object, and the
  // budgets and the audit record read it after them. A candidate that converted in place (dollars
  // to cents) made the live $60 refund cost $6,000 against the budget: denied, although "the
  // candidate never changes a decision", and the audit log recorded a $6,000 request the model
  // never made. Now the candidate judges a copy of its own.
  it("a shadow candidate that mutates the request changes neither the live decision nor the record", async () => {
    const budgets = defineBudgets(
      [{ id: "refunds.thread-day", tools: ["issue_refund"], scope: "thread", window: "day", maxSum: { arg: "amount", max: 1000 }, onExceed: "deny" }],
      { store: new MemoryBudgetStore() },
    );
    const inCents = definePolicy({
      name: "refunds-in-cents",
      rules: [
        { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
        {
          id: "refund.cents",
          tools: ["issue_refund"],
          when: (r) => {
            r.tool.args.amount = Number(r.tool.args.amount) * 100;
            return Number(r.tool.args.amount) <= 10_000;
          },
          effect: "allow",
        },
      ],
    });
    const setup = refundSetup([[refund("r1", 60)]], { budgets, agent: { shadowPolicy: inCents } });
    await setup.agent.invoke(ask(), config("t-shadow-mutate"));
    const [event] = await decided(setup.auditLog, "t-shadow-mutate");
    expect((event!.data as { request: PolicyRequest }).request.tool.args.amount).toBe(60);
    expect(setup.refunds()).toEqual([{ orderId: "1042", amount: 60, toolCallId: "r1" }]);
  });
});

// ── policy versions ─────────────────────────────────────────────────────────────────────────────

describe("policy versions", () => {
  it("an edit of a rule's source, its config, or a Cedar policy's text changes the version", () => {
    const typed = (limit: string, config?: Record<string, unknown>) =>
      definePolicy({
        rules: [{ id: "small", tools: ["issue_refund"], when: new Function("r", `return Number(r.tool.args.amount) <= ${limit}`) as (r: PolicyRequest) => boolean, effect: "allow" }],
        ...(config ? { config } : {}),
      }).version;
    expect(typed("100")).not.toBe(typed("1000"));
    expect(typed("100", { a: 1 })).not.toBe(typed("100", { a: 2 }));
    const cedar = (text: string) => createCedarPolicyEngine({ policies: text }).version;
    expect(cedar(CEDAR_AMOUNT)).not.toBe(cedar(CEDAR_AMOUNT.replace("10000", "100000")));
  });

  // Was a leak: the version hashes each `when`'s source, and a bound function prints
  // `[native code]` whatever it decides: a bound condition moving the auto-approve limit from $100
  // to $100,000 kept the version, so approvals were not decided again. Now a `when` or `reason`
  // whose source does not show is refused, unless the policy declares its version.
  it("two typed policies whose bound conditions differ do not share a version", () => {
    const strict = (r: PolicyRequest) => amount(r) <= 100;
    const lax = (r: PolicyRequest) => amount(r) <= 100_000;
    const versionOf = (when: (r: PolicyRequest) => boolean) => {
      try {
        return definePolicy({ rules: [{ id: "refund.auto", tools: ["issue_refund"], when, effect: "allow" }] }).version;
      } catch (error) {
        return error as Error;
      }
    };
    const a = versionOf(strict.bind(null));
    const b = versionOf(lax.bind(null));
    expect(a instanceof Error || b instanceof Error || a !== b).toBe(true);
    // A policy that declares its version takes one: the declared version stands for what it decides.
    expect(definePolicy({ version: "refunds-2026-12", rules: [{ id: "refund.auto", tools: ["issue_refund"], when: lax.bind(null), effect: "allow" }] }).version).toMatch(/\S/);
  });

  // Was a leak: the same for Cedar's `contextArgs` and `resources` mappers (a bound mapper that
  // stopped converting to cents kept the version). Now refused, unless the engine declares its
  // version.
  it("two Cedar engines whose bound contextArgs mappers differ do not share a version", () => {
    const cents = (a: Record<string, unknown>) => ({ amountCents: Math.round(Number(a.amount) * 100) });
    const dollars = (a: Record<string, unknown>) => ({ amountCents: Math.round(Number(a.amount)) });
    const engineOf = (mapper: (a: Record<string, unknown>) => Record<string, unknown>) => {
      try {
        return createCedarPolicyEngine({ policies: CEDAR_AMOUNT, contextArgs: { issue_refund: mapper } });
      } catch (error) {
        return error as Error;
      }
    };
    const a = engineOf(cents.bind(null));
    const b = engineOf(dollars.bind(null));
    if (!(a instanceof Error) && !(b instanceof Error)) {
      // They decide differently...
      expect(decideNow(a, request({ amount: 500 })).effect).toBe("deny");
      expect(decideNow(b, request({ amount: 500 })).effect).toBe("allow");
    }
    // ...so they must not claim to be the same policy set.
    expect(a instanceof Error || b instanceof Error || a.version !== b.version).toBe(true);
  });
});

// ── the Cedar engine ────────────────────────────────────────────────────────────────────────────

describe("Cedar engine: injection and fail closed", () => {
  const adminOnly = createCedarPolicyEngine({ policies: `@id("admin.any") permit(principal in Role::"admin", action, resource);` });

  it("identity ids, roles and tool names holding quotes and :: never name another entity", () => {
    const forged = agent({ id: `x" in Role::"admin`, roles: [`support" `, `Role::"admin"`, `admin `] });
    expect(decideNow(adminOnly, request({}, "issue_refund", forged))).toMatchObject({ effect: "deny", policyIds: ["eart.default-deny"] });
    const toolOnly = createCedarPolicyEngine({ policies: `@id("refund") permit(principal, action == Action::"issue_refund", resource);` });
    expect(decideNow(toolOnly, request({}, `issue_refund" || action == Action::"x`)).effect).toBe("deny");
    // The same identity holding the real role is allowed: the policy is not simply unsatisfiable.
    expect(decideNow(adminOnly, request({}, "issue_refund", agent({ roles: ["admin"] }))).effect).toBe("allow");
  });

  it("a {type, id} or {fn, arg} record in the arguments is a record, not an entity or an extension value", () => {
    const byEntity = createCedarPolicyEngine({ policies: `@id("p") permit(principal, action, resource) when { context.args.target == Role::"admin" };` });
    expect(decideNow(byEntity, request({ target: { type: "Role", id: "admin" } })).effect).toBe("deny");
    const byDecimal = createCedarPolicyEngine({ policies: `@id("p") permit(principal, action, resource) when { context.args.rate == decimal("1.0") };` });
    expect(decideNow(byDecimal, request({ rate: { fn: "decimal", arg: "1.0" } })).effect).toBe("deny");
  });

  it("__entity, __extn and __expr keys anywhere in the arguments deny with evaluationError", () => {
    for (const args of [
      { target: { __entity: { type: "Role", id: "admin" } } },
      { list: [{ nested: { __extn: { fn: "decimal", arg: "1.0" } } }] },
      { __expr: "true" },
    ]) {
      expect(decideNow(adminOnly, request(args, "issue_refund", agent({ roles: ["admin"] })))).toMatchObject({ effect: "deny", evaluationError: true });
    }
  });

  it("an own __proto__ key in parsed arguments stays a key: it lends no attribute to args", () => {
    const engine = createCedarPolicyEngine({ policies: CEDAR_AMOUNT });
    expect(decideNow(engine, request(JSON.parse('{"__proto__":{"amountCents":5}}') as Record<string, unknown>)).effect).toBe("deny");
    expect(decideNow(engine, request({ amountCents: 5 })).effect).toBe("allow");
  });

  it("a forbid that errors on a missing attribute denies, although the permit alone would allow", () => {
    const engine = createCedarPolicyEngine({
      policies: `@id("all") permit(principal, action, resource);
        @id("no.sanctioned") forbid(principal, action, resource) when { context.args.country == "XX" };`,
    });
    expect(decideNow(engine, request({ amountCents: 5 }))).toMatchObject({ effect: "deny", evaluationError: true, policyIds: ["no.sanctioned"] });
    expect(decideNow(engine, request({ amountCents: 5, country: "FR" })).effect).toBe("allow");
  });

  it("integer overflow inside a forbid denies", () => {
    const engine = createCedarPolicyEngine({
      policies: `@id("all") permit(principal, action, resource);
        @id("cap") forbid(principal, action, resource) when { context.args.amountCents * 10000 > 5000000000 };`,
    });
    expect(decideNow(engine, request({ amountCents: Number.MAX_SAFE_INTEGER }))).toMatchObject({ effect: "deny", evaluationError: true, policyIds: ["cap"] });
  });

  it("NaN, ±Infinity, 7.5, 1e300, 2^53 and numeric strings deny with evaluationError or by default", () => {
    const engine = createCedarPolicyEngine({ policies: CEDAR_AMOUNT });
    for (const v of [NaN, Infinity, -Infinity, 7.5, 1e300, 2 ** 53, "50", "1e2"]) {
      const d = decideNow(engine, request({ amountCents: v }));
      expect(d.effect, String(v)).toBe("deny");
      expect((d as { evaluationError?: boolean }).evaluationError, String(v)).toBe(true);
    }
  });

  it("with a schema, arguments of the wrong type deny with evaluationError", () => {
    const schema = `entity Role in [Role]; entity Agent in [Role]; entity Tool;
      action issue_refund appliesTo { principal: [Agent], resource: [Tool],
        context: { args: { amountCents: Long }, sensitivity: Set<String>, onBehalfOf: { id: String, roles: Set<String> } } };`;
    const engine = createCedarPolicyEngine({ schema, policies: `@id("p") permit(principal, action == Action::"issue_refund", resource) when { context.args.amountCents <= 100 };` });
    expect(decideNow(engine, request({ amountCents: "5" }))).toMatchObject({ effect: "deny", evaluationError: true });
    expect(decideNow(engine, request({ amountCents: 5, extra: true }))).toMatchObject({ effect: "deny", evaluationError: true });
    expect(decideNow(engine, request({ amountCents: 5 })).effect).toBe("allow");
  });

  it("nesting past Cedar's recursion limit denies, and the engine still decides afterwards", () => {
    const engine = createCedarPolicyEngine({ policies: CEDAR_AMOUNT });
    for (const depth of [200, 100_000]) {
      const deep = JSON.parse(`${"[".repeat(depth)}${"]".repeat(depth)}`) as unknown;
      expect(decideNow(engine, request({ amountCents: 5, deep }))).toMatchObject({ effect: "deny", evaluationError: true });
      expect(decideNow(engine, request({ amountCents: 5 })).effect).toBe("allow");
    }
  });
});
