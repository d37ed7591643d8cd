/**
 * Red-team pass over d039f2e: a tool that asks its own question (interrupt() inside the tool) in
 * the createAgent tool step that ran it on a human's answer (an approval, an in-step recovery
 * retry). graphs/resume-guard.ts now skips `assertNotAnswered` while the pending interrupt is not
 * one of eart's, and policy-gate `decidePending` / nodes/tool-recovery.ts read the stored answers
 * only through the accepted one when `acceptedBefore(...).askedSince` (a `tool.interrupted` for one
 * of the request's calls after the sealed acceptance).
 *
 * Attacked (each a test; each first asserts the pause really happened):
 * - the customer answers the tool's question with an approval-shaped edit ($4,000) / a recovery-
 *   shaped mark_done; omar (another customer) and fay (no role) do the same;
 * - an allowed sibling call of the approved call asks its own question (same step);
 * - two approved calls whose tools both ask a question (same step);
 * - the customer's refused self-approval stored before sam's (refusal mode "interrupt"), then a tool question;
 * - a resume keyed to eart's own (old) interrupt id while the tool's question waits;
 * - a continue (`invoke(null)`) while the tool's question waits, by cara and by omar;
 * - the crash case: the run that answers the tool's question is cancelled inside the tool, then
 *   sue's reject / a continue;
 * - a step stopped after sam's approval and before the tool's question (answer-stands), with a
 *   forged `tool.interrupted` appended to the audit store (no seal key): sue's reject, a continue;
 * - a forged `tool.interrupted` after a refund that acted and was cancelled (outcome unknown);
 * - the prebuilt graph (createGovernedAgent) with a tool that asks after an approval.
 *
 * Held: the gate never acts on anything but the sealed accepted answer (sam's, as sam, recorded
 * once): an approval-shaped edit, a recovery-shaped answer or a keyed answer given to the tool's
 * question runs nothing eart did not allow, at nothing but the approved amount; a resume keyed
 * to eart's old interrupt id is refused (approval_resume_invalid) and the thread still waits on the
 * tool; omar's continue of cara's thread is refused (identity_immutable); a cancelled
 * run that answered the tool's question leaves sue's reject unable to replace sam's approval (the
 * refund, outcome unknown, goes to a human); with the forged `tool.interrupted` the guard still
 * refuses sue's reject while eart's request is pending; the prebuilt graph gives the tool its answer.
 *
 * Were holes, now closed (each a plain `it` with "Was a hole"): a refused answer stored before
 * the accepted one with the same digest shifted the count by one, and a continue (`invoke(null)`)
 * while the tool's question waits handed the tool the leftover copy of sam's approval (or retry)
 * LangGraph keeps as the checkpoint's null-task resume (the step now reads through the accepted
 * answer and the copies of it right after it); a forged `tool.interrupted` made a refund whose
 * outcome is unknown run again without a human (the event now carries eart's `eventSeal`, and only
 * sealed ones count).
 *
 * HOLES (`it.fails`, comment "HOLE (severity):"), both liveness only, as before d039f2e: the
 * step's tools keep their questions unanswered when the step runs more than the message's one call
 * (an allowed sibling that asks, two approved calls that both ask): the calls of one step share
 * its interrupts in the order they ask, and a call replayed from the ledger asks no more, so an
 * answer would go to the wrong tool; the step reads every answer instead (none reaches a tool).
 */
import { ToolMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { Command, interrupt, MemorySaver } from "@langchain/langgraph";
import { createAgent } from "langchain";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { eartErrorOf, MemoryAuditLog, MemoryEffectLedger, pendingApproval, pendingRecovery, type AuditLog } from "eart";
import { governanceMiddleware, guardAgent, type GovernanceMiddlewareOptions } from "eart/middleware";
import { refundPolicy } from "../../examples/refund/policy.js";
import { ask, config, registry, turnsModel, type Call } from "../support/refund.js";

type Args = { orderId: string; amount?: number };
type Behaviour = (n: number, args: Args, cfg: unknown) => unknown;

const refundCall = (id: string, amount: number, orderId = "1042"): Call => ({ id, name: "issue_refund", args: { orderId, amount } });
const lookupCall = (id: string, orderId = "1042"): Call => ({ id, name: "lookup_order", args: { orderId } });

/** createAgent + governanceMiddleware + guardAgent; issue_refund and lookup_order do what `refund` / `lookup` say (n: 1-based call count). */
function setup(calls: Call[], b: { refund?: Behaviour; lookup?: Behaviour } = {}, opts: { governance?: Partial<GovernanceMiddlewareOptions>; auditLog?: AuditLog } = {}) {
  const counter = { refund: 0, lookup: 0, effects: [] as string[], heard: [] as [string, unknown][] };
  const issueRefund = tool(
    async (args: { orderId: string; amount: number }, cfg) => {
      counter.refund += 1;
      if (b.refund) return b.refund(counter.refund, args, cfg) as string;
      counter.effects.push(`${args.orderId}:${args.amount}`);
      return `refunded ${args.orderId}`;
    },
    { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) },
  );
  const lookupOrder = tool(
    async (args: { orderId: string }, cfg) => {
      counter.lookup += 1;
      if (b.lookup) return b.lookup(counter.lookup, args, cfg) as string;
      return `order ${args.orderId}`;
    },
    { name: "lookup_order", description: "Look up an order", schema: z.object({ orderId: z.string() }) },
  );
  const auditLog = opts.auditLog ?? new MemoryAuditLog();
  const governance = governanceMiddleware({ identities: registry, policy: refundPolicy, auditLog, ledger: new MemoryEffectLedger(), recoveryRoles: ["supervisor"], ...opts.governance });
  const agent = guardAgent(createAgent({ model: turnsModel([calls]), tools: [lookupOrder, issueRefund], checkpointer: new MemorySaver(), middleware: [governance] }), governance);
  return { agent, auditLog, counter };
}

/** A refund tool that asks which card, then acts with the answer. */
const asksCard =
  (counter: () => ReturnType<typeof setup>["counter"]): Behaviour =>
  (_n, args) => {
    const answer = interrupt({ question: `Which card should the refund of order ${args.orderId} go to?` });
    counter().heard.push([args.orderId, answer]);
    counter().effects.push(`${args.orderId}:${args.amount}:${JSON.stringify(answer)}`);
    return `refunded ${args.orderId} to ${JSON.stringify(answer)}`;
  };

type Graph = { getState: (c: unknown) => Promise<{ values: Record<string, unknown> & { messages: BaseMessage[] }; next: string[]; tasks: { interrupts: { id?: string; value: unknown }[] }[] }> };
const graphOf = (agent: { graph: unknown }) => agent.graph as Graph;
const interruptsOf = async (agent: { graph: unknown }, threadId: string) => (await graphOf(agent).getState(config(threadId))).tasks.flatMap((t) => t.interrupts);
const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: { message?: string }) => eartErrorOf(e)?.code ?? `not eart's: ${String(e?.message ?? e).slice(0, 300)}`);
const resume = (value: unknown) => new Command({ resume: value });
const approve = () => resume({ decisions: [{ type: "approve" }] });
const shown = (out: unknown) => ((out as { __interrupt__?: { value: unknown }[] }).__interrupt__ ?? []).map((i) => i.value);
const types = async (log: AuditLog, threadId: string, type: string) => (await log.read(threadId)).filter((e) => e.type === type);
const decidedBy = async (log: AuditLog, threadId: string) => (await types(log, threadId, "approval.decided")).map((e) => [e.data.toolCallId, e.data.approverId, e.data.decision]);
const toolAnswers = (messages: BaseMessage[]) => messages.filter((m): m is ToolMessage => ToolMessage.isInstance(m)).map((m) => [m.tool_call_id, String(m.content)]);

/** Pauses `threadId` on the $740 refund's approval, and has sam approve: the refund tool then asks its question. */
async function approvedThenAsked(s: ReturnType<typeof setup>, threadId: string, question = "Which card should the refund of order 1042 go to?") {
  const paused = await s.agent.invoke(ask("Refund order 1042, $740."), config(threadId));
  expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
  const asked = await s.agent.invoke(approve(), config(threadId, "sam"));
  expect(shown(asked)).toEqual([{ question }]);
  expect(pendingApproval(asked)).toBeUndefined();
  expect(await decidedBy(s.auditLog, threadId)).toEqual([["c1", "sam", "approve"]]);
  expect((await types(s.auditLog, threadId, "tool.interrupted")).map((e) => e.data.toolCallId)).toEqual(["c1"]);
}

