/**
 * One measuring process of the export benchmark (./export.ts): runs the variants with
 * `EART_BENCH_EXPORT_CHILD_THREADS` timed threads each and writes what it measured on one line of
 * stdout. By hand, without that variable, it runs the whole benchmark (its processes included)
 * and prints its table: `node dist/bench/export-run.js`.
 */
import { measureExport, MEASUREMENT_PREFIX, runExportBench } from "./export.js";

const share = process.env.EART_BENCH_EXPORT_CHILD_THREADS;
if (share === undefined) await runExportBench();
else process.stdout.write(`${MEASUREMENT_PREFIX}${JSON.stringify(await measureExport(Number(share)))}\n`);
