import { z } from "zod";
import { canonicalJson, sha256Hex } from "./canonical.js";
import { PolicyDefinitionError } from "./errors.js";
import { AgentIdentitySchema } from "./identity.js";
import { ThreadContextSchema } from "./state.js";

export const PolicyEffectSchema = z.enum(["allow", "deny", "require_approval", "escalate"]);
export type PolicyEffect = z.output<typeof PolicyEffectSchema>;

const DecisionBase = {
  /** Human-readable reasons, one per deciding rule (or the evaluator error). */
  reasons: z.array(z.string()),
  /** Ids of the rules that decided. */
  policyIds: z.array(z.string()),
  /** Content hash of the policy set that decided. */
  version: z.string(),
};

/** What a {@link PolicyEngine} decides for one tool call. Fail closed: an evaluator error is a deny. */
export const PolicyDecisionSchema = z.discriminatedUnion("effect", [
  z.object({ effect: z.literal("allow"), ...DecisionBase }),
  z.object({ effect: z.literal("deny"), ...DecisionBase, evaluationError: z.boolean().optional() }),
  z.object({
    effect: z.literal("require_approval"),
    ...DecisionBase,
    approverRoles: z.array(z.string()).min(1),
    /** How many distinct approvers must approve; 1 when absent. */
    quorum: z.number().int().min(1).optional(),
    /** How long the approval may take, from the request; no expiry when absent. */
    expiresInMs: z.number().int().positive().optional(),
  }),
  z.object({ effect: z.literal("escalate"), ...DecisionBase }),
]);
export type PolicyDecision = z.output<typeof PolicyDecisionSchema>;

/** The question a policy answers: who (identity), what (tool and arguments), knowing what (context). */
export const PolicyRequestSchema = z.object({
  identity: AgentIdentitySchema,
  tool: z.object({ name: z.string(), args: z.record(z.string(), z.unknown()) }),
  context: ThreadContextSchema,
  threadId: z.string().optional(),
});
export type PolicyRequest = z.output<typeof PolicyRequestSchema>;

/**
 * The contract every policy engine implements (typed rules, Cedar).
 * @example
 * ```ts
 * const decision = await engine.decide({ identity, tool: { name: "issue_refund", args: { amount: 740 } }, context });
 * if (decision.effect === "require_approval") console.log(decision.approverRoles);
 * ```
 */
export interface PolicyEngine {
  /** Content hash of the policy set; carried by every decision. */
  readonly version: string;
  decide(request: PolicyRequest): PolicyDecision | Promise<PolicyDecision>;
}

const isFunction = (v: unknown): v is (...args: never[]) => unknown => typeof v === "function";

const PolicyRuleSchema = z
  .object({
    id: z.string().min(1),
    description: z.string().optional(),
    /** Tool names the rule applies to; omitted or `"*"` for every tool. */
    tools: z.union([z.literal("*"), z.array(z.string().min(1)).min(1)]).default("*"),
    /** Extra condition over the request; the rule matches when it returns true. */
    when: z.custom<(request: PolicyRequest) => boolean>(isFunction, "must be a function").optional(),
    effect: PolicyEffectSchema,
    /** Why, as shown to the model, the approver and the audit log. */
    reason: z.union([z.string(), z.custom<(request: PolicyRequest) => string>(isFunction, "must be a string or a function")]).optional(),
    approverRoles: z.array(z.string().min(1)).min(1).optional(),
    /** For `require_approval`: distinct approvers needed (default 1). */
    quorum: z.number().int().min(1).optional(),
    /** For `require_approval`: milliseconds the approvers have, from the request. */
    expiresIn: z.number().int().positive().optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    if (rule.effect === "require_approval" && !rule.approverRoles) {
      ctx.addIssue({ code: "custom", path: ["approverRoles"], message: "a require_approval rule must name approverRoles" });
    }
    if (rule.effect !== "require_approval" && rule.quorum !== undefined) {
      ctx.addIssue({ code: "custom", path: ["quorum"], message: "only a require_approval rule can have a quorum" });
    }
    if (rule.effect !== "require_approval" && rule.expiresIn !== undefined) {
      ctx.addIssue({ code: "custom", path: ["expiresIn"], message: "only a require_approval rule can expire" });
    }
  });

const PolicyDefinitionSchema = z
  .object({
    /** Name of the policy set, recorded with its version. */
    name: z.string().min(1).default("policy"),
    rules: z.array(PolicyRuleSchema),
  })
  .strict();

export type PolicyRule = z.input<typeof PolicyRuleSchema>;
export type PolicyDefinition = z.input<typeof PolicyDefinitionSchema>;
type CompiledRule = z.output<typeof PolicyRuleSchema>;

/** Policy id reported when no rule matched. */
export const DEFAULT_DENY_POLICY_ID = "eart.default-deny";

/**
 * Typed policy rules written in TypeScript: the fast default {@link PolicyEngine}.
 *
 * Matching rules combine as: any `deny` → deny; else any `escalate` → escalate; else any `allow`
 * → allow; else any `require_approval` → require_approval (approver roles of all of them, the
 * largest `quorum` of distinct approvers and the shortest `expiresIn` among them); no
 * match → deny (default deny). A rule whose `when` throws makes the decision `deny` with the error
 * in `reasons` (fail closed). The version is the SHA-256 of the rule set, condition sources
 * included, so any edit changes it.
 * @example
 * ```ts
 * const policy = definePolicy({
 *   name: "refunds",
 *   rules: [
 *     { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
 *     { id: "refund.small", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) <= 100, effect: "allow" },
 *     { id: "refund.medium", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) <= 5000,
 *       effect: "require_approval", approverRoles: ["supervisor"], reason: "Refunds over $100 need a supervisor" },
 *   ],
 * });
 * ```
 */
