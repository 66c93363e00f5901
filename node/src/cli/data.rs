//! `flotilla data …`: datasets through any node's API — upload (streamed, with progress on
//! stderr), list, show, export, rm, and the operations, each submitted as a job and waited for.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::client::Unreachable;
use super::{Cli, Output};
use crate::config::read_token;

/// How long an operation is waited for.
const OP_WAIT: Duration = Duration::from_secs(3600);

/// `flotilla data …`.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    Jsonl,
    Csv,
    Text,
}

/// What to do with malformed lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnErrorArg {
    Skip,
    Fail,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// Flags every operation takes.
#[derive(Debug, Clone, Args)]
pub struct OpCommon {
    /// The dataset, `NAME` (latest version) or `NAME@VERSION`.
    pub dataset: String,
    /// The record field the operation works on.
    #[arg(long, env = "FLOTILLA_DATA_FIELD", default_value = "text")]
    pub field: String,
    /// Submit the job and return without waiting for it.
    #[arg(long, env = "FLOTILLA_DATA_NO_WAIT")]
    pub no_wait: bool,
}

/// Data subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Upload a file as version 1 of a new dataset.
    Upload {
        file: PathBuf,
        #[arg(long, env = "FLOTILLA_DATA_NAME")]
        name: String,
        /// Input format; guessed from the file extension when absent.
        #[arg(long, env = "FLOTILLA_DATA_FORMAT", value_enum)]
        format: Option<InputFormat>,
        /// Source field holding the text.
        #[arg(long, env = "FLOTILLA_DATA_TEXT_FIELD", default_value = "text")]
        text_field: String,
        /// Source field holding the label.
        #[arg(long, env = "FLOTILLA_DATA_LABEL_FIELD")]
        label_field: Option<String>,
        #[arg(long, env = "FLOTILLA_DATA_ON_ERROR", value_enum, default_value_t = OnErrorArg::Skip)]
        on_error: OnErrorArg,
        /// Records per shard (the node's default when absent).
        #[arg(long, env = "FLOTILLA_DATA_RECORDS_PER_SHARD")]
        records_per_shard: Option<usize>,
    },
    /// List datasets and their versions.
    List,
    /// Show a version: schema, counts, sample rows, shard holders, lineage.
    Show { dataset: String },
    /// Export a version's records in upload order to FILE.
    Export {
        dataset: String,
        file: PathBuf,
        #[arg(long, env = "FLOTILLA_DATA_EXPORT_FORMAT", value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
    /// Delete a version (`NAME@V`) or the whole dataset (`NAME`).
    Rm { dataset: String },
    /// Unicode NFKC, whitespace, control characters, HTML tags and entities.
    Normalize {
        #[command(flatten)]
        common: OpCommon,
        /// Lowercase as well.
        #[arg(long)]
        lowercase: bool,
    },
    /// Drop records by length, repetition, symbol ratio or pattern.
    Filter {
        #[command(flatten)]
        common: OpCommon,
        #[arg(long)]
        min_chars: Option<usize>,
        #[arg(long)]
        max_chars: Option<usize>,
        #[arg(long)]
        max_repetition: Option<f64>,
        #[arg(long)]
        max_symbol_ratio: Option<f64>,
        /// Keep only records matching this regex.
        #[arg(long)]
        include: Option<String>,
        /// Drop records matching this regex.
        #[arg(long)]
        exclude: Option<String>,
    },
    /// Mask e-mail addresses, phone, card and account numbers.
    Pii {
        #[command(flatten)]
        common: OpCommon,
    },
    /// Remove duplicates across the cluster: `--exact` by content hash, `--near` by MinHash.
    Dedup {
        #[command(flatten)]
        common: OpCommon,
        #[arg(long, conflicts_with = "near")]
        exact: bool,
        #[arg(long)]
        near: bool,
        /// Jaccard similarity for `--near`.
        #[arg(long, default_value_t = 0.8)]
        threshold: f64,
    },
    /// Label entities and relations with a rules file (TOML or JSON).
    Label {
        #[command(flatten)]
        common: OpCommon,
        #[arg(long)]
        rules: PathBuf,
    },
    /// EDA-style augmentation (synonyms, insertion, swap, deletion, character noise).
    Augment {
        #[command(flatten)]
        common: OpCommon,
        #[arg(long, default_value_t = 1)]
        copies: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Train/validation/test split, stratified by label when `--label-field` is given.
    Split {
        #[command(flatten)]
        common: OpCommon,
        #[arg(long, default_value_t = 0.8)]
        train: f64,
        #[arg(long, default_value_t = 0.1)]
        val: f64,
        /// The test share: what train and val leave.
        #[arg(long)]
        test: Option<f64>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        label_field: Option<String>,
    },
    /// Several operations in one job, e.g. `--ops normalize,pii,dedup-exact,dedup-near`.
    Clean {
        #[command(flatten)]
        common: OpCommon,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "normalize,pii,dedup-exact"
        )]
        ops: Vec<String>,
        /// Jaccard similarity for `dedup-near`.
        #[arg(long, default_value_t = 0.8)]
        threshold: f64,
    },
}

