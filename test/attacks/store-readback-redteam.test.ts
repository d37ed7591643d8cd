/**
 * A red-team pass on WHAT EART READS BACK FROM ITS OWN STORES AND ACTS ON, other than sealed graph
 * state: the audit log, the effect ledger, the inbox index, the budget store. Commit 4e8edef sealed
 * the accepted answer (`answerSeal`) and the in-step recovery request (`requestSeal`) because one
 * link appended to the audit store (valid for the chain) named an approver or widened who may
 * answer. This file looks for every other read that GRANTS (authority, who may answer, whether a
 * tool runs, whom a thread is bound to) on what the store says, without a seal.
 *
 * Attacker: an insider who can append to / edit the audit store (MemoryAuditLog.append: a valid
 * link, `verify` still ok) or write rows of the ledger / budget tables (better-sqlite3 on eart's
 * SQLite file). They do NOT have the seal key and are not the eart process. (On SQLite and
 * PostgreSQL the seal key `eart_seal_keys` lives in the same database as the ledger and budget
 * tables: the ledger/budget tests assume an insider with row write access to those tables only.)
 *
 * Were holes, now closed (each a plain `it` with "Was a hole"):
 * - continueThread / unfinishedThreads / `eart continue` (graphs/app.ts inspect + continueThread,
 *   through resume-guard.ts recordedAnswers / recordedStoredAnswer): an unsealed `approval.decided`
 *   naming sam made the customer's own REFUSED approval (LangGraph keeps refused resume values) run
 *   as sam's: the $740 refund was paid. Same for a `null` continue by an approver (continuableFrom).
 *   Now only answers carrying eart's `answerSeal` (by the graph's key) are recorded answers
 *   (`escalation.decided` is sealed too).
 * - the tool node's crash recovery (nodes/governed-tool-node.ts `paused` / `cancelledOutcome`): a
 *   forged `tool.interrupted` or `tool.cancelled` (outcome not_run / failed) for an attempt that
 *   started and may have acted made a non-idempotent tool run again without a human: paid twice.
 *   Now both carry eart's `eventSeal`, and only sealed ones count.
 * - LangGraph server auth (server/agent.ts `answered`, used by `answerableBy`): an unsealed
 *   `approval.decided` naming another customer let them open (threads:read) the victim's thread.
 *   Now only sealed answers count.
 *
 * HOLES (it.fails, "HOLE (severity):" at each), stores eart trusts as it trusts its process (the
 * README's threat table says so; an insider with write access to them is detected by the signed
 * audit chain, not stopped):
 * - the ledger's entries (nodes/governed-tool-node.ts `replay`): a `succeeded` row the insider
 *   inserts answers an approved call that never ran, with content of their choosing, recorded as
 *   `tool.succeeded` (reconstructed) and `executed`.
 * - budget store counters (src/stores/sqlite/budget-store.ts, read by the budget guard): a counter
 *   rewritten to 0 gives a user their daily refund budget back.
 *
 * HELD (plain it): after a forged `approval.decided`, the customer's own `null` continue passes
 * the resume guard (continuableFrom) but the gate checks the stored answer as the customer's
 * (acceptedBefore needs `answerSeal`) and refuses it: nothing is paid.
 *
 * Refusing-direction reads (a forgery can only refuse, hide or delay; no test):
 * - resume-guard.ts assertNotAnswered / recordedAnswers: a forged answer event refuses later answers
 *   (`approval_already_answered`) while it matches the stored one: denial of service.
 * - resume-guard.ts assertContinuer: `identity.bound` (the FIRST one) restricts who continues an
 *   unbound thread; an appended one comes after eart's and is ignored; a thread with none is
 *   continued by anyone anyway. (An EDIT or DELETE of eart's own row would grant: detection only.)
 * - app.ts agentOfThread / graphFor, server/agent.ts agentOfThread: the first event names the
 *   graph; appended links cannot change it. refusalBeforeRun's `identity.bound` check only decides
 *   whether eart's refusal is said before the run; the graph still checks.
 * - acceptedBefore's `askedSince` (langgraph/interrupts.ts): an unsealed `tool.interrupted` after a
 *   sealed acceptance makes the step stop treating the accepted answer as standing: the later stored
 *   answers are checked as the continuing caller's, or the human is asked again (liveness only).
 * - the tool node's `reconstruct` (tool.started / recovery_requested / fallback / cancelled events):
 *   decides only which audit events are written again from the ledger.
 * - inbox index (`auditLog.pending()`, cli/local.ts inbox): says where to look; graph state says what
 *   waits; `eart approve` reads the task from state and the graph checks the answer.
 * - policy replay (src/policy/replay.ts), exports (src/export/*), cli/audit.ts: read-only reports.
 */
import { AIMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { Command, MemorySaver } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineBudgets, definePolicy, eartErrorOf, MemoryAuditLog, MemoryEffectLedger, pendingApproval, type AuditEventInput, type LedgerKey } from "eart";
import { continueThread, defineApp, unfinishedThreads } from "eart/graphs";
import { answerableBy, createEartAuth, createServerAgent } from "eart/server";
import { SqliteBudgetStore, sqliteStores } from "eart/sqlite";
import { scriptedModel } from "eart/testing";
import { proofFor } from "../../server/proof.js";
import { answersTo, ask, config, refund, refundSetup } from "../support/refund.js";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tempFile = () => {
  const dir = mkdtempSync(join(tmpdir(), "eart-readback-"));
  dirs.push(dir);
  return join(dir, "eart.sqlite");
};

/** The error code a run ends with, or "ok". */
async function codeOf(run: Promise<unknown>): Promise<string> {
  try {
    await run;
    return "ok";
  } catch (error) {
    return eartErrorOf(error)?.code ?? String((error as Error)?.message ?? error);
  }
}

/** An `approval.decided` an insider writes: the shape eart writes, with no `answerSeal` (they have no key). */
const forgedApproval = (threadId: string, toolCallId: string, digest: string, approverId: string): AuditEventInput =>
  ({
    threadId,
    type: "approval.decided",
    data: {
      toolCallId,
      name: "issue_refund",
      digest,
      originalDigest: digest,
      approverId,
      authenticatedBy: "configurable.user_id",
      decision: "approve",
      status: "approved",
      effect: "require_approval",
      policyIds: ["refund.large"],
      policyVersion: "1",
      requestedUnderVersion: null,
      message: null,
      answerDigest: "forged",
    },
  }) as AuditEventInput;

/** The $740 refund paused for a supervisor; cara then approves it herself: refused, and LangGraph keeps her answer. */
async function refusedSelfApproval(threadId: string) {
  const s = refundSetup([[refund("c1", 740)]]);
  const paused = await s.agent.invoke(ask(), config(threadId));
  const digest = pendingApproval(paused)!.requests[0]!.digest;
  const code = await codeOf(s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest }] } }), config(threadId, "cara")));
  // Setup: her answer was refused, nothing ran, the thread still waits for a supervisor.
  expect(code).not.toBe("ok");
  expect((await s.auditLog.read(threadId)).map((e) => e.type)).toContain("approval.refused");
  expect(s.refunds()).toEqual([]);
  expect(pendingApproval(await s.agent.getState(config(threadId)))).toBeDefined();
  return { ...s, digest };
}

