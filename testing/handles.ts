/** A spec case's handles on one kind of store: `open` a fresh one, `again` a second on the same storage. */
export interface Handles<S> {
  open(): Promise<S>;
  again(store: S): Promise<S>;
}

/**
 * Runs a spec case with handles it opens through `make` (and `reopen`, a second handle on the same
 * storage, when the caller gave one); closes every handle it opened, newest first, when the case
 * ends, whatever happened. Shared by the store conformance suites.
 * @example
 * ```ts
 * it(title, () => withHandles(makeLedger, reopen, ({ open }) => body(open)));
 * ```
 */
export async function withHandles<S>(make: () => S | Promise<S>, reopen: ((store: S) => S | Promise<S>) | undefined, body: (handles: Handles<S>) => Promise<void>): Promise<void> {
  const opened: S[] = [];
  try {
    await body({
      open: async () => {
        const store = await make();
        opened.push(store);
        return store;
      },
      again: async (store) => {
        const other = reopen ? await reopen(store) : store;
        if (other !== store) opened.push(other);
        return other;
      },
    });
  } finally {
    for (const store of opened.reverse()) await (store as { close?: () => unknown }).close?.();
  }
}
