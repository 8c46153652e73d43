//! Host discovery: turns each group's sources (inline hosts, a hosts file,
//! CMDB) into the hosts this process polls, once per cycle.
//!
//! Owns re-reading hosts files when they change, refreshing CMDB lists on
//! their own schedule and rate limit (as tasks a cycle waits for a bounded
//! time, so a slow CMDB never holds up asking GSE), keeping the last good list when a
//! source fails, holding back a refresh that would shrink a group too much,
//! counting hosts that cannot be asked for, and the shard filter. It knows
//! nothing about GSE replies or metrics text.
//!
//! With `cmdb.topology` a group's listing is the topology listing (the same
//! pages, each host with its sets, modules and maintainers) and each refresh
//! adds one business-name lookup; the two keep their last good results apart,
//! and the group's discovery counts as successful only when both last
//! succeeded. A failed name lookup is retried next cycle on its own; a failed
//! listing, as before, next cycle with the name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use crate::config::hosts::{BadLine, host_lines, legacy_address, parse_agent_id};
use crate::config::watch::{FileWatch, Reading};
use crate::config::{
    CmdbConfig, Config, GroupCmdb, GroupConfig, HOSTS_FILE, MAX_LISTED_PROBLEMS, read_text,
};
use crate::model::{
    ApiVersion, DiscoveryStatus, FirstSeen, Host, HostEntry, Key, SKIP_ID_OF_ANOTHER_HOST,
    SKIP_NO_ADDRESS, SKIP_NO_IPV4_FOR_V1, SKIP_UNREADABLE, Sharding, Topology, unix_seconds,
};
use crate::pacing::Pacer;
use crate::telemetry::Telemetry;
use crate::upstream::GseError;
use crate::upstream::cmdb::{CmdbClient, CmdbHost};

/// A group's hosts for this cycle.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResolvedGroup {
    /// Hosts of this shard, de-duplicated (the same list as last cycle's
    /// when no source changed).
    pub(crate) hosts: Arc<Vec<HostEntry>>,
    /// Hosts that cannot be asked for, by reason.
    pub(crate) skipped: BTreeMap<&'static str, u64>,
    /// CMDB discovery state, for groups that use it.
    pub(crate) discovery: Option<DiscoveryStatus>,
    /// Whether the group's hosts file could be read when it last changed
    /// (its last hosts are kept when not), for groups that have one.
    pub(crate) hosts_file_read: Option<bool>,
    /// The business name, for groups with `cmdb.topology` ("" until CMDB
    /// named it; the last good name while lookups fail).
    pub(crate) bk_biz_name: Option<Arc<str>>,
}

/// How long a changed hosts file must have gone unwritten before it is read
/// again: a file rewritten in place (`>` in a shell, a script writing as it
/// queries) is not read half-written, its last line cut into an agent id
/// that does not exist and its other hosts dropped. A look that finds it
/// written more recently keeps the last hosts, and the next cycle's looks
/// again.
const HOSTS_FILE_STILL: Duration = Duration::from_secs(2);

/// How long looks may find a hosts file being written before it is read
/// anyway (when it does not change while read): a file touched every second
/// is never still, and was never read again.
const HOSTS_FILE_PATIENCE: Duration = Duration::from_secs(30);

/// What a look at a hosts file gives back: its watch, and what it found.
type Look = (FileWatch, Looked);

/// What a look at a hosts file found.
#[derive(Debug)]
enum Looked {
    /// Nothing new: the file is unchanged, or still being written (its last
    /// hosts stay, and so does whether it could be read).
    Nothing,
    /// It changed and was read whole: its hosts.
    Read(Arc<Vec<HostEntry>>),
    /// It changed and cannot be read (gone, no permission, not text, too
    /// big): its last hosts are kept until it changes again.
    Failed,
}

#[derive(Debug, Default)]
struct FileState {
    hosts: Arc<Vec<HostEntry>>,
    /// The last read of the file failed (it is read again once it changes).
    failed: bool,
    /// The watch while no look is running (it travels with the look).
    watch: Option<FileWatch>,
    /// A look still running from an earlier cycle.
    looking: Option<JoinHandle<Look>>,
}

/// A file is read into entries for one API and label count.
/// A hosts file as read for a group: its path, the API (which decides the
/// keys), how many label values a host has, and this process's shard (a
/// shard keeps only its share of the file's hosts).
type FileKey = (PathBuf, ApiVersion, usize, (u32, u32));

