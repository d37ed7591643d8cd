/**
 * The paths of LangGraph server that eart's auth closes to every client: LangGraph's protocol v2
 * thread endpoints (`/threads/:id/commands`, `/threads/:id/stream/events`), which keep the first
 * caller's login for every later caller of the thread, `/internal`, the server's maintenance
 * (`/internal/truncate` empties every thread), and a run's stream read without its thread
 * (`/runs/:id/stream`: a read must name its thread; the server would answer an empty stream). A
 * path is checked in every form the server's router may read it in: as sent and as URL-normalised
 * (`/x/../internal`), percent-decoded as often as it decodes (`/%69nternal`,
 * `/threads/t/command%73`), runs of slashes folded, any case.
 */

const CLOSED: readonly RegExp[] = [/^\/threads\/[^/]+\/(commands|stream\/events)\/?$/, /^\/internal(\/|$)/, /^\/runs\/[^/]+\/(stream|join)\/?$/];

/** Decodes every percent-escape that decodes (a malformed one is kept as sent). */
function decodeOnce(path: string): string {
  return path.replace(/(?:%[0-9a-f]{2})+/gi, (escapes) => {
    try {
      return decodeURIComponent(escapes);
    } catch {
      return escapes;
    }
  });
}

/** The forms of a request's path a router may read, folded for comparison (`keepCase`: not case-folded). */
export function pathForms(url: string, options: { keepCase?: boolean } = {}): string[] {
  const start = url.startsWith("/") ? 0 : url.indexOf("/", url.indexOf("//") + 2);
  const raw = start < 0 ? "/" : url.slice(start).split(/[?#]/, 1)[0]!;
  let normalised = raw;
  try {
    normalised = new URL(url, "http://server").pathname;
  } catch {
    // Not a URL: the path as sent is checked.
  }
  const forms = new Set<string>();
  for (let path of [raw, normalised]) {
    for (let i = 0; i < 8; i++) {
      const folded = path.replace(/\/{2,}/g, "/");
      forms.add(options.keepCase ? folded : folded.toLowerCase());
      const decoded = decodeOnce(path);
      if (decoded === path) break;
      path = decoded;
    }
  }
  return [...forms];
}

/**
 * Whether a request's URL (or path) names a path eart's auth closes, in any form.
 * @example
 * ```ts
 * closedPath("http://127.0.0.1:2024/%69nternal/truncate"); // true
 * ```
 */
export function closedPath(url: string): boolean {
  return pathForms(url).some((path) => CLOSED.some((closed) => closed.test(path)));
}

/** A run's stream or result read through a thread's path: `/threads/:thread_id/runs/:run_id/(stream|join)`. */
const RUN_READ = /^\/threads\/([^/]+)\/runs\/([^/]+)\/(stream|join)\/?$/i;

/**
 * The thread and run a request reads a run's stream or result through, in every form of its path
 * (ids as written, not case-folded); none for any other path.
 * @example
 * ```ts
 * runReadsOf("http://127.0.0.1:2024/threads/t1/runs/r1/stream"); // [{ threadId: "t1", runId: "r1" }]
 * ```
 */
export function runReadsOf(url: string): { threadId: string; runId: string }[] {
  const reads = new Map<string, { threadId: string; runId: string }>();
  for (const path of pathForms(url, { keepCase: true })) {
    const match = RUN_READ.exec(path);
    if (match) reads.set(`${match[1]}\n${match[2]}`, { threadId: match[1]!, runId: match[2]! });
  }
  return [...reads.values()];
}
