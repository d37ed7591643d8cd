/**
 * The proof that a `langgraph_auth_user` was authenticated by eart's server auth in this
 * deployment, for one run. Where no custom auth is configured, LangGraph server passes a client's
 * own `configurable.langgraph_auth_user` to the graph; eart's auth adds an HMAC of the identity
 * and the run's id under a key only the server holds (`EART_SERVER_SECRET`, or a random key of
 * this process), which the graph checks before it believes the user. LangGraph server keeps each
 * run's configuration in the thread's `config`, which the thread's readers see: a proof read there
 * names a run that has already been made, so it authenticates no other.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

const KEY = Symbol.for("eart.server.proofKey");

/** The key proofs are made with: `EART_SERVER_SECRET` (several processes of one deployment share it), else one random key per process. */
function proofKey(): Buffer {
  const holder = globalThis as unknown as Record<symbol, Buffer | undefined>;
  const secret = process.env.EART_SERVER_SECRET;
  if (secret) return Buffer.from(secret, "utf8");
  return (holder[KEY] ??= randomBytes(32));
}

/** The proof for an identity authenticated for one run. */
export function proofFor(identity: string, runId: string): string {
  return createHmac("sha256", proofKey()).update(`eart.server.run\n${identity}\n${runId}`).digest("base64url");
}

/** Whether a `langgraph_auth_user` carries a valid proof for its identity and this run. */
export function verifyServerUser(user: unknown, runId: unknown): boolean {
  if (typeof user !== "object" || user === null || typeof runId !== "string" || runId === "") return false;
  const { identity, eart_proof: proof } = user as { identity?: unknown; eart_proof?: unknown };
  if (typeof identity !== "string" || identity === "" || typeof proof !== "string") return false;
  const expected = Buffer.from(proofFor(identity, runId));
  const given = Buffer.from(proof);
  return given.length === expected.length && timingSafeEqual(given, expected);
}
