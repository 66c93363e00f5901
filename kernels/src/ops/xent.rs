//! Fused softmax + cross-entropy and distillation KL, each producing the loss and overwriting the
//! logits with their gradient in one pass, so no probability matrix is ever stored.

use rayon::prelude::*;

use super::chunk_rows;
use super::fastmath::exp;

/// Target value that marks a row as excluded from the loss (padding).
pub const IGNORE: u32 = u32::MAX;

/// Mean cross-entropy over rows whose target is not [`IGNORE`]; `logits` (`[rows, classes]`)
/// becomes `d loss / d logits` (zero for ignored rows). Returns the loss and the counted rows.
pub fn cross_entropy(logits: &mut [f32], targets: &[u32], classes: usize) -> (f32, usize) {
    let counted = targets.iter().filter(|t| **t != IGNORE).count();
    if counted == 0 {
        logits.iter_mut().for_each(|v| *v = 0.0);
        return (0.0, 0);
    }
    let inv = 1.0 / counted as f32;
    let chunk = chunk_rows(targets.len(), 4);
    let total: f64 = logits[..targets.len() * classes]
        .par_chunks_mut(chunk * classes)
        .zip(targets.par_chunks(chunk))
        .map(|(lc, tc)| {
            let mut sum = 0.0f64;
            for (row, &tgt) in lc.chunks_mut(classes).zip(tc) {
                if tgt == IGNORE {
                    row.iter_mut().for_each(|v| *v = 0.0);
                    continue;
                }
                let tgt = tgt as usize;
                let logit = row[tgt];
                // −log p_tgt = lse − logit, exact even where p_tgt underflows.
                let lse = softmax_in_place(row);
                sum += f64::from(lse - logit);
                row[tgt] -= 1.0;
                row.iter_mut().for_each(|v| *v *= inv);
            }
            sum
        })
        .sum();
    ((total / counted as f64) as f32, counted)
}

/// Replaces `row` by its softmax; returns log-sum-exp of the original.
pub fn softmax_in_place(row: &mut [f32]) -> f32 {
    let mx = row.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = exp(*v - mx);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
    mx + sum.ln()
}

/// Distillation loss: `alpha * T² * KL(softmax(teacher/T) ‖ softmax(student/T))`, averaged over
/// rows, plus `(1 - alpha) * cross_entropy(student, targets)` when `targets` is given.
/// `student` becomes the gradient of that loss. Returns the loss.
pub fn distill(
    student: &mut [f32],
    teacher: &[f32],
    targets: Option<&[u32]>,
    classes: usize,
    temperature: f32,
    alpha: f32,
) -> f32 {
    let rows = student.len() / classes;
    let tau = temperature;
    let mut hard = vec![0.0f32; student.len()];
    let mut hard_loss = 0.0f32;
    if let Some(t) = targets {
        hard.copy_from_slice(student);
        hard_loss = cross_entropy(&mut hard, t, classes).0;
    }
    let inv_rows = 1.0 / rows.max(1) as f32;
    let chunk = chunk_rows(rows, 4);
    let kl: f64 = student
        .par_chunks_mut(chunk * classes)
        .zip(teacher.par_chunks(chunk * classes))
        .map(|(sc, tc)| {
            let mut sum = 0.0f64;
            let mut pt = vec![0.0f32; classes];
            let mut scaled = vec![0.0f32; classes];
            for (srow, trow) in sc.chunks_mut(classes).zip(tc.chunks(classes)) {
                for (p, t) in pt.iter_mut().zip(trow) {
                    *p = t / tau;
                }
                let lse_t = softmax_in_place(&mut pt);
                srow.iter_mut().for_each(|v| *v /= tau);
                scaled.copy_from_slice(srow);
                let lse_s = softmax_in_place(srow);
                for (j, &p) in pt.iter().enumerate() {
                    if p > 0.0 {
                        // log pt − log ps from the log-sum-exps: exact where probabilities underflow.
                        let log_pt = trow[j] / tau - lse_t;
                        let log_ps = scaled[j] - lse_s;
                        sum += f64::from(p * (log_pt - log_ps));
                    }
                }
                for (s, p) in srow.iter_mut().zip(&pt) {
                    // d/ds of T²·KL(pt ‖ softmax(s/T)) = T·(ps − pt).
                    *s = alpha * tau * (*s - p) * inv_rows;
                }
            }
            sum
        })
        .sum();
    if targets.is_some() {
        for (s, h) in student.iter_mut().zip(&hard) {
            *s += (1.0 - alpha) * h;
        }
    }
    alpha * tau * tau * (kl as f32) * inv_rows + (1.0 - alpha) * hard_loss
}
