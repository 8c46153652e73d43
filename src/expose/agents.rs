//! The per-agent part of `/metrics`, rendered straight to text.
//!
//! At fleet scale the per-agent gauges are nearly all of the body, so they are
//! written here once per snapshot, not through the generic encoder, in
//! segments: a family's lines for a run of agents of one group, rendered
//! into one reused buffer (each agent's label set escaped once per run and
//! reused by every family). A segment rendered from the same label sets and
//! values as the previous snapshot's at the same place (its
//! [`Fingerprint`]) is that segment, shared: the body is not held twice, and
//! what did not change is neither rendered nor compressed again. Gauges read
//! the same in the Prometheus text format and OpenMetrics, so this block is
//! shared by both formats and compressed once (see [`super::gzip`]).
//! Owns text layout and escaping; names, help texts and label names come
//! from [`super::table`], values from the snapshot.

use std::hash::{Hash, Hasher};

use super::gzip::{Checksum, Fingerprint, Scratch, Segment};
use super::table::{
    AGENT_HEARTBEAT_AGE, AGENT_HEARTBEAT_TIMESTAMP, AGENT_INFO, AGENT_LABELS, AGENT_ONLINE,
    AGENT_STATUS_CODE, AGENT_TOPOLOGY_INFO, MetricDef,
};
use crate::model::Topology;
use crate::snapshot::{
    AGENTS_PER_SEGMENT, AgentRow, AgentState, GroupSnapshot, HEARTBEAT_FAMILIES, Snapshot,
};

/// The value of one per-agent family for an agent (None: no sample).
pub(crate) type AgentValue = fn(&AgentRow) -> Option<i64>;

/// The per-agent gauges other than `gse_agent_info` (whose value is always 1),
/// in exposition order, with the rule that reads each from an agent (shared
/// with the OTLP push). `gse_agent_info` and `gse_agent_topology_info` go
/// after the first [`BEFORE_INFO`] of them.
pub(crate) const AGENT_GAUGES: [(&MetricDef, AgentValue); 4] = [
    (&AGENT_ONLINE, |a| {
        Some(i64::from(a.record.state == AgentState::Online))
    }),
    (&AGENT_HEARTBEAT_AGE, |a| {
        a.record.heartbeat_age.map(|age| age.round() as i64)
    }),
    // Whole seconds, rounded down: an age computed from it is never too young.
    (&AGENT_HEARTBEAT_TIMESTAMP, |a| {
        a.record.heartbeat_at.map(|at| at.floor() as i64)
    }),
    (&AGENT_STATUS_CODE, |a| a.record.status_code),
];

/// How many of [`AGENT_GAUGES`] come before `gse_agent_info`.
const BEFORE_INFO: usize = 3;

/// Agents of a group per segment: a segment of a family is the lines of
/// this many agents (about 300 KiB of text), so an agent that changes costs
/// one segment's rendering and compression, not the family's.
const RUN: usize = if cfg!(test) { 16 } else { AGENTS_PER_SEGMENT };

/// One per-agent family, in exposition order.
#[derive(Clone, Copy)]
enum Family {
    Gauge(&'static MetricDef, AgentValue),
    Info,
    Topology,
}

impl Family {
    /// Every family in exposition order; a family's place is its key.
    fn all() -> [Family; AGENT_GAUGES.len() + 2] {
        let gauge = |i: usize| Family::Gauge(AGENT_GAUGES[i].0, AGENT_GAUGES[i].1);
        let mut all = [Family::Info; AGENT_GAUGES.len() + 2];
        for (i, slot) in all.iter_mut().enumerate() {
            *slot = match i {
                i if i < BEFORE_INFO => gauge(i),
                i if i == BEFORE_INFO => Family::Info,
                i if i == BEFORE_INFO + 1 => Family::Topology,
                i => gauge(i - 2),
            };
        }
        all
    }

    fn def(self) -> &'static MetricDef {
        match self {
            Family::Gauge(def, _) => def,
            Family::Info => &AGENT_INFO,
            Family::Topology => &AGENT_TOPOLOGY_INFO,
        }
    }

