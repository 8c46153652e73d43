//! The binary as users run it: the README's demo command, `--config.check`
//! on good and broken files, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::binary::run_to_end;
use crate::common::*;

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gse_exporter"));
    cmd.env_remove("GSE_EXPORTER_CONFIG");
    cmd
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

#[test]
fn config_check_accepts_the_good_file() {
    let out = binary()
        .args(["--config.check", "--config.file"])
        .arg(fixtures().join("good.yml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "good.yml rejected: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK (2 groups, 4 hosts)"), "{stdout}");
    assert!(
        !stdout.contains("not-a-real-secret"),
        "the secret is never printed"
    );
}

#[test]
fn config_check_names_key_value_and_rule_for_every_broken_fixture() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("invalid-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name} lacks its '# expect: ' line"));
        let out = binary()
            .args(["--config.check", "--config.file"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name} must fail --config.check; printed: {stdout}"
        );
        assert!(
            stdout.contains(expected),
            "{name}: expected {expected:?} in:\n{stdout}"
        );
        assert!(
            !stdout.contains("s3cret"),
            "{name}: the secret is never printed"
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} broken fixtures found");
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_command_fills_metrics_and_stops_on_sigterm() {
    let child = binary()
        .args([
            "--demo",
            "--demo.agents=600",
            "--web.listen-address=127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let stdout = running.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") && w.ends_with("/metrics"))
        .unwrap_or_else(|| panic!("no metrics URL in {line:?}"))
        .to_string();
    let agents = wait_until("demo agents on /metrics", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
            let all = parse(&body);
            let online = samples(&all, "gse_agent_online").len();
            (online == 600).then_some(all)
        }
    })
    .await;
    let groups: std::collections::BTreeSet<&str> = samples(&agents, "gse_up")
        .iter()
        .map(|s| s.label("group"))
        .collect();
    assert_eq!(groups.len(), 3, "three demo groups: {groups:?}");

    let pid = running.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || running.0.wait());
    let status = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(status.success(), "exits cleanly on SIGTERM: {status:?}");
}

/// Every command, with the arguments that reach it (`[]`, `["query"]`, …).
fn commands(root: &clap::Command) -> Vec<(Vec<String>, &clap::Command)> {
    let mut out = vec![(Vec::new(), root)];
    for sub in root.get_subcommands() {
        for (mut path, command) in commands(sub) {
            path.insert(0, sub.get_name().to_string());
            out.push((path, command));
        }
    }
    out
}

#[test]
fn help_names_every_flags_environment_variable_and_default() {
    use clap::CommandFactory;
    let root = gse_exporter::cli::Cli::command();
    let mut flags = 0;
    for (path, command) in commands(&root) {
        let out = binary().args(&path).arg("--help").output().unwrap();
        assert!(out.status.success(), "{path:?} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue; // positionals
            };
            if matches!(long, "help" | "version") {
                continue;
            }
            let flag = format!("{path:?} --{long}");
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("{flag} has no environment variable"));
            let env = env.to_string_lossy();
            assert!(
                help.contains(&format!("[env: {env}")),
                "{flag}: [env: {env}] not in:\n{help}"
            );
            if arg.get_action().takes_values() {
                let defaults: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                let doc = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if defaults.is_empty() {
                    assert!(
                        doc.contains("default:"),
                        "{flag}: its help must say what happens without it: {doc}"
                    );
                } else if !arg.is_hide_default_value_set() {
                    let shown = format!("[default: {}]", defaults.join(", "));
                    assert!(help.contains(&shown), "{flag}: {shown} not in:\n{help}");
                }
            }
            flags += 1;
        }
    }
    assert!(flags >= 25, "only {flags} flags checked");
}

#[test]
fn boolean_flags_read_their_environment_variable() {
    let out = binary()
        .arg("--config.file")
        .arg(fixtures().join("good.yml"))
        .env("GSE_EXPORTER_CONFIG_CHECK", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK (2 groups, 4 hosts)"), "{stdout}");
}

/// `git rev-parse` in the checkout the tests run from, when git is there.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[test]
fn version_names_revision_branch_build_date_and_toolchain() {
    let out = binary().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "gse_exporter {} (branch: ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    for part in [
        "revision: ",
        "build date:",
        "rust version:     rustc ",
        "platform:",
    ] {
        assert!(text.contains(part), "{part:?} missing in:\n{text}");
    }
    if let Some(head) = git(&["rev-parse", "HEAD"]) {
        assert!(text.contains(&format!("revision: {head})")), "{text}");
    }
    let date = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("build date:"))
        .unwrap()
        .trim();
    assert!(
        date.len() == 17
            && date.as_bytes()[8] == b'-'
            && date[..8].bytes().all(|b| b.is_ascii_digit()),
        "build date {date:?} is not YYYYMMDD-HH:MM:SS"
    );
}

/// `man --dir` writes over what is in a page's place without opening it: a
/// FIFO there made it wait for a reader for ever, and a symlink sent the
/// page wherever it pointed.
#[test]
fn man_dir_replaces_a_fifo_or_a_symlink_and_refuses_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("gse_exporter.1");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    let link = dir.path().join("gse_exporter-man.1");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let at = format!("--dir={}", dir.path().display());
    let (status, _, stderr) = run_to_end(&["man", &at], Duration::from_secs(30));
    assert!(status.success(), "{stderr}");
    for page in [&fifo, &link] {
        let meta = std::fs::symlink_metadata(page).unwrap();
        assert!(meta.file_type().is_file(), "{page:?} replaced by the page");
        let text = std::fs::read_to_string(page).unwrap();
        assert!(text.contains(".TH gse_exporter"), "{text}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");

    let taken = dir.path().join("gse_exporter-query.1");
    std::fs::remove_file(&taken).unwrap();
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("inside"), "x").unwrap();
    let (status, _, stderr) = run_to_end(&["man", &at], Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        stderr.contains("gse_exporter-query.1"),
        "names the page: {stderr}"
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "no temporary file left: {left:?}");
}

