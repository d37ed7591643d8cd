import { AIMessageChunk, HumanMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { FakeStreamingChatModel } from "@langchain/core/utils/testing";
import { Command, MemorySaver } from "@langchain/langgraph";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineRedaction, definePolicy, MemoryAuditLog, pendingApproval, STANDARD_REDACTIONS, type Redaction, type RedactionRule } from "eart";
import { createGovernedAgent } from "eart/graphs";
import { MAX_APPROVALS_PER_MESSAGE } from "eart/guards";
import { TokenHoldBack } from "../../graphs/token-stream.js";
import { refundPolicy } from "../../examples/refund/policy.js";
import { createRefundTools } from "../../examples/refund/tools.js";
import { cardNumber } from "../support/cards.js";
import { config, lookup, refund, refundSetup, registry, type Call } from "../support/refund.js";

/**
 * A red-team pass on RESOURCE EXHAUSTION, as a customer, a malicious document or a buggy client:
 * inputs that make one request cost a worker far more CPU, memory or storage than its size, or
 * wedge a thread. Work is counted here (characters handed to redaction, `validate` calls, bytes of
 * audit), never timed; bench/exhaustion.ts times the same paths at n and 8n (`npm run bench`).
 *
 * Found, and now closed (each a test below that failed before its fix):
 * - A custom redaction rule with `validate` tried every stretch of a rejected match, each with a
 *   full regex test, and matched again from the next character: a 1.6 KB near-miss held a worker
 *   for about a minute. A match with more than 256 stretches to try is now redacted whole.
 * - Matches kept were checked against every match kept before (quadratic in the matches), keys
 *   that redact to one mark probed `#2`, `#3`… one by one, and so did retrieved items' ids: now a
 *   coverage map and a counter per mark (bench/exhaustion.ts shows the growth).
 * - A resume was redacted before the guard refused it for its size: one the guard refuses is no
 *   longer redacted first.
 * - The token hold-back redacted the whole message, and searched it for a brace, on every token:
 *   it now works the message out again only when it has grown by an eighth (at least 64
 *   characters), and remembers where its first brace is.
 * - Every redacted path of a tool result or a retrieved item went into its audit event, each
 *   spelling every key above it: a 29 KB result wrote a 10 MB event. The first 50 are kept, cut to
 *   200 characters, and the rest counted per rule.
 * - `run.started` kept the customer's whole message: now its first 10,000 characters (cut as
 *   refusals are, never through a card) and its length.
 * - A message proposing thousands of calls that need approval made a request whose smallest
 *   answer was over the 64 KB answer limit: the thread waited for good. At most 100 calls of a
 *   message now wait; the rest are refused to the model.
 * Held: near-misses of each standard rule, JSON detection and the embedded-JSON finder, nesting
 * just under the limits, a thousand allowed tool calls, a 4 MB tool result (2,000 characters kept
 * in the audit log), thousands of retrieved items with distinct ids (measured in the bench).
 */

// ─── Measurement ───────────────────────────────────────────────────────────────────────────────

/** Growth limit on counted work: the input 8 times larger must cost under `LIMIT` times more (linear: about 8). */
const LIMIT = 20;

/** A redaction that counts what it is given (characters of text, or of JSON), and the largest value. */
function counting(inner: Redaction) {
  const seen = { chars: 0, max: 0 };
  const size = (v: unknown): number => {
    if (typeof v === "string") return v.length;
    try {
      return (JSON.stringify(v) ?? "").length;
    } catch {
      return 0;
    }
  };
  const note = (v: unknown) => {
    const s = size(v);
    seen.chars += s;
    seen.max = Math.max(seen.max, s);
  };
  const redaction: Redaction = {
    rules: inner.rules,
    apply: (value, identity, options) => {
      note(value);
      return inner.apply(value, identity, options);
    },
    mayChange: (value) => {
      note(value);
      return inner.mayChange!(value);
    },
  };
  return { redaction, seen };
}

const outcome = (p: Promise<unknown>) => p.then(() => "ran", (e: { code?: string; message?: string }) => e?.code ?? `error: ${e?.message}`);

// ─── Values ────────────────────────────────────────────────────────────────────────────────────

