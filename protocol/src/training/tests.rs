use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::codec;

const FULL: &str = r#"
[model]
registered = "gpt-small@3"

[dataset]
name = "reviews@2"
text_field = "body"
label_field = "stars"

[args]
per_device_batch = 16
global_batch = 64
epochs = 3
max_steps = 1000
optimizer = "sgd"
learning_rate = 3e-4
warmup_steps = 100
weight_decay = 0.01
schedule = "linear"
clip_norm = 1.0
precision = "bf16"
eval_every = 50
save_every = 200
seed = 7

[cluster]
workers_min = 2
workers_max = 8
ps_shards = 2
mode = "ssp"
staleness = 2
below_min_timeout = "2m"

[nan]
max_consecutive_nonfinite = 5
"#;

fn parse(s: &str) -> TrainSpec {
    toml::from_str(s).unwrap()
}

#[test]
fn a_full_spec_parses_and_validates() {
    let s = parse(FULL);
    s.validate().unwrap();
    assert_eq!(s.model, ModelSource::Registered("gpt-small@3".into()));
    assert_eq!(s.cluster.consistency(), Consistency::Ssp(2));
    assert_eq!(s.cluster.below_min_timeout, Duration::from_secs(120));
    assert_eq!(s.args.precision, Precision::Bf16);
    assert_eq!(s.args.schedule, LrSchedule::Linear);
    assert_eq!(s.args.optimizer, OptimizerKind::Sgd);
    assert_eq!(s.global_batch(3), 64);
    assert_eq!(s.nan.max_consecutive_nonfinite, 5);
}

#[test]
fn model_sources_and_defaults() {
    let s = parse(
        "[model]\nhf_folder = \"/models/bert\"\n[dataset]\nname = \"d@1\"\n[cluster]\nmode = \"async\"",
    );
    s.validate().unwrap();
    assert_eq!(s.model, ModelSource::HfFolder("/models/bert".into()));
    assert_eq!(s.cluster.consistency(), Consistency::Async);
    assert_eq!(s.global_batch(4), 32);

    let s = parse(
        "[model.new]\narchitecture = \"classifier\"\nnum_labels = 3\nhidden_size = 64\nheads = 4\n\
         [dataset]\nname = \"d@1\"\nlabel_field = \"label\"",
    );
    s.validate().unwrap();
    let ModelSource::New(m) = &s.model else {
        panic!("{:?}", s.model)
    };
    assert_eq!(
        (m.architecture, m.num_labels, m.layers),
        (Architecture::Classifier, Some(3), 4)
    );
}

#[test]
fn adaptive_clipping_parses_with_defaults_for_what_is_left_out() {
    let s = parse(
        "[model]\nregistered = \"m@1\"\n[dataset]\nname = \"d@1\"\n\
         [args.adaptive_clip]\npercentile = 0.5\nwindow = 50",
    );
    s.validate().unwrap();
    assert_eq!(
        s.args.adaptive_clip,
        Some(AdaptiveClip {
            percentile: 0.5,
            window: 50,
            ..AdaptiveClip::default()
        })
    );
    // A history longer than the window could never fill.
    let mut bad = s.clone();
    bad.args.adaptive_clip = Some(AdaptiveClip {
        min_history: 51,
        window: 50,
        ..AdaptiveClip::default()
    });
    assert!(bad
        .validate()
        .unwrap_err()
        .mentions("args.adaptive_clip.min_history"));
    assert!(toml::from_str::<TrainSpec>("[args.adaptive_clip]\nfactr = 2.0").is_err());
}

#[test]
fn unknown_keys_are_refused() {
    assert!(toml::from_str::<TrainSpec>("[args]\nlearning_rat = 1.0").is_err());
    assert!(toml::from_str::<TrainSpec>("[cluster]\nmode = \"bsp\"").is_err());
}

