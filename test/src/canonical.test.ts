import { canonicalize } from "json-canonicalize";
import { describe, expect, it } from "vitest";
import { EartError, InputTooDeepError, toolCallDigest } from "eart";
import { canonicalJson, jsonProblem, plainCanonicalJson } from "../../src/internal/canonical.js";
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

/** `{ a: { a: … "x" } }` with `levels` nested objects (or arrays). */
const nested = (levels: number, kind: "object" | "array" = "object"): unknown => {
  let v: unknown = "x";
  for (let i = 0; i < levels; i++) v = kind === "object" ? { a: v } : [v];
  return v;
};

describe("depth limit of canonical JSON and digests (512 levels)", () => {
  it.each(["object", "array"] as const)("writes %s nesting up to the limit as the reference implementation does", (kind) => {
    const v = nested(512, kind);
    expect(canonicalJson(v)).toBe(canonicalize(v));
  });

  it.each([513, 2_000, 100_000])("refuses %i levels with a typed error, never a stack overflow", (levels) => {
    for (const kind of ["object", "array"] as const) {
      const error = (() => {
        try {
          canonicalJson(nested(levels, kind));
        } catch (e) {
          return e;
        }
        throw new Error("expected a throw");
      })();
      expect(error).toBeInstanceOf(EartError);
      expect(error).toBeInstanceOf(InputTooDeepError);
      expect(error).toMatchObject({ name: "InputTooDeepError", code: "input_too_deep", details: { limit: 512 } });
    }
  });

  it("refuses deep tool arguments in a digest with the same error", () => {
    expect(() => toolCallDigest("issue_refund", { note: nested(2_000) }, "t1")).toThrow(expect.objectContaining({ code: "input_too_deep" }));
    expect(toolCallDigest("issue_refund", { note: nested(500) }, "t1")).toMatch(/^[0-9a-f]{64}$/);
  });

  it("refuses deep nesting behind toJSON too, and still reports a cycle as a cycle", () => {
    expect(() => canonicalJson({ at: { toJSON: () => nested(100_000, "array") } })).toThrow(expect.objectContaining({ code: "input_too_deep" }));
    const cycle: Record<string, unknown> = { a: 1 };
    cycle.self = { back: cycle };
    expect(() => canonicalJson(cycle)).toThrow(/Circular/);
  });

  it("plainCanonicalJson leaves deep values to the general path instead of recursing", () => {
    expect(plainCanonicalJson(nested(100_000))).toBeUndefined();
    expect(plainCanonicalJson(nested(60))).toBe(canonicalize(nested(60)));
  });
});

describe("jsonProblem on deep values", () => {
  it("reports nesting past 512 levels as a problem by default, never a stack overflow; an explicit maxDepth still wins", () => {
    expect(jsonProblem(nested(512))).toBeUndefined();
    expect(jsonProblem(nested(100_000))).toMatchObject({ why: "is nested deeper than 512" });
    expect(jsonProblem(nested(10), { maxDepth: 4 })).toMatchObject({ path: ["a", "a", "a", "a"], why: "is nested deeper than 4" });
  });
});
