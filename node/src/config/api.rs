//! `[node.api]`: the HTTP API's limits (what they do is in `crate::http::limits`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The configured limits (`[node.api]` in the config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiLimits {
    /// Time an ordinary request has to produce its response headers.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The same for uploads, data operations and inference (see [`is_long`]).
    #[serde(with = "humantime_serde")]
    pub long_request_timeout: Duration,
    /// Requests in flight at most (health probes and `/metrics` not counted).
    pub max_in_flight: usize,
    /// Requests per second each bearer token (or client address, where no token is required)
    /// may make, sustained; 0 turns the limit off.
    pub rate_per_sec: f64,
    /// Requests each token or address may make at once before the rate applies.
    pub rate_burst: u32,
    /// Failed authentications per minute each client address may make, sustained.
    pub auth_failures_per_min: f64,
    /// Failed authentications each client address may make at once.
    pub auth_failure_burst: u32,
    /// Keys (tokens, addresses) each rate limiter tracks at most.
    pub max_rate_keys: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            long_request_timeout: Duration::from_secs(3600),
            max_in_flight: 256,
            rate_per_sec: 1000.0,
            rate_burst: 2000,
            auth_failures_per_min: 10.0,
            auth_failure_burst: 10,
            max_rate_keys: 4096,
        }
    }
}

impl ApiLimits {
    /// Checks the values; the error names the field (within `api`).
    pub fn validate(&self) -> Result<(), String> {
        if self.request_timeout < Duration::from_millis(10) {
            return Err("request_timeout: must be at least 10ms".into());
        }
        if self.long_request_timeout < self.request_timeout {
            return Err("long_request_timeout: must be at least request_timeout".into());
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight: must be at least 1".into());
        }
        if !(self.rate_per_sec.is_finite() && self.rate_per_sec >= 0.0) {
            return Err("rate_per_sec: must be a number ≥ 0 (0: no limit)".into());
        }
        if self.rate_burst == 0 {
            return Err("rate_burst: must be at least 1".into());
        }
        if !(self.auth_failures_per_min.is_finite() && self.auth_failures_per_min > 0.0) {
            return Err("auth_failures_per_min: must be a number > 0".into());
        }
        if self.auth_failure_burst == 0 {
            return Err("auth_failure_burst: must be at least 1".into());
        }
        if self.max_rate_keys == 0 {
            return Err("max_rate_keys: must be at least 1".into());
        }
        Ok(())
    }
}
