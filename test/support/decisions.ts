/** Helpers for the graph tests: decisions that carry the digest their request shows. */

type Shown = { requests: readonly { toolCallId: string; digest: string }[] };

/** The digest a pending request (approval or recovery) shows for one call. */
export function digestOf(request: Shown, toolCallId: string): string {
  const item = request.requests.find((r) => r.toolCallId === toolCallId);
  if (!item) throw new Error(`no pending item for tool call "${toolCallId}"`);
  return item.digest;
}

/** A decision for one call of a pending request, bound to the digest the request shows for it. */
export function decide<T extends string>(request: Shown, toolCallId: string, type: T, extra: Record<string, unknown> = {}) {
  return { toolCallId, type, digest: digestOf(request, toolCallId), ...extra };
}
