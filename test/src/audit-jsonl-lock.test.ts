import { existsSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AuditStoreError, JsonlAuditLog } from "eart";
import { processInstance, type ProcessInstance } from "../../src/threads/lock.js";
import { liveEartChild } from "../support/children.js";

/**
 * The JSONL audit log's lock file names its holder's process instance (pid, start time, pid
 * namespace, host), not only a pid. A lock left by a crashed process is broken at once, also when
 * the restarted process has the same pid (a container whose app is PID 1 again): before, that
 * lock looked held by a live process (this one) and every append timed out.
 */

const dir = mkdtempSync(join(tmpdir(), "eart-jsonl-lock-"));
const logs: JsonlAuditLog[] = [];
afterAll(() => {
  for (const log of logs) log.close();
  rmSync(dir, { recursive: true, force: true });
});
let n = 0;
const open = (options: { lockTimeoutMs?: number; staleLockMs?: number } = {}) => {
  const log = new JsonlAuditLog({ path: join(dir, `audit-${n++}.jsonl`), ...options });
  logs.push(log);
  return log;
};
const lockOf = (log: JsonlAuditLog) => `${log.path}.lock`;
const started = (threadId: string) => ({ threadId, type: "run.started" as const });

/** A live child process running the built eart; its `instance` resolves with its process instance. */
const liveChild = () => liveEartChild<ProcessInstance>();

describe("JsonlAuditLog lock file: ownership is a process instance", () => {
  it("breaks at once a lock left by an instance that had this process's pid (a restarted PID-1 container)", async () => {
    const log = open({ lockTimeoutMs: 5_000 });
    const me = processInstance();
    const { started: _mine, ...same } = me;
    writeFileSync(lockOf(log), JSON.stringify({ ...same, instance: "crashed-instance", started: "other-boot/4242", token: "left" }));
    expect((await log.append(started("t")))[0]!.seq).toBe(0);
    expect(existsSync(lockOf(log))).toBe(false);
  });

  it("breaks a lock file of an earlier eart (pid only) with this process's pid, written before this process started", async () => {
    const log = open({ lockTimeoutMs: 5_000 });
    writeFileSync(lockOf(log), JSON.stringify({ pid: process.pid, host: hostname(), token: "left" }));
    const before = new Date(Date.now() - process.uptime() * 1000 - 60_000);
    utimesSync(lockOf(log), before, before);
    expect((await log.append(started("t")))[0]!.seq).toBe(0);
    expect(existsSync(lockOf(log))).toBe(false);
  });

  it("does not break the lock of a live instance; breaks one whose pid another process has now (a reused pid)", async () => {
    const live = liveChild();
    try {
      const child = await live.instance;
      const log = open({ lockTimeoutMs: 150 });
      writeFileSync(lockOf(log), JSON.stringify({ ...child, token: "live" }));
      const error = await log.append(started("t")).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AuditStoreError);
      expect((error as Error).message).toContain(`held by pid ${child.pid}`);
      expect(statSync(log.path).size).toBe(0);
      // The same pid with another start time: a new process got the pid of a dead holder.
      const reopened = open({ lockTimeoutMs: 5_000 });
      writeFileSync(lockOf(reopened), JSON.stringify({ ...child, instance: "gone", started: `${child.started}0`, token: "reused" }));
      expect((await reopened.append(started("t")))[0]!.seq).toBe(0);
    } finally {
      await live.kill();
    }
  });

  it("a holder in another pid namespace (another container on the file) is broken only once older than staleLockMs", async () => {
    const me = processInstance();
    const elsewhere = { ...me, instance: "elsewhere", pidNamespace: "pid:[1]", started: "other-boot/1", token: "elsewhere" };
    const young = open({ lockTimeoutMs: 150, staleLockMs: 60_000 });
    writeFileSync(lockOf(young), JSON.stringify(elsewhere));
    await expect(young.append(started("t"))).rejects.toBeInstanceOf(AuditStoreError);
    const old = open({ lockTimeoutMs: 5_000, staleLockMs: 60_000 });
    writeFileSync(lockOf(old), JSON.stringify(elsewhere));
    const past = new Date(Date.now() - 120_000);
    utimesSync(lockOf(old), past, past);
    expect((await old.append(started("t")))[0]!.seq).toBe(0);
  });
});
