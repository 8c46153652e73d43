//! The published state: the current snapshot's rendered `/metrics` bodies,
//! cached as bytes (plain and gzip), swapped atomically once per cycle, plus
//! readiness.
//!
//! A scrape only clones `Bytes` out of here (and inflates the pieces of the
//! plain body held compressed as it sends them). The Prometheus text body is
//! rendered when the snapshot is published; the OpenMetrics body is rendered
//! once, by the first scrape that asks for it, and then cached as well.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::agents::{self, Block};
use super::gzip::{Piece, PlainText, gzip};
use super::text::{Format, deny_set, is_denied, render};
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;

/// One rendered body in both encodings. Each is a list of chunks (the
/// per-agent segments, shared by both formats and with the previous
/// snapshot's body where their text is the same, then the rest), so serving
/// it copies nothing and the per-agent block is held once per encoding, or
/// once in all for a segment held compressed only (its text is inflated from
/// the gzip body's chunk when the plain body is served).
#[derive(Debug, Clone)]
pub struct Body {
    /// Uncompressed, in order: text, or the deflate bytes of a segment held
    /// compressed only.
    plain: Vec<Piece>,
    /// gzip-compressed, in order (one gzip member).
    pub(crate) gzip: Vec<Bytes>,
}

impl Body {
    /// Bytes of the uncompressed body.
    pub fn plain_len(&self) -> usize {
        self.plain.iter().map(Piece::len).sum()
    }

    /// Bytes of the gzip body.
    pub fn gzip_len(&self) -> usize {
        self.gzip.iter().map(Bytes::len).sum()
    }

    /// Pieces of the uncompressed body held compressed only.
    #[cfg(test)]
    pub(crate) fn compressed_pieces(&self) -> usize {
        let compressed = |p: &&Piece| matches!(p, Piece::Deflated { .. });
        self.plain.iter().filter(compressed).count()
    }

    /// The uncompressed body, a chunk at a time.
    pub fn plain_text(&self) -> PlainText {
        PlainText::new(self.plain.clone())
    }

    /// Bytes this body holds (its text and its gzip body, each chunk once),
    /// leaving out the chunks it shares with `other`.
    pub fn held_apart_from(&self, other: Option<&Body>) -> usize {
        let shared: std::collections::HashSet<*const u8> = other
            .into_iter()
            .flat_map(Body::held)
            .map(|c| c.as_ptr())
            .collect();
        self.held()
            .filter(|c| !shared.contains(&c.as_ptr()))
            .map(Bytes::len)
            .sum()
    }

    /// Every chunk the body holds: its text pieces and its gzip chunks (a
    /// deflated piece is a gzip chunk).
    fn held(&self) -> impl Iterator<Item = &Bytes> {
        let text = self.plain.iter().filter_map(|p| match p {
            Piece::Text(text) => Some(text),
            Piece::Deflated { .. } => None,
        });
        text.chain(&self.gzip)
    }
}

/// The exposition of one snapshot.
#[derive(Debug)]
pub struct Exposition {
    snapshot: Arc<Snapshot>,
    telemetry: Arc<Telemetry>,
    agents: Block,
    /// The snapshot's agent rows were dropped once rendered (nothing but
    /// the OTLP push reads them).
    rows_dropped: bool,
    prometheus: Body,
    openmetrics: OnceLock<Body>,
}

impl Exposition {
    /// Renders a snapshot (Prometheus text now; OpenMetrics on first demand).
    pub fn new(snapshot: Arc<Snapshot>, telemetry: Arc<Telemetry>) -> Exposition {
        Exposition::render(snapshot, telemetry, &Block::default(), Rows::Keep)
    }

    /// Renders the next snapshot, sharing the per-agent segments whose text
    /// did not change with this exposition.
    pub fn next(&self, snapshot: Arc<Snapshot>) -> Exposition {
        Exposition::render(snapshot, self.telemetry.clone(), &self.agents, Rows::Keep)
    }

    fn render(
        mut snapshot: Arc<Snapshot>,
        telemetry: Arc<Telemetry>,
        previous: &Block,
        rows: Rows,
    ) -> Exposition {
        let deny = deny_set(&snapshot.metric_deny);
        let agents = agents::render(&snapshot, &|def| is_denied(&deny, def), previous);
        let rows_dropped = rows == Rows::Drop && drop_rows(&mut snapshot);
        let rest = render(snapshot.clone(), telemetry.clone(), Format::Prometheus);
        let prometheus = assemble(&agents, rest);
        telemetry.set_body_bytes(prometheus.plain_len(), prometheus.gzip_len());
        Exposition {
            snapshot,
            telemetry,
            agents,
            rows_dropped,
            prometheus,
            openmetrics: OnceLock::new(),
        }
    }

