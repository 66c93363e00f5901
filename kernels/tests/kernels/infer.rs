//! Serving paths: the cache-free forward agrees with the training forward, padding does not leak
//! into real positions, KV-cache decoding equals full recomputation (ragged batches too), int8 layers stay close to
//! f32, and sampling behaves as specified.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;

use flotilla_kernels::infer::{
    engine, Decoder, F32Linears, Int8Linears, KvCache, Sampler, Sampling,
};
use flotilla_kernels::models::config::{NormPlacement, Pooling};
use flotilla_kernels::models::encoder::EncoderConfig;
use flotilla_kernels::models::gpt::GptConfig;
use flotilla_kernels::models::{Batch, Transformer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn toks(r: &mut StdRng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| r.gen_range(0..vocab as u32)).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

fn gpt() -> Transformer {
    GptConfig {
        vocab: 29,
        context: 16,
        width: 32,
        heads: 4,
        layers: 2,
        tied: true,
    }
    .build(21)
    .unwrap()
}

#[test]
fn engine_matches_training_forward_and_ignores_padding() {
    let mut r = StdRng::seed_from_u64(31);
    for norm in [NormPlacement::Pre, NormPlacement::Post] {
        let m = EncoderConfig {
            vocab: 50,
            context: 12,
            width: 24,
            heads: 3,
            layers: 2,
            ffn: 40,
            classes: 6,
            pooling: Pooling::Mean,
            norm,
        }
        .build(2)
        .unwrap();
        let seqs: Vec<Vec<u32>> = [12, 3, 7].iter().map(|&l| toks(&mut r, l, 50)).collect();
        let batch = Batch::padded(&seqs, vec![]);
        let a = m.forward(&batch).unwrap();
        let b = engine::forward(&m, &F32Linears(&m), &batch).unwrap();
        assert!(max_diff(&a.logits, &b.logits) < 1e-5);
        // Each sequence alone gives the same logits as inside the padded batch.
        for (i, s) in seqs.iter().enumerate() {
            let alone = m
                .forward(&Batch::padded(std::slice::from_ref(s), vec![]))
                .unwrap();
            let d = max_diff(&alone.logits, &a.logits[i * 6..(i + 1) * 6]);
            assert!(d < 1e-5, "sequence {i}: padding changed logits by {d}");
        }
    }
}

#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    let mut r = StdRng::seed_from_u64(32);
    let m = Arc::new(gpt());
    let (b, total, prompt) = (2, 14, 5);
    let all = toks(&mut r, b * total, 29);
    let full = m
        .forward(&Batch::lm(all.clone(), vec![], b, total))
        .unwrap()
        .logits;
    let lin = F32Linears(&m);
    let dec = Decoder::new(m.clone()).unwrap();
    let mut caches: Vec<KvCache> = (0..b).map(|_| dec.cache()).collect();
    let mut got = vec![Vec::new(); b];
    // Prefill both prompts in one forward, then decode both one token at a time.
    let feed = |caches: &mut [KvCache], from: usize, to: usize, got: &mut [Vec<f32>]| {
        let mut batch: Vec<(&mut KvCache, &[u32])> = caches
            .iter_mut()
            .enumerate()
            .map(|(s, c)| (c, &all[s * total + from..s * total + to]))
            .collect();
        for (s, out) in dec.feed(&lin, &mut batch).unwrap().into_iter().enumerate() {
            assert_eq!(out.len(), (to - from) * 29);
            got[s].extend_from_slice(&out);
        }
    };
    feed(&mut caches, 0, prompt, &mut got);
    for p in prompt..total {
        feed(&mut caches, p, p + 1, &mut got);
    }
    for s in 0..b {
        let d = max_diff(&got[s], &full[s * total * 29..(s + 1) * total * 29]);
        println!("sequence {s}: max |cached - full| = {d:e}");
        assert!(d < 1e-4, "sequence {s}: cached decoding differs by {d}");
    }
    // The cache is full at the context length: one more position is an error, not a panic.
    let mut c = dec.cache();
    dec.feed(&lin, &mut [(&mut c, &toks(&mut r, 16, 29)[..])])
        .unwrap();
    assert!(dec.feed(&lin, &mut [(&mut c, &[1][..])]).is_err());
    assert!(dec.feed(&lin, &mut []).is_err());
    let mut fresh = dec.cache();
    assert!(dec.feed(&lin, &mut [(&mut fresh, &[][..])]).is_err());
    // A classifier cannot decode.
    let classifier = EncoderConfig {
        vocab: 29,
        context: 16,
        width: 32,
        heads: 4,
        layers: 1,
        ffn: 40,
        classes: 3,
        pooling: Pooling::Mean,
        norm: NormPlacement::Pre,
    }
    .build(3)
    .unwrap();
    assert!(Decoder::new(Arc::new(classifier)).is_err());
}

