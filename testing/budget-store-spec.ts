import { randomUUID } from "node:crypto";
import { EartConfigError } from "../src/errors.js";
import type { BudgetStore } from "../src/policy/budget.js";
import { withHandles } from "./handles.js";
import type { SpecRunner } from "./policy-engine-spec.js";

/** What a budget store's test tells the spec about it. */
export interface BudgetStoreSpecOptions {
  /**
   * Another handle on the same storage (another connection pool or database connection): used
   * for adds from several handles at once and for reading back. Without it the concurrent cases
   * run on one handle and the reopen case is not run.
   */
  reopen?: (store: BudgetStore) => BudgetStore | Promise<BudgetStore>;
  /**
   * The store is only ever used by one process (an in-memory store): said so, the suite runs
   * without `reopen`. Without either, it fails: shared counters must hold their limits across handles.
   */
  singleProcess?: boolean;
}

/** A refused call's error, whether the implementation throws or rejects; `"resolved"` if it did neither. */
const refusal = async (call: () => unknown): Promise<unknown> =>
  Promise.resolve()
    .then(call)
    .then(
      () => "resolved",
      (error: unknown) => error,
    );

/**
 * The conformance suite every {@link BudgetStore} runs: `get` gives every requested counter (0
 * for one never added, each key once, nothing for no keys); `add` sums each counter of a batch,
 * negative and fractional increments included, and loses nothing to concurrent batches from
 * several handles; `addWithin` adds the whole batch when every counter it adds to and names in
 * `limits` stays at or under its limit, and nothing otherwise, and concurrent `addWithin` calls
 * against one limit never take a counter past it; invalid keys, increments and limits refused with
 * {@link EartConfigError} naming the argument, and nothing added; and, for stores that pass
 * `reopen`, a second handle that sees the counters and shares their limits. Counter keys are
 * unique per test, so stores on a shared database can run it. Increments are binary fractions, so
 * a store that sums in doubles sums them exactly.
 * @example
 * ```ts
 * import { describe, it, expect } from "vitest";
 * budgetStoreSpec("MemoryBudgetStore", () => new MemoryBudgetStore(), { describe, it, expect });
 * ```
 */
