import { z } from "zod";
import { canonicalJson, sha256Hex } from "./canonical.js";
import type { AgentIdentity } from "./identity.js";
import type { ContextItem } from "./state.js";
import type { Redacted, Redaction } from "./redaction.js";

/**
 * What an agent may see: retrieved items are kept only when the identity holds their data scope,
 * and sensitive values are redacted by field and by pattern before any model, tool argument or
 * audit record can hold them. Labels of what was retrieved raise the thread's sensitivity.
 */

/** One item as a provider returns it: where it comes from, its data scope, its labels, its content. */
export const RetrievedItemSchema = z
  .object({
    id: z.string().min(1),
    source: z.string().min(1),
    /** The data scope an identity needs to see this item (e.g. `orders`, `payments`, `credit`). */
    scope: z.string().min(1),
    /** Sensitivity labels (e.g. `payment_data`, `pii`); they raise the thread's sensitivity. */
    labels: z.array(z.string().min(1)).default([]),
    /** Text or JSON. */
    content: z.unknown(),
  })
  .strict();
export type RetrievedItem = z.input<typeof RetrievedItemSchema>;

/** What a provider learns about the run: the query, the bound identity and the thread. */
export interface RetrievalRequest {
  query: string;
  identity: AgentIdentity;
  threadId: string;
}

/** Filters, redacts and labels retrieved items for an identity. */
export interface ScreenedContext {
  items: ContextItem[];
  dropped: { id: string; source: string; scope: string }[];
  redacted: (Redacted & { itemId: string })[];
  sensitivity: string[];
}

/**
 * Keeps the items whose scope the identity holds, redacts each, and adds a digest of what is kept
 * (SHA-256 of the canonical JSON of the redacted content) for provenance.
 * @example
 * ```ts
 * const { items, dropped, sensitivity } = screenContext(retrieved, identity, redaction);
 * ```
 */
export function screenContext(retrieved: readonly RetrievedItem[], identity: AgentIdentity, redaction: Redaction | undefined): ScreenedContext {
  const scopes = new Set(identity.dataScopes);
  const out: ScreenedContext = { items: [], dropped: [], redacted: [], sensitivity: [] };
  const labels = new Set<string>();
  for (const raw of retrieved) {
    const item = RetrievedItemSchema.parse(raw);
    if (!scopes.has(item.scope)) {
      out.dropped.push({ id: item.id, source: item.source, scope: item.scope });
      continue;
    }
    const screened = redaction ? redaction.apply(item.content, identity) : { value: item.content, redacted: [], labels: [] };
    for (const l of [...item.labels, ...screened.labels]) labels.add(l);
    out.redacted.push(...screened.redacted.map((r) => ({ ...r, itemId: item.id })));
    out.items.push({
      id: item.id,
      source: item.source,
      scope: item.scope,
      labels: [...new Set([...item.labels, ...screened.labels])].sort(),
      digest: sha256Hex(canonicalJson(screened.value ?? null)),
      content: screened.value,
    });
  }
  out.sensitivity = [...labels].sort();
  return out;
}
