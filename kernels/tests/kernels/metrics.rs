//! Metrics against fixtures produced by sacreBLEU, rouge-score and NLTK
//! (`fixtures/make_metric_fixtures.py`), to 1e-6, plus hand-checked classification metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use flotilla_kernels::metrics::{
    accuracy, corpus_bleu, macro_f1, percentile_sorted, perplexity, perplexity_from_sum,
    porter_stem, tokenize_13a, Confusion, LatencySummary, RougeScorer,
};
use flotilla_kernels::Error;
use serde_json::Value;

fn fixtures() -> Value {
    let text = std::fs::read_to_string(crate::common::fixture("metric_fixtures.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-6, "{what}: got {got}, want {want}");
}

#[test]
fn thirteen_a_tokenizer_matches_sacrebleu() {
    let fx = fixtures();
    let cases = fx["tokenize_13a"].as_array().unwrap();
    assert!(cases.len() > 30);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        assert_eq!(tokenize_13a(text), strs(&c["tokens"]), "{text:?}");
    }
}

#[test]
fn corpus_bleu_matches_sacrebleu() {
    let fx = fixtures();
    let cases = fx["bleu"].as_array().unwrap();
    assert!(cases.len() > 20);
    let mut nonzero = 0;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let hyps = strs(&c["hypotheses"]);
        let refs: Vec<Vec<&str>> = c["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(strs)
            .collect();
        let b = corpus_bleu(&hyps, &refs).unwrap();
        close(
            b.score,
            c["score"].as_f64().unwrap(),
            &format!("{name}: score"),
        );
        close(b.bp, c["bp"].as_f64().unwrap(), &format!("{name}: bp"));
        assert_eq!(b.sys_len, c["sys_len"].as_u64().unwrap(), "{name}: sys_len");
        assert_eq!(b.ref_len, c["ref_len"].as_u64().unwrap(), "{name}: ref_len");
        for n in 0..4 {
            assert_eq!(
                b.counts[n],
                c["counts"][n].as_u64().unwrap(),
                "{name}: counts[{n}]"
            );
            assert_eq!(
                b.totals[n],
                c["totals"][n].as_u64().unwrap(),
                "{name}: totals[{n}]"
            );
            close(
                b.precisions[n],
                c["precisions"][n].as_f64().unwrap(),
                &format!("{name}: p{n}"),
            );
        }
        if b.score > 1.0 {
            nonzero += 1;
        }
    }
    assert!(
        nonzero > 10,
        "the fixtures should exercise real, non-trivial scores"
    );
}

#[test]
fn bleu_rejects_bad_input() {
    assert!(matches!(
        corpus_bleu(&["a"], &[]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(corpus_bleu(&[], &[]), Err(Error::Empty(_))));
    assert!(corpus_bleu(&["a"], &[vec![]]).is_err());
}

#[test]
fn porter_stemmer_matches_nltk() {
    let fx = fixtures();
    let stems = fx["porter"].as_object().unwrap();
    assert!(stems.len() > 300);
    let wrong: Vec<String> = stems
        .iter()
        .filter_map(|(w, s)| {
            let got = porter_stem(w);
            (got != s.as_str().unwrap()).then(|| format!("{w}: got {got}, nltk {s}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} differ: {wrong:?}",
        wrong.len(),
        stems.len()
    );
}

#[test]
fn rouge_matches_rouge_score_with_and_without_stemming() {
    let fx = fixtures();
    let cases = fx["rouge"].as_array().unwrap();
    assert!(cases.len() > 50);
    for (variant, scorer) in [
        ("plain", RougeScorer::new(false)),
        ("stemmed", RougeScorer::new(true)),
    ] {
        for c in cases {
            let targets = strs(&c["targets"]);
            let pred = c["prediction"].as_str().unwrap();
            let r = scorer.score_multi(&targets, pred).unwrap();
            let want = &c[variant];
            for (key, got) in [
                ("rouge1", r.rouge1),
                ("rouge2", r.rouge2),
                ("rougeL", r.rouge_l),
            ] {
                let what = format!("{variant} {key} {targets:?} / {pred:?}");
                close(got.precision, want[key][0].as_f64().unwrap(), &what);
                close(got.recall, want[key][1].as_f64().unwrap(), &what);
                close(got.fmeasure, want[key][2].as_f64().unwrap(), &what);
            }
        }
    }
    // Stemming changes scores on inflected words.
    let t = "the hotels were booked";
    let p = "hotel booking";
    assert_eq!(RougeScorer::new(false).score(t, p).rouge1.fmeasure, 0.0);
    assert!(RougeScorer::new(true).score(t, p).rouge1.fmeasure > 0.5);
    assert!(RougeScorer::new(false).score_multi(&[], p).is_err());
}

#[test]
fn classification_metrics_match_hand_computed_values() {
    // targets/predictions over 4 classes; class 3 never occurs and is left out of macro-F1
    // (scikit-learn's default label set), class 2 is never predicted (F1 0).
    let t = [0, 0, 0, 1, 1, 2, 2, 2];
    let p = [0, 0, 1, 1, 1, 0, 1, 1];
    assert_eq!(accuracy(&t, &p).unwrap(), 4.0 / 8.0);
    let c = Confusion::new(&t, &p, 4).unwrap();
    assert_eq!(c.get(0, 0), 2);
    assert_eq!(c.get(0, 1), 1);
    assert_eq!(c.get(2, 1), 2);
    assert_eq!(c.counts.iter().sum::<u64>(), 8);
    // Class 0: P 2/3, R 2/3 → F1 2/3. Class 1: P 2/5, R 1 → F1 4/7. Class 2: 0.
    let f1 = c.per_class_f1();
    assert!((f1[0].unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((f1[1].unwrap() - 4.0 / 7.0).abs() < 1e-12);
    assert_eq!(f1[2], Some(0.0));
    assert_eq!(f1[3], None);
    let want = (2.0 / 3.0 + 4.0 / 7.0 + 0.0) / 3.0;
    assert!((macro_f1(&t, &p, 4).unwrap() - want).abs() < 1e-12);
    assert!(matches!(
        macro_f1(&t, &p[..3], 4),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(macro_f1(&[5], &[0], 4).is_err());
    assert!(accuracy(&[], &[]).is_err());
}

#[test]
fn perplexity_is_exp_of_mean_nll() {
    assert_eq!(perplexity(0.0).unwrap(), 1.0);
    // A uniform model over 50 tokens has NLL ln 50 per token and perplexity 50.
    assert!((perplexity((50.0f64).ln()).unwrap() - 50.0).abs() < 1e-9);
    assert!((perplexity_from_sum(3.0 * 2.0f64.ln(), 3).unwrap() - 2.0).abs() < 1e-12);
    assert!(perplexity(f64::NAN).is_err());
    assert!(perplexity(-1.0).is_err());
    assert!(perplexity_from_sum(1.0, 0).is_err());
}

#[test]
fn latency_percentiles_interpolate_like_numpy() {
    // numpy.percentile([1, 2, 3, 4, 10], [50, 90, 99]) = [3.0, 7.6, 9.76]
    let xs = [1.0, 2.0, 3.0, 4.0, 10.0];
    assert_eq!(percentile_sorted(&xs, 50.0).unwrap(), 3.0);
    assert!((percentile_sorted(&xs, 90.0).unwrap() - 7.6).abs() < 1e-12);
    assert!((percentile_sorted(&xs, 99.0).unwrap() - 9.76).abs() < 1e-12);
    assert_eq!(percentile_sorted(&xs, 0.0).unwrap(), 1.0);
    assert_eq!(percentile_sorted(&xs, 100.0).unwrap(), 10.0);
    assert!(percentile_sorted(&[], 50.0).is_err());
    assert!(percentile_sorted(&xs, 101.0).is_err());
    // Unsorted durations; a 2 s run of 5 requests is 2.5 requests per second.
    let lat: Vec<std::time::Duration> = [4u64, 1, 10, 3, 2]
        .iter()
        .map(|&ms| std::time::Duration::from_millis(ms))
        .collect();
    let s = LatencySummary::new(&lat, Some(std::time::Duration::from_secs(2))).unwrap();
    assert_eq!(s.count, 5);
    assert!((s.p50_ms - 3.0).abs() < 1e-9 && (s.p90_ms - 7.6).abs() < 1e-9);
    assert!((s.mean_ms - 4.0).abs() < 1e-9 && (s.max_ms - 10.0).abs() < 1e-9);
    assert_eq!(s.throughput_per_s, Some(2.5));
    assert!(LatencySummary::new(&[], None).is_err());
    assert!(LatencySummary::new(&lat, Some(std::time::Duration::ZERO)).is_err());
}
