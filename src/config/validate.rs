//! The one validator of both configuration files: collects every problem
//! with its key path, value and rule, and holds the rules of the exporter's
//! own file (`config.yml`). The web configuration's rules are in
//! [`super::web`], PEM rules in [`super::pem`], host rules in [`super::hosts`]
//! and upstream TLS rules in [`super::tls`], each as more methods of
//! [`Validator`].

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::file::{self, FileLimits};
use super::schema::*;
use super::*;

/// Collects every problem of one file, with the key path, the value and the rule.
pub(super) struct Validator<'a> {
    pub(super) problems: Problems,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) base_dir: &'a Path,
}

/// The environment variables the OpenTelemetry SDK reads headers from.
const OTLP_HEADER_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
];

/// Headers the HTTP or gRPC transport of an OTLP push sets itself (and
/// `grpc-*`): not for `otlp.headers`.
const TRANSPORT_HEADERS: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl<'a> Validator<'a> {
    /// A validator for a file in `base_dir`, expanding `${VAR}` through `env`.
    pub(super) fn new(
        env: &'a dyn Fn(&str) -> Option<String>,
        base_dir: &'a Path,
    ) -> Validator<'a> {
        Validator {
            problems: Problems::default(),
            env,
            base_dir,
        }
    }

    /// The problems found, or `value` when there are none.
    pub(super) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.total() == 0 {
            Ok(value)
        } else {
            Err(ConfigError::Invalid(self.problems))
        }
    }
}

