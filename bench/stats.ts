/**
 * What the benchmarks share: their settings from the environment, and the summary of per-invoke
 * times the refund and export benchmarks print.
 */

/**
 * A positive integer setting from the environment variable `name`, else `fallback`; anything
 * else set there is an error naming it.
 * @example
 * ```ts
 * const threads = positiveIntFromEnv("EART_BENCH_THREADS", 1_000);
 * ```
 */
export function positiveIntFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

/** Summary of per-invoke times, in milliseconds. */
export interface Stats {
  count: number;
  mean: number;
  median: number;
  p95: number;
}

/**
 * Mean, median and 95th percentile of a list of samples.
 * @example
 * ```ts
 * summarise([1, 2, 3]).median // 2
 * ```
 */
export function summarise(samples: readonly number[]): Stats {
  if (samples.length === 0) throw new Error("no samples");
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  const mid = sorted.length / 2;
  const median = sorted.length % 2 === 1 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { count: sorted.length, mean: sorted.reduce((s, x) => s + x, 0) / sorted.length, median, p95: at(0.95) };
}
