import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MemoryBudgetStore, type BudgetStore } from "eart";
import { PostgresBudgetStore } from "eart/postgres";
import { SqliteBudgetStore } from "eart/sqlite";
import { budgetStoreSpec, type BudgetStoreSpecOptions } from "eart/testing";
import { failingCases as failingOf, specGround } from "../support/specs.js";

const { dir, mainPool, otherPool } = await specGround("budget");

budgetStoreSpec("MemoryBudgetStore", () => new MemoryBudgetStore(), { describe, it, expect }, { singleProcess: true });

/** The file of each SQLite store, for reopening it. */
const paths = new WeakMap<BudgetStore, string>();
const sqliteStore = (path: string) => {
  const store = new SqliteBudgetStore({ path });
  paths.set(store, path);
  return store;
};

budgetStoreSpec("SqliteBudgetStore", () => sqliteStore(join(dir, `${randomUUID()}.sqlite`)), { describe, it, expect }, {
  reopen: (store) => sqliteStore(paths.get(store)!),
});

budgetStoreSpec("PostgresBudgetStore", () => new PostgresBudgetStore({ pool: mainPool }), { describe, it, expect }, {
  reopen: () => new PostgresBudgetStore({ pool: otherPool }),
});

const failingCases = (make: () => BudgetStore, options?: BudgetStoreSpecOptions) => failingOf(budgetStoreSpec, make, { singleProcess: true, ...options });

/** A memory store with some of its methods replaced. */
const mutant = (replace: (inner: MemoryBudgetStore) => Partial<BudgetStore>) => (): BudgetStore => {
  const inner = new MemoryBudgetStore();
  return {
    get: (keys) => inner.get(keys),
    add: (increments) => inner.add(increments),
    addWithin: (increments, limits) => inner.addWithin(increments, limits),
    ...replace(inner),
  };
};

describe("budgetStoreSpec catches a store that breaks its contract", () => {
  it("passes the memory store untouched", async () => {
    expect(await failingCases(mutant(() => ({})))).toEqual([]);
  });

  it("an addWithin that reads, then adds in a second step", async () => {
    const failures = await failingCases(
      mutant((inner) => ({
        addWithin: async (increments, limits) => {
          await inner.addWithin({}, limits); // validates the limits, adds nothing
          const current = await inner.get(Object.keys(increments));
          await new Promise((resolve) => setTimeout(resolve, 1));
          if (Object.entries(increments).some(([k, d]) => k in limits && current[k]! + d > limits[k]!)) return false;
          await inner.add(increments);
          return true;
        },
      })),
    );
    expect(failures.sort()).toEqual([
      "concurrent addWithin calls from several handles against a sum limit never take it past the limit",
      "concurrent addWithin calls from several handles against one call limit: exactly as many fit as the limit allows",
    ]);
  });

  it("an addWithin that adds the counters that fit and leaves the others", async () => {
    const failures = await failingCases(
      mutant((inner) => ({
        addWithin: async (increments, limits) => {
          let all = true;
          for (const [k, d] of Object.entries(increments)) all = (await inner.addWithin({ [k]: d }, k in limits ? { [k]: limits[k]! } : {})) && all;
          return all;
        },
      })),
    );
    expect(failures.some((t) => t.startsWith("addWithin adds nothing, and says false"))).toBe(true);
  });

  it("a get that leaves out counters never added", async () => {
    const failures = await failingCases(mutant((inner) => ({ get: async (keys) => Object.fromEntries(Object.entries(await inner.get(keys)).filter(([, v]) => v !== 0)) })));
    expect(failures.some((t) => t.startsWith("get gives every requested key once"))).toBe(true);
  });

  it("an add that takes a batch's valid increments and drops the invalid ones", async () => {
    const failures = await failingCases(
      mutant((inner) => ({ add: (increments) => inner.add(Object.fromEntries(Object.entries(increments ?? {}).filter(([, v]) => Number.isFinite(v)))) })),
    );
    expect(failures.some((t) => t.startsWith("refuses an add with a NaN increment"))).toBe(true);
  });
});
