//! Configuration: the exporter's file and the web configuration file, from
//! YAML text to typed, validated values.
//!
//! Two stages, as in blackbox_exporter and ripgrep: the `Raw*` types of
//! [`schema`] are exactly what the user wrote (serde, unknown keys rejected),
//! and one [`validate::Validator`] turns them into typed values, checking
//! every rule and collecting *every* problem with the key path, the bad value
//! and the rule it breaks. This module (`mod.rs`) holds the typed result and
//! the entry points; host parsing is [`hosts`], the fast path for hosts
//! written inline [`inline`], PEM reading [`pem`], upstream TLS [`tls`], the
//! web configuration [`web`], and noticing that a file changed [`watch`].
//!
//! No network I/O and no knowledge of metrics. Secrets stay in
//! [`Secret`], whose `Debug` never shows the value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{ApiVersion, Host, RateLimit, Secret, Sharding};

mod file;
pub(crate) mod hosts;
mod inline;
mod nesting;
mod pem;
pub(crate) mod schema;
mod tls;
mod validate;
pub(crate) mod watch;
pub mod web;

pub use file::FileError;
pub(crate) use file::{HOSTS_FILE, read_text};
use file::{SMALL_FILE, YAML_FILE};
pub(crate) use schema::RawConfig;
pub(crate) use tls::TlsConfig;
use validate::Validator;

/// Largest batch GSE 2.0's `list_agent_*` accepts.
pub(crate) const V2_MAX_BATCH: usize = 1000;
/// Largest batch we send to GSE 1.x's ESB (no documented cap; nodeman uses 2000).
pub(crate) const V1_MAX_BATCH: usize = 2000;

/// Problems kept of one file; more are only counted.
const MAX_KEPT_PROBLEMS: usize = 100;
/// Problems listed in logs and by `--config.check`; more are counted.
pub const MAX_LISTED_PROBLEMS: usize = 20;
/// Problems named in an HTTP answer.
const MAX_ANSWERED_PROBLEMS: usize = 3;
/// Longest value quoted in a problem, in bytes.
pub(crate) const MAX_QUOTE_BYTES: usize = 80;
/// Longest rule or parser message in a problem, in bytes.
pub(crate) const MAX_RULE_BYTES: usize = 300;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `groups[1].hosts[3]`.
    pub(crate) path: String,
    /// The offending value as written (never a secret).
    pub(crate) value: String,
    /// The rule that value breaks.
    pub(crate) rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.rule)
        } else {
            write!(f, "{}: {}: {}", self.path, self.value, self.rule)
        }
    }
}

