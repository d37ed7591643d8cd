import { createServer, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AIMessage, HumanMessage, SystemMessage, ToolMessage, type BaseMessage } from "@langchain/core/messages";
import type { Client } from "@langchain/langgraph-sdk";
import { refundScript } from "../../examples/refund/model.js";
import { financeScript } from "../../examples/finance-payment/model.js";
import { where } from "../support/cards.js";
import { approveAll, interruptOf, startDevServer, type DevServer } from "../support/langgraph-server.js";

/**
 * Red-team pass on the LangGraph server's STREAMING surface of eart's two served agents (the
 * prebuilt `refund` graph, `createServerAgent`, and the `createAgent` + governanceMiddleware one,
 * `refund-middleware`), and of `finance-payment` (IBANs visible to treasury only), after
 * `redactIncoming` started to wrap `streamEvents` (graphs/governed-agent.ts `redactedEvents`).
 *
 * The served graphs use `ChatOpenAI` when OPENAI_API_KEY is set (examples/refund/model.ts
 * `createRefundModel`): here it talks to a local stand-in for OpenAI's chat completions API on
 * 127.0.0.1 that answers with the served scripts (refundScript, financeScript) and STREAMS its
 * answer in three-character tokens, as a real model does. One thing it adds: when the customer's
 * last message spells a card out in words (which no pattern reads: README "Out of reach of
 * patterns"), the model writes the digits back ("Noted: the card you spelled is 4111 1111 1111
 * 1111."), the everyday way a model turns text eart could not see into a card eart must redact.
 * eart redacts that answer in the thread ("… is [REDACTED:card_number].") and promises to redact
 * "the model's raw answer" in every event `streamEvents` hands the caller (README, context
 * red-team list).
 *
 * Each attack asserts the guarantee with a control that the mode carried the field. The pass
 * found the model's token stream carrying a card split across tokens (each token redacted alone),
 * in every token mode and in the run's stored stream that approvers replay, and a bug of the event
 * redaction that failed runs in messages mode; both are fixed (graphs/token-stream.ts holds the
 * tokens back per message; an event is kept when nothing in it is redacted).
 */
let server: DevServer;
let openai: Server;

const CARD = "4111 1111 1111 1111";
const SPELLED = "four one one one one one one one one one one one one one one one";
const REDACTED = "[REDACTED:card_number]";
const IBAN = "GB29 NWBK 6016 1331 9268 19"; // V-311's, in examples/finance-payment/data.ts

// ─── The model: OpenAI's chat completions API, answered with the served scripts ─────────────

const WORDS: Record<string, string> = { zero: "0", one: "1", two: "2", three: "3", four: "4", five: "5", six: "6", seven: "7", eight: "8", nine: "9" };
function spelledDigits(text: string): string | undefined {
  const digits = (text.toLowerCase().match(/\b(zero|one|two|three|four|five|six|seven|eight|nine)\b/g) ?? []).map((w) => WORDS[w]).join("");
  return digits.length >= 13 ? digits.replace(/(\d{4})(?=\d)/g, "$1 ") : undefined;
}

type WireMessage = { role: string; content: unknown; tool_calls?: { id: string; function: { name: string; arguments: string } }[]; tool_call_id?: string };
function toLangChain(messages: WireMessage[]): BaseMessage[] {
  const names = new Map<string, string>();
  const text = (c: unknown) => (typeof c === "string" ? c : Array.isArray(c) ? c.map((p) => (p as { text?: string }).text ?? "").join("") : "");
  return messages.map((m) => {
    if (m.role === "system" || m.role === "developer") return new SystemMessage(text(m.content));
    if (m.role === "user") return new HumanMessage(text(m.content));
    if (m.role === "assistant") {
      const calls = (m.tool_calls ?? []).map((c) => {
        names.set(c.id, c.function.name);
        return { id: c.id, name: c.function.name, args: JSON.parse(c.function.arguments || "{}") as Record<string, unknown> };
      });
      return new AIMessage({ content: text(m.content), tool_calls: calls });
    }
    const content = text(m.content);
    let ok: boolean;
    try {
      ok = typeof JSON.parse(content) === "object";
    } catch {
      ok = false;
    }
    // The wire carries no tool status: the scripts' tools answer JSON, errors are text.
    return new ToolMessage({ content, tool_call_id: m.tool_call_id ?? "", name: names.get(m.tool_call_id ?? ""), status: ok ? "success" : "error" });
  });
}