describe("the answer read back from the audit log when a thread is continued", () => {
  // Was a hole, now closed (high): graphs/app.ts inspect() takes recordedAnswers(events) (graphs/resume-guard.ts) as
  // eart's own record of an accepted answer, and answererOf() names who gave it, from any event of
  // the right type: no `answerSeal` is checked. continueThread() then checks only that the stored
  // resume value matches those events (recordedStoredAnswer: call, decision type, digest) and runs
  // it with `user_id: answeredBy`. LangGraph keeps every resume value, refused ones too, so the
  // customer's own refused approval + one appended `approval.decided` naming sam = `eart pending`
  // shows "answered by sam, not yet acted on: eart continue", and `eart continue` (or a crash-recovery
  // loop over unfinishedThreads) pays the $740 refund as sam's approval. Same for
  // `tool.recovery_decided` / `escalation.decided`. Fix: inspect()/continueThread should count only
  // answers whose `answerSeal` holds (acceptedAnswerFields, as acceptedBefore does; escalation.decided
  // needs a seal too), and otherwise report the thread as waiting, not answered.
  it("a forged approval.decided naming sam does not make cara's refused self-approval run as sam's through unfinishedThreads + continueThread", async () => {
    const s = await refusedSelfApproval("cont-1");
    await s.auditLog.append(forgedApproval("cont-1", "c1", s.digest, "sam"));
    expect(await s.auditLog.verify("cont-1")).toMatchObject({ ok: true }); // a valid link: undetected by the chain
    const app = defineApp({ auditLog: s.auditLog, graphs: { "support-agent": s.agent } });
    const listed = await unfinishedThreads(app);
    await codeOf(continueThread(app, "cont-1"));
    // Safe: the thread is not listed as answered by sam, and nothing is paid.
    expect(s.refunds()).toEqual([]);
    expect(listed.filter((u) => u.answeredBy === "sam")).toEqual([]);
  });

  // Was a hole, now closed (medium): graphs/resume-guard.ts continuableFrom() lets a `null` continue of a waiting
  // thread through when recordedAnswers() (unsealed) match the stored resume value; the gate then
  // checks that stored value as the continuing caller's (acceptedBefore finds no seal). An approver
  // who continues (in process; "a continue acts on the answer eart recorded") makes cara's refused
  // approval their own: paid. Fix: continuableFrom should require the `answerSeal` of each answer.
  it("a forged approval.decided does not let an approver's null continue act on cara's refused self-approval", async () => {
    const s = await refusedSelfApproval("cont-2");
    await s.auditLog.append(forgedApproval("cont-2", "c1", s.digest, "sam"));
    const code = await codeOf(s.agent.invoke(null, config("cont-2", "sam")));
    expect(s.refunds()).toEqual([]);
    expect(code).toBe("thread_awaiting_approval");
  });

  // Held: the same forgery, continued by cara herself: the guard lets the continue through, but the
  // gate re-checks her stored answer as hers (no answerSeal: acceptedBefore names nobody) and refuses.
  it("a forged approval.decided does not make cara's own null continue pay her refused self-approval", async () => {
    const s = await refusedSelfApproval("cont-3");
    await s.auditLog.append(forgedApproval("cont-3", "c1", s.digest, "sam"));
    const code = await codeOf(s.agent.invoke(null, config("cont-3", "cara")));
    expect(code).not.toBe("ok");
    expect(s.refunds()).toEqual([]);
    expect((await s.auditLog.read("cont-3")).filter((e) => e.type === "approval.decided" && e.data.answerSeal !== undefined)).toEqual([]);
  });
});

/** The $50 refund (policy: allowed) with a non-idempotent tool that counts its calls. */
function countingSetup(ledger: MemoryEffectLedger) {
  const counter = { calls: 0 };
  const s = refundSetup([[refund("c1", 50)]], {
    agent: { ledger },
    tools: (t) => [
      t.all.find((x) => x.name === "lookup_order")!,
      tool(
        async ({ orderId, amount }: { orderId: string; amount: number }) => {
          counter.calls += 1;
          return `refunded ${amount} on ${orderId}`;
        },
        { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) },
      ),
    ],
  });
  return { ...s, counter };
}