// ─────────────────────────────────────────────────────────────────────────────────────────────

/**
 * The $60 refund of order 1043 fails once (a gateway 502, outcome unknown), sam retries it in the
 * call's own tool step, and the retried tool asks its own question ("Which card?"), which waits.
 */
async function retriedThenAsked(threadId: string) {
  const heard: unknown[] = [];
  const s = setup([refundCall("c1", 60, "1043")], {
    refund: (n) => {
      if (n === 1) throw new Error("gateway 502");
      const answer = interrupt({ question: "Which card?" });
      heard.push(answer);
      return `refunded to ${JSON.stringify(answer)}`;
    },
  });
  const paused = await s.agent.invoke(ask("Refund order 1043, $60."), config(threadId));
  const digest = pendingRecovery(paused)!.requests[0]!.digest;
  const asked = await s.agent.invoke(resume({ decisions: [{ toolCallId: "c1", type: "retry", digest, attempt: 1 }] }), config(threadId, "sam"));
  expect(shown(asked)).toEqual([{ question: "Which card?" }]);
  return { s, heard, digest };
}

describe("answers to the tool's question are never eart's", () => {
  it("cara answers the tool's question with an approval-shaped edit to $4,000: the tool hears it, the refund runs at $740 only, sam's approval recorded once, nothing refused", async () => {
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740)], { refund: asksCard(() => s.counter) });
    await approvedThenAsked(s, "tq-edit");
    const edit = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 4000 } } }] };
    const out = await s.agent.invoke(resume(edit), config("tq-edit", "cara"));
    expect(shown(out)).toEqual([]);
    expect(s.counter.heard).toEqual([["1042", edit]]);
    expect(s.counter.effects.every((e) => e.startsWith("1042:740:"))).toBe(true);
    expect(s.counter.effects).toHaveLength(1);
    expect(await decidedBy(s.auditLog, "tq-edit")).toEqual([["c1", "sam", "approve"]]);
    expect(await types(s.auditLog, "tq-edit", "approval.refused")).toEqual([]);
    expect(await s.auditLog.verify("tq-edit")).toMatchObject({ ok: true });
  });

  it("omar (another customer) and fay (no approver role) answering with a keyed approve / reject change no eart decision: sam's approval stands; the amount stays $740", async () => {
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740)], { refund: asksCard(() => s.counter) });
    await approvedThenAsked(s, "tq-omar");
    const digest = (await types(s.auditLog, "tq-omar", "approval.requested"))[0]!.data.requests as { digest: string }[];
    const reject = { decisions: [{ toolCallId: "c1", type: "reject", digest: digest[0]!.digest, message: "no" }] };
    // fay's reject reaches the tool as its answer (eart does not govern a tool's own question), never the gate.
    await s.agent.invoke(resume(reject), config("tq-omar", "fay"));
    expect(s.counter.heard).toEqual([["1042", reject]]);
    expect(await decidedBy(s.auditLog, "tq-omar")).toEqual([["c1", "sam", "approve"]]);
    expect(s.counter.effects).toEqual([`1042:740:${JSON.stringify(reject)}`]);
    // The thread is finished: omar's approve is refused by the guard, runs nothing.
    expect(await codeOf(s.agent.invoke(approve(), config("tq-omar", "omar")))).toMatch(/^(thread_not_paused|approval_)/);
    expect(s.counter.refund).toBe(2);
  });

  it("after sam's retry the tool asks; cara's recovery-shaped mark_done answers the tool only: sam's retry recorded once, nothing settled as cara's", async () => {
    const { s, heard, digest } = await retriedThenAsked("tq-rec");
    const markDone = { decisions: [{ toolCallId: "c1", type: "mark_done", digest, attempt: 1, result: { status: "refunded" } }] };
    const out = await s.agent.invoke(resume(markDone), config("tq-rec", "cara"));
    expect(shown(out)).toEqual([]);
    expect(heard).toEqual([markDone]);
    expect(s.counter.refund).toBe(3);
    expect((await types(s.auditLog, "tq-rec", "tool.recovery_decided")).map((e) => [e.data.resolverId, e.data.decision])).toEqual([["sam", "retry"]]);
    expect(await types(s.auditLog, "tq-rec", "tool.recovery_refused")).toEqual([]);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("several tools in the approval step", () => {
  // HOLE (medium, liveness; no unauthorised effect; as before d039f2e): the step that takes sam's approval runs every
  // call of the message the answer lets run (middleware/governance.ts runCalls), including an
  // allowed sibling (lookup_order, c2) that never was part of the approval request. When that
  // sibling asks its own question, `acceptedBefore(...).askedSince` (langgraph/interrupts.ts) only
  // counts `tool.interrupted` events of the request's calls (`waiting`, i.e. c1): c2's does not
  // count, so decidePending (guards/policy-gate.ts) reads EVERY stored answer again, takes cara's
  // answer to the tool's question as a second answer to the approval, records it as
  // `approval.refused` (approval_already_answered), and c2's interrupt() finds nothing left and asks
  // again. Every answer is eaten the same way: the thread never finishes. The guard lets the answer
  // through (pending interrupt not eart's), so this is exactly the stuck thread d039f2e meant to fix.
  it.fails("an allowed sibling (lookup_order) that asks its own question after sam's approval gets the answer; nothing is refused", async () => {
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740), lookupCall("c2")], {
      lookup: (_n, args) => {
        const answer = interrupt({ question: "Which address is the order at?" });
        s.counter.heard.push([args.orderId, answer]);
        return `order ${args.orderId} at ${String(answer)}`;
      },
    });
    const paused = await s.agent.invoke(ask("Refund order 1042, $740, and look it up."), config("tq-sib"));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const asked = await s.agent.invoke(approve(), config("tq-sib", "sam"));
    expect(shown(asked)).toEqual([{ question: "Which address is the order at?" }]);
    expect(s.counter.effects).toEqual(["1042:740"]);
    await s.agent.invoke(resume("12 Main St"), config("tq-sib", "cara")).catch((e: unknown) => e);
    // Asked again, answered again: the same.
    const out = await s.agent.invoke(resume("12 Main St"), config("tq-sib", "cara")).catch((e: unknown) => e);
    // Setup held: sam's approval stands and the refund ran once, whatever happens to the answer.
    expect(s.counter.effects).toEqual(["1042:740"]);
    expect(await decidedBy(s.auditLog, "tq-sib")).toEqual([["c1", "sam", "approve"]]);
    expect(s.counter.heard.slice(0, 1)).toEqual([["1042", "12 Main St"]]);
    expect(shown(out)).toEqual([]);
    expect(await types(s.auditLog, "tq-sib", "approval.refused")).toEqual([]);
  });

  // HOLE (medium, liveness only now): two approved refunds (c1 order 1042, c2 order
  // 1043) whose tools both ask "which card". Both run in the ONE task of the first waiting call
  // (runCalls, Promise.all), and LangGraph matches a task's interrupt() calls to stored answers by
  // position. The first answer goes to c1, which finishes (ledger: succeeded); c2 asks. On the next
  // run the ledger replays c1 without calling its tool, so c1's interrupt() is no longer called and
  // every later position shifts by one: c2's interrupt() reads the answer given to c1's question
  // ("visa-1042"), and the answer given to c2's own question is never read. c2 refunds to the card
  // chosen for the other order. Now a step that runs more than the message's one call reads every
  // answer (as before d039f2e): no tool acts on another's answer, and the questions wait unanswered
  // (the test below).
  it.fails("two approved refunds whose tools both ask: each tool gets the answer to its own question", async () => {
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740, "1042"), refundCall("c2", 750, "1043")], { refund: asksCard(() => s.counter) });
    const paused = await s.agent.invoke(ask("Refund 1042 and 1043."), config("tq-two"));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1", "c2"]);
    const first = await s.agent.invoke(resume({ decisions: [{ type: "approve" }, { type: "approve" }] }), config("tq-two", "sam"));
    const q1 = shown(first);
    expect(q1).toHaveLength(1);
    const order1 = String((q1[0] as { question: string }).question).match(/order (\d+)/)![1]!;
    const second = await s.agent.invoke(resume(`card-for-${order1}`), config("tq-two", "cara"));
    const q2 = shown(second);
    expect(q2).toHaveLength(1);
    const order2 = String((q2[0] as { question: string }).question).match(/order (\d+)/)![1]!;
    expect(order2).not.toBe(order1);
    const done = await s.agent.invoke(resume(`card-for-${order2}`), config("tq-two", "cara"));
    expect(shown(done)).toEqual([]);
    expect((await decidedBy(s.auditLog, "tq-two")).map((d) => d[1])).toEqual(["sam", "sam"]);
    // Each tool acted once, with the card chosen for its own order.
    const heardFor = (order: string) => s.counter.heard.filter(([o]) => o === order).map(([, a]) => a);
    expect(heardFor(order1).at(-1)).toBe(`card-for-${order1}`);
    expect(heardFor(order2).at(-1)).toBe(`card-for-${order2}`);
  });

  it("two approved refunds whose tools both ask: no tool acts on the answer given to the other's question", async () => {
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740, "1042"), refundCall("c2", 750, "1043")], { refund: asksCard(() => s.counter) });
    const paused = await s.agent.invoke(ask("Refund 1042 and 1043."), config("tq-two-safe"));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1", "c2"]);
    const first = await s.agent.invoke(resume({ decisions: [{ type: "approve" }, { type: "approve" }] }), config("tq-two-safe", "sam"));
    expect(shown(first)).toHaveLength(1);
    // cara answers each question shown with the card for the order it names.
    let last: unknown = first;
    for (let i = 0; i < 4 && shown(last).length > 0; i++) {
      const order = String((shown(last)[0] as { question: string }).question).match(/order (\d+)/)![1]!;
      last = await s.agent.invoke(resume(`card-for-${order}`), config("tq-two-safe", "cara")).catch((e: unknown) => e);
    }
    // Whatever a tool acted on was the card given for its own order, never for the other one.
    for (const [order, answer] of s.counter.heard) expect(String(answer), order).toBe(`card-for-${order}`);
    // The thread still waits on a tool's question (the known liveness limit above), or both acted.
    expect(shown(last).length > 0 || s.counter.heard.length === 2).toBe(true);
    expect((await decidedBy(s.auditLog, "tq-two-safe")).map((d) => d[1])).toEqual(["sam", "sam"]);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("refused answers stored before the accepted one (refusal mode 'interrupt')", () => {
  // Was a hole (low, what a tool is told): in refusal mode "interrupt" (eart's server graphs) a refused
  // answer stays in the task's stored answers (the gate pauses again after it). cara's own
  // `{ decisions: [{ type: "approve" }] }` is refused (self-approval); sam then sends the same
  // payload and is accepted. When the tool asks its question and cara answers, decidePending finds
  // the accepted answer with `stored.findIndex(digest === accepted.answerDigest)`: the FIRST stored
  // answer with that digest is cara's refused one (index 0), so the gate reads one answer where it
  // read two before; the tool's interrupt() then reads sam's approval payload as its answer, and
  // the answer actually given to the tool's question is never read.
  it("after cara's refused self-approval and sam's identical approval, the tool hears the answer given to its question", async () => {
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740)], { refund: asksCard(() => s.counter) });
    const mode = { eart_refusals: "interrupt" };
    const paused = await s.agent.invoke(ask("Refund order 1042, $740."), config("tq-refused", "cara", mode));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const refused = await s.agent.invoke(approve(), config("tq-refused", "cara", mode)).catch((e: unknown) => e);
    expect((await types(s.auditLog, "tq-refused", "approval.refused")).map((e) => e.data.code)).toEqual(["approval_self_approval"]);
    expect(pendingApproval(refused as never) ?? pendingApproval((await graphOf(s.agent).getState(config("tq-refused"))) as never)).toBeDefined();
    const asked = await s.agent.invoke(approve(), config("tq-refused", "sam", mode));
    expect(shown(asked)).toEqual([{ question: "Which card should the refund of order 1042 go to?" }]);
    expect(await decidedBy(s.auditLog, "tq-refused")).toEqual([["c1", "sam", "approve"]]);
    await s.agent.invoke(resume("the visa"), config("tq-refused", "cara", mode));
    expect(await decidedBy(s.auditLog, "tq-refused")).toEqual([["c1", "sam", "approve"]]);
    expect(s.counter.heard).toEqual([["1042", "the visa"]]);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("how the tool's question is answered", () => {
  it("a resume keyed to eart's own (old) interrupt id while the tool's question waits is refused; the tool still waits; sam's approval stands", async () => {
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740)], { refund: asksCard(() => s.counter) });
    await s.agent.invoke(ask("Refund order 1042, $740."), config("tq-keyed"));
    const eartId = (await interruptsOf(s.agent, "tq-keyed"))[0]!.id!;
    expect(eartId).toBeTruthy();
    await s.agent.invoke(approve(), config("tq-keyed", "sam"));
    const toolId = (await interruptsOf(s.agent, "tq-keyed"))[0]!.id!;
    expect((await interruptsOf(s.agent, "tq-keyed")).map((i) => i.value)).toEqual([{ question: "Which card should the refund of order 1042 go to?" }]);
    expect(toolId).not.toBe(eartId);
    const edit = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 4000 } } }] };
    expect(await codeOf(s.agent.invoke(resume({ [eartId]: edit }), config("tq-keyed", "sue")))).toBe("approval_resume_invalid");
    expect(s.counter.heard).toEqual([]);
    expect((await interruptsOf(s.agent, "tq-keyed")).map((i) => i.id)).toEqual([toolId]);
    // Keyed to the tool's own id: the tool gets it.
    await s.agent.invoke(resume({ [toolId]: "the visa" }), config("tq-keyed", "cara"));
    expect(s.counter.heard).toEqual([["1042", "the visa"]]);
    expect(await decidedBy(s.auditLog, "tq-keyed")).toEqual([["c1", "sam", "approve"]]);
    expect(s.counter.effects).toEqual(['1042:740:"the visa"']);
  });

  // Was a hole (medium, a tool acted on an answer nobody gave to its question): while the tool's question
  // waits, the thread's checkpoint still holds sam's approval as LangGraph's plain (null-task)
  // resume value of the run that paused (LangGraph keeps the write in the checkpoint; consuming it
  // in the run only removed it in memory). A continue (`invoke(null)`, allowed to the customer the
  // thread acts for: the pending interrupt is not eart's, so `continuableFrom` is not asked)
  // re-runs the step with it: `storedAnswers()` counts it, decidePending reads only through the
  // accepted answer (the task's first, since `askedSince`), and the tool's interrupt() is handed the
  // leftover copy of sam's approval payload as its answer. The tool acts (here: refunds to the
  // "card" `{ decisions: [{ type: "approve" }] }`) without its question being answered; a tool
  // asking "confirm?" is confirmed by the customer's continue. Before d039f2e the gate read every
  // stored answer and the tool asked again.
  it("a continue (invoke(null)) while the tool's question waits does not answer it: the tool asks again and acts on nothing", async () => {
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740)], { refund: asksCard(() => s.counter) });
    await approvedThenAsked(s, "tq-null");
    // omar (another customer) may not continue cara's thread at all.
    expect(await codeOf(s.agent.invoke(null as never, config("tq-null", "omar")))).toMatch(/^(thread_|identity_|approval_)/);
    expect(s.counter.heard).toEqual([]);
    const again = await s.agent.invoke(null as never, config("tq-null", "cara")).catch((e: unknown) => e);
    // Setup: sam's approval stands (recorded once).
    expect(await decidedBy(s.auditLog, "tq-null")).toEqual([["c1", "sam", "approve"]]);
    expect(s.counter.heard).toEqual([]);
    expect(s.counter.effects).toEqual([]);
    expect(shown(again)).toEqual([{ question: "Which card should the refund of order 1042 go to?" }]);
  });

  // Was a hole (medium): the same on the recovery path (nodes/tool-recovery.ts): after sam's retry the
  // tool asked; cara's continue handed the tool sam's leftover retry payload as its answer.
  it("after sam's retry, a continue while the tool's question waits does not answer it", async () => {
    const { s, heard } = await retriedThenAsked("tq-null-rec");
    const again = await s.agent.invoke(null as never, config("tq-null-rec", "cara")).catch((e: unknown) => e);
    expect((await types(s.auditLog, "tq-null-rec", "tool.recovery_decided")).map((e) => [e.data.resolverId, e.data.decision])).toEqual([["sam", "retry"]]);
    expect(heard).toEqual([]);
    expect(shown(again)).toEqual([{ question: "Which card?" }]);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("steps that stopped", () => {
  it("the run answering the tool's question is cancelled inside the tool after it acted: sue's reject cannot replace sam's approval; the refund (outcome unknown) goes to a human, never runs blindly", async () => {
    const controller = new AbortController();
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740)], {
      refund: (n, args) => {
        const answer = interrupt({ question: "Which card should the refund of order 1042 go to?" });
        s.counter.effects.push(`${args.orderId}:${args.amount}:${String(answer)}`);
        if (n === 2) {
          controller.abort(new Error("client went away"));
          throw new Error("cancelled after the refund was sent");
        }
        return "refunded";
      },
    });
    await approvedThenAsked(s, "tq-crash");
    const cancelled = await s.agent.invoke(resume("the visa"), { ...config("tq-crash", "cara"), signal: controller.signal }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(cancelled).toBeDefined();
    expect(s.counter.effects).toEqual(["1042:740:the visa"]);
    expect((await types(s.auditLog, "tq-crash", "tool.cancelled")).map((e) => e.data.outcome)).toEqual(["unknown"]);
    // sue's reject: it may be taken (for the tool's question) or refused, but never as a decision.
    const code = await codeOf(s.agent.invoke(resume({ decisions: [{ type: "reject", message: "no" }] }), config("tq-crash", "sue")));
    expect(code === "no error" || code.startsWith("approval_")).toBe(true);
    expect(await decidedBy(s.auditLog, "tq-crash")).toEqual([["c1", "sam", "approve"]]);
    expect(s.counter.effects).toEqual(["1042:740:the visa"]);
    const state = await graphOf(s.agent).getState(config("tq-crash"));
    // The refund whose outcome is unknown waits for a human.
    expect(pendingRecovery(state as never)?.requests.map((r) => [r.toolCallId, r.reason])).toEqual([["c1", "outcome_unknown"]]);
  });

  /** answer-stands' case: sam's approval accepted, the run cancelled in the tool before it asked (or acted). */
  async function stoppedBeforeQuestion(threadId: string, actsFirst = false) {
    const controller = new AbortController();
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740)], {
      refund: (n, args) => {
        if (n === 1) {
          if (actsFirst) s.counter.effects.push(`${args.orderId}:${args.amount}`);
          controller.abort(new Error("the supervisor's client went away"));
          throw new Error("cancelled");
        }
        const answer = interrupt({ question: "Which card?" });
        s.counter.heard.push([args.orderId, answer]);
        s.counter.effects.push(`${args.orderId}:${args.amount}:${String(answer)}`);
        return "refunded";
      },
    });
    const paused = await s.agent.invoke(ask("Refund order 1042, $740."), config(threadId));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const cancelled = await s.agent.invoke(approve(), { ...config(threadId, "sam"), signal: controller.signal }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(cancelled).toBeDefined();
    expect(await decidedBy(s.auditLog, threadId)).toEqual([["c1", "sam", "approve"]]);
    expect((await types(s.auditLog, threadId, "tool.cancelled")).map((e) => e.data.outcome)).toEqual(["unknown"]);
    expect((await interruptsOf(s.agent, threadId)).map((i) => pendingApproval({ __interrupt__: [i] })?.requests[0]?.toolCallId)).toEqual(["c1"]);
    // The insider's forgery: a `tool.interrupted` for c1's attempt, a valid link of the chain.
    const started = (await types(s.auditLog, threadId, "tool.started")).find((e) => e.data.toolCallId === "c1")!;
    await s.auditLog.append({ threadId, type: "tool.interrupted", data: { toolCallId: "c1", name: "issue_refund", digest: started.data.digest, attempt: started.data.attempt } } as never);
    expect(await s.auditLog.verify(threadId)).toMatchObject({ ok: true });
    return s;
  }

  it("stopped after sam's approval, before the tool's question, with a forged tool.interrupted: sue's reject is still refused (approval_already_answered); sam's approval stands", async () => {
    const s = await stoppedBeforeQuestion("tq-forged-guard");
    expect(await codeOf(s.agent.invoke(resume({ decisions: [{ type: "reject", message: "no" }] }), config("tq-forged-guard", "sue")))).toBe("approval_already_answered");
    const edit = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 4000 } } }] };
    expect(await codeOf(s.agent.invoke(resume(edit), config("tq-forged-guard", "cara")))).toBe("approval_already_answered");
    expect(await decidedBy(s.auditLog, "tq-forged-guard")).toEqual([["c1", "sam", "approve"]]);
    expect(s.counter.effects.filter((e) => e.includes("4000"))).toEqual([]);
  });

  // Was a hole (high; predated d039f2e, the same unsealed event d039f2e also reads), now closed:
  // `tool.interrupted` and `tool.cancelled` carry eart's `eventSeal`, and only sealed ones count:
  // nodes/governed-tool-node.ts reads `tool.interrupted` for the call's attempt as "the tool paused
  // itself" (`paused`), so `mayHaveActed` is false and the started entry is run again under a new
  // attempt without a human. The event carries no seal: one link appended to the audit store (a
  // valid link; `verify` still says ok) makes a refund that acted and whose run was cancelled
  // (tool.cancelled outcome "unknown") run a second time on the next continue: two refunds, where
  // exactly-once (invariant 5) says a human decides. Same as the closed holes for
  // tool.recovery_requested / approval.decided: the event should carry eart's seal.
  it("a forged tool.interrupted after a refund that acted and was cancelled does not make it run again without a human", async () => {
    const s = await stoppedBeforeQuestion("tq-forged-rerun", true);
    expect(s.counter.effects).toEqual(["1042:740"]);
    const out = await s.agent.invoke(null as never, config("tq-forged-rerun", "cara")).catch((e: unknown) => e);
    // The refund's outcome is unknown: a human is asked, the tool is not called again.
    expect(s.counter.refund).toBe(1);
    expect(pendingRecovery(out as never)?.requests.map((r) => [r.toolCallId, r.reason])).toEqual([["c1", "outcome_unknown"]]);
  });

  it("without the forgery, the same continue sends the refund (outcome unknown) to a human (control)", async () => {
    const controller = new AbortController();
    let s!: ReturnType<typeof setup>;
    s = setup([refundCall("c1", 740)], {
      refund: (n, args) => {
        s.counter.effects.push(`${args.orderId}:${args.amount}`);
        if (n === 1) {
          controller.abort(new Error("gone"));
          throw new Error("cancelled");
        }
        return "refunded";
      },
    });
    await s.agent.invoke(ask("Refund order 1042, $740."), config("tq-control"));
    await s.agent.invoke(approve(), { ...config("tq-control", "sam"), signal: controller.signal }).catch(() => undefined);
    expect(s.counter.effects).toEqual(["1042:740"]);
    const out = await s.agent.invoke(null as never, config("tq-control", "cara"));
    expect(s.counter.refund).toBe(1);
    expect(pendingRecovery(out)?.requests.map((r) => [r.toolCallId, r.reason])).toEqual([["c1", "outcome_unknown"]]);
  });
});

