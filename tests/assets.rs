//! Checks of the monitoring assets shipped with gse_exporter: Prometheus rules
//! and their unit tests, the example Alertmanager config, the Grafana
//! dashboards and the runbook.
//!
//! The rule and config checks shell out to `promtool` (Prometheus) and
//! `amtool` (Alertmanager). They fail, never skip, when a tool is missing:
//! the assets are only known to work when those checks ran.
//!
//! Files are found relative to `CARGO_MANIFEST_DIR`; set `GSE_ASSETS_ROOT` to
//! check another checkout.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const RUNBOOK_BASE: &str = "https://github.com/gse-exporter/gse_exporter/blob/main/docs/runbook.md";
const DATASOURCE: &str = "${datasource}";
const JOB_MATCHER: &str = r#"job=~"$job""#;
/// Queries of the node mode's series only select its job(s) with this.
const NODE_JOB_MATCHER: &str = r#"job=~"$node_job""#;
const GROUP_MATCHER: &str = r#"group=~"$group""#;
const BIZ_MATCHER: &str = r#"bk_biz_id=~"$bk_biz_id""#;
/// The label that tells sites apart (the mixin's `_config.siteLabel`; a test
/// checks they agree): every aggregation and join keeps it, every dashboard
/// query selects the variable of that name.
const SITE_LABEL: &str = "site";
const SITE_MATCHER: &str = r#"site=~"$site""#;
/// Families with a `group` label: a query naming one selects `$group`.
const GROUP_FAMILIES: &[&str] = &[
    "gse_agent",
    "gse_group",
    "gse_up",
    "gse_parent_agents",
    "gse_cloud_agents",
    "gse_exporter_poll_",
    "gse_exporter_last_poll_",
    "gse_exporter_group_hosts",
    "gse_exporter_discovery_",
];
/// Shortest explicit range accepted instead of `$__rate_interval` in a
/// dashboard `rate`/`increase`/`changes` (e.g. `[1h]` for flapping): anything
/// shorter would be finer than a scrape-interval-aware rate interval.
const MIN_EXPLICIT_RANGE_SECONDS: u64 = 10 * 60;

fn root() -> PathBuf {
    std::env::var_os("GSE_ASSETS_ROOT")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Files directly in `dir` whose name ends with `suffix`, sorted.
fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *{suffix} files in {}", dir.display());
    files
}

fn rule_files() -> Vec<PathBuf> {
    files_with_suffix(&root().join("alerts"), ".rules.yml")
}

fn rule_test_files() -> Vec<PathBuf> {
    files_with_suffix(&root().join("alerts/tests"), ".yml")
}

fn dashboard_files() -> Vec<PathBuf> {
    files_with_suffix(&root().join("dashboards"), ".json")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn read_yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Runs an external checker in the assets root and panics with its output
/// unless it succeeds. A missing tool is a failure, not a skip.
fn run_tool(tool: &str, args: &[&str]) {
    let output = Command::new(tool).args(args).current_dir(root()).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `{tool}` ({e}); install it (Debian: apt-get install prometheus alertmanager) \
             so the monitoring assets can be checked"
        )
    });
    assert!(
        output.status.success(),
        "`{tool} {}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

// ---------------------------------------------------------------- rules

#[test]
fn promtool_check_rules() {
    for file in rule_files() {
        run_tool("promtool", &["check", "rules", &relative(&file)]);
    }
}

#[test]
fn promtool_test_rules() {
    let files: Vec<String> = rule_test_files().iter().map(|f| relative(f)).collect();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    run_tool("promtool", &args);
}

/// Every rule of every rule file, as (file, rule).
fn all_rules() -> Vec<(PathBuf, Value)> {
    let mut rules = Vec::new();
    for file in rule_files() {
        let doc = read_yaml(&file);
        for group in array(&doc, "groups") {
            for rule in array(group, "rules") {
                rules.push((file.clone(), rule.clone()));
            }
        }
    }
    rules
}

fn alert_rules() -> Vec<(PathBuf, Value)> {
    all_rules()
        .into_iter()
        .filter(|(_, rule)| rule.get("alert").is_some())
        .collect()
}

/// GitHub-style heading anchors of a Markdown file.
fn markdown_anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#').trim();
        let anchor: String = text
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        anchors.insert(anchor);
    }
    anchors
}