/** A ledger whose finish fails while armed: the process died after the tool acted, before its outcome was recorded. */
class DiesBeforeFinish extends MemoryEffectLedger {
  armed = true;
  override async finish(key: LedgerKey, outcome: Parameters<MemoryEffectLedger["finish"]>[1], now?: Date): Promise<boolean> {
    if (this.armed) throw new Error("the process died before the outcome was recorded");
    return super.finish(key, outcome, now);
  }
}

/** The refund ran once; its outcome was never recorded (the ledger entry stays `started`). */
async function actedThenDied(threadId: string) {
  const ledger = new DiesBeforeFinish();
  const s = countingSetup(ledger);
  expect(await codeOf(s.agent.invoke(ask(), config(threadId)))).toBe("tool_record_incomplete");
  expect(s.counter.calls).toBe(1);
  ledger.armed = false;
  const digest = (await s.auditLog.read(threadId)).find((e) => e.type === "tool.started")!.data.digest as string;
  return { ...s, digest };
}

describe("the tool node's crash recovery: what the audit log says an attempt did", () => {
  it("baseline: continued, an attempt that may have acted goes to a human (outcome_unknown), the tool is not called again", async () => {
    const s = await actedThenDied("tn-0");
    await s.agent.invoke(null, config("tn-0"));
    expect(s.counter.calls).toBe(1);
    expect((await s.auditLog.read("tn-0")).filter((e) => e.type === "tool.recovery_requested").map((e) => e.data.reason)).toEqual(["outcome_unknown"]);
  });

  // Was a hole, now closed (high): nodes/governed-tool-node.ts, in the governed call after `ledger.begin` finds a
  // `started` entry: `paused = eventsOfCall().some(tool.interrupted at this attempt)` and
  // `cancelledOutcome()` (tool.cancelled's `outcome`) are read from the audit log unsealed, and
  // make `mayHaveActed` false: a non-idempotent tool whose attempt acted is claimed again
  // (`ledger.retry`) and run without a human. One appended link = the refund paid twice. Fix: seal
  // `tool.interrupted` and `tool.cancelled` (Sealer.event over call, digest, attempt, try, outcome)
  // when the tool node writes them and read back only sealed ones (or record the outcome in the
  // ledger entry itself, which is written in the same step).
  for (const [name, forged] of [
    ["tool.interrupted", (digest: string) => ({ type: "tool.interrupted", data: { toolCallId: "c1", name: "issue_refund", digest, attempt: 1 } })],
    ["tool.cancelled (outcome not_run)", (digest: string) => ({ type: "tool.cancelled", data: { toolCallId: "c1", name: "issue_refund", digest, attempt: 1, outcome: "not_run", reason: "cancelled" } })],
    ["tool.cancelled (outcome failed)", (digest: string) => ({ type: "tool.cancelled", data: { toolCallId: "c1", name: "issue_refund", digest, attempt: 1, outcome: "failed", reason: "cancelled" } })],
  ] as const) {
    it(`a forged ${name} for an attempt that acted does not make the non-idempotent refund run again without a human`, async () => {
      const threadId = `tn-${name.replace(/\W/g, "")}`;
      const s = await actedThenDied(threadId);
      await s.auditLog.append({ threadId, ...forged(s.digest) } as AuditEventInput);
      expect(await s.auditLog.verify(threadId)).toMatchObject({ ok: true });
      await codeOf(s.agent.invoke(null, config(threadId)));
      expect(s.counter.calls).toBe(1);
      expect((await s.auditLog.read(threadId)).filter((e) => e.type === "tool.recovery_requested").map((e) => e.data.reason)).toEqual(["outcome_unknown"]);
    });
  }
});

