import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Client } from "@langchain/langgraph-sdk";
import { signApprovalToken } from "eart";
import { approveAll, interruptOf, startDevServer, type DevServer, type ServedInterrupt } from "../support/langgraph-server.js";
import { luhnCheckDigit, where } from "../support/cards.js";

/**
 * Red-team pass on what one user of eart's LangGraph server can READ of a sensitive value another
 * user sent (a Luhn-valid card number, an IBAN), with the graph's redaction on: through the
 * server's HTTP API and the SDK, as a customer (cara, omar), a supervisor (sam, sue) or a buggy
 * client. The server here is the project's `langgraph.json` (eart's auth and HTTP middleware, the
 * demo tokens), with approval keys configured (`EART_APPROVAL_KEYS`: sam's Ed25519 key) so that
 * signed approval tokens are accepted, as a deployment that uses them would be.
 *
 * Every attack asserts the safe behaviour and that the data path was exercised (the value reached
 * the place the reader reads, redacted). A comment headed "Was a hole" says what leaked, to whom
 * and how badly when the pass found it (all closed). Two `it.fails(...)`, headed LIMIT, are what
 * the README lists as out of reach (patterns, and what a thread's readers see of a value the
 * user's roles may see): they assert the leak is gone and fail while it is not. In an
 * `it.fails`, a setup that did not happen (the reader could not open the thread, the run did not
 * pause) ends the test early and PASSING (`setupBroken`), so vitest reports it as broken instead
 * of counting a leak that was not shown.
 */
let server: DevServer;
const keyDir = mkdtempSync(join(tmpdir(), "eart-redteam-keys-"));
const samKey = generateKeyPairSync("ed25519");
beforeAll(async () => {
  const keys = join(keyDir, "approval-keys.json");
  writeFileSync(keys, JSON.stringify({ "sam-1": { approver: "sam", publicKey: samKey.publicKey.export({ type: "spki", format: "pem" }) } }));
  server = await startDevServer({ EART_APPROVAL_KEYS: keys });
}, 120_000);
afterAll(async () => {
  await server?.stop();
  rmSync(keyDir, { recursive: true, force: true });
});

const as = (user: string, headers?: Record<string, string>) => server.client(user, headers ? { headers } : {});
const say = (content: string) => ({ messages: [{ role: "user", content }] });
const REDACTED = "[REDACTED:card_number]";

/** A Luhn-valid 16-digit card number, distinct per n, grouped by 4 ("4000 0000 0000 0010"). */
function card(n: number): string {
  const body = `4000000000${String(n).padStart(5, "0")}`;
  return `${body}${luhnCheckDigit(body)}`.replace(/(\d{4})(?=\d)/g, "$1 ");
}


/** Whether a value holds the redaction mark somewhere (the data path was exercised). */
const marked = (value: unknown, mark = REDACTED) => JSON.stringify(value).includes(mark);

/**
 * Everything a reader can read of a thread through the API: the thread (values, config, metadata,
 * interrupts), its state, its history (checkpoint metadata, tasks, interrupts), its runs (their
 * kwargs) and each run by id. Undefined when the reader may not open the thread.
 */
async function everything(reader: Client, threadId: string): Promise<Record<string, unknown> | undefined> {
  try {
    const runs = await reader.runs.list(threadId, { limit: 100 });
    return {
      thread: await reader.threads.get(threadId),
      state: await reader.threads.getState(threadId),
      history: await reader.threads.getHistory(threadId, { limit: 100 }),
      runs,
      each: await Promise.all(runs.map((r) => reader.runs.get(threadId, r.run_id))),
    };
  } catch {
    return undefined;
  }
}

/** In an `it.fails`: a setup that did not happen ends the test early and passing (vitest then reports the it.fails as broken). */
function setupBroken(ok: boolean, what: string): boolean {
  if (!ok) console.warn(`red-team setup did not happen: ${what}`);
  return !ok;
}

/** Cara's thread on the refund graph, paused on a supervisor's approval (her request asks `amount`). */
async function pausedThread(amount = 740, run: Record<string, unknown> = {}, client = as("cara")): Promise<{ threadId: string; request: ServedInterrupt }> {
  const thread = await client.threads.create();
  await client.runs.wait(thread.thread_id, "refund", { input: say(`Please refund order 1042, $${amount}.`), ...run });
  return { threadId: thread.thread_id, request: await interruptOf(client, thread.thread_id) };
}

