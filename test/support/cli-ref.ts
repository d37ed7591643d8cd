/**
 * An approver lists what waits before answering: every answer of the command line names the REF
 * `pending` listed for it (`--ref`). The CLI tests' runners add it to an answer that does not give
 * one, read from `pending --json` just before, as the approver would; a thread listed with nothing
 * gets a well-formed ref that names nothing (the command's other checks still come first).
 */
const ANSWERS: readonly string[] = ["approve", "reject", "edit", "decide", "recover", "review"];

/** A ref no task has. */
export const NO_REF = "000000000000";

/** The thread an answering command line is about, when it names no `--ref` of its own. */
export function answerWithoutRef(args: readonly string[]): { at: number; threadId: string } | undefined {
  if (args.includes("--ref")) return undefined;
  const at = args.findIndex((a) => ANSWERS.includes(a));
  const threadId = at >= 0 ? args[at + 1] : undefined;
  return threadId !== undefined && !threadId.startsWith("-") ? { at, threadId } : undefined;
}

/** The command line with `--ref` set to what `listed` (the items of `pending --json`) shows for its thread. */
export function withListedRef(args: readonly string[], listed: readonly { threadId?: unknown; ref?: unknown }[]): string[] {
  const answer = answerWithoutRef(args);
  if (!answer) return [...args];
  const ref = listed.find((i) => i.threadId === answer.threadId && typeof i.ref === "string")?.ref as string | undefined;
  return [...args.slice(0, answer.at + 1), "--ref", ref ?? NO_REF, ...args.slice(answer.at + 1)];
}
