import { createRequire } from "node:module";
import type * as CedarWasm from "@cedar-policy/cedar-wasm/nodejs";
import { z } from "zod";
import { canonicalJson, hasReadableSource, jsonProblem, sha256Hex } from "../internal/canonical.js";
import { EartConfigError, PolicyDefinitionError } from "../errors.js";
import { parseOptions } from "../internal/options.js";
import { DEFAULT_DENY_POLICY_ID, MAX_APPROVAL_EXPIRY_MS, type PolicyDecision, type PolicyEngine, type PolicyRequest } from "./engine.js";

// Loaded on first use: importing eart should not pay for the Cedar runtime (about 45 ms).
let cedarWasm: typeof CedarWasm | undefined;
const cedarModule = (): typeof CedarWasm =>
  (cedarWasm ??= createRequire(import.meta.url)("@cedar-policy/cedar-wasm/nodejs") as typeof CedarWasm);

/** A Cedar entity reference, `Type::"id"` as `{ type, id }`. */
export const CedarEntityUidSchema = z.object({ type: z.string().min(1), id: z.string() }).strict();
export type CedarEntityUid = z.output<typeof CedarEntityUidSchema>;

/** One Cedar entity in the library's JSON form (`attrs` in Cedar JSON: integers, strings, sets, records...). */
export const CedarEntitySchema = z
  .object({
    uid: CedarEntityUidSchema,
    attrs: z.record(z.string(), z.unknown()).default({}),
    parents: z.array(CedarEntityUidSchema).default([]),
    tags: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();
export type CedarEntity = z.input<typeof CedarEntitySchema>;
const CedarEntityListSchema = z.array(CedarEntitySchema);

const isFunction = (v: unknown): v is (...args: never[]) => unknown => typeof v === "function";

/** Functions whose call never returns a plain value: an async function returns a Promise, a generator an iterator. */
const NOT_SYNCHRONOUS = new Set(["[object AsyncFunction]", "[object GeneratorFunction]", "[object AsyncGeneratorFunction]"]);
const SYNCHRONOUS = "must be a synchronous function: a decision cannot wait for a Promise";
/**
 * A mapper that can answer synchronously. An async function compiled down to a plain one is
 * caught at decision time instead, where a Promise it returns denies.
 */
const isSynchronousFunction = (v: unknown): boolean => isFunction(v) && !NOT_SYNCHRONOUS.has(Object.prototype.toString.call(v));

/** Configuration the mappers depend on: plain JSON, part of the version, passed frozen to every mapper. */
export type CedarPolicyConfig = Readonly<Record<string, unknown>>;

/** Maps a tool call's arguments to the Cedar resource it acts on. */
export type CedarResourceMapper = (args: Record<string, unknown>, request: PolicyRequest, config: CedarPolicyConfig) => CedarEntityUid;
/** Maps a tool call's arguments to what policies see as `context.args` (e.g. dollars to integer cents). */
export type CedarArgsMapper = (args: Record<string, unknown>, request: PolicyRequest, config: CedarPolicyConfig) => Record<string, unknown>;
/** Entities for one decision, beside the agent entity the engine builds from the identity. */
export type CedarEntitiesProvider = (request: PolicyRequest, config: CedarPolicyConfig) => CedarEntity[];

/** How deep `config` may nest. */
const MAX_CONFIG_DEPTH = 32;

const CedarPolicyEngineOptionsSchema = z
  .object({
    /** Cedar policy text, or several texts (e.g. one per file). Every policy carries a unique `@id("...")`. */
    policies: z.union([z.string(), z.array(z.string()).min(1)]),
    /** Cedar schema, as Cedar schema text or its JSON form. With a schema, policies are validated at construction and every request at decision time. */
    schema: z.union([z.string().min(1), z.record(z.string(), z.unknown())]).optional(),
    /** Entities every decision sees (e.g. a role hierarchy), or a function giving the entities one decision needs. */
    entities: z
      .union([
        z.array(CedarEntitySchema),
        z.custom<CedarEntitiesProvider>(isFunction, "must be an array of Cedar entities or a function").refine(isSynchronousFunction, SYNCHRONOUS),
      ])
      .optional(),
    /** Per tool name: the resource the call acts on. Default `Tool::"<tool name>"`. */
    resources: z.record(z.string(), z.custom<CedarResourceMapper>(isFunction, "must be a function").refine(isSynchronousFunction, SYNCHRONOUS)).default({}),
    /** Per tool name: what `context.args` holds. Default the tool arguments as they are. */
    contextArgs: z.record(z.string(), z.custom<CedarArgsMapper>(isFunction, "must be a function").refine(isSynchronousFunction, SYNCHRONOUS)).default({}),
    /**
     * What the mappers read besides the request (an exchange rate, a tenant's limits), as plain
     * JSON: part of the version, and passed frozen to every mapper as its last argument. A value
     * a mapper reads from a closure is not in its source and would not change the version.
     */
    config: z.record(z.string(), z.unknown()).optional(),
    /** A version you declare for what the engine depends on outside its options (a deploy id); folded into the version. */
    version: z.string().min(1).optional(),
  })
  .strict();

export type CedarPolicyEngineOptions = z.input<typeof CedarPolicyEngineOptionsSchema>;

/** Milliseconds per unit of an `@expires_in` duration. */
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(\d+)(ms|s|m|h|d)?$/;

/**
 * Reads `@quorum("2")`: a positive integer string (the number of distinct approvers).
 * Throws {@link PolicyDefinitionError} naming the policy for anything else.
 */
function parseQuorum(id: string, value: string | null): number {
  const quorum = value !== null && /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(quorum) || quorum < 1) {
    throw new PolicyDefinitionError(
      `Policy "${id}": @quorum must be a positive integer, e.g. @quorum("2"), not ${value === null ? "empty" : JSON.stringify(value)}`,
      id,
    );
  }
  return quorum;
}

/**
 * Reads `@expires_in("15m")`: an integer and a unit (`ms`, `s`, `m`, `h`, `d`), or a plain integer
 * of milliseconds; returns milliseconds. Throws {@link PolicyDefinitionError} naming the policy for
 * anything else, zero included.
 */
function parseExpiresIn(id: string, value: string | null): number {
  const match = value === null ? null : DURATION.exec(value);
  const ms = match ? Number(match[1]) * DURATION_UNITS[match[2] ?? "ms"]! : NaN;
  if (!Number.isSafeInteger(ms) || ms <= 0 || ms > MAX_APPROVAL_EXPIRY_MS) {
    throw new PolicyDefinitionError(
      `Policy "${id}": @expires_in must be a positive duration of at most a year such as "90s", "15m", "2h", "1d" or milliseconds ("900000"), not ${value === null ? "empty" : JSON.stringify(value)}`,
      id,
    );
  }
  return ms;
}

interface CompiledPolicy {
  id: string;
  index: number;
  effect: "permit" | "forbid";
  reason: string | undefined;
  /** Set on a permit annotated `@requires_approval("role, role")`. */
  approverRoles: string[] | undefined;
  /** Set on a permit annotated `@escalate("why")`; the why ("" when none). */
  escalate: string | undefined;
  /** `@quorum("n")` on a `@requires_approval` permit: distinct approvers needed. */
  quorum: number | undefined;
  /** `@expires_in("15m")` on a `@requires_approval` permit, in milliseconds. */
  expiresInMs: number | undefined;
}

type DetailedError = { message: string; help?: string | null; sourceLocations?: { start: number; end: number }[] };

const messageOf = (errors: readonly DetailedError[]): string =>
  errors.map((e) => (e.help ? `${e.message} (${e.help})` : e.message)).join("; ") || "unknown error";

const lineColumn = (text: string, offset: number): string => {
  const before = text.slice(0, offset).split("\n");
  return `line ${before.length}, column ${before[before.length - 1]!.length + 1}`;
};

const ID_ANNOTATION = /@id\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)/;

