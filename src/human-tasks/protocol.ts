import { z } from "zod";
import { ApprovalError } from "../errors.js";
import type { AgentIdentity, IdentityRegistry, Principal } from "../identity/registry.js";

/**
 * The human-task protocol shared by approvals, recoveries and escalations: one request envelope
 * (what every interrupt value of eart carries), one answer check (the authenticated principal,
 * roles, no self-decision, one decision per pending call, digests) and the lookup of what waits.
 */

/** The kinds of human task, as the `type` of their interrupt value. */
export const HUMAN_TASK_TYPES = ["eart.approval", "eart.recovery", "eart.escalation"] as const;
export type HumanTaskType = (typeof HUMAN_TASK_TYPES)[number];

/** Who the task is about: the agent and the user it acts for. */
export const RequesterSchema = z.object({ agentId: z.string(), userId: z.string() });

/**
 * The envelope every eart human task carries, whatever its kind: an inbox, a UI or a CLI can list,
 * route and show any of them from these fields alone.
 * @example
 * ```ts
 * const task = pendingHumanTask(await agent.getState(config));
 * if (task && registry.userHasAnyRole(me, task.roles)) show(task.type, task.requestedBy, task.since);
 * ```
 */
export const HumanTaskEnvelopeSchema = z.object({
  type: z.enum(HUMAN_TASK_TYPES),
  threadId: z.string(),
  /** The agent and the user the task is about; they may not answer it. */
  requestedBy: RequesterSchema,
  /** When the oldest thing the task is about started waiting (ISO). */
  since: z.string(),
  /**
   * Roles that may answer (any one of them). For an approval, each call's `approverRoles` decide
   * that call; these are their union.
   */
  roles: z.array(z.string()),
});
export type HumanTaskEnvelope = z.output<typeof HumanTaskEnvelopeSchema>;

/** The fields every pending call of a task carries (approvals and recoveries). */
export const HumanTaskItemSchema = z.object({
  toolCallId: z.string(),
  name: z.string(),
  args: z.record(z.string(), z.unknown()),
  /** `toolCallDigest(name, args, threadId)`: what an answer is bound to. */
  digest: z.string(),
  requestedBy: RequesterSchema,
});

/**
 * The first interrupt value of a paused run that matches `schema`: from `invoke`'s result
 * (`__interrupt__`) or from `graph.getState(config)` (`tasks[].interrupts`).
 * @example
 * ```ts
 * const request = interruptValueOf(await graph.getState(config), ApprovalRequestSchema);
 * ```
 */
export function interruptValueOf<S extends z.ZodType>(source: unknown, schema: S): z.output<S> | undefined {
  for (const value of interruptValues(source)) {
    const parsed = schema.safeParse(value);
    if (parsed.success) return parsed.data;
  }
  return undefined;
}

/**
 * The raw interrupt values of a paused run, unparsed: from `invoke`'s result (`__interrupt__`) or
 * from `graph.getState(config)` (`tasks[].interrupts`).
 */
export function interruptValues(source: unknown): unknown[] {
  const s = source as { __interrupt__?: { value?: unknown }[]; tasks?: { interrupts?: { value?: unknown }[] }[] } | undefined;
  return [...(s?.__interrupt__ ?? []), ...(s?.tasks ?? []).flatMap((t) => t.interrupts ?? [])].map((i) => i?.value);
}

/**
 * What waits for a human on a paused run, whatever its kind (approval, recovery or escalation),
 * read through the shared envelope; undefined when nothing does. Narrow with `pendingApproval`,
 * `pendingRecovery` or `pendingEscalation` for the kind's own fields.
 * @example
 * ```ts
 * const task = pendingHumanTask(await agent.getState({ configurable: { thread_id } }));
 * // { type: "eart.approval", threadId, requestedBy: { agentId, userId }, since, roles: ["supervisor"], … }
 * ```
 */
export function pendingHumanTask(source: unknown): (HumanTaskEnvelope & Record<string, unknown>) | undefined {
  return interruptValueOf(source, HumanTaskEnvelopeSchema.passthrough());
}

/** Builds the envelope of a task about pending calls: the requester, the oldest wait, the roles. */
export function envelopeOf(
  type: HumanTaskType,
  threadId: string,
  items: readonly { requestedBy: { agentId: string; userId: string }; since: string }[],
  roles: readonly string[],
): HumanTaskEnvelope {
  const since = items.map((i) => i.since).reduce((a, b) => (b < a ? b : a));
  return { type, threadId, requestedBy: { ...items[0]!.requestedBy }, since, roles: [...new Set(roles)] };
}

/**
 * A human named in an answer. Never who answers: that is the resuming run's authenticated
 * principal. When present it must name that principal (a cross-check).
 */
export const NamedHumanSchema = z.object({ id: z.string().min(1) }).strict();

/** What a human answer is checked against: the registry, the thread's identity, and who answers. */
export interface HumanAnswerDeps {
  registry: IdentityRegistry;
  identity: AgentIdentity;
  /** The authenticated principal of the resuming run (`principalFromConfig`). */
  principal: Principal | undefined;
}

/**
 * Parses a human's resume value with its schema, or throws `approval_resume_invalid` naming the
 * first bad path.
 */
export function parseHumanAnswer<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new ApprovalError("approval_resume_invalid", `Malformed ${what} at ${issue.path.join(".") || "(root)"}: ${issue.message}`, {
    path: issue.path.map(String),
  });
}

/**
 * The one place a human answer is authenticated and authorised: the human is the resuming run's
 * principal (none: `approval_unauthenticated`); a name in the payload is only a cross-check and
 * must be that principal (`approval_principal_mismatch`); not the user the agent acts for, nor the
 * agent (`approval_self_approval`); a user the registry knows, holding one of `roles` when given
 * (`approval_unauthorized`). Returns the human's id. Throws {@link ApprovalError}.
 * @example
 * ```ts
 * const approverId = authenticateHuman(response.approver, ["supervisor"], { registry, identity, principal }, { verb: "approve", object: "approver" });
 * ```
 */
