import { canonicalize } from "json-canonicalize";
import { describe, expect, it } from "vitest";
import { canonicalJson } from "eart";
import { rng } from "../support/rng.js";


describe("canonicalJson", () => {
  it("writes RFC 8785 exactly as the reference implementation, on 5,000 seeded JSON values", () => {
    const next = rng(8785);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
    const strings = ["", "a", "é", "\u2028", "\u0000\u001f", "😀", "\ud800", "\"\\/", "z", "A", "aa", "\u00e9", "\ufb33", "€"];
    const numbers = [0, -0, 1, -1, 1.5, 1e21, 1e-7, 123456789012345680000, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, -1e-7, 333333333.3333333, 4.5e15];
    const value = (depth: number): unknown => {
      const r = next();
      if (depth > 3 || r < 0.3) return pick<unknown>([...strings, ...numbers, true, false, null]);
      if (r < 0.6) return Array.from({ length: Math.floor(next() * 4) }, () => value(depth + 1));
      return Object.fromEntries(Array.from({ length: Math.floor(next() * 5) }, () => [pick(strings) + pick(["", "1", "b"]), value(depth + 1)]));
    };
    for (let i = 0; i < 5_000; i++) {
      const v = value(0);
      expect(canonicalJson(v)).toBe(canonicalize(v));
    }
  });

  it("takes the general path for what is not plain JSON", () => {
    const odd = [{ at: new Date(0) }, [undefined, 1], { toJSON: () => "x" }, { skipped: undefined, kept: 1 }];
    for (const v of odd) expect(canonicalJson(v)).toBe(canonicalize(v));
    expect(() => canonicalJson({ n: Number.NaN })).toThrow(/Non-finite/);
  });
});
