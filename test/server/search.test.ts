import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startDevServer, TOKENS, type DevServer } from "../support/langgraph-server.js";

/**
 * A reviewer's search on a real LangGraph dev server (the project's langgraph.json: eart's auth and
 * its HTTP middleware in the custom app), beside a test graph with two approving desks: a
 * supervisor approves refunds over $100 up to $500, finance approves larger ones. LangGraph's
 * filters match metadata only and a search answers whole threads (values, interrupts, config): a
 * reviewer of one desk must find the threads waiting for them, and nothing of the other desk's.
 */
let server: DevServer;
beforeAll(async () => {
  server = await startDevServer({}, { extraGraphs: { "two-desk-refund": "test/support/two-desk-refund-graph.ts:graph" } });
}, 120_000);
afterAll(async () => {
  await server?.stop();
});

const GRAPH = "two-desk-refund";
const as = (user: string) => server.client(user);
const say = (content: string) => ({ messages: [{ role: "user", content }] });
/** An order named in a thread's text (its messages, or a call's arguments), never a hex run of an id that happens to hold its digits. */
const order = (id: string) => new RegExp(`order ${id}|orderId\\\\?":\\\\?"${id}`);

/** A thread of `owner` run once on `graphId` with `input`, and its status after the run. */
async function ranThread(owner: string, graphId: string, input: unknown, options: { interruptBefore?: string[] } = {}): Promise<{ threadId: string; status: string }> {
  const client = as(owner);
  const thread = await client.threads.create();
  await client.runs.wait(thread.thread_id, graphId, { input, ...(options.interruptBefore ? { interruptBefore: options.interruptBefore } : {}) });
  return { threadId: thread.thread_id, status: (await client.threads.get(thread.thread_id)).status };
}

/** What `user` finds with `threads.search({ status: "interrupted" })` on `graphId`: thread ids, and the answer's text. */
async function found(user: string, graphId = GRAPH): Promise<{ ids: string[]; text: string }> {
  const threads = await as(user).threads.search({ status: "interrupted", metadata: { graph_id: graphId }, limit: 1000 });
  return { ids: threads.map((t) => t.thread_id), text: JSON.stringify(threads) };
}

