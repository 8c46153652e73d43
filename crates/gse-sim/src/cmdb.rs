//! The simulated CMDB: the hosts of each business, derived from the fleet.
//!
//! Owns `BizSpec`, `CmdbHost`, `Addressing`, the deterministic generation
//! of every business from the fleet (which hosts are multi-IP, IPv6-only,
//! dynamic or CMDB-only), the per-business visible share, and answering one
//! `list_biz_hosts` query (filters, sort, page, field selection). It knows
//! nothing about HTTP, envelopes, credentials or faults.
//!
//! Generation: businesses are filled in `SimOptions::businesses` order and
//! each takes the next fleet agents in fleet order. Host ids count up from
//! 1001 in that order. Slot `j` (0-based) of a business is, by position:
//! - `j % 50 == 25`: IPv6 only, no agent id, unknown to GSE; it consumes no
//!   fleet agent (so a business of N hosts takes N minus these from the
//!   fleet).
//! - `j % 20 == 10`: multi-IP, `"<agent ip>,<spare ip>"`.
//! - `j % 50 == 45` and the agent has an agent id: IPv6 only (no
//!   `bk_host_innerip`), `dynamic`, askable by agent id only.
//! - `j % 5 == 3` and the agent has an agent id: `dynamic` (IPv4 kept).
//! - otherwise `static`, with the agent's id ("" for legacy agents).
//!
//! Once the fleet is used up, further hosts are CMDB-only: cloud 0, an IP
//! from 100.64.0.0/10 and (nine in ten) an agent id GSE does not know.
//! Spare addresses of multi-IP hosts come from the same range. Membership:
//! set `biz*100 + j%3 + 1`, module `biz*1000 + j%6 + 1` (module in its set);
//! `j % 7 == 3` is also in module `(j+3)%6 + 1` of the same set and
//! `j % 13 == 6` also in module `(j+1)%6 + 1` of the next set (see `topo`
//! for the names). Maintainers: `operator` cycles through `alice`, `bob`,
//! `carol` and `alice,dave` by `j % 4`; `bk_bak_operator` is `oncall` for
//! even `j`, else empty.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::fleet::{Fleet, SimOptions, mix};
use super::topo::Tables;

/// Most rows one page may ask for (CMDB's documented limit).
pub(crate) const MAX_PAGE: i64 = 500;
/// CMDB `CCErrCommJSONUnmarshalFailed`.
pub(crate) const CODE_BAD_JSON: i64 = 1199000;
/// CMDB `CCErrCommParamsInvalid`.
pub(crate) const CODE_PARAMS_INVALID: i64 = 1199006;
const MAX_SET_IDS: usize = 200;
const MAX_MODULE_IDS: usize = 500;
const FIRST_HOST_ID: i64 = 1001;
const SALT_SYNTH: u64 = 0xC3D8_0001;
const SALT_VISIBLE: u64 = 0xC3D8_0002;

/// Fields returned when a request names none.
const HOST_FIELDS: [&str; 7] = [
    "bk_host_id",
    "bk_cloud_id",
    "bk_host_innerip",
    "bk_host_innerip_v6",
    "bk_agent_id",
    "bk_addressing",
    "bk_host_name",
];
/// Membership and maintainer fields: returned, filtered and sorted on only
/// when asked.
const ASKED_FIELDS: [&str; 4] = ["bk_set_id", "bk_module_id", "operator", "bk_bak_operator"];
/// Maintainers by `j % 4`.
const OPERATORS: [&str; 4] = ["alice", "bob", "carol", "alice,dave"];

/// One business of the simulated CMDB and how many hosts it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BizSpec {
    /// Business id.
    pub bk_biz_id: i64,
    /// Hosts in the business, exactly (CMDB-only ones once the fleet is used up).
    pub hosts: usize,
}