const STD = defineRedaction(STANDARD_REDACTIONS);
const CARD = "4111111111111111";
const cardN = cardNumber;
/** A rule as the README invites one ("a rule's pattern and validate take your own detectors"): e-mail addresses of known TLDs. */
const TLDS = new Set(["com", "org", "net", "io", "de", "uk"]);
const EMAIL_RULE: RedactionRule = { id: "email", pattern: /[\w.+-]+@[\w-]+(?:\.[\w-]+)+/g, validate: (m) => TLDS.has(m.slice(m.lastIndexOf(".") + 1).toLowerCase()) };
/** A near-miss for it: dotted groups before an address whose TLD is not known. */
const dottedNearMiss = (n: number) => `${"a.".repeat(n)}a@a.a`;

const lookupOnly = definePolicy({ name: "lookups", rules: [{ id: "orders.lookup", tools: ["lookup_order"], effect: "allow" }] });
/** The refund agent whose `lookup_order` returns `result`. */
const withResult = (result: () => string, turns: Call[][] = [[lookup("c1")]], agent: Record<string, unknown> = {}) => {
  const lookupOrder = tool(async () => result(), { name: "lookup_order", description: "Looks up an order", schema: z.object({ orderId: z.string() }) });
  return refundSetup(turns, { tools: () => [lookupOrder], policy: lookupOnly, agent });
};
const bytesOf = (v: unknown) => Buffer.byteLength(JSON.stringify(v), "utf8");
let threadNo = 0;
const fresh = (prefix: string) => `${prefix}-${++threadNo}`;

/** The model's answer as on_chat_model_stream events of `size`-character tokens. */
function tokens(text: string, size = 3) {
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < text.length; i += size) out.push({ event: "on_chat_model_stream", run_id: "r1", data: { chunk: new AIMessageChunk({ id: "m1", content: text.slice(i, i + size) }) } });
  return out;
}
const holdBack = (redaction: Redaction, events: Record<string, unknown>[]) => {
  const held = new TokenHoldBack(redaction, undefined);
  let n = 0;
  for (const e of events) n += held.take(e).length;
  return n + held.flush().length;
};

// ─── Redaction rules, directly ─────────────────────────────────────────────────────────────────

describe("redaction rules, directly (src/context/redaction.ts)", () => {

  // Was a hole (critical, CPU, with a rule of the kind the README invites): a match that `validate`
  // rejects is tried again on every stretch from a group start to a group end (`validStretch`,
  // src/context/redaction.ts:411-428: O(groups²) candidates, each a full `whole.test` and a
  // `validate`), and then matched again from the next character (`spansOf`, redaction.ts:405: lastIndex = s + 1).
  // The standard rules are safe only because their matches are at most 73 characters. Measured
  // with this e-mail rule: 405 characters 0.57 s, 805 characters 6.9 s, about a minute for 1.6 KB;
  // an api-key rule (/\b[A-Za-z0-9][\w-]{19,}\b/ with a prefix check) on "a-a-a…": 801 chars 2.5 s.
  // Fix: retry stretches only within a bounded window (a rule's `maxLength`, default 100
  // characters) and a bounded number of validate calls per string; after a failed match with no
  // valid stretch, go on from the match's end, not from its second character.
  it("a custom rule with validate (an e-mail detector) on a long near-miss does bounded work: a match with too many stretches to try is redacted whole", () => {
    const email = defineRedaction([EMAIL_RULE]);
    // Setup: the rule finds a real address, and not the near-miss.
    expect(email.apply("write to bob.smith@example.com today", undefined).value).toBe("write to [REDACTED:email] today");
    expect(email.apply(dottedNearMiss(3), undefined).redacted).toEqual([]);
    // The work, counted: validate calls for a near-miss n and 8n dotted groups long.
    const calls = (n: number) => {
      let count = 0;
      defineRedaction([{ ...EMAIL_RULE, validate: (m) => (count++, EMAIL_RULE.validate!(m)) }]).apply(dottedNearMiss(n), undefined);
      return count;
    };
    const [small, large] = [calls(25), calls(200)];
    expect(large, `validate calls: ${small} for 25 groups, ${large} for 200`).toBeLessThan(LIMIT * Math.max(small, 1));
  });

});

// ─── A customer, end to end through the prebuilt agent ─────────────────────────────────────────