#[test]
fn alerts_have_severity_annotations_and_runbook_sections() {
    let anchors = markdown_anchors(&read(&root().join("docs/runbook.md")));
    let alerts = alert_rules();
    assert!(!alerts.is_empty(), "no alerting rules found");
    let mut names = BTreeSet::new();
    for (file, rule) in &alerts {
        let name = str_field(rule, "alert").expect("alert name is a string");
        let at = format!("{name} in {}", relative(file));
        assert!(names.insert(name.to_owned()), "duplicate alert {at}");
        assert!(
            name.starts_with("Gse"),
            "{at}: alert names share the Gse prefix"
        );
        assert!(rule.get("for").is_some(), "{at}: set an explicit `for`");

        let labels = rule
            .get("labels")
            .unwrap_or_else(|| panic!("{at}: no labels"));
        let severity =
            str_field(labels, "severity").unwrap_or_else(|| panic!("{at}: no severity label"));
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{at}: severity {severity:?} is not critical|warning|info"
        );

        let annotations = rule
            .get("annotations")
            .unwrap_or_else(|| panic!("{at}: no annotations"));
        let summary =
            str_field(annotations, "summary").unwrap_or_else(|| panic!("{at}: no summary"));
        assert!(
            !summary.trim().is_empty() && !summary.contains("{{"),
            "{at}: summary must be a static sentence"
        );
        let description =
            str_field(annotations, "description").unwrap_or_else(|| panic!("{at}: no description"));
        assert!(
            description.contains("{{"),
            "{at}: description must be templated"
        );
        if name.starts_with("GseAgent") {
            for label in ["$labels.group", "$labels.bk_biz_id"] {
                assert!(
                    description.contains(label),
                    "{at}: description must name {label}"
                );
            }
        }

        let runbook =
            str_field(annotations, "runbook_url").unwrap_or_else(|| panic!("{at}: no runbook_url"));
        let anchor = name.to_lowercase();
        assert_eq!(
            runbook,
            format!("{RUNBOOK_BASE}#{anchor}"),
            "{at}: runbook_url"
        );
        assert!(
            anchors.contains(&anchor),
            "{at}: docs/runbook.md has no heading `## {name}`"
        );
    }
}

#[test]
fn recording_rules_are_named_level_metric_operation() {
    let mut seen = BTreeSet::new();
    for (file, rule) in all_rules() {
        let Some(record) = str_field(&rule, "record") else {
            continue;
        };
        assert_eq!(
            record.matches(':').count(),
            2,
            "{record} in {}: recording rules are named level:metric:operation",
            relative(&file)
        );
        assert!(
            record.starts_with("gse"),
            "{record}: recording rules share the gse prefix"
        );
        assert!(
            seen.insert(record.to_owned()),
            "duplicate recording rule {record}"
        );
    }
    assert!(!seen.is_empty(), "no recording rules found");
}

#[test]
fn every_alert_has_firing_and_silent_unit_tests() {
    let mut firing: BTreeMap<String, usize> = BTreeMap::new();
    let mut silent: BTreeMap<String, usize> = BTreeMap::new();
    for file in rule_test_files() {
        let doc = read_yaml(&file);
        for test in array(&doc, "tests") {
            for case in array(test, "alert_rule_test") {
                let name = str_field(case, "alertname").expect("alertname").to_owned();
                let expected = array(case, "exp_alerts");
                for alert in expected {
                    assert!(
                        alert.get("exp_labels").is_some() && alert.get("exp_annotations").is_some(),
                        "{}: {name} cases must state exact exp_labels and exp_annotations",
                        relative(&file)
                    );
                }
                let counter = if expected.is_empty() {
                    &mut silent
                } else {
                    &mut firing
                };
                *counter.entry(name).or_default() += 1;
            }
        }
    }
    for (_, rule) in alert_rules() {
        let name = str_field(&rule, "alert").expect("alert name");
        assert!(
            firing.contains_key(name),
            "no promtool test expects {name} to fire"
        );
        assert!(
            silent.contains_key(name),
            "no promtool test expects {name} to stay silent"
        );
    }
}

// --------------------------------------------------------- alertmanager

#[test]
fn amtool_check_config() {
    run_tool(
        "amtool",
        &["check-config", "deploy/alertmanager/alertmanager.yml"],
    );
}

#[test]
fn alertmanager_groups_by_alert_site_group_and_business() {
    let config = read_yaml(&root().join("deploy/alertmanager/alertmanager.yml"));
    let group_by: Vec<&str> = array(&config["route"], "group_by")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(group_by, ["alertname", SITE_LABEL, "group", "bk_biz_id"]);
    assert!(
        array(&config, "inhibit_rules").len() >= 3,
        "expected the three GSE inhibit rules"
    );
}

