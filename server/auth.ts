import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { Auth, HTTPException } from "@langchain/langgraph-sdk/auth";
import { EartConfigError, StateTamperError } from "../src/errors.js";
import { IdentityRegistry } from "../src/identity/registry.js";
import { answerableBy, clientMessageIds, redactRunRequest, redactThreadMetadata, refusalBeforeRun, servedUser } from "./agent.js";
import { COMMAND_WRITE_REFUSED, commandWrites } from "../graphs/resume-guard.js";
import { proofFor } from "./proof.js";
import { narrowedSearches } from "./http.js";
import { closedPath, runReadsOf } from "./paths.js";

/** The custom auth LangGraph server loads (`langgraph.json` → `auth.path`). */
export type EartAuth = Auth;

/** Who a bearer token speaks for: the user's id in the identities, or nobody. */
export type VerifyToken = (token: string, request: Request) => string | undefined | Promise<string | undefined>;

/** Options of {@link createEartAuth}. */
export interface EartAuthOptions {
  /**
   * The users a token may name. Default: the users of the served graphs' identities (a user's
   * authority over a thread is always read from the identities of the graph that runs it).
   */
  identities?: IdentityRegistry | unknown;
  /**
   * Bearer tokens and the user each stands for (`{ "<token>": "cara" }`), or the path of a JSON
   * file holding them: a demo token file for `langgraph dev`. Use `verifyToken` for a real IdP.
   */
  tokens?: Record<string, string> | string;
  /** A real identity provider: checks the token (a JWT, an opaque token) and names the user, or returns undefined. */
  verifyToken?: VerifyToken;
  /**
   * Roles whose holders look for threads that wait for a human: with `threads.search({ status:
   * "interrupted" })` they find the interrupted threads they may answer (the server's custom app
   * must mount `createEartHttpMiddleware()`, which drops the others from the answer; without it
   * they find their own threads only); opening or resuming one is allowed only while it waits for
   * one of their roles. Default: the roles that answer the served graphs' human tasks (policy
   * approver roles, recovery and review roles); give them for a policy that does not describe
   * itself (Cedar).
   */
  reviewerRoles?: readonly string[];
  /**
   * Request headers a run keeps in its configuration, where the graph and its tools read them
   * (lower case: `["x-request-id"]`). LangGraph server copies every `x-*` header and `user-agent`
   * of a run's request there and keeps them in the thread's `config`, which every reader of the
   * thread sees (the owner sees an approver's, an approver the owner's): the others are dropped.
   * Default: none.
   */
  runHeaders?: readonly string[];
}

/** The token table, keyed by the token's SHA-256 so a lookup compares digests, not secrets. */
function tokenTable(tokens: Record<string, string> | string | undefined): Map<string, string> {
  let table: unknown = tokens ?? {};
  if (typeof tokens === "string") {
    try {
      table = JSON.parse(readFileSync(tokens, "utf8"));
    } catch (error) {
      throw new EartConfigError("tokens", `could not read the token file ${tokens}: ${(error as Error).message}`);
    }
  }
  if (typeof table !== "object" || table === null || Array.isArray(table)) throw new EartConfigError("tokens", "must map bearer tokens to user ids");
  const out = new Map<string, string>();
  for (const [token, user] of Object.entries(table)) {
    if (token.length < 16) throw new EartConfigError("tokens", "every token must be at least 16 characters long");
    if (typeof user !== "string" || user === "") throw new EartConfigError("tokens", "every token must name a user id");
    out.set(digest(token), user);
  }
  return out;
}

const digest = (token: string) => createHash("sha256").update(token).digest("hex");

/**
 * The user a table token names, compared digest to digest in constant time.
 */
function lookup(table: Map<string, string>, token: string): string | undefined {
  const given = Buffer.from(digest(token));
  for (const [known, user] of table) if (timingSafeEqual(Buffer.from(known), given)) return user;
  return undefined;
}

/** Where LangGraph server binds the fetch that calls its own API in process (for its custom routes and webhooks). */
const LOOPBACK = Symbol.for("langgraph_api:fetch");

