import type { AuditEvent } from "./log.js";

/** An audit event as the SQL stores (SQLite, PostgreSQL) keep it, in their column names. */
export interface EventRow {
  thread_id: string;
  seq: number;
  id: string;
  type: string;
  at: string;
  schema_version: number;
  data: string;
  prev_hash: string;
  hash: string;
}

/** Stored JSON, or the raw text when it does not parse (verification then reports it malformed). */
export function parseJsonOr(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** A stored row as an event; `verify` checks it, nothing here does. */
export function rowToEvent(row: EventRow): AuditEvent {
  return {
    schemaVersion: row.schema_version as 1,
    id: row.id,
    threadId: row.thread_id,
    seq: row.seq,
    type: row.type as AuditEvent["type"],
    at: row.at,
    data: JSON.parse(row.data) as Record<string, unknown>,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}
