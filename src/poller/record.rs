//! What the poller remembers of each agent between cycles, and how a
//! remembered answer becomes a row of the snapshot.
//!
//! Owns the compact per-agent values (an [`Observation`] of the status call,
//! an [`AgentInfo`] of the info call, shared strings, millisecond stamps) and
//! the rules that join them into an [`AgentRecord`]: what "online", "offline"
//! and "not found" mean and how a heartbeat age is read. No I/O here.

use std::net::Ipv4Addr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::{HostEntry, IpLabel, Key, KeyLabel, unix_seconds};
use crate::snapshot::{AgentRecord, AgentRow, AgentState, STATUS_NOT_FOUND};
use crate::upstream::gse::{Info, Status};

/// A number standing for a shared string in an [`Interner`]: 4 bytes in
/// each of a million records where an `Arc<str>` took 16. 0 is "".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sid(u32);

/// Numbered shared copies of strings that many agents have in common
/// (versions, parent addresses, cloud ids), so a million agents hold a
/// handful of them and a record holds a [`Sid`] for each.
#[derive(Debug)]
pub(crate) struct Interner {
    /// The string of each number; `None` for a number free to reuse.
    table: Vec<Option<Arc<str>>>,
    ids: rustc_hash::FxHashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

impl Default for Interner {
    fn default() -> Interner {
        Interner {
            table: vec![Some(Arc::from(""))],
            ids: Default::default(),
            free: Vec::new(),
        }
    }
}

impl Interner {
    /// The number of `text`, given one when it has none.
    pub(crate) fn id(&mut self, text: &str) -> Sid {
        if text.is_empty() {
            return Sid(0);
        }
        if let Some(&id) = self.ids.get(text) {
            return Sid(id);
        }
        let shared: Arc<str> = Arc::from(text);
        let id = match self.free.pop() {
            Some(id) => {
                self.table[id as usize] = Some(shared.clone());
                id
            }
            None => {
                self.table.push(Some(shared.clone()));
                (self.table.len() - 1) as u32
            }
        };
        self.ids.insert(shared, id);
        Sid(id)
    }

    /// The shared copy of `text`.
    pub(crate) fn intern(&mut self, text: &str) -> Arc<str> {
        let id = self.id(text);
        self.get(id).clone()
    }

    /// The string of a number ("" for a number not given out).
    pub(crate) fn get(&self, id: Sid) -> &Arc<str> {
        match self.table.get(id.0 as usize) {
            Some(Some(text)) => text,
            _ => self.empty_ref(),
        }
    }

    fn empty_ref(&self) -> &Arc<str> {
        self.table[0].as_ref().expect("0 is always \"\"")
    }

    /// The shared empty string.
    pub(crate) fn empty(&self) -> Arc<str> {
        self.empty_ref().clone()
    }

    /// Frees every number `in_use` does not mark (it is called with a
    /// marker and marks the numbers still held), for reuse.
    pub(crate) fn sweep(&mut self, in_use: impl FnOnce(&mut dyn FnMut(Sid))) {
        let mut used = vec![false; self.table.len()];
        used[0] = true;
        in_use(&mut |Sid(id)| {
            if let Some(u) = used.get_mut(id as usize) {
                *u = true;
            }
        });
        for (id, used) in used.into_iter().enumerate() {
            if !used && let Some(text) = self.table[id].take() {
                self.ids.remove(&text);
                self.free.push(id as u32);
            }
        }
    }
}

/// A wall-clock time to the millisecond in 8 bytes (a `SystemTime` takes 16),
/// for what is kept per agent. Times before 1970 read as 1970.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(NonZeroU64);

impl Stamp {
    /// The stamp of a time.
    pub(crate) fn new(time: SystemTime) -> Stamp {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 1));
        Stamp(NonZeroU64::MIN.saturating_add(millis))
    }

    /// The time it stands for.
    pub(crate) fn time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.get() - 1)
    }
}

/// An optional float in 8 bytes: NaN stands for none (JSON has no NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OptF64(f64);