/**
 * The `@id` of the policy a syntax error falls in. The library's parser reports offsets only, so
 * find the longest prefix before the error that still parses (it ends just before the failing
 * policy) and read the first `@id` after it.
 */
function idAtOffset(text: string, offset: number): string | undefined {
  let start = 0;
  for (let p = text.lastIndexOf(";", offset - 1); p >= 0; p = text.lastIndexOf(";", p - 1)) {
    if (cedarModule().policySetTextToParts(text.slice(0, p + 1)).type === "success") {
      start = p + 1;
      break;
    }
  }
  const match = ID_ANNOTATION.exec(text.slice(start));
  if (!match || start + match.index > offset) return undefined;
  try {
    return JSON.parse(`"${match[1]}"`) as string;
  } catch {
    return match[1];
  }
}

function compilePolicies(texts: readonly string[]): { policies: CompiledPolicy[]; byId: Record<string, string> } {
  const policies: CompiledPolicy[] = [];
  const byId: Record<string, string> = {};
  texts.forEach((text, textIndex) => {
    const where = texts.length > 1 ? ` in policy text ${textIndex}` : "";
    const parts = cedarModule().policySetTextToParts(text);
    if (parts.type === "failure") {
      const offset = parts.errors.flatMap((e) => e.sourceLocations ?? [])[0]?.start;
      const id = offset === undefined ? undefined : idAtOffset(text, offset);
      const at = offset === undefined ? "" : ` at ${lineColumn(text, offset)}`;
      throw new PolicyDefinitionError(
        `Cedar policy ${id === undefined ? "(unknown id)" : `"${id}"`} does not parse${where}${at}: ${messageOf(parts.errors)}`,
        id,
      );
    }
    if (parts.policy_templates.length > 0) {
      const id = ID_ANNOTATION.exec(parts.policy_templates[0]!)?.[1];
      throw new PolicyDefinitionError(`Cedar policy templates are not supported${where}: ${parts.policy_templates[0]}`, id);
    }
    for (const policyText of parts.policies) {
      const json = cedarModule().policyToJson(policyText);
      if (json.type === "failure") throw new PolicyDefinitionError(`Cedar policy does not parse${where}: ${messageOf(json.errors)}`);
      const annotations = (json.json.annotations ?? {}) as Record<string, string | null>;
      const id = annotations.id;
      if (typeof id !== "string" || id.length === 0) {
        throw new PolicyDefinitionError(`Every Cedar policy needs a non-empty @id("...") annotation${where}: ${policyText}`);
      }
      if (id === DEFAULT_DENY_POLICY_ID) throw new PolicyDefinitionError(`Policy id "${id}" is reserved`, id);
      if (Object.hasOwn(byId, id)) throw new PolicyDefinitionError(`Duplicate Cedar policy id "${id}"`, id);
      const effect = json.json.effect;
      let approverRoles: string[] | undefined;
      if ("requires_approval" in annotations) {
        approverRoles = [...new Set((annotations.requires_approval ?? "").split(",").map((r) => r.trim()).filter((r) => r.length > 0))];
        if (approverRoles.length === 0) {
          throw new PolicyDefinitionError(`Policy "${id}": @requires_approval must name at least one role, e.g. @requires_approval("supervisor")`, id);
        }
      }
      const escalate = "escalate" in annotations ? (annotations.escalate ?? "") : undefined;
      if (effect === "forbid" && (approverRoles || escalate !== undefined)) {
        throw new PolicyDefinitionError(`Policy "${id}": @requires_approval and @escalate apply to permit policies only`, id);
      }
      if (approverRoles && escalate !== undefined) {
        throw new PolicyDefinitionError(`Policy "${id}": a policy cannot both @requires_approval and @escalate`, id);
      }
      for (const name of ["quorum", "expires_in"] as const) {
        if (name in annotations && !(effect === "permit" && approverRoles)) {
          throw new PolicyDefinitionError(`Policy "${id}": @${name} applies only to a permit with @requires_approval`, id);
        }
      }
      const quorum = "quorum" in annotations ? parseQuorum(id, annotations.quorum ?? null) : undefined;
      const expiresInMs = "expires_in" in annotations ? parseExpiresIn(id, annotations.expires_in ?? null) : undefined;
      const reason = annotations.reason ?? undefined;
      policies.push({ id, index: policies.length, effect, reason: reason || undefined, approverRoles, escalate, quorum, expiresInMs });
      byId[id] = policyText;
    }
  });
  return { policies, byId };
}

