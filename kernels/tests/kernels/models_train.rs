//! The flat-vector training contract: bad input is an error (never a panic or a silent
//! truncation), a few optimizer steps lower the loss, and mixed precision tracks f32.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use flotilla_kernels::models::config::{NormPlacement, Pooling};
use flotilla_kernels::models::encoder::EncoderConfig;
use flotilla_kernels::models::gpt::GptConfig;
use flotilla_kernels::models::{Batch, Loss, Transformer};
use flotilla_kernels::optim::{AdamW, AdamWConfig, LossScaler, Optimizer, ScalerConfig};
use flotilla_kernels::train::precision::{loss_and_grads_mixed, Precision};
use flotilla_kernels::Error;

fn gpt() -> Transformer {
    GptConfig {
        vocab: 20,
        context: 8,
        width: 16,
        heads: 2,
        layers: 2,
        tied: false,
    }
    .build(1)
    .unwrap()
}

#[test]
fn bad_inputs_are_errors() {
    let m = gpt();
    let ok = Batch::lm(vec![1; 16], vec![2; 16], 2, 8);
    assert!(m.loss_and_grads(&ok).is_ok());
    let e = m
        .forward(&Batch::lm(vec![1, 2, 20, 3], vec![], 1, 4))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::TokenOutOfRange {
                token: 20,
                position: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = m.forward(&Batch::lm(vec![1; 9], vec![], 1, 9)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SequenceTooLong {
                len: 9,
                context: 8,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        m.forward(&Batch::lm(vec![], vec![], 0, 4)).unwrap_err(),
        Error::EmptyBatch(_)
    ));
    assert!(matches!(
        m.forward(&Batch::padded(&[vec![1, 2], vec![]], vec![]))
            .unwrap_err(),
        Error::EmptyBatch(_)
    ));
    assert!(
        m.forward(&Batch::lm(vec![1; 5], vec![], 2, 4)).is_err(),
        "token count disagrees with shape"
    );
    assert!(
        m.loss_and_grads(&Batch::lm(vec![1; 8], vec![2; 7], 1, 8))
            .is_err(),
        "target count"
    );
    assert!(
        m.loss_and_grads(&Batch::lm(vec![1; 8], vec![25; 8], 1, 8))
            .is_err(),
        "target outside vocab"
    );
    let mut m2 = m.clone();
    assert!(matches!(
        m2.set_params_flat(&[0.0; 3]).unwrap_err(),
        Error::LengthMismatch { .. }
    ));
    let p = m.params_flat();
    m2.set_params_flat(&p).unwrap();
    assert_eq!(m2.params_flat(), p);
    let enc = EncoderConfig {
        vocab: 10,
        context: 6,
        width: 8,
        heads: 2,
        layers: 1,
        ffn: 8,
        classes: 3,
        pooling: Pooling::Mean,
        norm: NormPlacement::Pre,
    }
    .build(0)
    .unwrap();
    assert!(
        enc.loss_and_grads(&Batch::padded(&[vec![1, 2]], vec![3]))
            .is_err(),
        "label outside classes"
    );
    let teacher = vec![0.0f32; 5];
    let distill = Loss::Distill {
        teacher: &teacher,
        temperature: 2.0,
        alpha: 0.5,
        hard_targets: false,
    };
    assert!(
        enc.loss_and_grads_with(&Batch::padded(&[vec![1, 2]], vec![]), &distill)
            .is_err(),
        "teacher shape"
    );
    assert!(GptConfig {
        vocab: 20,
        context: 8,
        width: 15,
        heads: 2,
        layers: 1,
        tied: true
    }
    .build(0)
    .is_err());
}

#[test]
fn a_few_steps_lower_the_loss() {
    // GPT on a repeating string, classifier on a rule it can learn; fixed seeds.
    let text: Vec<u32> = "abcabdabcabd"
        .bytes()
        .cycle()
        .take(400)
        .map(|b| u32::from(b - b'a'))
        .collect();
    let mut m = GptConfig {
        vocab: 4,
        context: 16,
        width: 32,
        heads: 4,
        layers: 2,
        tied: true,
    }
    .build(3)
    .unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), m.num_params()).unwrap();
    let text = &text;
    let batch = |i: usize| {
        let (x, y): (Vec<u32>, Vec<u32>) = (0..4)
            .flat_map(|b| (0..16).map(move |t| (text[i + b * 7 + t], text[i + b * 7 + t + 1])))
            .unzip();
        Batch::lm(x, y, 4, 16)
    };
    let first = m.loss_and_grads(&batch(0)).unwrap().0;
    for i in 0..40 {
        let (_, g) = m.loss_and_grads(&batch(i % 30)).unwrap();
        opt.step(m.params_mut(), &g, 3e-3).unwrap();
    }
    let last = m.loss_and_grads(&batch(5)).unwrap().0;
    println!("gpt: {first:.3} -> {last:.3}");
    assert!(last < 0.5 * first, "loss {first} -> {last}");

    let mut c = EncoderConfig {
        vocab: 12,
        context: 8,
        width: 16,
        heads: 2,
        layers: 1,
        ffn: 32,
        classes: 2,
        pooling: Pooling::Mean,
        norm: NormPlacement::Post,
    }
    .build(4)
    .unwrap();
    let seqs: Vec<Vec<u32>> = (0..16)
        .map(|i| {
            (0..(3 + i % 5))
                .map(|j| ((i * 5 + j * 3) % 12) as u32)
                .collect()
        })
        .collect();
    let labels: Vec<u32> = seqs.iter().map(|s| u32::from(s.contains(&0))).collect();
    let data = Batch::padded(&seqs, labels);
    let mut opt = AdamW::new(AdamWConfig::default(), c.num_params()).unwrap();
    let first = c.loss_and_grads(&data).unwrap().0;
    for _ in 0..40 {
        let (_, g) = c.loss_and_grads(&data).unwrap();
        opt.step(c.params_mut(), &g, 3e-3).unwrap();
    }
    let last = c.loss_and_grads(&data).unwrap().0;
    println!("classifier: {first:.3} -> {last:.3}");
    assert!(last < 0.3 * first, "loss {first} -> {last}");
}

