import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { EartError, IdentityImmutableError, IdentityRegistry, IdentityRegistryError, IdentityResolutionError, type AgentIdentity } from "eart";
import { bindIdentityOnce } from "../../src/decisions/seal.js";
import { AgentIdentitySchema, principalFromConfig, type IdentityClaim } from "../../src/identity/registry.js";
import { processSealer, sealIdentity } from "../support/sealing.js";

const baseRegistry = () => ({
  roles: {
    customer: { description: "customer", tools: ["lookup_order", "issue_refund"], dataScopes: ["orders"] },
    viewer: { tools: ["lookup_order"] },
    supervisor: { tools: ["*"], dataScopes: ["*"] },
    auditor: { tools: ["read_audit"] },
    nobody: {},
  },
  agents: [
    { id: "support-agent", roles: ["support"], tools: ["lookup_order", "issue_refund", "delete_account"], dataScopes: ["orders"] },
    { id: "wild-agent", tools: ["*"] },
    { id: "payments-agent", tools: ["lookup_order"], dataScopes: ["orders", "payments", "cards"] },
  ],
  users: [
    { id: "cara", name: "Cara", roles: ["customer"] },
    { id: "vic", roles: ["viewer"] },
    { id: "sam", roles: ["supervisor"] },
    { id: "ava", roles: ["viewer", "auditor"] },
    { id: "nil" },
    { id: "nob", roles: ["nobody"] },
  ],
});

const claim = (agentId: string, userId: string, source: IdentityClaim["source"] = "configurable.user_id"): IdentityClaim => ({
  agentId,
  userId,
  source,
});

/** Runs `fn`, expects it to throw, and returns the error. */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error("expected a throw, got none");
}

function registryError(input: unknown): IdentityRegistryError {
  const error = thrown(() => IdentityRegistry.fromObject(input));
  expect(error).toBeInstanceOf(IdentityRegistryError);
  expect(error).toBeInstanceOf(EartError);
  const e = error as IdentityRegistryError;
  expect(e.code).toBe("identity_registry_invalid");
  expect(e.details).toEqual({ entry: e.entry });
  return e;
}

