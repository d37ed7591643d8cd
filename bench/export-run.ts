/**
 * The export benchmark alone, in a process of its own: `npm run bench` runs it so that the heap
 * the earlier sections leave behind (stores, graphs, engines) does not slow its variants' garbage
 * collection. `node dist/bench/export-run.js` runs it by hand.
 */
import { runExportBench } from "./export.js";

await runExportBench();