describe("a customer's message and answer, through createGovernedAgent", () => {

  // Was a hole (critical, CPU): with a rule of one's own (README, Redaction: "a rule's pattern and
  // validate take your own detectors"), a customer's message of a few hundred characters holds the
  // worker for seconds, a 1.6 KB one for about a minute, on every redaction pass of the turn
  // (input, audit, checkpointed state). See the direct test above for the root cause and fix.
  it("with a custom e-mail rule, a customer message of dotted groups does bounded work for the turn", async () => {
    const { agent } = refundSetup([], { agent: { redaction: defineRedaction([...STANDARD_REDACTIONS, EMAIL_RULE]) } });
    // Setup: the rule redacts a real address in the thread.
    const threadId = fresh("mail");
    await agent.invoke({ messages: [new HumanMessage("mail me at bob.smith@example.com")] }, config(threadId));
    expect(String((await agent.getState(config(threadId))).values.messages[0].content)).toBe("mail me at [REDACTED:email]");
    // The work for the turn, counted: validate calls for a message n and 8n dotted groups long.
    const calls = async (n: number) => {
      let count = 0;
      const counted = refundSetup([], { agent: { redaction: defineRedaction([...STANDARD_REDACTIONS, { ...EMAIL_RULE, validate: (m) => (count++, EMAIL_RULE.validate!(m)) }]) } });
      await counted.agent.invoke({ messages: [new HumanMessage(dottedNearMiss(n))] }, config(fresh("mail")));
      return count;
    };
    const [small, large] = [await calls(20), await calls(160)];
    expect(large, `validate calls for the turn: ${small} for 20 groups, ${large} for 160`).toBeLessThan(LIMIT * Math.max(small, 1));
  });

  // Was a hole (high, CPU; anyone who may call runs, on any thread id): `createGovernedAgent` wraps the
  // stream `guardResumes` guards with `redactIncoming` (graphs/governed-agent.ts:460-462), so a
  // resume is redacted (`redactedAnswer`, governed-agent.ts:244) before `assertPlainResume` refuses
  // it for its size (graphs/resume-guard.ts:65). A 1.1 MB reject message of 64,000 cards took 2.2 s
  // to be refused (11 ms for plain text of that size), quadratic in the cards. Fix: call
  // `assertCallerInput` (or at least the size and depth check) in `redactIncoming` before redacting
  // a Command's resume, or have the guard wrap the redacting stream.
  it("a 340 KB resume is refused for its size before redaction reads it", async () => {
    const { redaction, seen } = counting(STD);
    const { agent } = refundSetup([[refund("r1", 740)]], { agent: { redaction } });
    const threadId = fresh("resume");
    await agent.invoke({ messages: [new HumanMessage("Refund order 1042, $740.")] }, config(threadId));
    const request = pendingApproval(await agent.getState(config(threadId)))!;
    const huge = { decisions: [{ toolCallId: request.requests[0]!.toolCallId, type: "reject", digest: request.requests[0]!.digest, message: `${CARD} `.repeat(20_000) }] };
    seen.max = 0;
    // Setup: the answer is refused for its size, and the thread still waits.
    expect(await outcome(agent.invoke(new Command({ resume: huge }), config(threadId, "sam")))).toBe("approval_resume_invalid");
    expect(pendingApproval(await agent.getState(config(threadId)))?.requests).toHaveLength(1);
    // The guarantee: nothing over the limit is read before it is refused.
    expect(seen.max, `redaction was handed ${seen.max} characters`).toBeLessThanOrEqual(64 * 1024);
  });

  // Was a hole (medium, storage): `run.started` records the request's whole text
  // (nodes/identity-binding.ts:127), and `model.output` the model's whole text: a customer
  // sending 1 MB messages appends 1 MB per turn to the append-only, hash-chained audit log (which
  // cannot be pruned without breaking `verify`) and to every exporter, where a tool's result is
  // kept to 2,000 characters (`RESULT_PREVIEW`) and a refused answer to 10,000 (`bounded`). Fix:
  // record the request as `bounded` does (a cut copy, its length and its SHA-256).
  it("a 1 MB customer message adds a bounded run.started to the audit log, not 1 MB per turn", async () => {
    const { agent, auditLog } = refundSetup([]);
    const threadId = fresh("big");
    const text = "I would like to tell you a long story about my order. ".repeat(20_000);
    await agent.invoke({ messages: [new HumanMessage(text)] }, config(threadId));
    const events = await auditLog.read(threadId);
    // Setup: the turn ran and was recorded.
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(["run.started", "model.output", "run.completed"]));
    expect(text.length).toBeGreaterThan(1_000_000);
    expect(bytesOf(events), "bytes of audit for one turn").toBeLessThan(64 * 1024);
  });

  // Was a hole (medium, wedge of a thread and the approvers' inbox): every call that needs approval
  // was in one request, and an answer must decide every one, within 64 KB. A model talked into
  // proposing 4,000 refunds (a prompt-injected document) paused on a 3.6 MB request whose smallest
  // answer (4,000 positional `{"type":"reject"}`) is 72 KB: refused; new input was refused while it
  // waited (`thread_awaiting_approval`): nothing could ever close it. Now at most
  // MAX_APPROVALS_PER_MESSAGE (100) calls of a message wait; the rest are refused at once, answered
  // to the model (`eart.approval-batch`).
  it("a message proposing 4,000 calls that need approval: 100 wait, the rest are refused to the model, and an approver can close what waits", async () => {
    const calls = Array.from({ length: 4_000 }, (_, i) => refund(`c${i}`, 500));
    const { agent, refunds, auditLog } = refundSetup([calls]);
    const threadId = fresh("wedge");
    await agent.invoke({ messages: [new HumanMessage("Refund order 1042, $500, 4,000 times.")] }, config(threadId));
    const state = await agent.getState(config(threadId));
    const request = pendingApproval(state)!;
    expect(request.requests).toHaveLength(MAX_APPROVALS_PER_MESSAGE);
    expect(request.requests.map((r) => r.toolCallId)).toEqual(calls.slice(0, MAX_APPROVALS_PER_MESSAGE).map((c) => c.id));
    const refused = (state.values.decisions as { toolCallId: string; status: string; verdict: { policyIds: string[] } }[]).filter((d) => d.verdict.policyIds.includes("eart.approval-batch"));
    expect(refused).toHaveLength(4_000 - MAX_APPROVALS_PER_MESSAGE);
    expect(new Set(refused.map((d) => d.status))).toEqual(new Set(["denied"]));
    // The keyed answer (what the README recommends) and the positional one both fit the limit.
    const keyed = { decisions: request.requests.map((r) => ({ toolCallId: r.toolCallId, type: "reject", digest: r.digest })) };
    expect(bytesOf(keyed)).toBeLessThan(64 * 1024);
    const smallest = { decisions: request.requests.map(() => ({ type: "reject" })) };
    const answered = await outcome(agent.invoke(new Command({ resume: smallest }), config(threadId, "sam")));
    const moved = await outcome(agent.invoke({ messages: [new HumanMessage("Forget it.")] }, config(threadId)));
    expect(refunds()).toEqual([]);
    expect((await auditLog.verify(threadId)).ok).toBe(true);
    // The guarantee: an authorised approver can close what the thread waits for.
    expect({ answered, moved }, `answer: ${answered}; new input: ${moved}; request ${bytesOf(request)} bytes`).toEqual({ answered: "ran", moved: "ran" });
  });

});