impl BizSpec {
    /// What an empty `SimOptions::businesses` means: biz 2, 3 and 5 with
    /// 40 %, 30 % and the rest of a fleet of `agents`, each sized so that
    /// every fleet agent lands in exactly one business (plus its IPv6-only
    /// hosts, which take no fleet agent).
    pub fn default_split(agents: usize) -> Vec<BizSpec> {
        let a = agents * 4 / 10;
        let b = agents * 3 / 10;
        [(2, a), (3, b), (5, agents - a - b)]
            .into_iter()
            .map(|(bk_biz_id, fleet)| BizSpec {
                bk_biz_id,
                hosts: hosts_for_fleet(fleet),
            })
            .collect()
    }
}

/// Slots needed so that `fleet` of them take a fleet agent.
fn hosts_for_fleet(fleet: usize) -> usize {
    let mut n = fleet;
    while n - v6_only_slots(n) < fleet {
        n += 1;
    }
    n
}

/// How many of `n` slots are IPv6-only hosts without an agent.
fn v6_only_slots(n: usize) -> usize {
    (n + 24) / 50
}

/// CMDB `bk_addressing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    /// The inner IP identifies the host (`cloud:ip` is usable).
    #[default]
    Static,
    /// The IP may change or repeat; only the agent id identifies the host.
    Dynamic,
}

/// One host as the simulated CMDB stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmdbHost {
    /// Unique host id.
    pub bk_host_id: i64,
    /// Cloud area id.
    #[serde(default)]
    pub bk_cloud_id: i64,
    /// IPv4 addresses, comma-separated; "" for IPv6-only hosts.
    #[serde(default)]
    pub bk_host_innerip: String,
    /// IPv6 address; "" for most hosts.
    #[serde(default)]
    pub bk_host_innerip_v6: String,
    /// GSE 2.0 agent id; "" for legacy agents and agentless hosts.
    #[serde(default)]
    pub bk_agent_id: String,
    /// Static or dynamic addressing.
    #[serde(default)]
    pub bk_addressing: Addressing,
    /// Host name.
    #[serde(default)]
    pub bk_host_name: String,
    /// Set the host belongs to (returned only when asked).
    #[serde(default)]
    pub bk_set_id: i64,
    /// Module the host belongs to (returned only when asked).
    #[serde(default)]
    pub bk_module_id: i64,
    /// Further modules the host belongs to, besides `bk_module_id`.
    #[serde(default)]
    pub more_modules: Vec<ModuleRef>,
    /// Main maintainers, comma-separated (CMDB `objuser`; returned only when asked).
    #[serde(default)]
    pub operator: String,
    /// Backup maintainers, comma-separated (returned only when asked).
    #[serde(default)]
    pub bk_bak_operator: String,
}

/// A module a host belongs to and that module's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModuleRef {
    /// The set.
    pub bk_set_id: i64,
    /// The module.
    pub bk_module_id: i64,
}

impl CmdbHost {
    /// The first IPv4 address of `bk_host_innerip`, if any.
    pub fn first_ipv4(&self) -> Option<&str> {
        self.bk_host_innerip
            .split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
    }

    /// Every module the host belongs to, `bk_module_id` first.
    pub fn memberships(&self) -> Vec<ModuleRef> {
        let first = ModuleRef {
            bk_set_id: self.bk_set_id,
            bk_module_id: self.bk_module_id,
        };
        std::iter::once(first)
            .chain(self.more_modules.iter().copied())
            .collect()
    }

    /// The value of a known field.
    pub(crate) fn field(&self, name: &str) -> Option<Value> {
        Some(match name {
            "bk_host_id" => json!(self.bk_host_id),
            "bk_cloud_id" => json!(self.bk_cloud_id),
            "bk_host_innerip" => json!(self.bk_host_innerip),
            "bk_host_innerip_v6" => json!(self.bk_host_innerip_v6),
            "bk_agent_id" => json!(self.bk_agent_id),
            "bk_addressing" => json!(self.bk_addressing),
            "bk_host_name" => json!(self.bk_host_name),
            "bk_set_id" => json!(self.bk_set_id),
            "bk_module_id" => json!(self.bk_module_id),
            "operator" => json!(self.operator),
            "bk_bak_operator" => json!(self.bk_bak_operator),
            _ => return None,
        })
    }