impl OptF64 {
    fn new(value: Option<f64>) -> OptF64 {
        OptF64(value.filter(|v| !v.is_nan()).unwrap_or(f64::NAN))
    }

    fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(self.0)
    }
}

/// The host address GSE's info call reported; an IPv4 address is kept
/// without an allocation of its own.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum HostIp {
    /// GSE did not say.
    #[default]
    Unknown,
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// Anything else GSE sent, as sent (shared).
    Text(Sid),
}

impl HostIp {
    fn new(text: Option<&str>, strings: &mut Interner) -> HostIp {
        match text {
            None | Some("") => HostIp::Unknown,
            Some(text) => match text.parse() {
                Ok(v4) => HostIp::V4(v4),
                Err(_) => HostIp::Text(strings.id(text)),
            },
        }
    }

    /// The address as a label value, `None` when unknown.
    pub(crate) fn label(&self, strings: &Interner) -> Option<IpLabel> {
        match self {
            HostIp::Unknown => None,
            HostIp::V4(ip) => Some(IpLabel::v4(*ip)),
            HostIp::Text(text) => Some(IpLabel::from(strings.get(*text).clone())),
        }
    }
}

/// What GSE's info call last said of an agent, and when: shared strings and
/// no optional wider than it must be, as a million of them are kept.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentInfo {
    version: Sid,
    parent_ip: Sid,
    host_ip: HostIp,
    /// `i64::MIN` when GSE did not say.
    bk_cloud_id: i64,
    report_time: OptF64,
    fetched: Stamp,
}

impl AgentInfo {
    /// The compact form of a decoded info fetched at `fetched`.
    pub(crate) fn new(info: &Info, fetched: SystemTime, strings: &mut Interner) -> AgentInfo {
        AgentInfo {
            version: strings.id(&info.version),
            parent_ip: strings.id(&info.parent_ip),
            host_ip: HostIp::new(info.host_ip.as_deref(), strings),
            bk_cloud_id: info.bk_cloud_id.unwrap_or(i64::MIN),
            report_time: OptF64::new(info.report_time),
            fetched: Stamp::new(fetched),
        }
    }

    /// Upstream proxy or server ("" when unknown), shared between agents.
    pub(crate) fn parent_ip<'a>(&self, strings: &'a Interner) -> &'a Arc<str> {
        strings.get(self.parent_ip)
    }

    /// Marks the shared strings this info holds.
    pub(crate) fn mark(&self, mark: &mut dyn FnMut(Sid)) {
        mark(self.version);
        mark(self.parent_ip);
        if let HostIp::Text(text) = self.host_ip {
            mark(text);
        }
    }

    /// Cloud area as GSE knows it.
    pub(crate) fn bk_cloud_id(&self) -> Option<i64> {
        (self.bk_cloud_id != i64::MIN).then_some(self.bk_cloud_id)
    }

    /// Last report from the agent, unix seconds.
    pub(crate) fn report_time(&self) -> Option<f64> {
        self.report_time.get()
    }

    /// When this info was fetched.
    pub(crate) fn fetched(&self) -> SystemTime {
        self.fetched.time()
    }
}

/// When an online agent's heartbeat, which only its info carries, is asked
/// again: at most every other cycle, and for about half the agents each
/// cycle rather than for all of them every other cycle.
///
/// Each agent has a phase, even or odd; a cycle whose parity is the agent's
/// asks it once its info is half an interval old, any cycle once it is one
/// and a half intervals old (half an interval of slack either way for
/// cycles that start late or end early). An agent fetched out of its phase
/// (first seen, or its state changed) is back in it within two cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// Nothing reads the heartbeat (its families denied, or the agent's
    /// groups have no per-agent series): only `info_interval` and changes
    /// ask for the info.
    Never,
    /// The agent's phase is (or is not) this cycle's parity.
    Every {
        /// The poll interval.
        interval: Duration,
        /// Whether this cycle is of the agent's phase.
        in_phase: bool,
    },
}