// ─────────────────────────────────────────────────────────────────────────────────────────────
describe("the prebuilt graph (createGovernedAgent)", () => {
  it("a refund tool that asks its own question after sam's approval gets the answer; sam's approval recorded once", async () => {
    const { createGovernedAgent } = await import("eart/graphs");
    const heard: unknown[] = [];
    const issueRefund = tool(
      async (args: { orderId: string; amount: number }) => {
        const answer = interrupt({ question: "Which card?" });
        heard.push(answer);
        return `refunded ${args.orderId} to ${String(answer)}`;
      },
      { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) },
    );
    const lookupOrder = tool(async ({ orderId }: { orderId: string }) => `order ${orderId}`, { name: "lookup_order", description: "Look up", schema: z.object({ orderId: z.string() }) });
    const auditLog = new MemoryAuditLog();
    const agent = createGovernedAgent({ model: turnsModel([[refundCall("c1", 740)]]), tools: [lookupOrder, issueRefund], identities: registry, policy: refundPolicy, checkpointer: new MemorySaver(), auditLog, ledger: new MemoryEffectLedger() } as never);
    const paused = await agent.invoke(ask("Refund order 1042, $740."), config("tq-prebuilt"));
    expect(pendingApproval(paused)?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    const asked = await agent.invoke(approve(), config("tq-prebuilt", "sam"));
    expect(shown(asked)).toEqual([{ question: "Which card?" }]);
    const edit = { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1042", amount: 4000 } } }] };
    const done = await agent.invoke(resume(edit), config("tq-prebuilt", "cara"));
    expect(heard).toEqual([edit]);
    expect(shown(done)).toEqual([]);
    expect(toolAnswers(done.messages)).toEqual([["c1", "refunded 1042 to [object Object]"]]);
    expect(await decidedBy(auditLog, "tq-prebuilt")).toEqual([["c1", "sam", "approve"]]);
    expect(await types(auditLog, "tq-prebuilt", "approval.refused")).toEqual([]);
  });
});