/** Actions declared in the schema's empty namespace: the tools a schema knows. */
function schemaActions(schema: CedarWasm.Schema): Set<string> {
  const json = cedarModule().schemaToJson(schema);
  if (json.type === "failure") throw new PolicyDefinitionError(`Cedar schema does not parse: ${messageOf(json.errors)}`);
  return new Set(Object.keys(json.json[""]?.actions ?? {}));
}

function validateAgainstSchema(schema: CedarWasm.Schema, staticPolicies: Record<string, string>): void {
  const answer = cedarModule().validate({ schema, policies: { staticPolicies }, validationSettings: { mode: "strict" } });
  if (answer.type === "failure") throw new PolicyDefinitionError(`Cedar policies or schema do not validate: ${messageOf(answer.errors)}`);
  // A warning (e.g. a policy that can never apply) is most often a typo: refuse it at load.
  const problems = [...answer.validationErrors, ...answer.validationWarnings];
  if (problems.length > 0) {
    const first = problems[0]!;
    throw new PolicyDefinitionError(
      `Cedar policy "${first.policyId}" does not validate against the schema: ${messageOf(problems.filter((p) => p.policyId === first.policyId).map((p) => p.error))}`,
      first.policyId,
    );
  }
  if (answer.otherWarnings.length > 0) throw new PolicyDefinitionError(`Cedar schema warning: ${messageOf(answer.otherWarnings)}`);
}

