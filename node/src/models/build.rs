//! The model a training run fine-tunes or trains from scratch, as its trainers rebuild it: a
//! transformer classifier configuration and its tokenizer.
//!
//! - `[model.new]` classifiers: a transformer encoder of the spec's sizes with a character
//!   tokenizer built from the data, initialised from the seed.
//! - `model.hf_folder`: a Hugging Face BERT folder (`config.json`, `model.safetensors`,
//!   `tokenizer.json`, e.g. all-MiniLM-L6-v2) with a fresh classification head over mean
//!   pooling, initialised from the folder's weights (the head from the seed).
//! - `model.registered`: a version in the catalog ([`Parent`]). A classifier a run registered
//!   goes on from its weights and tokenizer; its head too when the data has the same labels,
//!   otherwise a new head from the seed. A registered BERT folder is fine-tuned as above.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use flotilla_kernels::models::config::{Head, NormPlacement, Pooling};
use flotilla_kernels::models::encoder::EncoderConfig;
use flotilla_kernels::models::{bert, Transformer, TransformerConfig};
use flotilla_kernels::tokenize::{CharTokenizer, HfTokenizer};
use flotilla_protocol::training::{Architecture, ModelSource, TrainSpec};
use serde::{Deserialize, Serialize};

use super::gradient::{ClassifierSource, Encoder};
use super::parent::Parent;

/// How a model's texts become token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TokenizerArgs {
    /// A character vocabulary (id = position).
    Chars(Vec<char>),
    /// A Hugging Face `tokenizer.json`, with the special tokens it adds (`[CLS] … [SEP]`).
    HfJson(String),
}

/// A classifier's configuration and tokenizer, as trainers are spawned with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArgs {
    /// The kernels' `TransformerConfig` as JSON: its enums are internally tagged, which bincode
    /// cannot decode.
    pub config_json: String,
    pub tokenizer: TokenizerArgs,
}

impl ModelArgs {
    /// The form [`flotilla_protocol::training::TrainerArgs::model`] carries: JSON (the
    /// transformer configuration inside is JSON already, for the same reason).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(self).map_err(|e| format!("model arguments: {e}"))
    }

    /// Reads [`ModelArgs::to_bytes`]; anything else is an error naming what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("model arguments: {e}"))
    }

    fn new(config: &TransformerConfig, tokenizer: TokenizerArgs) -> Result<Self, String> {
        Ok(Self {
            config_json: serde_json::to_string(config).map_err(|e| e.to_string())?,
            tokenizer,
        })
    }

    /// The transformer configuration.
    pub fn config(&self) -> Result<TransformerConfig, String> {
        serde_json::from_str(&self.config_json).map_err(|e| format!("model configuration: {e}"))
    }

    /// Classes of the head (0 for a model without a classification head).
    pub fn classes(&self) -> usize {
        match self.config().map(|c| c.head) {
            Ok(Head::Classifier { classes, .. }) => classes,
            _ => 0,
        }
    }

    /// Text → token ids.
    pub fn encoder(&self) -> Result<Encoder, String> {
        match &self.tokenizer {
            TokenizerArgs::Chars(chars) => {
                let t = CharTokenizer::from_chars(chars.clone()).map_err(|e| e.to_string())?;
                Ok(Box::new(move |s: &str| {
                    t.encode(s).map_err(|e| e.to_string())
                }))
            }
            TokenizerArgs::HfJson(json) => {
                // The file may pad every text to a fixed length (all-MiniLM-L6-v2 pads to 128):
                // batches pad to their longest text instead, and padding is masked.
                let t = HfTokenizer::from_bytes(json.as_bytes())
                    .map_err(|e| e.to_string())?
                    .without_padding();
                Ok(Box::new(move |s: &str| {
                    t.encode(s, true).map_err(|e| e.to_string())
                }))
            }
        }
    }

    /// The gradient source over records with these fields.
    pub fn source(
        &self,
        classes: &BTreeMap<String, u32>,
        text_field: &str,
        label_field: &str,
    ) -> Result<ClassifierSource, String> {
        Ok(ClassifierSource::new(
            self.config()?,
            self.encoder()?,
            classes.clone(),
            text_field,
            label_field,
        ))
    }
}