#[test]
fn mixed_precision_tracks_f32_and_skips_overflow() {
    let m = gpt();
    let batch = Batch::lm(
        (0..16).map(|i| (i * 3 % 20) as u32).collect(),
        (0..16).map(|i| (i * 7 % 20) as u32).collect(),
        2,
        8,
    );
    let (l32, g32) = m.loss_and_grads(&batch).unwrap();
    let norm: f32 = g32.iter().map(|v| v * v).sum::<f32>().sqrt();
    for p in [Precision::Bf16, Precision::F16] {
        let mut scaler = LossScaler::new(ScalerConfig::default()).unwrap();
        let step = loss_and_grads_mixed(&m, &batch, &Loss::CrossEntropy, p, &mut scaler).unwrap();
        let g = step.grads.unwrap();
        let err: f32 = g
            .iter()
            .zip(&g32)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        println!(
            "{p:?}: loss {} vs {l32}, relative gradient error {:.2e}, scale {}",
            step.loss,
            err / norm,
            step.scale
        );
        assert!((step.loss - l32).abs() < 0.02 * l32);
        assert!(err / norm < 0.05, "{p:?}: gradient error {}", err / norm);
    }
    // A scale large enough to overflow f16 gradients: the step is skipped and the scale backs off.
    let mut scaler = LossScaler::new(ScalerConfig {
        init_scale: 1e30,
        ..ScalerConfig::default()
    })
    .unwrap();
    let step =
        loss_and_grads_mixed(&m, &batch, &Loss::CrossEntropy, Precision::F16, &mut scaler).unwrap();
    assert!(step.grads.is_none());
    assert!(scaler.scale() < 1e30);
}

#[test]
fn distillation_from_a_teacher_moves_the_student_towards_it() {
    let teacher_model = GptConfig {
        vocab: 20,
        context: 8,
        width: 16,
        heads: 2,
        layers: 2,
        tied: false,
    }
    .build(9)
    .unwrap();
    let mut student = gpt();
    let batch = Batch::lm((0..16).map(|i| (i * 3 % 20) as u32).collect(), vec![], 2, 8);
    let teacher = teacher_model.forward(&batch).unwrap().logits;
    let loss = Loss::Distill {
        teacher: &teacher,
        temperature: 2.0,
        alpha: 1.0,
        hard_targets: false,
    };
    let mut opt = AdamW::new(AdamWConfig::default(), student.num_params()).unwrap();
    let first = student.loss_and_grads_with(&batch, &loss).unwrap().0;
    for _ in 0..30 {
        let (_, g) = student.loss_and_grads_with(&batch, &loss).unwrap();
        opt.step(student.params_mut(), &g, 3e-3).unwrap();
    }
    let last = student.loss_and_grads_with(&batch, &loss).unwrap().0;
    println!("distillation KL: {first:.4} -> {last:.4}");
    assert!(last < 0.5 * first);
}
