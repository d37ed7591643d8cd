import { z } from "zod";
import type { AuditEventType } from "./events.js";
import { parseOptions } from "../internal/options.js";
import { AuditStoreError } from "../errors.js";

/**
 * The inbox index: what waits for a human, kept by the audit stores beside the chain, so listing
 * it reads the open entries instead of every thread. It is a cache of what the chain says, never
 * an authority: an answer is still checked by the graph that asked. One pure reading of the
 * events ({@link inboxChanges}) decides what opens and closes an entry, for every store.
 */

/** The kinds of pending task the index keeps (the human task of `eart.approval`, `eart.recovery`, `eart.escalation`). */
export const PENDING_KINDS = ["approval", "recovery", "escalation"] as const;
export type PendingKind = (typeof PENDING_KINDS)[number];

/**
 * One thing waiting for a human, as the audit log recorded its request: a call waiting for an
 * approval or a recovery decision, or a thread's case waiting for a reviewer.
 */
export const PendingTaskSchema = z
  .object({
    threadId: z.string().min(1),
    kind: z.enum(PENDING_KINDS),
    /** The call that waits; null for an escalation (the thread's case). */
    toolCallId: z.string().min(1).nullable(),
    /** The tool's name, when the request names it. */
    name: z.string().nullable(),
    /**
     * Roles that may answer (any one of them), as the request recorded them; null when the request
     * records none (recovery and escalation requests name the roles in the interrupt, not the event).
     */
    roles: z.array(z.string()).nullable(),
    /** The agent and the user the request is about, when it says. */
    requestedBy: z.object({ agentId: z.string(), userId: z.string() }).nullable(),
    /** When it started waiting (ISO): the request's `since`, else the time of its event. */
    since: z.string(),
    /** When the request lapses (ISO), when it does. */
    expiresAt: z.string().nullable(),
    /** The `seq` and time of the audit event that opened it (last). */
    seq: z.number().int().nonnegative(),
    at: z.string(),
  })
  .strict();
export type PendingTask = z.output<typeof PendingTaskSchema>;

/** The fields of a stored audit event the index reads (an `AuditEvent` has them). */
export interface InboxEvent {
  threadId: string;
  seq: number;
  type: string;
  at: string;
  data: Record<string, unknown>;
}

/** What {@link AuditLog.pending} lists. */
export interface PendingOptions {
  /** Only tasks whose recorded roles include this one (exactly); tasks that record no roles are left out. */
  role?: string;
  /** At most this many tasks, oldest first. */
  limit?: number;
}

/** A change one event makes to the index: a task opened (or replaced), or one closed. */
export type InboxChange = { op: "open"; task: PendingTask } | { op: "close"; threadId: string; kind: PendingKind; toolCallId: string | null };

/** The event types that open or close an entry (what a store rebuilding its index reads). */
export const INBOX_EVENT_TYPES: readonly AuditEventType[] = [
  "approval.requested",
  "approval.decided",
  "approval.expired",
  "tool.recovery_requested",
  "tool.recovery_decided",
  "escalation.requested",
  "escalation.decided",
];

const INBOX_TYPES: ReadonlySet<string> = new Set(INBOX_EVENT_TYPES);

const strings = (value: unknown): string[] | null => (Array.isArray(value) && value.every((v) => typeof v === "string") ? [...new Set(value as string[])] : null);
const text = (value: unknown): string | null => (typeof value === "string" && value !== "" ? value : null);
const requester = (value: unknown): PendingTask["requestedBy"] => {
  const r = value as { agentId?: unknown; userId?: unknown } | null | undefined;
  return r && typeof r.agentId === "string" && typeof r.userId === "string" ? { agentId: r.agentId, userId: r.userId } : null;
};

/**
 * What one stored event does to the inbox index, keyed by the event's own thread (never by a
 * thread id in its data): an approval request opens one entry per call it lists (roles: the call's
 * `approverRoles`), a recovery request one for its call, an escalation request one for the thread;
 * the decision of a call (`approval.decided`, `tool.recovery_decided`), an expired approval and an
 * escalation's decision close theirs. Refused answers close nothing: the thread still waits. An
 * approval decided short of its quorum is asked again by the `approval.requested` that follows it.
 * @example
 * ```ts
 * for (const change of inboxChanges(event)) if (change.op === "open") console.log(change.task.roles);
 * ```
 */
