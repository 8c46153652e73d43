//! A fake BlueKing GSE HTTP server on loopback, for `--demo`, the
//! integration tests and the benchmarks.
//!
//! Owns the simulator's public face: [`start`], [`serve_forever`],
//! [`RunningSim`] / [`SimHandle`] and the re-exported option, fault and log
//! types. It serves ESB v1 (`get_agent_status`, `get_agent_info`) and gateway
//! v2 (`list_agent_state`, `list_agent_info`) from one deterministic fleet,
//! CMDB host discovery for the same fleet, plus a `/sim/*` control API.
//!
//! Roots ([`RunningSim`] builds them): GSE v1 `http://ADDR/api/c/compapi/v2/gse`,
//! GSE v2 `http://ADDR/api/bk-gse/prod`, CMDB through ESB
//! `http://ADDR/api/c/compapi/v2/cc` (`POST {root}/list_biz_hosts/`, body
//! auth and `bk_biz_id`) and CMDB through the gateway
//! `http://ADDR/api/bk-cmdb/prod` (`POST {root}/api/v3/hosts/app/{biz}/list_hosts`
//! or `{root}/api/v3/open/hosts/app/{biz}/list_hosts`, header auth). With
//! topology: ESB `list_biz_hosts_topo/` and `search_business/`, gateway
//! `{root}/api/v3[/open]/hosts/app/{biz}/list_hosts_topo` and
//! `{root}/api/v3[/open]/biz/search/{bk_supplier_account}`. Control:
//! `POST /sim/agents`, `GET|POST /sim/faults`, `GET /sim/truth`,
//! `GET|DELETE /sim/stats`, `POST /sim/cmdb` (`{"bk_biz_id", "set_hosts",
//! "remove", "add", "visible_share", "bk_biz_name", "rename_set",
//! "rename_module"}`, applied in that order; a rename is `{"id", "name"}`) and
//! `GET /sim/cmdb/{biz}` (the hosts CMDB serves). With `SimOptions::tls` the
//! same routes are served over HTTPS (`https://` roots). It must never be reached from the exporter's
//! production path unless the user asks for it (`--demo`, `simulate`), and it
//! must not depend on the exporter's own modules.
//!
//! Choices where GSE itself is silent:
//! - v2 `report_time` is in milliseconds, `start_time` in seconds. It is in
//!   `list_agent_info` items only, as bk-job's and bk-cmdb's models have it
//!   (`SimOptions::state_report_time` adds it to `list_agent_state`, as
//!   bk-nodemgr's model has it). Online agents report every
//!   `SimOptions::report_period`.
//! - More than `max_batch_v2` ids: HTTP 400, gateway envelope code 1640001.
//! - A v2 `cloud:ip` id only resolves for legacy agents (no agent id).
//! - Rate-limit replies: `X-Bkapi-RateLimit-Reset` and `Retry-After` are
//!   whole seconds until a token, at least 1; `-Limit` is the bucket's
//!   requests per second rounded up (1 without a bucket).
//! - Fault `latency` is a humantime string or integer milliseconds.
//! - CMDB replies use one envelope on both paths (`result`, `code`,
//!   `message`, `permission: null`, `request_id`, `data: {count, info}`);
//!   its own errors (1199000 bad JSON, 1199006 bad parameters such as
//!   `page.limit` outside 1..=500) are HTTP 200 with `result:false` on
//!   both. Credentials fail as ESB or gateway errors; `cmdb_outage` is ESB
//!   1306201 (HTTP 200) or gateway 502/1650200. An unknown business has no
//!   hosts. `fields` absent or empty means the seven host fields;
//!   `bk_set_id`/`bk_module_id` come back only when asked. Filters on
//!   `bk_host_innerip(_v6)` match the whole value or any one address.
//!   `page.sort` takes any known field, `-` for descending, ties by id.
//!   `set_cond`/`module_cond` are rejected with 1199006.
//! - Tenants: every request's `X-Bk-Tenant-Id` is counted per endpoint;
//!   GSE 2.0 answers the agents of [`SimHandle::set_tenant_offline`]
//!   offline to that tenant only, the fleet's state to any other.
//! - Topology (see `topo` for names and order): hosts belong to one or two
//!   modules, `list_biz_hosts_topo` lists each host's sets and modules,
//!   `search_business` answers business names; `operator` and
//!   `bk_bak_operator` come back only when asked.
#![forbid(unsafe_code)]

