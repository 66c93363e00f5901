//! Every decoder a peer or a client can reach, fed random bytes and mutated valid inputs: it
//! never panics, and what it accepts encodes back to something it decodes to the same value
//! (so a frame is never read two ways). Covers each request-response service's requests and
//! responses, the training spec TOML and the OpenAI request bodies with their validation.

#![allow(clippy::unwrap_used)]

use flotilla_protocol::jobs::JobId;
use flotilla_protocol::openai::chat::ChatCompletionRequest;
use flotilla_protocol::openai::completions::CompletionRequest;
use flotilla_protocol::openai::embeddings::EmbeddingRequest;
use flotilla_protocol::services::{actors, data, jobs, serving};
use flotilla_protocol::training::TrainSpec;
use flotilla_protocol::RequestId;
use proptest::prelude::*;

/// A valid input, changed by one of: a flipped byte, a cut tail, an inserted byte.
fn mutate(valid: Vec<u8>, at: usize, byte: u8, how: u8) -> Vec<u8> {
    let mut b = valid;
    if b.is_empty() {
        return vec![byte];
    }
    let i = at % b.len();
    match how % 3 {
        0 => b[i] ^= byte | 1,
        1 => b.truncate(i),
        _ => b.insert(i, byte),
    }
    b
}

fn jobs_samples() -> Vec<Vec<u8>> {
    let job = JobId("job-1".into());
    [
        jobs::RequestBody::Usage,
        jobs::RequestBody::Survey { job: job.clone() },
        jobs::RequestBody::CancelTask {
            job: job.clone(),
            task: 3,
            epoch: 9,
        },
        jobs::RequestBody::PreemptTask {
            job: job.clone(),
            task: 1,
            by: JobId("job-2".into()),
            reason: "room".into(),
        },
    ]
    .into_iter()
    .map(|body| {
        jobs::encode_request(&jobs::Request {
            id: RequestId(5),
            body,
        })
        .unwrap()
    })
    .collect()
}

fn actors_samples() -> Vec<Vec<u8>> {
    [
        actors::RequestBody::Call {
            actor: "ps-1".into(),
            payload: vec![1, 2, 3],
        },
        actors::RequestBody::Spawn {
            role: "trainer".into(),
            name: "t-1".into(),
            args: vec![0; 16],
        },
        actors::RequestBody::Stop {
            actor: "t-1".into(),
        },
    ]
    .into_iter()
    .map(|body| {
        actors::encode_request(&actors::Request {
            id: RequestId(6),
            body,
        })
        .unwrap()
    })
    .collect()
}

fn data_samples() -> Vec<Vec<u8>> {
    [
        data::RequestBody::List { dataset: None },
        data::RequestBody::DeleteVersion {
            dataset: "d".into(),
            version: 2,
        },
        data::RequestBody::GetChunk {
            shard: data::ShardId::new("d", 1, 0),
            chunk: 0,
            max_bytes: 1024,
        },
    ]
    .into_iter()
    .map(|body| {
        data::encode_request(&data::Request {
            id: RequestId(7),
            body,
        })
        .unwrap()
    })
    .collect()
}

fn serving_samples() -> Vec<Vec<u8>> {
    [
        serving::RequestBody::Load,
        serving::RequestBody::FetchBlob {
            blob: "a".repeat(64),
            offset: 8,
            len: 1024,
        },
        serving::RequestBody::HeldBlobs {
            blobs: vec!["b".repeat(64)],
        },
    ]
    .into_iter()
    .map(|body| {
        serving::encode_request(&serving::Request {
            id: RequestId(8),
            body,
        })
        .unwrap()
    })
    .collect()
}

const SPEC: &str = r#"
[model.new]
architecture = "classifier"
vocab_size = 128
hidden_size = 64
layers = 1
heads = 2
max_seq_len = 64
num_labels = 6

[dataset]
name = "intents@1"
text_field = "text"
label_field = "label"

[args]
per_device_batch = 16
epochs = 2

[output]
model = "clf"
"#;