    /// Whether its values move every cycle or every other one by nature (a
    /// heartbeat's age and time): a segment of it at a new place is held
    /// compressed only, as it is soon rendered again; one of any other
    /// family keeps its text from the start. (Every segment of the first
    /// render kept: its text beside everything the first cycle holds
    /// raised the peak at 100k agents to 2.3 times the body.)
    fn keeps_changing(self) -> bool {
        HEARTBEAT_FAMILIES.contains(&self.def().name)
    }

    /// Whether any agent of these groups has a series of this family.
    fn present(self, groups: &[(u32, &GroupSnapshot)]) -> bool {
        match self {
            Family::Gauge(_, value) => groups
                .iter()
                .any(|(_, g)| g.agents.iter().any(|a| value(a).is_some())),
            Family::Info => !groups.is_empty(),
            Family::Topology => groups.iter().any(|(_, g)| g.bk_biz_name.is_some()),
        }
    }

    /// The fingerprint of this family's segment of `agents` (of `group`,
    /// their label sets hashed to `labels`, opening with the family's
    /// header or not): everything its text is rendered from.
    fn fingerprint(
        self,
        header: bool,
        labels: u64,
        group: &GroupSnapshot,
        agents: &[AgentRow],
    ) -> Fingerprint {
        let mut hasher = Fingerprint::hasher();
        (header, labels).hash(&mut hasher);
        match self {
            Family::Gauge(_, value) => agents.iter().for_each(|a| value(a).hash(&mut hasher)),
            Family::Info => agents.iter().for_each(|a| {
                let [version, parent_ip] = [&*a.record.version, &*a.record.parent_ip];
                (version, parent_ip).hash(&mut hasher);
            }),
            Family::Topology => {
                if let Some(biz_name) = &group.bk_biz_name {
                    for agent in agents {
                        let labels = topology_labels(biz_name, agent.topology.as_deref());
                        labels.map(|(_, value)| value).hash(&mut hasher);
                    }
                }
            }
        }
        Fingerprint::of(&hasher)
    }

    /// Appends the lines of `agents` (of `group`, labels in `labels`).
    fn lines(
        self,
        out: &mut Vec<u8>,
        group: &GroupSnapshot,
        agents: &[AgentRow],
        labels: &LabelSets,
    ) {
        match self {
            Family::Gauge(def, value) => gauge_lines(out, def, agents, labels, value),
            Family::Info => info_lines(out, agents, labels),
            Family::Topology => {
                if let Some(biz_name) = &group.bk_biz_name {
                    topology_lines(out, biz_name, agents, labels);
                }
            }
        }
    }
}

/// Where a segment sits: family (its place in [`Family::all`]), group
/// (its place in the snapshot) and run of [`RUN`] agents in the group.
type Key = (u8, u32, u32);

/// The per-agent block of one snapshot: segments in exposition order, each
/// keyed by where it sits, so the next snapshot can reuse the ones whose
/// text did not change.
#[derive(Debug, Clone, Default)]
pub(crate) struct Block {
    keys: Vec<Key>,
    segments: Vec<Segment>,
    checksum: Checksum,
}

impl Block {
    /// The segments in order.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The CRC and length of the whole block.
    pub(crate) fn checksum(&self) -> &Checksum {
        &self.checksum
    }

    fn get(&self, key: Key) -> Option<&Segment> {
        let i = self.keys.binary_search(&key).ok()?;
        self.segments.get(i)
    }
}

