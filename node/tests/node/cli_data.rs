//! `flotilla data upload|list|show|export|dedup|rm` against a running node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{flotilla_at, one_node, run, text};

/// As the binary bundles it.
const BANKING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/banking77-train.csv");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_list_show_export_dedup_and_rm_a_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let node = one_node(dir.path()).await;
    let url = node.api_url();

    let mut up = flotilla_at(&url);
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
        flotilla_at(&url),
        &["data", "upload", BANKING, "--name", "banking"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );

    let out = run(flotilla_at(&url), &["data", "list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("banking"),
        "{}",
        text(&out.stdout)
    );

    let out = run(
        flotilla_at(&url),
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
        flotilla_at(&url),
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

    let out = run(flotilla_at(&url), &["data", "dedup", "banking", "--exact"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("banking@2 written from banking@1"),
        "{}",
        text(&out.stdout)
    );
    let out = run(flotilla_at(&url), &["data", "show", "banking@2"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("@2 dedup-exact") && shown.contains("@1 upload"),
        "{shown}"
    );

    // The other operations, each a job writing the next version.
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[entity]]\nlabel = \"CARD\"\nterms = [\"card\"]\n\n[[entity]]\nlabel = \"VERB\"\nterms = [\"activate\", \"order\"]\n\n[[relation]]\nname = \"acts_on\"\nhead = \"VERB\"\ntail = \"CARD\"\nmax_tokens = 3\n",
    )
    .unwrap();
    let steps: [&[&str]; 5] = [
        &[
            "data",
            "clean",
            "banking@2",
            "--ops",
            "normalize,pii,dedup-exact,dedup-near",
        ],
        &[
            "data",
            "filter",
            "banking",
            "--min-chars",
            "12",
            "--max-chars",
            "400",
        ],
        &[
            "data",
            "label",
            "banking",
            "--rules",
            rules.to_str().unwrap(),
        ],
        &["data", "augment", "banking", "--copies", "1", "--seed", "7"],
        &[
            "data",
            "split",
            "banking",
            "--train",
            "0.8",
            "--val",
            "0.1",
            "--test",
            "0.1",
            "--label-field",
            "label",
        ],
    ];
    for (k, args) in steps.iter().enumerate() {
        let out = run(flotilla_at(&url), *args).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let want = format!("banking@{} written", k + 3);
        assert!(
            text(&out.stdout).contains(&want),
            "{args:?}: {}",
            text(&out.stdout)
        );
    }
    let out = run(
        flotilla_at(&url),
        &["--output", "json", "data", "show", "banking@7"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ops: Vec<&str> = v["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "split",
            "augment",
            "label",
            "filter",
            "normalize.pii.dedup-exact.dedup-near",
            "dedup-exact",
            "upload"
        ]
    );
    let fields: Vec<&str> = v["record"]["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"split") && fields.contains(&"entities"),
        "{fields:?}"
    );

    let out = run(flotilla_at(&url), &["data", "show", "banking@9"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    let out = run(flotilla_at(&url), &["data", "rm", "banking"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(flotilla_at(&url), &["data", "show", "banking"]).await;
    assert_eq!(out.status.code(), Some(1));
    node.shutdown().await.unwrap();
}