/// The model of `spec` for `labels` (sorted, as class ids are given) over `corpus` (every
/// text of the data), starting from `parent` when the spec names a registered version: its
/// arguments and initial flat parameters. A mismatch between the model and the data (more
/// characters than the vocabulary, another number of labels, a folder that is not a supported
/// BERT) is an error naming it, before any worker starts.
pub fn prepare(
    spec: &TrainSpec,
    parent: Option<&Parent>,
    corpus: &str,
    labels: &[String],
) -> Result<(ModelArgs, Vec<f32>), String> {
    let seed = spec.args.seed;
    let classes = labels.len();
    match &spec.model {
        ModelSource::New(model) => {
            if model.architecture != Architecture::Classifier {
                return Err(
                    "only architecture = \"classifier\" can be trained on the mesh yet".into(),
                );
            }
            let tokenizer = CharTokenizer::from_corpus(corpus).map_err(|e| e.to_string())?;
            if tokenizer.vocab_size() > model.vocab_size as usize {
                return Err(format!(
                    "the data has {} distinct characters; model.new.vocab_size is {}",
                    tokenizer.vocab_size(),
                    model.vocab_size
                ));
            }
            if let Some(n) = model.num_labels {
                if n as usize != classes {
                    return Err(format!(
                        "the data has {classes} labels; model.new.num_labels is {n}"
                    ));
                }
            }
            let cfg = EncoderConfig {
                vocab: model.vocab_size as usize,
                context: model.max_seq_len as usize,
                width: model.hidden_size as usize,
                heads: model.heads as usize,
                layers: model.layers as usize,
                ffn: 4 * model.hidden_size as usize,
                classes,
                pooling: Pooling::Mean,
                norm: NormPlacement::Pre,
            };
            let init = cfg.build(seed).map_err(|e| e.to_string())?.params_flat();
            let args = ModelArgs::new(
                &cfg.transformer(),
                TokenizerArgs::Chars(tokenizer.chars().to_vec()),
            )?;
            Ok((args, init))
        }
        // A folder is registered by the node that accepted the submission, and the spec that
        // travels names the registered version instead: a run never reads a path that another
        // node named.
        ModelSource::HfFolder(_) => Err("model.hf_folder reached a run unregistered; the node \
             that accepts a submission registers the folder and names it as model.registered"
            .into()),
        ModelSource::Registered(m) => match parent {
            Some(Parent::BertFolder(dir)) => from_hf_folder(dir, classes, seed, m),
            Some(Parent::Classifier(dir)) => from_classifier(dir, m, corpus, labels, seed),
            None => Err(format!("model.registered: {m} was not fetched")),
        },
    }
}

/// A Hugging Face BERT folder with a new `classes`-way head over mean pooling; `what` names
/// the folder in errors.
fn from_hf_folder(
    dir: &Path,
    classes: usize,
    seed: u64,
    what: &str,
) -> Result<(ModelArgs, Vec<f32>), String> {
    let head = Head::Classifier {
        classes,
        pooling: Pooling::Mean,
    };
    let model = bert::load(dir, head, seed).map_err(|e| format!("{what}: {e}"))?;
    let path = dir.join("tokenizer.json");
    let json =
        std::fs::read_to_string(&path).map_err(|e| format!("{what}: {}: {e}", path.display()))?;
    // Parsed here so a broken tokenizer, or one whose ids the model cannot embed, fails
    // the run before any worker starts.
    let tokenizer = HfTokenizer::from_bytes(json.as_bytes())
        .map_err(|e| format!("{what}: {}: {e}", path.display()))?;
    if tokenizer.vocab_size() > model.config().vocab {
        return Err(format!(
            "{what}: {} has {} tokens; the model's vocabulary is {}",
            path.display(),
            tokenizer.vocab_size(),
            model.config().vocab
        ));
    }
    let args = ModelArgs::new(model.config(), TokenizerArgs::HfJson(json))?;
    Ok((args, model.params_flat()))
}

