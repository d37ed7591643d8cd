import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import { readFileSync, readlinkSync } from "node:fs";
import { hostname } from "node:os";
import { EartConfigError, ThreadBusyError, ThreadLockLostError } from "../errors.js";

/**
 * Per-thread locks: one run (or resume) of a thread at a time, across processes. A second
 * concurrent run gets a {@link ThreadBusyError} before anything of it runs.
 */

/**
 * Releases a lock taken by {@link ThreadLock.acquire}. Safe to call more than once. `lost`, when
 * present, is aborted (with a {@link ThreadLockLostError}) if the lock is lost while held.
 * `fence`, when present, is what the stores of the lock's database check a write of the run
 * against ({@link ThreadFence}).
 */
export type ReleaseThreadLock = (() => Promise<void>) & { lost?: AbortSignal; fence?: ThreadFence };

/**
 * The fence of one hold of a thread's lock. A lock that can be lost without its holder hearing of
 * it in time is a lease: its holder may go on working after another process took the thread (a
 * database session the server dropped during a partition; a process whose event loop stalled past
 * a SQLite lock's `staleMs`). A run holds its fence through {@link withThreadFence}, and eart
 * checks it before each write of the thread ({@link checkThreadFence}): at each checkpoint the
 * guard's graph saves, and in its stores. Refused writes fail with {@link ThreadLockLostError}.
 */
export interface ThreadFence {
  readonly threadId: string;
  /** Aborted when the holder learns the lock is lost. */
  readonly lost: AbortSignal;
  /** Checks now, without waiting, that the hold is still the thread's (SQLite: its lock row); throws `ThreadLockLostError`. */
  readonly check?: () => void;
  /**
   * Checks the hold against the database a checkpoint saver writes to, where the lock can (the
   * PostgreSQL lock, on a `PostgresSaver`'s pool: its token): rejects with `ThreadLockLostError`
   * when another hold replaced it. The guard calls it before each checkpoint it saves.
   */
  readonly confirm?: (saver: object) => Promise<void>;
  /**
   * The PostgreSQL lock's key of the thread (its advisory lock key, as text) and this hold's
   * token, which the lock recorded as the thread's: eart's PostgreSQL stores in the lock's database
   * check it in the transaction of each claim of an effect and each audit append of the thread
   * (share-locked: a new holder's token waits for that transaction to end).
   */
  readonly postgres?: { readonly key: string; readonly token: string };
}

/** One store of fences per process, whichever copy of eart's modules asks. */
const fences = ((globalThis as unknown as Record<symbol, AsyncLocalStorage<ThreadFence> | undefined>)[Symbol.for("eart.threadFences")] ??= new AsyncLocalStorage<ThreadFence>());

/**
 * Runs `run` as the holder of `fence` (nothing changes without one): the writes of the thread that
 * eart's stores make from it are checked against it.
 * @example
 * ```ts
 * const release = await lock.acquire(threadId);
 * try { await withThreadFence(release.fence, () => graph.invoke(input, config)); } finally { await release(); }
 * ```
 */
export function withThreadFence<T>(fence: ThreadFence | undefined, run: () => T): T {
  return fence ? fences.run(fence, run) : run();
}

/**
 * The fence the current run holds for `threadId`, if any, checked: a hold whose holder learned it
 * is lost, or that its lock can tell at once is no longer the thread's (`check`), is refused here,
 * with {@link ThreadLockLostError}. Call it right before a write of the thread.
 * @example
 * ```ts
 * checkThreadFence(event.threadId); // undefined outside a fenced run
 * ```
 */
export function checkThreadFence(threadId: string): ThreadFence | undefined {
  const fence = fences.getStore();
  if (!fence || fence.threadId !== threadId) return undefined;
  if (fence.lost.aborted) throw fenceRefusal(fence);
  fence.check?.();
  return fence;
}

/** The refusal of a write made under a fence that is no longer the thread's. */
export function fenceRefusal(fence: ThreadFence): ThreadLockLostError {
  const reason = fence.lost.reason as unknown;
  return reason instanceof ThreadLockLostError ? reason : new ThreadLockLostError(fence.threadId, new Error("another run holds the thread now; nothing of this run is written"));
}

/**
 * Takes a thread's lock without waiting: resolves with the release function, or rejects with a
 * {@link ThreadBusyError} when another run holds it.
 * @example
 * ```ts
 * const release = await lock.acquire("thread-1");
 * try { await graph.invoke(input, config); } finally { await release(); }
 * ```
 */
export interface ThreadLock {
  acquire(threadId: string): Promise<ReleaseThreadLock>;
}

export function checkThreadId(threadId: unknown): string {
  if (typeof threadId !== "string" || threadId === "") throw new EartConfigError("threadId", "must be a non-empty string");
  return threadId;
}

/**
 * A thread lock within one process (for `MemorySaver` graphs and tests).
 * @example
 * ```ts
 * const lock = new MemoryThreadLock();
 * ```
 */
export class MemoryThreadLock implements ThreadLock {
  readonly #held = new Set<string>();