impl Refresh {
    /// Whether an info fetched `fetched_ago` is due again this cycle.
    pub(crate) fn is_due(self, fetched_ago: Duration) -> bool {
        match self {
            Refresh::Never => false,
            Refresh::Every { interval, in_phase } => {
                let early = if in_phase { 0.5 } else { 1.5 };
                fetched_ago >= interval.mul_f64(early)
            }
        }
    }
}

/// What GSE's status call last said of an agent, as the poller remembers it
/// between cycles (56 bytes); joined with the agent's info it becomes an
/// [`AgentRecord`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observation {
    state: AgentState,
    has_status_code: bool,
    status_code: i64,
    /// The version the status call carried (GSE 2.0); `Sid(0)` when none.
    version: Sid,
    report_time: OptF64,
    observed_at: Stamp,
    last_seen_alive: Option<Stamp>,
}

impl Observation {
    /// What an answer says: `status` None means GSE left the agent out (not found).
    pub(crate) fn new(
        status: Option<&Status>,
        last_seen_alive: Option<SystemTime>,
        now: SystemTime,
        strings: &mut Interner,
    ) -> Observation {
        let observed_at = Stamp::new(now);
        let last_seen_alive = last_seen_alive.map(Stamp::new);
        let Some(status) = status else {
            return Observation {
                state: AgentState::NotFound,
                has_status_code: true,
                status_code: STATUS_NOT_FOUND,
                version: Sid::default(),
                report_time: OptF64::new(None),
                observed_at,
                last_seen_alive,
            };
        };
        Observation {
            state: if status.alive {
                AgentState::Online
            } else {
                AgentState::Offline
            },
            has_status_code: status.status_code.is_some(),
            status_code: status.status_code.unwrap_or_default(),
            version: strings.id(status.version.as_deref().unwrap_or("")),
            report_time: OptF64::new(status.report_time),
            observed_at,
            last_seen_alive: if status.alive {
                Some(observed_at)
            } else {
                last_seen_alive
            },
        }
    }

    /// Online, offline or not found.
    pub(crate) fn state(&self) -> AgentState {
        self.state
    }

    /// Whether GSE's answer changed the agent's state or status code since
    /// `earlier`.
    pub(crate) fn changed_since(&self, earlier: &Observation) -> bool {
        (self.state, self.has_status_code, self.status_code)
            != (earlier.state, earlier.has_status_code, earlier.status_code)
    }

    /// Whether the agent's info should be asked again this cycle, before
    /// `info_interval` is up: its state or status code just `changed` (an
    /// agent that comes back shows its new report time at once, one that
    /// leaves its last, one GSE just learned of its version and parent), or
    /// it is online, its heartbeat comes from its info, and `refresh` says
    /// that info is due. GSE 2.0 keeps `report_time` in `list_agent_info`;
    /// when the status call carries one (some GSE builds) or the info has
    /// none (GSE 1.x), asking again tells nothing new.
    pub(crate) fn wants_info(
        &self,
        info: &AgentInfo,
        changed: bool,
        now: SystemTime,
        refresh: Refresh,
    ) -> bool {
        let heartbeat_from_info = self.report_time.get().is_none() && info.report_time().is_some();
        let fetched_ago = now.duration_since(info.fetched()).unwrap_or_default();
        match self.state {
            AgentState::NotFound | AgentState::Unknown => false,
            _ if changed => true,
            AgentState::Online => heartbeat_from_info && refresh.is_due(fetched_ago),
            AgentState::Offline => false,
        }
    }

    /// When the agent was last seen alive.
    pub(crate) fn last_seen_alive(&self) -> Option<SystemTime> {
        self.last_seen_alive.map(Stamp::time)
    }

    /// Whether this observation is too old to report (its batch kept
    /// failing): made before `cutoff`, which [`stale_cutoff`] gives once
    /// per snapshot rather than a time subtraction per agent.
    pub(crate) fn is_stale(&self, cutoff: SystemTime) -> bool {
        self.observed_at.time() < cutoff
    }

