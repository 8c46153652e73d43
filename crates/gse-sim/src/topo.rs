//! The simulated CMDB's business topology: each business's name and its set
//! and module names, answering `list_biz_hosts_topo` (hosts with the sets
//! and modules they belong to) and `search_business` (business names).
//!
//! Owns `Tables`, `HostTopo`/`TopoSet`/`TopoModule` (the wire shape of a
//! host's topology), and the two queries. Hosts, their memberships and the
//! host filter live in `cmdb`; HTTP and envelopes in `cmdb_http`.
//!
//! Generated names, the same in every business: sets `biz*100 + k`
//! (k = 1, 2, 3) are `接入层`, `logic`, `storage`; modules `biz*1000 + m`
//! (m = 1..=6, module m in set `(m-1)%3 + 1`) are `nginx`, `api`, `mysql`,
//! `gateway`, `worker "batch"` and `redis`. The business is `Business <id>`.
//! Ids without a name (hosts a test added to other sets or modules) read as
//! `set-<id>` / `module-<id>`.
//!
//! Choices where CMDB is silent or random: a host's `topo` lists its sets by
//! descending id and each set's modules by descending id (CMDB's order comes
//! from a Go map, so clients must sort); `bk_set_ids`, `bk_module_ids`,
//! `set_cond` and `module_cond` in a `list_biz_hosts_topo` body are refused
//! with 1199006 (CMDB ignores them and lists the whole business, which a
//! client must not rely on); `search_business` understands `bk_biz_id` in
//! `condition` (a number, `{"$eq": n}` or `{"$in": [...]}`) or in
//! `biz_property_filter`, and `page.limit` up to 200.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::cmdb::{
    Cmdb, CmdbHost, Filter, ModuleRef, RawPage, known_field, parse_page, parse_property_filter,
    select_fields,
};

/// Most businesses one `search_business` page may ask for.
const MAX_BIZ_PAGE: i64 = 200;
const SET_NAMES: [&str; 3] = ["接入层", "logic", "storage"];
const MODULE_NAMES: [&str; 6] = [
    "nginx",
    "api",
    "mysql",
    "gateway",
    "worker \"batch\"",
    "redis",
];

/// A business's name and the names of its sets and modules.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tables {
    pub(crate) name: String,
    sets: BTreeMap<i64, String>,
    modules: BTreeMap<i64, String>,
}

impl Tables {
    /// The generated names of business `biz`.
    pub(crate) fn generated(biz: i64) -> Tables {
        let sets = (1..=3)
            .map(|k| (biz.saturating_mul(100) + k, SET_NAMES[k as usize - 1]))
            .map(|(id, name)| (id, name.to_string()))
            .collect();
        let modules = (1..=6)
            .map(|m| (biz.saturating_mul(1000) + m, MODULE_NAMES[m as usize - 1]))
            .map(|(id, name)| (id, name.to_string()))
            .collect();
        Tables {
            name: format!("Business {biz}"),
            sets,
            modules,
        }
    }

