import { HumanMessage, type BaseMessage } from "@langchain/core/messages";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import { AuditLogOption, type AuditEventInput, type AuditLog } from "../src/audit/log.js";
import { lazySealer, type Sealer } from "../src/decisions/seal.js";
import { IdentityImmutableError, IdentityResolutionError } from "../src/errors.js";
import { IdentityRegistry, IdentityRegistryOption, principalFromConfig, type AgentIdentity, type IdentityClaim } from "../src/identity/registry.js";
import { cutText } from "../src/human-tasks/refusal.js";
import { canonicalJson } from "../src/internal/canonical.js";
import { parseOptions } from "../src/internal/options.js";
import { assertSealed, EffectLedgerOption } from "../langgraph/records.js";
import { messageText } from "../langgraph/run.js";
import { hostSteps, type Step } from "../langgraph/steps.js";
import type { GovernedState } from "../langgraph/channels.js";

const IdentityBindingOptionsSchema = z
  .object({
    registry: IdentityRegistryOption,
    auditLog: AuditLogOption,
    /** The effect ledger the tool node uses: its store keeps the key that seals the bound identity. */
    ledger: EffectLedgerOption.optional(),
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
  const principal = principalFromConfig(c);
  if (!principal) throw new IdentityResolutionError("identity_missing", "The run configuration names no user (configurable.user_id)");
  return { agentId, userId: principal.id, source: principal.source };
}

/** What binding decided for one run: the identity, whether the thread is (re)bound to it now, and its events. */
export interface IdentityBindingStep {
  identity: AgentIdentity;
  /** True when the thread was unbound, or the registry's grants for its agent and human changed since it was bound. */
  newlyBound: boolean;
  events: AuditEventInput[];
}

/**
 * Whether the last message is new input from a human (not guidance a reviewer sent back through
 * eart, which arrives as a human message too).
 */
export function isNewHumanInput(messages: readonly BaseMessage[] | undefined, review?: { guidanceMessageId: string } | null): boolean {
  const last = messages?.[messages.length - 1];
  // Guidance is known by the id eart recorded for it, not by anything in the message itself.
  return last !== undefined && HumanMessage.isInstance(last) && !(last.id !== undefined && last.id === review?.guidanceMessageId);
}

/**
 * Refuses new human input on a bound thread from anyone but the human it acts for (or for another
 * agent): {@link IdentityImmutableError}. A configuration that names nobody keeps the binding.
 */
export function assertActsForBound(bound: AgentIdentity, configurable: Record<string, unknown> | undefined): void {
  const agentId = configurable?.agent_id;
  const principal = principalFromConfig(configurable);
  const otherAgent = agentId !== undefined && agentId !== bound.id;
  if (otherAgent || (principal !== undefined && principal.id !== bound.onBehalfOf.id)) {
    throw new IdentityImmutableError(bound.id, bound.onBehalfOf.id, {
      ...(typeof agentId === "string" ? { agentId } : {}),
      ...(principal ? { userId: principal.id } : {}),
    });
  }
}

/**
 * The binding rule, shared by the node and the prebuilt agent. An unbound thread takes its
 * identity from the run configuration (required). A bound thread keeps its agent and human: new
 * human input must come from the human it acts for ({@link assertActsForBound}); a resume or a
 * continuation by someone else (an approver, a reviewer) is not an identity change, and the thread
 * goes on acting for the bound human. Their grants are read again from the registry in force at
 * each step: one removed since is refused, and changed roles, tools or data scopes rebind the
 * thread (sealed again, an `identity.bound` event with `rebound: true`).
 */
export async function bindIdentityStep(
  registry: IdentityRegistry,
  state: Pick<GovernedState, "identity" | "messages"> & Partial<Pick<GovernedState, "reviewed">>,
  config: LangGraphRunnableConfig,
  threadId: string,
  options: { recordRequest: boolean; sealer: Sealer; auditLog: Pick<AuditLog, "append"> },
): Promise<IdentityBindingStep> {
  const { sealer, auditLog } = options;
  const events: AuditEventInput[] = [];
  let bound = state.identity;
  if (bound && !sealer.identityIsSealed(threadId, bound)) {
    if (bound.seal !== undefined) {
      // A seal that is not eart's: the identity was replaced behind eart's back. Nothing runs.
      await assertSealed(sealer, auditLog, threadId, "bindIdentity", bound, []);
    }
    // Planted through the state API before the thread was bound: it binds nothing.
    events.push({ threadId, type: "state.tamper_detected", data: { node: "bindIdentity", forged: [{ channel: "identity" }], outcome: "ignored" } });
    bound = undefined;
  }
  let identity: AgentIdentity;
  let rebound = false;
  if (bound) {
    if (isNewHumanInput(state.messages, state.reviewed)) assertActsForBound(bound, config.configurable);
    // The registry in force, not the one the thread was bound under: a user or agent removed since
    // is refused (IdentityResolutionError), and changed grants apply from this step on.
    const current = registry.resolve({ agentId: bound.id, userId: bound.onBehalfOf.id, source: bound.source });
    rebound = grantsDiffer(bound, current);
    identity = rebound ? sealer.rebound(threadId, bound, current) : bound;
  } else {
    identity = sealer.identity(threadId, registry.resolve(identityClaimFromConfig(config)));
  }
  if (options.recordRequest) {
    const request = [...(state.messages ?? [])].reverse().find((m) => HumanMessage.isInstance(m));
    events.push({
      threadId,
      type: "run.started",
      data: {
        agentId: identity.id,
        userId: identity.onBehalfOf.id,
        request: request ? recordedRequest(request) : null,
      },
    });
  }
  if (!bound || rebound) {
    events.push({
      threadId,
      type: "identity.bound",
      data: {
        ...(rebound ? { rebound: true } : {}),
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
  return { identity, newlyBound: !bound || rebound, events };
}

/** How much of a request's text `run.started` keeps: the rest is counted, not stored again on every turn. */
const REQUEST_TEXT_KEPT = 10_000;

/** The request as `run.started` records it: its text up to {@link REQUEST_TEXT_KEPT} characters, and when cut, its length. */
function recordedRequest(request: BaseMessage): { messageId: string | null; text: string; length?: number } {
  const text = messageText(request);
  const base = { messageId: request.id ?? null };
  if (text.length <= REQUEST_TEXT_KEPT) return { ...base, text };
  // Cut as refusals are: never through a card number or a word, which redaction would no longer know.
  return { ...base, text: cutText(text, REQUEST_TEXT_KEPT), length: text.length };
}

/** Whether the registry now grants the bound agent and human something else than when bound. */
function grantsDiffer(bound: AgentIdentity, current: AgentIdentity): boolean {
  const { seal: _seal, ...was } = bound;
  return canonicalJson(was) !== canonicalJson(current);
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
  return hostSteps<BindingState, { identity?: AgentIdentity }>(auditLog, [identityStep(registry, lazySealer(opts.ledger), auditLog, { recordRequest: () => true })]);
}

/** What identity binding reads of the state. */
type BindingState = Pick<GovernedState, "identity" | "messages"> & Partial<Pick<GovernedState, "reviewed">>;

/**
 * The identity binding as a {@link Step}: binds the thread's identity (or checks the one bound),
 * and records the run's start when `recordRequest` says so. Its update sets `identity` when the
 * thread is newly bound; the steps after it read the identity from the state they are given.
 */
export function identityStep<S extends BindingState>(
  registry: IdentityRegistry,
  sealer: () => Promise<Sealer>,
  auditLog: Pick<AuditLog, "append">,
  options: { recordRequest: (state: S) => boolean },
): Step<S, { identity?: AgentIdentity }> {
  return async (state, { config, threadId }) => {
    const step = await bindIdentityStep(registry, state, config, threadId, { recordRequest: options.recordRequest(state), sealer: await sealer(), auditLog });
    return { update: step.newlyBound ? { identity: step.identity } : {}, events: step.events };
  };
}
