import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";

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