/// What a group's hosts were resolved from last cycle, to reuse the list
/// while nothing changed.
#[derive(Debug)]
struct LastResolved {
    group: GroupConfig,
    sharding: Sharding,
    file: Option<Arc<Vec<HostEntry>>>,
    cmdb: Option<Arc<Vec<CmdbHost>>>,
    hosts: Arc<Vec<HostEntry>>,
    skipped: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
struct CmdbGroupState {
    selection: Option<(i64, GroupCmdb)>,
    hosts: Arc<Vec<CmdbHost>>,
    last_attempt: Option<Instant>,
    last_success: Option<f64>,
    /// The last listing succeeded.
    listed: bool,
    /// The last business-name lookup succeeded (true when none is needed).
    named: bool,
    held: bool,
    /// The last good business name ("" until one).
    bk_biz_name: Arc<str>,
    /// A refresh still running from an earlier cycle.
    refreshing: Option<Refreshing>,
}

/// What a CMDB refresh found: the business name and the listing, each when
/// it was asked for.
type Refreshed = (
    Option<Result<Option<String>, GseError>>,
    Option<Result<Vec<CmdbHost>, GseError>>,
);

/// A CMDB refresh running in the background; stopped when dropped (the
/// group or its selection went away).
#[derive(Debug)]
struct Refreshing {
    task: JoinHandle<Refreshed>,
    /// A cycle already waited for it: later cycles only look.
    waited: bool,
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a cycle waits, all its groups and sources together, for the
/// hosts-file reads and CMDB refreshes it started: at most this, and at most
/// half the interval ([`WAIT_SHARE`]). A slower one (a CMDB slow to answer,
/// a long listing, a slow disk) goes on in the background while its group
/// polls its last host list, and later cycles take it in once it ends
/// without waiting again, so slow host sources never hold up asking GSE.
const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// The share of the interval a cycle may wait for its host sources: the rest
/// is GSE's. With the whole 5 s, a slow CMDB used up the cycle's time
/// budget (nine tenths of an interval under 5.5 s): every GSE batch failed
/// before it was sent, and every group, hosts-file ones too, read `gse_up`
/// 0 while GSE was fine.
const WAIT_SHARE: f64 = 0.5;

/// Discovery across cycles.
#[derive(Debug, Default)]
pub(crate) struct Discovery {
    files: HashMap<FileKey, FileState>,
    cmdb: Option<(CmdbClient, Arc<Pacer>)>,
    groups: HashMap<String, CmdbGroupState>,
    last: HashMap<String, LastResolved>,
    /// Business names are never looked up (`query` shows none).
    skip_names: bool,
}

impl Discovery {
    /// Leaves out the business-name lookup of topology groups: their hosts
    /// are listed as configured, their `bk_biz_name` stays "".
    pub(crate) fn skip_business_names(&mut self) {
        self.skip_names = true;
    }

    /// Resolves every group of `config`, in order.
    pub(crate) async fn resolve(
        &mut self,
        config: &Config,
        telemetry: &Arc<Telemetry>,
    ) -> Vec<ResolvedGroup> {
        self.ensure_cmdb_client(config.cmdb.as_ref());
        self.adopt_renamed(config);
        // Every group's refresh starts before any is waited for.
        for group in &config.groups {
            if let Some(selection) = &group.cmdb {
                self.start_cmdb(group, selection, config, telemetry);
            }
        }
        let wait = DISCOVERY_WAIT.min(config.interval.mul_f64(WAIT_SHARE));
        let deadline = tokio::time::Instant::now() + wait;
        let mut resolved = Vec::with_capacity(config.groups.len());
        for group in &config.groups {
            resolved.push(self.resolve_group(group, config, deadline).await);
        }
        let wanted: HashSet<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        self.groups.retain(|name, _| wanted.contains(name.as_str()));
        self.last.retain(|name, _| wanted.contains(name.as_str()));
        // Only the files as this configuration reads them: one kept from an
        // earlier configuration (the group on the other API, say) came back
        // with the hosts it had then, on a reload back to it.
        let files: HashSet<FileKey> = config
            .groups
            .iter()
            .filter_map(|g| {
                let labels = g.host_label_names().len();
                Some(file_key(
                    g.hosts_file.as_ref()?,
                    g.api,
                    labels,
                    config.sharding,
                ))
            })
            .collect();
        self.files.retain(|key, _| files.contains(key));
        resolved
    }

    /// A group renamed by a reload (a new name, the business and selection
    /// of a group that is gone) keeps that group's CMDB listing, and the
    /// refresh it may have running: it started from nothing, and stayed
    /// empty for as long as CMDB was down.
    fn adopt_renamed(&mut self, config: &Config) {
        let wanted: HashSet<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        for group in &config.groups {
            let Some(selection) = &group.cmdb else {
                continue;
            };
            if self.groups.contains_key(&group.name) {
                continue;
            }
            let key = Some((group.bk_biz_id, selection.clone()));
            let gone = self
                .groups
                .iter()
                .find(|(name, state)| !wanted.contains(name.as_str()) && state.selection == key)
                .map(|(name, _)| name.clone());
            if let Some(state) = gone.and_then(|name| self.groups.remove(&name)) {
                self.groups.insert(group.name.clone(), state);
            }
        }
    }

    fn ensure_cmdb_client(&mut self, config: Option<&CmdbConfig>) {
        let Some(config) = config else {
            self.cmdb = None;
            return;
        };
        if self
            .cmdb
            .as_ref()
            .is_some_and(|(client, _)| client.config() == config)
        {
            return;
        }
        match CmdbClient::new(config) {
            Ok(client) => {
                // Another CMDB (a reload changed its address, API, paths,
                // supplier or tenant): every group's listing, and every
                // refresh still running against the old one, is another
                // CMDB's; each group is listed anew at once. A change of
                // credentials, pace or timeout keeps them.
                let moved = self
                    .cmdb
                    .as_ref()
                    .is_some_and(|(old, _)| cmdb_source(old.config()) != cmdb_source(config));
                if moved {
                    self.groups.clear();
                }
                let pacer = Arc::new(Pacer::new(config.rate_limit, 4));
                self.cmdb = Some((client, pacer));
            }
            Err(err) => tracing::error!(error = %err, "cannot build the CMDB client"),
        }
    }

