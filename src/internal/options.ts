import { z } from "zod";
import type { AuditLog } from "../audit/log.js";
import type { BudgetGuard } from "../policy/budget.js";
import { EartConfigError } from "../errors.js";
import { IdentityRegistry } from "../identity/registry.js";
import type { PolicyEngine } from "../policy/engine.js";

/**
 * Parses factory options once, at construction. Throws {@link EartConfigError} naming the first
 * bad option (`"options"` for unknown keys or a non-object).
 * @example
 * ```ts
 * const { auditLog } = parseOptions(z.object({ auditLog: AuditLogOption }).strict(), options);
 * ```
 */
export function parseOptions<S extends z.ZodType>(schema: S, options: unknown): z.output<S> {
  const parsed = schema.safeParse(options);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new EartConfigError(String(issue.path[0] ?? "options"), issue.message);
}

/** Option schema: an {@link AuditLog} (anything with its methods). */
export const AuditLogOption = z.custom<AuditLog>(
  (v) => typeof (v as AuditLog)?.append === "function" && typeof (v as AuditLog)?.read === "function",
  "must be an AuditLog",
);

/** Option schema: an {@link IdentityRegistry}. */
export const IdentityRegistryOption = z.custom<IdentityRegistry>((v) => v instanceof IdentityRegistry, "must be an IdentityRegistry");

/** Option schema: a {@link PolicyEngine}. */
export const PolicyEngineOption = z.custom<PolicyEngine>((v) => typeof (v as PolicyEngine)?.decide === "function", "must be a PolicyEngine");

/** Option schema: a {@link BudgetGuard} (from `defineBudgets`). */
export const BudgetGuardOption = z.custom<BudgetGuard>(
  (v) => ["check", "reserve", "charge"].every((m) => typeof (v as unknown as Record<string, unknown>)?.[m] === "function"),
  "must be a BudgetGuard (defineBudgets)",
);
