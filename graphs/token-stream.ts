/**
 * The model's token stream as an eart agent's caller may see it. A model streams its answer token
 * by token (`on_chat_model_stream` events; LangGraph's `messages` stream mode, which LangGraph
 * server hands out as `messages` and `messages-tuple`), and a card split across tokens is in no
 * one token: redacting each token alone lets it through. Each message's text is held back until
 * what is sent of it is a prefix of its redacted text that no later token can change, and the rest
 * is sent, redacted, when the message ends.
 */
import { AIMessageChunk, isBaseMessage, type BaseMessage } from "@langchain/core/messages";
import type { Redaction } from "../src/context/redaction.js";
import type { RedactionViewer } from "../nodes/redaction.js";

/**
 * How much of a message's newest text is held back: longer than the longest span a pattern
 * matches (a 19-digit card with three separators between digits is 73 characters).
 */
const HOLD = 96;

interface Held {
  /** The text the model sent so far. */
  raw: string;
  /** What was sent of it: a prefix of its redacted text. */
  sent: string;
  /** The last event that carried a token of it, that token, and how to put another in its place: the shape of the event that sends the rest. */
  template: { event: Record<string, unknown>; token: AIMessageChunk; rebuild: Rebuild };
  /** Where its first `{` or `[` is (JSON is held until whole), or -1 while it has none. */
  brace: number;
  /** How long `raw` was when what may go out was last worked out. */
  checked: number;
}

/**
 * How much more text a message must have before what may go out is worked out again: at least
 * `STEP` characters, and an eighth of what it holds, so the redaction of a long answer costs a
 * few times its length in all, not its length for every token.
 */
const STEP = 64;

/** An event like `event`, carrying `chunk` where it carried its token. */
type Rebuild = (event: Record<string, unknown>, chunk: AIMessageChunk) => Record<string, unknown>;

/** A streamed token: an AI message chunk whose content is text. */
function tokenOf(value: unknown): AIMessageChunk | undefined {
  return isBaseMessage(value) && AIMessageChunk.isInstance(value as BaseMessage) && typeof (value as AIMessageChunk).content === "string" ? (value as AIMessageChunk) : undefined;
}

/** The chunk with other text, the rest of it as it was. */
function withText(chunk: AIMessageChunk, text: string): AIMessageChunk {
  return new AIMessageChunk({ ...(chunk as unknown as { lc_kwargs: Record<string, unknown> }).lc_kwargs, content: text, ...(chunk.id !== undefined ? { id: chunk.id } : {}) });
}

/**
 * Holds back the model's tokens of one event stream (one run). `take` returns the events to send
 * for an event, in order: a token's event carries the part of its message that can be sent now;
 * the rest of a message goes out when the model's run ends (`on_chat_model_end`), when the graph's
 * own stream moves on (a chunk of another mode: the node that streamed has finished), or when the
 * stream ends (`flush`).
 */
export class TokenHoldBack {
  readonly #held = new Map<string, Held>();

  constructor(
    private readonly redaction: Redaction,
    private readonly viewer: RedactionViewer,
  ) {}

  take(event: unknown): unknown[] {
    const e = event as Record<string, unknown> | null;
    if (!e || typeof e !== "object") return [event];
    const data = e.data as Record<string, unknown> | undefined;
    if (e.event === "on_chat_model_stream") {
      const token = tokenOf(data?.chunk);
      if (!token) return [event];
      return [this.#token(`e|${token.id ?? String(e.run_id)}`, token, e, (ev, chunk) => ({ ...ev, data: { ...(ev.data as object), chunk } }))];
    }
    if (e.event === "on_chain_stream" && Array.isArray(data?.chunk)) {
      const tuple = data.chunk as unknown[];
      const at = tuple.indexOf("messages");
      const payload = at >= 0 && at + 1 < tuple.length ? tuple[at + 1] : undefined;
      if (Array.isArray(payload)) {
        const token = tokenOf(payload[0]);
        if (token) {
          const rebuild = (ev: Record<string, unknown>, chunk: AIMessageChunk) => {
            const copy = [...((ev.data as { chunk: unknown[] }).chunk)];
            copy[at + 1] = [chunk, ...(copy[at + 1] as unknown[]).slice(1)];
            return { ...ev, data: { ...(ev.data as object), chunk: copy } };
          };
          return [this.#token(`m|${token.id ?? ""}`, token, e, rebuild)];
        }
      } else if (at < 0) {
        // The graph's stream moved on to another mode: the node that streamed these messages has finished.
        return [...this.#release((key) => key.startsWith("m|")), event];
      }
      return [event];
    }
    if (e.event === "on_chat_model_end") {
      const id = (data?.output as { id?: unknown } | undefined)?.id;
      return [...this.#release((key) => key === `e|${String(id)}` || key === `e|${String(e.run_id)}`), event];
    }
    return [event];
  }

  /** Everything still held, as events: the stream ended. */
  flush(): unknown[] {
    return this.#release(() => true);
  }

  #redact(text: string): string {
    if (this.redaction.mayChange && !this.redaction.mayChange(text)) return text;
    return this.redaction.apply(text, this.viewer).value;
  }

  #token(key: string, token: AIMessageChunk, event: Record<string, unknown>, rebuild: Rebuild): unknown {
    const held: Held = this.#held.get(key) ?? { raw: "", sent: "", template: { event, token, rebuild }, brace: -1, checked: 0 };
    const text = token.content as string;
    if (held.brace < 0) {
      const at = text.search(/[{[]/);
      if (at >= 0) held.brace = held.raw.length + at;
    }
    held.raw += text;
    held.template = { event, token, rebuild };
    this.#held.set(key, held);
    if (held.raw.length - held.checked < Math.max(STEP, held.raw.length >> 3)) return rebuild(event, withText(token, ""));
    held.checked = held.raw.length;
    // What may go out: the redacted text up to HOLD characters before the newest, and never into
    // JSON (its fields are redacted once it is whole), provided no later text can change it: the
    // redacted text of that part is a prefix of the redacted text of all of it.
    const cut = Math.max(0, Math.min(held.raw.length - HOLD, held.brace < 0 ? Infinity : held.brace));
    const prefix = this.#redact(held.raw.slice(0, cut));
    const ready = prefix.length > held.sent.length && prefix.startsWith(held.sent) && this.#redact(held.raw).startsWith(prefix);
    const delta = ready ? prefix.slice(held.sent.length) : "";
    if (ready) held.sent = prefix;
    return rebuild(event, withText(token, delta));
  }

  #release(which: (key: string) => boolean): unknown[] {
    const out: unknown[] = [];
    for (const [key, held] of [...this.#held]) {
      if (!which(key)) continue;
      this.#held.delete(key);
      const all = this.#redact(held.raw);
      // What was sent is a prefix of the redacted text; the rest goes out as one more token.
      const rest = all.startsWith(held.sent) ? all.slice(held.sent.length) : "";
      const { event, token, rebuild } = held.template;
      if (rest.length > 0) out.push(rebuild(event, withText(token, rest)));
    }
    return out;
  }
}
