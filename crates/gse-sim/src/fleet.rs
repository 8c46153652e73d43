//! The simulated fleet: a deterministic set of GSE agents derived from a seed.
//!
//! Owns `SimOptions`, the splitmix64 PRNG, the per-agent state, lookups by
//! agent id and by `cloud:ip`, lazy churn and the `AgentTruth` view that tests
//! compare against. It knows nothing about HTTP, envelopes or faults.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::cmdb::BizSpec;
use super::tls::SimTls;

/// Knobs of the simulated fleet and of the server's credentials.
///
/// Every field is plain so the `simulate` subcommand can map flags onto it.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Seed of every pseudo-random choice; same seed, same fleet.
    pub seed: u64,
    /// Number of agents in the fleet (known and unknown to GSE).
    pub agents: usize,
    /// Share of the agents GSE knows that are online (status code 2).
    pub online_share: f64,
    /// Share of agents GSE does not know: they are absent from replies.
    pub unknown_share: f64,
    /// Agents whose online state flips per minute, applied lazily from the
    /// elapsed time whenever the fleet is read.
    pub churn_per_minute: f64,
    /// Versions agents report; picked uniformly (repeat one to weight it).
    /// Legacy agents prefer v1-style versions (starting with `V`).
    pub versions: Vec<String>,
    /// Share of agents without a real agent id, addressable only by `cloud:ip`.
    pub legacy_share: f64,
    /// Share of agents whose version carries shell noise (e.g. `"2.1.3\n\x1b[0m"`).
    pub junk_version_share: f64,
    /// The app code clients must present.
    pub app_code: String,
    /// The app secret clients must present.
    pub app_secret: String,
    /// Base delay added to every GSE reply (faults may add more).
    pub latency: Duration,
    /// Most ids one v2 request may carry.
    pub max_batch_v2: usize,
    /// CMDB businesses, filled from the fleet in order. Empty (the default)
    /// means [`BizSpec::default_split`]: biz 2, 3 and 5 with 40 %, 30 % and
    /// the rest of the fleet.
    pub businesses: Vec<BizSpec>,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<SimTls>,
    /// How often an online agent reports to GSE: its `report_time` is never
    /// older (default 20s).
    pub report_period: Duration,
    /// Whether `list_agent_state` items carry `report_time` too, as in
    /// bk-nodemgr's model of the reply (default false: bk-job's and
    /// bk-cmdb's models have it only in `list_agent_info`).
    pub state_report_time: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        let versions = ["2.1.4-beta.12", "2.1.3", "2.1.3", "2.1.3", "2.0.9"]
            .into_iter()
            .chain(["V0.01R060D38", "V0.01R060D25"])
            .map(String::from)
            .collect();
        Self {
            seed: 1,
            agents: 1000,
            online_share: 0.95,
            unknown_share: 0.02,
            churn_per_minute: 0.0,
            versions,
            legacy_share: 0.1,
            junk_version_share: 0.0,
            app_code: "gse-exporter".to_string(),
            app_secret: "sim-secret".to_string(),
            latency: Duration::ZERO,
            max_batch_v2: 1000,
            businesses: Vec::new(),
            tls: None,
            report_period: Duration::from_secs(20),
            state_report_time: false,
        }
    }
}

/// The splitmix64 generator: tiny, fast and fully deterministic.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An integer in `[0, n)`; 0 when `n` is 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// One hash of two words, for per-item deterministic choices.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    SplitMix64::new(a ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What the simulator believes about one agent, for tests to compare with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentTruth {
    /// BlueKing cloud area id.
    pub bk_cloud_id: i64,
    /// IPv4 address, unique within the cloud area.
    pub ip: String,
    /// GSE 2.0 agent id; empty for legacy agents.
    pub bk_agent_id: String,
    /// Whether GSE knows the agent (unknown ones are absent from replies).
    pub known: bool,
    /// Whether the agent is online (status code 2, `bk_agent_alive` 1).
    pub online: bool,
    /// GSE 2.0 status code.
    pub status_code: i64,
    /// Version as served, possibly with shell noise.
    pub version: String,
    /// Upstream proxy or server IP.
    pub parent_ip: String,
    /// Last heartbeat, milliseconds since the Unix epoch.
    pub report_time_ms: u64,
}

