import { z } from "zod";
import { canonicalJson, nestsDeeper, sha256Hex } from "../internal/canonical.js";
import { EartConfigError, InputTooDeepError } from "../errors.js";
import type { AgentIdentity } from "../identity/registry.js";
import type { ContextItem } from "../decisions/records.js";
import { distinctName, REDACTION_MAX_DEPTH, type Redacted, type Redaction } from "./redaction.js";

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

/** How deep the content of a retrieved item may nest arrays and objects: as deep as redaction walks (256 levels). */
export const CONTEXT_ITEM_MAX_DEPTH = REDACTION_MAX_DEPTH;

/**
 * Checks what one provider returned: an array of valid items with distinct ids, whose content
 * nests at most {@link CONTEXT_ITEM_MAX_DEPTH} levels. Throws, naming the first bad item, an
 * {@link InputTooDeepError} for a too deep content and an {@link EartConfigError} (`providers`)
 * for anything else (`undefined`, not an array, a malformed item, an id given twice): the
 * retrieval node counts that provider as failed and keeps the others.
 * @example
 * ```ts
 * parseRetrievedItems(await provider(request)); // throws on [{ id: "" }]
 * ```
 */
export function parseRetrievedItems(value: unknown): z.output<typeof RetrievedItemSchema>[] {
  if (!Array.isArray(value)) {
    throw new EartConfigError("providers", `the provider returned ${value === undefined ? "undefined" : value === null ? "null" : `a ${typeof value}`}, not an array of items`);
  }
  const ids = new Set<string>();
  return value.map((raw, i) => {
    const parsed = RetrievedItemSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new EartConfigError("providers", `item ${i}: ${issue.path.join(".") || "(item)"}: ${issue.message}`);
    }
    const item = parsed.data;
    if (ids.has(item.id)) throw new EartConfigError("providers", `two items have the id ${JSON.stringify(item.id)}`);
    ids.add(item.id);
    if (nestsDeeper(item.content, CONTEXT_ITEM_MAX_DEPTH)) throw new InputTooDeepError(CONTEXT_ITEM_MAX_DEPTH, `item ${i} (${JSON.stringify(item.id)})`);
    // Content that is not JSON (NaN, a BigInt, a function) fails its own provider, not the run that digests it.
    try {
      canonicalJson(item.content ?? null);
    } catch (error) {
      throw new EartConfigError("providers", `item ${i} (${JSON.stringify(item.id)}): its content is not JSON: ${(error as Error)?.message ?? String(error)}`);
    }
    return item;
  });
}

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
 * (SHA-256 of the canonical JSON of the redacted content) for provenance. Throws on a malformed
 * item: check each provider's answer with {@link parseRetrievedItems} first, as the retrieval
 * node does, so that one bad provider fails alone.
 * @example
 * ```ts
 * const { items, dropped, sensitivity } = screenContext(retrieved, identity, redaction);
 * ```
 */
export function screenContext(retrieved: readonly (RetrievedItem & { provider?: string })[], identity: AgentIdentity, redaction: Redaction | undefined): ScreenedContext {
  const scopes = new Set(identity.dataScopes);
  const out: ScreenedContext = { items: [], dropped: [], redacted: [], sensitivity: [] };
  const labels = new Set<string>();
  // The ids kept so far, and where to go on from for an id redacted like another (distinctName).
  const kept = new Set<string>();
  const next = new Map<string, number>();
  for (const { provider, ...raw } of retrieved) {
    const item = RetrievedItemSchema.parse(raw);
    if (!scopes.has(item.scope)) {
      out.dropped.push({ id: item.id, source: item.source, scope: item.scope });
      continue;
    }
    const screened = redaction ? redaction.apply(item.content, identity) : { value: item.content, redacted: [], labels: [] };
    // An item's id and source are text the model and the thread hold too.
    const named = redaction ? redaction.apply({ id: item.id, source: item.source }, identity) : { value: { id: item.id, source: item.source }, redacted: [], labels: [] };
    const id = named.value.id === item.id ? item.id : distinctName(named.value.id, (name) => kept.has(name), next);
    kept.add(id);
    for (const l of [...item.labels, ...screened.labels, ...named.labels]) labels.add(l);
    out.redacted.push(...screened.redacted.map((r) => ({ ...r, itemId: id })), ...named.redacted.map((r) => ({ ...r, itemId: id })));
    out.items.push({
      ...(typeof provider === "string" ? { provider } : {}),
      id,
      source: named.value.source,
      scope: item.scope,
      labels: [...new Set([...item.labels, ...screened.labels, ...named.labels])].sort(),
      // Of the content as no one may see it: a value only some roles may see (a salary shown to
      // finance) is not in the audit log even as a hash a guess could be checked against.
      digest: sha256Hex(canonicalJson((redaction && (redaction.mayChange?.(item.content) ?? true) ? redaction.apply(item.content, undefined).value : screened.value) ?? null)),
      content: screened.value,
    });
  }
  out.sensitivity = [...labels].sort();
  return out;
}
