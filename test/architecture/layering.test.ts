import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/**
 * The folders are the architecture (DESIGN.md, "Layout"): this reads every import of the package's
 * sources and holds them to it. `src/` is the runtime core and imports none of the LangGraph layers;
 * `langgraph/` is the glue the nodes and guards share; nodes and guards do not import each other;
 * `graphs/` wires them. No file imports itself back through others (no cycle, type-only ones included).
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const LAYERS = ["src", "langgraph", "nodes", "guards", "graphs", "server", "middleware", "testing", "cli"] as const;
type Layer = (typeof LAYERS)[number];

/** What each top-level folder may import, besides itself. */
const MAY_IMPORT: Record<Layer, readonly Layer[]> = {
  src: [],
  langgraph: ["src"],
  nodes: ["src", "langgraph"],
  guards: ["src", "langgraph"],
  graphs: ["src", "langgraph", "nodes", "guards"],
  server: ["src", "langgraph", "nodes", "guards", "graphs"],
  middleware: ["src", "langgraph", "nodes", "guards", "graphs"],
  testing: ["src", "langgraph", "nodes", "guards", "graphs"],
  cli: ["src", "langgraph", "nodes", "guards", "graphs"],
};

function sourcesIn(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourcesIn(path));
    else if (name.endsWith(".ts") && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

const SPECIFIER = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"|import\(\s*"([^"]+)"\s*\)/g;

/** The relative imports of a file, resolved to the source files they name. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(SPECIFIER)) {
    const spec = m[1] ?? m[2]!;
    if (!spec.startsWith(".")) continue;
    out.push(resolve(dirname(file), spec).replace(/\.js$/, ".ts"));
  }
  return out;
}

const files = LAYERS.flatMap((layer) => sourcesIn(join(ROOT, layer)));
const graph = new Map(files.map((f) => [f, importsOf(f).filter((t) => t.endsWith(".ts"))]));
const layerOf = (file: string): string => relative(ROOT, file).split("/")[0]!;

describe("the layout is the architecture", () => {
  it("reads the sources it holds to the rules (a check of nothing would pass)", () => {
    expect(files.length).toBeGreaterThan(60);
    expect([...graph.values()].flat().length).toBeGreaterThan(200);
  });

  it("each top-level folder imports only the folders below it", () => {
    const wrong: string[] = [];
    for (const [file, targets] of graph) {
      const from = layerOf(file) as Layer;
      for (const target of targets) {
        const to = layerOf(target);
        if (to !== from && !MAY_IMPORT[from].includes(to as Layer)) wrong.push(`${relative(ROOT, file)} → ${relative(ROOT, target)}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("src/ keeps to its domain folders and imports no LangGraph", () => {
    const domains = readdirSync(join(ROOT, "src")).filter((n) => statSync(join(ROOT, "src", n)).isDirectory()).sort();
    expect(domains).toEqual(["audit", "context", "decisions", "export", "human-tasks", "identity", "internal", "ledger", "policy", "stores", "threads", "tools"]);
    const flat = readdirSync(join(ROOT, "src")).filter((n) => n.endsWith(".ts")).sort();
    expect(flat).toEqual(["errors.ts", "index.ts"]);
    const langgraph = files.filter((f) => layerOf(f) === "src" && /from "@langchain\/langgraph["\/]/.test(readFileSync(f, "utf8")));
    expect(langgraph.map((f) => relative(ROOT, f))).toEqual([]);
  });

  it("no module imports itself back through others", () => {
    const cycles: string[] = [];
    const state = new Map<string, "open" | "done">();
    const path: string[] = [];
    const visit = (file: string): void => {
      state.set(file, "open");
      path.push(file);
      for (const next of graph.get(file) ?? []) {
        if (!graph.has(next)) continue;
        if (state.get(next) === "open") cycles.push(path.slice(path.indexOf(next)).concat(next).map((f) => relative(ROOT, f)).join(" → "));
        else if (!state.has(next)) visit(next);
      }
      path.pop();
      state.set(file, "done");
    };
    for (const file of graph.keys()) if (!state.has(file)) visit(file);
    expect(cycles).toEqual([]);
  });
});
