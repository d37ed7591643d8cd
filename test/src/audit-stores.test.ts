import { spawn } from "node:child_process";
import { createHash, generateKeyPairSync, randomUUID } from "node:crypto";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import {
  AuditEventSchema,
  AuditStoreError,
  EartConfigError,
  GENESIS_HASH,
  generateAuditSigningKey,
  JsonlAuditLog,
  MemoryAuditLog,
  verifyChain,
  type AuditEvent,
  type AuditEventInput,
  type AuditLog,
} from "eart";
import { GLOBAL_GENESIS_HASH, globalEntryHash } from "../../src/audit/global.js";
import { sealEvents } from "../../src/audit/log.js";
import { canonicalJson } from "../../src/internal/canonical.js";
import { advisoryLockKey, PostgresAuditLog } from "eart/postgres";
import { SqliteAuditLog } from "eart/sqlite";
import { auditLogSpec, expectedAuditHash, type AuditTamperOp, type MakeAuditLogOptions } from "eart/testing";
import { startReadyChild } from "../support/children.js";

// A real PostgreSQL. No skip: without it the PostgreSQL cases fail, loudly.
const PG_URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
/** Every thread id this file writes to PostgreSQL starts with a spec prefix or this one. */
const RUN = `test-audit-${randomUUID()}`;

