//! The embedding model: a Hugging Face BERT folder (e.g. all-MiniLM-L6-v2) with mean pooling,
//! answering batches of texts for the dynamic batcher.

use std::path::Path;

use flotilla_actors::serving::batcher::BatchModel;
use flotilla_kernels::infer::{engine, F32Linears};
use flotilla_kernels::models::{bert, Batch, Head, Pooling, Transformer};
use flotilla_kernels::tokenize::HfTokenizer;

/// A BERT encoder and its tokenizer.
#[derive(Debug)]
pub struct BertEmbedder {
    model: Transformer,
    tokenizer: HfTokenizer,
}

impl BertEmbedder {
    /// Loads `dir`'s `config.json`, `model.safetensors` and `tokenizer.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let model = bert::load(
            dir,
            Head::Embedding {
                pooling: Pooling::Mean,
            },
            0,
        )?;
        let context = model.config().context;
        let tokenizer = HfTokenizer::from_file(dir.join("tokenizer.json"))?
            .without_padding()
            .with_truncation(context)?;
        Ok(Self { model, tokenizer })
    }

    /// The vector width.
    pub fn dim(&self) -> usize {
        self.model.config().width
    }

    /// Token ids of `text` (with `[CLS]`/`[SEP]`), truncated to the context.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer.encode(text, true).map_err(|e| e.to_string())
    }
}

/// One input of a batch: token ids.
pub type EmbedInput = Vec<u32>;

impl BatchModel for BertEmbedder {
    type Input = EmbedInput;
    type Output = Vec<f32>;

    fn run(&self, inputs: Vec<EmbedInput>) -> Result<Vec<Vec<f32>>, String> {
        let batch = Batch::padded(&inputs, Vec::new());
        let out = engine::forward(&self.model, &F32Linears(&self.model), &batch)
            .map_err(|e| e.to_string())?;
        let d = self.dim();
        Ok(out.pooled.chunks(d).map(<[f32]>::to_vec).collect())
    }
}