    fn set_name(&self, id: i64) -> String {
        self.sets
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("set-{id}"))
    }

    fn module_name(&self, id: i64) -> String {
        self.modules
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("module-{id}"))
    }

    /// Renames a set (creating the name if the id had none).
    pub(crate) fn rename_set(&mut self, id: i64, name: &str) {
        self.sets.insert(id, name.to_string());
    }

    /// Renames a module (creating the name if the id had none).
    pub(crate) fn rename_module(&mut self, id: i64, name: &str) {
        self.modules.insert(id, name.to_string());
    }

    /// A host's topology as `list_biz_hosts_topo` returns it (see the module
    /// docs for the order).
    pub(crate) fn topo_of(&self, host: &CmdbHost) -> Vec<TopoSet> {
        let mut by_set: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for ModuleRef {
            bk_set_id,
            bk_module_id,
        } in host.memberships()
        {
            let modules = by_set.entry(bk_set_id).or_default();
            if !modules.contains(&bk_module_id) {
                modules.push(bk_module_id);
            }
        }
        by_set
            .into_iter()
            .rev()
            .map(|(set, mut modules)| {
                modules.sort_unstable_by(|a, b| b.cmp(a));
                TopoSet {
                    bk_set_id: set,
                    bk_set_name: self.set_name(set),
                    module: modules
                        .into_iter()
                        .map(|id| TopoModule {
                            bk_module_id: id,
                            bk_module_name: self.module_name(id),
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// One host with its topology, as `list_biz_hosts_topo` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTopo {
    /// The host.
    pub host: CmdbHost,
    /// The sets it belongs to, each with the modules of it the host is in.
    pub topo: Vec<TopoSet>,
}

/// A set and the host's modules in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopoSet {
    /// Set id.
    pub bk_set_id: i64,
    /// Set name.
    pub bk_set_name: String,
    /// The host's modules in this set.
    pub module: Vec<TopoModule>,
}

/// A module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopoModule {
    /// Module id.
    pub bk_module_id: i64,
    /// Module name.
    pub bk_module_name: String,
}

/// The body of a `list_biz_hosts_topo` request, as far as the simulator reads it.
#[derive(Debug, Deserialize)]
struct RawTopoQuery {
    page: Option<RawPage>,
    fields: Option<Vec<String>>,
    host_property_filter: Option<Value>,
    set_property_filter: Option<Value>,
    module_property_filter: Option<Value>,
    bk_set_ids: Option<Value>,
    bk_module_ids: Option<Value>,
    set_cond: Option<Value>,
    module_cond: Option<Value>,
}

/// A validated `list_biz_hosts_topo` query.
#[derive(Debug)]
pub(crate) struct TopoQuery {
    start: usize,
    limit: usize,
    sort: String,
    desc: bool,
    fields: Vec<String>,
    hosts: Option<Filter>,
    sets: Option<Filter>,
    modules: Option<Filter>,
}

fn set_field(name: &str) -> bool {
    matches!(name, "bk_set_id" | "bk_set_name")
}

fn module_field(name: &str) -> bool {
    matches!(name, "bk_module_id" | "bk_module_name")
}

impl TopoQuery {
    /// Validate a request body; the error is the message for 1199006.
    pub(crate) fn parse(body: &Value) -> Result<TopoQuery, String> {
        let raw: RawTopoQuery = serde_json::from_value(body.clone())
            .map_err(|e| format!("request parameters are invalid: {e}"))?;
        let ignored = [
            ("bk_set_ids", &raw.bk_set_ids),
            ("bk_module_ids", &raw.bk_module_ids),
            ("set_cond", &raw.set_cond),
            ("module_cond", &raw.module_cond),
        ];
        if let Some((name, _)) = ignored.iter().find(|(_, v)| v.is_some()) {
            return Err(format!(
                "{name} is not a parameter of list_biz_hosts_topo: use set_property_filter or module_property_filter"
            ));
        }
        let (start, limit, sort, desc) = parse_page(raw.page)?;
        let mut fields = select_fields(raw.fields.unwrap_or_default());
        if !fields.iter().any(|f| f == "bk_host_id") {
            fields.push("bk_host_id".into());
        }
        Ok(TopoQuery {
            start,
            limit,
            sort,
            desc,
            fields,
            hosts: parse_property_filter(
                "host_property_filter",
                raw.host_property_filter,
                &known_field,
            )?,
            sets: parse_property_filter(
                "set_property_filter",
                raw.set_property_filter,
                &set_field,
            )?,
            modules: parse_property_filter(
                "module_property_filter",
                raw.module_property_filter,
                &module_field,
            )?,
        })
    }

    fn admits(&self, h: &CmdbHost, topo: &[TopoSet]) -> bool {
        let set_ok = self.sets.as_ref().is_none_or(|f| {
            topo.iter().any(|s| {
                f.matches(&|name| match name {
                    "bk_set_id" => vec![json!(s.bk_set_id)],
                    "bk_set_name" => vec![json!(s.bk_set_name)],
                    _ => Vec::new(),
                })
            })
        });
        let module_ok = self.modules.as_ref().is_none_or(|f| {
            topo.iter().flat_map(|s| &s.module).any(|m| {
                f.matches(&|name| match name {
                    "bk_module_id" => vec![json!(m.bk_module_id)],
                    "bk_module_name" => vec![json!(m.bk_module_name)],
                    _ => Vec::new(),
                })
            })
        });
        let host_ok = self
            .hosts
            .as_ref()
            .is_none_or(|f| f.matches(&|name| h.candidates(name)));
        set_ok && module_ok && host_ok
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

impl Cmdb {
    /// Every visible host of `biz` with its topology, by id.
    pub fn topo(&self, biz: i64) -> Vec<HostTopo> {
        let Some(b) = self.business(biz) else {
            return Vec::new();
        };
        self.visible_refs(biz)
            .into_iter()
            .map(|h| HostTopo {
                host: h.clone(),
                topo: b.tables.topo_of(h),
            })
            .collect()
    }

    /// The `data` of a `list_biz_hosts_topo` reply: `{count, info: [{host, topo}]}`.
    pub(crate) fn list_topo(&self, biz: i64, q: &TopoQuery) -> Value {
        let Some(b) = self.business(biz) else {
            return json!({"count": 0, "info": []});
        };
        let mut rows: Vec<(&CmdbHost, Vec<TopoSet>)> = self
            .visible_refs(biz)
            .into_iter()
            .map(|h| (h, b.tables.topo_of(h)))
            .filter(|(h, topo)| q.admits(h, topo))
            .collect();
        rows.sort_by(|(a, _), (b, _)| {
            let o = match (a.field(&q.sort), b.field(&q.sort)) {
                (Some(x), Some(y)) => value_order(&x, &y),
                _ => std::cmp::Ordering::Equal,
            }
            .then(a.bk_host_id.cmp(&b.bk_host_id));
            if q.desc { o.reverse() } else { o }
        });
        let info: Vec<Value> = rows
            .iter()
            .skip(q.start)
            .take(q.limit)
            .map(|(h, topo)| json!({"host": q.project(h), "topo": topo}))
            .collect();
        json!({"count": rows.len(), "info": info})
    }

    /// The `data` of a `search_business` reply: `{count, info}`.
    pub(crate) fn search_business(&self, q: &BizQuery) -> Value {
        let rows: Vec<Value> = self
            .businesses()
            .filter(|(id, _)| q.ids.as_ref().is_none_or(|ids| ids.contains(id)))
            .map(|(id, b)| {
                let all = json!({"bk_biz_id": id, "bk_biz_name": b.tables.name, "default": 0});
                let map: Map<String, Value> = match &q.fields {
                    None => all.as_object().cloned().unwrap_or_default(),
                    Some(fields) => fields
                        .iter()
                        .filter_map(|f| Some((f.clone(), all.get(f)?.clone())))
                        .collect(),
                };
                Value::Object(map)
            })
            .collect();
        let count = rows.len();
        let info: Vec<Value> = rows.into_iter().skip(q.start).take(q.limit).collect();
        json!({"count": count, "info": info})
    }
}

fn value_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_i64().cmp(&y.as_i64()),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    }
}

/// The body of a `search_business` request, as far as the simulator reads it.
#[derive(Debug, Deserialize)]
struct RawBizQuery {
    fields: Option<Vec<String>>,
    condition: Option<Map<String, Value>>,
    biz_property_filter: Option<Value>,
    page: Option<RawPage>,
}

/// A validated `search_business` query.
#[derive(Debug)]
pub(crate) struct BizQuery {
    fields: Option<Vec<String>>,
    ids: Option<Vec<i64>>,
    start: usize,
    limit: usize,
}

impl BizQuery {
    /// Validate a request body; the error is the message for 1199006.
    pub(crate) fn parse(body: &Value) -> Result<BizQuery, String> {
        let raw: RawBizQuery = serde_json::from_value(body.clone())
            .map_err(|e| format!("request parameters are invalid: {e}"))?;
        if raw.condition.is_some() && raw.biz_property_filter.is_some() {
            return Err("condition and biz_property_filter cannot be set at the same time".into());
        }
        let ids = match (raw.condition, raw.biz_property_filter) {
            (Some(condition), _) => condition_ids(&condition)?,
            (None, Some(filter)) => filter_ids(&filter)?,
            (None, None) => None,
        };
        let (start, limit) = match raw.page {
            None => (0, MAX_BIZ_PAGE),
            Some(page) => (page.start.unwrap_or(0), page.limit.unwrap_or(MAX_BIZ_PAGE)),
        };
        if limit <= 0 || limit > MAX_BIZ_PAGE {
            return Err(format!(
                "page.limit {limit} is invalid: must be within 1..={MAX_BIZ_PAGE}"
            ));
        }
        let start = usize::try_from(start).map_err(|_| format!("page.start {start} < 0"))?;
        Ok(BizQuery {
            fields: raw.fields.filter(|f| !f.is_empty()),
            ids,
            start,
            limit: limit as usize,
        })
    }
}

/// `bk_biz_id` of a legacy `condition`: a number, `{"$eq": n}` or `{"$in": [..]}`.
fn condition_ids(condition: &Map<String, Value>) -> Result<Option<Vec<i64>>, String> {
    if let Some(other) = condition.keys().find(|k| *k != "bk_biz_id") {
        return Err(format!(
            "condition.{other}: the simulator understands bk_biz_id only"
        ));
    }
    let Some(v) = condition.get("bk_biz_id") else {
        return Ok(None);
    };
    let bad = || "condition.bk_biz_id: an integer is required".to_string();
    let ids = match v {
        Value::Number(n) => vec![n.as_i64().ok_or_else(bad)?],
        Value::Object(m) => match (m.get("$eq"), m.get("$in")) {
            (Some(n), None) => vec![n.as_i64().ok_or_else(bad)?],
            (None, Some(Value::Array(list))) => list
                .iter()
                .map(|n| n.as_i64().ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    Ok(Some(ids))
}

/// `bk_biz_id` of a `biz_property_filter` with one `equal` or `in` rule.
fn filter_ids(filter: &Value) -> Result<Option<Vec<i64>>, String> {
    let rules = filter["rules"].as_array().cloned().unwrap_or_default();
    let [rule] = rules.as_slice() else {
        return Err("biz_property_filter: the simulator understands one bk_biz_id rule".into());
    };
    let bad = || "biz_property_filter: one bk_biz_id rule (equal or in)".to_string();
    if rule["field"] != json!("bk_biz_id") {
        return Err(bad());
    }
    let ids = match rule["operator"].as_str() {
        Some("equal") => vec![rule["value"].as_i64().ok_or_else(bad)?],
        Some("in") => rule["value"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|n| n.as_i64().ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    Ok(Some(ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Fleet, SimOptions};

    fn cmdb() -> Cmdb {
        let opts = SimOptions::default();
        Cmdb::new(&opts, &Fleet::new(&opts))
    }

    #[test]
    fn hosts_in_two_modules_list_both_in_reverse_id_order() {
        let c = cmdb();
        let topo = c.topo(2);
        let two_modules = topo
            .iter()
            .filter(|t| t.topo.iter().map(|s| s.module.len()).sum::<usize>() == 2)
            .count();
        let two_sets = topo.iter().filter(|t| t.topo.len() == 2).count();
        assert!(two_modules > 10 && two_sets > 5, "{two_modules} {two_sets}");
        let first = &topo[0];
        assert_eq!(first.topo[0].bk_set_name, "接入层");
        assert_eq!(first.topo[0].module[0].bk_module_name, "nginx");
        for t in &topo {
            let ids: Vec<i64> = t.topo.iter().map(|s| s.bk_set_id).collect();
            assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
        }
    }

    #[test]
    fn topo_queries_filter_by_set_and_module_and_refuse_id_lists() {
        let c = cmdb();
        let q = TopoQuery::parse(&json!({"page": {"start": 0, "limit": 500},
            "fields": ["bk_host_id", "operator"],
            "set_property_filter": {"condition": "AND", "rules": [
                {"field": "bk_set_id", "operator": "in", "value": [202]}]}}))
        .unwrap();
        let data = c.list_topo(2, &q);
        let want = c
            .topo(2)
            .iter()
            .filter(|t| t.topo.iter().any(|s| s.bk_set_id == 202))
            .count();
        assert_eq!(data["count"], json!(want));
        let row = &data["info"][0];
        assert_eq!(row["host"].as_object().unwrap().len(), 2);
        assert!(row["topo"].as_array().is_some_and(|t| !t.is_empty()));
        let q = TopoQuery::parse(&json!({"page": {"limit": 500},
            "module_property_filter": {"condition": "AND", "rules": [
                {"field": "bk_module_name", "operator": "equal", "value": "worker \"batch\""}]}}))
        .unwrap();
        assert!(c.list_topo(2, &q)["count"].as_u64().unwrap() > 0);
        for bad in [
            json!({"page": {"limit": 10}, "bk_set_ids": [1]}),
            json!({"page": {"limit": 501}}),
            json!({"page": {"limit": 10}, "set_property_filter": {"condition": "AND",
                "rules": [{"field": "bk_host_id", "operator": "equal", "value": 1}]}}),
        ] {
            assert!(TopoQuery::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn business_names_by_condition_or_filter() {
        let mut c = cmdb();
        c.business_mut(3).tables.name = "支付".into();
        for body in [
            json!({"fields": ["bk_biz_id", "bk_biz_name"], "condition": {"bk_biz_id": 3}}),
            json!({"condition": {"bk_biz_id": {"$in": [3]}}, "page": {"start": 0, "limit": 1}}),
            json!({"fields": ["bk_biz_name", "bk_biz_id"], "biz_property_filter": {"condition": "AND",
                "rules": [{"field": "bk_biz_id", "operator": "equal", "value": 3}]}}),
        ] {
            let data = c.search_business(&BizQuery::parse(&body).unwrap());
            assert_eq!(data["count"], json!(1), "{body}");
            assert_eq!(data["info"][0]["bk_biz_name"], json!("支付"));
        }
        let all = c.search_business(&BizQuery::parse(&json!({})).unwrap());
        assert_eq!(all["count"], json!(3));
        assert_eq!(all["info"][0]["bk_biz_name"], json!("Business 2"));
        for bad in [
            json!({"condition": {"bk_biz_name": "x"}}),
            json!({"condition": {"bk_biz_id": 1}, "biz_property_filter": {}}),
            json!({"page": {"start": 0, "limit": 201}}),
        ] {
            assert!(BizQuery::parse(&bad).is_err(), "{bad}");
        }
    }
}
