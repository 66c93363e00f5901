//! Every hand-written kernel against a float64 reference on fresh random inputs at several shapes.
//! Forwards are compared with a direct f64 implementation; backwards with central finite
//! differences of that f64 forward (of the scalar `Σ dy·y` for a random `dy`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use flotilla_kernels::ops::attention::{self, Shape};
use flotilla_kernels::ops::gelu::{self, Gelu};
use flotilla_kernels::ops::matmul::{gemm_view, View};
use flotilla_kernels::ops::{fastmath, layer_norm, xent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn rng(seed: u64) -> StdRng {
    println!("seed {seed}");
    StdRng::seed_from_u64(seed)
}

fn randv(r: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(-1.0f32..1.0) * scale).collect()
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| f64::from(*x)).collect()
}

/// Max |a-b| / (|b| + floor) over the vectors.
fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (f64::from(*g) - w).abs() / (w.abs() + floor);
        assert!(e.is_finite(), "{what}[{i}]: got {g}, want {w}");
        worst = worst.max(e);
        assert!(
            e <= rel,
            "{what}[{i}]: got {g}, want {w} (rel err {e:.2e} > {rel:.0e})"
        );
    }
    println!("{what}: worst rel err {worst:.2e}");
}

/// Gradient of `f` at `x` by central differences in f64.
fn fd_grad(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = xp[i];
            xp[i] = orig + h;
            let a = f(&xp);
            xp[i] = orig - h;
            let b = f(&xp);
            xp[i] = orig;
            (a - b) / (2.0 * h)
        })
        .collect()
}

#[test]
fn gemm_matches_f64_with_transposes() {
    let mut r = rng(1);
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (64, 48, 33), (130, 70, 200)] {
        for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
            let a = randv(&mut r, m * k, 1.0);
            let b = randv(&mut r, k * n, 1.0);
            let av = if ta {
                View::transposed(0, m)
            } else {
                View::rows(0, k)
            };
            let bv = if tb {
                View::transposed(0, k)
            } else {
                View::rows(0, n)
            };
            let mut c = randv(&mut r, m * n, 1.0);
            let c0 = c.clone();
            gemm_view(
                m,
                n,
                k,
                &a,
                av,
                &b,
                bv,
                &mut c,
                View::rows(0, n),
                true,
                true,
            );
            let mut want = vec![0.0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut s = f64::from(c0[i * n + j]);
                    for p in 0..k {
                        let x = if ta { a[p * m + i] } else { a[i * k + p] };
                        let y = if tb { b[j * k + p] } else { b[p * n + j] };
                        s += f64::from(x) * f64::from(y);
                    }
                    want[i * n + j] = s;
                }
            }
            assert_close(
                &format!("gemm {m}x{n}x{k} ta={ta} tb={tb}"),
                &c,
                &want,
                1e-4,
                1.0,
            );
        }
    }
}

fn ln_ref(x: &[f64], g: &[f64], b: &[f64], eps: f64, d: usize) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for (yr, xr) in y.chunks_mut(d).zip(x.chunks(d)) {
        let mu = xr.iter().sum::<f64>() / d as f64;
        let var = xr.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / d as f64;
        for j in 0..d {
            yr[j] = (xr[j] - mu) / (var + eps).sqrt() * g[j] + b[j];
        }
    }
    y
}

#[test]
fn layer_norm_forward_and_backward_match_f64() {
    let mut r = rng(2);
    for &(rows, d) in &[(1, 4), (7, 16), (33, 64)] {
        let x = randv(&mut r, rows * d, 2.0);
        let g = randv(&mut r, d, 1.0);
        let b = randv(&mut r, d, 1.0);
        let dy = randv(&mut r, rows * d, 1.0);
        let eps = 1e-5f32;
        let mut y = vec![0.0; rows * d];
        let st = layer_norm::forward(&x, &g, &b, eps, d, &mut y);
        let (x64, g64, b64, dy64) = (to64(&x), to64(&g), to64(&b), to64(&dy));
        assert_close("ln fwd", &y, &ln_ref(&x64, &g64, &b64, 1e-5, d), 1e-5, 1.0);
        let mut dx = vec![0.0; rows * d];
        let (mut dg, mut db) = (vec![0.0; d], vec![0.0; d]);
        layer_norm::backward(&x, &g, &st, &dy, d, &mut dx, false, &mut dg, &mut db);
        let obj = |y: Vec<f64>| y.iter().zip(&dy64).map(|(a, b)| a * b).sum::<f64>();
        let want_dx = fd_grad(&x64, &|xx| obj(ln_ref(xx, &g64, &b64, 1e-5, d)));
        let want_dg = fd_grad(&g64, &|gg| obj(ln_ref(&x64, gg, &b64, 1e-5, d)));
        let want_db = fd_grad(&b64, &|bb| obj(ln_ref(&x64, &g64, bb, 1e-5, d)));
        assert_close("ln dx", &dx, &want_dx, 1e-3, 1e-2);
        assert_close("ln dg", &dg, &want_dg, 1e-3, 1e-2);
        assert_close("ln db", &db, &want_db, 1e-3, 1e-2);
    }
}

