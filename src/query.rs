//! `gse_exporter query`: one poll of the configured groups (all, some, or
//! given hosts of one group) printed as a table, JSON or CSV, with an exit
//! code scripts can act on.
//!
//! Owns choosing what to ask (the group and host selection applied to a copy
//! of the configuration), turning the snapshot into rows, filtering,
//! formatting, the summary, the exit decision and the progress bar. Polling
//! is the exporter's own: one [`Poller::run_cycle`] over the loaded
//! [`Config`], so the GSE client, pacing, retries and host discovery are
//! shared. No GSE wire code and no metric text here.
//!
//! Output: the table ends with the summary line; JSON is one array of agent
//! objects and CSV a header row plus one row per agent, their summary going
//! to stderr so stdout stays parseable. Exit codes: 0 every agent asked for
//! is online, 1 some are not, 2 an error (a group GSE or CMDB could not be
//! fully asked; what was learned is still printed).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use serde::Serialize;

use crate::config::hosts::parse_host_text;
use crate::config::{Config, MAX_QUOTE_BYTES, cut};
use crate::model::{ApiVersion, Host, Sharding};
use crate::poller::{Poller, Progress};
use crate::snapshot::{AgentRow, AgentState, GroupSnapshot, Snapshot};
use crate::telemetry::Telemetry;
use crate::upstream::GseError;

/// Output formats of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns and a summary line, for people.
    Table,
    /// One JSON array of agent objects.
    Json,
    /// A header row and one row per agent (RFC 4180 quoting).
    Csv,
}

/// Agent states `--filter` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Filter {
    /// GSE says the agent is alive.
    Online,
    /// GSE knows the agent and says it is not alive.
    Offline,
    /// GSE does not know the agent.
    #[value(alias = "not_found")]
    NotFound,
}

impl Filter {
    fn state(self) -> AgentState {
        match self {
            Filter::Online => AgentState::Online,
            Filter::Offline => AgentState::Offline,
            Filter::NotFound => AgentState::NotFound,
        }
    }
}

/// What to ask for: groups by name (none = all) and hosts of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Group names; empty means every configured group.
    pub(crate) groups: Vec<String>,
    /// `cloud:ip` or agent ids, asked in the context of the one group named.
    pub(crate) hosts: Vec<String>,
}

