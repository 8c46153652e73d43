//! Plain types every layer shares: which GSE API, a host and a host to poll,
//! discovery state and skip reasons, secrets, sharding, rate limits, unix
//! time, and the provenance of this build.
//!
//! Owns only data and the pure rules on it (a host's query key, a shard's
//! share). It depends on no other module of the crate; every other module may
//! depend on it.

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Which GSE API a group is polled through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiVersion {
    /// GSE 1.x through ESB: `get_agent_status` + `get_agent_info`.
    V1,
    /// GSE 2.0 through the API gateway: `list_agent_state` + `list_agent_info`.
    V2,
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiVersion::V1 => "v1",
            ApiVersion::V2 => "v2",
        })
    }
}

/// A host as configured: a `cloud:ip`, a GSE 2.0 agent id, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host {
    /// BlueKing cloud area id.
    pub(crate) bk_cloud_id: Option<i64>,
    /// Inner IPv4 address.
    pub(crate) ip: Option<Ipv4Addr>,
    /// GSE 2.0 agent id.
    pub(crate) agent_id: Option<String>,
}

impl Host {
    /// `"cloud:ip"`, when the host has an ip.
    pub(crate) fn cloud_ip(&self) -> Option<String> {
        self.ip
            .map(|ip| format!("{}:{}", self.bk_cloud_id.unwrap_or(0), ip))
    }

    /// The key GSE is asked with and answers by: `cloud:ip` on v1; the agent
    /// id, else `cloud:ip`, on v2.
    pub(crate) fn query_key(&self, api: ApiVersion) -> Option<String> {
        match api {
            ApiVersion::V1 => self.cloud_ip(),
            ApiVersion::V2 => self.agent_id.clone().or_else(|| self.cloud_ip()),
        }
    }

    /// A short human form for messages.
    pub(crate) fn display(&self) -> String {
        match (&self.agent_id, self.cloud_ip()) {
            (Some(id), Some(ci)) => format!("{ci} ({id})"),
            (Some(id), None) => id.clone(),
            (None, Some(ci)) => ci,
            (None, None) => String::from("<no address>"),
        }
    }
}

/// Where a host sits in CMDB and who maintains it, as label values ("" where
/// unknown). A host in several sets or modules has each distinct name once,
/// sorted, joined by `,` (one value per host, so a PromQL join on the host
/// matches one series). Hosts with the same values share one `Arc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Topology {
    /// Set names.
    pub bk_set_name: Arc<str>,
    /// Module names.
    pub bk_module_name: Arc<str>,
    /// Main maintainers, as CMDB writes them (comma-separated user names).
    pub operator: Arc<str>,
    /// Backup maintainers, as CMDB writes them.
    pub bk_bak_operator: Arc<str>,
}

impl Topology {
    /// A host's topology from the names CMDB lists for it: each distinct
    /// set and module name once, sorted, joined by `,`; the maintainers as
    /// CMDB writes them, trimmed.
    pub(crate) fn from_names<'a>(
        sets: impl IntoIterator<Item = &'a str>,
        modules: impl IntoIterator<Item = &'a str>,
        operator: &str,
        bk_bak_operator: &str,
    ) -> Topology {
        fn joined<'a>(names: impl IntoIterator<Item = &'a str>) -> Arc<str> {
            let names: std::collections::BTreeSet<&str> =
                names.into_iter().filter(|n| !n.is_empty()).collect();
            let mut text = String::new();
            for (i, name) in names.iter().enumerate() {
                if text.len() + 1 + name.len() > MAX_JOINED_BYTES {
                    text.push_str(&format!(",…(+{} more)", names.len() - i));
                    break;
                }
                if i > 0 {
                    text.push(',');
                }
                text.push_str(name);
            }
            text.into()
        }
        Topology {
            bk_set_name: joined(sets),
            bk_module_name: joined(modules),
            operator: operator.trim().into(),
            bk_bak_operator: bk_bak_operator.trim().into(),
        }
    }
}

/// Longest a host's joined set or module names are kept (each name is cut
/// at 1024 bytes as CMDB answers it): past it, the names that fit and how
/// many more there were. A host in 7,000 sets of long names made a label
/// value of 7 MB, in each of its series.
const MAX_JOINED_BYTES: usize = 1024;