    /// The body in a format.
    pub fn body(&self, format: Format) -> &Body {
        match format {
            Format::Prometheus => &self.prometheus,
            Format::OpenMetrics => self.openmetrics.get_or_init(|| {
                let rest = render(
                    self.snapshot.clone(),
                    self.telemetry.clone(),
                    Format::OpenMetrics,
                );
                assemble(&self.agents, rest)
            }),
        }
    }

    /// The same snapshot with the self-metrics rendered again; the per-agent
    /// block is reused as it is.
    fn refreshed(&self) -> Exposition {
        let rest = render(
            self.snapshot.clone(),
            self.telemetry.clone(),
            Format::Prometheus,
        );
        Exposition {
            snapshot: self.snapshot.clone(),
            telemetry: self.telemetry.clone(),
            agents: self.agents.clone(),
            rows_dropped: self.rows_dropped,
            prometheus: assemble(&self.agents, rest),
            openmetrics: OnceLock::new(),
        }
    }

    /// The snapshot behind this exposition.
    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Whether the snapshot's agent rows were dropped after rendering (its
    /// groups then list no agents: only their counts).
    pub(crate) fn rows_dropped(&self) -> bool {
        self.rows_dropped
    }
}

/// Whether an exposition keeps its snapshot's agent rows once rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Kept: the OTLP push reads them.
    Keep,
    /// Dropped: the bodies are rendered and nothing else reads them.
    Drop,
}

/// Drops the agent rows of a snapshot held nowhere else; whether it did.
fn drop_rows(snapshot: &mut Arc<Snapshot>) -> bool {
    let Some(snapshot) = Arc::get_mut(snapshot) else {
        return false;
    };
    for group in &mut snapshot.groups {
        group.agents = Vec::new();
    }
    true
}

/// A body: the per-agent segments (shared, not copied), then the rest.
fn assemble(agents: &Block, rest: String) -> Body {
    let segments = agents.segments();
    let gzip = gzip(segments, agents.checksum(), rest.as_bytes());
    let plain = segments
        .iter()
        .filter_map(|s| s.piece())
        .chain([Piece::Text(Bytes::from(rest))])
        .collect();
    Body { plain, gzip }
}

/// What the HTTP server reads: the current exposition and readiness.
#[derive(Debug)]
pub struct Published {
    current: ArcSwap<Exposition>,
    ready: AtomicBool,
    telemetry: Arc<Telemetry>,
}

impl Published {
    /// Starts with an empty snapshot, not ready.
    pub(crate) fn new(telemetry: Arc<Telemetry>) -> Published {
        let empty = Exposition::new(Arc::new(Snapshot::default()), telemetry.clone());
        Published {
            current: ArcSwap::from_pointee(empty),
            ready: AtomicBool::new(false),
            telemetry,
        }
    }

    /// Renders and swaps in a snapshot; ready once a complete one is in.
    /// Its agent rows are kept only for the OTLP push (`rows`).
    pub(crate) fn publish(&self, snapshot: Snapshot, rows: Rows) {
        let complete = snapshot.complete;
        let current = self.current.load_full();
        let exposition = Exposition::render(
            Arc::new(snapshot),
            self.telemetry.clone(),
            &current.agents,
            rows,
        );
        drop(current);
        self.current.store(Arc::new(exposition));
        if complete {
            self.ready.store(true, Ordering::Release);
        }
    }

    /// Renders the self-metrics of the current snapshot again (after a
    /// reload, so its outcome shows at once). A snapshot published meanwhile
    /// is never replaced by an older one.
    pub(crate) fn refresh(&self) {
        let current = self.current.load();
        let refreshed = Arc::new(current.refreshed());
        self.current.compare_and_swap(&*current, refreshed);
    }

    /// The current exposition.
    pub(crate) fn current(&self) -> Arc<Exposition> {
        self.current.load_full()
    }

    /// Whether a complete cycle has been published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The self-telemetry shared with the poller.
    pub(crate) fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use proptest::prelude::*;

    use super::*;
    use crate::expose::fixtures::{fields, fleet, heartbeats_moved, relabel, snapshot};
    use crate::snapshot::AgentState;

    fn exposition(snapshot: &Snapshot) -> Exposition {
        Exposition::new(Arc::new(snapshot.clone()), Arc::new(Telemetry::default()))
    }

    /// The text of pieces, inflated where held compressed.
    fn text(pieces: &[Piece]) -> Vec<u8> {
        let chunks: Result<Vec<Bytes>, _> = PlainText::new(pieces.to_vec()).collect();
        chunks.unwrap().concat()
    }

