import { z } from "zod";
import { EartConfigError } from "../errors.js";
import { AgentIdentitySchema } from "../identity/registry.js";
import { parseOptions } from "../internal/options.js";
import { BudgetSchema } from "../decisions/records.js";
import { compileRules, describeRules, parseRuleSet, RuleIdSchema, RuleToolsSchema, type PolicyDescription, type RuleSetKind } from "./rules.js";

/**
 * Budgets and rate limits: rules over counters of calls and of a summed numeric argument, per
 * thread or across threads per agent, user or agent+user, in fixed windows. Counters live in a
 * {@link BudgetStore}; per-thread ones fall back to graph state (the `budget` channel) only when
 * no store is given.
 */

const Name = z.string().min(1, "must be a non-empty string");

/** One budget rule, as written by the developer. */
export const BudgetRuleSchema = z
  .object({
    /** Unique among the rules; part of every counter key. */
    id: RuleIdSchema,
    /** Tool names the budget counts; `"*"` for every tool. */
    tools: RuleToolsSchema,
    /**
     * Whose calls are counted together: `thread` per thread; `agent`, `user` and `agent+user`
     * across threads. All are counted in the store; `thread` in graph state when there is none.
     */
    scope: z.enum(["thread", "agent", "user", "agent+user"]),
    /** Fixed window: the UTC day, the UTC hour, or buckets of N milliseconds (`floor(now / N)`). */
    window: z.union([z.literal("day"), z.literal("hour"), z.number().int().positive()]),
    /** At most this many calls in the window. */
    maxCalls: z.number().int().nonnegative().optional(),
    /** At most this sum of a numeric argument in the window (e.g. `{ arg: "amount", max: 2000 }`). */
    maxSum: z.object({ arg: Name, max: z.number().nonnegative() }).strict().optional(),
    /** What an exceeding call gets. */
    onExceed: z.enum(["deny", "require_approval"]),
    /** Roles that may approve an exceeding call; required for `require_approval`. */
    approverRoles: z.array(Name).min(1).optional(),
    /** Why, as shown to the model, the approver and the audit log. */
    reason: Name.optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    if (rule.maxCalls === undefined && rule.maxSum === undefined) {
      ctx.addIssue({ code: "custom", path: ["maxCalls"], message: "a budget rule must set maxCalls, maxSum or both" });
    }
    if (rule.onExceed === "require_approval" && !rule.approverRoles) {
      ctx.addIssue({ code: "custom", path: ["approverRoles"], message: "a require_approval budget must name approverRoles" });
    }
    if (rule.onExceed !== "require_approval" && rule.approverRoles !== undefined) {
      ctx.addIssue({ code: "custom", path: ["approverRoles"], message: "only a require_approval budget can name approverRoles" });
    }
  });

/** A budget rule as passed to {@link defineBudgets}. */
export type BudgetRuleInput = z.input<typeof BudgetRuleSchema>;
type BudgetRule = z.output<typeof BudgetRuleSchema>;

const BudgetRulesSchema = z.array(BudgetRuleSchema);
const BUDGETS: RuleSetKind = { definition: "budget rule", rule: "budget rule", rulesAt: "root", quoteRuleId: true };

/** The call a budget is asked about or charged for. `threadCounters` is the thread's `budget` state. */
export const BudgetRequestSchema = z.object({
  identity: AgentIdentitySchema,
  threadId: Name,
  tool: z.object({ name: Name, args: z.record(z.string(), z.unknown()) }),
  threadCounters: BudgetSchema,
  /**
   * For `check`: calls of the same model message already let through (allowed or sent for
   * approval), which count as if charged, so that three $90 refunds in one message cannot each
   * fit a $150 budget on their own.
   */
  pending: z
    .array(
      z.object({
        name: Name,
        args: z.record(z.string(), z.unknown()),
        /** Already reserved in the store (`reserve`): counted there, so not again here. */
        reserved: z.boolean().optional(),
      }),
    )
    .optional(),
});
export type BudgetRequest = z.output<typeof BudgetRequestSchema>;

/**
 * What {@link BudgetGuard.check} says about a call that would exceed a budget. `deny` wins over
 * `require_approval`; `budgetIds` and `reasons` name only the budgets behind the effect.
 * `evaluationError` is set when the budget could not be evaluated (store or clock failure), which
 * is a deny (fail closed).
 */
