import { randomUUID } from "node:crypto";
import { HumanMessage } from "@langchain/core/messages";
import type { DocumentInterface } from "@langchain/core/documents";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import { AuditLogOption, type AuditEventInput } from "../src/audit/log.js";
import { parseRetrievedItems, screenContext, type RetrievalRequest, type RetrievedItem } from "../src/context/context.js";
import { recordedRedactions, type Redaction } from "../src/context/redaction.js";
import { type ContextItem, type Escalation } from "../src/decisions/records.js";
import { forgedContextEvent, lazySealer, sealedContext } from "../src/decisions/seal.js";
import { EffectLedgerOption } from "../langgraph/records.js";
import { EartError, IdentityResolutionError } from "../src/errors.js";
import { type AgentIdentity } from "../src/identity/registry.js";
import { parseOptions } from "../src/internal/options.js";
import { messageText, requireThreadId } from "../langgraph/run.js";
import { isGraphControlFlow } from "../langgraph/tools.js";
import type { GovernedState } from "../langgraph/channels.js";

/** A LangChain retriever (any vector store's `asRetriever()`, or a `BaseRetriever`): what the context node calls. */
export interface RetrieverLike {
  invoke(query: string, config?: unknown): Promise<DocumentInterface[]>;
}
/** A function provider: an order lookup, a credit bureau call… */
export type ContextFunction = (request: RetrievalRequest) => Promise<RetrievedItem[]> | RetrievedItem[];

const isRetriever = (v: unknown): v is RetrieverLike =>
  typeof (v as RetrieverLike)?.invoke === "function" && Array.isArray((v as { lc_namespace?: unknown }).lc_namespace);

const ProviderSchema = z.union([
  z.custom<ContextFunction>((v) => typeof v === "function", "must be a function"),
  z.custom<RetrieverLike>(isRetriever, "must be a LangChain retriever"),
  z
    .object({
      /** A name for the audit log. */
      name: z.string().min(1),
      retriever: z.custom<RetrieverLike>(isRetriever, "must be a LangChain retriever"),
      /**
       * The source of every document this provider gives: a document's own metadata cannot claim
       * another (an upload tagged "credit-bureau" is still an upload). Without it, a document's
       * metadata `source` is kept, else the provider's `name`.
       */
      source: z.string().min(1).optional(),
      /** The scope of documents whose metadata names none. A document with no scope is dropped. */
      scope: z.string().min(1).optional(),
      labels: z.array(z.string().min(1)).default([]),
    })
    .strict(),
]);
export type ContextProvider = z.input<typeof ProviderSchema>;

const RequiredFactSchema = z
  .object({
    /** The fact's name; by default an item carrying it as a label provides it. */
    fact: z.string().min(1),
    description: z.string().optional(),
    match: z.custom<(item: ContextItem) => boolean>((v) => typeof v === "function", "must be a function").optional(),
  })
  .strict();
export type RequiredFact = z.input<typeof RequiredFactSchema>;

const ContextRetrievalOptionsSchema = z
  .object({
    providers: z.array(ProviderSchema).min(1),
    auditLog: AuditLogOption,
    /** Sensitive fields and patterns to redact (`defineRedaction`). */
    redaction: z.custom<Redaction>((v) => typeof (v as Redaction)?.apply === "function", "must be a Redaction (defineRedaction)").optional(),
    /** Facts the graph must have before the agent acts; missing ones escalate to a human. */
    required: z.array(RequiredFactSchema).default([]),
    /** What to retrieve for; defaults to the text of the last human message. */
    query: z.custom<(state: GovernedState) => string>((v) => typeof v === "function", "must be a function").optional(),
    clock: z.custom<() => Date>((v) => typeof v === "function", "must be a function returning a Date").optional(),
    /**
     * The roles of the reviewers a case of missing context goes to (the escalation guard's
     * `reviewerRoles`), recorded with `escalation.requested` so the audit log's inbox lists it for them.
     */
    reviewerRoles: z.array(z.string().min(1)).min(1).optional(),
    /**
     * The effect ledger whose store keeps the key that seals each kept item for its thread (the
     * agent's): the model and policy are shown only items it sealed. Defaults to this process's key.
     */
    ledger: EffectLedgerOption.optional(),
  })
  .strict();
