/**
 * Runs one scenario: `npm run example -- <name>`. Each scenario lives in `examples/<name>/` with
 * its identities, policies and data, and exports `run(log)` from `scenario.ts`. The refund
 * scenario is the two-process demo (`npm run demo`).
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const SCENARIOS = ["refund", "loan-prescreen", "procurement", "hr-offer", "sales-discount", "finance-payment"] as const;

const name = process.argv[2];
if (!name || !(SCENARIOS as readonly string[]).includes(name)) {
  console.error(`usage: npm run example -- <${SCENARIOS.join(" | ")}>`);
  process.exit(2);
}
if (name === "refund") {
  const child = spawnSync(process.execPath, [join(here, "refund", "demo.js")], { stdio: "inherit" });
  process.exit(child.status ?? 1);
}
const file = join(here, name, "scenario.js");
if (!existsSync(file)) {
  console.error(`scenario "${name}" is not built: ${file} is missing`);
  process.exit(1);
}
const scenario = (await import(pathToFileURL(file).href)) as { run: (log: (line: string) => void) => Promise<unknown> };
await scenario.run((line) => console.log(line));