/// Whether `c` is a control character or one that changes how the text
/// around it is shown while being invisible itself: the bidirectional
/// overrides, embeddings and isolates (U+202E turns the rest of a line
/// around), the directional and zero-width marks, the byte-order mark.
pub(crate) fn is_unseen(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}')
        || matches!(c, '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `text` with control and unseen characters ([`is_unseen`]) escaped, cut
/// to at most `max` bytes (on a character boundary) with the full length
/// said, so that no file, reply or flag can make a log line or an answer
/// large, or show it other than as written.
pub(crate) fn cut(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 24);
    for c in text.chars() {
        let escaped: String = if is_unseen(c) {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.len() + escaped.len() > max {
            out.push_str(&format!("… ({} bytes)", text.len()));
            return out;
        }
        out.push_str(&escaped);
    }
    out
}

/// The user and password of a URL (`user:pass` of `http://user:pass@host`), if any.
/// A value without `://` is no URL to take apart (`user:pass@host:4318`,
/// `https//user:pass@host`, each refused with the value quoted): all before
/// its last `@` may be a password.
fn credentials(url: &str) -> Option<&str> {
    let Some((_, rest)) = url.split_once("://") else {
        return url.rfind('@').map(|at| &url[..at]);
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority.rfind('@').map(|at| &authority[..at])
}

/// `text` with the user and password of `url` replaced by `***`: for a URL
/// and for any message that quotes it (an HTTP client's error names its URL).
pub(crate) fn hide_credentials(text: &str, url: &str) -> String {
    match credentials(url).filter(|c| !c.is_empty()) {
        Some(credentials) => text.replace(credentials, "***"),
        None => text.to_string(),
    }
}

/// The problems of one file: the first [`MAX_KEPT_PROBLEMS`] and how many
/// there were in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems {
    kept: Vec<Problem>,
    total: usize,
}

impl Problems {
    /// Adds a problem, made only if it is kept: past the first
    /// [`MAX_KEPT_PROBLEMS`] a problem is counted, not written out (a hosts
    /// file of 30 million bad lines took 88 CPU-seconds to check when every
    /// one was).
    pub(crate) fn push(&mut self, make: impl FnOnce() -> Problem) {
        self.total += 1;
        if self.kept.len() < MAX_KEPT_PROBLEMS {
            self.kept.push(make());
        }
    }

    /// How many problems were found.
    pub fn total(&self) -> usize {
        self.total
    }

    fn listed(&self, max: usize) -> Vec<String> {
        let mut lines: Vec<String> = self.kept.iter().take(max).map(|p| p.to_string()).collect();
        if self.total > lines.len() {
            lines.push(format!("and {} more problems", self.total - lines.len()));
        }
        lines
    }
}

/// Keys counted once each, in about twice the memory of the distinct keys
/// whatever the number of repeats: sorted keys, not a hash set of them (a
/// million keys cost their strings and one slot each), de-duplicated each
/// time the list fills, before it grows. Collecting every line's key first
/// took 1 GB to count a 60 MB hosts file of one host written 30 million times.
#[derive(Default)]
struct DistinctKeys(Vec<String>);

impl DistinctKeys {
    fn insert(&mut self, key: Option<String>) {
        let Some(key) = key else { return };
        if self.0.len() == self.0.capacity() {
            self.0.sort_unstable();
            self.0.dedup();
            // Room for at least as many pushes as keys held before the next
            // sort: a list that stays nearly full is not sorted at every push.
            self.0.reserve(self.0.len());
        }
        self.0.push(key);
    }

    fn count(mut self) -> usize {
        self.0.sort_unstable();
        self.0.dedup();
        self.0.len()
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: FileError,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// Where the parse failed (key path).
        path: String,
        /// The parser's message.
        message: String,
    },
    /// The file parsed but breaks one or more rules.
    #[error("invalid config: {}", .0.listed(5).join("; "))]
    Invalid(Problems),
}

impl ConfigError {
    /// The problems, one per line, at most [`MAX_LISTED_PROBLEMS`] and then
    /// how many more: for logs and `--config.check`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(problems) => problems.listed(MAX_LISTED_PROBLEMS),
            other => vec![other.to_string()],
        }
    }

    /// A short answer for a client: how many problems, and the key and rule
    /// of the first few, never a value from a file.
    pub fn brief(&self) -> String {
        let ConfigError::Invalid(problems) = self else {
            return match self {
                ConfigError::Parse { path, .. } => {
                    format!(
                        "1 problem: {}: not valid YAML of the expected shape",
                        cut(path, MAX_QUOTE_BYTES)
                    )
                }
                other => format!("1 problem: {}", cut(&other.to_string(), MAX_RULE_BYTES)),
            };
        };
        let first: Vec<String> = problems
            .kept
            .iter()
            .take(MAX_ANSWERED_PROBLEMS)
            .map(|p| format!("{}: {}", p.path, p.rule))
            .collect();
        match problems.total {
            1 => format!("1 problem: {}", first.join("; ")),
            total => format!("{total} problems; first: {}", first.join("; ")),
        }
    }
}

/// The hosts of a configuration, as `--config.check` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCount {
    /// Hosts listed inline or in hosts files, summed over groups.
    pub listed: usize,
    /// Groups whose hosts CMDB lists at run time.
    pub from_cmdb: usize,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// GSE access.
    pub gse: GseConfig,
    /// Status poll interval.
    pub interval: Duration,
    /// Info poll interval.
    pub(crate) info_interval: Duration,
    /// How long agents of a failed batch keep their last values.
    pub stale_after: Duration,
    /// CMDB discovery, when any group uses it.
    pub(crate) cmdb: Option<CmdbConfig>,
    /// This process's shard.
    pub(crate) sharding: Sharding,
    /// Metric families never exposed (anchored regular expressions).
    pub(crate) metric_deny: Vec<String>,
    /// Groups in file order.
    pub groups: Vec<GroupConfig>,
    /// OTLP push, when configured.
    pub otlp: Option<OtlpConfig>,
}

