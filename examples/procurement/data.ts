import { Document } from "@langchain/core/documents";
import { BaseRetriever } from "@langchain/core/retrievers";
import type { RetrievalRequest, RetrievedItem } from "eart";

/** A supplier agreement. Prices in integer cents per unit. */
export interface SupplierContract {
  contractId: string;
  supplierId: string;
  supplier: string;
  item: string;
  unitPriceCents: number;
  renewal: string;
}

export const CONTRACTS: SupplierContract[] = [
  { contractId: "C-17", supplierId: "SUP-ACME", supplier: "Acme Safety Supply", item: "nitrile gloves (box of 100)", unitPriceCents: 1_450, renewal: "2026-03-31" },
  { contractId: "C-22", supplierId: "SUP-BORE", supplier: "Borealis Packaging", item: "corrugated box 40x30x30", unitPriceCents: 95, renewal: "2026-09-30" },
  { contractId: "C-31", supplierId: "SUP-COBA", supplier: "Cobalt Logistics", item: "pallet shipment (regional)", unitPriceCents: 8_900, renewal: "2026-06-30" },
];

/** Units bought in the last twelve months, per contract. */
export const ANNUAL_VOLUME: Record<string, number> = { "C-17": 12_000, "C-22": 400_000, "C-31": 1_500 };

/** Median market price per unit for the same item, in cents. */
export const BENCHMARKS: Record<string, number> = { "C-17": 1_180, "C-22": 98, "C-31": 8_600 };

/**
 * The contract repository as a LangChain retriever: each agreement is a document whose metadata
 * carries its id, source, scope and labels, as eart reads them.
 */
export class ContractRetriever extends BaseRetriever {
  override lc_namespace = ["eart", "examples", "procurement"];

  override async _getRelevantDocuments(_query: string): Promise<Document[]> {
    return CONTRACTS.map(
      (c) =>
        new Document({
          pageContent: JSON.stringify(c),
          metadata: { id: `contract/${c.contractId}`, source: "contract-repository", scope: "contracts", labels: ["supplier_contract"] },
        }),
    );
  }
}

/** Context provider: twelve months of spend per contract (scope `spend`). */
export async function spendData(_request: RetrievalRequest): Promise<RetrievedItem[]> {
  return CONTRACTS.map((c) => ({
    id: `spend/${c.contractId}`,
    source: "erp-spend-cube",
    scope: "spend",
    labels: ["spend_data"],
    content: { contractId: c.contractId, annualUnits: ANNUAL_VOLUME[c.contractId]!, annualSpendCents: ANNUAL_VOLUME[c.contractId]! * c.unitPriceCents },
  }));
}

/** Context provider: market benchmark prices (scope `market_data`). */
export async function priceBenchmarks(_request: RetrievalRequest): Promise<RetrievedItem[]> {
  return CONTRACTS.map((c) => ({
    id: `benchmark/${c.contractId}`,
    source: "market-benchmark-feed",
    scope: "market_data",
    labels: ["benchmark"],
    content: { contractId: c.contractId, item: c.item, medianUnitPriceCents: BENCHMARKS[c.contractId]! },
  }));
}
