import { z } from "zod";
import { canonicalJson, sha256Hex } from "../internal/canonical.js";
import { PolicyDefinitionError } from "../errors.js";

/*
 * The rule compiler shared by typed policies (`definePolicy`) and budgets (`defineBudgets`): each
 * writes its rules as a zod schema built from the fields below, and both are parsed, checked,
 * indexed by tool, versioned and described the same way here. What a rule means (an effect, a
 * limit) stays with its owner.
 */

/** What a rule yields when it applies: a policy rule's `effect`; a budget's `onExceed` is one of them. */
export const PolicyEffectSchema = z.enum(["allow", "deny", "require_approval", "escalate"]);
export type PolicyEffect = z.output<typeof PolicyEffectSchema>;

/**
 * What a rule set names, read-only: the tools each rule applies to, its effect (a budget's
 * `onExceed`) and the roles it asks to approve. Decisions never read it; construction checks do
 * (`createGovernedAgent`). What `describe()` returns, on a policy engine and on a budget guard.
 * @example
 * ```ts
 * refundPolicy.describe?.().rules.find((r) => r.id === "refund.supervisor")?.approverRoles; // ["supervisor"]
 * ```
 */
export const PolicyDescriptionSchema = z.object({
  name: z.string(),
  rules: z.array(
    z.object({
      id: z.string(),
      /** Tool names the rule applies to, or `"*"` for every tool. */
      tools: z.union([z.literal("*"), z.array(z.string())]),
      effect: PolicyEffectSchema,
      /** For `require_approval`: roles whose holders may approve. */
      approverRoles: z.array(z.string()).optional(),
    }),
  ),
});
export type PolicyDescription = z.output<typeof PolicyDescriptionSchema>;

/** A rule's id: unique in its set, named by every error, decision and counter about it. */
export const RuleIdSchema = z.string().min(1, "must be a non-empty string");

/**
 * The tools a rule applies to: a non-empty list of tool names, or `"*"` for every tool. A `"*"`
 * inside the list would be a tool named `"*"`, which no call has: refused, so that a rule meant
 * for every tool cannot silently apply to none.
 */
export const RuleToolsSchema = z
  .union([z.literal("*"), z.array(z.string().min(1, "must be a non-empty string")).min(1, 'must name at least one tool, or be "*" for every tool')])
  .refine((tools) => tools === "*" || !tools.includes("*"), 'write tools: "*" (not ["*"]) for a rule over every tool');

/** What every compiled rule has. */
export interface CompilableRule {
  readonly id: string;
  readonly tools: "*" | readonly string[];
}

/** How a kind of rule set is named in its errors, and where its rules are in what the user wrote. */
export interface RuleSetKind {
  /** The definition, in `Invalid … at <path>`: `"policy"`, `"budget rule"`. */
  readonly definition: string;
  /** One rule, in `Duplicate … id`: `"policy rule"`, `"budget rule"`. */
  readonly rule: string;
  /** Where the rules are: under `rules` (a policy definition), or the input itself (a list of budgets). */
  readonly rulesAt: "rules" | "root";
  /**
   * Whether `Invalid … at <path>` also quotes the rule's id. Budgets do; a policy's messages are
   * kept as they were (tests and users match them whole), and its error carries `ruleId` all the same.
   */
  readonly quoteRuleId: boolean;
}

/**
 * Parses a rule set with its schema; the first issue becomes a {@link PolicyDefinitionError} that
 * names the field (its path) and, when the issue is inside a rule with a usable id, that rule
 * (`ruleId`).
 * @example
 * ```ts
 * const rules = parseRuleSet(z.array(BudgetRuleSchema), input, { definition: "budget rule", rule: "budget rule", rulesAt: "root", quoteRuleId: true });
 * // throws: Invalid budget rule at 1.tools ("refunds"): must name at least one tool, or be "*" for every tool
 * ```
 */
export function parseRuleSet<S extends z.ZodType>(schema: S, input: unknown, kind: RuleSetKind): z.output<S> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const [first, second] = issue.path;
  const index = kind.rulesAt === "root" ? first : first === "rules" ? second : undefined;
  const ruleId = typeof index === "number" ? idOf(kind.rulesAt === "root" ? input : (input as { rules?: unknown }).rules, index) : undefined;
  const where = `${issue.path.join(".") || "(root)"}${kind.quoteRuleId && ruleId !== undefined ? ` ("${ruleId}")` : ""}`;
  throw new PolicyDefinitionError(`Invalid ${kind.definition} at ${where}: ${issue.message}`, ruleId);
}