    /// The version to count and export: the status call's, else the info's
    /// (none for an agent GSE does not know).
    fn shared_version(&self, info: Option<&AgentInfo>) -> Option<Sid> {
        match (self.state, self.version, info) {
            (AgentState::NotFound, _, _) => None,
            (_, version, _) if version != Sid::default() => Some(version),
            (_, _, info) => info.map(|info| info.version),
        }
    }

    /// The version to count and export ("" when unknown).
    pub(crate) fn version<'a>(&self, info: Option<&AgentInfo>, strings: &'a Interner) -> &'a str {
        self.shared_version(info).map_or("", |v| strings.get(v))
    }

    /// Marks the shared strings this observation holds.
    pub(crate) fn mark(&self, mark: &mut dyn FnMut(Sid)) {
        mark(self.version);
    }

    /// The full record, with what info adds (version, parent, heartbeat).
    pub(crate) fn record(&self, info: Option<&AgentInfo>, strings: &Interner) -> AgentRecord {
        let found = self.state != AgentState::NotFound;
        let info = info.filter(|_| found);
        let observed_at = self.observed_at.time();
        let last_seen_alive = self.last_seen_alive();
        // The newest report time either call gave, else (GSE 1.x, or a GSE
        // that reports none) when the exporter last saw the agent alive.
        let now = unix_seconds(observed_at);
        let believed = |t: &f64| *t <= now + MAX_HEARTBEAT_AHEAD_SECONDS;
        let report_time = match (
            self.report_time.get().filter(believed),
            info.and_then(AgentInfo::report_time).filter(believed),
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let heartbeat_at = report_time.or(last_seen_alive.map(unix_seconds));
        let heartbeat_age = heartbeat_at.map(|at| (now - at).max(0.0));
        let version = self
            .shared_version(info)
            .map_or_else(|| strings.empty(), |v| strings.get(v).clone());
        AgentRecord {
            state: self.state,
            status_code: self.has_status_code.then_some(self.status_code),
            version,
            parent_ip: info.map_or_else(|| strings.empty(), |i| i.parent_ip(strings).clone()),
            heartbeat_at,
            heartbeat_age,
            observed_at,
            last_seen_alive,
        }
    }
}

/// How far ahead of the exporter's clock a report time may be and still be
/// believed: more is not clock skew but a wrong time, and is set aside as
/// no report time (a heartbeat in the year 3000 read as age 0 for ever, so
/// a stuck agent looked fresh).
const MAX_HEARTBEAT_AHEAD_SECONDS: f64 = 3600.0;

/// The time before which an observation is too old to report at `now`:
/// more than `stale_after` before it.
pub(crate) fn stale_cutoff(now: SystemTime, stale_after: Duration) -> SystemTime {
    now.checked_sub(stale_after).unwrap_or(UNIX_EPOCH)
}

impl AgentRow {
    /// Label values for a polled host, filled from GSE's info where the
    /// config left them out (an agent id given alone).
    pub(crate) fn new(
        entry: &HostEntry,
        info: Option<&AgentInfo>,
        record: AgentRecord,
        blank_labels: &Arc<[String]>,
        strings: &mut Interner,
    ) -> AgentRow {
        let cloud = entry
            .bk_cloud_id()
            .or(info.and_then(AgentInfo::bk_cloud_id));
        let bk_cloud_id = match cloud {
            Some(cloud) => strings.intern(itoa::Buffer::new().format(cloud)),
            None => strings.empty(),
        };
        let ip = match entry.ip() {
            Some(ip) => IpLabel::v4(ip),
            None => info
                .and_then(|i| i.host_ip.label(strings))
                .unwrap_or_else(IpLabel::empty),
        };
        AgentRow {
            bk_cloud_id,
            ip,
            bk_agent_id: entry.agent_id().map_or_else(KeyLabel::empty, Key::label),
            host_labels: entry.labels().unwrap_or(blank_labels).clone(),
            topology: entry.topology().cloned(),
            record,
        }
    }
}