/** Raised inside a decision for a value that cannot go into the Cedar context; becomes a fail-closed deny. */
class CedarInputError extends Error {}

const RESERVED_KEYS = new Set(["__entity", "__extn", "__expr"]);

/**
 * Converts a JSON-like value to a Cedar value. Safe integers, strings and booleans pass; arrays
 * become sets and objects records; `null`/`undefined` record fields are left out. Anything else
 * (a non-integer number, a reserved `__entity`/`__extn` key that would let the caller forge a typed
 * Cedar value, a non-plain object) throws.
 */
function toCedarValue(value: unknown, path: string): CedarWasm.CedarValueJson {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (!Number.isSafeInteger(value)) {
        throw new CedarInputError(
          `${path} is ${value}, not an integer: Cedar has only 64-bit integers, so pass money as integer minor units (cents), or convert it in a contextArgs mapper`,
        );
      }
      return value;
    case "object": {
      if (value === null) throw new CedarInputError(`${path} is null, which Cedar cannot represent`);
      if (Array.isArray(value)) return value.map((v, i) => toCedarValue(v, `${path}[${i}]`));
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) throw new CedarInputError(`${path} is not a plain object`);
      const out: Record<string, CedarWasm.CedarValueJson> = {};
      for (const [key, v] of Object.entries(value)) {
        if (RESERVED_KEYS.has(key)) throw new CedarInputError(`${path}.${key}: the key "${key}" is reserved by Cedar's JSON format`);
        if (v === null || v === undefined) continue;
        // Defined, not assigned: assigning "__proto__" would set the prototype and drop the value.
        Object.defineProperty(out, key, { value: toCedarValue(v, `${path}.${key}`), enumerable: true, writable: true, configurable: true });
      }
      return out;
    }
    default:
      throw new CedarInputError(`${path} is a ${typeof value}, which Cedar cannot represent`);
  }
}

const uidKey = (uid: CedarEntityUid) => `${uid.type}::${JSON.stringify(uid.id)}`;
const errorMessage = (error: unknown) => (error as Error)?.message ?? String(error);

/**
 * What a mapper returned, refused when it is a Promise (or any thenable): a decision cannot wait
 * for it. Its rejection is observed, so that it cannot surface as an unhandled rejection.
 */