export function inboxChanges(event: InboxEvent): InboxChange[] {
  if (!INBOX_TYPES.has(event.type)) return [];
  const { threadId, seq, at } = event;
  const close = (kind: PendingKind, toolCallId: unknown): InboxChange[] => {
    const id = text(toolCallId);
    return kind !== "escalation" && id === null ? [] : [{ op: "close", threadId, kind, toolCallId: kind === "escalation" ? null : id }];
  };
  switch (event.type) {
    case "approval.requested": {
      // Read field by field, not through the event's schema: this runs inside every append.
      const data = event.data;
      const items = Array.isArray(data.requests) ? (data.requests as unknown[]) : [];
      const since = text(data.since) ?? at;
      const changes: InboxChange[] = [];
      for (const item of items) {
        const r = (item ?? {}) as { toolCallId?: unknown; name?: unknown; approverRoles?: unknown; requestedBy?: unknown; expiresAt?: unknown };
        const toolCallId = text(r.toolCallId);
        if (toolCallId === null) continue;
        changes.push({
          op: "open",
          task: {
            threadId,
            kind: "approval",
            toolCallId,
            name: text(r.name),
            roles: strings(r.approverRoles) ?? strings(data.roles),
            requestedBy: requester(r.requestedBy) ?? requester(data.requestedBy),
            since,
            expiresAt: text(r.expiresAt),
            seq,
            at,
          },
        });
      }
      return changes;
    }
    case "approval.decided":
    case "approval.expired":
      return close("approval", event.data.toolCallId);
    case "tool.recovery_requested": {
      const toolCallId = text(event.data.toolCallId);
      if (toolCallId === null) return [];
      const task: PendingTask = {
        threadId,
        kind: "recovery",
        toolCallId,
        name: text(event.data.name),
        roles: strings(event.data.roles),
        requestedBy: requester(event.data.requestedBy),
        since: at,
        expiresAt: null,
        seq,
        at,
      };
      return [{ op: "open", task }];
    }
    case "tool.recovery_decided":
      return close("recovery", event.data.toolCallId);
    case "escalation.requested": {
      const task: PendingTask = {
        threadId,
        kind: "escalation",
        toolCallId: null,
        name: null,
        roles: strings(event.data.roles),
        requestedBy: requester(event.data.requestedBy),
        since: text(event.data.since) ?? at,
        expiresAt: null,
        seq,
        at,
      };
      return [{ op: "open", task }];
    }
    case "escalation.decided":
      return close("escalation", null);
    default:
      return [];
  }
}

/** The key of an entry: its thread, kind and call (`""` for an escalation). */
export function inboxKey(task: { threadId: string; kind: PendingKind; toolCallId: string | null }): string {
  return JSON.stringify([task.threadId, task.kind, task.toolCallId ?? ""]);
}

/**
 * The net effect of events on the index, key by key: the last change to each entry wins (a task
 * to write, or `null`: remove it). What a SQL store writes in the transaction of an append.
 * @example
 * ```ts
 * const net = netInboxChanges(appended); // Map { '["t1","approval","c1"]' => { … } | null }
 * ```
 */
export function netInboxChanges(events: Iterable<InboxEvent>): Map<string, { key: [string, PendingKind, string]; task: PendingTask | null }> {
  const net = new Map<string, { key: [string, PendingKind, string]; task: PendingTask | null }>();
  for (const event of events) {
    for (const change of inboxChanges(event)) {
      const entry = change.op === "open" ? change.task : change;
      const key: [string, PendingKind, string] = [entry.threadId, entry.kind, entry.toolCallId ?? ""];
      net.set(inboxKey(entry), { key, task: change.op === "open" ? change.task : null });
    }
  }
  return net;
}