    /// Values a filter rule compares with: IP fields match the whole
    /// string or any one of its comma-separated addresses.
    pub(crate) fn candidates(&self, name: &str) -> Vec<Value> {
        let Some(whole) = self.field(name) else {
            return Vec::new();
        };
        let mut out = vec![whole];
        if name.starts_with("bk_host_innerip") {
            let text = if name == "bk_host_innerip" {
                &self.bk_host_innerip
            } else {
                &self.bk_host_innerip_v6
            };
            let parts = text.split(',').map(str::trim).filter(|p| !p.is_empty());
            out.extend(parts.map(|p| json!(p)));
        }
        out
    }
}

/// Whether `name` is a host field the simulator knows.
pub(crate) fn known_field(name: &str) -> bool {
    HOST_FIELDS.contains(&name) || ASKED_FIELDS.contains(&name)
}

/// The modules of slot `j` besides its own (see the module docs).
fn more_modules(biz: i64, j: usize) -> Vec<ModuleRef> {
    let module = |m: usize| ModuleRef {
        bk_set_id: biz.saturating_mul(100).saturating_add((m % 3) as i64 + 1),
        bk_module_id: biz.saturating_mul(1000).saturating_add(m as i64 + 1),
    };
    let mut more = Vec::new();
    if j % 7 == 3 {
        more.push(module((j + 3) % 6));
    }
    if j % 13 == 6 {
        more.push(module((j + 1) % 6));
    }
    more
}

/// Where a generated host's addresses come from.
struct Source {
    cloud: i64,
    ip: String,
    agent_id: String,
}

/// Walks the fleet while filling businesses.
struct Generator<'a> {
    seed: u64,
    fleet: &'a Fleet,
    cursor: usize,
    next_id: i64,
    spare: u64,
}

impl Generator<'_> {
    fn business(&mut self, spec: BizSpec) -> Vec<CmdbHost> {
        (0..spec.hosts)
            .map(|j| self.host(spec.bk_biz_id, j))
            .collect()
    }

    fn host(&mut self, biz: i64, j: usize) -> CmdbHost {
        let id = self.next_id;
        self.next_id += 1;
        let m = (j % 6) as i64;
        let mut h = CmdbHost {
            bk_host_id: id,
            bk_cloud_id: 0,
            bk_host_innerip: String::new(),
            bk_host_innerip_v6: String::new(),
            bk_agent_id: String::new(),
            bk_addressing: Addressing::Static,
            bk_host_name: format!("sim-{id}"),
            bk_set_id: biz.saturating_mul(100).saturating_add(m % 3 + 1),
            bk_module_id: biz.saturating_mul(1000).saturating_add(m + 1),
            more_modules: more_modules(biz, j),
            operator: OPERATORS[j % 4].to_string(),
            bk_bak_operator: if j.is_multiple_of(2) { "oncall" } else { "" }.to_string(),
        };
        if j % 50 == 25 {
            h.bk_host_innerip_v6 = format!("fd00::{id:x}");
            return h;
        }
        let src = self.source(id);
        let modern = !src.agent_id.is_empty();
        (h.bk_cloud_id, h.bk_host_innerip, h.bk_agent_id) = (src.cloud, src.ip, src.agent_id);
        if j % 20 == 10 {
            let spare = self.spare_ip();
            h.bk_host_innerip = format!("{},{spare}", h.bk_host_innerip);
        } else if j % 50 == 45 && modern {
            h.bk_host_innerip.clear();
            h.bk_host_innerip_v6 = format!("fd00::{id:x}");
            h.bk_addressing = Addressing::Dynamic;
        } else if j % 5 == 3 && modern {
            h.bk_addressing = Addressing::Dynamic;
        }
        h
    }

    /// The next fleet agent, or a CMDB-only host once the fleet is used up.
    fn source(&mut self, id: i64) -> Source {
        if let Some(a) = self.fleet.agent(self.cursor) {
            self.cursor += 1;
            return Source {
                cloud: a.cloud,
                ip: a.ip.clone(),
                agent_id: a.agent_id.clone(),
            };
        }
        let r = mix(self.seed ^ SALT_SYNTH, id as u64);
        let agent_id = if r.is_multiple_of(10) {
            String::new()
        } else {
            format!("0200{r:016x}{:012x}", id as u64 & 0xFFFF_FFFF_FFFF)
        };
        Source {
            cloud: 0,
            ip: self.spare_ip(),
            agent_id,
        }
    }

    /// A fresh address in 100.64.0.0/10, never a fleet address.
    fn spare_ip(&mut self) -> String {
        let k = self.spare;
        self.spare += 1;
        let c = k % 250 + 1;
        let b = (k / 250) % 256;
        let a = 64 + (k / (250 * 256)) % 64;
        format!("100.{a}.{b}.{c}")
    }
}

