import { defineRedaction, STANDARD_REDACTIONS, type RetrievalRequest, type RetrievedItem } from "eart";

/** Fields that hold compensation figures, wherever they occur. */
export const SALARY_FIELDS = ["salary", "baseSalary", "minSalary", "targetSalary", "maxSalary", "expectedSalary", "signOnBonus"];

/**
 * What the offer agent's model may see: the standard rules, plus compensation figures, visible
 * only when the agent acts for an HR manager. Others see `[REDACTED:salary]`.
 */
export const offerRedaction = defineRedaction([
  ...STANDARD_REDACTIONS,
  { id: "salary", fields: SALARY_FIELDS, visibleTo: ["hr-manager"], label: "compensation" },
]);

export interface Candidate {
  candidateId: string;
  name: string;
  email: string;
  requisitionId: string;
  startDate: string;
  /** What the candidate asked for: compensation, so redacted like the band. */
  expectedSalary: number;
}

export const CANDIDATES: Record<string, Candidate> = {
  "CAND-7": { candidateId: "CAND-7", name: "Jordan Lee", email: "jordan.lee@example.com", requisitionId: "REQ-311", startDate: "2026-02-02", expectedSalary: 171_000 },
  // Hired into a level that has no salary band yet: the agent must not draft without one.
  "CAND-8": { candidateId: "CAND-8", name: "Sam Okafor", email: "sam.okafor@example.com", requisitionId: "REQ-412", startDate: "2026-03-02", expectedSalary: 240_000 },
};

export const REQUISITIONS: Record<string, { requisitionId: string; title: string; roleLevel: string; department: string; status: string; approvedBy: string }> = {
  "REQ-311": { requisitionId: "REQ-311", title: "Senior Backend Engineer", roleLevel: "L4", department: "Platform", status: "approved", approvedBy: "hiring committee, 2025-11-04" },
  "REQ-412": { requisitionId: "REQ-412", title: "Distinguished Engineer", roleLevel: "L7", department: "Platform", status: "approved", approvedBy: "CTO, 2025-11-20" },
};

export const SALARY_BANDS: Record<string, { roleLevel: string; currency: string; minSalary: number; targetSalary: number; maxSalary: number; signOnBonus: number }> = {
  L4: { roleLevel: "L4", currency: "USD", minSalary: 148_000, targetSalary: 165_000, maxSalary: 182_000, signOnBonus: 12_000 },
};

/** An own entry of a record, or undefined: "constructor" or "__proto__" names nothing. */
const own = <T>(record: Record<string, T>, key: string): T | undefined => (Object.hasOwn(record, key) ? record[key] : undefined);

/** The candidate with this id, or undefined (own entries only). */
export const candidateOf = (candidateId: string): Candidate | undefined => own(CANDIDATES, candidateId);

/** The requisition with this id, or undefined (own entries only). */
export const requisitionOf = (requisitionId: string): (typeof REQUISITIONS)[string] | undefined => own(REQUISITIONS, requisitionId);

/** The salary band of a role level, or undefined: a level without a band, or no level (own entries only). */
export const bandOf = (roleLevel: string): (typeof SALARY_BANDS)[string] | undefined => own(SALARY_BANDS, roleLevel);

/** Every compensation figure of the data, as digits and with thousands separators: what must never reach a recruiter. */
export const SALARY_FIGURES: string[] = [
  ...Object.values(SALARY_BANDS).flatMap((b) => [b.minSalary, b.targetSalary, b.maxSalary, b.signOnBonus]),
  ...Object.values(CANDIDATES).map((c) => c.expectedSalary),
].flatMap((n) => [String(n), n.toLocaleString("en-US")]);

/**
 * The salary figures that occur in a text as numbers of their own (not inside a hash or an id).
 * @example
 * ```ts
 * salaryFiguresIn('{"targetSalary":165000}'); // ["165000"]
 * ```
 */
export function salaryFiguresIn(text: string): string[] {
  return SALARY_FIGURES.filter((f) => new RegExp(`(?<![0-9A-Za-z])${f}(?![0-9A-Za-z])`).test(text));
}

/** The candidate id a request names ("candidate CAND-7"). */
export function candidateIdOf(text: string): string | undefined {
  return /\bCAND-\d+\b/.exec(text)?.[0];
}

/**
 * Context provider: the candidate, the requisition (role level and approval status) and the
 * salary band of its level. The band is in the `compensation` scope and its figures are redacted
 * by {@link offerRedaction} for anyone but an HR manager.
 */
export async function offerContext({ query }: RetrievalRequest): Promise<RetrievedItem[]> {
  const id = candidateIdOf(query);
  const candidate = id ? candidateOf(id) : undefined;
  const requisition = candidate ? requisitionOf(candidate.requisitionId) : undefined;
  if (!candidate || !requisition) return [];
  const { expectedSalary: _private, ...profile } = candidate;
  const band = bandOf(requisition.roleLevel);
  return [
    { id: `candidate/${candidate.candidateId}`, source: "applicant-tracking", scope: "recruiting", labels: ["candidate"], content: profile },
    {
      id: `requisition/${requisition.requisitionId}`,
      source: "requisitions",
      scope: "recruiting",
      labels: ["role_level", "approval_status"],
      content: { ...requisition },
    },
    ...(band ? [{ id: `band/${band.roleLevel}`, source: "compensation-bands", scope: "compensation", labels: ["salary_band"], content: { ...band } }] : []),
  ];
}
