/** The Luhn check digit of a number without it (what makes a generated card number valid). */
export function luhnCheckDigit(body: string): string {
  let sum = 0;
  for (let i = 0; i < body.length; i++) {
    let d = Number(body[body.length - 1 - i]);
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return String((10 - (sum % 10)) % 10);
}

/** The i-th of many distinct 16-digit card numbers that pass Luhn. */
export const cardNumber = (i: number): string => {
  const body = `411111${String(i).padStart(9, "0")}`;
  return body + luhnCheckDigit(body);
};

/** Where in a value (JSON paths) a string, number or key holds `needle`, separators ignored. */
export function where(value: unknown, needle: string, path = "$", out: string[] = []): string[] {
  const bare = needle.replace(/[\s-]/g, "");
  const holds = (s: string) => s.replace(/[\s-]/g, "").includes(bare);
  if (typeof value === "string") {
    if (holds(value)) out.push(path);
  } else if (typeof value === "number") {
    if (holds(String(value))) out.push(path);
  } else if (Array.isArray(value)) value.forEach((v, i) => where(v, needle, `${path}[${i}]`, out));
  else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (holds(k)) out.push(`${path}.{key}`);
      where(v, needle, `${path}.${k}`, out);
    }
  }
  return out;
}
