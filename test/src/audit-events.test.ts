import { Command } from "@langchain/langgraph";
import { tool } from "@langchain/core/tools";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { AUDIT_EVENT_TYPES, AuditEventDataSchemas, MemoryAuditLog, pendingApproval, pendingRecovery, readEventData, type AuditEvent } from "eart";
import { ask, config, lookup, refund, refundSetup } from "../support/refund.js";

/**
 * One schema per audit event type: every event eart's nodes write, across the paths a governed
 * conversation takes, matches its type's schema in full; consumers read typed fields through them.
 */

/** Each event against its type's schema, all fields as eart writes them; the events that do not match. */
function mismatches(events: readonly AuditEvent[]): { type: string; issue: string }[] {
  return events.flatMap((e) => {
    const parsed = AuditEventDataSchemas[e.type].safeParse(e.data);
    return parsed.success ? [] : [{ type: e.type, issue: `${parsed.error.issues[0]!.path.join(".")}: ${parsed.error.issues[0]!.message}` }];
  });
}

describe("typed audit event data", () => {
  it("every event of a governed conversation matches its type's schema: allowed, approved, refused, denied, failed and recovered calls", async () => {
    const auditLog = new MemoryAuditLog();
    let failures = 1;
    const s = refundSetup([[lookup("c0"), refund("c1", 740)], [refund("c2", 9000)], [refund("c3", 50)]], {
      auditLog,
      agent: { recoveryRoles: ["supervisor"] },
      tools: (t) => [
        t.lookupOrder,
        tool(
          async (args: { orderId: string; amount: number }, cfg) => {
            if (args.amount === 50 && failures-- > 0) throw new Error("HTTP 503 from the payments API");
            return t.issueRefund.invoke(args, cfg);
          },
          { name: "issue_refund", description: "Refund an order", schema: z.object({ orderId: z.string(), amount: z.number() }) },
        ),
      ],
    });
    const request = pendingApproval(await s.agent.invoke(ask(), config("ev-1")))!;
    const approve = { decisions: [{ toolCallId: "c1", type: "approve", digest: request.requests[0]!.digest }] };
    await expect(s.agent.invoke(new Command({ resume: approve }), config("ev-1", "cara"))).rejects.toMatchObject({ code: "approval_self_approval" });
    const after = await s.agent.invoke(new Command({ resume: approve }), config("ev-1", "sam"));
    const recovery = pendingRecovery(after) ?? pendingRecovery(await s.agent.getState(config("ev-1")));
    expect(recovery?.requests[0]).toMatchObject({ toolCallId: "c3" });
    await s.agent.invoke(new Command({ resume: { decisions: [{ toolCallId: "c3", type: "retry", digest: recovery!.requests[0]!.digest }] } }), config("ev-1", "sam"));
    const events = await auditLog.read("ev-1");
    const types = new Set(events.map((e) => e.type));
    for (const t of ["identity.bound", "model.output", "policy.decided", "approval.requested", "approval.refused", "approval.decided", "tool.started", "tool.succeeded", "tool.failed", "tool.recovery_requested", "tool.recovery_decided"]) {
      expect(types, t).toContain(t);
    }
    expect(mismatches(events)).toEqual([]);
  });

  it("reads typed fields, and nothing from an event of another type or with a field of the wrong kind", async () => {
    const auditLog = new MemoryAuditLog();
    const [decided, forged] = await auditLog.append([
      { threadId: "ev-2", type: "approval.decided", data: { toolCallId: "c1", name: "issue_refund", digest: "d", originalDigest: "d", approverId: "sam", authenticatedBy: "configurable.user_id", decision: "approve", status: "approved", effect: "require_approval", policyIds: ["refund.supervisor"], policyVersion: "v", requestedUnderVersion: "v", message: null } },
      // Written around the types, as a store edited behind eart's back would hold it.
      { threadId: "ev-2", type: "approval.decided", data: { toolCallId: "c2", approverId: { id: "sam" } } } as never,
    ]);
    expect(readEventData(decided!, "approval.decided")).toMatchObject({ approverId: "sam", toolCallId: "c1", policyIds: ["refund.supervisor"] });
    expect(readEventData(decided!, "policy.decided")).toBeUndefined();
    expect(readEventData(forged!, "approval.decided")).toBeUndefined();
    // An event written before a field existed still reads, without it.
    const [older] = await auditLog.append({ threadId: "ev-2", type: "approval.decided", data: { toolCallId: "c3", approverId: "sue" } } as never);
    expect(readEventData(older!, "approval.decided")).toEqual({ toolCallId: "c3", approverId: "sue" });
  });

  it("names a schema for every event type, and only those", () => {
    expect(Object.keys(AuditEventDataSchemas).sort()).toEqual([...AUDIT_EVENT_TYPES].sort());
    expect(AUDIT_EVENT_TYPES.length).toBe(30);
  });
});