export const BudgetVerdictSchema = z.object({
  effect: z.enum(["deny", "require_approval"]),
  budgetIds: z.array(z.string()),
  reasons: z.array(z.string()),
  approverRoles: z.array(z.string()).min(1).optional(),
  evaluationError: z.boolean().optional(),
});
export type BudgetVerdict = z.output<typeof BudgetVerdictSchema>;

/**
 * Where cross-thread counters live. Every requested key is in the result of `get` (0 when never
 * added); `add` adds every increment of the batch, or none of them.
 * @example
 * ```ts
 * await store.add({ "refunds|support-agent|2025-03-10|sum": 740 });
 * (await store.get(["refunds|support-agent|2025-03-10|sum"]))["refunds|support-agent|2025-03-10|sum"]; // 740
 * ```
 */
export interface BudgetStore {
  get(keys: string[]): Promise<Record<string, number>>;
  add(increments: Record<string, number>): Promise<void>;
  /**
   * Adds every increment of the batch only if no counter named in `limits` would then exceed its
   * limit, atomically (one transaction, also across processes for the SQLite and PostgreSQL
   * stores): `true` when added, `false` (nothing changed) otherwise. How concurrent threads
   * reserve one budget without both fitting.
   */
  addWithin(increments: Record<string, number>, limits: Record<string, number>): Promise<boolean>;
}

/**
 * Counts and checks budgets. Built by {@link defineBudgets}.
 * @example
 * ```ts
 * const verdict = await budgets.check({ identity, threadId, tool, threadCounters: state.budget });
 * if (!verdict) { await run(tool); const update = await budgets.charge({ identity, threadId, tool, threadCounters: state.budget }); }
 * ```
 */
export interface BudgetGuard {
  /** Content hash of the rules. */
  readonly version: string;
  /**
   * Would this call exceed a budget if it ran? Counts what has been charged so far plus this call.
   * Never writes. `undefined` means within every budget.
   */
  check(req: BudgetRequest): Promise<BudgetVerdict | undefined>;
  /**
   * Checks a call and, when it fits, reserves its cross-thread counters in the store atomically
   * (`BudgetStore.addWithin`), so that concurrent threads cannot both fit one budget. `only:
   * "deny"` enforces only budgets that deny (a human approved past those that ask for approval).
   * `reserved` says whether the store was charged; per-thread counters are charged by `charge`.
   */
  reserve(req: BudgetRequest, options?: { only?: "deny" }): Promise<{ verdict?: BudgetVerdict; reserved: boolean }>;
  /**
   * Records an executed call: adds the cross-thread counters in the store (one atomic batch),
   * unless they were reserved (`crossThread: false`), and returns the new totals of the touched
   * per-thread counters, to merge into the `budget` channel.
   */
  charge(req: BudgetRequest, options?: { crossThread?: boolean }): Promise<Record<string, number>>;
  /**
   * What the budgets name, read-only, in the shape of a policy's description: each rule's tools,
   * its `onExceed` as `effect`, and its approver roles; for construction checks (a tool the agent
   * does not have, an approver role nobody holds). Never read by `check`, `reserve` or `charge`.
   * Optional: a guard without it is not cross-checked. Guards from {@link defineBudgets} have it.
   */
  describe?(): PolicyDescription;
}

const isFunction = (v: unknown): v is (...args: never[]) => unknown => typeof v === "function";

const BudgetStoreOption = z.custom<BudgetStore>(
  (v) => ["get", "add", "addWithin"].every((m) => typeof (v as Record<string, unknown>)?.[m] === "function"),
  "must be a BudgetStore (get, add and addWithin)",
);

const BudgetOptionsSchema = z
  .object({
    /**
     * Where counters live; required when a rule's scope is not `thread`. Give one for per-thread
     * rules too: without it they are counted in graph state, which callers of the thread API can
     * reach (eart refuses their writes and forks, and its counters only rise).
     */
    store: BudgetStoreOption.optional(),
    /** Current time, for the windows; `() => new Date()` when absent. */
    clock: z.custom<() => Date>(isFunction, "must be a function returning a Date").optional(),
  })
  .strict();

/** Options of {@link defineBudgets}. */
export type BudgetOptions = z.input<typeof BudgetOptionsSchema>;

// Counter keys are `rule|kind|scope|window|calls` in a store, `rule|scope|window|calls` in a
// thread's state: escape the separators inside ids so that two different (rule, scope) pairs can
// never share a key. Ordinary ids are unchanged.
const keyPart = (s: string): string => s.replace(/[%|:]/g, (c) => encodeURIComponent(c));

