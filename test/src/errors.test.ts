import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { ApprovalError, AuditInputError, AuditStoreError, EART_ERROR_CODES, EartError, InputError, InputTooDeepError, isEartError, LedgerInputError, MemoryAuditLog, MemoryEffectLedger, StoreError } from "eart";

/**
 * `isEartError` reads an error's shape, not its class: callers of eart behind an API, in a worker
 * or with two installed copies of the package cannot rely on `instanceof`.
 */
describe("isEartError", () => {
  const refused = new ApprovalError("approval_self_approval", "cara may not approve her own refund", { approverId: "cara" });

  it("knows eart's errors, and their code when one is asked for", () => {
    expect(isEartError(refused)).toBe(true);
    expect(isEartError(refused, "approval_self_approval")).toBe(true);
    expect(isEartError(refused, "approval_unauthorized")).toBe(false);
    const store = new StoreError("store_unavailable", "effect_ledger", "begin", "the connection was lost");
    expect(isEartError(store, "store_unavailable") && store.details.store).toBe("effect_ledger");
  });

  it("every store fault is a StoreError, the audit log's too", () => {
    const audit = new AuditStoreError("Cannot append to the PostgreSQL audit log: the connection to PostgreSQL was lost");
    expect(audit).toBeInstanceOf(StoreError);
    expect(isEartError(audit, "audit_store_failure") && [audit.details.store, audit.message]).toEqual(["audit_log", "Cannot append to the PostgreSQL audit log: the connection to PostgreSQL was lost"]);
  });

  it("every refused input is an InputError, whichever store or walk refused it, and nothing was stored", async () => {
    const log = new MemoryAuditLog();
    const ledger = new MemoryEffectLedger();
    const deep: Record<string, unknown> = {};
    let at = deep;
    for (let i = 0; i < 600; i++) at = at.a = {} as Record<string, unknown>;
    const refused = await Promise.all([
      log.append({ threadId: "", type: "run.started" }).catch((e: unknown) => e),
      ledger.begin({ threadId: "t", toolCallId: "", digest: "d" }).catch((e: unknown) => e),
      log.append({ threadId: "t", type: "run.started", data: { deep } }).catch((e: unknown) => e),
    ]);
    expect(refused.map((e) => e instanceof InputError && (e as InputError).where)).toEqual(["audit event", "effect-ledger key", expect.any(String)]);
    expect([refused[0] instanceof AuditInputError, refused[1] instanceof LedgerInputError]).toEqual([true, true]);
    expect(refused[2] instanceof InputTooDeepError || refused[2] instanceof AuditInputError).toBe(true);
    expect(await log.read("t")).toEqual([]);
    expect(await ledger.list("t")).toEqual([]);
  });

  it("refuses what is not one: other errors, strangers' codes, look-alikes without details, non-objects", () => {
    expect(isEartError(new Error("boom"))).toBe(false);
    expect(isEartError(Object.assign(new Error("x"), { code: "ECONNRESET", details: {} }))).toBe(false);
    expect(isEartError(Object.assign(new Error("x"), { code: "approval_unauthorized" }))).toBe(false);
    expect(isEartError({ name: "Approval", message: "m", code: "approval_unauthorized", details: {} })).toBe(false);
    for (const value of [null, undefined, "approval_unauthorized", 42]) expect(isEartError(value)).toBe(false);
  });

  it("holds across realms, where instanceof fails: an error made in another vm context", () => {
    const foreign = runInNewContext(`
      class ApprovalError extends Error {
        constructor() { super("refused"); this.name = "ApprovalError"; this.code = "approval_unauthorized"; this.details = { approverId: "fay" }; }
      }
      new ApprovalError();
    `) as unknown;
    expect(foreign instanceof Error).toBe(false);
    expect(foreign instanceof EartError).toBe(false);
    expect(isEartError(foreign, "approval_unauthorized")).toBe(true);
  });

  it("holds across two copies of the package: the built one and the sources", async () => {
    const built = resolve("dist/src/errors.js");
    expect(existsSync(built), "run `npm run build` first").toBe(true);
    const other = (await import(pathToFileURL(built).href)) as typeof import("../../src/errors.js");
    const fromOther = new other.ApprovalError("approval_unauthorized", "fay may not approve refunds");
    expect(fromOther instanceof EartError).toBe(false);
    expect(isEartError(fromOther, "approval_unauthorized")).toBe(true);
    expect(other.isEartError(refused, "approval_self_approval")).toBe(true);
  });

  it("every code an error can carry is listed, once", () => {
    expect(new Set(EART_ERROR_CODES).size).toBe(EART_ERROR_CODES.length);
    expect(EART_ERROR_CODES).toContain(refused.code);
  });
});