/// A node's API as the data commands use it: longer timeouts than the other commands, since
/// uploads, exports and waited-for jobs take as long as the data is big.
struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn from_cli(cli: &Cli) -> anyhow::Result<Api> {
        let cfg = cli.client_config()?;
        let token = cfg.api_token_file.as_deref().map(read_token).transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(OP_WAIT + Duration::from_secs(60))
            .build()?;
        Ok(Api {
            base: cfg.peer.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        anyhow::bail!("{}", error_text(status.as_u16(), &text))
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.call(method, path, body).await?.json().await?)
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            anyhow::Error::new(Unreachable {
                url: self.base.clone(),
                reason: e.to_string(),
            })
        } else {
            anyhow::anyhow!("request to {} failed: {e}", self.base)
        }
    }
}

/// The node's error message, or the raw body.
fn error_text(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match v["error"]["message"].as_str() {
        Some(m) => format!("{m} (HTTP {status})"),
        None => format!("HTTP {status}: {body}"),
    }
}

/// `NAME` or `NAME@VERSION`.
fn split_ref(s: &str) -> anyhow::Result<(String, Option<u64>)> {
    match s.split_once('@') {
        None => Ok((s.to_string(), None)),
        Some((n, v)) => {
            let v: u64 = v
                .parse()
                .with_context(|| format!("{s:?}: the version after @ must be a number"))?;
            Ok((n.to_string(), Some(v)))
        }
    }
}

