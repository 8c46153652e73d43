//! Pacing of GSE requests: one token bucket and one in-flight cap per GSE
//! endpoint, shared by every group, every retry and both APIs on that endpoint.
//!
//! Owns only the waiting. It does not send requests or decide retries.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::metrics::Telemetry;

/// The pacing of one endpoint.
#[derive(Debug)]
pub struct Pacer {
    limiter: DefaultDirectRateLimiter,
    in_flight: Semaphore,
}

impl Pacer {
    /// A bucket of `burst` tokens refilled at `requests_per_second`, and at most
    /// `max_in_flight` requests at once.
    pub fn new(requests_per_second: f64, burst: u32, max_in_flight: usize) -> Pacer {
        let period = Duration::from_secs_f64(1.0 / requests_per_second.max(1e-6));
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Pacer {
            limiter: RateLimiter::direct(quota),
            in_flight: Semaphore::new(max_in_flight.max(1)),
        }
    }

    /// Waits for a slot, then for a token; the request must be sent at once.
    ///
    /// The slot comes first so that tokens are never hoarded by requests that
    /// then wait for a slot and leave together, which would break the rate.
    pub async fn acquire(&self, telemetry: &Telemetry) -> SemaphorePermit<'_> {
        let permit = self
            .in_flight
            .acquire()
            .await
            .expect("the pacing semaphore is never closed");
        let started = Instant::now();
        self.limiter.until_ready().await;
        telemetry.add_rate_limit_wait(started.elapsed());
        permit
    }
}

/// One [`Pacer`] per endpoint (scheme, host and port of a GSE URL).
#[derive(Debug, Default)]
pub struct Pacers {
    by_origin: HashMap<String, Arc<Pacer>>,
}

impl Pacers {
    /// Builds pacers for every URL given; URLs on one origin share one.
    pub fn new<'a>(
        urls: impl IntoIterator<Item = &'a str>,
        rps: f64,
        burst: u32,
        max_in_flight: usize,
    ) -> Pacers {
        let mut by_origin = HashMap::new();
        for url in urls {
            by_origin
                .entry(origin(url))
                .or_insert_with(|| Arc::new(Pacer::new(rps, burst, max_in_flight)));
        }
        Pacers { by_origin }
    }

    /// The pacer of a URL's endpoint.
    pub fn for_url(&self, url: &str) -> Option<Arc<Pacer>> {
        self.by_origin.get(&origin(url)).cloned()
    }
}

/// `scheme://host:port` of a URL (the whole string when it does not parse).
pub fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_on_one_origin_share_a_pacer() {
        let pacers = Pacers::new(
            [
                "http://127.0.0.1:80/api/c/compapi/v2/gse",
                "http://127.0.0.1/api/bk-gse/prod",
                "http://other:1/x",
            ],
            1.0,
            1,
            1,
        );
        let a = pacers
            .for_url("http://127.0.0.1/api/c/compapi/v2/gse")
            .unwrap();
        let b = pacers
            .for_url("http://127.0.0.1:80/api/bk-gse/prod")
            .unwrap();
        let c = pacers.for_url("http://other:1/x").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[tokio::test]
    async fn tokens_beyond_the_burst_wait_for_the_rate() {
        let pacer = Pacer::new(20.0, 2, 8);
        let telemetry = Telemetry::default();
        let started = Instant::now();
        for _ in 0..6 {
            drop(pacer.acquire(&telemetry).await);
        }
        // 2 free, then 4 at 50 ms each.
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
    }
}