#[cfg(test)]
impl AgentRecord {
    /// Builds the record for an agent GSE answered for (or left out: `status` None).
    pub(crate) fn observe(
        status: Option<&Status>,
        info: Option<&AgentInfo>,
        previous: Option<&AgentRecord>,
        now: SystemTime,
        strings: &mut Interner,
    ) -> AgentRecord {
        let last_seen_alive = previous.and_then(|p| p.last_seen_alive);
        Observation::new(status, last_seen_alive, now, strings).record(info, strings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_strings_are_numbered_once_and_freed_when_no_record_holds_them() {
        let mut strings = Interner::default();
        let a = strings.id("2.1.3");
        assert_eq!(strings.id("2.1.3"), a);
        assert_eq!(strings.id(""), Sid(0));
        let b = strings.id("10.0.0.9");
        assert_ne!(a, b);
        let row_copy = strings.intern("10.0.0.9");
        strings.sweep(|mark| mark(a));
        assert_eq!(&**strings.get(a), "2.1.3");
        assert_eq!(&**strings.get(b), "", "freed: nothing marked it");
        assert_eq!(&*row_copy, "10.0.0.9", "a copy handed out lives on");
        let c = strings.id("2.2.0");
        assert_eq!(c, b, "the freed number is reused");
        assert_eq!(&**strings.get(c), "2.2.0");
        let again = strings.id("10.0.0.9");
        assert!(
            again != a && again != c,
            "a freed string comes back with a new number"
        );
        assert_eq!(&**strings.get(again), "10.0.0.9");
        assert_eq!(&**strings.get(Sid(0)), "");
    }

    #[test]
    fn stamps_keep_milliseconds_and_clamp_before_1970() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        assert_eq!(Stamp::new(t).time(), t);
        assert_eq!(Stamp::new(t + Duration::from_micros(999)).time(), t);
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Stamp::new(before).time(), UNIX_EPOCH);
    }

    #[test]
    fn info_keeps_what_gse_said_and_nothing_it_did_not() {
        let mut strings = Interner::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let full = Info {
            version: "2.1.5".into(),
            parent_ip: "10.0.0.1".into(),
            host_ip: Some("10.0.0.7".into()),
            bk_cloud_id: Some(-3),
            report_time: Some(1_763_999_990.5),
        };
        let info = AgentInfo::new(&full, now, &mut strings);
        assert_eq!(&**strings.get(info.version), "2.1.5");
        assert_eq!(info.host_ip.label(&strings).as_deref(), Some("10.0.0.7"));
        assert_eq!(info.bk_cloud_id(), Some(-3));
        assert_eq!(info.report_time(), Some(1_763_999_990.5));
        assert_eq!(info.fetched(), now);
        let odd = Info {
            host_ip: Some("fe80::1".into()),
            ..Info::default()
        };
        let info = AgentInfo::new(&odd, now, &mut strings);
        assert_eq!(info.host_ip.label(&strings).as_deref(), Some("fe80::1"));
        assert_eq!(info.bk_cloud_id(), None);
        assert_eq!(info.report_time(), None);
        let blank = AgentInfo::new(&Info::default(), now, &mut strings);
        assert_eq!(blank.host_ip.label(&strings), None);
    }

    fn status(alive: bool, code: Option<i64>) -> Status {
        Status {
            alive,
            status_code: code,
            version: None,
            report_time: None,
        }
    }