/// Muting stays per site: an inhibit rule whose `equal` lacked the site label
/// would let a GSE outage or mass offline at one site mute a same-named group
/// at another (tests/e2e.rs shows it with a real Alertmanager).
#[test]
fn alertmanager_inhibits_per_site_and_job() {
    let config = read_yaml(&root().join("deploy/alertmanager/alertmanager.yml"));
    let rules = array(&config, "inhibit_rules");
    assert!(!rules.is_empty(), "no inhibit rules");
    for rule in rules {
        let equal: Vec<&str> = array(rule, "equal")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for label in [SITE_LABEL, "job"] {
            assert!(
                equal.contains(&label),
                "inhibit rule {:?}: equal {equal:?} lacks {label}",
                rule["source_matchers"]
            );
        }
    }
}

/// The mixin's configuration, as jsonnet evaluates it.
fn mixin_config(field: &str) -> Value {
    let output = Command::new("jsonnet")
        .arg("-J")
        .arg(root().join("mixin"))
        .arg("-e")
        .arg(format!("(import 'mixin.libsonnet')._config.{field}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run jsonnet ({e}); Debian: apt-get install jsonnet"));
    assert!(
        output.status.success(),
        "jsonnet: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("jsonnet prints JSON")
}

#[test]
fn the_checks_here_follow_the_mixin_config() {
    assert_eq!(mixin_config("siteLabel"), SITE_LABEL, "_config.siteLabel");
    assert_eq!(
        mixin_config("gseExporterSelector"),
        r#"job="gse_exporter""#,
        "_config.gseExporterSelector: the shipped scrape configs use job=\"gse_exporter\""
    );
}

// ------------------------------------------------------- site label

/// Aggregation operators of PromQL.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Where an expression's aggregations and joins leave the site label out:
/// a `by`/`on` list without it, a `without`/`ignoring` list with it, and
/// (with `every_aggregation_by`) an aggregation without `by`.
fn site_problems(expr: &str, every_aggregation_by: bool) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut problems = Vec::new();
    let mut i = 0;
    let next_non_space = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let j = next_non_space(i);
            let at = j < chars.len() && chars[j] == '(';
            match word.as_str() {
                "by" | "on" | "without" | "ignoring" | "group_left" | "group_right" if at => {
                    let close = chars[j..]
                        .iter()
                        .position(|&c| c == ')')
                        .map_or(chars.len(), |p| j + p);
                    let list: String = chars[j + 1..close].iter().collect();
                    let has_site = list.split(',').any(|l| l.trim() == SITE_LABEL);
                    let drops = match word.as_str() {
                        "by" | "on" => !has_site,
                        "without" | "ignoring" => has_site,
                        // group_left/group_right: labels copied, not matched.
                        _ => false,
                    };
                    if drops {
                        problems.push(format!("`{word} ({list})` drops {SITE_LABEL}"));
                    }
                    i = close + 1;
                }
                w if every_aggregation_by && AGGREGATIONS.contains(&w) && at => {
                    problems.push(format!("`{w}(...)` without `by` drops {SITE_LABEL}"));
                }
                _ => {}
            }
        } else {
            i += 1;
        }
    }
    problems
}

#[test]
fn site_lint_finds_dropped_site_labels() {
    assert!(site_problems("sum by (site, job) (x{a=\"by (x)\"})", true).is_empty());
    assert!(site_problems("a unless on (site, group) b and on(site) c", true).is_empty());
    assert!(site_problems("x * on (site, job) group_left (bk_biz_id) y", true).is_empty());
    assert_eq!(site_problems("sum by (job) (x)", true).len(), 1);
    assert_eq!(site_problems("a unless on (group) b", true).len(), 1);
    assert_eq!(site_problems("count(x) > 0", true).len(), 1);
    assert!(site_problems("count(x) > 0", false).is_empty());
    assert_eq!(site_problems("sum without (site) (x)", false).len(), 1);
    assert!(site_problems("absent(up{job=\"g\"}) or rate(x[5m])", true).is_empty());
}