/// The key GSE is asked with and answers by for one host: its GSE 2.0
/// agent id, or `cloud:ip` for a host asked for by address (GSE 1.x, or
/// GSE 2.0 before its agent is upgraded).
///
/// A million are kept, in host entries and the poller's memory, so the
/// usual agent id, 32 lowercase hex digits, is held as its 16 bytes in
/// place (24 bytes, no allocation; an `Arc<str>` of it took 16 and 48 more
/// on the heap); anything else is shared text. Made only by [`Key::new`],
/// so two keys are equal, and hash alike, exactly when their texts are.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(KeyRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum KeyRepr {
    /// 32 lowercase hex digits, as the bytes they spell.
    Hex([u8; 16]),
    /// Any other text.
    Text(Arc<str>),
}

/// Digits of a [`Key`] held as bytes.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

impl Key {
    /// The key whose text is `text`.
    pub fn new(text: &str) -> Key {
        match hex_bytes(text) {
            Some(bytes) => Key(KeyRepr::Hex(bytes)),
            None => Key(KeyRepr::Text(Arc::from(text))),
        }
    }

    /// Calls `f` with the key's text (spelled out on the stack for a key
    /// held as bytes).
    pub fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match &self.0 {
            KeyRepr::Hex(bytes) => f(spell(bytes, &mut [0; 32])),
            KeyRepr::Text(text) => f(text),
        }
    }

    /// Whether the key's text is `text`, without spelling it out.
    pub fn is(&self, text: &str) -> bool {
        match &self.0 {
            KeyRepr::Hex(bytes) => hex_bytes(text).is_some_and(|b| b == *bytes),
            KeyRepr::Text(own) => **own == *text,
        }
    }

    /// The key's text as a label value that can be read as `&str`.
    pub fn label(&self) -> KeyLabel {
        match &self.0 {
            KeyRepr::Hex(bytes) => KeyLabel::new(spell(bytes, &mut [0; 32])),
            KeyRepr::Text(text) => KeyLabel::from(text.clone()),
        }
    }
}

/// The 16 bytes 32 lowercase hex digits spell; None for any other text.
/// Every byte is read through a table, and the digits are checked once at
/// the end: every reply item's id goes through here (it was 4 % of a
/// steady cycle's CPU at 100k agents with a branch per digit).
fn hex_bytes(text: &str) -> Option<[u8; 16]> {
    let digits: &[u8; 32] = text.as_bytes().try_into().ok()?;
    let mut bytes = [0; 16];
    let mut seen = 0;
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let (high, low) = (
            HEX_VALUES[usize::from(pair[0])],
            HEX_VALUES[usize::from(pair[1])],
        );
        seen |= high | low;
        *byte = high << 4 | low;
    }
    (seen <= 0xf).then_some(bytes)
}

/// The value of each lowercase hex digit; 0xff for any other byte.
static HEX_VALUES: [u8; 256] = {
    let mut values = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        values[HEX_DIGITS[i] as usize] = i as u8;
        i += 1;
    }
    values
};

/// Spells `bytes` as 32 lowercase hex digits into `out`.
fn spell<'a>(bytes: &[u8; 16], out: &'a mut [u8; 32]) -> &'a str {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0xf)];
    }
    // Only ASCII digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

impl From<&str> for Key {
    fn from(text: &str) -> Key {
        Key::new(text)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|text| f.write_str(text))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|text| fmt::Debug::fmt(text, f))
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_str(|text| serializer.serialize_str(text))
    }
}

/// A label value read as `&str` many times over (an agent row's, every
/// cycle), held where it is: text of up to `N` bytes written in place, so
/// a row costs no allocation for it, and longer text shared. Equal when
/// their text is.
#[derive(Clone)]
pub struct InPlace<const N: usize>(Held<N>);

#[derive(Clone)]
enum Held<const N: usize> {
    /// The first `len` bytes of `text`.
    Inline { text: [u8; N], len: u8 },
    /// Anything longer, or already shared.
    Shared(Arc<str>),
}

/// An agent row's `bk_agent_id` label: a GSE 2.0 id's 32 hex digits in place.
pub type KeyLabel = InPlace<32>;

/// An agent row's `ip` label: a dotted quad (at most 15 bytes) in place.
pub type IpLabel = InPlace<15>;