impl Validator<'_> {
    /// Records a problem: the key, the value as written (never a secret) and the rule.
    /// Values and rules are cut short here, so a huge value costs nothing kept.
    /// Past the problems kept, nothing is written out: they are counted.
    pub(super) fn problem(&mut self, path: impl Into<String>, value: impl ToString, rule: &str) {
        self.problems.push(|| Problem {
            path: cut(&path.into(), MAX_QUOTE_BYTES),
            value: cut(&value.to_string(), MAX_QUOTE_BYTES),
            rule: cut(rule, MAX_RULE_BYTES),
        });
    }

    /// The bytes of a file the configuration names, or a problem at `key`.
    pub(super) fn read_file(
        &mut self,
        key: &str,
        file: &Path,
        limits: FileLimits,
    ) -> Option<Vec<u8>> {
        match file::read_bytes(file, limits) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                self.problem(key, file.display(), &err.to_string());
                None
            }
        }
    }

    pub(super) fn config(&mut self, raw: RawConfig) -> Config {
        let interval = self.duration("interval", raw.interval.as_deref(), "60s");
        let info_interval = self.duration("info_interval", raw.info_interval.as_deref(), "10m");
        let stale_after = match raw.stale_after.as_deref() {
            Some(text) => self.duration("stale_after", Some(text), "3m"),
            None => interval.saturating_mul(3),
        };
        if stale_after < interval {
            self.problem(
                "stale_after",
                humantime::format_duration(stale_after).to_string(),
                "must be at least one interval",
            );
        }
        let gse = self.gse(raw.gse);
        let groups = self.groups(raw.groups, &gse);
        self.batch_cap(&gse, &groups);
        let mut groups = groups;
        let cmdb = self.cmdb(raw.cmdb, &gse, &groups);
        default_cmdb_tenants(&mut groups, cmdb.as_ref());
        let sharding = self.sharding(raw.sharding.as_ref());
        self.metric_deny(&raw.metric_deny);
        let otlp = raw.otlp.map(|o| self.otlp(o));
        Config {
            gse,
            interval,
            info_interval,
            stale_after,
            cmdb,
            sharding,
            metric_deny: raw.metric_deny,
            groups,
            otlp,
        }
    }

    fn otlp(&mut self, raw: RawOtlp) -> OtlpConfig {
        let endpoint = self.url("otlp.endpoint", raw.endpoint.as_deref());
        if raw.endpoint.is_none() {
            self.problem("otlp.endpoint", "", "is required");
        }
        let protocol = match raw.protocol.as_deref().unwrap_or("http/protobuf") {
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            "grpc" => OtlpProtocol::Grpc,
            other => {
                self.problem("otlp.protocol", other, "must be http/protobuf or grpc");
                OtlpProtocol::HttpProtobuf
            }
        };
        let interval = self.duration("otlp.interval", raw.interval.as_deref(), "30s");
        let timeout = self.duration("otlp.timeout", raw.timeout.as_deref(), "10s");
        if timeout >= interval {
            let shown = humantime::format_duration(timeout).to_string();
            self.problem("otlp.timeout", shown, "must be shorter than otlp.interval");
        }
        let mut headers: Vec<(String, Secret)> = Vec::with_capacity(raw.headers.len());
        for (name, value) in &raw.headers {
            let header = self.otlp_header(name, value);
            if headers.iter().any(|(seen, _)| *seen == header.0) {
                let path = format!("otlp.headers.{name}");
                let rule = "is given twice (header names are the same in any letter case)";
                self.problem(&path, "", rule);
            }
            headers.push(header);
        }
        let endpoint = endpoint.map(|e| self.otlp_user(e, &mut headers));
        // Each checked against the file's headers; the metrics variable
        // overrides the general one, as the SDK reads them.
        let given: Vec<String> = headers.iter().map(|(name, _)| name.clone()).collect();
        for var in OTLP_HEADER_VARIABLES {
            if let Some(text) = (self.env)(var) {
                self.otlp_env_headers(var, &text, given.clone());
            }
        }
        let resource_attributes = raw
            .resource_attributes
            .iter()
            .map(|(key, value)| {
                let path = format!("otlp.resource_attributes.{key}");
                if key.trim().is_empty() {
                    self.problem(&path, key, "must not be empty");
                }
                (key.clone(), self.expand(&path, value, false))
            })
            .collect();
        OtlpConfig {
            endpoint: endpoint.unwrap_or_default(),
            protocol,
            headers,
            interval,
            timeout,
            resource_attributes,
        }
    }

    /// The endpoint without a user and password, which become an
    /// `authorization` header (basic auth, as curl sends them): opentelemetry
    /// sent neither, and a collector behind basic auth refused every push.
    fn otlp_user(&mut self, endpoint: String, headers: &mut Vec<(String, Secret)>) -> String {
        use base64::Engine;
        let Ok(mut url) = reqwest::Url::parse(&endpoint) else {
            return endpoint;
        };
        if url.username().is_empty() && url.password().is_none() {
            return endpoint;
        }
        if headers.iter().any(|(name, _)| name == "authorization") {
            let shown = hide_credentials(&endpoint, &endpoint);
            let rule = "has a user and password, and otlp.headers an authorization: give one";
            self.problem("otlp.endpoint", shown, rule);
        }
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = format!(
            "{}:{}",
            decode(url.username()),
            decode(url.password().unwrap_or(""))
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(user);
        headers.push((
            "authorization".into(),
            Secret::new(format!("Basic {basic}")),
        ));
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.into()
    }

    /// A header name, lower-case, and its secret value (never shown in a problem).
    fn otlp_header(&mut self, name: &str, value: &str) -> (String, Secret) {
        let path = format!("otlp.headers.{name}");
        let lower = self.otlp_header_name(&path, name);
        let value = self.expand(&path, value, true);
        self.otlp_header_value(&path, &value);
        (lower, Secret::new(value))
    }

    /// A header's name, lower-case, checked: a valid name, and not one the
    /// transport sets.
    fn otlp_header_name(&mut self, path: &str, name: &str) -> String {
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            self.problem(path, name, "is not a valid HTTP header name");
        } else if TRANSPORT_HEADERS.contains(&lower.as_str()) || lower.starts_with("grpc-") {
            let rule = "belongs to the transport, which sets it for each push (a content-length cut every push short, counted a success)";
            self.problem(path, name, rule);
        }
        lower
    }

    /// A header's value checked (never shown: it is a secret).
    fn otlp_header_value(&mut self, path: &str, value: &str) {
        let visible = value.bytes().all(|b| (b' '..=b'~').contains(&b));
        if !visible || reqwest::header::HeaderValue::from_str(value).is_err() {
            self.problem(path, "", "value must be visible ASCII (no line breaks)");
        }
    }

    /// The headers `var` gives (`name=value,…`, each value percent-encoded),
    /// checked as `otlp.headers` are: the OpenTelemetry SDK adds them to
    /// every push itself, and skipped a malformed entry without a word, and
    /// one naming a header the file gives too (the endpoint's user and
    /// password) replaced it. `seen`: the file's header names. Entries are
    /// named by number, values never shown.
    fn otlp_env_headers(&mut self, var: &str, text: &str, mut seen: Vec<String>) {
        for (i, entry) in text.split(',').enumerate() {
            if entry.trim().is_empty() {
                continue;
            }
            let path = format!("{var}[{i}]");
            let Some((name, value)) = entry.split_once('=') else {
                self.problem(&path, "", "is not NAME=VALUE");
                continue;
            };
            let name = self.otlp_header_name(&path, name.trim());
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
            self.otlp_header_value(&path, &value);
            if seen.contains(&name) {
                let rule = "names a header given already (in otlp.headers, by the endpoint's user and password, or earlier in this variable)";
                self.problem(&path, &name, rule);
            }
            seen.push(name);
        }
    }

    fn sharding(&mut self, raw: Option<&RawSharding>) -> Sharding {
        let Some(raw) = raw else {
            return Sharding::default();
        };
        if raw.total_shards < 1 || raw.total_shards > 10_000 {
            let value = raw.total_shards.to_string();
            self.problem(
                "sharding.total_shards",
                value,
                "must be between 1 and 10000",
            );
            return Sharding::default();
        }
        if raw.shard < 0 || raw.shard >= raw.total_shards {
            let rule = format!(
                "must be between 0 and total_shards - 1 ({})",
                raw.total_shards - 1
            );
            self.problem("sharding.shard", raw.shard.to_string(), &rule);
            return Sharding::default();
        }
        Sharding {
            shard: raw.shard as u32,
            total: raw.total_shards as u32,
        }
    }

    fn metric_deny(&mut self, patterns: &[String]) {
        for (i, pattern) in patterns.iter().enumerate() {
            if let Err(err) = regex::Regex::new(&anchored(pattern)) {
                let rule = format!("is not a valid regular expression: {err}");
                self.problem(format!("metric_deny[{i}]"), pattern, &rule);
            }
        }
    }

    fn cmdb(
        &mut self,
        raw: Option<RawCmdb>,
        gse: &GseConfig,
        groups: &[GroupConfig],
    ) -> Option<CmdbConfig> {
        let used = groups.iter().any(|g| g.cmdb.is_some());
        let Some(raw) = raw else {
            if used {
                self.problem(
                    "cmdb",
                    "",
                    "groups use cmdb discovery, so a top-level cmdb block with its url is required",
                );
            }
            return None;
        };
        let api = match raw.api.as_deref().unwrap_or("gateway") {
            "esb" => CmdbApi::Esb,
            "gateway" => CmdbApi::Gateway,
            other => {
                self.problem(
                    "cmdb.api",
                    other,
                    "must be esb (list_biz_hosts) or gateway (list_hosts)",
                );
                CmdbApi::Gateway
            }
        };
        let url = match self.url("cmdb.url", raw.url.as_deref()) {
            Some(url) => url,
            None => {
                if raw.url.is_none() {
                    self.problem("cmdb.url", "", "is required");
                }
                String::new()
            }
        };
        let default_path = match api {
            CmdbApi::Esb => "/list_biz_hosts/",
            CmdbApi::Gateway => "/api/v3/hosts/app/{bk_biz_id}/list_hosts",
        };
        let path = raw.path.unwrap_or_else(|| default_path.to_string());
        let topology_path = raw
            .topology_path
            .unwrap_or_else(|| default_topology_path(&path));
        let business_path = raw
            .business_path
            .unwrap_or_else(|| default_business_path(api, &path).to_string());
        for (key, value) in [
            ("cmdb.path", &path),
            ("cmdb.topology_path", &topology_path),
            ("cmdb.business_path", &business_path),
        ] {
            if !value.starts_with('/') {
                self.problem(key, value, "must start with /");
            }
        }
        let app_secret = if raw.app_secret.is_some() || raw.app_secret_file.is_some() {
            self.secret_at(
                "cmdb",
                raw.app_secret.as_deref(),
                raw.app_secret_file.as_deref(),
            )
        } else {
            gse.app_secret.clone()
        };
        let app_code = match raw.app_code.as_deref() {
            Some(code) => self.expand("cmdb.app_code", code, false),
            None => gse.app_code.clone(),
        };
        let rate_limit = match raw.rate_limit.as_ref() {
            Some(limit) => self.rate_limit_at("cmdb.rate_limit", limit),
            None => RateLimit::per_second(10.0, 5),
        };
        let max_shrink = raw.max_shrink.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&max_shrink) {
            self.problem(
                "cmdb.max_shrink",
                max_shrink.to_string(),
                "must be between 0 and 1",
            );
        }
        Some(CmdbConfig {
            api,
            url,
            path,
            topology_path,
            business_path,
            supplier_account: gse.supplier_account.clone(),
            app_code,
            app_secret,
            username: gse.username.clone(),
            timeout: self.duration("cmdb.timeout", raw.timeout.as_deref(), "10s"),
            rate_limit,
            page_size: self.positive(
                "cmdb.page_size",
                raw.page_size,
                CMDB_MAX_PAGE as i64,
                CMDB_MAX_PAGE as i64,
            ) as usize,
            refresh_interval: self.duration(
                "cmdb.refresh_interval",
                raw.refresh_interval.as_deref(),
                "10m",
            ),
            tenant_id: match raw.tenant_id {
                Some(tenant) => self.tenant("cmdb.tenant_id", tenant),
                None => gse.tenant_id.clone(),
            },
            max_shrink,
            tls: match raw.tls {
                Some(tls) => self.upstream_tls("cmdb", Some(tls)),
                None => gse.tls.clone(),
            },
        })
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: &str) -> Duration {
        let text = value.unwrap_or(default);
        let Ok(d) = humantime::parse_duration(text) else {
            let rule = "is not a duration (examples: 500ms, 10s, 5m, 1h)";
            self.problem(path, text, rule);
            return Duration::from_secs(1);
        };
        let (shortest, shown) = shortest(path);
        if d.is_zero() {
            self.problem(path, text, "must be greater than zero");
        } else if d < shortest {
            self.problem(path, text, &format!("must be at least {shown}"));
        } else if d > LONGEST_DURATION {
            self.problem(path, text, "must be at most 30d");
        } else {
            return d;
        }
        Duration::from_secs(1)
    }

    fn api(&mut self, path: &str, value: &str) -> ApiVersion {
        match value {
            "v1" => ApiVersion::V1,
            "v2" => ApiVersion::V2,
            other => {
                self.problem(path, other, "must be v1 (ESB) or v2 (API gateway)");
                ApiVersion::V2
            }
        }
    }

    fn expand(&mut self, path: &str, value: &str, secret: bool) -> String {
        match expand_env(value, self.env) {
            Ok(expanded) => expanded,
            Err(var) => {
                let shown = if secret { "" } else { value };
                self.problem(
                    path,
                    shown,
                    &format!("environment variable {var} is not set"),
                );
                String::new()
            }
        }
    }

    /// A URL, `${VAR}` expanded; its user and password are never shown, not
    /// even when a variable in it is unset.
    fn url(&mut self, path: &str, value: Option<&str>) -> Option<String> {
        let raw = value?;
        let value = match expand_env(raw, self.env) {
            Ok(value) => value,
            Err(var) => {
                let shown = hide_credentials(raw, raw);
                self.problem(
                    path,
                    shown,
                    &format!("environment variable {var} is not set"),
                );
                return None;
            }
        };
        let trimmed = value.trim_end_matches('/').to_string();
        match reqwest::Url::parse(&trimmed) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(trimmed)
            }
            _ => {
                let shown = hide_credentials(&value, &value);
                self.problem(path, shown, "must be an absolute http:// or https:// URL");
                None
            }
        }
    }

    fn positive(&mut self, path: &str, value: Option<i64>, default: i64, max: i64) -> i64 {
        let v = value.unwrap_or(default);
        if v <= 0 || v > max {
            self.problem(path, v.to_string(), &format!("must be between 1 and {max}"));
            return default;
        }
        v
    }

    fn gse(&mut self, raw: RawGse) -> GseConfig {
        let api = self.api("gse.api", raw.api.as_deref().unwrap_or("v2"));
        let url = self.url("gse.url", raw.url.as_deref());
        let mut v1_url = self.url("gse.v1_url", raw.v1_url.as_deref());
        let mut v2_url = self.url("gse.v2_url", raw.v2_url.as_deref());
        match api {
            ApiVersion::V1 => v1_url = v1_url.or(url),
            ApiVersion::V2 => v2_url = v2_url.or(url),
        }
        let app_code = match raw.app_code.as_deref() {
            Some(code) => self.expand("gse.app_code", code, false),
            None => {
                self.problem("gse.app_code", "", "is required");
                String::new()
            }
        };
        let app_secret = self.secret(raw.app_secret.as_deref(), raw.app_secret_file.as_deref());
        let username = raw.username.as_deref().unwrap_or("admin");
        let username = self.expand("gse.username", username, false);
        let timeout = self.duration("gse.timeout", raw.timeout.as_deref(), "10s");
        let rate_limit = self.rate_limit(raw.rate_limit.as_ref());
        let batch_size = self.positive("gse.batch_size", raw.batch_size, 1000, V1_MAX_BATCH as i64);
        GseConfig {
            api,
            v1_url,
            v2_url,
            app_code,
            app_secret,
            username,
            supplier_account: raw.supplier_account.unwrap_or_else(|| "0".into()),
            tenant_id: raw.tenant_id.and_then(|t| self.tenant("gse.tenant_id", t)),
            timeout,
            batch_size: batch_size as usize,
            rate_limit,
            max_in_flight: self.positive("gse.max_in_flight", raw.max_in_flight, 4, 256) as usize,
            max_attempts: self.positive("gse.max_attempts", raw.max_attempts, 4, 20) as u32,
            initial_backoff: self.duration(
                "gse.initial_backoff",
                raw.initial_backoff.as_deref(),
                "500ms",
            ),
            max_backoff: self.duration("gse.max_backoff", raw.max_backoff.as_deref(), "10s"),
            max_response_bytes: self.positive(
                "gse.max_response_bytes",
                raw.max_response_bytes,
                64 << 20,
                1 << 32,
            ) as usize,
            tls: self.upstream_tls("gse", raw.tls),
        }
    }

    fn batch_cap(&mut self, gse: &GseConfig, groups: &[GroupConfig]) {
        let uses_v2 = groups.iter().any(|g| g.api == ApiVersion::V2);
        if uses_v2 && gse.batch_size > V2_MAX_BATCH {
            let rule = format!("exceeds GSE 2.0's cap of {V2_MAX_BATCH} agent ids per request");
            self.problem("gse.batch_size", gse.batch_size.to_string(), &rule);
        }
    }

    fn secret(&mut self, inline: Option<&str>, file: Option<&Path>) -> Secret {
        self.secret_at("gse", inline, file)
    }

    fn secret_at(&mut self, block: &str, inline: Option<&str>, file: Option<&Path>) -> Secret {
        let key = format!("{block}.app_secret");
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, "", "set app_secret or app_secret_file, not both");
                Secret::default()
            }
            (Some(value), None) => {
                let before = self.problems.total();
                let secret = self.expand(&key, value, true);
                if self.problems.total() == before && secret.trim().is_empty() {
                    self.problem(key, "", "must not be empty");
                }
                Secret::new(secret)
            }
            (None, Some(path)) => self.secret_file(&format!("{block}.app_secret_file"), path),
            (None, None) => {
                self.problem(key, "", "is required (or app_secret_file)");
                Secret::default()
            }
        }
    }

    fn secret_file(&mut self, key: &str, path: &Path) -> Secret {
        let path_text = path.to_string_lossy().to_string();
        let expanded = self.expand(key, &path_text, false);
        let full = self.base_dir.join(expanded);
        let Some(bytes) = self.read_file(key, &full, SMALL_FILE) else {
            return Secret::default();
        };
        match std::str::from_utf8(&bytes).map(str::trim) {
            Ok(secret) if !secret.is_empty() => Secret::new(secret),
            Ok(_) => {
                self.problem(key, full.display(), "file is empty");
                Secret::default()
            }
            Err(_) => {
                self.problem(key, full.display(), "is not UTF-8 text");
                Secret::default()
            }
        }
    }

    /// A tenant id: sent as a header, so letters, digits, `-` and `_` only.
    fn tenant(&mut self, key: &str, tenant: String) -> Option<String> {
        let ok = !tenant.is_empty()
            && tenant.len() <= 64
            && tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            return Some(tenant);
        }
        let rule = "must be 1 to 64 letters, digits, '-' or '_' (it is sent as X-Bk-Tenant-Id)";
        self.problem(key, &tenant, rule);
        None
    }

    fn rate_limit(&mut self, raw: Option<&RawRateLimit>) -> RateLimit {
        match raw {
            Some(raw) => self.rate_limit_at("gse.rate_limit", raw),
            None => RateLimit::per_second(20.0, 10),
        }
    }

    fn rate_limit_at(&mut self, key: &str, raw: &RawRateLimit) -> RateLimit {
        let rps = raw.requests_per_second;
        let rps = if rps.is_finite() && rps > 0.0 && rps <= 100_000.0 {
            rps
        } else {
            let rule = "must be greater than 0 and at most 100000";
            self.problem(format!("{key}.requests_per_second"), rps.to_string(), rule);
            20.0
        };
        let burst = self.positive(&format!("{key}.burst"), raw.burst, 10, 10_000);
        RateLimit::per_second(rps, burst as u32)
    }

    fn groups(&mut self, raw: Vec<RawGroup>, gse: &GseConfig) -> Vec<GroupConfig> {
        if raw.is_empty() {
            self.problem("groups", "", "at least one group is required");
        }
        let mut seen = HashSet::new();
        let mut groups = Vec::with_capacity(raw.len());
        for (i, group) in raw.into_iter().enumerate() {
            let path = format!("groups[{i}]");
            if !seen.insert(group.name.clone()) {
                self.problem(format!("{path}.name"), &group.name, "duplicate group name");
            }
            groups.push(self.group(&path, group, gse));
        }
        groups
    }

    fn group(&mut self, path: &str, mut raw: RawGroup, gse: &GseConfig) -> GroupConfig {
        if raw.name.trim().is_empty() {
            self.problem(format!("{path}.name"), &raw.name, "must not be empty");
        }
        if raw.name.chars().any(super::is_unseen) {
            // A label value of every series, a column of `query`'s table and
            // a cell of the landing page: a line break forged a row there,
            // and an escape sequence reached the terminal.
            self.problem(
                format!("{path}.name"),
                &raw.name,
                "must not contain control characters (line breaks, tabs, escapes) or invisible ones that change how text is shown (bidirectional overrides, zero-width marks)",
            );
        }
        if raw.bk_biz_id <= 0 {
            self.problem(
                format!("{path}.bk_biz_id"),
                raw.bk_biz_id.to_string(),
                "must be a positive business id",
            );
        }
        let api = match raw.gse_api.as_deref() {
            Some(value) => self.api(&format!("{path}.gse_api"), value),
            None => gse.api,
        };
        if gse.url_for(api).is_none() {
            let key = format!("{path}.gse_api");
            let rule =
                format!("no URL for API {api}: set gse.url with gse.api: {api}, or gse.{api}_url");
            self.problem(key, api.to_string(), &rule);
        }
        self.labels(path, &raw.labels);
        let no_hosts = raw.hosts.list.is_empty();
        let hosts = self.hosts(path, std::mem::take(&mut raw.hosts.list), api);
        if no_hosts && raw.hosts_file.is_none() && raw.cmdb.is_none() {
            let rule = "a group needs a host source: hosts, hosts_file or cmdb";
            self.problem(path.to_string(), raw.name.clone(), rule);
        }
        let hosts_file = raw.hosts_file.map(|f| self.base_dir.join(f));
        if let Some(file) = &hosts_file {
            self.hosts_file(&format!("{path}.hosts_file"), file, api);
        }
        let tenant_id = raw
            .tenant_id
            .and_then(|t| self.tenant(&format!("{path}.tenant_id"), t));
        let cmdb = raw.cmdb.map(|c| GroupCmdb {
            tenant_id: tenant_id.clone(),
            ..self.group_cmdb(path, c)
        });
        for name in cmdb.iter().flat_map(|c| c.labels.iter()) {
            if raw.labels.contains_key(name) {
                let rule = "is also a cmdb label of the group";
                self.problem(format!("{path}.labels.{name}"), name, rule);
            }
        }
        let per_agent_metrics = raw.per_agent_metrics.unwrap_or(true);
        if cmdb.as_ref().is_some_and(|c| c.topology) {
            self.topology(path, &raw.labels, per_agent_metrics);
        }
        GroupConfig {
            name: raw.name,
            bk_biz_id: raw.bk_biz_id,
            api,
            labels: raw.labels.into_iter().collect(),
            hosts,
            hosts_file,
            cmdb,
            per_agent_metrics,
            tenant_id: tenant_id.or_else(|| gse.tenant_id.clone()),
        }
    }

    /// A group with `cmdb.topology`: its series are per agent, and its extra
    /// labels may not be topology labels.
    fn topology(&mut self, path: &str, labels: &BTreeMap<String, String>, per_agent: bool) {
        if !per_agent {
            let rule = "cmdb.topology needs per-agent series: one topology series per agent";
            self.problem(format!("{path}.per_agent_metrics"), "false", rule);
        }
        for name in labels.keys() {
            if TOPOLOGY_LABELS.contains(&name.as_str()) {
                let rule =
                    "is a label of gse_agent_topology_info, which the group has (cmdb.topology)";
                self.problem(format!("{path}.labels.{name}"), name, rule);
            }
        }
    }

    fn group_cmdb(&mut self, path: &str, raw: RawGroupCmdb) -> GroupCmdb {
        for (i, label) in raw.labels.iter().enumerate() {
            if !CMDB_LABEL_FIELDS.contains(&label.as_str()) {
                let rule = format!("must be one of {}", CMDB_LABEL_FIELDS.join(", "));
                self.problem(format!("{path}.cmdb.labels[{i}]"), label, &rule);
            }
        }
        if let Some(filter) = &raw.host_property_filter
            && !filter.is_object()
        {
            let rule = "must be a map {condition, rules}";
            self.problem(
                format!("{path}.cmdb.host_property_filter"),
                filter.to_string(),
                rule,
            );
        }
        GroupCmdb {
            bk_set_ids: raw.bk_set_ids,
            bk_module_ids: raw.bk_module_ids,
            host_property_filter: raw.host_property_filter,
            labels: raw.labels,
            topology: raw.topology,
            tenant_id: None,
        }
    }

    fn labels(&mut self, path: &str, labels: &BTreeMap<String, String>) {
        for name in labels.keys() {
            let key = format!("{path}.labels.{name}");
            if !is_label_name(name) {
                self.problem(
                    key,
                    name,
                    "is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                );
            } else if name.starts_with("__") || RESERVED_LABELS.contains(&name.as_str()) {
                self.problem(key, name, "is reserved: the exporter sets it");
            }
        }
    }
}