/// A ragged batch (one sequence prefilling a long prompt, two decoding one token each, all at
/// different positions) gives each sequence exactly what it gets decoded alone, and a batch
/// with one bad sequence changes no cache.
#[test]
fn ragged_batches_decode_each_sequence_as_if_alone() {
    let mut r = StdRng::seed_from_u64(34);
    let m = Arc::new(gpt());
    let lin = F32Linears(&m);
    let dec = Decoder::new(m.clone()).unwrap();
    let prompts = [
        toks(&mut r, 7, 29),
        toks(&mut r, 3, 29),
        toks(&mut r, 11, 29),
    ];
    let next = [
        toks(&mut r, 1, 29),
        toks(&mut r, 1, 29),
        toks(&mut r, 4, 29),
    ];
    // Alone: each sequence's prompt, then its next tokens.
    let alone: Vec<Vec<f32>> = (0..3)
        .map(|s| {
            let mut c = dec.cache();
            dec.feed(&lin, &mut [(&mut c, &prompts[s][..])]).unwrap();
            dec.feed(&lin, &mut [(&mut c, &next[s][..])])
                .unwrap()
                .remove(0)
        })
        .collect();
    // Together: sequences 0 and 1 already prefilled, sequence 2 prefilling in the same step.
    let mut c: Vec<KvCache> = (0..3).map(|_| dec.cache()).collect();
    let (c01, c2) = c.split_at_mut(2);
    let (c0, c1) = c01.split_at_mut(1);
    dec.feed(
        &lin,
        &mut [(&mut c0[0], &prompts[0][..]), (&mut c1[0], &prompts[1][..])],
    )
    .unwrap();
    let out = dec
        .feed(
            &lin,
            &mut [
                (&mut c2[0], &prompts[2][..]),
                (&mut c0[0], &next[0][..]),
                (&mut c1[0], &next[1][..]),
            ],
        )
        .unwrap();
    assert_eq!(
        out[0].len(),
        11 * 29,
        "the prefilling sequence gets all its positions"
    );
    for (s, got) in [(0, &out[1]), (1, &out[2])] {
        let d = max_diff(got, &alone[s]);
        assert!(d < 1e-4, "sequence {s} in a ragged batch differs by {d}");
    }
    let mut c2_next = c2[0].clone();
    let d = max_diff(
        &dec.feed(&lin, &mut [(&mut c2_next, &next[2][..])]).unwrap()[0],
        &alone[2],
    );
    assert!(d < 1e-4, "sequence 2 after a ragged prefill differs by {d}");
    // A token outside the vocabulary in the second sequence: an error naming it, no cache moved.
    let before = (c0[0].len(), c1[0].len());
    let e = dec
        .feed(&lin, &mut [(&mut c0[0], &[1][..]), (&mut c1[0], &[99][..])])
        .unwrap_err();
    assert!(e.to_string().contains("99"), "{e}");
    assert_eq!((c0[0].len(), c1[0].len()), before);
    // Truncated back to its prompt, a cache decodes the same next token again.
    c0[0].truncate(prompts[0].len());
    let again = dec.feed(&lin, &mut [(&mut c0[0], &next[0][..])]).unwrap();
    assert!(max_diff(&again[0], &alone[0]) < 1e-4);
}

