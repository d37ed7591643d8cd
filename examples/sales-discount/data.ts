import type { RetrievalRequest, RetrievedItem } from "eart";

/** The sales scenario's records: quotes, the accounts they belong to, and internal cost sheets. */

/** A quote line. Money is in integer cents. */
export interface QuoteLine {
  sku: string;
  description: string;
  quantity: number;
  unitPriceCents: number;
}

/** A quote as the CRM holds it. */
export interface Quote {
  quoteId: string;
  account: string;
  owner: string;
  lines: QuoteLine[];
  listTotalCents: number;
  validUntil: string;
}

const quote = (quoteId: string, account: string, owner: string, lines: QuoteLine[], validUntil: string): Quote => ({
  quoteId,
  account,
  owner,
  lines,
  listTotalCents: lines.reduce((sum, l) => sum + l.quantity * l.unitPriceCents, 0),
  validUntil,
});

/** Each quote's owner is the account executive who sells it; only the owner has the agent discount it. */
export const QUOTES: Record<string, Quote> = {
  "Q-1001": quote("Q-1001", "Acme Tools", "rita", [{ sku: "LIC-STD", description: "Standard licence, 1 year", quantity: 20, unitPriceCents: 120_000 }], "2025-07-31"),
  "Q-1002": quote(
    "Q-1002",
    "Borealis Freight",
    "rita",
    [
      { sku: "LIC-ENT", description: "Enterprise licence, 3 years", quantity: 50, unitPriceCents: 300_000 },
      { sku: "SUP-PREM", description: "Premium support, 3 years", quantity: 1, unitPriceCents: 1_800_000 },
    ],
    "2025-08-15",
  ),
  "Q-1003": quote("Q-1003", "Cobalt Retail", "rita", [{ sku: "LIC-STD", description: "Standard licence, 1 year", quantity: 5, unitPriceCents: 120_000 }], "2025-07-15"),
  "Q-2001": quote("Q-2001", "Delta Mining", "mia", [{ sku: "LIC-ENT", description: "Enterprise licence, 3 years", quantity: 10, unitPriceCents: 300_000 }], "2025-09-01"),
};

/** The quote with this id, or undefined: an own entry only ("constructor" or "__proto__" is no quote). */
export function quoteOf(quoteId: string): Quote | undefined {
  return Object.hasOwn(QUOTES, quoteId) ? QUOTES[quoteId] : undefined;
}

/** Account facts the agent may read when discounting. */
export const ACCOUNTS: Record<string, { account: string; segment: string; customerSince: string; lastDiscountPercent: number | null }> = {
  "Acme Tools": { account: "Acme Tools", segment: "mid-market", customerSince: "2021-03-01", lastDiscountPercent: 5 },
  "Borealis Freight": { account: "Borealis Freight", segment: "enterprise", customerSince: "2019-11-12", lastDiscountPercent: 12 },
  "Cobalt Retail": { account: "Cobalt Retail", segment: "smb", customerSince: "2024-06-20", lastDiscountPercent: null },
  "Delta Mining": { account: "Delta Mining", segment: "enterprise", customerSince: "2022-01-05", lastDiscountPercent: 15 },
};

/** Internal cost sheets (scope `pricing-internal`): the sales agent does not hold that scope, so they are dropped. */
export const COST_SHEETS: Record<string, { sku: string; unitCostCents: number }[]> = {
  "Q-1001": [{ sku: "LIC-STD", unitCostCents: 18_000 }],
  "Q-1002": [
    { sku: "LIC-ENT", unitCostCents: 40_000 },
    { sku: "SUP-PREM", unitCostCents: 900_000 },
  ],
  "Q-1003": [{ sku: "LIC-STD", unitCostCents: 18_000 }],
  "Q-2001": [{ sku: "LIC-ENT", unitCostCents: 40_000 }],
};

/** The quote ids named in a text ("Q-1002"). */
export const quoteIdsIn = (text: string): string[] => [...new Set(text.match(/\bQ-\d{4}\b/g) ?? [])];

/** Cents as dollars, for people: 2400000 → "$24,000.00". */
export const dollars = (cents: number): string =>
  `$${(cents / 100).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;

/**
 * The context provider: for every quote named in the request that belongs to the human the agent
 * acts for, the quote, its account and its internal cost sheet (a colleague's quote is not read:
 * it is not theirs to discount). The cost sheet carries the `pricing-internal` scope, which the
 * sales agent does not hold: eart drops it before the model sees anything.
 */
export async function quoteContext({ query, identity }: RetrievalRequest): Promise<RetrievedItem[]> {
  return quoteIdsIn(query).flatMap((id): RetrievedItem[] => {
    const q = quoteOf(id);
    if (!q || q.owner !== identity.onBehalfOf.id) return [];
    const account = Object.hasOwn(ACCOUNTS, q.account) ? ACCOUNTS[q.account] : undefined;
    return [
      { id: `quote:${id}`, source: "crm.quotes", scope: "quotes", content: q },
      ...(account ? [{ id: `account:${q.account}`, source: "crm.accounts", scope: "accounts", content: account }] : []),
      { id: `cost:${id}`, source: "finance.cost-sheets", scope: "pricing-internal", labels: ["margin"], content: Object.hasOwn(COST_SHEETS, id) ? COST_SHEETS[id]! : [] },
    ];
  });
}
