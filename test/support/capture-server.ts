import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { gunzipSync } from "node:zlib";

/** One request as the server received it. */
export interface CapturedRequest {
  method: string;
  path: string;
  headers: IncomingMessage["headers"];
  body: Buffer;
  /** The body parsed as JSON, when it is JSON. */
  json: unknown;
}

/**
 * A local HTTP server on 127.0.0.1 that records every request. `answer: "ok"` replies 200 `{}`;
 * a number replies with that status; `"hang"` accepts the connection, reads the request and never
 * replies (a dead endpoint that still accepts connections).
 */
export interface CaptureServer {
  url: string;
  requests: CapturedRequest[];
  /** Requests received (including ones still waiting for an answer). */
  received(): number;
  /** Requests not answered whose connection is still open. */
  pending(): number;
  /** Resolves when `predicate` holds for the requests so far; rejects after `timeoutMs`. */
  waitFor(predicate: (requests: CapturedRequest[]) => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** Reads a request whole (gunzipped, its JSON parsed when it is JSON) and hands it to `done`. */
export function readCaptured(req: IncomingMessage, done: (captured: CapturedRequest) => void): void {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    let body = Buffer.concat(chunks);
    if (req.headers["content-encoding"] === "gzip") body = gunzipSync(body);
    let json: unknown;
    try {
      json = JSON.parse(body.toString("utf8"));
    } catch {
      json = undefined;
    }
    done({ method: req.method ?? "", path: req.url ?? "", headers: req.headers, body, json });
  });
}

export async function startCaptureServer(answer: "ok" | "hang" | number = "ok"): Promise<CaptureServer> {
  const requests: CapturedRequest[] = [];
  const sockets = new Set<Socket>();
  let received = 0;
  let pending = 0;
  const server: Server = createServer((req, res) => {
    received += 1;
    pending += 1;
    res.on("close", () => (pending -= 1));
    readCaptured(req, (captured) => {
      requests.push(captured);
      if (answer !== "hang") {
        res.writeHead(answer === "ok" ? 200 : answer, { "content-type": "application/json" });
        res.end("{}");
      }
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    received: () => received,
    pending: () => pending,
    async waitFor(predicate, timeoutMs = 10_000) {
      const until = Date.now() + timeoutMs;
      while (!predicate(requests)) {
        if (Date.now() > until) throw new Error(`capture server: condition not met within ${timeoutMs} ms (${requests.length} requests)`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };
}

/** A 127.0.0.1 port nothing listens on (connections are refused). */
export async function refusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((done) => server.close(() => done()));
  return port;
}

/** Every LangSmith run operation the capture server received: creates and updates, by id, merged in order. */
export function langSmithRuns(requests: CapturedRequest[]): Map<string, Record<string, any>> {
  const runs = new Map<string, Record<string, any>>();
  for (const r of requests) {
    if (r.path !== "/runs/batch") continue;
    const body = r.json as { post?: Record<string, any>[]; patch?: Record<string, any>[] };
    for (const op of [...(body.post ?? []), ...(body.patch ?? [])]) runs.set(op.id, { ...runs.get(op.id), ...op });
  }
  return runs;
}

/** How an exporter labels a thread whose id was redacted: the redacted text, "~", and 16 hex digits of a keyed digest of the raw id. */
export function redactedThreadLabel(redacted: string): RegExp {
  return new RegExp(`^${redacted.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}~[0-9a-f]{16}$`);
}
