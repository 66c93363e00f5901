//! EDA-style augmentation (synonym replacement, random insertion, swap and deletion) and
//! character noise, all seeded.
//!
//! Synonyms come from a bundled banking and customer-service thesaurus
//! (`actors/data/synonyms.toml`, written for the project). Every random choice is drawn from a
//! `StdRng` seeded from `(seed, record id, copy)`, so one record's augmentations do not depend on
//! which other records share its shard, and the same seed gives the same output.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::super::error::{Error, Result};
use super::super::record::TEXT;

/// The bundled thesaurus file.
pub const BUNDLED_SYNONYMS: &str = include_str!("../../../data/synonyms.toml");

/// Word → its synonyms (words or short phrases), from groups of interchangeable terms.
#[derive(Debug, Clone, Default)]
pub struct Thesaurus {
    map: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThesaurusFile {
    groups: Vec<Vec<String>>,
}

impl Thesaurus {
    /// The bundled banking thesaurus.
    pub fn bundled() -> Result<Self> {
        Self::from_toml(BUNDLED_SYNONYMS)
    }

    /// Parses `groups = [[...], ...]`; single-word members become keys, every member is a
    /// replacement for the others of its group.
    pub fn from_toml(s: &str) -> Result<Self> {
        let f: ThesaurusFile = toml::from_str(s).map_err(|e| Error::Config {
            what: "synonym table".into(),
            reason: e.to_string(),
        })?;
        let mut map = BTreeMap::new();
        for g in &f.groups {
            for w in g.iter().filter(|w| !w.contains(' ')) {
                let others: Vec<String> = g.iter().filter(|o| *o != w).cloned().collect();
                if map.insert(w.to_lowercase(), others).is_some() {
                    return Err(Error::Config {
                        what: "synonym table".into(),
                        reason: format!("`{w}` appears in more than one group"),
                    });
                }
            }
        }
        Ok(Self { map })
    }

    /// The synonyms of a word (case and surrounding punctuation ignored).
    pub fn synonyms(&self, word: &str) -> Option<&[String]> {
        let w = word
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        self.map
            .get(&w)
            .map(Vec::as_slice)
            .filter(|s| !s.is_empty())
    }

    /// Number of words with synonyms.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Augmentation parameters: fractions of words touched by each EDA operation (0 turns it
/// off), the probability of noise per letter, and copies per record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub field: String,
    /// Augmented copies made of each record.
    pub copies: usize,
    pub synonym: f64,
    pub insert: f64,
    pub swap: f64,
    pub delete: f64,
    pub char_noise: f64,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            field: TEXT.to_string(),
            copies: 1,
            synonym: 0.1,
            insert: 0.1,
            swap: 0.1,
            delete: 0.1,
            char_noise: 0.0,
            seed: 0,
        }
    }
}

impl Params {
    /// Checks that the fractions are in [0, 1] and something is on.
    pub fn validate(&self) -> Result<()> {
        let all = [
            ("synonym", self.synonym),
            ("insert", self.insert),
            ("swap", self.swap),
            ("delete", self.delete),
            ("char_noise", self.char_noise),
        ];
        for (name, v) in all {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::invalid(
                    "augment",
                    name,
                    format!("{v} is not in [0, 1]"),
                ));
            }
        }
        if all.iter().all(|(_, v)| *v == 0.0) {
            return Err(Error::invalid(
                "augment",
                "synonym",
                "every operation is off",
            ));
        }
        Ok(())
    }
}

/// The RNG for copy `copy` of record `id`.
pub fn rng_for(seed: u64, id: u64, copy: u64) -> StdRng {
    let mut h = blake3::Hasher::new();
    for v in [seed, id, copy] {
        h.update(&v.to_le_bytes());
    }
    let mut b = [0u8; 32];
    b.copy_from_slice(h.finalize().as_bytes());
    StdRng::from_seed(b)
}

/// How many words an operation with fraction `alpha` touches in `len` words: at least one.
fn count(alpha: f64, len: usize) -> usize {
    ((alpha * len as f64).round() as usize).max(1)
}

/// Replaces up to `n` distinct words that have synonyms with a random synonym.
pub fn synonym_replace(
    words: &[String],
    n: usize,
    th: &Thesaurus,
    rng: &mut StdRng,
) -> Vec<String> {
    let mut candidates: Vec<usize> = (0..words.len())
        .filter(|&i| th.synonyms(&words[i]).is_some())
        .collect();
    candidates.shuffle(rng);
    let mut out = words.to_vec();
    for &i in candidates.iter().take(n) {
        if let Some(s) = th.synonyms(&words[i]).and_then(|s| s.choose(rng)) {
            out[i] = s.clone();
        }
    }
    out
}

/// Inserts, `n` times, a synonym of a random word that has one at a random position.
pub fn random_insert(words: &[String], n: usize, th: &Thesaurus, rng: &mut StdRng) -> Vec<String> {
    let mut out = words.to_vec();
    let with: Vec<&String> = words.iter().filter(|w| th.synonyms(w).is_some()).collect();
    for _ in 0..n {
        let Some(src) = with.choose(rng) else { break };
        if let Some(s) = th.synonyms(src).and_then(|s| s.choose(rng)) {
            let at = rng.gen_range(0..=out.len());
            out.insert(at, s.clone());
        }
    }
    out
}

