import { z } from "zod";
import { canonicalJson, hasReadableSource, jsonProblem } from "../internal/canonical.js";
import { PolicyDefinitionError } from "../errors.js";
import { AgentIdentitySchema } from "../identity/registry.js";
import { ThreadContextSchema } from "../decisions/records.js";
import {
  compileRules,
  describeRules,
  parseRuleSet,
  PolicyEffectSchema,
  RuleIdSchema,
  RuleToolsSchema,
  type PolicyDescription,
  type PolicyEffect,
  type RuleSetKind,
} from "./rules.js";

// The effect vocabulary and the description are shared with budgets, so they live with the rule compiler.
export { PolicyDescriptionSchema, PolicyEffectSchema, type PolicyDescription, type PolicyEffect } from "./rules.js";

const DecisionBase = {
  /** Human-readable reasons, one per deciding rule (or the evaluator error). */
  reasons: z.array(z.string()),
  /** Ids of the rules that decided. */
  policyIds: z.array(z.string()),
  /** Content hash of the policy set that decided. */
  version: z.string(),
};

/** What a {@link PolicyEngine} decides for one tool call. Fail closed: an evaluator error is a deny. */
/**
 * The longest an approval may wait: a year (366 days). A longer expiry is a mistake, and one past
 * the last date a `Date` holds would fail every call it decides.
 */
export const MAX_APPROVAL_EXPIRY_MS = 366 * 24 * 60 * 60 * 1000;

