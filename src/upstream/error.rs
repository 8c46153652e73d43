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

/// How much of an upstream's text is searched for what the exporter sent:
/// well past what is kept of it ([`MAX_UPSTREAM_TEXT`]), so a megabyte of
/// message is not searched whole.
const SCRUB_WINDOW: usize = 4 * MAX_UPSTREAM_TEXT;

/// `text` without any of `sent` (the app secret), cut short. Hidden are the
/// secret as sent and as an upstream may echo it: escaped inside JSON,
/// percent-encoded (a URL or a form), in base64 (at any of the three
/// alignments it can take inside a longer one), in any letter case, and any
/// run of a third of it or more (at least six bytes) of any of those forms,
/// so an echo cut short (the secret's first half, then `...`) or split
/// keeps none of it either.
fn scrub(text: &str, sent: &[&str]) -> String {
    let (head, tail) = text.split_at(text.floor_char_boundary(SCRUB_WINDOW));
    let mut hidden = vec![false; head.len()];
    for secret in sent.iter().filter(|s| !s.is_empty()) {
        for form in echoed_forms(secret) {
            hide_runs(head.as_bytes(), form.as_bytes(), &mut hidden);
        }
    }
    // A character any byte of which is hidden is hidden whole; each run of
    // hidden characters is one marker.
    let mut shown = String::with_capacity(head.len() + tail.len());
    let mut hiding = false;
    for (at, c) in head.char_indices() {
        if hidden[at..at + c.len_utf8()].contains(&true) {
            if !hiding {
                shown.push_str("<redacted>");
            }
            hiding = true;
        } else {
            shown.push(c);
            hiding = false;
        }
    }
    shown.push_str(tail);
    cut(&shown, MAX_UPSTREAM_TEXT)
}

/// The forms a secret may come back in: as sent, escaped inside JSON,
/// percent-encoded (spaces as `%20` and as `+`), and base64 (standard and
/// URL-safe) at each alignment, without the characters it shares with the
/// bytes around it.
fn echoed_forms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let json = serde_json::to_string(secret).unwrap_or_default();
    let percent = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let mut forms = vec![
        secret.to_string(),
        json.trim_matches('"').to_string(),
        percent.replace("%20", "+"),
        percent,
    ];
    for skip in 0..3 {
        let mut bytes = vec![0; skip];
        bytes.extend_from_slice(secret.as_bytes());
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let coded = engine.encode(&bytes);
            // The first characters carry the bytes before; the last one the
            // bytes after, unless the secret ends on a whole group.
            let from = [0, 2, 3][skip];
            let to = coded.len() - usize::from(bytes.len() % 3 != 0);
            forms.push(coded.get(from..to).unwrap_or_default().to_string());
        }
    }
    forms.retain(|f| !f.is_empty());
    forms.sort();
    forms.dedup();
    forms
}

/// Marks in `hidden` every run of `text` that matches a run of `form` (ASCII
/// letters in any case) at least a third of `form` long and at least six
/// bytes (all of it, for a shorter form).
fn hide_runs(text: &[u8], form: &[u8], hidden: &mut [bool]) {
    let least = (form.len() / 3).max(6).min(form.len());
    for start in 0..text.len() {
        for from in 0..form.len() {
            let run = text[start..]
                .iter()
                .zip(&form[from..])
                .take_while(|(a, b)| a.eq_ignore_ascii_case(b))
                .count();
            if run >= least {
                hidden[start..start + run].fill(true);
            }
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

    #[test]
    fn the_secret_is_hidden_in_every_form_an_upstream_may_echo_it() {
        use base64::Engine as _;
        let secret = "Zq9/Super+Secret value=42";
        let message = |text: String| {
            let GseError::Api { message, .. } = (GseError::Api {
                code: 1,
                message: text,
            })
            .scrubbed(&[secret]) else {
                panic!("still an API error");
            };
            message
        };
        let url = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("app:{secret}"));
        let echoes = [
            format!("GET /api?bk_app_secret={url}&x=1"),
            format!("form bk_app_secret={}", url.to_string().replace("%20", "+")),
            format!("Authorization: Basic {basic}"),
            format!("header {}", secret.to_uppercase()),
            // Cut short by the upstream, and split by one.
            format!("echo: {}...", &secret[..12]),
            format!("{} [truncated] {}", &secret[..10], &secret[10..]),
        ];
        for echo in echoes {
            let shown = message(echo.clone());
            assert!(shown.contains("<redacted>"), "{echo} -> {shown}");
            for piece in [&secret[..6], &secret[6..12], &secret[12..18], "value=42"] {
                assert!(
                    !shown.to_lowercase().contains(&piece.to_lowercase()),
                    "{echo} -> {shown}"
                );
            }
        }
        // Text around it stays; a word sharing a few letters with it is no echo.
        let shown = message("Super request refused".into());
        assert_eq!(shown, "Super request refused");
        // Searched within a bound, and cut as before.
        let far = format!("{}{secret}", "x".repeat(1 << 20));
        let shown = message(far);
        assert!(shown.len() < 300 && !shown.contains("Zq9"), "{shown}");
    }
}