/// How OTLP data is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtlpProtocol {
    /// Protobuf over HTTP POST.
    HttpProtobuf,
    /// gRPC (tonic).
    Grpc,
}

/// Validated `otlp:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// Collector URL as written (trailing `/` removed).
    pub(crate) endpoint: String,
    /// Transport.
    pub(crate) protocol: OtlpProtocol,
    /// Header (metadata) names, lower-case, with their secret values.
    pub headers: Vec<(String, Secret)>,
    /// Time between pushes.
    pub(crate) interval: Duration,
    /// Deadline of one push, retries included.
    pub(crate) timeout: Duration,
    /// Extra resource attributes, sorted by key.
    pub(crate) resource_attributes: Vec<(String, String)>,
}

/// Which CMDB API lists a business's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmdbApi {
    /// ESB `list_biz_hosts`, auth in the body, `bk_biz_id` in the body.
    Esb,
    /// Gateway `list_hosts`, auth in a header, `bk_biz_id` in the path.
    Gateway,
}

/// Validated `cmdb:` block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CmdbConfig {
    /// The API.
    pub(crate) api: CmdbApi,
    /// Root URL.
    pub(crate) url: String,
    /// Path under the root with `{bk_biz_id}`.
    pub(crate) path: String,
    /// Path of the host listing with topology, with `{bk_biz_id}`.
    pub(crate) topology_path: String,
    /// Path of the business lookup, with `{bk_supplier_account}`.
    pub(crate) business_path: String,
    /// `bk_supplier_account` (`gse.supplier_account`).
    pub(crate) supplier_account: String,
    /// App code.
    pub(crate) app_code: String,
    /// App secret.
    pub(crate) app_secret: Secret,
    /// `bk_username`.
    pub(crate) username: String,
    /// Per-request timeout.
    pub(crate) timeout: Duration,
    /// The request rate (`cmdb.rate_limit`).
    pub(crate) rate_limit: RateLimit,
    /// Rows per page.
    pub(crate) page_size: usize,
    /// How often a group's hosts are re-listed.
    pub(crate) refresh_interval: Duration,
    /// A refresh shrinking a group by this share or more is held back once.
    pub(crate) max_shrink: f64,
    /// `X-Bk-Tenant-Id` sent on every CMDB request, if any.
    pub(crate) tenant_id: Option<String>,
    /// Upstream TLS.
    pub(crate) tls: TlsConfig,
}

/// Largest CMDB page (the documented limit).
pub(crate) const CMDB_MAX_PAGE: usize = 500;

/// CMDB fields a group may turn into labels.
pub(crate) const CMDB_LABEL_FIELDS: &[&str] = &["bk_host_name", "bk_host_id"];

/// The labels `gse_agent_topology_info` adds after an agent's own (the
/// metric table spells them; a test there checks they agree), which a group
/// with `cmdb.topology` may not use as extra labels.
pub(crate) const TOPOLOGY_LABELS: &[&str] = &[
    "bk_biz_name",
    "bk_set_name",
    "bk_module_name",
    "operator",
    "bk_bak_operator",
];

/// A group's CMDB selection.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct GroupCmdb {
    /// Only hosts of these sets.
    pub(crate) bk_set_ids: Vec<i64>,
    /// Only hosts of these modules.
    pub(crate) bk_module_ids: Vec<i64>,
    /// `host_property_filter`, passed through.
    pub(crate) host_property_filter: Option<serde_json::Value>,
    /// CMDB fields exported as labels.
    pub(crate) labels: Vec<String>,
    /// Ask for each host's topology and maintainers and the business name.
    pub(crate) topology: bool,
    /// `X-Bk-Tenant-Id` of the group's CMDB calls: the group's `tenant_id`,
    /// else `cmdb.tenant_id`.
    pub(crate) tenant_id: Option<String>,
}

