import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";

/** A child Node process that prints "ready" when set up, then waits for its go on stdin. */
export interface ReadyChild {
  child: ChildProcessWithoutNullStreams;
  /** Resolves when the child printed "ready"; rejects if it exits first. */
  ready: Promise<void>;
  exited: Promise<number | null>;
  out(): string;
  err(): string;
}

/**
 * Starts `node script ...args` with piped stdio and collects its output.
 * @example
 * ```ts
 * const c = startReadyChild(script, ["sqlite", path], "writer");
 * await c.ready;
 * c.child.stdin.write("go\n");
 * ```
 */
export function startReadyChild(script: string, args: string[], label: string, env: NodeJS.ProcessEnv = process.env): ReadyChild {
  const child = spawn(process.execPath, [script, ...args], { stdio: ["pipe", "pipe", "pipe"], env });
  let stdout = "";
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (c: Buffer) => {
      stdout += c.toString();
      if (stdout.includes("ready")) resolve();
    });
    child.on("exit", () => reject(new Error(`${label} exited early: ${stderr}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, ready, exited, out: () => stdout, err: () => stderr };
}

/** A child Node process that prints one JSON event per line, and what a test does with it. */
export interface JsonLinesChild {
  /** Every event it printed so far. */
  events: Record<string, unknown>[];
  /** Resolves on the first event `check` accepts; rejects if the child exits first. */
  until(check: (e: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** Writes a line to its stdin. */
  send(line: string): void;
  alive(): boolean;
  exited: Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  /** Kills it (SIGKILL) unless it has exited, and waits for its exit. */
  kill(): Promise<void>;
}

/**
 * Starts `node ...args` with piped stdio and reads its stdout as JSON lines.
 * @example
 * ```ts
 * const child = startJsonLinesChild([script], { JOB: "…" });
 * await child.until((e) => e.kind === "locked");
 * child.send("go");
 * ```
 */
export function startJsonLinesChild(args: string[], env: NodeJS.ProcessEnv = {}): JsonLinesChild {
  const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...env } });
  const events: Record<string, unknown>[] = [];
  const waiters: { check: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }[] = [];
  let stdout = "";
  let stderr = "";
  let done = false;
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    stdout += c;
    let newline: number;
    while ((newline = stdout.indexOf("\n")) >= 0) {
      const event = JSON.parse(stdout.slice(0, newline)) as Record<string, unknown>;
      stdout = stdout.slice(newline + 1);
      events.push(event);
      for (const w of [...waiters]) if (w.check(event)) waiters.splice(waiters.indexOf(w), 1) && w.resolve(event);
    }
  });
  child.stdin.on("error", () => {});
  const exited = new Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on("exit", (status, signal) => {
      done = true;
      resolve({ status, signal, stderr });
    }),
  );
  return {
    events,
    send: (line) => child.stdin.write(`${line}\n`),
    alive: () => !done,
    exited,
    kill: async () => {
      if (!done) child.kill("SIGKILL");
      await exited;
    },
    until: (check) => {
      const seen = events.find(check);
      if (seen) return Promise.resolve(seen);
      return Promise.race([
        new Promise<Record<string, unknown>>((resolve) => waiters.push({ check, resolve })),
        exited.then(({ status, signal, stderr: err }) => {
          const late = events.find(check);
          if (late) return late;
          throw new Error(`the child ended (${status} ${signal}) first:\n${err}\n${JSON.stringify(events.slice(-5))}`);
        }),
      ]);
    },
  };
}

const EART_DIST = new URL("../../dist/src/index.js", import.meta.url);
const EART_SQLITE_DIST = new URL("../../dist/src/stores/sqlite/index.js", import.meta.url);
const EART_LOCK_DIST = new URL("../../dist/src/threads/lock.js", import.meta.url);

/**
 * A live child process running the built eart (`dist`): runs `setup` (module code with `eart` in
 * scope, `eart/sqlite` and the lock module's `processInstance` included, e.g. taking a lock), prints its process instance, and waits until killed.
 * @example
 * ```ts
 * const live = liveEartChild(`await new eart.SqliteThreadLock({ path }).acquire("t1");`);
 * const instance = await live.instance;
 * await live.kill();
 * ```
 */
export function liveEartChild<I = unknown>(setup = "") {
  if (!existsSync(EART_DIST)) throw new Error(`${EART_DIST.pathname} is missing: run "npm run build" before these tests`);
  const script = `const eart = { ...(await import(${JSON.stringify(EART_DIST.href)})), ...(await import(${JSON.stringify(EART_SQLITE_DIST.href)})), ...(await import(${JSON.stringify(EART_LOCK_DIST.href)})) }; ${setup} console.log(JSON.stringify(eart.processInstance())); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  const instance = new Promise<I>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += String(d);
      if (out.includes("\n")) resolve(JSON.parse(out.split("\n")[0]!) as I);
    });
    child.on("exit", (code) => reject(new Error(`the child exited (${code}) before it reported`)));
  });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  return { child, instance, kill: async () => (child.kill("SIGKILL"), await exited) };
}
