//! The PII corpus: every case is listed with what must happen to it. Known e-mails, phones,
//! cards, IBANs and account numbers are masked with the right placeholder; years, amounts,
//! order numbers, dates, times, percentages and card-shaped numbers that fail Luhn are not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flotilla_actors::data::ops::pii::{mask, Counts, Kind, Params};

fn masked(s: &str) -> (String, Counts) {
    let mut c = Counts::new();
    let out = mask(s, &Params::default().kinds, &mut c);
    (out, c)
}

/// (input, expected output) for text that contains PII.
const POSITIVE: &[(&str, &str)] = &[
    // E-mail addresses.
    (
        "write to john.doe@example.com today",
        "write to [EMAIL] today",
    ),
    ("Contact: Jane_Smith+bank@mail.co.uk.", "Contact: [EMAIL]."),
    ("cc a.b-c@sub.domain-x.org, thanks", "cc [EMAIL], thanks"),
    ("MAIL: SUPPORT@BANK.DE", "MAIL: [EMAIL]"),
    // Phones: international.
    ("call +44 20 7946 0958 now", "call [PHONE] now"),
    ("my number is +1 (555) 123-4567", "my number is [PHONE]"),
    ("ring +49 30 12345678.", "ring [PHONE]."),
    ("+33 1 23 45 67 89 is the office", "[PHONE] is the office"),
    ("whatsapp +4915112345678", "whatsapp [PHONE]"),
    (
        "from abroad dial 0044 20 7946 0958",
        "from abroad dial [PHONE]",
    ),
    ("tel: +44 (0)20 7946 0958", "tel: [PHONE]"),
    ("+1-555-123-4567 is my cell", "[PHONE] is my cell"),
    // Phones: national formats.
    (
        "call me on (555) 123-4567 please",
        "call me on [PHONE] please",
    ),
    ("phone 555-123-4567", "phone [PHONE]"),
    ("phone 555.123.4567", "phone [PHONE]"),
    ("toll free 1-800-555-0199", "toll free [PHONE]"),
    ("UK landline 020 7946 0958", "UK landline [PHONE]"),
    ("mobile 07700 900123", "mobile [PHONE]"),
    ("Berlin 030-1234567", "Berlin [PHONE]"),
    // Payment cards (Luhn-valid test numbers).
    (
        "card 4111 1111 1111 1111 was declined",
        "card [CARD] was declined",
    ),
    ("visa 4111111111111111", "visa [CARD]"),
    ("mc 5500-0000-0000-0004 expired", "mc [CARD] expired"),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("amex 378282246310005.", "amex [CARD]."),
    ("discover 6011 1111 1111 1117", "discover [CARD]"),
    ("visa13 4222222222222", "visa13 [CARD]"),
    // IBANs (mod-97 valid).
    (
        "IBAN DE89 3704 0044 0532 0130 00 please",
        "IBAN [IBAN] please",
    ),
    ("to GB82WEST12345698765432", "to [IBAN]"),
    ("FR1420041010050500013M02606 is mine", "[IBAN] is mine"),
    ("NL91ABNA0417164300, thanks", "[IBAN], thanks"),
    ("iban: de89370400440532013000", "iban: [IBAN]"),
    (
        "pay BE68 5390 0754 7034 AND confirm",
        "pay [IBAN] AND confirm",
    ),
    // Account numbers in context.
    (
        "my account number 12345678 is blocked",
        "my account number [ACCOUNT] is blocked",
    ),
    ("Account No. 00123456789", "Account No. [ACCOUNT]"),
    ("acct #9876543210 frozen", "acct #[ACCOUNT] frozen"),
    ("account: 12-345-678", "account: [ACCOUNT]"),
    ("the account is 55512345", "the account is [ACCOUNT]"),
];

/// Text that must come out unchanged.
const NEGATIVE: &[&str] = &[
    // Years.
    "I opened it in 1999",
    "since 2024 my card works",
    "between 1999 and 2024",
    // Amounts.
    "I was charged $1,234.56 twice",
    "a fee of 500 EUR",
    "transfer of €12,345,678.90 pending",
    "£1,000,000 limit",
    "1234567.89 USD",
    "top up 10000000",
    // Order and reference numbers.
    "order #A12345 never came",
    "order 998877 is late",
    "reference 123456 and ticket 7654321",
    "tracking 1Z999AA10123456784",
    // Dates.
    "on 2024-03-15 I paid",
    "on 15/03/2024 I paid",
    "on 03/15/2024 and 15.03.2024",
    "due 2024/03/15",
    "2024-03-15T14:30:00Z",
    "ref 20240315143000",
    // Numbers of other kinds.
    "between 10,000 and 20,000",
    "version 1.2.3.4 and IP 192.168.1.1",
    "ZIP 90210, pi 3.14159265358979",
    "invoice INV-2024-001234",
    "card ending 1234",
    "amount 1234567890123",
    "1,234,567,890",
    // Times.
    "at 14:30 or 09:15:00",
    "between 9:00 and 17:30",
    // Percentages and versions.
    "rate of 3.5% or 12.75 %",
    "app version 10.2.3",
    // Card-shaped numbers that fail Luhn.
    "card 4111 1111 1111 1112",
    "number 1234567812345678",
    "1234-5678-9012-3456",
    // Ordinary banking text.
    "Why did my top-up fail? I used my card 3 times",
    "I need 2 cards, 1 for me and 1 for my son",
    "My PIN is blocked after 3 tries",
    "contact me at the office",
    "send 50 pounds to my friend",
    // An IBAN-shaped string with a wrong check.
    "DE89 3704 0044 0532 0130 01",
];

#[test]
fn every_listed_pii_case_is_masked() {
    let mut failures = Vec::new();
    for (input, want) in POSITIVE {
        let (got, _) = masked(input);
        if got != *want {
            failures.push(format!("{input:?}\n   got  {got:?}\n   want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} masked wrongly:\n{}",
        failures.len(),
        POSITIVE.len(),
        failures.join("\n")
    );
}

#[test]
fn no_false_positives_on_years_amounts_orders_dates_times_percentages_or_bad_luhn() {
    let mut failures = Vec::new();
    for input in NEGATIVE {
        let (got, counts) = masked(input);
        if got != *input {
            failures.push(format!("{input:?} -> {got:?} {counts:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "false positives:\n{}",
        failures.join("\n")
    );
}

#[test]
fn counts_per_type() {
    let (out, c) = masked(
        "mail a@b.io, b@c.io; card 4111111111111111; IBAN GB82WEST12345698765432; \
         call +44 20 7946 0958; account number 12345678",
    );
    assert!(!out.contains('@'), "{out}");
    assert_eq!(c.get(&Kind::Email), Some(&2));
    assert_eq!(c.get(&Kind::Card), Some(&1));
    assert_eq!(c.get(&Kind::Iban), Some(&1));
    assert_eq!(c.get(&Kind::Phone), Some(&1));
    assert_eq!(c.get(&Kind::Account), Some(&1));
}