#[test]
fn every_bad_field_is_named() {
    let mut s = parse(FULL);
    s.model = ModelSource::New(NewModel {
        architecture: Architecture::Classifier,
        vocab_size: 1,
        hidden_size: 10,
        layers: 0,
        heads: 3,
        max_seq_len: 0,
        num_labels: Some(1),
    });
    s.dataset.name = "reviews".into();
    s.dataset.text_field = "a/b".into();
    s.dataset.label_field = None;
    s.args.per_device_batch = 0;
    s.args.global_batch = Some(1);
    s.args.epochs = Some(0);
    s.args.max_steps = Some(0);
    s.args.learning_rate = f32::NAN;
    s.args.weight_decay = -1.0;
    s.args.clip_norm = Some(0.0);
    s.args.adaptive_clip = Some(AdaptiveClip {
        factor: 0.0,
        percentile: 1.5,
        window: 0,
        min_history: 1,
    });
    s.args.warmup_steps = 10;
    s.cluster.workers_min = 0;
    s.cluster.workers_max = 0;
    s.cluster.ps_shards = 0;
    s.cluster.staleness = Some(0);
    s.cluster.below_min_timeout = Duration::ZERO;
    s.nan.max_consecutive_nonfinite = 0;
    let e = s.validate().unwrap_err();
    for f in [
        "model.new.vocab_size",
        "model.new.layers",
        "model.new.heads",
        "model.new.max_seq_len",
        "model.new.num_labels",
        "dataset.name",
        "dataset.text_field",
        "dataset.label_field",
        "args.per_device_batch",
        "args.epochs",
        "args.max_steps",
        "args.learning_rate",
        "args.weight_decay",
        "args.clip_norm",
        "args.adaptive_clip.factor",
        "args.adaptive_clip.percentile",
        "args.adaptive_clip.window",
        "args.adaptive_clip.min_history",
        "args.warmup_steps",
        "cluster.workers_min",
        "cluster.workers_max",
        "cluster.ps_shards",
        "cluster.staleness",
        "cluster.below_min_timeout",
        "nan.max_consecutive_nonfinite",
    ] {
        assert!(e.mentions(f), "{f} missing from {e}");
    }
    assert!(!e.mentions("model.new.hidden_size"), "{e}");

    let mut s = parse(FULL);
    s.cluster.workers_max = 100;
    s.cluster.mode = Mode::Sync;
    s.args.epochs = None;
    s.args.max_steps = None;
    s.model = ModelSource::Registered("gpt@0".into());
    let e = s.validate().unwrap_err();
    for f in [
        "args.global_batch",
        "cluster.staleness",
        "args.epochs",
        "model.registered",
    ] {
        assert!(e.mentions(f), "{f} missing from {e}");
    }
    s.cluster.mode = Mode::Ssp;
    s.cluster.staleness = None;
    assert!(s.validate().unwrap_err().mentions("cluster.staleness"));
}

#[test]
fn versioned_names() {
    assert_eq!(
        Versioned::parse("a-b@12").unwrap(),
        Versioned {
            name: "a-b".into(),
            version: 12
        }
    );
    assert_eq!(Versioned::parse("a@1").unwrap().to_string(), "a@1");
    for bad in ["a", "a@", "@1", "a@x", "a@0", "a b@1", "a@-1"] {
        assert!(Versioned::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn specs_travel_through_the_codec() {
    let s = parse(FULL);
    let b = codec::encode::<_, 65536>("t", &s).unwrap();
    assert_eq!(codec::decode::<TrainSpec, 65536>("t", &b).unwrap(), s);
}

#[test]
fn half_payloads_round_trip_within_their_precision() {
    let g: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37).sin() * 3.0).collect();
    let p = GradPayload::encode(&g, Precision::F32);
    assert_eq!(p.decode().unwrap(), g);
    for (precision, rel) in [
        (Precision::F16, 1.0 / 2048.0),
        (Precision::Bf16, 1.0 / 256.0),
    ] {
        let p = GradPayload::encode(&g, precision);
        assert_eq!(p.precision(), precision);
        assert_eq!(p.len(), Some(g.len()));
        let back = p.decode().unwrap();
        for (a, b) in g.iter().zip(&back) {
            assert!(
                (a - b).abs() <= a.abs() * rel + 1e-7,
                "{precision:?}: {a} vs {b}"
            );
        }
        // Decoding is exact, so a second round trip changes nothing.
        assert_eq!(
            GradPayload::encode(&back, precision).decode().unwrap(),
            back
        );
        assert!(p.is_finite());
    }
}

#[test]
fn non_finite_and_malformed_payloads_are_reported() {
    // 1e5 is beyond f16's range (65504) but not bf16's.
    assert!(!GradPayload::encode(&[1.0, 1e5], Precision::F16).is_finite());
    assert!(GradPayload::encode(&[1.0, 1e5], Precision::Bf16).is_finite());
    assert!(!GradPayload::encode(&[f32::NAN], Precision::F32).is_finite());
    assert!(!GradPayload::encode(&[f32::INFINITY], Precision::Bf16).is_finite());
    let odd = GradPayload::F16(vec![0, 0, 0]);
    assert_eq!(
        (odd.len(), odd.decode(), odd.is_finite()),
        (None, None, false)
    );
    assert!(GradPayload::F32(vec![]).is_empty());
}

proptest! {
    #[test]
    fn half_round_trip_is_idempotent(v in prop::collection::vec(-60000.0f32..60000.0, 0..64)) {
        for precision in [Precision::F16, Precision::Bf16] {
            let once = GradPayload::encode(&v, precision).decode().unwrap();
            prop_assert_eq!(once.len(), v.len());
            let twice = GradPayload::encode(&once, precision).decode().unwrap();
            prop_assert_eq!(once, twice);
        }
    }
}
