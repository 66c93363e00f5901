//! Banking77 data for the examples: CSV reading, tokenisation and the seeded held-out split,
//! shared so that fine-tuning and the int8 evaluation see exactly the same examples.

use std::path::Path;

use flotilla_kernels::infer::{engine, Linears};
use flotilla_kernels::models::{Batch, Transformer};
use flotilla_kernels::tokenize::HfTokenizer;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const SEP: u32 = 102;

/// Tokenised examples `(ids, label)`, split into `(held_out, train)`, and the label names.
#[allow(dead_code)] // each example reads the fields it needs
pub struct Data {
    pub train: Vec<(Vec<u32>, u32)>,
    pub held_out: Vec<(Vec<u32>, u32)>,
    pub categories: Vec<String>,
    /// The RNG after the split's shuffle; fine-tuning continues this stream for its batches.
    pub rng: StdRng,
}

/// Reads the CSV and categories, tokenises, shuffles with seed 42 and holds out 10 %.
pub fn load(model_dir: &Path, data_dir: &Path) -> Data {
    let categories: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(data_dir.join("banking77-categories.json")).unwrap(),
    )
    .unwrap();
    let rows = read_csv(&data_dir.join("banking77-train.csv"));
    let tok = HfTokenizer::from_file(model_dir.join("tokenizer.json")).unwrap();
    let mut data: Vec<(Vec<u32>, u32)> = rows
        .iter()
        .map(|(text, cat)| {
            let label = categories
                .iter()
                .position(|c| c == cat)
                .unwrap_or_else(|| panic!("unknown category {cat}"));
            (encode(&tok, text), label as u32)
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(42);
    data.shuffle(&mut rng);
    let held = data.len() / 10;
    let train = data.split_off(held);
    Data {
        train,
        held_out: data,
        categories,
        rng,
    }
}

/// Accuracy of `model` (its layers evaluated by `lin`) on `data`, in batches of 64.
pub fn accuracy(model: &Transformer, lin: &dyn Linears, data: &[(Vec<u32>, u32)]) -> f64 {
    let mut correct = 0usize;
    for chunk in data.chunks(64) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|(s, _)| s.clone()).collect();
        let out = engine::forward(model, lin, &Batch::padded(&seqs, vec![])).unwrap();
        let classes = out.logits.len() / chunk.len();
        for (row, (_, label)) in out.logits.chunks(classes).zip(chunk) {
            let pred = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |a, (i, v)| if *v > a.1 { (i, *v) } else { a },
                )
                .0;
            correct += usize::from(pred as u32 == *label);
        }
    }
    correct as f64 / data.len() as f64
}

/// Minimal CSV reader for `text,category` rows (quoted fields with doubled quotes allowed).
fn read_csv(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).expect("read csv");
    let mut rows = Vec::new();
    let (mut field, mut fields, mut quoted) = (String::new(), Vec::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            ('\n', false) => {
                fields.push(std::mem::take(&mut field));
                if fields.len() == 2 {
                    let cat = fields.pop().unwrap();
                    rows.push((fields.pop().unwrap(), cat.trim().to_string()));
                }
                fields.clear();
            }
            ('\r', false) => {}
            _ => field.push(c),
        }
    }
    if !field.is_empty() {
        fields.push(field);
        if fields.len() == 2 {
            let cat = fields.pop().unwrap();
            rows.push((fields.pop().unwrap(), cat.trim().to_string()));
        }
    }
    rows.remove(0); // header
    rows
}

/// Token ids up to and including [SEP] (this tokenizer.json pads every encoding to 128).
fn encode(tok: &HfTokenizer, text: &str) -> Vec<u32> {
    let mut ids = tok.encode(text, true).unwrap();
    let end = ids
        .iter()
        .position(|t| *t == SEP)
        .map_or(ids.len(), |p| p + 1);
    ids.truncate(end);
    ids
}
