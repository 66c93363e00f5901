//! The shared numerics' optimizers (`flotilla-numerics`) against float64 reference
//! implementations written here from PyTorch's documented update rules, on random inputs at
//! several sizes, plus hand-computed PyTorch values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use flotilla_numerics::optim::{
    global_norm, precision, AdamW, AdamWConfig, ClipConfig, GradClipper, LossScaler, Optimizer,
    OptimizerConfig, OptimizerState, ScalerConfig, ScalerStep, Schedule, Sgd, SgdConfig,
};
use flotilla_numerics::Error;
use rand::rngs::StdRng;
use rand::Rng;

const SIZES: [usize; 5] = [1, 7, 64, 1000, 4099];

fn seeded(name: &str) -> StdRng {
    crate::common::seeded(name)
}

fn randn(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.gen::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

/// torch.optim.AdamW (amsgrad=False), in f64.
struct RefAdamW {
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    t: i32,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl RefAdamW {
    fn step(&mut self, p: &mut [f64], g: &[f32], lr: f64) {
        self.t += 1;
        let bc1 = 1.0 - self.b1.powi(self.t);
        let bc2 = 1.0 - self.b2.powi(self.t);
        for i in 0..p.len() {
            let gi = f64::from(g[i]);
            p[i] *= 1.0 - lr * self.wd;
            self.m[i] = self.b1 * self.m[i] + (1.0 - self.b1) * gi;
            self.v[i] = self.b2 * self.v[i] + (1.0 - self.b2) * gi * gi;
            let denom = (self.v[i] / bc2).sqrt() + self.eps;
            p[i] -= lr * (self.m[i] / bc1) / denom;
        }
    }
}

/// torch.optim.SGD, in f64.
fn ref_sgd_step(p: &mut [f64], buf: &mut Option<Vec<f64>>, g: &[f32], lr: f64, c: &SgdConfig) {
    let (mu, damp, wd) = (
        f64::from(c.momentum),
        f64::from(c.dampening),
        f64::from(c.weight_decay),
    );
    let d: Vec<f64> = g
        .iter()
        .zip(p.iter())
        .map(|(&g, &p)| f64::from(g) + wd * p)
        .collect();
    let upd = if mu == 0.0 {
        d
    } else {
        let b = match buf.take() {
            None => d.clone(),
            Some(b) => b
                .iter()
                .zip(&d)
                .map(|(b, d)| mu * b + (1.0 - damp) * d)
                .collect(),
        };
        let u = if c.nesterov {
            d.iter().zip(&b).map(|(d, b)| d + mu * b).collect()
        } else {
            b.clone()
        };
        *buf = Some(b);
        u
    };
    for (p, u) in p.iter_mut().zip(upd) {
        *p -= lr * u;
    }
}

fn assert_close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (err {err})"
        );
    }
}

#[test]
fn adamw_matches_f64_reference_on_random_inputs() {
    let mut rng = seeded("adamw");
    for &n in &SIZES {
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(cfg, n).unwrap();
        let mut p = randn(&mut rng, n, 1.0);
        let mut pr: Vec<f64> = p.iter().map(|&x| f64::from(x)).collect();
        let mut r = RefAdamW {
            b1: 0.9,
            b2: 0.98,
            eps: 1e-6,
            wd: 0.1,
            t: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        };
        let sched = Schedule::warmup_cosine(3e-3, 3, 20, 1e-4).unwrap();
        for step in 0..20u64 {
            let g = randn(&mut rng, n, 0.5);
            let lr = sched.lr_at(step);
            opt.step(&mut p, &g, lr).unwrap();
            r.step(&mut pr, &g, f64::from(lr));
        }
        assert_eq!(opt.steps_taken(), 20);
        assert_close(&p, &pr, 1e-5, 1e-6, &format!("adamw n={n}"));
    }
}

#[test]
fn adamw_first_step_matches_pytorch_by_hand() {
    // torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01) with p = 1,
    // grad 0.5: p ← 1·(1 − 0.001) = 0.999; m̂ = 0.5, v̂ = 0.25; p ← 0.999 − 0.1·0.5/(0.5 + 1e-8).
    let mut opt = AdamW::new(AdamWConfig::default(), 1).unwrap();
    let mut p = [1.0f32];
    opt.step(&mut p, &[0.5], 0.1).unwrap();
    let want = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8);
    assert!((f64::from(p[0]) - want).abs() < 1e-6, "{} vs {want}", p[0]);
    // Second step with grad -0.25 (m = 0.025, v = 0.0003121875...).
    opt.step(&mut p, &[-0.25], 0.1).unwrap();
    let (m, v) = (0.9 * 0.05 + 0.1 * -0.25, 0.999 * 0.00025 + 0.001 * 0.0625);
    let (bc1, bc2) = (1.0 - 0.9f64.powi(2), 1.0 - 0.999f64.powi(2));
    let want2 = want * (1.0 - 0.001) - 0.1 / bc1 * m / ((v / bc2).sqrt() + 1e-8);
    assert!(
        (f64::from(p[0]) - want2).abs() < 1e-6,
        "{} vs {want2}",
        p[0]
    );
}

