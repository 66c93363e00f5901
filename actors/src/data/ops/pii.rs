//! PII masking: e-mail addresses, phone numbers, payment card numbers, IBANs and bank account
//! numbers in context, replaced with typed placeholders.
//!
//! Numbers are only masked when their shape *and* a check say they are what they look like:
//! card numbers must pass the Luhn check and start like a card (2–6), IBANs must have their
//! country's length and pass mod-97, account numbers need a word such as "account" before them,
//! and phones need a `+` country code, a US `(555) 123-4567`/`555-123-4567` shape or a national
//! number starting with 0. That keeps years, amounts, order numbers, dates and times intact.
//!
//! Detectors run in a fixed priority (e-mail, IBAN, card, account, phone); a later detector
//! never masks text an earlier one has claimed.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The kinds of PII, in detection priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Email,
    Iban,
    Card,
    Account,
    Phone,
}

impl Kind {
    /// The placeholder that replaces a match.
    pub fn placeholder(self) -> &'static str {
        match self {
            Kind::Email => "[EMAIL]",
            Kind::Iban => "[IBAN]",
            Kind::Card => "[CARD]",
            Kind::Account => "[ACCOUNT]",
            Kind::Phone => "[PHONE]",
        }
    }
}

/// Which kinds to mask in which field; all kinds by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub field: String,
    pub kinds: Vec<Kind>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            field: super::super::record::TEXT.to_string(),
            kinds: vec![
                Kind::Email,
                Kind::Iban,
                Kind::Card,
                Kind::Account,
                Kind::Phone,
            ],
        }
    }
}

/// Matches per kind.
pub type Counts = BTreeMap<Kind, u64>;

struct Patterns {
    email: Regex,
    iban: Regex,
    card: Regex,
    account: Regex,
    phone: Vec<Regex>,
}

// The patterns are literals tested below; a failure to compile is a bug caught by every test.
#[allow(clippy::expect_used)]
fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let r = |s: &str| Regex::new(s).expect("PII pattern compiles");
        Patterns {
            email: r(r"(?i)\b[a-z0-9][a-z0-9._%+-]*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,24}\b"),
            // Two letters, two check digits, then groups of up to four, optionally spaced.
            // Case-insensitive: people type IBANs in lowercase; mod-97 keeps words out.
            iban: r(r"(?i)\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
            // 13–19 digits unbroken, or 4-4-4-4(-1..3) and 4-6-5 (Amex) with one separator.
            card: r(concat!(
                r"\b(?:[0-9]{13,19}",
                r"|[0-9]{4}(?: [0-9]{4}){3}(?: [0-9]{1,3})?",
                r"|[0-9]{4}(?:-[0-9]{4}){3}(?:-[0-9]{1,3})?",
                r"|[0-9]{4} [0-9]{6} [0-9]{5}|[0-9]{4}-[0-9]{6}-[0-9]{5})\b"
            )),
            account: r(r"(?i)\b(?:account|acct|a/c)(?:\s+(?:number|num|no\.?|nr\.?|#))?\s*(?:is|:|#)?\s*([0-9](?:[ -]?[0-9]){5,19})\b"),
            phone: vec![
                // International: +CC then 6–14 more digits in groups.
                r(r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,6}"),
                // The same with the 00 international access prefix: 0044 20 7946 0958.
                r(r"\b00[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,6}"),
                // North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-0199.
                r(r"(?:\b1[ .-])?(?:\([0-9]{3}\)\s?|\b[0-9]{3}[.-])[0-9]{3}[.-][0-9]{4}\b"),
                // National numbers with a trunk 0: 020 7946 0958, 07700 900123, 030-1234567.
                r(r"\b0[1-9][0-9]{1,4}(?:[ -]?[0-9]{2,4}){1,3}\b"),
            ],
        }
    })
}

/// Whether `digits` passes the Luhn check.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// IBAN lengths of the SEPA countries and a few others; an IBAN of a country not listed must
/// be 15–34 characters.
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "NL" | "FO" | "GL" => 18,
        "SI" => 19,
        "AT" | "EE" | "KZ" | "LT" | "LU" => 20,
        "CH" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" => 22,
        "AE" | "GI" | "IL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" => 28,
        "BR" | "PS" | "QA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" => 31,
        _ => return None,
    })
}

