//! The classifier model: a transformer encoder with a classification head, as the `train` job
//! produces it (a character-level model trained from scratch, or a Hugging Face BERT folder
//! fine-tuned), stored as a kernels checkpoint (flat parameters, a [`ClassifierConfig`] as
//! model config, the tokenizer: a character vocabulary or a `tokenizer.json`) and answering
//! `/api/v1/classify` through the dynamic batcher.

use std::path::Path;

use flotilla_actors::serving::batcher::BatchModel;
use flotilla_kernels::checkpoint::{self, Checkpoint, Tensor};
use flotilla_kernels::infer::{engine, F32Linears};
use flotilla_kernels::models::{Batch, Head, Transformer, TransformerConfig};
use flotilla_kernels::ops::xent::softmax_in_place;
use flotilla_kernels::tokenize::{CharTokenizer, HfTokenizer};
use serde::{Deserialize, Serialize};

use super::build::{ModelArgs, TokenizerArgs};

/// The `kind` a classifier checkpoint's model config carries.
pub const CLASSIFIER_KIND: &str = "transformer-classifier";
/// The tensor holding every parameter.
const PARAMS: &str = "params";
/// The tokenizer file inside the checkpoint: a character vocabulary ...
const CHARS: &str = "chars.json";
/// ... or a Hugging Face tokenizer.
const HF_TOKENIZER: &str = "tokenizer.json";

/// What a classifier checkpoint says about its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Always [`CLASSIFIER_KIND`]; tells a classifier folder from a GPT one.
    pub kind: String,
    pub transformer: TransformerConfig,
    /// Class names by class id.
    pub labels: Vec<String>,
}

/// Writes a trained classifier into `dir` as a checkpoint at `step`; `extra` (metrics,
/// lineage) goes into the manifest.
pub fn save_classifier(
    dir: &Path,
    model: &ModelArgs,
    labels: Vec<String>,
    params: &[f32],
    step: u64,
    extra: serde_json::Value,
) -> anyhow::Result<()> {
    let transformer = model.config().map_err(anyhow::Error::msg)?;
    let classes = match transformer.head {
        Head::Classifier { classes, .. } => classes,
        _ => anyhow::bail!("the model has no classification head"),
    };
    anyhow::ensure!(
        labels.len() == classes,
        "{} labels for a head of {classes} classes",
        labels.len(),
    );
    let cfg = ClassifierConfig {
        kind: CLASSIFIER_KIND.to_string(),
        transformer,
        labels,
    };
    let mut ck = Checkpoint::new(step, serde_json::to_value(&cfg)?);
    ck.weights.insert(
        PARAMS.to_string(),
        Tensor::from_f32(vec![params.len()], params)?,
    );
    ck.tokenizer = Some(match &model.tokenizer {
        TokenizerArgs::Chars(chars) => (
            CHARS.to_string(),
            serde_json::to_vec(&CharTokenizer::from_chars(chars.clone())?)?,
        ),
        TokenizerArgs::HfJson(json) => (HF_TOKENIZER.to_string(), json.as_bytes().to_vec()),
    });
    ck.extra = extra;
    checkpoint::save(dir, &ck)?;
    Ok(())
}

/// A registered classifier as a training run starts from it: its transformer configuration,
/// class names, tokenizer and flat parameters.
pub struct SavedClassifier {
    pub transformer: TransformerConfig,
    pub labels: Vec<String>,
    pub tokenizer: TokenizerArgs,
    pub params: Vec<f32>,
}

/// Reads the classifier checkpoint in `dir` (hashes checked by the checkpoint loader).
pub fn load_saved(dir: &Path) -> anyhow::Result<SavedClassifier> {
    let ck = checkpoint::load(dir)?;
    let cfg = classifier_config(&ck.model_config).ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not a classifier checkpoint (model config kind is not {CLASSIFIER_KIND:?})",
            dir.display()
        )
    })?;
    let (name, bytes) = ck
        .tokenizer
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{} has no tokenizer", dir.display()))?;
    let tokenizer = match name.as_str() {
        CHARS => {
            let t: CharTokenizer = serde_json::from_slice(bytes)?;
            TokenizerArgs::Chars(t.chars().to_vec())
        }
        HF_TOKENIZER => TokenizerArgs::HfJson(String::from_utf8(bytes.clone())?),
        other => anyhow::bail!("{}: unknown tokenizer file {other:?}", dir.display()),
    };
    let params = ck
        .weights
        .get(PARAMS)
        .ok_or_else(|| anyhow::anyhow!("{} has no {PARAMS} tensor", dir.display()))?
        .to_f32()?;
    Ok(SavedClassifier {
        transformer: cfg.transformer,
        labels: cfg.labels,
        tokenizer,
        params,
    })
}

/// The classifier configuration of a checkpoint's model config, if it is one.
pub fn classifier_config(model_config: &serde_json::Value) -> Option<ClassifierConfig> {
    if model_config.get("kind")?.as_str()? != CLASSIFIER_KIND {
        return None;
    }
    serde_json::from_value(model_config.clone()).ok()
}

/// A classifier's tokenizer.
#[derive(Debug)]
enum Tokenizer {
    Chars(CharTokenizer),
    Hf(Box<HfTokenizer>),
}

