//! Every configuration the project ships, run as a user would run it: each
//! exporter config under `deploy/`, and each complete config in the README and
//! `docs/`, passes `gse_exporter --config.check` with its secret from the
//! environment; the deploy configs, pointed at the simulator instead of their
//! placeholder hosts, give a running exporter that reaches GSE for every
//! group; and the sizing comments of the manifests agree with
//! `docs/performance.md`. The pages' commands run as written too: the
//! simulator page, the README's systemd install and `query` lines,
//! `docs/query.md`, the BlueKing page's secret file and first-run
//! checklist, and the runbook's common checks, against the simulator (and
//! system paths moved into a scratch root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gse_sim::SimOptions;

use crate::common::binary::Binary;
use crate::common::*;

/// The value the simulator accepts, given to every example as `BK_APP_SECRET`.
const SECRET: &str = "sim-secret";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Exporter configs under `deploy/`: YAML files with a top-level `gse:` block.
fn deploy_configs() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml")
                && std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .any(|l| l.starts_with("gse:"))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Complete exporter configs in the README and `docs/`, each with the files
/// it names that the same page shows (a `text` block whose first line is
/// `# NAME...`), written into a folder of its own.
fn documented_configs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut pages = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    let mut found = Vec::new();
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        for (i, yaml) in blocks(&text, "yaml").into_iter().enumerate() {
            let complete = yaml.lines().any(|l| l.starts_with("gse:"))
                && yaml.lines().any(|l| l.starts_with("groups:"));
            if !complete {
                continue;
            }
            let folder = dir.join(format!("{}-{i}", name.replace('/', "_")));
            std::fs::create_dir_all(&folder).unwrap();
            for file in blocks(&text, "text") {
                let first = file.lines().next().unwrap_or_default();
                if let Some(named) = first.strip_prefix("# ").and_then(|l| l.split(':').next()) {
                    std::fs::write(folder.join(named.trim()), file).unwrap();
                }
            }
            let config = folder.join("gse.yml");
            std::fs::write(&config, yaml).unwrap();
            found.push((format!("{name} block {i}"), config));
        }
    }
    found
}

fn config_check(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .arg("--config.check")
        .arg(format!("--config.file={}", config.display()))
        .env("BK_APP_SECRET", SECRET)
        .output()
        .expect("the binary runs");
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), printed)
}