const dir = mkdtempSync(join(tmpdir(), "eart-audit-stores-"));
// A schema of this run's own: the store-wide checks (the global log over all threads) see only
// what this file wrote, and the tampering it does stays here.
const SCHEMA = `audit_${randomUUID().replace(/-/g, "")}`;
/** The same database, in this run's schema (for child processes, which take a connection string). */
const SCHEMA_URL = `${PG_URL}${PG_URL.includes("?") ? "&" : "?"}options=${encodeURIComponent(`-c search_path=${SCHEMA}`)}`;
const pools: pg.Pool[] = [];
const newPool = () => {
  const pool = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${SCHEMA}` });
  pools.push(pool);
  return pool;
};
const admin = newPool();
await admin.query(`CREATE SCHEMA ${SCHEMA}`);
afterAll(async () => {
  await admin.query(`DROP SCHEMA ${SCHEMA} CASCADE`).catch(() => {});
  await Promise.all(pools.map((p) => p.end()));
  rmSync(dir, { recursive: true, force: true });
});
const tempPath = (ext: string) => join(dir, `${randomUUID()}.${ext}`);
const ev = (threadId: string, type: AuditEventInput["type"], data: Record<string, unknown> = {}): AuditEventInput => ({ threadId, type, data });

// ---------------------------------------------------------------------------------------------
// The conformance suite, on every store

auditLogSpec("MemoryAuditLog", (o) => new MemoryAuditLog(o), { describe, it, expect }, { singleProcess: true });

/** Where each file-backed log lives, for its tamper hook and reopen. */
const locations = new WeakMap<AuditLog, string>();

auditLogSpec(
  "JsonlAuditLog",
  (o) => {
    const path = tempPath("jsonl");
    const log = new JsonlAuditLog({ path, ...o });
    locations.set(log, path);
    return log;
  },
  { describe, it, expect },
  {
    reopen: (log) => {
      const path = locations.get(log)!;
      const other = new JsonlAuditLog({ path });
      locations.set(other, path);
      return other;
    },
    tamper: (log, threadId, op) => tamperJsonl(locations.get(log)!, threadId, op),
  },
);

auditLogSpec(
  "SqliteAuditLog",
  (o) => {
    const path = tempPath("sqlite");
    const log = new SqliteAuditLog({ path, ...o });
    locations.set(log, path);
    return log;
  },
  { describe, it, expect },
  {
    reopen: (log) => {
      const path = locations.get(log)!;
      const other = new SqliteAuditLog({ path });
      locations.set(other, path);
      return other;
    },
    tamper: (log, threadId, op) => {
      const db = new Database(locations.get(log)!);
      try {
        tamperSql(threadId, op, (sql, params) => void db.prepare(sql).run(...params), "sqlite");
      } finally {
        db.close();
      }
    },
  },
);

auditLogSpec("PostgresAuditLog", (o) => new PostgresAuditLog({ pool: newPool(), ...o }), { describe, it, expect }, {
  reopen: () => new PostgresAuditLog({ pool: newPool() }),
  tamper: async (_log, threadId, op) => {
    const statements: [string, unknown[]][] = [];
    tamperSql(
      threadId,
      op,
      (sql, params) => {
        let n = 0;
        statements.push([sql.replace(/\?/g, () => `$${++n}`), params]);
      },
      "postgres",
    );
    const client = await admin.connect();
    try {
      await client.query("BEGIN");
      for (const [sql, params] of statements) await client.query(sql, params);
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK");
      throw error;
    } finally {
      client.release();
    }
  },
});

/** The same edits in SQL, for SQLite (`?` placeholders) and PostgreSQL (numbered on the way). */
function tamperSql(threadId: string, op: AuditTamperOp, run: (sql: string, params: unknown[]) => void, dialect: "sqlite" | "postgres"): void {
  const where = `thread_id = ? AND seq = ?`;
  switch (op.kind) {
    case "set_data":
      return run(`UPDATE eart_audit_events SET data = ? WHERE ${where}`, [JSON.stringify(op.data), threadId, op.seq]);
    case "delete":
      return run(`DELETE FROM eart_audit_events WHERE ${where}`, [threadId, op.seq]);
    case "swap": {
      const [a, b] = op.seqs;
      const parked = 1_000_000; // seq is CHECK (seq >= 0) in PostgreSQL
      run(`UPDATE eart_audit_events SET seq = ? WHERE ${where}`, [parked, threadId, a]);
      run(`UPDATE eart_audit_events SET seq = ? WHERE ${where}`, [a, threadId, b]);
      return run(`UPDATE eart_audit_events SET seq = ? WHERE ${where}`, [b, threadId, parked]);
    }
    case "delete_thread":
      run(`DELETE FROM eart_audit_events WHERE thread_id = ?`, [threadId]);
      run(`DELETE FROM eart_audit_heads WHERE thread_id = ?`, [threadId]);
      if (dialect === "sqlite") run(`DELETE FROM eart_audit_signed_heads WHERE thread_id = ?`, [threadId]);
      return;
    case "set_head": {
      const head = op.head as { seq: number; hash: string; signature?: string } | null;
      const signed = head && "signature" in head ? JSON.stringify(head) : null;
      if (dialect === "sqlite") {
        run(`DELETE FROM eart_audit_heads WHERE thread_id = ?`, [threadId]);
        run(`DELETE FROM eart_audit_signed_heads WHERE thread_id = ?`, [threadId]);
        if (head) run(`INSERT INTO eart_audit_heads (thread_id, seq, hash) VALUES (?, ?, ?)`, [threadId, head.seq, head.hash]);
        if (signed) run(`INSERT INTO eart_audit_signed_heads (thread_id, head) VALUES (?, ?)`, [threadId, signed]);
        return;
      }
      run(`DELETE FROM eart_audit_heads WHERE thread_id = ?`, [threadId]);
      if (head) run(`INSERT INTO eart_audit_heads (thread_id, seq, hash, signed_head) VALUES (?, ?, ?, ?)`, [threadId, head.seq, head.hash, signed]);
      return;
    }
  }
}

/** The same edits on the JSONL files, as someone with a text editor would make them. */
function tamperJsonl(path: string, threadId: string, op: AuditTamperOp): void {
  const lines = readFileSync(path, "utf8").split("\n");
  const trailing = lines.pop(); // "" after the last newline
  expect(trailing).toBe("");
  const at = (seq: number) => {
    const index = lines.findIndex((l) => {
      const e = JSON.parse(l) as AuditEvent;
      return e.threadId === threadId && e.seq === seq;
    });
    expect(index).toBeGreaterThanOrEqual(0);
    return index;
  };
  const edit = (index: number, change: (e: AuditEvent) => AuditEvent) => (lines[index] = JSON.stringify(change(JSON.parse(lines[index]!) as AuditEvent)));
  if (op.kind === "delete_thread") {
    // Surgery on a shared log: the thread's lines go, and every commit's `end` is moved back by
    // the bytes removed before it, so the file stays consistent for the other threads.
    const commits = readFileSync(`${path}.heads`, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { end: number; heads: { threadId: string }[] });
    let offset = 0;
    const removedBefore: [number, number][] = []; // [original end of line, bytes removed up to it]
    let removed = 0;
    const kept: string[] = [];
    for (const line of lines) {
      offset += Buffer.byteLength(line) + 1;
      if ((JSON.parse(line) as AuditEvent).threadId === threadId) removed += Buffer.byteLength(line) + 1;
      else kept.push(line);
      removedBefore.push([offset, removed]);
    }
    const shift = (end: number) => removedBefore.filter(([at]) => at <= end).at(-1)?.[1] ?? 0;
    const edited = commits.map((c) => ({ ...c, end: c.end - shift(c.end), heads: c.heads.filter((h) => h.threadId !== threadId) })).filter((c) => c.heads.length > 0);
    writeFileSync(path, kept.map((l) => `${l}\n`).join(""));
    writeFileSync(`${path}.heads`, edited.map((c) => `${JSON.stringify(c)}\n`).join(""));
    return;
  }
  switch (op.kind) {
    case "set_data":
      edit(at(op.seq), (e) => ({ ...e, data: op.data }));
      break;
    case "delete":
      lines.splice(at(op.seq), 1);
      break;
    case "swap": {
      const [a, b] = op.seqs.map(at) as [number, number];
      const [lineA, lineB] = [lines[a]!, lines[b]!];
      lines[a] = lineB;
      lines[b] = lineA;
      edit(a, (e) => ({ ...e, seq: op.seqs[0] }));
      edit(b, (e) => ({ ...e, seq: op.seqs[1] }));
      break;
    }
    case "set_head": {
      const commits = readFileSync(`${path}.heads`, "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { v: 1; end: number; heads: { threadId: string }[] });
      for (const c of commits) c.heads = c.heads.filter((h) => h.threadId !== threadId);
      const kept = commits.filter((c) => c.heads.length > 0);
      if (op.head) kept.push({ v: 1, end: statSync(path).size, heads: [{ ...op.head, threadId } as { threadId: string }] });
      writeFileSync(`${path}.heads`, kept.map((c) => `${JSON.stringify(c)}\n`).join(""));
      return;
    }
  }
  writeFileSync(path, lines.map((l) => `${l}\n`).join(""));
}

describe("auditLogSpec itself", () => {
  /** Runs the spec against `makeLog` with a recording runner; returns the names of failing cases. */
  async function failuresOf(makeLog: (o: MakeAuditLogOptions) => AuditLog, tamper?: (log: AuditLog, threadId: string, op: AuditTamperOp) => void): Promise<string[]> {
    const failures: string[] = [];
    const pending: Promise<unknown>[] = [];
    const runner = {
      describe: (_: string, body: () => void) => body(),
      it: (name: string, body: () => void | Promise<void>) => {
        pending.push(
          Promise.resolve()
            .then(body)
            .catch(() => failures.push(name)),
        );
      },
      expect,
    };
    auditLogSpec("under test", makeLog, runner, { singleProcess: true, ...(tamper ? { tamper } : {}) });
    await Promise.all(pending);
    return failures.sort();
  }

  it("passes a correct log", async () => {
    expect(await failuresOf((o) => new MemoryAuditLog(o))).toEqual([]);
  });

  it("catches a log that ignores its signing key", async () => {
    expect(await failuresOf(() => new MemoryAuditLog())).toEqual([
      "a head checked with another key, or changed after signing, fails",
      "signs each thread's head after every append; the public key alone checks it",
    ]);
  });

  it("catches a log that stores part of a refused batch", async () => {
    class Eager extends MemoryAuditLog {
      override async append(events: AuditEventInput | readonly AuditEventInput[]): Promise<AuditEvent[]> {
        const list = Array.isArray(events) ? events : [events];
        const out: AuditEvent[] = [];
        for (const e of list) out.push(...(await super.append(e as AuditEventInput)));
        return out;
      }
    }
    const failures = await failuresOf((o) => new Eager(o));
    expect(failures.filter((f) => f.startsWith("refuses")).length).toBeGreaterThan(5);
  });

  it("catches a log whose verify does not look at its storage", async () => {
    class Blind extends MemoryAuditLog {
      override async verify(threadId: string) {
        return { ok: true as const, threadId, count: (await this.read(threadId)).length, headHash: GENESIS_HASH };
      }
    }
    const failures = await failuresOf(
      (o) => new Blind(o),
      () => {},
    );
    expect(failures.filter((f) => f.startsWith("tampering")).length).toBe(10);
  });
});

// ---------------------------------------------------------------------------------------------
// Hashing and signing primitives

describe("canonical hashing on the append path", () => {
  /** Random JSON-ish values, with the awkward cases RFC 8785 cares about. */
  function randomValue(depth: number, rnd: () => number): unknown {
    const strings = ["", "a", "é", "\u2028", '"q"', "back\\slash", "\u0001ctl", "\ud83d\ude00", "\ud800", "\udfff lone", "日本", "\u007f", "10", "9", "__proto__x"];
    const numbers = [0, -1, 1.5, 1e21, 1e-7, -2.5e-8, 5e-324, 1.7976931348623157e308, 123456789012345680000, 0.1 + 0.2, 100, -0.5];
    const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)]!;
    const kind = depth <= 0 ? Math.floor(rnd() * 4) : Math.floor(rnd() * 6);
    switch (kind) {
      case 0:
        return pick(strings);
      case 1:
        return pick(numbers);
      case 2:
        return pick([true, false, null]);
      case 3:
        return pick(strings) + pick(strings);
      case 4:
        return Array.from({ length: Math.floor(rnd() * 4) }, () => randomValue(depth - 1, rnd));
      default:
        return Object.fromEntries(Array.from({ length: Math.floor(rnd() * 5) }, () => [pick(strings) + pick(["", "b", "Z", "1"]), randomValue(depth - 1, rnd)]));
    }
  }

  it("hashes exactly what json-canonicalize gives, for 2,000 random data objects", () => {
    let seed = 42;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const inputs = Array.from({ length: 2_000 }, () => ev("t", "model.output", { value: randomValue(4, rnd), [randomValue(0, rnd) as string]: 1 }));
    const sealed = sealEvents(null, inputs);
    for (const e of sealed) expect(e.hash).toBe(expectedAuditHash(e));
    expect(verifyChain("t", sealed).ok).toBe(true);
    // The data handed back is the canonical text parsed: same values, same key order.
    sealed.forEach((e, i) => {
      const canonical = JSON.parse(canonicalJson(JSON.parse(JSON.stringify(inputs[i]!.data)))) as unknown;
      expect(JSON.stringify(e.data)).toBe(JSON.stringify(canonical));
      expect(e.data).toEqual(canonical);
    });
  });

  it("keeps an own __proto__ member as data, turns -0 into 0, and takes the JSON path for anything not plain", () => {
    const data = JSON.parse('{"__proto__": {"polluted": true}, "b": -0, "a": [1, null]}') as Record<string, unknown>;
    const [plain, dated, deep] = sealEvents(null, [
      { threadId: "t", type: "model.output", data },
      { threadId: "t", type: "model.output", data: { when: new Date(0), skip: undefined, n: Number.NaN, list: [undefined, () => 1] } },
      { threadId: "t", type: "model.output", data: { deep: JSON.parse(`${"[".repeat(200)}1${"]".repeat(200)}`) as unknown } },
    ]);
    expect(Object.getPrototypeOf(plain!.data)).toBe(Object.prototype);
    expect(Object.prototype.hasOwnProperty.call(plain!.data, "__proto__")).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBe(undefined);
    expect(Object.is(plain!.data.b, 0)).toBe(true);
    expect(Object.keys(plain!.data)).toEqual(["__proto__", "a", "b"]);
    expect(dated!.data).toEqual({ list: [null, null], n: null, when: "1970-01-01T00:00:00.000Z" });
    expect(JSON.stringify(deep!.data)).toBe(`{"deep":${"[".repeat(200)}1${"]".repeat(200)}}`);
    for (const e of [plain!, dated!, deep!]) expect(e.hash).toBe(expectedAuditHash(e));
    expect(verifyChain("t", [plain, dated, deep]).ok).toBe(true);
  });
});

describe("signing keys", () => {
  it("a store refuses a signing key that is not an Ed25519 private key", () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 });
    const { publicKey } = generateAuditSigningKey();
    for (const signingKey of ["not a pem", rsa.privateKey, publicKey, rsa.privateKey.export({ type: "pkcs8", format: "pem" }).toString()]) {
      expect(() => new MemoryAuditLog({ signingKey })).toThrow(EartConfigError);
      expect(() => new JsonlAuditLog({ path: tempPath("jsonl"), signingKey })).toThrow(EartConfigError);
      expect(() => new SqliteAuditLog({ path: tempPath("sqlite"), signingKey })).toThrow(EartConfigError);
      expect(() => new PostgresAuditLog({ connectionString: PG_URL, signingKey })).toThrow(EartConfigError);
    }
  });

  it("takes PEM keys as well as KeyObjects, and verify refuses a public key that is not Ed25519", async () => {
    const { privateKey, publicKey } = generateAuditSigningKey();
    const log = new MemoryAuditLog({ signingKey: privateKey.export({ type: "pkcs8", format: "pem" }).toString() });
    await log.append(ev("t", "run.started"));
    expect((await log.verify("t", { publicKey: publicKey.export({ type: "spki", format: "pem" }).toString() })).ok).toBe(true);
    const rsa = generateKeyPairSync("rsa", { modulusLength: 1024 });
    await expect(log.verify("t", { publicKey: rsa.publicKey })).rejects.toBeInstanceOf(EartConfigError);
    await expect(log.verify("t", { publicKey: "nope" })).rejects.toBeInstanceOf(EartConfigError);
  });
});

// ---------------------------------------------------------------------------------------------
// JsonlAuditLog specifics

describe("JsonlAuditLog", () => {
  const opened: JsonlAuditLog[] = [];
  afterAll(() => opened.forEach((l) => l.close()));
  const open = (path: string, options: Partial<ConstructorParameters<typeof JsonlAuditLog>[0]> = {}) => {
    const log = new JsonlAuditLog({ path, ...options });
    opened.push(log);
    return log;
  };
  async function seeded(options: Partial<ConstructorParameters<typeof JsonlAuditLog>[0]> = {}) {
    const path = tempPath("jsonl");
    const log = open(path, options);
    const events = await log.append([ev("t", "run.started"), ev("t", "model.output", { text: "hi" }), ev("u", "run.started")]);
    events.push(...(await log.append(ev("t", "run.completed"))));
    return { path, log, events: events.filter((e) => e.threadId === "t") };
  }

  it("refuses invalid options with EartConfigError naming the field", () => {
    const field = (options: unknown) => {
      try {
        new JsonlAuditLog(options as { path: string });
      } catch (error) {
        expect(error).toBeInstanceOf(EartConfigError);
        return (error as EartConfigError).field;
      }
      return "accepted";
    };
    expect(field({})).toBe("path");
    expect(field({ path: "" })).toBe("path");
    expect(field({ path: tempPath("jsonl"), lockTimeoutMs: 0 })).toBe("lockTimeoutMs");
    expect(field({ path: tempPath("jsonl"), other: 1 })).toBe("options");
  });

  it("fails to open a file in a missing directory with AuditStoreError, and a closed log fails the same way", async () => {
    expect(() => new JsonlAuditLog({ path: join(dir, "missing", "audit.jsonl") })).toThrow(AuditStoreError);
    const log = new JsonlAuditLog({ path: tempPath("jsonl") });
    log.close();
    await expect(log.append(ev("t", "run.started"))).rejects.toBeInstanceOf(AuditStoreError);
    await expect(log.read("t")).rejects.toBeInstanceOf(AuditStoreError);
    await expect(log.verify("t")).rejects.toBeInstanceOf(AuditStoreError);
    await expect(log.listThreads()).rejects.toBeInstanceOf(AuditStoreError);
  });

  it("writes one sealed event per line and one commit line per append", async () => {
    const { path, events } = await seeded();
    const lines = readFileSync(path, "utf8").split("\n");
    expect(lines.pop()).toBe("");
    const parsed = lines.map((l) => AuditEventSchema.strict().parse(JSON.parse(l)));
    expect(parsed.filter((e) => e.threadId === "t")).toEqual(events);
    expect(parsed.map((e) => e.threadId)).toEqual(["t", "t", "u", "t"]);
    const commits = readFileSync(`${path}.heads`, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as unknown);
    const firstEnd = Buffer.byteLength(lines.slice(0, 3).join("\n")) + 1;
    // Each commit is an entry of the global log too (`g`): chained over all threads by hash.
    const [first, second] = commits as { g: { gseq: number; prevHash: string; hash: string }; heads: { threadId: string; seq: number; hash: string }[] }[];
    expect(commits).toEqual([
      {
        v: 1,
        end: firstEnd,
        heads: [{ threadId: "t", seq: 1, hash: events[1]!.hash }, expect.objectContaining({ threadId: "u", seq: 0 })],
        g: { gseq: 0, prevHash: GLOBAL_GENESIS_HASH, hash: globalEntryHash({ gseq: 0, heads: first!.heads, prevHash: GLOBAL_GENESIS_HASH }) },
      },
      {
        v: 1,
        end: statSync(path).size,
        heads: [{ threadId: "t", seq: 2, hash: events[2]!.hash }],
        g: { gseq: 1, prevHash: first!.g.hash, hash: globalEntryHash({ gseq: 1, heads: second!.heads, prevHash: first!.g.hash }) },
      },
    ]);
  });

  it("a fresh process reading the files sees what the writer wrote", async () => {
    const { path, events } = await seeded();
    const reader = open(path);
    expect(await reader.read("t")).toEqual(events);
    expect(await reader.listThreads()).toEqual(["t", "u"]);
    expect(await reader.verify("t")).toEqual({ ok: true, threadId: "t", count: 3, headHash: events[2]!.hash });
  });

  it("two lines swapped verbatim are a sequence_gap at the first", async () => {
    const { path, log, events } = await seeded();
    const lines = readFileSync(path, "utf8").split("\n");
    [lines[0], lines[1]] = [lines[1]!, lines[0]!];
    writeFileSync(path, lines.join("\n"));
    expect(await log.verify("t")).toEqual({ ok: false, threadId: "t", count: 3, brokenAt: { seq: 0, eventId: events[1]!.id, reason: "sequence_gap", expected: "0", found: "1" } });
  });

  it("a line that is not JSON any more takes its event out of the chain, and verify says where", async () => {
    const { path, log, events } = await seeded();
    const lines = readFileSync(path, "utf8").split("\n");
    lines[1] = lines[1]!.slice(0, 40);
    writeFileSync(path, lines.join("\n"));
    expect(await log.verify("t")).toEqual({ ok: false, threadId: "t", count: 2, brokenAt: { seq: 1, eventId: events[2]!.id, reason: "sequence_gap", expected: "1", found: "2" } });
  });

  /** Events sealed onto the chain but written past the last commit, as an append killed between its two writes leaves them. */
  function uncommitted(path: string, last: AuditEvent, count = 2): AuditEvent[] {
    const more = sealEvents(last, Array.from({ length: count }, (_, i) => ev("t", "tool.started", { crashed: i })));
    appendFileSync(path, more.map((e) => `${JSON.stringify(e)}\n`).join(""));
    return more;
  }

  it("unsigned: events an interrupted append left after the last commit are reported, then committed by the next append", async () => {
    const { path, log, events } = await seeded();
    const more = uncommitted(path, events[2]!);
    expect(await log.verify("t")).toEqual({
      ok: false,
      threadId: "t",
      count: 5,
      brokenAt: { seq: 3, eventId: undefined, reason: "head_mismatch", expected: `2:${events[2]!.hash}`, found: `4:${more[1]!.hash}` },
    });
    const [next] = await open(path).append(ev("t", "run.completed"));
    expect([next!.seq, next!.prevHash]).toEqual([5, more[1]!.hash]);
    expect(await log.verify("t")).toEqual({ ok: true, threadId: "t", count: 6, headHash: next!.hash });
    expect(await log.verify("u")).toMatchObject({ ok: true, count: 1 });
  });

  it("signed: events after the last commit are not adopted; appends are refused and nothing is written", async () => {
    const { privateKey } = generateAuditSigningKey();
    const { path, log, events } = await seeded({ signingKey: privateKey });
    uncommitted(path, events[2]!);
    const sizes = [statSync(path).size, statSync(`${path}.heads`).size];
    const error = await log.append(ev("t", "run.completed")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuditStoreError);
    expect((error as Error).message).toMatch(/after its last commit.*does not sign events it did not seal/);
    expect([statSync(path).size, statSync(`${path}.heads`).size]).toEqual(sizes);
    expect(await log.verify("t")).toMatchObject({ ok: false, brokenAt: { reason: "head_mismatch", seq: 3 } });
  });

  it("bytes after the last commit that do not continue the chain make appends fail, unchanged", async () => {
    const { path, log, events } = await seeded();
    const forged = { ...sealEvents({ seq: 2, hash: events[2]!.hash }, [ev("t", "tool.succeeded")])[0]!, hash: "f".repeat(64) };
    appendFileSync(path, `${JSON.stringify(forged)}\n`);
    await expect(log.append(ev("t", "run.completed"))).rejects.toThrow(/do not continue the chain of thread "t" \(hash_mismatch at seq 3\)/);
    appendFileSync(path, "not json\n");
    await expect(log.append(ev("u", "run.completed"))).rejects.toThrow(/is not an audit event/);
    const size = statSync(path).size;
    appendFileSync(path, "{");
    await expect(log.append(ev("u", "run.completed"))).rejects.toThrow(/do not end with a newline/);
    expect(statSync(path).size).toBe(size + 1);
  });

  it("an events file cut short of its last commit makes appends fail", async () => {
    const { path, log } = await seeded();
    truncateSync(path, statSync(path).size - 10);
    await expect(log.append(ev("u", "run.completed"))).rejects.toThrow(/10 bytes shorter than its last commit/);
  });

  it("a commit line cut short (power loss) is ignored, and the next append starts a new line", async () => {
    const { path, log, events } = await seeded();
    appendFileSync(`${path}.heads`, `{"v":1,"end":99999,"heads":[{"threadId":"t","se`);
    expect(await open(path).verify("t")).toEqual({ ok: true, threadId: "t", count: 3, headHash: events[2]!.hash });
    const [next] = await open(path).append(ev("t", "run.completed"));
    expect(next!.seq).toBe(3);
    expect(await log.verify("t")).toEqual({ ok: true, threadId: "t", count: 4, headHash: next!.hash });
    expect(readFileSync(`${path}.heads`, "utf8").split("\n").filter(Boolean)).toHaveLength(4); // two commits, the fragment, one more
  });

  it("waits for a lock held by a live process, and fails with AuditStoreError when it is not released", async () => {
    const path = tempPath("jsonl");
    const log = open(path, { lockTimeoutMs: 150 });
    writeFileSync(`${path}.lock`, JSON.stringify({ pid: process.pid, host: hostname(), token: "x" }));
    const error = await log.append(ev("t", "run.started")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuditStoreError);
    expect((error as Error).message).toContain(`held by pid ${process.pid}`);
    expect(statSync(path).size).toBe(0);
    rmSync(`${path}.lock`);
    expect((await log.append(ev("t", "run.started")))[0]!.seq).toBe(0);
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  it("breaks a lock left by a process that has exited", async () => {
    const path = tempPath("jsonl");
    const log = open(path, { lockTimeoutMs: 5_000 });
    const child = spawn(process.execPath, ["-e", ""]);
    const pid = child.pid!;
    await new Promise((resolve) => child.on("exit", resolve));
    writeFileSync(`${path}.lock`, JSON.stringify({ pid, host: hostname(), token: "dead" }));
    expect((await log.append(ev("t", "run.started")))[0]!.seq).toBe(0);
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  it("breaks an unreadable lock once it is older than staleLockMs, not before", async () => {
    const path = tempPath("jsonl");
    writeFileSync(`${path}.lock`, "");
    await expect(open(path, { lockTimeoutMs: 100, staleLockMs: 60_000 }).append(ev("t", "run.started"))).rejects.toThrow(/holder unknown/);
    const old = new Date(Date.now() - 120_000);
    utimesSync(`${path}.lock`, old, old);
    expect((await open(path, { lockTimeoutMs: 5_000, staleLockMs: 60_000 }).append(ev("t", "run.started")))[0]!.seq).toBe(0);
  });

  it("with fsync on, appends and verifies the same", async () => {
    const log = open(tempPath("jsonl"), { fsync: true });
    const events = await log.append([ev("t", "run.started"), ev("t", "run.completed")]);
    expect(await log.verify("t")).toEqual({ ok: true, threadId: "t", count: 2, headHash: events[1]!.hash });
  });
});

// ---------------------------------------------------------------------------------------------
// PostgresAuditLog specifics

describe("PostgresAuditLog", () => {
  it("takes the connection string from EART_DATABASE_URL, or refuses to guess", async () => {
    const saved = process.env.EART_DATABASE_URL;
    try {
      delete process.env.EART_DATABASE_URL;
      expect(() => new PostgresAuditLog()).toThrow(EartConfigError);
      expect(() => new PostgresAuditLog({ connectionString: PG_URL, pool: newPool() })).toThrow(/either connectionString or pool/);
      expect(() => new PostgresAuditLog({ conn: PG_URL } as never)).toThrow(EartConfigError);
      process.env.EART_DATABASE_URL = PG_URL;
      const log = new PostgresAuditLog();
      const t = `${RUN}-env`;
      expect((await log.append(ev(t, "run.started")))[0]!.seq).toBe(0);
      await log.close();
    } finally {
      if (saved === undefined) delete process.env.EART_DATABASE_URL;
      else process.env.EART_DATABASE_URL = saved;
    }
  });

  it("migrates idempotently when several logs start at once, and they share one chain", async () => {
    const logs = Array.from({ length: 4 }, () => new PostgresAuditLog({ pool: newPool() }));
    const t = `${RUN}-migrate`;
    await Promise.all(logs.map((l, i) => l.append(ev(t, "model.output", { i }))));
    const events = await logs[0]!.read(t);
    expect(events.map((e) => e.seq)).toEqual([0, 1, 2, 3]);
    expect(await logs[3]!.verify(t)).toMatchObject({ ok: true, count: 4 });
  });

  it("has the nets: PRIMARY KEY (thread_id, seq) and UNIQUE (thread_id, prev_hash), not a global UNIQUE (prev_hash)", async () => {
    const log = new PostgresAuditLog({ pool: newPool() });
    const [t, u] = [`${RUN}-net-t`, `${RUN}-net-u`];
    const [first] = await log.append([ev(t, "run.started"), ev(u, "run.started")]);
    // Both threads start from the same genesis hash: allowed.
    expect((await log.read(u))[0]!.prevHash).toBe(GENESIS_HASH);
    const insert = (e: AuditEvent) =>
      admin.query(`INSERT INTO eart_audit_events (thread_id, seq, id, type, at, schema_version, data, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
        e.threadId,
        e.seq,
        e.id,
        e.type,
        e.at,
        e.schemaVersion,
        JSON.stringify(e.data),
        e.prevHash,
        e.hash,
      ]);
    // A writer that skipped the lock and forked from genesis again, at another seq: UNIQUE (thread_id, prev_hash).
    const [fork] = sealEvents(null, [ev(t, "run.started", { fork: true })]);
    await expect(insert({ ...fork!, seq: 7 })).rejects.toMatchObject({ code: "23505", constraint: "eart_audit_events_prev_hash_key" });
    // The same seq twice: the primary key.
    const [twin] = sealEvents({ seq: 0, hash: first!.hash }, [ev(t, "model.output")]);
    await insert(twin!);
    await expect(insert({ ...twin!, prevHash: "1".repeat(64) })).rejects.toMatchObject({ code: "23505" });
  });

  it("an append is bounded: behind a stuck writer's lock, or with no connection to be had, it fails within timeoutMs and appends nothing", async () => {
    const t = `${RUN}-bounded`;
    expect(() => new PostgresAuditLog({ pool: newPool(), timeoutMs: 0 })).toThrow(EartConfigError);
    const log = new PostgresAuditLog({ pool: newPool(), timeoutMs: 300 });
    await log.append(ev(t, "run.started"));
    // A writer that took the thread's append lock and hangs (the same two-key lock every writer takes).
    const stuck = await admin.connect();
    try {
      await stuck.query("BEGIN");
      await stuck.query("SELECT pg_advisory_xact_lock($1, $2)", [0x65617274, createHash("sha256").update(t).digest().readInt32BE(0)]);
      const error = await log.append(ev(t, "model.output")).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AuditStoreError);
      expect((error as Error).message).toMatch(/no answer within 300 ms.*nothing was appended/);
    } finally {
      await stuck.query("ROLLBACK");
      stuck.release();
    }
    expect((await log.read(t)).map((e) => e.type)).toEqual(["run.started"]);
    // Every connection of the log's pool is taken: the append does not queue forever.
    const tiny = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${SCHEMA}`, max: 1 });
    pools.push(tiny);
    const starved = new PostgresAuditLog({ pool: tiny, timeoutMs: 300 });
    await starved.append(ev(t, "model.output"));
    const held = await tiny.connect();
    try {
      await expect(starved.append(ev(t, "model.output", { late: true }))).rejects.toThrow(/no connection within 300 ms; nothing was appended/);
    } finally {
      held.release();
    }
    // The pool is whole again: the late client went back, and the next append works.
    await starved.append(ev(t, "model.output", { after: true }));
    expect((await log.read(t)).map((e) => e.data)).toEqual([{}, {}, { after: true }]);
    expect(await log.verify(t)).toMatchObject({ ok: true, count: 3 });
  });

  it("an append that runs into the net fails with AuditStoreError and stores nothing of its batch", async () => {
    const log = new PostgresAuditLog({ pool: newPool() });
    const [t, u] = [`${RUN}-conflict-t`, `${RUN}-conflict-u`];
    await log.append(ev(t, "run.started"));
    // The head is set back behind the lock's back: the next append would reuse seq 0.
    await admin.query(`DELETE FROM eart_audit_heads WHERE thread_id = $1`, [t]);
    const error = await log.append([ev(u, "run.started"), ev(t, "model.output")]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuditStoreError);
    expect((error as Error).message).toMatch(/conflicted with the chain/);
    expect(await log.read(u)).toEqual([]);
    expect((await log.read(t)).length).toBe(1);
  });

  it("a stopped pool is an AuditStoreError on every call", async () => {
    const log = new PostgresAuditLog({ connectionString: PG_URL });
    await log.close();
    await expect(log.append(ev(`${RUN}-closed`, "run.started"))).rejects.toBeInstanceOf(AuditStoreError);
    await expect(log.read(`${RUN}-closed`)).rejects.toBeInstanceOf(AuditStoreError);
    await expect(log.verify(`${RUN}-closed`)).rejects.toBeInstanceOf(AuditStoreError);
    await expect(log.listThreads()).rejects.toBeInstanceOf(AuditStoreError);
  });

  it("still appends while a session advisory lock is held on the thread's one-key lock (PostgresThreadLock's space)", async () => {
    const t = `${RUN}-thread-locked`;
    const holder = await admin.connect();
    try {
      await holder.query(`SELECT pg_advisory_lock($1::bigint)`, [advisoryLockKey(t)]);
      const log = new PostgresAuditLog({ pool: newPool() });
      expect((await log.append(ev(t, "run.started")))[0]!.seq).toBe(0);
    } finally {
      await holder.query(`SELECT pg_advisory_unlock_all()`);
      holder.release();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Several processes appending to one thread at once

describe("audit logs across processes", () => {
  const distEntry = join(process.cwd(), "dist", "src", "index.js");
  const WRITERS = 4;
  const APPENDS = 60;

  /**
   * Starts WRITERS processes that each append APPENDS times to `shared` (every fourth append a
   * batch of two on `shared` and one on the writer's own thread), all released at once, while this
   * process verifies `shared` over and over. Returns every verification seen during the race.
   */
  async function race(store: "jsonl" | "sqlite" | "postgres", target: string, shared: string, signingKeyPem?: string): Promise<{ during: unknown[]; log: AuditLog }> {
    expect(existsSync(distEntry), "run `npm run build` first").toBe(true);
    const script = join(dir, `writer-${randomUUID()}.mjs`);
    writeFileSync(
      script,
      `import { JsonlAuditLog } from ${JSON.stringify(pathToFileURL(distEntry).href)};
import { SqliteAuditLog } from ${JSON.stringify(pathToFileURL(join(dirname(distEntry), "stores", "sqlite", "index.js")).href)};
import { PostgresAuditLog } from ${JSON.stringify(pathToFileURL(join(dirname(distEntry), "stores", "postgres", "index.js")).href)};
const [store, target, shared, writer] = process.argv.slice(2);
const signingKey = process.env.EART_TEST_SIGNING_KEY || undefined;
const log = store === "jsonl" ? new JsonlAuditLog({ path: target, signingKey })
  : store === "sqlite" ? new SqliteAuditLog({ path: target, signingKey })
  : new PostgresAuditLog({ connectionString: target, signingKey });
await log.listThreads(); // open and migrate before the race
process.stdout.write("ready\\n");
await new Promise((resolve) => process.stdin.once("data", resolve));
for (let i = 0; i < ${APPENDS}; i++) {
  await log.append(i % 4 === 0
    ? [{ threadId: shared, type: "tool.started", data: { writer, i, part: 0 } }, { threadId: shared + "-" + writer, type: "model.output", data: { i } }, { threadId: shared, type: "tool.succeeded", data: { writer, i, part: 1 } }]
    : { threadId: shared, type: "model.output", data: { writer, i } });
}
await log.close();
process.stdout.write("done\\n");
process.exit(0); // stdin is still open
`,
    );
    const children = Array.from({ length: WRITERS }, (_, writer) =>
      startReadyChild(script, [store, target, shared, String(writer)], "writer", { ...process.env, EART_TEST_SIGNING_KEY: signingKeyPem ?? "" }),
    );
    await Promise.all(children.map((c) => c.ready));
    const log: AuditLog =
      store === "jsonl"
        ? new JsonlAuditLog({ path: target })
        : store === "sqlite"
          ? new SqliteAuditLog({ path: target })
          : new PostgresAuditLog({ pool: newPool() });
    for (const c of children) c.child.stdin.write("go\n");
    let running = true;
    const all = Promise.all(children.map((c) => c.exited)).finally(() => (running = false));
    const during: unknown[] = [];
    while (running) {
      during.push(await log.verify(shared));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const codes = await all;
    children.forEach((c, i) => expect(codes[i], c.err()).toBe(0));
    children.forEach((c) => expect(c.out()).toContain("done"));
    return { during, log };
  }

  async function expectOneChain(log: AuditLog, shared: string, during: unknown[]) {
    const events = await log.read(shared);
    const total = WRITERS * (APPENDS + APPENDS / 4);
    expect(events.length).toBe(total);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i));
    events.forEach((e, i) => {
      expect(e.prevHash).toBe(i === 0 ? GENESIS_HASH : events[i - 1]!.hash);
      expect(e.hash).toBe(expectedAuditHash(e));
    });
    expect(await log.verify(shared)).toEqual({ ok: true, threadId: shared, count: total, headHash: events[total - 1]!.hash });
    for (let writer = 0; writer < WRITERS; writer++) {
      const own = events.filter((e) => e.data.writer === String(writer) && e.data.part !== 1).map((e) => e.data.i);
      expect(own).toEqual(Array.from({ length: APPENDS }, (_, i) => i));
      expect(await log.verify(`${shared}-${writer}`)).toMatchObject({ ok: true, count: APPENDS / 4 });
    }
    // A batch is contiguous: its two events on `shared` are next to each other.
    for (const e of events.filter((x) => x.data.part === 1)) expect(events[e.seq - 1]!.data).toEqual({ writer: e.data.writer, i: e.data.i, part: 0 });
    // Every verification made while the writers ran saw a consistent snapshot.
    expect(during.length).toBeGreaterThan(0);
    expect(during.filter((r) => !(r as { ok: boolean }).ok)).toEqual([]);
  }

  it("JSONL: 4 processes appending to one thread at once keep one chain, signed, and verify stays ok throughout", async () => {
    const { privateKey, publicKey } = generateAuditSigningKey();
    const path = tempPath("jsonl");
    const shared = `${RUN}-jsonl-shared`;
    const { during, log } = await race("jsonl", path, shared, privateKey.export({ type: "pkcs8", format: "pem" }).toString());
    await expectOneChain(log, shared, during);
    expect(await log.verify(shared, { publicKey })).toMatchObject({ ok: true });
    expect(existsSync(`${path}.lock`)).toBe(false);
    (log as JsonlAuditLog).close();
  });

  it("PostgreSQL: 4 processes appending to one thread at once keep one chain, signed, and verify stays ok throughout", async () => {
    const { privateKey, publicKey } = generateAuditSigningKey();
    const shared = `${RUN}-pg-shared`;
    const { during, log } = await race("postgres", SCHEMA_URL, shared, privateKey.export({ type: "pkcs8", format: "pem" }).toString());
    await expectOneChain(log, shared, during);
    expect(await log.verify(shared, { publicKey })).toMatchObject({ ok: true });
  });

  it("SQLite: 4 processes appending to one thread at once keep one chain, and verify stays ok throughout", async () => {
    const path = tempPath("sqlite");
    const shared = `${RUN}-sqlite-shared`;
    const { during, log } = await race("sqlite", path, shared);
    await expectOneChain(log, shared, during);
    (log as SqliteAuditLog).close();
  });
});
