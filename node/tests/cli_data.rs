//! `flotilla data upload|list|show|export|dedup|rm` against a running node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use flotilla_node::cli::demo::local_node_config;
use flotilla_node::RunningNode;

const BANKING: &str = "/work/shared/data/banking77-train.csv";

fn flotilla(peer: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOTILLA_") {
            c.env_remove(k);
        }
    }
    c.env("FLOTILLA_LOG", "warn").env("FLOTILLA_PEER", peer);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn run(mut c: Command, args: &[&str]) -> Output {
    c.args(args);
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_show_export_dedup_and_rm_a_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let node = RunningNode::start(local_node_config(dir.path().join("a"), vec![]))
        .await
        .unwrap();
    let url = node.api_url();

    let mut up = flotilla(&url);
    up.env("FLOTILLA_PROGRESS", "1");
    let out = run(
        up,
        &[
            "data",
            "upload",
            BANKING,
            "--name",
            "banking",
            "--format",
            "csv",
            "--label-field",
            "category",
            "--records-per-shard",
            "2500",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("banking@1: 10003 records in 5 shards, 0 malformed"),
        "{said}"
    );
    assert!(
        text(&out.stderr).contains("uploading 100.0%"),
        "{}",
        text(&out.stderr)
    );

    // The same name again is refused with the node's reason and exit code 1.
    let out = run(
        flotilla(&url),
        &["data", "upload", BANKING, "--name", "banking"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );

    let out = run(flotilla(&url), &["data", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("banking"),
        "{}",
        text(&out.stdout)
    );

    let out = run(
        flotilla(&url),
        &["--output", "json", "data", "show", "banking@1"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["record"]["record_count"], 10003);
    assert_eq!(v["sample"].as_array().unwrap().len(), 5);
    assert_eq!(v["lineage"][0]["operation"], "upload");

    let csv = dir.path().join("out.csv");
    let out = run(
        flotilla(&url),
        &[
            "data",
            "export",
            "banking@1",
            csv.to_str().unwrap(),
            "--format",
            "csv",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The original's header names the label column `category`; the export calls it `label`.
    let original = std::fs::read_to_string(BANKING).unwrap();
    let exported = std::fs::read_to_string(&csv).unwrap();
    let body = |s: &str| s.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(exported.lines().next(), Some("text,label"));
    assert_eq!(body(&exported), body(&original));

    let out = run(flotilla(&url), &["data", "dedup", "banking", "--exact"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("banking@2 written from banking@1"),
        "{}",
        text(&out.stdout)
    );
    let out = run(flotilla(&url), &["data", "show", "banking@2"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("@2 dedup-exact") && shown.contains("@1 upload"),
        "{shown}"
    );

    let out = run(flotilla(&url), &["data", "show", "banking@9"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    let out = run(flotilla(&url), &["data", "rm", "banking"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(flotilla(&url), &["data", "show", "banking"]).await;
    assert_eq!(out.status.code(), Some(1));
    node.shutdown().await.unwrap();
}
