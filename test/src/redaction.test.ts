import { describe, expect, it } from "vitest";
import { defineRedaction, STANDARD_REDACTIONS } from "eart";
import { ibanValid, luhnValid, nationalIdValid } from "../../src/context/redaction.js";

const standard = defineRedaction(STANDARD_REDACTIONS);
const redact = (value: unknown) => standard.apply(value, undefined);
const CARD = "4111111111111111";

describe("standard redactions on the forms attackers and real input use", () => {
  it.each([
    ["full-width digits", "card ４１１１ １１１１ １１１１ １１１１ please"],
    ["non-breaking spaces", "card 4111\u00a01111\u00a01111\u00a01111 please"],
    ["narrow and ideographic spaces", "card 4111\u202f1111\u30001111\u20071111 please"],
    ["dots", "card 4111.1111.1111.1111 please"],
    ["double spaces", "card 4111  1111  1111  1111 please"],
    ["slashes and unicode dashes", "card 4111/1111\u20131111\u20101111 please"],
    ["zero-width spaces between digits", "card 4\u200b1\u200b1\u200b1\u200b1111\u200d1111\ufeff1111 please"],
    ["bidi controls", "card \u202e4111 1111 1111 1111\u202c please"],
    ["glued to a word with _", `card_${CARD}_end`],
    ["digits before it", `ref 12 ${CARD.replace(/(\d{4})(?=\d)/g, "$1 ")} ok`],
    ["digits after it", `card ${CARD.replace(/(\d{4})(?=\d)/g, "$1 ")} 5 ok`],
  ])("a card number in %s", (_, text) => {
    const result = redact(text);
    expect(result.value).toContain("[REDACTED:card_number]");
    expect(result.value.replace(/\D/g, "")).not.toContain(CARD);
    expect(result.labels).toEqual(["payment_data"]);
  });

  // A client that concatenates a label and the number (`CC` + card, card + `exp`, a field name and
  // its value) left no word edge beside the digits: the card went through whole. Up to 20 letters
  // glued to a number that does not start with 0 are now read as its label; after it, the label
  // may end in up to 4 digits (an expiry, a CVV).
  it.each([
    ["a label glued before it", `Paid with CC${CARD}.`, `Paid with CC[REDACTED:card_number].`],
    ["a label glued before it, grouped", "CC4111 1111 1111 1111", "CC[REDACTED:card_number]"],
    ["a brand glued before it", `visa${CARD} thanks`, `visa[REDACTED:card_number] thanks`],
    ["a word glued after it", `${CARD}exp 12/29`, `[REDACTED:card_number]exp 12/29`],
    ["letters on both sides", `(MC5500000000000004EXP)`, `(MC[REDACTED:card_number]EXP)`],
    ["a field name of 20 letters", `primaryAccountNumber${CARD}`, `primaryAccountNumber[REDACTED:card_number]`],
    ["its expiry glued after", `${CARD}exp1229`, `[REDACTED:card_number]exp1229`],
    ["its CVV glued after", `cardno:${CARD}cvv737`, `cardno:[REDACTED:card_number]cvv737`],
    ["a grouped 19-digit card, a label after it", "4943 4021 2106 3850 981boFNFy", "[REDACTED:card_number]boFNFy"],
    ["a first group that fails Luhn on its own", "card 4111111111111 111exp", "card [REDACTED:card_number]exp"],
    ["a network outside 2 to 6 (UATP), glued", "UATP122000000000003", "UATP[REDACTED:card_number]"],
    ["16 digits after a + (no phone number is that long)", `Visa+${CARD}`, `Visa+[REDACTED:card_number]`],
  ])("a card number with %s", (_, text, expected) => {
    const result = redact(text);
    expect(result.value).toBe(expected);
    expect(result.labels).toEqual(["payment_data"]);
  });

  it("a US social security number with a label glued before it", () => {
    expect(redact("id SSN123-45-6789.").value).toBe("id SSN[REDACTED:national_id].");
    expect(redact("socialsecuritynumber123-45-6789").value).toBe("socialsecuritynumber[REDACTED:national_id]");
  });

  it("a card written with a mark on each digit, or in another script's digits, is read as its digits", () => {
    for (const text of [[...CARD].map((d) => `${d}\u0332`).join(""), [...CARD].map((d) => `${d}\ufe0f\u20e3`).join(""), [...CARD].map((d) => String.fromCharCode(0x0660 + Number(d))).join(""), [...CARD].map((d) => String.fromCharCode(0x0966 + Number(d))).join("")]) {
      expect(redact(`card ${text} ok`).value, text).toBe("card [REDACTED:card_number] ok");
    }
    // Other scripts' digits that are no card stay as they are.
    expect(redact("order ٤٢ on ١٠/٣").value).toBe("order ٤٢ on ١٠/٣");
  });

  it("digits inside a longer code, a hash or a UUID are not a glued card: hex digests, UUIDs, ids of letters and digits, a longer label", () => {
    // 20,000 random SHA-256, SHA-1 and MD5 digests in hex, upper and lower case, alone and in text.
    let seed = 7;
    const hex = (n: number) =>
      Array.from({ length: n }, () => {
        seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
        return "0123456789abcdef"[seed % 16];
      }).join("");
    const digests = Array.from({ length: 20_000 }, (_, i) => hex([64, 40, 32][i % 3]!));
    const touched = digests.flatMap((d) => [d, d.toUpperCase(), `digest ${d}.`]).filter((d) => redact(d).redacted.length > 0);
    expect(touched).toEqual([]);
    // A digest made to hold a card in its digits: letters on either side are part of the hash.
    expect(redact(`a1b2c3${CARD}d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6`).redacted).toEqual([]);
    for (const text of [`ORD1${CARD}`, `x9y${CARD}`, `creditcardnumberisnow${CARD}`, `JD01${"4".repeat(2)}${CARD.slice(2)}`]) {
      expect(redact(text).redacted, text).toEqual([]);
    }
    // UUIDs whose hex groups hold a Luhn-valid run of digits across their dashes (message, run and
    // checkpoint ids eart keeps in audit data) stay exact; a card written right after one is found.
    for (const id of ["aaf31022-5599-4213-96af-f1669789b685", "run-478cd76c-7848-455d-a964-825416279751-0", "ee85732c-5c4a-4df7-a31c-6d3c6d52aca1"]) {
      expect(redact(id).value, id).toBe(id);
    }
    expect(redact(`aaf31022-5599-4213-96af-f1669789b685 ${CARD}`).value).toBe("aaf31022-5599-4213-96af-f1669789b685 [REDACTED:card_number]");
  });

  it("replaces only the card's stretch of the original text, invisible characters and all", () => {
    expect(redact("a ４１１１ １１１１ １１１１ １１１１ b").value).toBe("a [REDACTED:card_number] b");
    expect(redact("x card_4111111111111111_y").value).toBe("x card_[REDACTED:card_number]_y");
    expect(redact("ref 12 4111 1111 1111 1111 5").value).toBe("ref 12 [REDACTED:card_number] 5");
  });

  it("a card as a JSON number, as an object key, and inside JSON text", () => {
    expect(redact({ amount: 5, ref: 4111111111111111 }).value).toEqual({ amount: 5, ref: "[REDACTED:card_number]" });
    expect(redact({ "4111 1111 1111 1111": "visa", "5500 0000 0000 0004": "mc" }).value).toEqual({
      "[REDACTED:card_number]": "visa",
      "[REDACTED:card_number]#2": "mc",
    });
    const text = redact(JSON.stringify({ result: { ref: 4111111111111111 } })).value;
    expect(JSON.parse(text)).toEqual({ result: { ref: "[REDACTED:card_number]" } });
  });

  it("field names match whatever their case and separators", () => {
    expect(redact({ CardNumber: "x", card_number: "y", "CARD-NUMBER": "z", PAN: "w", Iban: "v" }).value).toEqual({
      CardNumber: "[REDACTED:card_number]",
      card_number: "[REDACTED:card_number]",
      "CARD-NUMBER": "[REDACTED:card_number]",
      PAN: "[REDACTED:card_number]",
      Iban: "[REDACTED:iban]",
    });
  });

  it.each([
    ["upper case, grouped", "pay to DE89 3704 0044 0532 0130 00 today"],
    ["lower case", "pay to de89370400440532013000 today"],
    ["dashes", "pay to DE89-3704-0044-0532-0130-00 today"],
    ["followed by a word it could run into", "iban GB82WEST12345698765432 thanks"],
  ])("an IBAN in %s", (_, text) => {
    const value = redact(text).value;
    expect(value).toContain("[REDACTED:iban]");
    expect(value.endsWith("today") || value.endsWith("thanks")).toBe(true);
  });

  it.each([["dashes", "123-45-6789"], ["spaces", "123 45 6789"], ["dots", "123.45.6789"], ["a UK NI number", "AB 12 34 56 C"]])("a national id with %s", (_, id) => {
    expect(redact(`my id is ${id}.`).value).toBe("my id is [REDACTED:national_id].");
  });

  it("checksums keep ordinary numbers: failing Luhn, IBAN or SSN rules stay as they are", () => {
    for (const text of ["card 4111 1111 1111 1112", "GB82 WEST 1234 5698 7654 33", "000-12-3456", "666-12-3456", "123-00-4567", "2024-03-10", "+1 (415) 555-2671", "+44 20 7946 0958", "order 1042, 1043 and 1044", "call +378282246310005"]) {
      expect(redact(text).value, text).toBe(text);
    }
    // After a "+", a run of 15 digits or fewer is a phone number (E.164), even one that passes
    // Luhn; 16 or more is none, so a card glued after a "+" is found.
    expect(luhnValid("378282246310005")).toBe(true);
    expect(redact("card+4111111111111111").value).toBe("card+[REDACTED:card_number]");
    expect([luhnValid(CARD), luhnValid("4111111111111112"), ibanValid("gb82 west 1234 5698 7654 32"), ibanValid("GB82WEST12345698765433")]).toEqual([true, false, true, false]);
    expect([nationalIdValid("123-45-6789"), nationalIdValid("912-45-6789"), nationalIdValid("QQ123456C")]).toEqual([true, false, true]);
  });

  it("mayChange stays an over-approximation of apply on the new forms", () => {
    for (const value of ["card ４１１１ １１１１ １１１１ １１１１", { ref: 4111111111111111 }, { "4111 1111 1111 1111": 1 }, "de89370400440532013000", `4\u200b111111111111111`]) {
      expect(standard.mayChange!(value), JSON.stringify(value)).toBe(true);
      expect(redact(value).redacted.length, JSON.stringify(value)).toBeGreaterThan(0);
    }
    expect(standard.mayChange!({ orderId: "1042", amount: 740, note: "call +1 415 555 2671" })).toBe(false);
  });

  it("mayChange remembers what it found clean, and still finds a card beside strings it has seen, under a key it has seen, in JSON text or a key", () => {
    const redaction = defineRedaction(STANDARD_REDACTIONS);
    const clean = { orderId: "1042", note: "refund approved", digest: "468adb1c97ef9f05" };
    expect(redaction.mayChange!(clean)).toBe(false);
    expect(redaction.mayChange!(clean)).toBe(false);
    // The same strings beside a card, the card under a key seen before, in JSON text, in a key.
    for (const value of [
      { ...clean, more: CARD },
      { orderId: CARD, note: "refund approved" },
      { note: JSON.stringify({ ...clean, n: CARD }) },
      { [CARD]: "refund approved" },
      { ...clean, card: "x" },
    ]) {
      expect(redaction.mayChange!(value), JSON.stringify(value)).toBe(true);
      expect(redaction.apply(value, undefined).redacted.length, JSON.stringify(value)).toBeGreaterThan(0);
    }
    expect(redaction.mayChange!(clean)).toBe(false);
  });
});

