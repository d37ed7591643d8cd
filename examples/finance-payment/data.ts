import { defineRedaction, STANDARD_REDACTIONS, type RetrievedItem } from "eart";

/** The finance scenario's records: vendor invoices, vendors and their bank accounts. Money is in integer cents. */

export interface Invoice {
  invoiceId: string;
  vendorId: string;
  amountCents: number;
  currency: string;
  dueDate: string;
  description: string;
}

export const INVOICES: Record<string, Invoice> = {
  "INV-7731": { invoiceId: "INV-7731", vendorId: "V-204", amountCents: 1_284_500, currency: "EUR", dueDate: "2025-07-20", description: "Freight, June" },
  "INV-7732": { invoiceId: "INV-7732", vendorId: "V-311", amountCents: 49_900, currency: "GBP", dueDate: "2025-07-25", description: "Office supplies" },
  "INV-7733": { invoiceId: "INV-7733", vendorId: "V-204", amountCents: 1, currency: "EUR", dueDate: "2025-07-31", description: "Rounding correction" },
};

export interface Vendor {
  vendorId: string;
  name: string;
  email: string;
  /** Bank details: retrieved as their own item, labelled `payment_data`. */
  bank: { accountHolder: string; iban: string; bic: string };
}

export const VENDORS: Record<string, Vendor> = {
  "V-204": {
    vendorId: "V-204",
    name: "Nordwind Logistics GmbH",
    email: "ap@nordwind.example",
    bank: { accountHolder: "Nordwind Logistics GmbH", iban: "DE89 3704 0044 0532 0130 00", bic: "COBADEFFXXX" },
  },
  "V-311": {
    vendorId: "V-311",
    name: "Lumen Office Supplies Ltd",
    email: "accounts@lumen-office.example",
    bank: { accountHolder: "Lumen Office Supplies Ltd", iban: "GB29 NWBK 6016 1331 9268 19", bic: "NWBKGB2L" },
  },
};

/** The invoice with this id, or undefined: an own entry only ("constructor" or "__proto__" is no invoice). */
export function invoiceOf(invoiceId: string): Invoice | undefined {
  return Object.hasOwn(INVOICES, invoiceId) ? INVOICES[invoiceId] : undefined;
}

/** The vendor with this id, or undefined: an own entry only. */
export function vendorOf(vendorId: string): Vendor | undefined {
  return Object.hasOwn(VENDORS, vendorId) ? VENDORS[vendorId] : undefined;
}

export const invoiceIdsIn = (text: string): string[] => [...new Set(text.match(/\bINV-\d{4}\b/g) ?? [])];
export const vendorIdsIn = (text: string): string[] => [...new Set(text.match(/\bV-\d{3}\b/g) ?? [])];

/** Cents with their currency, for people: 1284500 EUR → "EUR 12,845.00". */
export const money = (cents: number, currency: string): string =>
  `${currency} ${(cents / 100).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;

const vendorItem = (v: Vendor): RetrievedItem => ({
  id: `vendor:${v.vendorId}`,
  source: "erp.vendors",
  scope: "vendors",
  content: { vendorId: v.vendorId, name: v.name, email: v.email },
});

/**
 * The context provider. Paying an invoice needs the invoice, its vendor and the vendor's bank
 * details (labelled `payment_data`); a request that only names a vendor gets the vendor's contact
 * record, and no bank details.
 */
export async function paymentContext({ query }: { query: string }): Promise<RetrievedItem[]> {
  const invoices = invoiceIdsIn(query).flatMap((id) => invoiceOf(id) ?? []);
  const items: RetrievedItem[] = [];
  for (const invoice of invoices) {
    const vendor = vendorOf(invoice.vendorId)!;
    items.push(
      { id: `invoice:${invoice.invoiceId}`, source: "erp.invoices", scope: "invoices", content: invoice },
      vendorItem(vendor),
      { id: `bank:${vendor.vendorId}`, source: "erp.vendor-bank-accounts", scope: "vendor-bank", labels: ["payment_data"], content: { vendorId: vendor.vendorId, ...vendor.bank } },
    );
  }
  if (invoices.length === 0) for (const vendor of vendorIdsIn(query).flatMap((id) => vendorOf(id) ?? [])) items.push(vendorItem(vendor));
  return [...new Map(items.map((item) => [item.id, item])).values()];
}

/**
 * The standard redactions (card numbers, IBANs, national ids), except that an IBAN is shown when
 * the agent acts for someone in treasury. Everyone else's agent sees `[REDACTED:iban]`; the
 * thread is labelled `payment_data` either way.
 */
export const paymentRedaction = defineRedaction(STANDARD_REDACTIONS.map((rule) => (rule.id === "iban" ? { ...rule, visibleTo: ["treasury"] } : rule)));
