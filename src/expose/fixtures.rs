//! Snapshots for the tests of the exposition and of the HTTP body: groups
//! of agents whose state, status code, version and heartbeat vary.

use std::sync::Arc;
use std::time::SystemTime;

use proptest::prelude::*;

use crate::model::Topology;
use crate::snapshot::{AgentRecord, AgentRow, AgentState, GroupSnapshot, Snapshot};

/// What varies per agent: state, status code, version, heartbeat age.
pub(crate) type Fields = (u8, Option<i8>, u8, Option<u16>);

fn agent(group: usize, i: usize, (state, code, version, age): Fields) -> AgentRow {
    let state = AgentState::ALL[usize::from(state) % 3];
    AgentRow {
        bk_cloud_id: (i % 3).to_string().into(),
        ip: format!("10.{group}.{}.{}", i / 256, i % 256).into(),
        bk_agent_id: format!("0100{i:028x}").into(),
        host_labels: vec![format!("rack-{}", i % 4)].into(),
        topology: (!i.is_multiple_of(5))
            .then(|| Arc::new(Topology::from_names(["web"], ["api"], "alice", "bob"))),
        record: AgentRecord {
            state,
            status_code: code.map(i64::from),
            version: ["2.1.3", "x\"y\\z\nw", ""][usize::from(version) % 3].into(),
            parent_ip: "10.255.0.1".into(),
            heartbeat_at: age.map(|a| 1.7e9 - f64::from(a)),
            heartbeat_age: age.map(f64::from),
            observed_at: SystemTime::UNIX_EPOCH,
            last_seen_alive: None,
        },
    }
}

/// A snapshot of these groups (the third without per-agent series), with
/// a deny list.
pub(crate) fn snapshot(groups: &[Vec<Fields>], metric_deny: &[&str]) -> Snapshot {
    let groups = groups
        .iter()
        .enumerate()
        .map(|(g, agents)| {
            let mut group = GroupSnapshot {
                name: format!("group-{g}"),
                bk_biz_id: "2".into(),
                labels: vec![("team".into(), "sre".into())],
                host_label_names: vec!["rack".into()],
                per_agent_metrics: g != 2,
                bk_biz_name: (g % 2 == 1).then(|| "支付".into()),
                agents: (0..)
                    .zip(agents)
                    .map(|(i, fields)| agent(g, i, *fields))
                    .collect(),
                up: true,
                poll_duration: 0.5,
                interval: 60.0,
                ..GroupSnapshot::default()
            };
            group.tally(0);
            group
        })
        .collect();
    Snapshot {
        groups,
        complete: true,
        metric_deny: metric_deny.iter().map(|p| p.to_string()).collect(),
        ..Snapshot::default()
    }
}

/// Three groups of `agents` agents, every one online.
pub(crate) fn fleet(agents: usize) -> Vec<Vec<Fields>> {
    (0..3)
        .map(|g| {
            (0..agents)
                .map(|i| (0, Some(2), (g + i) as u8, Some((i % 7) as u16)))
                .collect()
        })
        .collect()
}

/// Any agent's fields.
pub(crate) fn fields() -> impl Strategy<Value = Fields> {
    (
        0..3u8,
        prop::option::of(-3..4i8),
        0..3u8,
        prop::option::of(0..40u16),
    )
}

/// The same groups a cycle later: every heartbeat one second older.
pub(crate) fn heartbeats_moved(groups: &[Vec<Fields>]) -> Vec<Vec<Fields>> {
    groups
        .iter()
        .map(|agents| {
            let older =
                |(state, code, version, age): Fields| (state, code, version, age.map(|a| a + 1));
            agents.iter().copied().map(older).collect()
        })
        .collect()
}

/// Changes what one agent's series are labelled with, or its group's,
/// leaving every value as it is: `how` picks the ip, the agent id, a host
/// label, the topology, the business name or a group label.
pub(crate) fn relabel(snapshot: &mut Snapshot, group: usize, agent: usize, how: u8) {
    let group = &mut snapshot.groups[group];
    let Some(row) = group.agents.get_mut(agent) else {
        return;
    };
    match how % 6 {
        0 => row.ip = "10.254.0.1".into(),
        1 => row.bk_agent_id = "0100ffffffffffffffffffffffffffff".into(),
        2 => row.host_labels = vec!["rack-\"moved\"".to_string()].into(),
        3 => {
            let moved = Topology::from_names(["db"], ["mysql"], "carol", "");
            row.topology = Some(Arc::new(moved));
        }
        4 => group.bk_biz_name = Some("支付-2".into()),
        _ => group.labels = vec![("team".into(), "dba".into())],
    }
}