describe("form-encoded cards, card labels after a digit, identifiers' tails, 13-digit runs", () => {
  it.each([
    ["a form value", "card=4111+1111+1111+1111&exp=1229", "card=[REDACTED:card_number]&exp=1229"],
    ["form-encoded text", "note=paid+with+4111+1111+1111+1111+thanks", "note=paid+with+[REDACTED:card_number]+thanks"],
    ["Amex grouping", "pan_no=3782+822463+10005&x=1", "pan_no=[REDACTED:card_number]&x=1"],
    ["a 19-digit card, 4-4-4-4-3", "card=4111+1111+1111+1111+110", "card=[REDACTED:card_number]"],
    ["a 13-digit Visa, 4-4-5", "card=4222+2222+22222", "card=[REDACTED:card_number]"],
    ["a label glued after", "card=4111+1111+1111+1111exp", "card=[REDACTED:card_number]exp"],
    ["after an encoded colon", "note=card%3A+4111+1111+1111+1111", "note=card%3A+[REDACTED:card_number]"],
  ])("a card in a form-encoded body (spaces as +): %s", (_, text, expected) => {
    expect(redact(text).value).toBe(expected);
    expect(standard.mayChange!(text)).toBe(true);
  });

  it("plus signs that are arithmetic or a phone number's are no card separator, even around a number that passes Luhn", () => {
    for (const text of [
      "1+1",
      "a=1+1",
      "x=1234+5678",
      // 4111…: a sum's "+" follows a digit; a formula's "=" follows no key; a longer sum runs on.
      "100+4111+1111+1111+1111",
      "=4111+1111+1111+1111",
      "x=4111+1111+1111+1111+1234",
      // A phone number's own "+" is %2B in a form body.
      "phone=%2B1+415+555+2671",
      "phone=%2B55+11+91234+5678&name=Ann",
      "phone=%2B44+20+7946+0958",
      "note=ship+on+2026+03+10+ref+1042",
    ]) {
      expect(redact(text).value, text).toBe(text);
    }
    expect(luhnValid(CARD)).toBe(true);
  });

  it("a label that names a card is a label after a digit too; other letters after a digit are part of a code", () => {
    expect(redact(`x1CC${CARD}`).value).toBe("x1CC[REDACTED:card_number]");
    expect(redact(`v2card${CARD} ok`).value).toBe("v2card[REDACTED:card_number] ok");
    expect(redact("2024VISA4111 1111 1111 1111").value).toBe("2024VISA[REDACTED:card_number]");
    for (const text of [`x9y${CARD}`, `ab1xyz${CARD}`, `x1CCC${CARD}`]) expect(redact(text).value, text).toBe(text);
    // Hex digests whose digits after "cc" pass Luhn (an MD5 each): the digest's digits, no card.
    for (const digest of ["bc948309fa31d6e6cc55518472475883", "7ab440c5f2cc901756807779845bb869", "BC948309FA31D6E6CC55518472475883"]) {
      expect(redact(digest).value, digest).toBe(digest);
      expect(redact(`etag ${digest}.`).value, digest).toBe(`etag ${digest}.`);
    }
    expect(luhnValid("55518472475883")).toBe(true);
  });

  it("an IBAN-shaped random tail glued by _ to an identifier (an OpenAI tool call id) is no IBAN; an IBAN glued to its label is", () => {
    expect(ibanValid("VG37BKJRT0MUTQCIBGH8QJFW")).toBe(true);
    expect(redact("call_vG37BkjrT0mutqcibgH8QjfW").value).toBe("call_vG37BkjrT0mutqcibgH8QjfW");
    expect(redact({ tool_call_id: "call_vG37BkjrT0mutqcibgH8QjfW" }).value).toEqual({ tool_call_id: "call_vG37BkjrT0mutqcibgH8QjfW" });
    for (const [text, expected] of [
      ["iban_VG37BKJRT0MUTQCIBGH8QJFW", "iban_[REDACTED:iban]"],
      ["iban_vg37bkjrt0mutqcibgh8qjfw", "iban_[REDACTED:iban]"],
      ["iban_De89370400440532013000", "iban_[REDACTED:iban]"],
      ["iban_de89 3704 0044 0532 0130 00", "iban_[REDACTED:iban]"],
      // Mixed case not glued to an identifier, as the attacks suite writes it, is still found.
      ["pay to vG37BkjrT0mutqcibgH8QjfW now", "pay to [REDACTED:iban] now"],
      ["pay to gB82 wEsT 1234 5698 7654 32", "pay to [REDACTED:iban]"],
    ]) {
      expect(redact(text).value, text).toBe(expected);
    }
  });

  it("thirteen digits are a card only with a 13-digit issuer's prefix (Visa 4, Maestro 50, 56–69): epoch milliseconds are not", () => {
    for (const card of ["4222222222222", "6759000000005", "5018000000007"]) {
      expect(luhnValid(card), card).toBe(true);
      expect(redact(`card ${card}`).value, card).toBe("card [REDACTED:card_number]");
    }
    // Each passes the Luhn checksum; none has a 13-digit card's prefix.
    for (const text of ["1733616000001", "2051222400005", "3000000000007", "9000000000001", "ts=1733616000001", "1733616000.001", "at 1733 6160 00001"]) {
      expect(redact(text).value, text).toBe(text);
    }
    expect(redact({ createdAt: 1733616000001 }).value).toEqual({ createdAt: 1733616000001 });
    expect(redact('{"createdAt":1733616000001}').value).toBe('{"createdAt":1733616000001}');
    // Fourteen digits and more are checked as before (a UATP card starts with 1).
    expect(redact("UATP 122000000000003").value).toBe("UATP [REDACTED:card_number]");
    expect(redact("ref 1733616000001 4111 1111 1111 1111").value).toBe("ref 1733616000001 [REDACTED:card_number]");
  });
});

