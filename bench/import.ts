/**
 * Import time of `eart` beside `@langchain/langgraph`, each in fresh processes (a module is
 * loaded once per process), interleaved so both see the same machine: the median wall time of
 * `await import(…)` over `EART_BENCH_IMPORT_RUNS` processes (default 15) each, and the ratio
 * against the target (≤ 1.2×). Also the packages the `eart` import resolved that it must not
 * (database drivers, HTTP and telemetry clients).
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { positiveIntFromEnv, summarise } from "./stats.js";

/** Target: `import "eart"` at most this multiple of `import "@langchain/langgraph"`. */
export const IMPORT_TARGET_RATIO = 1.2;

const EART = pathToFileURL(fileURLToPath(new URL("../src/index.js", import.meta.url))).href;
const HEAVY = /node_modules\/(better-sqlite3|pg|langsmith|@cedar-policy|@opentelemetry)\//;

/** One fresh process importing `specifier`: milliseconds, and whether a heavy package was loaded (CommonJS ones show in require.cache). */
function importOnce(specifier: string): { ms: number; heavy: string[] } {
  const script = `import { createRequire } from "node:module";
const t = performance.now(); await import(${JSON.stringify(specifier)}); const ms = performance.now() - t;
const heavy = Object.keys(createRequire(import.meta.url).cache).filter((k) => ${HEAVY}.test(k));
console.log(JSON.stringify({ ms, heavy }));`;
  const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", cwd: fileURLToPath(new URL("../..", import.meta.url)) });
  if (run.status !== 0) throw new Error(`import of ${specifier} failed: ${run.stderr}`);
  return JSON.parse(run.stdout.trim().split("\n").at(-1)!) as { ms: number; heavy: string[] };
}

export async function runImportBench(): Promise<void> {
  const runs = positiveIntFromEnv("EART_BENCH_IMPORT_RUNS", 15);
  const eart: number[] = [];
  const langgraph: number[] = [];
  const heavy = new Set<string>();
  for (let i = 0; i < runs; i++) {
    const e = importOnce(EART);
    eart.push(e.ms);
    for (const h of e.heavy) heavy.add(h.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/)?.[1] ?? h);
    langgraph.push(importOnce("@langchain/langgraph").ms);
  }
  const a = summarise(eart);
  const b = summarise(langgraph);
  const ratio = a.median / b.median;
  console.log(`\nimport time, ${runs} fresh processes each (median): eart ${a.median.toFixed(1)} ms, @langchain/langgraph ${b.median.toFixed(1)} ms`);
  console.log(`  ratio eart / langgraph: ${ratio.toFixed(2)}× (target ≤ ${IMPORT_TARGET_RATIO}×) ${ratio <= IMPORT_TARGET_RATIO ? "met" : "MISSED"}`);
  console.log(`  drivers and clients loaded by import "eart": ${heavy.size === 0 ? "none" : [...heavy].join(", ")}`);
}
