//! Corpus BLEU matching sacreBLEU's defaults (`sacrebleu.corpus_bleu(hyps, refs)`, sacreBLEU 2.x):
//! the `13a` tokenizer (mteval-v13a), case-sensitive, 4-gram precisions with counts clipped by the
//! maximum count over a segment's references, `exp` smoothing (a zero-match order gets
//! 100 / (2^k · total) for the k-th such order), the closest reference length (shortest on ties)
//! for the brevity penalty, and no effective-order shortcut.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{check_len, Error, Result};

const MAX_ORDER: usize = 4;

/// A corpus BLEU result, with sacreBLEU's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BleuScore {
    /// BLEU on sacreBLEU's 0–100 scale.
    pub score: f64,
    /// Matched n-grams per order (1..=4).
    pub counts: [u64; MAX_ORDER],
    /// Hypothesis n-grams per order.
    pub totals: [u64; MAX_ORDER],
    /// Smoothed precisions per order, in percent.
    pub precisions: [f64; MAX_ORDER],
    /// Brevity penalty.
    pub bp: f64,
    /// Total hypothesis length in tokens.
    pub sys_len: u64,
    /// Total closest-reference length in tokens.
    pub ref_len: u64,
}

/// Python's `str.isspace`, which `str.split()` and `str.rstrip()` use: Unicode White_Space plus
/// the ASCII separators U+001C–U+001F.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// One `re.sub` pass of a two-character pattern, scanning left to right without overlaps as
/// Python's `re` does.
fn sub_pairs(
    s: &[char],
    hit: impl Fn(char, char) -> bool,
    emit: impl Fn(&mut Vec<char>, char, char),
) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 4);
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && hit(s[i], s[i + 1]) {
            emit(&mut out, s[i], s[i + 1]);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// sacreBLEU's `13a` tokenizer, applied after `rstrip()` as sacreBLEU does; returns tokens.
pub fn tokenize_13a(line: &str) -> Vec<String> {
    let line = line.trim_end_matches(py_space);
    let mut l = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if l.contains('&') {
        l = l
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let padded = format!(" {l} ");
    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) → " \1 "
    let is_punct =
        |c: char| matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
    let mut s: Vec<char> = Vec::with_capacity(padded.len() * 2);
    for c in padded.chars() {
        if is_punct(c) {
            s.extend([' ', c, ' ']);
        } else {
            s.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let dot = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) → "\1 \2 "
    let s = sub_pairs(
        &s,
        |a, b| !digit(a) && dot(b),
        |o, a, b| o.extend([a, ' ', b, ' ']),
    );
    // ([\.,])([^0-9]) → " \1 \2"
    let s = sub_pairs(
        &s,
        |a, b| dot(a) && !digit(b),
        |o, a, b| o.extend([' ', a, ' ', b]),
    );
    // ([0-9])(-) → "\1 \2 "
    let s = sub_pairs(
        &s,
        |a, b| digit(a) && b == '-',
        |o, a, b| o.extend([a, ' ', b, ' ']),
    );
    let s: String = s.into_iter().collect();
    s.split(py_space)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn ngram_counts(tokens: &[String]) -> HashMap<&[String], u64> {
    let mut m = HashMap::new();
    for n in 1..=MAX_ORDER {
        if tokens.len() >= n {
            for w in tokens.windows(n) {
                *m.entry(w).or_insert(0) += 1;
            }
        }
    }
    m
}

/// Corpus BLEU of `hypotheses` where `references[i]` holds the reference(s) of segment `i`
/// (each segment needs at least one; counts may differ between segments).
pub fn corpus_bleu(hypotheses: &[&str], references: &[Vec<&str>]) -> Result<BleuScore> {
    check_len(
        "BLEU references (one list per hypothesis)",
        hypotheses.len(),
        references.len(),
    )?;
    if hypotheses.is_empty() {
        return Err(Error::Empty("BLEU hypotheses"));
    }
    let mut counts = [0u64; MAX_ORDER];
    let mut totals = [0u64; MAX_ORDER];
    let (mut sys_len, mut ref_len) = (0u64, 0u64);
    for (i, (hyp, refs)) in hypotheses.iter().zip(references).enumerate() {
        if refs.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "segment {i} has no reference"
            )));
        }
        let ref_toks: Vec<Vec<String>> = refs.iter().map(|r| tokenize_13a(r)).collect();
        let mut max_ref: HashMap<&[String], u64> = HashMap::new();
        for r in &ref_toks {
            for (g, c) in ngram_counts(r) {
                let e = max_ref.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        let h = tokenize_13a(hyp);
        let hl = h.len() as i64;
        // Closest reference length; the shorter one on ties.
        let mut closest: Option<(i64, i64)> = None;
        for r in &ref_toks {
            let rl = r.len() as i64;
            let d = (hl - rl).abs();
            closest = match closest {
                Some((cd, cl)) if d > cd || (d == cd && rl >= cl) => Some((cd, cl)),
                _ => Some((d, rl)),
            };
        }
        sys_len += h.len() as u64;
        ref_len += closest.map_or(0, |(_, l)| l as u64);
        for (g, c) in ngram_counts(&h) {
            let n = g.len() - 1;
            totals[n] += c;
            counts[n] += c.min(max_ref.get(g).copied().unwrap_or(0));
        }
    }
    Ok(score_from_stats(counts, totals, sys_len, ref_len))
}

/// sacreBLEU's `compute_bleu` with `smooth_method="exp"` and `effective_order=False`.
fn score_from_stats(counts: [u64; 4], totals: [u64; 4], sys_len: u64, ref_len: u64) -> BleuScore {
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = [0.0f64; MAX_ORDER];
    let done = |score| BleuScore {
        score,
        counts,
        totals,
        precisions,
        bp,
        sys_len,
        ref_len,
    };
    if counts.iter().all(|&c| c == 0) {
        return done(0.0);
    }
    let mut smooth = 1.0f64;
    for n in 0..MAX_ORDER {
        if totals[n] == 0 {
            break;
        }
        precisions[n] = if counts[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * totals[n] as f64)
        } else {
            100.0 * counts[n] as f64 / totals[n] as f64
        };
    }
    // sacreBLEU's my_log floors log(0) at -9999999999 rather than -inf.
    let log_sum: f64 = precisions
        .iter()
        .map(|&p| if p == 0.0 { -9_999_999_999.0 } else { p.ln() })
        .sum();
    let score = bp * (log_sum / MAX_ORDER as f64).exp();
    BleuScore {
        score,
        counts,
        totals,
        precisions,
        bp,
        sys_len,
        ref_len,
    }
}
