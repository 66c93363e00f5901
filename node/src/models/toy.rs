//! The demo's toy generation model: a tiny character-level GPT over printable ASCII, trained a
//! few SGD steps on a corpus so that its weights are learned, saved as a [`super::gpt`]
//! checkpoint. The demo, the tests and the benchmarks deploy it where a real model would take
//! minutes to load.

use std::path::Path;

use flotilla_kernels::checkpoint::{self, Checkpoint, Tensor};
use flotilla_kernels::models::gpt::GptConfig;
use flotilla_kernels::models::Batch;
use flotilla_kernels::tokenize::CharTokenizer;

use super::gpt::{PARAMS, TOKENIZER};

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
