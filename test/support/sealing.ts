import { Sealer, type AgentIdentity, type DecisionRecord } from "eart";
import { processSealKey, type SealKeySource } from "../../src/decisions/seal.js";

/**
 * Seals hand-made state the way eart's nodes would have: the policy gate seals decision records,
 * the identity binding node seals the identity. Tests that call a node directly with a state
 * literal use these, so the node sees records it trusts.
 */

/** The sealer of the process key: what the memory ledger, and nodes built without a ledger, use. */
export function processSealer(): Sealer {
  return new Sealer(processSealKey());
}

/** The sealer of a ledger's store (SQLite, PostgreSQL, or any `sealKey()` source). */
export async function sealerOf(source: SealKeySource): Promise<Sealer> {
  return new Sealer(await source.sealKey());
}

/** A decision record as the gate would have written it for `threadId`. */
export function sealDecision(threadId: string, record: DecisionRecord, sealer: Sealer = processSealer()): DecisionRecord {
  return sealer.decision(threadId, record);
}

/** Decision records as the gate would have written them for `threadId`. */
export function sealDecisions(threadId: string, records: readonly DecisionRecord[], sealer: Sealer = processSealer()): DecisionRecord[] {
  return records.map((r) => sealer.decision(threadId, r));
}

/** An identity as the binding node would have written it for `threadId`. */
export function sealIdentity(threadId: string, identity: AgentIdentity, sealer: Sealer = processSealer()): AgentIdentity {
  return sealer.identity(threadId, identity);
}