/// Renders every per-agent family not denied by `denied`, one segment at a
/// time into a reused buffer; a segment rendered from what `previous`'s at
/// the same place was is that segment (shared, neither rendered nor
/// compressed again), one whose label sets or values changed is rendered
/// and held compressed only (see [`Segment::next`]), and one at a new
/// place keeps its text unless its family keeps changing.
pub(crate) fn render(
    snapshot: &Snapshot,
    denied: &dyn Fn(&MetricDef) -> bool,
    previous: &Block,
) -> Block {
    let groups: Vec<(u32, &GroupSnapshot)> = (0u32..)
        .zip(&snapshot.groups)
        .filter(|(_, g)| g.per_agent_metrics && !g.agents.is_empty())
        .collect();
    let families: Vec<(u8, Family)> = (0u8..)
        .zip(Family::all())
        .filter(|(_, f)| !denied(f.def()) && f.present(&groups))
        .collect();
    let mut placed: Vec<Vec<(Key, Segment)>> = vec![Vec::new(); families.len()];
    let (mut labels, mut scratch) = (LabelSets::default(), Scratch::default());
    for (g, group) in &groups {
        for (run, agents) in (0u32..).zip(group.agents.chunks(RUN)) {
            labels.fill(group, agents);
            let label_hash = labels.hash();
            for ((id, family), placed) in families.iter().zip(&mut placed) {
                let header = placed.is_empty();
                let fingerprint = family.fingerprint(header, label_hash, group, agents);
                let render = |text: &mut Vec<u8>| {
                    if header {
                        self::header(text, family.def());
                    }
                    family.lines(text, group, agents, &labels);
                };
                let key = (*id, *g, run);
                let segment = match previous.get(key) {
                    Some(old) => old.next(fingerprint, render, &mut scratch),
                    None if family.keeps_changing() => {
                        Segment::new(fingerprint, render, &mut scratch)
                    }
                    None => Segment::with_text(fingerprint, render, &mut scratch),
                };
                placed.push((key, segment));
            }
        }
    }
    let (keys, segments): (Vec<Key>, Vec<Segment>) = placed.into_iter().flatten().unzip();
    let checksum = Checksum::of(&segments);
    Block {
        keys,
        segments,
        checksum,
    }
}

fn header(out: &mut Vec<u8>, def: &MetricDef) {
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(def.name.as_bytes());
    out.push(b' ');
    for c in def.help.bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            c => out.push(c),
        }
    }
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(def.name.as_bytes());
    out.extend_from_slice(b" gauge\n");
}

fn gauge_lines(
    out: &mut Vec<u8>,
    def: &MetricDef,
    agents: &[AgentRow],
    labels: &LabelSets,
    value: AgentValue,
) {
    let mut number = itoa::Buffer::new();
    for (i, agent) in agents.iter().enumerate() {
        if let Some(v) = value(agent) {
            out.extend_from_slice(def.name.as_bytes());
            out.push(b'{');
            out.extend_from_slice(labels.get(i));
            out.extend_from_slice(b"} ");
            out.extend_from_slice(number.format(v).as_bytes());
            out.push(b'\n');
        }
    }
}

fn info_lines(out: &mut Vec<u8>, agents: &[AgentRow], labels: &LabelSets) {
    for (i, agent) in agents.iter().enumerate() {
        out.extend_from_slice(AGENT_INFO.name.as_bytes());
        out.push(b'{');
        out.extend_from_slice(labels.get(i));
        let [version, parent_ip] = INFO_LABELS;
        label(out, version, &agent.record.version);
        label(out, parent_ip, &agent.record.parent_ip);
        out.extend_from_slice(b"} 1\n");
    }
}

/// The labels `gse_agent_info` adds after an agent's own, as the table names them.
pub(super) const INFO_LABELS: [&str; 2] = [AGENT_INFO.labels[6], AGENT_INFO.labels[7]];

/// One `gse_agent_topology_info` series per agent of a group with topology
/// (empty values where CMDB has not placed the host).
fn topology_lines(out: &mut Vec<u8>, biz_name: &str, agents: &[AgentRow], labels: &LabelSets) {
    for (i, agent) in agents.iter().enumerate() {
        out.extend_from_slice(AGENT_TOPOLOGY_INFO.name.as_bytes());
        out.push(b'{');
        out.extend_from_slice(labels.get(i));
        for (name, value) in topology_labels(biz_name, agent.topology.as_deref()) {
            label(out, name, value);
        }
        out.extend_from_slice(b"} 1\n");
    }
}

/// The labels `gse_agent_topology_info` adds after an agent's own, paired
/// with their values ("" where unknown): the one rule for `/metrics` and OTLP.
pub(super) fn topology_labels<'a>(
    bk_biz_name: &'a str,
    topology: Option<&'a Topology>,
) -> [(&'static str, &'a str); 5] {
    let names = &AGENT_TOPOLOGY_INFO.labels[6..];
    let values = match topology {
        Some(t) => [
            bk_biz_name,
            &*t.bk_set_name,
            &*t.bk_module_name,
            &*t.operator,
            &*t.bk_bak_operator,
        ],
        None => [bk_biz_name, "", "", "", ""],
    };
    std::array::from_fn(|i| (names[i], values[i]))
}

