// The child process of ./zz-threads-redteam.test.ts (plain JavaScript on the built package: run
// "npm run build" first). One JSON object per line on stdout. Job (JSON) in EART_THREADS_JOB:
//
// - { mode: "stall", file, thread, staleMs, flag, host? }: runs a graph of its own under
//   guardResumes with a SqliteThreadLock on `file` (a MemorySaver for its checkpoints). Its first
//   step blocks this process's event loop (a long GC pause, a CPU-bound step, a frozen VM) until
//   the file `flag` exists; its second step reports "act". With `host`, the process reports
//   another host name (a container with a hostname of its own sharing the file).
// - { mode: "take", file, thread, barrier }: waits for the file `barrier`, then acquires the
//   thread's SqliteThreadLock once and reports it; holds what it got until a line on stdin.
// - { mode: "writer", file }: on stdin "lock" holds the file's write lock (BEGIN IMMEDIATE), on
//   "commit" commits it, on "exit" exits.
import { existsSync, writeSync } from "node:fs";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { createInterface } from "node:readline";

const job = JSON.parse(process.env.EART_THREADS_JOB ?? "null");
if (!job) throw new Error("EART_THREADS_JOB is not set");
const emit = (event) => writeSync(1, `${JSON.stringify({ pid: process.pid, ...event })}\n`);
const describe = (error) => ({ name: error?.name ?? "Error", code: typeof error?.code === "string" ? error.code : null, message: String(error?.message ?? error).slice(0, 300) });
const require = createRequire(import.meta.url);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));
/** Blocks the event loop (no timer, no I/O callback runs) without spinning a CPU. */
const blockFor = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

if (job.host) {
  // Before eart is loaded: its process instance reads the host name once.
  const os = require("node:os");
  os.hostname = () => job.host;
  syncBuiltinESMExports();
}
const dist = (path) => import(new URL(`../../dist/${path}`, import.meta.url).href);

if (job.mode === "stall") {
  const { SqliteThreadLock } = await dist("src/stores/sqlite/index.js");
  const { guardResumes } = await dist("graphs/index.js");
  const { Annotation, END, MemorySaver, START, StateGraph } = await import("@langchain/langgraph");
  const State = Annotation.Root({ steps: Annotation({ reducer: (a, b) => [...a, ...b], default: () => [] }) });
  const graph = guardResumes(
    new StateGraph(State)
      .addNode("stall", () => {
        emit({ event: "stalling" });
        while (!existsSync(job.flag)) blockFor(20);
        emit({ event: "stalled" });
        return { steps: ["stall"] };
      })
      .addNode("act", () => {
        emit({ event: "act" });
        return { steps: ["act"] };
      })
      .addEdge(START, "stall")
      .addEdge("stall", "act")
      .addEdge("act", END)
      .compile({ checkpointer: new MemorySaver() }),
    { lock: new SqliteThreadLock({ path: job.file, staleMs: job.staleMs }) },
  );
  try {
    const out = await graph.invoke({ steps: [] }, { configurable: { thread_id: job.thread } });
    emit({ event: "result", steps: out.steps });
  } catch (error) {
    emit({ event: "error", ...describe(error) });
  }
  process.exit(0);
} else if (job.mode === "take") {
  const { SqliteThreadLock } = await dist("src/stores/sqlite/index.js");
  const lock = new SqliteThreadLock({ path: job.file });
  emit({ event: "ready" });
  while (!existsSync(job.barrier)) blockFor(5);
  try {
    await lock.acquire(job.thread);
    emit({ event: "won" });
  } catch (error) {
    emit({ event: "lost", ...describe(error) });
  }
  await nextLine();
  process.exit(0);
} else if (job.mode === "writer") {
  const Database = require("better-sqlite3");
  const db = new Database(job.file);
  db.pragma("busy_timeout = 5000");
  emit({ event: "ready" });
  for (;;) {
    const line = await nextLine();
    if (line === "lock") {
      db.exec("BEGIN IMMEDIATE");
      emit({ event: "locked" });
    } else if (line === "commit") {
      db.exec("COMMIT");
      emit({ event: "committed" });
    } else {
      db.close();
      process.exit(0);
    }
  }
} else {
  throw new Error(`unknown mode ${job.mode}`);
}