/// Swaps two random positions, `n` times.
pub fn random_swap(words: &[String], n: usize, rng: &mut StdRng) -> Vec<String> {
    let mut out = words.to_vec();
    if out.len() >= 2 {
        for _ in 0..n {
            let (a, b) = (rng.gen_range(0..out.len()), rng.gen_range(0..out.len()));
            out.swap(a, b);
        }
    }
    out
}

/// Deletes each word with probability `p`, keeping one random word if all would go.
pub fn random_delete(words: &[String], p: f64, rng: &mut StdRng) -> Vec<String> {
    if words.len() <= 1 {
        return words.to_vec();
    }
    let out: Vec<String> = words.iter().filter(|_| !rng.gen_bool(p)).cloned().collect();
    if out.is_empty() {
        vec![words[rng.gen_range(0..words.len())].clone()]
    } else {
        out
    }
}

/// Typo-like noise: each letter, with probability `p`, is deleted, doubled, swapped with the
/// next character or replaced by a random lowercase letter.
pub fn char_noise(text: &str, p: f64, rng: &mut StdRng) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() && rng.gen_bool(p) {
            match rng.gen_range(0..4) {
                0 => {}
                1 => {
                    out.push(c);
                    out.push(c);
                }
                2 if i + 1 < chars.len() => {
                    out.push(chars[i + 1]);
                    out.push(c);
                    i += 1;
                }
                _ => out.push(char::from(b'a' + rng.gen_range(0..26u8))),
            }
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// One augmented copy: one EDA operation picked at random among those on (as in EDA), then
/// character noise if on.
pub fn augment_text(text: &str, p: &Params, th: &Thesaurus, rng: &mut StdRng) -> String {
    let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let len = words.len();
    let mut ops: Vec<u8> = Vec::new();
    for (k, v) in [p.synonym, p.insert, p.swap, p.delete].iter().enumerate() {
        if *v > 0.0 {
            ops.push(k as u8);
        }
    }
    let words = match ops.choose(rng) {
        Some(0) => synonym_replace(&words, count(p.synonym, len), th, rng),
        Some(1) => random_insert(&words, count(p.insert, len), th, rng),
        Some(2) => random_swap(&words, count(p.swap, len), rng),
        Some(_) => random_delete(&words, p.delete, rng),
        None => words,
    };
    let joined = words.join(" ");
    if p.char_noise > 0.0 {
        char_noise(&joined, p.char_noise, rng)
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    const Q: &str = "why was my card declined when I tried to send money abroad yesterday";

    #[test]
    fn bundled_table_parses_and_has_banking_terms() {
        let th = Thesaurus::bundled().unwrap();
        assert!(th.len() > 80, "{}", th.len());
        assert!(th
            .synonyms("Card,")
            .unwrap()
            .contains(&"debit card".to_string()));
        assert!(th.synonyms("zebra").is_none());
        assert!(Thesaurus::from_toml("groups = [[\"a\",\"b\"],[\"a\",\"c\"]]").is_err());
    }

    #[test]
    fn each_operation_changes_length_as_expected() {
        let th = Thesaurus::bundled().unwrap();
        let words = w(Q);
        for seed in 0..50 {
            let mut rng = rng_for(seed, 1, 0);
            let sw = random_swap(&words, 3, &mut rng);
            let (mut a, mut b) = (sw.clone(), words.clone());
            a.sort();
            b.sort();
            assert_eq!(a, b, "swap keeps the multiset");
            let del = random_delete(&words, 0.3, &mut rng);
            assert!(!del.is_empty() && del.len() <= words.len());
            let ins = random_insert(&words, 2, &th, &mut rng);
            assert_eq!(
                ins.len(),
                words.len() + 2,
                "two insertions, each a word or phrase"
            );
            let sr = synonym_replace(&words, 2, &th, &mut rng);
            assert_eq!(sr.len(), words.len());
            let changed = sr.iter().zip(&words).filter(|(x, y)| x != y).count();
            assert!((1..=2).contains(&changed), "{changed} changed");
            for (x, y) in sr.iter().zip(&words) {
                if x != y {
                    assert!(th.synonyms(y).unwrap().contains(x), "{y} → {x}");
                }
            }
            let noisy = char_noise(Q, 0.1, &mut rng);
            let (n, m) = (noisy.chars().count() as i64, Q.chars().count() as i64);
            assert!((n - m).abs() <= m / 3, "{noisy}");
        }
        let mut rng = rng_for(0, 0, 0);
        assert_eq!(random_delete(&w("one"), 1.0, &mut rng), w("one"));
        assert_eq!(random_delete(&words, 1.0, &mut rng).len(), 1);
        assert_eq!(char_noise(Q, 0.0, &mut rng), Q);
    }

    #[test]
    fn same_seed_same_output_different_seeds_differ() {
        let th = Thesaurus::bundled().unwrap();
        let p = Params {
            char_noise: 0.05,
            ..Params::default()
        };
        let run = |seed: u64| -> Vec<String> {
            (0..20)
                .map(|id| augment_text(Q, &p, &th, &mut rng_for(seed, id, 0)))
                .collect()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // Most copies differ from the source.
        assert!(run(7).iter().filter(|t| t.as_str() != Q).count() >= 15);
    }

    #[test]
    fn parameters_are_checked() {
        assert!(Params {
            swap: 1.5,
            ..Params::default()
        }
        .validate()
        .is_err());
        let off = Params {
            synonym: 0.0,
            insert: 0.0,
            swap: 0.0,
            delete: 0.0,
            ..Params::default()
        };
        assert!(off.validate().is_err());
    }
}
