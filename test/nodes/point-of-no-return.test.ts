import { Command } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { MemoryEffectLedger, pendingRecovery, standardRedaction, ToolRecordError, type LedgerKey, type LedgerOutcome, type Redaction } from "eart";
import { ask, config, refund, refundSetup } from "../support/refund.js";

/** A memory ledger whose `finish` fails the first `failures` times (a store that drops a write). */
class FlakyLedger extends MemoryEffectLedger {
  failures: number;
  finishes = 0;
  constructor(failures: number) {
    super();
    this.failures = failures;
  }
  override async finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date): Promise<boolean> {
    this.finishes += 1;
    if (this.failures > 0) {
      this.failures -= 1;
      throw new Error("connection terminated unexpectedly");
    }
    return super.finish(key, outcome, now);
  }
}

// Retries on, as the README shows: nothing after the tool returned may use them to run it again.
const retried = { issue_refund: { retry: { attempts: 3, initialDelayMs: 1, jitter: false } } };

describe("a tool call's point of no return: once the tool returned, nothing can run it again", () => {
  it("a ledger finish that fails once is retried with the result it has: one refund, recorded as executed", async () => {
    const ledger = new FlakyLedger(1);
    const s = refundSetup([[refund("c1", 50)]], { agent: { ledger, execution: retried } });
    const result = await s.agent.invoke(ask(), config("nr-1"));
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(result.decisions.map((d) => [d.toolCallId, d.status])).toEqual([["c1", "executed"]]);
    expect(ledger.finishes).toBe(2);
    const events = (await s.auditLog.read("nr-1")).map((e) => e.type);
    expect(events.filter((t) => t === "tool.started")).toHaveLength(1);
    expect(events).not.toContain("tool.failed");
    expect(events).not.toContain("tool.retrying");
  });

  it("a finish that was recorded though its reply was lost counts as recorded: one refund, executed", async () => {
    class LostReply extends MemoryEffectLedger {
      lost = 1;
      override async finish(key: LedgerKey, outcome: LedgerOutcome, now?: Date): Promise<boolean> {
        const done = await super.finish(key, outcome, now);
        if (this.lost-- > 0) throw new Error("Connection terminated unexpectedly");
        return done;
      }
    }
    const s = refundSetup([[refund("c1", 50)]], { agent: { ledger: new LostReply(), execution: retried } });
    const result = await s.agent.invoke(ask(), config("nr-4"));
    expect(s.refunds().map((r) => r.toolCallId)).toEqual(["c1"]);
    expect(result.decisions.map((d) => d.status)).toEqual(["executed"]);
  });

  it("a ledger that stays down after the tool returned stops the run with ToolRecordError; the next run asks a human and re-runs nothing", async () => {
    const ledger = new FlakyLedger(100);
    const s = refundSetup([[refund("c1", 50)]], { agent: { ledger, execution: retried, recoveryRoles: ["supervisor"] } });
    const error = await s.agent.invoke(ask(), config("nr-2")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ToolRecordError);
    expect(error).toMatchObject({ code: "tool_record_incomplete", toolCallId: "c1" });
    expect((error as ToolRecordError).resultPreview).toContain('"status":"refunded"');
    expect(s.refunds()).toHaveLength(1);
    // Not a failed call: no retry, no "exhausted" hand-off.
    const types = (await s.auditLog.read("nr-2")).map((e) => e.type);
    expect(types.filter((t) => t === "tool.started")).toHaveLength(1);
    expect(types).not.toContain("tool.retrying");

    // The store is back: the call's outcome is unknown to the ledger, so a human decides.
    ledger.failures = 0;
    const paused = await s.agent.invoke(null, config("nr-2"));
    const request = pendingRecovery(paused)!;
    expect(request.requests[0]).toMatchObject({ toolCallId: "c1", reason: "outcome_unknown" });
    expect(s.refunds()).toHaveLength(1);
    await s.agent.invoke(
      new Command({ resume: { decisions: [{ toolCallId: "c1", type: "mark_done", digest: request.requests[0]!.digest, result: { refundId: s.refunds()[0]!.toolCallId } }] } }),
      config("nr-2", "sam"),
    );
    expect(s.refunds()).toHaveLength(1);
  });

  it("a result that cannot be redacted is withheld, not retried: one refund, and the model is told it succeeded", async () => {
    // A redaction that fails on the tool's result (as a pathological result would make it).
    const standard = standardRedaction();
    const brittle: Redaction = {
      rules: standard.rules,
      apply(value, identity, options) {
        if (JSON.stringify(value ?? null).includes("refunded")) throw new RangeError("Maximum call stack size exceeded");
        return standard.apply(value, identity, options);
      },
    };
    const s = refundSetup([[refund("c1", 50)]], { agent: { execution: retried, redaction: brittle } });
    const result = await s.agent.invoke(ask(), config("nr-3"));
    expect(s.refunds()).toHaveLength(1);
    expect(result.decisions.map((d) => d.status)).toEqual(["executed"]);
    const answer = result.messages.find((m) => m.getType() === "tool");
    expect(String(answer?.content)).toMatch(/^The tool succeeded; its result was withheld because it could not be redacted/);
    expect(JSON.stringify(result.messages)).not.toContain("refunded");
    const succeeded = (await s.auditLog.read("nr-3")).find((e) => e.type === "tool.succeeded");
    expect(succeeded?.data).toMatchObject({ withheld: "Maximum call stack size exceeded" });
  });
});
