import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { BaseCheckpointSaver, END, START, StateGraph, type LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import { createPolicyGateParts, routeAfterPolicyGate, type GateUpdate } from "../guards/index.js";
import { bindIdentityStep, createGovernedToolNode, createModelStep, GovernedAnnotation, requireThreadId, type GovernedState } from "../nodes/index.js";
import { assertNoPendingApproval, ChatModelOption, ToolsOption } from "../nodes/runtime.js";
import {
  AuditLogOption,
  BudgetGuardOption,
  IdentityRegistry,
  MemoryAuditLog,
  parseOptions,
  PolicyEngineOption,
  type AgentIdentity,
} from "../src/index.js";
import { guardResumes } from "./resume-guard.js";

const GovernedAgentOptionsSchema = z
  .object({
    model: ChatModelOption,
    tools: ToolsOption.min(1),
    /** An {@link IdentityRegistry}, or its definition object. */
    identities: z.unknown(),
    policy: PolicyEngineOption,
    checkpointer: z.custom<BaseCheckpointSaver>((v) => v instanceof BaseCheckpointSaver, "must be a LangGraph checkpointer (pauses need one)"),
    /** Defaults to a {@link MemoryAuditLog}. */
    auditLog: AuditLogOption.optional(),
    systemPrompt: z.string().optional(),
    name: z.string().min(1).default("governed-agent"),
    /** The clock approvals expire by; injectable for tests. */
    clock: z.custom<() => Date>((v) => typeof v === "function", "must be a function returning a Date").optional(),
    /** An approval answered after its expiry: tell the model (`"answer"`, default) or ask again. */
    onExpired: z.enum(["answer", "rerequest"]).optional(),
    /** A candidate policy set run in shadow mode: never enforced, its differences audited. */
    shadowPolicy: PolicyEngineOption.optional(),
    /** Budgets (`defineBudgets`): checked by the gate, charged by the tool node. */
    budgets: BudgetGuardOption.optional(),
  })
  .strict();
export type GovernedAgentOptions = z.input<typeof GovernedAgentOptionsSchema>;

/**
 * The prebuilt governed agent. Its `agent` node binds the identity (first run) or checks it
 * against the run configuration, calls the model, and puts every proposed call through the policy
 * gate's decision, all in one step: one checkpoint and one audit append per model turn, so the
 * auto-allowed path takes as many steps as a bare agent. Calls that need approval go to the
 * `policyGate` node, which pauses with one interrupt; allowed and approved calls go to `tools`.
 * Resumes on unknown or finished threads are refused.
 * @example
 * ```ts
 * const agent = createGovernedAgent({ model, tools, identities, policy, checkpointer: new MemorySaver(), auditLog });
 * const config = { configurable: { thread_id: "t1", agent_id: "support-agent", user_id: "cara" } };
 * const paused = await agent.invoke({ messages: [new HumanMessage("Refund order 1042")] }, config);
 * // pendingApproval(paused) is the ApprovalRequest
 * await agent.invoke(new Command({ resume: { approver: { id: "sam" }, decisions: [{ toolCallId, type: "approve" }] } }), config);
 * ```
 */
export function createGovernedAgent(options: GovernedAgentOptions) {
  const opts = parseOptions(GovernedAgentOptionsSchema, options);
  const { model, tools, policy, checkpointer, systemPrompt, name, clock, onExpired, shadowPolicy, budgets } = opts;
  const auditLog = opts.auditLog ?? new MemoryAuditLog();
  const registry = opts.identities instanceof IdentityRegistry ? opts.identities : IdentityRegistry.fromObject(opts.identities);
  const modelStep = createModelStep({ model, tools, auditLog, ...(systemPrompt ? { systemPrompt } : {}) });
  const gate = createPolicyGateParts({ policy, tools, registry, auditLog, ...(clock ? { clock } : {}), ...(onExpired ? { onExpired } : {}), ...(shadowPolicy ? { shadowPolicy } : {}), ...(budgets ? { budgets } : {}) });

  async function agent(state: GovernedState, config: LangGraphRunnableConfig): Promise<GateUpdate & { identity?: AgentIdentity }> {
    const threadId = requireThreadId(config);
    assertNoPendingApproval(state, threadId);
    const last = state.messages[state.messages.length - 1];
    const binding = bindIdentityStep(registry, state, config, threadId, { recordRequest: last !== undefined && HumanMessage.isInstance(last) });
    const turn = await modelStep(state.messages, config, threadId);
    const update: GateUpdate & { identity?: AgentIdentity } = binding.newlyBound ? { identity: binding.identity } : {};
    const messages: BaseMessage[] = [turn.message];
    const events = [...binding.events, ...turn.events];
    if (turn.toolCalls.length > 0 && AIMessage.isInstance(turn.message)) {
      const decided = await gate.decideNew(state, turn.message, turn.toolCalls, binding.identity, threadId);
      messages.push(...(decided.update.messages ?? []));
      events.push(...decided.events);
      if (decided.update.decisions) update.decisions = decided.update.decisions;
      if (decided.update.escalation) update.escalation = decided.update.escalation;
    }
    await auditLog.append(events);
    return { ...update, messages };
  }

  const graph = new StateGraph(GovernedAnnotation)
    .addNode("agent", agent)
    .addNode("policyGate", gate.policyGate)
    .addNode("tools", createGovernedToolNode({ tools, auditLog, ...(budgets ? { budgets } : {}) }))
    .addEdge(START, "agent")
    .addConditionalEdges("agent", routeAfterPolicyGate, { approval: "policyGate", tools: "tools", agent: "agent", end: END })
    .addConditionalEdges("policyGate", routeAfterPolicyGate, { approval: "policyGate", tools: "tools", agent: "agent", end: END })
    .addEdge("tools", "agent");

  return guardResumes(graph.compile({ checkpointer, name }));
}