/**
 * Whether the run is one of the thread's, asked of the server as the caller (`GET
 * /threads/:thread_id/runs/:run_id` checks both, and the caller's read of the thread). The server
 * streams and joins a run by its id alone once the thread in the path may be read: a caller naming
 * their own thread would read another's run. Without the server's loopback, refused.
 */
async function runOfThread(threadId: string, runId: string, authorization: string | undefined): Promise<boolean> {
  const loopback = (globalThis as unknown as Record<symbol, unknown>)[LOOPBACK];
  if (typeof loopback !== "function") return false;
  const res = await (loopback as (url: string, init: RequestInit) => Promise<Response>)(`/threads/${encodeURIComponent(threadId)}/runs/${encodeURIComponent(runId)}`, {
    method: "GET",
    headers: authorization === undefined ? {} : { authorization },
  });
  if (res.status !== 200) return false;
  const run = (await res.json().catch(() => undefined)) as { thread_id?: unknown; run_id?: unknown } | undefined;
  return run?.thread_id === threadId && run?.run_id === runId;
}

/** A filter every thread matches (the handler allows without narrowing). */
const ANYONE: Record<string, string> = Object.freeze({}) as Record<string, string>;

/** The authenticated user eart's handlers see. */
interface EartUser {
  identity: string;
  permissions: string[];
}

/**
 * Custom auth for LangGraph server (`langgraph.json`: `"auth": { "path": "./auth.ts:auth",
 * "disable_studio_auth": true }`), made for eart's governed graphs:
 * - authentication: a bearer token names a user of the identities (a token table, or `verifyToken`
 *   for a real IdP); the user's roles become the permissions, and the user carries a proof that eart's
 *   server graphs check, so the run's `langgraph_auth_user` is the principal of new input and answers;
 * - threads: the creator owns a thread (`metadata.owner`, set here, never by the client); owners
 *   see, run and update their threads; holders of a role a thread waits for (an approval, a recovery
 *   decision, a review) may see and resume it while it waits, and see it after they answered; nobody
 *   else sees it (the graph refuses anything but an answer from them);
 * - assistants come from `langgraph.json` only: clients may read them, not create, change or
 *   delete them (the agent a graph acts as is the assistant's, not the client's); crons and the
 *   store are closed.
 * @example
 * ```ts
 * // auth.ts, named in langgraph.json
 * export const auth = createEartAuth({ identities: IdentityRegistry.fromFile("identities.json"), tokens: process.env.EART_TOKENS_FILE });
 * ```
 */