/// Validated `gse:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct GseConfig {
    /// Default API.
    pub(crate) api: ApiVersion,
    /// ESB root for v1 (`.../api/c/compapi/v2/gse`), when any group uses v1.
    pub(crate) v1_url: Option<String>,
    /// Gateway root for v2 (`.../api/bk-gse/prod`), when any group uses v2.
    pub(crate) v2_url: Option<String>,
    /// App code.
    pub(crate) app_code: String,
    /// App secret.
    pub(crate) app_secret: Secret,
    /// `bk_username`.
    pub(crate) username: String,
    /// `bk_supplier_account`.
    pub(crate) supplier_account: String,
    /// `X-Bk-Tenant-Id`, if any.
    pub(crate) tenant_id: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Hosts per request (already capped per API by the poller).
    pub batch_size: usize,
    /// The request rate per endpoint (`gse.rate_limit`).
    pub rate_limit: RateLimit,
    /// Requests in flight per endpoint.
    pub(crate) max_in_flight: usize,
    /// Attempts per batch.
    pub max_attempts: u32,
    /// First retry delay.
    pub(crate) initial_backoff: Duration,
    /// Longest retry delay.
    pub(crate) max_backoff: Duration,
    /// Reply body cap in bytes.
    pub max_response_bytes: usize,
    /// Upstream TLS.
    pub(crate) tls: TlsConfig,
}

impl GseConfig {
    /// The root URL for an API version (validated to exist for every API in use).
    pub fn url_for(&self, api: ApiVersion) -> Option<&str> {
        match api {
            ApiVersion::V1 => self.v1_url.as_deref(),
            ApiVersion::V2 => self.v2_url.as_deref(),
        }
    }
}

/// One validated group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// The `group` label.
    pub name: String,
    /// The business.
    pub(crate) bk_biz_id: i64,
    /// API used for this group.
    pub api: ApiVersion,
    /// Extra labels, sorted by name.
    pub(crate) labels: Vec<(String, String)>,
    /// Inline hosts, de-duplicated, in file order.
    pub hosts: Vec<Host>,
    /// A hosts file (absolute, or relative to the config file).
    pub(crate) hosts_file: Option<PathBuf>,
    /// CMDB discovery of the business.
    pub(crate) cmdb: Option<GroupCmdb>,
    /// Export per-agent series.
    pub(crate) per_agent_metrics: bool,
    /// `X-Bk-Tenant-Id` of the group's GSE 2.0 calls: the group's
    /// `tenant_id`, else `gse.tenant_id`.
    pub(crate) tenant_id: Option<String>,
}

impl GroupConfig {
    /// Label names every agent of the group carries after the standard ones.
    pub(crate) fn host_label_names(&self) -> &[String] {
        self.cmdb.as_ref().map_or(&[], |c| c.labels.as_slice())
    }

    /// Whether CMDB is asked for the topology of the group's hosts.
    pub(crate) fn topology(&self) -> bool {
        self.cmdb.as_ref().is_some_and(|c| c.topology)
    }
}

