//! The API never shows the node's own paths: JSON responses of a known size (every answer but
//! a stream) have the data dir replaced by `<data dir>` before they leave. Handlers already
//! keep paths out of their messages; this catches what a lower layer's error might still carry.

use std::path::Path;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// What replaces the data dir.
pub const PLACEHOLDER: &str = "<data dir>";
/// Larger answers are passed on as they are (the API's JSON answers are far smaller).
const MAX_REDACTED_BYTES: u64 = 8 << 20;

/// The spellings of `data_dir` to look for: as configured and canonical, raw and as JSON
/// escapes them. Relative spellings are left out (they could match ordinary words).
pub fn needles(data_dir: &Path) -> Vec<String> {
    let mut forms = vec![data_dir.to_path_buf()];
    if let Ok(c) = std::fs::canonicalize(data_dir) {
        forms.push(c);
    }
    let mut out: Vec<String> = Vec::new();
    for f in forms.iter().filter(|f| f.is_absolute()) {
        let raw = f.display().to_string();
        let raw = raw.trim_end_matches(['/', '\\']).to_string();
        if raw.len() < 2 {
            continue;
        }
        let escaped = serde_json::to_string(&raw)
            .map(|s| s.trim_matches('"').to_string())
            .unwrap_or_else(|_| raw.clone());
        out.push(raw);
        out.push(escaped);
    }
    // Longest first, so a canonical form that extends the configured one is replaced whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

/// Replaces every needle in `text`; `None` when none occurs.
pub fn scrub(text: &str, needles: &[String]) -> Option<String> {
    if !needles.iter().any(|n| text.contains(n.as_str())) {
        return None;
    }
    let mut out = text.to_string();
    for n in needles {
        out = out.replace(n.as_str(), PLACEHOLDER);
    }
    Some(out)
}

/// Scrubs JSON answers of a known size.
pub async fn redact_paths(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if state.redact.is_empty() {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let size = response.body().size_hint().exact();
    if !json || size.is_none_or(|n| n > MAX_REDACTED_BYTES) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_REDACTED_BYTES as usize).await {
        Ok(b) => b,
        // A body of known size that fails to read: nothing to pass on either.
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    let Some(clean) = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| scrub(t, &state.redact))
    else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(clean))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dir` spelled relative to the working directory (`../..` up to the root, then down).
    fn pathdiff(dir: &Path) -> std::path::PathBuf {
        let cwd = std::env::current_dir().unwrap();
        let mut up = std::path::PathBuf::new();
        for _ in cwd.components().skip(1) {
            up.push("..");
        }
        up.join(dir.strip_prefix("/").unwrap())
    }

    #[test]
    fn replaces_the_data_dir_in_every_spelling() {
        let needles = needles(Path::new("/var/lib/flotilla node/"));
        assert!(needles.contains(&"/var/lib/flotilla node".to_string()));
        let text = r#"{"error":{"message":"cannot open /var/lib/flotilla node/spool/x: denied"}}"#;
        let clean = scrub(text, &needles).unwrap();
        assert!(!clean.contains("/var/lib"), "{clean}");
        assert!(clean.contains("<data dir>/spool/x"), "{clean}");
        assert_eq!(scrub(r#"{"ok":true}"#, &needles), None);
        // A relative spelling alone is not looked for; one that exists is, by its canonical form.
        assert!(super::needles(Path::new("no-such-data-dir")).is_empty());
        let here = tempfile::tempdir().unwrap();
        let canonical = std::fs::canonicalize(here.path()).unwrap();
        let relative = pathdiff(here.path());
        assert!(super::needles(&relative).contains(&canonical.display().to_string()));
    }
}