/// One business: its hosts (sorted by id), the share CMDB serves, and its
/// name and set and module names.
#[derive(Debug, Clone)]
pub(crate) struct Business {
    pub(crate) hosts: Vec<CmdbHost>,
    visible_share: f64,
    pub(crate) tables: Tables,
}

impl Business {
    fn new(biz: i64) -> Self {
        Self {
            hosts: Vec::new(),
            visible_share: 1.0,
            tables: Tables::generated(biz),
        }
    }
}

/// Every business and its hosts.
#[derive(Debug)]
pub(crate) struct Cmdb {
    seed: u64,
    businesses: BTreeMap<i64, Business>,
}

impl Cmdb {
    /// The businesses `opts` describes, filled from `fleet`.
    pub fn new(opts: &SimOptions, fleet: &Fleet) -> Self {
        let specs = if opts.businesses.is_empty() {
            BizSpec::default_split(opts.agents)
        } else {
            opts.businesses.clone()
        };
        let mut generator = Generator {
            seed: opts.seed,
            fleet,
            cursor: 0,
            next_id: FIRST_HOST_ID,
            spare: 0,
        };
        let mut businesses: BTreeMap<i64, Business> = BTreeMap::new();
        for spec in specs {
            let hosts = generator.business(spec);
            let biz = businesses
                .entry(spec.bk_biz_id)
                .or_insert_with(|| Business::new(spec.bk_biz_id));
            biz.hosts.extend(hosts);
        }
        Self {
            seed: opts.seed,
            businesses,
        }
    }

    /// Business ids, ascending.
    pub fn business_ids(&self) -> Vec<i64> {
        self.businesses.keys().copied().collect()
    }

    /// The hosts CMDB serves for `biz` (visible share applied), by id.
    pub fn visible(&self, biz: i64) -> Vec<CmdbHost> {
        self.visible_refs(biz).into_iter().cloned().collect()
    }

    /// A business, if it exists.
    pub(crate) fn business(&self, biz: i64) -> Option<&Business> {
        self.businesses.get(&biz)
    }

    /// Every business, by id.
    pub(crate) fn businesses(&self) -> impl Iterator<Item = (i64, &Business)> {
        self.businesses.iter().map(|(id, b)| (*id, b))
    }

    /// A business, created (empty, with generated names) if new.
    pub(crate) fn business_mut(&mut self, biz: i64) -> &mut Business {
        self.businesses
            .entry(biz)
            .or_insert_with(|| Business::new(biz))
    }

    pub(crate) fn visible_refs(&self, biz: i64) -> Vec<&CmdbHost> {
        let Some(b) = self.businesses.get(&biz) else {
            return Vec::new();
        };
        if b.visible_share >= 1.0 {
            return b.hosts.iter().collect();
        }
        // Keep exactly floor(share * n), chosen by a fixed per-host rank so
        // the hidden hosts are scattered and a smaller share is a subset.
        let keep = (b.visible_share.max(0.0) * b.hosts.len() as f64).floor() as usize;
        let rank = |h: &CmdbHost| {
            (
                mix(self.seed ^ SALT_VISIBLE, h.bk_host_id as u64),
                h.bk_host_id,
            )
        };
        let mut ranked: Vec<_> = b.hosts.iter().map(rank).collect();
        ranked.sort_unstable();
        let kept: HashSet<i64> = ranked.iter().take(keep).map(|r| r.1).collect();
        b.hosts
            .iter()
            .filter(|h| kept.contains(&h.bk_host_id))
            .collect()
    }