export type ContextRetrievalOptions = z.input<typeof ContextRetrievalOptionsSchema>;

/**
 * A name per provider, for the audit log and for namespacing item ids: its `name` (a function's
 * own name), else `provider <i>` / `retriever <i>`; "/" replaced by "_", and a name given twice
 * suffixed with `#<i>`, so each provider has its own.
 */
function providerNames(providers: readonly unknown[]): string[] {
  const names: string[] = [];
  providers.forEach((provider, i) => {
    const named = (provider as { name?: unknown }).name;
    let name = (typeof named === "string" && named !== "" ? named : typeof provider === "function" ? `provider ${i}` : `retriever ${i}`).replaceAll("/", "_");
    if (names.includes(name)) name = `${name}#${i}`;
    names.push(name);
  });
  return names;
}

/** A deep copy of a plain value, frozen all the way down. */
function frozenCopy<T>(value: T): T {
  const freeze = (v: unknown): unknown => {
    if (v !== null && typeof v === "object") {
      for (const x of Object.values(v)) freeze(x);
      Object.freeze(v);
    }
    return v;
  };
  return freeze(structuredClone(value)) as T;
}

/**
 * A retriever's documents for the query. A LangChain retriever is asked without the run's
 * callbacks: its own run would carry the documents as it found them (before scope filtering and
 * redaction) into the caller's event stream and the run's traces. What it found is recorded by
 * eart (`context.retrieved`). Another runnable is invoked with the run's configuration.
 */
function documentsOf(retriever: RetrieverLike, query: string, config: LangGraphRunnableConfig): Promise<DocumentInterface[]> {
  const direct = (retriever as { _getRelevantDocuments?: (query: string) => Promise<DocumentInterface[]> })._getRelevantDocuments;
  return typeof direct === "function" ? direct.call(retriever, query) : retriever.invoke(query, config);
}

/** Documents from a retriever as items: the provider's source when it names one; id, scope (and a source) from the metadata or the provider's defaults. */
function itemsOfDocuments(docs: DocumentInterface[], defaults: { name: string; source?: string; scope?: string; labels: string[] }): RetrievedItem[] {
  return docs.map((doc, i) => {
    const meta = (doc.metadata ?? {}) as Record<string, unknown>;
    const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);
    // A single label may be given as a string: it still raises the thread's sensitivity.
    const labels = Array.isArray(meta.labels) ? meta.labels.filter((l): l is string => typeof l === "string") : typeof meta.labels === "string" && meta.labels !== "" ? [meta.labels] : [];
    return {
      id: str(doc.id) ?? str(meta.id) ?? `${defaults.name}#${i}`,
      source: defaults.source ?? str(meta.source) ?? defaults.name,
      // No scope anywhere: a scope nobody holds, so the item is dropped (fail closed).
      // A scope the document names but not as one non-empty string (an array, "") is no scope
      // anyone holds, not the provider's default: dropped.
      scope: meta.scope !== undefined ? (str(meta.scope) ?? "eart.unscoped") : (defaults.scope ?? "eart.unscoped"),
      labels: [...new Set([...defaults.labels, ...labels])],
      content: doc.pageContent,
    };
  });
}