impl AgentTruth {
    /// The `"<cloud>:<ip>"` key used by v1 replies and legacy v2 ids.
    pub fn hosts_key(&self) -> String {
        format!("{}:{}", self.bk_cloud_id, self.ip)
    }

    /// The id to send to v2: the agent id, or `cloud:ip` for legacy agents.
    pub fn v2_id(&self) -> String {
        if self.bk_agent_id.is_empty() {
            self.hosts_key()
        } else {
            self.bk_agent_id.clone()
        }
    }
}

/// One simulated agent with everything the replies need.
#[derive(Debug, Clone)]
pub(crate) struct Agent {
    pub cloud: i64,
    pub ip: String,
    pub agent_id: String,
    pub known: bool,
    pub online: bool,
    pub status_code: i64,
    pub last_status_code: i64,
    pub version: String,
    pub parent_ip: String,
    pub parent_port: u16,
    pub period_ms: u64,
    pub phase_ms: u64,
    pub online_since_ms: u64,
    pub last_report_ms: u64,
    pub start_time_s: u64,
    pub cpu_rate: f64,
    pub mem_rate: f64,
}

impl Agent {
    /// The `cloud:ip` key.
    pub fn key(&self) -> String {
        format!("{}:{}", self.cloud, self.ip)
    }

    /// Last heartbeat in ms as of `now`: online agents beat every `period_ms`.
    pub fn report_time_ms(&self, now: u64) -> u64 {
        if !self.online {
            return self.last_report_ms;
        }
        let beat = now.saturating_sub((now + self.phase_ms) % self.period_ms);
        beat.max(self.online_since_ms)
    }

    /// The textual status GSE 2.0 pairs with a status code.
    pub fn status_text(code: i64) -> &'static str {
        match code {
            0 => "initial",
            1 => "starting",
            2 => "running",
            3 => "lossy",
            4 => "busy",
            5 => "upgrading",
            6 => "stopping",
            7 => "uninstalled",
            _ => "unknown",
        }
    }

    fn truth(&self, now: u64) -> AgentTruth {
        AgentTruth {
            bk_cloud_id: self.cloud,
            ip: self.ip.clone(),
            bk_agent_id: self.agent_id.clone(),
            known: self.known,
            online: self.online,
            status_code: self.status_code,
            version: self.version.clone(),
            parent_ip: self.parent_ip.clone(),
            report_time_ms: self.report_time_ms(now),
        }
    }

    /// Switch the agent online (code 2) or offline (`offline_code`).
    fn set_state(&mut self, online: bool, offline_code: i64, now: u64) {
        let report = self.report_time_ms(now);
        self.last_status_code = self.status_code;
        self.known = true;
        self.online = online;
        if online {
            self.status_code = 2;
            self.online_since_ms = now;
        } else {
            self.status_code = offline_code;
            self.last_report_ms = report;
        }
    }
}

