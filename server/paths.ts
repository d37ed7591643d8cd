/**
 * The paths of LangGraph server that eart's auth closes to every client: LangGraph's protocol v2
 * thread endpoints (`/threads/:id/commands`, `/threads/:id/stream/events`), which keep the first
 * caller's login for every later caller of the thread, and `/internal`, the server's maintenance
 * (`/internal/truncate` empties every thread). A path is checked in every form the server's router
 * may read it in: as sent and as URL-normalised (`/x/../internal`), percent-decoded as often as it
 * decodes (`/%69nternal`, `/threads/t/command%73`), runs of slashes folded, any case.
 */

const CLOSED: readonly RegExp[] = [/^\/threads\/[^/]+\/(commands|stream\/events)\/?$/, /^\/internal(\/|$)/];

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

/** The forms of a request's path a router may read, folded for comparison. */
export function pathForms(url: string): string[] {
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
      forms.add(path.replace(/\/{2,}/g, "/").toLowerCase());
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
