/**
 * A red-team pass on THE PENDING-APPROVALS INBOX (the index of what waits for which role, kept by
 * the audit stores on every pause and answer, read by `auditLog.pending()` and `eart pending`) and
 * on RECOVERY TO A HUMAN (a call whose outcome is unknown, or that could not finish, waits for a
 * human who answers retry / mark_done / abandon).
 *
 * Attacker: any caller of the thread API (runs, resume, updateState, Command): the customer, a
 * colleague with a lesser role, a buggy client answering twice or at once, a model steered by a
 * document (it chooses tool call ids and arguments an approver reads).
 *
 * Attacked: a pause the index never hears of (an approval re-decided as `escalate` after a
 * redeploy); a state write that drops a waiting approval or recovery from the thread while the
 * index keeps it (stale) and `eart pending` loses it; a redeploy that changes the recovery roles;
 * what an entry says about whom it concerns; tenants on one PostgreSQL database; tool call ids
 * crafted to collide across threads or to carry line breaks and escapes; who may resolve a
 * recovery (the requester, another customer, a role that is not the resolvers', no principal, a
 * name in the payload); recovery answers of the wrong shape (edited arguments, HITL positional
 * decisions, an approval's `edit`, a token, another thread's digest, a missing, extra or duplicate
 * decision, the wrong attempt); `mark_done` of a call that never ran; `retry` of a call the ledger
 * has since recorded as succeeded; two resolvers answering one recovery at once.
 *
 * Held (it below): tenants never see each other's entries; crafted ids neither collide nor close
 * another thread's entry; every unauthorised or malformed recovery answer is refused, runs
 * nothing and leaves the entry open; `mark_done` of a call that never ran is recorded as marked
 * done, never as a run; a `retry` after the ledger recorded success replays it; two resolvers at
 * once give one decision.
 *
 * Found by this pass, and closed (each test below failed before its fix): an approved call that the
 * policy in force now escalated waited for a reviewer with no `escalation.requested`, so nobody's
 * inbox listed it; a state write (an AI message appended, the proposing message removed or
 * replaced) on a thread paused for a supervisor dropped the request and new input was taken; the
 * same on a recovery let the refund be proposed again and pay a second time; recovery and
 * escalation entries did not say whom they were about.
 * Also closed: after a redeploy that changed `recoveryRoles`, a waiting recovery was listed for the
 * old role (whose answer was refused) and hidden from the new one; a request is now answered by the
 * roles it was handed over to.
 */
import { AIMessage, HumanMessage, RemoveMessage, type BaseMessage } from "@langchain/core/messages";
import { tool, type StructuredToolInterface } from "@langchain/core/tools";
import { Command, MemorySaver } from "@langchain/langgraph";
import pg from "pg";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  definePolicy,
  eartErrorOf,
  MemoryEffectLedger,
  pendingApproval,
  pendingHumanTask,
  pendingRecovery,
  toolCallDigest,
  type AuditEvent,
  type AuditLog,
  type RecoveryRequest,
} from "eart";
import { defineApp } from "eart/graphs";
import { postgresStores } from "eart/postgres";
import { SqliteAuditLog } from "eart/sqlite";
import { inbox } from "../../cli/local.js";
import { decide } from "../support/decisions.js";
import { ask, config, refund, refundSetup, type Call } from "../support/refund.js";
import { PG_URL } from "../support/specs.js";

// ── fixtures ────────────────────────────────────────────────────────────────────────────────────

