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
