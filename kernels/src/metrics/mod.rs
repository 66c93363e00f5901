//! Evaluation metrics.
//!
//! - Classification: [`accuracy`], [`Confusion`] (confusion matrix, per-class and macro-F1),
//!   [`macro_f1`].
//! - Language models: [`perplexity`] from the mean token NLL.
//! - Generation: [`corpus_bleu`] (sacreBLEU-compatible: 13a tokenizer, exp smoothing, brevity
//!   penalty, 4-grams, several references) and [`RougeScorer`] (ROUGE-1/2/L as Google's
//!   `rouge-score`, with or without its Porter stemmer, [`porter_stem`]).
//! - Serving: [`LatencySummary`] (mean, p50/p90/p95/p99 as numpy interpolates them, max,
//!   throughput).
//!
//! BLEU and ROUGE are checked against committed fixtures produced by the Python packages
//! (`kernels/tests/fixtures/make_metric_fixtures.py`) to 1e-6.

mod bleu;
mod classification;
mod latency;
mod porter;
mod rouge;

pub use bleu::{corpus_bleu, tokenize_13a, BleuScore};
pub use classification::{accuracy, macro_f1, perplexity, perplexity_from_sum, Confusion};
pub use latency::{percentile_sorted, LatencySummary};
pub use porter::porter_stem;
pub use rouge::{rouge_l, rouge_n, rouge_tokenize, Rouge, RougeScore, RougeScorer};
