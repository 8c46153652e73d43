//! The simulator's request log: one record per GSE or CMDB request
//! (control requests are not recorded) and the helpers tests use to read it.
//!
//! Owns `Api`, `Outcome`, `RequestRecord`, the bounded log and the window
//! counter; it never decides outcomes itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Records kept before the oldest are discarded (keeps benchmarks bounded).
const MAX_RECORDS: usize = 1_000_000;

/// Which GSE or CMDB endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// ESB `get_agent_status`.
    V1Status,
    /// ESB `get_agent_info`.
    V1Info,
    /// Gateway `list_agent_state`.
    V2State,
    /// Gateway `list_agent_info`.
    V2Info,
    /// CMDB host listing: ESB `list_biz_hosts` or gateway `list_hosts`.
    CmdbListHosts,
    /// CMDB hosts with topology: ESB `list_biz_hosts_topo` or gateway `list_hosts_topo`.
    CmdbListHostsTopo,
    /// CMDB business lookup: `search_business` (gateway `biz/search`).
    CmdbSearchBusiness,
}

impl Api {
    /// Whether this is a gateway GSE 2.0 endpoint (CMDB is not).
    pub fn is_v2(self) -> bool {
        matches!(self, Api::V2State | Api::V2Info)
    }

    /// Whether this is a CMDB endpoint.
    pub fn is_cmdb(self) -> bool {
        matches!(
            self,
            Api::CmdbListHosts | Api::CmdbListHostsTopo | Api::CmdbSearchBusiness
        )
    }
}

/// How the simulator answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A normal reply with data.
    Ok,
    /// v2 1011003: none of the ids is known.
    NotFound,
    /// A rate-limit reply (bucket or `throttle_every`).
    RateLimited,
    /// An injected fault (outage, error rate, code, body fault).
    Fault,
    /// Missing or wrong credentials.
    AuthError,
    /// A body the simulator could not use (bad JSON, no ids, too many ids).
    BadRequest,
}

/// One GSE or CMDB request as seen by the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the request arrived (before any latency).
    pub at: Instant,
    /// Endpoint called.
    pub api: Api,
    /// Number of ids (v2) or hosts (v1) in the body, 0 if unreadable;
    /// for CMDB the rows (hosts or businesses) returned in `info` (0 on failure).
    pub ids: usize,
    /// How it was answered.
    pub outcome: Outcome,
}

/// Request counts for `GET /sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// All GSE and CMDB requests recorded.
    pub total: usize,
    /// Requests per endpoint.
    pub by_api: BTreeMap<Api, usize>,
    /// Requests per outcome.
    pub by_outcome: BTreeMap<Outcome, usize>,
    /// Ids or hosts asked for (CMDB: rows returned), summed.
    pub ids: usize,
}

/// A bounded list of records.
#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    records: Vec<RequestRecord>,
}

impl RequestLog {
    /// Append a record, dropping the oldest half when full.
    pub fn push(&mut self, r: RequestRecord) {
        if self.records.len() >= MAX_RECORDS {
            self.records.drain(..MAX_RECORDS / 2);
        }
        self.records.push(r);
    }

    /// A copy of every record, oldest first.
    pub fn all(&self) -> Vec<RequestRecord> {
        self.records.clone()
    }

    /// Forget every record.
    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// Counts by endpoint and outcome.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            total: self.records.len(),
            ..Stats::default()
        };
        for r in &self.records {
            *s.by_api.entry(r.api).or_default() += 1;
            *s.by_outcome.entry(r.outcome).or_default() += 1;
            s.ids += r.ids;
        }
        s
    }
}

/// The largest number of instants inside any window of length `window`
/// (a window `[t, t + window)` starting at some instant).
pub fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end].duration_since(sorted[start]) >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_the_densest_stretch() {
        let t0 = Instant::now();
        let ms = |m| t0 + Duration::from_millis(m);
        let times = [ms(0), ms(100), ms(950), ms(1000), ms(1050), ms(3000)];
        assert_eq!(max_in_window(&times, Duration::from_secs(1)), 4);
        assert_eq!(max_in_window(&times, Duration::from_millis(1)), 1);
        assert_eq!(max_in_window(&[], Duration::from_secs(1)), 0);
    }

    #[test]
    fn stats_count_by_api_and_outcome() {
        let mut log = RequestLog::default();
        let at = Instant::now();
        log.push(RequestRecord {
            at,
            api: Api::V2State,
            ids: 3,
            outcome: Outcome::Ok,
        });
        log.push(RequestRecord {
            at,
            api: Api::V1Info,
            ids: 2,
            outcome: Outcome::Fault,
        });
        let s = log.stats();
        assert_eq!((s.total, s.ids), (2, 5));
        assert_eq!(s.by_api[&Api::V2State], 1);
        assert_eq!(s.by_outcome[&Outcome::Fault], 1);
    }
}
