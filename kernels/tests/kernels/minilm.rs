//! BERT loading on the real all-MiniLM-L6-v2 folder: mean-pooled sentence embeddings of a padded
//! batch agree with Hugging Face transformers (float64) to 1e-4 relative error, and broken
//! folders fail with errors that name the problem.
//!
//! The model folder is `FLOTILLA_MINILM_DIR`, or `tests/fixtures/models/all-MiniLM-L6-v2` in
//! the repository (fetched by `tests/fixtures/fetch.sh`); the reference is `fixtures/minilm_reference.json` (made by `fixtures/minilm_reference.py`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};

use flotilla_kernels::models::config::{Head, Pooling};
use flotilla_kernels::models::{bert, Batch};
use flotilla_kernels::tokenize::HfTokenizer;
use flotilla_kernels::Error;

/// The model folder: `FLOTILLA_MINILM_DIR`, else the one `tests/fixtures/fetch.sh` fetches. A
/// missing folder is a failure, not a skip.
fn model_dir() -> Option<PathBuf> {
    let fetched =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models/all-MiniLM-L6-v2");
    let candidates: Vec<PathBuf> = match std::env::var("FLOTILLA_MINILM_DIR") {
        Ok(dir) => vec![PathBuf::from(dir)],
        Err(_) => vec![fetched],
    };
    let found = candidates
        .iter()
        .find(|d| d.join("model.safetensors").exists())
        .cloned();
    assert!(
        found.is_some(),
        "no all-MiniLM-L6-v2 folder at any of {candidates:?} (run tests/fixtures/fetch.sh)"
    );
    found
}