/// erfc in f64 for z >= 0: Taylor series of erf below 3 (cancellation stays under 1e-12), the
/// continued fraction above (where the series would cancel badly).
fn erfc64(z: f64) -> f64 {
    if z < 3.0 {
        let mut term = z;
        let mut sum = z;
        for n in 1..200 {
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        return 1.0 - sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    let mut k = z;
    for n in (1..80).rev() {
        k = z + (n as f64 / 2.0) / k;
    }
    (-z * z).exp() / (std::f64::consts::PI.sqrt() * k)
}

/// `1 + erf(x)` without cancellation.
fn one_plus_erf64(x: f64) -> f64 {
    if x < 0.0 {
        erfc64(-x)
    } else {
        2.0 - erfc64(x)
    }
}

fn gelu64(kind: Gelu, x: f64) -> f64 {
    match kind {
        Gelu::Erf => 0.5 * x * one_plus_erf64(x / 2f64.sqrt()),
        Gelu::Tanh => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
    }
}

fn gelu_grad64(kind: Gelu, x: f64) -> f64 {
    match kind {
        Gelu::Erf => {
            0.5 * one_plus_erf64(x / 2f64.sqrt())
                + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
        }
        Gelu::Tanh => (gelu64(kind, x + 1e-6) - gelu64(kind, x - 1e-6)) / 2e-6,
    }
}

#[test]
fn gelu_forward_and_backward_match_f64() {
    let mut r = rng(3);
    for kind in [Gelu::Erf, Gelu::Tanh] {
        for &n in &[1usize, 100, 5000] {
            let x = randv(&mut r, n, 6.0);
            let mut y = vec![0.0; n];
            gelu::forward(kind, &x, &mut y);
            let want: Vec<f64> = x.iter().map(|v| gelu64(kind, f64::from(*v))).collect();
            assert_close(&format!("gelu {kind:?} fwd"), &y, &want, 2e-6, 1e-3);
            let mut d = vec![1.0f32; n];
            gelu::backward_in_place(kind, &x, &mut d);
            let want: Vec<f64> = x.iter().map(|v| gelu_grad64(kind, f64::from(*v))).collect();
            assert_close(&format!("gelu {kind:?} grad"), &d, &want, 1e-5, 1e-2);
            let (mut y2, mut d2) = (vec![0.0; n], vec![0.0; n]);
            gelu::forward_with_grad(kind, &x, &mut y2, &mut d2);
            let want_y: Vec<f64> = x.iter().map(|v| gelu64(kind, f64::from(*v))).collect();
            assert_close(
                &format!("gelu {kind:?} fused value"),
                &y2,
                &want_y,
                2e-6,
                1e-3,
            );
            assert_close(&format!("gelu {kind:?} fused grad"), &d2, &want, 1e-5, 1e-2);
            // The backward from the saved derivative: dy · gelu'(x) for a random dy.
            let dy = randv(&mut r, n, 2.0);
            let mut dx = dy.clone();
            gelu::backward_saved(&d2, &mut dx);
            let want_dx: Vec<f64> = x
                .iter()
                .zip(&dy)
                .map(|(v, g)| f64::from(*g) * gelu_grad64(kind, f64::from(*v)))
                .collect();
            assert_close(
                &format!("gelu {kind:?} saved bwd"),
                &dx,
                &want_dx,
                1e-5,
                1e-2,
            );
        }
    }
}

fn attn_ref(s: Shape, qkv: &[f64], lens: &[usize]) -> Vec<f64> {
    let (t, d, h) = (s.seq, s.width, s.heads);
    let dh = d / h;
    let mut out = vec![0.0; s.batch * t * d];
    for b in 0..s.batch {
        for hh in 0..h {
            for i in 0..t {
                let visible = if s.causal {
                    lens[b].min(i + 1)
                } else {
                    lens[b]
                };
                let at = |row: usize, col: usize| qkv[(b * t + row) * 3 * d + col];
                let scores: Vec<f64> = (0..visible)
                    .map(|j| {
                        (0..dh)
                            .map(|p| at(i, hh * dh + p) * at(j, d + hh * dh + p))
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|v| (v - mx).exp()).sum();
                for (j, sc) in scores.iter().enumerate() {
                    let p = (sc - mx).exp() / z;
                    for q in 0..dh {
                        out[(b * t + i) * d + hh * dh + q] += p * at(j, 2 * d + hh * dh + q);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn attention_forward_and_backward_match_f64() {
    let mut r = rng(4);
    for &(batch, seq, width, heads, causal) in &[
        (1, 1, 4, 1, false),
        (2, 5, 8, 2, true),
        (2, 7, 12, 3, false),
        (3, 9, 16, 4, true),
        // Rows longer than the 16-lane reductions of the softmax and its backward.
        (2, 21, 8, 2, false),
    ] {
        let s = Shape {
            batch,
            seq,
            width,
            heads,
            causal,
        };
        let lens: Vec<usize> = (0..batch)
            .map(|b| if b == 0 { seq } else { r.gen_range(1..=seq) })
            .collect();
        let n = batch * seq;
        let qkv = randv(&mut r, n * 3 * width, 1.5);
        let mut out = vec![0.0; n * width];
        let mut probs = vec![0.0; batch * heads * seq * seq];
        attention::forward(s, &qkv, &lens, &mut out, &mut probs);
        let q64 = to64(&qkv);
        assert_close("attn fwd", &out, &attn_ref(s, &q64, &lens), 1e-5, 1.0);
        let dout = randv(&mut r, n * width, 1.0);
        let mut dqkv = vec![0.0; n * 3 * width];
        attention::backward(s, &qkv, &probs, &dout, &mut dqkv);
        let d64 = to64(&dout);
        let want = fd_grad(&q64, &|x| {
            attn_ref(s, x, &lens)
                .iter()
                .zip(&d64)
                .map(|(a, b)| a * b)
                .sum()
        });
        assert_close(
            &format!("attn dqkv {batch}x{seq}x{width}/{heads} causal={causal}"),
            &dqkv,
            &want,
            1e-3,
            1e-2,
        );
    }
}

fn lse(row: &[f64]) -> f64 {
    let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln()
}

fn ce_ref(logits: &[f64], targets: &[u32], c: usize) -> f64 {
    let mut s = 0.0;
    let mut k = 0;
    for (row, &t) in logits.chunks(c).zip(targets) {
        if t != xent::IGNORE {
            s += lse(row) - row[t as usize];
            k += 1;
        }
    }
    s / k as f64
}

#[test]
fn cross_entropy_matches_f64() {
    let mut r = rng(5);
    for &(rows, c) in &[(1, 2), (9, 65), (40, 300)] {
        let logits = randv(&mut r, rows * c, 8.0);
        let targets: Vec<u32> = (0..rows)
            .map(|i| {
                if i % 4 == 3 {
                    xent::IGNORE
                } else {
                    r.gen_range(0..c as u32)
                }
            })
            .collect();
        let mut g = logits.clone();
        let (loss, _) = xent::cross_entropy(&mut g, &targets, c);
        let l64 = to64(&logits);
        assert_close("ce loss", &[loss], &[ce_ref(&l64, &targets, c)], 1e-5, 1e-3);
        assert_close(
            "ce grad",
            &g,
            &fd_grad(&l64, &|x| ce_ref(x, &targets, c)),
            1e-4,
            1e-3,
        );
    }
}

fn distill_ref(s: &[f64], t: &[f64], y: &[u32], c: usize, tau: f64, alpha: f64) -> f64 {
    let rows = s.len() / c;
    let mut kl = 0.0;
    for (sr, tr) in s.chunks(c).zip(t.chunks(c)) {
        let ss: Vec<f64> = sr.iter().map(|v| v / tau).collect();
        let ts: Vec<f64> = tr.iter().map(|v| v / tau).collect();
        let (ls, lt) = (lse(&ss), lse(&ts));
        for j in 0..c {
            let pt = (ts[j] - lt).exp();
            kl += pt * ((ts[j] - lt) - (ss[j] - ls));
        }
    }
    alpha * tau * tau * kl / rows as f64 + (1.0 - alpha) * ce_ref(s, y, c)
}

#[test]
fn distillation_kl_matches_f64() {
    let mut r = rng(6);
    for &(rows, c, tau, alpha) in &[
        (1, 3, 1.0f32, 1.0f32),
        (8, 20, 2.0, 0.5),
        (16, 77, 4.0, 0.9),
    ] {
        let s = randv(&mut r, rows * c, 5.0);
        let t = randv(&mut r, rows * c, 5.0);
        let y: Vec<u32> = (0..rows).map(|_| r.gen_range(0..c as u32)).collect();
        let mut g = s.clone();
        let loss = xent::distill(&mut g, &t, Some(&y), c, tau, alpha);
        let (s64, t64) = (to64(&s), to64(&t));
        let f = |x: &[f64]| distill_ref(x, &t64, &y, c, f64::from(tau), f64::from(alpha));
        assert_close("distill loss", &[loss], &[f(&s64)], 1e-4, 1e-3);
        assert_close("distill grad", &g, &fd_grad(&s64, &f), 1e-4, 1e-3);
    }
}

#[test]
fn fast_exp_matches_f64() {
    // Across the range the kernels use (softmax and GELU arguments are ≤ 0 or moderate), plus
    // random points; relative error within a few f32 ulps.
    let mut r = rng(7);
    let mut xs: Vec<f32> = (-870..=880).map(|i| i as f32 * 0.1).collect();
    xs.extend((0..10_000).map(|_| r.gen_range(-87.0f32..88.0)));
    let got: Vec<f32> = xs.iter().map(|x| fastmath::exp(*x)).collect();
    let want: Vec<f64> = xs.iter().map(|x| f64::from(*x).exp()).collect();
    assert_close("exp", &got, &want, 5e-7, 0.0);
}

#[test]
fn lane_reductions_match_f64() {
    // Lengths around the 16-lane blocks, so both the vector part and the remainder are used.
    let mut r = rng(11);
    for &n in &[0usize, 1, 5, 15, 16, 17, 63, 64, 100, 1000] {
        let a = randv(&mut r, n, 3.0);
        let b = randv(&mut r, n, 3.0);
        let (a64, b64) = (to64(&a), to64(&b));
        let s: f64 = a64.iter().sum();
        let abs: f64 = a64.iter().map(|x| x.abs()).sum();
        // A sum's rounding error scales with Σ|x|, not with the (possibly cancelling) result.
        assert_close(
            &format!("sum {n}"),
            &[fastmath::sum(&a)],
            &[s],
            1e-6,
            abs + 1e-30,
        );
        let d: f64 = a64.iter().zip(&b64).map(|(x, y)| x * y).sum();
        let dabs: f64 = a64.iter().zip(&b64).map(|(x, y)| (x * y).abs()).sum();
        assert_close(
            &format!("dot {n}"),
            &[fastmath::dot(&a, &b)],
            &[d],
            1e-6,
            dabs + 1e-30,
        );
        let m = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(fastmath::max(&a), m, "max {n}");
    }
}

#[test]
fn col_sum_matches_f64() {
    let mut r = rng(12);
    for &(rows, cols) in &[(1usize, 1usize), (3, 17), (64, 128), (33, 40)] {
        let m = randv(&mut r, rows * cols, 2.0);
        let start = randv(&mut r, cols, 1.0);
        let mut out = start.clone();
        flotilla_kernels::ops::matmul::col_sum_into(&m, rows, cols, &mut out);
        let want: Vec<f64> = (0..cols)
            .map(|j| {
                f64::from(start[j]) + (0..rows).map(|i| f64::from(m[i * cols + j])).sum::<f64>()
            })
            .collect();
        assert_close(&format!("col sum {rows}x{cols}"), &out, &want, 1e-5, 1.0);
    }
}