/// Label names the exporter sets itself; groups may not use them as extra labels.
pub(crate) const RESERVED_LABELS: &[&str] = &[
    "group",
    "bk_biz_id",
    "bk_cloud_id",
    "ip",
    "bk_agent_id",
    "version",
    "parent_ip",
    "state",
    "job",
    "instance",
];

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path, YAML_FILE).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw = parse_raw(&text)?;
        // The text is not needed past the parse: a large file's bytes are
        // not held while its hosts are checked.
        drop(text);
        let env = |name: &str| std::env::var(name).ok();
        Config::from_raw(raw, &env, path.parent().unwrap_or(Path::new(".")))
    }

    /// Counts the hosts of every group from the sources that can be read
    /// now: inline hosts and hosts files (re-read, bounded, and
    /// de-duplicated per group by the key GSE is asked with). Groups with
    /// `cmdb:` learn theirs at run time and are counted apart.
    pub fn count_hosts(&self) -> HostCount {
        let mut count = HostCount::default();
        for group in &self.groups {
            let mut keys = DistinctKeys::default();
            for host in &group.hosts {
                keys.insert(host.query_key(group.api));
            }
            if let Some(text) = group
                .hosts_file
                .as_deref()
                .and_then(|f| read_text(f, HOSTS_FILE).ok())
            {
                for (_, host) in hosts::host_lines(&text, group.api) {
                    keys.insert(host.ok().and_then(|h| h.query_key(group.api)));
                }
            }
            count.listed += keys.count();
            count.from_cmdb += usize::from(group.cmdb.is_some());
        }
        count
    }

    /// Keeps only the inline hosts whose query key (`cloud:ip` or the agent
    /// id, as GSE is asked) `owned` accepts: a shard keeps its share of a
    /// large inline list instead of every shard's. What is dropped is what
    /// discovery would drop from this shard anyway.
    pub(crate) fn retain_hosts(&mut self, owned: impl Fn(&str) -> bool) {
        for group in &mut self.groups {
            let api = group.api;
            group
                .hosts
                .retain(|host| host.query_key(api).is_some_and(|key| owned(&key)));
            group.hosts.shrink_to_fit();
        }
    }

    /// Parses and validates configuration text; relative files resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw = parse_raw(text)?;
        Config::from_raw(raw, &|name| std::env::var(name).ok(), base_dir)
    }

    /// Validates a raw configuration; `env` looks up `${VAR}` references.
    pub fn from_raw(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        let mut v = Validator::new(env, base_dir);
        let config = v.config(raw);
        v.finish(config)
    }
}

/// A `metric_deny` pattern as it is matched: anchored at both ends.
fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// Compiles the deny list (validated with the config; a bad pattern denies nothing).
pub(crate) fn deny_set(patterns: &[String]) -> Option<regex::RegexSet> {
    if patterns.is_empty() {
        return None;
    }
    regex::RegexSet::new(patterns.iter().map(|p| anchored(p))).ok()
}

/// Parses YAML into [`RawConfig`], reporting the key path of the first shape error.
pub fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
    match inline::parse(text) {
        Some(raw) => Ok(raw),
        None => parse_yaml(text),
    }
}

/// Parses YAML into any file shape, reporting the key path of the first shape error.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    if let Some((line, rule)) = nesting::too_deep(text) {
        return Err(ConfigError::Parse {
            path: format!("line {line}"),
            message: rule.into(),
        });
    }
    // A file of nothing but comments is an empty map, as it reads.
    let text = if only_comments(text) { "{}" } else { text };
    let mut path = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(
        text,
        yaml_options(text.len()),
        |de| {
            serde_path_to_error::deserialize(de).map_err(|err| {
                path = inline::written_path(err.path().to_string());
                err.into_inner()
            })
        },
    );
    parsed.map_err(|err| {
        let (message, hidden) = user_message(&err);
        // `?`: the error came while reading a key.
        let mut path = path.trim_end_matches('?').trim_end_matches('.');
        // The path ends with the unknown key: not shown there either.
        if let Some(key) = hidden {
            path = path.strip_suffix(key).unwrap_or(path).trim_end_matches('.');
        }
        ConfigError::Parse {
            path: if path.is_empty() || path == "." {
                "<root>".into()
            } else {
                path.to_string()
            },
            message,
        }
    })
}

/// The parser's message for a user, bounded, and the key it does not show
/// (an unknown key unlike every key its block expects).
fn user_message(err: &serde_saphyr::Error) -> (String, Option<&str>) {
    let serde_saphyr::Error::SerdeUnknownField {
        field, expected, ..
    } = err
    else {
        let message = err.render_with_formatter(&serde_saphyr::UserMessageFormatter);
        return (cut(&without_values(&message), MAX_RULE_BYTES), None);
    };
    let at = err
        .location()
        .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
        .unwrap_or_default();
    // The keys the block expects, in backticks (the keys-table test reads
    // them), whole: the schema's own names, bounded by it.
    let quoted: Vec<String> = expected.iter().map(|key| format!("`{key}`")).collect();
    let expected = format!("expected one of {}", quoted.join(", "));
    match like_a_key(field, &quoted) {
        Some(near) => {
            let field = cut(field, MAX_QUOTE_BYTES);
            let message = format!("unknown field `{field}`, {expected}{at} (did you mean {near}?)");
            (message, None)
        }
        None => {
            let message = format!(
                "unknown field{at}, not shown: like no key of this block, it may be a value \
                 (a secret) written where a key goes; {expected}"
            );
            (message, Some(field.as_str()))
        }
    }
}

