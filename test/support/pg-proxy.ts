import { connect, createServer, type Server, type Socket } from "node:net";

/**
 * A TCP proxy to the PostgreSQL at `target` (a connection string) that can be frozen: from then on
 * nothing passes either way and neither side's close reaches the other (a partition, a failover
 * behind a virtual IP, a VM paused on the way). Its sockets stay open, so TCP keepalive sees nothing
 * wrong. `url` is `target` through the proxy; `close` destroys every socket and stops listening.
 * @example
 * ```ts
 * const proxy = await freezingProxy(PG_URL);
 * const lock = new PostgresThreadLock({ connectionString: proxy.url });
 * proxy.freeze();
 * ```
 */
export async function freezingProxy(target: string): Promise<{ url: string; port: number; freeze(): void; close(): Promise<void> }> {
  const upstreamUrl = new URL(target);
  const sockets: Socket[] = [];
  let frozen = false;
  const server: Server = createServer((client) => {
    const upstream = connect(Number(upstreamUrl.port || 5432), upstreamUrl.hostname);
    sockets.push(client, upstream);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      from.on("data", (chunk: Buffer) => {
        if (!frozen) to.write(chunk);
      });
      from.on("close", () => {
        if (!frozen) to.destroy();
      });
      from.on("error", () => {});
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const url = new URL(target);
  url.port = String(port);
  return {
    url: url.toString(),
    port,
    freeze: () => void (frozen = true),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