mod cmdb;
mod cmdb_http;
mod conn;
mod faults;
mod fleet;
mod log;
mod reply;
mod server;
mod tls;
mod topo;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use cmdb::{Addressing, BizSpec, CmdbHost, ModuleRef};
pub use faults::{BodyFault, Faults, RateLimit};
pub use fleet::{AgentTruth, SimOptions};
pub use log::{Api, Outcome, RequestRecord, Stats, max_in_window};
pub use tls::SimTls;
pub use topo::{HostTopo, TopoModule, TopoSet};

use cmdb_http::{CMDB_ESB_ROOT, CMDB_GATEWAY_ROOT};
use conn::{ConnTag, SimListener};
use server::{Shared, V1_ROOT, V2_ROOT};
use tls::TlsListener;

/// Errors of the control API.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Some ids match no agent (nothing was changed).
    #[error("unknown agents: {}", .0.join(", "))]
    UnknownAgents(Vec<String>),
}

/// A cheap, cloneable handle to a running simulator's state.
#[derive(Debug, Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl SimHandle {
    /// Set agents (agent id or `cloud:ip`) online (status 2, heartbeat now)
    /// or offline (status 3). Unknown-to-GSE agents become known. All or
    /// nothing: returns how many were changed.
    pub fn set_online(&self, ids: &[String], online: bool) -> Result<usize, SimError> {
        self.shared.set_state(ids, online, 3)
    }

    /// Like [`SimHandle::set_online`], with this status code when offline.
    pub fn set_state(&self, ids: &[String], online: bool, code: i64) -> Result<usize, SimError> {
        self.shared.set_state(ids, online, code)
    }

    /// Replace the fault set.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// The current fault set.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// The truth about every agent, in fleet order.
    pub fn truth(&self) -> Vec<AgentTruth> {
        self.shared.truth()
    }

    /// Every GSE request recorded so far, oldest first (a request is
    /// recorded once answered).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests()
    }

    /// GSE requests received so far, those still being answered included.
    pub fn received(&self) -> u64 {
        self.shared.received()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.clear_requests();
    }

    /// Requests per endpoint and `X-Bk-Tenant-Id` value ("" for none).
    pub fn tenants(&self) -> std::collections::BTreeMap<(Api, String), usize> {
        self.shared.tenants()
    }

    /// Makes GSE 2.0 answer these agent ids offline (status 3) to requests
    /// carrying `X-Bk-Tenant-Id: tenant` ("" for requests without one),
    /// whatever their state in the fleet: the same id is another agent in
    /// another tenant. Replaces that tenant's earlier list.
    pub fn set_tenant_offline(&self, tenant: &str, ids: &[String]) {
        self.shared.set_tenant_offline(tenant, ids);
    }

    /// Request counts by endpoint and outcome.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Ids of the CMDB businesses, ascending.
    pub fn cmdb_businesses(&self) -> Vec<i64> {
        self.shared.cmdb().business_ids()
    }

    /// The hosts CMDB currently serves for a business (visible share
    /// applied), by `bk_host_id`; empty for an unknown business.
    pub fn cmdb_hosts(&self, bk_biz_id: i64) -> Vec<CmdbHost> {
        self.shared.cmdb().visible(bk_biz_id)
    }

    /// Replace a business's hosts (creating it if new; the visible share is
    /// kept). Duplicate ids: the last one wins.
    pub fn set_cmdb_hosts(&self, bk_biz_id: i64, hosts: Vec<CmdbHost>) {
        self.shared.cmdb().set_hosts(bk_biz_id, hosts);
    }

    /// Add hosts to a business, replacing any with the same `bk_host_id`.
    pub fn add_cmdb_hosts(&self, bk_biz_id: i64, hosts: Vec<CmdbHost>) {
        self.shared.cmdb().add_hosts(bk_biz_id, hosts);
    }

    /// Remove hosts from a business by `bk_host_id`; returns how many went.
    pub fn remove_cmdb_hosts(&self, bk_biz_id: i64, ids: &[i64]) -> usize {
        self.shared.cmdb().remove_hosts(bk_biz_id, ids)
    }

    /// Serve only `share` (0..=1) of a business's hosts: exactly
    /// `floor(share * n)`, a fixed scattered subset per seed (a smaller
    /// share keeps a subset of a larger one). 1 serves all again.
    pub fn set_cmdb_visible_share(&self, bk_biz_id: i64, share: f64) {
        self.shared.cmdb().set_visible_share(bk_biz_id, share);
    }

    /// Every host CMDB serves for a business with its sets and modules, as
    /// `list_biz_hosts_topo` lists them (sets and modules by descending id).
    pub fn cmdb_topology(&self, bk_biz_id: i64) -> Vec<HostTopo> {
        self.shared.cmdb().topo(bk_biz_id)
    }

    /// A business's name as `search_business` answers it (None: no such business).
    pub fn cmdb_business_name(&self, bk_biz_id: i64) -> Option<String> {
        let cmdb = self.shared.cmdb();
        cmdb.business(bk_biz_id).map(|b| b.tables.name.clone())
    }

    /// Renames a business (creating it, empty, if new).
    pub fn set_cmdb_business_name(&self, bk_biz_id: i64, name: &str) {
        self.shared.cmdb().business_mut(bk_biz_id).tables.name = name.to_string();
    }

    /// Renames a set of a business.
    pub fn rename_cmdb_set(&self, bk_biz_id: i64, bk_set_id: i64, name: &str) {
        let mut cmdb = self.shared.cmdb();
        cmdb.business_mut(bk_biz_id)
            .tables
            .rename_set(bk_set_id, name);
    }

    /// Renames a module of a business.
    pub fn rename_cmdb_module(&self, bk_biz_id: i64, bk_module_id: i64, name: &str) {
        let mut cmdb = self.shared.cmdb();
        cmdb.business_mut(bk_biz_id)
            .tables
            .rename_module(bk_module_id, name);
    }
}