/// An agent's labels (before `version` and `parent_ip` of the info family),
/// in exposition order: the one rule for both `/metrics` and OTLP.
pub(crate) fn agent_labels<'a>(
    group: &'a GroupSnapshot,
    agent: &'a AgentRow,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let values: [&str; 5] = [
        &group.name,
        &group.bk_biz_id,
        &agent.bk_cloud_id,
        &agent.ip,
        &agent.bk_agent_id,
    ];
    AGENT_LABELS
        .iter()
        .copied()
        .zip(values)
        .chain(group.labels.iter().map(|(n, v)| (n.as_ref(), v.as_ref())))
        .chain(
            group
                .host_label_names
                .iter()
                .zip(agent.host_labels.iter())
                .map(|(n, v)| (n.as_ref(), v.as_ref())),
        )
}

/// The label sets of one run of agents, escaped once, in one buffer
/// reused from run to run.
#[derive(Default)]
struct LabelSets {
    text: Vec<u8>,
    ends: Vec<usize>,
}

impl LabelSets {
    fn fill(&mut self, group: &GroupSnapshot, agents: &[AgentRow]) {
        self.text.clear();
        self.ends.clear();
        for agent in agents {
            label_set(&mut self.text, group, agent);
            self.ends.push(self.text.len());
        }
    }

    /// The label sets hashed (under the fingerprints' key).
    fn hash(&self) -> u64 {
        let mut hasher = Fingerprint::hasher();
        (&self.text, &self.ends).hash(&mut hasher);
        hasher.finish()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

/// Appends `group="..",bk_biz_id="..",...` without braces, each value escaped.
fn label_set(out: &mut Vec<u8>, group: &GroupSnapshot, agent: &AgentRow) {
    for (i, (name, value)) in agent_labels(group, agent).enumerate() {
        if i == 0 {
            pair(out, name, value);
        } else {
            label(out, name, value);
        }
    }
}

/// Appends `,name="value"` (no comma at the start of a set).
fn label(out: &mut Vec<u8>, name: &str, value: &str) {
    if !out.is_empty() && out.last() != Some(&b'{') {
        out.push(b',');
    }
    pair(out, name, value);
}

fn pair(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    for c in value.bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            c => out.push(c),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = Vec::new();
        label(&mut out, "a", "x\"y\\z\nw");
        assert_eq!(out, br#"a="x\"y\\z\nw""#);
    }

    #[test]
    fn topology_labels_follow_the_table_and_are_empty_where_unknown() {
        let t = Topology::from_names(["web"], ["api", "nginx"], "alice,bob", "");
        let pairs = topology_labels("支付", Some(&t));
        assert_eq!(
            pairs,
            [
                ("bk_biz_name", "支付"),
                ("bk_set_name", "web"),
                ("bk_module_name", "api,nginx"),
                ("operator", "alice,bob"),
                ("bk_bak_operator", ""),
            ]
        );
        assert!(topology_labels("", None).iter().all(|(_, v)| v.is_empty()));
    }

    #[test]
    fn the_heartbeat_families_the_poller_knows_are_those_that_read_it() {
        // The poller stops refreshing heartbeats nothing exports: its list
        // of the families that read them must be exactly these.
        let record = crate::snapshot::AgentRecord {
            state: AgentState::Online,
            status_code: Some(2),
            version: "2.1.3".into(),
            parent_ip: "10.0.0.1".into(),
            heartbeat_at: Some(1.7e9),
            heartbeat_age: Some(12.0),
            observed_at: std::time::SystemTime::UNIX_EPOCH,
            last_seen_alive: None,
        };
        let row = |record| AgentRow {
            bk_cloud_id: "0".into(),
            ip: "10.0.0.7".into(),
            bk_agent_id: "a1".into(),
            host_labels: Vec::new().into(),
            topology: None,
            record,
        };
        let (with, without) = (
            row(record.clone()),
            row(crate::snapshot::AgentRecord {
                heartbeat_at: None,
                heartbeat_age: None,
                ..record
            }),
        );
        let reading: Vec<&str> = AGENT_GAUGES
            .iter()
            .filter(|(_, value)| value(&with) != value(&without))
            .map(|(def, _)| def.name)
            .collect();
        assert_eq!(reading, crate::snapshot::HEARTBEAT_FAMILIES);
    }
}