/// Every recording and alerting rule keeps the site label: two sites with
/// the same group names never blend (alerts/tests/sites.test.yml shows it).
#[test]
fn rules_keep_the_site_label() {
    let mut problems = Vec::new();
    for (file, rule) in all_rules() {
        let name = str_field(&rule, "alert")
            .or_else(|| str_field(&rule, "record"))
            .unwrap_or("?");
        let expr = str_field(&rule, "expr").expect("rule expr");
        for problem in site_problems(expr, true) {
            problems.push(format!("{name} in {}: {problem}", relative(&file)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ----------------------------------------------------------- dashboards

/// Whole seconds of a Prometheus duration such as `1h`, `90s` or `1h30m`.
fn duration_seconds(text: &str) -> Option<u64> {
    let d = humantime::parse_duration(text).ok()?;
    (d.as_secs() > 0 && d.subsec_nanos() == 0).then_some(d.as_secs())
}

/// Problems with the range of each `rate`/`irate`/`increase`/`changes` call.
fn range_problems(expr: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for func in ["rate(", "irate(", "increase(", "changes("] {
        for (start, _) in expr.match_indices(func) {
            let preceded_by_ident = expr[..start]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if preceded_by_ident {
                continue; // e.g. `rate(` inside `irate(`
            }
            let args = &expr[start + func.len()..];
            let range = args.find('[').and_then(|open| {
                args[open + 1..]
                    .find(']')
                    .map(|close| &args[open + 1..open + 1 + close])
            });
            match range {
                Some("$__rate_interval") => {}
                Some(explicit)
                    if duration_seconds(explicit)
                        .is_some_and(|s| s >= MIN_EXPLICIT_RANGE_SECONDS) => {}
                other => problems.push(format!(
                    "{func}..) uses range {other:?}, want [$__rate_interval]"
                )),
            }
        }
    }
    problems
}

/// All panels, descending into rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a [Value], out: &mut Vec<&'a Value>) {
        for panel in list {
            out.push(panel);
            walk(array(panel, "panels"), out);
        }
    }
    let mut out = Vec::new();
    walk(array(dashboard, "panels"), &mut out);
    out
}

fn datasource_uid(value: &Value) -> Option<&str> {
    value
        .get("datasource")
        .and_then(|ds| str_field(ds, "uid").or_else(|| ds.as_str()))
}

fn lint_dashboard(file: &Path, dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |msg: String| problems.push(format!("{}: {msg}", relative(file)));

    if dashboard
        .get("schemaVersion")
        .and_then(Value::as_u64)
        .is_none_or(|v| v < 39)
    {
        problem("schemaVersion must be 39 or later".into());
    }
    let tags: Vec<&str> = array(dashboard, "tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !tags.contains(&"gse") || !tags.contains(&"blueking") {
        problem(format!("tags {tags:?} must include gse and blueking"));
    }
    if str_field(dashboard, "refresh") != Some("30s") {
        problem("refresh must be 30s".into());
    }
    if str_field(dashboard, "timezone") != Some("utc") {
        problem("timezone must be utc".into());
    }
    if !str_field(dashboard, "title").is_some_and(|t| t.starts_with("GSE agents / ")) {
        problem("title must start with `GSE agents / `".into());
    }

    let variables: BTreeMap<&str, &Value> = array(&dashboard["templating"], "list")
        .iter()
        .filter_map(|v| str_field(v, "name").map(|n| (n, v)))
        .collect();
    match variables.get("datasource") {
        Some(v)
            if str_field(v, "type") == Some("datasource")
                && str_field(v, "query") == Some("prometheus") => {}
        _ => problem("needs a `datasource` variable of type datasource, query prometheus".into()),
    }
    for name in [SITE_LABEL, "job", "group", "bk_biz_id"] {
        match variables.get(name) {
            Some(v) => {
                if str_field(v, "type") != Some("query") {
                    problem(format!("variable {name} must be a query variable"));
                }
                if datasource_uid(v) != Some(DATASOURCE) {
                    problem(format!("variable {name} must query ${{datasource}}"));
                }
                if v.get("multi") != Some(&Value::Bool(true))
                    || v.get("includeAll") != Some(&Value::Bool(true))
                {
                    problem(format!("variable {name} must be multi-value with All"));
                }
            }
            None => problem(format!("missing variable {name}")),
        }
    }

    let mut ids = BTreeSet::new();
    for panel in panels(dashboard) {
        let title = str_field(panel, "title").unwrap_or("<untitled>");
        if let Some(id) = panel.get("id").and_then(Value::as_u64)
            && !ids.insert(id)
        {
            problem(format!("panel {title:?}: duplicate id {id}"));
        }
        if str_field(panel, "type") == Some("row") {
            continue;
        }
        if datasource_uid(panel) != Some(DATASOURCE) {
            problem(format!(
                "panel {title:?}: datasource must be ${{datasource}}"
            ));
        }
        let targets = array(panel, "targets");
        if targets.is_empty() {
            problem(format!("panel {title:?}: no queries"));
        }
        for target in targets {
            if target.get("datasource").is_some() && datasource_uid(target) != Some(DATASOURCE) {
                problem(format!(
                    "panel {title:?}: query datasource must be ${{datasource}}"
                ));
            }
            let Some(expr) = str_field(target, "expr") else {
                problem(format!("panel {title:?}: query without expr"));
                continue;
            };
            // The node mode's series select its job(s); everything else the
            // exporter's.
            if expr.contains("gse_node") && !expr.contains(NODE_JOB_MATCHER) {
                problem(format!(
                    "panel {title:?}: `{expr}` lacks {NODE_JOB_MATCHER}"
                ));
            }
            let exporter_side = [
                "gse_agent",
                "gse_group",
                "gse_biz",
                "gse_up",
                "gse_exporter",
                "gse_parent",
                "gse_cloud",
                "gse:",
                "process_",
                "up{",
            ];
            if exporter_side.iter().any(|m| expr.contains(m)) && !expr.contains(JOB_MATCHER) {
                problem(format!("panel {title:?}: `{expr}` lacks {JOB_MATCHER}"));
            }
            // Every panel follows the site and business filters; families
            // without bk_biz_id are joined through gse_agents.
            for matcher in [SITE_MATCHER, BIZ_MATCHER] {
                if !expr.contains(matcher) {
                    problem(format!("panel {title:?}: `{expr}` lacks {matcher}"));
                }
            }
            if GROUP_FAMILIES.iter().any(|m| expr.contains(m)) && !expr.contains(GROUP_MATCHER) {
                problem(format!("panel {title:?}: `{expr}` lacks {GROUP_MATCHER}"));
            }
            for site in site_problems(expr, false) {
                problem(format!("panel {title:?}: `{expr}`: {site}"));
            }
            // An offline agent's heartbeat age grows for as long as it is
            // offline: heartbeat panels say which agents they cover.
            if expr.contains("gse_agent_heartbeat_age_seconds")
                && !expr.contains("gse_agent_online")
            {
                problem(format!(
                    "panel {title:?}: `{expr}` uses heartbeat ages without choosing online or offline agents"
                ));
            }
            for range in range_problems(expr) {
                problem(format!("panel {title:?}: {range}"));
            }
        }
    }
    problems
}

#[test]
fn dashboards_pass_lint() {
    let mut uids = BTreeSet::new();
    let mut problems = Vec::new();
    for file in dashboard_files() {
        let dashboard: Value = serde_json::from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", relative(&file)));
        let uid =
            str_field(&dashboard, "uid").unwrap_or_else(|| panic!("{}: no uid", relative(&file)));
        assert!(uids.insert(uid.to_owned()), "duplicate dashboard uid {uid}");
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        assert_eq!(
            uid,
            stem,
            "{}: uid must equal the file name for stable links",
            relative(&file)
        );
        problems.extend(lint_dashboard(&file, &dashboard));
    }
    assert!(
        problems.is_empty(),
        "dashboard lint:\n{}",
        problems.join("\n")
    );
    let expected: BTreeSet<String> = ["gse-agents-exporter", "gse-agents-fleet"]
        .map(String::from)
        .into();
    assert_eq!(uids, expected, "stable dashboard uids");
}

#[test]
fn range_lint_accepts_rate_interval_and_long_explicit_ranges() {
    assert!(range_problems(r#"rate(x{job=~"$job"}[$__rate_interval])"#).is_empty());
    assert!(range_problems("topk(10, changes(x[1h]))").is_empty());
    assert!(range_problems("irate(x[$__rate_interval])").is_empty());
    assert_eq!(range_problems("rate(x[1m])").len(), 1);
    assert_eq!(
        range_problems("increase(x[5m]) + rate(y[$__rate_interval])").len(),
        1
    );
    assert_eq!(duration_seconds("1h30m"), Some(5400));
    assert_eq!(duration_seconds("500ms"), None);
    assert_eq!(duration_seconds("$__interval"), None);
}

// ------------------------------------------------- panels that tell the truth

/// The query of a dashboard panel's target, with Grafana's variables set
/// (`site`, `job`, `group` as All; `bk_biz_id` as given).
fn panel_query(file: &str, title: &str, ref_id: &str, biz: &str) -> String {
    let dashboard: Value = serde_json::from_str(&read(&root().join("dashboards").join(file)))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let panel = panels(&dashboard)
        .into_iter()
        .find(|p| str_field(p, "title") == Some(title))
        .unwrap_or_else(|| panic!("{file} has no panel {title:?}"));
    let target = array(panel, "targets")
        .iter()
        .find(|t| str_field(t, "refId") == Some(ref_id))
        .unwrap_or_else(|| panic!("{file} / {title:?} has no query {ref_id}"));
    let mut expr = str_field(target, "expr").expect("expr").to_string();
    for (name, value) in [
        ("__rate_interval", "5m"),
        (SITE_LABEL, ".*"),
        ("job", "gse_exporter"),
        ("group", ".*"),
        ("bk_biz_id", biz),
    ] {
        expr = expr.replace(&format!("${name}"), value);
    }
    assert!(!expr.contains('$'), "unsubstituted variable in {expr}");
    expr
}

/// Panel queries evaluated by promtool against series where the old queries
/// misled: heartbeat ages of offline agents (6,537 s), gse_up without a
/// business, and info-API counters that do not move between info polls
/// (NaN); and the topology panels (a host GSE does not know is not offline,
/// a set with none offline is 0). promtool fails on any sample that
/// differs, NaN included.
#[test]
fn dashboard_panels_tell_the_truth() {
    const FLEET: &str = "gse-agents-fleet.json";
    const EXPORTER: &str = "gse-agents-exporter.json";
    let sh = r#"job="gse_exporter",instance="gse-exporter-sh.example.com",site="shanghai""#;
    let sz = r#"job="gse_exporter",instance="gse-exporter-sz.example.com",site="shenzhen""#;
    let agent = |ip: &str| {
        format!(r#"{sh},group="web-prod",bk_biz_id="2",bk_cloud_id="0",ip="{ip}",bk_agent_id="""#)
    };
    let topology = |ip: &str, set: &str, module: &str, operator: &str| {
        format!(
            r#"gse_agent_topology_info{{{},bk_biz_name="pay",bk_set_name="{set}",bk_module_name="{module}",operator="{operator}",bk_bak_operator=""}}"#,
            agent(ip)
        )
    };
    let series: Vec<(String, &str)> = vec![
        // shanghai web-prod (business 2): two online agents, one offline
        // for almost two hours; db (business 3).
        (
            format!("gse_agents{{{sh},group=\"web-prod\",bk_biz_id=\"2\",state=\"online\"}}"),
            "2x40",
        ),
        (
            format!("gse_agents{{{sh},group=\"web-prod\",bk_biz_id=\"2\",state=\"offline\"}}"),
            "1x40",
        ),
        (
            format!("gse_agents{{{sh},group=\"db\",bk_biz_id=\"3\",state=\"online\"}}"),
            "5x40",
        ),
        (format!("gse_agent_online{{{}}}", agent("10.0.0.1")), "1x40"),
        (
            format!("gse_agent_heartbeat_age_seconds{{{}}}", agent("10.0.0.1")),
            "0x40",
        ),
        (format!("gse_agent_online{{{}}}", agent("10.0.0.2")), "1x40"),
        (
            format!("gse_agent_heartbeat_age_seconds{{{}}}", agent("10.0.0.2")),
            "100x40",
        ),
        (format!("gse_agent_online{{{}}}", agent("10.0.0.3")), "0x40"),
        (
            format!("gse_agent_heartbeat_age_seconds{{{}}}", agent("10.0.0.3")),
            "4737+60x40",
        ),
        // A host GSE does not know (status -2: not offline), and where
        // CMDB puts the four hosts: sets s1 (.1, .3, .4) and s2 (.2).
        (format!("gse_agent_online{{{}}}", agent("10.0.0.4")), "0x40"),
        (
            format!("gse_agent_status_code{{{}}}", agent("10.0.0.4")),
            "-2x40",
        ),
        (topology("10.0.0.1", "s1", "m1", "alice"), "1x40"),
        (topology("10.0.0.2", "s2", "m3", "bob"), "1x40"),
        (topology("10.0.0.3", "s1", "m1,m2", "alice"), "1x40"),
        (topology("10.0.0.4", "s1", "m1", "alice"), "1x40"),
        // GSE unreachable for both shanghai groups; shenzhen's web-prod fine.
        (format!("gse_up{{{sh},group=\"web-prod\"}}"), "0x40"),
        (format!("gse_up{{{sh},group=\"db\"}}"), "0x40"),
        (format!("gse_up{{{sz},group=\"web-prod\"}}"), "1x40"),
        (
            format!("gse_agents{{{sz},group=\"web-prod\",bk_biz_id=\"2\",state=\"online\"}}"),
            "3x40",
        ),
        // The status API is called every minute; the info API was called
        // once, before the window: its counters stand still.
        (
            format!(
                "gse_exporter_api_requests_total{{{sh},api=\"v2_list_agent_state\",result=\"success\"}}"
            ),
            "0+1x40",
        ),
        (
            format!(
                "gse_exporter_api_requests_total{{{sh},api=\"v2_list_agent_state\",result=\"error\"}}"
            ),
            "0x40",
        ),
        (
            format!(
                "gse_exporter_api_requests_total{{{sh},api=\"v2_list_agent_info\",result=\"success\"}}"
            ),
            "3x40",
        ),
        (
            format!(
                "gse_exporter_api_requests_total{{{sh},api=\"v2_list_agent_info\",result=\"error\"}}"
            ),
            "0x40",
        ),
        (
            format!(
                "gse_exporter_api_request_duration_seconds_bucket{{{sh},api=\"v2_list_agent_state\",le=\"0.25\"}}"
            ),
            "0x40",
        ),
        (
            format!(
                "gse_exporter_api_request_duration_seconds_bucket{{{sh},api=\"v2_list_agent_state\",le=\"0.5\"}}"
            ),
            "0+1x40",
        ),
        (
            format!(
                "gse_exporter_api_request_duration_seconds_bucket{{{sh},api=\"v2_list_agent_state\",le=\"+Inf\"}}"
            ),
            "0+1x40",
        ),
        (
            format!(
                "gse_exporter_api_request_duration_seconds_count{{{sh},api=\"v2_list_agent_state\"}}"
            ),
            "0+1x40",
        ),
        (
            format!(
                "gse_exporter_api_request_duration_seconds_bucket{{{sh},api=\"v2_list_agent_info\",le=\"0.25\"}}"
            ),
            "0x40",
        ),
        (
            format!(
                "gse_exporter_api_request_duration_seconds_bucket{{{sh},api=\"v2_list_agent_info\",le=\"0.5\"}}"
            ),
            "3x40",
        ),
        (
            format!(
                "gse_exporter_api_request_duration_seconds_bucket{{{sh},api=\"v2_list_agent_info\",le=\"+Inf\"}}"
            ),
            "3x40",
        ),
        (
            format!(
                "gse_exporter_api_request_duration_seconds_count{{{sh},api=\"v2_list_agent_info\"}}"
            ),
            "3x40",
        ),
    ];
    // (query, expected samples as (labels, value)).
    let web = r#"{site="shanghai", group="web-prod"}"#;
    let state_api = r#"{site="shanghai", api="v2_list_agent_state"}"#;
    let checks: Vec<(String, Vec<(&str, f64)>)> = vec![
        // Online agents only: p50 of 0 s and 100 s is 50 s (with the offline
        // agent: 100 s); p99 99 s, not about 6,500 s.
        (
            panel_query(FLEET, "Heartbeat age quantiles per group", "A", ".*"),
            vec![(web, 50.0)],
        ),
        (
            panel_query(FLEET, "Heartbeat age quantiles per group", "B", ".*"),
            vec![(web, 99.0)],
        ),
        (
            panel_query(FLEET, "Heartbeat age distribution", "A", ".*"),
            vec![("{}", 1.0)],
        ),
        (
            panel_query(FLEET, "Heartbeat age distribution", "B", ".*"),
            vec![("{}", 1.0)],
        ),
        (
            panel_query(FLEET, "Heartbeat age distribution", "E", ".*"),
            vec![],
        ),
        // Business filtering through the group: web-prod is business 2.
        (
            panel_query(FLEET, "Groups GSE cannot reach", "A", "2"),
            vec![("{}", 1.0)],
        ),
        (
            panel_query(FLEET, "Groups GSE cannot reach", "A", "3"),
            vec![("{}", 1.0)],
        ),
        (
            panel_query(FLEET, "Groups GSE cannot reach", "A", ".*"),
            vec![("{}", 2.0)],
        ),
        (
            panel_query(FLEET, "Groups GSE cannot reach", "A", "7"),
            vec![("{}", 0.0)],
        ),
        (
            panel_query(EXPORTER, "GSE reachable per group (gse_up)", "A", "3"),
            vec![(r#"{site="shanghai", group="db"}"#, 0.0)],
        ),
        // Offline agents by topology: the not-found host is not offline, a
        // set or maintainer with none offline shows 0.
        (
            panel_query(FLEET, "Offline agents per set", "A", ".*"),
            vec![
                (r#"{site="shanghai", bk_biz_id="2", bk_set_name="s1"}"#, 1.0),
                (r#"{site="shanghai", bk_biz_id="2", bk_set_name="s2"}"#, 0.0),
            ],
        ),
        (
            panel_query(FLEET, "Offline agents per module", "A", "2"),
            vec![
                (
                    r#"{site="shanghai", bk_biz_id="2", bk_module_name="m1"}"#,
                    0.0,
                ),
                (
                    r#"{site="shanghai", bk_biz_id="2", bk_module_name="m1,m2"}"#,
                    1.0,
                ),
                (
                    r#"{site="shanghai", bk_biz_id="2", bk_module_name="m3"}"#,
                    0.0,
                ),
            ],
        ),
        (
            panel_query(FLEET, "Offline agents per maintainer", "A", ".*"),
            vec![
                (r#"{site="shanghai", operator="alice"}"#, 1.0),
                (r#"{site="shanghai", operator="bob"}"#, 0.0),
            ],
        ),
        (
            panel_query(FLEET, "Offline agents per maintainer", "A", "3"),
            vec![],
        ),
        (
            panel_query(
                FLEET,
                "Offline agents with set, module and maintainers",
                "A",
                ".*",
            ),
            vec![(
                r#"{site="shanghai", group="web-prod", bk_biz_id="2", bk_cloud_id="0", ip="10.0.0.3", bk_biz_name="pay", bk_set_name="s1", bk_module_name="m1,m2", operator="alice"}"#,
                0.0,
            )],
        ),
        // Between info polls the info API has no ratio and no latency, not NaN.
        (
            panel_query(EXPORTER, "API error ratio", "A", ".*"),
            vec![(state_api, 0.0)],
        ),
        (
            panel_query(EXPORTER, "API request latency quantiles", "A", ".*"),
            vec![(state_api, 0.375)],
        ),
    ];

    let dir = tempfile::tempdir().expect("temp dir");
    let mut test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
        root().join("alerts/gse-recording.rules.yml").display()
    );
    for (name, values) in &series {
        test.push_str(&format!(
            "      - series: '{name}'\n        values: '{values}'\n"
        ));
    }
    test.push_str("    promql_expr_test:\n");
    for (expr, samples) in &checks {
        test.push_str(&format!(
            "      - expr: {}\n        eval_time: 30m\n        exp_samples:{}\n",
            serde_json::to_string(expr).expect("JSON string"),
            if samples.is_empty() { " []" } else { "" }
        ));
        for (labels, value) in samples {
            test.push_str(&format!(
                "          - labels: '{labels}'\n            value: {value}\n"
            ));
        }
    }
    let file = dir.path().join("panels.test.yml");
    fs::write(&file, &test).expect("write the promtool test");
    run_tool("promtool", &["test", "rules", &file.display().to_string()]);
}

/// alerts/tests/sites.test.yml is the multi-site file_sd example as one
/// Prometheus sees it: every site and target of deploy/prometheus/file_sd
/// appears in it with the instance the example's relabelling gives.
#[test]
fn the_sites_test_follows_the_file_sd_example() {
    let dir = root().join("deploy/prometheus/file_sd");
    let test = read(&root().join("alerts/tests/sites.test.yml"));
    let mut targets = 0;
    for file in files_with_suffix(&dir, ".yml") {
        if !relative(&file).contains("gse_exporter") {
            continue; // the node mode's hosts are another job
        }
        let groups: Vec<Value> = serde_yaml_ng::from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{}: {e}", relative(&file)));
        for group in groups {
            let site = group["labels"][SITE_LABEL]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a target without a site", relative(&file)));
            for target in array(&group, "targets").iter().filter_map(Value::as_str) {
                // prometheus-file-sd.yml drops the default port from instance.
                let instance = target.strip_suffix(":10909").unwrap_or(target);
                let labels = format!(r#"instance="{instance}",{SITE_LABEL}="{site}""#);
                assert!(
                    test.contains(&labels),
                    "alerts/tests/sites.test.yml has no series of {labels} ({})",
                    relative(&file)
                );
                targets += 1;
            }
        }
    }
    assert!(targets >= 5, "only {targets} file_sd targets found");
}