const refundsOf = (amount: number) => server.rows<{ orderId: string; amount: number }>("refunds", "order_id AS orderId, amount", { sql: "order_id = '1042' AND amount = ?", params: [amount] });
const decide = (request: ServedInterrupt, over: Record<string, unknown>) => ({
  decisions: request.value.requests!.map((r) => ({ toolCallId: r.toolCallId, digest: r.digest, type: "approve", ...over })),
});

// ─── What LangGraph server keeps of a run beside its input, answer and metadata ──────────────

describe("a run's request beside its input, answer and metadata (the server keeps it whole)", () => {
  // Was a hole, closed (medium, customer → supervisor): eart's auth redacts a run's kwargs.input, its
  // command.resume and its metadata, but the server keeps the rest of the request too and shows it
  // to every reader of the thread: `config.configurable` is copied into the thread's `config`
  // (threads.get, the reviewer's threads.search) and the run's `kwargs.config.configurable`
  // (runs.list, runs.get). A client that puts the customer's card in a configurable key (a
  // "customer profile" the graph reads from its config) shows it raw to the supervisor the thread
  // waits for. server/auth.ts `stamp` → server/agent.ts `redactRunRequest` does not look at
  // kwargs.config.
  it("sam reads no card cara put in her run's config.configurable (thread config, run kwargs, reviewer's search)", async () => {
    const secret = card(101);
    const { threadId } = await pausedThread(740, { config: { configurable: { customer_card: secret } } });
    const sam = as("sam");
    const seen = await everything(sam, threadId);
    const search = await sam.threads.search({ status: "interrupted", metadata: { graph_id: "refund" }, limit: 1000 });
    if (setupBroken(seen !== undefined && search.some((t) => t.thread_id === threadId), "sam opens and finds the waiting thread")) return;
    expect([...where(seen, secret), ...where(search, secret)]).toEqual([]);
  });

  // Was a hole, closed (medium, customer → supervisor): the run's `context` (LangGraph's runtime context, the
  // documented place for per-run user data) is kept raw in the run's kwargs.context, which
  // runs.list / runs.get show to the supervisor. Not looked at by `redactRunRequest`.
  it("sam reads no card cara put in her run's context", async () => {
    const secret = card(102);
    const { threadId } = await pausedThread(740, { context: { customer: { name: "Cara", card: `visa ${secret}` } } });
    const seen = await everything(as("sam"), threadId);
    if (setupBroken(seen !== undefined, "sam opens the waiting thread")) return;
    expect(where(seen, secret)).toEqual([]);
  });

  // Was a hole, closed (low-medium, customer → supervisor): the rest of a run's config and the run's
  // breakpoints are kept raw: `config.tags` and any other top-level config key (`run_name`) in the
  // thread's config and the run's kwargs, `config.metadata` in the thread's config (a way past the
  // metadata redaction: the run's `metadata` is redacted, the same words under config.metadata
  // are not), and `interrupt_before` / `interrupt_after` node names in the run's kwargs (LangGraph
  // ignores names it has no node for, so the run goes on and pauses as usual).
  it("sam reads no card cara put in config.tags, config.run_name, config.metadata, interrupt_before or interrupt_after", async () => {
    const [tag, name, meta, before, after] = [card(103), card(104), card(105), card(106), card(107)];
    const { threadId } = await pausedThread(740, {
      config: { tags: [`ticket ${tag}`], run_name: `refund ${name}`, metadata: { note: `card ${meta}` } },
      interruptBefore: [before],
      interruptAfter: [after],
    });
    const seen = await everything(as("sam"), threadId);
    if (setupBroken(seen !== undefined, "sam opens the waiting thread")) return;
    expect([tag, name, meta, before, after].flatMap((c) => where(seen, c))).toEqual([]);
  });

  // Was a hole, closed (low, customer → supervisor): a header the deployment keeps (`runHeaders:
  // ["x-request-id"]` in examples/server/auth.ts) is kept with whatever value the client sent: in
  // the thread's config, the run's kwargs, and LangGraph copies it into every checkpoint's metadata
  // (threads.getHistory / getState `metadata`). A client that puts a customer reference (here her
  // card number) in the request id shows it to the supervisor.
  it("sam reads no card cara sent in a kept request header (x-request-id)", async () => {
    const secret = card(108);
    const { threadId } = await pausedThread(740, {}, as("cara", { "x-request-id": `cara-${secret}` }));
    const seen = await everything(as("sam"), threadId);
    if (setupBroken(seen !== undefined, "sam opens the waiting thread")) return;
    expect(where(seen, secret)).toEqual([]);
  });

  // Was a hole, closed (medium, supervisor → customer, and to the other supervisor while it waits): the same
  // holes the other way: what sam's answering run carries beside his answer (configurable, context,
  // tags) is kept raw in the thread's config and his run's kwargs, which cara reads. An answerer
  // may send no input, no breakpoints, no recursion limit (`assertRunAllowed`), but any config key
  // and any context.
  it("cara reads no card sam put in his answering run's configurable, context or tags", async () => {
    const [conf, ctx, tag] = [card(109), card(110), card(111)];
    const { threadId, request } = await pausedThread(612);
    await as("sam").runs.wait(threadId, "refund", {
      command: { resume: approveAll(request) },
      config: { configurable: { reviewer_note: conf }, tags: [tag] },
      context: { note: ctx },
    });
    const seen = await everything(as("cara"), threadId);
    if (setupBroken(seen !== undefined && refundsOf(612).length === 1, "sam's approval paid and cara reads her thread")) return;
    expect([conf, ctx, tag].flatMap((c) => where(seen, c))).toEqual([]);
  });

  it("keeps nothing of a run eart's auth refuses (the owner's new input, continue or Command update; an answer delayed or with breakpoints): a supervisor reads none of it", async () => {
    const secret = card(112);
    const { threadId } = await pausedThread();
    const cara = as("cara");
    await expect(cara.runs.wait(threadId, "refund", { input: say(`also ${secret}`), config: { configurable: { note: secret } }, context: { note: secret } })).rejects.toThrow(/409|thread_awaiting_approval/);
    await expect(cara.runs.wait(threadId, "refund", { input: null, config: { configurable: { note: secret } } })).rejects.toThrow(/409|thread_awaiting_approval/);
    await expect(cara.runs.wait(threadId, "refund", { command: { resume: "x", update: { messages: [{ role: "user", content: secret }] } }, config: { tags: [secret] } })).rejects.toThrow(/403/);
    // An answerer's run the auth refuses (delayed, with breakpoints) keeps nothing either; the other supervisor reads none of it.
    const sam = as("sam");
    await expect(sam.runs.create(threadId, "refund", { command: { resume: `no ${secret}` }, afterSeconds: 5, config: { configurable: { note: secret } } })).rejects.toThrow(/403/);
    await expect(sam.runs.create(threadId, "refund", { command: { resume: `no ${secret}` }, interruptBefore: [secret], context: { note: secret } })).rejects.toThrow(/403/);
    const seen = await everything(as("sue"), threadId);
    expect(seen).toBeDefined();
    expect((seen!.runs as unknown[]).length).toBe(1);
    expect(where(seen, secret)).toEqual([]);
  });

  it("another customer reads nothing of cara's thread, whatever her request carries", async () => {
    const secret = card(113);
    const { threadId } = await pausedThread(740, { config: { configurable: { note: secret } }, context: { note: secret } });
    const omar = as("omar");
    expect(await everything(omar, threadId)).toBeUndefined();
    await expect(omar.threads.get(threadId)).rejects.toThrow(/404|not found/i);
    const found = await omar.threads.search({ limit: 1000 });
    expect(where(found, secret)).toEqual([]);
    // The value is there, redacted, for a reader of the thread (the control: the data path was exercised).
    expect(JSON.stringify(await everything(as("cara"), threadId))).toContain("[REDACTED:card_number]");
  });
});