/// A loaded classifier.
#[derive(Debug)]
pub struct TextClassifier {
    model: Transformer,
    tokenizer: Tokenizer,
    labels: Vec<String>,
}

impl TextClassifier {
    /// Loads (and verifies, through the checkpoint manifest) the classifier in `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<TextClassifier> {
        let saved = load_saved(dir)?;
        let tokenizer = match saved.tokenizer {
            TokenizerArgs::Chars(chars) => {
                let t = CharTokenizer::from_chars(chars)?;
                anyhow::ensure!(
                    t.vocab_size() <= saved.transformer.vocab,
                    "the tokenizer has {} characters; the model's vocabulary is {}",
                    t.vocab_size(),
                    saved.transformer.vocab
                );
                Tokenizer::Chars(t)
            }
            // Inputs are padded per batch (and masked), not by the file's fixed padding.
            TokenizerArgs::HfJson(json) => Tokenizer::Hf(Box::new(
                HfTokenizer::from_bytes(json.as_bytes())?.without_padding(),
            )),
        };
        let model = Transformer::from_params(saved.transformer, saved.params)?;
        Ok(TextClassifier {
            model,
            tokenizer,
            labels: saved.labels,
        })
    }

    /// Class names by class id.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The context length.
    pub fn context(&self) -> usize {
        self.model.config().context
    }

    /// Token ids of `text`, cut to the context as in training. A character outside the
    /// vocabulary is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let mut ids = match &self.tokenizer {
            Tokenizer::Chars(t) => t.encode(text),
            Tokenizer::Hf(t) => t.encode(text, true),
        }
        .map_err(|e| e.to_string())?;
        ids.truncate(self.context());
        if ids.is_empty() {
            return Err("an empty text has nothing to classify".into());
        }
        Ok(ids)
    }

    /// Class probabilities of each input (softmax of the head's logits).
    pub fn probabilities(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, String> {
        let batch = Batch::padded(inputs, Vec::new());
        let out = engine::forward(&self.model, &F32Linears(&self.model), &batch)
            .map_err(|e| e.to_string())?;
        let classes = self.labels.len();
        Ok(out
            .logits
            .chunks(classes)
            .map(|row| {
                let mut p = row.to_vec();
                softmax_in_place(&mut p);
                p
            })
            .collect())
    }
}

impl BatchModel for TextClassifier {
    type Input = Vec<u32>;
    type Output = Vec<f32>;

    fn run(&self, inputs: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, String> {
        self.probabilities(&inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_kernels::models::config::{NormPlacement, Pooling};
    use flotilla_kernels::models::encoder::EncoderConfig;

    fn encoder(classes: usize) -> EncoderConfig {
        EncoderConfig {
            vocab: 16,
            context: 8,
            width: 8,
            heads: 2,
            layers: 1,
            ffn: 16,
            classes,
            pooling: Pooling::Mean,
            norm: NormPlacement::Pre,
        }
    }

    fn args(cfg: EncoderConfig, tok: &CharTokenizer) -> ModelArgs {
        ModelArgs {
            config_json: serde_json::to_string(&cfg.transformer()).unwrap(),
            tokenizer: TokenizerArgs::Chars(tok.chars().to_vec()),
        }
    }

    #[test]
    fn a_saved_classifier_loads_and_answers_probabilities() {
        let dir = tempfile::tempdir().unwrap();
        let tok = CharTokenizer::from_corpus("abc xyz").unwrap();
        let cfg = encoder(3);
        let params = cfg.build(5).unwrap().params_flat();
        let labels = vec!["a".to_string(), "b".into(), "c".into()];
        save_classifier(
            dir.path(),
            &args(cfg, &tok),
            labels.clone(),
            &params,
            9,
            serde_json::json!({"accuracy": 0.5}),
        )
        .unwrap();
        let c = TextClassifier::load(dir.path()).unwrap();
        assert_eq!(c.labels(), labels.as_slice());
        let p = c
            .probabilities(&[c.encode("abc").unwrap(), c.encode("zy x a b c c").unwrap()])
            .unwrap();
        assert_eq!(p.len(), 2);
        for row in &p {
            assert_eq!(row.len(), 3);
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
        }
        assert_eq!(
            c.encode("zy x a b c c").unwrap().len(),
            8,
            "cut to the context"
        );
        assert!(c.encode("abq").unwrap_err().contains('q'));
        assert!(c.encode("").is_err());
    }

    #[test]
    fn labels_must_match_the_head_and_other_checkpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tok = CharTokenizer::from_corpus("abc").unwrap();
        let cfg = encoder(2);
        let params = cfg.build(1).unwrap().params_flat();
        let err = save_classifier(
            dir.path(),
            &args(cfg, &tok),
            vec!["only".into()],
            &params,
            0,
            serde_json::Value::Null,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("1 labels for a head of 2"),
            "{err}"
        );
        let gpt = tempfile::tempdir().unwrap();
        crate::models::toy::create_char_gpt(gpt.path(), &"some text to learn ".repeat(4), 1, 1)
            .unwrap();
        let err = TextClassifier::load(gpt.path()).unwrap_err();
        assert!(
            err.to_string().contains("not a classifier checkpoint"),
            "{err}"
        );
    }
}