// ─── A malicious document: tool results and retrieved context ──────────────────────────────────

/** JSON whose one key is `keyLength` characters long and holds `cards` card numbers: each redacted path repeats the key. */
const longKeyOverCards = (keyLength: number, cards: number) => ({ [`k${"k".repeat(keyLength - 1)}`]: Array.from({ length: cards }, (_, i) => cardN(i)) });

describe("a malicious document: tool results and retrieved items", () => {
  it("a 4 MB tool result: the audit log keeps 2,000 characters of it", async () => {
    const result = (n: number) => JSON.stringify({ rows: Array.from({ length: n / 50 }, (_, i) => ({ id: i, note: "delivered on time, thanks" })) });
    const setups = new Map<number, ReturnType<typeof withResult>>();
    const make = (n: number) => setups.get(n) ?? setups.set(n, withResult(((r) => () => r)(result(n)))).get(n)!;
    // Setup and the bound: the tool's result is whole in the thread and cut in the audit log.
    const big = make(8 * 500_000);
    const threadId = fresh("big-result");
    await big.agent.invoke({ messages: [new HumanMessage("Look it up.")] }, config(threadId));
    const succeeded = (await big.auditLog.read(threadId)).find((e) => e.type === "tool.succeeded")!;
    expect(String(succeeded.data.result).length).toBeLessThanOrEqual(2_000);
    expect(succeeded.data.truncated).toBe(true);
    expect(bytesOf(await big.auditLog.read(threadId))).toBeLessThan(64 * 1024);
  });

  // Was a hole (high, storage; and a crash past V8's string limit): `tool.succeeded` carries
  // `redacted: screened.redacted` (nodes/governed-tool-node.ts:469), one `{ path, ruleId }` per
  // match, each path spelling every key above it in full. A 29 KB result whose one key is 10,000
  // characters long over 1,000 cards wrote a 10 MB event (346x); 100 KB of key over 5,000 cards
  // would be 500 MB (not tried: past V8's string limit the event could not be serialised at all,
  // after the tool ran).
  // Fix: record the redactions bounded (count per rule, and the first few paths, each cut as
  // `bounded` cuts strings), not the list.
  it("a 29 KB tool result (one 10,000-character key over 1,000 cards) writes a bounded audit event, not 10 MB", async () => {
    const result = JSON.stringify(longKeyOverCards(10_000, 1_000));
    const { agent, auditLog } = withResult(() => result);
    const threadId = fresh("paths");
    await agent.invoke({ messages: [new HumanMessage("Look it up.")] }, config(threadId));
    const events = await auditLog.read(threadId);
    const succeeded = events.find((e) => e.type === "tool.succeeded")!;
    // Setup: the tool ran, every card was redacted, and none is in the log.
    expect(succeeded).toBeDefined();
    expect(succeeded.data.redacted as unknown[]).toContainEqual({ path: "…950 more", ruleId: "card_number" });
    expect(JSON.stringify(events)).not.toContain(cardN(7));
    expect(bytesOf(events), `audit bytes for a ${result.length}-byte result`).toBeLessThan(20 * result.length);
  });

  // Was a hole (high, storage): the same in `context.retrieved` (`redacted: screened.redacted`,
  // nodes/context-retrieval.ts:251), from a retrieved document whose content is such a table.
  it("a 29 KB retrieved item (one 10,000-character key over 1,000 cards) writes a bounded context.retrieved event, not 10 MB", async () => {
    const content = longKeyOverCards(10_000, 1_000);
    const provider = async () => [{ id: "doc-1", source: "kb", scope: "orders", content }];
    const { agent, auditLog } = refundSetup([], { agent: { context: { providers: [provider] } } });
    const threadId = fresh("ctx-paths");
    await agent.invoke({ messages: [new HumanMessage("What does the document say?")] }, config(threadId));
    const events = await auditLog.read(threadId);
    const retrieved = events.find((e) => e.type === "context.retrieved")!;
    // Setup: the item was kept, every card redacted, none in the log.
    expect((retrieved.data.items as { id: string }[]).map((i) => i.id)).toEqual(["doc-1"]);
    expect(retrieved.data.redacted as unknown[]).toContainEqual({ path: "…950 more", ruleId: "card_number" });
    expect(JSON.stringify(events)).not.toContain(cardN(7));
    expect(bytesOf(events), `audit bytes for a ${bytesOf(content)}-byte item`).toBeLessThan(20 * bytesOf(content));
  });

});