export function budgetStoreSpec(
  name: string,
  makeStore: () => BudgetStore | Promise<BudgetStore>,
  { describe, it, expect }: SpecRunner,
  options: BudgetStoreSpecOptions = {},
): void {
  const { reopen, singleProcess } = options;

  /** Runs a test body with fresh counter keys; closes every store it opened. */
  const test = (
    title: string,
    body: (ctx: { open: () => Promise<BudgetStore>; again: (store: BudgetStore) => Promise<BudgetStore>; key: (label: string) => string }) => Promise<void>,
  ) =>
    it(title, () => {
      const run = `spec-${randomUUID()}`;
      // Shaped like the keys `defineBudgets` writes: rule|scope|window|counter.
      return withHandles(makeStore, reopen, (handles) => body({ ...handles, key: (label) => `${run}|${label}|2025-03-10|calls` }));
    });

  describe(`budgetStoreSpec: ${name}`, () => {
    if (!reopen && !singleProcess) {
      it("is given a second handle on the same storage (reopen), or said to be used by one process only (singleProcess)", () => {
        throw new Error("budgetStoreSpec needs reopen (another handle on the same storage: limits must hold across processes), or singleProcess: true for a store no other process uses");
      });
    }
    test("get gives every requested key once, 0 for a counter never added; no keys give no entries", async ({ open, key }) => {
      const store = await open();
      const [a, b] = [key("a"), key("b")];
      expect(await store.get([a, b])).toEqual({ [a]: 0, [b]: 0 });
      expect(await store.get([a, a, b, a])).toEqual({ [a]: 0, [b]: 0 });
      expect(await store.get([])).toEqual({});
      await store.add({ [a]: 2 });
      expect(await store.get([b, a])).toEqual({ [a]: 2, [b]: 0 });
      expect(await store.get([a])).toEqual({ [a]: 2 });
    });

    test("add sums each counter of a batch, across batches, negative and fractional increments included", async ({ open, key }) => {
      const store = await open();
      const [calls, sum, refund] = [key("calls"), key("sum"), key("refund")];
      await store.add({ [calls]: 1, [sum]: 740.5 });
      await store.add({ [calls]: 1, [sum]: 0.25 });
      await store.add({ [sum]: -100 });
      await store.add({ [refund]: 0 });
      expect(await store.get([calls, sum, refund])).toEqual({ [calls]: 2, [sum]: 640.75, [refund]: 0 });
    });

    test("small increments are counted, not rounded away: a thousand of 2^-10 sum to 1 and meet a limit", async ({ open, key }) => {
      const store = await open();
      const [sum, capped] = [key("sum"), key("capped")];
      // Sub-cent amounts (a usage price, a token count in dollars): a store counting in cents would
      // keep 0 and let every charge through.
      for (let i = 0; i < 1_000; i++) await store.add({ [sum]: 2 ** -10 });
      expect(await store.get([sum])).toEqual({ [sum]: 1_000 * 2 ** -10 });
      let taken = 0;
      while (await store.addWithin({ [capped]: 2 ** -10 }, { [capped]: 2 ** -6 })) if (++taken > 64) break;
      expect(taken).toBe(16);
      expect(await store.get([capped])).toEqual({ [capped]: 2 ** -6 });
    });

    test("an empty batch changes nothing: add resolves, addWithin says true", async ({ open, key }) => {
      const store = await open();
      const a = key("a");
      await store.add({});
      expect(await store.addWithin({}, { [a]: 0 })).toBe(true);
      expect(await store.get([a])).toEqual({ [a]: 0 });
    });

    test("concurrent adds from several handles lose no increment", async ({ open, again, key }) => {
      const store = await open();
      const handles = [store, await again(store), await again(store)];
      const [calls, sum] = [key("calls"), key("sum")];
      const callers = 24;
      await Promise.all(Array.from({ length: callers }, (_, i) => handles[i % handles.length]!.add({ [calls]: 1, [sum]: 2.5 })));
      expect(await store.get([calls, sum])).toEqual({ [calls]: callers, [sum]: callers * 2.5 });
    });

    test("addWithin adds the whole batch when every limited counter stays within its limit, up to the limit exactly", async ({ open, key }) => {
      const store = await open();
      const [calls, sum, free] = [key("calls"), key("sum"), key("free")];
      await store.add({ [sum]: 60 });
      // `free` has no limit: it is added with the batch.
      expect(await store.addWithin({ [calls]: 1, [sum]: 30, [free]: 7 }, { [calls]: 3, [sum]: 100 })).toBe(true);
      expect(await store.get([calls, sum, free])).toEqual({ [calls]: 1, [sum]: 90, [free]: 7 });
      // Reaching a limit is within it.
      expect(await store.addWithin({ [calls]: 2, [sum]: 10 }, { [calls]: 3, [sum]: 100 })).toBe(true);
      expect(await store.get([calls, sum, free])).toEqual({ [calls]: 3, [sum]: 100, [free]: 7 });
      // A limit of 0 admits increments of 0.
      const zero = key("zero");
      expect(await store.addWithin({ [zero]: 0 }, { [zero]: 0 })).toBe(true);
      expect(await store.get([zero])).toEqual({ [zero]: 0 });
    });

    test("addWithin adds nothing, and says false, when one limited counter would exceed its limit", async ({ open, key }) => {
      const store = await open();
      const [calls, sum, free, fresh] = [key("calls"), key("sum"), key("free"), key("fresh")];
      await store.add({ [calls]: 1, [sum]: 60 });
      expect(await store.addWithin({ [calls]: 1, [sum]: 50, [free]: 7, [fresh]: 1 }, { [calls]: 3, [sum]: 100 })).toBe(false);
      expect(await store.get([calls, sum, free, fresh])).toEqual({ [calls]: 1, [sum]: 60, [free]: 0, [fresh]: 0 });
      // Over by a fraction is over.
      expect(await store.addWithin({ [sum]: 40.25 }, { [sum]: 100 })).toBe(false);
      // A counter with no value yet starts from 0 against its limit.
      expect(await store.addWithin({ [fresh]: 2 }, { [fresh]: 1 })).toBe(false);
      expect(await store.get([calls, sum, free, fresh])).toEqual({ [calls]: 1, [sum]: 60, [free]: 0, [fresh]: 0 });
      expect(await store.addWithin({ [sum]: 40 }, { [sum]: 100 })).toBe(true);
      expect(await store.get([sum])).toEqual({ [sum]: 100 });
    });

    test("a counter above its limit (raised by add) takes no increment within that limit until it is back under", async ({ open, key }) => {
      const store = await open();
      const c = key("c");
      await store.add({ [c]: 10 });
      expect(await store.addWithin({ [c]: 1 }, { [c]: 5 })).toBe(false);
      expect(await store.addWithin({ [c]: 0 }, { [c]: 5 })).toBe(false);
      expect(await store.get([c])).toEqual({ [c]: 10 });
      expect(await store.addWithin({ [c]: -6 }, { [c]: 5 })).toBe(true);
      expect(await store.get([c])).toEqual({ [c]: 4 });
    });

    test("concurrent addWithin calls from several handles against one call limit: exactly as many fit as the limit allows", async ({ open, again, key }) => {
      const store = await open();
      const handles = [store, await again(store), await again(store)];
      const [calls, other] = [key("calls"), key("other")];
      const callers = 20;
      const limit = 7;
      const added = await Promise.all(
        Array.from({ length: callers }, (_, i) => handles[i % handles.length]!.addWithin({ [calls]: 1, [other]: 1 }, { [calls]: limit })),
      );
      expect(added.filter(Boolean).length).toBe(limit);
      // The unlimited counter of the batch moved only with the batches that fit.
      expect(await store.get([calls, other])).toEqual({ [calls]: limit, [other]: limit });
    });

    test("concurrent addWithin calls from several handles against a sum limit never take it past the limit", async ({ open, again, key }) => {
      const store = await open();
      const handles = [store, await again(store), await again(store)];
      const [calls, sum] = [key("calls"), key("sum")];
      await store.add({ [sum]: 10 });
      const callers = 20;
      const added = await Promise.all(
        Array.from({ length: callers }, (_, i) => handles[i % handles.length]!.addWithin({ [calls]: 1, [sum]: 15 }, { [calls]: 100, [sum]: 100 })),
      );
      // 10 + 6 × 15 = 100: six fit, the seventh would be 115.
      expect(added.filter(Boolean).length).toBe(6);
      expect(await store.get([calls, sum])).toEqual({ [calls]: 6, [sum]: 100 });
    });

    test("keys with separators, quotes and non-ASCII characters are counters like any other; a key's prefix is another counter", async ({ open, key }) => {
      const store = await open();
      const odd = key(`o'k "q" \\ % _ * : | é 日本 \u2028 \ud83d\ude00`);
      const [a, prefix, longer] = [key("a"), key("a").slice(0, -1), `${key("a")}|more`];
      await store.add({ [odd]: 3, [a]: 1 });
      expect(await store.addWithin({ [odd]: 2 }, { [odd]: 5 })).toBe(true);
      expect(await store.get([odd, a, prefix, longer])).toEqual({ [odd]: 5, [a]: 1, [prefix]: 0, [longer]: 0 });
    });

    /** A bad call, the argument it is refused for, and the counters it must leave as they were. */
    const invalid: [string, string, (store: BudgetStore, ok: string, bad: string) => unknown][] = [
      ["a get of keys that are not an array", "keys", (s, ok) => s.get(ok as unknown as string[])],
      ["a get of a key that is not a string", "keys", (s, ok) => s.get([ok, 1 as unknown as string])],
      ["a get of null", "keys", (s) => s.get(null as unknown as string[])],
      ["an add with a NaN increment", "increments", (s, ok, bad) => s.add({ [ok]: 1, [bad]: Number.NaN })],
      ["an add with an infinite increment", "increments", (s, ok, bad) => s.add({ [ok]: 1, [bad]: Infinity })],
      ["an add with a string increment", "increments", (s, ok, bad) => s.add({ [ok]: 1, [bad]: "1" as unknown as number })],
      ["an add of null", "increments", (s) => s.add(null as unknown as Record<string, number>)],
      ["an addWithin with a NaN increment", "increments", (s, ok, bad) => s.addWithin({ [ok]: 1, [bad]: Number.NaN }, {})],
      ["an addWithin with a NaN limit", "limits", (s, ok) => s.addWithin({ [ok]: 1 }, { [ok]: Number.NaN })],
      ["an addWithin with an infinite limit", "limits", (s, ok) => s.addWithin({ [ok]: 1 }, { [ok]: Infinity })],
      ["an addWithin with a string limit", "limits", (s, ok) => s.addWithin({ [ok]: 1 }, { [ok]: "5" as unknown as number })],
      ["an addWithin with null limits", "limits", (s, ok) => s.addWithin({ [ok]: 1 }, null as unknown as Record<string, number>)],
    ];
    for (const [label, field, call] of invalid) {
      test(`refuses ${label} with EartConfigError (field "${field}") and adds nothing`, async ({ open, key }) => {
        const store = await open();
        const ok = key("ok");
        await store.add({ [ok]: 2 });
        const error = await refusal(() => call(store, ok, key("bad")));
        expect(error instanceof EartConfigError).toBe(true);
        expect((error as EartConfigError).code).toBe("config_invalid");
        expect((error as EartConfigError).field).toBe(field);
        expect(await store.get([ok, key("bad")])).toEqual({ [ok]: 2, [key("bad")]: 0 });
        // The store still works after a refusal.
        expect(await store.addWithin({ [ok]: 1 }, { [ok]: 3 })).toBe(true);
        expect(await store.get([ok])).toEqual({ [ok]: 3 });
      });
    }

    if (reopen) {
      test("another handle on the same storage sees the counters and shares their limits", async ({ open, again, key }) => {
        const store = await open();
        const [calls, sum] = [key("calls"), key("sum")];
        await store.add({ [calls]: 1, [sum]: 40 });
        const other = await again(store);
        expect(other === store).toBe(false);
        expect(await other.get([calls, sum])).toEqual({ [calls]: 1, [sum]: 40 });
        expect(await other.addWithin({ [calls]: 1, [sum]: 60 }, { [sum]: 100 })).toBe(true);
        expect(await store.addWithin({ [calls]: 1, [sum]: 0.5 }, { [sum]: 100 })).toBe(false);
        await store.add({ [calls]: 1 });
        expect(await other.get([calls, sum])).toEqual({ [calls]: 3, [sum]: 100 });
        const third = await again(store);
        expect(await third.get([calls, sum])).toEqual({ [calls]: 3, [sum]: 100 });
      });
    }
  });
}
