/**
 * The cost of the authority check per governed call, per store. The gate seals each decision
 * record it writes and the tool node checks the seal before it runs the call: an HMAC-SHA256 over
 * the canonical record, with a key read from the effect ledger's store once per process. So the
 * check adds no round trip to a call; this prints the one-time key read of each store and the
 * per-call seal + check.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { MemoryEffectLedger, Sealer, toolCallDigest, type DecisionRecord, type EffectLedger } from "eart";
import { PostgresEffectLedger } from "eart/postgres";
import { SqliteEffectLedger } from "eart/sqlite";
import { positiveIntFromEnv } from "./stats.js";

const THREAD = "bench-authority";

function record(i: number): DecisionRecord {
  const args = { orderId: `order-${i}`, amount: (i % 100) + 1, reason: "customer request" };
  return {
    schemaVersion: 1,
    toolCallId: `call-${i}`,
    messageId: `ai-${i}`,
    name: "issue_refund",
    args,
    digest: toolCallDigest("issue_refund", args, THREAD),
    verdict: { effect: "allow", reasons: ["Refunds up to $100 are allowed"], policyIds: ["refund.small"], version: "bench" },
    status: "allowed",
    approvals: [],
    requestedBy: { agentId: "support-agent", userId: "cara" },
    decidedAt: new Date().toISOString(),
  };
}

async function measure(name: string, ledger: EffectLedger, calls: number) {
  const keyStart = performance.now();
  const sealer = new Sealer(await ledger.sealKey());
  const keyMs = performance.now() - keyStart;
  const records = Array.from({ length: calls }, (_, i) => record(i));
  for (const r of records.slice(0, 500)) sealer.decisionIsSealed(THREAD, sealer.decision(THREAD, r)); // warm-up
  const start = performance.now();
  let ok = 0;
  for (const r of records) if (sealer.decisionIsSealed(THREAD, sealer.decision(THREAD, r))) ok++;
  const perCallUs = ((performance.now() - start) * 1000) / calls;
  if (ok !== calls) throw new Error(`${name}: ${calls - ok} seals did not verify`);
  return { store: name, "key read once (ms)": keyMs.toFixed(2), "seal + check per call (µs)": perCallUs.toFixed(1), "round trips per call": 0 };
}

export async function runAuthorityBench(): Promise<void> {
  const calls = positiveIntFromEnv("EART_BENCH_AUTHORITY_CALLS", 20_000);
  const dir = mkdtempSync(join(tmpdir(), "eart-bench-authority-"));
  const rows = [await measure("memory", new MemoryEffectLedger(), calls)];
  const sqlite = new SqliteEffectLedger({ path: join(dir, "ledger.sqlite") });
  rows.push(await measure("SQLite", sqlite, calls));
  sqlite.close();
  if (process.env.EART_BENCH_SKIP_LEDGER_POSTGRES !== "1") {
    const pool = new pg.Pool({ connectionString: process.env.EART_BENCH_DATABASE_URL ?? process.env.EART_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test" });
    try {
      rows.push(await measure("PostgreSQL", new PostgresEffectLedger({ pool }), calls));
    } finally {
      await pool.end();
    }
  }
  rmSync(dir, { recursive: true, force: true });
  console.log(`\neart bench: the authority check per governed call (${calls} calls per store; the gate seals, the tool node checks)`);
  console.table(rows);
}
