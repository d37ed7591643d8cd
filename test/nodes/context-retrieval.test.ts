import { Document } from "@langchain/core/documents";
import { HumanMessage } from "@langchain/core/messages";
import { BaseRetriever } from "@langchain/core/retrievers";
import { describe, expect, it } from "vitest";
import {
  defineRedaction,
  EartConfigError,
  luhnValid,
  MemoryAuditLog,
  STANDARD_REDACTIONS,
  type AgentIdentity,
  type RetrievedItem,
} from "eart";
import { contextMessage, createContextRetrieval } from "eart/nodes";

const identity = (roles: string[] = ["customer"], dataScopes = ["orders", "kb"]): AgentIdentity => ({
  schemaVersion: 1,
  id: "support-agent",
  roles: ["support"],
  tools: ["lookup_order"],
  dataScopes,
  onBehalfOf: { id: "cara", roles },
  source: "configurable.user_id",
});
const cfg = { configurable: { thread_id: "c1" } };
const CARD = "4111 1111 1111 1111";

class DocsRetriever extends BaseRetriever {
  lc_namespace = ["test", "retrievers"];
  queries: string[] = [];
  constructor(private readonly docs: Document[]) {
    super();
  }
  async _getRelevantDocuments(query: string): Promise<Document[]> {
    this.queries.push(query);
    return this.docs;
  }
}

describe("redaction", () => {
  it("redacts card numbers that pass Luhn, IBANs and national ids by pattern, and fields by name", () => {
    const redaction = defineRedaction([...STANDARD_REDACTIONS, { id: "salary", fields: ["salary"], visibleTo: ["hr-manager"], label: "compensation" }]);
    const input = {
      note: `paid with ${CARD}, refund to GB33 BUKB 2020 1555 5555 55, ssn 123-45-6789, order 1234567890123`,
      card: "4111-1111-1111-1111",
      nested: [{ salary: 91000 }],
    };
    const out = redaction.apply(input, identity());
    expect(out.value).toEqual({
      note: "paid with [REDACTED:card_number], refund to [REDACTED:iban], ssn [REDACTED:national_id], order 1234567890123",
      card: "[REDACTED:card_number]",
      nested: [{ salary: "[REDACTED:salary]" }],
    });
    expect(out.redacted.map((r) => `${r.path}:${r.ruleId}`).sort()).toEqual(
      ["card:card_number", "nested[0].salary:salary", "note:card_number", "note:iban", "note:national_id"].sort(),
    );
    expect(out.labels).toEqual(["compensation", "payment_data", "pii"]);
    expect(input.card).toBe("4111-1111-1111-1111"); // the input is not changed
    expect(luhnValid("1234567890123")).toBe(false);
  });

  it("shows a value to the roles in visibleTo (of the human the agent acts for) and still labels it", () => {
    const redaction = defineRedaction([{ id: "salary", fields: ["salary"], visibleTo: ["hr-manager"], label: "compensation" }]);
    expect(redaction.apply({ salary: 91000 }, identity(["hr-manager"]))).toEqual({ value: { salary: 91000 }, redacted: [], labels: ["compensation"] });
    expect(redaction.apply({ salary: 91000 }, undefined).value).toEqual({ salary: "[REDACTED:salary]" });
  });

  it("refuses rules without fields or pattern, and duplicate ids", () => {
    expect(() => defineRedaction([{ id: "x" }])).toThrow(EartConfigError);
    expect(() => defineRedaction([{ id: "x", fields: ["a"] }, { id: "x", fields: ["b"] }])).toThrow(/two rules/);
  });
});

