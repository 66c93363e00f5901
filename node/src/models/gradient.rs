//! A trainer's gradient on the kernels, for transformer classifiers.

use std::collections::BTreeMap;

use flotilla_actors::data::record::Record;
use flotilla_actors::training::trainer::GradientSource;
use flotilla_kernels::models::{Batch, Transformer, TransformerConfig};

/// Texts per micro-batch (see [`ClassifierSource::compute`]).
const MICRO_BATCH: usize = 8;

/// Turns a text into token ids.
pub type Encoder = Box<dyn Fn(&str) -> Result<Vec<u32>, String> + Send + Sync>;

/// The mean cross-entropy gradient of a transformer classifier over a batch of records.
pub struct ClassifierSource {
    config: TransformerConfig,
    encode: Encoder,
    /// Label text → class id.
    classes: BTreeMap<String, u32>,
    text_field: String,
    label_field: String,
}

impl ClassifierSource {
    /// A source for a model of `config` whose records hold their text in `text_field` and
    /// their label (a key of `classes`) in `label_field`.
    pub fn new(
        config: TransformerConfig,
        encode: Encoder,
        classes: BTreeMap<String, u32>,
        text_field: &str,
        label_field: &str,
    ) -> Self {
        Self {
            config,
            encode,
            classes,
            text_field: text_field.to_string(),
            label_field: label_field.to_string(),
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// The padded batch of `records`: texts cut to the model's context (an empty one becomes
    /// one padding token), labels mapped to classes. Unknown labels and missing fields are
    /// errors naming the record.
    pub fn batch(&self, records: &[Record]) -> Result<Batch, String> {
        let (seqs, targets) = self.rows(records)?;
        Ok(Batch::padded(&seqs, targets))
    }

    /// Each record's token ids (cut to the context; never empty) and class.
    fn rows(&self, records: &[Record]) -> Result<(Vec<Vec<u32>>, Vec<u32>), String> {
        if records.is_empty() {
            return Err("an empty batch has no gradient".into());
        }
        let mut seqs = Vec::with_capacity(records.len());
        let mut targets = Vec::with_capacity(records.len());
        for r in records {
            let text = r.field(&self.text_field).map_err(|e| e.to_string())?;
            let label = r.field(&self.label_field).map_err(|e| e.to_string())?;
            let class = self.classes.get(label).ok_or_else(|| {
                format!(
                    "record {}: label {label:?} is not one of the model's {} classes",
                    r.id,
                    self.classes.len()
                )
            })?;
            let mut ids = (self.encode)(text).map_err(|e| format!("record {}: {e}", r.id))?;
            ids.truncate(self.config.context);
            if ids.is_empty() {
                ids.push(0);
            }
            seqs.push(ids);
            targets.push(*class);
        }
        Ok((seqs, targets))
    }
}

impl GradientSource for ClassifierSource {
    /// The batch runs as micro-batches of texts of similar length (sorted by length): a padded
    /// batch computes every position up to its longest text, and a random batch of short
    /// queries with one long one wastes most of that (several times the compute for a BERT
    /// model on Banking77). The mean of the micro-batches' mean gradients, weighted by their
    /// sizes, is the batch's mean gradient (padding changes nothing; see the tests).
    fn compute(&self, params: &[f32], batch: &[Record]) -> Result<(Vec<f32>, f32, usize), String> {
        let model = Transformer::from_params(self.config.clone(), params.to_vec())
            .map_err(|e| e.to_string())?;
        let (rows, classes) = self.rows(batch)?;
        let n = rows.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| rows[i].len());
        let mut grads = vec![0.0f32; model.num_params()];
        let mut loss = 0.0f32;
        for chunk in order.chunks(MICRO_BATCH) {
            let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| rows[i].clone()).collect();
            let targets: Vec<u32> = chunk.iter().map(|&i| classes[i]).collect();
            let (l, g) = model
                .loss_and_grads(&Batch::padded(&seqs, targets))
                .map_err(|e| e.to_string())?;
            let w = chunk.len() as f32 / n as f32;
            loss += w * l;
            grads.iter_mut().zip(&g).for_each(|(a, g)| *a += w * g);
        }
        Ok((grads, loss, n))
    }
}

#[cfg(test)]
mod tests {
    use flotilla_kernels::models::config::{NormPlacement, Pooling};
    use flotilla_kernels::models::encoder::EncoderConfig;
    use flotilla_kernels::models::Batch;

    /// The mean gradient of a padded batch equals the mean of its rows' gradients taken alone:
    /// padding changes nothing, so how a global batch is split across workers changes nothing.
    #[test]
    fn padding_does_not_change_the_gradient() {
        let cfg = EncoderConfig {
            vocab: 12,
            context: 16,
            width: 8,
            heads: 2,
            layers: 1,
            ffn: 16,
            classes: 3,
            pooling: Pooling::Mean,
            norm: NormPlacement::Pre,
        };
        let m = cfg.build(3).unwrap();
        let seqs = vec![
            vec![1u32, 5, 7, 2, 9, 4, 3],
            vec![4u32, 2],
            vec![8u32, 1, 6],
        ];
        let targets = vec![0u32, 2, 1];
        let (_, together) = m
            .loss_and_grads(&Batch::padded(&seqs, targets.clone()))
            .unwrap();
        let mut alone = vec![0f32; together.len()];
        for (s, t) in seqs.iter().zip(&targets) {
            let (_, g) = m
                .loss_and_grads(&Batch::padded(std::slice::from_ref(s), vec![*t]))
                .unwrap();
            alone
                .iter_mut()
                .zip(&g)
                .for_each(|(a, g)| *a += g / seqs.len() as f32);
        }
        let worst = together
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs() / (a.abs().max(b.abs()).max(1e-3)))
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "largest relative gap {worst}");
    }
}