/** Oldest first; then by thread, kind and call, so the order is total. */
export function comparePending(a: PendingTask, b: PendingTask): number {
  const by = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0);
  return by(a.since, b.since) || by(a.threadId, b.threadId) || by(a.kind, b.kind) || by(a.toolCallId ?? "", b.toolCallId ?? "");
}

const PendingOptionsSchema = z
  .object({ role: z.string().min(1).optional(), limit: z.number().int().positive().optional() })
  .strict();

/** The options of {@link AuditLog.pending}, checked; throws `EartConfigError` naming a bad one. */
export function parsePendingOptions(options: PendingOptions | undefined): PendingOptions {
  return parseOptions(PendingOptionsSchema, options ?? {});
}

/**
 * The inbox index in memory: the open entries by key, kept by applying events in chain order.
 * The memory audit log keeps one; the SQL stores replay into one when they rebuild theirs.
 * @example
 * ```ts
 * const index = new InboxIndex();
 * for (const e of await auditLog.read("t1")) index.apply(e);
 * index.list({ role: "supervisor" });
 * ```
 */
export class InboxIndex {
  readonly #open = new Map<string, PendingTask>();

  /** Applies one stored event. */
  apply(event: InboxEvent): void {
    for (const change of inboxChanges(event)) {
      if (change.op === "open") this.#open.set(inboxKey(change.task), change.task);
      else this.#open.delete(inboxKey(change));
    }
  }

  /** The open entries, oldest first, filtered and bounded as {@link PendingOptions} say. */
  list(options: PendingOptions = {}): PendingTask[] {
    const { role, limit } = options;
    const tasks = [...this.#open.values()].filter((t) => role === undefined || (t.roles?.includes(role) ?? false)).sort(comparePending);
    return (limit === undefined ? tasks : tasks.slice(0, limit)).map(copyTask);
  }

  /** Every open entry, in no particular order (for a store writing them out). */
  entries(): IterableIterator<PendingTask> {
    return this.#open.values();
  }
}

/** A copy a caller may change without changing the index. */
export function copyTask(task: PendingTask): PendingTask {
  return { ...task, roles: task.roles && [...task.roles], requestedBy: task.requestedBy && { ...task.requestedBy } };
}

/** Whether a value read back from a store is a {@link PendingTask} (what the schema says, checked by hand: a listing reads thousands). */
function isPendingTask(value: unknown): value is PendingTask {
  const t = value as Record<string, unknown> | null;
  if (typeof t !== "object" || t === null || Array.isArray(t)) return false;
  const str = (v: unknown) => typeof v === "string";
  const optional = (v: unknown) => v === null || typeof v === "string";
  const roles = t.roles;
  const by = t.requestedBy as Record<string, unknown> | null;
  return (
    Object.keys(t).length === 10 &&
    str(t.threadId) &&
    t.threadId !== "" &&
    (PENDING_KINDS as readonly unknown[]).includes(t.kind) &&
    (t.toolCallId === null || (str(t.toolCallId) && t.toolCallId !== "")) &&
    optional(t.name) &&
    (roles === null || (Array.isArray(roles) && roles.every(str))) &&
    (by === null || (typeof by === "object" && !Array.isArray(by) && Object.keys(by).length === 2 && str(by.agentId) && str(by.userId))) &&
    str(t.since) &&
    optional(t.expiresAt) &&
    Number.isInteger(t.seq) &&
    (t.seq as number) >= 0 &&
    str(t.at)
  );
}

/**
 * A stored row of a SQL store's inbox index (the task's JSON) as a task: a row that is not one is
 * a damaged index, and says so (`AuditStoreError`) instead of listing something made up.
 */
export function readPendingRow(row: string, store: string): PendingTask {
  let value: unknown;
  try {
    value = JSON.parse(row);
  } catch {
    value = undefined;
  }
  if (!isPendingTask(value)) {
    const issue = PendingTaskSchema.safeParse(value).error?.issues[0];
    throw new AuditStoreError(`The ${store} inbox index holds a row that is not a pending task (${issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : "malformed"}); the audit events are untouched`);
  }
  return value;
}
