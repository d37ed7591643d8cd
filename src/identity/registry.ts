import { readFileSync } from "node:fs";
import { z } from "zod";
import { IdentityRegistryError, IdentityResolutionError } from "../errors.js";

const Id = z.string().min(1, "must be a non-empty string");
const Name = z.string().min(1, "must be a non-empty string");
const ToolGrant = z.union([z.literal("*"), Name]);

/** A role a human user can hold, and the tools it lets an agent use on that user's behalf. */
export const RoleDefinitionSchema = z
  .object({
    description: z.string().optional(),
    /** Tool names, or `"*"` for every tool. */
    tools: z.array(ToolGrant).default([]),
    /**
     * Data scopes an agent acting for a holder of this role may read, or `"*"` for all of the
     * agent's. An agent's scopes are limited by them as its tools are by `tools`: none by default.
     */
    dataScopes: z.array(ToolGrant).default([]),
  })
  .strict();

/** An agent: what it is allowed to call and to see, whoever it acts for. */
export const AgentDefinitionSchema = z
  .object({
    id: Id,
    description: z.string().optional(),
    roles: z.array(Name).default([]),
    tools: z.array(ToolGrant),
    dataScopes: z.array(Name).default([]),
  })
  .strict();

/** A human user: someone an agent acts for, or an approver. */
export const UserDefinitionSchema = z
  .object({
    id: Id,
    name: z.string().optional(),
    roles: z.array(Name).default([]),
  })
  .strict();

/**
 * The whole registry as written in code or in a JSON file. Every level is strict: a key it does
 * not know (`approverRole` for `roles`, `agent` for `agents`) is refused, not ignored, since the
 * permission it was meant to give or take would silently not be there.
 */
export const IdentityRegistryDefinitionSchema = z
  .object({
    roles: z.record(Name, RoleDefinitionSchema).default({}),
    agents: z.array(AgentDefinitionSchema),
    users: z.array(UserDefinitionSchema),
  })
  .strict();

export type RoleDefinition = z.output<typeof RoleDefinitionSchema>;
export type AgentDefinition = z.output<typeof AgentDefinitionSchema>;
export type UserDefinition = z.output<typeof UserDefinitionSchema>;
export type IdentityRegistryDefinition = z.input<typeof IdentityRegistryDefinitionSchema>;

/**
 * The identity bound to a thread: the agent, the human it acts for, and the effective permissions
 * (agent's ∩ the human's). Persisted in state, so it carries a schema version.
 */
export const AgentIdentitySchema = z.object({
  schemaVersion: z.literal(1),
  id: Id,
  roles: z.array(Name),
  /** Effective tool names: the agent's tools limited by what the human's roles allow. */
  tools: z.array(Name),
  dataScopes: z.array(Name),
  onBehalfOf: z.object({ id: Id, roles: z.array(Name) }),
  /** Which part of the run configuration named the human. */
  source: z.enum(["configurable.user_id", "configurable.langgraph_auth_user"]),
  /** eart's seal over this identity for its thread: an identity without a valid one is not the thread's. */
  seal: z.string().optional(),
});

export type AgentIdentity = z.output<typeof AgentIdentitySchema>;

/** Where an identity is resolved from: trusted run configuration, never model output. */
export interface IdentityClaim {
  agentId: string;
  userId: string;
  source: AgentIdentity["source"];
}

/**
 * What an id may not hold: controls (C0, DEL, C1), format characters (zero-width, bidi overrides
 * and isolates, the byte-order mark, tags), line and paragraph separators, lone surrogates,
 * private-use and unassigned code points, whitespace other than a plain space, and characters
 * that render as nothing (fillers, variation selectors).
 */
const FORBIDDEN_IN_ID = /[\p{C}\p{Zl}\p{Zp}\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\u{e0100}-\u{e01ef}]|[^\S ]/u;

/** An id as an error message may quote it: JSON, and what {@link FORBIDDEN_IN_ID} names written as `\uXXXX`. */
function shownId(id: string): string {
  return JSON.stringify(id).replace(new RegExp(FORBIDDEN_IN_ID.source, "gu"), (c) => {
    const cp = c.codePointAt(0)!;
    return cp > 0xffff ? `\\u{${cp.toString(16)}}` : `\\u${cp.toString(16).padStart(4, "0")}`;
  });
}