    /// Replace the hosts of `biz` (created if new; visible share kept).
    pub fn set_hosts(&mut self, biz: i64, hosts: Vec<CmdbHost>) {
        self.business_mut(biz).hosts.clear();
        self.add_hosts(biz, hosts);
    }

    /// Add hosts to `biz`, replacing any with the same id.
    pub fn add_hosts(&mut self, biz: i64, hosts: Vec<CmdbHost>) {
        let b = self.business_mut(biz);
        let new: HashSet<i64> = hosts.iter().map(|h| h.bk_host_id).collect();
        b.hosts.retain(|h| !new.contains(&h.bk_host_id));
        b.hosts.extend(hosts);
        b.hosts.sort_by_key(|h| h.bk_host_id);
        b.hosts.dedup_by_key(|h| h.bk_host_id);
    }

    /// Remove hosts by id from `biz`; returns how many were removed.
    pub fn remove_hosts(&mut self, biz: i64, ids: &[i64]) -> usize {
        let Some(b) = self.businesses.get_mut(&biz) else {
            return 0;
        };
        let before = b.hosts.len();
        b.hosts.retain(|h| !ids.contains(&h.bk_host_id));
        before - b.hosts.len()
    }

    /// Serve only `share` (clamped to 0..=1; NaN means 1) of `biz`'s hosts.
    pub fn set_visible_share(&mut self, biz: i64, share: f64) {
        let share = if share.is_nan() {
            1.0
        } else {
            share.clamp(0.0, 1.0)
        };
        self.business_mut(biz).visible_share = share;
    }

    /// The `data` of a `list_biz_hosts` reply: `{count, info}`. An unknown
    /// business has no hosts.
    pub fn list(&self, biz: i64, q: &HostQuery) -> Value {
        let mut hosts: Vec<&CmdbHost> = self
            .visible_refs(biz)
            .into_iter()
            .filter(|h| q.admits(h))
            .collect();
        hosts.sort_by(|a, b| q.order(a, b));
        let info: Vec<Value> = hosts
            .iter()
            .skip(q.start)
            .take(q.limit)
            .map(|h| q.project(h))
            .collect();
        json!({"count": hosts.len(), "info": info})
    }
}

/// The body of a `list_biz_hosts` request, as far as the simulator reads it.
#[derive(Debug, Deserialize)]
struct RawQuery {
    page: Option<RawPage>,
    fields: Option<Vec<String>>,
    bk_set_ids: Option<Vec<i64>>,
    bk_module_ids: Option<Vec<i64>>,
    host_property_filter: Option<Value>,
    set_cond: Option<Value>,
    module_cond: Option<Value>,
}

/// The `page` of a host listing (`list_biz_hosts`, `list_biz_hosts_topo`).
#[derive(Debug, Deserialize)]
pub(crate) struct RawPage {
    pub(crate) start: Option<i64>,
    pub(crate) limit: Option<i64>,
    sort: Option<String>,
}

/// A listing's required `page`, checked as CMDB does: start, limit (1 to
/// [`MAX_PAGE`]), sort field and whether it is descending.
pub(crate) fn parse_page(page: Option<RawPage>) -> Result<(usize, usize, String, bool), String> {
    let page = page.ok_or("page: this field is required")?;
    let limit = page.limit.unwrap_or(0);
    if limit <= 0 || limit > MAX_PAGE {
        return Err(format!(
            "page.limit {limit} is invalid: must be within 1..={MAX_PAGE}"
        ));
    }
    let start = page.start.unwrap_or(0);
    let start = usize::try_from(start).map_err(|_| format!("page.start {start} < 0"))?;
    let (sort, desc) = parse_sort(page.sort.as_deref().unwrap_or(""))?;
    Ok((start, limit as usize, sort, desc))
}