// ─── The input, in every form ───────────────────────────────────────────────────────────────

describe("a customer's input in every form", () => {
  const FORMS: [string, (secret: string) => unknown][] = [
    ["messages as one string", (s) => ({ messages: `hello, my card is ${s}` })],
    ["a [role, text] tuple", (s) => ({ messages: [["user", `hello, my card is ${s}`]] })],
    ["content blocks", (s) => ({ messages: [{ role: "user", content: [{ type: "text", text: `card ${s}` }] }] })],
    ["LangChain's serialised form", (s) => ({ messages: [{ lc: 1, type: "constructor", id: ["langchain_core", "messages", "HumanMessage"], kwargs: { content: `card ${s}` } }] })],
    ["a key beside messages", (s) => ({ messages: [{ role: "user", content: "hello" }], profile: { note: s } })],
    ["the card as a key and a number", (s) => ({ messages: [{ role: "user", content: "hello", additional_kwargs: { [s]: Number(s.replace(/ /g, "")) } }] })],
    ["a field named cardNumber / pan / iban / ssn", () => ({ messages: [{ role: "user", content: "hello", additional_kwargs: { cardNumber: "12", pan: "34", iban: "56", ssn: "78" } }] })],
    ["a bare string (refused by LangGraph)", (s) => `card ${s}`],
    ["a nested object under messages", (s) => ({ messages: [{ role: "user", content: "hello", response_metadata: { a: [{ b: { c: `x ${s} x` } }] } }] })],
    ["an SSN and an NI number", () => ({ messages: [{ role: "user", content: "ssn 123-45-6789 and NI AB 12 34 56 C" }] })],
  ];

  it("the supervisor reads every form of her input redacted, as the thread holds it (run kwargs, values, history)", { timeout: 90_000 }, async () => {
    const cara = as("cara");
    for (const [i, [name, form]] of FORMS.entries()) {
      const secret = card(200 + i);
      const thread = await cara.threads.create();
      await cara.runs.wait(thread.thread_id, "refund", { input: form(secret) as never }).catch(() => undefined);
      // Then her refund, so the thread waits for sam and he may read all of it.
      await cara.runs.wait(thread.thread_id, "refund", { input: say("Please refund order 1042, $740.") });
      const seen = await everything(as("sam"), thread.thread_id);
      expect(seen, name).toBeDefined();
      expect(where(seen, secret), name).toEqual([]);
      expect(JSON.stringify(seen), name).not.toMatch(/123-45-6789|AB 12 34 56 C/);
      // The form reached the run's kwargs, redacted (a bare string too, which the graph refuses: the
      // server keeps a run before the graph runs it; forms eart's auth refuses, an AI or tool message
      // or an Overwrite of messages, are not kept at all: test/server/attacks.test.ts).
      const runs = seen!.runs as { kwargs: { input?: unknown } }[];
      if (!name.includes("field")) expect(runs.some((r) => marked(r.kwargs.input) || marked(r.kwargs.input, "[REDACTED:national_id]")), name).toBe(true);
      else expect(runs.some((r) => marked(r.kwargs.input, "[REDACTED:iban]") && marked(r.kwargs.input, "[REDACTED:national_id]")), name).toBe(true);
    }
  });

  // LIMIT (low; documented, README "Out of reach of patterns"): a card split across two
  // messages ("4111 1111" then "1111 1111") matches no pattern in either: the supervisor reads both
  // halves, in the thread and in the run's kwargs alike. The auth keeps what the thread keeps (no
  // worse), but the number is readable. Not counted as a new hole.
  it.fails("the supervisor cannot read a card cara split across two messages (documented limitation)", async () => {
    const cara = as("cara");
    const thread = await cara.threads.create();
    await cara.runs.wait(thread.thread_id, "refund", { input: { messages: [{ role: "user", content: "my card: 4111 1111" }, { role: "user", content: "1111 1111. Please refund order 1042, $740." }] } });
    const seen = await everything(as("sam"), thread.thread_id);
    if (setupBroken(seen !== undefined, "sam opens the waiting thread")) return;
    const text = JSON.stringify((seen!.state as { values: unknown }).values);
    expect(/4111 1111[\s\S]{0,120}1111 1111/.test(text)).toBe(false);
  });

  // Was a LIMIT (low, customer → supervisor; a pattern limit, not the auth's): a card glued to
  // letters ("CC4111 1111 1111 1111", "4111111111111111exp": a client that concatenates a label and
  // the number) matched no standard rule, whose card pattern wanted no letter or digit on either
  // side; the thread and the run's kwargs kept it raw and the supervisor read it. Now up to 20
  // letters glued to a card number are read as its label (the same for a US SSN); IBANs glued to
  // letters are still out of reach (README "Out of reach of patterns").
  it("the supervisor reads no card cara glued to letters (CC4111…, …exp)", async () => {
    const [a, b] = [card(260), card(261)];
    const cara = as("cara");
    const thread = await cara.threads.create();
    await cara.runs.wait(thread.thread_id, "refund", { input: say(`Please refund order 1042, $740. Paid with CC${a}, or ${b.replace(/ /g, "")}exp`) });
    const seen = await everything(as("sam"), thread.thread_id);
    expect(seen).toBeDefined();
    expect([...where(seen, a), ...where(seen, b)]).toEqual([]);
    // The data path was exercised: both reached the thread, redacted, with their labels.
    expect(JSON.stringify(seen)).toContain(`Paid with CC${REDACTED}, or ${REDACTED}exp`);
  });

  it("runs the owner queued (enqueue, after_seconds) keep her input redacted, and refused on the waiting thread say nothing of it", async () => {
    const cara = as("cara");
    const threadId = (await cara.threads.create()).thread_id;
    const [a, b] = [card(230), card(231)];
    // Delayed in this order (as in test/server/dev-server.test.ts), so both are queued before the first pauses.
    const first = await cara.runs.create(threadId, "refund", { input: say("Please refund order 1042, $740."), afterSeconds: 1 });
    const second = await cara.runs.create(threadId, "refund", { input: say(`Please refund order 1042, $741. card ${a}`), multitaskStrategy: "enqueue", afterSeconds: 2 });
    const third = await cara.runs.create(threadId, "refund", { input: { messages: [{ role: "user", content: "x", additional_kwargs: { nested: [`${b}`] } }] }, multitaskStrategy: "enqueue", afterSeconds: 3 });
    for (const run of [first, second, third]) await cara.runs.join(threadId, run.run_id).catch(() => undefined);
    // Until all three ran (a join can return before a queued run has started).
    for (let i = 0; i < 200; i++) {
      const runs = await cara.runs.list(threadId);
      if (runs.length === 3 && runs.every((r) => r.status !== "pending" && r.status !== "running")) break;
      await new Promise((r) => setTimeout(r, 150));
    }
    const seen = await everything(as("sam"), threadId);
    expect(seen).toBeDefined();
    expect((seen!.runs as unknown[]).length).toBe(3);
    expect([...where(seen, a), ...where(seen, b)]).toEqual([]);
    expect(marked(seen!.runs)).toBe(true);
    // The thread still waits on the first request.
    expect((await interruptOf(cara, threadId)).value.requests![0]!.args).toMatchObject({ amount: 740 });
  });

  it("state writes (supersteps on create, updateState with a key beside messages, metadata keys and nesting) reach the supervisor redacted or not at all", async () => {
    const cara = as("cara");
    const [m, extra, u, ux, mk, mv] = [card(240), card(241), card(242), card(243), card(244), card(245)];
    const created = await cara.threads.create({ graphId: "refund", supersteps: [{ updates: [{ values: { messages: [{ role: "user", content: `hi ${m}` }], note: extra }, asNode: "__start__" }] }] });
    const threadId = created.thread_id;
    await cara.threads.updateState(threadId, { values: { messages: [{ role: "user", content: `x ${u}` }], note: ux } as never });
    await expect(cara.threads.updateState(threadId, { values: [{ messages: [{ role: "user", content: `x ${u}` }] }] as never })).rejects.toThrow(/403/);
    await cara.threads.update(threadId, { metadata: { deep: { deeper: [{ x: mv }] }, [mk]: 1 } });
    await cara.runs.wait(threadId, "refund", { input: say("Please refund order 1042, $740.") });
    const seen = await everything(as("sam"), threadId);
    expect(seen).toBeDefined();
    expect([m, extra, u, ux, mk, mv].flatMap((c) => where(seen, c))).toEqual([]);
    expect(marked((seen!.state as { values: unknown }).values)).toBe(true);
    expect(marked((seen!.thread as { metadata: unknown }).metadata)).toBe(true);
  });

  it("a replay of the customer's resumable run (every stream mode) shows the supervisor her input redacted", async () => {
    const secret = card(250);
    const cara = as("cara");
    const threadId = (await cara.threads.create()).thread_id;
    let runId = "";
    const own: unknown[] = [];
    for await (const part of cara.runs.stream(threadId, "refund", {
      input: say(`Please refund order 1042, $740. card ${secret}`),
      streamMode: ["values", "updates", "debug", "tasks", "checkpoints", "messages", "messages-tuple", "events", "custom"],
      streamResumable: true,
      onRunCreated: (meta) => (runId = meta.run_id),
    })) own.push(part);
    const replay: { event: string }[] = [];
    for await (const part of as("sam").runs.joinStream(threadId, runId, { lastEventId: "-1" })) replay.push(part as { event: string });
    expect(replay.length).toBeGreaterThan(20);
    expect(replay.map((p) => p.event)).toEqual(expect.arrayContaining(["events", "debug", "tasks", "updates", "values", "checkpoints"]));
    expect([...where(own, secret), ...where(replay, secret)]).toEqual([]);
    expect(marked(replay)).toBe(true);
  });
});

