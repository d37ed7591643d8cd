/**
 * eart's HTTP middleware for LangGraph server's custom app (`langgraph.json` → `http.app`).
 *
 * The reviewer's search. LangGraph's authorization filters match thread metadata only, and the
 * server answers a search with whole threads (values, interrupts, config): a filter can name a
 * graph, not "the threads waiting for this user's role". The middleware has the server search a
 * window of the newest threads that match (offset 0, the most it lists), drops every thread the
 * caller neither owns nor is awaited on, and only then cuts the page the caller asked for and
 * counts it: neither the page, its positions nor its pagination headers tell anything of a thread
 * the caller may not open. eart's auth widens a reviewer's search past their own threads only for
 * a request that passes through the middleware (it marks the request while the server handles it):
 * without the middleware, a reviewer's search lists their own threads only.
 *
 * It also refuses, by the path the server's router reads, the paths eart's auth closes (a second
 * lock: the auth checks every form of the path too).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { answerableBy } from "./agent.js";
import { closedPath } from "./paths.js";

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
  req: {
    method: string;
    /** The path the router reads (decoded). */
    path: string;
    json(): Promise<unknown>;
    /** Hono's cache of the request's body (a promise of its text), which the server's validator reads the body from. */
    bodyCache: { text?: unknown };
  };
  res: Response | undefined;
}

/** A Hono middleware: `app.use(middleware)`. */
export type EartHttpMiddleware = (c: EartHttpContext, next: () => Promise<void>) => Promise<void>;

const SEARCH_PATH = /^\/threads\/search\/?$/;
/** The most threads one search lists (the server refuses a larger `limit`): a reviewer's window. */
const WINDOW = 1_000;
/** The server's defaults. */
const DEFAULT_LIMIT = 10;
const PAGINATION_HEADERS = ["x-pagination-next", "x-pagination-total"];

/** A thread of a search answer, as much of it as the check reads. */
type FoundThread = Record<string, unknown> & { thread_id?: unknown; metadata?: { owner?: unknown } | null };
/** What the caller asked of the page. */
type Page = { offset: number; limit: number; select: string[] | undefined };

/**
 * The page a search that may be a reviewer's asks for (interrupted threads, no values filter),
 * when it fits the window; undefined for any other search (the server answers it as sent).
 */
function reviewerPage(payload: unknown): Page | undefined {
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return undefined;
  const { status, values, offset = 0, limit = DEFAULT_LIMIT, select } = payload as Record<string, unknown>;
  if (status !== "interrupted" || values !== undefined) return undefined;
  if (!Number.isInteger(offset) || !Number.isInteger(limit) || (offset as number) < 0 || (limit as number) < 1) return undefined;
  if (select !== undefined && (!Array.isArray(select) || !select.every((k) => typeof k === "string"))) return undefined;
  if ((offset as number) + (limit as number) > WINDOW) return undefined;
  return { offset: offset as number, limit: limit as number, select: select as string[] | undefined };
}

/**
 * The HTTP middleware for LangGraph server's custom app that lets eart's auth show reviewers the
 * threads waiting for them: a reviewer's `threads.search({ status: "interrupted" })` lists, of the
 * graph the auth narrows it to, only the threads they own or that wait for one of their roles,
 * paged and counted after the others are dropped. It also refuses the paths eart's auth closes.
 * Other requests pass untouched. Without it, eart's auth shows every caller their own threads only.
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
    if (closedPath(c.req.path)) {
      c.res = Response.json({ error: "Forbidden", message: "Not served here" }, { status: 403 });
      return;
    }
    if (c.req.method !== "POST" || !SEARCH_PATH.test(c.req.path)) return next();
    const payload = await c.req.json().catch(() => undefined);
    const page = reviewerPage(payload);
    if (page) {
      // The server searches the window, with the fields the check reads; the page is cut here.
      const select = page.select && [...new Set([...page.select, "thread_id", "metadata"])];
      c.req.bodyCache.text = Promise.resolve(JSON.stringify({ ...(payload as object), offset: 0, limit: WINDOW, ...(select ? { select } : {}) }));
    }
    const search: NarrowedSearch = {};
    await narrowedSearches().run(search, next);
    const res = c.res;
    if (res === undefined || res.status !== 200 || (!page && search.reviewer === undefined)) return;
    let threads: unknown;
    try {
      threads = await res.clone().json();
    } catch {
      threads = undefined;
    }
    // A reviewer's search whose page could not be cut after the check (past the window) lists nothing.
    if (!Array.isArray(threads) || !page) return replace(c, res, [], undefined);
    const reviewer = search.reviewer;
    const kept: FoundThread[] = [];
    for (const thread of threads as FoundThread[]) {
      if (reviewer === undefined || thread?.metadata?.owner === reviewer) kept.push(thread);
      else if (typeof thread?.thread_id === "string" && (await answerableBy(thread.thread_id, reviewer, { orAnswered: false }))) kept.push(thread);
    }
    const cut = kept.slice(page.offset, page.offset + page.limit).map((t) => (page.select ? Object.fromEntries(Object.entries(t).filter(([k]) => page.select!.includes(k))) : t));
    // Counted as the server counts a page: the matching threads, here the ones kept.
    const more = kept.length === page.limit ? { next: page.offset + kept.length } : undefined;
    replace(c, res, cut, more);
  };
}

/** Sets the search's answer and its pagination headers, keeping the response's status and other headers. */
function replace(c: EartHttpContext, res: Response, threads: unknown[], more: { next: number } | undefined): void {
  const headers = new Headers(res.headers);
  for (const name of ["content-length", ...PAGINATION_HEADERS]) headers.delete(name);
  if (more) {
    headers.set("X-Pagination-Next", String(more.next));
    headers.set("X-Pagination-Total", String(more.next + 1));
  }
  // Hono copies the old response's headers into a new one: cleared first, so none comes back.
  c.res = undefined;
  c.res = new Response(JSON.stringify(threads), { status: res.status, headers });
}