describe("redaction of values nested deeper than it walks (256 levels): cut, never passed through", () => {
  /** `levels` nested objects around `inner`. */
  const nested = (levels: number, inner: unknown): unknown => {
    let v = inner;
    for (let i = 0; i < levels; i++) v = { a: v };
    return v;
  };
  const depthOf = (v: unknown): number => {
    let d = 0;
    for (let x = v; x !== null && typeof x === "object"; x = (x as { a: unknown }).a) d++;
    return d;
  };

  it("keeps 256 levels as they are", () => {
    const v = nested(255, { card: "x", note: "no secret" });
    const out = standard.apply(v, undefined);
    expect(depthOf(out.value)).toBe(256);
    expect(out.redacted).toEqual([{ path: `${"a.".repeat(255)}card`, ruleId: "card_number" }]);
  });

  it.each([257, 2_000, 100_000])("replaces what lies below level 256 of a %i-level value by a mark, and says where", (levels) => {
    const v = nested(levels - 1, { note: `card ${CARD}`, harmless: 1 });
    const out = standard.apply(v, undefined);
    const json = JSON.stringify(out.value);
    expect(json).not.toContain(CARD);
    expect(depthOf(out.value)).toBe(256);
    expect(json).toContain('"a":"[REDACTED:too_deep]"');
    expect(out.redacted).toEqual([{ path: "a.".repeat(256).slice(0, -1), ruleId: "too_deep" }]);
    expect(standard.mayChange!(v)).toBe(true);
    // Patterns only (what an agent writes): the same cut.
    expect(JSON.stringify(standard.apply(v, undefined, { fields: false }).value)).not.toContain(CARD);
  });

  it("cuts deep JSON text inside a string the same way (a tool's result)", () => {
    const text = JSON.stringify(nested(1_000, { card: CARD }));
    const out = standard.apply({ result: text }, undefined);
    expect(out.value.result).not.toContain(CARD);
    expect(out.value.result).toContain("[REDACTED:too_deep]");
    expect(out.redacted.map((r) => r.ruleId)).toEqual(["too_deep"]);
  });

  it("cuts a deep value even when no rule could match in it: what lies below is not looked at", () => {
    const none = defineRedaction([{ id: "salary", fields: ["salary"] }]);
    const out = none.apply(nested(300, "plain"), undefined);
    expect(depthOf(out.value)).toBe(256);
    expect(none.mayChange!(nested(300, "plain"))).toBe(true);
    expect(none.mayChange!(nested(200, "plain"))).toBe(false);
  });
});

