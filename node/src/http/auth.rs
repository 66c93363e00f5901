//! Bearer-token check for the API.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use std::time::Instant;

use super::limits::{self, RateKey};
use super::routes::error_body;
use super::AppState;

/// Compares in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lets health probes through; everything else needs the token when one is set. Requests are
/// then rate-limited by their authenticated token (by client address where no token is
/// required); failed authentications by client address, checked before the token is compared.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    if limits::is_exempt(&path) && (state.token.is_none() || path.starts_with("/health/")) {
        return next.run(request).await;
    }
    let now = Instant::now();
    let addr = RateKey::Addr(limits::client_addr(&request));
    let limiter = &state.limiter;
    let Some(token) = state.token.as_deref() else {
        if let Some(requests) = &limiter.requests {
            if let Err(wait) = requests.take(addr, now) {
                return limits::rate_limited(&path, "requests from this address", wait);
            }
        }
        return next.run(request).await;
    };
    // An address out of attempts is refused whatever it presents, so a right guess looks the
    // same as a wrong one.
    if let Err(wait) = limiter.auth_failures.check(addr, now) {
        return limits::rate_limited(&path, "failed authentications from this address", wait);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let message = match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => {
            if let Some(requests) = limiter
                .requests
                .as_ref()
                .filter(|_| !limits::is_exempt(&path))
            {
                if let Err(wait) = requests.take(RateKey::token(p), now) {
                    return limits::rate_limited(&path, "requests with this token", wait);
                }
            }
            return next.run(request).await;
        }
        Some(_) => "the bearer token is wrong",
        None => "this node requires Authorization: Bearer <token>",
    };
    // Counted; when this empties the bucket the next attempt is refused.
    let _ = limiter.auth_failures.take(addr, now);
    (
        StatusCode::UNAUTHORIZED,
        error_body("unauthorized", message),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