function scopeKey(rule: BudgetRule, req: BudgetRequest): string {
  switch (rule.scope) {
    case "thread":
      return keyPart(req.threadId);
    case "agent":
      return keyPart(req.identity.id);
    case "user":
      return keyPart(req.identity.onBehalfOf.id);
    case "agent+user":
      return `${keyPart(req.identity.id)}:${keyPart(req.identity.onBehalfOf.id)}`;
  }
}

function windowKey(window: BudgetRule["window"], now: Date): string {
  const iso = now.toISOString();
  if (window === "day") return iso.slice(0, 10);
  if (window === "hour") return iso.slice(0, 13);
  return String(Math.floor(now.getTime() / window));
}

const windowText = (w: BudgetRule["window"]) => (w === "day" ? "UTC day" : w === "hour" ? "UTC hour" : `${w} ms window`);
const scopeText = (s: BudgetRule["scope"]) => (s === "agent+user" ? "agent and user" : s);

/** The amount a call adds to a `maxSum` budget, or undefined when it cannot be measured. */
function amountOf(rule: BudgetRule, args: Record<string, unknown>): number | undefined {
  const value = rule.maxSum ? args[rule.maxSum.arg] : undefined;
  // Negative amounts would let a call refill its own budget: they are as unmeasurable as a string.
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : undefined;
}

interface Exceeded {
  rule: BudgetRule;
  effect: BudgetVerdict["effect"];
  reason: string;
}

function combine(exceeded: Exceeded[]): BudgetVerdict | undefined {
  if (exceeded.length === 0) return undefined;
  const denies = exceeded.filter((e) => e.effect === "deny");
  const deciding = denies.length > 0 ? denies : exceeded;
  const verdict: BudgetVerdict = {
    effect: denies.length > 0 ? "deny" : "require_approval",
    budgetIds: deciding.map((e) => e.rule.id),
    reasons: deciding.map((e) => e.reason),
  };
  if (verdict.effect === "require_approval") {
    verdict.approverRoles = [...new Set(deciding.flatMap((e) => e.rule.approverRoles ?? []))];
  }
  return verdict;
}

/**
 * Defines budgets: limits on the number of calls of tools and on a summed numeric argument, per
 * thread or per agent / user / agent+user across threads, in fixed UTC-day, UTC-hour or N-ms
 * windows. Exceeding a budget yields `deny` or `require_approval`, as the rule says; a call whose
 * summed argument is missing, not a finite number, or negative is denied (fail closed).
 *
 * Counter keys in the store are `${ruleId}|${kind}|${scopeKey}|${windowKey}|calls` and `…|sum`,
 * where kind is the rule's scope (`thread`, `agent`, `user`, `agent+user`), scopeKey is the thread
 * id, the agent id, the user id or `agent:user`, and windowKey is `2025-03-10`, `2025-03-10T13` or
 * `floor(now / N)`. Counters of earlier versions, keyed without the kind, are read and counted
 * too, so an upgrade restarts no window. Counters are in `options.store` (required when any rule
 * is cross-thread); without a store, per-thread counters are in `threadCounters` (the thread's
 * `budget` state), keyed `${ruleId}|${threadId}|${windowKey}|…`.
 *
 * The rules are compiled as a typed policy's are (one compiler): the same checks of ids and tools,
 * the same errors, the same lookup by tool (`"*"` rules count every tool), a content-hash
 * `version`, and a read-only `describe()` in the shape of a policy's description.
 *
 * Throws {@link PolicyDefinitionError} naming the bad rule, or {@link EartConfigError} naming the bad
 * option.
 * @example
 * ```ts
 * const budgets = defineBudgets(
 *   [
 *     { id: "refunds.daily", tools: ["issue_refund"], scope: "agent", window: "day",
 *       maxSum: { arg: "amount", max: 2000 }, onExceed: "deny", reason: "At most $2,000 refunded per agent per day" },
 *     { id: "lookups.burst", tools: ["lookup_order"], scope: "thread", window: 60_000,
 *       maxCalls: 10, onExceed: "require_approval", approverRoles: ["supervisor"] },
 *   ],
 *   { store: new SqliteBudgetStore({ path: ".eart/eart.sqlite" }) },
 * );
 * ```
 */