#[test]
fn every_shipped_config_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs: Vec<(String, PathBuf)> = deploy_configs()
        .into_iter()
        .map(|p| (p.strip_prefix(root()).unwrap().display().to_string(), p))
        .collect();
    let deployed = configs.len();
    configs.extend(documented_configs(dir.path()));
    assert!(deployed >= 3, "deploy configs found: {configs:?}");
    assert!(
        configs.len() > deployed + 1,
        "documented configs found: {configs:?}"
    );
    let failed: Vec<String> = configs
        .iter()
        .filter_map(|(name, path)| {
            let (ok, printed) = config_check(path);
            (!ok).then(|| format!("{name}:\n{printed}"))
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A deploy config with its placeholder upstreams replaced by the simulator.
fn against(sim: &gse_sim::RunningSim, config: &Path, dir: &Path) -> PathBuf {
    let name = config.strip_prefix(root()).unwrap().display().to_string();
    let path = dir.join(name.replace('/', "_"));
    point_at(sim, config, &path);
    path
}

/// Writes `config` to `to` with its placeholder upstreams replaced by the
/// simulator, as a user edits the example to name their GSE.
fn point_at(sim: &gse_sim::RunningSim, config: &Path, to: &Path) {
    let local = format!("{}://{}", sim.scheme(), sim.addr());
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace("https://bkapi.example.com", &local)
        .replace("https://paas.example.com", &local)
        .replace("http://simulator:8080", &local);
    assert!(
        !text.contains("example.com") && !text.contains("simulator:"),
        "{}: an upstream the test does not know how to point at the simulator",
        config.display()
    );
    std::fs::write(to, text).unwrap();
}

/// Waits until the exporter at `addr` has asked GSE for every group, and
/// fails unless every group's `gse_up` is 1.
async fn every_group_up(exporter: &Binary, what: &str) {
    let addr = exporter.addr.parse().unwrap();
    let ups = wait_until(
        &format!("{what}: gse_up for every group"),
        Duration::from_secs(30),
        || async move {
            let all = parse(&scrape(addr).await);
            let ups: Vec<(String, f64)> = samples(&all, "gse_up")
                .iter()
                .map(|s| (s.label("group").to_string(), s.value))
                .collect();
            (!ups.is_empty()).then_some(ups)
        },
    )
    .await;
    assert!(
        ups.iter().all(|(_, v)| *v == 1.0),
        "{what}: {ups:?}\n{}",
        exporter.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_configs_reach_gse_for_every_group() {
    let sim = start_sim(SimOptions {
        agents: 300,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    for config in deploy_configs() {
        let path = against(&sim, &config, dir.path());
        let args = vec![format!("--config.file={}", path.display())];
        let exporter = Binary::start(&args, &[("BK_APP_SECRET", SECRET)]).await;
        every_group_up(&exporter, &config.display().to_string()).await;
        let (status, _, _) = exporter.stop();
        assert!(status.success(), "{}", config.display());
    }
}

/// `# sizing: 100,000 agents, per-agent on: steady 137 MiB, peak 225 MiB`
fn sizing_comment(line: &str) -> Option<(String, String, u32, u32)> {
    let rest = line.trim().strip_prefix("# sizing: ")?;
    let (agents, rest) = rest.split_once(" agents, per-agent ")?;
    let (mode, rest) = rest.split_once(": steady ")?;
    let (steady, rest) = rest.split_once(" MiB, peak ")?;
    let peak = rest.strip_suffix(" MiB")?;
    Some((
        agents.to_string(),
        mode.to_string(),
        steady.parse().ok()?,
        peak.parse().ok()?,
    ))
}

/// Rows of the "Sizing" table of docs/performance.md.
fn sizing_table() -> Vec<(String, String, u32, u32)> {
    let doc = std::fs::read_to_string(root().join("docs/performance.md")).unwrap();
    let section = doc
        .split("## Sizing")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/performance.md has a Sizing section");
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() != 6 {
                return None;
            }
            Some((
                cells[1].to_string(),
                cells[2].to_string(),
                cells[3].parse().ok()?,
                cells[4].parse().ok()?,
            ))
        })
        .collect()
}

fn mebibytes(manifest: &str, key: &str) -> u32 {
    let at = manifest
        .find(&format!("{key}:"))
        .unwrap_or_else(|| panic!("no {key}:"));
    let block = &manifest[at..];
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with("memory:"))
        .expect("a memory value");
    let value = line.trim().trim_start_matches("memory:").trim();
    value
        .strip_suffix("Mi")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("memory in Mi: {value}"))
}

#[test]
fn sizing_comments_match_docs_performance() {
    let table = sizing_table();
    assert!(table.len() >= 3, "Sizing rows: {table:?}");
    let manifests = [
        "deploy/kubernetes/base/deployment.yaml",
        "deploy/kubernetes/overlays/sharded/statefulset.yaml",
    ];
    for name in manifests {
        let text = std::fs::read_to_string(root().join(name)).unwrap();
        let comments: Vec<_> = text.lines().filter_map(sizing_comment).collect();
        assert_eq!(comments.len(), 1, "{name}: one `# sizing:` line");
        let (agents, mode, steady, peak) = comments[0].clone();
        assert!(
            table.contains(&comments[0]),
            "{name}: {agents} agents per-agent {mode} {steady}/{peak} MiB is not a row of docs/performance.md's Sizing table {table:?}"
        );
        let request = mebibytes(&text, "requests");
        let limit = mebibytes(&text, "limits");
        assert!(
            request >= steady,
            "{name}: request {request}Mi < steady {steady} MiB"
        );
        assert!(limit >= peak, "{name}: limit {limit}Mi < peak {peak} MiB");
        assert!(
            !text.contains("323 MiB") && !text.contains("79 MiB"),
            "{name}: an old figure"
        );
    }
    assert!(sizing_comment("# sizing: 1 agents, per-agent on: steady 2 MiB, peak 3 MiB").is_some());
    assert!(sizing_comment("# sizing: about 1 agents").is_none());
}

/// A child process killed when dropped (a test that fails leaves none).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The simulator page run as a user would, in a folder of its own: its
/// first command starts the simulator (on a port of its own), the hosts file
/// it writes begins as the page shows, the page's configuration polls it
/// (`query` answers, and not with an error), and every other command of its
/// `sh` blocks succeeds against it (`curl -sf` fails on the 400 a body the
/// simulator does not understand gets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_page_runs_as_written() {
    use std::io::BufRead;
    const DOCUMENTED: &str = "127.0.0.1:8080";
    let page = std::fs::read_to_string(root().join("docs/simulator.md")).unwrap();
    let commands: Vec<&str> = blocks(&page, "sh")
        .into_iter()
        .flat_map(str::lines)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = commands[0]
        .strip_prefix("gse_exporter ")
        .expect("the page starts the simulator first");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .args(
            start
                .split_whitespace()
                .map(|a| a.replace(DOCUMENTED, "127.0.0.1:0")),
        )
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the simulator starts");
    let stderr = child.stderr.take().unwrap();
    let _sim = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("GSE simulator listening") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="));
                let _ = tx.send(addr.unwrap_or_default().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the simulator's address");

    let written = dir.path().join("sim.hosts");
    let hosts = wait_until("the hosts file written", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&written).unwrap_or_default();
        async move { (text.lines().count() == 2000).then_some(text) }
    })
    .await;
    let shown = blocks(&page, "text")
        .into_iter()
        .find(|b| b.starts_with("# sim.hosts"))
        .expect("the page shows the hosts file");
    let shown: Vec<&str> = shown.lines().skip(1).collect();
    assert_eq!(hosts.lines().take(shown.len()).collect::<Vec<_>>(), shown);

    let config = blocks(&page, "yaml")[0].replace(DOCUMENTED, &addr);
    std::fs::write(dir.path().join("gse.yml"), config).unwrap();
    let query = Command::new(env!("CARGO_BIN_EXE_gse_exporter"))
        .args(["query", "--config.file=gse.yml", "-o", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&query.stdout).unwrap_or_default();
    let in_group = |name: &str| rows.iter().filter(|r| r["group"] == name).count();
    // Some agents of the fleet are offline (exit 1), none is an error (2).
    assert!(
        matches!(query.status.code(), Some(0 | 1))
            && in_group("sim-file") == 2000
            && in_group("sim-cmdb") >= 800,
        "{:?}, {} and {} agents: {}",
        query.status,
        in_group("sim-file"),
        in_group("sim-cmdb"),
        String::from_utf8_lossy(&query.stderr)
    );

    for command in &commands[1..] {
        bash(&command.replace(DOCUMENTED, &addr), dir.path(), &[], &[0]);
    }
}

/// The first block in `language` after a heading of a page.
fn block_under(page: &str, heading: &str, language: &str) -> String {
    let text = std::fs::read_to_string(root().join(page)).unwrap();
    let section = text
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("{page} has no `{heading}`"));
    blocks(section, language)[0].to_string()
}