    async fn resolve_group(
        &mut self,
        group: &GroupConfig,
        config: &Config,
        deadline: tokio::time::Instant,
    ) -> ResolvedGroup {
        let blank: Arc<[String]> = vec![String::new(); group.host_label_names().len()].into();
        let (file, hosts_file_read) = match &group.hosts_file {
            Some(path) => {
                let (hosts, read) = self
                    .file_hosts(path, group.api, &blank, config.sharding, deadline)
                    .await;
                (Some(hosts), Some(read))
            }
            None => (None, None),
        };
        let mut discovery = None;
        let mut cmdb = None;
        let mut bk_biz_name = None;
        if let Some(selection) = &group.cmdb {
            discovery = Some(self.finish_cmdb(group, deadline).await);
            let state = self.groups.get(&group.name);
            cmdb = Some(state.map(|s| s.hosts.clone()).unwrap_or_default());
            if selection.topology {
                bk_biz_name = Some(state.map(|s| s.bk_biz_name.clone()).unwrap_or_default());
            }
        }
        if let Some(last) = self.last.get(&group.name)
            && last.group == *group
            && last.sharding == config.sharding
            && same(&last.file, &file)
            && same(&last.cmdb, &cmdb)
        {
            return ResolvedGroup {
                hosts: last.hosts.clone(),
                skipped: last.skipped.clone(),
                discovery,
                hosts_file_read,
                bk_biz_name,
            };
        }
        let (hosts, skipped) = build_hosts(group, config.sharding, &blank, &file, &cmdb);
        self.last.insert(
            group.name.clone(),
            LastResolved {
                group: group.clone(),
                sharding: config.sharding,
                file,
                cmdb,
                hosts: hosts.clone(),
                skipped: skipped.clone(),
            },
        );
        ResolvedGroup {
            hosts,
            skipped,
            discovery,
            hosts_file_read,
            bk_biz_name,
        }
    }

    /// The hosts of a hosts file: re-read, off the async workers, when it
    /// changed; its last hosts while it cannot be read. And whether its last
    /// read (when it last changed) succeeded.
    async fn file_hosts(
        &mut self,
        path: &Path,
        api: ApiVersion,
        blank: &Arc<[String]>,
        sharding: Sharding,
        deadline: tokio::time::Instant,
    ) -> (Arc<Vec<HostEntry>>, bool) {
        let key = file_key(path, api, blank.len(), sharding);
        let state = self.files.entry(key).or_default();
        let looking = state.looking.get_or_insert_with(|| {
            let watch = state.watch.take().unwrap_or_default();
            let (path, blank) = (path.to_owned(), blank.clone());
            tokio::task::spawn_blocking(move || look(watch, &path, api, &blank, sharding))
        });
        match tokio::time::timeout_at(deadline, looking).await {
            Ok(Ok((watch, looked))) => {
                state.looking = None;
                state.watch = Some(watch);
                match looked {
                    Looked::Nothing => {}
                    Looked::Read(hosts) => (state.hosts, state.failed) = (hosts, false),
                    Looked::Failed => state.failed = true,
                }
            }
            Ok(Err(err)) => {
                state.looking = None;
                state.failed = true;
                tracing::warn!(file = %path.display(), error = %err, "reading the hosts file failed; keeping its last hosts");
            }
            Err(_) => {
                tracing::warn!(file = %path.display(), "the hosts file is still being read; keeping its last hosts");
            }
        }
        (state.hosts.clone(), !state.failed)
    }

    /// Starts a CMDB refresh of `group` when one is due and none is running.
    fn start_cmdb(
        &mut self,
        group: &GroupConfig,
        selection: &GroupCmdb,
        config: &Config,
        telemetry: &Arc<Telemetry>,
    ) {
        let key = (group.bk_biz_id, selection.clone());
        let wants_name = selection.topology && !self.skip_names;
        let state = self.groups.entry(group.name.clone()).or_default();
        if state.selection.as_ref() != Some(&key) {
            // Also stops a refresh still running for the old selection.
            *state = CmdbGroupState {
                selection: Some(key),
                named: !wants_name,
                ..CmdbGroupState::default()
            };
        }
        let refresh = config
            .cmdb
            .as_ref()
            .map(|c| c.refresh_interval)
            .unwrap_or_default();
        let due = !state.listed || state.last_attempt.is_none_or(|t| t.elapsed() >= refresh);
        let name_due = wants_name && (due || !state.named);
        let Some((client, pacer)) = &self.cmdb else {
            return;
        };
        if state.refreshing.is_some() || !(due || name_due) {
            return;
        }
        if due {
            state.last_attempt = Some(Instant::now());
        }
        let (client, pacer, telemetry) = (client.clone(), pacer.clone(), telemetry.clone());
        let (biz, selection) = (group.bk_biz_id, selection.clone());
        let task = tokio::spawn(async move {
            let named = match name_due {
                true => Some(ask_name(&client, &pacer, biz, &selection, &telemetry).await),
                false => None,
            };
            let listed = match due {
                true => Some(list_all(&client, &pacer, biz, &selection, &telemetry).await),
                false => None,
            };
            (named, listed)
        });
        state.refreshing = Some(Refreshing {
            task,
            waited: false,
        });
    }

