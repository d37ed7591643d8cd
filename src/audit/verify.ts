import type { AuditLog } from "./log.js";
import { globalMismatch, verifyGlobalLog, type AuditStoreProblem, type GlobalHead, type SignedGlobalHead } from "./global.js";
import type { AuditPublicKey } from "./signing.js";
import { EartConfigError } from "../errors.js";

/** What {@link verifyAuditStore} found. */
export interface AuditStoreVerification {
  ok: boolean;
  /** Threads checked: those with events and those the global log knows. */
  threads: number;
  /** Events checked, over all threads. */
  events: number;
  /** Where the global log ends. */
  globalHead: GlobalHead | null;
  problems: AuditStoreProblem[];
}

/**
 * Checks a whole audit store: every thread's chain (as `verify` does), the global log over all
 * threads (no gap in its sequence, every link and hash, its recorded and signed heads), each
 * thread's chain against its latest head in the global log, threads the global log knows that the
 * store lost, and, given a `witness` (a global head kept outside the store, e.g. from an
 * exporter's payload), that the store was not rolled back behind it.
 * @example
 * ```ts
 * const report = await verifyAuditStore(auditLog, { witness: lastExportedGlobalHead });
 * if (!report.ok) for (const p of report.problems) console.error(p.kind, p.threadId ?? "", p.detail);
 * ```
 */
export async function verifyAuditStore(log: AuditLog, options: { publicKey?: AuditPublicKey; witness?: GlobalHead | SignedGlobalHead } = {}): Promise<AuditStoreVerification> {
  if (typeof log.globalLog !== "function") throw new EartConfigError("auditLog", "this audit log keeps no global log (globalLog); it cannot be verified as a whole");
  const snapshot = await log.globalLog();
  const publicKey = options.publicKey ?? snapshot.publicKey;
  const check = verifyGlobalLog(snapshot.entries, {
    recorded: snapshot.recorded,
    signedHead: snapshot.signedHead,
    ...(publicKey !== undefined ? { publicKey } : {}),
    ...(options.witness !== undefined ? { witness: options.witness } : {}),
  });
  const problems = [...check.problems];
  const stored = new Set(await log.listThreads());
  const threads = [...new Set([...stored, ...check.latest.keys()])].sort();
  let events = 0;
  // A chain that does not end where the global log says: a thread it logs (rolled back, rewritten), or one it never logged.
  const mismatched = (threadId: string, detail: string): AuditStoreProblem => ({ kind: check.latest.has(threadId) ? "thread_mismatch" : "unlogged_thread", threadId, detail });
  for (const threadId of threads) {
    if (!stored.has(threadId)) {
      const logged = check.latest.get(threadId)!;
      problems.push({ kind: "missing_thread", threadId, gseq: logged.gseq, detail: `the global log records ${logged.seq + 1} events for this thread (last at global entry ${logged.gseq}); the store has none` });
      continue;
    }
    const result = await log.verify(threadId, publicKey !== undefined ? { publicKey } : {});
    events += result.count;
    if (result.ok) {
      // Against the global log checked here, not only the store's own record of each thread's
      // latest head (a row of that record with no entry in the global log could stand for one).
      const mismatch = globalMismatch(result.count > 0 ? { seq: result.count - 1, hash: result.headHash } : null, check.latest.get(threadId));
      if (mismatch) problems.push(mismatched(threadId, mismatch));
      continue;
    }
    const { reason, found, seq } = result.brokenAt;
    if (reason === "global_mismatch") {
      problems.push(mismatched(threadId, found));
    } else {
      problems.push({ kind: "thread_broken", threadId, detail: `${reason} at seq ${seq}: expected ${result.brokenAt.expected}, found ${found}` });
    }
  }
  return { ok: problems.length === 0, threads: threads.length, events, globalHead: check.head, problems };
}
