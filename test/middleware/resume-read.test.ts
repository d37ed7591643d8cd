import { HumanMessage } from "@langchain/core/messages";
import type { RunnableConfig } from "@langchain/core/runnables";
import { Command, MemorySaver } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { MemoryAuditLog, pendingApproval, ThreadBusyError, type AuditEvent } from "eart";
import { middlewareRefundSetup } from "../support/middleware-agent.js";
import { ask, config, refund } from "../support/refund.js";

/**
 * The guard reads a thread's checkpoint once per resume, and once per new input when nothing is
 * pending on it: the checkpoint it checked is the one the run starts from (lent to the run under
 * the thread's lock), not read and deserialised a second time. A state write that comes in between
 * (another caller's `updateState` while the guard checks) is not lost: it is refused, as any while
 * a run holds the thread, and taken once the run is over.
 */

/** A MemorySaver that counts reads of a thread's latest root checkpoint. */
class CountingSaver extends MemorySaver {
  latestReads = 0;

  override async getTuple(config: RunnableConfig) {
    const c = config.configurable ?? {};
    if ((c.checkpoint_ns ?? "") === "" && c.checkpoint_id === undefined) this.latestReads += 1;
    return super.getTuple(config);
  }

  /** From now on: how many such reads happened before the next run's first step wrote its checkpoint. */
  countUntilFirstStep(): () => number | undefined {
    const before = this.latestReads;
    let reads: number | undefined;
    const put = this.put.bind(this);
    this.put = async (...args: Parameters<MemorySaver["put"]>) => {
      reads ??= this.latestReads - before;
      return put(...args);
    };
    return () => reads;
  }
}

const approve = () => new Command({ resume: { decisions: [{ type: "approve" }] } });

describe("a resume reads the paused thread once", () => {
  it("an honest approval: the thread's latest checkpoint is read once before the run's first step, and the refund runs once", async () => {
    const checkpointer = new CountingSaver();
    const s = middlewareRefundSetup([[refund("c1", 740)], []], { checkpointer });
    expect(pendingApproval(await s.agent.invoke(ask(), config("rr-1")))).toBeDefined();
    // Every read of the latest checkpoint during the resume: the guard's one, and the reads the
    // run makes after its own steps (none before its first step, which it takes from the guard).
    const reads = checkpointer.countUntilFirstStep();
    const out = await s.agent.invoke(approve(), config("rr-1", "sam"));
    expect(pendingApproval(out)).toBeUndefined();
    expect(reads()).toBe(1);
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    expect(await s.auditLog.verify("rr-1")).toMatchObject({ ok: true });
  });

  it("another caller's state write while the guard checks the resume is refused (ThreadBusyError: the run holds the thread), not lost; after the run it is taken", async () => {
    const checkpointer = new CountingSaver();
    const s = middlewareRefundSetup([[refund("c1", 740)], []], { checkpointer });
    await s.agent.invoke(ask(), config("rr-2"));
    const note = new HumanMessage({ id: "note-1", content: "Customer called again: please hurry." });
    // Right after the guard's read of the paused thread (the resume's first), an operator's state write lands.
    const reads = checkpointer.latestReads;
    const read = checkpointer.getTuple.bind(checkpointer);
    let written: unknown = "not tried";
    checkpointer.getTuple = async (cfg: RunnableConfig) => {
      const tuple = await read(cfg);
      if (checkpointer.latestReads === reads + 1) written = await s.agent.graph.updateState(config("rr-2"), { messages: [note] }).then(() => "written", (e: unknown) => e);
      return tuple;
    };
    await s.agent.invoke(approve(), config("rr-2", "sam"));
    expect(written).toBeInstanceOf(ThreadBusyError);
    expect(s.refunds()).toEqual([{ orderId: "1042", amount: 740, toolCallId: "c1" }]);
    checkpointer.getTuple = read;
    await s.agent.graph.updateState(config("rr-2"), { messages: [note] });
    const state = await s.agent.graph.getState(config("rr-2"));
    expect((state.values.messages as { id?: string }[]).map((m) => m.id)).toContain("note-1");
  });
});

describe("new input on a thread reads its checkpoint once", () => {
  it("a second turn: the guard's read of the thread's latest checkpoint is the run's first one, and the conversation goes on", async () => {
    const checkpointer = new CountingSaver();
    const s = middlewareRefundSetup([[refund("c1", 60, "1043")], [], [refund("c2", 60, "1043")], []], { checkpointer });
    await s.agent.invoke(ask("Refund order 1043, $60."), config("rr-turn"));
    const reads = checkpointer.countUntilFirstStep();
    await s.agent.invoke(ask("And the other $60 please."), config("rr-turn"));
    // createAgent reads the state once itself before the run (to merge it into the input); the
    // guard's read is the run's: two in all, not three.
    expect(reads()).toBe(2);
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1", "c2"]);
  });

  it("another caller's state write between the guard's read and the run is refused (ThreadBusyError), not lost", async () => {
    const checkpointer = new CountingSaver();
    const s = middlewareRefundSetup([[], []], { checkpointer });
    await s.agent.invoke(ask("Hello"), config("rr-turn-2"));
    const note = new HumanMessage({ id: "note-2", content: "A note an operator added." });
    // The turn's reads: createAgent's own first, then the guard's. Right after the guard's, an
    // operator's state write lands.
    let reads = 0;
    const read = checkpointer.getTuple.bind(checkpointer);
    let written: unknown = "not tried";
    checkpointer.getTuple = async (cfg: RunnableConfig) => {
      const tuple = await read(cfg);
      reads += 1;
      if (reads === 2) written = await s.agent.graph.updateState(config("rr-turn-2"), { messages: [note] }).then(() => "written", (e: unknown) => e);
      return tuple;
    };
    await s.agent.invoke(ask("Anything else?"), config("rr-turn-2"));
    expect(written).toBeInstanceOf(ThreadBusyError);
    checkpointer.getTuple = read;
    await s.agent.graph.updateState(config("rr-turn-2"), { messages: [note] });
    const state = await s.agent.graph.getState(config("rr-turn-2"));
    expect((state.values.messages as { id?: string }[]).map((m) => m.id)).toContain("note-2");
  });
});
