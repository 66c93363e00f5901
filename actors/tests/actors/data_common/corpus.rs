//! The planted-duplicate corpus shared by the dedup tests: 5,000 records built from Banking77
//! texts with known exact and near duplicates.

#![allow(dead_code)]

use std::collections::BTreeSet;

use flotilla_actors::data::ops::dedup::dedup_key_text;
use flotilla_actors::data::record::{Record, TEXT};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const SEED: u64 = 0x5eed_d00d;
const REPLACEMENTS: &[&str] = &[
    "kindly",
    "urgently",
    "today",
    "again",
    "really",
    "still",
    "exactly",
    "somehow",
    "please",
    "quickly",
    "yesterday",
    "recently",
];

pub struct Corpus {
    pub records: Vec<Record>,
    /// Ids of the planted exact copies.
    pub exact_copies: BTreeSet<u64>,
}

/// 4,000 distinct Banking77 texts, 600 near-duplicates (one or two words replaced) and 400
/// exact copies (case and spacing changed), under shuffled ids.
#[allow(clippy::print_stdout)]
pub fn corpus() -> Corpus {
    println!("seed {SEED:#x}");
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut seen = BTreeSet::new();
    let base: Vec<String> = super::banking77()
        .into_iter()
        .map(|r| r.fields[TEXT].clone())
        .filter(|t| seen.insert(dedup_key_text(t)))
        .take(4000)
        .collect();
    assert_eq!(base.len(), 4000);
    let mut texts: Vec<(String, bool)> = base.iter().map(|t| (t.clone(), false)).collect();
    while texts.len() < 4600 {
        let src = &base[rng.gen_range(0..base.len())];
        let mut words: Vec<String> = src.split_whitespace().map(str::to_string).collect();
        if words.len() < 6 {
            continue;
        }
        let changes = if words.len() >= 12 { 2 } else { 1 };
        for _ in 0..changes {
            let i = rng.gen_range(0..words.len());
            words[i] = REPLACEMENTS[rng.gen_range(0..REPLACEMENTS.len())].to_string();
        }
        let t = words.join(" ");
        if seen.insert(dedup_key_text(&t)) {
            texts.push((t, false));
        }
    }
    while texts.len() < 5000 {
        let src = &base[rng.gen_range(0..base.len())];
        let t = if rng.gen_bool(0.5) {
            src.to_uppercase()
        } else {
            format!("  {}  ", src.replace(' ', "  "))
        };
        texts.push((t, true));
    }
    let mut ids: Vec<u64> = (0..5000).collect();
    ids.shuffle(&mut rng);
    let mut records = Vec::new();
    let mut exact_copies = BTreeSet::new();
    for ((t, copy), id) in texts.into_iter().zip(ids) {
        if copy {
            exact_copies.insert(id);
        }
        records.push(Record::text(id, t));
    }
    // Shuffle the record order too, so shards mix originals and copies.
    records.shuffle(&mut rng);
    Corpus {
        records,
        exact_copies,
    }
}
