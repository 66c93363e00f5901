//! The streamed upload of `flotilla data upload`: the file goes to the node a buffer at a time
//! with a progress line on stderr, so a file of any size is never held in memory.
//!
//! The workspace's HTTP client is built without streaming request bodies, so this speaks plain
//! HTTP/1.1 over a TCP stream: a `Content-Length` request, then the response read to the end
//! (`Connection: close`), de-chunked when the server chunks it.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use super::client::Unreachable;

/// Bytes read from the file per write.
const BUF: usize = 256 * 1024;
/// How often the progress line is redrawn at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// POSTs `file` to `path` of the node at `base` (`http://host:port`) and decodes the answer.
pub async fn post_file(
    base: &str,
    token: Option<&str>,
    path: &str,
    file: &Path,
) -> anyhow::Result<Value> {
    let authority = base
        .strip_prefix("http://")
        .context("uploads need an http:// node address")?
        .trim_end_matches('/');
    let mut input = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let total = input.metadata().await?.len();
    let stream = TcpStream::connect(authority).await.map_err(|e| {
        anyhow::Error::new(Unreachable {
            url: base.to_string(),
            reason: e.to_string(),
        })
    })?;
    let (mut read_half, write_half) = stream.into_split();
    let mut out = BufWriter::with_capacity(BUF, write_half);
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {total}\r\nConnection: close\r\n"
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes()).await?;
    let show = std::io::stderr().is_terminal() || std::env::var_os("FLOTILLA_PROGRESS").is_some();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .await
            .context("the node closed the upload")?;
        sent += n as u64;
        if show && last.elapsed() >= PROGRESS_EVERY {
            progress(sent, total, started);
            last = Instant::now();
        }
    }
    out.flush().await?;
    if show {
        progress(sent, total, started);
        eprintln!("\nsent; the node is sharding and placing the records…");
    }
    let mut answer = Vec::new();
    read_half.read_to_end(&mut answer).await?;
    let (status, body) = parse_response(&answer)?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let m = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).to_string());
        anyhow::bail!("upload refused: {m} (HTTP {status})");
    }
    Ok(v)
}

fn progress(sent: u64, total: u64, started: Instant) {
    let pct = if total == 0 {
        100.0
    } else {
        sent as f64 * 100.0 / total as f64
    };
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprint!(
        "\ruploading {pct:5.1}%  {:.1} / {:.1} MiB  {:.1} MiB/s ",
        sent as f64 / 1048576.0,
        total as f64 / 1048576.0,
        sent as f64 / 1048576.0 / secs
    );
}

/// The status and body of a raw HTTP/1.1 response.
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the node's answer has no header end")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the node's answer has no status")?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let line_end = body[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk header")?
            + at;
        let size_text = String::from_utf8_lossy(&body[at..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let chunk = body.get(start..start + size).context("truncated chunk")?;
        out.extend_from_slice(chunk);
        at = start + size + 2;
    }
    Ok((status, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_answers_decode() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (201, b"{}".to_vec()));
        let chunked = b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (400, b"abcde".to_vec()));
        assert!(parse_response(b"garbage").is_err());
    }
}
