//! Typed failures of one GSE call. Each maps to one `result` label value.

use std::time::Duration;

use crate::config::cut;

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
    /// (Said without naming GSE: CMDB replies fail the same way, and the log
    /// line around it names which upstream it was.)
    #[error("error code {code}: {message}")]
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

/// Longest text kept of what an upstream said (a message, a parser error).
const MAX_UPSTREAM_TEXT: usize = 256;

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

    /// This error with every text that came from upstream cut short and
    /// stripped of what the exporter sent it (`sent`: the app secret), so a
    /// gateway that echoes a request back, or answers with a megabyte of
    /// message, puts neither the secret nor the megabyte into a log.
    pub(crate) fn scrubbed(self, sent: &[&str]) -> GseError {
        let clean = |text: String| scrub(&text, sent);
        match self {
            GseError::Transport(text) => GseError::Transport(clean(text)),
            GseError::HttpStatus {
                status,
                code,
                message,
            } => GseError::HttpStatus {
                status,
                code,
                message: clean(message),
            },
            GseError::Api { code, message } => GseError::Api {
                code,
                message: clean(message),
            },
            GseError::Decode(text) => GseError::Decode(clean(text)),
            other => other,
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

/// `text` without any of `sent` (as sent, or escaped inside JSON), cut short.
fn scrub(text: &str, sent: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in sent.iter().filter(|s| !s.is_empty()) {
        let quoted = serde_json::to_string(secret).unwrap_or_default();
        let escaped = quoted.trim_matches('"');
        for form in [*secret, escaped] {
            if !form.is_empty() {
                text = text.replace(form, "<redacted>");
            }
        }
    }
    cut(&text, MAX_UPSTREAM_TEXT)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_text_is_cut_and_never_carries_the_secret() {
        let echo = format!(
            "request: {{\"bk_app_secret\": \"s3cr\\\"et\"}} {}",
            "x".repeat(1 << 20)
        );
        let scrubbed = GseError::Api {
            code: 1,
            message: echo,
        }
        .scrubbed(&["s3cr\"et"]);
        let GseError::Api { message, .. } = scrubbed else {
            panic!("still an API error");
        };
        assert!(!message.contains("s3cr"), "{message}");
        assert!(message.contains("<redacted>"), "{message}");
        assert!(message.len() < 300, "{} bytes", message.len());
        let plain = GseError::Decode("s3cr\"et".into()).scrubbed(&["s3cr\"et"]);
        assert_eq!(plain, GseError::Decode("<redacted>".into()));
    }
}
