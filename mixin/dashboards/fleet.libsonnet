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
  // A node family of the chosen host, if it is an agent of the selection.
  local node(metric, matchers='', cond='') =
    '%s{%s%s}%s %s' % [metric, c.node, matchers, cond, c.nodeInAgents];
  // Its current state (a 0/1 family with a `state` label), for a stat.
  local nodeState(title, description, metric) =
    g.stat(title,
           description,
           'max by (%s, state) (%s)' % [q.site, node(metric, cond=' == 1')],
           w=6,
           legend=sl + '{{state}}',
           instant=true,
           graphMode='none',
           textMode='name');
  // Offline agents (known to GSE) of topology groups with their
  // gse_agent_topology_info labels `labels` added (groups without
  // `cmdb: { topology: true }` have no such series and drop out).
  local offlineWith(labels) = |||
    (%(offline)s)
      * on (%(key)s) group_left (%(labels)s)
        gse_agent_topology_info{%(agents)s}
  ||| % (q { labels: labels });
  // Offline agents per value of one topology label (and `also`), every value
  // of the selection shown (0 where none is offline).
  local offlinePer(label, also) =
    local by = '%s, %s%s' % [q.site, also, label];
    |||
      sort_desc(
        count by (%(by)s) (
          %(offline)s
        )
        or
        0 * count by (%(by)s) (gse_agent_topology_info{%(agents)s})
      )
    ||| % (q { by: by, offline: std.stripChars(offlineWith(label), '\n') });
  // Sets and modules are named per business; maintainers are people.
  local perTopologyBars(title, label, what, perBiz=true) =
    g.bargauge(
      title,
      'Agents GSE knows and reports offline, per %s (gse_agent_online == 0 joined to gse_agent_topology_info; groups with `cmdb: { topology: true }` only). A host in several %ss, or with several maintainers, counts under the names joined by `,`.'
      % [what, what],
      offlinePer(label, if perBiz then 'bk_biz_id, ' else ''),
      sl + '{{%s}}' % label + (if perBiz then ' (biz {{bk_biz_id}})' else ''),
      w=8,
      thresholds=[['green', null], ['orange', 1]],
    );
  local stateColumn(state) =
    'sum by (%s, group, bk_biz_id) (gse_agents{%s, state="%s"})' % [q.site, q.agents, state];

  g.dashboard(
    cfg,
    'gse-agents-fleet',
    'Fleet',
    'Liveness of BlueKing GSE agents reported by gse_exporter: states per group and business, offline agents, flapping, heartbeats and versions.',
    c.variables(g) + c.nodeVariables(g),
    [
      g.row('Overview'),
      g.stat('Online agents', 'Agents GSE reports online.', countAgents('online')),
      g.stat('Offline agents',
             'Agents GSE knows and reports offline.',
             countAgents('offline'),
             thresholds=[['green', null], ['orange', 1]]),
      g.stat('Not found',
             'Configured hosts GSE does not know (status code -2).',
             countAgents('not_found'),
             thresholds=[['green', null], ['yellow', 1]]),
      g.stat('Unknown',
             'Agents whose state is unknown because GSE could not be asked for longer than stale_after.',
             countAgents('unknown'),
             thresholds=[['green', null], ['red', 1]]),
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
        'Agents GSE knows and reports offline, with the age of their last heartbeat now (time() - gse_agent_heartbeat_timestamp_seconds, which keeps growing between polls) and version (join of gse_agent_online == 0 and gse_agent_info). Empty heartbeat age = never seen alive.',
        [
          |||
            max by (%(site)s, group, bk_biz_id, bk_cloud_id, ip, bk_agent_id, version) (
              (%(offline)s)
              * on (%(key)s) group_left (version) gse_agent_info{%(agents)s}
            )
          ||| % q,
          |||
            max by (%(site)s, group, bk_biz_id, bk_cloud_id, ip, bk_agent_id, version) (
              ((time() - gse_agent_heartbeat_timestamp_seconds{%(agents)s}) and on (%(key)s) (%(offline)s))
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

      g.row('Offline agents by CMDB topology'),
      perTopologyBars('Offline agents per set', 'bk_set_name', 'set'),
      perTopologyBars('Offline agents per module', 'bk_module_name', 'module'),
      perTopologyBars('Offline agents per maintainer', 'operator', 'maintainer', perBiz=false),
      g.table(
        'Offline agents with set, module and maintainers',
        'Agents GSE knows and reports offline, with where CMDB puts the host and who maintains it (gse_agent_topology_info, as of the last CMDB refresh; groups with `cmdb: { topology: true }` only).',
        [
          |||
            max by (%(site)s, group, bk_biz_id, bk_cloud_id, ip, bk_agent_id, bk_biz_name, bk_set_name, bk_module_name, operator, bk_bak_operator) (
              %(offline)s
            )
          ||| % (q { offline: std.stripChars(offlineWith('bk_biz_name, bk_set_name, bk_module_name, operator, bk_bak_operator'), '\n') }),
        ],
        w=24,
        transformations=[{
          id: 'organize',
          options: {
            excludeByName: { Time: true, Value: true },
            indexByName: {
              [c.site]: 0,
              group: 1,
              bk_biz_id: 2,
              bk_biz_name: 3,
              ip: 4,
              bk_cloud_id: 5,
              bk_agent_id: 6,
              bk_set_name: 7,
              bk_module_name: 8,
              operator: 9,
              bk_bak_operator: 10,
            },
            renameByName: {
              [c.site]: 'Site',
              group: 'Group',
              bk_biz_id: 'Business',
              bk_biz_name: 'Business name',
              ip: 'IP',
              bk_cloud_id: 'Cloud',
              bk_agent_id: 'Agent ID',
              bk_set_name: 'Set',
              bk_module_name: 'Module',
              operator: 'Maintainers',
              bk_bak_operator: 'Backup maintainers',
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

      g.row('Upstream proxies and cloud areas'),
      g.bargauge(
        'Offline share behind each proxy',
        'gse_parent_agents: offline share of the agents GSE knows behind each upstream parent (a GSE proxy, or a GSE server for the direct area), as of their last info reply. A dead proxy takes every agent behind it offline at once.',
        |||
          sort_desc(
            sum by (%(site)s, parent_ip) (gse_parent_agents{%(agents)s, state="offline"})
              / (sum by (%(site)s, parent_ip) (gse_parent_agents{%(agents)s}) > 0)
          )
        ||| % q,
        sl + '{{parent_ip}}',
        unit='percentunit',
        max=1,
        thresholds=[['green', null], ['orange', 0.05], ['red', cfg.massOfflineRatio]],
      ),
      g.timeseries(
        'Agents per cloud area and state',
        'gse_cloud_agents summed over the selected groups, per BlueKing cloud area.',
        [g.target(
          'sum by (%(site)s, bk_cloud_id, state) (gse_cloud_agents{%(agents)s})' % q,
          sl + 'cloud {{bk_cloud_id}} {{state}}'
        )],
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

      g.row("Host: GSE's view and the node's ($ip)"),
      g.stat(
        'GSE says',
        "gse_agent_online of the chosen host, as the exporter polls it from GSE's API.",
        'max by (%(site)s) (gse_agent_online{%(agents)s, ip=~"$ip"})' % q,
        w=6,
        legend=sl + 'online',
        instant=true,
        graphMode='none',
        mappings=g.flagMappings('offline', 'online'),
      ),
      nodeState('Agent process (node)',
                'gse_node_agent_process: whether gse_agent runs on the host, as gse_exporter node sees it (unknown: it cannot look).',
                'gse_node_agent_process'),
      nodeState('Upstream (node)',
                'gse_node_upstream: established connections from the agent to every configured GSE server port.',
                'gse_node_upstream'),
      nodeState('IPC socket (node)',
                'gse_node_ipc_socket: the socket collectors report through.',
                'gse_node_ipc_socket'),
      g.timeseries(
        'Online in GSE, running on the host',
        "Both views over time: GSE's online flag and the node's running state (1 = yes).",
        [
          g.target('max by (%(site)s) (gse_agent_online{%(agents)s, ip=~"$ip"})' % q, sl + 'GSE: online'),
          g.target('max by (%s) (%s)' % [q.site, node('gse_node_agent_process', ', state="running"')],
                   sl + 'node: gse_agent running'),
        ],
        min=0,
        max=1,
        legend=g.legendList,
      ),
      g.timeseries(
        'Upstream connections per port',
        'gse_node_upstream_connections: established TCP connections from the agent, per configured port.',
        [g.target('sum by (%s, port, role) (%s)' % [q.site, node('gse_node_upstream_connections')],
                  sl + '{{role}} :{{port}}')],
        legend=g.legendList,
      ),
      g.timeseries(
        'IPC queues',
        "gse_node_ipc_queue_bytes (sock_diag): bytes waiting on the agent's ends of collector connections; non-zero for long = not drained.",
        [g.target('sum by (%s, direction) (%s)' % [q.site, node('gse_node_ipc_queue_bytes')],
                  sl + '{{direction}}')],
        unit='bytes',
        w=8,
        legend=g.legendList,
      ),
      g.timeseries(
        'IPC connections and backlog',
        'gse_node_ipc_connections (collectors connected) and gse_node_ipc_backlog (connections waiting to be accepted, sock_diag only).',
        [
          g.target('max by (%s) (%s)' % [q.site, node('gse_node_ipc_connections')], sl + 'connections'),
          g.target('max by (%s) (%s)' % [q.site, node('gse_node_ipc_backlog')], sl + 'backlog'),
        ],
        w=8,
        legend=g.legendList,
      ),
      g.timeseries(
        'Agent memory and restarts',
        'gse_node_agent_resident_memory_bytes and restarts seen by the node.',
        [
          g.target('max by (%s) (%s)' % [q.site, node('gse_node_agent_resident_memory_bytes')], sl + 'resident memory'),
          g.target('max by (%s) (%s)' % [q.site, node('gse_node_agent_restarts_total')], sl + 'restarts seen'),
        ],
        w=8,
        legend=g.legendList,
      ),
      g.timeseries(
        'Agent CPU',
        "CPU seconds per second (cores) of the agent's processes (gse_node_agent_cpu_seconds_total).",
        [g.target('sum by (%s) (rate(gse_node_agent_cpu_seconds_total{%s}[$__rate_interval]) %s)'
                  % [q.site, c.node, c.nodeInAgents], sl + 'cpu')],
        w=8,
        axisLabel='cores',
        legend=g.legendList,
      ),
      g.timeseries(
        'Agent uptime and processes',
        'time() - gse_node_agent_start_time_seconds (drops are restarts) and the number of gse_agent processes (gse_node_agent_processes, master and workers).',
        [
          g.target('time() - max by (%s) (%s)' % [q.site, node('gse_node_agent_start_time_seconds')], sl + 'uptime'),
          g.target('max by (%s) (%s)' % [q.site, node('gse_node_agent_processes')], sl + 'processes'),
        ],
        w=8,
        legend=g.legendList,
        overrides=[{
          matcher: { id: 'byFrameRefID', options: 'A' },
          properties: [{ id: 'unit', value: 's' }],
        }],
      ),
      g.timeseries(
        'Node checks',
        "gse_exporter node's last round of checks: how long it took (gse_node_check_duration_seconds) and how old it is (time() - gse_node_last_check_timestamp_seconds).",
        [
          g.target('max by (%s) (%s)' % [q.site, node('gse_node_check_duration_seconds')], sl + 'duration'),
          g.target('time() - max by (%s) (%s)' % [q.site, node('gse_node_last_check_timestamp_seconds')], sl + 'age'),
        ],
        unit='s',
        w=8,
        legend=g.legendList,
      ),
      g.table(
        'Agent (node view)',
        "gse_node_agent_info: the GSE home's generation (from its layout) and version (from its version file).",
        ['max by (%s, generation, version) (%s)' % [q.site, node('gse_node_agent_info')]],
        w=8,
        transformations=[{
          id: 'organize',
          options: {
            excludeByName: { Time: true, Value: true },
            renameByName: { [c.site]: 'Site', generation: 'Generation', version: 'Version' },
          },
        }],
      ),
      g.table(
        'Upstream connections',
        "gse_node_upstream_connection_info: each established connection from the agent to a GSE server port, with the server's address.",
        ['max by (%s, port, role, remote) (%s)' % [q.site, node('gse_node_upstream_connection_info')]],
        w=8,
        transformations=[{
          id: 'organize',
          options: {
            excludeByName: { Time: true, Value: true },
            renameByName: { [c.site]: 'Site', port: 'Port', role: 'Role', remote: 'Server' },
          },
        }],
      ),
      g.table(
        'Hosted plugins',
        "gse_node_plugin: the plugins in the agent's procinfo file and whether each runs; gse_node_procinfo: the state of that file.",
        [
          'max by (%s, plugin, state) (%s)' % [q.site, node('gse_node_plugin', cond=' == 1')],
          'max by (%s, state) (%s)' % [q.site, node('gse_node_procinfo', cond=' == 1')],
        ],
        w=8,
        transformations=[
          { id: 'merge', options: {} },
          {
            id: 'organize',
            options: {
              excludeByName: { Time: true, 'Value #A': true, 'Value #B': true },
              renameByName: { [c.site]: 'Site', plugin: 'Plugin', state: 'State' },
            },
          },
        ],
      ),
    ],
  )
