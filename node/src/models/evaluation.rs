//! How well a classifier's parameters do on labelled records: accuracy and macro-F1, on the
//! kernels' cache-free forward.

use flotilla_actors::data::record::Record;

use super::gradient::ClassifierSource;

/// Accuracy and macro-F1 of `params` on `records`; `None` without records.
pub fn evaluate(
    src: &ClassifierSource,
    classes: usize,
    params: &[f32],
    records: &[Record],
) -> Result<Option<(f64, f64)>, String> {
    if records.is_empty() {
        return Ok(None);
    }
    let err = |e: flotilla_kernels::Error| e.to_string();
    let model =
        flotilla_kernels::models::Transformer::from_params(src.config().clone(), params.to_vec())
            .map_err(err)?;
    let (mut targets, mut predictions) = (Vec::new(), Vec::new());
    for chunk in records.chunks(64) {
        let batch = src.batch(chunk)?;
        let out = flotilla_kernels::infer::engine::forward(
            &model,
            &flotilla_kernels::infer::F32Linears(&model),
            &batch,
        )
        .map_err(err)?;
        for (row, target) in out.logits.chunks(classes).zip(&batch.targets) {
            let best = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            predictions.push(best);
            targets.push(*target as usize);
        }
    }
    let accuracy = flotilla_kernels::metrics::accuracy(&targets, &predictions).map_err(err)?;
    let f1 = flotilla_kernels::metrics::macro_f1(&targets, &predictions, classes).map_err(err)?;
    Ok(Some((accuracy, f1)))
}