fn reference() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn minilm_embeddings_match_transformers() {
    let Some(dir) = model_dir() else { return };
    let r = reference();
    let ids: Vec<Vec<u32>> = serde_json::from_value(r["token_ids"].clone()).unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(r["embeddings"].clone()).unwrap();
    let sentences: Vec<String> = serde_json::from_value(r["sentences"].clone()).unwrap();

    // The tokenizer gives the reference's ids, so the pipeline text → embedding is covered.
    let tok = HfTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    // This tokenizer.json pads to 128 with [PAD] = 0; the sentence ends at [SEP] = 102.
    for (s, want_ids) in sentences.iter().zip(&ids) {
        let mut got = tok.encode(s, true).unwrap();
        let end = got.iter().position(|t| *t == 102).unwrap() + 1;
        assert!(
            got[end..].iter().all(|t| *t == 0),
            "only padding after [SEP]"
        );
        got.truncate(end);
        assert_eq!(&got, want_ids, "token ids of {s:?}");
    }

    let model = bert::load(
        &dir,
        Head::Embedding {
            pooling: Pooling::Mean,
        },
        0,
    )
    .unwrap();
    // 22,713,216 in the checkpoint, less the unused pooler (384·384 + 384).
    assert_eq!(model.num_params(), 22_713_216 - 147_840);
    let out = model.forward(&Batch::padded(&ids, vec![])).unwrap();
    let d = model.config().width;
    for (i, w) in want.iter().enumerate() {
        let got = &out.pooled[i * d..(i + 1) * d];
        let err: f64 = got
            .iter()
            .zip(w)
            .map(|(a, b)| (f64::from(*a) - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = w.iter().map(|b| b * b).sum::<f64>().sqrt();
        let worst = got
            .iter()
            .zip(w)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        println!(
            "sentence {i}: relative L2 error {:.2e}, max abs error {worst:.2e}",
            err / norm
        );
        assert!(
            err / norm <= 1e-4,
            "sentence {i}: relative error {:.3e}",
            err / norm
        );
    }
}

/// A folder with the real weights (linked) and an edited config.
fn edited_folder(dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    std::os::unix::fs::symlink(
        dir.join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    tmp
}

#[test]
fn broken_folders_are_clear_errors() {
    let Some(dir) = model_dir() else { return };
    let head = Head::Embedding {
        pooling: Pooling::Mean,
    };

    let t = edited_folder(&dir, |c| c["model_type"] = "gpt2".into());
    let e = bert::load(t.path(), head, 0).unwrap_err();
    assert!(matches!(e, Error::UnsupportedModel { .. }), "{e}");
    assert!(
        e.to_string().contains("BertModel"),
        "lists what is supported: {e}"
    );

    let t = edited_folder(&dir, |c| {
        c["architectures"] = serde_json::json!(["LlamaForCausalLM"])
    });
    let e = bert::load(t.path(), head, 0).unwrap_err();
    assert!(
        e.to_string().contains("LlamaForCausalLM") && e.to_string().contains("BertForMaskedLM"),
        "{e}"
    );

    let t = edited_folder(&dir, |c| c["intermediate_size"] = 1024.into());
    let e = bert::load(t.path(), head, 0).unwrap_err();
    assert!(
        e.to_string()
            .contains("encoder.layer.0.intermediate.dense.weight"),
        "{e}"
    );

    let t = edited_folder(&dir, |c| c["num_hidden_layers"] = 7.into());
    let e = bert::load(t.path(), head, 0).unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name.starts_with("encoder.layer.6.")),
        "{e}"
    );

    let t = edited_folder(&dir, |c| c["hidden_act"] = "relu".into());
    assert!(bert::load(t.path(), head, 0)
        .unwrap_err()
        .to_string()
        .contains("hidden_act"));
}

#[test]
fn wrong_dtype_names_the_tensor() {
    // A tiny synthetic folder: every tensor right except one stored as I32.
    use safetensors::tensor::{serialize, TensorView};
    use safetensors::Dtype;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = serde_json::json!({"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 10,
        "max_position_embeddings": 8, "hidden_size": 4, "num_attention_heads": 2, "num_hidden_layers": 1,
        "intermediate_size": 6, "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12});
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = [
        ("embeddings.word_embeddings.weight", vec![10, 4]),
        ("embeddings.position_embeddings.weight", vec![8, 4]),
        ("embeddings.token_type_embeddings.weight", vec![2, 4]),
        ("embeddings.LayerNorm.weight", vec![4]),
        ("embeddings.LayerNorm.bias", vec![4]),
        ("encoder.layer.0.attention.self.query.weight", vec![4, 4]),
        ("encoder.layer.0.attention.self.key.weight", vec![4, 4]),
        ("encoder.layer.0.attention.self.value.weight", vec![4, 4]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    let bufs: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
        .collect();
    let views: Vec<(String, TensorView)> = shapes
        .iter()
        .zip(&bufs)
        .map(|((n, s), b)| {
            let dt = if n.ends_with("key.weight") {
                Dtype::I32
            } else {
                Dtype::F32
            };
            (n.clone(), TensorView::new(dt, s.clone(), b).unwrap())
        })
        .collect();
    std::fs::write(
        tmp.path().join("model.safetensors"),
        serialize(views, None).unwrap(),
    )
    .unwrap();
    let e = bert::load(
        tmp.path(),
        Head::Embedding {
            pooling: Pooling::Mean,
        },
        0,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("encoder.layer.0.attention.self.key.weight")
            && e.to_string().contains("I32"),
        "{e}"
    );
}

#[test]
fn minilm_classifier_fine_tunes_and_quantises() {
    // A small version of the Banking77 run: a few AdamW steps on 24 real queries from 3 intents
    // lower the loss; then int8 linear layers give nearly the same logits.
    use flotilla_kernels::infer::{engine, F32Linears, Int8Linears};
    use flotilla_kernels::optim::{AdamW, AdamWConfig, Optimizer};
    let Some(dir) = model_dir() else { return };
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/data/banking77-train.csv");
    let text = std::fs::read_to_string(&csv).unwrap_or_else(|e| panic!("{}: {e}", csv.display()));
    let intents = ["card_arrival", "exchange_rate", "lost_or_stolen_card"];
    let tok = HfTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let mut seqs = Vec::new();
    let mut labels = Vec::new();
    for (label, intent) in intents.iter().enumerate() {
        // The first 8 unquoted rows of each intent.
        for line in text
            .lines()
            .filter(|l| l.ends_with(&format!(",{intent}")) && !l.starts_with('"'))
            .take(8)
        {
            let sentence = &line[..line.len() - intent.len() - 1];
            let mut ids = tok.encode(sentence, true).unwrap();
            let end = ids.iter().position(|t| *t == 102).unwrap() + 1;
            ids.truncate(end);
            seqs.push(ids);
            labels.push(label as u32);
        }
    }
    assert_eq!(seqs.len(), 24);
    let head = Head::Classifier {
        classes: 3,
        pooling: Pooling::Mean,
    };
    let mut model = bert::load(&dir, head, 1).unwrap();
    let batch = Batch::padded(&seqs, labels);
    let mut opt = AdamW::new(AdamWConfig::default(), model.num_params()).unwrap();
    let first = model.loss_and_grads(&batch).unwrap().0;
    for _ in 0..6 {
        let (_, g) = model.loss_and_grads(&batch).unwrap();
        opt.step(model.params_mut(), &g, 1e-4).unwrap();
    }
    let last = model.loss_and_grads(&batch).unwrap().0;
    println!("MiniLM classifier: loss {first:.4} -> {last:.4}");
    assert!(last < 0.7 * first, "loss {first} -> {last}");

    let f = engine::forward(&model, &F32Linears(&model), &batch)
        .unwrap()
        .logits;
    let q = engine::forward(&model, &Int8Linears::quantize(&model).unwrap(), &batch)
        .unwrap()
        .logits;
    let scale = f.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let diff = f
        .iter()
        .zip(&q)
        .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
    println!("int8 vs f32 logits: max diff {diff:.4} of max |logit| {scale:.4}");
    assert!(diff < 0.1 * scale);
}
