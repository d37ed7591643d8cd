/**
 * A gate a step of a test waits at: `entered` resolves once the step reached it (`enter()`), and
 * the step goes on once the test calls `open()` (it awaits `wait`).
 * @example
 * ```ts
 * const g = gate();
 * hook = async () => { g.enter(); await g.wait; };
 * await g.entered; … g.open();
 * ```
 */
export interface Gate {
  entered: Promise<void>;
  enter(): void;
  wait: Promise<void>;
  open(): void;
}

export function gate(): Gate {
  let open!: () => void;
  let enter!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  const entered = new Promise<void>((r) => (enter = r));
  return { entered, enter, wait, open };
}

/** `url` with its search_path set to `schema` and its sessions named `app` (to be found, and terminated, by application_name). */
export function inSchema(url: string, schema: string, app: string): string {
  const u = new URL(url);
  u.searchParams.set("options", `-c search_path=${schema}`);
  u.searchParams.set("application_name", app);
  return u.toString();
}