/// The expected key (backticked) an unknown key is a misspelling of: at
/// most two edits away, and fewer than a third of its letters. Only such a
/// key is shown; any other may be a value, a secret among them, written
/// where a key goes.
fn like_a_key<'a>(field: &str, quoted: &'a [String]) -> Option<&'a str> {
    let field = field.to_ascii_lowercase();
    quoted
        .iter()
        .map(|key| {
            let name = key.trim_matches('`');
            (strsim::damerau_levenshtein(&field, name), key.as_str())
        })
        .filter(|&(edits, _)| edits <= 2 && edits * 3 < field.chars().count())
        .min_by_key(|&(edits, _)| edits)
        .map(|(_, key)| key)
}

/// Whether a text holds nothing but blank lines and comments.
fn only_comments(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#')
    })
}

/// The YAML parser's options: a streaming parse (no tree of the document is
/// kept, so a million inline hosts cost what their hosts do), with budgets
/// that grow with the text, since every event takes at least a byte of it,
/// and its bounds on aliases as they are. Nesting is bounded before, by
/// [`nesting`], whose rule names the line; the parser's own depth bound
/// sits above it. `<<` is an ordinary key (an unknown one, as before).
fn yaml_options(len: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = len.saturating_add(1024);
    budget.max_nodes = len.saturating_add(1024);
    budget.max_total_scalar_bytes = len.saturating_add(1024);
    budget.max_depth = nesting::MAX_FLOW_DEPTH + nesting::MAX_INDENT + 8;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // Keys written twice are refused by what reads them (structs, `unique_keys`,
    // host maps), as before: the parser need not remember every key it saw.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    options.merge_keys = serde_saphyr::MergeKeyPolicy::AsOrdinary;
    options.with_snippet = false;
    options
}

