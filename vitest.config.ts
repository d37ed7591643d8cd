import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const root = fileURLToPath(new URL(".", import.meta.url));

// Most files wait on child processes, servers and PostgreSQL more than they compute: on a small
// machine (2 cores: vitest's default is one worker, every file in turn) three files run at once.
const cores = availableParallelism();
const maxWorkers = Math.max(cores - 1, Math.min(3, cores + 1));

export default defineConfig({
  resolve: {
    // Tests import the package by its public names, resolved to the sources.
    alias: [
      { find: /^eart\/(nodes|guards|graphs|testing)$/, replacement: `${root}$1/index.ts` },
      { find: /^eart\/middleware$/, replacement: `${root}middleware/index.ts` },
      { find: /^eart\/server$/, replacement: `${root}server/index.ts` },
      { find: /^eart\/sqlite$/, replacement: `${root}src/stores/sqlite/index.ts` },
      { find: /^eart\/postgres$/, replacement: `${root}src/stores/postgres/index.ts` },
      { find: /^eart\/cedar$/, replacement: `${root}src/policy/cedar.ts` },
      { find: /^eart\/langsmith$/, replacement: `${root}src/export/langsmith.ts` },
      { find: /^eart\/otel$/, replacement: `${root}src/export/otel.ts` },
      { find: /^eart$/, replacement: `${root}src/index.ts` },
    ],
  },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers,
  },
});
