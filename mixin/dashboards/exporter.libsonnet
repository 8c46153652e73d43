// "GSE agents / Exporter": gse_exporter itself: poll cycles, the GSE API,
// rate limiting, CMDB discovery, shards, OTLP, the HTTP server, the process
// and its configuration.
local g = import '../lib/grafana.libsonnet';
local util = import '../lib/util.libsonnet';

function(cfg)
  local c = (import 'common.libsonnet')(cfg);
  local q = {
    job: c.job,
    group: c.group,
    site: c.site,
    inGroups: c.inGroups,
    inInstances: c.inInstances,
    lately: c.inInstancesLately,
  };
  local sl = c.siteLegend;
  // A per-group gauge of the selected groups, one line per site and group.
  local perGroup(agg, metric) =
    '%s by (%s, group) (%s{%s} %s)' % [agg, c.site, metric, c.group, c.inGroups];
  // A counter's rate summed per site and `by`, over the selected instances.
  local rate(metric, by, matchers='') =
    'sum by (%s, %s) (rate(%s{%s%s}[$__rate_interval]) %s)'
    % [c.site, by, metric, c.job, matchers, c.inInstances];
  // A gauge per site and instance, over the selected instances.
  local perInstance(agg, metric) =
    '%s by (%s, instance) (%s{%s} %s)' % [agg, c.site, metric, c.job, c.inInstances];
  // Info APIs are called once per info_interval: bridge the gaps between.
  local infoGaps = util.seconds(cfg.infoInterval) * 1000;
  // API latency quantile, only where requests happened in the window
  // (histogram_quantile of all-zero buckets is NaN).
  local latency(quantile) = |||
    histogram_quantile(%(quantile)s, %(buckets)s)
      and on (%(site)s, api) %(count)s > 0
  ||| % {
    quantile: quantile,
    site: c.site,
    buckets: rate('gse_exporter_api_request_duration_seconds_bucket', 'api, le'),
    count: rate('gse_exporter_api_request_duration_seconds_count', 'api'),
  };
  local flag(title, description, expr, zero, one, zeroColor='red', oneColor='green', w=12) =
    g.stateTimeline(title,
                    description,
                    expr,
                    sl + '{{group}}',
                    g.flagMappings(zero, one, zeroColor, oneColor),
                    w=w,
                    thresholds=[[zeroColor, null], [oneColor, 1]]);

  g.dashboard(
    cfg,
    'gse-agents-exporter',
    'Exporter',
    'Health of gse_exporter itself: poll cycles, GSE API requests, latency, rate limiting, CMDB discovery, shards, OTLP pushes, the HTTP server, the process (CPU, memory, file descriptors), reloads and /metrics size.',
    c.variables(g),
    [
      g.row('Poll cycle'),
      flag('GSE reachable per group (gse_up)',
           '1 = every batch of the group succeeded in the last cycle.',
           perGroup('min', 'gse_up'),
           'unreachable',
           'ok',
           w=24),
      g.timeseries(
        'Poll duration against interval',
        'Duration of the last poll cycle per group and the configured interval.',
        [
          g.target(perGroup('max', 'gse_exporter_poll_duration_seconds'), sl + '{{group}} duration'),
          g.target(perGroup('max', 'gse_exporter_poll_interval_seconds'), sl + '{{group}} interval'),
        ],
        unit='s',
        overrides=g.dashed(['B']),
      ),
      g.timeseries(
        'Poll duration / interval',
        'GseExporterPollSlow fires above %g for %s.' % [cfg.pollSlowRatio, cfg.pollSlowFor],
        [g.target(
          'max by (%(site)s, group) (gse_exporter_poll_duration_seconds{%(group)s} / gse_exporter_poll_interval_seconds{%(group)s} %(inGroups)s)' % q,
          sl + '{{group}}'
        )],
        unit='percentunit',
        min=0,
        thresholds=[['green', null], ['red', cfg.pollSlowRatio]],
        thresholdsLine=true,
      ),
      g.timeseries(
        'Time since last successful poll',
        'time() - gse_exporter_last_poll_success_timestamp_seconds per group.',
        [g.target('time() - ' + perGroup('max', 'gse_exporter_last_poll_success_timestamp_seconds'), sl + '{{group}}')],
        unit='s',
        w=24,
      ),

      g.row('GSE API'),
      g.timeseries(
        'API requests by result',
        'Request rate per API and result.',
        [g.target(rate('gse_exporter_api_requests_total', 'api, result'), sl + '{{api}} {{result}}')],
        unit='reqps',
        fill=20,
        spanNulls=infoGaps,
      ),
      g.timeseries(
        'API error ratio',
        'Share of requests that did not succeed (not_found excluded: it is an answer). The info APIs are called once per info_interval; their points are connected across the calls.',
        [g.target(
          '%s\n  / (%s > 0)' % [
            rate('gse_exporter_api_requests_total', 'api', ', result!~"success|not_found"'),
            rate('gse_exporter_api_requests_total', 'api'),
          ],
          sl + '{{api}}'
        )],
        unit='percentunit',
        min=0,
        spanNulls=infoGaps,
      ),
      g.timeseries(
        'API request latency quantiles',
        'histogram_quantile over gse_exporter_api_request_duration_seconds per API, where the API was called in the window (the info APIs once per info_interval; their points are connected across the calls).',
        [
          g.target(latency('0.5'), sl + '{{api}} p50'),
          g.target(latency('0.9'), sl + '{{api}} p90'),
          g.target(latency('0.99'), sl + '{{api}} p99'),
        ],
        unit='s',
        spanNulls=infoGaps,
      ),
      g.timeseries(
        'API retries',
        'Retries per API.',
        [g.target(rate('gse_exporter_api_retries_total', 'api'), sl + '{{api}}')],
        unit='reqps',
      ),

      g.row('Rate limiting'),
      g.timeseries(
        "Time waiting on the exporter's rate limiter",
        "Seconds per second spent waiting on the exporter's own token bucket (gse.rate_limit).",
        [g.target(rate('gse_exporter_rate_limit_wait_seconds_total', 'instance'), sl + '{{instance}}')],
        unit='s',
      ),
      g.timeseries(
        'Rate-limited responses from GSE',
        'GseExporterRateLimited fires when this stays above 0 for %s.' % cfg.rateLimitedFor,
        [g.target(rate('gse_exporter_api_requests_total', 'api', ', result="rate_limited"'), sl + '{{api}}')],
        unit='reqps',
        thresholds=[['green', null], ['red', 1e-06]],
      ),

      g.row('CMDB discovery'),
      flag('CMDB discovery per group',
           'gse_exporter_discovery_success of the groups discovered from CMDB: failing = the last listing failed and the group is polled with its last good host list (GseExporterDiscoveryFailing after %s).' % cfg.discoveryFailingFor,
           perGroup('min', 'gse_exporter_discovery_success'),
           'failing',
           'ok'),
      flag('CMDB listings held back',
           'gse_exporter_discovery_held_back: a listing that would shrink the group by cmdb.max_shrink or more is held back for one refresh (GseExporterDiscoveryHeldBack).',
           perGroup('max', 'gse_exporter_discovery_held_back'),
           'taken',
           'held back',
           'green',
           'orange'),
      flag('Hosts file per group',
           'gse_exporter_hosts_file_read_success of the groups with a hosts_file: unreadable = the file changed and could not be read (deleted, no permission, not text), and the group is polled with the hosts last read from it (GseExporterHostsFileUnreadable after %s).' % cfg.hostsFileUnreadableFor,
           perGroup('min', 'gse_exporter_hosts_file_read_success'),
           'unreadable',
           'read',
           w=24),
      g.timeseries(
        'Time since last successful CMDB discovery',
        'time() - gse_exporter_discovery_last_success_timestamp_seconds per group.',
        [g.target('time() - ' + perGroup('max', 'gse_exporter_discovery_last_success_timestamp_seconds'), sl + '{{group}}')],
        unit='s',
        w=8,
      ),
      g.timeseries(
        'Hosts polled per group',
        'gse_exporter_group_hosts summed over the instances (shards) polling the group: configured and discovered hosts after de-duplication.',
        [g.target(perGroup('sum', 'gse_exporter_group_hosts'), sl + '{{group}}')],
        w=8,
      ),
      g.timeseries(
        'Discovered hosts skipped, by reason',
        'gse_exporter_discovery_hosts_skipped: CMDB hosts that cannot be asked for.',
        [g.target(
          'sum by (%(site)s, group, reason) (gse_exporter_discovery_hosts_skipped{%(group)s} %(inGroups)s)' % q,
          sl + '{{group}} {{reason}}'
        )],
        w=8,
      ),

      g.row('Shards'),
      g.timeseries(
        'Shards reporting and configured',
        'Distinct gse_exporter_shard_ordinal values against gse_exporter_total_shards per job. GseExporterShardMissing fires while fewer report, for %s.' % cfg.shardMissingFor,
        [
          g.target(
            'count by (%(site)s, job) (count_values by (%(site)s, job) ("ordinal", gse_exporter_shard_ordinal{%(job)s} %(inInstances)s))' % q,
            sl + '{{job}} reporting'
          ),
          g.target(
            'max by (%(site)s, job) (gse_exporter_total_shards{%(job)s} %(inInstances)s)' % q,
            sl + '{{job}} configured'
          ),
        ],
        overrides=g.dashed(['B']),
      ),
      g.table(
        'Shard of each instance',
        'gse_exporter_shard_ordinal per instance (from 0).',
        ['max by (%(site)s, job, instance) (gse_exporter_shard_ordinal{%(job)s} %(inInstances)s)' % q],
        transformations=[{
          id: 'organize',
          options: {
            excludeByName: { Time: true },
            renameByName: { [c.site]: 'Site', job: 'Job', instance: 'Instance', Value: 'Shard' },
          },
        }],
      ),

      g.row('OTLP push'),
      g.timeseries(
        'OTLP pushes by result',
        'Pushes to the OpenTelemetry collector per result, each with its retries (only when otlp: is configured).',
        [g.target(rate('gse_exporter_otlp_exports_total', 'instance, result'), sl + '{{instance}} {{result}}')],
        unit='reqps',
        fill=20,
      ),
      g.timeseries(
        'OTLP push failure ratio',
        'GseExporterOtlpPushFailing fires above %g over %s, for %s.'
        % [cfg.otlpFailureRatio, cfg.otlpWindow, cfg.otlpFailingFor],
        [g.target(
          '%s\n  / (%s > 0)' % [
            rate('gse_exporter_otlp_exports_total', 'instance', ', result="failure"'),
            rate('gse_exporter_otlp_exports_total', 'instance'),
          ],
          sl + '{{instance}}'
        )],
        unit='percentunit',
        min=0,
        thresholds=[['green', null], ['red', cfg.otlpFailureRatio]],
        thresholdsLine=true,
      ),

      g.row('Process'),
      g.timeseries(
        'CPU',
        'CPU seconds per second (cores) of the exporter process.',
        [g.target(rate('process_cpu_seconds_total', 'instance'), sl + '{{instance}}')],
        w=6,
        axisLabel='cores',
      ),
      g.timeseries(
        'Resident memory',
        'process_resident_memory_bytes.',
        [g.target(perInstance('max', 'process_resident_memory_bytes'), sl + '{{instance}}')],
        unit='bytes',
        w=6,
      ),
      g.timeseries(
        'Open file descriptors',
        'process_open_fds against process_max_fds (dashed). Each scrape connection and each GSE or CMDB connection holds one.',
        [
          g.target(perInstance('max', 'process_open_fds'), sl + '{{instance}} open'),
          g.target(perInstance('max', 'process_max_fds'), sl + '{{instance}} max'),
        ],
        w=6,
        overrides=g.dashed(['B']),
      ),
      g.timeseries(
        'Uptime',
        'time() - process_start_time_seconds: drops are restarts.',
        [g.target('time() - ' + perInstance('max', 'process_start_time_seconds'), sl + '{{instance}}')],
        unit='s',
        w=6,
      ),

      g.row('Exporter'),
      g.stat(
        'Scrape target up',
        'Prometheus up for the exporter targets (those that polled a selected group in the last hour).',
        'min(up{%(job)s} %(lately)s)' % q,
        w=6,
        thresholds=[['red', null], ['green', 1]],
        mappings=[{ type: 'value', options: { '0': { text: 'down', index: 0 }, '1': { text: 'up', index: 1 } } }],
      ),
      g.stat(
        'Last config reload',
        'gse_exporter_config_last_reload_successful and gse_exporter_web_config_last_reload_successful (1 = the last reload of the configuration file and the last change of the web configuration were applied; GseExporterConfigReloadFailed after %s at 0 for the configuration file, GseExporterWebConfigRefused for the web configuration, whose last good one stays in force).' % cfg.configReloadFailedFor,
        'min(gse_exporter_config_last_reload_successful{%(job)s} %(inInstances)s or label_replace(gse_exporter_web_config_last_reload_successful{%(job)s} %(inInstances)s, "file", "web", "", ""))' % q,
        w=6,
        thresholds=[['red', null], ['green', 1]],
        mappings=[{ type: 'value', options: { '0': { text: 'failed', index: 0 }, '1': { text: 'ok', index: 1 } } }],
      ),
      g.table(
        'Build',
        'gse_exporter_build_info per instance.',
        ['gse_exporter_build_info{%(job)s} %(inInstances)s' % q],
        h=4,
        transformations=[{
          id: 'organize',
          options: { excludeByName: { Time: true, Value: true, __name__: true } },
        }],
      ),
      g.timeseries(
        'Time since the configuration was loaded',
        'time() - gse_exporter_config_last_reload_success_timestamp_seconds: since the start or the last successful reload.',
        [g.target('time() - ' + perInstance('max', 'gse_exporter_config_last_reload_success_timestamp_seconds'), sl + '{{instance}}')],
        unit='s',
        w=8,
      ),
      g.timeseries(
        '/metrics body size',
        'Size of the cached /metrics body per encoding.',
        [g.target(
          'max by (%(site)s, instance, encoding) (gse_exporter_metrics_body_bytes{%(job)s} %(inInstances)s)' % q,
          sl + '{{instance}} {{encoding}}'
        )],
        unit='bytes',
        w=8,
      ),
      g.timeseries(
        'Requests turned away',
        'gse_exporter_http_requests_rejected_total per reason: unauthorized, rate_limited, too_many_scrapes, too_many_connections, tls_handshake.',
        [g.target(rate('gse_exporter_http_requests_rejected_total', 'instance, reason'), sl + '{{instance}} {{reason}}')],
        unit='reqps',
        w=8,
      ),
    ],
  )