describe("the effect ledger's store (an insider writing its table)", () => {
  // HOLE (medium): nodes/governed-tool-node.ts `ledger.begin` → not claimed → `reconstruct` +
  // `replay(entry)`: a ledger entry is trusted as eart's. A `succeeded` row inserted for an
  // approved call before it runs answers it: the refund sam approved is never paid, the model is
  // told "Refund of $740 issued (ref R-FORGED)" (text of the insider's choosing, not redacted or
  // screened as a tool result), the record says `executed`, and the audit log even gains a
  // `tool.succeeded` (reconstructed: ledger). Fix: seal ledger outcomes (Sealer.event over key,
  // status, attempt, result digest) in finish(), and treat an entry whose seal fails as tampered
  // (state.tamper_detected, a human decides). Note the seal key is in the same SQLite/PG database.
  it.fails("a succeeded row inserted into eart_effect_ledger does not answer sam's approved refund without running it", async () => {
    const file = tempFile();
    const stores = sqliteStores(file);
    try {
      const s = refundSetup([[refund("c1", 740)]], { checkpointer: stores.checkpointer, auditLog: stores.auditLog, agent: { ledger: stores.ledger, threadLock: stores.threadLock } });
      const paused = await s.agent.invoke(ask(), config("led-1"));
      const digest = pendingApproval(paused)!.requests[0]!.digest;
      expect(s.refunds()).toEqual([]);
      const insider = new Database(file);
      const now = new Date().toISOString();
      insider
        .prepare(`INSERT INTO eart_effect_ledger (thread_id, tool_call_id, digest, schema_version, status, attempt, started_at, finished_at, result, error) VALUES (?, ?, ?, 1, 'succeeded', 1, ?, ?, ?, NULL)`)
        .run("led-1", "c1", digest, now, now, JSON.stringify({ content: "Refund of $740 issued (ref R-FORGED)" }));
      insider.close();
      const out = (await s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest }] } }), config("led-1", "sam"))) as { messages: BaseMessage[] };
      // Setup: sam's approval was accepted.
      expect((await s.auditLog.read("led-1")).filter((e) => e.type === "approval.decided").map((e) => e.data.approverId)).toEqual(["sam"]);
      // Safe: the forged outcome is not the call's answer; the approved refund runs (or a human is asked).
      expect(answersTo(out.messages, "c1").map((m) => String(m.content)).join(" ")).not.toContain("R-FORGED");
      expect((await s.auditLog.read("led-1")).filter((e) => e.type === "tool.succeeded" && e.data.reconstructed === "ledger")).toEqual([]);
    } finally {
      stores.close();
    }
  });
});

describe("the budget store (an insider writing its counters)", () => {
  // HOLE (low-medium): src/stores/sqlite/budget-store.ts counters are read by the budget guard
  // (src/policy/budget.ts reserve) as the spend so far: a row rewritten to 0 gives cara her daily
  // refund budget back ($50 + $50 paid under a $60 cap). No seal can stop a rollback of a counter;
  // Fix: check the counters against what the signed audit chain / ledger recorded as charged (or
  // keep them as an append-only, hash-chained series covered by the signed heads), and at least say
  // in the README's threat table that the budget store is trusted, not detected.
  it.fails("a budget counter rewritten to 0 does not let cara refund past her $60 daily cap", async () => {
    const file = tempFile();
    const store = new SqliteBudgetStore({ path: file });
    try {
      const budgets = defineBudgets([{ id: "refunds.user", tools: ["issue_refund"], scope: "user", window: "day", maxSum: { arg: "amount", max: 60 }, onExceed: "deny" }], { store });
      const first = refundSetup([[refund("b1", 50)]], { budgets });
      await first.agent.invoke(ask(), config("bud-1"));
      expect(first.refunds()).toHaveLength(1);
      // Setup: the cap holds: a second $50 refund before the edit is refused.
      const control = refundSetup([[refund("b0", 50, "1043")]], { budgets });
      await codeOf(control.agent.invoke(ask(), config("bud-0")));
      expect(control.refunds()).toEqual([]);
      const insider = new Database(file);
      expect((insider.prepare(`SELECT value FROM eart_budget_counters`).all() as { value: number }[]).map((r) => r.value)).toContain(50);
      insider.prepare(`UPDATE eart_budget_counters SET value = 0`).run();
      insider.close();
      const second = refundSetup([[refund("b2", 50, "1043")]], { budgets });
      await codeOf(second.agent.invoke(ask(), config("bud-2")));
      expect(second.refunds()).toEqual([]);
    } finally {
      store.close();
    }
  });
});