const CHAT: &str = r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0.5,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true}}"#;
const COMPLETION: &str = r#"{"model":"m","prompt":["a","b"],"max_tokens":4,"n":1,"seed":3}"#;
const EMBEDDING: &str = r#"{"model":"m","input":["a small boat","x"],"encoding_format":"float"}"#;

macro_rules! service_round_trip {
    ($svc:ident, $bytes:expr) => {{
        if let Ok(r) = $svc::decode_request($bytes) {
            let again = $svc::encode_request(&r).unwrap();
            prop_assert_eq!($svc::decode_request(&again).unwrap(), r);
        }
        if let Ok(r) = $svc::decode_response($bytes) {
            let again = $svc::encode_response(&r).unwrap();
            prop_assert_eq!($svc::decode_response(&again).unwrap(), r);
        }
    }};
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn service_decoders_survive_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        service_round_trip!(jobs, &bytes);
        service_round_trip!(actors, &bytes);
        service_round_trip!(data, &bytes);
        service_round_trip!(serving, &bytes);
        let _ = flotilla_protocol::services::catalog::decode_request(&bytes);
        let _ = flotilla_protocol::services::catalog::decode_response(&bytes);
        let _ = flotilla_protocol::services::training::decode_request(&bytes);
        let _ = flotilla_protocol::services::training::decode_response(&bytes);
    }

    #[test]
    fn service_decoders_survive_mutated_frames(
        which in 0usize..64, at in any::<usize>(), byte in any::<u8>(), how in any::<u8>()
    ) {
        let samples: Vec<Vec<u8>> = jobs_samples()
            .into_iter()
            .chain(actors_samples())
            .chain(data_samples())
            .chain(serving_samples())
            .collect();
        let bytes = mutate(samples[which % samples.len()].clone(), at, byte, how);
        service_round_trip!(jobs, &bytes);
        service_round_trip!(actors, &bytes);
        service_round_trip!(data, &bytes);
        service_round_trip!(serving, &bytes);
    }

    #[test]
    fn the_train_spec_parser_survives_mutated_toml(at in any::<usize>(), byte in any::<u8>(), how in any::<u8>()) {
        let text = String::from_utf8_lossy(&mutate(SPEC.as_bytes().to_vec(), at, byte, how)).to_string();
        if let Ok(spec) = toml::from_str::<TrainSpec>(&text) {
            let _ = spec.validate();
        }
    }

    #[test]
    fn openai_bodies_survive_mutation(which in 0usize..3, at in any::<usize>(), byte in any::<u8>(), how in any::<u8>()) {
        let valid = [CHAT, COMPLETION, EMBEDDING][which];
        let bytes = mutate(valid.as_bytes().to_vec(), at, byte, how);
        let _ = serde_json::from_slice::<ChatCompletionRequest>(&bytes);
        let _ = serde_json::from_slice::<CompletionRequest>(&bytes);
        let _ = serde_json::from_slice::<EmbeddingRequest>(&bytes);
    }

    #[test]
    fn openai_bodies_survive_random_text(text in "\\PC{0,256}") {
        let _ = serde_json::from_str::<ChatCompletionRequest>(&text);
        let _ = serde_json::from_str::<CompletionRequest>(&text);
        let _ = serde_json::from_str::<EmbeddingRequest>(&text);
        let _ = toml::from_str::<TrainSpec>(&text);
    }
}

#[test]
fn the_samples_are_valid_to_start_from() {
    for b in jobs_samples() {
        jobs::decode_request(&b).unwrap();
    }
    for b in actors_samples() {
        actors::decode_request(&b).unwrap();
    }
    for b in data_samples() {
        data::decode_request(&b).unwrap();
    }
    for b in serving_samples() {
        serving::decode_request(&b).unwrap();
    }
    let spec: TrainSpec = toml::from_str(SPEC).unwrap();
    spec.validate().unwrap();
    serde_json::from_str::<ChatCompletionRequest>(CHAT).unwrap();
    serde_json::from_str::<CompletionRequest>(COMPLETION).unwrap();
    serde_json::from_str::<EmbeddingRequest>(EMBEDDING).unwrap();
}
