import { PostgresSaver } from "@langchain/langgraph-checkpoint-postgres";
import { SqliteSaver } from "@langchain/langgraph-checkpoint-sqlite";
import Database from "better-sqlite3";
import pg from "pg";
import { approvalKeysFromFile, IdentityRegistry, type ApprovalKeys, type ToolExecutionOptions } from "eart";
import { PostgresAuditLog, PostgresEffectLedger, serialisedSetup } from "eart/postgres";
import { SqliteAuditLog, SqliteEffectLedger } from "eart/sqlite";
import { createGovernedAgent } from "eart/graphs";
import { scriptedModel } from "eart/testing";
import { createRefundModel, refundScript } from "./model.js";
import { refundPolicy } from "./policy.js";
import { createRefundTools } from "./tools.js";
import identities from "./identities.json" with { type: "json" };

/** The refund identities, from the JSON file beside this example. */
export function refundIdentities(): IdentityRegistry {
  return IdentityRegistry.fromObject(identities);
}

/** Options of {@link openRefundAgent}. */
export interface RefundAgentOptions {
  /**
   * A PostgreSQL connection string: checkpoints (LangGraph's PostgresSaver), the effect ledger,
   * the thread lock and the `refunds` table go there instead of the SQLite file, which then keeps
   * only the audit log.
   */
  postgres?: string;
  /** How `issue_refund` runs. Default: idempotent (it forwards the key), 10 s timeout, 3 attempts. */
  refundExecution?: ToolExecutionOptions;
  /**
   * Public keys of approvers who answer with signed tokens (`eart approve --key`). Default: the
   * JSON file `EART_APPROVAL_KEYS` names, if set.
   */
  approvalKeys?: ApprovalKeys;
}

/** How `issue_refund` runs by default. */
export const REFUND_EXECUTION: ToolExecutionOptions = { idempotent: true, timeout: 10_000, retry: { attempts: 3, initialDelayMs: 200 } };

/**
 * What makes the refund agent, without its stores: the model, the refund tools on `storage` (a
 * SQLite database or a PostgreSQL pool holding the `refunds` table), identities, policy and how
 * `issue_refund` runs. `openRefundAgent` adds the stores; the LangGraph server graph adds eart's
 * server stores (examples/server/refund.ts).
 */
export async function refundAgentOptions(storage: Database.Database | pg.Pool, options: Pick<RefundAgentOptions, "refundExecution" | "approvalKeys"> = {}) {
  const tools = createRefundTools(storage);
  return {
    tools,
    options: {
      model: await createRefundModel(),
      tools: tools.all,
      identities: refundIdentities(),
      policy: refundPolicy,
      approvalKeys: options.approvalKeys ?? (process.env.EART_APPROVAL_KEYS ? approvalKeysFromFile(process.env.EART_APPROVAL_KEYS) : {}),
      execution: { issue_refund: options.refundExecution ?? REFUND_EXECUTION },
      recoveryRoles: ["supervisor"],
      systemPrompt: "You are a customer-support agent. Look orders up before refunding them.",
    },
  };
}

/**
 * The governed refund agent. By default everything lives in one SQLite file: LangGraph's SQLite
 * checkpointer, eart's audit log and effect ledger, the thread lock, and the `refunds` table the
 * refund tool writes to.
 */
export async function openRefundAgent(file: string, options: RefundAgentOptions = {}): Promise<{
  agent: ReturnType<typeof createGovernedAgent>;
  auditLog: SqliteAuditLog;
  refunds: () => Promise<{ orderId: string; amount: number; toolCallId: string }[]>;
  close: () => Promise<void>;
}> {
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  const auditLog = new SqliteAuditLog({ database: db });
  const pool = options.postgres ? new pg.Pool({ connectionString: options.postgres }) : undefined;
  pool?.on("error", () => {});
  let checkpointer: SqliteSaver | PostgresSaver;
  if (pool) {
    const saver = new PostgresSaver(pool);
    await serialisedSetup(pool, () => saver.setup());
    checkpointer = saver;
  } else {
    checkpointer = new SqliteSaver(db);
  }
  const ledger = pool ? new PostgresEffectLedger({ pool }) : new SqliteEffectLedger({ database: db });
  const made = await refundAgentOptions(pool ?? db, options);
  const agent = createGovernedAgent({ ...made.options, checkpointer, auditLog, ledger });
  const refunds = async () => {
    if (!pool) return db.prepare(`SELECT order_id AS "orderId", amount, tool_call_id AS "toolCallId" FROM refunds ORDER BY id`).all() as { orderId: string; amount: number; toolCallId: string }[];
    const { rows } = await pool.query<{ orderId: string; amount: number; toolCallId: string }>(
      `SELECT order_id AS "orderId", amount, tool_call_id AS "toolCallId" FROM refunds ORDER BY id`,
    );
    return rows;
  };
  return {
    agent,
    auditLog,
    refunds,
    close: async () => {
      await pool?.end();
      db.close();
    },
  };
}

/**
 * The refund agent on PostgreSQL as a deployment runs it with default options, for load tests and
 * benchmarks: LangGraph's PostgresSaver on `pool` (tables in `schema`), the ledger and thread lock
 * eart picks for that checkpointer, the audit log on the same pool, and the scripted model (enough
 * `turns` for every conversation the caller will run).
 * @example
 * ```ts
 * const { agent, auditLog } = await scriptedRefundAgentOnPostgres(pool, { schema: "public", turns: 4_000 });
 * ```
 */
export async function scriptedRefundAgentOnPostgres(pool: pg.Pool, options: { schema: string; turns: number }) {
  const checkpointer = new PostgresSaver(pool, undefined, { schema: options.schema });
  await serialisedSetup(pool, () => checkpointer.setup());
  const auditLog = new PostgresAuditLog({ pool });
  const tools = createRefundTools(pool);
  const agent = createGovernedAgent({
    model: scriptedModel(refundScript, { turns: options.turns }),
    tools: tools.all,
    identities: refundIdentities(),
    policy: refundPolicy,
    checkpointer,
    auditLog,
    execution: { issue_refund: REFUND_EXECUTION },
    recoveryRoles: ["supervisor"],
  });
  return { agent, auditLog, tools };
}
