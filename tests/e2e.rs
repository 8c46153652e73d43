//! End to end: simulator -> exporter -> a real Prometheus running the shipped
//! rules -> a real Alertmanager with the shipped routing and inhibit rules ->
//! a webhook this test serves. Time runs 60 times faster than in production
//! (see `common::stack`): a rule group evaluates every second, `for: 5m`
//! becomes 5s, and the exporter polls every second.
//!
//! "Exactly" means: the expected notifications arrived, then the rule groups
//! evaluated for longer than the longest relevant `for:` without Prometheus
//! holding any unexpected alert, and Alertmanager holds exactly the expected
//! alerts (anything it could still notify would be among them).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::binary::Binary;
use crate::common::stack::*;
use crate::common::*;
use crate::node::{DataServer, FakeHome, Running, start_agent, start_plugin};
use gse_exporter::run::Exporter;
use gse_sim::{AgentTruth, Faults, RunningSim, SimOptions};
use serde_json::Value as Json;

/// The test fleet: three groups of `PER_GROUP` agents, one on GSE 1.x.
const GROUPS: [(&str, i64, &str); 3] = [("web", 2, "v2"), ("legacy", 3, "v1"), ("batch", 5, "v2")];
const PER_GROUP: usize = 20;

/// How long any single expected notification may take (several `for:`s).
const NOTIFY_DEADLINE: Duration = Duration::from_secs(60);

/// A simulator, an exporter polling it every second, and the stack.
struct World {
    sim: RunningSim,
    exporter: Exporter,
    stack: Stack,
    /// `gse_exporter node` on a fake host, scraped as `job="gse_node"`.
    node: Option<NodeSide>,
    /// Where the `web` group's hosts file is, when it has one.
    _hosts: tempfile::TempDir,
}

/// The node mode's side: a fake GSE home with a running agent (connected
/// to a stand-in data server) and two plugins, and `gse_exporter node`
/// checking it every second as the host of one simulated agent.
struct NodeSide {
    home: FakeHome,
    server: DataServer,
    agent: Option<Running>,
    _plugins: [Running; 2],
    binary: Binary,
    /// The simulated agent the fake host stands for.
    host: AgentTruth,
}

impl NodeSide {
    /// Starts it for `host` (its `ip` and `bk_cloud_id` become the node's labels).
    async fn start(host: AgentTruth) -> NodeSide {
        let home = FakeHome::new();
        let server = DataServer::start();
        let agent = start_agent(&home, Some(server.addr), true);
        let plugins = [
            start_plugin(&home, "bkmonitorbeat"),
            start_plugin(&home, "bkunifylogbeat"),
        ];
        let mut args = home.args_for(server.addr.port(), &host.ip, host.bk_cloud_id);
        args.push("--check.interval=1s".into());
        let binary = Binary::start(&args, &[]).await;
        NodeSide {
            home,
            server,
            agent: Some(agent),
            _plugins: plugins,
            binary,
            host,
        }
    }
}

impl World {
    /// Starts everything; `top` adds top-level config keys.
    async fn start(options: SimOptions, top: &str) -> World {
        World::around(start_sim(options).await, top).await
    }

    /// Starts the exporter and the stack around a running simulator.
    async fn around(sim: RunningSim, top: &str) -> World {
        World::build(sim, top, false, false).await
    }

    /// Like `around`, with `gse_exporter node` on the host of the first known
    /// online agent of the `web` group that has an agent id.
    async fn around_with_node(sim: RunningSim, top: &str) -> World {
        World::build(sim, top, true, false).await
    }

    /// Like `around_with_node`, with the `web` group also discovered from
    /// the simulator's CMDB (its business 2) with its topology, and some of
    /// its hosts also in a hosts file, so the discovery, topology and
    /// hosts-file families have samples for `group="web"` too.
    async fn around_with_node_and_cmdb(sim: RunningSim, top: &str) -> World {
        World::build(sim, top, true, true).await
    }

