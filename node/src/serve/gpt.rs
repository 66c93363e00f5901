//! The generation model: a character-level GPT from the kernels, stored as a kernels checkpoint
//! (flat parameters, the `GptConfig` as model config, the character vocabulary as tokenizer),
//! served through the continuous-batching engine with one KV cache per sequence.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use flotilla_actors::serving::scheduler::{Generator, SeqId};
use flotilla_kernels::checkpoint::{self, Checkpoint, Tensor};
use flotilla_kernels::infer::{Decoder, F32Linears};
use flotilla_kernels::models::gpt::GptConfig;
use flotilla_kernels::models::{Batch, Transformer};
use flotilla_kernels::tokenize::CharTokenizer;

/// The tensor holding every parameter.
const PARAMS: &str = "params";
/// The tokenizer file inside the checkpoint.
const TOKENIZER: &str = "chars.json";

/// The printable ASCII characters and newline: every prompt written in them can be encoded.
pub fn ascii_vocab() -> String {
    let mut s: String = (32u8..127).map(char::from).collect();
    s.push('\n');
    s
}

/// Builds a tiny GPT (context 64, width 32, 2 layers) over [`ascii_vocab`], trains it `steps`
/// SGD steps on `corpus` (so its weights are learned, not random), and saves it as a checkpoint
/// in `dir`.
pub fn create_char_gpt(dir: &Path, corpus: &str, steps: usize, seed: u64) -> anyhow::Result<()> {
    create_char_gpt_sized(dir, corpus, steps, seed, (64, 32, 2, 2))
}

/// As [`create_char_gpt`] with `(context, width, heads, layers)` chosen by the caller.
pub fn create_char_gpt_sized(
    dir: &Path,
    corpus: &str,
    steps: usize,
    seed: u64,
    (context, width, heads, layers): (usize, usize, usize, usize),
) -> anyhow::Result<()> {
    let tok = CharTokenizer::from_corpus(&ascii_vocab())?;
    let cfg = GptConfig {
        vocab: tok.vocab_size(),
        context,
        width,
        heads,
        layers,
        tied: true,
    };
    let mut model = cfg.build(seed)?;
    let ids = tok.encode(corpus)?;
    let seq = 32usize;
    anyhow::ensure!(
        ids.len() > seq + 1,
        "the corpus needs more than {seq} characters"
    );
    for step in 0..steps {
        let batch = 4usize;
        let mut tokens = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for b in 0..batch {
            let start = (step * 7 + b * 13) % (ids.len() - seq - 1);
            tokens.extend_from_slice(&ids[start..start + seq]);
            targets.extend_from_slice(&ids[start + 1..start + seq + 1]);
        }
        let (_, grads) = model.loss_and_grads(&Batch::lm(tokens, targets, batch, seq))?;
        let lr = 0.05f32;
        model
            .params_mut()
            .iter_mut()
            .zip(&grads)
            .for_each(|(p, g)| *p -= lr * g);
    }
    let mut ck = Checkpoint::new(steps as u64, serde_json::to_value(cfg)?);
    ck.weights.insert(
        PARAMS.to_string(),
        Tensor::from_f32(vec![model.num_params()], model.params())?,
    );
    ck.tokenizer = Some((TOKENIZER.to_string(), serde_json::to_vec(&tok)?));
    checkpoint::save(dir, &ck)?;
    Ok(())
}

/// The GPT configuration of a checkpoint folder.
pub fn read_config(dir: &Path) -> anyhow::Result<GptConfig> {
    let ck = checkpoint::load(dir)?;
    Ok(serde_json::from_value(ck.model_config)?)
}

/// A loaded GPT and its tokenizer.
#[derive(Debug)]
pub struct CharGpt {
    pub model: &'static Transformer,
    pub tokenizer: CharTokenizer,
}

/// Loaded models by version hash. The kernels' `Decoder` borrows its model, and the engine
/// keeps decoders across steps on another thread, so the model must outlive every decoder:
/// each distinct model version is kept for the life of the process (bounded by the versions a
/// node ever serves, and shared by every replica and restart of the same version).
fn loaded() -> &'static Mutex<HashMap<String, &'static Transformer>> {
    static LOADED: OnceLock<Mutex<HashMap<String, &'static Transformer>>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

impl CharGpt {
    /// Loads (and verifies, through the checkpoint manifest) the checkpoint in `dir`.
    pub fn load(dir: &Path, hash: &str) -> anyhow::Result<Arc<CharGpt>> {
        let ck = checkpoint::load(dir)?;
        let cfg: GptConfig = serde_json::from_value(ck.model_config.clone())?;
        let (_, tok_bytes) = ck
            .tokenizer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{} has no tokenizer", dir.display()))?;
        let tokenizer: CharTokenizer = serde_json::from_slice(tok_bytes)?;
        let mut cache = loaded().lock().unwrap_or_else(|e| e.into_inner());
        let model = match cache.get(hash) {
            Some(m) => *m,
            None => {
                let params = ck
                    .weights
                    .get(PARAMS)
                    .ok_or_else(|| anyhow::anyhow!("{} has no {PARAMS} tensor", dir.display()))?
                    .to_f32()?;
                let m = Transformer::from_params(cfg.transformer(), params)?;
                let m: &'static Transformer = Box::leak(Box::new(m));
                cache.insert(hash.to_string(), m);
                m
            }
        };
        Ok(Arc::new(CharGpt { model, tokenizer }))
    }

    /// The context length.
    pub fn context(&self) -> usize {
        self.model.config().context
    }
}

/// The engine's [`Generator`]: one KV-cache decoder per running sequence.
pub struct GptGenerator {
    gpt: Arc<CharGpt>,
    seqs: BTreeMap<SeqId, Decoder<'static>>,
}

impl GptGenerator {
    pub fn new(gpt: Arc<CharGpt>) -> Self {
        Self {
            gpt,
            seqs: BTreeMap::new(),
        }
    }
}

impl Generator for GptGenerator {
    fn prefill(&mut self, seq: SeqId, prompt: &[u32]) -> Result<Vec<f32>, String> {
        let model = self.gpt.model;
        let mut dec = Decoder::new(model, 1).map_err(|e| e.to_string())?;
        let logits = dec
            .feed(&F32Linears(model), prompt, prompt.len())
            .map_err(|e| e.to_string())?;
        let vocab = model.config().vocab;
        let last = logits[logits.len() - vocab..].to_vec();
        self.seqs.insert(seq, dec);
        Ok(last)
    }

    fn decode(&mut self, batch: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, String> {
        let model = self.gpt.model;
        batch
            .iter()
            .map(|(seq, token)| {
                let dec = self
                    .seqs
                    .get_mut(seq)
                    .ok_or_else(|| format!("sequence {seq} has no KV cache"))?;
                dec.feed(&F32Linears(model), &[*token], 1)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    fn release(&mut self, seq: SeqId) {
        self.seqs.remove(&seq);
    }
}