describe("JSON text whose parse would lose what it says: a key given twice, a number too long for a double", () => {
  const SPACED = "4111 1111 1111 1111";
  // A 19-digit number that passes Luhn: as a JS number it is rounded to 4111111111111111000.
  const LONG = "4111111111111111110";

  it("a card in a member whose key comes again later is not kept: the text is rewritten from what a JSON reader keeps", () => {
    const out = redact(`{"orderId":"1042","note":"paid with ${SPACED}","note":"paid"}`);
    expect(out.value).toBe('{"orderId":"1042","note":"paid"}');
    expect(out.redacted).toEqual([{ path: "", ruleId: "duplicate_key" }]);
    expect(standard.mayChange!(`{"orderId":"1042","note":"paid with ${SPACED}","note":"paid"}`)).toBe(true);
  });

  it("a field rule is not dodged by naming the field twice, the secret first (even with no pattern in it)", () => {
    for (const text of [`{"pan":"${SPACED}","pan":null}`, `{"iban":"not a pattern at all","iban":null}`, `{"IBAN":"x","iban":null}`]) {
      expect(standard.mayChange!(text)).toBe(true);
      const out = redact({ result: text });
      expect(JSON.stringify(out.value)).not.toMatch(/4111|not a pattern|"x"/);
      expect(out.redacted.length).toBeGreaterThan(0);
    }
  });

  it("a key written with escapes is the same key", () => {
    expect(redact(`{"note":"${SPACED}","\\u006eote":"paid"}`).value).toBe('{"note":"paid"}');
  });

  it("a card written as a JSON number of 19 digits is a card (read as its digits, not rounded)", () => {
    expect(redact(`{"account":${LONG}}`).value).toBe('{"account":"[REDACTED:card_number]"}');
    expect(standard.mayChange!(`{"account":${LONG}}`)).toBe(true);
  });

  it("a rewrite for another reason shows a long number as its exact digits, never rounded", () => {
    const out = redact(`{"note":"card ${SPACED}","id":12345678901234567891}`);
    expect(out.value).toBe('{"note":"card [REDACTED:card_number]","id":"12345678901234567891"}');
  });

  it("a key given twice and a long card number together: both handled, nothing rounded", () => {
    const out = redact(`{"orderId":"1042","note":"paid with ${SPACED}","note":"paid","account":${LONG}}`);
    expect(out.value).toBe('{"orderId":"1042","note":"paid","account":"[REDACTED:card_number]"}');
    expect(String(out.value)).not.toMatch(/4111111111111111/);
  });

  it("JSON that round-trips stays as it was: the same key in other objects, long numbers that are not cards, escapes", () => {
    for (const text of ['{"a":{"a":1},"b":[{"a":1},{"a":2}]}', '{"id":12345678901234567891,"n":-0.000012345678901234567}', '{"s":"a \\"quoted\\": {\\"k\\":1,\\"j\\":2}"}', "[1e400, 3.14]"]) {
      expect(redact(text)).toEqual({ value: text, redacted: [], labels: [] });
      expect(standard.mayChange!(text)).toBe(false);
    }
  });
});