#[test]
fn man_prints_each_subcommands_page_and_writes_them_all() {
    let out = binary().args(["man", "query"]).output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH gse_exporter-query 1"), "{page}");
    assert!(
        page.contains("\\-\\-output"),
        "the query page lists query's flags"
    );
    let out = binary().args(["man", "no-such"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("query"));
    let dir = tempfile::tempdir().unwrap();
    let out = binary()
        .arg("man")
        .arg(format!("--dir={}", dir.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "gse_exporter-completions.1",
            "gse_exporter-man.1",
            "gse_exporter-node.1",
            "gse_exporter-query.1",
            "gse_exporter-simulate.1",
            "gse_exporter.1"
        ]
    );
}

/// An error is said with each cause once: a missing configuration file said
/// "No such file or directory" three times, a textfile path that is a
/// directory "Is a directory" twice.
#[test]
fn errors_say_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yml");
    let (status, _, stderr) = run_to_end(
        &[&format!("--config.file={}", missing.display())],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    let textfile = dir.path().join("node.prom");
    std::fs::create_dir(&textfile).unwrap();
    let (status, _, stderr) = run_to_end(
        &[
            "node",
            &format!("--textfile.path={}", textfile.display()),
            "--check.interval=1s",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("Is a directory").count(), 1, "{stderr}");
}

/// Only the exporter and `query` read a configuration file: `node` and the
/// other subcommands listed `--config.file` in their help (it was global)
/// and ignored it without a word. `query` takes it after its name, as its
/// docs show, or before.
#[test]
fn only_the_exporter_and_query_take_a_configuration_file() {
    use clap::CommandFactory;
    let root = gse_exporter::cli::Cli::command();
    for (path, _) in commands(&root) {
        let out = binary().args(&path).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        let takes = path.is_empty() || path == ["query"];
        assert_eq!(help.contains("--config.file"), takes, "{path:?}:\n{help}");
    }
    let out = binary()
        .args(["node", "--once", "--config.file=/etc/gse_exporter/gse.yml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unexpected argument '--config.file'"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yml").display().to_string();
    for args in [
        vec!["query".to_string(), format!("--config.file={missing}")],
        vec![format!("--config.file={missing}"), "query".to_string()],
    ] {
        let out = binary().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&missing), "{args:?}: {stderr}");
    }
}

/// The soft limit on open files is raised to the hard one at start, as Go
/// exporters do: under systemd's soft 1,024 a client opening connections
/// faster than they time out ran the exporter out of descriptors, and every
/// scrape failed.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_one() {
    let mut child = Command::new("prlimit")
        .arg("--nofile=1024:4096")
        .arg(env!("CARGO_BIN_EXE_gse_exporter"))
        .arg(format!(
            "--config.file={}",
            fixtures().join("good.yml").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) runs the binary");
    let limits = format!("/proc/{}/limits", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let raised = loop {
        let text = std::fs::read_to_string(&limits).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or_default()
            .to_string();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(3) == Some(&"4096") || std::time::Instant::now() > deadline {
            break line;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(raised.split_whitespace().nth(3) == Some("4096"), "{raised}");
}

/// The flags `command` defines (but `--help` and `--version`), with their
/// environment variables.
fn defined_flags(command: &clap::Command) -> std::collections::BTreeMap<String, String> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            Some((format!("--{long}"), env.unwrap_or_default()))
        })
        .filter(|(long, _)| !matches!(long.as_str(), "--help" | "--version"))
        .collect()
}

/// The rows of a page's tables whose first cell is a flag, with the
/// environment variable their second cell names.
fn flag_rows(page: &str) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(page)).unwrap();
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let flag = cells.get(1)?.strip_prefix("`--")?.strip_suffix('`')?;
            let env = cells.get(2)?.trim_matches('`');
            Some((format!("--{flag}"), env.to_string()))
        })
        .collect()
}

/// The README's flag table is the exporter's flags, and the simulator
/// page's is `simulate`'s: each row's flag exists with the environment
/// variable the row names, and every flag has a row.
#[test]
fn the_flag_tables_are_the_flags() {
    use clap::CommandFactory;
    let root = gse_exporter::cli::Cli::command();
    assert_eq!(
        flag_rows("README.md"),
        defined_flags(&root),
        "README rows (left) against the exporter's flags"
    );
    // `simulate` takes its own flags and the global ones (the log's).
    let simulate = root.find_subcommand("simulate").expect("simulate");
    let mut takes = defined_flags(simulate);
    let globals = defined_flags(&root).into_iter().filter(|(long, _)| {
        root.get_arguments()
            .any(|a| a.is_global_set() && a.get_long() == long.strip_prefix("--"))
    });
    takes.extend(globals);
    assert_eq!(
        flag_rows("docs/simulator.md"),
        takes,
        "docs/simulator.md rows (left) against simulate's flags"
    );
}