describe("IdentityRegistry.fromObject validation", () => {
  it("accepts a valid registry and applies defaults", () => {
    const registry = IdentityRegistry.fromObject(baseRegistry());
    expect(registry.getAgent("wild-agent")).toEqual({ id: "wild-agent", roles: [], tools: ["*"], dataScopes: [] });
    expect(registry.getUser("nil")).toEqual({ id: "nil", roles: [] });
    expect(registry.getUser("cara")).toEqual({ id: "cara", name: "Cara", roles: ["customer"] });
    expect(registry.getAgent("ghost")).toBeUndefined();
    expect(registry.getUser("ghost")).toBeUndefined();
  });

  it("accepts a registry without a roles section when no user names a role", () => {
    const registry = IdentityRegistry.fromObject({ agents: [{ id: "a", tools: [] }], users: [{ id: "u" }] });
    expect(registry.resolve(claim("a", "u")).tools).toEqual([]);
  });

  it("names the agent whose tools are missing", () => {
    const def = baseRegistry();
    delete (def.agents[1] as { tools?: unknown }).tools;
    const e = registryError(def);
    expect(e.entry).toBe("agents[1].tools");
    expect(e.message).toContain("agents[1].tools");
  });

  it("names the agent tool entry that is not a string", () => {
    const def = baseRegistry();
    (def.agents[1] as { tools: unknown[] }).tools = ["ok", 42];
    expect(registryError(def).entry).toBe("agents[1].tools[1]");
  });

  it("names an empty agent tool name", () => {
    const def = baseRegistry();
    def.agents[0]!.tools = ["lookup_order", ""];
    expect(registryError(def).entry).toBe("agents[0].tools[1]");
  });

  it("names an empty agent id", () => {
    const def = baseRegistry();
    def.agents[0]!.id = "";
    const e = registryError(def);
    expect(e.entry).toBe("agents[0].id");
    expect(e.message).toContain("non-empty");
  });

  it("names a bad role definition by its key", () => {
    const def = baseRegistry() as { roles: Record<string, unknown> };
    def.roles.viewer = { tools: [7] };
    expect(registryError(def).entry).toBe("roles.viewer.tools[0]");
  });

  it("names an undeclared user role", () => {
    const def = baseRegistry();
    def.users[0]!.roles = ["ghost-role"];
    const e = registryError(def);
    expect(e.entry).toBe("users[0].roles[0]");
    expect(e.message).toContain('"ghost-role"');
  });

  it("names the position of the undeclared role among several", () => {
    const def = baseRegistry();
    def.users[3]!.roles = ["viewer", "auditor", "ghost-role"];
    expect(registryError(def).entry).toBe("users[3].roles[2]");
  });

  // A role name that happens to be an Object.prototype property is still undeclared.
  it("names an undeclared user role even when it is an Object.prototype property name", () => {
    for (const role of ["constructor", "toString", "hasOwnProperty", "__proto__"]) {
      const def = baseRegistry();
      def.users[1]!.roles = [role];
      expect(() => IdentityRegistry.fromObject(def), `role "${role}"`).toThrow(IdentityRegistryError);
      expect(registryError(def).entry).toBe("users[1].roles[0]");
    }
  });

  it("names a duplicate agent id", () => {
    const def = baseRegistry();
    def.agents.push({ id: "support-agent", tools: [] } as (typeof def.agents)[number]);
    const e = registryError(def);
    expect(e.entry).toBe("agents[3].id");
    expect(e.message).toContain('duplicate agent id "support-agent"');
  });

  it("names a duplicate user id", () => {
    const def = baseRegistry();
    def.users.push({ id: "vic", roles: [] } as (typeof def.users)[number]);
    const e = registryError(def);
    expect(e.entry).toBe("users[6].id");
    expect(e.message).toContain('duplicate user id "vic"');
  });

  it("allows an agent and a user to share an id (separate namespaces)", () => {
    const def = baseRegistry();
    def.users.push({ id: "support-agent", roles: [] } as (typeof def.users)[number]);
    const registry = IdentityRegistry.fromObject(def);
    expect(registry.getUser("support-agent")).toEqual({ id: "support-agent", roles: [] });
  });

  it("refuses unknown top-level keys", () => {
    const e = registryError({ ...baseRegistry(), extra: true });
    expect(e.entry).toBe("(root)");
  });

  it("refuses a missing users list", () => {
    const def = baseRegistry() as Partial<ReturnType<typeof baseRegistry>>;
    delete def.users;
    expect(registryError(def).entry).toBe("users");
  });

  it.each([null, 42, "registry", []])("refuses a non-object registry %j", (input) => {
    expect(registryError(input).entry).toBe("(root)");
  });
});