#[test]
fn adamw_weight_decay_is_decoupled() {
    // With zero gradient, Adam's update is 0/(0+eps) = 0, so only the decay acts: p·(1 − lr·λ).
    // Coupled (L2) decay would instead push p by a full normalised step of size lr.
    let cfg = AdamWConfig {
        weight_decay: 0.5,
        ..Default::default()
    };
    let mut opt = AdamW::new(cfg, 3).unwrap();
    let mut p = [2.0f32, -4.0, 0.0];
    opt.step(&mut p, &[0.0; 3], 0.1).unwrap();
    assert_eq!(p, [2.0 * 0.95, -4.0 * 0.95, 0.0]);
}

#[test]
fn sgd_matches_f64_reference_for_each_variant() {
    let mut rng = seeded("sgd");
    let variants = [
        SgdConfig::default(),
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
        SgdConfig {
            momentum: 0.9,
            dampening: 0.1,
            weight_decay: 1e-3,
            nesterov: false,
        },
        SgdConfig {
            momentum: 0.8,
            dampening: 0.0,
            weight_decay: 1e-2,
            nesterov: true,
        },
    ];
    for c in variants {
        for &n in &SIZES {
            let mut opt = Sgd::new(c, n).unwrap();
            let mut p = randn(&mut rng, n, 1.0);
            let mut pr: Vec<f64> = p.iter().map(|&x| f64::from(x)).collect();
            let mut buf = None;
            for step in 0..15u64 {
                let g = randn(&mut rng, n, 1.0);
                let lr = 0.05 / (1.0 + step as f32);
                opt.step(&mut p, &g, lr).unwrap();
                ref_sgd_step(&mut pr, &mut buf, &g, f64::from(lr), &c);
            }
            assert_close(&p, &pr, 1e-5, 1e-6, &format!("sgd {c:?} n={n}"));
        }
    }
}