    /// Takes in what `group`'s refresh found, if it ends by `deadline`, and
    /// says how discovery stands.
    async fn finish_cmdb(
        &mut self,
        group: &GroupConfig,
        deadline: tokio::time::Instant,
    ) -> DiscoveryStatus {
        let max_shrink = self.cmdb.as_ref().map(|(c, _)| c.config().max_shrink);
        let state = self.groups.entry(group.name.clone()).or_default();
        if let Some(running) = &mut state.refreshing {
            let until = match running.waited {
                true => tokio::time::Instant::now(),
                false => deadline,
            };
            running.waited = true;
            match tokio::time::timeout_at(until, &mut running.task).await {
                Ok(ended) => {
                    state.refreshing = None;
                    take_refresh(state, ended, group, max_shrink.unwrap_or_default());
                }
                Err(_) => {
                    let kept = state.hosts.len();
                    tracing::warn!(group = %group.name, bk_biz_id = group.bk_biz_id, kept, "CMDB discovery is still running; polling the last host list meanwhile");
                }
            }
        }
        DiscoveryStatus {
            success: state.listed && state.named,
            last_success: state.last_success,
            held_back: state.held,
        }
    }
}

/// Keeps what an ended refresh found.
fn take_refresh(
    state: &mut CmdbGroupState,
    ended: Result<Refreshed, tokio::task::JoinError>,
    group: &GroupConfig,
    max_shrink: f64,
) {
    let (named, listed) = match ended {
        Ok(found) => found,
        Err(err) => {
            state.listed = false;
            tracing::error!(group = %group.name, error = %err, "CMDB discovery stopped; keeping the last host list");
            return;
        }
    };
    if let Some(named) = named {
        apply_name(state, named, group);
    }
    if let Some(listed) = listed {
        apply_listing(state, listed, group, max_shrink);
    }
    if state.listed && state.named {
        state.last_success = Some(unix_seconds(SystemTime::now()));
    }
}

async fn ask_name(
    client: &CmdbClient,
    pacer: &Pacer,
    biz: i64,
    selection: &GroupCmdb,
    telemetry: &Telemetry,
) -> Result<Option<String>, GseError> {
    let (permit, waited) = pacer.acquire().await;
    telemetry.add_rate_limit_wait(waited);
    let name = client.business_name(biz, selection).await;
    drop(permit);
    name
}

async fn list_all(
    client: &CmdbClient,
    pacer: &Pacer,
    biz: i64,
    selection: &GroupCmdb,
    telemetry: &Telemetry,
) -> Result<Vec<CmdbHost>, GseError> {
    let mut hosts = Vec::new();
    let mut seen = HashSet::new();
    let mut start = 0;
    // The count of the first page bounds the listing: one that grows as it
    // is read (a CMDB, or something posing as one, counting on) ends there.
    let mut total = None;
    loop {
        let (permit, waited) = pacer.acquire().await;
        telemetry.add_rate_limit_wait(waited);
        let (count, page) = client.page(biz, selection, start).await?;
        drop(permit);
        let total = *total.get_or_insert(count);
        let got = page.len();
        let before = hosts.len();
        // A host listed again (the pages shifted under a change) is kept once.
        hosts.extend(
            page.into_iter()
                .filter(|h| h.bk_host_id <= 0 || seen.insert(h.bk_host_id)),
        );
        if got > 0 && hosts.len() == before {
            return Err(GseError::Decode(format!(
                "CMDB answered the page at {start} with {got} hosts all listed before: the listing makes no progress"
            )));
        }
        // An empty page short of the count given with it: the listing was
        // cut short (a CMDB or proxy fault), not the business.
        if got == 0 && start < count {
            return Err(GseError::Decode(format!(
                "CMDB answered the page at {start} with no hosts while counting {count}: the listing is cut short"
            )));
        }
        start += got;
        if got == 0 || start >= total {
            return Ok(hosts);
        }
    }
}

/// How a hosts file is read for a group: see [`FileKey`].
fn file_key(path: &Path, api: ApiVersion, labels: usize, sharding: Sharding) -> FileKey {
    (
        path.to_owned(),
        api,
        labels,
        (sharding.shard, sharding.total),
    )
}

/// What names the CMDB a listing comes from.
fn cmdb_source(config: &CmdbConfig) -> impl PartialEq + '_ {
    (
        config.api,
        config.url.as_str(),
        [&config.path, &config.topology_path, &config.business_path],
        config.supplier_account.as_str(),
        config.tenant_id.as_deref(),
    )
}

/// Keeps a business name CMDB gave; a failed lookup keeps the last one.
fn apply_name(
    state: &mut CmdbGroupState,
    named: Result<Option<String>, GseError>,
    group: &GroupConfig,
) {
    match named {
        Ok(name) => {
            if name.is_none() {
                tracing::warn!(group = %group.name, bk_biz_id = group.bk_biz_id, "CMDB lists no such business to this app (unknown, archived or not permitted); bk_biz_name is empty");
            }
            state.named = true;
            state.bk_biz_name = name.unwrap_or_default().into();
        }
        Err(err) => {
            state.named = false;
            tracing::warn!(group = %group.name, bk_biz_id = group.bk_biz_id, error = %err, "CMDB business lookup (search_business) failed; keeping the last business name");
        }
    }
}

fn apply_listing(
    state: &mut CmdbGroupState,
    listed: Result<Vec<CmdbHost>, GseError>,
    group: &GroupConfig,
    max_shrink: f64,
) {
    let mut hosts = match listed {
        Ok(hosts) => hosts,
        Err(err) => {
            state.listed = false;
            let kept = state.hosts.len();
            // Nothing listed yet (a new group, or its business just changed).
            match state.last_success.is_some() || kept > 0 {
                true => {
                    tracing::warn!(group = %group.name, bk_biz_id = group.bk_biz_id, error = %err, kept, "CMDB discovery failed; keeping the last host list")
                }
                false => {
                    tracing::warn!(group = %group.name, bk_biz_id = group.bk_biz_id, error = %err, "CMDB discovery failed; the group has no host list yet")
                }
            }
            return;
        }
    };
    state.listed = true;
    let old = state.hosts.len();
    let shrinks = hosts.len() < old && (hosts.len() as f64) <= old as f64 * (1.0 - max_shrink);
    if shrinks && !state.held {
        state.held = true;
        tracing::warn!(group = %group.name, before = old, after = hosts.len(), "CMDB says the group shrank by max_shrink or more; holding the change back for one more refresh");
        return;
    }
    state.held = false;
    share_topologies(&mut hosts);
    state.hosts = Arc::new(hosts);
}

/// Looks at a hosts file and reads it if it changed (blocking).
fn look(
    mut watch: FileWatch,
    path: &Path,
    api: ApiVersion,
    blank: &Arc<[String]>,
    sharding: Sharding,
) -> Look {
    let text = match watch.read_when_still(path, HOSTS_FILE_STILL, HOSTS_FILE_PATIENCE, || {
        read_text(path, HOSTS_FILE)
    }) {
        Reading::Unchanged => return (watch, Looked::Nothing),
        Reading::Busy => {
            tracing::info!(file = %path.display(), "the hosts file changed and is being written; keeping its last hosts until it is still");
            return (watch, Looked::Nothing);
        }
        Reading::Read(Ok(text)) => text,
        Reading::Read(Err(err)) => {
            tracing::warn!(file = %path.display(), error = %err, "cannot read the hosts file; keeping its last hosts");
            return (watch, Looked::Failed);
        }
    };
    // Each line becomes its entry at once, kept only when this shard owns
    // it: no list of parsed hosts beside the entries (at a million hosts
    // that list weighed 80 MB), and a shard holds only its share.
    let mut entries = FirstSeen::with_capacity(share_of_lines(&text, sharding));
    let mut bad = BadLines::default();
    for (line, parsed) in host_lines(&text, api) {
        match parsed {
            Ok(host) => {
                if let Some(entry) = HostEntry::new(&host, api, blank.clone())
                    && owns_key(sharding, &entry.key)
                {
                    entries.push_by(entry, |e: &HostEntry| &e.key);
                }
            }
            Err(rule) => bad.push(BadLine { line, rule }),
        }
    }
    drop(text);
    bad.log(path);
    // Kept until the file changes: no room to spare.
    let entries = entries.into_vec();
    tracing::info!(file = %path.display(), hosts = entries.len(), "hosts file read");
    (watch, Looked::Read(Arc::new(entries)))
}

/// The bad lines of a hosts file: the first [`MAX_LISTED_PROBLEMS`], which
/// are logged, and how many there were. Keeping every one cost 16 bytes a
/// line: 480 MB for a 60 MB file of bad lines written while the exporter ran.
#[derive(Debug, Default)]
struct BadLines {
    listed: Vec<BadLine>,
    total: usize,
}

impl BadLines {
    fn push(&mut self, bad: BadLine) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED_PROBLEMS {
            self.listed.push(bad);
        }
    }

