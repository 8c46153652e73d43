//! Render benchmark: encoding a snapshot's `/metrics` body (Prometheus text
//! and gzip) at 10k, 100k and 1M agents, to show it is linear in agents.
//!
//! `cargo bench --bench render` (add `-- 10000 100000` to pick sizes).
//! Prints the median of several runs per size; no timing assertions. Three
//! cases: the first exposition (every segment rendered and compressed, held
//! compressed only), the next one after a cycle in which every agent's
//! heartbeat moved (its two families new and held compressed only, the other
//! per-agent families shared with a settled exposition), and the next one
//! when nothing changed. Also the bytes the body holds (its text and gzip),
//! those not shared with the previous one, and the time to read its plain
//! text once (what a plain scrape costs, inflating included).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gse_exporter::expose::Exposition;
use gse_exporter::snapshot::{AgentRecord, AgentRow, AgentState, GroupSnapshot, Snapshot};
use gse_exporter::telemetry::Telemetry;

/// A fleet's snapshot; `cycle` moves every agent's heartbeat.
fn snapshot(agents: usize, cycle: u32) -> Snapshot {
    let now = SystemTime::now();
    let unix_now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let groups = (0..4)
        .map(|g| {
            let rows = (0..agents / 4)
                .map(|i| {
                    let n = g * agents / 4 + i;
                    AgentRow {
                        bk_cloud_id: (n % 3).to_string().into(),
                        ip: format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255).into(),
                        bk_agent_id: format!("0100{:028x}", n as u128 * 0x9e37_79b9_7f4a_7c15)
                            .into(),
                        host_labels: Arc::from(Vec::new()),
                        topology: None,
                        record: AgentRecord {
                            state: if n.is_multiple_of(20) {
                                AgentState::Offline
                            } else {
                                AgentState::Online
                            },
                            status_code: Some(if n.is_multiple_of(20) { 3 } else { 2 }),
                            version: ["2.1.3", "2.1.4-beta.12", "2.0.9"][n % 3].into(),
                            parent_ip: format!("10.255.0.{}", n % 7).into(),
                            heartbeat_at: Some(
                                unix_now - (n % 20) as f64 + 25.0 * f64::from(cycle),
                            ),
                            heartbeat_age: Some((n % 20) as f64 + f64::from(cycle)),
                            observed_at: now,
                            last_seen_alive: Some(now),
                        },
                    }
                })
                .collect();
            let mut group = GroupSnapshot {
                name: format!("group-{g}"),
                bk_biz_id: (g + 2).to_string(),
                per_agent_metrics: true,
                agents: rows,
                up: true,
                poll_duration: 1.0,
                interval: 60.0,
                last_success: Some(1.0),
                ..GroupSnapshot::default()
            };
            group.tally(0);
            group
        })
        .collect();
    Snapshot {
        groups,
        complete: true,
        ..Snapshot::default()
    }
}

/// A case: its name, the snapshot rendered before (none: the first), the one timed.
type Case<'a> = (&'static str, Option<&'a Arc<Snapshot>>, &'a Arc<Snapshot>);

/// The exposition of a snapshot that has not changed for a while (its
/// segments given their text back), as the one before a steady cycle is.
fn settled(snapshot: &Arc<Snapshot>, telemetry: &Arc<Telemetry>) -> Exposition {
    let first = Exposition::new(snapshot.clone(), telemetry.clone());
    first.next(snapshot.clone()).next(snapshot.clone())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    // `cargo test --all-targets` runs this without `--bench`: one small size
    // proves it still works without spending the test run on it.
    let sizes = match (sizes.is_empty(), args.iter().any(|a| a == "--bench")) {
        (false, _) => sizes,
        (true, true) => vec![10_000, 100_000, 1_000_000],
        (true, false) => vec![1_000],
    };
    println!(
        "{:>10} {:>6} {:>12} {:>14} {:>12} {:>12} {:>10} {:>10} {:>10} {:>12}",
        "agents",
        "runs",
        "case",
        "render+gzip",
        "per agent",
        "body MB",
        "gzip MB",
        "held MB",
        "new MB",
        "read plain"
    );
    for agents in sizes {
        let before = Arc::new(snapshot(agents, 0));
        let after = Arc::new(snapshot(agents, 1));
        let telemetry = Arc::new(Telemetry::default());
        let runs = if agents >= 1_000_000 { 3 } else { 7 };
        let cases: [Case; 3] = [
            ("first", None, &before),
            ("heartbeat", Some(&before), &after),
            ("unchanged", Some(&before), &before),
        ];
        for (case, previous, snapshot) in cases {
            let (mut times, mut reads) = (Vec::new(), Vec::new());
            let mut sizes = (0, 0, 0, 0);
            for _ in 0..runs {
                let previous = previous.map(|p| settled(p, &telemetry));
                let started = Instant::now();
                let exposition = match &previous {
                    Some(previous) => previous.next(snapshot.clone()),
                    None => Exposition::new(snapshot.clone(), telemetry.clone()),
                };
                times.push(started.elapsed());
                let body = exposition.body(gse_exporter::expose::Format::Prometheus);
                let started = Instant::now();
                let read: usize = body.plain_text().map(|c| c.unwrap().len()).sum();
                reads.push(started.elapsed());
                assert_eq!(read, body.plain_len());
                let old = previous
                    .as_ref()
                    .map(|p| p.body(gse_exporter::expose::Format::Prometheus));
                sizes = (
                    body.plain_len(),
                    body.gzip_len(),
                    body.held_apart_from(None),
                    body.held_apart_from(old),
                );
            }
            let (m, read) = (median(times), median(reads));
            println!(
                "{agents:>10} {runs:>6} {case:>12} {:>12.1}ms {:>10.0}ns {:>12.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}ms",
                m.as_secs_f64() * 1e3,
                m.as_secs_f64() * 1e9 / agents as f64,
                sizes.0 as f64 / 1e6,
                sizes.1 as f64 / 1e6,
                sizes.2 as f64 / 1e6,
                sizes.3 as f64 / 1e6,
                read.as_secs_f64() * 1e3
            );
        }
    }
}