/// A validated `list_biz_hosts` query.
#[derive(Debug)]
pub(crate) struct HostQuery {
    start: usize,
    limit: usize,
    sort: String,
    desc: bool,
    fields: Vec<String>,
    set_ids: Vec<i64>,
    module_ids: Vec<i64>,
    filter: Option<Filter>,
}

impl HostQuery {
    /// Validate a request body; the error is the message for 1199006.
    pub fn parse(body: &Value) -> Result<HostQuery, String> {
        let raw: RawQuery = serde_json::from_value(body.clone())
            .map_err(|e| format!("request parameters are invalid: {e}"))?;
        if raw.set_cond.is_some() || raw.module_cond.is_some() {
            return Err("set_cond and module_cond are not supported by the simulator".into());
        }
        let (start, limit, sort, desc) = parse_page(raw.page)?;
        let set_ids = raw.bk_set_ids.unwrap_or_default();
        let module_ids = raw.bk_module_ids.unwrap_or_default();
        if set_ids.len() > MAX_SET_IDS || module_ids.len() > MAX_MODULE_IDS {
            return Err(format!(
                "at most {MAX_SET_IDS} bk_set_ids and {MAX_MODULE_IDS} bk_module_ids"
            ));
        }
        Ok(HostQuery {
            start,
            limit,
            sort,
            desc,
            fields: select_fields(raw.fields.unwrap_or_default()),
            set_ids,
            module_ids,
            filter: parse_property_filter(
                "host_property_filter",
                raw.host_property_filter,
                &known_field,
            )?,
        })
    }

    fn admits(&self, h: &CmdbHost) -> bool {
        let memberships = h.memberships();
        let in_set = |id: &i64| memberships.iter().any(|m| m.bk_set_id == *id);
        let in_module = |id: &i64| memberships.iter().any(|m| m.bk_module_id == *id);
        (self.set_ids.is_empty() || self.set_ids.iter().any(in_set))
            && (self.module_ids.is_empty() || self.module_ids.iter().any(in_module))
            && self
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(&|name| h.candidates(name)))
    }

    pub(crate) fn order(&self, a: &CmdbHost, b: &CmdbHost) -> Ordering {
        let by_field = match (a.field(&self.sort), b.field(&self.sort)) {
            (Some(x), Some(y)) => value_cmp(&x, &y),
            _ => Ordering::Equal,
        };
        let o = by_field.then(a.bk_host_id.cmp(&b.bk_host_id));
        if self.desc { o.reverse() } else { o }
    }

    fn project(&self, h: &CmdbHost) -> Value {
        let map: Map<String, Value> = self
            .fields
            .iter()
            .filter_map(|f| Some((f.clone(), h.field(f)?)))
            .collect();
        Value::Object(map)
    }
}

/// `"bk_host_id"` or `"-bk_host_id"` (descending); "" means `bk_host_id`.
pub(crate) fn parse_sort(sort: &str) -> Result<(String, bool), String> {
    let sort = sort.trim();
    let (field, desc) = match sort.strip_prefix('-') {
        Some(f) => (f, true),
        None => (sort, false),
    };
    let field = if field.is_empty() {
        "bk_host_id"
    } else {
        field
    };
    if known_field(field) {
        Ok((field.to_string(), desc))
    } else {
        Err(format!("page.sort: unknown field {field:?}"))
    }
}