// ─── Answers ────────────────────────────────────────────────────────────────────────────────

describe("a supervisor's answer, in every shape", () => {
  it("the customer (and the other supervisor, while it still waits) reads none of what sam wrote, in any shape, refused or taken", { timeout: 90_000 }, async () => {
    const note = (n: number) => `only to ${card(n)}`;
    const SHAPES: [string, (q: ServedInterrupt, n: number) => unknown, "refused" | "taken"][] = [
      ["a string", (_q, n) => note(n), "refused"],
      ["an array", (_q, n) => [note(n)], "refused"],
      ["a map by interrupt id", (q, n) => ({ [q.id]: decide(q, { type: "reject", message: note(n) }) }), "taken"],
      ["nested", (_q, n) => ({ a: { b: [{ c: note(n) }] } }), "refused"],
      ["respond", (q, n) => decide(q, { type: "respond", message: note(n) }), "taken"],
      ["edit (arguments)", (q, n) => decide(q, { type: "edit", args: { ...q.value.requests![0]!.args, reason: note(n) } }), "taken"],
      ["an unknown type", (q, n) => decide(q, { type: note(n) }), "refused"],
      ["an unknown tool call id (echoed by the refusal)", (q, n) => ({ decisions: [{ toolCallId: note(n), type: "approve", digest: q.value.requests![0]!.digest }] }), "refused"],
      ["the card as a key", (_q, n) => ({ [card(n).replace(/ /g, "")]: { [card(n)]: true } }), "refused"],
    ];
    for (const [i, [name, make, outcome]] of SHAPES.entries()) {
      const n = 300 + i;
      const { threadId, request } = await pausedThread();
      await as("sam").runs.wait(threadId, "refund", { command: { resume: make(request, n) } });
      const seenByCara = await everything(as("cara"), threadId);
      expect(seenByCara, name).toBeDefined();
      const status = (seenByCara!.thread as { status: string }).status;
      expect(status, name).toBe(outcome === "refused" ? "interrupted" : "idle");
      expect(where(seenByCara, card(n)), name).toEqual([]);
      // What sam sent reached the run's kwargs, redacted.
      const answers = (seenByCara!.runs as { kwargs: { command?: { resume?: unknown } } }[]).map((r) => r.kwargs.command?.resume).filter((r) => r !== undefined);
      expect(answers, name).toHaveLength(1);
      expect(marked(answers), name).toBe(true);
      if (outcome === "refused") {
        const seenBySue = await everything(as("sue"), threadId);
        expect(seenBySue, name).toBeDefined();
        expect(where(seenBySue, card(n)), name).toEqual([]);
        expect((await interruptOf(as("cara"), threadId)).value.refusal, name).toBeDefined();
      }
    }
  });

  // Was a hole, closed (low, supervisor → customer and the other supervisor): `redactedAnswer` keeps each
  // decision's `token` as it was sent ("a token is checked byte for byte"), whatever it holds: a
  // client that puts anything but a token there (here the card itself) has it kept raw in the
  // run's kwargs.command.resume, which the customer and, while the thread still waits (the token
  // is refused: "not a token"), the other supervisor read. graphs/governed-agent.ts
  // `redactedAnswer` restores any string token.
  it("cara and sue read no card sam sent in a decision's token field", async () => {
    const secret = card(320);
    const { threadId, request } = await pausedThread();
    await as("sam").runs.wait(threadId, "refund", { command: { resume: decide(request, { token: `card ${secret}`, message: "see token" }) } });
    const [cara, sue] = [await everything(as("cara"), threadId), await everything(as("sue"), threadId)];
    if (setupBroken(cara !== undefined && sue !== undefined, "cara and sue open the thread (the token was refused, it still waits)")) return;
    expect([...where(cara, secret), ...where(sue, secret)]).toEqual([]);
  });

  // Was a hole, closed (medium, supervisor → customer and other supervisors; customer → supervisors): a signed
  // approval token is base64url JSON, so redaction reads nothing in it (and keeps it as sent); the
  // gate decodes it and, refusing it, writes what it read into the refusal message
  // (`unknown key id "<kid>"`, src/human-tasks/approval-token.ts verifyApprovalToken), which eart
  // puts beside the request in the thread's interrupt unredacted (langgraph/interrupts.ts:
  // `interrupt({ ...request, refusal: { code, message: error.message } })`). The card sam encoded
  // in a token's key id is shown, decoded and in clear, to cara and sue in threads.get
  // interrupts, getState tasks and getHistory, for as long as the thread keeps that checkpoint.
  // Works the other way too: cara relays a token of her own making and sam reads its kid.
  it("the refusal of a forged approval token shows no card its claims carry (sam → cara, sue; cara → sam)", async () => {
    const forged = (threadId: string, request: ServedInterrupt, kid: string) => {
      const r = request.value.requests![0]!;
      const claims = { v: 1, kid, threadId, toolCallId: r.toolCallId, digest: r.digest, approver: "sam", decision: "approve", exp: new Date(Date.now() + 600_000).toISOString(), nonce: "n".repeat(24) };
      return decide(request, { token: `${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${Buffer.from("not a signature").toString("base64url")}` });
    };
    const [bySam, byCara] = [card(321), card(322)];
    const one = await pausedThread();
    await as("sam").runs.wait(one.threadId, "refund", { command: { resume: forged(one.threadId, one.request, `card ${bySam}`) } });
    const two = await pausedThread();
    await as("cara").runs.wait(two.threadId, "refund", { command: { resume: forged(two.threadId, two.request, `card ${byCara}`) } });
    const refusalOne = (await interruptOf(as("cara"), one.threadId)).value.refusal;
    const refusalTwo = (await interruptOf(as("sam"), two.threadId)).value.refusal;
    if (setupBroken(refusalOne?.code === "approval_token_invalid" && refusalTwo?.code === "approval_token_invalid", "both forged tokens were refused")) return;
    const leaks = [
      ...where(await everything(as("cara"), one.threadId), bySam),
      ...where(await everything(as("sue"), one.threadId), bySam),
      ...where(await everything(as("sam"), two.threadId), byCara),
    ];
    expect(leaks).toEqual([]);
  });

  it("the customer's own answer (a refused self-approval with her card in it) reaches the supervisor redacted, and stays refused", async () => {
    const secret = card(330);
    const { threadId, request } = await pausedThread(613);
    await as("cara").runs.wait(threadId, "refund", { command: { resume: decide(request, { message: `my card ${secret}` }) } });
    const refusal = (await interruptOf(as("sam"), threadId)).value.refusal;
    expect(refusal?.code).toBe("approval_self_approval");
    expect(refundsOf(613)).toEqual([]);
    const seen = await everything(as("sam"), threadId);
    expect(where(seen, secret)).toEqual([]);
    expect(marked((seen!.runs as { kwargs: unknown }[]).map((r) => r.kwargs))).toBe(true);
    // And sam's approval still pays, once.
    await as("sam").runs.wait(threadId, "refund", { command: { resume: approveAll(request) } });
    await as("sam").runs.wait(threadId, "refund", { command: { resume: approveAll(request) } }).catch(() => undefined);
    expect(refundsOf(613)).toHaveLength(1);
  });
});

