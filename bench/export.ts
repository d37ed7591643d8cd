/**
 * Benchmark: per-invoke time of the governed refund conversation (auto-allowed path, 3 model
 * turns, 2 tool calls, 12 audit events per thread, `MemorySaver`, `MemoryAuditLog`) in three
 * variants, in each of its processes:
 *
 * - export off;
 * - export on with the defaults: the same audit log wrapped by `createTraceExport` with the
 *   LangSmith exporter (the real `langsmith` client, posting `/runs/batch`) and the
 *   OpenTelemetry exporter with `otlp` (eart's SDK pipeline, OTLP/HTTP JSON), both on worker
 *   threads;
 * - export on the graph's thread: LangSmith with `thread: "main"`, and OpenTelemetry through the
 *   application's SDK (`BasicTracerProvider` + `BatchSpanProcessor` + OTLP/HTTP JSON exporter).
 *
 * The receiving server runs in a child process, so its work is not on the measured event loop;
 * everything the exporters do (redaction, mapping, serialisation, HTTP) is, on the graph's
 * thread or on the workers, which is what an application pays.
 *
 * One sample is one invoke plus one turn of the event loop (see `turn`), for every variant.
 * The measurement runs in fresh processes, one after the other (`EART_BENCH_EXPORT_PROCESSES`,
 * default 3), each timing its share of the threads, and the samples of all of them are pooled:
 * each process settles into its own JIT and garbage-collection state, which moved single-process
 * ratios by several percent from run to run; pooling averages that over processes. In each, the
 * variants run in 15 rounds, the order rotating each round, after a warm-up; each round of a
 * variant starts with 20 untimed invokes (see `SETTLE_THREADS`). After each invoke, outside the
 * clock, the thread's checkpoints are deleted, in every variant: the heap stays the same size
 * through the run (an agent in production keeps its checkpoints in a database), so garbage
 * collection costs every round alike instead of growing with the checkpoints of every
 * conversation so far. The table also shows the CPU time per invoke (user + system, all threads,
 * the workers' included) and the graph thread's alone. At the end of each process the exporters
 * are flushed and it fails unless every event was exported (none dropped or failed) and the
 * receiver got every span and run.
 * Target: export on with the defaults ≤ 1.05× export off (mean and median of the pooled samples).
 *
 * Env: `EART_BENCH_EXPORT_THREADS` (timed threads per variant, over all processes, default 3,000),
 * `EART_BENCH_EXPORT_PROCESSES` (default 3). `node dist/bench/export-run.js` runs it by hand.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { createTraceExport, MemoryAuditLog, type AuditExporter, type TraceExport } from "eart";
import { createLangSmithExporter } from "eart/langsmith";
import { createOtelExporter } from "eart/otel";
import { assertCompleted, createGovernedVariant, MODEL_CALLS_PER_THREAD, type Variant } from "./refund.js";
import { positiveIntFromEnv, summarise } from "./stats.js";

/** Target: export-on per-invoke time (mean and median) at most this multiple of export-off. */
export const EXPORT_TARGET_RATIO = 1.05;
const DEFAULT_THREADS = 3_000;
const WARMUP_THREADS = 50;
const ROUNDS = 15;
const DEFAULT_PROCESSES = 3;
/**
 * Untimed invokes of a variant at the start of each of its rounds: the background work the
 * previous variant left (its exporters' last batches) settles, and the variant's own reaches its
 * steady state, before the clock runs.
 */
const SETTLE_THREADS = 20;

/**
 * A receiver in a child process: answers 200 `{}` to every POST and keeps the bodies; `GET /stats`
 * parses them then (after the timed rounds, so that parsing never competes with the measured
 * process for a CPU) and counts requests, bytes, spans and run operations by path.
 */
const RECEIVER = `
const http = require("node:http");
const bodies = [];
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    if (req.method === "GET" && req.url === "/stats") {
      const stats = {};
      for (const [url, body] of bodies) {
        const s = (stats[url] ??= { requests: 0, bytes: 0, items: 0 });
        s.requests += 1;
        s.bytes += body.length;
        try {
          const parsed = JSON.parse(body.toString("utf8"));
          if (url === "/v1/traces") for (const rs of parsed.resourceSpans) for (const ss of rs.scopeSpans) s.items += ss.spans.length;
          else s.items += (parsed.post?.length ?? 0) + (parsed.patch?.length ?? 0);
        } catch {}
      }
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify(stats));
    }
    bodies.push([req.url, Buffer.concat(chunks)]);
    res.writeHead(200, { "content-type": "application/json" });
    res.end("{}");
  });
});
server.listen(0, "127.0.0.1", () => process.stdout.write(String(server.address().port) + "\\n"));
`;

