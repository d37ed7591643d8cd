/**
 * Test helpers: scripted chat models built on LangChain's own fake model, so graphs run without
 * an API key and deterministically.
 */
import type { BaseMessage } from "@langchain/core/messages";
import { fakeModel, type FakeBuiltModel } from "@langchain/core/testing";

/** Decides the model's next message from the conversation so far. */
export type ModelScript = (messages: BaseMessage[]) => BaseMessage;

/**
 * A tool-calling chat model that answers every call with `script(messages)`. Because the answer
 * depends only on the conversation, a thread resumed in another process gets the same behaviour.
 * Like the fake model under it, it answers at most `turns` calls (default 1,000) and keeps every
 * call in `model.calls`: make one per test or process, and pass `turns` for long runs.
 * @example
 * ```ts
 * const model = scriptedModel((messages) =>
 *   messages.at(-1) instanceof HumanMessage
 *     ? new AIMessage({ content: "", tool_calls: [{ id: "c1", name: "lookup_order", args: { orderId: "1042" } }] })
 *     : new AIMessage("Done."));
 * ```
 */
export function scriptedModel(script: ModelScript, options: { turns?: number } = {}): FakeBuiltModel {
  const model = fakeModel();
  const turns = options.turns ?? 1_000;
  for (let i = 0; i < turns; i++) model.respond((messages) => script(messages));
  return model;
}

export type { FakeBuiltModel };

export { policyEngineSpec, requestOf, SEED_POLICY_CASES, type PolicyEngineCase, type PolicyEngineSpecOptions, type SpecRunner } from "./policy-engine-spec.js";
export { auditLogSpec, expectedAuditHash, type AuditLogSpecOptions, type AuditTamperOp, type MakeAuditLogOptions } from "./audit-log-spec.js";
export { effectLedgerSpec, type EffectLedgerSpecOptions } from "./effect-ledger-spec.js";
export { budgetStoreSpec, type BudgetStoreSpecOptions } from "./budget-store-spec.js";
export { threadLockSpec, type ThreadLockSpecOptions } from "./thread-lock-spec.js";