    fn log(&self, path: &Path) {
        for bad in &self.listed {
            tracing::warn!(file = %path.display(), line = bad.line, rule = bad.rule, "skipping a bad line of a hosts file");
        }
        let more = self.total - self.listed.len();
        if more > 0 {
            tracing::warn!(file = %path.display(), more, "skipping more bad lines of the hosts file");
        }
    }
}

/// Room for this shard's hosts of a hosts file: its share of the lines and
/// a little over (keys spread evenly but not exactly), so the table is not
/// grown, and copied, a host at a time; the room over is given back when
/// the entries are kept. At most [`MAX_RESERVED_HOSTS`]: lines are not
/// hosts (given a 60 MiB file of blank lines and one host, the exporter
/// peaked at 202 MiB reserving for every line, 77 MiB with the bound), and
/// past that the table grows as it needs.
fn share_of_lines(text: &str, sharding: Sharding) -> usize {
    let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
    let share = lines / sharding.total.max(1) as usize;
    (share + share / 16 + 64).min(MAX_RESERVED_HOSTS)
}

/// The most host entries a hosts file's reading reserves room for ahead
/// (about 60 MB, under the text of the largest file read): the largest
/// fleets, a million agents, in one reservation.
const MAX_RESERVED_HOSTS: usize = 1 << 20;

