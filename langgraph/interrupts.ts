/** The one way eart's nodes ask a human: interrupt, read the newest answer, record a refusal and ask again. */
import { interrupt, isGraphInterrupt } from "@langchain/langgraph";
import { ApprovalError } from "../src/errors.js";

/**
 * Pauses with `interrupt(request)` and returns the newest answer given to it. LangGraph keeps
 * every resume value of a task, refused ones too, and replays them in order when the node re-runs:
 * only the newest counts, so a refused answer is never checked again (the policy, the roles or the
 * clock may have changed since it was refused). Must be the first statement with an effect in the
 * calling node, which re-runs from its start on resume.
 */
export function newestAnswer(request: unknown): unknown {
  let answer = interrupt(request);
  for (;;) {
    try {
      answer = interrupt(request);
    } catch (error) {
      if (!isGraphInterrupt(error)) throw error;
      return answer;
    }
  }
}

/**
 * Checks a human's answer: returns what `check` makes of it, or, when `check` refuses it with an
 * {@link ApprovalError}, records the refusal with `onRefused` and throws the error (nothing ran;
 * the thread stays paused on the same request).
 */
export async function acceptAnswer<T>(answer: unknown, check: (answer: unknown) => T | Promise<T>, onRefused: (error: ApprovalError, answer: unknown) => Promise<void>): Promise<T> {
  try {
    return await check(answer);
  } catch (error) {
    if (!(error instanceof ApprovalError)) throw error;
    await onRefused(error, answer);
    throw error;
  }
}

/**
 * The one interrupt helper of eart's human tasks (approval, recovery, review): pauses with
 * `interrupt(request)`, takes the newest answer ({@link newestAnswer}) and checks it
 * ({@link acceptAnswer}). `check` throws an {@link ApprovalError} to refuse.
 */
export async function interruptForAnswer<T>(request: unknown, check: (answer: unknown) => T | Promise<T>, onRefused: (error: ApprovalError, answer: unknown) => Promise<void>): Promise<T> {
  return acceptAnswer(newestAnswer(request), check, onRefused);
}
