/** Helpers for the tests that answer an escalation: answers bound to the case the reviewer reads. */
import { pendingEscalation, type EscalationRequest } from "eart";

export type ReviewAction = "take_over" | "send_back" | "close";

/** The case waiting for a reviewer in a paused run's result or a thread's state; throws when none waits. */
export function waitingCase(source: unknown): EscalationRequest {
  const request = pendingEscalation(source);
  if (!request) throw new Error("no escalation waits for a reviewer");
  return request;
}

/** A reviewer's answer to a case, carrying the digest the case shows (`extra` cannot override it). */
export function reviewed(request: Pick<EscalationRequest, "digest">, action: ReviewAction, message: string, extra: Record<string, unknown> = {}) {
  return { ...extra, action, message, digest: request.digest };
}
