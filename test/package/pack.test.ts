import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

/**
 * The package as a user gets it: `npm pack` of the built package, installed with npm into a new
 * project beside only the required peers, then type-checked strictly and run there, in real
 * processes. The versions are the ones this repository resolved; npm reads them from the local npm
 * cache through a registry on 127.0.0.1 (see `cacheRegistry`), so the test needs no network.
 */

const root = fileURLToPath(new URL("../../", import.meta.url));
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  name: string;
  main: string;
  types: string;
  bin: Record<string, string>;
  exports: Record<string, string | { types: string; default: string }>;
  peerDependencies: Record<string, string>;
  peerDependenciesMeta: Record<string, { optional?: boolean }>;
};
const versionIn = (name: string) => (JSON.parse(readFileSync(join(root, "node_modules", name, "package.json"), "utf8")) as { version: string }).version;

/** What the README's first install line adds: the package and its required peers. */
const REQUIRED_PEERS = ["@langchain/langgraph", "@langchain/core", "zod"];
/** Optional peers (and their types) a user without the drivers does not have. langsmith is not here: @langchain/core depends on it. */
const ABSENT = ["pg", "better-sqlite3", "@cedar-policy/cedar-wasm", "@langchain/langgraph-checkpoint-sqlite", "@langchain/langgraph-checkpoint-postgres", "@opentelemetry/api", "@types/pg", "@types/better-sqlite3"];
/** What `import "eart"` must not load: the optional peers, and langsmith, installed but only for eart/langsmith. */
const NOT_LOADED_BY_ROOT = [...Object.keys(manifest.peerDependenciesMeta).filter((p) => manifest.peerDependenciesMeta[p]!.optional), "langsmith"];
const SHIPPED_DIRS = ["src", "langgraph", "nodes", "guards", "graphs", "server", "middleware", "testing", "cli"];

const CHILD_TIMEOUT_MS = 120_000;
const work = mkdtempSync(join(tmpdir(), "eart-pack-"));
const project = join(work, "project");
let tarball: { filename: string; size: number; files: string[] };
let registry: CacheRegistry | undefined;

type Ran = { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; command: string };

/** Runs a command without blocking the event loop (the registry answers from this process), killed after `timeoutMs`. */
function run(command: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? CHILD_TIMEOUT_MS);
    child.on("error", (error) => (clearTimeout(timer), reject(error)));
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, command: [command, ...args].join(" ") });
    });
  });
}

/** A child's whole story, for assertion messages. */
const told = (r: Ran, extra = "") => `${r.command} exited ${r.code ?? r.signal}${extra}\n--- stdout\n${r.stdout.slice(-8_000)}\n--- stderr\n${r.stderr.slice(-8_000)}`;

/** The environment of npm in the project: none of the `npm_*` variables `npm test` sets for its own project. */
function npmEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k))), ...extra };
}

interface CacheRegistry {
  url: string;
  /** Documents and tarballs npm asked for that the cache does not hold. */
  misses: string[];
  close(): Promise<void>;
}

/**
 * A registry on 127.0.0.1 that serves what the local npm cache holds: each package document with
 * only the versions whose tarball is cached, and those tarballs. Why not `npm install --offline`:
 * npm 11 asks for full package documents when it resolves a name, and `npm ci` cached the
 * abbreviated ones, which an offline install does not accept.
 */
