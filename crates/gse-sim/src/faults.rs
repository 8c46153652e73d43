//! Fault injection for the simulator: the serde `Faults` set and the
//! deterministic decisions made from it (error rate, throttling, drops) plus
//! the token bucket behind `rate_limit`.
//!
//! Owns what a fault *is* and whether it fires for request number `n`; it
//! does not build HTTP replies (see `reply`) nor touch the fleet.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fleet::mix;

/// The active fault set; everything defaults to off.
///
/// JSON shape (all keys optional):
/// `{"latency":"5s","error_rate":0.1,"outage":false,
///   "rate_limit":{"requests_per_second":5,"burst":2},"throttle_every":3,
///   "none_found":false,"drop_share":0.1,"body":"truncated","code":1011003,
///   "cmdb_outage":false,"cmdb_business_outage":false,"cmdb_latency":"20s"}`.
/// Only `cmdb_outage`, `cmdb_business_outage` and `cmdb_latency` touch the
/// CMDB endpoints; every other fault is GSE-only.
/// `latency` accepts a humantime string (`"250ms"`, `"5s"`) or an integer
/// number of milliseconds, and serialises as a humantime string.
/// `body` is a snake_case name, or `{"http_status":502}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Extra delay before every GSE reply.
    #[serde(with = "latency_serde")]
    pub latency: Duration,
    /// Share of GSE requests failing (v2: HTTP 502/1650200; v1: 1306201),
    /// evenly spaced by request number so runs are reproducible.
    pub error_rate: f64,
    /// Every GSE request fails as in `error_rate`.
    pub outage: bool,
    /// A token bucket over all GSE endpoints.
    pub rate_limit: Option<RateLimit>,
    /// Every Nth GSE request (by request number) gets the rate-limit reply.
    pub throttle_every: Option<u32>,
    /// v2 answers 1011003 for every batch; v1 answers an empty map.
    pub none_found: bool,
    /// Share of known agents omitted from every reply (fixed set per seed).
    pub drop_share: f64,
    /// Replace the reply body with a broken one.
    pub body: Option<BodyFault>,
    /// Reply this error code (v2: HTTP status from the gateway table, else
    /// 200; v1: HTTP 200 with `result:false`).
    pub code: Option<i64>,
    /// Every CMDB request fails (ESB: HTTP 200, `result:false`, 1306201;
    /// gateway: HTTP 502, 1650200). GSE endpoints are unaffected.
    pub cmdb_outage: bool,
    /// Only `search_business` fails, as in `cmdb_outage` (the host listings
    /// keep answering).
    pub cmdb_business_outage: bool,
    /// Extra delay before every CMDB reply.
    #[serde(with = "latency_serde")]
    pub cmdb_latency: Duration,
}

/// Token-bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Refill rate in tokens per second.
    pub requests_per_second: f64,
    /// Bucket size (requests allowed at once).
    pub burst: u32,
}

/// Ways to break a reply body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFault {
    /// Invalid JSON.
    Malformed,
    /// A valid reply cut in the middle.
    Truncated,
    /// An nginx 502 HTML page, `content-type: text/html`.
    Html,
    /// A success envelope without `data`.
    NoData,
    /// `data` of the wrong type (v2: a string; v1: a list).
    WrongDataType,
    /// A valid-looking reply over 64 MiB, streamed.
    Huge,
    /// The real reply, one byte per second after the headers.
    Trickle,
    /// The connection is reset without any reply.
    Reset,
    /// This HTTP status with the gateway envelope for it.
    HttpStatus(u16),
    /// A well-formed reply about agents other than those asked (every id
    /// or `cloud:ip` key changed), as a cache that ignores the request body
    /// would give.
    OtherAgents,
}

/// Whether request `n` (1-based) fails under `rate`: evenly spaced hits.
pub(crate) fn error_hit(rate: f64, n: u64) -> bool {
    if rate <= 0.0 || n == 0 {
        return false;
    }
    let rate = rate.min(1.0);
    (n as f64 * rate).floor() > ((n - 1) as f64 * rate).floor()
}

/// Whether request `n` is throttled by `throttle_every`.
pub(crate) fn throttle_hit(every: Option<u32>, n: u64) -> bool {
    matches!(every, Some(e) if e > 0 && n.is_multiple_of(u64::from(e)))
}

