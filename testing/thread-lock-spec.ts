import { randomUUID } from "node:crypto";
import { EartConfigError, ThreadBusyError } from "../src/errors.js";
import type { ReleaseThreadLock, ThreadLock } from "../src/threads/lock.js";
import { withHandles } from "./handles.js";
import type { SpecRunner } from "./policy-engine-spec.js";

/** What a thread lock's test tells the spec about it. */
export interface ThreadLockSpecOptions {
  /**
   * Another handle on the same storage (another database connection or session, as a second
   * process would have): used for acquires from several handles at once. Without it those cases
   * run on one handle.
   */
  reopen?: (lock: ThreadLock) => ThreadLock | Promise<ThreadLock>;
  /** How long a refused acquire of a held thread may take to reject, connecting a new handle included (default 5,000 ms). */
  busyWithinMs?: number;
  /**
   * The lock is only ever used by one process (an in-process lock): said so, the suite runs
   * without `reopen`. Without either, it fails: a shared lock must exclude other processes.
   */
  singleProcess?: boolean;
  /**
   * For a lock with leases (held only while its holder renews it: a Redis `SET NX PX`, the SQLite
   * lock's `staleMs`): how long a lease lasts without renewal, in ms. The suite holds a lock for
   * twice this long and checks that it is still held (other handles still get ThreadBusyError, its
   * `lost` stays quiet): a run holds its thread's lock for the whole run, however long. Make the
   * lock with a short lease for the test (a few hundred ms) so the case stays quick. A lock without
   * leases (held for as long as its holder's session or process lives: the PostgreSQL and memory
   * locks) gives none; the case then holds the lock across a short pause only (100 ms).
   */
  leaseMs?: number;
}

/** How long the lease case holds a lock of a store without leases. */
const SHORT_HOLD_MS = 100;

/** A refused call's error, whether the implementation throws or rejects; `"resolved"` if it did neither. */
const refusal = async (call: () => unknown): Promise<unknown> =>
  Promise.resolve()
    .then(call)
    .then(
      () => "resolved",
      (error: unknown) => error,
    );

const TIMED_OUT = "timed out";