/**
 * Node that retrieves the context the agent may see. Each provider (a LangChain retriever, or an
 * async function returning items) is asked for the run's query; items whose data scope the bound
 * identity lacks are dropped before anything else sees them, sensitive fields and patterns are
 * redacted for the identity, and what remains goes into the `context` channel with a digest. The
 * thread's sensitivity rises with the labels of what was retrieved (never falls), so policies can
 * use it. The audit log gets provenance only (`context.retrieved`: item ids, sources, scopes,
 * labels, digests, where values were redacted), never the redacted values.
 *
 * Each provider answers for itself: one that throws, or returns anything but an array of valid
 * items with distinct ids and content nested at most 256 levels deep, is audited as failed
 * (`failed: [{ provider, error, code }]`, e.g. `input_too_deep`) and none of its items is kept;
 * the other providers' items are. Ids are the providers' own, except where two providers give the
 * same id (in this retrieval or an earlier one of the thread), or an id reads as another
 * provider's namespaced id: then it is `<provider>/<id>` (provider names are their `name`, a
 * function's name, or `provider <i>`), so no provider's item replaces or passes for another's.
 *
 * Facts listed in `required` that no kept item provides open an escalation (`missing_context`)
 * instead of letting the agent guess; a provider that fails is audited and counts as missing.
 * @example
 * ```ts
 * graph.addNode("retrieveContext", createContextRetrieval({
 *   providers: [vectorStore.asRetriever(), async ({ query }) => lookupOrders(query)],
 *   redaction: defineRedaction(STANDARD_REDACTIONS),
 *   required: [{ fact: "income_proof" }],
 *   auditLog,
 * }));
 * ```
 */