export function createEartAuth(options: EartAuthOptions): EartAuth {
  const registry = options.identities === undefined ? undefined : options.identities instanceof IdentityRegistry ? options.identities : IdentityRegistry.fromObject(options.identities);
  if (options.tokens === undefined && options.verifyToken === undefined) throw new EartConfigError("tokens", "give a token table (tokens) or a verifier (verifyToken)");
  const table = tokenTable(options.tokens);
  const reviewerRoles = options.reviewerRoles === undefined ? undefined : new Set(options.reviewerRoles);
  const runHeaders = new Set((options.runHeaders ?? []).map((h) => h.toLowerCase()));
  const known = (userId: string) => (registry ? registry.getUser(userId) : servedUser(userId));

  const rolesOf = (user: EartUser) => known(user.identity)?.roles ?? [];
  /** Whether the thread waits for one of the user's roles, or holds an answer of theirs. */
  const mayAnswer = async (user: EartUser, threadId: unknown): Promise<boolean> =>
    typeof threadId === "string" && threadId !== "" && (await answerableBy(threadId, user.identity));
  const ownerOnly = (user: EartUser): Record<string, string> => ({ owner: user.identity });

  /** What the run asks of the thread, besides its input or answer. */
  type RunRequest = {
    thread_id?: unknown;
    assistant_id?: unknown;
    metadata?: Record<string, unknown>;
    after_seconds?: unknown;
    run_id?: unknown;
    kwargs?: { input?: unknown; command?: { resume?: unknown; update?: unknown; goto?: unknown } | null; config?: { configurable?: Record<string, unknown> | undefined; recursion_limit?: unknown }; webhook?: unknown; temporary?: unknown; interrupt_before?: unknown; interrupt_after?: unknown };
  };
  /**
   * Refuses what a run may not carry on a LangGraph server: settings the server keeps in the
   * thread's config for every later run (checkpoint_id, checkpoint_ns, checkpoint_map, user_id,
   * the LangSmith project and example a `langsmith_tracer` sets, which would trace an approver's
   * runs where the client chose; agent_id from anyone but the owner), a webhook (the server would
   * POST the run to any URL), a stateless run (eart's threads are kept), and, from anyone but the
   * owner, anything but an answer (nor one that sets its recursion limit, which could end the run
   * between the approved call and the answer to the customer).
   */
  const assertRunAllowed = (value: RunRequest, owner: boolean) => {
    const configurable = value.kwargs?.config?.configurable ?? {};
    const sticky = ["checkpoint_id", "checkpoint_ns", "checkpoint_map", "user_id", "langsmith_project", "langsmith_example_id", ...(owner ? [] : ["agent_id"])].filter((k) => Object.hasOwn(configurable, k));
    if (sticky.length > 0) throw new HTTPException(403, { message: `A run may not set ${sticky.join(", ")}: the server would keep it for every later run of the thread` });
    if (value.kwargs?.webhook !== undefined && value.kwargs?.webhook !== null) throw new HTTPException(403, { message: "Runs take no webhook here" });
    if (value.kwargs?.temporary === true) throw new HTTPException(403, { message: "Stateless runs are closed: start a thread" });
    const command = value.kwargs?.command;
    if (owner) {
      // The graph refuses a Command that writes or jumps (after the server marked the run's thread
      // as running it: refused there, the thread would be left `error`, out of the reviewers' search).
      if (command && commandWrites(command).length > 0) throw new HTTPException(403, { message: `state_write_refused: ${COMMAND_WRITE_REFUSED}` });
      // Input adds the user's own messages only (an AI or tool message would read as the agent's words to the thread's reviewers).
      try {
        clientMessageIds(value.kwargs?.input, "input");
      } catch (error) {
        if (error instanceof StateTamperError) throw new HTTPException(403, { message: `${error.code}: ${error.message}` });
        throw error;
      }
      return;
    }
    const answerOnly = command !== null && command !== undefined && command.resume !== undefined && command.update === undefined && command.goto === undefined && value.kwargs?.input === undefined;
    if (!answerOnly) throw new HTTPException(403, { message: "Only the thread's owner may send it input or continue it: an approver answers (command.resume)" });
    if (typeof value.after_seconds === "number" && value.after_seconds > 0) throw new HTTPException(403, { message: "An answer is not delayed" });
    if (value.kwargs?.interrupt_before !== undefined || value.kwargs?.interrupt_after !== undefined) throw new HTTPException(403, { message: "An answer does not set breakpoints" });
    if (value.kwargs?.config && Object.hasOwn(value.kwargs.config, "recursion_limit")) throw new HTTPException(403, { message: "An answer does not set the run's recursion limit" });
  };
  /**
   * What the run's configuration carries of this request: the user, with a proof for this run
   * only (the thread's `config` keeps it, for the thread's readers to see), and the headers
   * `runHeaders` lists.
   */
  const stamp = (value: RunRequest, user: EartUser) => {
    // The server keeps the run's request whole for the thread's readers: kept redacted, as the thread holds it.
    redactRunRequest(value, user.identity);
    const runId = value.run_id;
    if (typeof runId !== "string" || runId === "") throw new HTTPException(403, { message: "A run must have an id" });
    const kwargs = (value.kwargs ??= {});
    const config = (kwargs.config ??= {});
    const configurable = (config.configurable ??= {});
    for (const key of Object.keys(configurable)) {
      const name = key.toLowerCase();
      if ((name.startsWith("x-") || name === "user-agent") && !runHeaders.has(name)) delete configurable[key];
    }
    configurable.langgraph_auth_user = { ...user, eart_proof: proofFor(user.identity, runId) };
  };
  /**
   * Refuses, before the server creates it, a run the graph would refuse in a way that takes the
   * request out of the reviewers' search (the server marks a failed run's thread `error`, and a run
   * on another graph rewrites its `graph_id`) or sticks (the server keeps a run's `agent_id` for
   * every later run): an agent the graph does not act as, a run on a graph of the other kind or of
   * another agent, new input or a continue on a thread that waits for a human. What the thread holds is said only to whoever may run
   * it (its answerer, or the user it was bound for): anyone else is answered not found by the server.
   */
  const refuseBeforeRun = async (user: EartUser, run: RunRequest, answerer: boolean) => {
    const threadId = run.thread_id === undefined || run.thread_id === null ? undefined : String(run.thread_id);
    const input = run.kwargs?.input;
    const command = run.kwargs?.command === undefined || run.kwargs?.command === null ? undefined : run.kwargs.command;
    const newInput = input !== undefined && input !== null && command === undefined;
    const continues = (input === undefined || input === null) && command === undefined;
    const refusal = await refusalBeforeRun(threadId, run.assistant_id, { caller: user.identity, answerer, newInput, continues, agentId: run.kwargs?.config?.configurable?.agent_id });
    // The body a run's error has (`{ error, message }`, the code leading the message): parseServerError reads both.
    if (refusal) throw new HTTPException(409, { message: JSON.stringify({ error: refusal.name, message: `${refusal.code}: ${refusal.message}` }), headers: { "content-type": "application/json" } });
  };
  /** Sets the owner in the metadata object the server keeps (in place: a thread copy reads the same object). */
  const own = (value: { metadata?: Record<string, unknown> | null }, user: EartUser) => {
    if (value.metadata && typeof value.metadata === "object") value.metadata.owner = user.identity;
    else value.metadata = { owner: user.identity };
  };

  return new Auth()
    .authenticate(async (request: Request) => {
      // LangGraph's protocol v2 thread endpoints keep the first caller's login for every later
      // caller of the thread, /internal is the server's maintenance, and a run's stream names no
      // thread to check: closed to every client, in every form of the path (server/paths.ts).
      if (closedPath(request.url)) {
        throw new HTTPException(403, { message: "Not served here" });
      }
      const header = request.headers.get("authorization") ?? "";
      const match = /^Bearer\s+(\S+)$/i.exec(header.trim());
      if (!match) throw new HTTPException(401, { message: "Missing bearer token" });
      const token = match[1]!;
      const userId = options.verifyToken ? await options.verifyToken(token, request) : lookup(table, token);
      if (userId === undefined) throw new HTTPException(401, { message: "Unknown or expired token" });
      const user = known(userId);
      if (!user) throw new HTTPException(403, { message: `The token names no user of the identities` });
      // The server streams and joins a run by its id once the thread in the path may be read: the
      // run must be that thread's (asked of the server as the caller, before it is read).
      for (const read of request.method === "GET" || request.method === "HEAD" ? runReadsOf(request.url) : []) {
        if (!(await runOfThread(read.threadId, read.runId, request.headers.get("authorization") ?? undefined))) throw new HTTPException(404, { message: "Run not found" });
      }
      return { identity: userId, display_name: user.name ?? userId, permissions: [...user.roles], is_authenticated: true };
    })
    .on("threads:create", ({ user, value }) => {
      // A copy of a thread carries its owner: only the owner copies it (an answerer may read a
      // thread, not make one in its owner's account, nor take its content into one of their own).
      const claimed = (value as { metadata?: Record<string, unknown> | null }).metadata?.owner;
      if (claimed !== undefined && claimed !== user.identity) throw new HTTPException(403, { message: "A thread is created for its caller: another user's thread is not copied, nor named as owner" });
      // The creator owns the thread; what the metadata carries is kept redacted (its answerers read it).
      redactThreadMetadata(value as { metadata?: Record<string, unknown> | null });
      own(value as { metadata?: Record<string, unknown> }, user);
      return ownerOnly(user);
    })
    .on("threads:create_run", async ({ user, value }) => {
      const run = value as RunRequest;
      if (run.thread_id === undefined || run.thread_id === null) {
        assertRunAllowed(run, true);
        await refuseBeforeRun(user, run, false);
        own(run, user);
        stamp(run, user);
        return ownerOnly(user);
      }
      // A run that may create the thread makes the caller its owner, whatever the client wrote.
      if (run.metadata && typeof run.metadata === "object") delete run.metadata.owner;
      // An approver answers a thread that waits for their role; the owner runs their own.
      if (await mayAnswer(user, run.thread_id)) {
        assertRunAllowed(run, false);
        await refuseBeforeRun(user, run, true);
        stamp(run, user);
        return ANYONE;
      }
      assertRunAllowed(run, true);
      await refuseBeforeRun(user, run, false);
      own(run, user);
      stamp(run, user);
      return ownerOnly(user);
    })
    .on("threads:read", async ({ user, value }) => {
      const threadId = (value as { thread_id?: unknown }).thread_id;
      // A read that names no thread (a run's stream by run id alone) cannot be checked: refused.
      if (typeof threadId !== "string" || threadId === "") throw new HTTPException(403, { message: "A read must name its thread" });
      return (await mayAnswer(user, threadId)) ? ANYONE : ownerOnly(user);
    })
    .on("threads:search", async ({ user, value }) => {
      // The runs of one thread are listed to whoever may read the thread.
      const threadId = (value as { thread_id?: unknown }).thread_id;
      if (threadId !== undefined) return (await mayAnswer(user, threadId)) ? ANYONE : ownerOnly(user);
      // A reviewer searches past their own threads only through eart's HTTP middleware, which drops
      // from the answer the threads that do not wait for them (filters match metadata only), then
      // pages and counts it; and by metadata alone: a filter on values would count (/threads/count
      // is not narrowed) or find threads they may not open.
      const narrowed = narrowedSearches().getStore();
      if (value.status !== "interrupted" || narrowed === undefined || value.values !== undefined) return ownerOnly(user);
      // The interrupted threads of ONE graph whose human tasks their roles answer (the one asked
      // for in metadata.graph_id, or their only one).
      const graphs = reviewerRoles === undefined ? (servedUser(user.identity)?.answersIn ?? []) : rolesOf(user).some((r) => reviewerRoles.has(r)) ? (servedUser(user.identity)?.answersIn ?? []) : [];
      const asked = (value.metadata as Record<string, unknown> | undefined)?.graph_id;
      const graph = typeof asked === "string" ? (graphs.includes(asked) ? asked : undefined) : graphs.length === 1 ? graphs[0] : undefined;
      if (graph === undefined) return ownerOnly(user);
      narrowed.reviewer = user.identity;
      return { graph_id: graph };
    })
    .on("threads:update", ({ user, value }) => {
      // metadata.owner is the handler's, and graph_id the server's (the graph whose reviewers
      // search for the thread), never the client's.
      const metadata = (value as { metadata?: Record<string, unknown> | null }).metadata;
      if (metadata && typeof metadata === "object") for (const key of ["owner", "graph_id", "assistant_id"]) delete metadata[key];
      redactThreadMetadata(value as { metadata?: Record<string, unknown> | null });
      return ownerOnly(user);
    })
    .on("threads:delete", ({ user, value }) => {
      // Deleting a run deletes the checkpoints it wrote: the thread would go back to before an
      // approver's answer, or to before the request that waits for one. A thread is deleted whole.
      if ((value as { run_id?: unknown }).run_id !== undefined) throw new HTTPException(403, { message: "A run is not deleted: the checkpoints it wrote are the thread's history (delete the thread)" });
      return ownerOnly(user);
    })
    .on("assistants:read", () => true)
    .on("assistants:search", () => true)
    .on("*", () => false);
}
