//! OpenAI-style error bodies, `{"error":{"message","type","param","code"}}`, with the HTTP
//! status each is sent with.

use serde::{Deserialize, Serialize};

/// The JSON body of an error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, in the fields OpenAI clients read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request parameter at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code such as `model_not_found`.
    pub code: Option<String>,
}

/// An error to answer a request with: status, body, and for refusals a `Retry-After` hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {}", body.error.message)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    pub body: ErrorBody,
    /// Seconds for the `Retry-After` header (429 and 503).
    pub retry_after_s: Option<u64>,
}

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "server_error";

impl ApiError {
    fn new(
        status: u16,
        kind: &str,
        message: String,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    message,
                    kind: kind.to_string(),
                    param: param.map(str::to_string),
                    code: code.map(str::to_string),
                },
            },
            retry_after_s: None,
        }
    }

    /// 400: the request is malformed or asks for something invalid; `param` names the field.
    pub fn invalid_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::new(400, INVALID, message.into(), param, None)
    }

    /// 400: `param` has a value this server does not support (code `unsupported_parameter`).
    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        Self::new(
            400,
            INVALID,
            message.into(),
            Some(param),
            Some("unsupported_parameter"),
        )
    }

    /// 400 for a body that is not valid JSON of the endpoint's request type.
    pub fn from_json_error(e: &serde_json::Error) -> Self {
        Self::invalid_request(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    }

    /// 404: no deployment serves `model` (code `model_not_found`).
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            404,
            INVALID,
            format!("The model `{model}` does not exist or is not deployed."),
            Some("model"),
            Some("model_not_found"),
        )
    }

    /// 413: the body exceeds `limit_bytes`.
    pub fn request_too_large(limit_bytes: usize) -> Self {
        Self::new(
            413,
            INVALID,
            format!("The request body exceeds the limit of {limit_bytes} bytes."),
            None,
            Some("request_too_large"),
        )
    }

    /// 429: every replica is busy or the queue is full; retry after `retry_after_s` seconds.
    pub fn rate_limited(retry_after_s: u64) -> Self {
        let mut e = Self::new(
            429,
            "rate_limit_error",
            format!("The server is overloaded; retry after {retry_after_s} s."),
            None,
            Some("rate_limit_exceeded"),
        );
        e.retry_after_s = Some(retry_after_s);
        e
    }

    /// 500: an internal failure (the model failed, a bug).
    pub fn server_error(message: impl Into<String>) -> Self {
        Self::new(500, SERVER, message.into(), None, None)
    }

    /// 503: the model is deployed but no replica can take requests now.
    pub fn unavailable(message: impl Into<String>, retry_after_s: Option<u64>) -> Self {
        let mut e = Self::new(
            503,
            SERVER,
            message.into(),
            None,
            Some("service_unavailable"),
        );
        e.retry_after_s = retry_after_s;
        e
    }

    /// 504: the request's deadline passed before an answer came.
    pub fn deadline_exceeded(deadline_ms: u64) -> Self {
        Self::new(
            504,
            SERVER,
            format!("No answer within the request deadline of {deadline_ms} ms."),
            None,
            Some("timeout"),
        )
    }

    /// The body as JSON text.
    pub fn to_json(&self) -> String {
        // A struct of strings and options always serialises; the fallback keeps the shape.
        serde_json::to_string(&self.body).unwrap_or_else(|_| {
            r#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_openai_shape() {
        let e = ApiError::model_not_found("gpt-x");
        assert_eq!(e.status, 404);
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-x"));

        let e = ApiError::invalid_request("bad", None);
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert!(v["error"]["param"].is_null() && v["error"]["code"].is_null());
        assert_eq!(e.status, 400);
    }

    #[test]
    fn statuses_and_retry_hints() {
        assert_eq!(ApiError::request_too_large(10).status, 413);
        let r = ApiError::rate_limited(2);
        assert_eq!((r.status, r.retry_after_s), (429, Some(2)));
        assert_eq!(r.body.error.kind, "rate_limit_error");
        assert_eq!(ApiError::server_error("x").status, 500);
        assert_eq!(ApiError::unavailable("x", Some(1)).status, 503);
        assert_eq!(ApiError::deadline_exceeded(5).status, 504);
        assert_eq!(
            ApiError::unsupported("n", "x").body.error.code.as_deref(),
            Some("unsupported_parameter")
        );
    }
}