/// The known fields asked for, deduplicated; all host fields if none.
pub(crate) fn select_fields(asked: Vec<String>) -> Vec<String> {
    if asked.is_empty() {
        return HOST_FIELDS.iter().map(|f| f.to_string()).collect();
    }
    let mut out: Vec<String> = Vec::new();
    for f in asked {
        if known_field(&f) && !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// Integers by value, strings by text, anything else equal.
fn value_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_i64().cmp(&y.as_i64()),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// A `*_property_filter`: groups of rules, at most two levels deep.
#[derive(Debug)]
pub(crate) enum Filter {
    Group { any: bool, items: Vec<Filter> },
    Rule { field: String, op: Op, value: Value },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Equal,
    NotEqual,
    In,
    NotIn,
}

/// Most levels of grouping a filter may use.
const MAX_FILTER_DEPTH: usize = 2;

/// Which field names a filter may use.
pub(crate) type Known<'a> = &'a dyn Fn(&str) -> bool;

/// Parses the filter named `name` (for messages); `known` says which fields
/// it may compare.
pub(crate) fn parse_property_filter(
    name: &str,
    v: Option<Value>,
    known: Known,
) -> Result<Option<Filter>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.is_empty() => Ok(None),
        Some(v) => parse_filter(name, &v, 0, known).map(Some),
    }
}

fn parse_filter(name: &str, v: &Value, depth: usize, known: Known) -> Result<Filter, String> {
    let bad = |what: &str| format!("{name}: {what}");
    let Some(obj) = v.as_object() else {
        return Err(bad("a rule must be an object"));
    };
    if let Some(cond) = obj.get("condition") {
        if depth >= MAX_FILTER_DEPTH {
            return Err(bad("nested more than 2 levels"));
        }
        let any = match cond.as_str().map(str::to_ascii_uppercase).as_deref() {
            Some("AND") => false,
            Some("OR") => true,
            _ => return Err(bad("condition must be AND or OR")),
        };
        let rules = obj.get("rules").and_then(Value::as_array);
        let rules = rules.filter(|r| !r.is_empty());
        let rules = rules.ok_or_else(|| bad("rules must be a non-empty list"))?;
        let items = rules
            .iter()
            .map(|r| parse_filter(name, r, depth + 1, known))
            .collect::<Result<_, _>>()?;
        return Ok(Filter::Group { any, items });
    }
    parse_rule(obj, known).map_err(|e| bad(&e))
}

fn parse_rule(obj: &Map<String, Value>, known: Known) -> Result<Filter, String> {
    let field = obj.get("field").and_then(Value::as_str).unwrap_or("");
    if !known(field) {
        return Err(format!("unknown field {field:?}"));
    }
    let op = match obj.get("operator").and_then(Value::as_str) {
        Some("equal") => Op::Equal,
        Some("not_equal") => Op::NotEqual,
        Some("in") => Op::In,
        Some("not_in") => Op::NotIn,
        other => return Err(format!("unsupported operator {other:?}")),
    };
    let value = obj.get("value").cloned().unwrap_or(Value::Null);
    let list = matches!(op, Op::In | Op::NotIn);
    let ok = if list {
        value.is_array()
    } else {
        value.is_string() || value.is_number() || value.is_boolean()
    };
    if !ok {
        return Err(format!("value of {field} does not suit its operator"));
    }
    Ok(Filter::Rule {
        field: field.to_string(),
        op,
        value,
    })
}