impl<const N: usize> InPlace<N> {
    /// `text`, in place when it fits.
    pub fn new(text: &str) -> InPlace<N> {
        let len = text.len();
        if len > N || len > usize::from(u8::MAX) {
            return InPlace(Held::Shared(Arc::from(text)));
        }
        let mut bytes = [0; N];
        bytes[..len].copy_from_slice(text.as_bytes());
        InPlace(Held::Inline {
            text: bytes,
            len: len as u8,
        })
    }

    /// The label of unknown: "".
    pub fn empty() -> InPlace<N> {
        InPlace::new("")
    }
}

impl IpLabel {
    /// The dotted-quad label of an address.
    pub(crate) fn v4(ip: Ipv4Addr) -> IpLabel {
        let mut text = [0u8; 15];
        let mut len = 0;
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                text[len] = b'.';
                len += 1;
            }
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(octet).as_bytes();
            text[len..len + digits.len()].copy_from_slice(digits);
            len += digits.len();
        }
        InPlace(Held::Inline {
            text,
            len: len as u8,
        })
    }
}

impl<const N: usize> std::ops::Deref for InPlace<N> {
    type Target = str;

    fn deref(&self) -> &str {
        match &self.0 {
            // Only whole strings are written in place.
            Held::Inline { text, len } => {
                std::str::from_utf8(&text[..usize::from(*len).min(N)]).unwrap_or_default()
            }
            Held::Shared(text) => text,
        }
    }
}

impl<const N: usize> AsRef<str> for InPlace<N> {
    fn as_ref(&self) -> &str {
        self
    }
}

impl<const N: usize> PartialEq for InPlace<N> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<const N: usize> Eq for InPlace<N> {}

impl<const N: usize> From<&str> for InPlace<N> {
    fn from(text: &str) -> InPlace<N> {
        InPlace::new(text)
    }
}

impl<const N: usize> From<String> for InPlace<N> {
    fn from(text: String) -> InPlace<N> {
        InPlace::new(&text)
    }
}

/// Shared as it is: no copy.
impl<const N: usize> From<Arc<str>> for InPlace<N> {
    fn from(text: Arc<str>) -> InPlace<N> {
        InPlace(Held::Shared(text))
    }
}

impl<const N: usize> fmt::Debug for InPlace<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A host to poll, with the values of the group's CMDB labels and its
/// topology. Built when its source is read and kept across cycles; its
/// strings are shared with the poller's memory and the snapshot's rows.
///
/// 48 bytes, its key in place: a million of them are kept. What few hosts have (CMDB label
/// values, a topology, an agent id other than the key) sits behind one
/// pointer, and the cloud id and address are packed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HostEntry {
    /// The key GSE is asked with for this host in its group's API.
    pub(crate) key: Key,
    extra: Option<Arc<EntryExtra>>,
    /// BlueKing cloud area id; [`NO_CLOUD`] when not configured.
    cloud: i64,
    /// The IPv4 address's bits, when `has_ip`.
    ip: u32,
    has_ip: bool,
    /// The GSE 2.0 agent id is `key` itself.
    id_is_key: bool,
}

/// What few hosts have: kept apart so that the rest cost no room for it.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
struct EntryExtra {
    /// The agent id, when it is not the key (a GSE 1.x group's host).
    agent_id: Option<Key>,
    /// Values of `GroupConfig::host_label_names`, when any is not empty.
    labels: Option<Arc<[String]>>,
    topology: Option<Arc<Topology>>,
}

/// The packed form of "no cloud id configured".
const NO_CLOUD: i64 = i64::MIN;

impl HostEntry {
    /// An entry for a host polled through `api`; None when it cannot be asked for.
    pub(crate) fn new(host: &Host, api: ApiVersion, labels: Arc<[String]>) -> Option<HostEntry> {
        let key = Key::new(&host.query_key(api)?);
        let id_is_key = host.agent_id.as_deref().is_some_and(|id| key.is(id));
        let extra = EntryExtra {
            agent_id: host
                .agent_id
                .as_deref()
                .filter(|_| !id_is_key)
                .map(Key::new),
            labels: Some(labels).filter(|l| l.iter().any(|v| !v.is_empty())),
            topology: None,
        };
        Some(HostEntry {
            key,
            extra: (extra != EntryExtra::default()).then(|| Arc::new(extra)),
            cloud: host.bk_cloud_id.unwrap_or(NO_CLOUD),
            ip: host.ip.map_or(0, u32::from),
            has_ip: host.ip.is_some(),
            id_is_key,
        })
    }