/// Runs a data subcommand.
pub async fn run(cli: &Cli, args: &DataArgs) -> anyhow::Result<()> {
    let api = Api::from_cli(cli)?;
    match &args.command {
        DataCommand::Upload {
            file,
            name,
            format,
            text_field,
            label_field,
            on_error,
            records_per_shard,
        } => {
            let format = format.unwrap_or_else(|| guess_format(file));
            let mut q = format!(
                "/api/v1/data?name={name}&format={}&text_field={}&on_error={}&source={}",
                enc(&format!("{format:?}").to_lowercase()),
                enc(text_field),
                enc(&format!("{on_error:?}").to_lowercase()),
                enc(&file
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default()),
            );
            if let Some(l) = label_field {
                q.push_str(&format!("&label_field={}", enc(l)));
            }
            if let Some(r) = records_per_shard {
                q.push_str(&format!("&records_per_shard={r}"));
            }
            let v =
                super::data_upload::post_file(&api.base, api.token.as_deref(), &q, file).await?;
            print_upload(cli, &v)
        }
        DataCommand::List => {
            let v = api.json(reqwest::Method::GET, "/api/v1/data", None).await?;
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!(
                "{:<24} {:>8} {:>10} {:>7}  {:<16} VERSIONS",
                "NAME", "LATEST", "RECORDS", "SHARDS", "OPERATION"
            );
            for d in v["datasets"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:>8} {:>10} {:>7}  {:<16} {}",
                    d["name"].as_str().unwrap_or(""),
                    d["latest"],
                    d["records"],
                    d["shards"],
                    d["operation"].as_str().unwrap_or(""),
                    d["versions"]
                );
            }
            Ok(())
        }
        DataCommand::Show { dataset } => {
            let (name, v) = split_ref(dataset)?;
            let path = match v {
                Some(v) => format!("/api/v1/data/{name}/{v}"),
                None => format!("/api/v1/data/{name}"),
            };
            let v = api.json(reqwest::Method::GET, &path, None).await?;
            print_show(cli, &v)
        }
        DataCommand::Export {
            dataset,
            file,
            format,
        } => {
            let (name, v) = split_ref(dataset)?;
            let v = v.context("export needs NAME@VERSION")?;
            let fmt = format!("{format:?}").to_lowercase();
            let mut resp = api
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/data/{name}/{v}/export?format={fmt}"),
                    None,
                )
                .await?;
            let mut out = tokio::io::BufWriter::new(
                tokio::fs::File::create(file)
                    .await
                    .with_context(|| format!("cannot create {}", file.display()))?,
            );
            let mut bytes = 0u64;
            while let Some(chunk) = resp.chunk().await.context("export interrupted")? {
                bytes += chunk.len() as u64;
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
            eprintln!("exported {name}@{v} to {} ({bytes} bytes)", file.display());
            Ok(())
        }
        DataCommand::Rm { dataset } => {
            let (name, v) = split_ref(dataset)?;
            let path = match v {
                Some(v) => format!("/api/v1/data/{name}/{v}"),
                None => format!("/api/v1/data/{name}"),
            };
            let r = api.json(reqwest::Method::DELETE, &path, None).await?;
            println!("deleted {} version(s) of {name}", r["deleted_versions"]);
            Ok(())
        }
        op => {
            let (common, ops) = super::data_ops::op_chain(op)?;
            let (name, version) = split_ref(&common.dataset)?;
            let body = json!({
                "version": version,
                "ops": ops,
                "wait": !common.no_wait,
                "wait_secs": OP_WAIT.as_secs(),
            });
            let started = Instant::now();
            eprintln!(
                "submitting {} on {}…",
                ops.iter()
                    .map(|o| o["op"].as_str().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(","),
                common.dataset
            );
            let v = api
                .json(
                    reqwest::Method::POST,
                    &format!("/api/v1/data/{name}/ops"),
                    Some(&body),
                )
                .await?;
            if cli.output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if common.no_wait {
                println!(
                    "job {} will write {name}@{}",
                    v["job"].as_str().unwrap_or(""),
                    v["version"]
                );
                return Ok(());
            }
            println!(
                "{name}@{} written from {name}@{} by job {} in {:.1}s: {} records",
                v["version"],
                v["parent_version"],
                v["job"].as_str().unwrap_or(""),
                started.elapsed().as_secs_f64(),
                v["result"]["records"]
            );
            for (entry, detail) in v["result"]["report"]["lineage"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(
                    v["result"]["report"]["details"]
                        .as_array()
                        .into_iter()
                        .flatten(),
                )
            {
                println!(
                    "  {:<12} {:>8} -> {:<8} {}",
                    entry["operation"].as_str().unwrap_or(""),
                    entry["count_in"],
                    entry["count_out"],
                    detail
                );
            }
            Ok(())
        }
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn guess_format(file: &Path) -> InputFormat {
    match file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_lowercase)
        .as_deref()
    {
        Some("csv") => InputFormat::Csv,
        Some("txt") | Some("text") => InputFormat::Text,
        _ => InputFormat::Jsonl,
    }
}

fn print_upload(cli: &Cli, v: &Value) -> anyhow::Result<()> {
    if cli.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let r = &v["record"];
    println!(
        "{}@{}: {} records in {} shards, {} malformed",
        r["name"].as_str().unwrap_or(""),
        r["version"],
        r["record_count"],
        r["shard_hashes"].as_array().map_or(0, |a| a.len()),
        v["report"]["malformed"]
    );
    for e in v["report"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .take(20)
    {
        println!(
            "  line {}: {}",
            e["line"],
            e["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn print_show(cli: &Cli, v: &Value) -> anyhow::Result<()> {
    if cli.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let r = &v["record"];
    println!(
        "{}@{}  ({} records, versions {})",
        r["name"].as_str().unwrap_or(""),
        r["version"],
        r["record_count"],
        v["versions"]
    );
    println!("schema:");
    for f in r["schema"].as_array().into_iter().flatten() {
        println!(
            "  {} {:?}{}",
            f["name"].as_str().unwrap_or(""),
            f["field_type"].as_str().unwrap_or(""),
            if f["nullable"] == true {
                " (nullable)"
            } else {
                ""
            }
        );
    }
    println!("shards:");
    for s in v["shards"].as_array().into_iter().flatten() {
        let holders: Vec<&str> = s["holders"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str())
            .collect();
        println!(
            "  #{} {} on {}",
            s["index"],
            &s["hash"].as_str().unwrap_or("")[..12.min(s["hash"].as_str().unwrap_or("").len())],
            holders.join(", ")
        );
    }
    println!("sample:");
    for row in v["sample"].as_array().into_iter().flatten() {
        println!("  {row}");
    }
    println!("lineage:");
    for l in v["lineage"].as_array().into_iter().flatten() {
        println!(
            "  @{} {} ({} records){}",
            l["version"],
            l["operation"].as_str().unwrap_or(""),
            l["record_count"],
            l["parent_version"]
                .as_u64()
                .map(|p| format!(" from @{p}"))
                .unwrap_or_default()
        );
        for s in l["steps"].as_array().into_iter().flatten() {
            if s["count_in"].is_u64() {
                println!(
                    "      {} {} -> {}",
                    s["operation"].as_str().unwrap_or(""),
                    s["count_in"],
                    s["count_out"]
                );
            }
        }
    }
    Ok(())
}
