import { HumanMessage } from "@langchain/core/messages";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import {
  canonicalJson,
  EartConfigError,
  IdentityImmutableError,
  IdentityRegistry,
  IdentityResolutionError,
  type AgentIdentity,
  type AuditLog,
  type IdentityClaim,
} from "../src/index.js";
import { messageText, requireThreadId } from "./runtime.js";
import type { GovernedState } from "./state.js";

const IdentityBindingOptionsSchema = z
  .object({
    registry: z.custom<IdentityRegistry>((v) => v instanceof IdentityRegistry, "must be an IdentityRegistry"),
    auditLog: z.custom<AuditLog>((v) => typeof (v as AuditLog)?.append === "function", "must be an AuditLog"),
  })
  .strict();
export type IdentityBindingOptions = z.input<typeof IdentityBindingOptionsSchema>;

/**
 * Reads who is acting from trusted run configuration: `configurable.agent_id`, and the human
 * from LangGraph server's authenticated `configurable.langgraph_auth_user` when present (it wins),
 * else `configurable.user_id`. Never from messages or model output.
 * @example
 * ```ts
 * identityClaimFromConfig({ configurable: { agent_id: "support-agent", user_id: "cara" } })
 * ```
 */
export function identityClaimFromConfig(config: LangGraphRunnableConfig | undefined): IdentityClaim {
  const c = config?.configurable ?? {};
  const agentId = c.agent_id;
  if (typeof agentId !== "string" || agentId === "") {
    throw new IdentityResolutionError("identity_missing", "The run configuration names no agent (configurable.agent_id)");
  }
  const authUser = c.langgraph_auth_user as unknown;
  if (authUser !== undefined && authUser !== null) {
    const id =
      typeof authUser === "string"
        ? authUser
        : ((authUser as { identity?: unknown }).identity ?? (authUser as { id?: unknown }).id);
    if (typeof id !== "string" || id === "") {
      throw new IdentityResolutionError("identity_missing", "configurable.langgraph_auth_user carries no identity");
    }
    return { agentId, userId: id, source: "configurable.langgraph_auth_user" };
  }
  const userId = c.user_id;
  if (typeof userId !== "string" || userId === "") {
    throw new IdentityResolutionError("identity_missing", "The run configuration names no user (configurable.user_id)");
  }
  return { agentId, userId, source: "configurable.user_id" };
}

/**
 * Node that binds the thread's identity once, from trusted configuration, and records the start
 * of each run. An unknown agent or user throws before anything else runs; a run whose
 * configuration names a different agent or user than the one bound to the thread throws
 * {@link IdentityImmutableError}.
 * @example
 * ```ts
 * graph.addNode("bindIdentity", createIdentityBinding({ registry, auditLog }))
 *      .addEdge(START, "bindIdentity");
 * await app.invoke({ messages: [new HumanMessage("refund order 1042")] },
 *   { configurable: { thread_id: "t1", agent_id: "support-agent", user_id: "cara" } });
 * ```
 */
export function createIdentityBinding(options: IdentityBindingOptions) {
  const parsed = IdentityBindingOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new EartConfigError(String(issue.path[0] ?? "options"), issue.message);
  }
  const { registry, auditLog } = parsed.data;

  return async function bindIdentity(
    state: Pick<GovernedState, "identity" | "messages">,
    config: LangGraphRunnableConfig,
  ): Promise<{ identity?: AgentIdentity }> {
    const threadId = requireThreadId(config);
    const identity = registry.resolve(identityClaimFromConfig(config));
    const bound = state.identity;
    if (bound && canonicalJson(bound) !== canonicalJson(identity)) {
      throw new IdentityImmutableError(bound.id, bound.onBehalfOf.id, { agentId: identity.id, userId: identity.onBehalfOf.id });
    }
    const request = [...(state.messages ?? [])].reverse().find((m) => HumanMessage.isInstance(m));
    await auditLog.append([
      {
        threadId,
        type: "run.started",
        data: {
          agentId: identity.id,
          userId: identity.onBehalfOf.id,
          request: request ? { messageId: request.id ?? null, text: messageText(request) } : null,
        },
      },
      ...(bound
        ? []
        : [
            {
              threadId,
              type: "identity.bound" as const,
              data: {
                agentId: identity.id,
                agentRoles: identity.roles,
                userId: identity.onBehalfOf.id,
                userRoles: identity.onBehalfOf.roles,
                tools: identity.tools,
                dataScopes: identity.dataScopes,
                source: identity.source,
              },
            },
          ]),
    ]);
    return bound ? {} : { identity };
  };
}