    /// BlueKing cloud area id, when configured.
    pub(crate) fn bk_cloud_id(&self) -> Option<i64> {
        (self.cloud != NO_CLOUD).then_some(self.cloud)
    }

    /// Inner IPv4 address, when configured.
    pub(crate) fn ip(&self) -> Option<Ipv4Addr> {
        self.has_ip.then(|| Ipv4Addr::from(self.ip))
    }

    /// GSE 2.0 agent id, when configured (the same string as `key` on v2).
    pub(crate) fn agent_id(&self) -> Option<&Key> {
        if self.id_is_key {
            return Some(&self.key);
        }
        self.extra.as_ref()?.agent_id.as_ref()
    }

    /// Values of `GroupConfig::host_label_names`, in order; `None` when
    /// every one is "" (or the group has none).
    pub(crate) fn labels(&self) -> Option<&Arc<[String]>> {
        self.extra.as_ref()?.labels.as_ref()
    }

    /// Where CMDB puts the host, for groups with `cmdb.topology` (None: not
    /// listed by CMDB, or topology off).
    pub(crate) fn topology(&self) -> Option<&Arc<Topology>> {
        self.extra.as_ref()?.topology.as_ref()
    }

    /// Sets (or clears) where CMDB puts the host.
    pub(crate) fn set_topology(&mut self, topology: Option<Arc<Topology>>) {
        let mut extra = self.extra.take().map_or_else(EntryExtra::default, |e| {
            Arc::try_unwrap(e).unwrap_or_else(|shared| EntryExtra {
                agent_id: shared.agent_id.clone(),
                labels: shared.labels.clone(),
                topology: shared.topology.clone(),
            })
        });
        extra.topology = topology;
        self.extra = (extra != EntryExtra::default()).then(|| Arc::new(extra));
    }

    /// The host as configured.
    #[cfg(test)]
    pub(crate) fn host(&self) -> Host {
        Host {
            bk_cloud_id: self.bk_cloud_id(),
            ip: self.ip(),
            agent_id: self.agent_id().map(|id| id.to_string()),
        }
    }
}

/// Items in first-seen order, each key once. Repeats are found through a
/// table of positions hashed by key, not a second copy of any item or key:
/// a million hosts cost what they do, plus about 9 bytes each.
#[derive(Debug)]
pub(crate) struct FirstSeen<T> {
    items: Vec<T>,
    seen: hashbrown::HashTable<u32>,
}

impl<T> Default for FirstSeen<T> {
    fn default() -> Self {
        FirstSeen {
            items: Vec::new(),
            seen: hashbrown::HashTable::new(),
        }
    }
}

impl<T> FirstSeen<T> {
    /// Room for `n` items.
    pub(crate) fn with_capacity(n: usize) -> Self {
        FirstSeen {
            items: Vec::with_capacity(n),
            seen: hashbrown::HashTable::with_capacity(n),
        }
    }

    /// Adds `item` unless an item with the same `key` is already there.
    pub(crate) fn push_by<K>(&mut self, item: T, key: impl Fn(&T) -> &K)
    where
        K: std::hash::Hash + Eq + ?Sized,
    {
        use std::hash::BuildHasher as _;
        let hash = |item: &T| rustc_hash::FxBuildHasher.hash_one(key(item));
        let FirstSeen { items, seen } = self;
        let entry = seen.entry(
            hash(&item),
            |&at| key(&items[at as usize]) == key(&item),
            |&at| hash(&items[at as usize]),
        );
        if let hashbrown::hash_table::Entry::Vacant(vacant) = entry {
            vacant.insert(items.len() as u32);
            items.push(item);
        }
    }

    /// The items, in first-seen order, with no room to spare.
    pub(crate) fn into_vec(self) -> Vec<T> {
        let mut items = self.items;
        items.shrink_to_fit();
        items
    }
}

/// The state of a group's CMDB discovery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscoveryStatus {
    /// The last refresh succeeded.
    pub(crate) success: bool,
    /// Unix time of the last successful refresh.
    pub(crate) last_success: Option<f64>,
    /// A shrinking refresh is being held back.
    pub(crate) held_back: bool,
}

