//! Checkpoints: round trip, corruption and truncation detection naming the file, tensor spec
//! mismatches naming the tensor, and crash safety of rewrites.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use flotilla_kernels::checkpoint::{self, Checkpoint, DType, Tensor, TensorSpec, MANIFEST_FILE};
use flotilla_kernels::optim::{AdamW, AdamWConfig, Optimizer, OptimizerState, Sgd, SgdConfig};
use flotilla_kernels::Error;
use serde_json::json;

fn sample() -> Checkpoint {
    let mut ck = Checkpoint::new(42, json!({"d_model": 4, "layers": 1}));
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 3.0).collect();
    ck.weights
        .insert("layer0.w".into(), Tensor::from_f32(vec![3, 4], &w).unwrap());
    ck.weights.insert(
        "layer0.b".into(),
        Tensor::from_f32(vec![3], &[0.1, 0.2, 0.3]).unwrap(),
    );
    ck.weights.insert(
        "emb.q".into(),
        Tensor::from_i8(vec![2, 2], &[-127, 0, 5, 127]).unwrap(),
    );
    let half: Vec<half::f16> = [1.5f32, -2.0]
        .iter()
        .map(|&x| half::f16::from_f32(x))
        .collect();
    ck.weights
        .insert("ln.g".into(), Tensor::from_f16(vec![2], &half).unwrap());
    let mut opt = AdamW::new(AdamWConfig::default(), 12).unwrap();
    let mut p = w.clone();
    opt.step(&mut p, &[0.5; 12], 1e-3).unwrap();
    ck.set_optimizer_state(&opt.state()).unwrap();
    ck.tokenizer = Some(("tokenizer.json".into(), br#"{"version":"1.0"}"#.to_vec()));
    ck.extra = json!({"optimizer": {"kind": "adamw", "step": opt.steps_taken()}, "cursor": [[0, 17]], "seed": 7});
    ck
}

fn specs() -> Vec<TensorSpec> {
    vec![
        TensorSpec::new("layer0.w", DType::F32, vec![3, 4]),
        TensorSpec::new("layer0.b", DType::F32, vec![3]),
        TensorSpec::new("emb.q", DType::I8, vec![2, 2]),
        TensorSpec::new("ln.g", DType::F16, vec![2]),
    ]
}

#[test]
fn round_trip_preserves_everything_and_resumes_the_optimizer() {
    let dir = tempfile::tempdir().unwrap();
    let ck = sample();
    let manifest = checkpoint::save(dir.path(), &ck).unwrap();
    assert_eq!(manifest.files.len(), 3, "weights, optimizer, tokenizer");
    for (name, e) in &manifest.files {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        assert_eq!(e.bytes, bytes.len() as u64);
        assert_eq!(e.blake3, blake3::hash(&bytes).to_hex().to_string());
    }
    let back = checkpoint::load_checked(dir.path(), &specs()).unwrap();
    assert_eq!(back, ck);
    assert_eq!(back.weights["ln.g"].to_f32().unwrap(), vec![1.5, -2.0]);
    assert_eq!(
        back.weights["emb.q"].to_i8().unwrap(),
        vec![-127, 0, 5, 127]
    );
    let st = back.optimizer_state().unwrap().unwrap();
    assert_eq!(st, ck.optimizer_state().unwrap().unwrap());
    assert!(matches!(st, OptimizerState::AdamW { step: 1, .. }));
    assert_eq!(
        AdamW::from_state(AdamWConfig::default(), st)
            .unwrap()
            .steps_taken(),
        1
    );
    // No temporary files remain.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    // The weights file is standard safetensors.
    let raw = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    assert_eq!(st.tensor("layer0.w").unwrap().shape(), &[3, 4]);
}

fn expect_corrupt(res: Result<Checkpoint, Error>, file: &str, reason_has: &str) {
    match res {
        Err(Error::CorruptFile { file: f, reason }) => {
            assert_eq!(f, file);
            assert!(reason.contains(reason_has), "{reason}");
            let msg = Error::CorruptFile { file: f, reason }.to_string();
            assert!(msg.contains(file), "{msg}");
        }
        other => panic!("expected corrupt {file}, got {other:?}"),
    }
}

#[test]
fn a_flipped_byte_or_truncation_is_an_error_naming_the_file() {
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "tokenizer.json",
    ] {
        let dir = tempfile::tempdir().unwrap();
        checkpoint::save(dir.path(), &sample()).unwrap();
        let path = dir.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        expect_corrupt(checkpoint::load(dir.path()), file, "blake3");
        assert!(checkpoint::verify(dir.path()).is_err());

        bytes.truncate(bytes.len() / 2);
        std::fs::write(&path, &bytes).unwrap();
        expect_corrupt(checkpoint::load(dir.path()), file, "truncated");

        std::fs::remove_file(&path).unwrap();
        expect_corrupt(checkpoint::load(dir.path()), file, "missing");
    }
}