// ─── The model's token stream (graphs/token-stream.ts) ─────────────────────────────────────────

describe("the model's token stream, held back per message", () => {
  // Was a hole (high, CPU, every streamed run: LangGraph server runs all go through streamEvents): each
  // token re-redacts the whole message so far, twice (`#token`: `#redact(raw.slice(0, cut))` and
  // `#redact(held.raw)`, graphs/token-stream.ts:110-113), plus a `search` over all of it: O(L²/t)
  // for L characters in t-character tokens. Measured with 3-character tokens: 16 KB of numbers
  // ("1 2 3 … 4000") 20 s, 8 KB of "1 2 3 4 …" 11 s, 40 KB of prose 5.3 s, 4,000 CJK characters
  // (2-character tokens) 0.6 s; the event loop is blocked meanwhile. Fix: keep a frontier: redact
  // only the window from the last sent point (minus HOLD) to the new end, whose start is a
  // boundary no match crosses (a character that no pattern can hold), and remember the position of
  // the first `{`/`[` instead of searching again.
  it("a 6,000-character answer in 3-character tokens makes redaction read a few times the message, not 2,000 times", () => {
    const { redaction, seen } = counting(STD);
    const text = "Your refund for order 1042 was issued today and will arrive soon. ".repeat(91);
    const out: unknown[] = [];
    const held = new TokenHoldBack(redaction, undefined);
    for (const e of tokens(text)) out.push(...held.take(e));
    out.push(...held.flush());
    // Setup: the caller gets the answer, whole and in order.
    expect(out.map((e) => String((e as { data: { chunk: AIMessageChunk } }).data.chunk.content)).join("")).toBe(text);
    expect(seen.chars, `characters redacted for a ${text.length}-character answer`).toBeLessThan(20 * text.length);
  });

  // Was a hole (high): the same, end to end: streamEvents of the prebuilt agent with a streaming model.
  it("streamEvents of the prebuilt agent: a streamed answer's redaction grows with the answer, not with its square", async () => {
    const text = "Your refund for order 1042 was issued today and will arrive soon. ".repeat(91);
    const run = async (size: number, answer = text) => {
      const { redaction, seen } = counting(STD);
      const chunks: AIMessageChunk[] = [];
      for (let i = 0; i < answer.length; i += size) chunks.push(new AIMessageChunk({ content: answer.slice(i, i + size) }));
      const agent = createGovernedAgent({
        model: new FakeStreamingChatModel({ sleep: 0, chunks }) as never,
        tools: createRefundTools(new Database(":memory:")).all,
        identities: registry,
        policy: refundPolicy,
        checkpointer: new MemorySaver(),
        auditLog: new MemoryAuditLog(),
        redaction,
      });
      let streamed = "";
      for await (const e of agent.streamEvents({ messages: [new HumanMessage("Where is my refund?")] }, { ...config(fresh("stream")), version: "v2" } as never)) {
        const ev = e as { event: string; data: { chunk?: AIMessageChunk } };
        if (ev.event === "on_chat_model_stream") streamed += String(ev.data.chunk!.content);
      }
      return { streamed, chars: seen.chars };
    };
    const whole = await run(1_000);
    const tokenised = await run(4);
    // Setup: both stream the whole answer.
    expect(whole.streamed).toBe(text);
    expect(tokenised.streamed).toBe(text);
    // Each token's event is screened (its own size, a constant per token); the message's text is
    // not read again for every token: four times the answer in the same tokens costs about four times.
    const longer = (await run(4, text.repeat(4))).chars;
    expect(longer, `characters redacted in 4-character tokens: ${tokenised.chars} for the answer, ${longer} for four times it`).toBeLessThan(6 * tokenised.chars);
  });

  // Was a hole (medium, CPU): a JSON answer is held until it is whole (by design), but every token
  // searches the whole text again for its first brace (`held.raw.search(/[{[]/)`,
  // graphs/token-stream.ts:110), flattening the growing rope each time: quadratic copying.
  // Measured: 80 KB 0.17 s, 160 KB 7.3 s (3-character tokens). Fix: remember where the first
  // brace is (or that there is none up to where it was searched).
  it("a JSON answer that never closes is held back with linear work", () => {
    const json = (n: number) => `{"note": "${"x".repeat(n)}`;
    // Setup: nothing of it goes out before the stream ends, and all of it then.
    const held = new TokenHoldBack(STD, undefined);
    const before = tokens(json(500)).flatMap((e) => held.take(e));
    expect(before.map((e) => String((e as { data: { chunk: AIMessageChunk } }).data.chunk.content)).join("")).toBe("");
    expect(held.flush().map((e) => String((e as { data: { chunk: AIMessageChunk } }).data.chunk.content)).join("")).toBe(json(500));
    // The work, counted: characters handed to redaction for an answer n and 8n long.
    const read = (n: number) => {
      const { redaction, seen } = counting(STD);
      holdBack(redaction, tokens(json(n)));
      return seen.chars;
    };
    const [small, large] = [read(2_000), read(16_000)];
    expect(large, `characters redacted: ${small} for 2,000, ${large} for 16,000`).toBeLessThan(LIMIT * small);
  });
});