/// Makes hosts with equal topologies share one `Arc` (a business has few
/// distinct set, module and maintainer combinations and many hosts).
fn share_topologies(hosts: &mut [CmdbHost]) {
    let mut seen: HashSet<Arc<Topology>> = HashSet::new();
    for host in hosts {
        if let Some(topology) = &mut host.topology {
            match seen.get(topology) {
                Some(shared) => *topology = shared.clone(),
                None => {
                    seen.insert(topology.clone());
                }
            }
        }
    }
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// A group's hosts from its sources: inline hosts, then the file, then CMDB;
/// de-duplicated by key and filtered to this shard. A group read from its
/// file alone shares the file's list.
fn build_hosts(
    group: &GroupConfig,
    sharding: Sharding,
    blank: &Arc<[String]>,
    file: &Option<Arc<Vec<HostEntry>>>,
    cmdb: &Option<Arc<Vec<CmdbHost>>>,
) -> (Arc<Vec<HostEntry>>, BTreeMap<&'static str, u64>) {
    let mut skipped = BTreeMap::new();
    // The file's list holds this shard's hosts only.
    if let Some(file) = file
        && group.hosts.is_empty()
        && cmdb.is_none()
    {
        return (file.clone(), skipped);
    }
    let mut entries: Vec<HostEntry> = group
        .hosts
        .iter()
        .filter_map(|h| HostEntry::new(h, group.api, blank.clone()))
        .collect();
    if let Some(file) = file {
        entries.extend(file.iter().cloned());
    }
    for cmdb_host in cmdb.iter().flat_map(|hosts| hosts.iter()) {
        match cmdb_entry(cmdb_host, group) {
            Ok(entry) => entries.push(entry),
            Err(reason) => *skipped.entry(reason).or_insert(0) += 1,
        }
    }
    let mut hosts: Vec<HostEntry> = dedupe(entries, group.topology())
        .into_iter()
        .filter(|e| owns_key(sharding, &e.key))
        .collect();
    hosts.shrink_to_fit();
    (Arc::new(hosts), skipped)
}

/// Turns a CMDB host into a host to poll, or the reason it cannot be asked for.
/// A multi-IP `bk_host_innerip` ("a,b") uses its first IPv4 address.
pub(crate) fn cmdb_entry(cmdb: &CmdbHost, group: &GroupConfig) -> Result<HostEntry, &'static str> {
    if cmdb.unreadable {
        return Err(SKIP_UNREADABLE);
    }
    let mut ips = cmdb
        .bk_host_innerip
        .split(',')
        .filter_map(|ip| ip.trim().parse::<Ipv4Addr>().ok());
    let mut ip = ips.next();
    let agent_id = parse_agent_id(cmdb.bk_agent_id.trim()).ok();
    // A legacy `cloud:ip` id must name this host (its cloud, one of its
    // addresses), as in a hosts file: else another host's state was shown
    // under this one's address. The host is then known by that address.
    if group.api == ApiVersion::V2
        && let Some((cloud, id_ip)) = agent_id.as_deref().and_then(legacy_address)
    {
        let listed = ip.is_none() || ip == Some(id_ip) || ips.any(|other| other == id_ip);
        if cloud != cmdb.bk_cloud_id || !listed {
            return Err(SKIP_ID_OF_ANOTHER_HOST);
        }
        ip = Some(id_ip);
    }
    match (group.api, ip, &agent_id) {
        (ApiVersion::V1, None, _) => return Err(SKIP_NO_IPV4_FOR_V1),
        (ApiVersion::V2, None, None) => return Err(SKIP_NO_ADDRESS),
        _ => {}
    }
    let host = Host {
        bk_cloud_id: Some(cmdb.bk_cloud_id),
        ip,
        agent_id: if group.api == ApiVersion::V2 {
            agent_id
        } else {
            None
        },
    };
    let labels: Vec<String> = group
        .host_label_names()
        .iter()
        .map(|name| match name.as_str() {
            "bk_host_name" => cmdb.bk_host_name.clone(),
            "bk_host_id" => cmdb.bk_host_id.to_string(),
            _ => String::new(),
        })
        .collect();
    let mut entry = HostEntry::new(&host, group.api, labels.into()).ok_or(SKIP_NO_ADDRESS)?;
    entry.set_topology(cmdb.topology.clone());
    Ok(entry)
}