/** How a promise settled within `ms`: its value or error, or {@link TIMED_OUT}. */
async function within(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise.catch((error: unknown) => error),
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(TIMED_OUT), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The conformance suite every {@link ThreadLock} runs: acquire resolves with a release function;
 * a held thread refuses another acquire, from the same handle or another, with a
 * {@link ThreadBusyError} naming it, promptly (`busyWithinMs`), never by waiting; of concurrent
 * acquires of one thread exactly one wins; release frees the thread for any handle and is
 * idempotent (a second call never frees a later holder's lock); threads never block each other,
 * a thread id that is a prefix of another included; a `lost` signal, when given, stays quiet
 * while the lock is held; a lock held past its lease (`leaseMs`) is still held; and a thread id
 * that is not a non-empty string is refused with {@link EartConfigError} (field `threadId`).
 * Thread ids are unique per test, so locks on a shared database (PostgreSQL advisory locks are
 * database-wide) can run it.
 * @example
 * ```ts
 * import { describe, it, expect } from "vitest";
 * threadLockSpec("MemoryThreadLock", () => new MemoryThreadLock(), { describe, it, expect });
 * ```
 */
export function threadLockSpec(
  name: string,
  makeLock: () => ThreadLock | Promise<ThreadLock>,
  { describe, it, expect }: SpecRunner,
  options: ThreadLockSpecOptions = {},
): void {
  const { reopen, busyWithinMs = 5_000, singleProcess, leaseMs } = options;

  /** Runs a test body with fresh thread ids; releases every lock it took and closes every handle it opened. */
  const test = (
    title: string,
    body: (ctx: {
      open: () => Promise<ThreadLock>;
      again: (lock: ThreadLock) => Promise<ThreadLock>;
      tid: (label: string) => string;
      /** `lock.acquire(threadId)`, with the release kept for the clean-up. */
      acquire: (lock: ThreadLock, threadId: string) => Promise<ReleaseThreadLock>;
    }) => Promise<void>,
  ) =>
    it(title, async () => {
      const held: ReleaseThreadLock[] = [];
      const run = `spec-${randomUUID()}`;
      // Locks taken are released before their handles close.
      await withHandles(makeLock, reopen, async (handles) => {
        try {
          await body({
            ...handles,
            tid: (label) => `${run}-${label}`,
            acquire: async (lock, threadId) => {
              const release = await lock.acquire(threadId);
              held.push(release);
              return release;
            },
          });
        } finally {
          for (const release of held) await release();
        }
      });
    });

  /** Expects a prompt ThreadBusyError for `threadId`. */
  const expectBusy = async (attempt: Promise<unknown>, threadId: string) => {
    const error = await within(attempt, busyWithinMs);
    expect(error === TIMED_OUT ? `no answer within ${busyWithinMs} ms` : error instanceof ThreadBusyError).toBe(true);
    expect((error as ThreadBusyError).code).toBe("thread_busy");
    expect((error as ThreadBusyError).threadId).toBe(threadId);
  };

  describe(`threadLockSpec: ${name}`, () => {
    if (!reopen && !singleProcess) {
      it("is given a second handle on the same storage (reopen), or said to be used by one process only (singleProcess)", () => {
        throw new Error("threadLockSpec needs reopen (another handle on the same storage: a held thread must be busy to other processes), or singleProcess: true for a lock no other process uses");
      });
    }
    test("acquire resolves with a release function; once released, the thread can be acquired again", async ({ open, tid, acquire }) => {
      const lock = await open();
      const t = tid("t");
      const release = await acquire(lock, t);
      expect(typeof release).toBe("function");
      expect(await release()).toBe(undefined);
      const again = await acquire(lock, t);
      await expectBusy(lock.acquire(t), t);
      await again();
      await (await acquire(lock, t))();
    });

    test("a held thread refuses a second acquire with ThreadBusyError naming it, promptly, from the same handle and from another", async ({ open, again, tid, acquire }) => {
      const lock = await open();
      const other = await again(lock);
      const t = tid("t");
      const release = await acquire(lock, t);
      await expectBusy(lock.acquire(t), t);
      await expectBusy(other.acquire(t), t);
      // A refusal takes nothing: the holder still holds it, and a release frees it for anyone.
      await expectBusy(lock.acquire(t), t);
      await release();
      const next = await acquire(other, t);
      await expectBusy(lock.acquire(t), t);
      await next();
      await (await acquire(lock, t))();
    });

    test("release is idempotent: a second call resolves and never frees a later holder's lock", async ({ open, again, tid, acquire }) => {
      const lock = await open();
      const other = await again(lock);
      const t = tid("t");
      const first = await acquire(lock, t);
      await first();
      await first();
      const second = await acquire(other, t);
      // The first holder's release again, once someone else holds the thread.
      await first();
      await expectBusy(lock.acquire(t), t);
      await expectBusy(other.acquire(t), t);
      await second();
      await second();
      await (await acquire(lock, t))();
    });

    test("different threads never block each other, a thread id that is a prefix of another included", async ({ open, again, tid, acquire }) => {
      const lock = await open();
      const other = await again(lock);
      const [t, longer, u] = [tid("t"), tid("t-2"), tid("u")];
      const releases = [await acquire(lock, t), await acquire(lock, longer), await acquire(other, u)];
      await expectBusy(other.acquire(t), t);
      await expectBusy(lock.acquire(longer), longer);
      await expectBusy(lock.acquire(u), u);
      // Releasing one leaves the others held.
      await releases[1]!();
      await expectBusy(lock.acquire(t), t);
      await expectBusy(other.acquire(u), u);
      await (await acquire(other, longer))();
    });

    test("many threads held at once by one handle are released one by one", async ({ open, again, tid, acquire }) => {
      const lock = await open();
      const other = await again(lock);
      const threads = Array.from({ length: 6 }, (_, i) => tid(`t${i}`));
      const releases = await Promise.all(threads.map((t) => acquire(lock, t)));
      for (let i = 0; i < threads.length; i += 2) await releases[i]!();
      for (const [i, t] of threads.entries()) {
        if (i % 2 === 1) await expectBusy(other.acquire(t), t);
        else await (await acquire(other, t))();
      }
    });

    test("concurrent acquires of one thread, across handles: exactly one wins, every other gets ThreadBusyError", async ({ open, again, tid, acquire }) => {
      const lock = await open();
      const handles = [lock, await again(lock), await again(lock)];
      const t = tid("t");
      const callers = 12;
      const outcomes = await Promise.all(
        Array.from({ length: callers }, (_, i) => within(acquire(handles[i % handles.length]!, t), busyWithinMs)),
      );
      expect(outcomes.filter((o) => o === TIMED_OUT).length).toBe(0);
      const winners = outcomes.filter((o) => typeof o === "function") as ReleaseThreadLock[];
      expect(winners.length).toBe(1);
      const refused = outcomes.filter((o) => o instanceof ThreadBusyError) as ThreadBusyError[];
      expect(refused.length).toBe(callers - 1);
      for (const error of refused) expect(error.threadId).toBe(t);
      for (const handle of handles) await expectBusy(handle.acquire(t), t);
      await winners[0]!();
      await (await acquire(handles[handles.length - 1]!, t))();
    });

    test("a lost signal, when given, is an AbortSignal that stays quiet while the lock is held", async ({ open, tid, acquire }) => {
      const lock = await open();
      const t = tid("t");
      const release = await acquire(lock, t);
      if (release.lost !== undefined) {
        expect(release.lost instanceof AbortSignal).toBe(true);
        expect(release.lost.aborted).toBe(false);
      }
      await expectBusy(lock.acquire(t), t);
      expect(release.lost?.aborted ?? false).toBe(false);
      await release();
    });

    // graphs/run-thread.ts holds the lock for the whole run and aborts the run on `lost`: a lease
    // that lapses under a run longer than it (a slow tool, a model call) without `lost` lets a
    // second worker run the thread while the first still does.
    test("a lock held past its lease (leaseMs) is still held: other handles get ThreadBusyError and lost stays quiet", async ({ open, again, tid, acquire }) => {
      const lock = await open();
      const other = await again(lock);
      const t = tid("t");
      const release = await acquire(lock, t);
      await expectBusy(other.acquire(t), t);
      await new Promise((resolve) => setTimeout(resolve, leaseMs === undefined ? SHORT_HOLD_MS : 2 * leaseMs));
      const taken = await within(other.acquire(t), busyWithinMs);
      if (typeof taken === "function") await (taken as ReleaseThreadLock)();
      const lost = release.lost?.aborted ? "lost aborted" : "lost never aborted: two runs of one thread at once";
      expect(typeof taken === "function" ? `lapsed: another handle took it (${lost})` : "held").toBe("held");
      expect(release.lost?.aborted ?? false).toBe(false);
      await expectBusy(other.acquire(t), t);
      await expectBusy(lock.acquire(t), t);
      await release();
      await (await acquire(other, t))();
    });

    test("thread ids with quotes, backslashes and non-ASCII characters are threads like any other", async ({ open, again, tid, acquire }) => {
      const lock = await open();
      const other = await again(lock);
      const [odd, plain] = [tid(`o'k "q" \\ % _ é 日本 \u2028 \ud83d\ude00`), tid("plain")];
      const release = await acquire(lock, odd);
      await expectBusy(other.acquire(odd), odd);
      await (await acquire(other, plain))();
      await release();
      await (await acquire(other, odd))();
    });

    const invalid: [string, unknown][] = [
      ["an empty thread id", ""],
      ["an undefined thread id", undefined],
      ["a null thread id", null],
      ["a numeric thread id", 42],
      ["an object as thread id", { threadId: "t" }],
    ];
    for (const [label, bad] of invalid) {
      test(`refuses ${label} with EartConfigError (field "threadId") and holds nothing`, async ({ open, tid, acquire }) => {
        const lock = await open();
        const error = await refusal(() => lock.acquire(bad as string));
        expect(error instanceof EartConfigError).toBe(true);
        expect((error as EartConfigError).code).toBe("config_invalid");
        expect((error as EartConfigError).field).toBe("threadId");
        // The lock still works after a refusal.
        const t = tid("t");
        const release = await acquire(lock, t);
        await expectBusy(lock.acquire(t), t);
        await release();
      });
    }
  });
}