/**
 * Why an id cannot name an agent, a user or a role, or undefined. Ids are compared exactly, so
 * one that looks like another (a trailing space, a zero-width character, full-width letters) would
 * name someone else: each id has one way to be written, NFKC-normal, printable, trimmed.
 */
function idProblem(id: string): string | undefined {
  return characterProblem(id) ?? normalFormProblem(id);
}

function characterProblem(id: string): string | undefined {
  const bad = FORBIDDEN_IN_ID.exec(id)?.[0];
  if (bad !== undefined) return `${shownId(id)} holds U+${bad.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}: ids hold no control, invisible, bidi or line-breaking character, and no whitespace but a plain space`;
  if (id.trim() !== id) return `${shownId(id)} starts or ends with whitespace`;
  return undefined;
}

function normalFormProblem(id: string): string | undefined {
  const normal = id.normalize("NFKC");
  return normal === id ? undefined : `${shownId(id)} is not in Unicode NFKC normal form: write it as ${shownId(normal)}`;
}

/** Ids that read as the same name are one id: NFKC-normal and case-folded (lower, upper, lower: "ß" is "ss"). */
const foldedId = (id: string): string => id.normalize("NFKC").toLowerCase().toUpperCase().toLowerCase().normalize("NFKC");

/**
 * Refuses ids that are not well formed ({@link idProblem}) and two ids of one kind that fold to
 * the same name, naming both entries (also when one of them is not NFKC-normal).
 */
function checkIds(kind: string, entries: readonly { id: string; entry: string }[]): void {
  const seen = new Map<string, { id: string; entry: string }>();
  for (const { id, entry } of entries) {
    const problem = characterProblem(id);
    if (problem) throw new IdentityRegistryError(entry, `${kind} ${problem}`);
    const key = foldedId(id);
    const earlier = seen.get(key);
    if (earlier) {
      if (earlier.id === id) throw new IdentityRegistryError(entry, `duplicate ${kind} id ${shownId(id)}`);
      throw new IdentityRegistryError(
        entry,
        `${kind} id ${shownId(id)} collides with ${earlier.entry} ${shownId(earlier.id)}: ids that are the same after NFKC normalisation and case folding are one id`,
      );
    }
    seen.set(key, { id, entry });
  }
  // After the collisions, so that "ｓａｍ" beside "sam" names both entries.
  for (const { id, entry } of entries) {
    const problem = normalFormProblem(id);
    if (problem) throw new IdentityRegistryError(entry, `${kind} ${problem}`);
  }
}

/** Keys written for another one, and the key meant. */
const MEANT_KEY: ReadonlyMap<string, string> = new Map([
  ["approverRole", "roles"],
  ["approverRoles", "roles"],
  ["allowedTools", "tools"],
  ["scopes", "dataScopes"],
]);

/** What an entry at `path` is, and the keys it may have. */
function entryKeys(path: readonly PropertyKey[]): { what: string; keys: string[] } {
  if (path.length === 0) return { what: "the registry", keys: Object.keys(IdentityRegistryDefinitionSchema.shape) };
  if (path[0] === "roles") return { what: "a role", keys: Object.keys(RoleDefinitionSchema.shape) };
  if (path[0] === "agents") return { what: "an agent", keys: Object.keys(AgentDefinitionSchema.shape) };
  return { what: "a user", keys: Object.keys(UserDefinitionSchema.shape) };
}

/** The key `key` was likely meant as: a known confusion, or the same name but for case, separators and a plural "s". */
function meantKey(key: string, keys: readonly string[]): string | undefined {
  const alias = MEANT_KEY.get(key);
  if (alias !== undefined && keys.includes(alias)) return alias;
  const loose = (k: string) => k.toLowerCase().replace(/[^a-z0-9]/g, "").replace(/s$/, "");
  return keys.find((k) => loose(k) === loose(key));
}

/** The error for a key the registry does not know: the entry is the one holding it; the message names it and the key most likely meant. */
function unknownKeyError(path: readonly PropertyKey[], key: string): IdentityRegistryError {
  const { what, keys } = entryKeys(path);
  const meant = meantKey(key, keys);
  return new IdentityRegistryError(
    entryPath(path),
    `unknown key ${shownId(key)}${meant ? `: did you mean "${meant}"?` : ""} (${what} has ${keys.join(", ")}); unknown keys are refused, not ignored`,
  );
}

function entryPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    const name = typeof key === "string" && FORBIDDEN_IN_ID.test(key) ? shownId(key).slice(1, -1) : String(key);
    out += typeof key === "number" ? `[${key}]` : out ? `.${name}` : name;
  }
  return out || "(root)";
}

