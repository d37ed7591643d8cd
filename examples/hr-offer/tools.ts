import { tool } from "@langchain/core/tools";
import type Database from "better-sqlite3";
import { ToolArgumentError } from "eart";
import { executionContextOf } from "eart/nodes";
import { z } from "zod";
import { candidateOf, requisitionOf } from "./data.js";

/** A row of `offer_drafts`. */
export interface OfferDraftRow {
  draftId: string;
  candidateId: string;
  roleLevel: string;
  baseSalary: number | null;
  salaryStatus: "included" | "pending";
  body: string;
  toolCallId: string | null;
}

/** A row of `sent_offers`. */
export interface SentOfferRow {
  draftId: string;
  candidateId: string;
  toolCallId: string | null;
}

/** The dollar figures a letter states ("$165,000" → 165000). */
const dollarFiguresIn = (text: string): number[] => [...text.matchAll(/\$\s*(\d[\d,]*(?:\.\d+)?)/g)].map((m) => Number(m[1]!.replace(/,/g, "")));

const toolCallIdOf = (config: unknown) => (config as { toolCall?: { id?: string } } | undefined)?.toolCall?.id ?? null;

/**
 * The offer tools, on the given SQLite database: `get_candidate` reads the applicant-tracking
 * record (which holds the candidate's expected salary), `draft_offer` stores a draft letter at the
 * level of the candidate's requisition, stating no dollar figure but its `baseSalary`, `send_offer` sends a stored draft to the candidate (the
 * step an HR director approves). `send_offer` states the terms it sends (candidate, level, base
 * salary), so the HR director approves what the letter says, not a draft id; it refuses terms
 * that are not the stored draft's. The two writes forward eart's idempotency key to a unique column.
 */
