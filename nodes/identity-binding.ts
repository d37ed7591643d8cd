import { HumanMessage } from "@langchain/core/messages";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import {
  AuditLogOption,
  IdentityImmutableError,
  IdentityRegistry,
  IdentityRegistryOption,
  IdentityResolutionError,
  parseOptions,
  type AgentIdentity,
  type AuditEventInput,
  type IdentityClaim,
} from "../src/index.js";
import { messageText, requireThreadId } from "./runtime.js";
import type { GovernedState } from "./state.js";

const IdentityBindingOptionsSchema = z
  .object({
    registry: IdentityRegistryOption,
    auditLog: AuditLogOption,
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

/** Whether two resolved identities are the same, field by field (cheaper than canonical JSON). */
function sameIdentity(a: AgentIdentity, b: AgentIdentity): boolean {
  const sameList = (x: readonly string[], y: readonly string[]) => x.length === y.length && x.every((v, i) => v === y[i]);
  return (
    a.schemaVersion === b.schemaVersion &&
    a.id === b.id &&
    a.source === b.source &&
    a.onBehalfOf.id === b.onBehalfOf.id &&
    sameList(a.roles, b.roles) &&
    sameList(a.tools, b.tools) &&
    sameList(a.dataScopes, b.dataScopes) &&
    sameList(a.onBehalfOf.roles, b.onBehalfOf.roles)
  );
}

/** What binding decided for one run: the identity, whether it is new to the thread, and its events. */
export interface IdentityBindingStep {
  identity: AgentIdentity;
  newlyBound: boolean;
  events: AuditEventInput[];
}

/**
 * The binding rule, shared by the node and the prebuilt agent. An unbound thread takes its
 * identity from the run configuration (required). A bound thread keeps it: configuration that
 * names an agent or user must name the same ones, and configuration that names none (an approver
 * resuming) leaves it as it is.
 */
export function bindIdentityStep(
  registry: IdentityRegistry,
  state: Pick<GovernedState, "identity" | "messages">,
  config: LangGraphRunnableConfig,
  threadId: string,
  options: { recordRequest: boolean },
): IdentityBindingStep {
  const bound = state.identity;
  const c = config.configurable ?? {};
  const named = c.agent_id !== undefined || c.user_id !== undefined || c.langgraph_auth_user !== undefined;
  let identity: AgentIdentity;
  if (bound && !named) {
    identity = bound;
  } else {
    identity = registry.resolve(identityClaimFromConfig(config));
    if (bound && !sameIdentity(bound, identity)) {
      throw new IdentityImmutableError(bound.id, bound.onBehalfOf.id, { agentId: identity.id, userId: identity.onBehalfOf.id });
    }
  }
  const events: AuditEventInput[] = [];
  if (options.recordRequest) {
    const request = [...(state.messages ?? [])].reverse().find((m) => HumanMessage.isInstance(m));
    events.push({
      threadId,
      type: "run.started",
      data: {
        agentId: identity.id,
        userId: identity.onBehalfOf.id,
        request: request ? { messageId: request.id ?? null, text: messageText(request) } : null,
      },
    });
  }
  if (!bound) {
    events.push({
      threadId,
      type: "identity.bound",
      data: {
        agentId: identity.id,
        agentRoles: identity.roles,
        userId: identity.onBehalfOf.id,
        userRoles: identity.onBehalfOf.roles,
        tools: identity.tools,
        dataScopes: identity.dataScopes,
        source: identity.source,
      },
    });
  }
  return { identity, newlyBound: !bound, events };
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
  const opts = parseOptions(IdentityBindingOptionsSchema, options);
  const { registry, auditLog } = opts;

  return async function bindIdentity(
    state: Pick<GovernedState, "identity" | "messages">,
    config: LangGraphRunnableConfig,
  ): Promise<{ identity?: AgentIdentity }> {
    const threadId = requireThreadId(config);
    const step = bindIdentityStep(registry, state, config, threadId, { recordRequest: true });
    await auditLog.append(step.events);
    return step.newlyBound ? { identity: step.identity } : {};
  };
}