describe("createContextRetrieval, called directly", () => {
  const orders = async (): Promise<RetrievedItem[]> => [
    { id: "order-1042", source: "orders-db", scope: "orders", labels: [], content: { orderId: "1042", total: 740, card: CARD } },
    { id: "payment-1042", source: "payments-db", scope: "payments", labels: ["payment_data"], content: { iban: "GB33BUKB20201555555555" } },
  ];

  it("drops items outside the identity's scopes, redacts what it keeps, raises sensitivity, audits provenance only", async () => {
    const auditLog = new MemoryAuditLog();
    const retriever = new DocsRetriever([new Document({ pageContent: `Refund policy: cards like ${CARD} are refunded in 5 days`, metadata: { id: "kb-7", scope: "kb", source: "kb" } })]);
    const node = createContextRetrieval({ providers: [orders, retriever], auditLog, redaction: defineRedaction(STANDARD_REDACTIONS) });
    const update = await node({ messages: [new HumanMessage("refund order 1042")], identity: identity(), context: { items: [], sensitivity: [] } }, cfg);
    expect(retriever.queries).toEqual(["refund order 1042"]);
    expect(update.context.items.map((i) => i.id)).toEqual(["order-1042", "kb-7"]);
    expect(update.context.items[0]!.content).toEqual({ orderId: "1042", total: 740, card: "[REDACTED:card_number]" });
    expect(update.context.items[1]!.content).toBe("Refund policy: cards like [REDACTED:card_number] are refunded in 5 days");
    expect(update.context.items[0]!.digest).toMatch(/^[0-9a-f]{64}$/);
    expect(update.context.sensitivity).toEqual(["payment_data"]);
    expect(update.escalation).toBeUndefined();
    const [event] = await auditLog.read("c1");
    expect(event!.type).toBe("context.retrieved");
    expect(event!.data).toMatchObject({
      dropped: [{ id: "payment-1042", source: "payments-db", scope: "payments" }],
      redacted: [
        { itemId: "order-1042", path: "card", ruleId: "card_number" },
        { itemId: "kb-7", path: "", ruleId: "card_number" },
      ],
    });
    const json = JSON.stringify(await auditLog.read("c1"));
    expect(json).not.toContain("4111");
    expect(json).not.toContain("GB33");
    // What the model is shown: only the kept, redacted items.
    const shown = String(contextMessage({ items: update.context.items, sensitivity: [] }).content);
    expect(shown).toContain("[order-1042] (orders-db)");
    expect(shown).not.toContain("4111");
  });

  it("escalates when a required fact is missing, and counts a failing provider as missing", async () => {
    const auditLog = new MemoryAuditLog();
    const failing = async (): Promise<RetrievedItem[]> => {
      throw new Error("document store unavailable");
    };
    const docs = async (): Promise<RetrievedItem[]> => [{ id: "doc-id", source: "uploads", scope: "orders", labels: ["identity_document"], content: "passport" }];
    const node = createContextRetrieval({
      providers: [docs, failing],
      auditLog,
      required: [{ fact: "identity_document" }, { fact: "income_proof", description: "a payslip or tax return" }],
      clock: () => new Date("2026-01-01T00:00:00Z"),
    });
    const update = await node({ messages: [new HumanMessage("prescreen")], identity: identity(), context: { items: [], sensitivity: [] } }, cfg);
    expect(update.escalation).toEqual({
      reason: "Required context is missing: income_proof",
      toolCallIds: [],
      policyIds: [],
      at: "2026-01-01T00:00:00.000Z",
      signals: [{ kind: "missing_context", detail: "income_proof: a payslip or tax return" }],
    });
    const events = await auditLog.read("c1");
    expect(events.map((e) => e.type)).toEqual(["context.retrieved", "escalation.requested"]);
    expect(events[0]!.data).toMatchObject({ failed: [{ provider: "failing", error: "document store unavailable" }], missing: ["income_proof"] });
  });

  it("drops retriever documents that carry no scope (fail closed)", async () => {
    const node = createContextRetrieval({ providers: [new DocsRetriever([new Document({ pageContent: "unscoped" })])], auditLog: new MemoryAuditLog() });
    const update = await node({ messages: [new HumanMessage("q")], identity: identity(), context: { items: [], sensitivity: [] } }, cfg);
    expect(update.context.items).toEqual([]);
  });

  it("refuses to run without a bound identity, and bad options at construction", async () => {
    const node = createContextRetrieval({ providers: [orders], auditLog: new MemoryAuditLog() });
    await expect(node({ messages: [], identity: undefined, context: { items: [], sensitivity: [] } }, cfg)).rejects.toMatchObject({ code: "identity_missing" });
    expect(() => createContextRetrieval({ providers: [], auditLog: new MemoryAuditLog() })).toThrow(EartConfigError);
    expect(() => createContextRetrieval({ providers: [{} as never], auditLog: new MemoryAuditLog() })).toThrow(EartConfigError);
  });
});

describe("a case opened for missing context", () => {
  it("is closed by the next retrieval that finds what was missing, and left alone otherwise", async () => {
    const docs = async (): Promise<RetrievedItem[]> => [{ id: "d", source: "uploads", scope: "orders", labels: ["income_proof"], content: "payslip" }];
    const node = createContextRetrieval({ providers: [docs], auditLog: new MemoryAuditLog(), required: [{ fact: "income_proof" }] });
    const missing = { reason: "Required context is missing: income_proof", toolCallIds: [], policyIds: [], at: "t", signals: [{ kind: "missing_context" as const, detail: "income_proof" }] };
    const base = { messages: [new HumanMessage("q")], identity: identity(), context: { items: [], sensitivity: [] } };
    expect((await node({ ...base, escalation: missing }, cfg)).escalation).toBeNull();
    const policyCase = { ...missing, signals: [{ kind: "policy" as const, detail: "x" }] };
    expect((await node({ ...base, escalation: policyCase }, cfg)).escalation).toBeUndefined();
  });
});

describe("redaction of JSON text", () => {
  it("redacts fields inside a string that holds JSON (a tool's result), and leaves other strings alone", () => {
    const redaction = defineRedaction([{ id: "salary", fields: ["salary"], label: "compensation" }]);
    const out = redaction.apply(JSON.stringify({ name: "Ann", offer: { salary: 85000 } }), undefined);
    expect(JSON.parse(out.value)).toEqual({ name: "Ann", offer: { salary: "[REDACTED:salary]" } });
    expect(out.redacted).toEqual([{ path: "offer.salary", ruleId: "salary" }]);
    expect(redaction.apply("{not json salary: 1}", undefined).value).toBe("{not json salary: 1}");
  });
});
