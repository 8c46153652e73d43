// The one place to adapt the gse_exporter mixin: the selector of the
// exporter's series, the label that tells sites apart, every threshold and
// every `for` duration of the rules, and the dashboards' look.
//
// Override it from your own jsonnet and render with scripts/gen-mixin (see
// mixin/README.md):
//
//   (import 'mixin.libsonnet') + { _config+:: { siteLabel: 'cluster' } }
//
// The reasons behind each default are next to it; docs/runbook.md says what
// to do when an alert fires.
{
  _config+:: {
    // --- selectors and labels -------------------------------------------

    // Selects gse_exporter's series in every rule and the `up` of its
    // targets in GseExporterDown. The shipped scrape configs
    // (deploy/prometheus, deploy/compose, the ServiceMonitor) all set
    // job="gse_exporter". Must not be empty.
    gseExporterSelector: 'job="gse_exporter"',

    // The target label that tells sites (BlueKing installations, regions,
    // clusters) apart when one Prometheus scrapes several exporters, as the
    // multi-site file_sd example does (deploy/prometheus/file_sd). Every
    // aggregation and every join of the rules and dashboards keeps it, so
    // same-named groups of two sites never mix; the dashboards get a
    // variable of this name. A setup without such a label loses nothing:
    // the label is simply empty.
    siteLabel: 'site',

    // Selects the node mode's gse_node_* series (gse_exporter node, served on
    // its own /metrics or through node_exporter's textfile collector, so the
    // job name is free). Empty: any job.
    gseNodeSelector: '',

    // --- rule groups -----------------------------------------------------

    // Evaluation interval of every rule group. The exporter polls every 60s
    // by default and is scraped as often; evaluating faster re-reads the
    // same values.
    ruleInterval: '1m',

    // Alerts link to their section here (anchor = lowercased alert name).
    runbookUrlBase: 'https://github.com/gse-exporter/gse_exporter/blob/main/docs/runbook.md',

    // --- agents ------------------------------------------------------------

    // A group whose offline share of its configured hosts is at or above
    // this is "in mass offline": GseAgentsMassOffline pages once for it and
    // its per-agent alerts are muted. One host in three lost at once is an
    // outage of the group (network partition, GSE proxy down, bad rollout),
    // not N separate tickets.
    massOfflineRatio: 0.3,
    massOfflineFor: '5m',

    // Five default poll intervals: an agent restart or one missed GSE
    // report recovers well inside that.
    agentOfflineFor: '5m',

    // Hosts are often configured before the agent is installed and
    // registered: an inventory problem, not an outage.
    agentNotFoundFor: '30m',

    // Agents report every few seconds to a minute; the exporter polls every
    // 60s and re-reads GSE 2.0 report times every other cycle, so a healthy
    // age stays below two intervals plus the report period (~2.5 minutes).
    // Ten missed minutes while GSE still says "online" means GSE's view lags
    // (stuck proxy or data server) rather than the agent being down.
    heartbeatStaleSeconds: 600,
    heartbeatStaleFor: '10m',

    // More than 6 state changes in an hour = offline/online three times or
    // more: a crash loop, a starved host or a bad network path. A single
    // restart (2 changes) must not ticket.
    flappingChanges: 6,
    flappingWindow: '1h',
    flappingFor: '5m',

    // A GSE proxy (or server) is taken as down when at least this share of
    // the agents GSE last saw behind it (gse_parent_agents, across groups and
    // businesses) is offline, and at least proxyDownMinAgents agents are
    // behind it. A proxy that dies takes all its agents at once; 80% leaves
    // room for agents that moved to another proxy since the last info poll.
    // It pages once (GseProxyAgentsOffline); the GseAgentOffline alerts of
    // those agents are muted and they do not count toward a group's mass
    // offline share. Below proxyDownMinAgents, agents page one by one.
    proxyDownRatio: 0.8,
    proxyDownMinAgents: 3,
    proxyDownFor: '5m',

    // One version is steady state, two a rollout in progress; a third for a
    // whole day means a rollout stalled or hosts were skipped.
    versionDriftMaxVersions: 2,
    versionDriftFor: '1d',

    // --- the exporter ------------------------------------------------------

    // One failed cycle is retried on the next; five minutes also exceeds
    // stale_after (3 x 60s), after which the group's agents turn "unknown".
    gseUnreachableFor: '5m',

    // Above 90% of the interval the next cycle starts late and data ages;
    // 15m rules out a single slow GSE response.
    pollSlowRatio: 0.9,
    pollSlowFor: '15m',

    // Any sustained rate limiting means GSE (or its API gateway) rejects
    // calls; 30m ignores a burst at startup or after a reload.
    rateLimitedWindow: '15m',
    rateLimitedFor: '30m',

    exporterDownFor: '5m',

    // A rejected reload leaves the previous configuration running: nothing
    // breaks at once, but the change someone made has not taken effect.
    // 10m leaves time to fix a file and reload again.
    configReloadFailedFor: '10m',

    // A failed CMDB listing keeps the group's last good host list and is
    // retried every cycle; three default refresh intervals (10m) of failure
    // means CMDB or the app's permission on it is broken, and hosts added
    // or removed since are not followed.
    discoveryFailingFor: '30m',

    // A hosts file is replaced whole by a rename, or rewritten and then left
    // still for two seconds before it is read: one that cannot be read for
    // 10m was deleted, made unreadable or written as something that is not
    // text, and edits since are not followed.
    hostsFileUnreadableFor: '10m',

    // A listing that would shrink a group by cmdb.max_shrink or more is held
    // back for one refresh (10m by default), then taken if CMDB says it
    // again. Someone should look before that happens: the alert must fire
    // well inside one refresh.
    discoveryHeldBackFor: '1m',

    // Fewer distinct shards report than gse_exporter_total_shards says:
    // the agents of the missing shard are polled by nobody. 15m rides out a
    // StatefulSet rollout, where each pod restarts in turn.
    shardMissingFor: '15m',

    // Share of OTLP pushes (each with its retries) that failed over the
    // window. A collector restart loses a push or two; a tenth of them for
    // 15m means the collector side is down or rejects the data.
    otlpFailureRatio: 0.1,
    otlpWindow: '15m',
    otlpFailingFor: '15m',

    // --- the node mode ----------------------------------------------------

    // The node names why an offline agent is offline; its alerts wait less
    // than GseAgentOffline's 5m so the cause is known first.
    nodeCauseFor: '3m',
    // The node mode cannot look (missing privileges): a configuration
    // problem, not an incident.
    nodeChecksBlindFor: '30m',

    // --- dashboards --------------------------------------------------------

    dashboardTags: ['gse', 'blueking'],
    dashboardTitlePrefix: 'GSE agents / ',
    dashboardRefresh: '30s',
    dashboardTimezone: 'utc',

    // The exporter's info_interval (default 10m): the info APIs are called
    // that seldom, so their rate, error-ratio and latency series have points
    // only around each info poll. Their panels connect points up to this far
    // apart instead of showing nothing (or NaN) in between.
    infoInterval: '10m',
  },
}