function synchronous<T>(value: T, what: string): T {
  let thenable = false;
  try {
    thenable = typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function";
  } catch {
    thenable = true;
  }
  if (!thenable) return value;
  try {
    Promise.resolve(value).catch(() => {});
  } catch {
    // a thenable whose `then` throws: nothing more to observe
  }
  throw new CedarInputError(`${what} returned a Promise: mappers must answer synchronously`);
}

/** A frozen deep copy of plain JSON. */
function frozenCopy<T>(value: T): T {
  if (typeof value !== "object" || value === null) return value;
  const copy = (Array.isArray(value) ? value.map(frozenCopy) : Object.fromEntries(Object.entries(value).map(([k, v]) => [k, frozenCopy(v)]))) as T;
  return Object.freeze(copy);
}

/**
 * A {@link PolicyEngine} over Cedar policies (`@cedar-policy/cedar-wasm`), with the same decision
 * semantics as {@link definePolicy}. The policy set and schema are parsed, checked and preparsed
 * once, here; each decision is one call of the library's stateful authorizer.
 *
 * **Request mapping.**
 * - principal: `Agent::"<identity.id>"`, a member of `Role::"<role>"` for each of the agent's roles
 *   (`principal in Role::"support"`). Role hierarchies come from `entities`
 *   (`Role::"support"` with parent `Role::"staff"`); `entities` may not define the principal.
 * - action: `Action::"<tool name>"`.
 * - resource: `resources[tool](args, request)`, default `Tool::"<tool name>"`.
 * - context: `{ args, sensitivity, onBehalfOf }`: `args` = the tool arguments (or
 *   `contextArgs[tool](args, request)`), `sensitivity` = the thread's sensitivity labels (a set of
 *   strings), `onBehalfOf` = the human the agent acts for, `{ id, roles }` (roles a set of
 *   strings): `context.onBehalfOf.roles.contains("vip")`.
 *
 * **Money and numbers.** Cedar has only 64-bit integers (its `decimal` cannot be compared with
 * `<`), so money is integer minor units (cents). Arguments are passed as they are; a number that
 * is not a safe integer (7.5, NaN, beyond ±2^53) is never rounded: the decision is a deny with
 * `evaluationError` and a reason naming the argument. A tool whose arguments carry decimal dollars
 * declares a `contextArgs` mapper that converts them (`amount: 740.5` → `amountCents: 74050`).
 * `null` and `undefined` fields of a record are left out (`context.args has x` is false), arrays
 * become sets, and `__entity`/`__extn` keys are refused, so arguments cannot forge entity
 * references.
 *
 * **Annotations.** Every policy needs a unique `@id("...")`; it is the id in decisions.
 * `@reason("...")` is the reason shown (else one is generated). On a `permit`:
 * `@requires_approval("supervisor")` (several roles comma-separated) means allowed only with
 * approval by one of those roles; `@escalate("why")` hands the case to a human. Beside
 * `@requires_approval`, and only there: `@quorum("2")` (distinct approvers needed, a positive
 * integer) and `@expires_in("15m")` (how long the approvers have: an integer with `ms`, `s`, `m`,
 * `h` or `d`, or plain milliseconds), like a typed rule's `quorum` and `expiresIn`. Templates are
 * refused.
 *
 * **Semantics.** A satisfied `forbid` → deny; else a satisfied `@escalate` permit → escalate; else
 * a satisfied plain permit → allow; else satisfied `@requires_approval` permits → require_approval
 * (the roles of all of them, the largest `@quorum`, set when above 1, and the shortest
 * `@expires_in` as `expiresInMs`); nothing satisfied → deny with `policyIds: ["eart.default-deny"]`, as
 * is a tool the schema declares no action for. The ids come from Cedar's diagnostics, in policy
 * order. Fail closed: a policy that errors during evaluation (even when Cedar alone would still
 * allow), a request or entity the schema rejects, an argument Cedar cannot represent, or a mapper
 * that throws gives deny with `evaluationError: true`.
 *
 * **Schema.** With a `schema`, every policy is validated (strict mode) at construction, warnings
 * included, and requests and entities at each decision. It declares, in the empty namespace,
 * `entity Role in [Role]; entity Agent in [Role]; entity Tool;` and per tool an action whose context
 * is `{ args: {...}, sensitivity: Set<String>, onBehalfOf: { id: String, roles: Set<String> } }`.
 *
 * `version` is the SHA-256 of the policy text, the schema, the static entities, the sources of
 * the mapping functions, the declared `config` and the declared `version`. A value a mapper reads
 * from a closure or the environment is not in its source: declare it in `config` (the mappers get
 * it as their last argument) or name it in `version`. Mappers answer synchronously: an async
 * function is refused at construction, and a Promise returned at decision time denies (fail
 * closed), as does a mapper that throws. Construction throws
 * {@link PolicyDefinitionError} (with the policy id when known, and the library's message) for a
 * policy that does not parse or validate, and {@link EartConfigError} for bad options or entities.
 * Preparsed sets stay in the library's memory for the life of the process (keyed by version).
 * @example
 * ```ts
 * const engine = createCedarPolicyEngine({
 *   policies: `
 *     @id("refund.small") @reason("Refunds up to $100 are allowed")
 *     permit(principal in Role::"support", action == Action::"issue_refund", resource)
 *     when { context.args.amountCents <= 10000 };
 *     @id("refund.supervisor") @requires_approval("supervisor")
 *     permit(principal, action == Action::"issue_refund", resource)
 *     when { context.args.amountCents > 10000 && context.args.amountCents <= 500000 };
 *     @id("email.after-payment-data")
 *     forbid(principal, action == Action::"send_external_email", resource)
 *     when { context.sensitivity.contains("payment_data") };`,
 *   contextArgs: { issue_refund: ({ orderId, amount }) => ({ orderId, amountCents: Math.round(Number(amount) * 100) }) },
 *   resources: { issue_refund: (args) => ({ type: "Order", id: String(args.orderId) }) },
 * });
 * const decision = engine.decide(request); // { effect: "require_approval", approverRoles: ["supervisor"], ... }
 * ```
 */
