//! Typed failures of one GSE call. Each maps to one `result` label value.

use std::time::Duration;

/// Why a GSE call did not produce a usable reply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GseError {
    /// No reply within the request timeout (or the reply trickled past it).
    #[error("request timed out")]
    Timeout,
    /// Connecting, sending or reading failed (refused, reset, TLS).
    #[error("transport error: {0}")]
    Transport(String),
    /// A non-success HTTP status that is not a rate limit.
    #[error("HTTP status {status} (code {code:?}): {message}")]
    HttpStatus {
        /// HTTP status.
        status: u16,
        /// Gateway error code from the body, if any.
        code: Option<i64>,
        /// Message from the body, if any.
        message: String,
    },
    /// GSE or the gateway asked us to slow down (HTTP 429, 16429xx, ESB 1306429).
    #[error("rate limited by GSE (code {code})")]
    RateLimited {
        /// The code given.
        code: i64,
        /// How long GSE asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// An error envelope with another code.
    #[error("GSE error code {code}: {message}")]
    Api {
        /// `code` from the envelope.
        code: i64,
        /// `message` from the envelope.
        message: String,
    },
    /// A reply that is not the documented shape (bad JSON, no `data`, wrong type).
    #[error("undecodable reply: {0}")]
    Decode(String),
    /// A reply larger than `max_response_bytes`.
    #[error("reply larger than {0} bytes")]
    TooLarge(usize),
}

/// ESB codes that are transient failures upstream of ESB (worth a retry).
const ESB_TRANSIENT: &[i64] = &[1306000, 1306201, 1306203, 1306208];

impl GseError {
    /// The `result` label of `gse_exporter_api_requests_total`.
    pub(crate) fn result_label(&self) -> &'static str {
        match self {
            GseError::Timeout => "timeout",
            GseError::Transport(_) => "transport_error",
            GseError::HttpStatus { .. } => "http_error",
            GseError::RateLimited { .. } => "rate_limited",
            GseError::Api { .. } => "api_error",
            GseError::Decode(_) | GseError::TooLarge(_) => "decode_error",
        }
    }

    /// Whether another attempt may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            GseError::Timeout | GseError::Transport(_) | GseError::RateLimited { .. } => true,
            GseError::HttpStatus { status, .. } => *status >= 500,
            GseError::Api { code, .. } => ESB_TRANSIENT.contains(code),
            GseError::Decode(_) | GseError::TooLarge(_) => true,
        }
    }

    /// The wait GSE asked for, if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            GseError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Every `result` label value, for pre-creating series.
pub const RESULT_LABELS: &[&str] = &[
    "success",
    "not_found",
    "rate_limited",
    "transport_error",
    "timeout",
    "http_error",
    "api_error",
    "decode_error",
];