/// Why a query could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A group name is not in the configuration.
    #[error("no group named \"{name}\" in the configuration (groups: {known})")]
    UnknownGroup {
        /// The name asked for, cut to [`MAX_QUOTE_BYTES`].
        name: String,
        /// The configured names, comma-separated, cut to [`MAX_QUOTE_BYTES`].
        known: String,
    },
    /// `--host` was given without exactly one `--group`.
    #[error("--host needs exactly one --group (its business and GSE API are used)")]
    HostsNeedOneGroup,
    /// A `--host` value does not parse, or cannot be asked through the group's API.
    #[error("--host \"{text}\": {rule}")]
    BadHost {
        /// The value given, cut to [`MAX_QUOTE_BYTES`].
        text: String,
        /// The rule it breaks.
        rule: String,
    },
    /// The GSE client could not be built.
    #[error("building the GSE client: {0}")]
    Client(#[from] GseError),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Write(#[from] std::io::Error),
    /// Formatting CSV failed.
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// The configuration to poll: only the selected groups (with only the given
/// hosts), every agent kept as a row, and no shard filter.
pub(crate) fn select(mut config: Config, selection: &Selection) -> Result<Config, QueryError> {
    if !selection.groups.is_empty() {
        for name in &selection.groups {
            if !config.groups.iter().any(|g| &g.name == name) {
                let known: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
                return Err(QueryError::UnknownGroup {
                    name: cut(name, MAX_QUOTE_BYTES),
                    known: cut(&known.join(", "), MAX_QUOTE_BYTES),
                });
            }
        }
        config.groups.retain(|g| selection.groups.contains(&g.name));
    }
    if !selection.hosts.is_empty() {
        let [group] = config.groups.as_mut_slice() else {
            return Err(QueryError::HostsNeedOneGroup);
        };
        group.hosts = parse_hosts(&selection.hosts, group.api)?;
        group.hosts_file = None;
        group.cmdb = None;
    }
    for group in &mut config.groups {
        group.per_agent_metrics = true;
    }
    config.sharding = Sharding::default();
    Ok(config)
}

fn parse_hosts(texts: &[String], api: ApiVersion) -> Result<Vec<Host>, QueryError> {
    let mut hosts = Vec::with_capacity(texts.len());
    // Each host once, in the order given; a set, not a scan of the list
    // (100,000 hosts took 5.7 CPU-seconds to de-duplicate by scanning).
    let mut seen = HashSet::with_capacity(texts.len());
    for text in texts {
        let bad = |rule: &str| QueryError::BadHost {
            text: cut(text, MAX_QUOTE_BYTES),
            rule: rule.to_string(),
        };
        let host = parse_host_text(text).map_err(bad)?;
        if host.query_key(api).is_none() {
            return Err(bad("GSE 1.x asks by cloud:ip; this host has no ip"));
        }
        if seen.insert(host.clone()) {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// Polls `config` once, drawing a progress bar on stderr when `progress`.
pub(crate) async fn poll(config: Config, progress: bool) -> Result<Snapshot, QueryError> {
    let mut poller = Poller::new(Arc::new(config), Arc::new(Telemetry::default()))?;
    poller.skip_business_names();
    if !progress {
        return Ok(poller.run_cycle().await);
    }
    let counts = poller.progress();
    let bar = ProgressBar::new();
    let cycle = poller.run_cycle();
    tokio::pin!(cycle);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let snapshot = loop {
        tokio::select! {
            snapshot = &mut cycle => break snapshot,
            _ = tick.tick() => bar.update(&counts),
        }
    };
    bar.finish();
    Ok(snapshot)
}

/// Batches done out of batches planned, on stderr, shown only once a poll
/// has run for a moment so quick queries do not flicker.
struct ProgressBar {
    bar: indicatif::ProgressBar,
    started: std::time::Instant,
}

impl ProgressBar {
    const SHOW_AFTER: Duration = Duration::from_millis(500);

    fn new() -> ProgressBar {
        let bar = indicatif::ProgressBar::hidden();
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} asking GSE: {pos}/{len} batches [{elapsed}] {wide_bar}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        ProgressBar {
            bar,
            started: std::time::Instant::now(),
        }
    }

    fn update(&self, counts: &Progress) {
        if self.bar.is_hidden() && self.started.elapsed() >= Self::SHOW_AFTER {
            self.bar
                .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        self.bar.set_length(counts.planned());
        self.bar.set_position(counts.finished());
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// One agent of the output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Row {
    /// The group (configuration name).
    pub(crate) group: String,
    /// The business.
    pub(crate) bk_biz_id: String,
    /// Inner IPv4 ("" when unknown).
    pub(crate) ip: String,
    /// Cloud area ("" when unknown).
    pub(crate) bk_cloud_id: String,
    /// GSE 2.0 agent id ("" when not configured).
    pub(crate) bk_agent_id: String,
    /// `online`, `offline` or `not_found` (as the metrics' `state` label).
    pub(crate) state: &'static str,
    /// Whether the agent is online.
    pub(crate) online: bool,
    /// Agent version ("" when unknown).
    pub(crate) version: String,
    /// Seconds since the last heartbeat (null/empty when unknown).
    pub(crate) heartbeat_age_seconds: Option<f64>,
}

impl Row {
    fn new(group: &GroupSnapshot, agent: &AgentRow) -> Row {
        let record = &agent.record;
        Row {
            group: group.name.clone(),
            bk_biz_id: group.bk_biz_id.clone(),
            ip: agent.ip.to_string(),
            bk_cloud_id: agent.bk_cloud_id.to_string(),
            bk_agent_id: agent.bk_agent_id.to_string(),
            state: record.state.label(),
            online: record.state == AgentState::Online,
            version: record.version.to_string(),
            heartbeat_age_seconds: record.heartbeat_age.map(|s| (s * 1000.0).round() / 1000.0),
        }
    }
}

/// Agents asked for, by state, over the groups polled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Groups polled.
    pub(crate) groups: usize,
    /// Agents asked for (every state, unknown included).
    pub(crate) agents: u64,
    /// Online agents.
    pub(crate) online: u64,
    /// Offline agents.
    pub(crate) offline: u64,
    /// Agents GSE does not know.
    pub(crate) not_found: u64,
    /// Agents GSE could not be asked for.
    pub(crate) unknown: u64,
    /// Rows shown after the filter.
    pub(crate) shown: usize,
}

impl Summary {
    /// The one-line form, e.g. `2 groups, 10 agents: 8 online, 1 offline, 1 not found, 0 unknown`.
    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "{} group{}, {} agent{}: {} online, {} offline, {} not found, {} unknown",
            self.groups,
            plural(self.groups as u64),
            self.agents,
            plural(self.agents),
            self.online,
            self.offline,
            self.not_found,
            self.unknown,
        );
        if self.shown as u64 != self.agents {
            let _ = write!(line, " ({} shown)", self.shown);
        }
        line
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Everything a query learned, ready to print.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    /// Agents, in configuration order, after the filter.
    pub(crate) rows: Vec<Row>,
    /// Counts over every agent asked for (before the filter).
    pub(crate) summary: Summary,
    /// Groups GSE (or CMDB) could not be fully asked, with the reason.
    pub(crate) failures: Vec<String>,
}

impl Report {
    /// Builds the report of a snapshot; `filter` empty shows every agent.
    pub(crate) fn new(snapshot: &Snapshot, filter: &[Filter]) -> Report {
        let mut summary = Summary {
            groups: snapshot.groups.len(),
            ..Summary::default()
        };
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        for group in &snapshot.groups {
            add_counts(&mut summary, group);
            if let Some(failure) = failure(group) {
                failures.push(failure);
            }
            let shown = group.agents.iter().filter(|a| {
                filter.is_empty() || filter.iter().any(|f| f.state() == a.record.state)
            });
            rows.extend(shown.map(|agent| Row::new(group, agent)));
        }
        summary.shown = rows.len();
        Report {
            rows,
            summary,
            failures,
        }
    }

    /// 0 every agent asked for is online, 1 some are not, 2 a group could not be asked.
    pub(crate) fn exit_code(&self) -> u8 {
        if !self.failures.is_empty() {
            2
        } else if self.summary.online == self.summary.agents {
            0
        } else {
            1
        }
    }

    /// Writes the rows (and, for the table, the summary line) in `output`.
    pub(crate) fn write(&self, output: Output, out: &mut dyn Write) -> Result<(), QueryError> {
        match output {
            Output::Table => out.write_all(self.table().as_bytes())?,
            Output::Json => {
                serde_json::to_writer_pretty(&mut *out, &self.rows)
                    .map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
            Output::Csv => {
                let mut writer = csv::Writer::from_writer(out);
                if self.rows.is_empty() {
                    writer.write_record(CSV_HEADER)?;
                }
                for row in &self.rows {
                    writer.serialize(row)?;
                }
                writer.flush()?;
            }
        }
        Ok(())
    }

    /// The rows as aligned columns, then the summary line.
    pub(crate) fn table(&self) -> String {
        let mut lines = vec![TABLE_HEADER.map(String::from).to_vec()];
        lines.extend(self.rows.iter().map(table_cells));
        let mut widths = [0usize; TABLE_HEADER.len()];
        for cells in &lines {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for cells in &lines {
            let mut line = String::new();
            for (cell, width) in cells.iter().zip(widths) {
                let _ = write!(line, "{cell:<width$}  ");
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text.push_str(&self.summary.line());
        text.push('\n');
        text
    }
}

/// CSV columns, as the JSON keys (written by `csv` from [`Row`] when there are rows).
const CSV_HEADER: [&str; 9] = [
    "group",
    "bk_biz_id",
    "ip",
    "bk_cloud_id",
    "bk_agent_id",
    "state",
    "online",
    "version",
    "heartbeat_age_seconds",
];

const TABLE_HEADER: [&str; 8] = [
    "GROUP",
    "BUSINESS",
    "IP",
    "CLOUD",
    "AGENT ID",
    "STATE",
    "VERSION",
    "HEARTBEAT",
];

fn table_cells(row: &Row) -> Vec<String> {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        row.group.clone(),
        row.bk_biz_id.clone(),
        or_dash(&row.ip),
        or_dash(&row.bk_cloud_id),
        or_dash(&row.bk_agent_id),
        row.state.to_string(),
        or_dash(&row.version),
        row.heartbeat_age_seconds
            .map_or_else(|| "-".to_string(), age_text),
    ]
}

/// A heartbeat age in at most two units, e.g. `45s`, `3m04s`, `2h05m`, `3d04h`.
pub(crate) fn age_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn add_counts(summary: &mut Summary, group: &GroupSnapshot) {
    let counts = group.counts;
    summary.online += counts.get(AgentState::Online);
    summary.offline += counts.get(AgentState::Offline);
    summary.not_found += counts.get(AgentState::NotFound);
    summary.unknown += counts.get(AgentState::Unknown);
    summary.agents += AgentState::ALL.iter().map(|&s| counts.get(s)).sum::<u64>();
}

fn failure(group: &GroupSnapshot) -> Option<String> {
    if group.discovery.is_some_and(|d| !d.success) {
        return Some(format!(
            "group {}: CMDB could not list the business's hosts",
            group.name
        ));
    }
    if !group.up {
        let unknown = group.counts.get(AgentState::Unknown);
        return Some(format!(
            "group {}: GSE could not be asked for {unknown} agent{} (the logged warning names the error)",
            group.name,
            plural(unknown)
        ));
    }
    None
}

/// Runs a query: polls, writes the report to `out` (the summary and any
/// failure to `err` as well in JSON and CSV), returns the exit code.
pub async fn run(
    config: Config,
    selection: &Selection,
    output: Output,
    filter: &[Filter],
    progress: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, QueryError> {
    let config = select(config, selection)?;
    let snapshot = poll(config, progress).await?;
    let report = Report::new(&snapshot, filter);
    report.write(output, out)?;
    out.flush()?;
    if output != Output::Table {
        writeln!(err, "{}", report.summary.line())?;
    }
    for failure in &report.failures {
        writeln!(err, "gse_exporter: {failure}")?;
    }
    Ok(report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{AgentRecord, StateCounts};
    use std::time::SystemTime;

    fn record(state: AgentState, age: Option<f64>) -> AgentRecord {
        AgentRecord {
            state,
            status_code: None,
            version: if state == AgentState::NotFound {
                "".into()
            } else {
                "2.1.3".into()
            },
            parent_ip: "".into(),
            heartbeat_at: None,
            heartbeat_age: age,
            observed_at: SystemTime::now(),
            last_seen_alive: None,
        }
    }

    fn agent(ip: &str, id: &str, state: AgentState, age: Option<f64>) -> AgentRow {
        AgentRow {
            bk_cloud_id: if ip.is_empty() { "" } else { "0" }.into(),
            ip: ip.into(),
            bk_agent_id: id.into(),
            host_labels: Vec::new().into(),
            topology: None,
            record: record(state, age),
        }
    }

    fn group(name: &str, agents: Vec<AgentRow>, unknown: u64, up: bool) -> GroupSnapshot {
        let mut counts = StateCounts::default();
        for a in &agents {
            counts.add(a.record.state);
        }
        counts.0[3] = unknown;
        GroupSnapshot {
            name: name.into(),
            bk_biz_id: "2".into(),
            per_agent_metrics: true,
            agents,
            counts,
            up,
            interval: 60.0,
            ..GroupSnapshot::default()
        }
    }

    fn snapshot(groups: Vec<GroupSnapshot>) -> Snapshot {
        Snapshot {
            groups,
            complete: true,
            ..Snapshot::default()
        }
    }

    fn mixed() -> Snapshot {
        snapshot(vec![group(
            "web, prod",
            vec![
                agent("10.0.0.1", "", AgentState::Online, Some(12.3456)),
                agent("", "0200000001", AgentState::Offline, Some(3725.0)),
                agent("10.0.0.3", "", AgentState::NotFound, None),
            ],
            0,
            true,
        )])
    }

    #[test]
    fn table_aligns_columns_dashes_blanks_and_ends_with_the_summary() {
        let text = Report::new(&mixed(), &[]).table();
        let expected = "\
GROUP      BUSINESS  IP        CLOUD  AGENT ID    STATE      VERSION  HEARTBEAT
web, prod  2         10.0.0.1  0      -           online     2.1.3    12s
web, prod  2         -         -      0200000001  offline    2.1.3    1h02m
web, prod  2         10.0.0.3  0      -           not_found  -        -
1 group, 3 agents: 1 online, 1 offline, 1 not found, 0 unknown
";
        assert_eq!(text, expected);
    }

    #[test]
    fn json_is_an_array_of_agent_objects() {
        let mut out = Vec::new();
        Report::new(&mixed(), &[])
            .write(Output::Json, &mut out)
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let rows = value.as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["group"], "web, prod");
        assert_eq!(rows[0]["online"], true);
        assert_eq!(rows[0]["heartbeat_age_seconds"], 12.346);
        assert_eq!(rows[1]["bk_agent_id"], "0200000001");
        assert_eq!(rows[2]["state"], "not_found");
        assert!(rows[2]["heartbeat_age_seconds"].is_null());
    }

    #[test]
    fn csv_quotes_fields_and_has_a_header_even_when_empty() {
        let mut out = Vec::new();
        Report::new(&mixed(), &[Filter::Online])
            .write(Output::Csv, &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "group,bk_biz_id,ip,bk_cloud_id,bk_agent_id,state,online,version,heartbeat_age_seconds\n\
             \"web, prod\",2,10.0.0.1,0,,online,true,2.1.3,12.346\n"
        );
        let mut out = Vec::new();
        Report::new(&snapshot(vec![]), &[])
            .write(Output::Csv, &mut out)
            .unwrap();
        let empty = String::from_utf8(out).unwrap();
        assert_eq!(empty, format!("{}\n", CSV_HEADER.join(",")));
        assert!(text.starts_with(&empty), "one header with rows or without");
    }

    #[test]
    fn filters_select_rows_but_the_summary_counts_every_agent() {
        let report = Report::new(&mixed(), &[Filter::Offline, Filter::NotFound]);
        let states: Vec<&str> = report.rows.iter().map(|r| r.state).collect();
        assert_eq!(states, ["offline", "not_found"]);
        assert_eq!(report.summary.agents, 3);
        assert!(report.summary.line().ends_with("(2 shown)"));
    }

    #[test]
    fn exit_code_is_zero_all_online_one_some_not_two_on_failure() {
        let online = || agent("10.0.0.1", "", AgentState::Online, Some(1.0));
        let all = snapshot(vec![group("a", vec![online()], 0, true)]);
        assert_eq!(Report::new(&all, &[]).exit_code(), 0);
        assert_eq!(Report::new(&mixed(), &[Filter::Online]).exit_code(), 1);
        let failed = snapshot(vec![
            group("a", vec![online()], 0, true),
            group("b", vec![], 5, false),
        ]);
        let report = Report::new(&failed, &[]);
        assert_eq!(report.exit_code(), 2);
        assert_eq!(report.failures.len(), 1);
        assert!(
            report.failures[0].contains("group b"),
            "{:?}",
            report.failures
        );
    }

    fn config() -> Config {
        let yaml = "gse:\n  api: v2\n  v1_url: http://127.0.0.1:1/v1\n  v2_url: http://127.0.0.1:1/v2\n  app_code: a\n  app_secret: s\nsharding: { shard: 1, total_shards: 2 }\ngroups:\n  - name: web\n    bk_biz_id: 2\n    per_agent_metrics: false\n    hosts: [\"0:10.0.0.1\"]\n  - name: db\n    bk_biz_id: 3\n    gse_api: v1\n    hosts: [\"0:10.0.0.2\"]\n";
        Config::parse(yaml, std::path::Path::new(".")).unwrap()
    }

    fn selection(groups: &[&str], hosts: &[&str]) -> Selection {
        Selection {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn selecting_keeps_every_agent_row_and_drops_the_shard_filter() {
        let all = select(config(), &Selection::default()).unwrap();
        assert_eq!(all.groups.len(), 2);
        assert!(all.groups.iter().all(|g| g.per_agent_metrics));
        assert_eq!(all.sharding, Sharding::default());
        let db = select(config(), &selection(&["db"], &[])).unwrap();
        let names: Vec<&str> = db.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["db"]);
    }

    #[test]
    fn given_hosts_replace_the_one_groups_hosts() {
        let hosts = ["0:10.0.0.9", "1:10.0.0.9", "0:10.0.0.9"];
        let picked = select(config(), &selection(&["db"], &hosts)).unwrap();
        let keys: Vec<String> = picked.groups[0]
            .hosts
            .iter()
            .filter_map(|h| h.cloud_ip())
            .collect();
        assert_eq!(keys, ["0:10.0.0.9", "1:10.0.0.9"]);
        let web = select(config(), &selection(&["web"], &["0100abc"])).unwrap();
        assert_eq!(web.groups[0].hosts[0].agent_id.as_deref(), Some("0100abc"));
    }

    #[test]
    fn selection_errors_name_the_problem() {
        let err = |groups: &[&str], hosts: &[&str]| {
            select(config(), &selection(groups, hosts))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(&["nope"], &[]),
            "no group named \"nope\" in the configuration (groups: web, db)"
        );
        assert!(err(&[], &["0:10.0.0.1"]).contains("exactly one --group"));
        // A value of 120 KB, or with a line break, is quoted cut and escaped.
        let huge = format!("0:{}", "9".repeat(120_000));
        let shown = err(&["web"], &[&huge]);
        assert!(
            shown.len() < 300 && shown.contains("(120002 bytes)"),
            "{shown}"
        );
        let shown = err(&[&"g\n".repeat(60_000)], &[]);
        assert!(shown.len() < 300 && !shown.contains('\n'), "{shown}");
        assert!(err(&["web", "db"], &["0:10.0.0.1"]).contains("exactly one --group"));
        assert!(err(&["db"], &["0100abc"]).contains("GSE 1.x asks by cloud:ip"));
        assert!(err(&["web"], &["10.0.0.1"]).contains("neither cloud:ip nor an agent id"));
    }

    #[test]
    fn heartbeat_ages_read_in_two_units() {
        assert_eq!(age_text(0.4), "0s");
        assert_eq!(age_text(59.0), "59s");
        assert_eq!(age_text(184.0), "3m04s");
        assert_eq!(age_text(7500.0), "2h05m");
        assert_eq!(age_text(273_600.0), "3d04h");
    }
}