describe("LangGraph server auth: who may open a thread they do not own", () => {
  const identities = {
    roles: {
      customer: { description: "A customer", tools: ["issue_refund"] },
      supervisor: { description: "Approves refunds", tools: [] },
    },
    agents: [{ id: "support-agent", roles: ["support"], tools: ["issue_refund"] }],
    users: [
      { id: "cara", roles: ["customer"] },
      { id: "omar", roles: ["customer"] },
      { id: "sam", roles: ["supervisor"] },
    ],
  };

  // Was a hole, now closed (medium, confidentiality): server/agent.ts answerableBy() → answered(events, userId): any
  // `approval.decided` / `tool.recovery_decided` / `escalation.decided` naming the user (no seal)
  // makes them an answerer of the thread, and server/auth.ts mayAnswer() then answers `threads:read`
  // (and runs' answer-only path) with no filter: one appended link lets omar, another customer, read
  // cara's conversation (address, order, card last digits in tool results) while it waits and after
  // it ends. Fix: count only answers whose `answerSeal` holds (escalation.decided needs one too).
  it("a forged approval.decided naming omar does not let omar open cara's thread", async () => {
    const auditLog = new MemoryAuditLog();
    const issueRefund = tool(async () => "refunded", { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) });
    const model = scriptedModel((messages: BaseMessage[]) =>
      messages.some((m) => AIMessage.isInstance(m)) ? new AIMessage("Done.") : new AIMessage({ content: "", tool_calls: [{ id: "c1", name: "issue_refund", args: { orderId: "1042", amount: 740 } }] }),
    );
    const graph = createServerAgent({
      agentId: "support-agent",
      model,
      tools: [issueRefund],
      identities,
      policy: definePolicy({ name: "p", rules: [{ id: "refund.supervisor", tools: ["issue_refund"], effect: "require_approval", approverRoles: ["supervisor"] }] }),
      ledger: new MemoryEffectLedger(),
      threadLock: false,
      auditLog,
    });
    (graph as { checkpointer?: unknown }).checkpointer = new MemorySaver();
    const runId = crypto.randomUUID();
    await graph.invoke(
      { messages: [{ role: "user", content: "Please refund order 1042, $740. I live at 12 Elm St." }] },
      { configurable: { thread_id: "srv-1", langgraph_auth_user: { identity: "cara", permissions: ["customer"], eart_proof: proofFor("cara", runId) } }, runId },
    );
    // Setup: the thread waits for a supervisor; omar may not open it.
    expect((await auditLog.read("srv-1")).map((e) => e.type)).toContain("approval.requested");
    expect(await answerableBy("srv-1", "sam")).toBe(true);
    expect(await answerableBy("srv-1", "omar")).toBe(false);
    const digest = (await auditLog.read("srv-1")).find((e) => e.type === "policy.decided")!.data.digest as string;
    await auditLog.append(forgedApproval("srv-1", "c1", digest, "omar"));
    const auth = createEartAuth({ tokens: { "token-of-omar-customer": "omar" } });
    const read = (auth as unknown as { "~handlerCache": { callbacks: Record<string, (r: unknown) => Promise<unknown>> } })["~handlerCache"].callbacks["threads:read"]!;
    expect(await read({ user: { identity: "omar", permissions: ["customer"] }, value: { thread_id: "srv-1" } })).toEqual({ owner: "omar" });
    expect(await answerableBy("srv-1", "omar")).toBe(false);
  });
});