/// Gives each CMDB group without a `tenant_id` of its own the `cmdb:`
/// block's (groups are read before that block).
fn default_cmdb_tenants(groups: &mut [GroupConfig], cmdb: Option<&CmdbConfig>) {
    let Some(cmdb) = cmdb else { return };
    for selection in groups.iter_mut().filter_map(|g| g.cmdb.as_mut()) {
        if selection.tenant_id.is_none() {
            selection.tenant_id = cmdb.tenant_id.clone();
        }
    }
}

/// The longest duration any key takes.
const LONGEST_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest value of a duration key (and how the rule says it): a
/// schedule faster than this only floods GSE and the logs.
fn shortest(key: &str) -> (Duration, &'static str) {
    match key {
        "interval" | "info_interval" | "otlp.interval" => (Duration::from_millis(100), "100ms"),
        "cmdb.refresh_interval" => (Duration::from_secs(1), "1s"),
        "gse.timeout" | "cmdb.timeout" | "otlp.timeout" => (Duration::from_millis(10), "10ms"),
        _ => (Duration::from_millis(1), "1ms"),
    }
}

/// The listing path with `_topo` added to its last segment: CMDB names the
/// topology variant of each host listing so (ESB `list_biz_hosts_topo`,
/// gateway `list_hosts_topo`, with or without `/open`).
fn default_topology_path(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(bare) => format!("{bare}_topo/"),
        None => format!("{path}_topo"),
    }
}