const codeOf = (p: Promise<unknown>) => p.then(() => "no error", (e: { message?: string }) => eartErrorOf(e)?.code ?? `not eart's: ${String(e?.message ?? e).slice(0, 300)}`);
// $60 on order 1043 is allowed by the refund policy without approval; $740 on 1042 needs a supervisor.
const small = (id = "c1", amount = 60): Call => refund(id, amount, "1043");
const askSmall = () => ask("Refund order 1043, $60.");
const of = (events: AuditEvent[], type: string) => events.filter((e) => e.type === type);
const dir = mkdtempSync(join(tmpdir(), "eart-zz-inbox-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Setup = ReturnType<typeof refundSetup>;
type Agent = Setup["agent"];

/** `eart pending` (an app over this log and agent), each row as `thread/kind/call`. */
async function listed(auditLog: AuditLog, agent: Agent, role?: string): Promise<string[]> {
  const app = defineApp({ auditLog, graphs: { "support-agent": agent } });
  return (await inbox(app, role === undefined ? {} : { role })).map((i) => `${i.threadId}/${i.kind}/${i.toolCallId ?? "-"}`);
}

/** `auditLog.pending()`, each entry as `thread/kind/call`. */
const indexed = async (auditLog: AuditLog, role?: string) =>
  (await auditLog.pending!(role === undefined ? {} : { role })).map((t) => `${t.threadId}/${t.kind}/${t.toolCallId ?? "-"}`);

const recoveryOf = async (agent: Agent, threadId: string): Promise<RecoveryRequest> => {
  const request = pendingRecovery(await agent.getState(config(threadId)));
  if (!request) throw new Error(`expected a pending recovery request on ${threadId}`);
  return request;
};

/**
 * The refund agent whose `issue_refund` runs the real refund and then throws on its first
 * `failing` calls (a gateway that pays, then answers 502: the outcome is unknown to eart), and
 * succeeds after; or, with `pays: false`, throws before paying. Resolved by supervisors.
 */
function payThenFail(turns: Call[][], o: { failing?: number; pays?: boolean; setup?: Parameters<typeof refundSetup>[1]; agent?: Record<string, unknown> } = {}) {
  const { failing = 1, pays = true } = o;
  let calls = 0;
  const s = refundSetup(turns, {
    ...o.setup,
    agent: { ledger: new MemoryEffectLedger(), recoveryRoles: ["supervisor"], ...o.agent },
    tools: (t) => {
      const real = t.issueRefund as unknown as StructuredToolInterface;
      const wrapped = tool(
        async (args: Record<string, unknown>, cfg) => {
          calls++;
          if (calls <= failing) {
            if (pays) await real.invoke(args, cfg as never);
            throw new Error(pays ? "gateway 502 after the transfer" : "payments API unavailable");
          }
          return real.invoke(args, cfg as never);
        },
        { name: "issue_refund", description: t.issueRefund.description, schema: t.issueRefund.schema as z.ZodObject<z.ZodRawShape> },
      );
      return [t.lookupOrder, t.viewPaymentDetails, wrapped as unknown as StructuredToolInterface];
    },
  });
  return { ...s, calls: () => calls };
}

// ── the inbox: what waits is listed, for whom, and only that ────────────────────────────────────

describe("the inbox lists every human task that waits, for the roles that may answer it", () => {
  // Was a hole: an approval waiting under policy v1, approved after a redeploy whose policy
  // escalates such refunds, waited for a reviewer with no `escalation.requested` appended: the index
  // closed the approval and opened nothing, `eart pending --role supervisor` showed nothing, and the
  // audit log never recorded that a reviewer was asked. Now the gate records the case it opens on an
  // answer as it does on a first decision.
  it("an approval the policy in force now escalates (a redeploy between request and answer) is listed for the reviewers", async () => {
    const checkpointer = new MemorySaver();
    const reviewed = { escalation: { reviewerRoles: ["supervisor"] } };
    const first = refundSetup([[refund("call_1", 740)]], { checkpointer, agent: reviewed });
    await first.agent.invoke(ask(), config("esc-1"));
    const request = pendingApproval(await first.agent.getState(config("esc-1")))!;
    const v2 = definePolicy({
      name: "refunds-v2",
      rules: [
        { id: "orders.lookup", tools: ["lookup_order"], effect: "allow", reason: "Order lookups are allowed" },
        { id: "refund.review", tools: ["issue_refund"], effect: "escalate", reason: "Refunds now go to a case reviewer" },
      ],
    });
    const second = refundSetup([[refund("call_1", 740)]], { policy: v2, checkpointer, auditLog: first.auditLog, agent: reviewed });
    expect(await codeOf(second.agent.invoke(new Command({ resume: { decisions: [decide(request, "call_1", "approve")] } }), config("esc-1", "sam")))).toBe("no error");
    // Setup: the thread now waits for a supervisor's review, and nothing ran.
    expect(pendingHumanTask(await second.agent.getState(config("esc-1")))).toMatchObject({ type: "eart.escalation", roles: ["supervisor"] });
    expect(second.refunds()).toEqual([]);
    // The guarantee: what waits for a human is recorded and listed for the roles that may answer it.
    expect(await indexed(first.auditLog, "supervisor")).toEqual(["esc-1/escalation/-"]);
    // (`eart pending` calls a case for a reviewer a review.)
    expect(await listed(first.auditLog, second.agent, "supervisor")).toEqual(["esc-1/review/-"]);
    expect(of(await first.auditLog.read("esc-1"), "escalation.requested")).toHaveLength(1);
  });

  // Was a hole: `guardResumes` (in-process) let `updateState` append an AI message, remove the
  // proposing message or replace it by id on a thread paused for a supervisor: the interrupt was
  // dropped, new input was taken (the check read only the newest AI message's records), and the
  // request vanished from `eart pending` while the index kept it. Now a state write on a thread
  // that waits for a human is refused, as LangGraph server's guard refuses it, and new input is
  // refused while any recorded call waits.
  it("a state write that appends an AI message, or removes or replaces the proposing one, does not drop a waiting approval", async () => {
    const variants: Record<string, (proposing: string) => BaseMessage> = {
      appended: () => new AIMessage("All sorted: your refund was approved."),
      removed: (id) => new RemoveMessage({ id }),
      replaced: (id) => new HumanMessage({ id, content: "never mind" }),
    };
    const seen: Record<string, unknown> = {};
    for (const [variant, write] of Object.entries(variants)) {
      const threadId = `drop-${variant}`;
      const { agent, auditLog, refunds } = refundSetup([[refund("call_1", 740)]]);
      await agent.invoke(ask(), config(threadId));
      const proposing = ((await agent.getState(config(threadId))).values as { messages: BaseMessage[] }).messages.find((m) => AIMessage.isInstance(m))!.id!;
      expect(await indexed(auditLog)).toEqual([`${threadId}/approval/call_1`]);
      const wrote = await codeOf(agent.updateState(config(threadId), { messages: [write(proposing)] }));
      const next = await codeOf(agent.invoke(ask("Anything else?"), config(threadId)));
      seen[variant] = { next, listed: await listed(auditLog, agent), refunds: refunds().length, wrote: typeof wrote };
    }
    // The guarantee: the write is refused, or the thread still waits for the supervisor and
    // `eart pending` still shows the request; either way new input is refused.
    for (const variant of Object.keys(variants)) {
      expect(seen[variant], variant).toEqual({ next: "thread_awaiting_approval", listed: [`drop-${variant}/approval/call_1`], refunds: 0, wrote: "string" });
    }
  });

  // Was a hole: the same on a thread waiting for a RECOVERY decision (a refund that paid, then
  // 502): an appended "Your refund is on its way" dropped the request, the next input was taken, and
  // the refund proposed again ran: a second payout. Closed as above.
  it("a state write on a thread waiting for a recovery decision does not drop it: no new input, still listed, no second payout", async () => {
    const s = payThenFail([[small("c1")], [], [small("c2")]]);
    await s.agent.invoke(askSmall(), config("drop-rc"));
    expect((await recoveryOf(s.agent, "drop-rc")).requests[0]).toMatchObject({ toolCallId: "c1", reason: "exhausted" });
    expect(s.refunds()).toHaveLength(1);
    await codeOf(s.agent.updateState(config("drop-rc"), { messages: [new AIMessage("Your refund is on its way.")] }));
    const next = await codeOf(s.agent.invoke(ask("It has not arrived, refund order 1043 again please."), config("drop-rc")));
    expect({ next, listed: await listed(s.auditLog, s.agent), refunds: s.refunds().length }).toEqual({
      next: "thread_awaiting_approval",
      listed: ["drop-rc/recovery/c1"],
      refunds: 1,
    });
  });

  // Was a hole (low): the recovery node asked with the roles it was configured with NOW, while the
  // index and the stored interrupt kept the roles the call was handed over to. After a redeploy
  // that moved recovery from `finance` to `supervisor`, the waiting recovery was listed for finance,
  // whose answer was refused (approval_unauthorized), and hidden from supervisors, who alone could
  // answer it: it waited unseen. Now a request is answered by the roles it was handed over to
  // (recorded with the call, as an approval keeps the roles its verdict named), and a change of
  // roles applies to the requests made after it: what is listed for a role is what it may answer.
  it("after a redeploy that changes recoveryRoles, a waiting recovery is listed for the roles that may resolve it, and later ones for the new roles", async () => {
    const checkpointer = new MemorySaver();
    const ledger = new MemoryEffectLedger();
    const first = payThenFail([[small("c1")]], { setup: { checkpointer }, agent: { ledger, recoveryRoles: ["finance"] } });
    await first.agent.invoke(askSmall(), config("roles-rc"));
    const second = payThenFail([[small("c1")]], { setup: { checkpointer, auditLog: first.auditLog }, agent: { ledger, recoveryRoles: ["supervisor"] } });
    const request = await recoveryOf(second.agent, "roles-rc");
    expect(request.roles).toEqual(["finance"]);
    // Listed for the role that may answer it, and only for that role.
    expect({
      supervisor: await listed(first.auditLog, second.agent, "supervisor"),
      finance: await listed(first.auditLog, second.agent, "finance"),
      indexedForFinance: await indexed(first.auditLog, "finance"),
    }).toEqual({ supervisor: [], finance: ["roles-rc/recovery/c1"], indexedForFinance: ["roles-rc/recovery/c1"] });
    // sam (supervisor) may not resolve it; fay (finance), to whom it was handed over, does.
    expect(await codeOf(second.agent.invoke(new Command({ resume: { decisions: [decide(request, "c1", "abandon")] } }), config("roles-rc", "sam")))).toBe("approval_unauthorized");
    expect(await codeOf(second.agent.invoke(new Command({ resume: { decisions: [decide(request, "c1", "abandon")] } }), config("roles-rc", "fay")))).toBe("no error");
    expect(await indexed(first.auditLog)).toEqual([]);
    // A call handed over after the redeploy goes to the new roles.
    await second.agent.invoke(askSmall(), config("roles-rc-2"));
    expect((await recoveryOf(second.agent, "roles-rc-2")).roles).toEqual(["supervisor"]);
    expect(await listed(first.auditLog, second.agent, "supervisor")).toEqual(["roles-rc-2/recovery/c1"]);
  });

  // Was a hole: an approval entry says whom it is about (`requestedBy`); a recovery's and an
  // escalation's did not, so an inbox could not tell sam that the failed refund listed for
  // supervisors is his own. Now `tool.recovery_requested` and `escalation.requested` record it.
  it("recovery and escalation entries say whom they are about, as approval entries do", async () => {
    const s = payThenFail([[small("c1")]]);
    await s.agent.invoke(askSmall(), config("who-rc", "sam"));
    const escalating = definePolicy({
      name: "refunds-escalate",
      rules: [
        { id: "orders.lookup", tools: ["lookup_order"], effect: "allow", reason: "Order lookups are allowed" },
        { id: "refund.review", tools: ["issue_refund"], effect: "escalate", reason: "Refunds go to a case reviewer" },
      ],
    });
    const e = refundSetup([[refund("call_1", 740)]], { policy: escalating, auditLog: s.auditLog, agent: { escalation: { reviewerRoles: ["supervisor"] } } });
    await e.agent.invoke(ask(), config("who-esc"));
    const tasks = await s.auditLog.pending!({ role: "supervisor" });
    expect(tasks.map((t) => [t.threadId, t.kind, t.requestedBy])).toEqual([
      ["who-rc", "recovery", { agentId: "support-agent", userId: "sam" }],
      ["who-esc", "escalation", { agentId: "support-agent", userId: "cara" }],
    ]);
  });

  it("two tenants on one PostgreSQL database, same thread and call ids: each inbox lists its own entry only, and an answer closes only its own", async () => {
    const tag = randomUUID().replaceAll("-", "").slice(0, 12);
    const schemas = [`zz_inbox_a_${tag}`, `zz_inbox_b_${tag}`];
    const tenants = await Promise.all(schemas.map((schema) => postgresStores({ connectionString: PG_URL, schema })));
    try {
      const [a, b] = tenants.map((t) => refundSetup([[refund("call_1", 740)]], { checkpointer: t.checkpointer, auditLog: t.auditLog, agent: { ledger: t.ledger, threadLock: t.threadLock } }));
      await a!.agent.invoke(ask(), config("refund-1042"));
      await b!.agent.invoke(ask(), config("refund-1042"));
      expect(await indexed(a!.auditLog)).toEqual(["refund-1042/approval/call_1"]);
      expect(await indexed(b!.auditLog)).toEqual(["refund-1042/approval/call_1"]);
      const request = pendingApproval(await a!.agent.getState(config("refund-1042")))!;
      await a!.agent.invoke(new Command({ resume: { decisions: [decide(request, "call_1", "approve")] } }), config("refund-1042", "sam"));
      expect(await indexed(a!.auditLog)).toEqual([]);
      expect(await listed(a!.auditLog, a!.agent)).toEqual([]);
      expect(await indexed(b!.auditLog, "supervisor")).toEqual(["refund-1042/approval/call_1"]);
      expect(await listed(b!.auditLog, b!.agent, "supervisor")).toEqual(["refund-1042/approval/call_1"]);
      expect([a!.refunds().length, b!.refunds().length]).toEqual([1, 0]);
    } finally {
      await Promise.all(tenants.map((t) => t.close()));
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
      await admin.end();
    }
  });

  it("model-chosen call ids crafted to collide across threads (JSON separators, line breaks, escapes, 5,000 characters) each keep one entry, closed only by their own answer (SQLite)", async () => {
    const auditLog = new SqliteAuditLog({ path: join(dir, `${randomUUID()}.sqlite`) });
    // Thread and call ids that would make one key under a naive join of [thread, kind, call].
    const cases: { threadId: string; callId: string }[] = [
      { threadId: 'x","approval","y', callId: "z" },
      { threadId: "x", callId: 'y","approval","z' },
      { threadId: "x|approval", callId: "y|z" },
      { threadId: "x", callId: "approval|y|z" },
      { threadId: "esc-ids", callId: "c1\n\u001b[2K\u001b[1Ax/approval/c2\r" },
      { threadId: "long-ids", callId: `c${"9".repeat(5_000)}` },
    ];
    const agents = cases.map(({ callId }) => refundSetup([[refund(callId, 740)]], { auditLog }).agent);
    for (const [i, { threadId }] of cases.entries()) await agents[i]!.invoke(ask(), config(threadId));
    const all = cases.map(({ threadId, callId }) => `${threadId}/approval/${callId}`).sort();
    expect((await indexed(auditLog, "supervisor")).sort()).toEqual(all);
    // The second case's answer closes its own entry, and no other.
    const request = pendingApproval(await agents[1]!.getState(config(cases[1]!.threadId)))!;
    await agents[1]!.invoke(new Command({ resume: { decisions: [decide(request, cases[1]!.callId, "reject", { message: "no" })] } }), config(cases[1]!.threadId, "sam"));
    expect((await indexed(auditLog)).sort()).toEqual(all.filter((k) => k !== `x/approval/${cases[1]!.callId}`));
    expect((await auditLog.pending!()).find((t) => t.threadId === "esc-ids")?.toolCallId).toBe(cases[4]!.callId);
    auditLog.close?.();
  });
});

// ── recovery: who may answer, with what, and what it then does ──────────────────────────────────

describe("recovery to a human", () => {
  it("the requester, another customer, a role that is not the resolvers', an unknown user, no principal and a name in the payload cannot resolve: nothing runs, the entry stays", async () => {
    const s = payThenFail([[small("c1")]]);
    await s.agent.invoke(askSmall(), config("rc-who"));
    const request = await recoveryOf(s.agent, "rc-who");
    const retry = (extra: Record<string, unknown> = {}) => new Command({ resume: { ...extra, decisions: [decide(request, "c1", "retry")] } });
    const nobody = { configurable: { thread_id: "rc-who", agent_id: "support-agent" } };
    const codes = {
      requester: await codeOf(s.agent.invoke(retry(), config("rc-who", "cara"))),
      otherCustomer: await codeOf(s.agent.invoke(retry(), config("rc-who", "omar"))),
      finance: await codeOf(s.agent.invoke(retry(), config("rc-who", "fay"))),
      unknown: await codeOf(s.agent.invoke(retry(), config("rc-who", "mallory"))),
      nobody: await codeOf(s.agent.invoke(retry(), nobody)),
      nobodyNamingSam: await codeOf(s.agent.invoke(retry({ resolver: { id: "sam" } }), nobody)),
      caraNamingSam: await codeOf(s.agent.invoke(retry({ resolver: { id: "sam" } }), config("rc-who", "cara"))),
      samAsAuthUserCara: await codeOf(s.agent.invoke(retry(), config("rc-who", "sam", { langgraph_auth_user: { identity: "cara" } }))),
    };
    expect(codes).toEqual({
      requester: "approval_self_approval",
      otherCustomer: "approval_unauthorized",
      finance: "approval_unauthorized",
      unknown: "approval_unauthorized",
      nobody: "approval_unauthenticated",
      nobodyNamingSam: "approval_unauthenticated",
      caraNamingSam: "approval_principal_mismatch",
      samAsAuthUserCara: "approval_self_approval",
    });
    expect(s.calls()).toBe(1);
    expect(s.refunds()).toHaveLength(1);
    expect(await indexed(s.auditLog)).toEqual(["rc-who/recovery/c1"]);
    expect(of(await s.auditLog.read("rc-who"), "tool.recovery_decided")).toEqual([]);
    expect((await recoveryOf(s.agent, "rc-who")).requests[0]).toMatchObject({ toolCallId: "c1", attempt: 1 });
    // A supervisor may, once.
    expect(await codeOf(s.agent.invoke(new Command({ resume: { decisions: [decide(request, "c1", "abandon", { message: "checked: it paid" })] } }), config("rc-who", "sam")))).toBe("no error");
    expect(await indexed(s.auditLog)).toEqual([]);
    expect(s.calls()).toBe(1);
  });

  it("recovery answers of the wrong shape are refused and run nothing: edited args, an approval's edit, HITL decisions, a token, another thread's digest, swapped digests, missing, extra or duplicate decisions, the wrong attempt", async () => {
    const s = payThenFail([[small("c1", 60), small("c2", 50)]], { failing: 2 });
    await s.agent.invoke(askSmall(), config("rc-shape"));
    const request = await recoveryOf(s.agent, "rc-shape");
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["c1", "c2"]);
    const c2 = decide(request, "c2", "abandon");
    const answers: Record<string, unknown> = {
      retryWithEditedArgs: { decisions: [decide(request, "c1", "retry", { args: { orderId: "1043", amount: 4_900 } }), c2] },
      approvalEdit: { decisions: [decide(request, "c1", "edit", { args: { orderId: "1043", amount: 4_900 } }), c2] },
      hitlApprove: { decisions: [{ type: "approve" }, { type: "approve" }] },
      hitlEdit: { decisions: [{ type: "edit", editedAction: { name: "issue_refund", args: { orderId: "1043", amount: 4_900 } } }, { type: "reject" }] },
      withToken: { decisions: [decide(request, "c1", "retry", { token: "eyJhbGciOiJFZERTQSJ9.e30.sig" }), c2] },
      otherThreadDigest: { decisions: [{ toolCallId: "c1", type: "retry", digest: toolCallDigest("issue_refund", { orderId: "1043", amount: 60 }, "rc-other") }, c2] },
      swappedDigests: { decisions: [{ toolCallId: "c1", type: "retry", digest: request.requests[1]!.digest }, { toolCallId: "c2", type: "retry", digest: request.requests[0]!.digest }] },
      missingDecision: { decisions: [decide(request, "c1", "retry")] },
      extraDecision: { decisions: [decide(request, "c1", "retry"), c2, { toolCallId: "c3", type: "retry", digest: request.requests[0]!.digest }] },
      duplicateDecision: { decisions: [decide(request, "c1", "retry"), decide(request, "c1", "abandon")] },
      markDoneWithoutResult: { decisions: [decide(request, "c1", "mark_done"), c2] },
      resultOnRetry: { decisions: [decide(request, "c1", "retry", { result: { refundId: 1 } }), c2] },
      wrongAttempt: { decisions: [decide(request, "c1", "retry", { attempt: 7 }), c2] },
    };
    const codes: Record<string, string> = {};
    for (const [name, resume] of Object.entries(answers)) codes[name] = await codeOf(s.agent.invoke(new Command({ resume }), config("rc-shape", "sam")));
    expect(codes).toEqual({
      retryWithEditedArgs: "approval_resume_invalid",
      approvalEdit: "approval_resume_invalid",
      hitlApprove: "approval_resume_invalid",
      hitlEdit: "approval_resume_invalid",
      withToken: "approval_resume_invalid",
      otherThreadDigest: "approval_digest_mismatch",
      swappedDigests: "approval_digest_mismatch",
      missingDecision: "approval_decisions_mismatch",
      extraDecision: "approval_decisions_mismatch",
      duplicateDecision: "approval_decisions_mismatch",
      markDoneWithoutResult: "approval_resume_invalid",
      resultOnRetry: "approval_resume_invalid",
      wrongAttempt: "approval_already_answered",
    });
    // Nothing ran again, nothing was decided, both calls still wait, every refusal is on record.
    expect(s.calls()).toBe(2);
    expect(s.refunds().map((r) => r.amount)).toEqual([60, 50]);
    expect(of(await s.auditLog.read("rc-shape"), "tool.recovery_decided")).toEqual([]);
    expect(of(await s.auditLog.read("rc-shape"), "tool.recovery_refused")).toHaveLength(Object.keys(answers).length);
    expect((await indexed(s.auditLog)).sort()).toEqual(["rc-shape/recovery/c1", "rc-shape/recovery/c2"]);
  });

  it("mark_done of a call that never ran (breaker open, attempt 0) does not call the tool, and the audit log never says it ran", async () => {
    const s = payThenFail([[small("c1")]], { failing: Number.MAX_SAFE_INTEGER, pays: false, agent: { execution: { issue_refund: { breaker: { failureThreshold: 1, windowMs: 60_000, cooldownMs: 600_000 } } } } });
    await s.agent.invoke(askSmall(), config("cb-1"));
    await s.agent.invoke(askSmall(), config("cb-2"));
    expect(s.calls()).toBe(1);
    const request = await recoveryOf(s.agent, "cb-2");
    expect(request.requests[0]).toMatchObject({ toolCallId: "c1", reason: "circuit_open", attempt: 0 });
    const done = new Command({ resume: { decisions: [decide(request, "c1", "mark_done", { result: { refundId: 77 } })] } });
    expect(await codeOf(s.agent.invoke(done, config("cb-2", "sam")))).toBe("no error");
    expect(s.calls()).toBe(1);
    expect(s.refunds()).toEqual([]);
    const events = await s.auditLog.read("cb-2");
    // Never a start (real or reconstructed from the ledger); the outcome names who marked it done.
    expect(of(events, "tool.started")).toEqual([]);
    expect(of(events, "tool.succeeded").map((e) => e.data.markedDoneBy)).toEqual(["sam"]);
    expect(of(events, "tool.recovery_decided").map((e) => [e.data.decision, e.data.resolverId, e.data.attempt])).toEqual([["mark_done", "sam", 0]]);
    expect(await indexed(s.auditLog)).toEqual(["cb-1/recovery/c1"]);
  });

  it("a 'retry' of a call the ledger has since recorded as succeeded (a slow worker finished it) replays the recorded result: the tool does not run twice", async () => {
    const ledger = new MemoryEffectLedger();
    const s = payThenFail([[small("c1")]], { agent: { ledger } });
    await s.agent.invoke(askSmall(), config("rc-late"));
    const request = await recoveryOf(s.agent, "rc-late");
    const key = { threadId: "rc-late", toolCallId: "c1", digest: request.requests[0]!.digest };
    expect(await ledger.get(key)).toMatchObject({ status: "started", attempt: 1 });
    expect(await ledger.finish(key, { status: "succeeded", result: { content: "refund 1 issued (late worker)" } }, new Date())).toBe(true);
    expect(await codeOf(s.agent.invoke(new Command({ resume: { decisions: [decide(request, "c1", "retry")] } }), config("rc-late", "sam")))).toBe("no error");
    expect(s.calls()).toBe(1);
    expect(s.refunds()).toHaveLength(1);
    const events = await s.auditLog.read("rc-late");
    expect(of(events, "tool.replayed")).toHaveLength(1);
    expect(of(events, "tool.started").filter((e) => e.data.attempt !== 1)).toEqual([]);
    expect(await indexed(s.auditLog)).toEqual([]);
  });

  it("two resolvers answer one recovery at once (sam: retry, sue: mark_done): one answer is taken, the other refused typed, the tool runs at most once more", async () => {
    const s = payThenFail([[small("c1")]]);
    await s.agent.invoke(askSmall(), config("rc-race"));
    const request = await recoveryOf(s.agent, "rc-race");
    const answers = [
      s.agent.invoke(new Command({ resume: { decisions: [decide(request, "c1", "retry")] } }), config("rc-race", "sam")),
      s.agent.invoke(new Command({ resume: { decisions: [decide(request, "c1", "mark_done", { result: { refundId: 9 } })] } }), config("rc-race", "sue")),
    ];
    const codes = await Promise.all(answers.map(codeOf));
    expect(codes.filter((c) => c === "no error")).toHaveLength(1);
    expect(["thread_busy", "thread_not_paused", "approval_already_answered"]).toContain(codes.find((c) => c !== "no error"));
    const decided = of(await s.auditLog.read("rc-race"), "tool.recovery_decided");
    expect(decided).toHaveLength(1);
    // A retry runs it once more (it succeeds); a mark_done runs nothing.
    expect(s.calls()).toBe(decided[0]!.data.decision === "retry" ? 2 : 1);
    // The refund forwards its idempotency key: a retry under the same key pays nothing more.
    expect(s.refunds()).toHaveLength(1);
    expect(await indexed(s.auditLog)).toEqual([]);
  });
});
