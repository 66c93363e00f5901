//! Layer normalisation over the last axis: `y = (x - mean) / sqrt(var + eps) * g + b`.
//!
//! The forward keeps each row's mean and reciprocal standard deviation so the backward needs only
//! the input, not the normalised output.

use rayon::prelude::*;

use super::chunk_rows;

/// Per-row statistics saved by the forward for the backward.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Row means.
    pub mean: Vec<f32>,
    /// Row reciprocal standard deviations.
    pub rstd: Vec<f32>,
}

/// Normalises each `d`-wide row of `x` into `y`; returns the statistics for [`backward`].
pub fn forward(x: &[f32], g: &[f32], b: &[f32], eps: f32, d: usize, y: &mut [f32]) -> Stats {
    let rows = x.len() / d;
    let mut mean = vec![0.0f32; rows];
    let mut rstd = vec![0.0f32; rows];
    let chunk = chunk_rows(rows, 8);
    y[..rows * d]
        .par_chunks_mut(chunk * d)
        .zip(x.par_chunks(chunk * d))
        .zip(mean.par_chunks_mut(chunk).zip(rstd.par_chunks_mut(chunk)))
        .for_each(|((yc, xc), (mc, rc))| {
            for (r, (yr, xr)) in yc.chunks_mut(d).zip(xc.chunks(d)).enumerate() {
                let mu = xr.iter().sum::<f32>() / d as f32;
                let var = xr.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / d as f32;
                let rs = 1.0 / (var + eps).sqrt();
                for (((o, xv), gv), bv) in yr.iter_mut().zip(xr).zip(g).zip(b) {
                    *o = (xv - mu) * rs * gv + bv;
                }
                mc[r] = mu;
                rc[r] = rs;
            }
        });
    Stats { mean, rstd }
}

/// Backward: writes `dx` (or adds to it when `accumulate`), adds to `dg` and `db`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    g: &[f32],
    stats: &Stats,
    dy: &[f32],
    d: usize,
    dx: &mut [f32],
    accumulate: bool,
    dg: &mut [f32],
    db: &mut [f32],
) {
    let rows = x.len() / d;
    let chunk = chunk_rows(rows, 8);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx[..rows * d]
        .par_chunks_mut(chunk * d)
        .zip(x.par_chunks(chunk * d))
        .zip(dy.par_chunks(chunk * d))
        .zip(
            stats
                .mean
                .par_chunks(chunk)
                .zip(stats.rstd.par_chunks(chunk)),
        )
        .map(|(((dxc, xc), dyc), (mc, rc))| {
            let mut pg = vec![0.0f32; d];
            let mut pb = vec![0.0f32; d];
            let mut xhat = vec![0.0f32; d];
            for (r, ((dxr, xr), dyr)) in dxc
                .chunks_mut(d)
                .zip(xc.chunks(d))
                .zip(dyc.chunks(d))
                .enumerate()
            {
                let (mu, rs) = (mc[r], rc[r]);
                let mut s1 = 0.0f32;
                let mut s2 = 0.0f32;
                for j in 0..d {
                    let xh = (xr[j] - mu) * rs;
                    xhat[j] = xh;
                    let dxh = dyr[j] * g[j];
                    s1 += dxh;
                    s2 += dxh * xh;
                    pg[j] += dyr[j] * xh;
                    pb[j] += dyr[j];
                }
                let (m1, m2) = (s1 / d as f32, s2 / d as f32);
                for j in 0..d {
                    let v = rs * (dyr[j] * g[j] - m1 - xhat[j] * m2);
                    if accumulate {
                        dxr[j] += v;
                    } else {
                        dxr[j] = v;
                    }
                }
            }
            (pg, pb)
        })
        .collect();
    for (pg, pb) in partials {
        for j in 0..d {
            dg[j] += pg[j];
            db[j] += pb[j];
        }
    }
}
