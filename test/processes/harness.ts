/**
 * The test side of the child processes in this folder: the job a child is given, the JSON lines
 * it prints, and `runChild`, which spawns the compiled child (dist/test/processes/crash-child.js)
 * and collects them. Node built-ins only: this file is compiled with the children.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";

/**
 * Where a child kills itself with SIGKILL while it approves the refund:
 * - `before_begin`: before `ledger.begin` for the refund's key (nothing recorded)
 * - `after_begin`: right after `begin` claimed the key (`started` recorded, tool not run)
 * - `after_effect`: inside the tool, right after the refunds row was inserted
 * - `after_finish`: right after `ledger.finish` recorded `succeeded`, before any checkpoint of the step
 * - `after_checkpoint`: right after the checkpoint that records the tools step was written
 */
export const CRASH_POINTS = ["before_begin", "after_begin", "after_effect", "after_finish", "after_checkpoint"] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

/** One thread of the refund agent: its SQLite file (audit log; everything when no `postgres`) and, optionally, PostgreSQL. */
export interface ChildTarget {
  file: string;
  threadId: string;
  /** A connection string: checkpoints, ledger, lock and refunds table go there, as in `openRefundAgent`. */
  postgres?: string;
  /** Overrides the job's `idempotent` for this thread. */
  idempotent?: boolean;
  /** Overrides the job's `decision` for this thread (`recover`). */
  decision?: RecoveryChoice;
  /**
   * The agent is built with default options: no `ledger` (it comes from the checkpointer's store),
   * so only the crash points outside the ledger apply (`after_effect`, `after_checkpoint`).
   */
  defaults?: boolean;
}

/** A supervisor's answer to an `eart.recovery` request. */
export type RecoveryChoice = { type: "retry" | "mark_done" | "abandon"; result?: unknown; message?: string };

/** What a child does, given as JSON in `EART_CHILD_JOB`. */
export interface ChildJob {
  /**
   * `request`: cara asks for the $740 refund on every target; each must pause for approval.
   * `approve`: sam approves the pending call (`new Command({ resume })`, run as `user_id` "sam", with
   *   the request's digest) of the first target.
   * `continue`: `invoke(null, config)` on every target, as after a crash.
   * `recover`: sam (the run's `user_id`) answers the pending `eart.recovery` request of every target
   *   with its `decision` and the request's digest.
   * The steps over every target go on after a target fails, and report each.
   */
  step: "request" | "approve" | "continue" | "recover";
  targets: ChildTarget[];
  /** `approve` only: where to die. */
  crashAt?: CrashPoint;
  /** `false`: `issue_refund` runs with `{ idempotent: false }` instead of the example's `REFUND_EXECUTION`. */
  idempotent?: boolean;
  /** `recover` only. */
  decision?: RecoveryChoice;
  /** Print `ready`, then wait until this file exists before invoking (a common start line). */
  barrier?: string;
  /** `issue_refund` prints `in_tool`, then waits until this file exists before its insert. */
  hold?: string;
}

/** The state of a thread as a child reports it. */
export interface ThreadSummary {
  threadId: string;
  next: string[];
  last: { type: string; content: string } | null;
  /** Tool messages answering the refund call. */
  refundAnswers: { status: string | undefined; content: string }[];
  approval: string[] | null;
  recovery: {
    type: string;
    requests: { toolCallId: string; name: string; reason: string; attempt: number; error?: string; resolverRoles: string[] }[];
  } | null;
  verify: { ok: boolean; count?: number; brokenAt?: unknown };
}

/** One JSON line of a child's stdout. */
export type ChildEvent =
  | { event: "ready"; pid: number }
  | { event: "in_tool"; pid: number; threadId: string | null; attempt: number | null }
  | { event: "crashing"; pid: number; at: CrashPoint }
  | { event: "paused"; pid: number; summary: ThreadSummary }
  | { event: "result"; pid: number; before?: ThreadSummary; summary: ThreadSummary }
  | { event: "error"; pid: number; threadId: string | null; name: string; code: string | null; message: string };

export interface ChildRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  events: ChildEvent[];
}

/** The compiled child script (`npm run build` puts it there; `npm test` builds first). */
export const CHILD_SCRIPT = resolve("dist/test/processes/crash-child.js");

export function assertChildBuilt(): void {
  if (!existsSync(CHILD_SCRIPT)) throw new Error(`${CHILD_SCRIPT} is missing: run "npm run build" (npm test does) before these tests`);
}

/** The refund call id of the example's scripted model (turn 1). */
export const REFUND_CALL_ID = "call_1_refund";
export const REFUND_REQUEST = "Hi, order 1042 arrived broken. Please refund $740.";
export const FINAL_ANSWER = "Your refund of $740 for order 1042 has been issued.";

/**
 * Runs the child with a job, collecting its JSON lines (and handing each to `onEvent` as it
 * arrives). Never rejects on the child's outcome: the caller asserts on status and signal. A child
 * still running after `timeoutMs` is killed with SIGTERM, which the caller sees as its signal.
 */
export function runChild(job: ChildJob, options: { onEvent?: (e: ChildEvent) => void; timeoutMs?: number } = {}): Promise<ChildRun> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [CHILD_SCRIPT], {
      env: { ...process.env, OPENAI_API_KEY: "", EART_CHILD_JOB: JSON.stringify(job) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let partial = "";
    const events: ChildEvent[] = [];
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
      partial += chunk;
      let nl: number;
      while ((nl = partial.indexOf("\n")) >= 0) {
        const line = partial.slice(0, nl).trim();
        partial = partial.slice(nl + 1);
        if (!line.startsWith("{")) continue;
        const event = JSON.parse(line) as ChildEvent;
        events.push(event);
        options.onEvent?.(event);
      }
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill("SIGTERM"), options.timeoutMs ?? 45_000);
    child.on("error", reject);
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolvePromise({ status, signal, stdout, stderr, events });
    });
  });
}

/** Runs at most `n` of the given tasks at a time (children share 2 cores with the rest of the suite). */
export function limiter(n: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    if (running >= n) await new Promise<void>((r) => waiting.push(r));
    else running++;
    try {
      return await task();
    } finally {
      // A waiting task takes this slot over; otherwise it is freed.
      const next = waiting.shift();
      if (next) next();
      else running--;
    }
  };
}

/** The events of one kind. */
export function eventsOf<K extends ChildEvent["event"]>(run: ChildRun, kind: K): Extract<ChildEvent, { event: K }>[] {
  return run.events.filter((e): e is Extract<ChildEvent, { event: K }> => e.event === kind);
}

/** The single `result` event of a run, or an error that shows what the child printed. */
export function resultOf(run: ChildRun): Extract<ChildEvent, { event: "result" }> {
  const results = eventsOf(run, "result");
  if (results.length !== 1 || run.status !== 0) {
    throw new Error(`expected one result and exit 0, got status ${run.status} signal ${run.signal}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
  }
  return results[0]!;
}