function answer(wire: WireMessage[]): { content: string; calls: { id: string; name: string; args: unknown }[] } {
  const messages = toLangChain(wire);
  const system = messages.filter((m) => SystemMessage.isInstance(m)).map((m) => String(m.content)).join("\n");
  const conversation = messages.filter((m) => !SystemMessage.isInstance(m) || String(m.content).startsWith("Context retrieved"));
  const out = (/accounts-payable/.test(system) ? financeScript : refundScript)(conversation);
  let content = String(out.content ?? "");
  const last = messages.at(-1);
  const card = last && HumanMessage.isInstance(last) ? spelledDigits(String(last.content)) : undefined;
  if (card) content = `Noted: the card you spelled is ${card}. ${content}`.trim();
  return { content, calls: ((out as AIMessage).tool_calls ?? []).map((c) => ({ id: c.id!, name: c.name, args: c.args })) };
}

let completion = 0;
function startOpenAi(): Promise<number> {
  openai = createServer((req, res) => {
    let raw = "";
    req.on("data", (d) => (raw += String(d)));
    req.on("end", () => {
      const body = JSON.parse(raw || "{}") as { stream?: boolean; model?: string; messages: WireMessage[] };
      const { content, calls } = answer(body.messages ?? []);
      const id = `chatcmpl-${++completion}`;
      const model = body.model ?? "gpt-4o-mini";
      const finish = calls.length > 0 ? "tool_calls" : "stop";
      const wireCalls = calls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: JSON.stringify(c.args) } }));
      if (!body.stream) {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ id, object: "chat.completion", created: 1, model, choices: [{ index: 0, finish_reason: finish, message: { role: "assistant", content, ...(calls.length ? { tool_calls: wireCalls } : {}) } }], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }));
        return;
      }
      res.setHeader("content-type", "text/event-stream");
      const send = (delta: unknown, finish_reason: string | null = null) => res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created: 1, model, choices: [{ index: 0, delta, finish_reason }] })}\n\n`);
      send({ role: "assistant", content: "" });
      // Tokens of three characters, as a tokenizer splits digits: no token holds a whole card.
      for (let i = 0; i < content.length; i += 3) send({ content: content.slice(i, i + 3) });
      calls.forEach((c, index) => {
        send({ tool_calls: [{ index, id: c.id, type: "function", function: { name: c.name, arguments: "" } }] });
        const args = JSON.stringify(c.args);
        for (let i = 0; i < args.length; i += 8) send({ tool_calls: [{ index, function: { arguments: args.slice(i, i + 8) } }] });
      });
      send({}, finish);
      res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created: 1, model, choices: [], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } })}\n\n`);
      res.end("data: [DONE]\n\n");
    });
  });
  return new Promise((ok) => openai.listen(0, "127.0.0.1", () => ok((openai.address() as { port: number }).port)));
}

