import type { StructuredToolInterface } from "@langchain/core/tools";
import type { ApprovalRecord, DecisionRecord, ThreadContext } from "../src/decisions/records.js";
import type { AgentIdentity, IdentityRegistry } from "../src/identity/registry.js";
import { BUILTIN_POLICY_IDS, decideFailClosed, type PolicyDecision, type PolicyEngine } from "../src/policy/engine.js";
import { checkToolArgs } from "./tools.js";

/**
 * A call decided under another policy version, decided again under `policy`: its recorded
 * arguments checked against the tool's schema (invalid ones are denied as `eart.arguments`), then
 * the policy, failing closed. The gate does this when an answer arrives after a redeploy, the tool
 * node when an approved call had not begun before one.
 */
export async function decideRecordedCall(
  policy: PolicyEngine,
  tool: StructuredToolInterface,
  record: Pick<DecisionRecord, "name" | "args">,
  request: { identity: AgentIdentity; context: ThreadContext; threadId: string },
): Promise<PolicyDecision> {
  const checked = await checkToolArgs(tool, record.args);
  if (!checked.ok) return { effect: "deny", reasons: [`Invalid arguments for ${record.name}: ${checked.message}`], policyIds: [BUILTIN_POLICY_IDS.arguments], version: policy.version };
  return decideFailClosed(policy, { ...request, tool: { name: record.name, args: checked.args } });
}

/**
 * The approvals that still count under a verdict: all of them when it allows the call; when it
 * asks for approval, those given by holders of the roles it asks for (approvals under old roles
 * never make up a new quorum); none otherwise.
 */
export function approvalsThatCount(approvals: readonly ApprovalRecord[], verdict: PolicyDecision, registry: IdentityRegistry): ApprovalRecord[] {
  if (verdict.effect === "allow") return [...approvals];
  if (verdict.effect !== "require_approval") return [];
  return approvals.filter((a) => registry.userHasAnyRole(a.approverId, verdict.approverRoles));
}