async function cacheRegistry(cache: string, upstream: string): Promise<CacheRegistry> {
  const misses: string[] = [];
  const contentOf = (key: string): Buffer | undefined => {
    const h = createHash("sha256").update(key).digest("hex");
    const bucket = join(cache, "_cacache", "index-v5", h.slice(0, 2), h.slice(2, 4), h.slice(4));
    if (!existsSync(bucket)) return undefined;
    const last = readFileSync(bucket, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line.slice(line.indexOf("\t") + 1)) as { key: string; integrity: string | null })
      .filter((e) => e.key === key && e.integrity)
      .at(-1);
    if (!last) return undefined;
    const [algorithm, digest] = last.integrity!.split(" ")[0]!.split("-") as [string, string];
    const hex = Buffer.from(digest, "base64").toString("hex");
    const file = join(cache, "_cacache", "content-v2", algorithm, hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
    return existsSync(file) ? readFileSync(file) : undefined;
  };
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0]!;
    const origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    if (path.startsWith("/-/tarball/")) {
      const url = decodeURIComponent(path.slice("/-/tarball/".length));
      const body = contentOf(`make-fetch-happen:request-cache:${url}`);
      if (!body) return misses.push(url), res.writeHead(404).end();
      return res.writeHead(200, { "content-type": "application/octet-stream" }).end(body);
    }
    const name = decodeURIComponent(path.slice(1));
    const body = contentOf(`make-fetch-happen:request-cache:${upstream}${name.replace("/", "%2f")}`);
    // npm also asks for optional peers of other packages; their absence is an ordinary 404.
    if (!body) return misses.push(name), res.writeHead(404, { "content-type": "application/json" }).end("{}");
    const doc = JSON.parse(body.toString("utf8")) as { versions: Record<string, { dist: { tarball: string } }>; "dist-tags": Record<string, string> };
    for (const [version, meta] of Object.entries(doc.versions)) {
      if (contentOf(`make-fetch-happen:request-cache:${meta.dist.tarball}`)) meta.dist.tarball = `${origin}/-/tarball/${encodeURIComponent(meta.dist.tarball)}`;
      else delete doc.versions[version];
    }
    for (const [tag, version] of Object.entries(doc["dist-tags"] ?? {})) if (!doc.versions[version]) delete doc["dist-tags"][tag];
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(doc));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/`,
    misses,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Files of the installed package (what the tarball held), relative to it. */
const installed = (file: string) => join(project, "node_modules", manifest.name, file);

/**
 * Installs the packed tarball into a new project `dir` beside `peers` (name → version), with
 * TypeScript and Node's types, as a user runs `npm install`: from the npm cache the project's own
 * install filled, through the registry on 127.0.0.1.
 */
async function installInto(dir: string, peers: Record<string, string>): Promise<Ran & { misses: string[] }> {
  mkdirSync(dir);
  const dependencies = { [manifest.name]: `file:${join(work, tarball.filename)}`, ...peers };
  const devDependencies = { typescript: versionIn("typescript"), "@types/node": versionIn("@types/node") };
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "eart-user", private: true, type: "module", dependencies, devDependencies }, null, 2));
  writeFileSync(join(dir, ".npmrc"), "");
  const config = async (key: string) => (await run("npm", ["config", "get", key], { cwd: root })).stdout.trim();
  const [cache, upstream] = [await config("cache"), await config("registry")];
  registry = await cacheRegistry(cache, upstream.endsWith("/") ? upstream : `${upstream}/`);
  const env = npmEnv({ npm_config_cache: join(work, `npm-cache-${dir.split("/").at(-1)}`), npm_config_registry: registry.url, npm_config_userconfig: join(dir, ".npmrc"), npm_config_update_notifier: "false" });
  const install = await run("npm", ["install", "--no-audit", "--no-fund"], { cwd: dir, env });
  await registry.close();
  return { ...install, misses: registry.misses };
}

beforeAll(async () => {
  const targets = [manifest.main, manifest.types, ...Object.values(manifest.bin)].concat(
    Object.values(manifest.exports).flatMap((t) => (typeof t === "string" ? [] : [t.types, t.default])),
  );
  const missing = targets.filter((t) => !existsSync(join(root, t)));
  if (missing.length > 0) throw new Error(`${missing.join(", ")} missing: run "npm run build" (npm test does) before this test`);

  // One pack. --ignore-scripts: packing must not rebuild the dist other test files are reading.
  const packed = await run("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", work], { cwd: root });
  expect(packed.code, told(packed)).toBe(0);
  const [info] = JSON.parse(packed.stdout) as { filename: string; size: number; files: { path: string }[] }[];
  tarball = { filename: info!.filename, size: info!.size, files: info!.files.map((f) => f.path).sort() };

  // One install, as a user runs it: the package, its required peers, TypeScript and Node's types.
  const install = await installInto(project, Object.fromEntries(REQUIRED_PEERS.map((p) => [p, versionIn(p)])));
  expect(install.code, told(install, `\nnot in the npm cache: ${install.misses.join(", ")}`)).toBe(0);
}, 240_000);

afterAll(async () => {
  await registry?.close().catch(() => {});
  rmSync(work, { recursive: true, force: true });
});

describe("the tarball", () => {
  it("holds the build of the shipped folders, package.json, README.md and LICENSE, and nothing else", () => {
    const outside = tarball.files.filter((f) => !["package.json", "README.md", "LICENSE"].includes(f) && !new RegExp(`^dist/(${SHIPPED_DIRS.join("|")})/[^]+\\.(js|d\\.ts)(\\.map)?$`).test(f));
    expect(outside, "files outside dist/{" + SHIPPED_DIRS.join(",") + "}/ (tests, benches, examples, SQLite files, .eart data?)").toEqual([]);
    expect(tarball.files.filter((f) => /(^|\/)(test|bench|examples|\.eart)\/|\.sqlite/.test(f))).toEqual([]);
    expect(tarball.files).toEqual(expect.arrayContaining(["package.json", "README.md", "LICENSE", "dist/src/index.js", "dist/graphs/index.d.ts"]));
    expect(readFileSync(installed("LICENSE"), "utf8")).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004[^]*END OF TERMS AND CONDITIONS/);
  });

  it("holds every file package.json points at: main, types, bin and each export", () => {
    const targets = [manifest.main, manifest.types, ...Object.values(manifest.bin)]
      .concat(Object.values(manifest.exports).flatMap((t) => (typeof t === "string" ? [t] : [t.types, t.default])))
      .map((t) => posix.normalize(t));
    expect(targets.filter((t) => !tarball.files.includes(t))).toEqual([]);
  });

  it("holds only the output of sources that exist (tsc leaves the output of deleted files in dist)", () => {
    const orphans = tarball.files
      .filter((f) => f.startsWith("dist/"))
      .filter((f) => !existsSync(join(root, f.slice("dist/".length).replace(/(\.d\.ts|\.js)(\.map)?$/, ".ts"))));
    expect(orphans, "stale output: rebuild from an empty dist").toEqual([]);
  });

  it("ships a source map for every module, each carrying its sources, and no reference to a file it does not hold", () => {
    const has = new Set(tarball.files);
    const maps = tarball.files.filter((f) => f.endsWith(".map"));
    // Stack traces under --enable-source-maps, and debuggers, reach the TypeScript of every module.
    const modules = tarball.files.filter((f) => f.endsWith(".js"));
    expect(maps.filter((f) => f.endsWith(".js.map")).sort()).toEqual(modules.map((f) => `${f}.map`).sort());
    const broken: string[] = [];
    for (const map of maps) {
      const { sources, sourcesContent, sourceRoot = "" } = JSON.parse(readFileSync(installed(map), "utf8")) as { sources: string[]; sourcesContent?: (string | null)[]; sourceRoot?: string };
      sources.forEach((source, i) => {
        const embedded = typeof sourcesContent?.[i] === "string";
        if (!embedded && !has.has(posix.join(posix.dirname(map), sourceRoot, source))) broken.push(`${map}: ${source}`);
      });
    }
    for (const file of tarball.files.filter((f) => /\.(js|d\.ts)$/.test(f))) {
      const url = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(readFileSync(installed(file), "utf8"))?.[1];
      if (url && !url.startsWith("data:") && !has.has(posix.join(posix.dirname(file), url))) broken.push(`${file} -> ${url}`);
    }
    expect(broken).toEqual([]);
  });
});

describe("a project that installs it", () => {
  it("gets the package and its required peers, none of the optional ones, and a tree npm finds valid", async () => {
    const present = (p: string) => existsSync(join(project, "node_modules", p, "package.json"));
    expect([manifest.name, ...REQUIRED_PEERS].filter((p) => !present(p))).toEqual([]);
    expect(ABSENT.filter(present)).toEqual([]);
    // langsmith is there, for @langchain/core, which depends on it.
    expect(JSON.parse(readFileSync(join(project, "node_modules/@langchain/core/package.json"), "utf8")).dependencies).toHaveProperty("langsmith");
    const ls = await run("npm", ["ls", "--all"], { cwd: project, env: npmEnv({ npm_config_userconfig: join(project, ".npmrc") }) });
    expect(ls.code, told(ls)).toBe(0);
  });

  it('type-checks a governed agent built from "eart", "eart/nodes", "eart/guards" and "eart/graphs" with strict and no skipLibCheck', async () => {
    writeFileSync(join(project, "agent.ts"), AGENT_PROGRAM);
    writeFileSync(
      join(project, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, skipLibCheck: false, outDir: "out" }, files: ["agent.ts"] }),
    );
    const tsc = await run(process.execPath, [join(project, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json", "--listFiles"], { cwd: project });
    expect(tsc.code, told(tsc)).toBe(0);
    // The declarations checked are the installed package's, every entry point the program imports.
    const checked = tsc.stdout.split("\n").map((l) => l.trim());
    for (const entry of ["src", "nodes", "guards", "graphs", "testing"]) expect(checked).toContain(installed(`dist/${entry}/index.d.ts`));
  }, 180_000);

  it("runs it: a $60 refund runs, a $740 one pauses for a supervisor and runs once approved", async () => {
    const program = join(project, "out/agent.js");
    expect(existsSync(program), "the type-check did not emit out/agent.js").toBe(true);
    const ran = await run(process.execPath, [program], { cwd: project, timeoutMs: 60_000 });
    expect(ran.code, told(ran)).toBe(0);
    expect(JSON.parse(ran.stdout.trim().split("\n").at(-1)!), told(ran)).toEqual(EXPECTED_RUN);
  });

  it('imports "eart" without the optional peers, loading none of them; "eart/sqlite" fails naming the package to install', async () => {
    const log = join(work, "resolved.log");
    writeFileSync(join(work, "hook.mjs"), `import { appendFileSync } from "node:fs";\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + "\\n"); return r; }\n`);
    writeFileSync(join(work, "register.mjs"), `import { register } from "node:module";\nregister(${JSON.stringify(pathToFileURL(join(work, "hook.mjs")).href)});\n`);
    writeFileSync(log, "");
    writeFileSync(
      join(project, "probe.mjs"),
      [
        `import { readFileSync } from "node:fs";`,
        `const eart = await import("eart");`,
        `const loaded = [...new Set(readFileSync(${JSON.stringify(log)}, "utf8").split("\\n").flatMap((u) => [...u.matchAll(/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//g)].map((m) => m[1]).slice(-1)))].sort();`,
        `let sqlite;`,
        `try { await import("eart/sqlite"); sqlite = "loaded"; } catch (e) { sqlite = { code: e.code, message: e.message }; }`,
        `console.log(JSON.stringify({ exports: typeof eart.definePolicy, loaded, sqlite }));`,
      ].join("\n"),
    );
    const ran = await run(process.execPath, ["--import", pathToFileURL(join(work, "register.mjs")).href, join(project, "probe.mjs")], { cwd: project, timeoutMs: 60_000 });
    expect(ran.code, told(ran)).toBe(0);
    const probe = JSON.parse(ran.stdout.trim().split("\n").at(-1)!) as { exports: string; loaded: string[]; sqlite: { code: string; message: string } | string };
    expect(probe.exports).toBe("function");
    // The log holds real loads: the root needs zod.
    expect(probe.loaded).toContain("zod");
    expect(probe.loaded.filter((p) => NOT_LOADED_BY_ROOT.includes(p))).toEqual([]);
    // What a user sees: Node's own error, naming LangGraph's SQLite checkpointer (which brings better-sqlite3).
    expect(probe.sqlite).toEqual({ code: "ERR_MODULE_NOT_FOUND", message: expect.stringContaining("Cannot find package '@langchain/langgraph-checkpoint-sqlite'") });
  });

  it("installs the eart command", async () => {
    const ran = await run(join(project, "node_modules/.bin/eart"), ["--help"], { cwd: project, timeoutMs: 60_000 });
    expect(ran.code, told(ran)).toBe(0);
    expect(ran.stdout).toMatch(/^usage: eart /);
  });
});

