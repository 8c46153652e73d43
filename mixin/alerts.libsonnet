// Alerting rules. Load them with the recording rules (rules.libsonnet): the
// per-agent alerts use gse_group:agents_offline:ratio_mass_offline.
//
// Conventions (kubernetes-mixin style):
//   severity: critical = page, warning = ticket, info = not routed.
//   annotations: summary (static), description (templated), runbook_url
//   (docs/runbook.md, anchor = lowercased alert name).
//   Every series is selected with _config.gseExporterSelector, and every
//   join and aggregation keeps _config.siteLabel and `job`, so an alert of
//   one site never mutes, blends or joins with a same-named group of
//   another, and Alertmanager can inhibit by site and job.
//
// Quiet on outages, enforced in the expressions (the inhibit rules of
// deploy/alertmanager/alertmanager.yml repeat it as a second line of
// defence):
//   - gse_up == 0 for a group (the exporter is blind): only
//     GseExporterGseUnreachable fires for the group; its per-agent and
//     per-group alerts are muted, because agents keep their last values
//     while GSE cannot be asked.
//   - a group in mass offline (gse_group:agents_offline:ratio_mass_offline,
//     threshold _config.massOfflineRatio): GseAgentsMassOffline pages once
//     for the group; its GseAgentOffline, GseAgentHeartbeatStale and
//     GseAgentFlapping alerts are muted.
local util = import 'lib/util.libsonnet';