/// Whether agent `idx` is in the dropped share for this seed.
pub(crate) fn dropped(seed: u64, idx: usize, share: f64) -> bool {
    if share <= 0.0 {
        return false;
    }
    let u = (mix(seed ^ 0xD209_5EED, idx as u64) >> 11) as f64 / (1u64 << 53) as f64;
    u < share
}

/// Gateway HTTP status and code name for a gateway error code.
pub(crate) fn gateway_status(code: i64) -> Option<(u16, &'static str)> {
    Some(match code {
        1640001 => (400, "INVALID_ARGS"),
        1640301 => (403, "APP_NO_PERMISSION"),
        1640302 => (403, "IP_NOT_ALLOWED"),
        1640401 => (404, "API_NOT_FOUND"),
        1641301 => (413, "BODY_TOO_LARGE"),
        1641401 => (414, "URI_TOO_LARGE"),
        1642901..=1642903 => (429, "RATE_LIMIT_RESTRICTION"),
        1642904 => (429, "CONCURRENCY_LIMIT_RESTRICTION"),
        1650200 => (502, "BAD_GATEWAY"),
        1650201 => (502, "ERROR_REQUESTING_RESOURCE"),
        1650401 => (504, "REQUEST_BACKEND_TIMEOUT"),
        _ => return None,
    })
}

/// Gateway code for an HTTP status (inverse of `gateway_status`).
pub(crate) fn gateway_code(status: u16) -> i64 {
    match status {
        400 => 1640001,
        403 => 1640301,
        404 => 1640401,
        413 => 1641301,
        414 => 1641401,
        429 => 1642902,
        504 => 1650401,
        _ => 1650200,
    }
}

/// A token bucket; `try_take` says how long until the next token if empty.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            last: Instant::now(),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Take one token: `Ok(remaining)` or `Err(time until a token)`.
    pub fn try_take(&mut self, now: Instant) -> Result<u32, Duration> {
        let rate = self.limit.requests_per_second.max(0.0);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(self.tokens.floor() as u32);
        }
        if rate == 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }
}

/// `latency` as a humantime string or integer milliseconds.
mod latency_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => humantime::parse_duration(&t).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_is_evenly_spaced() {
        let hits: Vec<u64> = (1..=10).filter(|&n| error_hit(0.3, n)).collect();
        assert_eq!(hits, vec![4, 7, 10]);
        assert!((1..=5).all(|n| error_hit(1.0, n)));
        assert!(!(1..=5).any(|n| error_hit(0.0, n)));
    }

    #[test]
    fn throttle_every_hits_multiples() {
        let hits: Vec<u64> = (1..=9).filter(|&n| throttle_hit(Some(3), n)).collect();
        assert_eq!(hits, vec![3, 6, 9]);
        assert!(!throttle_hit(Some(0), 3));
    }

    #[test]
    fn faults_parse_from_json() {
        let f: Faults = serde_json::from_str(
            r#"{"latency":"250ms","rate_limit":{"requests_per_second":2,"burst":1},
                "body":{"http_status":504},"code":1011003}"#,
        )
        .unwrap();
        assert_eq!(f.latency, Duration::from_millis(250));
        assert_eq!(f.body, Some(BodyFault::HttpStatus(504)));
        let f: Faults = serde_json::from_str(r#"{"latency":1500,"body":"reset"}"#).unwrap();
        assert_eq!(f.latency, Duration::from_millis(1500));
        let back: Faults = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        assert!(serde_json::from_str::<Faults>(r#"{"latncy":"1s"}"#).is_err());
    }

    #[test]
    fn bucket_refills_at_rate() {
        let limit = RateLimit {
            requests_per_second: 10.0,
            burst: 2,
        };
        let mut b = TokenBucket::new(limit);
        let t0 = Instant::now();
        assert_eq!(b.try_take(t0), Ok(1));
        assert_eq!(b.try_take(t0), Ok(0));
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100));
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn drop_share_is_fixed_per_seed() {
        let a: Vec<bool> = (0..1000).map(|i| dropped(5, i, 0.1)).collect();
        let b: Vec<bool> = (0..1000).map(|i| dropped(5, i, 0.1)).collect();
        assert_eq!(a, b);
        let n = a.iter().filter(|&&d| d).count();
        assert!((60..=140).contains(&n), "{n}");
    }
}