export function createContextRetrieval(options: ContextRetrievalOptions) {
  const { providers, auditLog, redaction, required, query, reviewerRoles, ledger, clock = () => new Date() } = parseOptions(ContextRetrievalOptionsSchema, options);
  const sealer = lazySealer(ledger);
  const names = providerNames(providers);

  async function fetchAll(request: RetrievalRequest, config: LangGraphRunnableConfig) {
    const failed: { provider: string; error: string; code?: string }[] = [];
    const results = await Promise.all(
      providers.map(async (provider, i): Promise<{ provider: string; items: RetrievedItem[] }> => {
        const name = names[i]!;
        try {
          let raw: unknown;
          if (typeof provider === "function") raw = await provider(request);
          else if (isRetriever(provider)) raw = itemsOfDocuments(await documentsOf(provider, request.query, config), { name, labels: [] });
          else {
            const p = provider as { retriever: RetrieverLike; source?: string; scope?: string; labels: string[] };
            raw = itemsOfDocuments(await documentsOf(p.retriever, request.query, config), { name, ...(p.source ? { source: p.source } : {}), ...(p.scope ? { scope: p.scope } : {}), labels: p.labels });
          }
          // A malformed, duplicated or too deep item fails its own provider, never the run.
          return { provider: name, items: parseRetrievedItems(raw) };
        } catch (error) {
          if (isGraphControlFlow(error)) throw error;
          failed.push({ provider: name, error: (error as Error)?.message ?? String(error), ...(error instanceof EartError ? { code: error.code } : {}) });
          return { provider: name, items: [] };
        }
      }),
    );
    return { results, failed };
  }

  /**
   * Item ids as the thread keeps them: as the provider gave them, unless another provider gave
   * the same id in this retrieval or gave it before (the thread holds `<other>/<id>`), or the id
   * reads as another provider's namespaced id (`<other>/…`). Then it is `<provider>/<id>`, so no
   * provider's item replaces or passes for another's. Provider names are distinct and hold no
   * "/", so namespaced ids never meet each other; a plain id that meets one (a provider giving
   * both `x` and `<itself>/x`) is namespaced in turn.
   */
  function namespaced(results: { provider: string; items: RetrievedItem[] }[], previous: readonly ContextItem[]): (RetrievedItem & { provider: string })[] {
    const givenBy = new Map<string, Set<string>>();
    for (const r of results) for (const item of r.items) (givenBy.get(item.id) ?? givenBy.set(item.id, new Set()).get(item.id)!).add(r.provider);
    const before = new Set(previous.map((i) => i.id));
    // Which provider gave each item the thread holds (items kept before providers were recorded say none).
    const heldBy = new Map(previous.flatMap((i) => (i.provider !== undefined ? [[i.id, i.provider] as const] : [])));
    const contested = (provider: string, id: string) =>
      givenBy.get(id)!.size > 1 ||
      (heldBy.has(id) && heldBy.get(id) !== provider) ||
      names.some((n) => n !== provider && (id.startsWith(`${n}/`) || before.has(`${n}/${id}`)));
    const out = results.flatMap((r) =>
      r.items.map((item) => (contested(r.provider, item.id) ? { provider: r.provider, item: { ...item, id: `${r.provider}/${item.id}` }, plain: false } : { provider: r.provider, item, plain: true })),
    );
    for (let changed = true; changed; ) {
      const count = new Map<string, number>();
      for (const o of out) count.set(o.item.id, (count.get(o.item.id) ?? 0) + 1);
      changed = false;
      for (const o of out) {
        if (o.plain && count.get(o.item.id)! > 1) {
          o.item = { ...o.item, id: `${o.provider}/${o.item.id}` };
          o.plain = false;
          changed = true;
        }
      }
    }
    return out.map((o) => ({ ...o.item, provider: o.provider }));
  }

  return async function retrieveContext(
    state: Pick<GovernedState, "messages" | "identity" | "context"> & Partial<Pick<GovernedState, "escalation">>,
    config: LangGraphRunnableConfig,
  ): Promise<{ context: { items: ContextItem[]; sensitivity: string[] }; escalation?: Escalation | null }> {
    const threadId = requireThreadId(config);
    const identity: AgentIdentity | undefined = state.identity;
    if (!identity) throw new IdentityResolutionError("identity_missing", "The thread has no bound identity: bind it before retrieving context");
    const text = query ? query(state as GovernedState) : [...state.messages].reverse().find((m) => HumanMessage.isInstance(m));
    const q = typeof text === "string" ? text : text ? messageText(text) : "";
    // Providers get a frozen copy: one that edits the identity it is handed widens nothing.
    const { results, failed } = await fetchAll({ query: q, identity: frozenCopy(identity), threadId }, config);
    // Every item was checked with its provider: what is left to fail here is eart's own fault.
    const screened = screenContext(namespaced(results, state.context?.items ?? []), identity, redaction);
    // Required facts are about what this run retrieved: another application's income proof, kept
    // from an earlier request on the thread, does not stand in for this one's. A run that retrieves
    // nothing (a follow-up) goes on with what the thread holds.
    const seal = await sealer();
    const held = sealedContext(seal, threadId, state.context);
    const basis = screened.items.length > 0 ? screened.items : (held.context?.items ?? []);
    const missing = required.filter((r) => !basis.some((item) => (r.match ? r.match(item) : item.labels.includes(r.fact))));
    const events: AuditEventInput[] = [
      {
        threadId,
        type: "context.retrieved",
        data: {
          items: screened.items.map(({ content: _content, ...provenance }) => provenance),
          dropped: screened.dropped,
          redacted: recordedRedactions(screened.redacted),
          sensitivity: screened.sensitivity,
          failed,
          missing: missing.map((m) => m.fact),
        },
      },
    ];
    if (held.forged.length > 0) events.push(forgedContextEvent(threadId, "retrieveContext", held.forged));
    const update: { context: { items: ContextItem[]; sensitivity: string[] }; escalation?: Escalation | null } = {
      context: { items: screened.items.map((item) => seal.contextItem(threadId, item)), sensitivity: screened.sensitivity },
    };
    const openForContext = state.escalation?.signals?.length && state.escalation.signals.every((sg) => sg.kind === "missing_context");
    if (missing.length === 0 && openForContext) update.escalation = null; // what was missing is there now
    if (missing.length > 0) {
      const signals = missing.map((m) => ({ kind: "missing_context" as const, detail: `${m.fact}${m.description ? `: ${m.description}` : ""}` }));
      update.escalation = { id: randomUUID(), reason: `Required context is missing: ${missing.map((m) => m.fact).join(", ")}`, toolCallIds: [], policyIds: [], at: clock().toISOString(), signals };
      events.push({ threadId, type: "escalation.requested", data: { reason: update.escalation.reason, signals, ...(reviewerRoles ? { roles: [...reviewerRoles] } : {}), requestedBy: { agentId: identity.id, userId: identity.onBehalfOf.id } } });
    }
    await auditLog.append(events);
    return update;
  };
}
