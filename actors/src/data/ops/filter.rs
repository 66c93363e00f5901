//! Quality filters: length in characters, repetition, symbol ratio, regex include/exclude.
//!
//! The heuristics are language-agnostic (no word lists): repetition is the fraction of word
//! n-grams that repeat an earlier n-gram of the same text, which catches spam and generation
//! loops; the symbol ratio is the fraction of non-space characters that are neither letters nor
//! digits, which catches markup debris and line noise. A record is dropped for the first rule it
//! fails, in a fixed order, so per-reason counts add up to the total dropped.

use std::collections::{BTreeMap, HashSet};

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::super::error::{Error, Result};
use super::super::record::{Record, TEXT};

/// Filter parameters; every rule is off unless set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub field: String,
    pub min_chars: Option<usize>,
    pub max_chars: Option<usize>,
    /// Drop when more than this fraction of word n-grams repeat.
    pub max_repetition: Option<f64>,
    /// The n of the repetition n-grams.
    pub repetition_n: usize,
    /// Drop when more than this fraction of non-space characters are symbols.
    pub max_symbol_ratio: Option<f64>,
    /// Keep only records matching this regex.
    pub include: Option<String>,
    /// Drop records matching this regex.
    pub exclude: Option<String>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            field: TEXT.to_string(),
            min_chars: None,
            max_chars: None,
            max_repetition: None,
            repetition_n: 2,
            max_symbol_ratio: None,
            include: None,
            exclude: None,
        }
    }
}

/// Why a record was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    TooShort,
    TooLong,
    Repetition,
    Symbols,
    NotIncluded,
    Excluded,
}

/// Counts in and out and drops per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub count_in: u64,
    pub count_out: u64,
    pub dropped: BTreeMap<Reason, u64>,
}

/// A filter with its regexes compiled and parameters checked.
#[derive(Debug, Clone)]
pub struct Filter {
    p: Params,
    include: Option<Regex>,
    exclude: Option<Regex>,
}

impl Filter {
    /// Checks the parameters and compiles the patterns.
    pub fn new(p: Params) -> Result<Self> {
        if let (Some(lo), Some(hi)) = (p.min_chars, p.max_chars) {
            if lo > hi {
                return Err(Error::invalid(
                    "filter",
                    "min_chars",
                    format!("{lo} > max_chars {hi}"),
                ));
            }
        }
        for (name, v) in [
            ("max_repetition", p.max_repetition),
            ("max_symbol_ratio", p.max_symbol_ratio),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    return Err(Error::invalid(
                        "filter",
                        name,
                        format!("{v} is not in [0, 1]"),
                    ));
                }
            }
        }
        if p.repetition_n == 0 {
            return Err(Error::invalid(
                "filter",
                "repetition_n",
                "must be at least 1",
            ));
        }
        let compile = |pat: &Option<String>| {
            pat.as_deref()
                .map(|s| Regex::new(s).map_err(|e| Error::regex("filter", s, e)))
                .transpose()
        };
        Ok(Self {
            include: compile(&p.include)?,
            exclude: compile(&p.exclude)?,
            p,
        })
    }

    /// The first rule `text` fails, or `None` to keep it.
    pub fn check(&self, text: &str) -> Option<Reason> {
        let chars = text.chars().count();
        if self.p.min_chars.is_some_and(|m| chars < m) {
            return Some(Reason::TooShort);
        }
        if self.p.max_chars.is_some_and(|m| chars > m) {
            return Some(Reason::TooLong);
        }
        if self
            .p
            .max_repetition
            .is_some_and(|m| repetition_ratio(text, self.p.repetition_n) > m)
        {
            return Some(Reason::Repetition);
        }
        if self
            .p
            .max_symbol_ratio
            .is_some_and(|m| symbol_ratio(text) > m)
        {
            return Some(Reason::Symbols);
        }
        if self.include.as_ref().is_some_and(|r| !r.is_match(text)) {
            return Some(Reason::NotIncluded);
        }
        if self.exclude.as_ref().is_some_and(|r| r.is_match(text)) {
            return Some(Reason::Excluded);
        }
        None
    }

    /// Keeps the records that pass; errors on the first record without the field.
    pub fn apply(&self, records: Vec<Record>) -> Result<(Vec<Record>, Report)> {
        let mut rep = Report {
            count_in: records.len() as u64,
            ..Report::default()
        };
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            match self.check(r.field(&self.p.field)?) {
                None => out.push(r),
                Some(reason) => *rep.dropped.entry(reason).or_default() += 1,
            }
        }
        rep.count_out = out.len() as u64;
        Ok((out, rep))
    }
}

/// The fraction of word `n`-grams (lowercased) that repeat an earlier one; 0 with fewer
/// than `n` words.
pub fn repetition_ratio(text: &str, n: usize) -> f64 {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    if n == 0 || words.len() < n {
        return 0.0;
    }
    let grams = words.len() + 1 - n;
    let distinct: HashSet<&[String]> = words.windows(n).collect();
    (grams - distinct.len()) as f64 / grams as f64
}

/// The fraction of non-whitespace characters that are neither alphabetic nor numeric; 0 for
/// an empty text.
pub fn symbol_ratio(text: &str) -> f64 {
    let (mut total, mut symbols) = (0usize, 0usize);
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        total += 1;
        if !c.is_alphanumeric() {
            symbols += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        symbols as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios() {
        assert_eq!(repetition_ratio("a b c d", 2), 0.0);
        // "buy now" ×3: 5 bigrams, 2 distinct ("buy now", "now buy") → 3/5 repeat.
        assert!((repetition_ratio("buy now buy now Buy now", 2) - 0.6).abs() < 1e-9);
        assert_eq!(repetition_ratio("one", 2), 0.0);
        assert!((symbol_ratio("ab!!") - 0.5).abs() < 1e-9);
        assert_eq!(symbol_ratio("   "), 0.0);
        assert_eq!(symbol_ratio("héllo wörld 42"), 0.0);
    }

    #[test]
    fn drops_by_first_failing_rule_and_counts_reasons() {
        let f = Filter::new(Params {
            min_chars: Some(5),
            max_chars: Some(40),
            max_repetition: Some(0.3),
            max_symbol_ratio: Some(0.3),
            include: Some("(?i)card|transfer".into()),
            exclude: Some("(?i)lottery".into()),
            ..Params::default()
        })
        .unwrap();
        let texts = [
            "card",                                            // too short
            "my card was charged twice for the same thing ok", // too long
            "card card card card card card",                   // repetition
            "card $$$ ### !!! @@@",                            // symbols
            "where is my parcel",                              // not included
            "card lottery winner",                             // excluded
            "my card has not arrived",                         // kept
            "transfer failed",                                 // kept
        ];
        let rs = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Record::text(i as u64, *t))
            .collect();
        let (kept, rep) = f.apply(rs).unwrap();
        assert_eq!(kept.iter().map(|r| r.id).collect::<Vec<_>>(), vec![6, 7]);
        assert_eq!((rep.count_in, rep.count_out), (8, 2));
        for r in [
            Reason::TooShort,
            Reason::TooLong,
            Reason::Repetition,
            Reason::Symbols,
            Reason::NotIncluded,
            Reason::Excluded,
        ] {
            assert_eq!(rep.dropped.get(&r), Some(&1), "{r:?}");
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = Filter::new(Params {
            include: Some("(".into()),
            ..Params::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("pattern `(`"));
        let e = Filter::new(Params {
            min_chars: Some(10),
            max_chars: Some(5),
            ..Params::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("min_chars"));
    }
}