export const PolicyDecisionSchema = z.discriminatedUnion("effect", [
  z.object({ effect: z.literal("allow"), ...DecisionBase }),
  z.object({ effect: z.literal("deny"), ...DecisionBase, evaluationError: z.boolean().optional() }),
  z.object({
    effect: z.literal("require_approval"),
    ...DecisionBase,
    approverRoles: z.array(z.string()).min(1),
    /** How many distinct approvers must approve; 1 when absent. */
    quorum: z.number().int().min(1).optional(),
    /**
     * Requirements that must each be met, beside the quorum: every group needs an approval by a
     * holder of one of its roles (one approver holding roles of several groups meets them all).
     * eart sets it when a budget's approvers are needed beside policy's: `[policy's roles, the
     * budget's roles]`. Absent: any one of `approverRoles` meets the requirement.
     */
    approverGroups: z.array(z.array(z.string()).min(1)).optional(),
    /**
     * The roles whose holders make up the quorum, when not all of `approverRoles`: eart sets it to
     * policy's roles when a budget's approvers are needed beside them (a budget's approver meets
     * its group, never a place in policy's quorum). Absent: holders of any of `approverRoles`.
     */
    quorumRoles: z.array(z.string()).optional(),
    /** How long the approval may take, from the request (at most a year); no expiry when absent. */
    expiresInMs: z.number().int().positive().max(MAX_APPROVAL_EXPIRY_MS, "an approval may wait at most a year").optional(),
    /** The answers an approver may give (`approve` always among them); every kind when absent. */
    allowedDecisions: z.array(z.enum(["approve", "edit", "reject", "respond"])).optional(),
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
  /**
   * What the rules name, for the checks `createGovernedAgent` makes when it builds an agent (a
   * rule naming a tool the agent does not have, an approver role nobody holds). Optional: an
   * engine without it is not cross-checked. Engines from {@link definePolicy} have it.
   */
  describe?(): PolicyDescription;
}

const isFunction = (v: unknown): v is (...args: never[]) => unknown => typeof v === "function";

/** Functions whose call never returns a plain value: an async function returns a Promise, a generator an iterator. */
const NOT_SYNCHRONOUS = new Set(["[object AsyncFunction]", "[object GeneratorFunction]", "[object AsyncGeneratorFunction]"]);

/**
 * A function that can answer synchronously. Only what the runtime shows is caught here (an
 * `async function`, a generator); an async function compiled down to a plain one is caught at
 * decision time instead, where a Promise it returns denies.
 */
const isSynchronousFunction = (v: unknown): v is (...args: never[]) => unknown =>
  isFunction(v) && !NOT_SYNCHRONOUS.has(Object.prototype.toString.call(v));

/**
 * Configuration a policy's rules depend on (limits, thresholds, lists): plain JSON, hashed into
 * the policy version and handed, frozen, to every `when` and `reason`.
 */
export type PolicyConfig = Readonly<Record<string, unknown>>;

const ConditionSchema = z
  .custom<(request: PolicyRequest, config: PolicyConfig) => boolean>(isFunction, "must be a function")
  .refine(isSynchronousFunction, "must be a synchronous function returning true or false: an async function returns a Promise, which decides nothing");

const ReasonFunctionSchema = z
  .custom<(request: PolicyRequest, config: PolicyConfig) => string>(isFunction, "must be a string or a function")
  .refine(isSynchronousFunction, "must be a string or a synchronous function returning a string, not an async function");

const PolicyRuleSchema = z
  .object({
    id: RuleIdSchema,
    description: z.string().optional(),
    /** Tool names the rule applies to; omitted or `"*"` for every tool. */
    tools: RuleToolsSchema.default("*"),
    /**
     * Extra condition over the request and the policy's `config`; the rule matches when it
     * returns `true`, and does not when it returns `false`. Anything else (a Promise, `1`,
     * `"yes"`, `undefined`) or a throw makes the decision deny.
     */
    when: ConditionSchema.optional(),
    effect: PolicyEffectSchema,
    /** Why, as shown to the model, the approver and the audit log. */
    reason: z.union([z.string(), ReasonFunctionSchema]).optional(),
    approverRoles: z.array(z.string().min(1)).min(1).optional(),
    /** For `require_approval`: distinct approvers needed (default 1). */
    quorum: z.number().int().min(1).optional(),
    /** For `require_approval`: milliseconds the approvers have, from the request. */
    expiresIn: z.number().int().positive().max(MAX_APPROVAL_EXPIRY_MS, "an approval may wait at most a year (366 days)").optional(),
    /**
     * For `require_approval`: the answers an approver may give, `approve` among them (say
     * `["approve", "reject"]` where a call must not be edited). Default: approve, edit, reject, respond.
     */
    allowedDecisions: z.array(z.enum(["approve", "edit", "reject", "respond"])).min(1).optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    if (rule.effect === "require_approval" && !rule.approverRoles) {
      ctx.addIssue({ code: "custom", path: ["approverRoles"], message: "a require_approval rule must name approverRoles" });
    }
    // Ignored on any other effect, so almost always a rule meant to ask for an approval.
    if (rule.effect !== "require_approval" && rule.approverRoles !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["approverRoles"],
        message: `only a require_approval rule asks approvers; this rule's effect is "${rule.effect}": make it effect "require_approval", or remove approverRoles`,
      });
    }
    if (rule.allowedDecisions !== undefined && rule.effect !== "require_approval") {
      ctx.addIssue({ code: "custom", path: ["allowedDecisions"], message: "only a require_approval rule takes answers" });
    }
    if (rule.allowedDecisions !== undefined && !rule.allowedDecisions.includes("approve")) {
      ctx.addIssue({ code: "custom", path: ["allowedDecisions"], message: `must include "approve": a call nobody may approve is a deny rule` });
    }
    if (rule.effect !== "require_approval" && rule.quorum !== undefined) {
      ctx.addIssue({ code: "custom", path: ["quorum"], message: "only a require_approval rule can have a quorum" });
    }
    if (rule.effect !== "require_approval" && rule.expiresIn !== undefined) {
      ctx.addIssue({ code: "custom", path: ["expiresIn"], message: "only a require_approval rule can expire" });
    }
  });

/** How deep a policy's `config` may nest. */
const MAX_CONFIG_DEPTH = 32;

const PolicyDefinitionSchema = z
  .object({
    /** Name of the policy set, recorded with its version. */
    name: z.string().min(1).default("policy"),
    rules: z.array(PolicyRuleSchema),
    /**
     * What the rules read besides the request (a refund limit, a list of blocked countries), as
     * plain JSON: part of the version, and passed frozen to every `when` and `reason` as their
     * second argument. A value a rule reads from a closure or the environment is not in its
     * source, so it would not change the version: declare it here.
     */
    config: z.record(z.string(), z.unknown()).optional(),
    /**
     * A version you declare for what the rules depend on outside this definition (a config
     * file's hash, a deploy id). Folded into the version; it does not replace the hash.
     */
    version: z.string().min(1).optional(),
  })
  .strict();

/** One typed rule; `C` is the type of the policy's `config`. */
export type PolicyRule<C extends PolicyConfig = PolicyConfig> = Omit<z.input<typeof PolicyRuleSchema>, "when" | "reason"> & {
  when?: (request: PolicyRequest, config: C) => boolean;
  reason?: string | ((request: PolicyRequest, config: C) => string);
};
/** What {@link definePolicy} takes; `C` is the type of `config`, inferred from it. */
export type PolicyDefinition<C extends PolicyConfig = PolicyConfig> = Omit<z.input<typeof PolicyDefinitionSchema>, "rules" | "config"> & {
  rules: PolicyRule<C>[];
  config?: C;
};
type CompiledRule = z.output<typeof PolicyRuleSchema>;

const POLICY: RuleSetKind = { definition: "policy", rule: "policy rule", rulesAt: "rules", quoteRuleId: false };

/** A frozen copy of plain JSON, so that no rule can change what the version was computed from. */
function frozenCopy<T>(value: T): T {
  if (typeof value !== "object" || value === null) return value;
  const copy = (Array.isArray(value) ? value.map(frozenCopy) : Object.fromEntries(Object.entries(value).map(([k, v]) => [k, frozenCopy(v)]))) as T;
  return Object.freeze(copy);
}

/** What a misbehaving condition or reason returned, for the deny reason ("a Promise", `1 (number)`, `"yes" (string)`). */
function describeValue(value: unknown): string {
  if (isThenable(value)) return "a Promise";
  if (value === null) return "null";
  switch (typeof value) {
    case "undefined":
      return "undefined";
    case "string":
      return `${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)} (string)`;
    case "number":
    case "bigint":
    case "boolean":
      return `${String(value)} (${typeof value})`;
    case "object":
      return Array.isArray(value) ? "an array" : "an object";
    default:
      return `a ${typeof value}`;
  }
}

/** Whether a value can be awaited (a Promise or any object with a `then` method). */
function isThenable(value: unknown): value is PromiseLike<unknown> {
  if ((typeof value !== "object" && typeof value !== "function") || value === null) return false;
  try {
    return typeof (value as { then?: unknown }).then === "function";
  } catch {
    return true; // a `then` getter that throws: not a decision either
  }
}

/**
 * A Promise a condition returned decides nothing, and nobody awaits it: its rejection is
 * observed here so that it cannot surface as an unhandled rejection (which ends the process).
 */
function settleIgnored(value: unknown): void {
  if (!isThenable(value)) return;
  try {
    Promise.resolve(value).catch(() => {});
  } catch {
    // a thenable whose `then` throws: nothing more to observe
  }
}

/** Policy id reported when no rule matched. */
export const DEFAULT_DENY_POLICY_ID = "eart.default-deny";

/** Policy ids eart itself reports, for checks made before the policy engine. */
export const BUILTIN_POLICY_IDS = {
  unknownTool: "eart.unknown-tool",
  permissions: "eart.permissions",
  arguments: "eart.arguments",
  duplicateCall: "eart.duplicate-call-id",
  approvalBatch: "eart.approval-batch",
} as const;

/**
 * Typed policy rules written in TypeScript: the fast default {@link PolicyEngine}.
 *
 * Matching rules combine as: any `deny` → deny; else any `escalate` → escalate; else any `allow`
 * → allow; else any `require_approval` → require_approval (approver roles of all of them, the
 * largest `quorum` of distinct approvers and the shortest `expiresIn` among them); no
 * match → deny (default deny).
 *
 * **Fail closed.** A `when` decides with `true` or `false`, synchronously. A `when` that throws,
 * or returns anything else (a Promise, `1`, `"yes"`, `{}`, `undefined`), makes the decision
 * `deny` with `evaluationError: true` and a reason naming the rule and what it returned, whatever
 * the rule's effect; so does a `reason` function that throws or does not return a string. An
 * `async function` given as `when` or `reason` is refused here, with {@link PolicyDefinitionError}.
 *
 * **Version.** The SHA-256 of the rule set (condition and reason sources included), the declared
 * `config` and the declared `version`, so any edit of them changes it. A value a rule reads from
 * a closure or from the environment is *not* in its source: declare it in `config` (and read it
 * from the rule's second argument) or name it in `version`, or an approval given after it changed
 * is not checked again.
 *
 * **Description.** `describe()` lists each rule's tools, effect and approver roles, so that
 * `createGovernedAgent` can refuse a rule naming a tool the agent does not have or a role the
 * identities do not declare.
 * @example
 * ```ts
 * const policy = definePolicy({
 *   name: "refunds",
 *   config: { autoLimit: 100, supervisorLimit: Number(process.env.REFUND_LIMIT ?? 5000) },
 *   rules: [
 *     { id: "orders.lookup", tools: ["lookup_order"], effect: "allow" },
 *     { id: "refund.small", tools: ["issue_refund"], when: (r, c) => Number(r.tool.args.amount) <= c.autoLimit, effect: "allow" },
 *     { id: "refund.medium", tools: ["issue_refund"], when: (r, c) => Number(r.tool.args.amount) <= c.supervisorLimit,
 *       effect: "require_approval", approverRoles: ["supervisor"], reason: "Refunds over $100 need a supervisor" },
 *   ],
 * });
 * ```
 */
export function definePolicy<C extends PolicyConfig = PolicyConfig>(definition: PolicyDefinition<C>): PolicyEngine {
  const parsed = parseRuleSet(PolicyDefinitionSchema, definition, POLICY);
  const declared = parsed.config;
  if (declared !== undefined) {
    const problem = jsonProblem(declared, { maxDepth: MAX_CONFIG_DEPTH, refuseAccessors: true });
    if (problem) {
      throw new PolicyDefinitionError(
        `Invalid policy at ${["config", ...problem.path].join(".")}: it ${problem.why}; config must be plain JSON, which is what the version hashes`,
      );
    }
  }
  // The version hashes each function's source: one that does not show it (bound, a Proxy) could
  // change what it decides under the same version, unless the policy declares its version itself.
  if (parsed.version === undefined) {
    for (const rule of parsed.rules) {
      for (const [field, fn] of [["when", rule.when], ["reason", rule.reason]] as const) {
        if (typeof fn === "function" && !hasReadableSource(fn)) {
          throw new PolicyDefinitionError(
            `Invalid policy rule "${rule.id}": its ${field} is a bound or native function, whose source does not show what it decides, so the policy version could not tell two of them apart; write it as a function of its own, or declare the policy's version`,
          );
        }
      }
    }
  }
  // What the rules see is what was hashed: a copy, frozen, so that no rule can change it later.
  const config = (declared === undefined ? Object.freeze({}) : frozenCopy(JSON.parse(canonicalJson(declared)))) as PolicyConfig;
  const { rulesFor, version } = compileRules(parsed.rules, {
    kind: POLICY,
    fingerprint: (r) => ({
      description: r.description ?? null,
      effect: r.effect,
      approverRoles: r.approverRoles ?? null,
      quorum: r.quorum ?? null,
      expiresIn: r.expiresIn ?? null,
      // Present only when set, so that the version of a policy without it stays as it was.
      ...(r.allowedDecisions !== undefined ? { allowedDecisions: [...r.allowedDecisions].sort() } : {}),
      when: r.when ? r.when.toString() : null,
      reason: typeof r.reason === "function" ? r.reason.toString() : (r.reason ?? null),
    }),
    declared: {
      name: parsed.name,
      // Present only when declared, so that the version of a policy without them stays as it was.
      ...(declared !== undefined ? { config } : {}),
      ...(parsed.version !== undefined ? { declaredVersion: parsed.version } : {}),
    },
  });

  const reasonOf = (rule: CompiledRule, request: PolicyRequest): string => {
    if (typeof rule.reason === "string") return rule.reason;
    if (typeof rule.reason === "function") {
      const reason: unknown = rule.reason(request, config);
      if (typeof reason === "string") return reason;
      settleIgnored(reason);
      throw new Error(`the reason of rule ${rule.id} returned ${describeValue(reason)}, not a string`);
    }
    return rule.description ?? `rule ${rule.id}: ${rule.effect}`;
  };

  /** A rule whose condition threw or did not decide: the call is denied (fail closed). */
  const undecided = (rule: CompiledRule, what: string): PolicyDecision => ({
    effect: "deny",
    reasons: [what],
    policyIds: [rule.id],
    version,
    evaluationError: true,
  });

  const description = describeRules(parsed.name, parsed.rules);

  const engine: PolicyEngine = {
    version,
    describe: () => description,
    decide(request: PolicyRequest): PolicyDecision {
      const matched: Record<PolicyEffect, CompiledRule[]> = { allow: [], deny: [], require_approval: [], escalate: [] };
      for (const rule of rulesFor(request.tool.name)) {
        if (rule.when) {
          let result: unknown;
          try {
            result = rule.when(request, config);
          } catch (error) {
            return undecided(rule, `policy rule ${rule.id} failed to evaluate: ${(error as Error)?.message ?? String(error)}`);
          }
          if (result === false) continue;
          if (result !== true) {
            settleIgnored(result);
            return undecided(rule, `policy rule ${rule.id} did not decide: its when returned ${describeValue(result)}, not a boolean (fail closed)`);
          }
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
          // Every deciding rule's restriction holds: the answers all of them allow.
          const restricted = deciding.flatMap((r) => (r.allowedDecisions ? [r.allowedDecisions] : []));
          const allowedDecisions = restricted.length > 0 ? (["approve", "edit", "reject", "respond"] as const).filter((t) => restricted.every((a) => a.includes(t))) : undefined;
          return {
            effect,
            ...base,
            approverRoles: [...new Set(deciding.flatMap((r) => r.approverRoles ?? []))],
            ...(quorum > 1 ? { quorum } : {}),
            ...(expiries.length > 0 ? { expiresInMs: Math.min(...expiries) } : {}),
            ...(allowedDecisions ? { allowedDecisions } : {}),
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

/** Option schema: a {@link PolicyEngine}. */
export const PolicyEngineOption = z.custom<PolicyEngine>((v) => typeof (v as PolicyEngine)?.decide === "function", "must be a PolicyEngine");