describe("IdentityRegistry ids: one way to write each, nothing confusable", () => {
  const withUsers = (...ids: string[]) => ({ ...baseRegistry(), users: ids.map((id) => ({ id, roles: ["supervisor"] })) });

  it.each([
    ["a trailing space", "sam "],
    ["a leading space", " sam"],
    ["a zero-width space", "s\u200bam"],
    ["a zero-width joiner", "sam\u200d"],
    ["a bidi override", "\u202emas"],
    ["a bidi isolate", "sam\u2066"],
    ["an ANSI escape", "sam\u001b[31m"],
    ["a line break", "sam\nsue"],
    ["a C1 control", "sam\u009b"],
    ["DEL", "sam\u007f"],
    ["a byte-order mark", "\ufeffsam"],
    ["a no-break space", "sam\u00a0o"],
    ["a tab", "sam\tsue"],
    ["full-width letters (not NFKC-normal)", "ｓａｍ"],
    ["a ligature (not NFKC-normal)", "ﬁona"],
  ])("refuses a user id with %s, naming the entry and showing the id escaped", (_what, id) => {
    const e = registryError(withUsers("cara", id));
    expect(e.entry).toBe("users[1].id");
    expect(e.message).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/);
  });

  it("refuses an agent id and a role name the same way", () => {
    const agent = baseRegistry();
    agent.agents[1]!.id = "wild-agent\u200b";
    expect(registryError(agent).entry).toBe("agents[1].id");
    const role = baseRegistry() as { roles: Record<string, unknown>; users: { id: string; roles?: string[] }[] };
    role.roles["supervisor\u202e"] = { tools: ["*"] };
    expect(registryError(role).entry).toBe("roles.supervisor\\u202e");
  });

  it("tells how to write an id that is not NFKC-normal", () => {
    expect(registryError(withUsers("ｓａｍ")).message).toContain('"sam"');
  });

  it.each([
    ["the same letters in another case", "sam", "Sam"],
    ["full-width letters", "sam", "ｓａｍ"],
    ["upper-case full-width letters", "SAM", "ｓａｍ"],
    ["a ligature", "fiona", "ﬁona"],
    ["a sharp s", "strasse", "STRAẞE"],
  ])("refuses two user ids that are one after normalisation and case folding (%s), naming both", (_what, first, second) => {
    const e = registryError(withUsers("cara", first, second));
    expect(e.entry).toBe("users[2].id");
    expect(e.message).toContain("users[1].id");
    expect(e.message).toContain(JSON.stringify(first));
  });

  it("refuses agents and declared roles that differ only in case", () => {
    const agents = baseRegistry();
    agents.agents.push({ id: "Support-Agent", tools: [] } as (typeof agents.agents)[number]);
    const e = registryError(agents);
    expect(e.entry).toBe("agents[3].id");
    expect(e.message).toContain("agents[0].id");
    const roles = baseRegistry() as { roles: Record<string, unknown> };
    roles.roles.Supervisor = { tools: [] };
    expect(registryError(roles).message).toMatch(/roles\.Supervisor.*roles\.supervisor|roles\.supervisor.*roles\.Supervisor/);
  });

  it("keeps ids that are distinct and well formed: other scripts, inner spaces, punctuation", () => {
    const registry = IdentityRegistry.fromObject(withUsers("sam", "sue", "søren", "José", "李雷", "mary ann", "o'brien", "ops@example.com"));
    expect(registry.getUser("José")).toBeDefined();
    expect(registry.getUser("mary ann")).toBeDefined();
  });

  it("finds a principal only by its exact id: a look-alike from the run configuration is an unknown user (fail closed)", () => {
    const registry = IdentityRegistry.fromObject(baseRegistry());
    for (const lookalike of ["Sam", "SAM", "sam ", " sam", "ｓａｍ", "s\u200bam", "sam\u202e", "sam\u001b[0m"]) {
      expect(registry.getUser(lookalike), JSON.stringify(lookalike)).toBeUndefined();
      expect(registry.userHasAnyRole(lookalike, ["supervisor"])).toBe(false);
      const error = thrown(() => registry.resolve(claim("support-agent", lookalike)));
      expect(error).toBeInstanceOf(IdentityResolutionError);
      expect((error as IdentityResolutionError).code).toBe("identity_unknown_user");
    }
    // The error says why a non-normal id is never found, showing it escaped.
    const error = thrown(() => registry.resolve(claim("support-agent", "s\u200bam"))) as IdentityResolutionError;
    expect(error.message).toContain("s\\u200bam");
    expect(error.message).not.toContain("\u200b");
    expect(registry.getUser("sam")).toBeDefined();
  });
});

