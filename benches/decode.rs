//! Decode benchmark: GSE 2.0 `list_agent_state` and `list_agent_info`
//! replies of one batch (1,000 agents, the fleet benchmark's batch size),
//! shaped like the simulator's (every field it sends, ~450 bytes an info
//! item), decoded as the poller decodes them.
//!
//! `cargo bench --bench decode` (add `-- 200` for the number of replies
//! timed per call; 100 by default). Prints the median of several runs per call, per item;
//! no timing assertions.

use gse_exporter::model::Key;
use std::time::{Duration, Instant};

use gse_exporter::upstream::gse::decode;

const AGENTS: usize = 1000;

fn agent_id(n: usize) -> String {
    format!("0100{:028x}", n as u128 * 0x9e37_79b9_7f4a_7c15)
}

/// One reply's body (info or state items) and the keys it was asked for.
fn reply(info: bool) -> (Vec<u8>, Vec<Key>) {
    let keys: Vec<Key> = (0..AGENTS).map(|n| Key::new(&agent_id(n))).collect();
    let items: Vec<String> = (0..AGENTS)
        .map(|n| {
            let (code, status) = if n % 15 == 0 { (3, "abnormal") } else { (2, "running") };
            let mut item = format!(
                r#"{{"bk_agent_id":"{}","bk_cloud_id":{},"report_time":{},"run_mode":1,"status_code":{code},"version":"2.1.{}""#,
                agent_id(n),
                n % 3,
                1_764_000_000_000u64 + n as u64 * 37,
                n % 4
            );
            if info {
                item += &format!(
                    r#","bk_cpu_architecture":"x86","bk_host_ip":"10.{}.{}.{}","bk_os_type":"linux","conn_cycle_time":"30","cpu_rate":{}.{},"last_status":"{status}","last_status_code":{code},"mem_rate":{}.{},"parent_ip":"10.255.0.{}","parent_port":28668,"remark":"","start_time":{},"status":"{status}""#,
                    n >> 16 & 255,
                    n >> 8 & 255,
                    n & 255,
                    n % 40,
                    n % 100,
                    n % 90,
                    n % 7 * 13,
                    n % 8 + 1,
                    1_763_000_000 + n * 11
                );
            }
            item.push('}');
            item
        })
        .collect();
    let body = format!(
        r#"{{"code":0,"result":true,"message":"success","request_id":"0123456789abcdef","data":[{}]}}"#,
        items.join(",")
    );
    (body.into_bytes(), keys)
}

/// The median of `runs` timings of `times` decodes of `body`, per item.
fn median_per_item(runs: usize, times: usize, mut decode_once: impl FnMut()) -> Duration {
    let mut took: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..times {
                decode_once();
            }
            started.elapsed() / (times * AGENTS) as u32
        })
        .collect();
    took.sort();
    took[runs / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs this without `--bench`: one decode of
    // each proves it still works without spending the test run on it.
    let times: usize = match args.iter().find_map(|a| a.parse().ok()) {
        Some(times) => times,
        None if args.iter().any(|a| a == "--bench") => 100,
        None => 1,
    };
    let (info, info_keys) = reply(true);
    let (state, state_keys) = reply(false);
    let info_took = median_per_item(7, times, || {
        let reply = decode::v2_info(&info, &info_keys).expect("an info reply");
        assert_eq!(reply.answers.len(), AGENTS);
    });
    let state_took = median_per_item(7, times, || {
        let reply = decode::v2_state(&state, &state_keys).expect("a state reply");
        assert_eq!(reply.answers.len(), AGENTS);
    });
    println!(
        "list_agent_info:  {:>6.0} ns an item ({} bytes an item)",
        info_took.as_nanos(),
        info.len() / AGENTS
    );
    println!(
        "list_agent_state: {:>6.0} ns an item ({} bytes an item)",
        state_took.as_nanos(),
        state.len() / AGENTS
    );
}
