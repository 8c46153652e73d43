//! The per-agent part of `/metrics`, rendered straight to text.
//!
//! At fleet scale the per-agent gauges are nearly all of the body, so they are
//! written here once per snapshot (each agent's label set escaped once and
//! reused by every family), not through the generic encoder. Gauges read
//! the same in the Prometheus text format and OpenMetrics, so this block is
//! shared by both formats and compressed once (see [`super::gzip`]).
//! Owns text layout and escaping; names, help texts and label names come
//! from [`super::table`], values from the snapshot.

use super::table::{
    AGENT_HEARTBEAT_AGE, AGENT_HEARTBEAT_TIMESTAMP, AGENT_INFO, AGENT_LABELS, AGENT_ONLINE,
    AGENT_STATUS_CODE, AGENT_TOPOLOGY_INFO, MetricDef,
};
use crate::model::Topology;
use crate::snapshot::{AgentRow, AgentState, GroupSnapshot, Snapshot};

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

/// Renders every per-agent family not denied by `denied`.
pub(crate) fn render(snapshot: &Snapshot, denied: &dyn Fn(&MetricDef) -> bool) -> Vec<u8> {
    let agents: Vec<(&GroupSnapshot, &AgentRow)> = snapshot
        .groups
        .iter()
        .filter(|g| g.per_agent_metrics)
        .flat_map(|g| g.agents.iter().map(move |a| (g, a)))
        .collect();
    if agents.is_empty() {
        return Vec::new();
    }
    let labels = LabelSets::new(&agents);
    let families = AGENT_GAUGES.len() + 1;
    let mut out = Vec::with_capacity((labels.text.len() + 48 * agents.len()) * families + 4096);
    let (before, after) = AGENT_GAUGES.split_at(BEFORE_INFO);
    for (def, value) in before {
        if !denied(def) {
            family(&mut out, def, &agents, &labels, *value);
        }
    }
    if !denied(&AGENT_INFO) {
        info_family(&mut out, &agents, &labels);
    }
    if !denied(&AGENT_TOPOLOGY_INFO) {
        topology_family(&mut out, &agents, &labels);
    }
    for (def, value) in after {
        if !denied(def) {
            family(&mut out, def, &agents, &labels, *value);
        }
    }
    out
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

fn family(
    out: &mut Vec<u8>,
    def: &MetricDef,
    agents: &[(&GroupSnapshot, &AgentRow)],
    labels: &LabelSets,
    value: AgentValue,
) {
    if !agents.iter().any(|(_, a)| value(a).is_some()) {
        return;
    }
    header(out, def);
    let mut number = itoa::Buffer::new();
    for (i, (_, agent)) in agents.iter().enumerate() {
        if let Some(v) = value(agent) {
            let set = labels.get(i);
            out.extend_from_slice(def.name.as_bytes());
            out.push(b'{');
            out.extend_from_slice(set);
            out.extend_from_slice(b"} ");
            out.extend_from_slice(number.format(v).as_bytes());
            out.push(b'\n');
        }
    }
}

fn info_family(out: &mut Vec<u8>, agents: &[(&GroupSnapshot, &AgentRow)], labels: &LabelSets) {
    header(out, &AGENT_INFO);
    for (i, (_, agent)) in agents.iter().enumerate() {
        let set = labels.get(i);
        out.extend_from_slice(AGENT_INFO.name.as_bytes());
        out.push(b'{');
        out.extend_from_slice(set);
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
fn topology_family(out: &mut Vec<u8>, agents: &[(&GroupSnapshot, &AgentRow)], labels: &LabelSets) {
    let with_topology = |(g, _): &&(&GroupSnapshot, &AgentRow)| g.bk_biz_name.is_some();
    if !agents.iter().any(|a| with_topology(&a)) {
        return;
    }
    header(out, &AGENT_TOPOLOGY_INFO);
    for (i, (group, agent)) in agents.iter().enumerate() {
        let Some(biz_name) = &group.bk_biz_name else {
            continue;
        };
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

/// Every agent's label set, escaped once, in one buffer.
struct LabelSets {
    text: Vec<u8>,
    ends: Vec<usize>,
}

impl LabelSets {
    fn new(agents: &[(&GroupSnapshot, &AgentRow)]) -> LabelSets {
        let mut text = Vec::with_capacity(agents.len() * 128);
        let mut ends = Vec::with_capacity(agents.len());
        for (group, agent) in agents {
            label_set(&mut text, group, agent);
            ends.push(text.len());
        }
        LabelSets { text, ends }
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
}
