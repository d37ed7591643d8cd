/**
 * The reviewer's search on LangGraph server, narrowed to what the reviewer may open. LangGraph's
 * authorization filters match thread metadata only, and the server returns whole threads (values,
 * interrupts, config): a filter can name a graph, not "the threads waiting for this user's role".
 * eart's HTTP middleware, mounted in the server's custom app (`langgraph.json` → `http.app`), lets
 * the search through and then drops from its answer every thread the caller neither owns nor may
 * answer. eart's auth widens a reviewer's search past their own threads only for a request that
 * passes through it (it marks the request while the server handles it): without the middleware, a
 * reviewer's search lists their own threads only.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { answerableBy } from "./agent.js";

/** What the search handler learnt of one search request that passes through eart's middleware. */
export interface NarrowedSearch {
  /** Set by eart's auth when it let the caller search past their own threads (as a reviewer). */
  reviewer?: string;
}

const SCOPE_KEY = Symbol.for("eart.server.narrowedSearch");

/** The request-scoped mark, shared by every copy of this module in the process (auth and app may load apart). */
export function narrowedSearches(): AsyncLocalStorage<NarrowedSearch> {
  const holder = globalThis as unknown as Record<symbol, AsyncLocalStorage<NarrowedSearch> | undefined>;
  return (holder[SCOPE_KEY] ??= new AsyncLocalStorage<NarrowedSearch>());
}

/** The part of Hono's context the middleware uses (LangGraph server's custom app is a Hono app). */
export interface EartHttpContext {
  req: { method: string; path: string };
  res: Response | undefined;
  /** The server's variables: `auth` is the authenticated user, set by the server's auth middleware. */
  var: unknown;
}

/** A Hono middleware: `app.use(middleware)`. */
export type EartHttpMiddleware = (c: EartHttpContext, next: () => Promise<void>) => Promise<void>;

const SEARCH_PATH = /^\/threads\/search\/?$/;

/** A thread of a search answer, as much of it as the check reads (`select` may leave out metadata). */
type FoundThread = { thread_id?: unknown; metadata?: { owner?: unknown } | null };

/**
 * The HTTP middleware for LangGraph server's custom app that lets eart's auth show reviewers the
 * threads waiting for them: a reviewer's `threads.search({ status: "interrupted" })` lists, of the
 * graph the auth narrows it to, only the threads they own or may answer (a role the open task
 * asks for, or an answer of theirs on record, as for opening a thread). Other requests pass
 * untouched. Without it, eart's auth shows every caller their own threads only.
 * @example
 * ```ts
 * // http.ts, named in langgraph.json: "http": { "app": "./http.ts:app" }
 * import { Hono } from "hono";
 * import { createEartHttpMiddleware } from "eart/server";
 * export const app = new Hono().use(createEartHttpMiddleware());
 * ```
 */
export function createEartHttpMiddleware(): EartHttpMiddleware {
  return async (c, next) => {
    if (c.req.method !== "POST" || !SEARCH_PATH.test(c.req.path)) return next();
    const search: NarrowedSearch = {};
    await narrowedSearches().run(search, next);
    const reviewer = search.reviewer;
    const res = c.res;
    if (reviewer === undefined || res === undefined || res.status !== 200) return;
    let threads: unknown;
    try {
      threads = await res.clone().json();
    } catch {
      threads = undefined;
    }
    // A reviewer's answer that cannot be read is not passed on.
    if (!Array.isArray(threads)) return replace(c, res, "[]");
    const kept: unknown[] = [];
    for (const thread of threads as FoundThread[]) {
      const owner = thread?.metadata?.owner;
      const id = thread?.thread_id;
      if (owner === reviewer || (typeof id === "string" && (await answerableBy(id, reviewer)))) kept.push(thread);
    }
    if (kept.length !== threads.length) replace(c, res, JSON.stringify(kept));
  };
}

/** Sets the response's body, keeping its status and headers (not its length). */
function replace(c: EartHttpContext, res: Response, body: string): void {
  const headers = new Headers(res.headers);
  headers.delete("content-length");
  // Hono copies the old response's headers into a new one: cleared first, so the length goes.
  c.res = undefined;
  c.res = new Response(body, { status: res.status, headers });
}