/** The id the user wrote for the rule at `index`, when it is one (a non-empty string). */
function idOf(rules: unknown, index: number): string | undefined {
  const id = Array.isArray(rules) ? (rules[index] as { id?: unknown } | undefined)?.id : undefined;
  return typeof id === "string" && id !== "" ? id : undefined;
}

/** What a rule set compiles to. */
export interface CompiledRules<R extends CompilableRule> {
  /**
   * The rules that can apply to a call of `tool`, in definition order: those naming it and those
   * over every tool (`"*"`). The same array for every call of a tool; frozen.
   */
  rulesFor(tool: string): readonly R[];
  /**
   * SHA-256 of the canonical JSON of the rules (their id, tools and fingerprint, in order),
   * together with what the set declares when it declares anything.
   */
  readonly version: string;
}

/**
 * Compiles parsed rules once: refuses a duplicate id ({@link PolicyDefinitionError} naming it),
 * indexes the rules by tool, and computes the set's version, a content hash.
 *
 * `fingerprint` returns what of a rule, besides its id and tools, decides what the rule does (its
 * effect or limits, its conditions' sources): all of it must be in the version, so that an
 * approval given under one version is asked again after any edit. `declared` is what the set
 * declares besides its rules (a policy's name, config and declared version); a set that declares
 * nothing is hashed as the list of its rules alone.
 * @example
 * ```ts
 * const { rulesFor, version } = compileRules(budgets, { kind, fingerprint: (r) => ({ maxCalls: r.maxCalls ?? null }) });
 * rulesFor("issue_refund"); // the rules naming issue_refund and those over "*", in order
 * ```
 */
export function compileRules<R extends CompilableRule>(
  rules: readonly R[],
  spec: { kind: RuleSetKind; fingerprint: (rule: R) => Record<string, unknown>; declared?: Record<string, unknown> },
): CompiledRules<R> {
  const ids = new Set<string>();
  for (const rule of rules) {
    if (ids.has(rule.id)) throw new PolicyDefinitionError(`Duplicate ${spec.kind.rule} id "${rule.id}"`, rule.id);
    ids.add(rule.id);
  }
  // Indexed once, in their order: a call looks only at the rules that can apply to it.
  const anyTool: readonly R[] = Object.freeze(rules.filter((r) => r.tools === "*"));
  const byTool = new Map<string, readonly R[]>();
  for (const rule of rules) {
    if (rule.tools === "*") continue;
    for (const tool of rule.tools) {
      if (!byTool.has(tool)) byTool.set(tool, Object.freeze(rules.filter((r) => r.tools === "*" || r.tools.includes(tool))));
    }
  }
  const hashed = rules.map((r) => ({ ...spec.fingerprint(r), id: r.id, tools: r.tools }));
  // Canonical JSON sorts keys: the declared fields and `rules` hash the same in any order.
  const version = sha256Hex(canonicalJson(spec.declared === undefined ? hashed : { ...spec.declared, rules: hashed }));
  return { rulesFor: (tool) => byTool.get(tool) ?? anyTool, version };
}

/**
 * A rule set's {@link PolicyDescription}, deeply frozen: for each rule its id, tools, effect and
 * approver roles.
 * @example
 * ```ts
 * describeRules("budgets", [{ id: "refunds.daily", tools: ["issue_refund"], effect: "deny" }]);
 * // { name: "budgets", rules: [{ id: "refunds.daily", tools: ["issue_refund"], effect: "deny" }] }
 * ```
 */
export function describeRules(
  name: string,
  rules: readonly { id: string; tools: "*" | readonly string[]; effect: PolicyEffect; approverRoles?: readonly string[] | undefined }[],
): PolicyDescription {
  const frozen = <T>(value: T): T => Object.freeze(value);
  return frozen({
    name,
    rules: frozen(
      rules.map((r) =>
        frozen({
          id: r.id,
          tools: r.tools === "*" ? ("*" as const) : frozen([...r.tools]),
          effect: r.effect,
          ...(r.approverRoles ? { approverRoles: frozen([...r.approverRoles]) } : {}),
        }),
      ),
    ),
  });
}
