import { AIMessage, type BaseMessage } from "@langchain/core/messages";
import type { RunnableConfig } from "@langchain/core/runnables";
import { Command, MemorySaver, type Checkpoint, type CheckpointMetadata } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { MemoryAuditLog, pendingApproval, type AuditEvent, type AuditEventInput } from "eart";
import { continueThread, defineApp, unfinishedThreads } from "eart/graphs";
import { scriptedModel } from "eart/testing";
import { ask, config, refund, refundSetup } from "../support/refund.js";

/** An audit log that fails right after recording an event of one type: a process that died there. */
class DiesAfter extends MemoryAuditLog {
  constructor(private readonly type: AuditEventInput["type"] | undefined) {
    super();
  }
  armed = true;
  override async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
    const stored = await super.append(events);
    if (this.armed && stored.some((e) => e.type === this.type)) {
      this.armed = false;
      throw new Error(`the process died after ${this.type}`);
    }
    return stored;
  }
}

describe("threads whose run stopped before it finished: listed, and continued with what eart recorded", () => {
  it("an approval recorded before the crash is acted on by continuing, not asked for again", async () => {
    const auditLog = new DiesAfter("approval.decided");
    const s = refundSetup([[refund("c1", 740)]], { auditLog });
    const paused = await s.agent.invoke(ask(), config("u-1"));
    const request = pendingApproval(paused)!;
    const approve = { decisions: [{ toolCallId: "c1", type: "approve", digest: request.requests[0]!.digest }] };
    await expect(s.agent.invoke(new Command({ resume: approve }), config("u-1", "sam"))).rejects.toThrow("the process died after approval.decided");
    // The thread still shows the request; eart's log says sam answered it.
    expect(pendingApproval(await s.agent.getState(config("u-1")))).toBeDefined();
    const app = defineApp({ auditLog, graphs: { "support-agent": s.agent } });
    expect(await unfinishedThreads(app)).toEqual([expect.objectContaining({ threadId: "u-1", kind: "answered", answeredBy: "sam", agentId: "support-agent", userId: "cara", next: ["policyGate"] })]);
    const run = await continueThread(app, "u-1");
    expect(run.approval).toBeUndefined();
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(await unfinishedThreads(app)).toEqual([]);
    expect((await auditLog.read("u-1")).filter((e) => e.type === "approval.requested")).toHaveLength(1);
    expect(await auditLog.verify("u-1")).toMatchObject({ ok: true });
  });

  it("a stored answer that is not the one eart recorded is not continued as the recorded approver's", async () => {
    // sam approves and the process dies; then the customer sends her own answer (an edit to
    // $4,900), and the audit store fails before her refusal is recorded: LangGraph keeps her
    // answer as the thread's newest, while eart's log still ends with sam's approval.
    class Store extends DiesAfter {
      dropRefusals = false;
      override async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
        if (this.dropRefusals && [events].flat().some((e) => e.type === "approval.refused")) throw new Error("the audit store is down");
        return super.append(events);
      }
    }
    const auditLog = new Store("approval.decided");
    const s = refundSetup([[refund("c1", 740)]], { auditLog });
    const request = pendingApproval(await s.agent.invoke(ask(), config("u-4")))!;
    const digest = request.requests[0]!.digest;
    await expect(s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest }] } }), config("u-4", "sam"))).rejects.toThrow();
    const edit = { decisions: [{ toolCallId: "c1", type: "edit", digest, args: { orderId: "1042", amount: 4900 } }] };
    // Through the guard her answer is refused before LangGraph stores it (sam's stands); past it
    // (LangGraph's own stream, as an insider) it is stored, and its refusal is not recorded.
    await expect(s.agent.invoke(new Command({ resume: edit }), config("u-4", "cara"))).rejects.toMatchObject({ code: "approval_already_answered" });
    auditLog.dropRefusals = true;
    const raw = (Object.getPrototypeOf(s.agent) as { stream: (i: unknown, c: unknown) => Promise<AsyncIterable<unknown>> }).stream;
    await expect((async () => { for await (const _ of await raw.call(s.agent, new Command({ resume: edit }), config("u-4", "cara"))) void _; })()).rejects.toThrow("the audit store is down");
    const app = defineApp({ auditLog, graphs: { "support-agent": s.agent } });
    expect(await unfinishedThreads(app)).toEqual([expect.objectContaining({ threadId: "u-4", kind: "answered", answeredBy: "sam" })]);
    await expect(continueThread(app, "u-4")).rejects.toMatchObject({ code: "state_tamper_detected" });
    expect(s.refunds()).toEqual([]);
  });

  it("a run that stopped between steps is continued from its last saved step; a paused or finished thread is not listed", async () => {
    const auditLog = new DiesAfter("tool.started");
    const s = refundSetup([[refund("c1", 50)], [], [refund("c2", 740, "1043")]], { auditLog });
    await expect(s.agent.invoke(ask(), config("u-2"))).rejects.toThrow("the process died after tool.started");
    const app = defineApp({ auditLog, graphs: { "support-agent": s.agent } });
    const [stopped] = await unfinishedThreads(app);
    expect(stopped).toMatchObject({ threadId: "u-2", kind: "interrupted", next: ["tools"] });
    const run = await continueThread(app, "u-2");
    expect(await unfinishedThreads(app)).toEqual([]);
    // The ledger had claimed the call before it died: its outcome is unknown, so a human decides
    // (the refund tool is not idempotent) and nothing runs blindly.
    expect(run.recovery?.requests[0]).toMatchObject({ toolCallId: "c1", reason: "outcome_unknown" });
    expect(s.refunds()).toEqual([]);
    // A thread waiting for a human is the inbox's, not this list's; continuing it is refused.
    await s.agent.invoke(ask("and order 1043, $740"), config("u-3"));
    expect(await unfinishedThreads(app)).toEqual([]);
    await expect(continueThread(app, "u-3")).rejects.toMatchObject({ code: "thread_not_paused" });
  });

  it("a model answer saved before the process died is reused when the thread is continued: the model is not asked again", async () => {
    // LangGraph saves a finished step's writes before the step's checkpoint. A process that dies
    // between the two leaves the model's answer on record; continuing must use it, since a real
    // model asked again may propose something else (here: a different, larger refund).
    class DiesBeforeCheckpoint extends MemorySaver {
      private armed = false;
      private died = false;
      override async putWrites(cfg: RunnableConfig, writes: [string, unknown][], taskId: string): Promise<void> {
        await super.putWrites(cfg, writes, taskId);
        const proposes = writes.some(([channel, value]) => channel === "messages" && [value].flat().some((m) => AIMessage.isInstance(m) && (m.tool_calls?.length ?? 0) > 0));
        if (proposes && !this.died) this.armed = true;
      }
      override async put(cfg: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, versions: Record<string, string | number>): Promise<RunnableConfig> {
        if (this.armed) {
          this.armed = false;
          this.died = true;
          throw new Error("the process died before the checkpoint");
        }
        return super.put(cfg, checkpoint, metadata, versions);
      }
    }
    let asked = 0;
    const model = scriptedModel((messages: BaseMessage[]) => {
      asked++;
      if (messages.some((m) => AIMessage.isInstance(m))) return new AIMessage("done");
      const proposal = asked === 1 ? refund("c1", 740) : refund("c9", 4900);
      return new AIMessage({ content: "", tool_calls: [proposal] });
    });
    const auditLog = new MemoryAuditLog();
    const s = refundSetup([], { auditLog, checkpointer: new DiesBeforeCheckpoint(), agent: { model } });
    await expect(s.agent.invoke(ask(), config("u-5"))).rejects.toThrow("the process died before the checkpoint");
    expect(asked).toBe(1);
    const app = defineApp({ auditLog, graphs: { "support-agent": s.agent } });
    expect(await unfinishedThreads(app)).toEqual([expect.objectContaining({ threadId: "u-5", kind: "interrupted" })]);
    const run = await continueThread(app, "u-5");
    expect(asked).toBe(1);
    expect(run.approval?.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    expect((await auditLog.read("u-5")).filter((e) => e.type === "approval.requested")).toHaveLength(1);
    expect(s.refunds()).toEqual([]);
  });

  it("a thread that died right after its identity was bound, before any step was saved, is continued for the agent and user it was started for", async () => {
    const auditLog = new DiesAfter("identity.bound");
    const s = refundSetup([[refund("c1", 50)]], { auditLog });
    await expect(s.agent.invoke(ask(), config("u-6"))).rejects.toThrow("the process died after identity.bound");
    const app = defineApp({ auditLog, graphs: { "support-agent": s.agent } });
    expect(await unfinishedThreads(app)).toEqual([expect.objectContaining({ threadId: "u-6", kind: "interrupted", agentId: "support-agent", userId: "cara" })]);
    // Another customer may not continue it: he would be bound to her input.
    await expect(s.agent.invoke(null as never, config("u-6", "omar"))).rejects.toMatchObject({ code: "thread_unbound" });
    // The operator names nobody: the thread's own record says who it runs for.
    const run = await continueThread(app, "u-6");
    expect(run.approval).toBeUndefined();
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    const bound = (await auditLog.read("u-6")).filter((e) => e.type === "identity.bound");
    expect(bound.map((e) => [e.data.agentId, e.data.userId])).toEqual([
      ["support-agent", "cara"],
      ["support-agent", "cara"],
    ]);
  });
});