/**
 * Agents and human users, validated once at load. Resolves the identity of a run from trusted
 * configuration.
 *
 * Ids (of agents, users and roles) have one way to be written: Unicode NFKC-normal, no control,
 * invisible, bidi or line-breaking character, no whitespace at either end. Two ids of one kind that
 * are the same after NFKC normalisation and case folding (`sam` and `Sam`, `ｓａｍ`) are refused
 * at load, naming both entries. Lookups ({@link IdentityRegistry.resolve}, `getUser`,
 * `userHasAnyRole`) match ids exactly and normalise nothing: an id from the run configuration that
 * is not written as in the registry (`Sam`, `sam `, `s\u200bam`) is an unknown user, so it is refused.
 * @example
 * ```ts
 * const registry = IdentityRegistry.fromObject({
 *   roles: { customer: { tools: ["lookup_order", "issue_refund"] }, supervisor: { tools: ["*"] } },
 *   agents: [{ id: "support-agent", roles: ["support"], tools: ["lookup_order", "issue_refund"], dataScopes: ["orders"] }],
 *   users: [{ id: "cara", roles: ["customer"] }, { id: "sam", roles: ["supervisor"] }],
 * });
 * registry.resolve({ agentId: "support-agent", userId: "cara", source: "configurable.user_id" }).tools;
 * ```
 */
export class IdentityRegistry {
  readonly #roles: ReadonlyMap<string, RoleDefinition>;
  readonly #agents: ReadonlyMap<string, AgentDefinition>;
  readonly #users: ReadonlyMap<string, UserDefinition>;

  private constructor(def: z.output<typeof IdentityRegistryDefinitionSchema>) {
    this.#roles = new Map(Object.entries(def.roles));
    this.#agents = new Map(def.agents.map((a) => [a.id, a]));
    this.#users = new Map(def.users.map((u) => [u.id, u]));
  }

  /**
   * Validates a registry given as an object. Throws {@link IdentityRegistryError} naming the bad
   * entry; a key no entry has (`approverRole`, `agent`) is refused with the key it most likely
   * stands for, not ignored.
   */
  static fromObject(input: unknown): IdentityRegistry {
    const parsed = IdentityRegistryDefinitionSchema.safeParse(input);
    if (!parsed.success) {
      // An unknown key first: `agent` for `agents` also makes `agents` missing, but the key is the mistake.
      const unknown = parsed.error.issues.find((i) => i.code === "unrecognized_keys");
      if (unknown) throw unknownKeyError(unknown.path, unknown.keys[0]!);
      const issue = parsed.error.issues[0]!;
      throw new IdentityRegistryError(entryPath(issue.path), issue.message);
    }
    const def = parsed.data;
    checkIds("role", Object.keys(def.roles).map((id) => ({ id, entry: `roles.${shownId(id).slice(1, -1)}` })));
    checkIds("agent", def.agents.map((a, i) => ({ id: a.id, entry: `agents[${i}].id` })));
    checkIds("user", def.users.map((u, i) => ({ id: u.id, entry: `users[${i}].id` })));
    def.agents.forEach((a, i) => {
      a.roles.forEach((role, j) => {
        const problem = idProblem(role);
        if (problem) throw new IdentityRegistryError(`agents[${i}].roles[${j}]`, `role ${problem}`);
      });
    });
    def.users.forEach((u, i) => {
      u.roles.forEach((role, j) => {
        if (!Object.hasOwn(def.roles, role)) throw new IdentityRegistryError(`users[${i}].roles[${j}]`, `role ${shownId(role)} is not declared in roles`);
      });
    });
    return new IdentityRegistry(def);
  }