/// The first entry per key; with `topology`, a host also configured inline
/// or in a file takes its topology from its CMDB entry.
fn dedupe(entries: Vec<HostEntry>, topology: bool) -> Vec<HostEntry> {
    let mut seen: HashMap<Key, usize> = HashMap::with_capacity(entries.len());
    let mut out: Vec<HostEntry> = Vec::with_capacity(entries.len());
    for entry in entries {
        match seen.get(&entry.key) {
            Some(&kept) => {
                if topology && out[kept].topology().is_none() {
                    out[kept].set_topology(entry.topology().cloned());
                }
            }
            None => {
                seen.insert(entry.key.clone(), out.len());
                out.push(entry);
            }
        }
    }
    out
}

/// Whether this shard exports the agent asked for by `key`: FNV-1a (64-bit)
/// of the query key (`cloud:ip` or the agent id), modulo the shard count.
pub(crate) fn owns(sharding: Sharding, key: &str) -> bool {
    sharding.total <= 1 || shard_of(key, sharding.total) == sharding.shard
}

/// Whether this shard owns the agent of `key`; a key held as bytes is
/// spelled out only when there are shards to choose between.
fn owns_key(sharding: Sharding, key: &Key) -> bool {
    sharding.total <= 1 || key.with_str(|key| owns(sharding, key))
}

