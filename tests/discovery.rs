//! Groups discovered from CMDB: exactly the business's askable hosts, skipped
//! hosts counted by reason, last good list kept through CMDB outages, and a
//! listing that halves a group held back once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::*;
use gse_sim::{BizSpec, CmdbHost, Faults, SimOptions};

/// The `by_agent` key a CMDB host gets in a GSE 2.0 group, or None when it
/// cannot be asked for (no IPv4 and no agent id).
fn expected_key(group: &str, host: &CmdbHost) -> Option<String> {
    let id = match (host.bk_agent_id.as_str(), host.first_ipv4()) {
        ("", None) => return None,
        ("", Some(ip)) => format!("{}:{ip}", host.bk_cloud_id),
        (id, _) => id.to_string(),
    };
    Some(format!("{group}/{id}"))
}

fn exported(all: &[Sample], group: &str) -> BTreeSet<String> {
    by_agent(all, "gse_agent_online")
        .into_keys()
        .filter(|k| k.starts_with(&format!("{group}/")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_of_2345_hosts_is_polled_exactly_with_skips_counted() {
    let businesses = vec![BizSpec {
        bk_biz_id: 9,
        hosts: 2_345,
    }];
    let sim = start_sim(SimOptions {
        agents: 2_000,
        businesses,
        ..SimOptions::default()
    })
    .await;
    let hosts = sim.cmdb_hosts(9);
    assert_eq!(hosts.len(), 2_345);
    let want: BTreeSet<String> = hosts
        .iter()
        .filter_map(|h| expected_key("biz-9", h))
        .collect();
    let skipped = hosts
        .iter()
        .filter(|h| expected_key("biz-9", h).is_none())
        .count();
    assert!(
        skipped > 0 && hosts.iter().any(|h| h.bk_host_innerip.contains(',')),
        "the fleet has hosts to skip and multi-IP hosts"
    );

    let mut yaml = format!(
        "{}interval: 30s\ngroups:\n",
        gse_block(
            &sim,
            "  rate_limit: { requests_per_second: 200, burst: 20 }\n"
        )
    );
    yaml.push_str(&cmdb_group_yaml(&sim, "biz-9", 9, ""));
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(30)).await;
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(
        exported(&all, "biz-9"),
        want,
        "exactly the business's askable hosts"
    );
    let reason = |r: &str| {
        value(
            &all,
            "gse_exporter_discovery_hosts_skipped",
            &[("group", "biz-9"), ("reason", r)],
        )
    };
    assert_eq!(reason("no_ipv4_and_no_agent_id"), Some(skipped as f64));
    assert_eq!(
        value(&all, "gse_exporter_group_hosts", &[("group", "biz-9")]),
        Some(want.len() as f64)
    );
    assert_eq!(
        value(
            &all,
            "gse_exporter_discovery_success",
            &[("group", "biz-9")]
        ),
        Some(1.0)
    );
    let not_found = value(
        &all,
        "gse_agents",
        &[("group", "biz-9"), ("state", "not_found")],
    )
    .unwrap();
    assert!(
        not_found >= 300.0,
        "CMDB-only hosts are not found in GSE: {not_found}"
    );
    exporter.shutdown().await;
}

/// A simulator of 300 agents, an exporter polling every second the group
/// `biz-2` found in its CMDB, and that group's agents after the first cycle.
async fn discovered_biz_2() -> (
    gse_sim::RunningSim,
    gse_exporter::run::Exporter,
    BTreeSet<String>,
) {
    let sim = start_sim(SimOptions {
        agents: 300,
        ..SimOptions::default()
    })
    .await;
    let mut yaml = format!(
        "{}interval: 1s\ngroups:\n",
        gse_block(
            &sim,
            "  rate_limit: { requests_per_second: 500, burst: 50 }\n"
        )
    );
    yaml.push_str(&cmdb_group_yaml(&sim, "biz-2", 2, ""));
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
    let before = exported(&parse(&scrape(exporter.addr()).await), "biz-2");
    assert!(before.len() > 100);
    (sim, exporter, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmdb_outages_keep_the_last_list_and_a_halving_is_held_back_once() {
    let (sim, exporter, before) = discovered_biz_2().await;

    sim.set_faults(Faults {
        cmdb_outage: true,
        ..Faults::default()
    });
    let during = wait_until(
        "the CMDB outage in the metrics",
        Duration::from_secs(15),
        || async {
            let all = parse(&scrape(exporter.addr()).await);
            (value(
                &all,
                "gse_exporter_discovery_success",
                &[("group", "biz-2")],
            ) == Some(0.0))
            .then_some(all)
        },
    )
    .await;
    assert_eq!(
        exported(&during, "biz-2"),
        before,
        "the last good host list is kept"
    );
    assert_eq!(
        value(&during, "gse_up", &[("group", "biz-2")]),
        Some(1.0),
        "GSE itself is fine"
    );

    sim.set_faults(Faults::default());
    sim.set_cmdb_visible_share(2, 0.5);
    let held = wait_until(
        "the shrinking listing held back",
        Duration::from_secs(15),
        || async {
            let all = parse(&scrape(exporter.addr()).await);
            (value(
                &all,
                "gse_exporter_discovery_held_back",
                &[("group", "biz-2")],
            ) == Some(1.0))
            .then_some(all)
        },
    )
    .await;
    assert_eq!(
        exported(&held, "biz-2"),
        before,
        "held back: the group keeps its hosts"
    );
    let shrunk = wait_until(
        "the confirmed shrink applied",
        Duration::from_secs(15),
        || async {
            let all = parse(&scrape(exporter.addr()).await);
            let now = exported(&all, "biz-2");
            (now.len() < before.len() * 6 / 10).then_some((all, now))
        },
    )
    .await;
    assert_eq!(
        value(
            &shrunk.0,
            "gse_exporter_discovery_held_back",
            &[("group", "biz-2")]
        ),
        Some(0.0)
    );
    assert!(shrunk.1.is_subset(&before));
    exporter.shutdown().await;
}

/// The tenants the simulator saw per endpoint ("" for none).
fn tenants(sim: &gse_sim::RunningSim, api: gse_sim::Api) -> BTreeSet<String> {
    sim.tenants()
        .into_keys()
        .filter(|(a, _)| *a == api)
        .map(|(_, t)| t)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmdb_calls_carry_the_tenant_of_gse_or_their_own() {
    use gse_sim::Api;
    for (cmdb_extra, want_cmdb) in [("", "tenant-a"), ("  tenant_id: tenant-b\n", "tenant-b")] {
        let sim = start_sim(SimOptions {
            agents: 200,
            ..SimOptions::default()
        })
        .await;
        let mut yaml = gse_block(&sim, "  tenant_id: tenant-a\n");
        yaml.push_str("interval: 1s\ngroups:\n");
        yaml.push_str(&cmdb_group_yaml(&sim, "biz-2", 2, ""));
        yaml.push_str(cmdb_extra);
        let exporter = start_exporter(parse_config(&yaml)).await;
        wait_cycles(&exporter, 1, Duration::from_secs(20)).await;
        assert_eq!(
            tenants(&sim, Api::CmdbListHosts),
            BTreeSet::from([want_cmdb.to_string()])
        );
        assert_eq!(
            tenants(&sim, Api::V2State),
            BTreeSet::from(["tenant-a".to_string()])
        );
    }
    let sim = start_sim(SimOptions::default()).await;
    let bad = format!(
        "{}interval: 1s\ngroups:\n",
        gse_block(&sim, "  tenant_id: \"a b\"\n")
    );
    let bad = bad + &cmdb_group_yaml(&sim, "biz-2", 2, "");
    let err = gse_exporter::config::Config::parse(&bad, std::path::Path::new("."))
        .expect_err("a tenant with a space");
    assert!(
        err.to_string().contains("gse.tenant_id: a b: must be"),
        "{err}"
    );
}

/// A CMDB whose every page is `answer(n, request)` for the `n`th page asked
/// (from 0); returns its address and the pages it was asked.
async fn fake_cmdb(
    answer: impl Fn(u64, serde_json::Value) -> serde_json::Value + Clone + Send + Sync + 'static,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let page = move |body: String| {
        let n = counter.fetch_add(1, Ordering::SeqCst) as u64;
        let request = serde_json::from_str(&body).unwrap_or_default();
        let reply = answer(n, request);
        async move { axum::Json(reply) }
    };
    let app = axum::Router::new().fallback(axum::routing::any(page));
    (serve(app).await, asked)
}

/// Five agents of `sim` in group `web`, and group `paged` (business 9)
/// listed from the CMDB at `cmdb` every `refresh`, a cycle a second.
fn paged_config(
    sim: &gse_sim::RunningSim,
    cmdb: std::net::SocketAddr,
    refresh: &str,
) -> gse_exporter::config::Config {
    let mut yaml = config_yaml(
        sim,
        "",
        "interval: 1s\n",
        &[GroupSpec::web(&sim.truth()[..5])],
    );
    yaml.push_str(&format!(
        "  - name: paged\n    bk_biz_id: 9\n    cmdb: {{}}\ncmdb:\n  url: http://{cmdb}\n  refresh_interval: {refresh}\n  \
         rate_limit: {{ requests_per_second: 1000, burst: 100 }}\n"
    ));
    parse_config(&yaml)
}

/// A page of hosts numbered from `first`, in the envelope, under `count`.
fn host_page(first: u64, hosts: u64, count: u64) -> serde_json::Value {
    let info: Vec<serde_json::Value> = (first..first + hosts)
        .map(|id| {
            serde_json::json!({"bk_host_id": id + 1, "bk_cloud_id": 0,
                "bk_host_innerip": format!("10.{}.{}.{}", id >> 16 & 255, id >> 8 & 255, id & 255)})
        })
        .collect();
    serde_json::json!({"result": true, "code": 0, "message": "", "data": {"count": count, "info": info}})
}

/// A CMDB that counts a billion hosts in the business and answers every
/// page full of new ones; returns its address and the pages it was asked.
async fn lying_cmdb() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    fake_cmdb(|n, request| {
        let limit = request["page"]["limit"].as_u64().unwrap_or(500);
        host_page(n * limit, limit, 1_000_000_000)
    })
    .await
}

/// A CMDB `count` past belief is refused at its first page: paging a
/// billion hosts held every group's polling (discovery runs before the
/// cycle's GSE calls) for as long as CMDB answered, growing to gigabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmdb_count_of_a_billion_is_refused_and_other_groups_go_on() {
    let sim = start_sim(SimOptions {
        agents: 20,
        ..SimOptions::default()
    })
    .await;
    let (cmdb, asked) = lying_cmdb().await;
    let mut yaml = config_yaml(
        &sim,
        "",
        "interval: 1s\n",
        &[GroupSpec::web(&sim.truth()[..5])],
    );
    yaml.push_str(&format!(
        "  - name: lying\n    bk_biz_id: 9\n    cmdb: {{}}\ncmdb:\n  url: http://{cmdb}\n  refresh_interval: 1s\n  \
         page_size: 500\n  rate_limit: {{ requests_per_second: 500, burst: 50 }}\n"
    ));
    let exporter = start_exporter(parse_config(&yaml)).await;
    wait_cycles(&exporter, 3, Duration::from_secs(20)).await;
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(value(&all, "gse_up", &[("group", "web")]), Some(1.0));
    assert_eq!(
        value(
            &all,
            "gse_exporter_discovery_success",
            &[("group", "lying")]
        ),
        Some(0.0)
    );
    let pages = asked.load(Ordering::SeqCst);
    let cycles = cycles_now(&exporter);
    assert!(
        pages <= 2 * cycles as usize,
        "{pages} pages asked over {cycles} cycles"
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cmdb_never_holds_up_asking_gse() {
    // Discovery ran inside the cycle: a CMDB slow to answer took each cycle's
    // time, GSE was not asked, and every agent went unknown with gse_up 0.
    let (sim, exporter, before) = discovered_biz_2().await;

    // Slower than cmdb.timeout (10s): every listing fails, after 10 s.
    sim.set_faults(Faults {
        cmdb_latency: Duration::from_secs(60),
        ..Faults::default()
    });
    let (cycles, asked) = (cycles_now(&exporter), sim.received());
    wait_cycles(&exporter, cycles + 4, Duration::from_secs(20)).await;
    assert!(sim.received() > asked, "GSE is still asked");
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(value(&all, "gse_up", &[("group", "biz-2")]), Some(1.0));
    assert_eq!(
        exported(&all, "biz-2"),
        before,
        "the last host list is polled"
    );
    assert_eq!(
        value(
            &all,
            "gse_agents",
            &[("group", "biz-2"), ("state", "unknown")]
        ),
        Some(0.0)
    );
    exporter.shutdown().await;
}

/// A CMDB slower than the interval but answering, a refresh due every
/// cycle: the cycle waited for it (5 s at most) out of its own time budget
/// (nine tenths of the interval), so every GSE batch failed before it was
/// sent, GSE was never asked and `gse_up` read 0, cycle after cycle, while
/// GSE was fine and CMDB counted a success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmdb_slower_than_the_interval_leaves_gse_its_time() {
    let (sim, exporter, before) = discovered_biz_2().await;
    sim.set_faults(Faults {
        cmdb_latency: Duration::from_millis(1200),
        ..Faults::default()
    });
    let failed = |all: &[Sample]| -> f64 {
        samples(all, "gse_exporter_api_requests_total")
            .iter()
            .filter(|s| s.label("result") != "success")
            .map(|s| s.value)
            .sum()
    };
    let at_start = failed(&parse(&scrape(exporter.addr()).await));
    let (cycles, asked) = (cycles_now(&exporter), sim.received());
    // Every scrape until six more cycles ended, within a deadline.
    wait_until("six cycles", Duration::from_secs(30), || async {
        let all = parse(&scrape(exporter.addr()).await);
        assert_eq!(value(&all, "gse_up", &[("group", "biz-2")]), Some(1.0));
        assert_eq!(failed(&all), at_start, "no GSE request failed");
        (cycles_now(&exporter) >= cycles + 6).then_some(())
    })
    .await;
    assert!(sim.received() >= asked + 6, "GSE asked every cycle");
    let all = parse(&scrape(exporter.addr()).await);
    assert_eq!(exported(&all, "biz-2"), before);
    exporter.shutdown().await;
}

/// A reload pointing `cmdb.url` at another CMDB lists the group there at
/// once. Before, the old CMDB's hosts stayed until `refresh_interval` (an
/// hour here) ended, and a refresh still running against the old CMDB was
/// taken in after the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_cmdb_lists_the_group_there_at_once() {
    let sims = [
        start_sim(SimOptions {
            agents: 300,
            ..SimOptions::default()
        })
        .await,
        start_sim(SimOptions {
            agents: 100,
            seed: 7,
            ..SimOptions::default()
        })
        .await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    let yaml = |cmdb: &gse_sim::RunningSim| {
        format!(
            "{}interval: 1s\ngroups:\n  - name: biz-2\n    bk_biz_id: 2\n    cmdb: {{}}\n\
             cmdb:\n  url: {}\n  refresh_interval: 1h\n",
            gse_block(&sims[0], ""),
            cmdb.cmdb_gateway_url()
        )
    };
    std::fs::write(&path, yaml(&sims[0])).unwrap();
    let exporter = start_from_file(&path).await;
    // The first CMDB lists about 120 hosts in business 2, the second 40.
    let hosts = |all: &[Sample]| value(all, "gse_exporter_group_hosts", &[("group", "biz-2")]);
    let first = wait_until(
        "the first CMDB's listing",
        Duration::from_secs(20),
        || async { hosts(&parse(&scrape(exporter.addr()).await)).filter(|n| *n > 0.0) },
    )
    .await;
    std::fs::write(&path, yaml(&sims[1])).unwrap();
    assert!(exporter.reloader().reload_now().await.is_ok());
    let second = wait_until(
        "the second CMDB's listing",
        Duration::from_secs(20),
        || async {
            hosts(&parse(&scrape(exporter.addr()).await)).filter(|n| *n > 0.0 && *n != first)
        },
    )
    .await;
    assert!(second < first / 2.0, "{first} then {second}");
    exporter.shutdown().await;
}

/// A CMDB group renamed by a reload keeps its listing: it started from
/// nothing, and while CMDB was down it stayed empty (every agent of it
/// gone from `/metrics`, its alerts silent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_cmdb_group_keeps_its_listing_while_cmdb_is_down() {
    let sim = start_sim(SimOptions {
        agents: 300,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gse.yml");
    let yaml = |name: &str| {
        format!(
            "{}interval: 1s\ngroups:\n{}",
            gse_block(&sim, ""),
            cmdb_group_yaml(&sim, name, 2, "")
        )
    };
    std::fs::write(&path, yaml("web")).unwrap();
    let exporter = start_from_file(&path).await;
    let hosts =
        |all: &[Sample], group: &str| value(all, "gse_exporter_group_hosts", &[("group", group)]);
    let listed = wait_until("the listing", Duration::from_secs(20), || async {
        hosts(&parse(&scrape(exporter.addr()).await), "web").filter(|n| *n > 0.0)
    })
    .await;
    sim.set_faults(Faults {
        cmdb_outage: true,
        ..Faults::default()
    });
    std::fs::write(&path, yaml("web-prod")).unwrap();
    assert!(exporter.reloader().reload_now().await.is_ok());
    wait_until(
        "the renamed group's hosts",
        Duration::from_secs(10),
        || async {
            let all = parse(&scrape(exporter.addr()).await);
            (hosts(&all, "web-prod") == Some(listed) && hosts(&all, "web").is_none()).then_some(())
        },
    )
    .await;
    exporter.shutdown().await;
}

/// A CMDB that counts nearly the most hosts believed and answers the same
/// full page at every offset (or one whose count grows with every page, in
/// `growing` mode); returns its address and the pages it was asked.
async fn repeating_cmdb(growing: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    fake_cmdb(move |n, request| {
        let start = request["page"]["start"].as_u64().unwrap_or(0);
        // Growing: new hosts at each offset, and always more to come.
        match growing {
            true => host_page(start, 500, 1_000 + n * 500),
            false => host_page(0, 500, 2_000_000),
        }
    })
    .await
}

/// Paging checked that it got somewhere: a CMDB answering the same page at
/// every offset under a count of two million was paged 4,000 times, every
/// row kept, and one whose count grew with each page was paged on until
/// the cap, each holding the group's discovery for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_makes_no_progress_or_grows_as_read_ends() {
    let sim = start_sim(SimOptions {
        agents: 20,
        ..SimOptions::default()
    })
    .await;
    for growing in [false, true] {
        let (cmdb, asked) = repeating_cmdb(growing).await;
        let exporter = start_exporter(paged_config(&sim, cmdb, "1h")).await;
        wait_cycles(&exporter, 2, Duration::from_secs(20)).await;
        let all = parse(&scrape(exporter.addr()).await);
        let success = value(
            &all,
            "gse_exporter_discovery_success",
            &[("group", "paged")],
        );
        let hosts = value(&all, "gse_exporter_group_hosts", &[("group", "paged")]);
        let pages = asked.load(Ordering::SeqCst);
        let cycles = cycles_now(&exporter) as usize;
        exporter.shutdown().await;
        if growing {
            // The first page's count (1,000) bounds the listing: two pages.
            assert_eq!((success, hosts, pages), (Some(1.0), Some(1_000.0), 2));
        } else {
            assert_eq!(success, Some(0.0), "a listing going nowhere fails");
            // Tried again each cycle, each time ending at the first repeat.
            assert!(
                pages <= 2 * (cycles + 1),
                "{pages} pages over {cycles} cycles"
            );
        }
    }
}

/// A listing that ends (an empty page) before the count CMDB gives on that
/// same page is cut short, not the business: it fails and the last list is
/// kept. Before, the first 500 of 520 hosts were taken as the business (a
/// loss too small for `max_shrink` to hold back), and the other 20 dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_cut_short_of_its_own_count_keeps_the_last_list() {
    let sim = start_sim(SimOptions {
        agents: 20,
        ..SimOptions::default()
    })
    .await;
    let whole = Arc::new(AtomicUsize::new(0));
    let (cmdb, _) = fake_cmdb({
        let whole = whole.clone();
        move |_, request| match request["page"]["start"].as_u64().unwrap_or(0) {
            0 => host_page(0, 500, 520),
            // The rest once; later refreshes find nothing past 500, though
            // each page still counts 520.
            _ if whole.fetch_add(1, Ordering::SeqCst) == 0 => host_page(500, 20, 520),
            _ => host_page(500, 0, 520),
        }
    })
    .await;
    let exporter = start_exporter(paged_config(&sim, cmdb, "1s")).await;
    let listing = |all: &[Sample]| {
        (
            value(all, "gse_exporter_discovery_success", &[("group", "paged")]),
            value(all, "gse_exporter_group_hosts", &[("group", "paged")]),
        )
    };
    wait_until("the whole listing", Duration::from_secs(20), || async {
        let all = parse(&scrape(exporter.addr()).await);
        (listing(&all) == (Some(1.0), Some(520.0))).then_some(())
    })
    .await;
    wait_until(
        "a listing cut short to fail",
        Duration::from_secs(20),
        || async {
            let all = parse(&scrape(exporter.addr()).await);
            let (success, hosts) = listing(&all);
            assert_eq!(hosts, Some(520.0), "the last list is kept");
            (success == Some(0.0)).then_some(())
        },
    )
    .await;
    exporter.shutdown().await;
}