/// A registered classifier (`name`, in `dir`) going on with `labels`: every weight carries on;
/// the head too when the labels are the ones it was trained on, otherwise a new head for
/// `labels` is drawn from the seed. A character tokenizer must cover every character of
/// `corpus`: its vocabulary is the model's embedding and cannot grow.
fn from_classifier(
    dir: &Path,
    name: &str,
    corpus: &str,
    labels: &[String],
    seed: u64,
) -> Result<(ModelArgs, Vec<f32>), String> {
    let saved = super::classifier::load_saved(dir).map_err(|e| format!("{name}: {e}"))?;
    if let TokenizerArgs::Chars(chars) = &saved.tokenizer {
        let known: BTreeSet<char> = chars.iter().copied().collect();
        let unknown: BTreeSet<char> = corpus.chars().filter(|c| !known.contains(c)).collect();
        if !unknown.is_empty() {
            let shown: String = unknown.iter().take(20).collect();
            return Err(format!(
                "{name}'s character vocabulary lacks {} characters of the data ({shown:?}); \
                 train a new model or use data it covers",
                unknown.len()
            ));
        }
    }
    if saved.labels == labels {
        let args = ModelArgs::new(&saved.transformer, saved.tokenizer)?;
        return Ok((args, saved.params));
    }
    // Another set of labels: the same encoder under a new head.
    let mut config = saved.transformer.clone();
    let Head::Classifier { pooling, .. } = config.head else {
        return Err(format!("{name} has no classification head"));
    };
    config.head = Head::Classifier {
        classes: labels.len(),
        pooling,
    };
    let old = Transformer::from_params(saved.transformer, saved.params)
        .map_err(|e| format!("{name}: {e}"))?;
    let mut fresh = Transformer::new(config.clone(), seed).map_err(|e| format!("{name}: {e}"))?;
    let layout = fresh.layout().clone();
    for e in layout
        .entries()
        .iter()
        .filter(|e| !e.name.starts_with("head."))
    {
        let from = old
            .layout()
            .entry(&e.name)
            .filter(|o| o.shape == e.shape)
            .ok_or_else(|| format!("{name}: tensor {} does not match", e.name))?;
        fresh.params_mut()[e.offset..e.offset + e.len()]
            .copy_from_slice(&old.params()[from.offset..from.offset + from.len()]);
    }
    let args = ModelArgs::new(&config, saved.tokenizer)?;
    Ok((args, fresh.params_flat()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A spec training a new one-layer classifier of width 16 over `vocab_size` characters.
    fn new_classifier(vocab_size: u32, num_labels: Option<u32>) -> TrainSpec {
        TrainSpec {
            model: ModelSource::New(flotilla_protocol::training::NewModel {
                architecture: Architecture::Classifier,
                vocab_size,
                hidden_size: 16,
                layers: 1,
                heads: 2,
                max_seq_len: 16,
                num_labels,
            }),
            ..TrainSpec::default()
        }
    }

    #[test]
    fn args_travel_through_bincode_and_rebuild_the_same_model() {
        let spec = new_classifier(64, Some(3));
        let labels = |n: usize| (0..n).map(|i| format!("l{i}")).collect::<Vec<_>>();
        let (args, init) = prepare(&spec, None, "hello world", &labels(3)).unwrap();
        let wire = flotilla_actors::remote::encode(&args).unwrap();
        let back: ModelArgs = flotilla_actors::remote::decode(&wire).unwrap();
        assert_eq!(back, args);
        assert_eq!(back.classes(), 3);
        let model =
            flotilla_kernels::models::Transformer::from_params(back.config().unwrap(), init)
                .unwrap();
        assert_eq!(model.config().context, 16);
        assert_eq!((back.encoder().unwrap())("hello").unwrap().len(), 5);
        // More labels than the spec says is refused before anything starts.
        assert!(prepare(&spec, None, "hello", &labels(4))
            .unwrap_err()
            .contains("num_labels"));
    }

    /// all-MiniLM-L6-v2 as `tests/fixtures/fetch.sh` fetches it.
    const MINILM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/models/all-MiniLM-L6-v2"
    );

    #[test]
    fn a_tokenizer_with_ids_beyond_the_models_vocabulary_is_refused_before_training() {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(MINILM);
        for f in ["config.json", "model.safetensors"] {
            std::os::unix::fs::symlink(src.join(f), dir.path().join(f)).unwrap();
        }
        // One added token past the model's 30,522 embeddings.
        let mut tok: serde_json::Value =
            serde_json::from_slice(&std::fs::read(src.join("tokenizer.json")).unwrap()).unwrap();
        tok["added_tokens"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "id": 30522, "content": "[EXTRA]", "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            }));
        std::fs::write(
            dir.path().join("tokenizer.json"),
            serde_json::to_vec(&tok).unwrap(),
        )
        .unwrap();
        let spec = TrainSpec {
            model: ModelSource::Registered("minilm@1".into()),
            ..TrainSpec::default()
        };
        let three = ["a".to_string(), "b".into(), "c".into()];
        let broken = Parent::BertFolder(dir.path().to_path_buf());
        let err = prepare(&spec, Some(&broken), "", &three).unwrap_err();
        assert!(
            err.contains("30523 tokens") && err.contains("30522"),
            "{err}"
        );
        // A folder path in a spec that reaches a run is refused: it is registered at submission.
        let unregistered = TrainSpec {
            model: ModelSource::HfFolder(MINILM.to_string()),
            ..TrainSpec::default()
        };
        assert!(prepare(&unregistered, None, "", &three)
            .unwrap_err()
            .contains("model.registered"));
        // The folder as shipped gives trainers a model with a 3-way head.
        let shipped = Parent::BertFolder(Path::new(MINILM).to_path_buf());
        let (args, init) = prepare(&spec, Some(&shipped), "", &three).unwrap();
        assert_eq!(args.classes(), 3);
        flotilla_kernels::models::Transformer::from_params(args.config().unwrap(), init).unwrap();
        let ids = (args.encoder().unwrap())("hello there").unwrap();
        assert_eq!(
            (ids[0], *ids.last().unwrap()),
            (101, 102),
            "[CLS] … [SEP], unpadded"
        );
    }

    #[test]
    fn a_registered_classifier_carries_on_and_gets_a_new_head_for_new_labels() {
        let spec = new_classifier(32, None);
        let two = vec!["no".to_string(), "yes".to_string()];
        let (args, init) = prepare(&spec, None, "abc de", &two).unwrap();
        let dir = tempfile::tempdir().unwrap();
        crate::models::classifier::save_classifier(
            dir.path(),
            &args,
            two.clone(),
            &init,
            7,
            serde_json::Value::Null,
        )
        .unwrap();
        let parent = Parent::Classifier(dir.path().to_path_buf());
        let registered = TrainSpec {
            model: ModelSource::Registered("clf@1".into()),
            ..spec.clone()
        };
        // Same labels: the model goes on exactly where it was.
        let (same, params) = prepare(&registered, Some(&parent), "bad cab", &two).unwrap();
        assert_eq!(same, args);
        assert_eq!(params, init);
        // Three labels: every tensor but the head carries on; the head is new and 3-way.
        let three = vec!["a".to_string(), "b".into(), "c".into()];
        let (wider, params) = prepare(&registered, Some(&parent), "bad", &three).unwrap();
        assert_eq!(wider.classes(), 3);
        let before = Transformer::from_params(args.config().unwrap(), init).unwrap();
        let after = Transformer::from_params(wider.config().unwrap(), params).unwrap();
        for e in after.layout().entries() {
            let old = before.layout().entry(&e.name).unwrap();
            let (a, b) = (
                &after.params()[e.offset..e.offset + e.len()],
                &before.params()[old.offset..old.offset + old.len()],
            );
            if e.name.starts_with("head.") {
                assert_ne!(e.shape, old.shape, "{}", e.name);
            } else {
                assert_eq!(a, b, "{}", e.name);
            }
        }
        // A character the registered vocabulary lacks is refused before training.
        let err = prepare(&registered, Some(&parent), "abc xyz", &two).unwrap_err();
        assert!(err.contains("lacks 3 characters"), "{err}");
        // The spec names a registered version that was not fetched: a clear error.
        assert!(prepare(&registered, None, "abc", &two)
            .unwrap_err()
            .contains("clf@1"));
    }
}
