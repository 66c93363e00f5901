//! DNS rebinding and cross-site requests against a loopback API. A node's API on loopback
//! needs no token, so a web page the operator opens must not reach it: a page served from
//! `evil.example` that rebinds its name to 127.0.0.1 sends `Host: evil.example`, and any
//! cross-site request from a browser carries an `Origin` that is not loopback. Both are refused
//! with 403. Tools (curl, the CLI, the OpenAI clients) send a loopback `Host` and no `Origin`.
//!
//! Beyond loopback the token is required on every request, which a rebinding page cannot
//! present, so the check applies to loopback listeners only.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::routes::error_body;
use super::AppState;

/// Whether `host` (a `Host` value or an origin's host, port allowed) names this machine's
/// loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    // `[::1]:7080`, `[::1]`, `127.0.0.1:7080`, `localhost`.
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") || name == "::1" {
        return true;
    }
    name.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The host of an `Origin` header (`scheme://host[:port]`), or `None` for `null` and junk.
fn origin_host(origin: &str) -> Option<&str> {
    origin.split_once("://").map(|(_, rest)| rest)
}

/// Refuses requests whose `Host` or `Origin` is not loopback when the API listens on loopback.
pub async fn loopback_only(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !state.loopback_api {
        return next.run(request).await;
    }
    let forbidden =
        |why: String| (StatusCode::FORBIDDEN, error_body("forbidden", &why)).into_response();
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or_default();
        if !is_loopback_host(host) {
            return forbidden(format!(
                "this node's API listens on loopback and answers only loopback host names, \
                 not {host:?}"
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        if !origin_host(origin).is_some_and(is_loopback_host) {
            return forbidden(format!(
                "cross-site requests from {origin:?} are not answered on a loopback API"
            ));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_names_and_only_those() {
        for ok in [
            "127.0.0.1:7080",
            "127.0.0.1",
            "127.5.6.7:80",
            "localhost",
            "LOCALHOST:7080",
            "[::1]:7080",
            "[::1]",
            "api.localhost",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7080",
            "10.0.0.5:7080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::2]:7080",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
