//! Tokenisers: ids against the Python `tokenizers` library, BPE round trips, char vocabulary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use flotilla_kernels::tokenize::{
    train_byte_level_bpe, BpeTrainConfig, CharTokenizer, HfTokenizer,
};
use flotilla_kernels::Error;
use serde_json::Value;

#[test]
fn minilm_ids_match_python_tokenizers() {
    let Some(path) = crate::common::shared("models/all-MiniLM-L6-v2/tokenizer.json") else {
        return;
    };
    let tok = HfTokenizer::from_file(&path).unwrap();
    assert_eq!(tok.vocab_size(), 30522);
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::common::fixture("minilm_tokenizer.json")).unwrap(),
    )
    .unwrap();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids_with_special"]),
            "{text:?}"
        );
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&case["ids_without_special"]),
            "{text:?}"
        );
        let decoded = tok.decode(&ids(&case["ids_with_special"]), true).unwrap();
        assert_eq!(decoded, case["decoded"].as_str().unwrap());
    }
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let full = tok.encode_full(text, true).unwrap();
        assert_eq!(full.ids, ids(&case["ids_with_special"]));
        assert_eq!(full.type_ids, ids(&case["type_ids_with_special"]));
        assert_eq!(
            full.attention_mask,
            ids(&case["attention_mask_with_special"])
        );
    }
    for pair in fx["pairs"].as_array().unwrap() {
        let (a, b) = (pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap());
        let e = tok.encode_pair(a, b, true).unwrap();
        assert_eq!(e.ids, ids(&pair["ids"]), "{a:?} / {b:?}");
        assert_eq!(e.type_ids, ids(&pair["type_ids"]));
        assert_eq!(e.attention_mask, ids(&pair["attention_mask"]));
    }
    let unpadded = tok.clone().without_padding();
    for case in fx["unpadded"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            unpadded.encode(text, true).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
    }
    let truncated = unpadded.with_truncation(16).unwrap();
    for case in fx["truncated_16"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            truncated.encode(text, true).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
    }
    assert!(tok.clone().with_truncation(0).is_err());
    assert_eq!(tok.token_to_id("[CLS]"), Some(101));
    assert!(matches!(
        tok.decode(&[101, 999_999], false),
        Err(Error::UnknownTokenId { id: 999_999, .. })
    ));
}

#[test]
fn loading_bad_tokenizer_files_is_an_error() {
    let missing = HfTokenizer::from_file("/nonexistent/tokenizer.json");
    assert!(matches!(missing, Err(Error::Io { .. })));
    assert!(matches!(
        HfTokenizer::from_bytes(b"{not json"),
        Err(Error::Tokenizer(_))
    ));
}

#[test]
fn byte_level_bpe_trains_and_round_trips_on_shakespeare() {
    let Some(path) = crate::common::shared("data/tinyshakespeare.txt") else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    let slice: Vec<&str> = text.lines().take(3000).collect();
    let cfg = BpeTrainConfig {
        vocab_size: 600,
        min_frequency: 2,
        special_tokens: vec!["<|endoftext|>".into()],
    };
    let tok = train_byte_level_bpe(slice.iter().copied(), &cfg).unwrap();
    assert_eq!(tok.vocab_size(), 600);
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    // Held-out text (later in the file), plus characters the corpus never had.
    let held_out: String = text
        .lines()
        .skip(20_000)
        .take(40)
        .collect::<Vec<_>>()
        .join("\n");
    for sample in [
        held_out.as_str(),
        "Zürich — 東京 🚗  double  spaces\ttab\n",
        " leading space",
        "",
    ] {
        let ids = tok.encode(sample, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), sample);
    }
    // Merges were learned: common English compresses well below one token per byte.
    let ids = tok.encode(&held_out, false).unwrap();
    assert!(
        ids.len() * 2 < held_out.len(),
        "{} tokens for {} bytes",
        ids.len(),
        held_out.len()
    );
    // Saved and reloaded, the tokenizer gives the same ids.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokenizer.json");
    tok.save(&file).unwrap();
    assert_eq!(
        HfTokenizer::from_file(&file)
            .unwrap()
            .encode(&held_out, false)
            .unwrap(),
        ids
    );
}

#[test]
fn bpe_training_rejects_bad_settings() {
    let cfg = BpeTrainConfig {
        vocab_size: 100,
        ..Default::default()
    };
    assert!(matches!(
        train_byte_level_bpe(["some text"], &cfg),
        Err(Error::InvalidArgument(_))
    ));
    let empty: [&str; 0] = [];
    assert!(train_byte_level_bpe(empty, &BpeTrainConfig::default()).is_err());
}

#[test]
fn char_tokenizer_round_trips_and_rejects_unknown_characters() {
    let corpus = "First Citizen:\nBefore we proceed any further, hear me speak.";
    let tok = CharTokenizer::from_corpus(corpus).unwrap();
    let mut distinct: Vec<char> = corpus.chars().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(tok.vocab_size(), distinct.len());
    assert_eq!(tok.chars(), &distinct[..]);
    let ids = tok.encode(corpus).unwrap();
    assert_eq!(ids.len(), corpus.chars().count());
    assert_eq!(tok.decode(&ids).unwrap(), corpus);
    // Ids are assigned in code-point order: '\n' < ' ' < ',' < ...
    assert_eq!(tok.encode("\n ").unwrap(), vec![0, 1]);
    match tok.encode("hear ZZ") {
        Err(Error::UnknownChar {
            ch: 'Z',
            position: 5,
        }) => {}
        other => panic!("expected UnknownChar Z at 5, got {other:?}"),
    }
    assert!(matches!(
        tok.decode(&[0, 999]),
        Err(Error::UnknownTokenId { id: 999, .. })
    ));
    assert!(CharTokenizer::from_corpus("").is_err());
    assert!(CharTokenizer::from_chars(vec!['a', 'a']).is_err());
    let json = serde_json::to_string(&tok).unwrap();
    assert_eq!(serde_json::from_str::<CharTokenizer>(&json).unwrap(), tok);
    assert!(serde_json::from_str::<CharTokenizer>(r#"{"chars":["a","a"]}"#).is_err());
}