export function definePolicy(definition: PolicyDefinition): PolicyEngine {
  const parsed = PolicyDefinitionSchema.safeParse(definition);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const index = typeof issue.path[1] === "number" ? issue.path[1] : undefined;
    const ruleId = index !== undefined ? (definition.rules?.[index] as { id?: string } | undefined)?.id : undefined;
    throw new PolicyDefinitionError(`Invalid policy at ${issue.path.join(".") || "(root)"}: ${issue.message}`, ruleId);
  }
  const ids = new Set<string>();
  for (const rule of parsed.data.rules) {
    if (ids.has(rule.id)) throw new PolicyDefinitionError(`Duplicate policy rule id "${rule.id}"`, rule.id);
    ids.add(rule.id);
  }
  // Rules indexed by tool once, in their order: a decision looks only at the rules that can apply.
  const rules: CompiledRule[] = parsed.data.rules;
  const anyTool = rules.filter((r) => r.tools === "*");
  const byTool = new Map<string, CompiledRule[]>();
  for (const rule of rules) {
    if (rule.tools === "*") continue;
    for (const tool of rule.tools) byTool.set(tool, []);
  }
  for (const [tool, list] of byTool) list.push(...rules.filter((r) => r.tools === "*" || r.tools.includes(tool)));
  const version = sha256Hex(
    canonicalJson({
      name: parsed.data.name,
      rules: parsed.data.rules.map((r) => ({
        id: r.id,
        description: r.description ?? null,
        tools: r.tools,
        effect: r.effect,
        approverRoles: r.approverRoles ?? null,
        quorum: r.quorum ?? null,
        expiresIn: r.expiresIn ?? null,
        when: r.when ? r.when.toString() : null,
        reason: typeof r.reason === "function" ? r.reason.toString() : (r.reason ?? null),
      })),
    }),
  );

  const reasonOf = (rule: CompiledRule, request: PolicyRequest): string => {
    if (typeof rule.reason === "string") return rule.reason;
    if (typeof rule.reason === "function") return rule.reason(request);
    return rule.description ?? `rule ${rule.id}: ${rule.effect}`;
  };

  const engine: PolicyEngine = {
    version,
    decide(request: PolicyRequest): PolicyDecision {
      const matched: Record<PolicyEffect, CompiledRule[]> = { allow: [], deny: [], require_approval: [], escalate: [] };
      for (const rule of byTool.get(request.tool.name) ?? anyTool) {
        try {
          if (rule.when && rule.when(request) !== true) continue;
        } catch (error) {
          return {
            effect: "deny",
            reasons: [`policy rule ${rule.id} failed to evaluate: ${(error as Error)?.message ?? String(error)}`],
            policyIds: [rule.id],
            version,
            evaluationError: true,
          };
        }
        matched[rule.effect].push(rule);
      }
      const effect: PolicyEffect | undefined = (["deny", "escalate", "allow", "require_approval"] as const).find(
        (e) => matched[e].length > 0,
      );
      if (!effect) {
        return {
          effect: "deny",
          reasons: [`no policy rule allows ${request.tool.name} (default deny)`],
          policyIds: [DEFAULT_DENY_POLICY_ID],
          version,
        };
      }
      const deciding = matched[effect];
      try {
        const base = { reasons: deciding.map((r) => reasonOf(r, request)), policyIds: deciding.map((r) => r.id), version };
        if (effect === "require_approval") {
          const quorum = Math.max(...deciding.map((r) => r.quorum ?? 1));
          const expiries = deciding.flatMap((r) => (r.expiresIn !== undefined ? [r.expiresIn] : []));
          return {
            effect,
            ...base,
            approverRoles: [...new Set(deciding.flatMap((r) => r.approverRoles ?? []))],
            ...(quorum > 1 ? { quorum } : {}),
            ...(expiries.length > 0 ? { expiresInMs: Math.min(...expiries) } : {}),
          };
        }
        return { effect, ...base };
      } catch (error) {
        return {
          effect: "deny",
          reasons: [`policy reason failed to evaluate: ${(error as Error)?.message ?? String(error)}`],
          policyIds: deciding.map((r) => r.id),
          version,
          evaluationError: true,
        };
      }
    },
  };
  wellFormedEngines.add(engine);
  return engine;
}

/** Engines built here, whose decisions are well formed by construction. */
const wellFormedEngines = new WeakSet<PolicyEngine>();

/**
 * Runs an engine and guarantees a valid decision: an engine that throws, rejects or returns
 * something malformed yields `deny` (fail closed).
 * @example
 * ```ts
 * const decision = await decideFailClosed(engine, request);
 * ```
 */
export async function decideFailClosed(engine: PolicyEngine, request: PolicyRequest): Promise<PolicyDecision> {
  let raw: unknown;
  try {
    raw = await engine.decide(request);
  } catch (error) {
    return {
      effect: "deny",
      reasons: [`policy engine failed: ${(error as Error)?.message ?? String(error)}`],
      policyIds: [],
      version: safeVersion(engine),
      evaluationError: true,
    };
  }
  if (wellFormedEngines.has(engine)) return raw as PolicyDecision;
  const parsed = PolicyDecisionSchema.safeParse(raw);
  if (!parsed.success) {
    return {
      effect: "deny",
      reasons: [`policy engine returned an invalid decision: ${parsed.error.issues[0]?.message ?? "unknown"}`],
      policyIds: [],
      version: safeVersion(engine),
      evaluationError: true,
    };
  }
  return parsed.data;
}

function safeVersion(engine: PolicyEngine): string {
  try {
    return typeof engine.version === "string" ? engine.version : "unknown";
  } catch {
    return "unknown";
  }
}