#[test]
fn int8_layers_stay_close_to_f32() {
    let mut r = StdRng::seed_from_u64(33);
    let m = gpt();
    let batch = Batch::lm(toks(&mut r, 3 * 16, 29), vec![], 3, 16);
    let f = m.forward(&batch).unwrap().logits;
    let q = Int8Linears::quantize(&m).unwrap();
    let g = engine::forward(&m, &q, &batch).unwrap().logits;
    let scale = f.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = max_diff(&f, &g);
    println!("int8 logits: max diff {d:e} of max |logit| {scale:e}");
    assert!(d < 0.05 * scale, "int8 drifted: {d} vs {scale}");
    assert!(q.size_bytes() < m.num_params() * 4 / 2);
    // The KV-cache decoder accepts int8 layers too.
    let dec = Decoder::new(Arc::new(m)).unwrap();
    let mut c = dec.cache();
    assert_eq!(
        dec.feed(&q, &mut [(&mut c, &[1, 2, 3][..])]).unwrap()[0].len(),
        3 * 29
    );
}

#[test]
fn sampling_rules() {
    let logits = [0.5f32, 2.0, -1.0, 1.9, 0.0];
    assert_eq!(
        Sampler::new(Sampling::Greedy, 0)
            .unwrap()
            .sample(&logits)
            .unwrap(),
        1
    );
    let mut k1 = Sampler::new(
        Sampling::Sample {
            temperature: 5.0,
            top_k: Some(1),
            top_p: None,
        },
        1,
    )
    .unwrap();
    assert!(
        (0..50).all(|_| k1.sample(&logits).unwrap() == 1),
        "top-k 1 is greedy"
    );
    let mut p = Sampler::new(
        Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.01),
        },
        2,
    )
    .unwrap();
    assert!(
        (0..50).all(|_| p.sample(&logits).unwrap() == 1),
        "a tiny nucleus keeps only the top token"
    );
    let mut k2 = Sampler::new(
        Sampling::Sample {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
        },
        3,
    )
    .unwrap();
    assert!(
        (0..200).all(|_| [1, 3].contains(&k2.sample(&logits).unwrap())),
        "top-k 2 keeps ids 1 and 3"
    );
    // Same seed, same sequence.
    let run = |seed| {
        let mut s = Sampler::new(
            Sampling::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.9),
            },
            seed,
        )
        .unwrap();
        (0..30)
            .map(|_| s.sample(&logits).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
    // Frequencies follow softmax(logits / T).
    let t = 0.7f32;
    let z: f64 = logits.iter().map(|v| f64::from(v / t).exp()).sum();
    let mut s = Sampler::new(
        Sampling::Sample {
            temperature: t,
            top_k: None,
            top_p: None,
        },
        4,
    )
    .unwrap();
    let n = 20000;
    let mut counts = [0usize; 5];
    for _ in 0..n {
        counts[s.sample(&logits).unwrap() as usize] += 1;
    }
    for (i, c) in counts.iter().enumerate() {
        let want = f64::from(logits[i] / t).exp() / z;
        let got = *c as f64 / n as f64;
        assert!(
            (got - want).abs() < 0.015,
            "token {i}: frequency {got:.3} vs probability {want:.3}"
        );
    }
    // Bad settings and inputs are errors.
    assert!(Sampler::new(
        Sampling::Sample {
            temperature: 0.0,
            top_k: None,
            top_p: None
        },
        0
    )
    .is_err());
    assert!(Sampler::new(
        Sampling::Sample {
            temperature: 1.0,
            top_k: Some(0),
            top_p: None
        },
        0
    )
    .is_err());
    assert!(Sampler::new(
        Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(1.5)
        },
        0
    )
    .is_err());
    assert!(Sampler::new(Sampling::Greedy, 0)
        .unwrap()
        .sample(&[])
        .is_err());
    assert!(Sampler::new(Sampling::Greedy, 0)
        .unwrap()
        .sample(&[0.0, f32::NAN])
        .is_err());
}
