import { HumanMessage } from "@langchain/core/messages";
import type { DocumentInterface } from "@langchain/core/documents";
import type { LangGraphRunnableConfig } from "@langchain/langgraph";
import { z } from "zod";
import {
  AuditLogOption,
  EartConfigError,
  IdentityResolutionError,
  parseOptions,
  screenContext,
  type AgentIdentity,
  type AuditEventInput,
  type ContextItem,
  type Escalation,
  type Redaction,
  type RetrievalRequest,
  type RetrievedItem,
} from "../src/index.js";
import { isGraphControlFlow, messageText, requireThreadId } from "./runtime.js";
import type { GovernedState } from "./state.js";

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
      /** Defaults for documents whose metadata lacks them. A document with no scope is dropped. */
      source: z.string().min(1).optional(),
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
  })
  .strict();
export type ContextRetrievalOptions = z.input<typeof ContextRetrievalOptionsSchema>;

/** Documents from a retriever as items: id, source and scope from the metadata or the provider's defaults. */
function itemsOfDocuments(docs: DocumentInterface[], defaults: { name: string; source?: string; scope?: string; labels: string[] }): RetrievedItem[] {
  return docs.map((doc, i) => {
    const meta = (doc.metadata ?? {}) as Record<string, unknown>;
    const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);
    const labels = Array.isArray(meta.labels) ? meta.labels.filter((l): l is string => typeof l === "string") : [];
    return {
      id: str(doc.id) ?? str(meta.id) ?? `${defaults.name}#${i}`,
      source: str(meta.source) ?? defaults.source ?? defaults.name,
      // No scope anywhere: a scope nobody holds, so the item is dropped (fail closed).
      scope: str(meta.scope) ?? defaults.scope ?? "eart.unscoped",
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
  const { providers, auditLog, redaction, required, query, clock = () => new Date() } = parseOptions(ContextRetrievalOptionsSchema, options);

  async function fetchAll(request: RetrievalRequest, config: LangGraphRunnableConfig) {
    const failed: { provider: string; error: string }[] = [];
    const results = await Promise.all(
      providers.map(async (provider, i): Promise<RetrievedItem[]> => {
        const named = (provider as { name?: unknown }).name;
        const name = typeof named === "string" && named !== "" ? named : typeof provider === "function" ? `provider ${i}` : `retriever ${i}`;
        try {
          if (typeof provider === "function") return await provider(request);
          if (isRetriever(provider)) return itemsOfDocuments(await provider.invoke(request.query, config), { name, labels: [] });
          const p = provider as { retriever: RetrieverLike; source?: string; scope?: string; labels: string[] };
          return itemsOfDocuments(await p.retriever.invoke(request.query, config), { name, ...(p.source ? { source: p.source } : {}), ...(p.scope ? { scope: p.scope } : {}), labels: p.labels });
        } catch (error) {
          if (isGraphControlFlow(error)) throw error;
          failed.push({ provider: name, error: (error as Error)?.message ?? String(error) });
          return [];
        }
      }),
    );
    return { retrieved: results.flat(), failed };
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
    const { retrieved, failed } = await fetchAll({ query: q, identity, threadId }, config);
    let screened;
    try {
      screened = screenContext(retrieved, identity, redaction);
    } catch (error) {
      throw new EartConfigError("providers", `a provider returned an invalid item: ${(error as Error).message}`);
    }
    const kept = [...(state.context?.items ?? []).filter((i) => !screened.items.some((n) => n.id === i.id)), ...screened.items];
    const missing = required.filter((r) => !kept.some((item) => (r.match ? r.match(item) : item.labels.includes(r.fact))));
    const events: AuditEventInput[] = [
      {
        threadId,
        type: "context.retrieved",
        data: {
          items: screened.items.map(({ content: _content, ...provenance }) => provenance),
          dropped: screened.dropped,
          redacted: screened.redacted,
          sensitivity: screened.sensitivity,
          failed,
          missing: missing.map((m) => m.fact),
        },
      },
    ];
    const update: { context: { items: ContextItem[]; sensitivity: string[] }; escalation?: Escalation | null } = {
      context: { items: screened.items, sensitivity: screened.sensitivity },
    };
    const openForContext = state.escalation?.signals?.length && state.escalation.signals.every((sg) => sg.kind === "missing_context");
    if (missing.length === 0 && openForContext) update.escalation = null; // what was missing is there now
    if (missing.length > 0) {
      const signals = missing.map((m) => ({ kind: "missing_context" as const, detail: `${m.fact}${m.description ? `: ${m.description}` : ""}` }));
      update.escalation = { reason: `Required context is missing: ${missing.map((m) => m.fact).join(", ")}`, toolCallIds: [], policyIds: [], at: clock().toISOString(), signals };
      events.push({ threadId, type: "escalation.requested", data: { reason: update.escalation.reason, signals } });
    }
    await auditLog.append(events);
    return update;
  };
}