async function startReceiver(): Promise<{ url: string; child: ChildProcess; stats(): Promise<Record<string, { requests: number; bytes: number; items: number }>> }> {
  const child = spawn(process.execPath, ["-e", RECEIVER], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((done, fail) => {
    child.once("error", fail);
    child.stdout!.once("data", (d: Buffer) => done(Number(d.toString().trim())));
  });
  const url = `http://127.0.0.1:${port}`;
  return { url, child, stats: async () => (await (await fetch(`${url}/stats`)).json()) as Record<string, { requests: number; bytes: number; items: number }> };
}

const ms = (x: number) => x.toFixed(3);

/**
 * CPU time of this process's main thread (the graph's event loop) so far, in ms, from
 * /proc/self/task/<pid>/stat (utime + stime, in clock ticks of 10 ms); undefined off Linux. Unlike
 * `process.cpuUsage()`, it leaves out the export workers, GC helper threads and libuv's pool.
 */
function graphThreadCpuMs(): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

/**
 * One turn of the event loop. The scripted conversation never waits for I/O, so without it the
 * loop of invokes would run as one chain of microtasks and starve every timer and socket, the
 * exporters' included (a real agent waits for its model between steps). Both variants take it,
 * inside the clock: the exporters' background work runs in these turns and is measured.
 */
const turn = () => new Promise<void>((done) => setImmediate(done));

/** What one process measured: per-invoke times and CPU time per variant, and what it exported. */
export interface ExportMeasurement {
  variants: { name: string; samples: number[]; cpuMs: number; graphCpuMs: number | null }[];
  events: number;
  threads: number;
  flushMs: number;
  received: Record<string, { requests: number; bytes: number; items: number }>;
}

/**
 * Runs the three variants in this process with `threads` timed threads each, checks that every
 * event was exported and arrived, and returns the samples.
 * @example
 * ```ts
 * const m = await measureExport(1_000);
 * ```
 */
export async function measureExport(threads: number): Promise<ExportMeasurement> {
  const receiver = await startReceiver();
  let provider: BasicTracerProvider | undefined;
  const exports: { name: string; traceExport: TraceExport; inner: MemoryAuditLog; variant: Variant }[] = [];
  try {
    provider = new BasicTracerProvider({
      spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${receiver.url}/v1/traces` }), { maxQueueSize: 16_384, scheduledDelayMillis: 1_000, maxExportBatchSize: 512 })],
    });
    const untimed = WARMUP_THREADS + SETTLE_THREADS * Math.min(ROUNDS, threads);
    const modelTurns = (untimed + threads) * MODEL_CALLS_PER_THREAD;
    const off = createGovernedVariant(modelTurns, { name: "export off" });
    const exported = (name: string, exporters: AuditExporter[]) => {
      const inner = new MemoryAuditLog();
      const traceExport = createTraceExport({ auditLog: inner, exporters });
      exports.push({ name, traceExport, inner, variant: createGovernedVariant(modelTurns, { name, auditLog: traceExport }) });
    };
    // The defaults: LangSmith and OTLP exporters on worker threads.
    exported("export on, worker threads (default)", [
      createLangSmithExporter({ apiUrl: receiver.url, apiKey: "bench", projectName: "eart-bench" }),
      createOtelExporter({ otlp: { url: `${receiver.url}/v1/traces` } }),
    ]);
    // Everything on the graph's thread: LangSmith with thread "main", OTel through the application's SDK provider.
    exported("export on, graph's thread", [
      createLangSmithExporter({ apiUrl: receiver.url, apiKey: "bench", projectName: "eart-bench", thread: "main" }),
      createOtelExporter({ tracerProvider: provider }),
    ]);
    const variants = [off, ...exports.map((x) => x.variant)];

    for (const variant of variants) {
      for (let i = 0; i < WARMUP_THREADS; i++) {
        assertCompleted(variant, `warmup-${i}`, await variant.run(`warmup-${i}`));
        await turn();
        await variant.forget(`warmup-${i}`);
      }
    }
    const samples = new Map<Variant, number[]>(variants.map((v) => [v, []]));
    // CPU time of this process per variant (user + system, all its threads, the export workers'
    // included): less sensitive than wall time to other processes on the machine.
    const cpu = new Map<Variant, number>(variants.map((v) => [v, 0]));
    // CPU time of the graph's thread alone, per variant: what exporting costs it directly,
    // without the workers' share of the machine.
    const graphCpu = new Map<Variant, number>(variants.map((v) => [v, 0]));
    const rounds = Math.min(ROUNDS, threads);
    for (let round = 0; round < rounds; round++) {
      const perRound = Math.floor(threads / rounds) + (round < threads % rounds ? 1 : 0);
      // The order rotates each round.
      const order = variants.map((_, i) => variants[(i + round) % variants.length]!);
      for (const variant of order) {
        const times = samples.get(variant)!;
        for (let i = 0; i < SETTLE_THREADS; i++) {
          await variant.run(`warmup-settle-${round}-${i}`);
          await turn();
          await variant.forget(`warmup-settle-${round}-${i}`);
        }
        const cpuStart = process.cpuUsage();
        const graphStart = graphThreadCpuMs();
        for (let i = 0; i < perRound; i++) {
          const start = performance.now();
          await variant.run(`r${round}-${i}`);
          await turn();
          times.push(performance.now() - start);
          await variant.forget(`r${round}-${i}`);
        }
        const used = process.cpuUsage(cpuStart);
        cpu.set(variant, cpu.get(variant)! + (used.user + used.system) / 1000);
        const graphEnd = graphThreadCpuMs();
        if (graphStart !== undefined && graphEnd !== undefined) graphCpu.set(variant, graphCpu.get(variant)! + graphEnd - graphStart);
      }
    }
    const hasGraphCpu = graphThreadCpuMs() !== undefined;

    // Outside the clock: everything was exported, and arrived.
    const flushStart = performance.now();
    const flushed = (await Promise.all(exports.map((x) => x.traceExport.flush({ timeoutMs: 60_000 })))).every(Boolean);
    await provider.forceFlush();
    const flushMs = performance.now() - flushStart;
    for (const variant of variants) {
      const timed = [...variant.refundsByThread].filter(([id]) => !id.startsWith("warmup-"));
      if (timed.length !== threads || timed.some(([, n]) => n !== 1)) throw new Error(`${variant.name}: not every timed thread refunded exactly once`);
    }
    let events = 0;
    let threadCountSeen = 0;
    for (const x of exports) {
      const ids = await x.inner.listThreads();
      let n = 0;
      for (const t of ids) n += (await x.inner.read(t)).length;
      for (const [name, s] of Object.entries(x.traceExport.stats())) {
        if (s.exported !== n || s.dropped !== 0 || s.failed !== 0) throw new Error(`${x.name}, ${name} exporter: ${JSON.stringify(s)}, expected ${n} events exported`);
      }
      events = n;
      threadCountSeen = ids.length;
    }
    const received = await receiver.stats();
    // Each exported conversation is 6 spans (invoke_agent, 3 chat, 2 execute_tool) and 9 LangSmith runs, per export variant.
    const onThreads = (untimed + threads) * exports.length;
    if (!flushed || received["/v1/traces"]?.items !== 6 * onThreads || (received["/runs/batch"]?.items ?? 0) < 9 * onThreads) {
      throw new Error(`export did not arrive in full: flushed=${flushed}, receiver ${JSON.stringify(received)}, ${onThreads} conversations exported`);
    }
    return {
      variants: variants.map((v) => ({ name: v.name, samples: samples.get(v)!, cpuMs: cpu.get(v)!, graphCpuMs: hasGraphCpu ? graphCpu.get(v)! : null })),
      events,
      threads: threadCountSeen,
      flushMs,
      received,
    };
  } finally {
    await Promise.all(exports.map((x) => x.traceExport.shutdown({ timeoutMs: 5_000 })));
    await provider?.shutdown();
    receiver.child.kill();
  }
}

/** The line a measuring process writes its result on (stdout), after this prefix. */
export const MEASUREMENT_PREFIX = "eart-export-measurement ";

/** Runs `measureExport` in a fresh process (./export-run.ts) and returns what it measured. */
async function measureInChild(threads: number): Promise<ExportMeasurement> {
  const child = spawn(process.execPath, [new URL("./export-run.js", import.meta.url).pathname], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, EART_BENCH_EXPORT_CHILD_THREADS: String(threads) },
  });
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  const code = await new Promise<number | null>((done, fail) => {
    child.once("error", fail);
    child.once("exit", done);
  });
  const line = out.split("\n").find((l) => l.startsWith(MEASUREMENT_PREFIX));
  if (code !== 0 || line === undefined) throw new Error(`an export measurement process failed (exit code ${code})${out ? `: ${out.slice(-2_000)}` : ""}`);
  return JSON.parse(line.slice(MEASUREMENT_PREFIX.length)) as ExportMeasurement;
}

/**
 * Runs the export benchmark in `EART_BENCH_EXPORT_PROCESSES` fresh processes, one after the other,
 * and prints the pooled table and ratios, and each process's.
 * @example
 * ```ts
 * await runExportBench();
 * ```
 */
export async function runExportBench(): Promise<void> {
  const threads = positiveIntFromEnv("EART_BENCH_EXPORT_THREADS", DEFAULT_THREADS);
  const processes = Math.min(threads, positiveIntFromEnv("EART_BENCH_EXPORT_PROCESSES", DEFAULT_PROCESSES));
  const runs: ExportMeasurement[] = [];
  for (let p = 0; p < processes; p++) {
    runs.push(await measureInChild(Math.floor(threads / processes) + (p < threads % processes ? 1 : 0)));
  }
  const names = runs[0]!.variants.map((v) => v.name);
  const pooled = names.map((name, i) => {
    const parts = runs.map((r) => r.variants[i]!);
    const graph = parts.every((v) => v.graphCpuMs !== null) ? parts.reduce((a, v) => a + v.graphCpuMs!, 0) : null;
    return { name, samples: parts.flatMap((v) => v.samples), cpuMs: parts.reduce((a, v) => a + v.cpuMs, 0), graphCpuMs: graph };
  });
  const [off, ...exported] = pooled;
  const o = summarise(off!.samples);
  const rounds = Math.min(ROUNDS, Math.floor(threads / processes));
  console.log(`\neart bench: export, refund conversation (${threads} timed threads per variant over ${processes} processes, in each ${WARMUP_THREADS} warm-up, ${rounds} rounds, order rotating, ${SETTLE_THREADS} untimed at the start of each round)`);
  console.table(
    pooled.map((v) => {
      const s = summarise(v.samples);
      return {
        variant: v.name,
        threads: s.count,
        "mean ms": ms(s.mean),
        "median ms": ms(s.median),
        "p95 ms": ms(s.p95),
        "vs off (mean)": v === off ? "" : `${(s.mean / o.mean).toFixed(3)}x`,
        "vs off (median)": v === off ? "" : `${(s.median / o.median).toFixed(3)}x`,
        "CPU ms/invoke": ms(v.cpuMs / s.count),
        "graph thread CPU ms/invoke": v.graphCpuMs !== null ? ms(v.graphCpuMs / s.count) : "n/a",
      };
    }),
  );
  for (const [p, r] of runs.entries()) {
    const rOff = summarise(r.variants[0]!.samples);
    const each = r.variants.slice(1).map((v) => {
      const s = summarise(v.samples);
      return `${v.name} ${(s.mean / rOff.mean).toFixed(3)}x mean, ${(s.median / rOff.median).toFixed(3)}x median`;
    });
    const arrived = Object.entries(r.received).map(([path, s]) => `${path} ${s.items} ${path === "/v1/traces" ? "spans" : "run operations"} in ${s.requests} requests (${(s.bytes / 1024 / 1024).toFixed(1)} MB)`);
    console.log(`process ${p + 1}: ${each.join("; ")}; exported ${r.events} audit events of ${r.threads} threads by each exporter of each variant, none dropped or failed (final flush ${r.flushMs.toFixed(0)} ms); the receiver got ${arrived.join(", ")}`);
  }
  console.log("CPU ms/invoke: the whole process's (the export workers' threads included); graph thread: its main thread's alone (Linux, 10 ms ticks); per invoke of the variant while it ran");
  for (const x of exported) {
    const e = summarise(x.samples);
    const ratio = { mean: e.mean / o.mean, median: e.median / o.median };
    const met = ratio.mean <= EXPORT_TARGET_RATIO && ratio.median <= EXPORT_TARGET_RATIO;
    const graphRatio = x.graphCpuMs !== null && off!.graphCpuMs !== null ? `, graph thread CPU ${(x.graphCpuMs / off!.graphCpuMs).toFixed(3)}x` : "";
    console.log(`${x.name}/off: mean ${ratio.mean.toFixed(3)}x, median ${ratio.median.toFixed(3)}x (CPU ${(x.cpuMs / off!.cpuMs).toFixed(3)}x${graphRatio})`);
    if (x === exported[0]) console.log(`target: export on (the defaults) <= ${EXPORT_TARGET_RATIO}x export off (mean and median): ${met ? "MET" : "NOT MET"}`);
  }
}
