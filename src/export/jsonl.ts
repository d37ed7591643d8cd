import { open, type FileHandle } from "node:fs/promises";
import type { Writable } from "node:stream";
import { z } from "zod";
import { EartConfigError } from "../errors.js";
import { parseOptions } from "../internal/options.js";
import { createBatchExporter, ExportQueueOptionsSchema, type AuditExporter } from "./core.js";
import { ExportRedactionOption, redactEvent, standardRedaction } from "./segments.js";

const JsonlExporterOptionsSchema = ExportQueueOptionsSchema.extend({
  /** The exporter's name in stats. Default `jsonl`. */
  name: z.string().min(1).default("jsonl"),
  /** A file to append to (created if missing; opened on the first write, closed at shutdown). */
  path: z.string().min(1).optional(),
  /** Or a stream to write to (left open at shutdown). */
  stream: z.custom<Writable>((v) => typeof (v as Writable)?.write === "function" && typeof (v as Writable)?.once === "function", "must be a Writable stream").optional(),
  /** Applied to every event; default `defineRedaction(STANDARD_REDACTIONS)`. `false` writes events as stored. */
  redaction: ExportRedactionOption.optional(),
}).strict();
export type JsonlExporterOptions = z.input<typeof JsonlExporterOptionsSchema>;

/** Writes to a stream, waiting for `drain` when it is full; rejects when `signal` aborts. */
function writeStream(stream: Writable, text: string, signal: AbortSignal): Promise<void> {
  return new Promise((done, fail) => {
    const onAbort = () => fail(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    const finish = (error?: Error | null) => {
      signal.removeEventListener("abort", onAbort);
      if (error) fail(error);
      else done();
    };
    let written = false;
    let drained = false;
    const ready = stream.write(text, (error) => {
      written = true;
      if (error) finish(error);
      else if (drained) finish();
    });
    if (ready) drained = true;
    else stream.once("drain", () => ((drained = true), written && finish()));
    if (drained && written) finish();
  });
}

/**
 * Appends one JSON line per audit event, for SIEM ingestion: the event as stored (`schemaVersion`,
 * `id`, `threadId`, `seq`, `type`, `at`, `data`, `prevHash`, `hash`) with `data` redacted, plus
 * `redacted`: the paths that were (`[]` when none), since the hash covers the stored data, not
 * the redacted one. Batched with the same queue as the other exporters.
 * @example
 * ```ts
 * const jsonl = createJsonlExporter({ path: "/var/log/eart/audit.jsonl" });
 * ```
 */
export function createJsonlExporter(options: JsonlExporterOptions): AuditExporter {
  const opts = parseOptions(JsonlExporterOptionsSchema, options);
  if ((opts.path === undefined) === (opts.stream === undefined)) throw new EartConfigError("path", "give either path or stream");
  const redaction = opts.redaction ?? standardRedaction();
  let file: Promise<FileHandle> | undefined;

  return createBatchExporter({
    name: opts.name,
    maxQueueSize: opts.maxQueueSize,
    maxBatchSize: opts.maxBatchSize,
    flushIntervalMs: opts.flushIntervalMs,
    exportTimeoutMs: opts.exportTimeoutMs,
    async send(events, { signal }) {
      let text = "";
      for (const event of events) text += `${JSON.stringify(redactEvent(event, redaction))}\n`;
      if (opts.stream) return writeStream(opts.stream, text, signal);
      file ??= open(opts.path!, "a");
      try {
        await (await file).appendFile(text, { signal } as { signal: AbortSignal });
      } catch (error) {
        // A handle that failed to open is opened again next time.
        if (!(await file.then(() => true, () => false))) file = undefined;
        throw error;
      }
    },
    async close() {
      if (!file) return;
      const handle = await file.catch(() => undefined);
      file = undefined;
      await handle?.close();
    },
  });
}