    async fn build(sim: RunningSim, top: &str, with_node: bool, web_cmdb: bool) -> World {
        let truth = sim.truth();
        let specs: Vec<GroupSpec> = GROUPS
            .iter()
            .zip(truth.chunks(PER_GROUP))
            .map(|((name, biz, api), agents)| GroupSpec {
                name,
                bk_biz_id: *biz,
                api,
                agents,
                labels: "",
            })
            .collect();
        let yaml = config_yaml(
            &sim,
            "  rate_limit: { requests_per_second: 1000, burst: 100 }\n  max_attempts: 2\n  initial_backoff: 100ms\n  timeout: 2s\n",
            &format!("interval: 1s\n{top}"),
            &specs,
        );
        let hosts = tempfile::tempdir().unwrap();
        let yaml = match web_cmdb {
            false => yaml,
            true => {
                let with_cmdb = yaml.replacen(
                    "  - name: web\n",
                    "  - name: web\n    cmdb: { topology: true }\n",
                    1,
                );
                assert_ne!(with_cmdb, yaml, "the web group is in the config");
                // It also lists some of its configured hosts in a file (the
                // same hosts: the union is unchanged), so the hosts-file
                // families have samples for `group="web"` too.
                let file = write_hosts_file(hosts.path(), "web", &specs[0].agents[..5]);
                let with_cmdb = with_cmdb.replacen(
                    "  - name: web\n",
                    &format!("  - name: web\n    hosts_file: {}\n", file.display()),
                    1,
                );
                format!(
                    "{with_cmdb}cmdb:\n  url: {}\n  refresh_interval: 1s\n  rate_limit: {{ requests_per_second: 100, burst: 10 }}\n",
                    sim.cmdb_gateway_url()
                )
            }
        };
        let exporter = start_exporter(parse_config(&yaml)).await;
        wait_cycles(&exporter, 1, Duration::from_secs(30)).await;
        let node = match with_node {
            false => None,
            true => {
                let host = truth[..PER_GROUP]
                    .iter()
                    .find(|a| a.known && a.online && !a.bk_agent_id.is_empty())
                    .expect("an online web agent with an agent id")
                    .clone();
                Some(NodeSide::start(host).await)
            }
        };
        let extra: Vec<(&str, &str)> = node
            .iter()
            .map(|n| ("gse_node", n.binary.addr.as_str()))
            .collect();
        let stack = Stack::start(exporter.addr(), &extra).await;
        stack.wait_scraped().await;
        if node.is_some() {
            wait_until(
                "Prometheus to scrape gse_exporter node",
                Duration::from_secs(30),
                || async {
                    let running = stack
                        .prometheus
                        .count(r#"gse_node_agent_process{job="gse_node", state="running"} == 1"#)
                        .await;
                    (running == 1).then_some(())
                },
            )
            .await;
        }
        World {
            sim,
            exporter,
            stack,
            node,
            _hosts: hosts,
        }
    }

    /// The configured agents of a group, with the group's API.
    fn group(&self, name: &str) -> (&'static str, i64, &'static str, Vec<AgentTruth>) {
        let index = GROUPS
            .iter()
            .position(|(g, _, _)| *g == name)
            .expect("a test group");
        let (group, biz, api) = GROUPS[index];
        let agents = self.sim.truth()[index * PER_GROUP..(index + 1) * PER_GROUP].to_vec();
        (group, biz, api, agents)
    }

    async fn shutdown(self) {
        drop(self.node);
        drop(self.stack);
        self.exporter.shutdown().await;
        self.sim.shutdown().await;
    }
}

/// Every known agent online, a few hosts GSE does not know.
fn healthy_fleet() -> SimOptions {
    SimOptions {
        agents: GROUPS.len() * PER_GROUP,
        seed: 11,
        online_share: 1.0,
        unknown_share: 0.05,
        ..SimOptions::default()
    }
}

/// The labels a per-agent alert of `agent` in `group` must carry:
/// (group, bk_biz_id, ip, bk_agent_id). GSE 1.x groups are configured by
/// `cloud:ip`, so their series have no agent id.
fn agent_key(group: &str, biz: i64, api: &str, agent: &AgentTruth) -> [String; 4] {
    let agent_id = if api == "v1" {
        String::new()
    } else {
        agent.bk_agent_id.clone()
    };
    [group.into(), biz.to_string(), agent.ip.clone(), agent_id]
}

fn notified_key(n: &Notified) -> [String; 4] {
    ["group", "bk_biz_id", "ip", "bk_agent_id"].map(|l| n.label(l).to_string())
}

fn held_key(a: &HeldAlert) -> [String; 4] {
    ["group", "bk_biz_id", "ip", "bk_agent_id"].map(|l| a.label(l).to_string())
}

/// Known agents of a group that can be addressed unambiguously.
fn known(agents: &[AgentTruth]) -> Vec<&AgentTruth> {
    agents.iter().filter(|a| a.known).collect()
}

/// Notifications of one alert name, any status.
fn notified_named(stack: &Stack, alertname: &str) -> Vec<Notified> {
    stack
        .webhook
        .notified()
        .into_iter()
        .filter(|n| n.alertname() == alertname)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_offline_agents_notify_exactly_those_agents_then_resolve() {
    let world = World::start(healthy_fleet(), "").await;
    let stack = &world.stack;

    // One known agent per group, with an agent id where the group has one.
    let mut chosen = Vec::new();
    for (name, _, _) in GROUPS {
        let (group, biz, api, agents) = world.group(name);
        let agent = known(&agents)
            .into_iter()
            .find(|a| api == "v1" || !a.bk_agent_id.is_empty())
            .expect("a known agent")
            .clone();
        chosen.push((group, biz, api, agent));
    }
    let ids: Vec<String> = chosen.iter().map(|(.., a)| a.hosts_key()).collect();
    let expected: BTreeSet<[String; 4]> = chosen
        .iter()
        .map(|(g, b, api, a)| agent_key(g, *b, api, a))
        .collect();
    assert_eq!(world.sim.set_online(&ids, false).unwrap(), 3);

    let firing = stack
        .wait_notified("GseAgentOffline", "firing", 3, NOTIFY_DEADLINE)
        .await;
    let quiet = scaled_for_evaluations(&["GseAgentOffline"]) as usize + 3;
    stack
        .prometheus
        .watch_evaluations(quiet, |alerts| {
            alerts
                .iter()
                .find(|a| a.alertname() == "GseAgentOffline" && !expected.contains(&held_key(a)))
                .map(|a| format!("unexpected GseAgentOffline for {:?}", held_key(a)))
        })
        .await;

    let firing_now = stack.webhook.notified_as("GseAgentOffline", "firing");
    assert!(firing_now.len() >= firing.len());
    let notified: BTreeSet<[String; 4]> = firing_now.iter().map(notified_key).collect();
    assert_eq!(
        notified, expected,
        "GseAgentOffline notified for exactly the three agents"
    );
    assert_eq!(firing_now.len(), 3, "one alert per agent: {firing_now:#?}");
    for n in &firing_now {
        assert_eq!(n.receiver, "gse-ticket", "warnings route to tickets: {n:?}");
        assert_eq!(n.label("severity"), "warning");
        assert_eq!(n.label("job"), "gse_exporter");
    }
    let held: BTreeSet<[String; 4]> = stack
        .alertmanager
        .alerts()
        .await
        .iter()
        .filter(|a| a.alertname() == "GseAgentOffline")
        .map(held_key)
        .collect();
    assert_eq!(
        held, expected,
        "Alertmanager holds exactly the three alerts"
    );

    // Back online: each of the three is resolved.
    assert_eq!(world.sim.set_online(&ids, true).unwrap(), 3);
    let resolved = stack
        .wait_notified("GseAgentOffline", "resolved", 3, NOTIFY_DEADLINE)
        .await;
    let fingerprints = |list: &[Notified]| -> BTreeSet<String> {
        list.iter().map(|n| n.fingerprint.clone()).collect()
    };
    assert_eq!(
        fingerprints(&resolved),
        fingerprints(&firing_now),
        "exactly the firing alerts resolve"
    );
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_offline_notifies_once_for_the_group_and_no_agent_of_it() {
    let world = World::start(healthy_fleet(), "").await;
    let stack = &world.stack;
    let (group, biz, _, agents) = world.group("web");
    // 40% of the configured hosts of the group (not-found hosts count in the
    // denominator, as in gse_group:agents_offline:ratio).
    let down = PER_GROUP * 4 / 10;
    let ids: Vec<String> = known(&agents)
        .iter()
        .take(down)
        .map(|a| a.hosts_key())
        .collect();
    assert_eq!(world.sim.set_online(&ids, false).unwrap(), down);

    stack
        .wait_notified("GseAgentsMassOffline", "firing", 1, NOTIFY_DEADLINE)
        .await;
    let quiet = scaled_for_evaluations(&["GseAgentOffline", "GseAgentsMassOffline"]) as usize + 3;
    stack
        .prometheus
        .watch_evaluations(quiet, |alerts| {
            alerts
                .iter()
                .find(|a| {
                    (a.alertname() == "GseAgentOffline" && a.state == "firing")
                        || (a.alertname() == "GseAgentsMassOffline" && a.label("group") != group)
                })
                .map(|a| format!("unexpected {} {:?}", a.alertname(), a.labels))
        })
        .await;

    let mass = notified_named(stack, "GseAgentsMassOffline");
    assert_eq!(mass.len(), 1, "one mass-offline notification: {mass:#?}");
    let n = &mass[0];
    assert_eq!(n.status, "firing");
    assert_eq!(n.receiver, "gse-page", "critical routes to the pager");
    let label_names: Vec<&str> = n.labels.keys().map(String::as_str).collect();
    assert_eq!(
        label_names,
        ["alertname", "bk_biz_id", "group", "job", "severity", "site"],
        "one alert for the group of the site, no per-agent labels"
    );
    assert_eq!(n.label("site"), E2E_SITE);
    assert_eq!(n.label("group"), group);
    assert_eq!(n.label("bk_biz_id"), biz.to_string());

    let offline = notified_named(stack, "GseAgentOffline");
    assert!(
        offline.is_empty(),
        "no per-agent notification while the group is in mass offline: {offline:#?}"
    );
    let held: Vec<HeldAlert> = stack
        .alertmanager
        .alerts()
        .await
        .into_iter()
        .filter(|a| a.alertname().starts_with("GseAgent") && a.alertname() != "GseAgentNotFound")
        .collect();
    assert_eq!(
        held.len(),
        1,
        "Alertmanager holds only the mass offline: {held:#?}"
    );
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_proxy_pages_once_and_none_of_its_agents() {
    let world = World::start(healthy_fleet(), "").await;
    let stack = &world.stack;
    // The parent with the most known agents, across the three groups: every
    // agent behind it goes offline at once, as when the proxy dies.
    let truth = world.sim.truth();
    let mut behind: std::collections::BTreeMap<&str, Vec<&AgentTruth>> = Default::default();
    for agent in known(&truth) {
        behind
            .entry(agent.parent_ip.as_str())
            .or_default()
            .push(agent);
    }
    let (parent, agents) = behind
        .into_iter()
        .max_by_key(|(_, agents)| agents.len())
        .expect("a parent");
    assert!(
        agents.len() >= 3,
        "the test fleet puts several agents behind a parent"
    );
    let ids: Vec<String> = agents.iter().map(|a| a.hosts_key()).collect();
    assert_eq!(world.sim.set_online(&ids, false).unwrap(), ids.len());

    stack
        .wait_notified("GseProxyAgentsOffline", "firing", 1, NOTIFY_DEADLINE)
        .await;
    let quiet = scaled_for_evaluations(&[
        "GseAgentOffline",
        "GseAgentsMassOffline",
        "GseProxyAgentsOffline",
    ]) as usize
        + 3;
    stack
        .prometheus
        .watch_evaluations(quiet, |alerts| {
            alerts
                .iter()
                .find(|a| {
                    let offline = a.alertname() == "GseAgentOffline" && a.state == "firing";
                    let mass = a.alertname() == "GseAgentsMassOffline";
                    let other_proxy =
                        a.alertname() == "GseProxyAgentsOffline" && a.label("parent_ip") != parent;
                    offline || mass || other_proxy
                })
                .map(|a| format!("unexpected {} {:?}", a.alertname(), a.labels))
        })
        .await;

    let pages = notified_named(stack, "GseProxyAgentsOffline");
    assert_eq!(pages.len(), 1, "one page for the proxy: {pages:#?}");
    let n = &pages[0];
    assert_eq!(
        (n.status.as_str(), n.receiver.as_str()),
        ("firing", "gse-page")
    );
    assert_eq!(n.label("parent_ip"), parent);
    assert_eq!(n.label("site"), E2E_SITE);
    let per_agent = notified_named(stack, "GseAgentOffline");
    assert!(
        per_agent.is_empty(),
        "no per-agent notification: {per_agent:#?}"
    );
    let mass = notified_named(stack, "GseAgentsMassOffline");
    assert!(
        mass.is_empty(),
        "the proxy's agents are not a mass offline: {mass:#?}"
    );

    // The proxy comes back: the page resolves.
    assert_eq!(world.sim.set_online(&ids, true).unwrap(), ids.len());
    stack
        .wait_notified("GseProxyAgentsOffline", "resolved", 1, NOTIFY_DEADLINE)
        .await;
    world.shutdown().await;
}

/// The alerts whose expressions are muted while `gse_up == 0` for their group
/// (GseAgentVersionDrift is not: only Alertmanager's inhibit rule mutes it).
const MUTED_BY_OUTAGE: &[&str] = &[
    "GseAgentOffline",
    "GseAgentNotFound",
    "GseAgentHeartbeatStale",
    "GseAgentFlapping",
    "GseAgentsMassOffline",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gse_outage_notifies_unreachable_and_no_agent_offline() {
    // Agents of a failing batch keep their last values for a minute: an agent
    // that is offline when GSE becomes unreachable stays exported as offline,
    // so only the alert rules keep it quiet.
    let world = World::start(healthy_fleet(), "stale_after: 60s\n").await;
    let stack = &world.stack;

    // Before the outage: one agent is offline and notified.
    let (group, biz, api, agents) = world.group("batch");
    let before = known(&agents)[0].clone();
    assert_eq!(
        world.sim.set_online(&[before.hosts_key()], false).unwrap(),
        1
    );
    let firing = stack
        .wait_notified("GseAgentOffline", "firing", 1, NOTIFY_DEADLINE)
        .await;
    assert_eq!(
        firing.iter().map(notified_key).collect::<Vec<_>>(),
        [agent_key(group, biz, api, &before)]
    );

    // GSE fails, and meanwhile an agent of every group goes offline.
    world.sim.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    let during: Vec<String> = GROUPS
        .iter()
        .map(|(name, ..)| known(&world.group(name).3)[1].hosts_key())
        .collect();
    assert_eq!(world.sim.set_online(&during, false).unwrap(), 3);

    let unreachable = stack
        .wait_notified("GseExporterGseUnreachable", "firing", 3, NOTIFY_DEADLINE)
        .await;
    let got: BTreeSet<(String, String)> = unreachable
        .iter()
        .map(|n| (n.label("group").into(), n.label("bk_biz_id").into()))
        .collect();
    let want: BTreeSet<(String, String)> = GROUPS
        .iter()
        .map(|(g, b, _)| (g.to_string(), b.to_string()))
        .collect();
    assert_eq!(
        got, want,
        "one unreachable alert per group, with its business"
    );
    assert!(unreachable.iter().all(|n| n.receiver == "gse-page"));

    // While it lasts, no per-agent alert is even pending.
    let quiet = scaled_for_evaluations(&["GseAgentOffline"]) as usize + 3;
    stack
        .prometheus
        .watch_evaluations(quiet, |alerts| {
            alerts
                .iter()
                .find(|a| MUTED_BY_OUTAGE.contains(&a.alertname()))
                .map(|a| format!("{} {} during the outage", a.alertname(), a.state))
        })
        .await;
    let offline = stack.webhook.notified_as("GseAgentOffline", "firing");
    assert_eq!(
        offline.len(),
        1,
        "no GseAgentOffline fired during the outage: {offline:#?}"
    );
    let held: Vec<HeldAlert> = stack
        .alertmanager
        .alerts()
        .await
        .into_iter()
        .filter(|a| a.alertname() == "GseAgentOffline")
        .collect();
    assert!(
        held.is_empty(),
        "Alertmanager holds no GseAgentOffline: {held:#?}"
    );
    // The exporter really is blind and still exports the offline agent.
    assert_eq!(stack.prometheus.count("gse_up == 0").await, 3);
    let selector = format!(
        r#"gse_agent_online{{group="{group}",ip="{}"}} == 0"#,
        before.ip
    );
    assert_eq!(stack.prometheus.count(&selector).await, 1);
    world.shutdown().await;
}

// ------------------------------------------------------------- dashboards

/// Dashboard targets allowed to return nothing in this scenario, by
/// (panel title, a substring of the expression), and why. Targets naming a
/// metric of `NOT_YET_EXPOSED` may be empty too.
const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[(
    "Heartbeat age distribution",
    "count(gse_agent_heartbeat_age_seconds",
    "one target per age bucket: a bucket no agent's age falls into is empty \
         (online agents beat every 20s, so in a healthy fleet only the first \
         bucket is sure to have data); the panel as a whole must have data",
)];

/// Whether a query result (instant or range) holds a NaN sample: a panel
/// showing NaN tells nothing (e.g. a ratio of an API not called in the window).
fn has_nan(data: &Json) -> bool {
    data["result"].as_array().is_some_and(|series| {
        series.iter().any(|s| {
            let is_nan = |v: &Json| v[1].as_str() == Some("NaN");
            s.get("value").is_some_and(is_nan)
                || s["values"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().any(is_nan))
        })
    })
}

/// A `label_values(selector, label)` variable query as an instant query.
fn variable_query(query: &str) -> Option<(String, String)> {
    let inner = query.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    let label = label.trim().to_string();
    Some((format!("group by ({label}) ({selector})"), label))
}

/// Replaces Grafana's variables; panics if one is left.
fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let mut out = expr.to_string();
    // Longest names first so `$__rate_interval` is not hit by `$__interval`.
    let mut values = values.to_vec();
    values.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in values {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "unsubstituted variable in {out}");
    out
}

fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: &'a Json, out: &mut Vec<&'a Json>) {
        for panel in list.as_array().map(Vec::as_slice).unwrap_or(&[]) {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_and_returns_data() {
    // Some offline agents and hosts GSE does not know from the start, and
    // every fifth GSE request rate limited (then retried) for a while.
    // The first seed whose every group has online and offline agents and a
    // host GSE does not know.
    let mut seed = 0;
    let sim = loop {
        seed += 1;
        assert!(seed < 100, "no suitable seed");
        let sim = start_sim(SimOptions {
            agents: GROUPS.len() * PER_GROUP,
            seed,
            online_share: 0.8,
            unknown_share: 0.1,
            ..SimOptions::default()
        })
        .await;
        let suitable = sim.truth().chunks(PER_GROUP).all(|group| {
            group.iter().any(|a| a.known && a.online)
                && group.iter().any(|a| a.known && !a.online)
                && group.iter().any(|a| !a.known)
        });
        if suitable {
            break sim;
        }
        sim.shutdown().await;
    };
    // The node mode runs on the host of one web agent, for the "Host" row;
    // web is also discovered from CMDB with its topology, and OTLP pushes go
    // to a closed port (they fail), so the discovery, topology and OTLP
    // panels have data.
    let otlp = "otlp:\n  endpoint: http://127.0.0.1:9\n  interval: 1s\n  timeout: 500ms\n";
    let world = World::around_with_node_and_cmdb(sim, otlp).await;
    let stack = &world.stack;
    let node_ip = world.node.as_ref().expect("a node").host.ip.clone();
    world.sim.set_faults(Faults {
        throttle_every: Some(5),
        ..Faults::default()
    });
    // An agent changes state (for the state-change and flapping panels).
    let (_, _, _, web) = world.group("web");
    let flip = known(&web)
        .into_iter()
        .find(|a| a.online)
        .expect("an online agent")
        .hosts_key();
    world.sim.set_online(&[flip], false).unwrap();
    wait_until(
        "Prometheus to see a state change, a rate-limited request and a retry",
        // A deadline, not a wait: under the whole suite's load on two cores
        // (promtool, other stacks) this took over 60 s twice.
        Duration::from_secs(180),
        || async {
            let changed = stack
                .prometheus
                .count(r#"changes(gse_agent_online{job="gse_exporter"}[1h]) > 0"#)
                .await;
            let throttled = stack
                .prometheus
                .count(r#"gse_exporter_api_requests_total{result="rate_limited"} > 0"#)
                .await;
            let retried = stack
                .prometheus
                .count("gse_exporter_api_retries_total > 0")
                .await;
            (changed > 0 && throttled > 0 && retried > 0).then_some(())
        },
    )
    .await;
    world.sim.set_faults(Faults::default());
    // Rates need two samples after the last change; recording rules their turn.
    let cycles = *world.exporter.cycles().borrow();
    wait_cycles(&world.exporter, cycles + 3, Duration::from_secs(30)).await;
    stack.prometheus.watch_evaluations(3, |_| None).await;

    let mut problems = Vec::new();
    let mut checked = 0;
    for file in dashboard_files() {
        let dashboard: Json = serde_json::from_str(&read(&file)).expect("dashboard JSON");
        let name = file.file_name().unwrap().to_string_lossy().to_string();

        // Template variables: each must list the values the panels use.
        let base = [
            ("site", ".*"),
            ("job", "gse_exporter"),
            ("bk_biz_id", ".*"),
            ("group", ".*"),
            ("node_job", "gse_node"),
        ];
        for var in dashboard["templating"]["list"]
            .as_array()
            .expect("templating")
        {
            if var["type"] != "query" {
                continue;
            }
            let query = var["query"]["query"]
                .as_str()
                .or_else(|| var["query"].as_str())
                .expect("variable query");
            let (expr, label) = variable_query(query)
                .unwrap_or_else(|| panic!("{name}: unsupported variable query {query}"));
            let expr = substitute(&expr, &base);
            match stack.prometheus.query(&expr).await {
                Ok(data) if data["result"].as_array().is_some_and(|r| !r.is_empty()) => {
                    let values: Vec<&str> = data["result"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|s| s["metric"][&label].as_str())
                        .collect();
                    let want = match (var["name"].as_str(), label.as_str()) {
                        (Some("node_job"), _) => "gse_node",
                        (_, "site") => E2E_SITE,
                        (_, "job") => "gse_exporter",
                        (_, "group") => "web",
                        (_, "bk_biz_id") => "2",
                        (_, "ip") => node_ip.as_str(),
                        _ => "",
                    };
                    if !values.contains(&want) {
                        problems.push(format!(
                            "{name}: ${} lists {values:?}, not {want}",
                            var["name"]
                        ));
                    }
                }
                Ok(_) => problems.push(format!(
                    "{name}: variable ${} is empty: {expr}",
                    var["name"]
                )),
                Err(e) => problems.push(format!("{name}: variable ${}: {e}: {expr}", var["name"])),
            }
        }

        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("").to_string();
            let exprs: Vec<&str> = panel["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .filter_map(|t| t["expr"].as_str())
                .collect();
            if exprs.is_empty() {
                continue;
            }
            let not_yet = exprs
                .iter()
                .all(|e| NOT_YET_EXPOSED.iter().any(|m| e.contains(m)));
            // Every panel with all groups, and with one real group.
            for (site, group, biz) in [(".*", ".*", ".*"), (E2E_SITE, "web", "2")] {
                for rate_interval in ["4s", "1m"] {
                    let values = [
                        ("site", site),
                        ("job", "gse_exporter"),
                        ("group", group),
                        ("bk_biz_id", biz),
                        ("__rate_interval", rate_interval),
                        ("__interval", "1s"),
                        ("__range", "5m"),
                        ("datasource", "prometheus"),
                        ("node_job", "gse_node"),
                        ("ip", node_ip.as_str()),
                    ];
                    let mut panel_has_data = false;
                    for expr in &exprs {
                        let may_be_empty = MAY_BE_EMPTY
                            .iter()
                            .any(|(t, part, _)| *t == title && expr.contains(part));
                        let query = substitute(expr, &values);
                        checked += 1;
                        let where_ =
                            format!("{name} / {title:?} [{group}, {rate_interval}]: {query}");
                        match stack.prometheus.query(&query).await {
                            Err(e) => problems.push(format!("{where_}: {e}")),
                            Ok(data) => {
                                let empty = data["result"].as_array().is_none_or(Vec::is_empty);
                                panel_has_data |= !empty;
                                if empty && !may_be_empty && !not_yet {
                                    problems.push(format!("{where_}: no data"));
                                }
                                if has_nan(&data) {
                                    problems.push(format!("{where_}: NaN"));
                                }
                            }
                        }
                        match stack.prometheus.query_range(&query, 30).await {
                            Err(e) => problems.push(format!("{where_} (range): {e}")),
                            Ok(data) if has_nan(&data) => {
                                problems.push(format!("{where_} (range): NaN"))
                            }
                            Ok(_) => {}
                        }
                    }
                    if !panel_has_data && !not_yet {
                        problems.push(format!(
                            "{name} / {title:?} [{group}, {rate_interval}]: no target has data"
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} dashboard queries found");
    assert!(
        problems.is_empty(),
        "dashboard queries:\n{}",
        problems.join("\n")
    );
    world.shutdown().await;
}

// -------------------------------------------------------------- node view

/// The body of a runbook section: from its heading to the next one.
fn runbook_section(name: &str) -> String {
    let runbook = read(&repo_root().join("docs/runbook.md"));
    let start = runbook
        .find(&format!("\n## {name}\n"))
        .unwrap_or_else(|| panic!("docs/runbook.md has no section {name}"));
    let body = &runbook[start + 4 + name.len()..];
    body[..body.find("\n## ").unwrap_or(body.len())].to_string()
}

/// The alerts one offline agent can raise: the generic one and one per cause.
const OUTAGE_ALERTS: &[&str] = &[
    "GseAgentOffline",
    "GseAgentProcessDown",
    "GseAgentUpstreamDown",
    "GseAgentIpcStuck",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_side_process_down_notifies_its_cause_and_runbook_section() {
    let mut world = World::around_with_node(start_sim(healthy_fleet()).await, "").await;
    let (group, biz, api, _) = world.group("web");
    let node = world.node.as_mut().expect("a node");
    let host = node.host.clone();
    let expected = agent_key(group, biz, api, &host);

    // The agent's process dies on the host; its node sees it first...
    node.agent.take().expect("the fake agent runs").kill();
    let fault = format!(
        r#"gse_node:agent_fault:max{{cause="process_down", ip="{}", bk_cloud_id="{}"}}"#,
        host.ip, host.bk_cloud_id
    );
    let stack = &world.stack;
    wait_until(
        "Prometheus to record the node's cause",
        NOTIFY_DEADLINE,
        || async { (stack.prometheus.count(&fault).await == 1).then_some(()) },
    )
    .await;
    // ... then GSE reports the agent offline.
    assert_eq!(world.sim.set_online(&[host.hosts_key()], false).unwrap(), 1);

    let firing = stack
        .wait_notified("GseAgentProcessDown", "firing", 1, NOTIFY_DEADLINE)
        .await;
    assert_eq!(firing.len(), 1, "{firing:#?}");
    let n = &firing[0];
    assert_eq!(notified_key(n), expected);
    assert_eq!(n.label("bk_cloud_id"), host.bk_cloud_id.to_string());
    assert_eq!(n.receiver, "gse-ticket", "warnings route to tickets");
    let runbook_url = n.annotations.get("runbook_url").map(String::as_str);
    assert_eq!(
        runbook_url,
        Some(
            "https://github.com/gse-exporter/gse_exporter/blob/main/docs/runbook.md#gseagentprocessdown"
        )
    );
    assert!(
        runbook_section("GseAgentProcessDown").contains("gsectl restart"),
        "the section the alert links to says how to restart the agent"
    );

    // Nothing else for the outage: the generic GseAgentOffline and the other
    // causes are not even pending, and Alertmanager holds only this alert.
    let quiet = scaled_for_evaluations(&["GseAgentOffline"]) as usize + 3;
    stack
        .prometheus
        .watch_evaluations(quiet, |alerts| {
            alerts
                .iter()
                .find(|a| {
                    OUTAGE_ALERTS.contains(&a.alertname())
                        && !(a.alertname() == "GseAgentProcessDown" && held_key(a) == expected)
                })
                .map(|a| format!("unexpected {} {:?}", a.alertname(), a.labels))
        })
        .await;
    let offline = notified_named(stack, "GseAgentOffline");
    assert!(offline.is_empty(), "no GseAgentOffline: {offline:#?}");
    let held: Vec<(String, [String; 4])> = stack
        .alertmanager
        .alerts()
        .await
        .iter()
        .filter(|a| OUTAGE_ALERTS.contains(&a.alertname()))
        .map(|a| (a.alertname().to_string(), held_key(a)))
        .collect();
    assert_eq!(
        held,
        [("GseAgentProcessDown".to_string(), expected.clone())]
    );

    // The agent is restarted and GSE sees it again: the alert resolves.
    let node = world.node.as_mut().expect("a node");
    node.agent = Some(start_agent(&node.home, Some(node.server.addr), true));
    assert_eq!(world.sim.set_online(&[host.hosts_key()], true).unwrap(), 1);
    world
        .stack
        .wait_notified("GseAgentProcessDown", "resolved", 1, NOTIFY_DEADLINE)
        .await;
    world.shutdown().await;
}

// --------------------------------------------------------------- sites

/// Alerts of three sites with identical group names and host IPs go to a
/// real Alertmanager running the shipped configuration: every inhibit rule
/// mutes within its own site only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_inhibits_within_a_site_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let webhook = Webhook::start().await;
    let alertmanager = Alertmanager::start(dir.path(), &webhook).await;
    let alert = |name: &str, site: &str, extra: &[(&str, &str)]| {
        let mut labels: std::collections::BTreeMap<String, String> = [
            ("alertname", name),
            ("site", site),
            ("job", "gse_exporter"),
            ("severity", "warning"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if name.starts_with("GseAgent") {
            labels
                .entry("bk_biz_id".into())
                .or_insert_with(|| "2".into());
        }
        labels
    };
    let web_host = [
        ("group", "web-prod"),
        ("instance", "gse-exporter-sh.example.com"),
        ("bk_cloud_id", "0"),
        ("ip", "10.0.0.7"),
        ("bk_agent_id", ""),
    ];
    let sz_host = [
        ("group", "web-prod"),
        ("instance", "gse-exporter-sz.example.com"),
        ("bk_cloud_id", "0"),
        ("ip", "10.0.0.7"),
        ("bk_agent_id", ""),
    ];
    let db = [("group", "db"), ("bk_biz_id", "3")];
    // (alert, whether the shipped inhibit rules must suppress it)
    let cases = [
        // GSE unreachable for web-prod at shanghai ...
        (
            alert(
                "GseExporterGseUnreachable",
                "shanghai",
                &[("group", "web-prod")],
            ),
            false,
        ),
        (alert("GseAgentOffline", "shanghai", &web_host), true),
        // ... not at shenzhen, whose same host of the same group is offline.
        (alert("GseAgentOffline", "shenzhen", &sz_host), false),
        // db in mass offline at shenzhen, not at shanghai.
        (alert("GseAgentsMassOffline", "shenzhen", &db), false),
        (alert("GseAgentFlapping", "shenzhen", &db), true),
        (alert("GseAgentFlapping", "shanghai", &db), false),
        // A beijing exporter cannot be scraped: beijing's alerts only.
        (
            alert(
                "GseExporterDown",
                "beijing",
                &[("instance", "gse-exporter-2.example.com")],
            ),
            false,
        ),
        (alert("GseExporterShardMissing", "beijing", &[]), true),
        (
            alert(
                "GseExporterConfigReloadFailed",
                "shenzhen",
                &[("instance", "gse-exporter-sz.example.com")],
            ),
            false,
        ),
    ];
    let alerts: Vec<_> = cases.iter().map(|(labels, _)| labels.clone()).collect();
    let want: BTreeSet<(String, String, bool)> = cases
        .iter()
        .map(|(l, suppressed)| (l["alertname"].clone(), l["site"].clone(), *suppressed))
        .collect();
    // Re-sent every round, as Prometheus does, so none resolves meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        alertmanager.post(&alerts).await;
        let held: BTreeSet<(String, String, bool)> = alertmanager
            .alerts()
            .await
            .iter()
            .filter(|a| a.state != "unprocessed")
            .map(|a| {
                let suppressed = a.state == "suppressed";
                (
                    a.alertname().to_string(),
                    a.label("site").to_string(),
                    suppressed,
                )
            })
            .collect();
        if held == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Alertmanager holds (alert, site, suppressed) {held:#?}, want {want:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
