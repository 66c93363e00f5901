//! Writes the seed corpora under `corpus/<target>/` from real encodings of our messages, specs
//! and files. Run once when a format changes (not part of fuzzing):
//!
//! ```sh
//! cargo +nightly run --manifest-path tests/fuzz/Cargo.toml --example seeds -- tests/fuzz/corpus
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flotilla_fuzz::checkpoint::{encode_tensors, parse_manifest, FileEntry, Manifest, Tensor};
use flotilla_protocol::catalog::{
    DatasetRecord, Entry, FieldType, Lineage, ModelAlias, Record, SchemaField,
};
use flotilla_protocol::jobs::JobId;
use flotilla_protocol::services::control::{RemoteError, RemoteErrorKind};
use flotilla_protocol::services::{
    actors, catalog, control, data, jobs, membership, serving, training,
};
use flotilla_protocol::training::{GradPayload, WorkerId};
use flotilla_protocol::{GpuState, GpuSummary, Hlc, NodeId, NodeInfo, RequestId};

fn put(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

/// A body and the same body framed with its length prefix.
fn put_frame(root: &Path, target: &str, name: &str, body: Vec<u8>) {
    let mut frame = (body.len() as u64).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    put(root, target, &format!("{name}.body"), &body);
    put(root, target, &format!("{name}.frame"), &frame);
}

fn err(kind: RemoteErrorKind) -> RemoteError {
    RemoteError {
        kind,
        message: "no such thing".into(),
    }
}

fn node_info() -> NodeInfo {
    NodeInfo {
        id: NodeId("12D3KooWQ8Vx".into()),
        incarnation: 3,
        seq: 41,
        listen_addrs: vec!["/ip4/10.0.0.2/tcp/7100".into()],
        api_addr: Some("10.0.0.2:8080".into()),
        version: "0.1.0".into(),
        cores: 16,
        ram_bytes: 64 << 30,
        gpus: GpuState::Gpus(vec![GpuSummary {
            name: "H100".into(),
            memory_bytes: 80 << 30,
            compute_capability: (9, 0),
        }]),
        compute_score: 1.5,
        load: 0.25,
        ready_replicas: vec![format!("clf/{}", "ab".repeat(32))],
    }
}

fn control(root: &Path) {
    let t = "frame_control";
    let id = RequestId(1);
    for (i, body) in [
        control::RequestBody::Ping,
        control::RequestBody::Echo(b"hello".to_vec()),
        control::RequestBody::GetNodeInfo,
        control::RequestBody::Leaving {
            id: NodeId("12D3KooWQ8Vx".into()),
            incarnation: 2,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let r = control::encode_request(&control::Request { id, body }).expect("encodes");
        put_frame(root, t, &format!("request-{i}"), r);
    }
    for (i, body) in [
        Ok(control::ResponseBody::Pong),
        Ok(control::ResponseBody::NodeInfo(Box::new(node_info()))),
        Err(err(RemoteErrorKind::Unavailable)),
    ]
    .into_iter()
    .enumerate()
    {
        let r = control::encode_response(&control::Response { id, body }).expect("encodes");
        put_frame(root, t, &format!("response-{i}"), r);
    }
}

fn hlc() -> Hlc {
    Hlc {
        physical_ms: 1_760_000_000_000,
        logical: 2,
        node: NodeId("12D3KooWQ8Vx".into()),
    }
}

fn records() -> Vec<Record> {
    vec![
        Record::Dataset(DatasetRecord {
            name: "intents".into(),
            version: 2,
            schema: vec![SchemaField {
                name: "text".into(),
                field_type: FieldType::Json,
                nullable: false,
            }],
            record_count: 1000,
            shard_hashes: vec!["cd".repeat(32)],
            lineage: Lineage {
                parent_version: Some(1),
                operation: "normalize".into(),
                parameters: BTreeMap::from([("form".into(), "nfkc".into())]),
            },
            created_at_ms: 7,
        }),
        Record::Alias(ModelAlias {
            model: "clf".into(),
            alias: "prod".into(),
            version: 3,
        }),
    ]
}

fn catalog(root: &Path) {
    let t = "frame_catalog";
    let delta = catalog::Delta {
        entries: records()
            .into_iter()
            .map(|r| (r.key(), Entry::write(hlc(), r)))
            .collect(),
    };
    let mut digest = catalog::Digest {
        buckets: vec![catalog::BucketSummary::default(); catalog::DIGEST_BUCKETS],
    };
    digest.buckets[3] = catalog::BucketSummary {
        hash: [7; 32],
        count: 2,
    };
    let id = RequestId(9);
    for (i, body) in [
        catalog::RequestBody::Sync(digest),
        catalog::RequestBody::Push(delta.clone()),
    ]
    .into_iter()
    .enumerate()
    {
        let r = catalog::encode_request(&catalog::Request { id, body }).expect("encodes");
        put_frame(root, t, &format!("request-{i}"), r);
    }
    for (i, body) in [
        Ok(catalog::ResponseBody::Sync(catalog::SyncReply {
            buckets: vec![3, 17],
            delta: delta.clone(),
        })),
        Ok(catalog::ResponseBody::Merged {
            applied: 2,
            rejected: 0,
        }),
        Err(err(RemoteErrorKind::BadRequest)),
    ]
    .into_iter()
    .enumerate()
    {
        let r = catalog::encode_response(&catalog::Response { id, body }).expect("encodes");
        put_frame(root, t, &format!("response-{i}"), r);
    }

    let g = "gossip";
    let hb = membership::encode(&membership::Message::Heartbeat(node_info())).expect("encodes");
    put(root, g, "heartbeat", &hb);
    let leave = membership::encode(&membership::Message::Leaving {
        id: NodeId("12D3KooWQ8Vx".into()),
        incarnation: 4,
    })
    .expect("encodes");
    put(root, g, "leaving", &leave);
    let m = catalog::encode_message(&catalog::Message::Delta(delta.clone())).expect("encodes");
    put(root, g, "catalog-delta", &m);
    let (_, entry) = &delta.entries[0];
    put(
        root,
        g,
        "catalog-entry",
        &catalog::encode_entry(entry).expect("encodes"),
    );
}

fn jobs(root: &Path) {
    let t = "frame_jobs";
    let job = JobId("job-1".into());
    let id = RequestId(5);
    for (i, body) in [
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
    .enumerate()
    {
        let r = jobs::encode_request(&jobs::Request { id, body }).expect("encodes");
        put_frame(root, t, &format!("request-{i}"), r);
    }
    for (i, body) in [
        Ok(jobs::ResponseBody::Ack),
        Ok(jobs::ResponseBody::Cancelled { was_running: true }),
        Ok(jobs::ResponseBody::Usage(Vec::new())),
        Err(err(RemoteErrorKind::Forbidden)),
    ]
    .into_iter()
    .enumerate()
    {
        let r = jobs::encode_response(&jobs::Response { id, body }).expect("encodes");
        put_frame(root, t, &format!("response-{i}"), r);
    }
}

fn actors(root: &Path) {
    let t = "frame_actors";
    let id = RequestId(6);
    for (i, body) in [
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
    .enumerate()
    {
        let r = actors::encode_request(&actors::Request { id, body }).expect("encodes");
        put_frame(root, t, &format!("request-{i}"), r);
    }
    for (i, body) in [
        Ok(actors::ResponseBody::Reply(vec![4, 5, 6])),
        Ok(actors::ResponseBody::Spawned),
        Err(err(RemoteErrorKind::NotFound)),
    ]
    .into_iter()
    .enumerate()
    {
        let r = actors::encode_response(&actors::Response { id, body }).expect("encodes");
        put_frame(root, t, &format!("response-{i}"), r);
    }
}

fn data(root: &Path) {
    let t = "frame_data";
    let id = RequestId(7);
    for (i, body) in [
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
    .enumerate()
    {
        let r = data::encode_request(&data::Request { id, body }).expect("encodes");
        put_frame(root, t, &format!("request-{i}"), r);
    }
    for (i, body) in [
        Ok(data::ResponseBody::Stored { complete: true }),
        Ok(data::ResponseBody::Deleted { shards: 4 }),
        Ok(data::ResponseBody::Shards(Vec::new())),
        Err(err(RemoteErrorKind::Internal)),
    ]
    .into_iter()
    .enumerate()
    {
        let r = data::encode_response(&data::Response { id, body }).expect("encodes");
        put_frame(root, t, &format!("response-{i}"), r);
    }
}

fn serving(root: &Path) {
    let t = "frame_serving";
    let id = RequestId(8);
    for (i, body) in [
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
    .enumerate()
    {
        let r = serving::encode_request(&serving::Request { id, body }).expect("encodes");
        put_frame(root, t, &format!("request-{i}"), r);
    }
    for (i, body) in [
        Ok(serving::ResponseBody::Completed {
            body: br#"{"id":"x","choices":[]}"#.to_vec(),
        }),
        Ok(serving::ResponseBody::Pieces {
            from: 0,
            pieces: vec!["Hel".into(), "lo".into()],
            end: None,
        }),
        Ok(serving::ResponseBody::Artifact {
            total: 10,
            bytes: vec![9; 10],
        }),
        Err(serving::ServingError {
            kind: serving::ErrorKind::NotFound,
            message: "no such deployment".into(),
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let r = serving::encode_response(&serving::Response { id, body }).expect("encodes");
        put_frame(root, t, &format!("response-{i}"), r);
    }
}

fn training(root: &Path) {
    let t = "training_payloads";
    let bodies = [
        training::RequestBody::Join {
            shard: 0,
            worker: WorkerId(1),
        },
        training::RequestBody::Pull {
            shard: 0,
            worker: WorkerId(1),
            after: Some(3),
            offset: 0,
            len: 4,
        },
        training::RequestBody::Push {
            shard: 1,
            worker: WorkerId(2),
            step: 4,
            samples: 16,
            grad: GradPayload::F32(vec![0.5, -1.0, 3.25, f32::MIN_POSITIVE]),
        },
        training::RequestBody::Finish {
            shard: 0,
            step: 4,
            norm: 1.5,
        },
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        // As an actor call's payload, and framed as the training service.
        put(
            root,
            t,
            &format!("payload-request-{i}"),
            &flotilla_actors::remote::encode(&body).expect("encodes"),
        );
        let r = training::encode_request(&training::Request {
            id: RequestId(i as u64),
            job: JobId("job-1".into()),
            body,
        })
        .expect("encodes");
        put_frame(root, t, &format!("request-{i}"), r);
    }
    let responses = [
        training::ResponseBody::Ack,
        training::ResponseBody::Params {
            version: 4,
            offset: 0,
            values: vec![1.0, 2.0, -0.0],
            norm: training::StepNorm::Applied(0.75),
        },
        training::ResponseBody::Pushed(training::PushOutcome::Applied {
            version: 5,
            staleness: 1,
        }),
    ];
    for (i, body) in responses.into_iter().enumerate() {
        put(
            root,
            t,
            &format!("payload-response-{i}"),
            &flotilla_actors::remote::encode(&body).expect("encodes"),
        );
        let r = training::encode_response(&training::Response {
            id: RequestId(i as u64),
            body: Ok(body),
        })
        .expect("encodes");
        put_frame(root, t, &format!("response-{i}"), r);
    }
}

fn checkpoints(root: &Path) {
    // What `checkpoint::save` writes: the weights and optimizer state as safetensors, then a
    // manifest listing every file's size and blake3.
    let mut weights = BTreeMap::new();
    weights.insert(
        "embeddings.word_embeddings.weight".to_string(),
        Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).expect("tensor"),
    );
    weights.insert(
        "classifier.bias".to_string(),
        Tensor::from_f16(vec![2], &[half::f16::ONE, half::f16::NEG_ONE]).expect("tensor"),
    );
    weights.insert(
        "pooler.bias".to_string(),
        Tensor::from_bf16(vec![1], &[half::bf16::ONE]).expect("tensor"),
    );
    weights.insert(
        "q.weight".to_string(),
        Tensor::from_i8(vec![3], &[-1, 0, 127]).expect("tensor"),
    );
    let mut optimizer = BTreeMap::new();
    optimizer.insert(
        "adamw.m".to_string(),
        Tensor::from_f32(vec![2], &[0.0, 1.0]).expect("tensor"),
    );
    optimizer.insert(
        "adamw.v".to_string(),
        Tensor::from_f32(vec![2], &[0.0, 1.0]).expect("tensor"),
    );
    let mut other = BTreeMap::new();
    other.insert(
        "ids".to_string(),
        Tensor::from_i32(vec![1, 2], &[7, -7]).expect("tensor"),
    );
    let tokenizer = br#"{"model":{}}"#.to_vec();
    let mut files = BTreeMap::new();
    for (name, tensors) in [
        ("model.safetensors", &weights),
        ("optimizer.safetensors", &optimizer),
        ("other.safetensors", &other),
    ] {
        let bytes = encode_tensors(tensors).expect("encodes");
        files.insert(
            name.to_string(),
            FileEntry {
                bytes: bytes.len() as u64,
                blake3: blake3::hash(&bytes).to_hex().to_string(),
            },
        );
        put(root, "checkpoint_tensors", name, &bytes);
    }
    files.insert(
        "tokenizer.json".to_string(),
        FileEntry {
            bytes: tokenizer.len() as u64,
            blake3: blake3::hash(&tokenizer).to_hex().to_string(),
        },
    );
    let manifest = Manifest {
        format: "flotilla-checkpoint".into(),
        version: 1,
        step: 12,
        model_config: serde_json::json!({"architecture": "classifier", "hidden": 4, "layers": 1}),
        weights_file: "model.safetensors".into(),
        optimizer_file: Some("optimizer.safetensors".into()),
        optimizer_step: Some(12),
        tokenizer: Some("tokenizer.json".into()),
        extra: serde_json::json!({"dataset": "intents@1", "lr": 0.001}),
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("writes");
    parse_manifest(&json).expect("the seed manifest parses");
    put(root, "checkpoint_manifest", "manifest.json", &json);
}

fn texts(root: &Path) {
    let spec = r#"[model.new]
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
    put(root, "train_spec", "classifier.toml", spec.as_bytes());
    put(root, "train_spec", "versioned", b"intents@3");
    let spec: flotilla_protocol::training::TrainSpec = toml::from_str(spec).expect("parses");
    put(
        root,
        "train_spec",
        "classifier-rewritten.toml",
        toml::to_string(&spec).expect("writes").as_bytes(),
    );

    let ops = [
        r#"[{"op":"normalize","field":"text","html":true,"nfkc":true,"lowercase":true}]"#,
        r#"[{"op":"filter","min_chars":3,"max_chars":200,"exclude":"^x+$"},{"op":"dedup-exact"}]"#,
        r#"[{"op":"pii","kinds":["email"]},{"op":"dedup-near","threshold":0.8}]"#,
        r#"[{"op":"dedup-exact"},{"op":"split","label_field":"label","seed":3}]"#,
        r#"[{"op":"augment","copies":2,"synonym":0.2,"swap":0.1,"seed":1},{"op":"pii"}]"#,
        r#"[{"op":"normalize"},{"op":"pii"}]"#,
    ];
    for (i, text) in ops.iter().enumerate() {
        // Only chains that parse are seeds; each is written as our serialiser writes it.
        if let Ok(chain) = flotilla_actors::data::job::worker::parse_ops(text) {
            let json = serde_json::to_string(&chain).expect("writes");
            put(
                root,
                "data_ops",
                &format!("chain-{i}.json"),
                json.as_bytes(),
            );
        } else {
            eprintln!("data_ops seed {i} does not parse: {text}");
        }
    }

    let openai = [
        r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0.5,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true}}"#,
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"seed":-3,"top_p":0.9}"#,
        r#"{"model":"m","prompt":["a","b"],"max_tokens":4,"n":1,"seed":3}"#,
        r#"{"model":"m","prompt":[[1,2,3]],"max_completion_tokens":2}"#,
        r#"{"model":"m","input":["a small boat","x"],"encoding_format":"float"}"#,
        r#"{"model":"m","input":"one","dimensions":384}"#,
        r#"{"model":"clf","input":["book a flight"],"top_k":2}"#,
    ];
    for (i, text) in openai.iter().enumerate() {
        put(
            root,
            "openai_requests",
            &format!("request-{i}.json"),
            text.as_bytes(),
        );
    }
}

fn main() {
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tests/fuzz/corpus"));
    control(&root);
    catalog(&root);
    jobs(&root);
    actors(&root);
    data(&root);
    serving(&root);
    training(&root);
    checkpoints(&root);
    texts(&root);
}