describe("IdentityRegistry.fromFile", () => {
  const dir = mkdtempSync(join(tmpdir(), "eart-identity-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("loads a valid JSON file", () => {
    const path = join(dir, "valid.json");
    writeFileSync(path, JSON.stringify(baseRegistry()));
    const registry = IdentityRegistry.fromFile(path);
    expect(registry.resolve(claim("support-agent", "cara")).tools).toEqual(["issue_refund", "lookup_order"]);
  });

  it("refuses invalid JSON with entry (file)", () => {
    const path = join(dir, "broken.json");
    writeFileSync(path, "{ \"agents\": [");
    const error = thrown(() => IdentityRegistry.fromFile(path));
    expect(error).toBeInstanceOf(IdentityRegistryError);
    expect((error as IdentityRegistryError).entry).toBe("(file)");
    expect((error as IdentityRegistryError).message).toContain(path);
  });

  it("refuses a missing file with entry (file)", () => {
    const path = join(dir, "does-not-exist.json");
    const error = thrown(() => IdentityRegistry.fromFile(path));
    expect(error).toBeInstanceOf(IdentityRegistryError);
    expect((error as IdentityRegistryError).entry).toBe("(file)");
    expect((error as IdentityRegistryError).message).toContain("ENOENT");
  });

  it("validates the content of a well-formed file and names the bad entry", () => {
    const path = join(dir, "bad-entry.json");
    const def = baseRegistry();
    def.users[2]!.roles = ["ghost"];
    writeFileSync(path, JSON.stringify(def));
    const error = thrown(() => IdentityRegistry.fromFile(path));
    expect(error).toBeInstanceOf(IdentityRegistryError);
    expect((error as IdentityRegistryError).entry).toBe("users[2].roles[0]");
  });
});

describe("IdentityRegistry.resolve", () => {
  const registry = IdentityRegistry.fromObject(baseRegistry());

  it("resolves a full identity", () => {
    const identity = registry.resolve(claim("support-agent", "cara", "configurable.langgraph_auth_user"));
    expect(identity).toEqual({
      schemaVersion: 1,
      id: "support-agent",
      roles: ["support"],
      tools: ["issue_refund", "lookup_order"],
      dataScopes: ["orders"],
      onBehalfOf: { id: "cara", roles: ["customer"] },
      source: "configurable.langgraph_auth_user",
    });
    expect(AgentIdentitySchema.safeParse(identity).success).toBe(true);
  });

  it("limits the agent's data scopes by what the human's roles allow, as its tools", () => {
    // A customer who names a wider agent gets no more than her roles may read.
    expect(registry.resolve(claim("payments-agent", "cara")).dataScopes).toEqual(["orders"]);
    expect(registry.resolve(claim("payments-agent", "sam")).dataScopes).toEqual(["orders", "payments", "cards"]);
    // A role that declares no scopes grants none.
    expect(registry.resolve(claim("payments-agent", "vic")).dataScopes).toEqual([]);
    expect(registry.resolve(claim("payments-agent", "nil")).dataScopes).toEqual([]);
  });

  it("refuses an unknown agent", () => {
    const error = thrown(() => registry.resolve(claim("ghost", "cara")));
    expect(error).toBeInstanceOf(IdentityResolutionError);
    expect((error as IdentityResolutionError).code).toBe("identity_unknown_agent");
    expect((error as IdentityResolutionError).details).toEqual({ agentId: "ghost" });
  });

  it("refuses an unknown user", () => {
    const error = thrown(() => registry.resolve(claim("support-agent", "ghost")));
    expect(error).toBeInstanceOf(IdentityResolutionError);
    expect((error as IdentityResolutionError).code).toBe("identity_unknown_user");
    expect((error as IdentityResolutionError).details).toEqual({ userId: "ghost" });
  });

  it("checks the agent before the user", () => {
    const error = thrown(() => registry.resolve(claim("ghost", "ghost")));
    expect((error as IdentityResolutionError).code).toBe("identity_unknown_agent");
  });

  it("limits the agent's tools to the user's role grants", () => {
    expect(registry.resolve(claim("support-agent", "vic")).tools).toEqual(["lookup_order"]);
    expect(registry.resolve(claim("support-agent", "cara")).tools).toEqual(["issue_refund", "lookup_order"]);
  });

  it("unions grants over all of a user's roles", () => {
    const def = baseRegistry();
    def.agents[0]!.tools = ["lookup_order", "issue_refund", "read_audit"];
    const r = IdentityRegistry.fromObject(def);
    expect(r.resolve(claim("support-agent", "ava")).tools).toEqual(["lookup_order", "read_audit"]);
  });

  it("a '*' grant on a user role allows every tool the agent has, and no more", () => {
    expect(registry.resolve(claim("support-agent", "sam")).tools).toEqual(["delete_account", "issue_refund", "lookup_order"]);
  });

  it("gives no tools to a user without roles or with an empty role", () => {
    expect(registry.resolve(claim("support-agent", "nil")).tools).toEqual([]);
    expect(registry.resolve(claim("support-agent", "nob")).tools).toEqual([]);
  });

  it("'*' on the agent expands to the user's named grants, never past them", () => {
    expect(registry.resolve(claim("wild-agent", "cara")).tools).toEqual(["issue_refund", "lookup_order"]);
    expect(registry.resolve(claim("wild-agent", "vic")).tools).toEqual(["lookup_order"]);
    expect(registry.resolve(claim("wild-agent", "nil")).tools).toEqual([]);
  });

  it("'*' on the agent for a '*' user never yields a '*' tool", () => {
    const tools = registry.resolve(claim("wild-agent", "sam")).tools;
    expect(tools).not.toContain("*");
    expect(tools).toEqual([]);
  });

  it("deduplicates and sorts effective tools", () => {
    const def = baseRegistry();
    def.agents[0]!.tools = ["lookup_order", "issue_refund", "lookup_order"];
    const r = IdentityRegistry.fromObject(def);
    expect(r.resolve(claim("support-agent", "cara")).tools).toEqual(["issue_refund", "lookup_order"]);
  });

  it("returns copies: mutating a resolved identity does not change the registry", () => {
    const first = registry.resolve(claim("support-agent", "cara"));
    first.roles.push("admin");
    first.dataScopes.push("payments");
    first.onBehalfOf.roles.push("supervisor");
    const second = registry.resolve(claim("support-agent", "cara"));
    expect(second.roles).toEqual(["support"]);
    expect(second.dataScopes).toEqual(["orders"]);
    expect(second.onBehalfOf.roles).toEqual(["customer"]);
  });
});