/// The shard of an agent key, stable across processes, versions and platforms.
pub(crate) fn shard_of(key: &str, total: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(total.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(api: ApiVersion, labels: &[&str]) -> GroupConfig {
        GroupConfig {
            name: "g".into(),
            bk_biz_id: 5,
            api,
            labels: vec![],
            hosts: vec![],
            hosts_file: None,
            cmdb: Some(GroupCmdb {
                labels: labels.iter().map(|s| s.to_string()).collect(),
                ..GroupCmdb::default()
            }),
            per_agent_metrics: true,
            tenant_id: None,
        }
    }

    #[test]
    fn bad_lines_past_those_logged_are_counted_not_kept() {
        let mut bad = BadLines::default();
        for line in 1..=100_000 {
            bad.push(BadLine {
                line,
                rule: "a rule",
            });
        }
        assert_eq!(bad.total, 100_000);
        let lines: Vec<usize> = bad.listed.iter().map(|b| b.line).collect();
        assert_eq!(lines, (1..=MAX_LISTED_PROBLEMS).collect::<Vec<_>>());
    }

    #[test]
    fn cmdb_hosts_become_lookups_or_skip_reasons() {
        let v2 = group(ApiVersion::V2, &["bk_host_name"]);
        let multi = CmdbHost {
            bk_host_innerip: "10.0.0.1,10.0.0.2".into(),
            bk_host_name: "web-1".into(),
            ..CmdbHost::default()
        };
        let entry = cmdb_entry(&multi, &v2).unwrap();
        assert_eq!(entry.ip(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(&**entry.labels().unwrap(), ["web-1".to_string()]);
        let v6_only = CmdbHost {
            bk_host_innerip_v6: "::1".into(),
            ..CmdbHost::default()
        };
        assert_eq!(cmdb_entry(&v6_only, &v2), Err(SKIP_NO_ADDRESS));
        let v6_with_id = CmdbHost {
            bk_agent_id: "0100aa".into(),
            ..v6_only.clone()
        };
        assert_eq!(
            cmdb_entry(&v6_with_id, &v2)
                .unwrap()
                .host()
                .query_key(ApiVersion::V2)
                .as_deref(),
            Some("0100aa")
        );
        assert_eq!(
            cmdb_entry(&v6_with_id, &group(ApiVersion::V1, &[])),
            Err(SKIP_NO_IPV4_FOR_V1)
        );
        let unreadable = CmdbHost {
            unreadable: true,
            ..multi.clone()
        };
        assert_eq!(cmdb_entry(&unreadable, &v2), Err(SKIP_UNREADABLE));
        let elsewhere = CmdbHost {
            bk_host_innerip: "10.1.0.5".into(),
            bk_agent_id: "7:10.9.9.9".into(),
            ..CmdbHost::default()
        };
        assert_eq!(cmdb_entry(&elsewhere, &v2), Err(SKIP_ID_OF_ANOTHER_HOST));
        let itself = CmdbHost {
            bk_agent_id: "0:10.1.0.5".into(),
            ..elsewhere.clone()
        };
        let entry = cmdb_entry(&itself, &v2).unwrap();
        assert_eq!(
            entry.host().query_key(ApiVersion::V2).as_deref(),
            Some("0:10.1.0.5")
        );
        let only_id = CmdbHost {
            bk_cloud_id: 3,
            bk_agent_id: "3:10.1.0.6".into(),
            ..CmdbHost::default()
        };
        let entry = cmdb_entry(&only_id, &v2).unwrap();
        assert_eq!(
            entry.ip(),
            Some(Ipv4Addr::new(10, 1, 0, 6)),
            "the address from the id"
        );
        let second = CmdbHost {
            bk_host_innerip: "10.1.0.5,10.1.0.7".into(),
            bk_agent_id: "0:10.1.0.7".into(),
            ..CmdbHost::default()
        };
        let entry = cmdb_entry(&second, &v2).unwrap();
        assert_eq!(
            entry.ip(),
            Some(Ipv4Addr::new(10, 1, 0, 7)),
            "the address the id names"
        );
    }

    #[test]
    fn a_host_also_configured_inline_takes_its_topology_from_cmdb() {
        let mut g = group(ApiVersion::V2, &[]);
        g.cmdb.as_mut().unwrap().topology = true;
        g.hosts = vec![Host {
            bk_cloud_id: Some(0),
            ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            agent_id: None,
        }];
        let topology = Arc::new(Topology::from_names(["web"], ["nginx"], "alice", ""));
        let listed = vec![
            CmdbHost {
                bk_host_innerip: "10.0.0.1".into(),
                topology: Some(topology.clone()),
                ..CmdbHost::default()
            },
            CmdbHost {
                bk_host_innerip: "10.0.0.2".into(),
                topology: Some(topology.clone()),
                ..CmdbHost::default()
            },
        ];
        let blank: Arc<[String]> = Vec::new().into();
        let (hosts, _) = build_hosts(
            &g,
            Sharding::default(),
            &blank,
            &None,
            &Some(Arc::new(listed)),
        );
        assert_eq!(hosts.len(), 2);
        assert!(hosts.iter().all(|h| h.topology() == Some(&topology)));
    }

    #[test]
    fn equal_topologies_share_one_allocation() {
        let host = |op: &str| CmdbHost {
            topology: Some(Arc::new(Topology::from_names(["web"], ["nginx"], op, ""))),
            ..CmdbHost::default()
        };
        let mut hosts = vec![host("alice"), host("alice"), host("bob")];
        share_topologies(&mut hosts);
        let arc = |i: usize| hosts[i].topology.clone().unwrap();
        assert!(Arc::ptr_eq(&arc(0), &arc(1)));
        assert!(!Arc::ptr_eq(&arc(0), &arc(2)));
    }

    #[test]
    fn a_hosts_file_of_blank_lines_reserves_no_more_than_a_million_hosts() {
        let one = Sharding { shard: 0, total: 1 };
        let blank = "\n".repeat(4 << 20);
        assert_eq!(share_of_lines(&blank, one), MAX_RESERVED_HOSTS);
        let hosts = "0:10.0.0.1\n".repeat(3000);
        let share = share_of_lines(&hosts, Sharding { shard: 1, total: 3 });
        assert!((1000..1200).contains(&share), "a shard's share: {share}");
    }

    #[test]
    fn a_shard_keeps_only_its_share_of_a_hosts_file_and_each_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let mut text = String::from("# fleet\n");
        for i in 0..300 {
            text.push_str(&format!("0:10.0.{}.{}\n", i / 100, i % 100));
        }
        text.push_str("0:10.0.0.1\n00:10.0.0.1 # the same host again\n");
        // Agent ids, which keys hold as bytes, spelled out to pick a shard.
        for i in 0..100 {
            text.push_str(&format!("{:032x}\n", 0x0100_0000_u64 + i));
        }
        std::fs::write(&path, text).unwrap();
        let blank: Arc<[String]> = Arc::from([]);
        let all = |sharding| {
            let (_, hosts) = look(
                FileWatch::default(),
                &path,
                ApiVersion::V2,
                &blank,
                sharding,
            );
            match hosts {
                Looked::Read(hosts) => hosts,
                other => panic!("not read: {other:?}"),
            }
        };
        let unsharded = all(Sharding { shard: 0, total: 1 });
        assert_eq!(unsharded.len(), 400, "no shards: every host, once");
        let mut kept = Vec::new();
        for shard in 0..3 {
            let sharding = Sharding { shard, total: 3 };
            let hosts = all(sharding);
            assert!(hosts.iter().all(|h| h.key.with_str(|k| owns(sharding, k))));
            kept.extend(hosts.iter().map(|h| h.key.to_string()));
        }
        let mut unique = kept.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(kept.len(), 400, "every host in exactly one shard, once");
        assert_eq!(unique.len(), 400);
    }

    #[test]
    fn shards_split_keys_stably_and_completely() {
        assert_eq!(shard_of("0:10.0.0.1", 3), shard_of("0:10.0.0.1", 3));
        let keys: Vec<String> = (0..3000)
            .map(|i| format!("0:10.0.{}.{}", i / 250, i % 250))
            .collect();
        let mut per_shard = [0; 3];
        for key in &keys {
            let owners: Vec<u32> = (0..3)
                .filter(|s| {
                    owns(
                        Sharding {
                            shard: *s,
                            total: 3,
                        },
                        key,
                    )
                })
                .collect();
            assert_eq!(owners.len(), 1, "{key} has exactly one shard");
            per_shard[owners[0] as usize] += 1;
        }
        assert!(per_shard.iter().all(|n| *n > 800), "{per_shard:?}");
        // Pinned: changing the hash would move every agent between shards.
        assert_eq!(shard_of("0100005254008ed86116666614661851", 16), 7);
        assert_eq!(shard_of("0100005254008ed86116666614661851", 3), 0);
    }
}
