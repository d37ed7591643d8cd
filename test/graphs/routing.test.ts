import { BaseCallbackHandler } from "@langchain/core/callbacks/base";
import { Command } from "@langchain/langgraph";
import { describe, expect, it } from "vitest";
import { pendingApproval } from "eart";
import { ask, config, lookup, refund, refundSetup } from "../support/refund.js";

/** The names of the chain runs a run traces, in order. */
class ChainNames extends BaseCallbackHandler {
  name = "chain-names";
  names: string[] = [];
  override handleChainStart(_chain: unknown, _inputs: unknown, _runId: string, _parentRunId?: string, _tags?: string[], _metadata?: unknown, _runType?: string, runName?: string): void {
    if (runName) this.names.push(runName);
  }
}

describe("the prebuilt agent's routing", () => {
  it("routes each step without a traced run of its own", async () => {
    const { agent, refunds } = refundSetup([[lookup("c0")], [refund("c1", 740)]]);
    const traced = new ChainNames();
    const paused = await agent.invoke(ask(), { ...config("r1"), callbacks: [traced] });
    const request = pendingApproval(paused)!;
    expect(request.requests.map((r) => r.toolCallId)).toEqual(["c1"]);
    // The graph and its nodes are traced as before; the routes between them (each a RunnableLambda run before) are not.
    const others = () => traced.names.filter((n) => !["governed-agent", "__start__", "agent", "tools", "policyGate"].includes(n));
    expect(traced.names).toEqual(expect.arrayContaining(["agent", "tools", "policyGate"]));
    expect(others()).toEqual([]);
    await agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c1", type: "approve", digest: request.requests[0]!.digest }] } }), { ...config("r1", "sam"), callbacks: [traced] });
    expect(refunds()).toHaveLength(1);
    expect(others()).toEqual([]);
    expect((await agent.getState(config("r1"))).next).toEqual([]);
  });
});
