import { randomUUID } from "node:crypto";
import { closeSync, fdatasyncSync, fstatSync, linkSync, openSync, readFileSync, readSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { z } from "zod";
import {
  AuditSigningKeyOption,
  continuesChain,
  groupByThread,
  markAppended,
  sealEventsWithJson,
  toInputList,
  verifyChain,
  type AuditEvent,
  type AuditEventInput,
  type AuditLog,
  type AuditVerification,
  type AuditVerifyOptions,
  type ChainHead,
} from "./log.js";
import { headSigner, type HeadSigner, type SignedChainHead } from "./signing.js";
import { globalHeadSigner, nextGlobalEntry, verifyGlobalLog, type GlobalEntry, type GlobalHead, type SignedGlobalHead } from "./global.js";
import type { GlobalLogSnapshot } from "./log.js";
import { AuditStoreError, EartError } from "../errors.js";
import { parseOptions } from "../internal/options.js";
import { holderLiveness, processInstance, type LockHolder } from "../threads/lock.js";

const JsonlAuditLogOptionsSchema = z
  .object({
    /** The events file; the heads go to `<path>.heads` and the lock to `<path>.lock`, beside it. */
    path: z.string().min(1),
    /** An Ed25519 private key (KeyObject or PKCS#8 PEM): each commit signs the heads it records. */
    signingKey: AuditSigningKeyOption.optional(),
    /** `fdatasync` both files on every append, so a power loss does not lose acknowledged events (default false). */
    fsync: z.boolean().default(false),
    /** How long an append or read waits for the lock before it fails with `AuditStoreError` (default 30 s). */
    lockTimeoutMs: z.number().int().positive().default(30_000),
    /**
     * A lock file whose holder cannot be checked (unreadable, or written on another host) is
     * broken once it is this old (default 10 s). A lock whose holder is a live process on this
     * host is never broken; one whose process has exited is broken at once.
     */
    staleLockMs: z.number().int().positive().default(10_000),
  })
  .strict();

/** Options of {@link JsonlAuditLog}. */
export type JsonlAuditLogOptions = z.input<typeof JsonlAuditLogOptionsSchema>;

/** A head as recorded in a commit line: `{ threadId, seq, hash }`, or a signed head. */
type HeadRecord = { threadId: string; seq: number; hash: string } | SignedChainHead;

/**
 * One line of the heads file: the events file's length after an append, the heads it set, and its
 * entry in the global log (`g`, whose heads are these heads; signed as `gs` with a signing key).
 */
interface CommitLine {
  v: 1;
  end: number;
  heads: HeadRecord[];
  g?: { gseq: number; prevHash: string; hash: string };
  gs?: SignedGlobalHead;
}

const NEWLINE = 0x0a;

/**
 * Audit log in one append-only JSONL file: one sealed event per line, exactly as
 * {@link AuditEventSchema} describes it, so `jq` or any exporter can read it.
 *
 * Beside it, `<path>.heads` is the commit log: every append adds one line
 * `{"v":1,"end":…,"heads":[…]}` with the events file's length after the append and the new head of
 * each thread it touched (signed, with a `signingKey`). An append is committed once that line is
 * written; `verify` checks each thread's chain against its last recorded head, so a deleted last
 * event is detected.
 *
 * Several processes on one machine may append to the same file: appends and reads take an
 * exclusive lock file (`<path>.lock`, created with O_EXCL) held only for the synchronous part of
 * one append (re-read the new commit lines, seal, two `write` calls on O_APPEND descriptors), so
 * each thread's chain continues from its latest head whichever process wrote it. Not for network
 * file systems or several machines: use {@link PostgresAuditLog} there.
 *
 * What `verify` detects: a changed event (hash), a deleted or inserted event (sequence), a
 * reordered one (previous hash), events after the last recorded head, and a deleted last event
 * (the head). What it does not: the events file and the heads file both cut back to an earlier
 * commit (a rollback; pass `knownHead` to `verify` to catch it), and, without signing, a chain
 * and heads rewritten consistently by someone who can write both files. With a `signingKey`, a
 * verifier holding the public key detects that rewrite too.
 *
 * Crashes: a process killed between the two writes of an append leaves events after the last
 * commit. Without signing, the next append checks they continue the recorded chains and commits
 * them; with signing, or if they do not continue the chains, appends are refused
 * (`AuditStoreError`) until someone looks: such bytes are never signed unseen.
 * @example
 * ```ts
 * const auditLog = new JsonlAuditLog({ path: ".eart/audit.jsonl" });
 * await auditLog.append({ threadId: "t1", type: "run.started", data: { input: "refund 1042" } });
 * await auditLog.verify("t1"); // { ok: true, ... }
 * auditLog.close();
 * ```
 */
export class JsonlAuditLog implements AuditLog {
  readonly path: string;
  readonly headsPath: string;
  readonly #lock: FileLock;
  readonly #signer: HeadSigner | undefined;
  readonly #globalSigner: { sign(head: GlobalHead): SignedGlobalHead } | undefined;
  readonly #fsync: boolean;
  /** The global log's last entry, as this process last read the heads file. */
  #global: GlobalHead | null = null;
  #eventsFd: number | undefined;
  #headsFd: number | undefined;
  // What this process has read of the heads file: each thread's last recorded head, the events
  // length of the last commit, and how far it has read (complete lines only).
  readonly #heads = new Map<string, HeadRecord>();
  #committedEnd = 0;
  #headsOffset = 0;

  constructor(options: JsonlAuditLogOptions) {
    const parsed = parseOptions(JsonlAuditLogOptionsSchema, options);
    this.path = parsed.path;
    this.headsPath = `${parsed.path}.heads`;
    this.#signer = parsed.signingKey === undefined ? undefined : headSigner(parsed.signingKey);
    this.#globalSigner = parsed.signingKey === undefined ? undefined : globalHeadSigner(parsed.signingKey);
    this.#fsync = parsed.fsync;
    this.#lock = new FileLock(`${parsed.path}.lock`, parsed.lockTimeoutMs, parsed.staleLockMs);
    try {
      this.#eventsFd = openSync(this.path, "a+");
      this.#headsFd = openSync(this.headsPath, "a+");
    } catch (error) {
      this.close();
      throw new AuditStoreError(`Cannot open the JSONL audit log ${this.path}: ${(error as Error).message}`, { cause: error });
    }
  }

  async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
    const groups = groupByThread(toInputList(events));
    if (groups.size === 0) return [];
    return this.#locked("append to", () => this.#appendLocked(groups));
  }

  async read(threadId: string): Promise<AuditEvent[]> {
    const { eventsEnd } = await this.#locked("read", () => this.#snapshot());
    return this.#guard("read", () => this.#eventsOf(threadId, eventsEnd) as AuditEvent[]);
  }

  async verify(threadId: string, options: AuditVerifyOptions = {}): Promise<AuditVerification> {
    const { eventsEnd, headsEnd } = await this.#locked("verify", () => this.#snapshot());
    // Everything from the files as they are now, not from what this process remembers: verify
    // must say the same in a fresh process.
    const [events, recorded] = this.#guard("verify", () => [this.#eventsOf(threadId, eventsEnd), recordedHeads(this.#fd("heads"), headsEnd)] as const);
    const record = recorded.heads.get(threadId);
    // The commit lines are the global log: checked whole (they were read whole anyway).
    const global = verifyGlobalLog(recorded.global, { recorded: recorded.global.length > 0 ? recorded.global.at(-1)! : null });
    const problems = [...recorded.problems, ...global.problems.map((p) => p.detail)];
    const logged = global.latest.get(threadId);
    return verifyChain(threadId, events, record ? { seq: record.seq, hash: record.hash } : null, {
      ...options,
      publicKey: options.publicKey ?? this.#signer?.publicKey,
      signedHead: record && "signature" in record ? record : undefined,
      ...(problems.length > 0 ? { globalProblem: problems[0] } : {}),
      globalHead: logged ? { seq: logged.seq, hash: logged.hash } : null,
    });
  }

  async globalLog(): Promise<GlobalLogSnapshot> {
    const { headsEnd } = await this.#locked("read the global log of", () => this.#snapshot());
    return this.#guard("read the global log of", () => {
      const recorded = recordedHeads(this.#fd("heads"), headsEnd);
      const last = recorded.global.at(-1);
      return {
        entries: recorded.global,
        // The file's own statement of its end is its last commit line.
        recorded: last ? { gseq: last.gseq, hash: last.hash } : null,
        ...(recorded.signedGlobal ? { signedHead: recorded.signedGlobal } : {}),
        ...(this.#signer ? { publicKey: this.#signer.publicKey } : {}),
      };
    });
  }

  async globalHead(): Promise<{ head: GlobalHead | null; signed?: SignedGlobalHead }> {
    const { signedHead, recorded } = await this.globalLog();
    return { head: recorded, ...(signedHead ? { signed: signedHead } : {}) };
  }

  async listThreads(): Promise<string[]> {
    const { eventsEnd } = await this.#locked("list threads of", () => this.#snapshot());
    return this.#guard("list threads of", () => {
      const threads = new Set<string>();
      scanLines(this.#fd("events"), 0, eventsEnd, (line) => {
        const threadId = (parseLine(line) as { threadId?: unknown } | undefined)?.threadId;
        if (typeof threadId === "string") threads.add(threadId);
      });
      return [...threads].sort();
    });
  }

  /** The thread's last recorded head when it is signed (written by a log given a `signingKey`). */
  async signedHead(threadId: string): Promise<SignedChainHead | undefined> {
    const { headsEnd } = await this.#locked("read the heads of", () => this.#snapshot());
    const record = this.#guard("read the heads of", () => recordedHeads(this.#fd("heads"), headsEnd).heads.get(threadId));
    return record && "signature" in record ? { ...record } : undefined;
  }

  /** Closes both files. */
  close(): void {
    for (const fd of [this.#eventsFd, this.#headsFd]) {
      if (fd !== undefined) closeSync(fd);
    }
    this.#eventsFd = this.#headsFd = undefined;
  }

  /** Runs `critical` (synchronous) holding the lock; store failures become {@link AuditStoreError}. */
  async #locked<T>(what: string, critical: () => T): Promise<T> {
    this.#fd("events");
    try {
      return await this.#lock.run(critical);
    } catch (error) {
      throw this.#storeError(what, error);
    }
  }

  #guard<T>(what: string, run: () => T): T {
    try {
      return run();
    } catch (error) {
      throw this.#storeError(what, error);
    }
  }

  #storeError(what: string, error: unknown): EartError {
    if (error instanceof EartError) return error;
    return new AuditStoreError(`Cannot ${what} the JSONL audit log ${this.path}: ${(error as Error).message}`, { cause: error });
  }

  #fd(which: "events" | "heads"): number {
    const fd = which === "events" ? this.#eventsFd : this.#headsFd;
    if (fd === undefined) throw new AuditStoreError(`The JSONL audit log ${this.path} is closed`);
    return fd;
  }

  /** Lengths of both files at a moment no append is half done (the caller holds the lock). */
  #snapshot(): { eventsEnd: number; headsEnd: number } {
    return { eventsEnd: fstatSync(this.#fd("events")).size, headsEnd: fstatSync(this.#fd("heads")).size };
  }

  /** The parsed lines of one thread, in file order (lines that do not parse cannot be attributed, and are left out). */
  #eventsOf(threadId: string, end: number): unknown[] {
    const needle = JSON.stringify(threadId);
    const events: unknown[] = [];
    scanLines(this.#fd("events"), 0, end, (line) => {
      // eart writes every line canonical (no escape a thread id does not need): a line that names
      // the thread another way (`"\u0072efund-…"`, which any JSON reader takes for it) is read too.
      if (!line.includes(needle) && !line.includes("\\")) return;
      const parsed = parseLine(line) as { threadId?: unknown } | undefined;
      if (parsed?.threadId === threadId) events.push(parsed);
    });
    return events;
  }

  /** Reads commit lines written since this process last looked (the caller holds the lock). */
  #readNewCommits(): { fragment: boolean } {
    const fd = this.#fd("heads");
    const size = fstatSync(fd).size;
    if (size < this.#headsOffset) {
      // The heads file was cut: what this process remembers no longer describes it.
      this.#heads.clear();
      this.#committedEnd = 0;
      this.#headsOffset = 0;
      this.#global = null;
    }
    if (size === this.#headsOffset) return { fragment: false };
    // A last line without its newline is a commit cut short (power loss): it never counted.
    this.#headsOffset = scanLines(fd, this.#headsOffset, size, (line, complete) => {
      if (complete) applyCommit(line, this.#heads, (end) => (this.#committedEnd = end), (g) => (this.#global = g));
    });
    return { fragment: this.#headsOffset < size };
  }

  #appendLocked(groups: Map<string, AuditEventInput[]>): AuditEvent[] {
    let { fragment } = this.#readNewCommits();
    const eventsFd = this.#fd("events");
    const size = fstatSync(eventsFd).size;
    if (size !== this.#committedEnd) fragment = this.#recover(size, fragment);
    // A file written before the global log: one first entry records every thread's head as it stands.
    if (this.#global === null && this.#heads.size > 0) {
      this.#commit(this.#committedEnd, [...this.#heads.keys()].sort().map((t) => this.#headRecord(t, this.#chainHead(t)!)), fragment);
      fragment = false;
    }

    const out: AuditEvent[] = [];
    const lines: string[] = [];
    const heads: HeadRecord[] = [];
    for (const [threadId, inputs] of groups) {
      const sealed = sealEventsWithJson(this.#chainHead(threadId), inputs);
      for (const { event, dataJson } of sealed) {
        lines.push(eventLine(event, dataJson));
        out.push(event);
      }
      const last = sealed[sealed.length - 1]!.event;
      heads.push(this.#headRecord(threadId, last));
    }
    const eventBytes = Buffer.from(lines.join(""));
    writeAll(eventsFd, eventBytes);
    if (this.#fsync) fdatasyncSync(eventsFd);
    const entry = this.#commit(size + eventBytes.length, heads, fragment);
    markAppended(out, entry, entry.signed);
    return out;
  }

  #headRecord(threadId: string, head: ChainHead): HeadRecord {
    return this.#signer ? this.#signer.sign({ threadId, seq: head.seq, hash: head.hash }) : { threadId, seq: head.seq, hash: head.hash };
  }

  #chainHead(threadId: string): ChainHead | null {
    const record = this.#heads.get(threadId);
    if (!record) return null;
    if (!Number.isInteger(record.seq) || typeof record.hash !== "string") {
      throw new AuditStoreError(`The last recorded head of thread "${threadId}" in ${this.headsPath} is malformed; verify the thread`);
    }
    return { seq: record.seq, hash: record.hash };
  }

  /** Writes one commit line (the caller holds the lock); returns its global entry. */
  #commit(end: number, heads: HeadRecord[], fragment: boolean): GlobalHead & { signed?: SignedGlobalHead } {
    const fd = this.#fd("heads");
    const entry = nextGlobalEntry(this.#global, heads);
    const line: CommitLine = { v: 1, end, heads, g: { gseq: entry.gseq, prevHash: entry.prevHash, hash: entry.hash } };
    if (this.#globalSigner) line.gs = this.#globalSigner.sign(entry);
    // After a cut-short commit, start on a new line so it stays one unreadable line of its own.
    const bytes = Buffer.from(`${fragment ? "\n" : ""}${JSON.stringify(line)}\n`);
    const before = fstatSync(fd).size;
    writeAll(fd, bytes);
    if (this.#fsync) fdatasyncSync(fd);
    for (const head of heads) this.#heads.set(head.threadId, head);
    this.#committedEnd = end;
    this.#global = { gseq: entry.gseq, hash: entry.hash };
    return { gseq: entry.gseq, hash: entry.hash, ...(line.gs ? { signed: line.gs } : {}) };
    if (before === this.#headsOffset) this.#headsOffset = before + bytes.length;
  }

  /**
   * The events file is not the length its last commit recorded (the caller holds the lock).
   * Bytes after the commit that continue the recorded chains are committed, when unsigned;
   * anything else is refused.
   */
  #recover(size: number, fragment: boolean): boolean {
    const committed = this.#committedEnd;
    if (size < committed) {
      throw new AuditStoreError(
        `The events file ${this.path} is ${committed - size} bytes shorter than its last commit recorded (${committed}): it was cut or edited outside the log. ` +
          `Appends are refused until it is restored; verify its threads`,
      );
    }
    const refuse = (why: string): never => {
      throw new AuditStoreError(
        `The events file ${this.path} has ${size - committed} bytes after its last commit (byte ${committed}), left by an append that stopped between its two writes or by an edit, ` +
          `and ${why}. Appends are refused: inspect those bytes, then cut the file back to ${committed} bytes or restore it`,
      );
    };
    if (this.#signer) refuse("a signing log does not sign events it did not seal");
    const tail = readRange(this.#fd("events"), committed, size);
    if (tail[tail.length - 1] !== NEWLINE) refuse("they do not end with a newline");
    const byThread = new Map<string, unknown[]>();
    for (const line of tail.toString("utf8", 0, tail.length - 1).split("\n")) {
      const event = parseLine(line) as { threadId?: unknown } | undefined;
      if (typeof event?.threadId !== "string") refuse(`the line ${JSON.stringify(line.slice(0, 80))} is not an audit event`);
      const threadId = event!.threadId as string;
      const list = byThread.get(threadId);
      if (list) list.push(event);
      else byThread.set(threadId, [event]);
    }
    const heads: HeadRecord[] = [];
    for (const [threadId, events] of byThread) {
      const from = this.#chainHead(threadId);
      const broken = continuesChain(threadId, from, events);
      if (broken) refuse(`they do not continue the chain of thread "${threadId}" (${broken.reason} at seq ${broken.seq})`);
      const last = events[events.length - 1] as AuditEvent;
      heads.push(this.#headRecord(threadId, last));
    }
    this.#commit(size, heads, fragment);
    return false;
  }
}

/** One sealed event as a line: the envelope around the data's JSON text, with the newline. */
function eventLine(event: AuditEvent, dataJson: string): string {
  return (
    `{"schemaVersion":${event.schemaVersion},"id":${JSON.stringify(event.id)},"threadId":${JSON.stringify(event.threadId)},"seq":${event.seq},` +
    `"type":${JSON.stringify(event.type)},"at":${JSON.stringify(event.at)},"data":${dataJson},"prevHash":${JSON.stringify(event.prevHash)},"hash":${JSON.stringify(event.hash)}}\n`
  );
}

function parseLine(line: string): unknown {
  try {
    return JSON.parse(line) as unknown;
  } catch {
    return undefined;
  }
}

/** Applies one commit line to a heads map; returns the line when it is a commit. */
function applyCommit(line: string, heads: Map<string, HeadRecord>, onEnd: (end: number) => void, onGlobal: (head: GlobalHead) => void = () => {}): Partial<CommitLine> | undefined {
  const commit = parseLine(line) as Partial<CommitLine> | undefined;
  // A line that is not a commit changes nothing: verify then finds the heads it should have set missing.
  if (!commit || !Array.isArray(commit.heads) || !Number.isInteger(commit.end)) return undefined;
  for (const head of commit.heads as unknown[]) {
    const threadId = (head as { threadId?: unknown } | null)?.threadId;
    if (typeof threadId === "string") heads.set(threadId, head as HeadRecord);
  }
  onEnd(commit.end!);
  const g = commit.g;
  if (g && Number.isInteger(g.gseq) && typeof g.hash === "string") onGlobal({ gseq: g.gseq, hash: g.hash });
  return commit;
}

/**
 * Every thread's last recorded head in the first `end` bytes of a heads file (complete lines
 * only), and the global log its commit lines make up (from the first line that carries one: a file
 * written before the global log starts it later), with what is wrong with it.
 */
function recordedHeads(fd: number, end: number): { heads: Map<string, HeadRecord>; global: GlobalEntry[]; signedGlobal?: SignedGlobalHead; problems: string[] } {
  const heads = new Map<string, HeadRecord>();
  const global: GlobalEntry[] = [];
  const problems: string[] = [];
  let signedGlobal: SignedGlobalHead | undefined;
  scanLines(fd, 0, end, (line, complete) => {
    if (!complete) return;
    // A line that is not a commit (a commit cut short by a power loss) is no entry; had it been
    // one, the next entry's link shows the loss.
    const commit = applyCommit(line, heads, () => {});
    if (!commit) return;
    const g = commit.g;
    if (!g) {
      if (global.length > 0) problems.push("a commit after the global log began carries no global entry");
      return;
    }
    global.push({
      gseq: g.gseq,
      prevHash: g.prevHash,
      hash: g.hash,
      heads: (commit.heads ?? []).map((h) => ({ threadId: (h as HeadRecord).threadId, seq: (h as HeadRecord).seq, hash: (h as HeadRecord).hash })),
    });
    signedGlobal = commit.gs;
  });
  return { heads, global, ...(signedGlobal ? { signedGlobal } : {}), problems };
}

function readRange(fd: number, start: number, end: number): Buffer {
  const buffer = Buffer.allocUnsafe(Math.max(0, end - start));
  let done = 0;
  while (done < buffer.length) {
    const n = readSync(fd, buffer, done, buffer.length - done, start + done);
    if (n === 0) break;
    done += n;
  }
  return buffer.subarray(0, done);
}

function writeAll(fd: number, bytes: Buffer): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}

const CHUNK = 1 << 20;

/**
 * Calls `onLine` for each line of the bytes [start, end) of a file, the last one too when it has
 * no newline (`complete` false). Returns the offset just after the last newline.
 */
function scanLines(fd: number, start: number, end: number, onLine: (line: string, complete: boolean) => void): number {
  const chunk = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(1, end - start)));
  let carry: Buffer | undefined;
  let position = start;
  let consumed = start;
  while (position < end) {
    const n = readSync(fd, chunk, 0, Math.min(chunk.length, end - position), position);
    if (n === 0) break;
    position += n;
    const bytes = carry ? Buffer.concat([carry, chunk.subarray(0, n)]) : chunk.subarray(0, n);
    carry = undefined;
    let from = 0;
    for (let newline = bytes.indexOf(NEWLINE, from); newline !== -1; newline = bytes.indexOf(NEWLINE, from)) {
      onLine(bytes.toString("utf8", from, newline), true);
      consumed += newline + 1 - from;
      from = newline + 1;
    }
    // The chunk buffer is reused: keep a copy of the unfinished line.
    if (from < bytes.length) carry = Buffer.from(bytes.subarray(from));
  }
  if (carry) onLine(carry.toString("utf8"), false);
  return consumed;
}

/** What a lock file holds: its holder's process instance (pid, start time, pid namespace, host) and a token. */
type LockOwner = LockHolder & { token: string };

/**
 * An exclusive lock between processes of one machine: a file created with O_EXCL, removed on
 * release. The work done under it is synchronous, so it is held for microseconds; waiting is
 * asynchronous (the event loop keeps running). The file names its holder's process instance, not
 * only its pid: a lock left by a process that died is broken at once, also when a restarted
 * process has its pid again (a container's PID 1), and one whose holder cannot be checked from here
 * (another host or container) once it is `staleLockMs` old.
 */
class FileLock {
  readonly #path: string;
  readonly #timeoutMs: number;
  readonly #staleMs: number;

  constructor(path: string, timeoutMs: number, staleMs: number) {
    this.#path = path;
    this.#timeoutMs = timeoutMs;
    this.#staleMs = staleMs;
  }

  async run<T>(critical: () => T): Promise<T> {
    if (!this.#tryTake()) await this.#wait();
    try {
      return critical();
    } finally {
      this.#release();
    }
  }

  #release(): void {
    try {
      unlinkSync(this.#path);
    } catch (error) {
      // Already gone (broken as stale while this process was stopped): the work under it is done
      // and must not be reported as failed.
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }

  #tryTake(): boolean {
    let fd: number;
    try {
      fd = openSync(this.#path, "wx");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw error;
    }
    try {
      const { pid, host, instance, pidNamespace, started } = processInstance();
      const owner: LockOwner = { pid, host, instance, pidNamespace, started, token: randomUUID() };
      writeSync(fd, JSON.stringify(owner));
    } finally {
      closeSync(fd);
    }
    return true;
  }

  async #wait(): Promise<void> {
    const deadline = Date.now() + this.#timeoutMs;
    for (let attempt = 0; ; attempt++) {
      this.#breakIfStale();
      if (this.#tryTake()) return;
      if (Date.now() > deadline) {
        throw new AuditStoreError(`Timed out after ${this.#timeoutMs} ms waiting for the lock ${this.#path} (${this.#describeHolder()}); remove it if its process is gone`);
      }
      // Yield first (the holder is usually done within microseconds), then back off with jitter.
      await new Promise<void>((resolve) => (attempt < 4 ? setImmediate(resolve) : setTimeout(resolve, Math.min(2 ** (attempt - 4), 8) * (0.5 + Math.random()))));
    }
  }

  #describeHolder(): string {
    try {
      const owner = JSON.parse(readFileSync(this.#path, "utf8")) as LockOwner;
      return `held by pid ${owner.pid} on ${owner.host}${owner.instance ? ` (instance ${owner.instance})` : ""}`;
    } catch {
      return "holder unknown";
    }
  }

  /** Removes the lock file if its holder is gone (see `staleLockMs`). */
  #breakIfStale(): void {
    let content: string;
    let mtimeMs: number;
    try {
      content = readFileSync(this.#path, "utf8");
      mtimeMs = statSync(this.#path).mtimeMs;
    } catch {
      return; // released meanwhile
    }
    let owner: LockOwner | undefined;
    try {
      owner = JSON.parse(content) as LockOwner;
    } catch {
      owner = undefined;
    }
    // A holder with this process's pid but another start time, or written before this process
    // started, is an earlier process (a restarted container's PID 1): holderLiveness says so.
    const liveness = owner !== undefined && typeof owner.host === "string" && Number.isInteger(owner.pid) ? holderLiveness(owner, mtimeMs) : "unknown";
    const stale = liveness === "unknown" ? Date.now() - mtimeMs > this.#staleMs : liveness === "dead";
    if (!stale) return;
    // Move it aside, then make sure what was moved is the stale lock and not one taken since.
    const aside = `${this.#path}.${randomUUID()}.stale`;
    try {
      renameSync(this.#path, aside);
    } catch {
      return;
    }
    if (readFileSync(aside, "utf8") !== content) {
      try {
        linkSync(aside, this.#path);
      } catch {
        // Someone else holds it now too: nothing better to do than leave theirs.
      }
    }
    unlinkSync(aside);
  }
}
