import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SqliteAuditLog } from "eart/sqlite";

// The refund demo, built, in two real child processes, with the real ChatOpenAI client talking to
// an OpenAI-compatible stub on 127.0.0.1. Nothing leaves the machine.
const demo = resolve("dist/examples/refund/demo.js");

interface OpenAIToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}
interface OpenAIMessage {
  role: string;
  content: unknown;
  tool_calls?: OpenAIToolCall[];
  tool_call_id?: string;
}
interface ChatCompletionRequest {
  model: string;
  messages: OpenAIMessage[];
  tools?: { type: string; function: { name: string; description?: string; parameters: Record<string, unknown> } }[];
  stream?: boolean;
  [key: string]: unknown;
}
interface Recorded {
  /** Which demo step was running when the request arrived (set by the test between steps). */
  phase: string;
  method: string | undefined;
  url: string | undefined;
  headers: IncomingHttpHeaders;
  body: ChatCompletionRequest;
}

const FINAL_TEXT = "Stub: the refund of $740 for order 1042 has been issued.";
const LOOKUP_ID = "call_stub_lookup_1042";
const REFUND_ID = "call_stub_refund_1042";

const recorded: Recorded[] = [];
let phase = "idle";

function toolCall(id: string, name: string, args: Record<string, unknown>): OpenAIToolCall {
  return { id, type: "function", function: { name, arguments: JSON.stringify(args) } };
}

/**
 * The stub's "model": decides from the conversation it is sent, not from a counter, because the
 * two demo steps are two processes. Returns undefined for a conversation it has no answer for.
 */
function answer(messages: OpenAIMessage[]): { content: string | null; tool_calls?: OpenAIToolCall[] } | undefined {
  const last = messages[messages.length - 1];
  if (last?.role === "user") {
    return { content: null, tool_calls: [toolCall(LOOKUP_ID, "lookup_order", { orderId: "1042" })] };
  }
  if (last?.role === "tool") {
    const called = messages.flatMap((m) => (m.role === "assistant" ? (m.tool_calls ?? []) : [])).find((c) => c.id === last.tool_call_id);
    if (called?.function.name === "lookup_order") {
      return { content: null, tool_calls: [toolCall(REFUND_ID, "issue_refund", { orderId: "1042", amount: 740, reason: "customer request" })] };
    }
    if (called?.function.name === "issue_refund") return { content: FINAL_TEXT };
  }
  return undefined;
}

function startStub(): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const send = (status: number, payload: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(payload));
      };
      let body: ChatCompletionRequest;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as ChatCompletionRequest;
      } catch {
        send(400, { error: { message: "stub: body is not JSON", type: "invalid_request_error" } });
        return;
      }
      recorded.push({ phase, method: req.method, url: req.url, headers: req.headers, body });
      if (req.method !== "POST" || req.url !== "/v1/chat/completions") {
        send(404, { error: { message: `stub: no route ${req.method} ${req.url}`, type: "invalid_request_error" } });
        return;
      }
      if (body.stream) {
        // ChatOpenAI does not stream under a plain graph.invoke; a streamed request is a change
        // the test should notice, so it is refused rather than emulated.
        send(400, { error: { message: "stub: streaming is not supported", type: "invalid_request_error" } });
        return;
      }
      const message = answer(body.messages ?? []);
      if (!message) {
        send(400, { error: { message: "stub: no scripted answer for this conversation", type: "invalid_request_error" } });
        return;
      }
      send(200, {
        id: `chatcmpl-${randomUUID()}`,
        object: "chat.completion",
        created: Math.floor(Date.now() / 1000),
        model: body.model,
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: message.content, refusal: null, ...(message.tool_calls ? { tool_calls: message.tool_calls } : {}) },
            logprobs: null,
            finish_reason: message.tool_calls ? "tool_calls" : "stop",
          },
        ],
        usage: { prompt_tokens: 50, completion_tokens: 10, total_tokens: 60 },
      });
    });
  });
  return new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => ok(server));
  });
}