/// Runs a documented shell line with the system's paths moved under
/// `scratch` (the binary the page builds is this test's), from the
/// repository's root as the page assumes; fails on a non-zero exit.
fn run_in_scratch(line: &str, scratch: &Path) {
    let moved = format!(" {}/", scratch.display());
    let line = line
        .replace(
            "target/release/gse_exporter",
            env!("CARGO_BIN_EXE_gse_exporter"),
        )
        .replace(" /usr/", &format!("{moved}usr/"))
        .replace(" /etc/", &format!("{moved}etc/"));
    bash(&line, root(), &[], &[0]);
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The `KEY=VALUE` lines of an environment file, as systemd reads one.
fn environment_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The README's systemd lines, which the unit's header repeats, run as
/// written in a scratch root standing for `/`: the binary, the example
/// configuration and environment file and the unit are installed with the
/// modes the unit relies on (the secret's file readable by root alone);
/// then, as the page says, the two files are edited (GSE's address, the
/// secret), and the installed unit's `ExecStart=` runs with its
/// `EnvironmentFile=` as systemd would, its listen address moved to port 0:
/// it reaches GSE for every group. The last line, systemctl's, is the one
/// not run (there is no systemd here); it is checked to be what it must be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_install_runs_as_written() {
    let lines = command_lines(&block_under("README.md", "## Other ways to run", "sh"));
    let unit = std::fs::read_to_string(root().join("deploy/systemd/gse_exporter.service")).unwrap();
    let header: Vec<String> = unit
        .lines()
        .skip_while(|l| !l.starts_with("# Install"))
        .skip(1)
        .map_while(|l| l.strip_prefix("#   "))
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines, header,
        "the README and the unit's header install alike"
    );
    let (enable, install) = lines.split_last().unwrap();
    assert_eq!(
        enable,
        "systemctl daemon-reload && systemctl enable --now gse_exporter"
    );

    let scratch = tempfile::tempdir().unwrap();
    let under = |path: &str| scratch.path().join(path.trim_start_matches('/'));
    for system_dir in ["/usr/local/bin", "/etc/systemd/system"] {
        std::fs::create_dir_all(under(system_dir)).unwrap();
    }
    for line in install {
        run_in_scratch(line, scratch.path());
    }
    let binary = under("/usr/local/bin/gse_exporter");
    let config = under("/etc/gse_exporter/gse.yml");
    let secrets = under("/etc/gse_exporter/gse_exporter.env");
    let installed = under("/etc/systemd/system/gse_exporter.service");
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(mode(&config), 0o644);
    assert_eq!(mode(&secrets), 0o600, "the secret's file is root's alone");
    assert_eq!(mode(&installed), 0o644);

    let sim = start_sim(SimOptions {
        agents: 300,
        ..SimOptions::default()
    })
    .await;
    point_at(&sim, &config.clone(), &config);
    let edited = std::fs::read_to_string(&secrets)
        .unwrap()
        .replace("replace-with-the-blueking-app-secret", SECRET);
    std::fs::write(&secrets, edited).unwrap();

    let unit = std::fs::read_to_string(&installed).unwrap();
    let directive = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("the unit has no {key}"))
            .to_string()
    };
    let exec = directive("ExecStart=");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/gse_exporter"));
    let args: Vec<String> = words
        .map(|w| match w {
            "--web.listen-address=:10909" => "--web.listen-address=127.0.0.1:0".to_string(),
            w => w.replace("=/etc/", &format!("={}/etc/", scratch.path().display())),
        })
        .collect();
    let environment = directive("EnvironmentFile=");
    let environment = under(environment.trim_start_matches('-'));
    assert_eq!(environment, secrets, "the unit reads the file installed");
    let mut command = Command::new(&binary);
    command
        .args(&args)
        .env_clear()
        .envs(environment_file(&environment));
    let exporter = Binary::spawn(command).await;
    every_group_up(&exporter, "the installed unit").await;
    let (status, logs, _) = exporter.stop();
    assert!(status.success(), "{logs}");
}