  async acquire(threadId: string): Promise<ReleaseThreadLock> {
    const id = checkThreadId(threadId);
    if (this.#held.has(id)) throw new ThreadBusyError(id, "this process");
    this.#held.add(id);
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      this.#held.delete(id);
    };
  }
}

/**
 * Who holds a lock, as eart's locks record it: a process *instance*, not only a pid. A restarted
 * container whose app is PID 1 again has the pid of the process that left a lock behind, so a pid
 * alone would keep that lock alive forever; the start time tells the two apart.
 */
export interface ProcessInstance {
  /** Random, one per module instance (so per process, or per worker thread). */
  instance: string;
  pid: number;
  host: string;
  /** The pid namespace (Linux `/proc/self/ns/pid`): pids of two namespaces (two containers) are not comparable. `null` where unknown. */
  pidNamespace: string | null;
  /** The kernel's boot id and the process's start time in clock ticks (Linux `/proc/<pid>/stat`); `null` where unknown. */
  started: string | null;
}

/** A recorded lock holder; fields missing in records written by earlier versions are `null` or absent. */
export type LockHolder = Pick<ProcessInstance, "pid" | "host"> & Partial<Record<"instance" | "pidNamespace" | "started", string | null>>;

const readOr = <T>(read: () => T): T | null => {
  try {
    return read();
  } catch {
    return null;
  }
};

let bootId: string | null | undefined;

/** The start of a process: boot id and start time in clock ticks since boot, or `null` off Linux (or when unreadable). */
function startOf(pid: number | "self"): string | null {
  const stat = readOr(() => readFileSync(`/proc/${pid}/stat`, "utf8"));
  if (stat === null) return null;
  // Field 22 (starttime) counts from the one after the command, which is in parentheses and may hold spaces.
  const ticks = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  if (!ticks || !/^\d+$/.test(ticks)) return null;
  bootId ??= readOr(() => readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim());
  return `${bootId ?? "boot"}/${ticks}`;
}

let self: ProcessInstance | undefined;

/**
 * This process as eart's locks record it (computed once).
 * @example
 * ```ts
 * const { pid, started } = processInstance();
 * ```
 */
export function processInstance(): ProcessInstance {
  return (self ??= {
    instance: randomUUID(),
    pid: process.pid,
    host: hostname(),
    pidNamespace: readOr(() => readlinkSync("/proc/self/ns/pid")),
    started: startOf("self"),
  });
}

/** Whether a process of this machine (and pid namespace) with this pid exists. */
function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether the holder of a lock is alive, as far as this process can tell: `alive`, `dead`, or
 * `unknown` when it cannot be checked from here (another host, or another pid namespace: another
 * container sharing the file); such a lock is broken only by age (its heartbeat or mtime).
 *
 * A holder is dead when no process has its pid, or when the process with its pid started at
 * another time than recorded: the pid was reused, e.g. by this very process as a restarted
 * container's PID 1. Where no start time can be compared (a record of an earlier eart, or a system
 * without `/proc`), a record with this process's pid written (`writtenAt`, epoch ms) before this
 * process started is an earlier process too.
 * @example
 * ```ts
 * holderLiveness({ pid: 1, host: hostname(), started: "…/12345" }); // "dead" in a restarted container
 * ```
 */
export function holderLiveness(holder: LockHolder, writtenAt?: number): "alive" | "dead" | "unknown" {
  const me = processInstance();
  if (holder.host !== me.host) return "unknown";
  if (holder.instance && holder.instance === me.instance) return "alive";
  if (holder.pidNamespace && me.pidNamespace && holder.pidNamespace !== me.pidNamespace) return "unknown";
  // Another realm of this very process (a worker thread, another copy of eart's module): the pid
  // lives on whatever became of it (a terminated worker), so only its renewals tell.
  if (holder.instance && holder.pid === me.pid && holder.started && holder.started === me.started) return "unknown";
  if (!pidExists(holder.pid)) return "dead";
  if (holder.started && me.started) {
    const started = holder.pid === me.pid ? me.started : startOf(holder.pid);
    // Unreadable (e.g. /proc mounted with hidepid): it may be the holder.
    return started === null || started === holder.started ? "alive" : "dead";
  }
  // Margin: the start is derived from the uptime; a record this process wrote is never older than it.
  if (holder.pid === me.pid && writtenAt !== undefined && writtenAt < startedAt() - 50) return "dead";
  return "alive";
}

let startedAtMs: number | undefined;
/** When this process started, in epoch ms. */
const startedAt = (): number => (startedAtMs ??= Date.now() - process.uptime() * 1000);

/** How a holder reads in a {@link ThreadBusyError}. */
export const describeHolder = (h: LockHolder & { since?: string }): string =>
  `process ${h.pid} on ${h.host}${h.since ? ` since ${h.since}` : ""}`;

export interface LockRow {
  owner: string;
  pid: number;
  host: string;
  acquired_at: string;
  instance: string | null;
  pid_ns: string | null;
  started: string | null;
  heartbeat_at: number | null;
}