export function defineBudgets(rules: BudgetRuleInput[], options?: BudgetOptions): BudgetGuard {
  const compiled: BudgetRule[] = parseRuleSet(BudgetRulesSchema, rules, BUDGETS);
  const { rulesFor, version } = compileRules(compiled, {
    kind: BUDGETS,
    fingerprint: (r) => ({
      scope: r.scope,
      window: r.window,
      maxCalls: r.maxCalls ?? null,
      maxSum: r.maxSum ?? null,
      onExceed: r.onExceed,
      approverRoles: r.approverRoles ?? null,
      reason: r.reason ?? null,
    }),
  });
  const { store, clock = () => new Date() } = parseOptions(BudgetOptionsSchema, options ?? {});
  const crossThread = compiled.find((r) => r.scope !== "thread");
  if (crossThread && !store) {
    throw new EartConfigError("store", `budget "${crossThread.id}" has scope "${crossThread.scope}" and needs a BudgetStore`, {
      ruleId: crossThread.id,
    });
  }

  // With a store, every counter lives there, per-thread ones too (keyed by thread id): graph state
  // is writable by callers of the thread API, the store is not. Without one (only per-thread
  // rules), they are counted in the thread's `budget` channel, whose counters only rise.
  const inStore = (rule: BudgetRule) => store !== undefined || rule.scope !== "thread";

  const description = describeRules(
    "budgets",
    compiled.map((r) => ({ id: r.id, tools: r.tools, effect: r.onExceed, approverRoles: r.approverRoles })),
  );

  const now = (): Date => {
    const at = clock();
    if (!(at instanceof Date) || Number.isNaN(at.getTime())) throw new EartConfigError("clock", "must return a valid Date");
    return at;
  };

  const parseRequest = (what: string, req: unknown): BudgetRequest => {
    const result = BudgetRequestSchema.safeParse(req);
    if (!result.success) {
      const issue = result.error.issues[0]!;
      throw new EartConfigError("request", `invalid ${what} request at ${issue.path.join(".") || "(root)"}: ${issue.message}`);
    }
    return result.data;
  };

  // In the store a key names the scope's kind: one rule id counted per thread by one guard and per
  // user by another sharing the store must not share counters (a thread named after a user would
  // spend that user's budget). The thread's state holds only per-thread counters: no kind there.
  const baseKey = (rule: BudgetRule, req: BudgetRequest, at: Date) =>
    `${keyPart(rule.id)}|${inStore(rule) ? `${rule.scope}|` : ""}${scopeKey(rule, req)}|${windowKey(rule.window, at)}`;
  // The same counter as versions before the kind was named kept it (one field fewer, so never
  // another counter's key): still read and counted, so an upgrade within a window restarts no
  // budget. Nothing writes these keys any more.
  const legacyKey = (key: string) => {
    const [rule, , ...rest] = key.split("|");
    return [rule, ...rest].join("|");
  };

  const within = (rule: BudgetRule) => `per ${scopeText(rule.scope)} per ${windowText(rule.window)}`;

  /** The cross-thread counters a call adds now, and the limits of the rules `enforced` picks. */
  const storeBatch = (req: BudgetRequest, rules: BudgetRule[], enforced: (rule: BudgetRule) => boolean) => {
    const at = now();
    const increments: Record<string, number> = {};
    const limits: Record<string, number> = {};
    for (const rule of rules) {
      if (!inStore(rule)) continue;
      const base = baseKey(rule, req, at);
      if (rule.maxCalls !== undefined) {
        increments[`${base}|calls`] = (increments[`${base}|calls`] ?? 0) + 1;
        if (enforced(rule)) limits[`${base}|calls`] = rule.maxCalls;
      }
      if (rule.maxSum) {
        // An amount that cannot be measured spends the whole budget (check denies it anyway).
        increments[`${base}|sum`] = (increments[`${base}|sum`] ?? 0) + (amountOf(rule, req.tool.args) ?? rule.maxSum.max);
        if (enforced(rule)) limits[`${base}|sum`] = rule.maxSum.max;
      }
    }
    return { increments, limits };
  };

  /**
   * What the budgets say about a call, and the counter each store key had under its key of
   * before (reserve lowers its limits by it).
   */
  async function evaluate(request: unknown): Promise<{ verdict: BudgetVerdict | undefined; legacy: (key: string) => number }> {
    const req = parseRequest("check", request);
    const rules = rulesFor(req.tool.name);
    if (rules.length === 0) return { verdict: undefined, legacy: () => 0 };
    let counters: (key: string) => number;
    let legacy: (key: string) => number;
    let bases: string[];
    try {
      const at = now();
      bases = rules.map((r) => baseKey(r, req, at));
      const storeKeys = rules.flatMap((r, i) =>
        !inStore(r) ? [] : [...(r.maxCalls !== undefined ? [`${bases[i]}|calls`] : []), ...(r.maxSum ? [`${bases[i]}|sum`] : [])],
      );
      const stored = storeKeys.length > 0 ? await store!.get([...storeKeys, ...storeKeys.map(legacyKey)]) : {};
      const threadKeys = new Set(rules.flatMap((r, i) => (!inStore(r) ? [`${bases[i]}|calls`, `${bases[i]}|sum`] : [])));
      const valueOf = (key: string, value: unknown) => {
        if (value === undefined) return 0;
        if (typeof value !== "number" || !Number.isFinite(value)) throw new Error(`counter ${key} is not a finite number`);
        return value;
      };
      legacy = (key) => valueOf(legacyKey(key), stored[legacyKey(key)]);
      counters = (key) => (threadKeys.has(key) ? valueOf(key, req.threadCounters[key]) : valueOf(key, stored[key]) + legacy(key));
      // Read every counter now, so a malformed one fails here, inside the fail-closed block.
      for (const key of [...storeKeys, ...threadKeys]) counters(key);
    } catch (error) {
      const verdict: BudgetVerdict = {
        effect: "deny",
        budgetIds: rules.map((r) => r.id),
        reasons: [`budgets could not be evaluated: ${(error as Error)?.message ?? String(error)}`],
        evaluationError: true,
      };
      return { verdict, legacy: () => 0 };
    }

    // Earlier calls of the same message count as charged (an unmeasurable amount spends the
    // whole budget, as `charge` would).
    const earlier = (rule: BudgetRule) => (req.pending ?? []).filter((p) => rulesFor(p.name).includes(rule) && (!inStore(rule) || !p.reserved));
    const earlierSum = (rule: BudgetRule) => earlier(rule).reduce((total, p) => total + (amountOf(rule, p.args) ?? rule.maxSum!.max), 0);
    const exceeded: Exceeded[] = [];
    rules.forEach((rule, i) => {
      const details: string[] = [];
      if (rule.maxSum) {
        const amount = amountOf(rule, req.tool.args);
        if (amount === undefined) {
          exceeded.push({
            rule,
            effect: "deny",
            reason:
              `budget "${rule.id}": argument "${rule.maxSum.arg}" of ${req.tool.name} is missing, not a finite number or negative, ` +
              `so the call cannot be counted against its limit of ${rule.maxSum.max} (denied)`,
          });
          return;
        }
        const sum = counters(`${bases[i]}|sum`) + earlierSum(rule);
        if (sum + amount > rule.maxSum.max) {
          details.push(
            `${rule.maxSum.arg} ${amount} would bring the total to ${sum + amount}, over the limit of ${rule.maxSum.max} ${within(rule)}`,
          );
        }
      }
      if (rule.maxCalls !== undefined) {
        const calls = counters(`${bases[i]}|calls`) + earlier(rule).length;
        if (calls + 1 > rule.maxCalls) details.push(`this would be call ${calls + 1}, over the limit of ${rule.maxCalls} ${within(rule)}`);
      }
      if (details.length > 0) {
        exceeded.push({ rule, effect: rule.onExceed, reason: rule.reason ?? `budget "${rule.id}": ${details.join("; ")}` });
      }
    });
    return { verdict: combine(exceeded), legacy };
  }

  const guard: BudgetGuard = {
    version,
    describe: () => description,

    async reserve(request, options = {}) {
      const req = parseRequest("reserve", request);
      const cross = rulesFor(req.tool.name).filter(inStore);
      const enforced = (rule: BudgetRule) => options.only !== "deny" || rule.onExceed === "deny";
      // Read, then add only within the limits in one transaction; a concurrent reservation that
      // got there first makes the add fail, and the next read sees it.
      for (let attempt = 0; attempt < 5; attempt++) {
        const { verdict, legacy } = await evaluate(request);
        const binding = options.only === "deny" ? (verdict?.effect === "deny" ? verdict : undefined) : verdict;
        if (binding) return { verdict: binding, reserved: false };
        if (cross.length === 0) return { reserved: false };
        const { increments, limits } = storeBatch(req, cross, enforced);
        for (const key of Object.keys(limits)) limits[key] = limits[key]! - legacy(key);
        if (await store!.addWithin(increments, limits)) return { reserved: true };
      }
      return {
        verdict: { effect: "deny", budgetIds: cross.map((r) => r.id), reasons: ["budgets stayed contended: the call could not be reserved (denied)"], evaluationError: true },
        reserved: false,
      };
    },

    async check(request) {
      return (await evaluate(request)).verdict;
    },

    async charge(request, options = {}) {
      const req = parseRequest("charge", request);
      const rules = rulesFor(req.tool.name);
      if (rules.length === 0) return {};
      const at = now();
      const threadUpdate: Record<string, number> = {};
      const increments: Record<string, number> = {};
      const add = (rule: BudgetRule, key: string, delta: number) => {
        if (!inStore(rule)) threadUpdate[key] = (threadUpdate[key] ?? req.threadCounters[key] ?? 0) + delta;
        else if (options.crossThread !== false) increments[key] = (increments[key] ?? 0) + delta;
      };
      for (const rule of rules) {
        const base = baseKey(rule, req, at);
        if (rule.maxCalls !== undefined) add(rule, `${base}|calls`, 1);
        // A call that ran although its amount cannot be measured (check denies it) spends the
        // whole budget for the window: fail closed rather than count it as nothing.
        if (rule.maxSum) add(rule, `${base}|sum`, amountOf(rule, req.tool.args) ?? rule.maxSum.max);
      }
      if (Object.keys(increments).length > 0) await store!.add(increments);
      return threadUpdate;
    },
  };
  return guard;
}

