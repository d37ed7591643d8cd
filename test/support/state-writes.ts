import { expect } from "vitest";
import { eartErrorOf } from "eart";

type Writable = { updateState: (config: never, values: never, asNode?: string) => Promise<unknown> };

/**
 * A state write on a thread that waits for a human: refused through the guard
 * (`thread_awaiting_approval`: it would drop the request's interrupt; or `state_write_refused`
 * first, for a write that replaces a message the thread holds), then made past it, through
 * LangGraph's own `bulkUpdateState` on the graph's class (as a script calling the class method
 * would), so that the checks behind the guard are tried as well.
 */
export async function writePastPause(graph: unknown, config: unknown, values: Record<string, unknown>, asNode?: string): Promise<void> {
  const refused = await (graph as Writable).updateState(config as never, values as never, asNode).then(
    () => "no error",
    (error: unknown) => eartErrorOf(error)?.code ?? String(error),
  );
  expect(["thread_awaiting_approval", "state_write_refused"]).toContain(refused);
  const own = Object.getPrototypeOf(graph) as { bulkUpdateState: (this: unknown, config: unknown, supersteps: unknown) => Promise<unknown> };
  await own.bulkUpdateState.call(graph, config, [{ updates: [{ values, asNode }] }]);
}
