//! Limits of the HTTP API: per-request deadlines, a cap on requests in flight, and token-bucket
//! rate limits per bearer token, per client address and on failed authentications.
//!
//! - Deadline: a request must produce its response (status and headers) within
//!   [`ApiLimits::request_timeout`]; uploads, data operations and inference
//!   ([`is_long`]) get [`ApiLimits::long_request_timeout`] instead. The deadline ends once the
//!   headers are out: a streamed body (server-sent completions, exports) is never cut by it.
//!   Past the deadline the handler is dropped and the client gets `504` with code `timeout`.
//! - In flight: at most [`ApiLimits::max_in_flight`] requests at once, a streamed body counting
//!   until it ends. One more is answered `503` (code `overloaded`) with `Retry-After` at once,
//!   never queued. The health probes and `/metrics` are exempt.
//! - Rate: every request but the health probes and `/metrics` takes one token from the bucket
//!   of its bearer token once that token is authenticated (of its client address where the
//!   node requires no token): [`ApiLimits::rate_per_sec`] sustained, [`ApiLimits::rate_burst`]
//!   at once. A failed authentication takes one from its client address's failure bucket
//!   ([`ApiLimits::auth_failures_per_min`], [`ApiLimits::auth_failure_burst`]); an address
//!   whose failure bucket is empty gets `429` before its token is even compared, so guessing is
//!   throttled whether or not a guess is right. Over a limit: `429` (code `rate_limited`) with
//!   `Retry-After`.
//!
//! The buckets live in maps of at most [`ApiLimits::max_rate_keys`] entries. A bucket that
//! has refilled is the same as a new one, so when a map is full those are dropped first; if every
//! entry is still draining, a new key is refused (`429`) rather than let the map grow.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;

pub use crate::config::api::ApiLimits;

/// The running limits a node's handlers share.
#[derive(Debug)]
pub struct Limiter {
    pub limits: ApiLimits,
    in_flight: Arc<Semaphore>,
    /// Requests, by authenticated token or by client address.
    pub requests: Option<RateLimiter>,
    /// Failed authentications, by client address.
    pub auth_failures: RateLimiter,
}

impl Limiter {
    pub fn new(limits: ApiLimits) -> Limiter {
        let requests = (limits.rate_per_sec > 0.0).then(|| {
            RateLimiter::new(limits.rate_per_sec, limits.rate_burst, limits.max_rate_keys)
        });
        let auth_failures = RateLimiter::new(
            limits.auth_failures_per_min / 60.0,
            limits.auth_failure_burst,
            limits.max_rate_keys,
        );
        Limiter {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            requests,
            auth_failures,
            limits,
        }
    }
}

/// What a rate limiter keys its buckets by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// An authenticated bearer token, by its hash (the map never holds a secret).
    Token([u8; 32]),
    /// A client address.
    Addr(IpAddr),
}

impl RateKey {
    pub fn token(token: &str) -> RateKey {
        RateKey::Token(*blake3::hash(token.as_bytes()).as_bytes())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key, at most `cap` of them.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens per second.
    rate: f64,
    burst: f64,
    cap: usize,
    buckets: Mutex<HashMap<RateKey, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: u32, cap: usize) -> RateLimiter {
        RateLimiter {
            rate: rate_per_sec,
            burst: f64::from(burst.max(1)),
            cap: cap.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.rate).min(self.burst)
    }

    /// How long until `missing` more tokens have come in.
    fn wait_for(&self, missing: f64) -> Duration {
        if self.rate <= 0.0 {
            return Duration::from_secs(3600);
        }
        Duration::from_secs_f64((missing / self.rate).min(86_400.0))
    }

