//! The per-agent part of `/metrics`, rendered straight to text.
//!
//! At fleet scale the per-agent gauges are nearly all of the body, so they are
//! written here once per snapshot (each agent's label set escaped once and
//! reused by the four families), not through the generic encoder. Gauges read
//! the same in the Prometheus text format and OpenMetrics, so this block is
//! shared by both formats and compressed once (see [`Deflated`]).
//! Owns text layout and escaping; names and help texts come from
//! [`crate::metrics`]' table, values from the snapshot.

use std::io::Write as _;

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::metrics::{AGENT_HEARTBEAT_AGE, AGENT_INFO, AGENT_ONLINE, AGENT_STATUS_CODE, MetricDef};
use crate::state::{AgentRow, AgentState, GroupSnapshot, Snapshot};

/// The value of one per-agent family for an agent (None: no sample).
pub type AgentValue = fn(&AgentRow) -> Option<i64>;

/// The per-agent gauges other than `gse_agent_info` (whose value is always 1),
/// with the rule that reads each from an agent (shared with the OTLP push).
pub const AGENT_GAUGES: [(&MetricDef, AgentValue); 3] = [
    (&AGENT_ONLINE, |a| {
        Some(i64::from(a.record.state == AgentState::Online))
    }),
    (&AGENT_HEARTBEAT_AGE, |a| {
        a.record.heartbeat_age.map(|age| age.round() as i64)
    }),
    (&AGENT_STATUS_CODE, |a| a.record.status_code),
];

/// Renders every per-agent family not denied by `denied`.
pub fn render(snapshot: &Snapshot, denied: &dyn Fn(&MetricDef) -> bool) -> Vec<u8> {
    let agents: Vec<(&GroupSnapshot, &AgentRow)> = snapshot
        .groups
        .iter()
        .filter(|g| g.per_agent_metrics)
        .flat_map(|g| g.agents.iter().map(move |a| (g, a)))
        .collect();
    if agents.is_empty() {
        return Vec::new();
    }
    let labels: Vec<Vec<u8>> = agents.iter().map(|(g, a)| label_set(g, a)).collect();
    let mut out = Vec::with_capacity(labels.iter().map(|l| l.len() + 48).sum::<usize>() * 4);
    let families = &AGENT_GAUGES;
    for (def, value) in &families[..2] {
        if !denied(def) {
            family(&mut out, def, &agents, &labels, *value);
        }
    }
    if !denied(&AGENT_INFO) {
        info_family(&mut out, &agents, &labels);
    }
    let (def, value) = &families[2];
    if !denied(def) {
        family(&mut out, def, &agents, &labels, *value);
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
    labels: &[Vec<u8>],
    value: AgentValue,
) {
    if !agents.iter().any(|(_, a)| value(a).is_some()) {
        return;
    }
    header(out, def);
    let mut number = itoa::Buffer::new();
    for ((_, agent), set) in agents.iter().zip(labels) {
        if let Some(v) = value(agent) {
            out.extend_from_slice(def.name.as_bytes());
            out.push(b'{');
            out.extend_from_slice(set);
            out.extend_from_slice(b"} ");
            out.extend_from_slice(number.format(v).as_bytes());
            out.push(b'\n');
        }
    }
}

fn info_family(out: &mut Vec<u8>, agents: &[(&GroupSnapshot, &AgentRow)], labels: &[Vec<u8>]) {
    header(out, &AGENT_INFO);
    for ((_, agent), set) in agents.iter().zip(labels) {
        out.extend_from_slice(AGENT_INFO.name.as_bytes());
        out.push(b'{');
        out.extend_from_slice(set);
        label(out, "version", &agent.record.version);
        label(out, "parent_ip", &agent.record.parent_ip);
        out.extend_from_slice(b"} 1\n");
    }
}

/// An agent's labels (before `version` and `parent_ip` of the info family),
/// in exposition order: the one rule for both `/metrics` and OTLP.
pub fn agent_labels<'a>(
    group: &'a GroupSnapshot,
    agent: &'a AgentRow,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    [
        ("group", group.name.as_ref()),
        ("bk_biz_id", group.bk_biz_id.as_ref()),
        ("bk_cloud_id", agent.bk_cloud_id.as_ref()),
        ("ip", agent.ip.as_ref()),
        ("bk_agent_id", agent.bk_agent_id.as_ref()),
    ]
    .into_iter()
    .chain(group.labels.iter().map(|(n, v)| (n.as_ref(), v.as_ref())))
    .chain(
        group
            .host_label_names
            .iter()
            .zip(&agent.host_labels)
            .map(|(n, v)| (n.as_ref(), v.as_ref())),
    )
}

/// `group="..",bk_biz_id="..",...` without braces, each value escaped.
fn label_set(group: &GroupSnapshot, agent: &AgentRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    for (name, value) in agent_labels(group, agent) {
        label(&mut out, name, value);
    }
    out
}

fn label(out: &mut Vec<u8>, name: &str, value: &str) {
    if !out.is_empty() && out.last() != Some(&b'{') {
        out.push(b',');
    }
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

/// A deflate stream cut at a byte boundary (sync flush, not final), so that
/// the same compressed bytes can open several gzip bodies.
#[derive(Debug, Clone, Default)]
pub struct Deflated {
    /// Raw deflate blocks.
    pub bytes: Vec<u8>,
    /// CRC-32 of the uncompressed input.
    pub crc: u32,
    /// Length of the uncompressed input.
    pub len: usize,
}

impl Deflated {
    /// Compresses `input` as the head of one or more gzip bodies.
    pub fn head(input: &[u8]) -> Deflated {
        Deflated {
            bytes: deflate(input, FlushCompress::Sync),
            crc: crc32fast::hash(input),
            len: input.len(),
        }
    }

    /// A complete gzip member: this head followed by `tail`.
    pub fn gzip_with(&self, tail: &[u8]) -> Vec<u8> {
        let rest = deflate(tail, FlushCompress::Finish);
        let mut out = Vec::with_capacity(18 + self.bytes.len() + rest.len());
        out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        out.extend_from_slice(&self.bytes);
        out.extend_from_slice(&rest);
        let mut crc = crc32fast::Hasher::new_with_initial_len(self.crc, self.len as u64);
        crc.update(tail);
        let _ = out.write_all(&crc.finalize().to_le_bytes());
        let _ = out.write_all(&((self.len + tail.len()) as u32).to_le_bytes());
        out
    }
}

fn deflate(input: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut compress = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(input.len() / 5 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let status = compress.compress_vec(&input[consumed..], &mut out, flush);
        let done = compress.total_in() as usize == input.len() && out.len() < out.capacity();
        match status {
            Ok(Status::StreamEnd) => return out,
            Ok(_) if done && flush != FlushCompress::Finish => return out,
            Ok(_) => {}
            Err(_) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_shared_head_makes_valid_gzip_bodies_with_different_tails() {
        let head: Vec<u8> = (0..200_000)
            .flat_map(|i: u32| format!("line {i}\n").into_bytes())
            .collect();
        let deflated = Deflated::head(&head);
        for tail in [&b""[..], b"# EOF\n", b"tail with more text\n"] {
            let gz = deflated.gzip_with(tail);
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain.len(), head.len() + tail.len());
            assert!(plain.starts_with(&head) && plain.ends_with(tail));
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Vec::new();
        label(&mut out, "a", "x\"y\\z\nw");
        assert_eq!(out, br#"a="x\"y\\z\nw""#);
    }
}