/** A raw POST to the server as `user`: its status and parsed body. */
async function post(user: string, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${server.url}${path}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${TOKENS[user]}` }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
}

describe("a reviewer's search", () => {
  it("lists to each desk the threads waiting for its role, and nothing of the other desk's (values, interrupts and all)", async () => {
    const small = await ranThread("cara", GRAPH, say("Please refund order 1042, $300"));
    const large = await ranThread("omar", GRAPH, say("Please refund order 2002, $740"));
    expect([small.status, large.status]).toEqual(["interrupted", "interrupted"]);

    // The supervisors find cara's $300 refund (theirs to approve), not omar's $740 (finance's).
    for (const supervisor of ["sam", "sue"]) {
      const seen = await found(supervisor);
      expect(seen.ids).toContain(small.threadId);
      expect(seen.ids).not.toContain(large.threadId);
      expect(seen.text).not.toMatch(order("2002"));
    }
    // Finance finds omar's, not cara's.
    const finance = await found("fay");
    expect(finance.ids).toContain(large.threadId);
    expect(finance.ids).not.toContain(small.threadId);
    expect(finance.text).not.toMatch(order("1042"));
    // Each owner finds their own thread, and no other.
    expect((await found("omar")).ids).toEqual([large.threadId]);
    expect((await found("cara")).ids).toEqual([small.threadId]);
    // A selection is served as asked, checked all the same: without the thread's id, the threads
    // waiting for sam come back with only the fields he chose, and none of finance's.
    const blind = await post("sam", "/threads/search", { status: "interrupted", metadata: { graph_id: GRAPH }, select: ["values", "interrupts"], limit: 1000 });
    expect(blind.status).toBe(200);
    expect(JSON.stringify(blind.body)).toContain("order 1042, $300");
    expect(JSON.stringify(blind.body)).not.toMatch(order("2002"));
    expect((blind.body as Record<string, unknown>[]).every((t) => Object.keys(t).sort().join() === "interrupts,values")).toBe(true);
    const selected = await post("sam", "/threads/search", { status: "interrupted", metadata: { graph_id: GRAPH }, select: ["thread_id", "values"], limit: 1000 });
    expect((selected.body as { thread_id: string }[]).map((t) => t.thread_id)).toContain(small.threadId);
    expect(JSON.stringify(selected.body)).not.toMatch(order("2002"));
    // What the search shows a reviewer, they may open: the same threads, by id.
    await expect(as("sam").threads.get(small.threadId)).resolves.toMatchObject({ thread_id: small.threadId });
    await expect(as("sam").threads.get(large.threadId)).rejects.toThrow(/404|not found/i);
  });

  // Found by a red-team pass: the server paged and counted before the middleware dropped threads,
  // so X-Pagination-Total counted finance's threads for sam, answered yes or no to `ids` and
  // metadata guesses about them, and a page could come back empty while threads waited for him.
  it("pages and counts after the check: a page is full, and neither its positions nor its headers tell of another desk's threads", async () => {
    const small = await ranThread("cara", GRAPH, say("Please refund order 1042, $250"));
    // Newer than cara's: three threads waiting for finance.
    const large: string[] = [];
    for (let i = 0; i < 3; i++) large.push((await ranThread("omar", GRAPH, say("Please refund order 2002, $740"))).threadId);
    const search = (user: string, extra: Record<string, unknown>) =>
      fetch(`${server.url}/threads/search`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${TOKENS[user]}` },
        body: JSON.stringify({ status: "interrupted", metadata: { graph_id: GRAPH }, ...extra }),
      }).then(async (res) => ({ ids: ((await res.json()) as { thread_id: string }[]).map((t) => t.thread_id), next: res.headers.get("x-pagination-next"), total: res.headers.get("x-pagination-total") }));
    // The newest thread waiting for sam is on his first page of one, whatever finance waits on.
    expect((await search("sam", { limit: 1 })).ids).toEqual([(await found("sam")).ids[0]]);
    // Each of sam's threads once, in order, paging one at a time: the pages hold only his.
    const all = (await found("sam")).ids;
    const paged: string[] = [];
    for (let offset = 0; offset < all.length; offset++) paged.push(...(await search("sam", { limit: 1, offset })).ids);
    expect(paged).toEqual(all);
    expect(paged).toContain(small.threadId);
    // Guesses about finance's threads: the same answer, headers and all, as for threads that do not exist.
    const nothing = await search("sam", { ids: [crypto.randomUUID()], limit: 1 });
    expect(nothing).toEqual({ ids: [], next: null, total: "0" });
    expect(await search("sam", { ids: [large[0]], limit: 1 })).toEqual(nothing);
    expect(await search("sam", { ids: large, limit: 3 })).toEqual(nothing);
    expect(await search("sam", { metadata: { graph_id: GRAPH, owner: "omar" }, limit: 1 })).toEqual(nothing);
    // Counted from what the reviewer may see, as the server counts a page: finance pages through
    // its desk's threads, and following X-Pagination-Next ends.
    const finance = await search("fay", { ids: large, limit: 3 });
    expect(finance.ids.sort()).toEqual([...large].sort());
    expect([finance.next, finance.total]).toEqual(["3", "4"]);
    expect(await search("fay", { ids: large, limit: 3, offset: 3 })).toEqual({ ids: [], next: null, total: "3" });
    const two = await search("fay", { ids: large, limit: 2 });
    expect([two.ids.length, two.next, two.total]).toEqual([2, null, "3"]);
    // The owner's pages are the server's own, headers too.
    const own = await search("omar", { ids: large, limit: 2, offset: 2 });
    expect([own.ids.length, own.next, own.total]).toEqual([1, null, "5"]);
  });

  it("does not list a thread the reviewer answered once that now waits for another desk", async () => {
    const { threadId } = await ranThread("cara", GRAPH, say("Please refund order 1042, $300"));
    const request = Object.values((await as("cara").threads.get(threadId)).interrupts ?? {}).flat()[0] as { value: { requests: { toolCallId: string; digest: string }[] } };
    await as("sam").runs.wait(threadId, GRAPH, { command: { resume: { decisions: request.value.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve", digest: r.digest })) } } });
    // The same thread, a larger refund: it waits for finance now.
    await as("cara").runs.wait(threadId, GRAPH, { input: say("Please refund order 1042, $900 PRIVATE-LATER") });
    expect((await as("cara").threads.get(threadId)).status).toBe("interrupted");
    const seen = await found("sam");
    expect(seen.ids).not.toContain(threadId);
    expect(seen.text).not.toContain("PRIVATE-LATER");
    expect((await found("fay")).ids).toContain(threadId);
  });

  it("does not list a thread its owner stopped at a breakpoint: it waits for no reviewer", async () => {
    const stopped = await ranThread("cara", "refund", say("Please refund order 1042, $740"), { interruptBefore: ["policyGate"] });
    expect(stopped.status).toBe("interrupted");
    const seen = await found("sam", "refund");
    expect(seen.ids).not.toContain(stopped.threadId);
    expect(seen.text).not.toContain(stopped.threadId);
    // Its owner finds it.
    expect((await found("cara", "refund")).ids).toContain(stopped.threadId);
  });

  it("counts, and finds by values, only the caller's own threads: neither is an oracle on another's messages", async () => {
    const large = await ranThread("omar", GRAPH, say("Please refund order 2002, $740 PRIVATE-ORACLE"));
    expect(large.status).toBe("interrupted");
    const probe = { status: "interrupted", metadata: { graph_id: GRAPH }, values: { messages: { 0: { content: "Please refund order 2002, $740 PRIVATE-ORACLE" } } } };
    // The probe matches the thread: its owner finds it by it, and counts it.
    expect(((await post("omar", "/threads/search", probe)).body as { thread_id: string }[]).map((t) => t.thread_id)).toEqual([large.threadId]);
    expect((await post("omar", "/threads/count", probe)).body).toBe(1);
    // A supervisor, and finance (who may answer the thread, but finds by metadata, not values).
    for (const reviewer of ["sam", "fay"]) {
      expect((await post(reviewer, "/threads/search", probe)).body).toEqual([]);
      expect((await post(reviewer, "/threads/count", probe)).body).toBe(0);
      expect((await post(reviewer, "/threads/count", { status: "interrupted", metadata: { graph_id: GRAPH } })).body).toBe(0);
    }
  });

  it("lists the runs of a thread to those who may read it: its owner and the desk it waits for", async () => {
    const large = await ranThread("omar", GRAPH, say("Please refund order 2002, $740"));
    for (const status of [undefined, "success", "interrupted"]) {
      await expect(as("sam").runs.list(large.threadId, status ? { status: status as "success" } : {})).rejects.toThrow(/404|not found/i);
    }
    expect(await as("omar").runs.list(large.threadId)).toHaveLength(1);
    expect(await as("fay").runs.list(large.threadId)).toHaveLength(1);
  });
});