// ─── Values a sender's roles may see, stored for readers whose roles may not ───────────────

describe("a value the sender's roles may see (visibleTo), read by an approver whose roles may not", () => {
  // LIMIT (medium, treasury → finance approver; documented): the finance-payment graph shows IBANs to treasury
  // only (examples/finance-payment/data.ts `paymentRedaction`: iban visibleTo ["treasury"]). Tom
  // (treasury) owns a payment thread and sends a vendor's IBAN: the graph redacts his input for
  // his roles (graphs/governed-agent.ts `redactIncoming` viewer = the caller), so the thread keeps
  // it raw, and so does eart's auth in the run's kwargs.input (server/agent.ts `redactRunRequest`,
  // "the input is redacted for the caller's own roles"). The payment waits for finance: Fred
  // (finance, not treasury) opens the thread and reads the IBAN raw, in the thread's values and in
  // the run's kwargs. (The vendor's IBAN retrieved as context for tom is kept raw in the thread's
  // values.context the same way.)
  it.fails("fred (finance) reads no IBAN tom (treasury) sent in the payment thread that waits for fred", async () => {
    const IBAN = "GB82 WEST 1234 5698 7654 32";
    const tom = as("tom");
    const threadId = (await tom.threads.create()).thread_id;
    await tom.runs.wait(threadId, "finance-payment", { input: say(`Pay invoice INV-7732. The vendor's new account is ${IBAN}.`) });
    const request = await interruptOf(tom, threadId);
    const seen = await everything(as("fred"), threadId);
    if (setupBroken(seen !== undefined && request.value.roles?.includes("finance") === true, "the payment waits for finance and fred opens it")) return;
    expect(where(seen, IBAN)).toEqual([]);
  });

  it("amy (accounts payable, not treasury) sending an IBAN: fred reads it redacted (the control)", async () => {
    const IBAN = "GB82 WEST 1234 5698 7654 32";
    const amy = as("amy");
    const threadId = (await amy.threads.create()).thread_id;
    await amy.runs.wait(threadId, "finance-payment", { input: say(`Pay invoice INV-7732. The vendor's new account is ${IBAN}.`) });
    await interruptOf(amy, threadId);
    const seen = await everything(as("fred"), threadId);
    expect(seen).toBeDefined();
    expect(where(seen, IBAN)).toEqual([]);
    expect(marked((seen!.runs as { kwargs: unknown }[])[0]!.kwargs, "[REDACTED:iban]")).toBe(true);
  });
});