/// ESB `search_business`; the gateway's `biz/search`, under `/open` when the
/// listing is.
fn default_business_path(api: CmdbApi, path: &str) -> &'static str {
    match api {
        CmdbApi::Esb => "/search_business/",
        CmdbApi::Gateway if path.starts_with("/api/v3/open/") => {
            "/api/v3/open/biz/search/{bk_supplier_account}"
        }
        CmdbApi::Gateway => "/api/v3/biz/search/{bk_supplier_account}",
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands `${VAR}` references; returns the name of the first unset variable.
pub(crate) fn expand_env(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&env(name).ok_or_else(|| name.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::fmt;

    use super::*;

    /// A value that counts how often it is written out.
    struct Counted<'a>(&'a Cell<usize>);

    impl fmt::Display for Counted<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.set(self.0.get() + 1);
            f.write_str("value")
        }
    }

    #[test]
    fn problems_past_those_kept_are_counted_and_not_written_out() {
        let env = |_: &str| None;
        let mut validator = Validator::new(&env, Path::new("."));
        let written = Cell::new(0);
        let found = MAX_KEPT_PROBLEMS + 10_000;
        for _ in 0..found {
            validator.problem("groups[0].hosts_file", Counted(&written), "a rule");
        }
        assert_eq!(validator.problems.total(), found);
        assert_eq!(written.get(), MAX_KEPT_PROBLEMS);
    }

    #[test]
    fn otlp_headers_from_the_environment_are_checked_as_the_files_are() {
        let yaml = "gse: {url: http://gse, app_code: a, app_secret: b}\ngroups: [{name: a, bk_biz_id: 1, hosts: ['0:10.0.0.1']}]\n\
                    otlp: {endpoint: 'http://u:Sup3rPass@collector:4318', headers: {x-tenant: t}}\n";
        let raw = crate::config::parse_raw(yaml).unwrap();
        let env = |name: &str| {
            match name {
            "OTEL_EXPORTER_OTLP_HEADERS" => {
                Some("x-ok=1,authorization=Bearer%20s3cr3t,no-equals-here,content-length=5,x-tenant=u,x-ok=2".into())
            }
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS" => Some("x-ok=3, x-bad=caf%C3%A9".into()),
            _ => None,
        }
        };
        let mut validator = Validator::new(&env, Path::new("."));
        validator.config(raw);
        let shown = validator.problems.listed(20);
        let prefix = "OTEL_EXPORTER_OTLP_HEADERS";
        let given = "names a header given already";
        assert_eq!(
            shown,
            [
                format!("{prefix}[1]: authorization: {given} (in otlp.headers, by the endpoint's user and password, or earlier in this variable)"),
                format!("{prefix}[2]: is not NAME=VALUE"),
                format!("{prefix}[3]: content-length: belongs to the transport, which sets it for each push (a content-length cut every push short, counted a success)"),
                format!("{prefix}[4]: x-tenant: {given} (in otlp.headers, by the endpoint's user and password, or earlier in this variable)"),
                format!("{prefix}[5]: x-ok: {given} (in otlp.headers, by the endpoint's user and password, or earlier in this variable)"),
                "OTEL_EXPORTER_OTLP_METRICS_HEADERS[1]: value must be visible ASCII (no line breaks)".to_string(),
            ],
        );
        assert!(!shown.concat().contains("s3cr3t"));
    }

    #[test]
    fn a_url_with_an_unset_variable_is_refused_without_its_password() {
        let env = |_: &str| None;
        let mut validator = Validator::new(&env, Path::new("."));
        let url = "http://otel:Sup3rSecretPass@collector:${OTLP_PORT}/v1/metrics";
        assert_eq!(validator.url("otlp.endpoint", Some(url)), None);
        let shown = validator.problems.listed(10);
        assert_eq!(
            shown,
            [
                "otlp.endpoint: http://***@collector:${OTLP_PORT}/v1/metrics: environment variable OTLP_PORT is not set"
            ],
            "one problem, the password hidden"
        );
    }
}