beforeAll(async () => {
  const port = await startOpenAi();
  server = await startDevServer(
    { OPENAI_API_KEY: "sk-local-stand-in", OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1` },
    { extraGraphs: { "refund-middleware": "examples/server/refund-middleware.ts:agent" } },
  );
}, 180_000);
afterAll(async () => {
  await server?.stop();
  await new Promise((ok) => openai?.close(ok));
});

// ─── Helpers ─────────────────────────────────────────────────────────────────────────────────

const as = (user: string) => server.client(user);
const say = (content: string) => ({ messages: [{ role: "user", content }] });
type Part = { event: string; data: unknown };
/** Every stream mode but "messages" (see the BUG below: it errors the run at random). */
const SAFE_MODES = ["values", "updates", "messages-tuple", "events", "debug", "tasks", "checkpoints", "custom"] as const;
const GRAPHS = ["refund", "refund-middleware"] as const;

const marked = (value: unknown, mark = REDACTED) => JSON.stringify(value ?? null).includes(mark);
const kind = (p: Part) => p.event.split("|")[0]!;

/** A message or message chunk as the server serialises it (flat, or LangChain's constructor form). */
function messageOf(x: unknown): { id?: string; content: string } {
  const m = x as { kwargs?: { id?: string; content?: unknown }; id?: unknown; content?: unknown } | null;
  const body = m?.kwargs ?? m ?? {};
  const c = (body as { content?: unknown }).content;
  const content = typeof c === "string" ? c : Array.isArray(c) ? c.map((b) => (b as { text?: string }).text ?? "").join("") : "";
  const id = (body as { id?: unknown }).id;
  return { id: typeof id === "string" ? id : undefined, content };
}

/**
 * What a client reassembles from a stream's token chunks, per message id: `messages-tuple` chunks
 * and `events` `on_chat_model_stream` chunks concatenated in order (what LangGraph's SDK and any
 * chat UI do), and each `messages/partial` as it is (already accumulated by the server).
 */
function reassembled(parts: Part[], source: "messages-tuple" | "events" | "messages/partial"): string[] {
  const texts = new Map<string, string>();
  const out: string[] = [];
  for (const p of parts) {
    if (source === "messages-tuple" && kind(p) === "messages") {
      const { id, content } = messageOf((p.data as unknown[])[0]);
      texts.set(id ?? "?", (texts.get(id ?? "?") ?? "") + content);
    } else if (source === "events" && p.event === "events" && (p.data as { event?: string }).event === "on_chat_model_stream") {
      const { id, content } = messageOf((p.data as { data: { chunk: unknown } }).data.chunk);
      texts.set(id ?? "?", (texts.get(id ?? "?") ?? "") + content);
    } else if (source === "messages/partial" && p.event === "messages/partial") {
      out.push(...(p.data as unknown[]).map((m) => messageOf(m).content));
    }
  }
  return [...out, ...texts.values()];
}
const spells = (texts: string[], needle = CARD) => texts.filter((t) => where(t, needle).length > 0);

/** Streams one run of `client` on a new thread of its own, and collects the parts. */
async function streamNew(client: Client, graph: string, input: unknown, options: Record<string, unknown> = {}): Promise<{ threadId: string; runId: string; parts: Part[] }> {
  const threadId = (await client.threads.create()).thread_id;
  let runId = "";
  const parts: Part[] = [];
  for await (const p of client.runs.stream(threadId, graph, { input: input as never, onRunCreated: (m) => (runId = m.run_id), ...options })) parts.push(p as Part);
  return { threadId, runId, parts };
}

/** Cara's refund on `graph` with her card spelled out, streamed in `modes`; memoised per graph, modes and subgraphs. */
const spelledRuns = new Map<string, Promise<{ threadId: string; runId: string; parts: Part[] }>>();
function spelledRun(graph: string, subgraphs: boolean, modes: readonly string[] = SAFE_MODES) {
  const key = `${graph}|${subgraphs}|${modes.join(",")}`;
  if (!spelledRuns.has(key)) spelledRuns.set(key, streamNew(as("cara"), graph, say(`Please refund order 1042, $740. My card is ${SPELLED}.`), { streamMode: [...modes], streamSubgraphs: subgraphs }));
  return spelledRuns.get(key)!;
}

/** The model's answer as the thread keeps it: the message that says it noted the card. */
async function noted(client: Client, threadId: string): Promise<string | undefined> {
  const messages = ((await client.threads.getState(threadId)).values as { messages?: { content: unknown }[] }).messages ?? [];
  return messages.map((m) => messageOf(m).content).find((c) => c.startsWith("Noted"));
}

// ─── The model's answer, streamed ───────────────────────────────────────────────────────────

describe("the model's answer in every stream mode (cara, both served agents, with and without subgraphs)", () => {
  it("holds: values, updates, debug, tasks, checkpoints (and custom) carry the answer as the thread does, redacted; the thread pauses for sam", { timeout: 120_000 }, async () => {
    for (const graph of GRAPHS) {
      for (const subgraphs of [false, true]) {
        const { threadId, parts } = await spelledRun(graph, subgraphs);
        const label = `${graph} subgraphs=${subgraphs}`;
        expect(parts.some((p) => p.event === "error"), label).toBe(false);
        // Control: the thread keeps the answer redacted, and each state mode carried it.
        expect(await noted(as("cara"), threadId), label).toBe(`Noted: the card you spelled is ${REDACTED}.`);
        for (const mode of ["values", "updates", "debug", "tasks", "checkpoints"]) {
          const chunks = parts.filter((p) => kind(p) === mode);
          expect(chunks.length, `${label} ${mode}`).toBeGreaterThan(0);
          expect(marked(chunks), `${label} ${mode} carries the answer`).toBe(true);
          expect(where(chunks, CARD), `${label} ${mode}`).toEqual([]);
        }
        // The approval request (interrupt value) in updates and in the debug / tasks task list.
        expect(parts.some((p) => kind(p) === "updates" && JSON.stringify(p.data).includes("__interrupt__")), label).toBe(true);
        expect(where(parts.filter((p) => kind(p) === "custom"), CARD), label).toEqual([]);
        expect((await as("cara").threads.get(threadId)).status, label).toBe("interrupted");
      }
    }
  });

  it("holds: events carry the model's whole answer (on_chat_model_end, on_chain_end) redacted", { timeout: 120_000 }, async () => {
    for (const graph of GRAPHS) {
      const { parts } = await spelledRun(graph, false);
      const ends = parts.filter((p) => p.event === "events" && ["on_chat_model_end", "on_chain_end"].includes((p.data as { event: string }).event));
      expect(ends.length, graph).toBeGreaterThan(0);
      expect(marked(ends.filter((p) => (p.data as { event: string }).event === "on_chat_model_end")), graph).toBe(true);
      expect(where(ends, CARD), graph).toEqual([]);
    }
  });

  // Found by the pass, fixed (medium; customer's own stream, and every reader of the run's stream: see the replay
  // below): stream_mode "messages-tuple" hands the caller the model's RAW answer, token by token,
  // before eart redacts it: "Noted: the card you spelled is 4111 1111 1111 1111." while the
  // thread holds "… is [REDACTED:card_number].". Both served agents, with and without
  // stream_subgraphs. LangGraph's StreamMessagesHandler (pregel/messages.js handleLLMNewToken /
  // handleLLMEnd) writes the model's chunks into the graph's own stream as `[ns, "messages",
  // [chunk, meta]]`; LangGraph server reads them from the root run's `on_chain_stream` event,
  // which graphs/governed-agent.ts `redactedEvents` passes untouched (STATE_EVENTS: "the graph's
  // own chunks of state, redacted already"): these chunks are not state. With the scripted
  // (non-streaming) model the prebuilt agent leaks the same way through handleLLMEnd (the whole raw
  // AIMessage); under governanceMiddleware `becomeRedacted` edits that message in place, so only
  // streamed tokens get out there. Fix (graphs/governed-agent.ts `redactedEvents`): treat an
  // `on_chain_stream` chunk whose mode is "messages" (`chunk[1]` or `chunk[0]` when subgraphs/ns)
  // as an event and redact it; since a token cannot be redacted alone, hold back the model's
  // tokens per message id and release the redacted accumulation (or emit only the redacted final
  // message: tag eart's model call "nostream" and emit the message eart keeps).
  it("messages-tuple: the model's raw answer never reaches the client (both agents, with and without subgraphs)", { timeout: 120_000 }, async () => {
    const leaks: string[] = [];
    for (const graph of GRAPHS) {
      for (const subgraphs of [false, true]) {
        const { parts } = await spelledRun(graph, subgraphs);
        const tuples = parts.filter((p) => kind(p) === "messages");
        expect(tuples.length, `${graph} messages-tuple chunks were streamed`).toBeGreaterThan(0);
        leaks.push(...spells(reassembled(parts, "messages-tuple")).map((t) => `${graph} subgraphs=${subgraphs}: ${t}`));
      }
    }
    expect(leaks).toEqual([]);
  });

  // Found by the pass, fixed (medium; the first event redaction did not hold for a streaming model): stream_mode "events":
  // `redactedEvents` redacts each `on_chat_model_stream` event ALONE, and no token holds a whole
  // card ("…41", "11 ", "111", "1 1", …), so every chunk passes and the client's concatenation
  // (LangGraph SDK, any chat UI) reads "4111 1111 1111 1111"; only `on_chat_model_end` (the whole
  // message) comes redacted (the test above). Both agents. A real model's tokenizer splits digit
  // runs into tokens of 1–3 digits, so this is every card a streaming model writes. Fix
  // (graphs/governed-agent.ts `redactedEvents`): per chat-model run id, accumulate the tokens and
  // hold back what could still become a match (the trailing digit/separator run), releasing the
  // redacted text as its delta; or drop `on_chat_model_stream` for eart's agents and keep `_end`.
  it("events: the model's token chunks (on_chat_model_stream) never spell the card (both agents)", { timeout: 120_000 }, async () => {
    const leaks: string[] = [];
    for (const graph of GRAPHS) {
      const { parts } = await spelledRun(graph, false);
      const tokens = parts.filter((p) => p.event === "events" && (p.data as { event: string }).event === "on_chat_model_stream");
      expect(tokens.length, `${graph} streamed model tokens`).toBeGreaterThan(10);
      leaks.push(...spells(reassembled(parts, "events")).map((t) => `${graph}: ${t}`));
    }
    expect(leaks).toEqual([]);
  });

  // Found by the pass, fixed (medium): stream_mode "messages" (the SDK's "messages/partial"): the server
  // accumulates the redacted-one-by-one `on_chat_model_stream` chunks (stream.mjs
  // `messages[id].concat(message)`), so a partial holds the raw card (same cause as above). And
  // it errors the RUN at random (most runs here): when `redaction.mayChange(event)` is true for
  // an event (it tests every string of the event joined by newlines, ids and metadata included,
  // without `validate`: a UUID such as "…-ae351532b10a" followed by the key "thread_id" reads as an
  // IBAN), `redaction.apply` rebuilds the chunk as its toJSON view (a plain `{ lc, type, id,
  // kwargs }`), even when it redacts nothing; stream.mjs then keys it by `id` (an array) and the
  // next chunk fails `messages[message.id].concat is not a function`: the run ends with
  // `event: error` (TypeError). Fix (redactedEvents): return the event itself when
  // `apply(...).redacted` is empty, and rebuild a message/chunk with its own class when it is not
  // (as nodes/redaction.ts `redactMessage` does); plus the per-run token hold-back above.
  it("messages: partials never hold the raw card, and the run does not error (both agents, several runs)", { timeout: 180_000 }, async () => {
    const seen: string[] = [];
    for (const graph of GRAPHS) {
      for (let attempt = 0; attempt < 4; attempt++) {
        const { parts } = await streamNew(as("cara"), graph, say(`Please refund order 1042, $740. My card is ${SPELLED}.`), { streamMode: ["messages"] });
        expect(parts.some((p) => p.event === "messages/partial"), `${graph} streamed partials`).toBe(true);
        const error = parts.find((p) => p.event === "error");
        if (error) seen.push(`${graph}#${attempt} error: ${JSON.stringify(error.data)}`);
        seen.push(...spells(reassembled(parts, "messages/partial")).map((t) => `${graph}#${attempt} partial: ${t}`));
      }
    }
    console.info(`messages mode: ${seen.join("\n")}`);
    expect(seen).toEqual([]);
  });

  // Found by the pass (a bug of the event redaction, fixed: an event is kept when nothing in it is
  // redacted, and messages stay messages of their own class). Before the fix, the same `apply` rebuild made deterministic: a run whose
  // metadata holds a 13-digit reference that is no card (eart's auth keeps it: Luhn fails) makes
  // `mayChange` true for every event, so the first token chunk goes out as a plain object and the
  // run errors on the second (`messages[message.id].concat is not a function`). Any client that
  // streams "messages" from eart's agents with such metadata (an order or ticket number) gets a
  // failed run. Fix: as above (keep the event when nothing was redacted; keep message classes).
  it("messages: a run with a 13-digit (non-card) reference in its metadata is not errored by the redaction", { timeout: 60_000 }, async () => {
    const { parts } = await streamNew(as("cara"), "refund", say("Please refund order 1042, $740."), { streamMode: ["messages"], metadata: { ticket: "1234567890123" } });
    expect(parts.some((p) => p.event === "messages/metadata" || p.event === "messages/partial")).toBe(true);
    expect(parts.filter((p) => p.event === "error").map((p) => p.data)).toEqual([]);
  });
});

// ─── Joins and replays by the thread's other readers ───────────────────────────────────────

describe("a customer's run, replayed and joined by the supervisor it waits for", () => {
  const secrets = { configurable: "4000 0000 0000 0002", context: "4000 0000 0000 0010", tag: "4000 0000 0000 0028", metadata: "4000 0000 0000 0036" };
  let replay: Promise<{ threadId: string; runId: string; own: Part[]; bySam: Part[] }> | undefined;
  /** Cara's resumable refund (her card spelled; cards in her run's config, context, tags, metadata), replayed by sam from the start once it waits for him. */
  const replayed = () =>
    (replay ??= (async () => {
      const cara = as("cara");
      const { threadId, runId, parts: own } = await streamNew(cara, "refund", say(`Please refund order 1042, $740. My card is ${SPELLED}.`), {
        streamMode: [...SAFE_MODES],
        streamResumable: true,
        onDisconnect: "continue",
        config: { configurable: { note: secrets.configurable }, tags: [`t ${secrets.tag}`] },
        context: { note: secrets.context },
        metadata: { note: secrets.metadata },
      });
      const bySam: Part[] = [];
      for await (const p of as("sam").runs.joinStream(threadId, runId, { lastEventId: "-1" })) bySam.push(p as Part);
      return { threadId, runId, own, bySam };
    })());

  // Found by the pass, fixed (medium, customer → supervisor; and to whoever else may read the run's stream): the raw
  // model tokens of the leak above are kept in the run's resumable stream, and sam, who may open
  // the thread because it waits for him, replays them (`runs.joinStream(thread, run, { lastEventId:
  // "-1" })`): he reassembles "4111 1111 1111 1111" from the messages-tuple and events chunks,
  // while the thread shows him "[REDACTED:card_number]" (and cara's words, which no pattern reads).
  // Note: the kept stream was redacted once, for the run's caller (stream.mjs stores the events as
  // they ran), never for the reader who joins; with the served data this shows nothing the thread
  // does not already show that reader (the documented "approvers read what the agent was shown for
  // its user"), but a joiner is never redacted for. Fix: as above (redactedEvents).
  it("sam's replay of cara's run (Last-Event-ID: -1) never spells the card the thread shows him redacted", { timeout: 120_000 }, async () => {
    const { threadId, bySam } = await replayed();
    const samReads = await noted(as("sam"), threadId).catch(() => undefined);
    expect(samReads).toBe(`Noted: the card you spelled is ${REDACTED}.`);
    expect(bySam.some((p) => kind(p) === "messages")).toBe(true);
    expect([...spells(reassembled(bySam, "messages-tuple")), ...spells(reassembled(bySam, "events"))]).toEqual([]);
  });

  it("holds: neither cara's stream nor sam's replay carries a card she put in her run's configurable, context, tags or metadata (debug checkpoint config, tasks, events metadata)", { timeout: 120_000 }, async () => {
    const { own, bySam } = await replayed();
    expect(bySam.length).toBeGreaterThan(20);
    expect(new Set(bySam.map(kind))).toEqual(new Set(["metadata", "events", "checkpoints", "debug", "values", "tasks", "messages", "updates"]));
    // Control: the debug checkpoints carry the run's config and the events its metadata.
    expect(bySam.some((p) => kind(p) === "debug" && JSON.stringify(p.data).includes('"configurable"'))).toBe(true);
    expect(marked(bySam.filter((p) => p.event === "events"))).toBe(true);
    for (const [where_, secret] of Object.entries(secrets)) expect([...where(own, secret), ...where(bySam, secret)], where_).toEqual([]);
  });

  it("holds: sam joining cara's run once it waits for him, in the state modes only (values, updates, debug), reads her answer redacted (the control of the replay above: the token modes were the ones that leaked)", { timeout: 120_000 }, async () => {
    const cara = as("cara");
    const threadId = (await cara.threads.create()).thread_id;
    const run = await cara.runs.create(threadId, "refund", { input: say(`Please refund order 1042, $740. My card is ${SPELLED}.`), streamMode: ["values", "updates", "debug"], streamResumable: true });
    // Sam may not open the thread before it waits for him (so no live join); after, he joins the run's kept stream.
    for (let i = 0; i < 200 && (await cara.threads.get(threadId)).status !== "interrupted"; i++) await new Promise((r) => setTimeout(r, 150));
    const parts: Part[] = [];
    for await (const p of as("sam").runs.joinStream(threadId, run.run_id, { lastEventId: "-1" })) parts.push(p as Part);
    expect(parts.some((p) => kind(p) === "values")).toBe(true);
    expect(marked(parts)).toBe(true);
    expect(where(parts, CARD)).toEqual([]);
  });
});

// ─── Tool results and visibleTo: the payment agent ─────────────────────────────────────────

describe("a tool's raw result in every mode (finance-payment: prepare_payment returns the vendor's IBAN, shown to treasury only)", () => {
  it("holds: amy (accounts payable) streaming her payment in every mode, with and without subgraphs, reads the IBAN redacted, on_tool_end included", { timeout: 120_000 }, async () => {
    for (const subgraphs of [false, true]) {
      const { threadId, parts } = await streamNew(as("amy"), "finance-payment", say("Pay invoice INV-7732."), { streamMode: [...SAFE_MODES], streamSubgraphs: subgraphs });
      expect(parts.some((p) => p.event === "error"), `subgraphs=${subgraphs}`).toBe(false);
      const toolEnds = parts.filter((p) => p.event === "events" && (p.data as { event: string; name?: string }).event === "on_tool_end" && (p.data as { name?: string }).name === "prepare_payment");
      expect(toolEnds.length).toBe(1);
      expect(marked(toolEnds, "[REDACTED:iban]")).toBe(true);
      for (const mode of ["values", "updates", "debug", "tasks", "checkpoints"]) expect(marked(parts.filter((p) => kind(p) === mode), "[REDACTED:iban]"), mode).toBe(true);
      expect(where(parts, IBAN)).toEqual([]);
      expect((await interruptOf(as("amy"), threadId)).value.roles).toContain("finance");
    }
  });

  it("holds: fred (finance, approver) replaying amy's run and streaming his approval, and amy replaying fred's run, read no IBAN", { timeout: 120_000 }, async () => {
    const amy = as("amy");
    const { threadId, runId } = await streamNew(amy, "finance-payment", say("Pay invoice INV-7732."), { streamMode: [...SAFE_MODES], streamResumable: true });
    const fred = as("fred");
    const request = await interruptOf(fred, threadId);
    const fredReplay: Part[] = [];
    for await (const p of fred.runs.joinStream(threadId, runId, { lastEventId: "-1" })) fredReplay.push(p as Part);
    let answerRun = "";
    const fredOwn: Part[] = [];
    for await (const p of fred.runs.stream(threadId, "finance-payment", { command: { resume: approveAll(request) }, streamMode: [...SAFE_MODES], streamResumable: true, onRunCreated: (m) => (answerRun = m.run_id) })) fredOwn.push(p as Part);
    const amyReplay: Part[] = [];
    for await (const p of amy.runs.joinStream(threadId, answerRun, { lastEventId: "-1" })) amyReplay.push(p as Part);
    // Control: the payment ran (execute_payment's on_tool_end in fred's run), and every stream carried the redacted IBAN.
    expect(fredOwn.some((p) => p.event === "events" && (p.data as { event: string; name?: string }).event === "on_tool_end" && (p.data as { name?: string }).name === "execute_payment")).toBe(true);
    for (const [who, parts] of Object.entries({ fredReplay, fredOwn, amyReplay })) {
      expect(parts.length, who).toBeGreaterThan(10);
      expect(marked(parts, "[REDACTED:iban]"), who).toBe(true);
      expect(where(parts, IBAN), who).toEqual([]);
    }
  });
});

// ─── Another customer ──────────────────────────────────────────────────────────────────────

describe("another customer (omar) and cara's run streams", () => {
  it("holds: omar cannot stream a run on cara's thread nor join her live or finished run (Last-Event-ID -1, by her thread or by run id); the thread stream is not served", { timeout: 120_000 }, async () => {
    const cara = as("cara");
    const threadId = (await cara.threads.create()).thread_id;
    const run = await cara.runs.create(threadId, "refund", { input: say(`Please refund order 1042, $740. PRIVATE-STREAM-CARA ${SPELLED}`), streamMode: [...SAFE_MODES], streamResumable: true });
    const omar = as("omar");
    const drain = async (stream: AsyncIterable<unknown>) => {
      const got: unknown[] = [];
      for await (const p of stream) got.push(p);
      return got;
    };
    const notFound = /404|403|not found|forbidden/i;
    // While it may still run, then once it has finished.
    for (const when of ["live", "finished"]) {
      if (when === "finished") for (let i = 0; i < 200 && (await cara.threads.get(threadId)).status !== "interrupted"; i++) await new Promise((r) => setTimeout(r, 150));
      await expect(drain(omar.runs.joinStream(threadId, run.run_id, { lastEventId: "-1" })), when).rejects.toThrow(notFound);
      await expect(drain(omar.runs.joinStream(null as never, run.run_id, { lastEventId: "-1" })), when).rejects.toThrow(notFound);
      await expect(drain(omar.threads.joinStream(threadId, { lastEventId: "-1" })), when).rejects.toThrow(notFound);
      await expect(drain(omar.runs.stream(threadId, "refund", { input: say("hello"), streamMode: [...SAFE_MODES] })), when).rejects.toThrow(notFound);
    }
    // GET /threads/:id/stream (threads.joinStream) is no route of this server: not found for cara too.
    await expect(drain(cara.threads.joinStream(threadId, { lastEventId: "-1" }))).rejects.toThrow(/404/);
    // Control: cara reads her own run's stream, and it carried her message; omar used none of it up.
    const own = await drain(cara.runs.joinStream(threadId, run.run_id, { lastEventId: "-1" }));
    expect(JSON.stringify(own)).toContain("PRIVATE-STREAM-CARA");
    expect((await cara.runs.list(threadId)).length).toBe(1);
  });
});