export function authenticateHuman(
  named: { id: string } | undefined,
  roles: readonly string[] | undefined,
  deps: HumanAnswerDeps,
  what: { verb: string; object: string },
): string {
  const { principal } = deps;
  if (!principal) {
    throw new ApprovalError(
      "approval_unauthenticated",
      `Nobody is authenticated on this resume: the ${what.object} is the run's principal (configurable.langgraph_auth_user, or user_id set by a trusted app), never a name in the payload`,
      { ...(named ? { named: named.id } : {}) },
    );
  }
  const humanId = principal.id;
  if (named && named.id !== humanId) {
    throw new ApprovalError("approval_principal_mismatch", `The answer names ${what.object} "${named.id}" but was sent by "${humanId}"`, {
      approverId: humanId,
      named: named.id,
    });
  }
  if (humanId === deps.identity.onBehalfOf.id || humanId === deps.identity.id) {
    throw new ApprovalError("approval_self_approval", `"${humanId}" cannot ${what.verb} an action requested on their own behalf`, { approverId: humanId });
  }
  if (!deps.registry.getUser(humanId)) throw new ApprovalError("approval_unauthorized", `Unknown ${what.object} "${humanId}"`, { approverId: humanId });
  if (roles !== undefined && !deps.registry.userHasAnyRole(humanId, roles)) {
    throw new ApprovalError("approval_unauthorized", `"${humanId}" holds none of the roles that may ${what.verb} this (${roles.join(", ")})`, {
      approverId: humanId,
      roles,
    });
  }
  return humanId;
}

/**
 * Checks that an answer has exactly one decision per pending item, keyed by `toolCallId`.
 * Throws `approval_decisions_mismatch`.
 */
export function assertOneDecisionPerItem(decisions: readonly { toolCallId: string }[], pending: readonly string[], what: string): void {
  const items = new Set(pending);
  const seen = new Set<string>();
  for (const d of decisions) {
    if (!items.has(d.toolCallId)) {
      throw new ApprovalError("approval_decisions_mismatch", `No pending ${what} for tool call "${d.toolCallId}"`, { toolCallId: d.toolCallId, pending: [...items] });
    }
    if (seen.has(d.toolCallId)) {
      throw new ApprovalError("approval_decisions_mismatch", `More than one decision for tool call "${d.toolCallId}"`, { toolCallId: d.toolCallId });
    }
    seen.add(d.toolCallId);
  }
  const missing = pending.filter((id) => !seen.has(id));
  if (missing.length > 0) {
    throw new ApprovalError("approval_decisions_mismatch", `Every pending call needs a decision; missing: ${missing.join(", ")}`, {
      toolCallId: missing[0],
      missing,
    });
  }
}

/**
 * Checks each decision's digest against its pending item's: the human saw this exact call on
 * this thread. Throws `approval_digest_mismatch`.
 */
export function assertDigests(decisions: readonly { toolCallId: string; digest: string }[], items: ReadonlyMap<string, { digest: string }>): void {
  for (const d of decisions) {
    const expected = items.get(d.toolCallId)!.digest;
    if (d.digest !== expected) {
      throw new ApprovalError("approval_digest_mismatch", `The decision for "${d.toolCallId}" was made for a different call`, {
        toolCallId: d.toolCallId,
        expected,
        found: d.digest,
      });
    }
  }
}

/**
 * The answer check every human task goes through, in this order: one decision per pending call
 * (for tasks about calls), the human (the resuming run's principal, or the signer of the answer's
 * tokens; see {@link authenticateHuman}), the roles (the task's, or each call's own), and each
 * decision's digest. Returns the human's id. Throws {@link ApprovalError}.
 * @example
 * ```ts
 * const humanId = checkHumanAnswer({ named: response.resolver, decisions: response.decisions, items, roles: request.roles }, deps, { verb: "resolve", object: "resolver", task: "recovery" });
 * ```
 */
export function checkHumanAnswer<I extends { toolCallId: string; digest: string }>(
  answer: {
    named: { id: string } | undefined;
    /** The answer's decisions, for a task about pending calls. */
    decisions?: readonly { toolCallId: string; digest: string }[];
    items?: ReadonlyMap<string, I>;
    /** Roles that may answer the whole task; omit when `itemRoles` decide each call. */
    roles?: readonly string[];
    itemRoles?: (item: I) => readonly string[];
    /** Authenticates the answer instead of the run's principal (a signed token's signer). */
    principal?: () => Principal | undefined;
  },
  deps: HumanAnswerDeps,
  what: { verb: string; object: string; task: string },
): string {
  const { decisions, items } = answer;
  if (decisions && items) assertOneDecisionPerItem(decisions, [...items.keys()], what.task);
  const signer = answer.principal?.();
  const humanId = authenticateHuman(answer.named, answer.roles, signer ? { ...deps, principal: signer } : deps, what);
  if (decisions && items) {
    if (answer.itemRoles) {
      for (const d of decisions) {
        const item = items.get(d.toolCallId)!;
        const roles = answer.itemRoles(item);
        if (!deps.registry.userHasAnyRole(humanId, roles)) {
          throw new ApprovalError("approval_unauthorized", `"${humanId}" holds none of the roles that may decide ${(item as { name?: string }).name ?? d.toolCallId} (${roles.join(", ")})`, {
            toolCallId: d.toolCallId,
            approverId: humanId,
            approverRoles: roles,
          });
        }
      }
    }
    assertDigests(decisions, items);
  }
  return humanId;
}