    /// Takes one token from `key`'s bucket (`take`) or only looks whether one is there; the
    /// error is how long until one is.
    fn attempt(&self, key: RateKey, now: Instant, take: bool) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&key) {
            if !take {
                // A key without a bucket has a full one.
                return Ok(());
            }
            if buckets.len() >= self.cap {
                // A bucket that has refilled is the same as no bucket.
                let burst = self.burst;
                buckets.retain(|_, b| self.level(b, now) < burst);
            }
            if buckets.len() >= self.cap {
                return Err(self.wait_for(1.0).max(Duration::from_secs(1)));
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let level = self.level(bucket, now);
        if level < 1.0 {
            return Err(self.wait_for(1.0 - level));
        }
        if take {
            *bucket = Bucket {
                tokens: level - 1.0,
                at: now,
            };
        }
        Ok(())
    }

    /// Takes one token from `key`'s bucket; the error is how long until one is there.
    pub fn take(&self, key: RateKey, now: Instant) -> Result<(), Duration> {
        self.attempt(key, now, true)
    }

    /// Whether `key`'s bucket holds a token, taking none.
    pub fn check(&self, key: RateKey, now: Instant) -> Result<(), Duration> {
        self.attempt(key, now, false)
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Routes no limit but the deadline applies to: the health probes and `/metrics`.
pub fn is_exempt(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

/// Requests that may legitimately take long and get [`ApiLimits::long_request_timeout`]:
/// dataset uploads, data operations (which may wait for their job), model registration (which
/// waits for the files to replicate) and inference.
pub fn is_long(method: &Method, route: &str) -> bool {
    *method == Method::POST
        && matches!(
            route,
            "/api/v1/data"
                | "/api/v1/data/{name}/ops"
                | "/api/v1/models"
                | "/v1/chat/completions"
                | "/v1/completions"
                | "/v1/embeddings"
                | "/api/v1/classify"
        )
}

/// The client's address, when the server recorded it (unspecified otherwise).
pub fn client_addr(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// An error response in the shape of the API `path` belongs to: `{"error": {"code",
/// "message"}}` for the admin API, with the OpenAI fields (`type`, `param`) under `/v1/`.
pub fn limit_error(
    path: &str,
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let body = if path.starts_with("/v1/") {
        let kind = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        serde_json::json!({
            "error": { "message": message, "type": kind, "param": null, "code": code }
        })
    } else {
        serde_json::json!({ "error": { "code": code, "message": message } })
    };
    let mut response = (status, Json(body)).into_response();
    if let Some(wait) = retry_after {
        // Whole seconds, rounded up, at least one.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

/// The `429` of a rate limit.
pub fn rate_limited(path: &str, what: &str, wait: Duration) -> Response {
    limit_error(
        path,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &format!("too many {what}; retry later"),
        Some(wait),
    )
}

/// The response body, holding its in-flight permit until it ends or is dropped.
struct Guarded {
    body: Body,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Answers `503` at once when [`ApiLimits::max_in_flight`] requests are in flight.
pub async fn limit_in_flight(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    if is_exempt(&path) {
        return next.run(request).await;
    }
    let Ok(permit) = state.limiter.in_flight.clone().try_acquire_owned() else {
        return limit_error(
            &path,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &format!(
                "this node is answering {} requests already; retry later",
                state.limiter.limits.max_in_flight
            ),
            Some(Duration::from_secs(1)),
        );
    };
    next.run(request).await.map(|body| {
        Body::new(Guarded {
            body,
            _permit: permit,
        })
    })
}

/// Answers `504` when the handler has not produced its response headers in time.
pub async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let long = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| is_long(request.method(), m.as_str()));
    let limits = &state.limiter.limits;
    let budget = if long {
        limits.long_request_timeout
    } else {
        limits.request_timeout
    };
    match tokio::time::timeout(budget, next.run(request)).await {
        Ok(response) => response,
        Err(_) => limit_error(
            &path,
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            &format!(
                "the request did not complete within {}",
                humantime::format_duration(budget)
            ),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let l = RateLimiter::new(2.0, 3, 16);
        let k = RateKey::token("t");
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take(k, t0).unwrap();
        }
        let wait = l.take(k, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        // Half a second later one token has come back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        l.take(k, t1).unwrap();
        assert!(l.take(k, t1).is_err());
        // Other keys have their own buckets.
        l.take(RateKey::token("u"), t1).unwrap();
    }

    #[test]
    fn check_takes_nothing() {
        let l = RateLimiter::new(1.0, 1, 16);
        let k = RateKey::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let t = Instant::now();
        for _ in 0..5 {
            l.check(k, t).unwrap();
        }
        assert!(l.is_empty(), "looking creates no bucket");
        l.take(k, t).unwrap();
        assert!(l.check(k, t).is_err());
    }

    #[test]
    fn a_flood_of_keys_stays_bounded() {
        let l = RateLimiter::new(1.0, 2, 100);
        let t = Instant::now();
        let mut refused = 0;
        for i in 0..10_000u32 {
            if l.take(RateKey::token(&format!("random-{i}")), t).is_err() {
                refused += 1;
            }
            assert!(l.len() <= 100);
        }
        assert_eq!(
            refused,
            10_000 - 100,
            "new keys are refused while all are draining"
        );
        // Once the buckets have refilled they are dropped to make room.
        let later = t + Duration::from_secs(10);
        l.take(RateKey::token("newcomer"), later).unwrap();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn long_routes_are_uploads_operations_and_inference() {
        assert!(is_long(&Method::POST, "/api/v1/data"));
        assert!(is_long(&Method::POST, "/v1/chat/completions"));
        assert!(!is_long(&Method::GET, "/api/v1/data"));
        assert!(!is_long(&Method::POST, "/api/v1/jobs"));
        assert!(is_exempt("/health/live") && is_exempt("/metrics"));
        assert!(!is_exempt("/api/v1/cluster"));
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        ApiLimits::default().validate().unwrap();
        let bad = ApiLimits {
            max_in_flight: 0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("max_in_flight"));
        let bad = ApiLimits {
            long_request_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .starts_with("long_request_timeout"));
    }
}
