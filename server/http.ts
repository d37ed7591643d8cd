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
import { answerableBy, servedUser } from "./agent.js";
import { pendingHumanTask } from "../src/human-tasks/protocol.js";
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
    header(name: string): string | undefined;
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
/** The server's default page. */
const DEFAULT_LIMIT = 10;
const PAGINATION_HEADERS = ["x-pagination-next", "x-pagination-total"];
/** The bodies the server reads as JSON: its validator's media types, and text/plain, which it takes for JSON. */
const JSON_MEDIA = /^application\/([\w.-]+\+)?json$/i;

/** A thread of a search answer, as much of it as the check reads. */
type FoundThread = Record<string, unknown> & { thread_id?: unknown; metadata?: Record<string, unknown> | null; interrupts?: unknown };
/** What the caller asked of a search that may be a reviewer's: the filters the window leaves out, and the page. */
type Asked = { ids: unknown[] | undefined; metadata: Record<string, unknown> | undefined; offset: number; limit: number; select: string[] | undefined };

/**
 * What a search that may be a reviewer's asks (interrupted threads, no values filter, a JSON body,
 * a page inside the window); undefined for any other search (the server answers it as sent).
 */
function askedOf(payload: unknown, contentType: string | undefined): Asked | undefined {
  const media = (contentType ?? "").split(";")[0]!.trim();
  if (!JSON_MEDIA.test(media) && !(contentType ?? "").startsWith("text/plain")) return undefined;
  if (typeof payload !== "object" || payload === null || Array.isArray(payload)) return undefined;
  const { status, values, ids, metadata, offset = 0, limit = DEFAULT_LIMIT, select } = payload as Record<string, unknown>;
  if (status !== "interrupted" || values !== undefined) return undefined;
  if (!Number.isInteger(offset) || !Number.isInteger(limit) || (offset as number) < 0 || (limit as number) < 1) return undefined;
  if ((offset as number) + (limit as number) > WINDOW) return undefined;
  if (select !== undefined && (!Array.isArray(select) || !select.every((k) => typeof k === "string"))) return undefined;
  if (ids !== undefined && ids !== null && !Array.isArray(ids)) return undefined;
  if (metadata !== undefined && metadata !== null && (typeof metadata !== "object" || Array.isArray(metadata))) return undefined;
  return {
    ids: (ids ?? undefined) as unknown[] | undefined,
    metadata: (metadata ?? undefined) as Record<string, unknown> | undefined,
    offset: offset as number,
    limit: limit as number,
    select: select as string[] | undefined,
  };
}

/** Whether `superset` holds `subset`, as the server matches a search's metadata filter. */
function contained(superset: unknown, subset: unknown): boolean {
  if (superset === null || superset === undefined || subset === null || subset === undefined) return true;
  for (const [key, value] of Object.entries(subset as Record<string, unknown>)) {
    const held = (superset as Record<string, unknown>)[key];
    if (held === null || held === undefined) return false;
    if (typeof value === "object" && value !== null && typeof held === "object") {
      if (!contained(held, value)) return false;
    } else if (held !== value) return false;
  }
  return true;
}

/**
 * Whether the thread, as the search shows it, may wait for one of `roles`: the human task its
 * interrupts carry (read as a state's tasks are) names one of them. A thread this rules out is
 * dropped without reading its state; one it lets through is checked against its state
 * ({@link answerableBy}).
 */
function mayWaitFor(thread: FoundThread, roles: ReadonlySet<string>): boolean {
  const interrupts = thread.interrupts;
  if (typeof interrupts !== "object" || interrupts === null) return false;
  const tasks = Object.values(interrupts as Record<string, unknown>).map((list) => ({ interrupts: Array.isArray(list) ? list : [] }));
  return pendingHumanTask({ tasks })?.roles.some((r) => roles.has(r)) ?? false;
}

/**
 * The HTTP middleware for LangGraph server's custom app that lets eart's auth show reviewers the
 * threads waiting for them: a reviewer's `threads.search({ status: "interrupted" })` lists, of the
 * graph the auth narrows it to, only the threads they own or that wait for one of their roles,
 * filtered by the caller's `ids` and `metadata`, then paged and counted. It also refuses the paths
 * eart's auth closes. Other requests pass untouched. Without it, eart's auth shows every caller
 * their own threads only.
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
    const asked = askedOf(payload, c.req.header("content-type"));
    if (asked) {
      // The server lists the window: the graph's interrupted threads (the auth narrows them to the
      // caller's own, or to one graph for a reviewer), whatever else the caller filters by, so
      // what the check costs does not depend on the caller's guesses; with the fields it reads.
      const { ids: _ids, metadata, select: _select, ...rest } = payload as Record<string, unknown>;
      const graphId = (metadata as Record<string, unknown> | undefined)?.graph_id;
      const window = {
        ...rest,
        ...(graphId !== undefined ? { metadata: { graph_id: graphId } } : {}),
        ...(asked.select ? { select: [...new Set([...asked.select, "thread_id", "metadata", "interrupts"])] } : {}),
        offset: 0,
        limit: WINDOW,
      };
      c.req.bodyCache.text = Promise.resolve(JSON.stringify(window));
    }
    const search: NarrowedSearch = {};
    await narrowedSearches().run(search, next);
    const res = c.res;
    if (res === undefined || res.status !== 200 || (!asked && search.reviewer === undefined)) return;
    let threads: unknown;
    try {
      threads = await res.clone().json();
    } catch {
      threads = undefined;
    }
    // A reviewer's search whose page could not be cut after the check (past the window) lists nothing.
    if (!Array.isArray(threads) || !asked) return replace(c, res, [], { offset: 0, limit: DEFAULT_LIMIT, total: 0 });
    const reviewer = search.reviewer;
    const roles = new Set(reviewer === undefined ? [] : (servedUser(reviewer)?.roles ?? []));
    const visible: FoundThread[] = [];
    for (const thread of threads as FoundThread[]) {
      if (reviewer === undefined || thread?.metadata?.owner === reviewer) visible.push(thread);
      else if (mayWaitFor(thread, roles) && typeof thread.thread_id === "string" && (await answerableBy(thread.thread_id, reviewer, { orAnswered: false }))) visible.push(thread);
    }
    // The caller's own filters, on what they may see.
    const found = visible.filter((t) => (!asked.ids || asked.ids.length === 0 || asked.ids.includes(t.thread_id)) && contained(t.metadata, asked.metadata));
    const cut = found.slice(asked.offset, asked.offset + asked.limit).map((t) => (asked.select ? Object.fromEntries(Object.entries(t).filter(([k]) => asked.select!.includes(k))) : t));
    replace(c, res, cut, { offset: asked.offset, limit: asked.limit, total: cut.length > 0 ? found.length : 0 });
  };
}

/**
 * Sets the search's answer and its pagination headers as the server sets them (`total`: the
 * threads found before the page was cut, none when the page is empty), keeping the response's
 * status and other headers.
 */
function replace(c: EartHttpContext, res: Response, threads: unknown[], page: { offset: number; limit: number; total: number }): void {
  const headers = new Headers(res.headers);
  for (const name of ["content-length", ...PAGINATION_HEADERS]) headers.delete(name);
  const next = page.offset + page.total;
  if (page.total === page.limit) {
    headers.set("X-Pagination-Next", String(next));
    headers.set("X-Pagination-Total", String(next + 1));
  } else headers.set("X-Pagination-Total", String(next));
  // Hono copies the old response's headers into a new one: cleared first, so none comes back.
  c.res = undefined;
  c.res = new Response(JSON.stringify(threads), { status: res.status, headers });
}
