//! The landing page at `/`: links to the endpoints and each group's last
//! poll, from the published snapshot.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::Html;

use super::AppState;
use crate::snapshot::{AgentState, GroupSnapshot};

pub(super) async fn landing(State(state): State<AppState>) -> Html<String> {
    let exposition = state.published.current();
    Html(landing_page(
        &state.telemetry_path,
        &exposition.snapshot().groups,
    ))
}

fn landing_page(telemetry_path: &str, groups: &[GroupSnapshot]) -> String {
    let mut rows = String::new();
    for g in groups {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}s</td><td>{}</td></tr>",
            escape(&g.name),
            escape(&g.bk_biz_id),
            if g.up { "up" } else { "<b>blind</b>" },
            g.counts.get(AgentState::Online),
            g.counts.get(AgentState::Offline),
            g.counts.get(AgentState::NotFound) + g.counts.get(AgentState::Unknown),
            g.poll_duration,
            g.last_success.map_or("never".into(), format_unix),
        );
    }
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>GSE Exporter</title></head><body>\
         <h1>GSE Exporter</h1><p>Version {version}. Reports whether BlueKing GSE agents are alive.</p>\
         <ul><li><a href=\"{path}\">Metrics</a></li><li><a href=\"/-/healthy\">Health</a></li>\
         <li><a href=\"/-/ready\">Readiness</a></li></ul>\
         <h2>Groups</h2><table border=\"1\" cellpadding=\"4\"><tr><th>group</th><th>bk_biz_id</th><th>GSE</th>\
         <th>online</th><th>offline</th><th>not found / unknown</th><th>last poll took</th><th>last full success (UTC)</th></tr>\
         {rows}</table></body></html>",
        version = env!("CARGO_PKG_VERSION"),
        path = escape(telemetry_path),
    )
}

fn format_unix(seconds: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(seconds.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landing_page_escapes_group_names() {
        let page = landing_page("/metrics", &[]);
        assert!(page.contains("href=\"/metrics\""));
        assert_eq!(escape("<b>&"), "&lt;b&gt;&amp;");
    }
}
