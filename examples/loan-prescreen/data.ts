import type { RetrievalRequest, RetrievedItem } from "eart";

/** A loan application as the bank's intake system holds it. Money in integer cents. */
export interface LoanApplication {
  applicationId: string;
  applicantId: string;
  applicant: string;
  amountCents: number;
  termMonths: number;
  purpose: string;
}

/** A document the applicant submitted; `kind` is the fact it proves (`income_proof`, `identity_document`…). */
export interface SubmittedDocument {
  id: string;
  kind: "identity_document" | "income_proof" | "bank_statement";
  /** The data scope an identity needs to read it. Bank statements are `banking`: not the agent's. */
  scope: string;
  content: Record<string, unknown>;
}

/** A credit bureau report. */
export interface CreditReport {
  applicantId: string;
  score: number;
  monthlyDebtCents: number;
  delinquencies: number;
}

export const APPLICATIONS: Record<string, LoanApplication> = {
  "A-100": { applicationId: "A-100", applicantId: "P-100", applicant: "Dana Ortiz", amountCents: 2_500_000, termMonths: 60, purpose: "home renovation" },
  "A-200": { applicationId: "A-200", applicantId: "P-200", applicant: "Eli Brandt", amountCents: 12_000_000, termMonths: 120, purpose: "small business expansion" },
  "A-300": { applicationId: "A-300", applicantId: "P-300", applicant: "Farah Nasser", amountCents: 1_800_000, termMonths: 48, purpose: "car purchase" },
  "A-400": { applicationId: "A-400", applicantId: "P-400", applicant: "Gus Ibarra", amountCents: 3_000_000, termMonths: 60, purpose: "debt consolidation" },
};

const passport = (name: string, nationalId: string) => ({ type: "passport", name, nationalId, expires: "2031-05-01", verified: true });
const payslip = (employer: string, annualIncomeCents: number) => ({ type: "payslips (3 months)", employer, annualIncomeCents });

/** What each applicant submitted. A-300 sent no income proof. */
export const DOCUMENTS: Record<string, SubmittedDocument[]> = {
  "A-100": [
    { id: "A-100/passport", kind: "identity_document", scope: "loan_documents", content: passport("Dana Ortiz", "123-45-6789") },
    { id: "A-100/payslips", kind: "income_proof", scope: "loan_documents", content: payslip("Northwind Traders", 9_600_000) },
    { id: "A-100/bank-statement", kind: "bank_statement", scope: "banking", content: { iban: "DE89 3704 0044 0532 0130 00", balanceCents: 1_250_000 } },
  ],
  "A-200": [
    { id: "A-200/passport", kind: "identity_document", scope: "loan_documents", content: passport("Eli Brandt", "234-56-7890") },
    { id: "A-200/tax-return", kind: "income_proof", scope: "loan_documents", content: { type: "tax return 2024", annualIncomeCents: 21_000_000 } },
  ],
  "A-300": [{ id: "A-300/passport", kind: "identity_document", scope: "loan_documents", content: passport("Farah Nasser", "345-67-8901") }],
  "A-400": [
    { id: "A-400/passport", kind: "identity_document", scope: "loan_documents", content: passport("Gus Ibarra", "456-78-9012") },
    { id: "A-400/payslips", kind: "income_proof", scope: "loan_documents", content: payslip("Contoso Ltd", 4_800_000) },
  ],
};

export const CREDIT_REPORTS: Record<string, CreditReport> = {
  "P-100": { applicantId: "P-100", score: 742, monthlyDebtCents: 45_000, delinquencies: 0 },
  "P-200": { applicantId: "P-200", score: 781, monthlyDebtCents: 120_000, delinquencies: 0 },
  "P-300": { applicantId: "P-300", score: 705, monthlyDebtCents: 30_000, delinquencies: 0 },
  // A good score, but debts take more than half of the monthly income: the checks disagree.
  "P-400": { applicantId: "P-400", score: 760, monthlyDebtCents: 210_000, delinquencies: 0 },
};

/** The application with this id, or undefined: an own entry only ("constructor" or "__proto__" is no application). */
export function applicationOf(applicationId: string): LoanApplication | undefined {
  return Object.hasOwn(APPLICATIONS, applicationId) ? APPLICATIONS[applicationId] : undefined;
}

/** The application id a request names ("application A-100"). */
export function applicationIdOf(text: string): string | undefined {
  return /\bA-\d+\b/.exec(text)?.[0];
}

/**
 * Context provider: the application and the documents its applicant submitted, each labelled with
 * the fact it proves. The bank statement is in the `banking` scope, which the agent does not
 * hold: eart drops it before the model sees it.
 */
export async function applicantDocuments({ query }: RetrievalRequest): Promise<RetrievedItem[]> {
  const id = applicationIdOf(query);
  const application = id ? applicationOf(id) : undefined;
  if (!application) return [];
  return [
    { id: `${application.applicationId}/application`, source: "loan-intake", scope: "loan_documents", labels: ["loan_application"], content: { ...application } },
    ...(Object.hasOwn(DOCUMENTS, application.applicationId) ? DOCUMENTS[application.applicationId]! : []).map((d) => ({ id: d.id, source: "document-store", scope: d.scope, labels: [d.kind], content: d.content })),
  ];
}

/** Context provider: the applicant's credit report from the bureau (scope `credit`). */
export async function creditBureau({ query }: RetrievalRequest): Promise<RetrievedItem[]> {
  const id = applicationIdOf(query);
  const application = id ? applicationOf(id) : undefined;
  const report = application && Object.hasOwn(CREDIT_REPORTS, application.applicantId) ? CREDIT_REPORTS[application.applicantId] : undefined;
  if (!report) return [];
  return [{ id: `credit/${report.applicantId}`, source: "credit-bureau", scope: "credit", labels: ["credit_report"], content: { ...report } }];
}
