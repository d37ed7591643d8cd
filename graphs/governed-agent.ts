import type { BaseChatModel } from "@langchain/core/language_models/chat_models";
import type { StructuredToolInterface } from "@langchain/core/tools";
import { BaseCheckpointSaver, END, START, StateGraph } from "@langchain/langgraph";
import { z } from "zod";
import { routeAfterModel, routeAfterPolicyGate, createPolicyGate } from "../guards/index.js";
import { createGovernedToolNode, createIdentityBinding, createModelNode, GovernedAnnotation } from "../nodes/index.js";
import { EartConfigError, IdentityRegistry, MemoryAuditLog, type AuditLog, type PolicyEngine } from "../src/index.js";
import { guardResumes } from "./resume-guard.js";

const GovernedAgentOptionsSchema = z
  .object({
    model: z.custom<BaseChatModel>((v) => typeof (v as BaseChatModel)?.invoke === "function", "must be a chat model"),
    tools: z.array(z.custom<StructuredToolInterface>((v) => typeof (v as StructuredToolInterface)?.name === "string", "must be a tool")).min(1),
    /** An {@link IdentityRegistry}, or its definition object. */
    identities: z.unknown(),
    policy: z.custom<PolicyEngine>((v) => typeof (v as PolicyEngine)?.decide === "function", "must be a PolicyEngine"),
    checkpointer: z.custom<BaseCheckpointSaver>((v) => v instanceof BaseCheckpointSaver, "must be a LangGraph checkpointer (pauses need one)"),
    /** Defaults to a {@link MemoryAuditLog}. */
    auditLog: z.custom<AuditLog>((v) => typeof (v as AuditLog)?.append === "function", "must be an AuditLog").optional(),
    systemPrompt: z.string().optional(),
    name: z.string().min(1).default("governed-agent"),
  })
  .strict();
export type GovernedAgentOptions = z.input<typeof GovernedAgentOptionsSchema>;

/**
 * The prebuilt governed agent: bindIdentity → agent → policyGate → governedTools → agent …,
 * pausing in the gate for approvals. Resumes on unknown or finished threads are refused.
 * @example
 * ```ts
 * const agent = createGovernedAgent({ model, tools, identities, policy, checkpointer: new MemorySaver(), auditLog });
 * const config = { configurable: { thread_id: "t1", agent_id: "support-agent", user_id: "cara" } };
 * const paused = await agent.invoke({ messages: [new HumanMessage("Refund order 1042")] }, config);
 * // paused.__interrupt__[0].value is an ApprovalRequest
 * await agent.invoke(new Command({ resume: { approver: { id: "sam" }, decisions: [{ toolCallId, type: "approve" }] } }), config);
 * ```
 */
export function createGovernedAgent(options: GovernedAgentOptions) {
  const parsed = GovernedAgentOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new EartConfigError(String(issue.path[0] ?? "options"), issue.message);
  }
  const { model, tools, policy, checkpointer, systemPrompt, name } = parsed.data;
  const auditLog = parsed.data.auditLog ?? new MemoryAuditLog();
  const registry = parsed.data.identities instanceof IdentityRegistry ? parsed.data.identities : IdentityRegistry.fromObject(parsed.data.identities);

  const graph = new StateGraph(GovernedAnnotation)
    .addNode("bindIdentity", createIdentityBinding({ registry, auditLog }))
    .addNode("agent", createModelNode({ model, tools, auditLog, ...(systemPrompt ? { systemPrompt } : {}) }))
    .addNode("policyGate", createPolicyGate({ policy, tools, registry, auditLog }))
    .addNode("tools", createGovernedToolNode({ tools, auditLog }))
    .addEdge(START, "bindIdentity")
    .addEdge("bindIdentity", "agent")
    .addConditionalEdges("agent", routeAfterModel, { policyGate: "policyGate", end: END })
    .addConditionalEdges("policyGate", routeAfterPolicyGate, { approval: "policyGate", tools: "tools", agent: "agent", end: END })
    .addEdge("tools", "agent");

  return guardResumes(graph.compile({ checkpointer, name }));
}