  /** Reads and validates a JSON registry file. Throws {@link IdentityRegistryError}. */
  static fromFile(path: string): IdentityRegistry {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(path, "utf8"));
    } catch (error) {
      throw new IdentityRegistryError("(file)", `cannot read ${path}: ${(error as Error).message}`);
    }
    return IdentityRegistry.fromObject(raw);
  }

  /** Ids of the declared roles (the keys of `roles`): the only roles a user, and so an approver, can hold. */
  roleIds(): string[] {
    return [...this.#roles.keys()];
  }

  /** Ids of the agents, in the order they are declared. */
  agentIds(): string[] {
    return [...this.#agents.keys()];
  }

  getAgent(id: string): AgentDefinition | undefined {
    return this.#agents.get(id);
  }

  getUser(id: string): UserDefinition | undefined {
    return this.#users.get(id);
  }

  /** True when the user exists and holds at least one of `roles`. */
  userHasAnyRole(userId: string, roles: readonly string[]): boolean {
    const user = this.#users.get(userId);
    return user !== undefined && user.roles.some((r) => roles.includes(r));
  }

  /**
   * Resolves the identity for a claim from run configuration. Unknown agent or user throws
   * {@link IdentityResolutionError}.
   */
  resolve(claim: IdentityClaim): AgentIdentity {
    const agent = this.#agents.get(claim.agentId);
    if (!agent) {
      throw new IdentityResolutionError("identity_unknown_agent", `Unknown agent ${shownId(String(claim.agentId))}`, { agentId: claim.agentId });
    }
    const user = this.#users.get(claim.userId);
    if (!user) {
      // Ids are matched exactly: a look-alike ("Sam", "sam ", "s\u200bam") is nobody, never the user it resembles.
      const problem = typeof claim.userId === "string" ? idProblem(claim.userId) : undefined;
      throw new IdentityResolutionError(
        "identity_unknown_user",
        problem ? `Unknown user: ${problem}; ids are matched exactly` : `Unknown user ${shownId(String(claim.userId))}`,
        problem ? { userId: claim.userId, problem } : { userId: claim.userId },
      );
    }
    const userGrants = new Set<string>();
    for (const role of user.roles) for (const tool of this.#roles.get(role)?.tools ?? []) userGrants.add(tool);
    const allowedByUser = (tool: string) => userGrants.has("*") || userGrants.has(tool);
    // "*" on the agent side never widens past what the user allows: it expands to the user's grants.
    const agentTools = agent.tools.includes("*") ? [...userGrants].filter((t) => t !== "*") : agent.tools;
    const tools = [...new Set(agentTools.filter((t) => t !== "*" && allowedByUser(t)))].sort();
    // Data scopes the same way: a client that names a wider agent gets no more than the human may read.
    const scopeGrants = new Set<string>();
    for (const role of user.roles) for (const scope of this.#roles.get(role)?.dataScopes ?? []) scopeGrants.add(scope);
    const dataScopes = agent.dataScopes.filter((scope) => scopeGrants.has("*") || scopeGrants.has(scope));
    return {
      schemaVersion: 1,
      id: agent.id,
      roles: [...agent.roles],
      tools,
      dataScopes,
      onBehalfOf: { id: user.id, roles: [...user.roles] },
      source: claim.source,
    };
  }
}

/** The authenticated human of a run, and which part of the run configuration named them. */
export interface Principal {
  id: string;
  /** The run configuration's key that named them, or a signed approval token. */
  source: AgentIdentity["source"] | "approval_token";
}

/**
 * The human a run acts as: LangGraph server's authenticated user (`langgraph_auth_user`, set by
 * the server's custom auth; it wins), else `user_id`, which only a trusted in-process app sets.
 * Undefined when the configuration names neither. Never read from a payload or from state. The
 * id is returned as given, never normalised: the registry matches it exactly, so a look-alike of
 * a registered id (`Sam`, `sam `, `ｓａｍ`) is an unknown user and is refused (fail closed).
 * @example
 * ```ts
 * principalFromConfig({ user_id: "sam" }) // { id: "sam", source: "configurable.user_id" }
 * ```
 */
export function principalFromConfig(configurable: Record<string, unknown> | undefined): (Principal & { source: AgentIdentity["source"] }) | undefined {
  const authUser = configurable?.langgraph_auth_user;
  if (authUser !== undefined && authUser !== null) {
    const id = typeof authUser === "string" ? authUser : ((authUser as { identity?: unknown }).identity ?? (authUser as { id?: unknown }).id);
    if (typeof id !== "string" || id === "") {
      throw new IdentityResolutionError("identity_missing", "configurable.langgraph_auth_user carries no identity");
    }
    return { id, source: "configurable.langgraph_auth_user" };
  }
  const userId = configurable?.user_id;
  if (typeof userId !== "string" || userId === "") return undefined;
  return { id: userId, source: "configurable.user_id" };
}


/** Option schema: an {@link IdentityRegistry}. */
export const IdentityRegistryOption = z.custom<IdentityRegistry>((v) => v instanceof IdentityRegistry, "must be an IdentityRegistry");
