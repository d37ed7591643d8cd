import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { createRefundTools } from "../../examples/refund/tools.js";

/**
 * The refund example's `refunds` table on PostgreSQL, as the workers of one deployment meet it:
 * several processes (here, pools of their own) that start together on a new database each make
 * their first refund at once. `CREATE TABLE IF NOT EXISTS` run from several sessions at once fails
 * in PostgreSQL's catalog (a duplicate key in `pg_type`); the example creates the table under an
 * advisory lock, so every first refund goes through.
 */

const URL = process.env.EART_TEST_DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const admin = new pg.Pool({ connectionString: URL, max: 1 });

afterAll(async () => {
  await admin.end();
});

describe("the refund example's table on PostgreSQL", () => {
  it("eight workers making their first refund at once on a new database each get it, once per key", async () => {
    for (let round = 0; round < 3; round++) {
      const schema = `refunds_race_${randomUUID().replace(/-/g, "").slice(0, 12)}`;
      await admin.query(`CREATE SCHEMA ${schema}`);
      const pools = Array.from({ length: 8 }, () => new pg.Pool({ connectionString: URL, options: `-c search_path=${schema}`, max: 2 }));
      try {
        const results = await Promise.allSettled(
          pools.map((pool, i) => createRefundTools(pool).issueRefund.invoke({ orderId: "1043", amount: 60 }, { toolCall: { id: `c${i}` } } as never)),
        );
        expect(results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
        const { rows } = await admin.query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.refunds`);
        expect(Number(rows[0]!.n)).toBe(8);
      } finally {
        await Promise.all(pools.map((p) => p.end()));
        await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      }
    }
  });
});