/// The BlueKing page's lines that make the secret's environment file run
/// as written on a machine with no `/etc/gse_exporter` yet (a scratch root
/// standing for `/`), and leave it readable by root alone with the line the
/// configuration reads.
#[test]
fn the_blueking_secret_file_lines_run_as_written() {
    let scratch = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(scratch.path().join("etc")).unwrap();
    let block = block_under("docs/blueking.md", "## An app code and secret", "sh");
    for line in command_lines(&block) {
        run_in_scratch(&line, scratch.path());
    }
    let file = scratch.path().join("etc/gse_exporter/gse_exporter.env");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(
        environment_file(&file),
        [("BK_APP_SECRET".to_string(), "...".to_string())]
    );
}

/// A folder for a page's commands: `gse_exporter` on its `PATH` is this
/// test's binary (the pages assume it is installed), and `gse.yml` is the
/// page's configuration pointed at the simulator.
struct Shell {
    dir: tempfile::TempDir,
    path: String,
}

impl Shell {
    fn new(sim: &gse_sim::RunningSim, config: &str) -> Shell {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gse_exporter"), bin.join("gse_exporter"))
            .unwrap();
        let written = dir.path().join("page.yml");
        std::fs::write(&written, config).unwrap();
        point_at(sim, &written, &dir.path().join("gse.yml"));
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Shell { dir, path }
    }

    /// Runs `script` with bash (`-e`, `pipefail`) in the folder, with the
    /// secret and `envs`; fails unless it exits with one of `codes`.
    /// Returns its standard output.
    fn run(&self, script: &str, envs: &[(&str, String)], codes: &[i32]) -> String {
        let mut all = vec![
            ("PATH", self.path.clone()),
            ("BK_APP_SECRET", SECRET.to_string()),
        ];
        all.extend(envs.iter().cloned());
        bash(script, self.dir.path(), &all, codes)
    }
}

/// `query` exits 0 when every agent asked for is online, 1 when some is
/// not (the simulator's fleet has offline agents, and hosts it does not
/// know), 2 on an error: a page's `query` line must not end in 2.
const QUERY_ANSWERED: &[i32] = &[0, 1];