#[test]
fn optimizer_state_round_trips_and_resumes_identically() {
    let mut rng = seeded("resume");
    let n = 257;
    let mut a = AdamW::new(AdamWConfig::default(), n).unwrap();
    let mut p = randn(&mut rng, n, 1.0);
    for _ in 0..5 {
        a.step(&mut p, &randn(&mut rng, n, 1.0), 1e-3).unwrap();
    }
    let json = serde_json::to_string(&a.state()).unwrap();
    let state: OptimizerState = serde_json::from_str(&json).unwrap();
    let mut b = AdamW::from_state(AdamWConfig::default(), state).unwrap();
    let mut q = p.clone();
    let g = randn(&mut rng, n, 1.0);
    a.step(&mut p, &g, 1e-3).unwrap();
    b.step(&mut q, &g, 1e-3).unwrap();
    assert_eq!(p, q);
    assert_eq!(b.steps_taken(), 6);

    let mut s = Sgd::new(
        SgdConfig {
            momentum: 0.9,
            ..Default::default()
        },
        n,
    )
    .unwrap();
    s.step(&mut p, &g, 0.1).unwrap();
    let restored = Sgd::from_state(*s.config(), n, s.state()).unwrap();
    assert_eq!(restored.state(), s.state());
    assert!(Sgd::from_state(*s.config(), n + 1, s.state()).is_err());
    assert!(AdamW::from_state(AdamWConfig::default(), s.state()).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let mut opt = AdamW::new(AdamWConfig::default(), 4).unwrap();
    let mut p = [0.0f32; 4];
    assert!(matches!(
        opt.step(&mut p, &[0.0; 3], 0.1),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        opt.step(&mut p[..2], &[0.0; 2], 0.1),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(opt.step(&mut p, &[0.0; 4], f32::NAN).is_err());
    assert!(opt.step(&mut p, &[0.0; 4], -1.0).is_err());
    assert_eq!(
        opt.steps_taken(),
        0,
        "failed steps must not advance the counter"
    );
    assert!(AdamW::new(
        AdamWConfig {
            beta1: 1.0,
            ..Default::default()
        },
        1
    )
    .is_err());
    assert!(Sgd::new(
        SgdConfig {
            nesterov: true,
            ..Default::default()
        },
        1
    )
    .is_err());
    assert!(Schedule::warmup_cosine(1e-3, 10, 5, 0.0).is_err());
    assert!(Schedule::warmup_cosine(1e-3, 1, 5, 1e-2).is_err());
    assert!(GradClipper::new(ClipConfig {
        window: 0,
        ..Default::default()
    })
    .is_err());
}

#[test]
fn schedules_warm_up_then_decay_to_the_floor() {
    let s = Schedule::warmup_cosine(1.0, 4, 14, 0.1).unwrap();
    let lrs: Vec<f32> = (0..20).map(|t| s.lr_at(t)).collect();
    assert_eq!(&lrs[..4], &[0.25, 0.5, 0.75, 1.0]);
    assert_eq!(lrs[4], 1.0);
    // Halfway through decay the cosine is at the midpoint of peak and floor.
    assert!((lrs[9] - 0.55).abs() < 1e-6, "{}", lrs[9]);
    assert!(lrs[4..=14].windows(2).all(|w| w[1] < w[0]));
    assert!(lrs[14..].iter().all(|&x| (x - 0.1).abs() < 1e-7));
    let l = Schedule::warmup_linear(2.0, 0, 10, 0.0).unwrap();
    assert_eq!(l.lr_at(0), 2.0);
    assert!((l.lr_at(5) - 1.0).abs() < 1e-6);
    assert_eq!(l.lr_at(10), 0.0);
    assert_eq!(l.lr_at(1000), 0.0);
}

#[test]
fn clipping_uses_global_norm_and_adapts() {
    let mut g = vec![3.0f32, 4.0];
    assert_eq!(global_norm(&g), 5.0);
    let mut fixed = GradClipper::new(ClipConfig::fixed(1.0)).unwrap();
    let r = fixed.clip(&mut g).unwrap();
    assert!(r.clipped && r.norm == 5.0);
    assert!((global_norm(&g) - 1.0).abs() < 1e-5);

    // Adaptive: after a history of norms near 1, the threshold settles at factor × percentile
    // (2 × 1.0 here), well under the 100 cap, so a spike of 50 is clipped to 2.
    let cfg = ClipConfig {
        factor: 2.0,
        percentile: 0.5,
        window: 10,
        min_history: 5,
        max_norm: Some(100.0),
    };
    let mut c = GradClipper::new(cfg).unwrap();
    assert_eq!(c.threshold(), Some(100.0));
    for _ in 0..10 {
        let mut v = vec![0.6f32, 0.8];
        assert!(!c.clip(&mut v).unwrap().clipped);
    }
    assert!((c.threshold().unwrap() - 2.0).abs() < 1e-6);
    let mut spike = vec![30.0f32, 40.0];
    let r = c.clip(&mut spike).unwrap();
    assert!(r.clipped);
    assert!((global_norm(&spike) - 2.0).abs() < 1e-4);
    // Non-finite norms are reported, untouched and not remembered.
    let mut bad = vec![f32::INFINITY, 1.0];
    let r = c.clip(&mut bad).unwrap();
    assert!(r.non_finite && !r.clipped && bad[1] == 1.0);
    assert!(c.clip(&mut []).is_err());
}

#[test]
fn loss_scaler_skips_overflow_backs_off_and_grows() {
    let cfg = ScalerConfig {
        init_scale: 1024.0,
        growth_interval: 3,
        ..Default::default()
    };
    let mut s = LossScaler::new(cfg).unwrap();
    let mut g = vec![1024.0f32, -512.0];
    assert_eq!(s.unscale_and_update(&mut g), ScalerStep::Apply);
    assert_eq!(g, [1.0, -0.5]);
    let mut bad = vec![f32::NAN, 1.0];
    assert_eq!(s.unscale_and_update(&mut bad), ScalerStep::Skip);
    assert_eq!(s.scale(), 512.0);
    assert_eq!(s.skipped_steps(), 1);
    for _ in 0..2 {
        assert_eq!(s.unscale_and_update(&mut [1.0; 2]), ScalerStep::Apply);
        assert_eq!(
            s.scale(),
            512.0,
            "the overflow must reset the clean-step count"
        );
    }
    assert_eq!(s.unscale_and_update(&mut [1.0; 2]), ScalerStep::Apply);
    assert_eq!(s.scale(), 1024.0);
    let mut inf = vec![f32::INFINITY];
    for _ in 0..20 {
        s.unscale_and_update(&mut inf);
    }
    assert_eq!(s.scale(), 1.0, "scale is floored at min_scale");
}

#[test]
fn half_precision_round_trips() {
    let mut rng = seeded("half");
    let x = randn(&mut rng, 1001, 100.0);
    let h = precision::from_f16(&precision::to_f16(&x));
    let b = precision::from_bf16(&precision::to_bf16(&x));
    for i in 0..x.len() {
        // f16 has an 11-bit significand, bf16 an 8-bit one: relative errors ≤ 2⁻¹¹ and 2⁻⁸.
        assert!(
            (h[i] - x[i]).abs() <= x[i].abs() * 4.9e-4 + 1e-7,
            "{} {}",
            h[i],
            x[i]
        );
        assert!(
            (b[i] - x[i]).abs() <= x[i].abs() * 3.91e-3 + 1e-30,
            "{} {}",
            b[i],
            x[i]
        );
    }
    let mut r = x.clone();
    precision::round_through_f16(&mut r);
    assert_eq!(r, h);
    assert_eq!(precision::to_f16(&[1e6])[0].to_f32(), f32::INFINITY);
    let mut dst = vec![half::f16::ZERO; 3];
    assert!(precision::to_f16_into(&x[..4], &mut dst).is_err());
}

#[test]
fn optimizer_config_builds_and_restores_either_kind() {
    let mut rng = seeded("config");
    let n = 33;
    let sgd_cfg = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        ..Default::default()
    };
    for cfg in [OptimizerConfig::default(), OptimizerConfig::Sgd(sgd_cfg)] {
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<OptimizerConfig>(&json).unwrap(), cfg);
        let mut a = cfg.build(n).unwrap();
        let mut p = randn(&mut rng, n, 1.0);
        a.step(&mut p, &randn(&mut rng, n, 1.0), 1e-2).unwrap();
        let mut b = cfg.restore(n, a.state()).unwrap();
        let g = randn(&mut rng, n, 1.0);
        let mut q = p.clone();
        a.step(&mut p, &g, 1e-2).unwrap();
        b.step(&mut q, &g, 1e-2).unwrap();
        assert_eq!(p, q, "{json}");
        assert!(cfg.restore(n + 1, a.state()).is_err());
    }
    let adam_state = OptimizerConfig::default().build(n).unwrap().state();
    assert!(OptimizerConfig::Sgd(sgd_cfg)
        .restore(n, adam_state)
        .is_err());
    assert!(serde_json::from_str::<OptimizerConfig>(r#"{"kind":"adamw","beta1":0.8}"#).is_ok());
    assert!(serde_json::from_str::<OptimizerConfig>(r#"{"kind":"lion"}"#).is_err());
}

#[test]
fn clipper_and_scaler_state_survive_serialisation() {
    let cfg = ClipConfig {
        factor: 1.5,
        percentile: 0.5,
        window: 8,
        min_history: 3,
        max_norm: None,
    };
    let mut c = GradClipper::new(cfg).unwrap();
    for norm in [1.0f32, 2.0, 3.0, 4.0] {
        c.clip(&mut [norm]).unwrap();
    }
    let back: GradClipper = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.threshold(), c.threshold());
    assert!(
        (c.threshold().unwrap() - 4.5).abs() < 1e-9,
        "median of 1..4 (nearest rank 3) × 1.5"
    );

    let mut s = LossScaler::new(ScalerConfig {
        growth_interval: 2,
        ..Default::default()
    })
    .unwrap();
    s.unscale_and_update(&mut [1.0]);
    let mut back: LossScaler = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    // One more clean step grows both: the clean-step count was carried over.
    s.unscale_and_update(&mut [1.0]);
    back.unscale_and_update(&mut [1.0]);
    assert_eq!(back, s);
    assert_eq!(s.scale(), 131072.0);
}

#[test]
fn adamw_on_a_large_shard_matches_the_reference() {
    // Past the size at which the update runs on the rayon pool.
    let mut rng = seeded("adamw large");
    let n = (1 << 20) + 3;
    let cfg = AdamWConfig::default();
    let mut opt = AdamW::new(cfg, n).unwrap();
    let mut p = randn(&mut rng, n, 1.0);
    let mut pr: Vec<f64> = p.iter().map(|&x| f64::from(x)).collect();
    let mut r = RefAdamW {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        wd: 0.01,
        t: 0,
        m: vec![0.0; n],
        v: vec![0.0; n],
    };
    for _ in 0..3 {
        let g = randn(&mut rng, n, 0.5);
        opt.step(&mut p, &g, 1e-3).unwrap();
        r.step(&mut pr, &g, 1e-3);
    }
    assert_close(&p, &pr, 1e-5, 1e-6, "adamw n=2^20+3");
}