/** The user's program: the prebuilt governed agent with a $100 refund limit, over the public entry points only. */
describe("with the lowest peers it declares", () => {
  // The lowest versions the peer ranges allow, kept in the npm cache by aliased dev dependencies
  // (lowest-langgraph, lowest-langchain-core, lowest-zod), so this runs offline like the rest.
  const LOWEST: Record<string, string> = {
    "@langchain/langgraph": versionIn("lowest-langgraph"),
    "@langchain/core": versionIn("lowest-langchain-core"),
    zod: versionIn("lowest-zod"),
  };
  const lowest = join(work, "lowest");

  it("are the bottom of the ranges in package.json", () => {
    for (const [name, version] of Object.entries(LOWEST)) expect(manifest.peerDependencies[name]).toBe(`^${version}`);
  });

  it("installs without a peer conflict, type-checks the same governed agent strictly, and runs it the same", async () => {
    const install = await installInto(lowest, LOWEST);
    expect(install.code, told(install, `\nnot in the npm cache: ${install.misses.join(", ")}`)).toBe(0);
    for (const [name, version] of Object.entries(LOWEST)) {
      expect((JSON.parse(readFileSync(join(lowest, "node_modules", name, "package.json"), "utf8")) as { version: string }).version).toBe(version);
    }
    const ls = await run("npm", ["ls", "--all"], { cwd: lowest, env: npmEnv({ npm_config_userconfig: join(lowest, ".npmrc") }) });
    expect(ls.code, told(ls)).toBe(0);
    writeFileSync(join(lowest, "agent.ts"), AGENT_PROGRAM);
    writeFileSync(
      join(lowest, "tsconfig.json"),
      JSON.stringify({ compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, skipLibCheck: false, outDir: "out" }, files: ["agent.ts"] }),
    );
    const tsc = await run(process.execPath, [join(lowest, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"], { cwd: lowest });
    expect(tsc.code, told(tsc)).toBe(0);
    const ran = await run(process.execPath, [join(lowest, "out/agent.js")], { cwd: lowest, timeoutMs: 60_000 });
    expect(ran.code, told(ran)).toBe(0);
    expect(JSON.parse(ran.stdout.trim().split("\n").at(-1)!), told(ran)).toEqual(EXPECTED_RUN);
  }, 240_000);
});

/** What the program prints, against any peers the package declares. */
const EXPECTED_RUN = {
  finished: "large",
  small: { paused: false, answer: "done", events: expect.arrayContaining(["policy.decided", "tool.started", "tool.succeeded"]) },
  large: {
    roles: ["supervisor"],
    calls: [{ name: "issue_refund", args: { orderId: "1042", amount: 740 }, policyIds: ["refund.supervisor"] }],
    ranBeforeApproval: false,
  },
  approved: { paused: false, answer: "done" },
  refunds: [
    { orderId: "1042", amount: 60, keyed: true },
    { orderId: "1042", amount: 740, keyed: true },
  ],
  verified: { small: true, large: true },
  entryPoints: { nodes: "function", guards: "function" },
};

const AGENT_PROGRAM = `import { AIMessage, HumanMessage, type BaseMessage } from "@langchain/core/messages";
import { tool } from "@langchain/core/tools";
import { Command, MemorySaver } from "@langchain/langgraph";
import { z } from "zod";
import { definePolicy, IdentityRegistry, isEartError, MemoryAuditLog, pendingApproval, type ApprovalRequest } from "eart";
import { createGovernedToolNode, executionContextOf } from "eart/nodes";
import { createPolicyGate } from "eart/guards";
import { createGovernedAgent, type GovernedAgentOptions } from "eart/graphs";
import { scriptedModel } from "eart/testing";

const identities = IdentityRegistry.fromObject({
  roles: {
    customer: { tools: ["issue_refund"], dataScopes: ["orders"] },
    supervisor: { tools: ["*"], dataScopes: ["*"] },
  },
  agents: [{ id: "support-agent", roles: ["support"], tools: ["issue_refund"], dataScopes: ["orders"] }],
  users: [{ id: "cara", roles: ["customer"] }, { id: "sam", roles: ["supervisor"] }],
});

const policy = definePolicy({
  name: "refunds",
  rules: [
    { id: "refund.small", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) <= 100, effect: "allow" },
    { id: "refund.supervisor", tools: ["issue_refund"], when: (r) => Number(r.tool.args.amount) > 100, effect: "require_approval",
      approverRoles: ["supervisor"], reason: "Refunds over $100 need a supervisor" },
  ],
});

const refunds: { orderId: string; amount: number; keyed: boolean }[] = [];
const issueRefund = tool(
  async ({ orderId, amount }, config) => {
    refunds.push({ orderId, amount, keyed: typeof executionContextOf(config)?.idempotencyKey === "string" });
    return "refunded " + amount + " on order " + orderId;
  },
  { name: "issue_refund", description: "Refund an amount in dollars for an order.", schema: z.object({ orderId: z.string(), amount: z.number().positive() }) },
);

// Proposes the refund the customer asks for, then answers.
const model = scriptedModel((messages: BaseMessage[]) => {
  const last = messages.at(-1);
  if (!HumanMessage.isInstance(last)) return new AIMessage("done");
  const amount = Number(/\\$(\\d+)/.exec(String(last.content))?.[1]);
  return new AIMessage({ content: "", tool_calls: [{ id: "call_" + amount, name: "issue_refund", args: { orderId: "1042", amount } }] });
});

const auditLog = new MemoryAuditLog();
const options: GovernedAgentOptions = { model, tools: [issueRefund], identities, policy, checkpointer: new MemorySaver(), auditLog };
const agent = createGovernedAgent(options);
const config = (thread_id: string, user_id = "cara") => ({ configurable: { thread_id, agent_id: "support-agent", user_id } });
const answer = (state: { messages: BaseMessage[] }) => state.messages.at(-1)?.content;

const small = await agent.invoke({ messages: [new HumanMessage("Refund $60 on order 1042")] }, config("small"));
const large = await agent.invoke({ messages: [new HumanMessage("Refund $740 on order 1042")] }, config("large"));
const request: ApprovalRequest | undefined = pendingApproval(large);
if (!request) throw new Error("the $740 refund did not pause");
const ranBeforeApproval = refunds.some((r) => r.amount === 740);
const approved = await agent.invoke(
  new Command({ resume: { decisions: request.requests.map((r) => ({ toolCallId: r.toolCallId, type: "approve" as const, digest: r.digest })) } }),
  config("large", "sam"),
);

// Answering a finished thread is refused; the error's details are typed by its code.
let finished: string | undefined;
try {
  await agent.invoke(new Command({ resume: { decisions: [] } }), config("large", "sam"));
} catch (e) {
  if (isEartError(e, "thread_not_paused")) finished = e.details.threadId;
}

console.log(JSON.stringify({
  finished,
  small: { paused: pendingApproval(small) !== undefined, answer: answer(small), events: (await auditLog.read("small")).map((e) => e.type) },
  large: { roles: request.roles, calls: request.requests.map((r) => ({ name: r.name, args: r.args, policyIds: r.policyIds })), ranBeforeApproval },
  approved: { paused: pendingApproval(approved) !== undefined, answer: answer(approved) },
  refunds,
  verified: { small: (await auditLog.verify("small")).ok, large: (await auditLog.verify("large")).ok },
  entryPoints: { nodes: typeof createGovernedToolNode, guards: typeof createPolicyGate },
}));
`;