/// Every `query` line of the README, `docs/query.md` and the BlueKing
/// page's first-run checklist, run as written against the simulator with
/// the configuration the page shows: each is answered (exit 0 or 1, never
/// 2) and prints what it says it prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_lines_of_the_pages_run_as_written() {
    let sim = start_sim(SimOptions::default()).await;
    let readme = Shell::new(
        &sim,
        &block_under("README.md", "## Running against GSE", "yaml"),
    );
    let mut lines = command_lines(&block_under(
        "README.md",
        "## Asking once from a shell",
        "sh",
    ));
    lines.extend(command_lines(&block_under(
        "docs/query.md",
        "# `gse_exporter query`",
        "sh",
    )));
    assert!(lines.len() >= 8, "{lines:?}");
    for line in &lines {
        assert!(line.starts_with("gse_exporter query "), "{line}");
        let printed = readme.run(line, &[], QUERY_ANSWERED);
        let written = readme.dir.path().join("down.csv");
        assert!(
            !printed.trim().is_empty() || written.exists(),
            "{line} printed nothing"
        );
    }
    let csv = std::fs::read_to_string(readme.dir.path().join("down.csv")).unwrap();
    assert!(csv.lines().count() > 1, "down.csv: {csv}");

    let blueking = Shell::new(
        &sim,
        &block_under("docs/blueking.md", "## ESB or API gateway", "yaml"),
    );
    let checklist = "## First-run checklist";
    let check = command_lines(&block_under("docs/blueking.md", checklist, "sh"));
    assert_eq!(check.len(), 2, "{check:?}");
    for line in &check {
        blueking.run(line, &[], &[0]);
    }
    let section = std::fs::read_to_string(root().join("docs/blueking.md")).unwrap();
    let section = section.split(checklist).nth(1).unwrap();
    let queries = command_lines(blocks(section, "sh")[1]);
    for line in &queries {
        assert!(line.starts_with("gse_exporter query "), "{line}");
        let printed = blueking.run(line, &[], QUERY_ANSWERED);
        assert!(!printed.trim().is_empty(), "{line} printed nothing");
    }
    let cmdb_rows = blueking.run(&queries[1], &[], QUERY_ANSWERED);
    assert!(cmdb_rows.lines().count() > 100, "biz-5 listed: {cmdb_rows}");
}

/// The runbook's common checks, run as one script as written: against an
/// exporter started on the README's configuration and the simulator, with
/// the variables the page names set. Each `grep` finds its lines (or the
/// script fails), and GSE answers both direct calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbook_common_checks_run_as_written() {
    let sim = start_sim(SimOptions::default()).await;
    let shell = Shell::new(
        &sim,
        &block_under("README.md", "## Running against GSE", "yaml"),
    );
    let config = shell.dir.path().join("gse.yml");
    let exporter = Binary::start(
        &[format!("--config.file={}", config.display())],
        &[("BK_APP_SECRET", SECRET)],
    )
    .await;
    every_group_up(&exporter, "the README's configuration").await;
    let script = block_under("docs/runbook.md", "Common checks:", "sh");
    let printed = shell.run(
        &script,
        &[
            ("EXPORTER", format!("http://{}", exporter.addr)),
            ("GSE_URL", sim.v2_url()),
            ("PAAS_URL", format!("{}://{}", sim.scheme(), sim.addr())),
            ("APP_CODE", "gse-exporter".to_string()),
            ("APP_SECRET", SECRET.to_string()),
        ],
        &[0],
    );
    for shown in [
        "gse_agent_online{",
        "gse_up{",
        "\"status_code\":",
        "\"bk_agent_alive\":",
    ] {
        assert!(printed.contains(shown), "no {shown} in:\n{printed}");
    }
}

/// The completion and man page lines of `docs/query.md`, run as written
/// in a scratch root standing for `/` (and a home of its own): every file
/// they write is there and not empty. zsh's `$fpath[1]` (its first
/// element) is bash's `${fpath[1]}` given an element before it.
#[test]
fn the_completion_and_man_lines_run_as_written() {
    let heading = "## Shell completions and the man page";
    let lines = command_lines(&block_under("docs/query.md", heading, "sh"));
    let scratch = tempfile::tempdir().unwrap();
    let under = |p: &str| scratch.path().join(p.trim_start_matches('/'));
    for dir in [
        "/etc/bash_completion.d",
        "/usr/local/share/man/man1",
        "/home/.config/fish/completions",
        "/zsh/functions",
    ] {
        std::fs::create_dir_all(under(dir)).unwrap();
    }
    let prelude = format!(
        "export HOME={}; fpath=(unused {}); PATH={}:$PATH\n",
        under("/home").display(),
        under("/zsh/functions").display(),
        Path::new(env!("CARGO_BIN_EXE_gse_exporter"))
            .parent()
            .unwrap()
            .display()
    );
    for line in &lines {
        run_in_scratch(&format!("{prelude}{line}"), scratch.path());
    }
    for written in [
        "/etc/bash_completion.d/gse_exporter",
        "/zsh/functions/_gse_exporter",
        "/home/.config/fish/completions/gse_exporter.fish",
        "/usr/local/share/man/man1/gse_exporter.1",
        "/usr/local/share/man/man1/gse_exporter-query.1",
        "/usr/local/share/man/man1/gse_exporter-node.1",
    ] {
        let size = std::fs::metadata(under(written)).map_or(0, |m| m.len());
        assert!(size > 0, "{written}: {size} bytes");
    }
}