/// Reasons a discovered host is not polled.
pub(crate) const SKIP_NO_ADDRESS: &str = "no_ipv4_and_no_agent_id";
/// A GSE 1.x group's host without IPv4 (v1 asks by cloud:ip only).
pub(crate) const SKIP_NO_IPV4_FOR_V1: &str = "no_ipv4_for_gse_v1";

/// A host CMDB listed in a row that cannot be read (a field of the wrong
/// type, as `bk_cloud_id: null`).
pub(crate) const SKIP_UNREADABLE: &str = "unreadable_in_cmdb";

/// A host whose `bk_agent_id` is a legacy `cloud:ip` naming another host
/// (its cloud or first IPv4 differ).
pub(crate) const SKIP_ID_OF_ANOTHER_HOST: &str = "agent_id_names_another_host";

/// Every skip reason, as `reason` label values.
pub(crate) const SKIP_REASONS: [&str; 4] = [
    SKIP_NO_ADDRESS,
    SKIP_NO_IPV4_FOR_V1,
    SKIP_UNREADABLE,
    SKIP_ID_OF_ANOTHER_HOST,
];

/// A secret string (app secret, token). `Debug` shows `<redacted>`; there is no `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which shard of the agents this process exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    /// Ordinal from 0.
    pub shard: u32,
    /// Number of shards (1 = no sharding).
    pub total: u32,
}

impl Default for Sharding {
    fn default() -> Self {
        Sharding { shard: 0, total: 1 }
    }
}

/// A token bucket: one request per `period`, up to `burst` at once after an
/// idle spell. `gse.rate_limit` and `cmdb.rate_limit` write it as requests per
/// second, the web configuration as an interval; both become this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Time to earn one request.
    pub(crate) period: Duration,
    /// Requests allowed at once.
    pub(crate) burst: u32,
}

impl RateLimit {
    /// `requests_per_second` sustained, `burst` at once.
    pub(crate) fn per_second(requests_per_second: f64, burst: u32) -> RateLimit {
        RateLimit {
            period: Duration::from_secs_f64(1.0 / requests_per_second.max(1e-6)),
            burst,
        }
    }

    /// Sustained requests per second.
    pub fn requests_per_second(&self) -> f64 {
        1.0 / self.period.as_secs_f64().max(1e-9)
    }
}