export function createOfferTools(db: Database.Database) {
  db.exec(`CREATE TABLE IF NOT EXISTS offer_drafts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    candidate_id TEXT NOT NULL,
    role_level TEXT NOT NULL,
    base_salary INTEGER,
    body TEXT NOT NULL,
    tool_call_id TEXT,
    idempotency_key TEXT UNIQUE
  )`);
  db.exec(`CREATE TABLE IF NOT EXISTS sent_offers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    draft_id TEXT NOT NULL,
    candidate_id TEXT NOT NULL,
    tool_call_id TEXT,
    idempotency_key TEXT UNIQUE
  )`);
  const insertDraft = db.prepare(
    `INSERT INTO offer_drafts (candidate_id, role_level, base_salary, body, tool_call_id, idempotency_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING`,
  );
  const draftByKey = db.prepare(`SELECT id FROM offer_drafts WHERE idempotency_key = ?`);
  const draftById = db.prepare(`SELECT id, candidate_id AS candidateId, role_level AS roleLevel, base_salary AS baseSalary FROM offer_drafts WHERE id = ?`);
  const insertSent = db.prepare(`INSERT INTO sent_offers (draft_id, candidate_id, tool_call_id, idempotency_key) VALUES (?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING`);
  const draftId = (id: number | bigint) => `D-${id}`;

  const getCandidate = tool(
    async ({ candidateId }) => {
      const candidate = candidateOf(candidateId);
      if (!candidate) throw new ToolArgumentError(`no candidate ${candidateId}`);
      return JSON.stringify(candidate);
    },
    {
      name: "get_candidate",
      description: "Read a candidate's applicant-tracking record.",
      schema: z.object({ candidateId: z.string().describe("The candidate id, e.g. CAND-7") }),
    },
  );

  const draftOffer = tool(
    async ({ candidateId, roleLevel, baseSalary, body }, config) => {
      const candidate = candidateOf(candidateId);
      if (!candidate) throw new ToolArgumentError(`no candidate ${candidateId}`);
      // The level is the requisition's: the band an offer is judged against follows from it.
      const level = requisitionOf(candidate.requisitionId)?.roleLevel;
      if (roleLevel !== level) throw new ToolArgumentError(`candidate ${candidateId} is hired at level ${level ?? "(no requisition)"}, not ${roleLevel}`);
      // The letter states no other figure than `baseSalary`, the one the HR director is shown when it is sent.
      if (dollarFiguresIn(body).some((figure) => figure !== baseSalary)) {
        throw new ToolArgumentError("the letter states a dollar figure other than baseSalary: state the salary in baseSalary, and only that figure in the letter");
      }
      const key = executionContextOf(config)?.idempotencyKey ?? null;
      const row = insertDraft.run(candidateId, roleLevel, baseSalary ?? null, body, toolCallIdOf(config), key);
      const id = row.changes === 1 ? row.lastInsertRowid : (draftByKey.get(key) as { id: number }).id;
      return JSON.stringify({ draftId: draftId(id), candidateId, roleLevel, salaryStatus: baseSalary == null ? "pending" : "included", status: "drafted" });
    },
    {
      name: "draft_offer",
      description: "Store a draft offer letter. Leave baseSalary null when the salary is not known to you: the letter then says it is pending.",
      schema: z.object({
        candidateId: z.string(),
        roleLevel: z.string().describe("The role level, e.g. L4"),
        baseSalary: z.number().int().positive().nullable().describe("Annual base salary in dollars, or null when pending"),
        body: z.string().describe("The letter"),
      }),
    },
  );

  const sendOffer = tool(
    async ({ draftId: id, candidateId, roleLevel, baseSalary }, config) => {
      const draft = draftById.get(Number(/^D-(\d+)$/.exec(id)?.[1])) as { id: number; candidateId: string; roleLevel: string; baseSalary: number | null } | undefined;
      if (!draft) throw new ToolArgumentError(`no draft ${id}`);
      if (draft.baseSalary === null) throw new ToolArgumentError(`draft ${id} has no salary yet: an HR manager completes it first`);
      // What the approver was shown is what is sent: terms other than the draft's send nothing.
      if (draft.candidateId !== candidateId || draft.roleLevel !== roleLevel || draft.baseSalary !== baseSalary) {
        // No figure in the message: it reaches the audit log, which keeps salary fields redacted.
        throw new ToolArgumentError(`draft ${id} states other terms (candidate ${draft.candidateId}, level ${draft.roleLevel}, its base salary): send it with the terms it states`);
      }
      insertSent.run(id, draft.candidateId, toolCallIdOf(config), executionContextOf(config)?.idempotencyKey ?? null);
      return JSON.stringify({ draftId: id, candidateId: draft.candidateId, status: "sent" });
    },
    {
      name: "send_offer",
      description: "Send a stored draft offer letter to the candidate, stating the draft's terms (candidate, level, base salary). Needs an HR director's approval.",
      schema: z.object({
        draftId: z.string().describe("The draft id, e.g. D-1"),
        candidateId: z.string().describe("The draft's candidate"),
        roleLevel: z.string().describe("The draft's role level"),
        baseSalary: z.number().int().positive().describe("The draft's annual base salary in dollars"),
      }),
    },
  );

  return {
    getCandidate,
    draftOffer,
    sendOffer,
    all: [getCandidate, draftOffer, sendOffer],
    drafts: (): OfferDraftRow[] =>
      (
        db
          .prepare(`SELECT id, candidate_id AS candidateId, role_level AS roleLevel, base_salary AS baseSalary, body, tool_call_id AS toolCallId FROM offer_drafts ORDER BY id`)
          .all() as (Omit<OfferDraftRow, "draftId" | "salaryStatus"> & { id: number })[]
      ).map(({ id, ...r }) => ({ draftId: draftId(id), ...r, salaryStatus: r.baseSalary === null ? "pending" : "included" })),
    sentOffers: (): SentOfferRow[] =>
      db.prepare(`SELECT draft_id AS draftId, candidate_id AS candidateId, tool_call_id AS toolCallId FROM sent_offers ORDER BY id`).all() as SentOfferRow[],
  };
}
