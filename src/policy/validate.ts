import { EartConfigError } from "../errors.js";
import type { IdentityRegistry } from "../identity/registry.js";
import { PolicyDescriptionSchema, type PolicyDescription, type PolicyEngine } from "./engine.js";

/**
 * Checks between the policy, the tools and the identities of an agent, made when it is built:
 * each mistake here would otherwise show only at run time (a call denied, an approval nobody can
 * give) or never.
 *
 * - `policy_tool_unknown`: a rule names a tool the agent does not have (a typo, a renamed tool).
 * - `approver_role_undeclared`: a rule asks for approvers with a role the identities do not
 *   declare; no user can hold it, so nobody could approve.
 * - `role_undeclared`: the same for the roles that answer recoveries and escalations.
 * - `tool_uncovered`: a tool the identities grant to an agent, bound to it, that no rule covers:
 *   every call of it would be denied by default. A tool denied on purpose says so, with a rule
 *   whose effect is `deny` or by being granted to no agent.
 *
 * Policies that do not describe themselves (`PolicyEngine.describe`, e.g. Cedar engines) are not
 * cross-checked.
 */
export type ConfigProblemCode = "policy_tool_unknown" | "approver_role_undeclared" | "role_undeclared" | "tool_uncovered";

/** One mistake: the option to fix, what is wrong and what to do, and the values involved. */
export interface ConfigProblem {
  code: ConfigProblemCode;
  /** The option of `createGovernedAgent` to fix: `policy`, `shadowPolicy`, `recoveryRoles`, `escalation`. */
  field: string;
  message: string;
  details: Record<string, unknown>;
}

/** What the checks read, as plain data. */
export interface AgentConfigFacts {
  /** Names of the tools bound to the agent. */
  tools: readonly string[];
  /** The enforced policy's description; undefined when its engine does not describe itself. */
  policy?: PolicyDescription | undefined;
  /** The shadow policy's description, if there is one and it describes itself. */
  shadowPolicy?: PolicyDescription | undefined;
  /** The budgets' description (`defineBudgets(...).describe()`), if there are budgets. */
  budgets?: PolicyDescription | undefined;
  /** Roles the identities declare (the keys of `roles`). */
  roles: readonly string[];
  /** Each agent of the identities with the tools it is granted (names, or `"*"`). */
  agents: readonly { id: string; tools: readonly string[] }[];
  /** Other roles humans must hold, by option: `recoveryRoles`, `escalation` (its `reviewerRoles`). */
  answerRoles?: readonly { field: string; roles: readonly string[] }[];
  /** Checks not to make, by code. */
  skip?: readonly ConfigProblemCode[];
}

/**
 * The mistakes in an agent's configuration, none when it is consistent: those in the rules of the
 * policy and of the shadow policy, then in the roles of other options, then the tools no rule
 * covers. Pure: reads only `facts`.
 * @example
 * ```ts
 * const problems = checkAgentConfig({
 *   tools: ["lookup_order", "issue_refund"],
 *   policy: refundPolicy.describe?.(),
 *   roles: registry.roleIds(),
 *   agents: registry.agentIds().map((id) => ({ id, tools: registry.getAgent(id)!.tools })),
 * });
 * for (const p of problems) console.error(p.field, p.message);
 * ```
 */
export function checkAgentConfig(facts: AgentConfigFacts): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const skipped = new Set(facts.skip ?? []);
  const tools = new Set(facts.tools);
  const roles = new Set(facts.roles);
  const toolList = facts.tools.join(", ") || "none";
  const roleList = facts.roles.join(", ") || "none";

  const policies = [
    { field: "policy", description: facts.policy, what: "rule" },
    { field: "shadowPolicy", description: facts.shadowPolicy, what: "shadow policy rule" },
    { field: "budgets", description: facts.budgets, what: "budget" },
  ] as const;
  for (const { field, description, what } of policies) {
    for (const rule of description?.rules ?? []) {
      if (rule.tools !== "*" && !skipped.has("policy_tool_unknown")) {
        for (const tool of new Set(rule.tools)) {
          if (tools.has(tool)) continue;
          const meant = closestName(tool, facts.tools);
          problems.push({
            code: "policy_tool_unknown",
            field,
            message:
              `${what} "${rule.id}" names tool ${JSON.stringify(tool)}, which is not one of the agent's tools (${toolList})${youMean(meant)}` +
              ` Correct the rule's tools, or bind the tool; a policy shared with agents that have it can pass skipChecks: ["policy_tool_unknown"]`,
            details: { ruleId: rule.id, tool, ...(meant ? { suggestion: meant } : {}) },
          });
        }
      }
      for (const role of new Set(rule.approverRoles ?? [])) {
        if (roles.has(role)) continue;
        const meant = closestName(role, facts.roles);
        problems.push({
          code: "approver_role_undeclared",
          field,
          message:
            `${what} "${rule.id}" asks for approvers with role ${JSON.stringify(role)}, which the identities do not declare (declared: ${roleList})${youMean(meant)}` +
            ` No user can hold an undeclared role, so nobody could approve: correct the rule, or declare the role in the identities and give it to the approvers`,
          details: { ruleId: rule.id, role, ...(meant ? { suggestion: meant } : {}) },
        });
      }
    }
  }

  for (const { field, roles: asked } of facts.answerRoles ?? []) {
    for (const role of new Set(asked)) {
      if (roles.has(role)) continue;
      const meant = closestName(role, facts.roles);
      problems.push({
        code: "role_undeclared",
        field,
        message:
          `role ${JSON.stringify(role)} is not declared in the identities (declared: ${roleList})${youMean(meant)}` +
          ` No user can hold an undeclared role, so nobody could answer: correct it, or declare the role in the identities and give it to the people who answer`,
        details: { role, ...(meant ? { suggestion: meant } : {}) },
      });
    }
  }

  // Only the enforced policy: an uncovered tool is denied by what runs, not by a candidate.
  const rules = facts.policy?.rules;
  if (rules && !rules.some((r) => r.tools === "*")) {
    const covered = new Set(rules.flatMap((r) => (r.tools === "*" ? [] : r.tools)));
    for (const tool of facts.tools) {
      if (covered.has(tool)) continue;
      // Identities that grant the tool to no agent already deny it: the two agree, so it is deliberate.
      const grantedTo = facts.agents.filter((a) => a.tools.includes(tool) || a.tools.includes("*")).map((a) => a.id);
      if (grantedTo.length === 0) continue;
      problems.push({
        code: "tool_uncovered",
        field: "policy",
        message:
          `no rule covers tool ${JSON.stringify(tool)}, which the agent has and the identities grant (to ${grantedTo.map((id) => JSON.stringify(id)).join(", ")}), so every call of it would be denied by default.` +
          ` Add a rule for it; to deny it on purpose, say so with a rule { tools: [${JSON.stringify(tool)}], effect: "deny" }, or grant it to no agent in the identities`,
        details: { tool, grantedTo },
      });
    }
  }
  return problems;
}

