// "GSE agents / Fleet": agent states per group and business, offline
// agents, flapping, heartbeats and versions.
local g = import '../lib/grafana.libsonnet';

function(cfg)
  local c = (import 'common.libsonnet')(cfg);
  local q = {
    agents: c.agents,
    group: c.group,
    biz: c.biz,
    site: c.site,
    key: c.agentKey,
    inGroups: c.inGroups,
    // Online agents only: the heartbeat age of an offline agent grows for
    // as long as it stays offline and says nothing about heartbeats.
    online: 'and on (%s) gse_agent_online{%s} == 1' % [c.agentKey, c.agents],
    // Offline agents GSE knows (not-found hosts have status code -2).
    offline: '(gse_agent_online{%(agents)s} == 0) unless on (%(key)s) gse_agent_status_code{%(agents)s} == -2'
             % { agents: c.agents, key: c.agentKey },
  };
  local sl = c.siteLegend;
  local countAgents(state) = 'sum(gse_agents{%s, state="%s"})' % [q.agents, state];
  local heartbeat(cond) =
    'count(gse_agent_heartbeat_age_seconds{%s} %s %s)' % [q.agents, cond, q.online];
  local stateColumn(state) =
    'sum by (%s, group, bk_biz_id) (gse_agents{%s, state="%s"})' % [q.site, q.agents, state];

  g.dashboard(
    cfg,
    'gse-agents-fleet',
    'Fleet',
    'Liveness of BlueKing GSE agents reported by gse_exporter: states per group and business, offline agents, flapping, heartbeats and versions.',
    c.variables(g),
    [
      g.row('Overview'),
      g.stat('Online agents', 'Agents GSE reports online.', countAgents('online')),
      g.stat('Offline agents', 'Agents GSE knows and reports offline.', countAgents('offline'),
             thresholds=[['green', null], ['orange', 1]]),
      g.stat('Not found', 'Configured hosts GSE does not know (status code -2).',
             countAgents('not_found'), thresholds=[['green', null], ['yellow', 1]]),
      g.stat('Unknown',
             'Agents whose state is unknown because GSE could not be asked for longer than stale_after.',
             countAgents('unknown'), thresholds=[['green', null], ['red', 1]]),
      g.stat(
        'Online ratio',
        'Online agents over all configured hosts of the selected groups.',
        'sum(gse_group_state:agents:sum{%(agents)s, state="online"}) / (sum(gse_group:agents:sum{%(agents)s}) > 0)' % q,
        unit='percentunit',
        decimals=1,
        thresholds=[['red', null], ['orange', 0.7], ['green', 0.95]],
      ),
      g.stat(
        'Groups GSE cannot reach',
        'Groups of the selected businesses whose last poll cycle failed (gse_up == 0). gse_up has no bk_biz_id: it is joined through gse_agents of the same group.',
        'count(group by (%(site)s, job, group) (gse_up{%(group)s} == 0 %(inGroups)s)) or vector(0)' % q,
        thresholds=[['green', null], ['red', 1]],
      ),

      g.row('Per group and business'),
      g.timeseries(
        'Online ratio per group',
        'gse_group:agents_online:ratio: online agents over configured hosts, per group.',
        [g.target('gse_group:agents_online:ratio{%(agents)s}' % q, sl + '{{group}} (biz {{bk_biz_id}})')],
        unit='percentunit',
        min=0,
        max=1,
      ),
      g.timeseries(
        'Online ratio per business',
        'gse_biz:agents_online:ratio: online agents over configured hosts, per business.',
        [g.target('gse_biz:agents_online:ratio{%(biz)s}' % q, sl + 'biz {{bk_biz_id}}')],
        unit='percentunit',
        min=0,
        max=1,
      ),
      g.timeseries(
        'Agents by state',
        'Agent counts of the selected groups by state.',
        [g.target('sum by (%(site)s, state) (gse_agents{%(agents)s})' % q, sl + '{{state}}')],
        fill=20,
      ),
      g.bargauge(
        'Offline share per group',
        'gse_group:agents_offline:ratio. Red from the mass-offline threshold (%g%%, recording rule gse_group:agents_offline:ratio_mass_offline).' % (100 * cfg.massOfflineRatio),
        'sort_desc(gse_group:agents_offline:ratio{%(agents)s})' % q,
        sl + '{{group}} (biz {{bk_biz_id}})',
        unit='percentunit',
        max=1,
        thresholds=[['green', null], ['orange', 0.05], ['red', cfg.massOfflineRatio]],
      ),
      g.table(
        'Agents per group and state',
        'Current counts per group, one column per state.',
        [stateColumn(s) for s in ['online', 'offline', 'not_found', 'unknown']],
        w=24,
        transformations=[
          { id: 'merge', options: {} },
          {
            id: 'organize',
            options: {
              excludeByName: { Time: true },
              indexByName: { [c.site]: 0, group: 1, bk_biz_id: 2, 'Value #A': 3, 'Value #B': 4, 'Value #C': 5, 'Value #D': 6 },
              renameByName: {
                [c.site]: 'Site',
                group: 'Group',
                bk_biz_id: 'Business',
                'Value #A': 'online',
                'Value #B': 'offline',
                'Value #C': 'not_found',
                'Value #D': 'unknown',
              },
            },
          },
        ],
      ),

      g.row('Offline agents'),
      g.table(
        'Offline agents (known to GSE)',
        'Agents GSE knows and reports offline, with heartbeat age and version (join of gse_agent_online == 0, gse_agent_heartbeat_age_seconds and gse_agent_info). Empty heartbeat age = never seen alive.',
        [
          |||
            max by (%(site)s, group, bk_biz_id, bk_cloud_id, ip, bk_agent_id, version) (
              (%(offline)s)
              * on (%(key)s) group_left (version) gse_agent_info{%(agents)s}
            )
          ||| % q,
          |||
            max by (%(site)s, group, bk_biz_id, bk_cloud_id, ip, bk_agent_id, version) (
              (gse_agent_heartbeat_age_seconds{%(agents)s} and on (%(key)s) (%(offline)s))
              * on (%(key)s) group_left (version) gse_agent_info{%(agents)s}
            )
          ||| % q,
        ],
        w=16,
        h=10,
        transformations=[
          { id: 'merge', options: {} },
          {
            id: 'organize',
            options: {
              excludeByName: { Time: true, 'Value #A': true },
              indexByName: { [c.site]: 0, group: 1, bk_biz_id: 2, ip: 3, bk_cloud_id: 4, bk_agent_id: 5, 'Value #B': 6, version: 7 },
              renameByName: {
                [c.site]: 'Site',
                group: 'Group',
                bk_biz_id: 'Business',
                ip: 'IP',
                bk_cloud_id: 'Cloud',
                bk_agent_id: 'Agent ID',
                'Value #B': 'Heartbeat age',
                version: 'Version',
              },
            },
          },
        ],
        overrides=[{
          matcher: { id: 'byName', options: 'Heartbeat age' },
          properties: [{ id: 'unit', value: 's' }],
        }],
        sortBy=[{ displayName: 'Heartbeat age', desc: true }],
      ),
      g.table(
        'Hosts not found in GSE',
        'Configured hosts GSE does not know (gse_agent_status_code == -2).',
        ['gse_agent_status_code{%(agents)s} == -2' % q],
        w=8,
        h=10,
        transformations=[{
          id: 'organize',
          options: {
            excludeByName: { Time: true, Value: true, __name__: true, job: true, instance: true },
            renameByName: {
              [c.site]: 'Site',
              group: 'Group',
              bk_biz_id: 'Business',
              ip: 'IP',
              bk_cloud_id: 'Cloud',
              bk_agent_id: 'Agent ID',
            },
          },
        }],
      ),

      g.row('State changes'),
      g.timeseries(
        'State changes per group',
        'Online/offline transitions of the selected agents per interval.',
        [g.target(
          'sum by (%(site)s, group, bk_biz_id) (changes(gse_agent_online{%(agents)s}[$__rate_interval]))' % q,
          sl + '{{group}} (biz {{bk_biz_id}})'
        )],
        fill=20,
      ),
      g.table(
        'Most flapping agents (last hour)',
        'topk(10, changes(gse_agent_online[1h])): GseAgentFlapping fires above %d.' % cfg.flappingChanges,
        ['topk(10, changes(gse_agent_online{%(agents)s}[1h]) > 0)' % q],
        transformations=[{
          id: 'organize',
          options: {
            excludeByName: { Time: true, job: true, instance: true },
            renameByName: {
              [c.site]: 'Site',
              group: 'Group',
              bk_biz_id: 'Business',
              ip: 'IP',
              bk_cloud_id: 'Cloud',
              bk_agent_id: 'Agent ID',
              Value: 'Changes (1h)',
            },
          },
        }],
        sortBy=[{ displayName: 'Changes (1h)', desc: true }],
      ),

      g.row('Heartbeat'),
      g.timeseries(
        'Heartbeat age distribution',
        'Online agents per heartbeat-age bucket (an offline agent has no heartbeat to age). GseAgentHeartbeatStale fires for online agents above %d s.' % cfg.heartbeatStaleSeconds,
        [
          g.target(heartbeat('<= 60'), '≤ 1m'),
          g.target(heartbeat('> 60 <= 300'), '1m–5m'),
          g.target(heartbeat('> 300 <= 600'), '5m–10m'),
          g.target(heartbeat('> 600 <= 3600'), '10m–1h'),
          g.target(heartbeat('> 3600'), '> 1h'),
        ],
        fill=20,
      ),
      g.timeseries(
        'Heartbeat age quantiles per group',
        'Median and 99th percentile of the heartbeat age of the online agents per group.',
        [
          g.target(
            'quantile by (%(site)s, group) (0.5, gse_agent_heartbeat_age_seconds{%(agents)s} %(online)s)' % q,
            sl + '{{group}} p50'
          ),
          g.target(
            'quantile by (%(site)s, group) (0.99, gse_agent_heartbeat_age_seconds{%(agents)s} %(online)s)' % q,
            sl + '{{group}} p99'
          ),
        ],
        unit='s',
        thresholds=[['green', null], ['red', cfg.heartbeatStaleSeconds]],
        thresholdsLine=true,
      ),

      g.row('Versions'),
      g.timeseries(
        'Agents per version',
        'gse_agent_versions summed over the selected groups; empty version = unknown.',
        [g.target('sum by (%(site)s, version) (gse_agent_versions{%(agents)s})' % q, sl + '{{version}}')],
        fill=20,
      ),
      g.bargauge(
        'Versions now',
        'Current agents per version.',
        'sort_desc(sum by (%(site)s, version) (gse_agent_versions{%(agents)s}))' % q,
        sl + '{{version}}',
        w=6,
      ),
      g.bargauge(
        'Distinct versions per group',
        'gse_group:agent_versions:count; GseAgentVersionDrift (info) above %d for %s.'
        % [cfg.versionDriftMaxVersions, cfg.versionDriftFor],
        'sort_desc(gse_group:agent_versions:count{%(agents)s})' % q,
        sl + '{{group}}',
        w=6,
        thresholds=[['green', null], ['orange', cfg.versionDriftMaxVersions + 1]],
      ),
    ],
  )