/// Reads a map, refusing a key written twice: serde's own maps silently keep
/// the last (a second `basic_auth_users` entry for one user, a label set
/// twice). Structs refuse duplicate fields by themselves, and host maps
/// refuse them in [`hosts`]; the parser passes them through.
pub(crate) fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: serde::Deserialize<'de>,
{
    use serde::de::{Error, MapAccess, Visitor};
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: serde::Deserialize<'de>> Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, V>()? {
                if out.contains_key(&key) {
                    let shown = cut(&key, MAX_QUOTE_BYTES);
                    return Err(A::Error::custom(format!("duplicate key `{shown}`")));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    // Any, not map: an empty value (`labels:`) is an empty map.
    d.deserialize_any(Unique(std::marker::PhantomData))
}

/// A parser's message without the value it quotes (`invalid type: string
/// "…", expected …`): the value may be a secret written in the wrong place.
fn without_values(message: &str) -> String {
    for marker in ["invalid type: ", "invalid value: "] {
        if let Some((head, rest)) = message.split_once(marker)
            && let Some((what, tail)) = rest.split_once(", expected")
        {
            let kind = what.split([' ', '"', '`']).next().unwrap_or(what);
            return format!("{head}{marker}{kind}, expected{tail}");
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(n: usize) -> Problem {
        Problem {
            path: format!("groups[0].hosts[{n}]"),
            value: "x".into(),
            rule: "is bad".into(),
        }
    }

    fn parse_problem(yaml: &str) -> (String, String) {
        match parse_yaml::<RawConfig>(yaml) {
            Err(ConfigError::Parse { path, message }) => (path, message),
            other => panic!("not a parse error: {other:?}"),
        }
    }

    #[test]
    fn a_secret_written_where_a_key_goes_is_never_shown() {
        // `app_secret:` left empty and the secret on the next line, one step
        // too far out: valid YAML, the secret an unknown key of `gse`.
        let secret = "Zq9SuperSecretValue42";
        let yaml = format!(
            "gse:\n  url: http://gse\n  app_code: a\n  app_secret:\n  {secret}:\ngroups: []\n"
        );
        let (path, message) = parse_problem(&yaml);
        assert_eq!(path, "gse");
        assert!(!message.contains(secret), "{message}");
        assert!(message.contains("at line 5, column 3"), "{message}");
        assert!(
            message.contains("`app_secret`, `app_secret_file`"),
            "{message}"
        );
        // At the top level, and as long as anything may be.
        let secret = "k".repeat(500);
        let (path, message) = parse_problem(&format!("{secret}: 1\n"));
        assert_eq!(path, "<root>");
        assert!(!message.contains("kkk"), "{message}");
        assert!(
            message.ends_with("`otlp`"),
            "every key expected, whole: {message}"
        );
    }

    #[test]
    fn a_misspelt_key_is_shown_with_the_key_it_is_like() {
        let (path, message) = parse_problem("intervall: 1s\n");
        assert_eq!(path, "intervall");
        assert!(
            message.starts_with("unknown field `intervall`, expected one of `gse`, `interval`"),
            "{message}"
        );
        assert!(message.ends_with("(did you mean `interval`?)"), "{message}");
        let (_, message) = parse_problem("Metrics_Deny: []\n");
        assert!(
            message.ends_with("(did you mean `metric_deny`?)"),
            "{message}"
        );
        // Two letters from a key of three is not a misspelling of it.
        let (_, message) = parse_problem("gso: {}\n");
        assert!(!message.contains("gso"), "{message}");
    }

    #[test]
    fn long_values_are_cut_and_control_characters_escaped() {
        assert_eq!(cut("short", 80), "short");
        let long = "y".repeat(5 << 20);
        let shown = cut(&long, MAX_QUOTE_BYTES);
        assert!(shown.len() < 120, "{shown}");
        assert!(shown.ends_with(&format!("({} bytes)", 5 << 20)), "{shown}");
        assert_eq!(cut("a\nb\x1b", 80), "a\\nb\\u{1b}");
        // Shown as "ok.exe" reversed at the override: escaped instead.
        assert_eq!(cut("a\u{202e}exe.ko", 80), "a\\u{202e}exe.ko");
        for c in [
            '\u{061c}', '\u{200b}', '\u{200f}', '\u{202a}', '\u{2066}', '\u{2069}', '\u{feff}',
        ] {
            assert!(cut(&format!("x{c}"), 80).starts_with("x\\u{"), "{c:?}");
        }
        assert_eq!(
            cut("版本 é ✓", 80),
            "版本 é ✓",
            "other text is kept as it is"
        );
        assert!(cut(&"é".repeat(100), 81).is_char_boundary(0));
    }

    #[test]
    fn credentials_in_urls_are_never_shown() {
        let url = "https://user:pa55@collector:4318/v1/metrics";
        assert_eq!(
            hide_credentials(url, url),
            "https://***@collector:4318/v1/metrics"
        );
        let error = format!("error sending request for url ({url})");
        assert!(!hide_credentials(&error, url).contains("pa55"));
        assert_eq!(
            hide_credentials("http://c:4318", "http://c:4318"),
            "http://c:4318"
        );
        assert_eq!(hide_credentials("x", "http://c/a@b"), "x");
        // Not a URL: a scheme forgotten or mistyped.
        for typo in [
            "user:pa55@collector:4318",
            "https//user:pa55@collector/v1",
            "http:/u:pa55@c",
        ] {
            let problem =
                format!("otlp.endpoint: {typo}: must be an absolute http:// or https:// URL");
            let shown = hide_credentials(&problem, typo);
            assert!(!shown.contains("pa55"), "{shown}");
            assert!(shown.contains("***@c"), "{shown}");
        }
    }

    #[test]
    fn distinct_keys_count_each_key_once_and_hold_about_the_distinct_ones() {
        let mut keys = DistinctKeys::default();
        let mut seen = std::collections::HashSet::new();
        // A few thousand distinct keys, each repeated, in a scrambled order.
        for i in 0u64..200_000 {
            let key = (i.wrapping_mul(2_654_435_761) % 3_001).to_string();
            seen.insert(key.clone());
            keys.insert(Some(key));
            assert!(
                keys.0.capacity() <= 4 * 3_001,
                "{} at {i}",
                keys.0.capacity()
            );
        }
        keys.insert(None);
        assert_eq!(keys.count(), seen.len());
    }

    #[test]
    fn problem_lists_are_capped_and_say_how_many_more() {
        let mut problems = Problems::default();
        for n in 0..300 {
            problems.push(|| problem(n));
        }
        assert_eq!(problems.total(), 300);
        assert_eq!(problems.kept.len(), MAX_KEPT_PROBLEMS);
        let err = ConfigError::Invalid(problems);
        let lines = err.problems();
        assert_eq!(lines.len(), MAX_LISTED_PROBLEMS + 1);
        assert_eq!(lines.last().unwrap(), "and 280 more problems");
        assert!(err.to_string().len() < 400, "{err}");
        let brief = err.brief();
        assert!(
            brief.starts_with("300 problems; first: groups[0].hosts[0]: is bad"),
            "{brief}"
        );
        assert!(
            !brief.contains(": x:"),
            "a brief answer shows no value: {brief}"
        );
        let mut one = Problems::default();
        one.push(|| problem(0));
        let brief = ConfigError::Invalid(one).brief();
        assert_eq!(
            brief, "1 problem: groups[0].hosts[0]: is bad",
            "not \"1 problems\""
        );
    }

    #[test]
    fn a_key_written_twice_is_refused_wherever_it_is() {
        for text in [
            "gse: {url: x}\ninterval: 1s\ninterval: 2s\n",
            "gse: {url: x}\ngroups: [{name: a, bk_biz_id: 1, labels: {a: b, a: c}}]\n",
            "gse: {url: x}\notlp: {headers: {a: b, a: c}}\n",
        ] {
            let err = parse_raw(text).expect_err(text).to_string();
            assert!(err.contains("duplicate"), "{text}: {err}");
        }
        let host = "gse: {url: http://x, app_code: a, app_secret: b}\n\
            groups: [{name: a, bk_biz_id: 1, hosts: [{ip: 10.0.0.1, ip: 10.0.0.2}]}]\n";
        let err = Config::parse(host, Path::new(".")).unwrap_err().to_string();
        assert!(
            err.contains(
                "groups[0].hosts[0]: ip: 10.0.0.1, ip: 10.0.0.2: a host map has a key written twice"
            ),
            "{err}"
        );
        let users = "basic_auth_users:\n  alice: $2y$x\n  alice: $2y$y\n";
        let err = parse_yaml::<web::RawWebConfig>(users)
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate key `alice`"), "{err}");
        assert!(parse_raw("gse: {url: x}\ngroups: [{name: a, bk_biz_id: 1, labels: }]\n").is_ok());
    }

    #[test]
    fn a_shard_keeps_only_the_inline_hosts_it_polls() {
        let text = "gse: {api: v2, url: http://x, app_code: a, app_secret: b}\n\
            groups:\n  - {name: a, bk_biz_id: 1, hosts: [\"0:10.0.0.1\", \"0:10.0.0.2\", abc1, abc2]}\n";
        let mut config = Config::parse(text, Path::new(".")).unwrap();
        config.retain_hosts(|key| key.ends_with('1'));
        let kept: Vec<String> = config.groups[0]
            .hosts
            .iter()
            .filter_map(|h| h.query_key(ApiVersion::V2))
            .collect();
        assert_eq!(kept, ["0:10.0.0.1", "abc1"]);
    }

    #[test]
    fn parser_messages_do_not_quote_the_value() {
        let err =
            parse_yaml::<RawConfig>("gse: {url: x}\ninterval: [\"s3cret-value\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("interval"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(
            without_values("invalid type: string \"s3cret\", expected i64 at line 2"),
            "invalid type: string, expected i64 at line 2"
        );
    }
}
