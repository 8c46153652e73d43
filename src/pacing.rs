//! Pacing of GSE requests: one token bucket and one in-flight cap per GSE
//! endpoint, shared by every group, every retry and both APIs on that endpoint.
//!
//! Owns only the waiting, and the one way a [`RateLimit`] becomes a token
//! bucket (the HTTP server's request limit uses it too). It does not send
//! requests, decide retries or record metrics: [`Pacer::acquire`] returns the
//! time waited and the caller records it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::model::RateLimit;

/// The pacing of one endpoint.
#[derive(Debug)]
pub(crate) struct Pacer {
    limiter: DefaultDirectRateLimiter,
    in_flight: Semaphore,
}

impl Pacer {
    /// A bucket for `limit`, and at most `max_in_flight` requests at once.
    pub(crate) fn new(limit: RateLimit, max_in_flight: usize) -> Pacer {
        let burst = limit.burst.max(1);
        let quota = quota(RateLimit { burst, ..limit })
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
        Pacer {
            limiter: RateLimiter::direct(quota),
            in_flight: Semaphore::new(max_in_flight.max(1)),
        }
    }

    /// Waits for a slot, then for a token; the request must be sent at once.
    ///
    /// The slot comes first so that tokens are never hoarded by requests that
    /// then wait for a slot and leave together, which would break the rate.
    /// Returns the permit and the time spent waiting for the token.
    pub(crate) async fn acquire(&self) -> (SemaphorePermit<'_>, Duration) {
        let permit = self
            .in_flight
            .acquire()
            .await
            .expect("the pacing semaphore is never closed");
        let started = Instant::now();
        self.token().await;
        (permit, started.elapsed())
    }

    /// Waits for a token on the runtime's timer (governor's own wait runs a
    /// timer thread of its own, woken for every request that waits).
    async fn token(&self) {
        while let Err(not_until) = self.limiter.check() {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            tokio::time::sleep(wait).await;
        }
    }
}

/// One [`Pacer`] per endpoint (scheme, host and port of a GSE URL).
#[derive(Debug, Default)]
pub(crate) struct Pacers {
    by_origin: HashMap<String, Arc<Pacer>>,
}

impl Pacers {
    /// Builds pacers for every URL given; URLs on one origin share one.
    pub(crate) fn new<'a>(
        urls: impl IntoIterator<Item = &'a str>,
        limit: RateLimit,
        max_in_flight: usize,
    ) -> Pacers {
        let mut by_origin = HashMap::new();
        for url in urls {
            by_origin
                .entry(origin(url))
                .or_insert_with(|| Arc::new(Pacer::new(limit, max_in_flight)));
        }
        Pacers { by_origin }
    }

    /// The pacer of a URL's endpoint.
    pub(crate) fn for_url(&self, url: &str) -> Option<Arc<Pacer>> {
        self.by_origin.get(&origin(url)).cloned()
    }
}

/// The token bucket of a rate limit; `None` when it allows nothing to pass
/// the bucket (a zero period or burst: no limit).
pub(crate) fn quota(limit: RateLimit) -> Option<Quota> {
    let burst = NonZeroU32::new(limit.burst)?;
    Some(Quota::with_period(limit.period)?.allow_burst(burst))
}

/// `scheme://host:port` of a URL (the whole string when it does not parse).
pub(crate) fn origin(url: &str) -> String {
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
            RateLimit::per_second(1.0, 1),
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
        let pacer = Pacer::new(RateLimit::per_second(20.0, 2), 8);
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        for _ in 0..6 {
            waited += pacer.acquire().await.1;
        }
        // 2 free, then 4 at 50 ms each.
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
    }
}