    #[test]
    fn v1_heartbeat_age_counts_from_last_seen_alive() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let online = AgentRecord::observe(
            Some(&status(true, None)),
            None,
            None,
            t0,
            &mut Interner::default(),
        );
        assert_eq!(online.heartbeat_age, Some(0.0));
        let t1 = t0 + Duration::from_secs(90);
        let offline = AgentRecord::observe(
            Some(&status(false, None)),
            None,
            Some(&online),
            t1,
            &mut Interner::default(),
        );
        assert_eq!(offline.state, AgentState::Offline);
        assert_eq!(offline.heartbeat_age, Some(90.0));
        assert_eq!(offline.heartbeat_at, Some(1_000_000.0), "last seen alive");
        assert_eq!(offline.status_code, None);
    }

    #[test]
    fn a_report_time_far_ahead_of_the_clock_is_not_believed() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let at = |report_time: f64| {
            let reported = Status {
                report_time: Some(report_time),
                ..status(true, None)
            };
            let rec =
                AgentRecord::observe(Some(&reported), None, None, t0, &mut Interner::default());
            (rec.heartbeat_at, rec.heartbeat_age)
        };
        // Year 3000: set aside; the heartbeat is when the exporter saw it alive.
        assert_eq!(at(32_503_680_000.0), (Some(1_764_000_000.0), Some(0.0)));
        // Half a minute ahead is clock skew: believed, age 0.
        assert_eq!(at(1_764_000_030.0), (Some(1_764_000_030.0), Some(0.0)));
        assert_eq!(at(1_763_999_900.0), (Some(1_763_999_900.0), Some(100.0)));
        // Gone offline with that time still reported: the age grows.
        let future = |alive| Status {
            report_time: Some(32_503_680_000.0),
            ..status(alive, None)
        };
        let mut strings = Interner::default();
        let online = AgentRecord::observe(Some(&future(true)), None, None, t0, &mut strings);
        let t1 = t0 + Duration::from_secs(900);
        let gone =
            AgentRecord::observe(Some(&future(false)), None, Some(&online), t1, &mut strings);
        assert_eq!(gone.heartbeat_age, Some(900.0));
    }

    #[test]
    fn missing_from_the_reply_is_not_found_with_code_minus_two() {
        let now = SystemTime::now();
        let rec = AgentRecord::observe(None, None, None, now, &mut Interner::default());
        assert_eq!(rec.state, AgentState::NotFound);
        assert_eq!(rec.status_code, Some(STATUS_NOT_FOUND));
        assert_eq!(rec.heartbeat_age, None);
    }

    #[test]
    fn v2_heartbeat_age_uses_report_time() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000);
        let mut s = status(true, Some(2));
        s.report_time = Some(1_999_970.0);
        let rec = AgentRecord::observe(Some(&s), None, None, now, &mut Interner::default());
        assert_eq!(rec.heartbeat_age, Some(30.0));
    }

    #[test]
    fn the_newest_report_time_wins_and_the_timestamp_matches_the_age() {
        let mut strings = Interner::default();
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000);
        let info = Info {
            report_time: Some(1_999_900.0),
            ..Info::default()
        };
        let info = AgentInfo::new(&info, now, &mut strings);
        let rec = AgentRecord::observe(
            Some(&status(true, Some(2))),
            Some(&info),
            None,
            now,
            &mut strings,
        );
        assert_eq!(rec.heartbeat_at, Some(1_999_900.0));
        assert_eq!(rec.heartbeat_age, Some(100.0));
        let mut s = status(true, Some(2));
        s.report_time = Some(1_999_990.0);
        let rec = AgentRecord::observe(Some(&s), Some(&info), None, now, &mut strings);
        assert_eq!(rec.heartbeat_at, Some(1_999_990.0));
        s.report_time = Some(1_999_000.0);
        let rec = AgentRecord::observe(Some(&s), Some(&info), None, now, &mut strings);
        assert_eq!(
            rec.heartbeat_at,
            Some(1_999_900.0),
            "an older state report time loses"
        );
    }

    #[test]
    fn info_is_asked_again_on_a_change_and_for_a_heartbeat_it_carries() {
        let mut strings = Interner::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(2_000_000);
        let refresh = Refresh::Every {
            interval: Duration::from_secs(60),
            in_phase: false,
        };
        let with_report = Info {
            report_time: Some(1_999_990.0),
            ..Info::default()
        };
        let info = AgentInfo::new(&with_report, t0, &mut strings);
        let observe = |status: Option<&Status>, strings: &mut Interner| {
            Observation::new(status, None, t0, strings)
        };
        let online = observe(Some(&status(true, Some(2))), &mut strings);
        let offline = observe(Some(&status(false, Some(3))), &mut strings);
        let missing = observe(None, &mut strings);
        let one_cycle = t0 + Duration::from_secs(60);
        let two_cycles = t0 + Duration::from_secs(120);
        // Online: every other cycle (fetched 90 s ago or more), or at once on a change.
        assert!(!online.wants_info(&info, false, one_cycle, refresh));
        assert!(online.wants_info(&info, false, two_cycles, refresh));
        assert!(online.wants_info(&info, true, one_cycle, refresh));
        // Offline: only when it just went offline (its last report time).
        assert!(!offline.wants_info(&info, false, two_cycles, refresh));
        assert!(offline.wants_info(&info, true, one_cycle, refresh));
        // Not found: nothing to learn.
        assert!(!missing.wants_info(&info, true, two_cycles, refresh));
        // The status call carries report_time (some GSE builds), or the info
        // has none (GSE 1.x, or GSE did not know the agent when asked): only
        // a change asks again.
        let mut s = status(true, Some(2));
        s.report_time = Some(1_999_999.0);
        let carried = observe(Some(&s), &mut strings);
        assert!(!carried.wants_info(&info, false, two_cycles, refresh));
        assert!(carried.wants_info(&info, true, one_cycle, refresh));
        let bare = AgentInfo::new(&Info::default(), t0, &mut strings);
        let v1 = observe(Some(&status(true, None)), &mut strings);
        assert!(!v1.wants_info(&bare, false, two_cycles, refresh));
        assert!(v1.wants_info(&bare, true, one_cycle, refresh));
        assert!(
            online.wants_info(&bare, true, one_cycle, refresh),
            "GSE just learned of it"
        );
        // Nothing reads the heartbeat: only a change asks again.
        assert!(!online.wants_info(&info, false, two_cycles, Refresh::Never));
        assert!(online.wants_info(&info, true, one_cycle, Refresh::Never));
    }

    #[test]
    fn a_refresh_is_due_half_an_interval_early_in_phase_and_late_out_of_it() {
        let interval = Duration::from_secs(60);
        let (in_phase, out) = (
            Refresh::Every {
                interval,
                in_phase: true,
            },
            Refresh::Every {
                interval,
                in_phase: false,
            },
        );
        let secs = Duration::from_secs;
        assert!(!in_phase.is_due(secs(29)));
        assert!(in_phase.is_due(secs(30)));
        assert!(!out.is_due(secs(89)));
        assert!(out.is_due(secs(90)));
        assert!(!Refresh::Never.is_due(secs(86_400)));
    }

    #[test]
    fn a_change_is_a_new_state_or_status_code() {
        let mut strings = Interner::default();
        let now = SystemTime::now();
        let mut observe =
            |status: Option<&Status>| Observation::new(status, None, now, &mut strings);
        let running = observe(Some(&status(true, Some(2))));
        let lossy = observe(Some(&status(false, Some(3))));
        let stopping = observe(Some(&status(false, Some(6))));
        let missing = observe(None);
        assert!(!running.changed_since(&running.clone()));
        assert!(lossy.changed_since(&running));
        assert!(stopping.changed_since(&lossy));
        assert!(missing.changed_since(&lossy));
    }

    #[test]
    fn records_go_stale_after_the_limit() {
        // Kept to the millisecond.
        let t0 = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let rec = Observation::new(
            Some(&status(true, None)),
            None,
            t0,
            &mut Interner::default(),
        );
        let limit = Duration::from_secs(180);
        let at = |secs| stale_cutoff(t0 + Duration::from_secs(secs), limit);
        assert!(!rec.is_stale(at(180)));
        assert!(rec.is_stale(at(181)));
        assert!(
            !rec.is_stale(stale_cutoff(UNIX_EPOCH, limit)),
            "before the epoch"
        );
    }
}