/// A simulator serving on a local address; stops on [`RunningSim::shutdown`]
/// or when dropped. Derefs to its [`SimHandle`].
#[derive(Debug)]
pub struct RunningSim {
    handle: SimHandle,
    addr: SocketAddr,
    scheme: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningSim {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http`, or `https` when serving TLS.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The ESB v1 root: `http://ADDR/api/c/compapi/v2/gse`.
    pub fn v1_url(&self) -> String {
        format!("{}://{}{V1_ROOT}", self.scheme, self.addr)
    }

    /// The gateway v2 root: `http://ADDR/api/bk-gse/prod`.
    pub fn v2_url(&self) -> String {
        format!("{}://{}{V2_ROOT}", self.scheme, self.addr)
    }

    /// The CMDB root through ESB: `http://ADDR/api/c/compapi/v2/cc`.
    pub fn cmdb_esb_url(&self) -> String {
        format!("{}://{}{CMDB_ESB_ROOT}", self.scheme, self.addr)
    }

    /// The CMDB root through the gateway: `http://ADDR/api/bk-cmdb/prod`.
    pub fn cmdb_gateway_url(&self) -> String {
        format!("{}://{}{CMDB_GATEWAY_ROOT}", self.scheme, self.addr)
    }

    /// A handle that outlives borrow scopes (e.g. to move into a task).
    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }

    /// Stop accepting, let open requests finish for up to 5 s, then abort.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Deref for RunningSim {
    type Target = SimHandle;

    fn deref(&self) -> &SimHandle {
        &self.handle
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Bind `addr` (tests pass `127.0.0.1:0`) and serve the simulator in a task,
/// over HTTPS when `opts.tls` is set.
pub async fn start(opts: SimOptions, addr: SocketAddr) -> std::io::Result<RunningSim> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let acceptor = opts.tls.as_ref().map(tls::acceptor).transpose()?;
    let shared = Arc::new(Shared::new(opts));
    let app = server::router(shared.clone()).into_make_service_with_connect_info::<ConnTag>();
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let listener = SimListener::new(listener);
    let (scheme, task) = match acceptor {
        None => {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
            ("http", tokio::spawn(log_end(serve.into_future())))
        }
        Some(acceptor) => {
            let listener = TlsListener::new(listener, acceptor);
            let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
            ("https", tokio::spawn(log_end(serve.into_future())))
        }
    };
    tracing::info!(%addr, scheme, "GSE simulator listening");
    Ok(RunningSim {
        handle: SimHandle { shared },
        addr,
        scheme,
        stop: Some(stop),
        task: Some(task),
    })
}

async fn log_end(serve: impl Future<Output = std::io::Result<()>>) {
    if let Err(e) = serve.await {
        tracing::warn!(error = %e, "GSE simulator stopped with an error");
    }
}

/// Serve the simulator on `addr` until SIGINT (Ctrl-C) or SIGTERM, then shut
/// down gracefully.
pub async fn serve_forever(opts: SimOptions, addr: SocketAddr) -> std::io::Result<()> {
    let sim = start(opts, addr).await?;
    stop_signal().await?;
    sim.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn stop_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

#[cfg(test)]
mod tests;