/// The agent for index `i`, drawn from its own generator so the fleet
/// prefix does not depend on the fleet size.
fn make_agent(opts: &SimOptions, i: usize, now: u64) -> Agent {
    let mut rng = SplitMix64::new(mix(opts.seed, i as u64));
    let known = rng.unit() >= opts.unknown_share;
    let online = known && rng.unit() < opts.online_share;
    let legacy = rng.unit() < opts.legacy_share;
    let cloud = [0, 0, 0, 0, 0, 0, 0, 0, 1, 2][rng.below(10) as usize];
    let agent_id = if legacy {
        String::new()
    } else {
        format!(
            "0100{:016x}{:012x}",
            rng.next_u64(),
            i as u64 & 0xFFFF_FFFF_FFFF
        )
    };
    let version = pick_version(opts, &mut rng, legacy);
    let offline_code = [3, 3, 3, 3, 3, 3, 7, 7, 7, 0][rng.below(10) as usize];
    let idle_ms = 300_000 + rng.below(7_200_000);
    let period_ms = u64::try_from(opts.report_period.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Agent {
        cloud,
        ip: ip_for(i),
        agent_id,
        known,
        online,
        status_code: if online { 2 } else { offline_code },
        last_status_code: 2,
        parent_ip: parent_for(cloud, &mut rng),
        parent_port: if legacy { 50000 } else { 58625 },
        period_ms,
        phase_ms: rng.below(period_ms),
        online_since_ms: 0,
        last_report_ms: now.saturating_sub(idle_ms),
        start_time_s: (now / 1000).saturating_sub(rng.below(30 * 86_400) + idle_ms / 1000),
        cpu_rate: (rng.below(4000) as f64) / 100.0,
        mem_rate: (rng.below(9000) as f64) / 100.0,
        version,
    }
}

/// A unique `10.a.b.c` for index `i` (c in 1..=250).
fn ip_for(i: usize) -> String {
    let c = i % 250 + 1;
    let b = (i / 250) % 256;
    let a = (i / (250 * 256)) % 256;
    format!("10.{a}.{b}.{c}")
}

/// A GSE server for the direct area (cloud 0), else one of the area's proxies.
fn parent_for(cloud: i64, rng: &mut SplitMix64) -> String {
    let n = rng.below(3) + 1;
    if cloud == 0 {
        format!("10.255.0.{n}")
    } else {
        format!("172.16.{cloud}.{n}")
    }
}

fn pick_version(opts: &SimOptions, rng: &mut SplitMix64, legacy: bool) -> String {
    let v1: Vec<&String> = opts
        .versions
        .iter()
        .filter(|v| v.starts_with('V'))
        .collect();
    let pool: Vec<&String> = if legacy && !v1.is_empty() {
        v1
    } else {
        opts.versions.iter().collect()
    };
    let base = match pool.get(rng.below(pool.len() as u64) as usize) {
        Some(v) => v.to_string(),
        None => String::new(),
    };
    if rng.unit() < opts.junk_version_share {
        format!("{base}\n\x1b[0m")
    } else {
        base
    }
}

/// The fleet and its indexes.
#[derive(Debug)]
pub(crate) struct Fleet {
    agents: Vec<Agent>,
    by_id: HashMap<String, usize>,
    by_key: HashMap<String, usize>,
    rng: SplitMix64,
    churn_per_minute: f64,
    churn_clock: Instant,
    churn_carry: f64,
}

impl Fleet {
    /// Build the fleet `opts` describes.
    pub fn new(opts: &SimOptions) -> Self {
        let now = now_ms();
        let agents: Vec<Agent> = (0..opts.agents).map(|i| make_agent(opts, i, now)).collect();
        let by_id = agents
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.agent_id.is_empty())
            .map(|(i, a)| (a.agent_id.clone(), i))
            .collect();
        let by_key = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.key(), i))
            .collect();
        Self {
            agents,
            by_id,
            by_key,
            rng: SplitMix64::new(mix(opts.seed, u64::MAX)),
            churn_per_minute: opts.churn_per_minute,
            churn_clock: Instant::now(),
            churn_carry: 0.0,
        }
    }

    /// The agent at `idx`.
    pub fn agent(&self, idx: usize) -> Option<&Agent> {
        self.agents.get(idx)
    }

    /// Index of a v2 id: a real agent id, or `cloud:ip` of a legacy agent.
    pub fn find_v2(&self, id: &str) -> Option<usize> {
        if let Some(&i) = self.by_id.get(id) {
            return Some(i);
        }
        let i = *self.by_key.get(id)?;
        self.agents[i].agent_id.is_empty().then_some(i)
    }

    /// Index of a v1 host.
    pub fn find_v1(&self, cloud: i64, ip: &str) -> Option<usize> {
        self.by_key.get(&format!("{cloud}:{ip}")).copied()
    }

    /// Index of a control id: any agent id or any `cloud:ip`.
    pub fn find_any(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).or_else(|| self.by_key.get(id)).copied()
    }

    /// Put the agents at `idxs` online or offline.
    pub fn set_state(&mut self, idxs: &[usize], online: bool, offline_code: i64) {
        let now = now_ms();
        for &i in idxs {
            if let Some(a) = self.agents.get_mut(i) {
                a.set_state(online, offline_code, now);
            }
        }
    }

    /// Apply the churn owed for the time since the last call.
    pub fn advance(&mut self) {
        if self.churn_per_minute <= 0.0 || self.agents.is_empty() {
            return;
        }
        let elapsed = self.churn_clock.elapsed();
        self.churn_clock = Instant::now();
        let owed = self.churn_carry + elapsed.as_secs_f64() / 60.0 * self.churn_per_minute;
        let flips = owed.floor();
        self.churn_carry = owed - flips;
        let now = now_ms();
        for _ in 0..flips as u64 {
            let i = self.rng.below(self.agents.len() as u64) as usize;
            let a = &mut self.agents[i];
            if a.known {
                let online = !a.online;
                a.set_state(online, 3, now);
            }
        }
    }

    /// The truth about every agent, in fleet order.
    pub fn truth(&self) -> Vec<AgentTruth> {
        let now = now_ms();
        self.agents.iter().map(|a| a.truth(now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(a.next_u64(), SplitMix64::new(8).next_u64());
    }

    #[test]
    fn ips_are_unique_and_ids_look_real() {
        let opts = SimOptions {
            agents: 70_000,
            ..SimOptions::default()
        };
        let fleet = Fleet::new(&opts);
        let truth = fleet.truth();
        let keys: std::collections::HashSet<_> = truth.iter().map(|t| t.hosts_key()).collect();
        assert_eq!(keys.len(), truth.len());
        for t in truth.iter().filter(|t| !t.bk_agent_id.is_empty()) {
            assert_eq!(t.bk_agent_id.len(), 32);
            assert!(
                t.bk_agent_id
                    .chars()
                    .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
            );
        }
    }

    #[test]
    fn shares_are_roughly_honoured() {
        let fleet = Fleet::new(&SimOptions {
            agents: 10_000,
            ..SimOptions::default()
        });
        let truth = fleet.truth();
        let known = truth.iter().filter(|t| t.known).count();
        let online = truth.iter().filter(|t| t.online).count();
        let legacy = truth.iter().filter(|t| t.bk_agent_id.is_empty()).count();
        assert!((9700..=9900).contains(&known), "known {known}");
        assert!((online as f64 / known as f64 - 0.95).abs() < 0.02);
        assert!((800..=1200).contains(&legacy), "legacy {legacy}");
        assert!(truth.iter().all(|t| t.online == (t.status_code == 2)));
    }

    #[test]
    fn legacy_agents_are_found_by_key_only() {
        let fleet = Fleet::new(&SimOptions::default());
        let truth = fleet.truth();
        let legacy = truth.iter().position(|t| t.bk_agent_id.is_empty()).unwrap();
        let modern = truth
            .iter()
            .position(|t| !t.bk_agent_id.is_empty())
            .unwrap();
        assert_eq!(fleet.find_v2(&truth[legacy].hosts_key()), Some(legacy));
        assert_eq!(fleet.find_v2(&truth[modern].hosts_key()), None);
        assert_eq!(fleet.find_v2(&truth[modern].bk_agent_id), Some(modern));
    }

    #[test]
    fn online_report_times_are_recent() {
        for period in [20_000, 300] {
            let fleet = Fleet::new(&SimOptions {
                report_period: Duration::from_millis(period),
                ..SimOptions::default()
            });
            assert_report_times_within(&fleet, period);
        }
    }

    fn assert_report_times_within(fleet: &Fleet, period: u64) {
        let now = now_ms();
        for t in fleet.truth().iter().filter(|t| t.known) {
            let age = now.saturating_sub(t.report_time_ms);
            if t.online {
                assert!(age <= period + 1000, "age {age}");
            } else {
                assert!(age >= 300_000, "age {age}");
            }
        }
    }

    #[test]
    fn churn_flips_agents_from_elapsed_time() {
        let opts = SimOptions {
            churn_per_minute: 30.0,
            ..SimOptions::default()
        };
        let mut fleet = Fleet::new(&opts);
        let before = fleet.truth();
        fleet.churn_clock -= Duration::from_secs(60);
        fleet.advance();
        let after = fleet.truth();
        let flipped = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a.online != b.online)
            .count();
        assert!((1..=30).contains(&flipped), "{flipped}");
        assert!(after.iter().all(|t| t.online == (t.status_code == 2)));
    }
}
