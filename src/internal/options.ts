import { z } from "zod";
import { EartConfigError } from "../errors.js";

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
