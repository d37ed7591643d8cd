import { describe, expect, it } from "vitest";
import { closedPath, runReadsOf } from "../../server/paths.js";

/**
 * The paths eart's auth closes, in every form LangGraph server's router may read them: the auth
 * sees the URL as sent, the router reads it percent-decoded (a red-team pass emptied every thread
 * with `POST /%69nternal/truncate` while the auth compared the raw pathname).
 */
describe("closedPath", () => {
  const id = "0b5b0c3e-8f9a-4c1e-9d2a-1f2e3d4c5b6a";
  it("closes /internal and the protocol-v2 thread endpoints however they are written", () => {
    const closed = [
      "/internal",
      "/internal/truncate",
      "/%69nternal/truncate",
      "/%2569nternal/truncate",
      "/internal%2Ftruncate",
      "/INTERNAL/truncate",
      "//internal/truncate",
      "/x/../internal/truncate",
      "/internal/truncate?threads=true",
      `/threads/${id}/commands`,
      `/threads/${id}/command%73`,
      `/threads/${id}/%63ommands/`,
      `/%74hreads/${id}/commands`,
      `/threads/${id}/Commands`,
      `/threads//${id}/commands`,
      `/threads/${id}/stream/events`,
      `/threads/${id}/stream/event%73`,
      `/threads/${id}%2Fstream%2Fevents`,
    ];
    for (const path of closed) {
      expect(closedPath(path), path).toBe(true);
      expect(closedPath(`http://127.0.0.1:2024${path}`), path).toBe(true);
    }
  });

  it("leaves the endpoints eart's auth serves open", () => {
    for (const path of ["/threads", "/threads/search", `/threads/${id}`, `/threads/${id}/state`, `/threads/${id}/runs`, `/threads/${id}/runs/stream`, "/runs/wait", "/assistants/search", "/internals", "/info", `/threads/${id}/history`, "/%E0%A4%A/x"]) {
      expect(closedPath(`http://127.0.0.1:2024${path}`), path).toBe(false);
    }
  });

  it("finds the thread and run a stream or join reads, in every form of the path", () => {
    const run = "7d1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b";
    for (const path of [`/threads/${id}/runs/${run}/stream`, `/threads/${id}/runs/${run}/join`, `/threads/${id}/runs/${run}/strea%6D`, `//threads/${id}/runs/${run}/join/`, `/threads/${id}/runs/${run}/stream?cancel_on_disconnect=true`]) {
      expect(runReadsOf(`http://127.0.0.1:2024${path}`), path).toEqual([{ threadId: id, runId: run }]);
    }
    for (const path of [`/threads/${id}/runs/${run}`, `/threads/${id}/runs/${run}/cancel`, `/runs/${run}/stream`, `/threads/${id}/state`]) {
      expect(runReadsOf(`http://127.0.0.1:2024${path}`), path).toEqual([]);
    }
  });
});