describe("IdentityRegistry.userHasAnyRole", () => {
  const registry = IdentityRegistry.fromObject(baseRegistry());

  it("is true when the user holds at least one of the roles", () => {
    expect(registry.userHasAnyRole("sam", ["supervisor"])).toBe(true);
    expect(registry.userHasAnyRole("ava", ["finance", "auditor"])).toBe(true);
  });

  it("is false when the user holds none of them", () => {
    expect(registry.userHasAnyRole("cara", ["supervisor"])).toBe(false);
    expect(registry.userHasAnyRole("nil", ["supervisor", "customer"])).toBe(false);
  });

  it("is false for an empty role list", () => {
    expect(registry.userHasAnyRole("sam", [])).toBe(false);
  });

  it("is false for an unknown user and for an agent id", () => {
    expect(registry.userHasAnyRole("ghost", ["supervisor"])).toBe(false);
    expect(registry.userHasAnyRole("support-agent", ["support"])).toBe(false);
  });
});

describe("principalFromConfig", () => {
  it("is the user_id of the run configuration", () => {
    expect(principalFromConfig({ thread_id: "t", user_id: "sam" })).toEqual({ id: "sam", source: "configurable.user_id" });
  });

  it("prefers langgraph_auth_user, as a string, { identity } or { id }", () => {
    const auth = "configurable.langgraph_auth_user";
    expect(principalFromConfig({ langgraph_auth_user: "uma", user_id: "cara" })).toEqual({ id: "uma", source: auth });
    expect(principalFromConfig({ langgraph_auth_user: { identity: "uma" }, user_id: "cara" })).toEqual({ id: "uma", source: auth });
    expect(principalFromConfig({ langgraph_auth_user: { id: "uma" } })).toEqual({ id: "uma", source: auth });
  });

  it("is undefined when the configuration names nobody", () => {
    expect(principalFromConfig(undefined)).toBeUndefined();
    expect(principalFromConfig({ thread_id: "t" })).toBeUndefined();
    expect(principalFromConfig({ thread_id: "t", user_id: "" })).toBeUndefined();
    expect(principalFromConfig({ thread_id: "t", user_id: 42 })).toBeUndefined();
  });

  it("refuses a langgraph_auth_user that carries no identity", () => {
    for (const authUser of [{}, { identity: "" }, { id: 7 }, ""]) {
      const error = thrown(() => principalFromConfig({ langgraph_auth_user: authUser, user_id: "cara" }));
      expect(error).toBeInstanceOf(IdentityResolutionError);
      expect((error as IdentityResolutionError).code).toBe("identity_missing");
    }
  });
});