/// The web page's example run as written: its web configuration serves the
/// exporter (TLS, a verified client certificate, basic auth, the rate
/// limit, the headers), and a real Prometheus given the page's scrape job
/// scrapes it. The files the page names are made at test time (a server
/// certificate, a client CA and a client certificate naming one of the
/// allowed SANs, the password file); the page's bcrypt hash, checked by
/// `--config.check` as written, is then swapped for one of the password
/// the test knows, since the page's password is not written anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_page_example_is_scraped_by_the_page_s_job() {
    use crate::common::stack::Prometheus;
    use crate::common::tls::TestCa;
    const PASSWORD: &str = "the-scraper's-password";
    let page = std::fs::read_to_string(root().join("docs/web.md")).unwrap();
    let [web, job] = blocks(&page, "yaml")[..] else {
        panic!("docs/web.md shows a web configuration and a scrape job");
    };
    let server_ca = TestCa::new("server");
    let server = server_ca.server(&["127.0.0.1"]);
    let clients_ca = TestCa::new("clients");
    let client = clients_ca.client(&["prometheus-0.monitoring.svc"]);
    let sim = start_sim(SimOptions::default()).await;
    let shell = Shell::new(
        &sim,
        &block_under("README.md", "## Running against GSE", "yaml"),
    );
    let dir = shell.dir.path();
    // The files the page names, and where the test made them.
    let made = [
        ("/etc/gse_exporter/tls/server.crt", server.cert_file.clone()),
        ("/etc/gse_exporter/tls/server.key", server.key_file.clone()),
        (
            "/etc/gse_exporter/tls/clients-ca.crt",
            clients_ca.cert_file.clone(),
        ),
        (
            "/etc/prometheus/gse-exporter-ca.crt",
            server_ca.cert_file.clone(),
        ),
        ("/etc/prometheus/client.crt", client.cert_file.clone()),
        ("/etc/prometheus/client.key", client.key_file.clone()),
        (
            "/etc/prometheus/gse-exporter.password",
            dir.join("password"),
        ),
    ];
    let files = |text: &str| {
        made.iter().fold(text.to_string(), |text, (named, path)| {
            text.replace(named, &path.display().to_string())
        })
    };
    let as_written = dir.join("web-as-written.yml");
    std::fs::write(&as_written, files(web)).unwrap();
    shell.run(
        "gse_exporter --config.check --config.file=gse.yml --web.config.file=web-as-written.yml",
        &[],
        &[0],
    );
    let page_hash = web
        .lines()
        .find_map(|l| l.trim().strip_prefix("prometheus: "))
        .expect("the page's user");
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let served = dir.join("web.yml");
    std::fs::write(&served, files(web).replace(page_hash, &hash)).unwrap();
    std::fs::write(dir.join("password"), PASSWORD).unwrap();
    let exporter = Binary::start(
        &[
            format!("--config.file={}", dir.join("gse.yml").display()),
            format!("--web.config.file={}", served.display()),
        ],
        &[("BK_APP_SECRET", SECRET)],
    )
    .await;

    let scrape_configs = format!(
        "global: {{ scrape_interval: 1s, scrape_timeout: 1s }}\nscrape_configs:\n{}    static_configs:\n      - targets: [\"{}\"]\n",
        files(job),
        exporter.addr
    );
    let prometheus = Prometheus::start(&scrape_configs, dir).await;
    wait_until(
        "Prometheus to scrape the exporter with the page's job",
        Duration::from_secs(30),
        || async {
            let up = prometheus.count(r#"up{job="gse_exporter"} == 1"#).await;
            let polled = prometheus.count(r#"gse_up{job="gse_exporter"} == 1"#).await;
            (up == 1 && polled == 1).then_some(())
        },
    )
    .await;
}
