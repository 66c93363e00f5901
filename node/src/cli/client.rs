//! Client commands: HTTP to a node's API.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{table, Cli, Output};
use crate::config::read_token;
use crate::http::ClusterView;

/// No node answered at the given address (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("no Flotilla node is reachable at {url}: {reason}\nstart one with `flotilla up`, or point --peer (FLOTILLA_PEER) at a running node")]
pub struct Unreachable {
    pub url: String,
    pub reason: String,
}

/// A small HTTP client for a node's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:7080`), sending `token` if given.
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// The client the command line asks for.
    pub fn from_cli(cli: &Cli) -> anyhow::Result<Client> {
        let cfg = cli.client_config()?;
        let token = cfg.api_token_file.as_deref().map(read_token).transpose()?;
        Client::new(&cfg.peer, token)
    }

    /// GETs `path` and decodes the JSON body; API errors carry the node's message.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send_json(reqwest::Method::GET, path, None).await
    }

    /// POSTs `body` as JSON to `path` and decodes the JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        self.send_json(reqwest::Method::POST, path, Some(body))
            .await
    }

    /// DELETEs `path` and decodes the JSON answer.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send_json(reqwest::Method::DELETE, path, None).await
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                anyhow::Error::new(Unreachable {
                    url: self.base.clone(),
                    reason: e.to_string(),
                })
            } else {
                anyhow::anyhow!("request to {url} failed: {e}")
            }
        })?;
        let status = resp.status();
        let body = resp.text().await?;
        if !status.is_success() {
            anyhow::bail!("{}", api_error(&url, status, &body));
        }
        serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("{url}: unexpected response: {e}"))
    }

    /// The node's cluster view.
    pub async fn cluster(&self) -> anyhow::Result<ClusterView> {
        self.get_json("/api/v1/cluster").await
    }
}

/// An API error as a person reads it: the node's message, then each bad field on its line.
fn api_error(url: &str, status: reqwest::StatusCode, body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return format!("{url}: {status}: {body}");
    };
    let message = v["error"]["message"].as_str().unwrap_or(body);
    let mut out = format!("{url}: {status}: {message}");
    if let Some(fields) = v["error"]["fields"].as_array() {
        for f in fields {
            out.push_str(&format!(
                "\n  {}: {}",
                f["field"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

/// `flotilla nodes`.
pub async fn nodes(cli: &Cli) -> anyhow::Result<()> {
    let view = Client::from_cli(cli)?.cluster().await?;
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Table => print!(
            "{}",
            table::members_with_evictions(&view.members, &view.evicted)
        ),
    }
    Ok(())
}

/// `flotilla status`.
pub async fn status(cli: &Cli) -> anyhow::Result<()> {
    let client = Client::from_cli(cli)?;
    let view = client.cluster().await?;
    match cli.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "node_id": view.node_id,
                "counts": view.counts,
                "self": view.members.iter().find(|m| m.is_self),
            }))?
        ),
        Output::Table => print!("{}", table::status(&view)),
    }
    Ok(())
}