/// Unix time in seconds.
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Provenance of this build, from `build.rs`: shown by `--version` and in
/// `gse_exporter_build_info`.
pub mod build {
    /// The crate version.
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    /// The git commit built (or `GSE_EXPORTER_REVISION`; "unknown").
    pub const REVISION: &str = env!("GSE_EXPORTER_REVISION");
    /// The git branch built (or `GSE_EXPORTER_BRANCH`; "unknown").
    pub const BRANCH: &str = env!("GSE_EXPORTER_BRANCH");
    /// UTC build time, `YYYYMMDD-HH:MM:SS` (`SOURCE_DATE_EPOCH` when set).
    pub const DATE: &str = env!("GSE_EXPORTER_BUILD_DATE");
    /// `rustc --version` of the compiler.
    pub const RUSTC: &str = env!("GSE_EXPORTER_RUSTC");
    /// `--version` in the Prometheus layout.
    pub const LONG_VERSION: &str = concat!(
        env!("CARGO_PKG_VERSION"),
        " (branch: ",
        env!("GSE_EXPORTER_BRANCH"),
        ", revision: ",
        env!("GSE_EXPORTER_REVISION"),
        ")\n  build date:       ",
        env!("GSE_EXPORTER_BUILD_DATE"),
        "\n  rust version:     ",
        env!("GSE_EXPORTER_RUSTC"),
        "\n  platform:         ",
        env!("GSE_EXPORTER_TARGET"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_as_the_text_it_was_made_from() {
        let texts = [
            "0100005254008ed86116666614661851",
            "ffffffffffffffffffffffffffffffff",
            "0100005254008ED86116666614661851",
            "0100005254008ed8611666661466185",
            "0100005254008ed861166666146618511",
            "0100005254008ed8611666661466185g",
            "0:10.0.0.1",
            "",
            "é0005254008ed86116666614661851",
        ];
        for text in texts {
            let key = Key::new(text);
            assert_eq!(key.to_string(), text);
            assert_eq!(format!("{key:?}"), format!("{text:?}"));
            assert_eq!(&*key.label(), text);
            assert_eq!(
                serde_json::to_string(&key).unwrap(),
                serde_json::to_string(text).unwrap()
            );
            assert!(key.is(text), "{text}");
            for other in texts.iter().filter(|&&o| o != text) {
                assert!(!key.is(other), "{text} is not {other}");
                assert_ne!(key, Key::new(other));
            }
        }
    }

    #[test]
    fn only_lowercase_agent_ids_are_held_as_bytes() {
        assert!(matches!(
            Key::new("0100005254008ed86116666614661851").0,
            KeyRepr::Hex(_)
        ));
        assert!(matches!(
            Key::new("0100005254008ED86116666614661851").0,
            KeyRepr::Text(_)
        ));
        assert!(matches!(Key::new("0:10.0.0.1").0, KeyRepr::Text(_)));
        assert_eq!(size_of::<Key>(), 24);
    }

    #[test]
    fn labels_in_place_read_as_their_text_however_held() {
        for ip in ["0.0.0.0", "10.0.0.7", "255.255.255.255", "192.168.100.1"] {
            let label = IpLabel::v4(ip.parse().unwrap());
            assert_eq!(&*label, ip);
            assert_eq!(
                label,
                IpLabel::from(Arc::<str>::from(ip)),
                "in place or shared"
            );
        }
        assert_eq!(&*IpLabel::from("fe80::1"), "fe80::1");
        let long = "fe80::1234:5678:9abc:def0%eth0";
        assert!(matches!(IpLabel::new(long).0, Held::Shared(_)));
        assert_eq!(&*IpLabel::from(long.to_string()), long);
        assert_eq!(&*KeyLabel::empty(), "");
        assert!(
            matches!(KeyLabel::empty().0, Held::Inline { .. }),
            "no allocation"
        );
        assert_eq!(size_of::<KeyLabel>(), 40);
        assert_eq!(size_of::<IpLabel>(), 24);
    }

    /// Every digit is checked: any other ASCII byte at any place is not hex.
    #[test]
    fn hex_bytes_reads_only_32_lowercase_hex_digits() {
        let id = *b"0123456789abcdef0123456789abcdef";
        let mut spelled = [0; 32];
        let bytes = hex_bytes(std::str::from_utf8(&id).unwrap()).unwrap();
        assert_eq!(spell(&bytes, &mut spelled).as_bytes(), &id);
        for at in 0..32 {
            for other in (0..=127u8).filter(|b| !HEX_DIGITS.contains(b)) {
                let mut text = id;
                text[at] = other;
                let text = std::str::from_utf8(&text).unwrap();
                assert_eq!(hex_bytes(text), None, "{text:?}");
            }
        }
    }

    #[test]
    fn equal_keys_hash_alike() {
        use std::hash::BuildHasher as _;
        let hash = |k: &Key| rustc_hash::FxBuildHasher.hash_one(k);
        for text in ["0100005254008ed86116666614661851", "0:10.0.0.1"] {
            assert_eq!(hash(&Key::new(text)), hash(&Key::new(text)));
        }
    }

    #[test]
    fn a_host_in_thousands_of_sets_has_a_bounded_label() {
        let names: Vec<String> = (0..7000)
            .map(|i| format!("{i:04}-{}", "s".repeat(100)))
            .collect();
        let topology = Topology::from_names(names.iter().map(String::as_str), ["m"], "", "");
        let sets = &*topology.bk_set_name;
        assert!(sets.len() <= MAX_JOINED_BYTES + 24, "{} bytes", sets.len());
        let kept = sets.split(',').count() - 1;
        assert!(sets.starts_with("0000-") && kept > 5, "{sets}");
        assert!(
            sets.ends_with(&format!(",…(+{} more)", 7000 - kept)),
            "{sets}"
        );
        assert_eq!(&*topology.bk_module_name, "m");
        let few = Topology::from_names(["b", "a"], [], "", "");
        assert_eq!(&*few.bk_set_name, "a,b", "short lists are whole");
    }

    #[test]
    fn topology_names_are_distinct_sorted_and_joined() {
        let t = Topology::from_names(
            ["web", "db", "web"],
            ["nginx", "", "api", "nginx"],
            " alice,bob ",
            "",
        );
        assert_eq!(&*t.bk_set_name, "db,web");
        assert_eq!(&*t.bk_module_name, "api,nginx");
        assert_eq!(&*t.operator, "alice,bob");
        assert_eq!(Topology::from_names([], [], "", ""), Topology::default());
    }
}