/// Whether `iban` (uppercase, no spaces) passes the ISO 13616 mod-97 check.
pub fn iban_valid(iban: &str) -> bool {
    let b = iban.as_bytes();
    if b.len() < 15 || b.len() > 34 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in b[4..].iter().chain(&b[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Finds the IBAN at the start of a candidate: the country's length of its alphanumerics (or
/// all of them for an unlisted country), so a trailing word glued to the match does not spoil
/// it. Returns the byte length of the IBAN within `cand`.
fn iban_in(cand: &str) -> Option<usize> {
    let want = iban_length(&cand.get(..2)?.to_ascii_uppercase());
    let mut compact = String::new();
    let mut end = 0;
    for (i, c) in cand.char_indices() {
        if c == ' ' {
            continue;
        }
        compact.push(c.to_ascii_uppercase());
        end = i + c.len_utf8();
        if Some(compact.len()) == want {
            break;
        }
    }
    if want.is_some_and(|w| compact.len() != w) {
        return None;
    }
    iban_valid(&compact).then_some(end)
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// Characters that, touching a number, mean it is part of something larger (a code, an
/// amount, a decimal, a date): the number is then not masked as a phone.
fn glued(c: Option<char>) -> bool {
    c.is_some_and(|c| {
        c.is_alphanumeric()
            || matches!(
                c,
                '/' | ':' | ',' | '.' | '$' | '€' | '£' | '#' | '%' | '-' | '_'
            )
    })
}

/// Whether the number at `s..e` is one group of a longer run of digit groups (the tail of an
/// IBAN with a bad check, a long reference): a separator, then a neighbouring token of digits
/// (or an IBAN head such as `DE89`) on the other side.
fn continues_number(text: &str, s: usize, e: usize) -> bool {
    let group = |t: &str| {
        let b = t.as_bytes();
        (!b.is_empty() && b.iter().all(u8::is_ascii_digit))
            || (b.len() == 4
                && b[..2].iter().all(u8::is_ascii_uppercase)
                && b[2..].iter().all(u8::is_ascii_digit))
    };
    let before = text[..s].strip_suffix([' ', '-']).map(|t| {
        let start = t.rfind([' ', '-']).map_or(0, |i| i + 1);
        &t[start..]
    });
    let after = text[e..].strip_prefix([' ', '-']).map(|t| {
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        &t[..end]
    });
    before.is_some_and(group) || after.is_some_and(group)
}

/// The spans of PII of the enabled kinds in `text`, sorted and non-overlapping.
pub fn find(text: &str, kinds: &[Kind]) -> Vec<(usize, usize, Kind)> {
    let p = patterns();
    let mut spans: Vec<(usize, usize, Kind)> = Vec::new();
    let free = |spans: &[(usize, usize, Kind)], s: usize, e: usize| {
        spans.iter().all(|&(a, b, _)| e <= a || s >= b)
    };
    let on = |k: Kind| kinds.contains(&k);
    if on(Kind::Email) {
        spans.extend(
            p.email
                .find_iter(text)
                .map(|m| (m.start(), m.end(), Kind::Email)),
        );
    }
    if on(Kind::Iban) {
        for m in p.iban.find_iter(text) {
            if let Some(len) = iban_in(m.as_str()) {
                let (s, e) = (m.start(), m.start() + len);
                if free(&spans, s, e) {
                    spans.push((s, e, Kind::Iban));
                }
            }
        }
    }
    if on(Kind::Card) {
        for m in p.card.find_iter(text) {
            let d = digits(m.as_str());
            let before = text[..m.start()].chars().next_back();
            if (2..=6).contains(&d[0])
                && luhn(&d)
                && before != Some('+')
                && !continues_number(text, m.start(), m.end())
                && free(&spans, m.start(), m.end())
            {
                spans.push((m.start(), m.end(), Kind::Card));
            }
        }
    }
    if on(Kind::Account) {
        for c in p.account.captures_iter(text) {
            if let Some(g) = c.get(1) {
                if free(&spans, g.start(), g.end()) {
                    spans.push((g.start(), g.end(), Kind::Account));
                }
            }
        }
    }
    if on(Kind::Phone) {
        for re in &p.phone {
            for m in re.find_iter(text) {
                let (s, mut e) = (m.start(), m.end());
                // The international pattern may end on a ')' or separator; trim to a digit.
                while e > s && !text.as_bytes()[e - 1].is_ascii_digit() {
                    e -= 1;
                }
                let n = digits(&text[s..e]).len();
                let before = text[..s].chars().next_back();
                // A sentence may end right after a phone, but a '.' or ',' followed by a
                // digit makes the number part of an amount or a decimal.
                let after_ok = match text[e..].chars().next() {
                    None => true,
                    Some(c @ ('.' | ',')) => {
                        !text[e + c.len_utf8()..].starts_with(|d: char| d.is_ascii_digit())
                    }
                    c => !glued(c),
                };
                if (7..=15).contains(&n)
                    && !glued(before)
                    && after_ok
                    && !continues_number(text, s, e)
                    && free(&spans, s, e)
                {
                    spans.push((s, e, Kind::Phone));
                }
            }
        }
    }
    spans.sort();
    spans
}

/// Replaces the PII of the enabled kinds in `text` with placeholders, counting per kind.
pub fn mask(text: &str, kinds: &[Kind], counts: &mut Counts) -> String {
    let spans = find(text, kinds);
    if spans.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (s, e, k) in spans {
        out.push_str(&text[at..s]);
        out.push_str(k.placeholder());
        *counts.entry(k).or_default() += 1;
        at = e;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> String {
        mask(s, &Params::default().kinds, &mut Counts::new())
    }

    #[test]
    fn luhn_and_mod97() {
        assert!(luhn(&digits("4111 1111 1111 1111")));
        assert!(!luhn(&digits("4111 1111 1111 1112")));
        assert!(luhn(&digits("79927398713")));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("DE89370400440532013001"));
        assert!(!iban_valid("DE89"));
    }

    #[test]
    fn overlapping_claims_go_to_the_first_detector() {
        // The card's digits also fit the phone patterns; it is masked once, as a card.
        let mut c = Counts::new();
        assert_eq!(
            mask(
                "card 4111-1111-1111-1111.",
                &Params::default().kinds,
                &mut c
            ),
            "card [CARD]."
        );
        assert_eq!(c.get(&Kind::Card), Some(&1));
        assert_eq!(c.get(&Kind::Phone), None);
    }

    #[test]
    fn only_enabled_kinds_are_masked() {
        let s = "mail a@b.com or call +44 20 7946 0958";
        assert_eq!(
            mask(s, &[Kind::Email], &mut Counts::new()),
            "mail [EMAIL] or call +44 20 7946 0958"
        );
        assert_eq!(m(s), "mail [EMAIL] or call [PHONE]");
    }
}
