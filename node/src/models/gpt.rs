//! The generation model: a character-level GPT from the kernels, stored as a kernels checkpoint
//! (flat parameters, the `GptConfig` as model config, the character vocabulary as tokenizer),
//! served through the continuous-batching engine with one KV cache per sequence; each decoding
//! step runs every running sequence in one forward.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use flotilla_actors::serving::scheduler::{Generator, SeqId};
use flotilla_kernels::checkpoint;
use flotilla_kernels::infer::{Decoder, F32Linears, KvCache};
use flotilla_kernels::models::gpt::GptConfig;
use flotilla_kernels::models::Transformer;
use flotilla_kernels::tokenize::CharTokenizer;

/// The tensor holding every parameter.
pub(super) const PARAMS: &str = "params";
/// The tokenizer file inside the checkpoint.
pub(super) const TOKENIZER: &str = "chars.json";

/// The GPT configuration of a checkpoint folder.
pub fn read_config(dir: &Path) -> anyhow::Result<GptConfig> {
    let ck = checkpoint::load(dir)?;
    Ok(serde_json::from_value(ck.model_config)?)
}

/// A loaded GPT and its tokenizer.
#[derive(Debug)]
pub struct CharGpt {
    pub decoder: Decoder,
    pub tokenizer: CharTokenizer,
}

/// Loaded models by version hash, held weakly: every replica of a version (and a restarted
/// one, while another still runs) shares one copy of its weights, which is freed when the last
/// replica using it stops.
fn loaded() -> &'static Mutex<HashMap<String, Weak<Transformer>>> {
    static LOADED: OnceLock<Mutex<HashMap<String, Weak<Transformer>>>> = OnceLock::new();
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
        cache.retain(|_, m| m.strong_count() > 0);
        let model = match cache.get(hash).and_then(Weak::upgrade) {
            Some(m) => m,
            None => {
                let params = ck
                    .weights
                    .get(PARAMS)
                    .ok_or_else(|| anyhow::anyhow!("{} has no {PARAMS} tensor", dir.display()))?
                    .to_f32()?;
                let m = Arc::new(Transformer::from_params(cfg.transformer(), params)?);
                cache.insert(hash.to_string(), Arc::downgrade(&m));
                m
            }
        };
        Ok(Arc::new(CharGpt {
            decoder: Decoder::new(model)?,
            tokenizer,
        }))
    }

    /// The context length.
    pub fn context(&self) -> usize {
        self.decoder.model().config().context
    }
}

/// Whether version `hash`'s weights are loaded in this process.
#[cfg(test)]
fn is_loaded(hash: &str) -> bool {
    let cache = loaded().lock().unwrap_or_else(|e| e.into_inner());
    cache.get(hash).is_some_and(|m| m.strong_count() > 0)
}

/// The engine's [`Generator`]: one KV cache per running sequence; each decoding step feeds
/// every running sequence its next token in one forward.
pub struct GptGenerator {
    gpt: Arc<CharGpt>,
    seqs: BTreeMap<SeqId, KvCache>,
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
        let dec = &self.gpt.decoder;
        let mut cache = dec.cache();
        let logits = dec
            .feed(&F32Linears(dec.model()), &mut [(&mut cache, prompt)])
            .map_err(|e| e.to_string())?
            .remove(0);
        let vocab = dec.model().config().vocab;
        let last = logits[logits.len() - vocab..].to_vec();
        self.seqs.insert(seq, cache);
        Ok(last)
    }

    fn decode(&mut self, batch: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, String> {
        let dec = &self.gpt.decoder;
        // The caches leave the table for the step (one mutable borrow each) and come back
        // after it, whatever its outcome.
        let mut taken = Vec::with_capacity(batch.len());
        for (seq, _) in batch {
            match self.seqs.remove(seq) {
                Some(c) => taken.push((*seq, c)),
                None => {
                    self.seqs.extend(taken);
                    return Err(format!("sequence {seq} has no KV cache"));
                }
            }
        }
        let tokens: Vec<[u32; 1]> = batch.iter().map(|(_, t)| [*t]).collect();
        let mut step: Vec<(&mut KvCache, &[u32])> = taken
            .iter_mut()
            .zip(&tokens)
            .map(|((_, c), t)| (c, &t[..]))
            .collect();
        let out = dec.feed(&F32Linears(dec.model()), &mut step);
        drop(step);
        self.seqs.extend(taken);
        out.map_err(|e| e.to_string())
    }

    fn release(&mut self, seq: SeqId) {
        self.seqs.remove(&seq);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Two replicas of one version share one copy of its weights, and the copy is freed when
    /// both stop (nothing is leaked per served version).
    #[test]
    fn replicas_share_weights_and_free_them_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = "the mesh answers every node. ".repeat(4);
        super::super::toy::create_char_gpt(dir.path(), &corpus, 2, 5).unwrap();
        let hash = "version-under-test";
        let a = CharGpt::load(dir.path(), hash).unwrap();
        let b = CharGpt::load(dir.path(), hash).unwrap();
        assert!(std::ptr::eq(a.decoder.model(), b.decoder.model()));
        drop(a);
        assert!(is_loaded(hash), "one replica still runs");
        drop(b);
        assert!(!is_loaded(hash), "the weights outlived every replica");
    }

    /// One decoding step over several sequences gives each the logits it gets alone.
    #[test]
    fn a_decoding_step_runs_every_sequence_together() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = "the mesh answers every node. ".repeat(4);
        super::super::toy::create_char_gpt(dir.path(), &corpus, 2, 6).unwrap();
        let gpt = CharGpt::load(dir.path(), "step-under-test").unwrap();
        let prompts: [&[u32]; 3] = [&[5, 6, 7], &[8], &[9, 10, 11, 12, 13]];
        let mut together = GptGenerator::new(gpt.clone());
        for (i, p) in prompts.iter().enumerate() {
            together.prefill(i as SeqId, p).unwrap();
        }
        let step = together.decode(&[(0, 1), (1, 2), (2, 3)]).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let mut alone = GptGenerator::new(gpt.clone());
            alone.prefill(0, p).unwrap();
            let want = alone.decode(&[(0, [1, 2, 3][i])]).unwrap().remove(0);
            let d = want
                .iter()
                .zip(&step[i])
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(d < 1e-4, "sequence {i} differs by {d} in a batched step");
        }
        // An unknown sequence fails the step and the others keep their caches.
        assert!(together.decode(&[(0, 1), (9, 1)]).is_err());
        assert!(together.decode(&[(0, 1), (1, 1), (2, 1)]).is_ok());
    }
}