#[test]
fn a_bad_manifest_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(dir.path(), &sample()).unwrap();
    let mpath = dir.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&mpath).unwrap();
    std::fs::write(&mpath, &text[..text.len() / 2]).unwrap();
    expect_corrupt(checkpoint::load(dir.path()), MANIFEST_FILE, "");
    std::fs::write(&mpath, text.replace("\"step\": 42", "\"step\": 43")).unwrap();
    assert_eq!(
        checkpoint::load(dir.path()).unwrap().step,
        43,
        "the manifest itself is the record"
    );
    std::fs::write(
        &mpath,
        text.replace("tokenizer.json\": {", "../escape.json\": {"),
    )
    .unwrap();
    expect_corrupt(
        checkpoint::load(dir.path()),
        MANIFEST_FILE,
        "invalid file name",
    );
    std::fs::remove_file(&mpath).unwrap();
    assert!(matches!(
        checkpoint::load(dir.path()),
        Err(Error::Io { .. })
    ));
}

#[test]
fn tensor_mismatches_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(dir.path(), &sample()).unwrap();
    let check =
        |specs: Vec<TensorSpec>, name: &str, reason_has: &str| match checkpoint::load_checked(
            dir.path(),
            &specs,
        ) {
            Err(Error::TensorMismatch { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(reason.contains(reason_has), "{reason}");
            }
            other => panic!("expected mismatch on {name}, got {other:?}"),
        };
    let mut s = specs();
    s[0].shape = vec![4, 3];
    check(s, "layer0.w", "shape");
    let mut s = specs();
    s[3].dtype = DType::BF16;
    check(s, "ln.g", "dtype");
    let mut s = specs();
    s.push(TensorSpec::new("head.w", DType::F32, vec![1]));
    check(s, "head.w", "missing");
    let mut s = specs();
    s.retain(|t| t.name != "emb.q");
    check(s, "emb.q", "not expected");
}

#[test]
fn rewriting_removes_the_old_manifest_first() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(dir.path(), &sample()).unwrap();
    // A rewrite that fails after removing the manifest (here: bad tokenizer name) leaves a
    // directory that does not load, rather than old manifest + new files.
    let mut bad = sample();
    bad.step = 43;
    bad.tokenizer = Some(("../evil.json".into(), vec![1]));
    assert!(matches!(
        checkpoint::save(dir.path(), &bad),
        Err(Error::InvalidArgument(_))
    ));
    assert!(checkpoint::load(dir.path()).is_err());
    let mut good = sample();
    good.step = 44;
    checkpoint::save(dir.path(), &good).unwrap();
    assert_eq!(checkpoint::load(dir.path()).unwrap().step, 44);
}

