//! The HTTP layer under both upstreams (GSE and CMDB): TLS for the client,
//! reads capped at a size, and the mapping of transport failures and HTTP
//! error statuses to [`GseError`].
//!
//! Owns nothing of what a request means: [`gse`] builds and decodes GSE calls,
//! [`cmdb`] lists a business's hosts. Neither reaches into the other; what
//! they share is here.

pub(crate) mod cmdb;
mod error;
pub mod gse;

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::TlsConfig;
pub use error::{GseError, RESULT_LABELS};

/// The client both upstreams start from: the request timeout, a connect
/// timeout of at most 5 s, the user agent, and no redirects, so a redirect
/// is the HTTP error status it is. reqwest follows ten by default and, on a
/// hop to another host, drops only the standard credential headers: the
/// gateway's `X-Bkapi-Authorization` header (and the ESB's body, on a 307)
/// carried the app secret to wherever a reply pointed, and that host's
/// answer was taken as GSE's.
pub(crate) fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("gse_exporter/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
}

/// Applies a `tls:` block: extra CA roots (added to the system roots), a
/// client certificate, or no verification at all when the user asked so
/// (the warning is logged where configurations are applied).
pub(crate) fn with_tls(
    builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
) -> Result<reqwest::ClientBuilder, GseError> {
    let tls_error =
        |what: &str, e: reqwest::Error| GseError::Transport(format!("{what}: {}", error_chain(&e)));
    let roots = tls
        .ca_certs
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("tls.ca_file", e))?;
    let mut builder = builder
        .tls_certs_merge(roots)
        .tls_danger_accept_invalid_certs(tls.insecure_skip_verify);
    if let Some(client) = &tls.client {
        // reqwest's own message is fixed text: no key material in it.
        let identity = reqwest::Identity::from_pem(client.identity_pem())
            .map_err(|e| tls_error("tls.key_file", e))?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

/// Maps a reqwest failure to a timeout or a transport error.
pub(crate) fn transport_error(err: reqwest::Error) -> GseError {
    if err.is_timeout() {
        GseError::Timeout
    } else {
        // `without_url` keeps hosts out of logs only by choice; no secret is in a URL.
        GseError::Transport(error_chain(&err.without_url()))
    }
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a reply body, refusing more than `cap` bytes.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, GseError> {
    if response
        .content_length()
        .is_some_and(|len| len as usize > cap)
    {
        return Err(GseError::TooLarge(cap));
    }
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > cap {
            return Err(GseError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The header multi-tenant BlueKing reads the tenant from.
pub(crate) const TENANT_HEADER: &str = "X-Bk-Tenant-Id";

/// `X-Bk-Tenant-Id`'s value for a configured tenant (validated at load as
/// header-safe; `None` without one). GSE and CMDB calls both use it.
pub(crate) fn tenant_header(tenant_id: Option<&str>) -> Option<reqwest::header::HeaderValue> {
    reqwest::header::HeaderValue::from_str(tenant_id?).ok()
}

/// What a redirect is told as ([`client_builder`] follows none).
const REDIRECT_REFUSED: &str = "a redirect, not followed (it would carry the credentials elsewhere): configure the URL that answers";

/// An HTTP error status as an error: the envelope's code and message when
/// the body is one, else what the body is (a proxy's HTML page by its title).
pub(crate) fn status_error(status: u16, body: &[u8]) -> GseError {
    let (code, mut message) = gse::decode::error_code(body);
    if message.is_empty() {
        message = match status {
            300..400 => REDIRECT_REFUSED.to_string(),
            _ => body_hint(body),
        };
    }
    GseError::HttpStatus {
        status,
        code,
        message,
    }
}

/// A few words on a body that is no envelope ("" for none): an HTML page's
/// title (an nginx or gateway error page), else its first bytes with
/// whitespace folded. Cut and cleaned of secrets later, as every message.
fn body_hint(body: &[u8]) -> String {
    const SHOWN: usize = 120;
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let folded = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let lower = text.to_ascii_lowercase();
    if let Some(open) = lower.find("<title>")
        && let Some(close) = lower[open..].find("</title>")
    {
        let title = folded(&text[open + 7..open + close]);
        return format!("an HTML page titled {title:?}");
    }
    let shown = folded(&text);
    if shown.is_empty() {
        return String::new();
    }
    let cut = shown.floor_char_boundary(SHOWN);
    format!(
        "a body of {} bytes beginning {:?}",
        body.len(),
        &shown[..cut]
    )
}

/// An HTTP error status from GSE: a rate limit (429 or the gateway's 16429xx
/// codes, with the wait it asks for) or [`status_error`].
pub(crate) fn http_error(status: u16, headers: &HeaderMap, body: &[u8]) -> GseError {
    let (code, _) = gse::decode::error_code(body);
    use gse::decode;
    let gateway_limit = decode::GATEWAY_RATE_LIMITED_FIRST..=decode::GATEWAY_RATE_LIMITED_LAST;
    if status == 429 || code.is_some_and(|c| gateway_limit.contains(&c)) {
        return GseError::RateLimited {
            code: code.unwrap_or(429),
            retry_after: retry_after(headers),
        };
    }
    status_error(status, body)
}

/// `Retry-After` (seconds) or the gateway's `X-Bkapi-RateLimit-Reset` (seconds).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = |name: &str| -> Option<f64> {
        let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    let mut wait = seconds(RETRY_AFTER.as_str()).or_else(|| seconds("X-Bkapi-RateLimit-Reset"))?;
    if wait > 1e9 {
        // An absolute unix time rather than a delay.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        wait = (wait - now).max(0.0);
    }
    Some(Duration::from_secs_f64(wait.min(300.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_that_is_no_envelope_is_described() {
        let nginx =
            b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>nginx</body></html>";
        let GseError::HttpStatus { message, code, .. } = status_error(502, nginx) else {
            panic!()
        };
        assert_eq!(
            (code, message.as_str()),
            (None, "an HTML page titled \"502 Bad Gateway\"")
        );
        let text = status_error(
            503,
            b"upstream connect error or disconnect/reset before headers\n",
        );
        assert!(text.to_string().ends_with("a body of 58 bytes beginning \"upstream connect error or disconnect/reset before headers\""), "{text}");
        let GseError::HttpStatus { message, .. } = status_error(500, b"") else {
            panic!()
        };
        assert!(message.is_empty());
        let long = "x".repeat(10_000);
        assert!(status_error(500, long.as_bytes()).to_string().len() < 200);
        // An envelope still gives its code and message.
        let enveloped = status_error(502, br#"{"code":1650200,"message":"bad gateway"}"#);
        assert!(
            enveloped.to_string().contains("1650200")
                && enveloped.to_string().contains("bad gateway")
        );
        let redirect = status_error(302, b"<html><title>Found</title></html>");
        assert!(redirect.to_string().contains("not followed"), "{redirect}");
    }
}