/** Runs one demo step asynchronously, so this process keeps serving the stub meanwhile. */
function run(env: NodeJS.ProcessEnv, step: string): Promise<{ status: number | null; out: string; err: string }> {
  return new Promise((ok, fail) => {
    const child = spawn(process.execPath, [demo, step], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
    const timer = setTimeout(() => child.kill("SIGKILL"), 45_000);
    child.once("error", (e) => {
      clearTimeout(timer);
      fail(e);
    });
    child.once("close", (status) => {
      clearTimeout(timer);
      ok({ status, out, err });
    });
  });
}

const refundRows = (file: string) => {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare(`SELECT order_id AS orderId, amount, reason, tool_call_id AS toolCallId FROM refunds`).all();
  } finally {
    db.close();
  }
};

let server: Server | undefined;
let dir: string | undefined;

beforeAll(() => {
  if (!existsSync(demo)) throw new Error(`${demo} is missing: run "npm run build" (npm test does) before these tests`);
});

afterAll(async () => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (!server) return;
  server.closeAllConnections();
  await new Promise<void>((ok) => server!.close(() => ok()));
});

describe("refund demo with ChatOpenAI against a local OpenAI-compatible stub", () => {
  let file: string;
  let first: Awaited<ReturnType<typeof run>>;
  let second: Awaited<ReturnType<typeof run>>;
  let rowsAfterFirst: unknown[];

  beforeAll(async () => {
    server = await startStub();
    const { port } = server.address() as AddressInfo;
    dir = mkdtempSync(join(tmpdir(), "eart-openai-"));
    file = join(dir, "demo.sqlite");
    const env: NodeJS.ProcessEnv = { ...process.env };
    // Only the stub: no org/project headers, tracing or proxy from the developer's environment.
    for (const k of Object.keys(env)) {
      if (/^(OPENAI_|LANGCHAIN_|LANGSMITH_)/.test(k) || /_proxy$/i.test(k)) delete env[k];
    }
    Object.assign(env, {
      EART_DEMO_FILE: file,
      OPENAI_API_KEY: "sk-test",
      OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`,
      NO_PROXY: "127.0.0.1,localhost",
      LANGCHAIN_TRACING_V2: "false",
      LANGSMITH_TRACING: "false",
    });

    phase = "request";
    first = await run(env, "request");
    rowsAfterFirst = refundRows(file);
    phase = "approve";
    second = await run(env, "approve");
    phase = "done";
  }, 120_000);

  const inPhase = (p: string) => recorded.filter((r) => r.phase === p);
  const bodies = () => recorded.map((r) => r.body);

  it("pauses in the first process on the model's issue_refund call, with no refund yet", () => {
    expect(first.err).toBe("");
    expect(first.status).toBe(0);
    expect(first.out).toContain("paused: waiting for approval");
    expect(first.out).toContain(`${REFUND_ID}  issue_refund {"orderId":"1042","amount":740,"reason":"customer request"}`);
    expect(first.out).toContain("approver roles: supervisor");
    expect(rowsAfterFirst).toEqual([]);
  });

  it("completes in the second process with the stub's answer, one refund row and a verified audit chain", async () => {
    expect(second.err).toBe("");
    expect(second.status).toBe(0);
    expect(second.out).toContain(`sam approves ${REFUND_ID}`);
    expect(second.out).toContain(`agent: ${FINAL_TEXT}`);
    expect(second.out).toMatch(/verify: ok, \d+ events/);
    expect(refundRows(file)).toEqual([{ orderId: "1042", amount: 740, reason: "customer request", toolCallId: REFUND_ID }]);
    const log = new SqliteAuditLog({ path: file });
    try {
      expect(await log.verify("refund-1042")).toMatchObject({ ok: true });
      const outputs = (await log.read("refund-1042")).filter((e) => e.type === "model.output").map((e) => e.data as { text: string; toolCalls: { id: string; name: string }[] });
      expect(outputs.map((o) => o.toolCalls.map((c) => `${c.id}:${c.name}`))).toEqual([[`${LOOKUP_ID}:lookup_order`], [`${REFUND_ID}:issue_refund`], []]);
      expect(outputs[2]?.text).toBe(FINAL_TEXT);
    } finally {
      log.close();
    }
  });

  it("calls the model twice before the pause and once after approval, never again in the first process", () => {
    expect(recorded.map((r) => r.phase)).toEqual(["request", "request", "approve"]);
    const lastOfFirst = inPhase("request").at(-1)!.body.messages;
    expect(lastOfFirst.at(-1)).toMatchObject({ role: "tool", tool_call_id: LOOKUP_ID });
    expect(JSON.stringify(inPhase("request").map((r) => r.body))).not.toContain(`"tool_call_id":"${REFUND_ID}"`);

    // The second process's first request carries the executed refund's result, which exists only
    // after sam's approval ran the tool.
    const afterApproval = inPhase("approve")[0]!.body.messages;
    const refundResult = afterApproval.at(-1)!;
    expect(refundResult).toMatchObject({ role: "tool", tool_call_id: REFUND_ID });
    expect(JSON.parse(String(refundResult.content))).toMatchObject({ orderId: "1042", amount: 740, status: "refunded" });
  });

  it("sends what a real OpenAI server expects: route, auth, model, non-streaming", () => {
    expect(recorded).toHaveLength(3);
    for (const r of recorded) {
      expect(r.method).toBe("POST");
      expect(r.url).toBe("/v1/chat/completions");
      expect(r.headers.authorization).toBe("Bearer sk-test");
      expect(r.headers["content-type"]).toMatch(/^application\/json/);
      expect(r.body.model).toBe("gpt-4o-mini");
      expect(r.body.temperature).toBe(0);
      expect(r.body.stream).toBe(false);
    }
  });

  it("sends the three refund tools as JSON-schema functions", () => {
    expect(bodies()).toHaveLength(3);
    for (const body of bodies()) {
      expect(body.tools?.map((t) => t.function.name)).toEqual(["lookup_order", "view_payment_details", "issue_refund"]);
      for (const t of body.tools!) {
        expect(t.type).toBe("function");
        expect(typeof t.function.description).toBe("string");
        expect(t.function.parameters).toMatchObject({ type: "object" });
      }
      const byName = Object.fromEntries(body.tools!.map((t) => [t.function.name, t.function]));
      expect(byName.lookup_order).toMatchObject({
        description: "Look up an order by id: customer, total, status.",
        parameters: { properties: { orderId: { type: "string", description: "The order id, e.g. 1042" } }, required: ["orderId"] },
      });
      expect(byName.issue_refund).toMatchObject({
        description: "Refund an amount in dollars for an order.",
        parameters: {
          properties: { orderId: { type: "string" }, amount: { type: "number", description: "Amount in dollars" }, reason: { type: "string" } },
          required: ["orderId", "amount"],
        },
      });
      expect(byName.issue_refund!.parameters.required).not.toContain("reason");
    }
  });

  it("sends the system prompt as a system message, then the conversation with tool calls echoed and tool results by id", () => {
    const [first1, first2, second1] = bodies();
    const system = { role: "system", content: "You are a customer-support agent. Look orders up before refunding them." };
    const user = { role: "user", content: "Hi, order 1042 arrived broken. Please refund $740." };
    expect(first1!.messages).toEqual([system, user]);

    expect(first2!.messages).toHaveLength(4);
    expect(first2!.messages.slice(0, 2)).toEqual([system, user]);
    expect(first2!.messages[2]).toMatchObject({ role: "assistant", tool_calls: [toolCall(LOOKUP_ID, "lookup_order", { orderId: "1042" })] });
    expect(first2!.messages[3]).toMatchObject({ role: "tool", tool_call_id: LOOKUP_ID });
    expect(JSON.parse(String(first2!.messages[3]!.content))).toEqual({ orderId: "1042", customer: "cara", total: 740, status: "delivered" });

    expect(second1!.messages).toHaveLength(6);
    expect(second1!.messages.slice(0, 4)).toEqual(first2!.messages);
    expect(second1!.messages[4]).toMatchObject({
      role: "assistant",
      tool_calls: [toolCall(REFUND_ID, "issue_refund", { orderId: "1042", amount: 740, reason: "customer request" })],
    });
    expect(second1!.messages[5]).toMatchObject({ role: "tool", tool_call_id: REFUND_ID });
  });
});