{
  prometheusAlerts+:: {
    local cfg = $._config,
    local site = cfg.siteLabel,
    local p = {
      sel: cfg.gseExporterSelector,
      // One agent's series, from one target.
      agent: '%s, job, instance, group, bk_cloud_id, ip, bk_agent_id' % site,
      // One group of one site and job, whichever instance polls it.
      group: '%s, job, group' % site,
      groupBiz: '%s, job, group, bk_biz_id' % site,
      instanceGroup: '%s, job, instance, group' % site,
      instance: '%s, job, instance' % site,
      job: '%s, job' % site,
      parent: '%s, job, parent_ip' % site,
    },
    local siteClause = util.siteClause(cfg),
    local alert(name, severity, comment, expr, for_, summary, description) = {
      comment:: comment,
      alert: name,
      expr: expr,
      'for': for_,
      labels: { severity: severity },
      annotations: {
        summary: summary,
        description: util.fold(description),
        runbook_url: util.runbook(cfg, name),
      },
    },
    // The host of a per-agent alert, as every description names it.
    local agentText = |||
      host {{ $labels.ip }} (cloud {{ $labels.bk_cloud_id }},
      agent id {{ or $labels.bk_agent_id "unknown" }}) in group {{ $labels.group }}%s
      of business {{ $labels.bk_biz_id }}
    ||| % siteClause,
    // Per-agent alerts are muted while GSE cannot be asked for the group or
    // the group is in mass offline.
    local muted = |||
      unless on (%(group)s) (gse_up{%(sel)s} == 0)
      unless on (%(group)s) gse_group:agents_offline:ratio_mass_offline
    ||| % p,
    // An offline agent behind a proxy that is down is part of that outage,
    // which pages once as GseProxyAgentsOffline.
    local behindDownProxy = |||
      unless on (%(agent)s)
        (gse_agent_info{%(sel)s} and on (%(parent)s) gse_parent:agents_offline:ratio_proxy_down)
    ||| % p,
    // An agent alert with the host's CMDB topology and maintainers added
    // (gse_agent_topology_info, groups with `cmdb: { topology: true }`), so
    // Alertmanager can route by `operator`; the `or` keeps agents of groups
    // without topology, with no extra label.
    local withTopology(expr) = |||
      (
      %(expr)s
      )
      * on (%(agent)s) group_left (bk_biz_name, bk_set_name, bk_module_name, operator, bk_bak_operator)
        (
          gse_agent_topology_info{%(sel)s}
          or on (%(agent)s) (0 * gse_agent_online{%(sel)s} + 1)
        )
    ||| % (p { expr: expr }),
    // The topology of an agent alert, when it has one (renders to nothing otherwise).
    local topologyText = '{{ with $labels.bk_set_name }} Set {{ . }}{{ end }}'
                         + '{{ with $labels.bk_module_name }}, module {{ . }}{{ end }}'
                         + '{{ with $labels.operator }}; maintainers {{ . }}{{ end }}'
                         + '{{ with $labels.bk_bak_operator }} (backup {{ . }}){{ end }}',
    // A per-group self-metric condition with the group's business added:
    // the join only adds bk_biz_id, and the `or` keeps the alert when the
    // group has no gse_agents series.
    local withBiz(cond) = |||
      (%(cond)s)
        * on (%(group)s) group_left (bk_biz_id)
          group by (%(groupBiz)s) (gse_agents{%(sel)s})
      or on (%(instanceGroup)s)
        %(cond)s
    ||| % (p { cond: cond }),

    groups+: [
      {
        name: 'gse-agents.alerts',
        interval: cfg.ruleInterval,
        rules: [
          alert(
            'GseAgentOffline',
            'warning',
            |||
              Known offline only: not-found hosts (status -2) have their own alert.
              _config.agentOfflineFor (5m) = five default poll intervals.
              Hosts whose node (gse_exporter node) reports why are left to the
              alert naming the cause (gse-node.rules.yml).
            |||,
            withTopology(|||
              (
                gse_agent_online{%(sel)s} == 0
                unless on (%(agent)s) gse_agent_status_code{%(sel)s} == -2
              )
            ||| % p + muted + |||
              unless on (%s, bk_cloud_id, ip) gse_node:agent_fault:max
            ||| % site + behindDownProxy),
            cfg.agentOfflineFor,
            'A GSE agent is offline.',
            'GSE reports the agent on %s as offline for more than %s.%s'
            % [agentText, util.words(cfg.agentOfflineFor), topologyText],
          ),
          alert(
            'GseAgentNotFound',
            'warning',
            |||
              Hosts are often configured before the agent is installed and
              registered: an inventory problem, not an outage, so it waits
              _config.agentNotFoundFor (30m) and is not muted by mass offline.
            |||,
            |||
              gse_agent_status_code{%(sel)s} == -2
              unless on (%(group)s) (gse_up{%(sel)s} == 0)
            ||| % p,
            cfg.agentNotFoundFor,
            'A configured host is unknown to GSE.',
            |||
              Host {{ $labels.ip }} (cloud {{ $labels.bk_cloud_id }}, agent id
              {{ or $labels.bk_agent_id "unknown" }}) is configured in group {{ $labels.group }}%s
              of business {{ $labels.bk_biz_id }} but GSE has not known it for %s.
            ||| % [siteClause, util.words(cfg.agentNotFoundFor)],
          ),
          alert(
            'GseAgentHeartbeatStale',
            'warning',
            |||
              An online agent whose heartbeat is older than
              _config.heartbeatStaleSeconds (600s): GSE's view lags (stuck
              proxy or data server) rather than the agent being down.
            |||,
            |||
              (
                gse_agent_heartbeat_age_seconds{%(sel)s} > %(age)s
                and on (%(agent)s) gse_agent_online{%(sel)s} == 1
              )
            ||| % (p { age: '%g' % cfg.heartbeatStaleSeconds }) + muted,
            cfg.heartbeatStaleFor,
            'An online GSE agent has not sent a heartbeat for a long time.',
            |||
              The agent on %s is reported online but its last heartbeat
              is {{ $value | humanizeDuration }} old.
            ||| % agentText,
          ),
          alert(
            'GseAgentFlapping',
            'warning',
            |||
              More than _config.flappingChanges (6) state changes per
              _config.flappingWindow (1h): a crash loop, a starved host or a
              bad network path. A single restart (2 changes) must not ticket.
            |||,
            'changes(gse_agent_online{%(sel)s}[%(window)s]) > %(changes)s\n'
            % (p { window: cfg.flappingWindow, changes: cfg.flappingChanges }) + muted,
            cfg.flappingFor,
            'A GSE agent keeps switching between online and offline.',
            |||
              The agent on %s changed state {{ $value }} times in the last %s.
            ||| % [agentText, util.period(cfg.flappingWindow)],
          ),
          alert(
            'GseAgentsMassOffline',
            'critical',
            |||
              One alert per group of a site (labels site, job, group,
              bk_biz_id), never per agent. The threshold is
              _config.massOfflineRatio, in the recording rule
              gse_group:agents_offline:ratio_mass_offline.
            |||,
            |||
              gse_group:agents_offline:ratio_mass_offline
              unless on (%(group)s) (gse_up{%(sel)s} == 0)
            ||| % p,
            cfg.massOfflineFor,
            "A large share of a group's GSE agents is offline.",
            |||
              {{ $value | humanizePercentage }} of the configured hosts of group {{ $labels.group }}%s
              of business {{ $labels.bk_biz_id }} are offline, at or above the mass-offline
              threshold. Per-agent alerts of this group are muted while this fires.
            ||| % siteClause,
          ),
          alert(
            'GseProxyAgentsOffline',
            'critical',
            |||
              One alert per upstream parent (a GSE proxy, or a GSE server for
              the direct area) of a site and job, across groups and businesses:
              at least _config.proxyDownRatio (80%) of the agents GSE last saw
              behind it are offline and at least _config.proxyDownMinAgents (3)
              are behind it (gse_parent:agents_offline:ratio_proxy_down). Its
              agents' GseAgentOffline alerts are muted and they do not count
              toward a group's mass offline.
            |||,
            'gse_parent:agents_offline:ratio_proxy_down',
            cfg.proxyDownFor,
            'Most GSE agents behind one proxy are offline.',
            |||
              {{ $value | humanizePercentage }} of the GSE agents behind upstream {{ $labels.parent_ip }}%s
              are offline: the proxy (or server), or the network to it, is likely down.
              Their per-agent alerts are muted while this fires.
            ||| % siteClause,
          ),
          alert(
            'GseAgentVersionDrift',
            'info',
            'More than _config.versionDriftMaxVersions (2) versions for _config.versionDriftFor (1d).',
            'gse_group:agent_versions:count > %d' % cfg.versionDriftMaxVersions,
            cfg.versionDriftFor,
            'A group runs more GSE agent versions than intended.',
            |||
              Group {{ $labels.group }}%s of business {{ $labels.bk_biz_id }} has run
              {{ $value }} distinct GSE agent versions for %s (intended: at most %d).
            ||| % [siteClause, util.words(cfg.versionDriftFor), cfg.versionDriftMaxVersions],
          ),
        ],
      },
      {
        name: 'gse-exporter.alerts',
        interval: cfg.ruleInterval,
        rules: [
          alert(
            'GseExporterGseUnreachable',
            'critical',
            |||
              _config.gseUnreachableFor (5m): one failed cycle is retried on
              the next, and 5m exceeds stale_after (3 x 60s), after which the
              group's agents turn "unknown".
            |||,
            withBiz('gse_up{%(sel)s} == 0' % p),
            cfg.gseUnreachableFor,
            'gse_exporter cannot get agent states from GSE.',
            |||
              gse_exporter {{ $labels.instance }} failed to poll GSE for group {{ $labels.group }}%s
              of business {{ or $labels.bk_biz_id "unknown" }} for %s; the group's agent
              states are stale or unknown and its per-agent alerts are muted.
            ||| % [siteClause, util.words(cfg.gseUnreachableFor)],
          ),
          alert(
            'GseExporterPollSlow',
            'warning',
            'Above _config.pollSlowRatio (0.9) of the interval the next cycle starts late.',
            |||
              (
                %(cond)s
              )
              unless on (%(group)s) (gse_up{%(sel)s} == 0)
            ||| % (p {
                     cond: util.indent(withBiz(
                       'gse_exporter_poll_duration_seconds{%(sel)s} / gse_exporter_poll_interval_seconds{%(sel)s} > %(ratio)s'
                       % (p { ratio: '%g' % cfg.pollSlowRatio })
                     ), 2),
                   }),
            cfg.pollSlowFor,
            'gse_exporter poll cycles almost fill the poll interval.',
            |||
              gse_exporter {{ $labels.instance }} needs {{ $value | humanizePercentage }} of the
              poll interval to poll group {{ $labels.group }}%s of business
              {{ or $labels.bk_biz_id "unknown" }}.
            ||| % siteClause,
          ),
          alert(
            'GseExporterRateLimited',
            'warning',
            'Any rate limiting sustained for _config.rateLimitedFor (30m).',
            |||
              sum by (%(instance)s, api) (
                rate(gse_exporter_api_requests_total{%(sel)s, result="rate_limited"}[%(window)s])
              ) > 0
            ||| % (p { window: cfg.rateLimitedWindow }),
            cfg.rateLimitedFor,
            'GSE is rate limiting gse_exporter.',
            |||
              gse_exporter {{ $labels.instance }}%s has been rate limited by GSE on {{ $labels.api }}
              for %s ({{ printf "%%.3f" $value }} rejected requests per second).
            ||| % [siteClause, util.words(cfg.rateLimitedFor)],
          ),
          alert(
            'GseExporterDown',
            'critical',
            'absent() also fires when the target vanished from service discovery.',
            |||
              up{%(sel)s} == 0
              or
              absent(up{%(sel)s})
            ||| % p,
            cfg.exporterDownFor,
            'Prometheus cannot scrape gse_exporter.',
            |||
              Prometheus has not scraped gse_exporter
              {{ with $labels.instance }}target {{ . }}{{ else }}(no target at all){{ end }}
              of job {{ $labels.job }}%s for %s; GSE agent liveness is not monitored.
            ||| % [siteClause, util.words(cfg.exporterDownFor)],
          ),
          alert(
            'GseExporterConfigReloadFailed',
            'warning',
            |||
              A rejected reload (POST /-/reload or SIGHUP) keeps the previous
              configuration running: nothing breaks at once, but the change
              has not taken effect.
            |||,
            'gse_exporter_config_last_reload_successful{%(sel)s} == 0' % p,
            cfg.configReloadFailedFor,
            'gse_exporter rejected a configuration reload.',
            |||
              gse_exporter {{ $labels.instance }} of job {{ $labels.job }}%s rejected its last
              configuration reload at least %s ago and still runs the configuration it
              loaded before; the changes in the file have not taken effect.
            ||| % [siteClause, util.words(cfg.configReloadFailedFor)],
          ),
          alert(
            'GseExporterWebConfigRefused',
            'warning',
            |||
              A refused change of the web configuration (TLS, basic auth) keeps
              the last good one in force: scrapes go on as before, but the
              change (a new certificate, a rotated password) has not taken
              effect.
            |||,
            'gse_exporter_web_config_last_reload_successful{%(sel)s} == 0' % p,
            cfg.configReloadFailedFor,
            'gse_exporter refused a change of its web configuration.',
            |||
              gse_exporter {{ $labels.instance }} of job {{ $labels.job }}%s refused the last
              change of its web configuration file at least %s ago and still serves with
              the one it applied before; the change has not taken effect.
            ||| % [siteClause, util.words(cfg.configReloadFailedFor)],
          ),
          alert(
            'GseExporterDiscoveryFailing',
            'warning',
            |||
              CMDB listings of a group fail: the group keeps its last good host
              list, so nothing is lost at once, but hosts added to or removed
              from the business are not followed.
            |||,
            withBiz('gse_exporter_discovery_success{%(sel)s} == 0' % p),
            cfg.discoveryFailingFor,
            "gse_exporter cannot list a group's hosts from CMDB.",
            |||
              CMDB discovery of group {{ $labels.group }}%s of business
              {{ or $labels.bk_biz_id "unknown" }} on gse_exporter {{ $labels.instance }} has failed
              for %s; the group is polled with its last good host list, so hosts added to or
              removed from the business since are not followed.
            ||| % [siteClause, util.words(cfg.discoveryFailingFor)],
          ),
          alert(
            'GseExporterHostsFileUnreadable',
            'warning',
            |||
              A group's hosts file cannot be read (deleted, no permission, not
              text, too big): the group keeps the hosts last read from it, so
              nothing is lost at once, but edits to the file are not followed.
            |||,
            withBiz('gse_exporter_hosts_file_read_success{%(sel)s} == 0' % p),
            cfg.hostsFileUnreadableFor,
            "gse_exporter cannot read a group's hosts file.",
            |||
              The hosts file of group {{ $labels.group }}%s of business
              {{ or $labels.bk_biz_id "unknown" }} on gse_exporter {{ $labels.instance }} has not
              been readable for %s; the group is polled with the hosts last read from it, so
              edits to the file since are not followed.
            ||| % [siteClause, util.words(cfg.hostsFileUnreadableFor)],
          ),
          alert(
            'GseExporterDiscoveryHeldBack',
            'warning',
            |||
              A CMDB listing that would shrink the group by cmdb.max_shrink or
              more is held back for one refresh, then taken if CMDB says it
              again: someone should look before that.
            |||,
            withBiz('gse_exporter_discovery_held_back{%(sel)s} == 1' % p),
            cfg.discoveryHeldBackFor,
            'gse_exporter held back a CMDB listing that would shrink a group.',
            |||
              The latest CMDB listing of group {{ $labels.group }}%s of business
              {{ or $labels.bk_biz_id "unknown" }} would shrink the group by cmdb.max_shrink or
              more; gse_exporter {{ $labels.instance }} holds it back for one refresh and takes it
              if CMDB returns it again. Check in CMDB whether those hosts really left the business.
            ||| % siteClause,
          ),
          alert(
            'GseExporterShardMissing',
            'critical',
            |||
              Fewer distinct shard ordinals report than gse_exporter_total_shards
              says (count_values also catches two instances running the same
              shard). Value: the number of missing shards. When every shard is
              gone GseExporterDown fires instead.
            |||,
            |||
              max by (%(job)s) (gse_exporter_total_shards{%(sel)s})
                - count by (%(job)s) (
                    count_values by (%(job)s) ("ordinal", gse_exporter_shard_ordinal{%(sel)s})
                  )
              > 0
            ||| % p,
            cfg.shardMissingFor,
            'A shard of gse_exporter is missing.',
            |||
              {{ $value }} of the shards of job {{ $labels.job }}%s have reported no
              gse_exporter_shard_ordinal for %s (fewer distinct shards than
              gse_exporter_total_shards): the agents of a missing shard are polled by no one.
            ||| % [siteClause, util.words(cfg.shardMissingFor)],
          ),
          alert(
            'GseExporterOtlpPushFailing',
            'warning',
            |||
              More than _config.otlpFailureRatio (10%) of the OTLP pushes
              (each with its retries) failed over _config.otlpWindow (15m).
            |||,
            |||
              sum by (%(instance)s) (rate(gse_exporter_otlp_exports_total{%(sel)s, result="failure"}[%(window)s]))
                / sum by (%(instance)s) (rate(gse_exporter_otlp_exports_total{%(sel)s}[%(window)s]))
              > %(ratio)s
            ||| % (p { window: cfg.otlpWindow, ratio: '%g' % cfg.otlpFailureRatio }),
            cfg.otlpFailingFor,
            "gse_exporter's OTLP pushes fail.",
            |||
              {{ $value | humanizePercentage }} of the OTLP pushes of gse_exporter
              {{ $labels.instance }}%s failed over the last %s (after retries); the
              OpenTelemetry collector is missing the agent gauges of those pushes.
            ||| % [siteClause, util.words(cfg.otlpWindow)],
          ),
        ],
      },
    ],
  },
}
