import { awaitAllCallbacks } from "@langchain/core/callbacks/promises";
import { AIMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { LangChainTracer } from "@langchain/core/tracers/tracer_langchain";
import { afterAll, afterEach, beforeAll } from "vitest";
import { z } from "zod";
import { scriptedModel } from "eart/testing";
import { startCaptureServer, type CaptureServer } from "./capture-server.js";

/**
 * LangSmith traces read off a local capture server: the real `langsmith` client sends to it
 * (`LANGSMITH_ENDPOINT`), runs are sent before a run returns (`LANGCHAIN_CALLBACKS_BACKGROUND`),
 * and tracing is off between tests (a test turns it on with `LANGSMITH_TRACING=true`).
 */

/** A Luhn-valid card number, and how many raw copies of it a text holds (spaced or not). */
export const CARD = "4111 1111 1111 1111";
export const cards = (text: string) => (text.match(/4111 ?1111 ?1111 ?1111/g) ?? []).length;

/** The order lookup of a payment system that returns the card on file (the refund tools' lookup leaves it out). */
export const lookupWithCard = tool(async ({ orderId }) => JSON.stringify({ orderId, customer: "cara", total: 740, status: "delivered", card: CARD }), {
  name: "lookup_order",
  description: "Look up an order by id",
  schema: z.object({ orderId: z.string() }),
});

const TRACING_ENV = ["LANGSMITH_TRACING", "LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING", "LANGSMITH_OTEL_ENABLED"] as const;
const ENV = [...TRACING_ENV, "LANGSMITH_ENDPOINT", "LANGSMITH_API_KEY", "LANGCHAIN_CALLBACKS_BACKGROUND"] as const;

type Flushable = { awaitPendingTraceBatches(): Promise<void> };

/** Starts the capture server for the file's tests and points LangSmith at it; restores the environment after. */
export function captureTraces(): {
  readonly server: CaptureServer;
  /** Everything received since `from`, once the tracers' sends are done; throws when no run arrived (a lost trace). */
  traced(from: number, clients?: readonly Flushable[]): Promise<string>;
} {
  const saved = Object.fromEntries(ENV.map((k) => [k, process.env[k]]));
  let server: CaptureServer | undefined;
  beforeAll(async () => {
    server = await startCaptureServer();
    process.env.LANGSMITH_ENDPOINT = server.url;
    process.env.LANGSMITH_API_KEY = "test-key";
    process.env.LANGCHAIN_CALLBACKS_BACKGROUND = "false";
    for (const k of TRACING_ENV) delete process.env[k];
  });
  afterEach(() => {
    for (const k of TRACING_ENV) delete process.env[k];
  });
  afterAll(async () => {
    for (const k of ENV) if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
    await server?.close();
  });
  return {
    get server() {
      if (!server) throw new Error("the capture server starts in beforeAll");
      return server;
    },
    async traced(from, clients = []) {
      await awaitAllCallbacks();
      for (const c of [new LangChainTracer().client as unknown as Flushable, ...clients]) await c.awaitPendingTraceBatches();
      await this.server.waitFor((requests) => requests.slice(from).some((r) => r.path.startsWith("/runs")), 10_000);
      return this.server.requests
        .slice(from)
        .map((r) => `${r.method} ${r.path}\n${r.body.toString("utf8")}`)
        .join("\n");
    },
  };
}

/** A model whose first answer proposes a call whose id holds the card and a call of a tool named after it, then says "Done.". */
export function cardNamingModel() {
  let turn = 0;
  return scriptedModel(() =>
    turn++ === 0
      ? new AIMessage({
          content: "",
          tool_calls: [
            { id: `call_${CARD}`, name: "lookup_order", args: { orderId: "1042" } },
            { id: "call_2", name: `card_${CARD.replace(/ /g, "")}`, args: {} },
          ],
        })
      : new AIMessage("Done."),
  );
}