impl Filter {
    /// Whether the object whose field values `candidates` gives matches.
    pub(crate) fn matches(&self, candidates: &dyn Fn(&str) -> Vec<Value>) -> bool {
        match self {
            Filter::Group { any: true, items } => items.iter().any(|f| f.matches(candidates)),
            Filter::Group { any: false, items } => items.iter().all(|f| f.matches(candidates)),
            Filter::Rule { field, op, value } => {
                let cands = candidates(field);
                let hit = |v: &Value| cands.contains(v);
                match op {
                    Op::Equal => hit(value),
                    Op::NotEqual => !hit(value),
                    Op::In => value.as_array().is_some_and(|l| l.iter().any(hit)),
                    Op::NotIn => !value.as_array().is_some_and(|l| l.iter().any(hit)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdb(opts: &SimOptions) -> Cmdb {
        Cmdb::new(opts, &Fleet::new(opts))
    }

    fn query(body: Value) -> HostQuery {
        HostQuery::parse(&body).unwrap()
    }

    #[test]
    fn default_split_covers_the_fleet_once() {
        let opts = SimOptions::default();
        let c = cmdb(&opts);
        assert_eq!(c.business_ids(), vec![2, 3, 5]);
        let fleet_ips: Vec<String> = Fleet::new(&opts)
            .truth()
            .into_iter()
            .map(|t| t.ip)
            .collect();
        let mut seen = Vec::new();
        for biz in c.business_ids() {
            for h in c.visible(biz) {
                if let Some(ip) = h.first_ipv4().filter(|ip| ip.starts_with("10.")) {
                    seen.push(ip.to_string());
                } else if !h.bk_agent_id.is_empty() {
                    seen.push(format!("id:{}", h.bk_agent_id));
                }
            }
        }
        assert_eq!(seen.len(), fleet_ips.len());
        assert_eq!(c.visible(2).len(), hosts_for_fleet(400));
    }

    #[test]
    fn exact_sizes_and_cmdb_only_hosts() {
        let opts = SimOptions {
            agents: 100,
            businesses: vec![BizSpec {
                bk_biz_id: 9,
                hosts: 2345,
            }],
            ..SimOptions::default()
        };
        let hosts = cmdb(&opts).visible(9);
        assert_eq!(hosts.len(), 2345);
        let ids: HashSet<i64> = hosts.iter().map(|h| h.bk_host_id).collect();
        assert_eq!(ids.len(), 2345);
        let v6 = hosts
            .iter()
            .filter(|h| h.bk_host_innerip.is_empty())
            .count();
        assert!(v6 >= v6_only_slots(2345));
        assert!(
            hosts
                .iter()
                .any(|h| h.first_ipv4().is_some_and(|ip| ip.starts_with("100.")))
        );
    }

    #[test]
    fn filters_sort_and_page() {
        let c = cmdb(&SimOptions::default());
        let all = c.visible(2);
        let q = query(
            json!({"page": {"start": 0, "limit": 500, "sort": "-bk_host_id"},
            "fields": ["bk_host_id", "nope"],
            "host_property_filter": {"condition": "OR", "rules": [
                {"field": "bk_addressing", "operator": "equal", "value": "dynamic"},
                {"condition": "AND", "rules": [
                    {"field": "bk_host_id", "operator": "in", "value": [all[0].bk_host_id]}]}]}}),
        );
        let data = c.list(2, &q);
        let want = all
            .iter()
            .filter(|h| h.bk_addressing == Addressing::Dynamic || h.bk_host_id == all[0].bk_host_id)
            .count();
        assert_eq!(data["count"], json!(want));
        let info = data["info"].as_array().unwrap();
        assert_eq!(
            info.last().unwrap(),
            &json!({"bk_host_id": all[0].bk_host_id})
        );
        let deep = json!({"page": {"limit": 1}, "host_property_filter": {"condition": "AND",
            "rules": [{"condition": "AND", "rules": [{"condition": "AND", "rules": []}]}]}});
        assert!(HostQuery::parse(&deep).is_err());
    }

    #[test]
    fn multi_ip_matches_each_address() {
        let c = cmdb(&SimOptions::default());
        let multi = c
            .visible(2)
            .into_iter()
            .find(|h| h.bk_host_innerip.contains(','))
            .unwrap();
        let first = multi.first_ipv4().unwrap().to_string();
        let q = query(
            json!({"page": {"limit": 10}, "host_property_filter": {"condition": "AND",
            "rules": [{"field": "bk_host_innerip", "operator": "equal", "value": first}]}}),
        );
        assert_eq!(c.list(2, &q)["count"], json!(1));
    }

    #[test]
    fn visible_share_is_exact_and_nested() {
        let mut c = cmdb(&SimOptions::default());
        let n = c.visible(3).len();
        c.set_visible_share(3, 0.5);
        let half = c.visible(3);
        assert_eq!(half.len(), n / 2);
        c.set_visible_share(3, 0.25);
        let quarter = c.visible(3);
        assert!(quarter.iter().all(|h| half.contains(h)));
    }
}
