import { afterEach } from "vitest";
import { startCaptureServer, type CaptureServer } from "./capture-server.js";

/** Things to close after each test of the calling file, whatever happened (last opened, first closed). */
export const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

/** A capture server on 127.0.0.1, closed after the test. */
export async function server(answer: "ok" | "hang" | number = "ok"): Promise<CaptureServer> {
  const s = await startCaptureServer(answer);
  cleanups.push(() => s.close());
  return s;
}

/** An exporter (or anything with a bounded shutdown), shut down after the test. */
export function track<X extends { shutdown(o?: { timeoutMs?: number }): Promise<boolean> }>(x: X): X {
  cleanups.push(() => x.shutdown({ timeoutMs: 1_000 }));
  return x;
}