const KeysSchema = z.array(z.string());
const IncrementsSchema = z.record(z.string(), z.number().refine(Number.isFinite, "must be a finite number"));

export function parseKeys(keys: unknown): string[] {
  const parsed = KeysSchema.safeParse(keys);
  if (!parsed.success) throw new EartConfigError("keys", parsed.error.issues[0]?.message ?? "must be an array of strings");
  return [...new Set(parsed.data)];
}

/** Entries of a batch, validated, sorted by key so concurrent batches lock rows in one order. */
export function parseIncrements(increments: unknown): [string, number][] {
  const parsed = IncrementsSchema.safeParse(increments);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new EartConfigError("increments", `${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  return Object.entries(parsed.data).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The limits of a batch, validated. */
export function parseLimits(limits: unknown): Map<string, number> {
  const parsed = IncrementsSchema.safeParse(limits);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new EartConfigError("limits", `${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  return new Map(Object.entries(parsed.data));
}

/** Whether adding `entries` to `current` keeps every limited counter within its limit. */
export const fits = (entries: [string, number][], limits: Map<string, number>, current: (key: string) => number) =>
  entries.every(([key, delta]) => !limits.has(key) || current(key) + delta <= limits.get(key)!);

export const withZeros = (keys: string[], found: Iterable<[string, number]>): Record<string, number> => {
  const out: Record<string, number> = Object.fromEntries(keys.map((k) => [k, 0]));
  for (const [k, v] of found) out[k] = v;
  return out;
};

/**
 * Budget counters in memory: for tests and single-process runs.
 * @example
 * ```ts
 * const budgets = defineBudgets(rules, { store: new MemoryBudgetStore() });
 * ```
 */
export class MemoryBudgetStore implements BudgetStore {
  readonly #values = new Map<string, number>();

  async get(keys: string[]): Promise<Record<string, number>> {
    const list = parseKeys(keys);
    return withZeros(
      list,
      list.flatMap((k): [string, number][] => (this.#values.has(k) ? [[k, this.#values.get(k)!]] : [])),
    );
  }

  async add(increments: Record<string, number>): Promise<void> {
    for (const [key, delta] of parseIncrements(increments)) this.#values.set(key, (this.#values.get(key) ?? 0) + delta);
  }

  async addWithin(increments: Record<string, number>, limits: Record<string, number>): Promise<boolean> {
    const entries = parseIncrements(increments);
    // No await between the check and the writes: atomic in this process.
    if (!fits(entries, parseLimits(limits), (k) => this.#values.get(k) ?? 0)) return false;
    for (const [key, delta] of entries) this.#values.set(key, (this.#values.get(key) ?? 0) + delta);
    return true;
  }
}

/** Option schema: a {@link BudgetGuard} (from `defineBudgets`). */
export const BudgetGuardOption = z.custom<BudgetGuard>(
  (v) => ["check", "reserve", "charge"].every((m) => typeof (v as unknown as Record<string, unknown>)?.[m] === "function"),
  "must be a BudgetGuard (defineBudgets)",
);