    /// The per-agent text of a body (every piece but the last, the rest).
    fn agent_text(body: &Body) -> Vec<u8> {
        text(&body.plain[..body.plain.len() - 1])
    }

    /// Where a piece's bytes are held (text or deflate bytes).
    fn at(piece: &Piece) -> *const u8 {
        match piece {
            Piece::Text(text) => text.as_ptr(),
            Piece::Deflated { deflated, .. } => deflated.as_ptr(),
        }
    }

    fn gunzip(body: &Body) -> Vec<u8> {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body.gzip.concat()[..])
            .read_to_end(&mut plain)
            .unwrap();
        plain
    }

    /// Segments of `new` that are not `old`'s at the same place (by pointer).
    fn fresh(old: &Exposition, new: &Exposition) -> usize {
        let (old, new) = (old.agents.segments(), new.agents.segments());
        assert_eq!(old.len(), new.len());
        old.iter()
            .zip(new)
            .filter(|(a, b)| b.piece().is_some() && a.deflated.as_ptr() != b.deflated.as_ptr())
            .count()
    }

    #[test]
    fn unchanged_agents_share_the_previous_segments() {
        let groups = fleet(100);
        let first = exposition(&snapshot(&groups, &[]));
        let second = first.next(Arc::new(snapshot(&groups, &[])));
        assert!(first.agents.segments().len() > 20);
        assert_eq!(fresh(&first, &second), 0);
        let shared = |a: &Body, b: &Body| {
            let n = a.plain.len() - 1;
            a.plain[..n]
                .iter()
                .zip(&b.plain[..n])
                .all(|(x, y)| at(x) == at(y))
        };
        assert!(shared(
            first.body(Format::Prometheus),
            second.body(Format::Prometheus)
        ));
        assert!(shared(
            first.body(Format::Prometheus),
            second.body(Format::OpenMetrics)
        ));
    }

    #[test]
    fn only_the_families_that_keep_changing_are_held_compressed() {
        let groups = fleet(100);
        let (still, moved) = (
            snapshot(&groups, &[]),
            snapshot(&heartbeats_moved(&groups), &[]),
        );
        let first = exposition(&still);
        let compressed = |e: &Exposition| e.body(Format::Prometheus).compressed_pieces();
        // Two heartbeat families, two groups with per-agent series, runs of 16.
        let heartbeat_segments = 2 * 2 * 100usize.div_ceil(16);
        assert_eq!(
            compressed(&first),
            heartbeat_segments,
            "all new: only the heartbeat's compressed"
        );
        let changed = first.next(Arc::new(moved.clone()));
        let once = changed.next(Arc::new(moved.clone()));
        assert_eq!(compressed(&changed), heartbeat_segments, "changed");
        assert_eq!(
            compressed(&once),
            heartbeat_segments,
            "the same once: still"
        );
        let settled = once.next(Arc::new(moved.clone()));
        assert_eq!(compressed(&settled), 0, "the same twice: text back");
        let next = settled.next(Arc::new(still.clone()));
        let heartbeat = |e: &Exposition| {
            let text = String::from_utf8(agent_text(e.body(Format::Prometheus))).unwrap();
            let families = [
                "gse_agent_heartbeat_age_seconds",
                "gse_agent_heartbeat_timestamp_seconds",
            ];
            families.map(|f| text.matches(&format!("# TYPE {f} ")).count())
        };
        assert_eq!(heartbeat(&next), [1, 1]);
        assert_eq!(compressed(&next), heartbeat_segments);
        assert_eq!(fresh(&settled, &next), compressed(&next));
    }

    #[test]
    fn a_changed_agent_yields_exactly_the_new_text_in_one_new_segment() {
        let mut groups = fleet(100);
        let first = exposition(&snapshot(&groups, &[]));
        groups[1][40].0 = 1; // offline now: gse_agent_online only
        let changed = snapshot(&groups, &[]);
        let second = first.next(Arc::new(changed.clone()));
        assert_eq!(fresh(&first, &second), 1);
        let text = agent_text(second.body(Format::Prometheus));
        assert_eq!(
            text,
            agent_text(exposition(&changed).body(Format::Prometheus))
        );
        let line = "gse_agent_online{group=\"group-1\",bk_biz_id=\"2\",bk_cloud_id=\"1\",\
                    ip=\"10.1.0.40\",bk_agent_id=\"01000000000000000000000000000028\",\
                    team=\"sre\",rack=\"rack-0\"} 0\n";
        assert!(String::from_utf8(text).unwrap().contains(line));
    }

    #[test]
    fn denying_a_family_drops_its_segments_and_keeps_the_others_shared() {
        let groups = fleet(50);
        let first = exposition(&snapshot(&groups, &[]));
        let second = first.next(Arc::new(snapshot(&groups, &["gse_agent_info"])));
        let text = String::from_utf8(agent_text(second.body(Format::Prometheus))).unwrap();
        assert!(!text.contains("gse_agent_info{") && text.contains("gse_agent_online{"));
        let old: Vec<_> = first
            .agents
            .segments()
            .iter()
            .map(|s| s.deflated.as_ptr())
            .collect();
        assert!(
            second
                .agents
                .segments()
                .iter()
                .all(|s| s.piece().is_none() || old.contains(&s.deflated.as_ptr()))
        );
    }

    #[test]
    fn agent_rows_are_dropped_once_rendered_unless_kept_for_otlp() {
        let groups = fleet(40);
        let published = Published::new(Arc::new(Telemetry::default()));
        published.publish(snapshot(&groups, &[]), Rows::Drop);
        let dropped = published.current();
        assert!(dropped.rows_dropped());
        assert!(
            dropped
                .snapshot()
                .groups
                .iter()
                .all(|g| g.agents.is_empty())
        );
        assert_eq!(
            dropped.snapshot().groups[0].counts.get(AgentState::Online),
            40
        );
        let text = agent_text(dropped.body(Format::OpenMetrics));
        assert_eq!(
            text,
            agent_text(exposition(&snapshot(&groups, &[])).body(Format::OpenMetrics))
        );
        published.publish(snapshot(&groups, &[]), Rows::Keep);
        let kept = published.current();
        assert!(!kept.rows_dropped());
        assert_eq!(kept.snapshot().groups[0].agents.len(), 40);
        assert_eq!(fresh(&dropped, &kept), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn a_next_exposition_reads_as_one_rendered_afresh_and_gzip_as_plain(
            groups in prop::collection::vec(prop::collection::vec(fields(), 0..90), 1..4),
            changes in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), fields()), 0..8),
            relabels in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()), 0..4),
            deny in 0..3usize,
        ) {
            let deny: &[&str] = [&[][..], &["gse_agent_topology_info"][..], &["gse_agent_heartbeat_.*"][..]][deny];
            let first = exposition(&snapshot(&groups, &[]));
            let mut after = groups.clone();
            for (g, i, fields) in changes {
                let g = g.index(after.len());
                if !after[g].is_empty() {
                    let i = i.index(after[g].len());
                    after[g][i] = fields;
                }
            }
            let mut after = snapshot(&after, deny);
            for (g, i, how) in relabels {
                let g = g.index(after.groups.len());
                let i = i.index(after.groups[g].agents.len().max(1));
                relabel(&mut after, g, i, how);
            }
            let next = first.next(Arc::new(after.clone()));
            let afresh = exposition(&after);
            for format in [Format::Prometheus, Format::OpenMetrics] {
                let body = next.body(format);
                prop_assert_eq!(agent_text(body), agent_text(afresh.body(format)));
                prop_assert_eq!(gunzip(body), text(&body.plain));
                prop_assert_eq!(body.plain_len(), text(&body.plain).len());
            }
        }

        /// Over a first cycle, one in which heartbeats (and a few agents)
        /// changed, one in which nothing did and one back to the first
        /// text, every body served reads as one rendered afresh, its pieces
        /// held compressed inflated, and its gzip decodes to it.
        #[test]
        fn bodies_over_cycles_read_as_rendered_afresh_inflated_pieces_included(
            groups in prop::collection::vec(prop::collection::vec(fields(), 0..90), 1..4),
            changes in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), fields()), 0..8),
        ) {
            let mut moved = heartbeats_moved(&groups);
            for (g, i, fields) in changes {
                let g = g.index(moved.len());
                if !moved[g].is_empty() {
                    let i = i.index(moved[g].len());
                    moved[g][i] = fields;
                }
            }
            let mut previous: Option<Exposition> = None;
            for groups in [&groups, &moved, &moved, &groups] {
                let snapshot = snapshot(groups, &[]);
                let next = match &previous {
                    Some(previous) => previous.next(Arc::new(snapshot.clone())),
                    None => exposition(&snapshot),
                };
                let afresh = exposition(&snapshot);
                for format in [Format::Prometheus, Format::OpenMetrics] {
                    let body = next.body(format);
                    let plain = text(&body.plain);
                    prop_assert_eq!(agent_text(body), agent_text(afresh.body(format)));
                    prop_assert_eq!(gunzip(body), &plain[..]);
                    prop_assert_eq!(body.plain_len(), plain.len());
                }
                previous = Some(next);
            }
        }
    }
}