#[test]
fn sgd_state_round_trips_even_before_its_first_step() {
    for momentum_steps in [0usize, 2] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SgdConfig {
            momentum: 0.9,
            ..Default::default()
        };
        let mut sgd = Sgd::new(cfg, 5).unwrap();
        let mut p = vec![1.0f32; 5];
        for _ in 0..momentum_steps {
            sgd.step(&mut p, &[0.1, 0.2, 0.3, 0.4, 0.5], 0.1).unwrap();
        }
        let mut ck = sample();
        ck.set_optimizer_state(&sgd.state()).unwrap();
        checkpoint::save(dir.path(), &ck).unwrap();
        let st = checkpoint::load(dir.path())
            .unwrap()
            .optimizer_state()
            .unwrap()
            .unwrap();
        assert_eq!(st, sgd.state());
        assert_eq!(Sgd::from_state(cfg, 5, st).unwrap().state(), sgd.state());
    }
    // No optimizer stored: None, not an error.
    let mut ck = sample();
    ck.optimizer.clear();
    ck.optimizer_step = None;
    assert_eq!(ck.optimizer_state().unwrap(), None);
    // A step without its tensors is an error naming the missing one.
    ck.optimizer_step = Some(3);
    match ck.optimizer_state() {
        Err(Error::TensorMismatch { name, .. }) => assert_eq!(name, "adamw.m"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tensor_constructors_check_lengths() {
    assert!(matches!(
        Tensor::from_f32(vec![2, 3], &[0.0; 5]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(Tensor::from_f32(vec![usize::MAX, 2], &[]).is_err());
    assert!(Tensor::from_i8(vec![1], &[1]).unwrap().to_f32().is_err());
    assert!(checkpoint::save(
        tempfile::tempdir().unwrap().path(),
        &Checkpoint::new(0, json!({}))
    )
    .is_err());
}

#[test]
fn random_checkpoints_round_trip_and_any_flipped_byte_is_caught() {
    use rand::Rng;
    let mut rng = crate::common::seeded("checkpoint property");
    for round in 0..12 {
        let mut ck = Checkpoint::new(rng.gen(), json!({"round": round}));
        for t in 0..rng.gen_range(1..6) {
            let rank = rng.gen_range(0..4);
            // Zero-sized dimensions included: a tensor may legitimately be empty.
            let shape: Vec<usize> = (0..rank).map(|_| rng.gen_range(0..7)).collect();
            let n: usize = shape.iter().product();
            let tensor = match rng.gen_range(0..5) {
                0 => Tensor::from_f32(shape, &(0..n).map(|_| rng.gen()).collect::<Vec<f32>>()),
                1 => Tensor::from_i8(shape, &(0..n).map(|_| rng.gen()).collect::<Vec<i8>>()),
                2 => Tensor::from_i32(shape, &(0..n).map(|_| rng.gen()).collect::<Vec<i32>>()),
                3 => Tensor::from_f16(
                    shape,
                    &(0..n)
                        .map(|_| half::f16::from_f32(rng.gen()))
                        .collect::<Vec<_>>(),
                ),
                _ => Tensor::from_bf16(
                    shape,
                    &(0..n)
                        .map(|_| half::bf16::from_f32(rng.gen()))
                        .collect::<Vec<_>>(),
                ),
            }
            .unwrap();
            ck.weights.insert(format!("t{t}"), tensor);
        }
        if rng.gen_bool(0.5) {
            let st = OptimizerState::Sgd {
                step: 3,
                momentum: (0..7).map(|_| rng.gen()).collect(),
            };
            ck.set_optimizer_state(&st).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let manifest = checkpoint::save(dir.path(), &ck).unwrap();
        assert_eq!(checkpoint::load(dir.path()).unwrap(), ck);

        // Flip one random bit of one random listed file: loading must fail naming that file.
        let files: Vec<&String> = manifest.files.keys().collect();
        let file = files[rng.gen_range(0..files.len())];
        let path = dir.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = rng.gen_range(0..bytes.len());
        bytes[at] ^= 1 << rng.gen_range(0..8);
        std::fs::write(&path, &bytes).unwrap();
        match checkpoint::load(dir.path()) {
            Err(Error::CorruptFile { file: f, .. }) => assert_eq!(&f, file),
            other => panic!("flip at byte {at} of {file} not caught: {other:?}"),
        }
    }
}