/**
 * Checks the configuration `createGovernedAgent` was given, with {@link checkAgentConfig}, and
 * throws one {@link EartConfigError} naming the field of the first mistake and listing them all
 * (`details.problems`). Reads the policies' descriptions; nothing else runs, nothing is written.
 * @example
 * ```ts
 * assertAgentConfig({ tools, policy, registry, recoveryRoles: ["supervisor"] }); // throws on a mistake
 * ```
 */
export function assertAgentConfig(input: {
  tools: readonly { name: string }[];
  policy: PolicyEngine;
  shadowPolicy?: PolicyEngine | undefined;
  budgets?: { describe?: () => unknown } | undefined;
  registry: IdentityRegistry;
  recoveryRoles?: readonly string[] | undefined;
  reviewerRoles?: readonly string[] | undefined;
  skip?: readonly ConfigProblemCode[] | undefined;
}): void {
  const { registry } = input;
  const problems = checkAgentConfig({
    tools: input.tools.map((t) => t.name),
    policy: describedPolicy(input.policy, "policy"),
    shadowPolicy: input.shadowPolicy ? describedPolicy(input.shadowPolicy, "shadowPolicy") : undefined,
    budgets: input.budgets ? describedPolicy(input.budgets, "budgets") : undefined,
    roles: registry.roleIds(),
    agents: registry.agentIds().map((id) => ({ id, tools: registry.getAgent(id)?.tools ?? [] })),
    answerRoles: [
      ...(input.recoveryRoles ? [{ field: "recoveryRoles", roles: input.recoveryRoles }] : []),
      ...(input.reviewerRoles ? [{ field: "escalation", roles: input.reviewerRoles }] : []),
    ],
    ...(input.skip ? { skip: input.skip } : {}),
  });
  const [first, ...more] = problems;
  if (!first) return;
  const message = more.length === 0 ? first.message : `${first.message}\n${more.length} more:\n${more.map((p) => `- ${p.field}: ${p.message}`).join("\n")}`;
  throw new EartConfigError(first.field, message, { code: first.code, ...first.details, problems });
}

const youMean = (meant: string | undefined): string => (meant ? `: did you mean ${JSON.stringify(meant)}?` : ".");

/** The description of an engine that has one, validated; undefined for an engine that does not describe itself. */
function describedPolicy(engine: { describe?: () => unknown }, field: string): PolicyDescription | undefined {
  if (typeof engine.describe !== "function") return undefined;
  let raw: unknown;
  try {
    raw = engine.describe();
  } catch (error) {
    throw new EartConfigError(field, `the policy engine's describe() failed: ${(error as Error)?.message ?? String(error)}`);
  }
  const parsed = PolicyDescriptionSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new EartConfigError(field, `the policy engine's describe() returned an invalid description at ${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  return parsed.data;
}

/**
 * The candidate `name` most likely stands for: the same but for case, or one typo away per three
 * characters (insertion, deletion, substitution, swap of neighbours); undefined when none is that
 * close or two are equally close.
 * @example
 * ```ts
 * closestName("issue_refunds", ["lookup_order", "issue_refund"]) // "issue_refund"
 * ```
 */
export function closestName(name: string, candidates: readonly string[]): string | undefined {
  if (name.length > MAX_NAME_LENGTH) return undefined;
  const sameButCase = candidates.filter((c) => c.toLowerCase() === name.toLowerCase());
  if (sameButCase.length === 1) return sameButCase[0];
  const limit = Math.max(1, Math.floor(name.length / 3));
  let best: string | undefined;
  let bestDistance = limit + 1;
  let tie = false;
  for (const candidate of candidates) {
    if (Math.abs(candidate.length - name.length) > limit) continue;
    const d = editDistance(name, candidate);
    if (d < bestDistance) [best, bestDistance, tie] = [candidate, d, false];
    else if (d === bestDistance) tie = true;
  }
  return tie ? undefined : best;
}

/** Longer names get no suggestion: the distance is quadratic in the length. */
const MAX_NAME_LENGTH = 200;

/** Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`. */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1]![j]! + 1, rows[i]![j - 1]! + 1, rows[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      rows[i]![j] = d;
    }
  }
  return rows[a.length]![b.length]!;
}