describe("bindIdentityOnce", () => {
  const registry = IdentityRegistry.fromObject(baseRegistry());
  const THREAD = "thread-1";
  const cara = () => registry.resolve(claim("support-agent", "cara"));
  const sam = () => registry.resolve(claim("support-agent", "sam"));
  /** Cara's identity as the binding node writes it: sealed for the thread. */
  const boundCara = () => sealIdentity(THREAD, cara());

  it("stores the first identity written", () => {
    const identity = cara();
    expect(bindIdentityOnce(undefined, identity)).toEqual(identity);
    const sealed = boundCara();
    expect(bindIdentityOnce(undefined, sealed)).toEqual(sealed);
  });

  it("strips unknown keys from the stored identity", () => {
    const stored = bindIdentityOnce(undefined, { ...cara(), injected: "x" } as AgentIdentity);
    expect(stored).toEqual(cara());
    expect(stored).not.toHaveProperty("injected");
  });

  it("keeps the current identity when the update is undefined or null", () => {
    const current = boundCara();
    expect(bindIdentityOnce(current, undefined)).toBe(current);
    expect(bindIdentityOnce(current, null as unknown as undefined)).toBe(current);
    expect(bindIdentityOnce(undefined, undefined)).toBeUndefined();
  });

  it("writing the same identity again is a no-op, whatever the key order", () => {
    const current = boundCara();
    const same = JSON.parse(JSON.stringify(current)) as AgentIdentity;
    const reordered = Object.fromEntries(Object.entries(same).reverse()) as AgentIdentity;
    expect(bindIdentityOnce(current, same)).toBe(current);
    expect(bindIdentityOnce(current, reordered)).toBe(current);
  });

  it("an identity nobody sealed binds nothing: the sealed binding replaces it", () => {
    const planted = sam();
    const bound = boundCara();
    expect(bindIdentityOnce(planted, bound)).toEqual(bound);
    expect(processSealer().identityIsSealed(THREAD, bindIdentityOnce(planted, bound)!)).toBe(true);
  });

  it("a different user throws IdentityImmutableError with both sides", () => {
    const error = thrown(() => bindIdentityOnce(boundCara(), sam()));
    expect(error).toBeInstanceOf(IdentityImmutableError);
    const e = error as IdentityImmutableError;
    expect(e.code).toBe("identity_immutable");
    expect(e.details).toEqual({
      boundAgentId: "support-agent",
      boundUserId: "cara",
      attempted: { agentId: "support-agent", userId: "sam" },
    });
  });

  it("a different user throws even when the update carries a valid seal of its own", () => {
    const error = thrown(() => bindIdentityOnce(boundCara(), sealIdentity(THREAD, sam())));
    expect(error).toBeInstanceOf(IdentityImmutableError);
    expect((error as IdentityImmutableError).details.attempted).toEqual({ agentId: "support-agent", userId: "sam" });
  });

  it("a different agent throws IdentityImmutableError", () => {
    const other = registry.resolve(claim("wild-agent", "cara"));
    const error = thrown(() => bindIdentityOnce(boundCara(), other));
    expect(error).toBeInstanceOf(IdentityImmutableError);
    expect((error as IdentityImmutableError).details.attempted).toEqual({ agentId: "wild-agent", userId: "cara" });
  });

  it("widening the tools of the same agent and user throws", () => {
    const widened = { ...boundCara(), tools: ["delete_account", "issue_refund", "lookup_order"] };
    expect(() => bindIdentityOnce(boundCara(), widened)).toThrow(IdentityImmutableError);
  });

  it("changing only the source throws", () => {
    const viaAuth = { ...boundCara(), source: "configurable.langgraph_auth_user" as const };
    expect(() => bindIdentityOnce(boundCara(), viaAuth)).toThrow(IdentityImmutableError);
  });

  it("stripping or changing the seal of the bound identity throws", () => {
    expect(() => bindIdentityOnce(boundCara(), cara())).toThrow(IdentityImmutableError);
    expect(() => bindIdentityOnce(boundCara(), sealIdentity("thread-2", cara()))).toThrow(IdentityImmutableError);
  });

  it("takes the binding's rebind (the registry's new grants) for the identity it was made for, and nothing posing as one", () => {
    const bound = boundCara();
    const wider = { ...cara(), tools: [...cara().tools, "view_payment_details"].sort() };
    const rebound = processSealer().rebound(THREAD, bound, wider);
    expect(bindIdentityOnce(bound, rebound)).toBe(rebound);
    // A copy of it (what a caller's state write or a checkpoint round trip hands over) is not the binding's.
    expect(() => bindIdentityOnce(bound, structuredClone(rebound))).toThrow(IdentityImmutableError);
    // Made for another bound identity (another thread's, or one replaced since), it replaces nothing here.
    const elsewhere = processSealer().rebound("thread-2", sealIdentity("thread-2", cara()), wider);
    expect(() => bindIdentityOnce(bound, elsewhere)).toThrow(IdentityImmutableError);
    expect(() => bindIdentityOnce(rebound, processSealer().rebound(THREAD, bound, cara()))).toThrow(IdentityImmutableError);
    // Nor for another human.
    expect(() => bindIdentityOnce(bound, processSealer().rebound(THREAD, bound, sam()))).toThrow(IdentityImmutableError);
  });

  it.each([
    ["no schemaVersion", (i: Record<string, unknown>) => ({ ...i, schemaVersion: undefined })],
    ["schemaVersion 2", (i: Record<string, unknown>) => ({ ...i, schemaVersion: 2 })],
    ["empty id", (i: Record<string, unknown>) => ({ ...i, id: "" })],
    ["no onBehalfOf", (i: Record<string, unknown>) => ({ ...i, onBehalfOf: undefined })],
    ["tool '*'-free but not strings", (i: Record<string, unknown>) => ({ ...i, tools: [1] })],
    ["unknown source", (i: Record<string, unknown>) => ({ ...i, source: "model" })],
    ["a seal that is not a string", (i: Record<string, unknown>) => ({ ...i, seal: 1 })],
  ])("refuses a malformed first identity (%s) with identity_missing", (_label, mutate) => {
    const bad = mutate(cara() as unknown as Record<string, unknown>) as unknown as AgentIdentity;
    const error = thrown(() => bindIdentityOnce(undefined, bad));
    expect(error).toBeInstanceOf(IdentityResolutionError);
    expect((error as IdentityResolutionError).code).toBe("identity_missing");
  });

  it("refuses a malformed update over a bound identity with IdentityImmutableError", () => {
    const error = thrown(() => bindIdentityOnce(boundCara(), { id: "support-agent" } as unknown as AgentIdentity));
    expect(error).toBeInstanceOf(IdentityImmutableError);
    expect((error as IdentityImmutableError).details).toMatchObject({ boundAgentId: "support-agent", boundUserId: "cara" });
  });

  it("refuses a non-object update", () => {
    expect(() => bindIdentityOnce(undefined, "support-agent" as unknown as AgentIdentity)).toThrow(IdentityResolutionError);
    expect(() => bindIdentityOnce(boundCara(), 42 as unknown as AgentIdentity)).toThrow(IdentityImmutableError);
  });
});