// ─── The redaction in the auth breaks nothing ──────────────────────────────────────────────

describe("what the auth's redaction must not break", () => {
  it("an honest approval pays once; her card stays redacted for the supervisor; a second approval runs nothing", async () => {
    const secret = card(400);
    const cara = as("cara");
    const thread = await cara.threads.create();
    await cara.runs.wait(thread.thread_id, "refund", { input: say(`Please refund order 1042, $614. My card is ${secret}.`) });
    const sam = as("sam");
    const request = await interruptOf(sam, thread.thread_id);
    await sam.runs.wait(thread.thread_id, "refund", { command: { resume: approveAll(request) } });
    expect((await cara.threads.get(thread.thread_id)).status).toBe("idle");
    await sam.runs.wait(thread.thread_id, "refund", { command: { resume: approveAll(request) } }).catch(() => undefined);
    expect(refundsOf(614)).toEqual([{ orderId: "1042", amount: 614 }]);
    const seen = await everything(sam, thread.thread_id);
    expect(where(seen, secret)).toEqual([]);
    expect(marked(seen)).toBe(true);
  });

  it("signed approval tokens still work through the auth's redaction: a message the relayer added (a card in it) is refused and never stored; a reject with the message sam signed is sam's; an approve pays once; a replay is refused", async () => {
    const token = (threadId: string, request: ServedInterrupt, decision: "approve" | "reject", message?: string) => {
      const r = request.value.requests![0]!;
      return signApprovalToken({ kid: "sam-1", threadId, toolCallId: r.toolCallId, digest: r.digest, approver: "sam", decision, ...(message !== undefined ? { message } : {}), expiresInMs: 10 * 60_000 }, samKey.privateKey);
    };
    // A reject signed by sam, relayed by the customer's app (cara's session) with a message sam
    // did not sign, a card in it: refused (the token signs its message), the card redacted before
    // anything holds it.
    const secret = card(401);
    const one = await pausedThread(615);
    await as("cara")
      .runs.wait(one.threadId, "refund", { command: { resume: decide(one.request, { type: "reject", token: token(one.threadId, one.request, "reject"), message: `not to ${secret}` }) } })
      .catch(() => undefined);
    expect(refundsOf(615)).toEqual([]);
    expect(where(await everything(as("cara"), one.threadId), secret)).toEqual([]);
    const decidedOn = (threadId: string) =>
      server.rows<{ data: string }>("eart_audit_events", "data", { sql: "thread_id = ? AND type = 'approval.decided'", params: [threadId] }).map((r) => JSON.parse(r.data) as Record<string, unknown>);
    expect(decidedOn(one.threadId)).toEqual([]);
    // The reject with the message sam signed, relayed by cara: kept as signed, and the reject is sam's.
    const note = "not this one: ask the customer for the order number";
    await as("cara").runs.wait(one.threadId, "refund", { command: { resume: decide(one.request, { type: "reject", token: token(one.threadId, one.request, "reject", note), message: note }) } });
    expect((await as("cara").threads.get(one.threadId)).status).toBe("idle");
    expect(refundsOf(615)).toEqual([]);
    expect(decidedOn(one.threadId)).toEqual([expect.objectContaining({ approverId: "sam", authenticatedBy: "approval_token", decision: "reject", message: note })]);
    // An approve signed by sam, relayed by cara: pays once; the same token again runs nothing.
    const two = await pausedThread(616);
    const approveToken = token(two.threadId, two.request, "approve");
    await as("cara").runs.wait(two.threadId, "refund", { command: { resume: decide(two.request, { token: approveToken }) } });
    expect((await as("cara").threads.get(two.threadId)).status).toBe("idle");
    await as("cara").runs.wait(two.threadId, "refund", { command: { resume: decide(two.request, { token: approveToken }) } }).catch(() => undefined);
    expect(refundsOf(616)).toEqual([{ orderId: "1042", amount: 616 }]);
  });

  it("assistants stay read-only: no client writes a card into what every user reads of them", async () => {
    const secret = card(402);
    const cara = as("cara");
    const [assistant] = await cara.assistants.search({ graphId: "refund" });
    expect(assistant).toBeDefined();
    await expect(cara.assistants.create({ graphId: "refund", config: { configurable: { note: secret } }, metadata: { note: secret } })).rejects.toThrow(/403|forbidden/i);
    await expect(cara.assistants.update(assistant!.assistant_id, { metadata: { note: secret }, config: { tags: [secret] } })).rejects.toThrow(/403|forbidden/i);
    const seen = await as("sam").assistants.search({ limit: 100 });
    expect(seen.length).toBeGreaterThan(0);
    expect(where(seen, secret)).toEqual([]);
  });
});