describe("values that serialise through their own toJSON: read as they serialise", () => {
  const SPACED = "4111 1111 1111 1111";

  it("a toJSON that hands out a card is redacted, and the copy serialises without it", () => {
    const sneaky = { orderId: "1042", toJSON: () => ({ orderId: "1042", card: SPACED }) };
    expect(standard.mayChange!(sneaky)).toBe(true);
    const out = redact({ content: sneaky });
    expect(JSON.stringify(out.value)).toBe('{"content":{"orderId":"1042","card":"[REDACTED:card_number]"}}');
  });

  it("a Date beside a redacted value stays its text (it was copied as an empty object before)", () => {
    const at = new Date("2026-12-07T10:00:00.000Z");
    expect(redact({ at, note: `card ${SPACED}` }).value).toEqual({ at: "2026-12-07T10:00:00.000Z", note: "card [REDACTED:card_number]" });
  });

  it("a toJSON that throws is cut, listed as unreadable; one that returns itself is read by its fields", () => {
    const broken = { toJSON: () => { throw new Error("no"); } };
    expect(standard.mayChange!({ x: broken })).toBe(true);
    expect(redact({ x: broken })).toMatchObject({ value: { x: "[REDACTED:unreadable]" }, redacted: [{ path: "x", ruleId: "unreadable" }] });
    const self = { card: SPACED, toJSON() { return this; } };
    expect((redact(self).value as { card: string }).card).toBe("[REDACTED:card_number]");
  });
});

describe("JSON inside text (an error quoting a response body, a log line)", () => {
  it("its fields are redacted as in JSON text, the text around it kept", () => {
    const message = 'HTTP 409 from the bureau: {"employee":"ann","ssn":"not-a-pattern","note":"card 4111 1111 1111 1111"} (retry later)';
    expect(standard.mayChange!(message)).toBe(true);
    expect(redact(message).value).toBe('HTTP 409 from the bureau: {"employee":"ann","ssn":"[REDACTED:national_id]","note":"card [REDACTED:card_number]"} (retry later)');
  });

  it("braces that are not JSON, and JSON with nothing to redact, leave the text as it was", () => {
    for (const text of ["the {card} field is required", 'HTTP 200: {"ok":true}', "a [list] of words"]) {
      expect(redact(text)).toEqual({ value: text, redacted: [], labels: [] });
    }
  });
});