export function createCedarPolicyEngine(options: CedarPolicyEngineOptions): PolicyEngine {
  const { policies: policyText, schema, entities, resources, contextArgs, config: declared, version: declaredVersion } = parseOptions(
    CedarPolicyEngineOptionsSchema,
    options,
  );
  if (declared !== undefined) {
    const problem = jsonProblem(declared, { maxDepth: MAX_CONFIG_DEPTH, refuseAccessors: true });
    if (problem) throw new EartConfigError("config", `${["config", ...problem.path].join(".")} ${problem.why}; config must be plain JSON, which is what the version hashes`);
  }
  // What the mappers see is what was hashed: a copy, frozen.
  const config = (declared === undefined ? Object.freeze({}) : frozenCopy(JSON.parse(canonicalJson(declared)))) as CedarPolicyConfig;
  const texts = typeof policyText === "string" ? [policyText] : policyText;
  const { policies, byId } = compilePolicies(texts);
  const cedarSchema = schema as CedarWasm.Schema | undefined;
  let actions: Set<string> | undefined;
  if (cedarSchema !== undefined) {
    actions = schemaActions(cedarSchema);
    validateAgainstSchema(cedarSchema, byId);
  }

  const staticEntities = Array.isArray(entities) ? (entities as CedarWasm.EntityJson[]) : undefined;
  const entitiesProvider = typeof entities === "function" ? entities : undefined;
  if (staticEntities) {
    const checked = cedarModule().checkParseEntities({ entities: staticEntities, schema: cedarSchema ?? null });
    if (checked.type === "failure") throw new EartConfigError("entities", messageOf(checked.errors));
  }
  const staticKeys = new Set((staticEntities ?? []).map((e) => uidKey(e.uid as CedarEntityUid)));

  // The version hashes each function's source: one that does not show it (bound, a Proxy) could
  // change what it maps under the same version, unless the engine declares its version itself.
  if (declaredVersion === undefined) {
    const unreadable = [
      ...Object.entries(resources).map(([tool, fn]) => [`resources.${tool}`, fn] as const),
      ...Object.entries(contextArgs).map(([tool, fn]) => [`contextArgs.${tool}`, fn] as const),
      ...(entitiesProvider ? [["entities", entitiesProvider] as const] : []),
    ].find(([, fn]) => !hasReadableSource(fn as (...args: never[]) => unknown));
    if (unreadable) {
      throw new EartConfigError(
        unreadable[0],
        "is a bound or native function, whose source does not show what it does, so the engine's version could not tell two of them apart; write it as a function of its own, or declare the engine's version",
      );
    }
  }
  const fnSources = (record: Record<string, (...args: never[]) => unknown>) =>
    Object.fromEntries(Object.entries(record).map(([tool, fn]) => [tool, fn.toString()]));
  const version = sha256Hex(
    canonicalJson({
      engine: "cedar",
      policies: texts,
      schema: schema ?? null,
      entities: staticEntities ?? (entitiesProvider ? entitiesProvider.toString() : null),
      resources: fnSources(resources),
      contextArgs: fnSources(contextArgs),
      // Present only when declared, so that the version of an engine without them stays as it was.
      ...(declared !== undefined ? { config } : {}),
      ...(declaredVersion !== undefined ? { declaredVersion } : {}),
    }),
  );

  // Content-addressed names: the library keeps preparsed sets per process, and the same content
  // preparsed twice is the same set.
  const policySetId = `eart.cedar.${version}`;
  const preparsed = cedarModule().preparsePolicySet(policySetId, { staticPolicies: byId });
  if (preparsed.type === "failure") throw new PolicyDefinitionError(`Cedar policy set does not parse: ${messageOf(preparsed.errors)}`);
  let schemaName: string | undefined;
  if (cedarSchema !== undefined) {
    schemaName = `eart.cedar.schema.${sha256Hex(canonicalJson(schema))}`;
    const parsedSchema = cedarModule().preparseSchema(schemaName, cedarSchema);
    if (parsedSchema.type === "failure") throw new PolicyDefinitionError(`Cedar schema does not parse: ${messageOf(parsedSchema.errors)}`);
  }

  const byIdCompiled = new Map(policies.map((p) => [p.id, p]));
  const compiledOf = (ids: readonly string[]): CompiledPolicy[] =>
    ids
      .map((id) => byIdCompiled.get(id))
      .filter((p): p is CompiledPolicy => p !== undefined)
      .sort((a, b) => a.index - b.index);

  const failClosed = (reasons: string[], policyIds: string[] = []): PolicyDecision => ({
    effect: "deny",
    reasons,
    policyIds,
    version,
    evaluationError: true,
  });

  const defaultDeny = (reason: string): PolicyDecision => ({
    effect: "deny",
    reasons: [`${reason} (default deny)`],
    policyIds: [DEFAULT_DENY_POLICY_ID],
    version,
  });

  const decide = (request: PolicyRequest): PolicyDecision => {
    const tool = request.tool.name;
    if (actions && !actions.has(tool)) return defaultDeny(`the Cedar schema declares no action ${tool}`);
    let call: CedarWasm.StatefulAuthorizationCall;
    try {
      const principal: CedarEntityUid = { type: "Agent", id: request.identity.id };
      const resourceMapper = resources[tool];
      const resource = resourceMapper
        ? CedarEntityUidSchema.parse(synchronous(resourceMapper(request.tool.args, request, config), `the resources mapper of ${tool}`))
        : { type: "Tool", id: tool };
      const argsMapper = contextArgs[tool];
      const args = argsMapper ? synchronous(argsMapper(request.tool.args, request, config), `the contextArgs mapper of ${tool}`) : request.tool.args;
      const context = {
        args: toCedarValue(args, "args"),
        sensitivity: toCedarValue(request.context.sensitivity, "sensitivity"),
        onBehalfOf: toCedarValue({ id: request.identity.onBehalfOf.id, roles: request.identity.onBehalfOf.roles }, "onBehalfOf"),
      } as CedarWasm.Context;
      const extra = entitiesProvider
        ? (CedarEntityListSchema.parse(synchronous(entitiesProvider(request, config), "the entities provider")) as CedarWasm.EntityJson[])
        : [];
      const principalKey = uidKey(principal);
      if (staticKeys.has(principalKey) || extra.some((e) => uidKey(e.uid as CedarEntityUid) === principalKey)) {
        throw new CedarInputError(`entities may not define the principal ${principalKey}: it comes from the identity`);
      }
      call = {
        principal,
        action: { type: "Action", id: tool },
        resource,
        context,
        preparsedPolicySetId: policySetId,
        entities: [
          { uid: principal, attrs: {}, parents: request.identity.roles.map((id) => ({ type: "Role", id })) },
          ...(staticEntities ?? []),
          ...extra,
        ],
        ...(schemaName ? { preparsedSchemaName: schemaName, validateRequest: true } : {}),
      };
    } catch (error) {
      return failClosed([`the ${tool} call cannot be mapped to a Cedar request: ${errorMessage(error)}`]);
    }

    let answer: CedarWasm.AuthorizationAnswer;
    try {
      answer = cedarModule().statefulIsAuthorized(call);
    } catch (error) {
      return failClosed([`Cedar failed to evaluate ${tool}: ${errorMessage(error)}`]);
    }
    if (answer.type === "failure") return failClosed([`Cedar refused the ${tool} request: ${messageOf(answer.errors)}`]);

    const { decision, diagnostics } = answer.response;
    if (diagnostics.errors.length > 0) {
      const errored = diagnostics.errors
        .map((e) => ({ e, p: byIdCompiled.get(e.policyId) }))
        .sort((a, b) => (a.p?.index ?? 0) - (b.p?.index ?? 0));
      return failClosed(
        errored.map(({ e }) => `policy ${e.policyId} failed to evaluate: ${messageOf([e.error])}`),
        errored.map(({ e }) => e.policyId),
      );
    }
    const deciding = compiledOf(diagnostics.reason);
    if (deciding.length === 0) return defaultDeny(`no Cedar policy permits ${tool}`);
    const reasonOf = (p: CompiledPolicy, generated: string) => p.reason ?? generated;

    if (decision === "deny") {
      const forbids = deciding.filter((p) => p.effect === "forbid");
      if (forbids.length === 0) return failClosed([`Cedar denied ${tool} without a forbid policy: ${diagnostics.reason.join(", ")}`]);
      return { effect: "deny", reasons: forbids.map((p) => reasonOf(p, `policy ${p.id} forbids ${tool}`)), policyIds: forbids.map((p) => p.id), version };
    }
    const escalating = deciding.filter((p) => p.escalate !== undefined);
    if (escalating.length > 0) {
      return {
        effect: "escalate",
        reasons: escalating.map((p) => p.reason ?? (p.escalate || `policy ${p.id} escalates ${tool} to a human`)),
        policyIds: escalating.map((p) => p.id),
        version,
      };
    }
    const plain = deciding.filter((p) => p.approverRoles === undefined);
    if (plain.length > 0) {
      return { effect: "allow", reasons: plain.map((p) => reasonOf(p, `policy ${p.id} permits ${tool}`)), policyIds: plain.map((p) => p.id), version };
    }
    const quorum = Math.max(...deciding.map((p) => p.quorum ?? 1));
    const expiries = deciding.flatMap((p) => (p.expiresInMs !== undefined ? [p.expiresInMs] : []));
    return {
      effect: "require_approval",
      reasons: deciding.map((p) => reasonOf(p, `policy ${p.id} permits ${tool} with approval by ${p.approverRoles!.join(" or ")}`)),
      policyIds: deciding.map((p) => p.id),
      version,
      approverRoles: [...new Set(deciding.flatMap((p) => p.approverRoles ?? []))],
      ...(quorum > 1 ? { quorum } : {}),
      ...(expiries.length > 0 ? { expiresInMs: Math.min(...expiries) } : {}),
    };
  };

  return {
    version,
    decide(request: PolicyRequest): PolicyDecision {
      try {
        return decide(request);
      } catch (error) {
        return failClosed([`Cedar policy engine failed: ${errorMessage(error)}`]);
      }
    },
  };
}
