/**
 * What the `eart` command line prints, and how it prints errors: thread content made printable,
 * aligned tables, colours on a terminal only, and one error shape for `--json`.
 */
import { EartError, isEartError } from "eart";

/** A mistake in the command line itself (exit code 2, the usage text follows the message). */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/**
 * A failure the command line reports with a code of its own (exit code 1): the server answered
 * with an HTTP error, a remote run failed, an answer was refused. `code` is the one `--json`
 * prints; eart's own errors keep eart's codes.
 */
export class CliError extends Error {
  override readonly name = "CliError";
  constructor(
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

const tty = process.stdout.isTTY === true && !process.env.NO_COLOR;
const paint = (code: number) => (text: string) => (tty ? `\u001b[${code}m${text}\u001b[0m` : text);
export const bold = paint(1);
export const dim = paint(2);
export const red = paint(31);
export const green = paint(32);
export const yellow = paint(33);

/**
 * Characters a terminal acts on or that hide text: C0 and C1 controls, DEL, line and paragraph
 * separators, format characters (zero-width, bidi overrides and isolates, tags), lone surrogates
 * and invisible fillers. Thread content (a customer's message, a thread id, an approver's note)
 * holds whatever its writer chose, so nothing of it reaches the terminal raw: an escape sequence
 * or a line break would let it draw rows of its own.
 */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\u{e0100}-\u{e01ef}]/gu;
/** The same, but C0: JSON.stringify escapes those in strings, and its indentation is made of them. */
const UNPRINTABLE_IN_JSON = /[\u007f-\u009f\p{Cf}\p{Zl}\p{Zp}\p{Cs}\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\u{e0100}-\u{e01ef}]/gu;
const NAMED_ESCAPES: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
const hex = (n: number, width: number) => n.toString(16).padStart(width, "0");

/** Text as the terminal may show it: every unprintable character written visibly (`\x1b`, `\n`, `\u202e`). */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => {
    const named = NAMED_ESCAPES[c];
    if (named) return named;
    const cp = c.codePointAt(0)!;
    return cp < 0x100 ? `\\x${hex(cp, 2)}` : cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${hex(cp, 4)}`;
  });
}

/**
 * JSON text with the unprintable characters JSON.stringify leaves raw (DEL, C1, U+2028/2029,
 * bidi and zero-width characters…) written as `\uXXXX` escapes too: the same JSON value, safe on
 * a terminal. They can only occur inside strings, where the escape means the same character.
 */
export function jsonText(value: unknown, indent?: number): string {
  return (JSON.stringify(value, null, indent) ?? "null").replace(UNPRINTABLE_IN_JSON, (c) => {
    let out = "";
    for (let i = 0; i < c.length; i++) out += `\\u${hex(c.charCodeAt(i), 4)}`;
    return out;
  });
}

/** A table cell: thread content (escaped when printed), or the command line's own coloured status. */
export type Cell = string | { text: string; paint: (text: string) => string };

/** Columns aligned to their widest cell. Every cell is escaped ({@link printable}) before it is measured or painted. */
export function table(header: string[], rows: Cell[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === "string" ? { text: printable(c), paint: (t: string) => t } : { text: printable(c.text), paint: c.paint })));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]?.text.length ?? 0)));
  const line = (row: { text: string; paint: (t: string) => string }[]) =>
    row.map((c, i) => c.paint(i === row.length - 1 ? c.text : c.text + " ".repeat(Math.max(0, widths[i]! - c.text.length)))).join("  ");
  return [bold(line(header.map((h) => ({ text: h, paint: (t: string) => t })))), ...cells.map(line)].join("\n");
}

/** A value in at most `max` characters (JSON for anything but a string). */
export const short = (value: unknown, max = 60): string => {
  const text = typeof value === "string" ? value : (JSON.stringify(value) ?? String(value));
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
};

/** How the command line answers: a human rendering, or with `--json` the machine-readable value. */
export interface Output {
  json: boolean;
  print(human: () => string, machine: unknown): void;
}

/** Prints to stdout, human output escaped where it is composed (table cells, printable()), JSON by jsonText. */
export function output(json: boolean): Output {
  return { json, print: (human, machine) => console.log(json ? jsonText(machine, 2) : human()) };
}

/** The `--json` form of an error: `{ "error": { "code", "message", "details"? } }`. */
export interface ErrorReport {
  error: { code: string; message: string; details?: unknown };
}

/** What an error is, as the command line reports it, and its exit code (2 usage, 1 the rest). */
export function reportOf(error: unknown): { report: ErrorReport; exitCode: 1 | 2; kind: "usage" | "refused" | "failed" | "internal" } {
  const parseArgsError = (error as { code?: unknown })?.code;
  if (error instanceof UsageError || (typeof parseArgsError === "string" && parseArgsError.startsWith("ERR_PARSE_ARGS_"))) {
    return { report: { error: { code: "usage", message: (error as Error).message } }, exitCode: 2, kind: "usage" };
  }
  if (error instanceof CliError) {
    return { report: { error: { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) } }, exitCode: 1, kind: "failed" };
  }
  if (error instanceof EartError || isEartError(error)) {
    const e = error as EartError;
    const details = Object.keys(e.details ?? {}).length > 0 ? { details: e.details } : {};
    // Misconfiguration and failing stores are failures; the rest is input eart refused.
    const failed = e.code === "config_invalid" || e.code.startsWith("store_") || e.code === "audit_store_failure";
    return { report: { error: { code: e.code, message: e.message, ...details } }, exitCode: 1, kind: failed ? "failed" : "refused" };
  }
  return { report: { error: { code: "internal", message: (error as Error)?.message ?? String(error) } }, exitCode: 1, kind: "internal" };
}

/**
 * Reports an error and returns the exit code. With `--json`, the error object goes to stdout (the
 * one JSON document a run prints, success or not); without, a line on stderr, thread content in
 * it escaped.
 */
export function reportError(error: unknown, json: boolean, usage: string): 1 | 2 {
  const { report, exitCode, kind } = reportOf(error);
  if (json) {
    console.log(jsonText(report, 2));
    return exitCode;
  }
  const { code, message } = report.error;
  if (kind === "usage") console.error(`eart: ${printable(message)}\n${usage}`);
  else if (kind === "refused") console.error(red(`eart: refused [${code}]: ${printable(message)}`));
  else if (kind === "failed") console.error(red(`eart: failed [${code}]: ${printable(message)}`));
  // A stack keeps its line breaks; what a message quotes from a thread is escaped.
  else console.error(red(`eart: ${((error as Error)?.stack ?? String(error)).split("\n").map(printable).join("\n")}`));
  return exitCode;
}
