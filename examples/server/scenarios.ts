/**
 * The five scenario agents on LangGraph server: `langgraph.json` serves them as "finance-payment",
 * "hr-offer", "loan-prescreen", "procurement" and "sales-discount". LangGraph server keeps the
 * checkpoints; eart's audit log, effect ledger and thread lock live where `EART_STORE` says
 * (default `sqlite:.eart/server.sqlite` under `langgraph dev`; a `postgres://` URL for a
 * deployment), shared by the five graphs.
 *
 * The scenario tools write their tables (payments, offers, loan decisions, renegotiations,
 * discounts) with better-sqlite3 only: under `langgraph dev` they go in eart's SQLite store file.
 * On PostgreSQL they cannot, so they go in a SQLite file beside, `.eart/scenarios.sqlite` (local
 * to the process: a deployment with several workers would need the tools ported to PostgreSQL).
 */
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "better-sqlite3";
import { createServerAgent, serverStores } from "eart/server";
import { financePaymentAgentOptions } from "../finance-payment/agent.js";
import { offerAgentOptions } from "../hr-offer/agent.js";
import { loanAgentOptions } from "../loan-prescreen/agent.js";
import { procurementAgentOptions } from "../procurement/agent.js";
import { salesDiscountAgentOptions } from "../sales-discount/agent.js";

const stores = await serverStores();
// The scenario tools are SQLite-only today: on PostgreSQL their tables live in a SQLite file beside.
const file = stores.kind === "sqlite" ? stores.location : resolve(".eart/scenarios.sqlite");
mkdirSync(dirname(file), { recursive: true });
const db = new Database(file);
db.pragma("journal_mode = WAL");
db.pragma("busy_timeout = 5000");

// No scenario declares budgets (defineBudgets), so none needs `stores.budgetStore`.
const finance = await financePaymentAgentOptions(db);
const offer = await offerAgentOptions(db);
const loan = await loanAgentOptions(db);
const procurementMade = await procurementAgentOptions(db);
const sales = await salesDiscountAgentOptions(db);

/** The accounts-payable agent (`finance-agent`): executing a payment waits for finance. */
export const financePayment = createServerAgent({ agentId: "finance-agent", graphId: "finance-payment", ...finance.options, ...stores.forAgent });

/** The offer-letter agent (`offer-agent`): sending an offer waits for an HR director. */
export const hrOffer = createServerAgent({ agentId: "offer-agent", graphId: "hr-offer", ...offer.options, ...stores.forAgent });

/** The loan pre-screening agent (`prescreen-agent`): over $50,000, or unsure, the case goes to an underwriter. */
export const loanPrescreen = createServerAgent({ agentId: "prescreen-agent", graphId: "loan-prescreen", ...loan.options, ...stores.forAgent });

/** The procurement agent (`procurement-agent`): opening a renegotiation waits for a procurement manager. */
export const procurement = createServerAgent({ agentId: "procurement-agent", graphId: "procurement", ...procurementMade.options, ...stores.forAgent });

/** The sales agent (`sales-agent`): discounts over 10% wait for a sales manager, over 30% are denied. */
export const salesDiscount = createServerAgent({ agentId: "sales-agent", graphId: "sales-discount", ...sales.options, ...stores.forAgent });
