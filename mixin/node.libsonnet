// Rules joining the node's view (`gse_exporter node` on each host: gse_node_*
// series, from node_exporter's textfile collector or the node mode's own
// /metrics) to the API view (gse_exporter: gse_agent_online).
//
// The two views share no target: they meet on the host labels every series
// carries, (bk_cloud_id, ip), within one site (_config.siteLabel: give the
// node targets of a site the same site label as its exporter). gse_exporter
// takes them from its configuration (or GSE's list_agent_info); the node mode
// from --host.cloud-id and --host.ip.
//
// For an agent GSE reports offline, exactly one cause is named when the node
// reports one (gse_node:agent_fault:max), and GseAgentOffline then stays
// quiet for that host (its expression excludes hosts with a fault, and the
// Alertmanager example inhibits it too), so one outage is one notification
// with the runbook section that says what to do:
//   process_down  -> GseAgentProcessDown   (restart the agent)
//   upstream_down -> GseAgentUpstreamDown  (network or GSE server side)
//   ipc_stuck     -> GseAgentIpcStuck      (collector side / agent not draining)
// Without node data for the host, GseAgentOffline fires as before.
// The node alerts wait _config.nodeCauseFor (3m), less than GseAgentOffline's
// 5m, so the cause is known before the generic alert would fire.
local util = import 'lib/util.libsonnet';

{
  local cfg = $._config,
  local site = cfg.siteLabel,
  local p = {
    sel: cfg.gseExporterSelector,
    // gse_node_* series with extra matchers.
    node(metric, matchers)::
      local m = util.matchers([cfg.gseNodeSelector, matchers]);
      if m == '' then metric else '%s{%s}' % [metric, m],
    host: '%s, bk_cloud_id, ip' % site,
    nodeHost: '%s, job, instance, bk_cloud_id, ip' % site,
    agent: '%s, job, instance, group, bk_cloud_id, ip, bk_agent_id' % site,
    group: '%s, job, group' % site,
  },
  local siteClause = util.siteClause(cfg),

  prometheusRules+:: {
    groups+: [
      {
        name: 'gse-node.recording',
        interval: cfg.ruleInterval,
        rules: [
          {
            comment:: |||
              Value 1 with label `cause` for each host whose node reports a reason
              its agent cannot be online. The causes exclude each other: a process
              that does not run; else a running process without its upstream
              connections; else a connected process whose IPC socket is missing,
              refused, not accepting, or has bytes or connections queued.
              "unknown" states never count as a fault.
            |||,
            record: 'gse_node:agent_fault:max',
            expr: |||
              label_replace(
                max by (%(nodeHost)s) (%(notRunning)s == 1),
                "cause", "process_down", "", ""
              )
              or
              label_replace(
                max by (%(nodeHost)s) (%(disconnected)s == 1)
                  and on (%(host)s) (%(running)s == 1),
                "cause", "upstream_down", "", ""
              )
              or
              label_replace(
                clamp_max(
                  max by (%(nodeHost)s) (
                    %(socketBad)s == 1
                  )
                  or max by (%(nodeHost)s) (%(queueBytes)s > 0)
                  or max by (%(nodeHost)s) (%(backlog)s > 0),
                  1
                )
                  and on (%(host)s) (%(running)s == 1)
                  and on (%(host)s) (%(connected)s == 1),
                "cause", "ipc_stuck", "", ""
              )
            ||| % (p {
                     notRunning: p.node('gse_node_agent_process', 'state="not_running"'),
                     running: p.node('gse_node_agent_process', 'state="running"'),
                     disconnected: p.node('gse_node_upstream', 'state="disconnected"'),
                     connected: p.node('gse_node_upstream', 'state="connected"'),
                     socketBad: p.node('gse_node_ipc_socket', 'state=~"missing|not_socket|refused|not_accepting"'),
                     queueBytes: p.node('gse_node_ipc_queue_bytes', ''),
                     backlog: p.node('gse_node_ipc_backlog', ''),
                   }),
          },
        ],
      },
    ],
  },

  prometheusAlerts+:: {
    // GSE's offline agent (known to GSE) whose node names `cause`.
    local explained(cause) = |||
      (
        gse_agent_online{%(sel)s} == 0
        unless on (%(agent)s) gse_agent_status_code{%(sel)s} == -2
      )
      and on (%(host)s) gse_node:agent_fault:max{cause="%(cause)s"}
      unless on (%(group)s) (gse_up{%(sel)s} == 0)
      unless on (%(group)s) gse_group:agents_offline:ratio_mass_offline
    ||| % (p { cause: cause }),
    local offlineHost = std.stripChars(|||
      GSE reports the agent on host {{ $labels.ip }} (cloud {{ $labels.bk_cloud_id }},
      agent id {{ or $labels.bk_agent_id "unknown" }}) in group {{ $labels.group }}%s
      of business {{ $labels.bk_biz_id }} as offline
    ||| % siteClause, '\n'),
    local alert(name, summary, description, expr, for_, comment=null) = {
      [if comment != null then 'comment']:: comment,
      alert: name,
      expr: expr,
      'for': for_,
      labels: { severity: 'warning' },
      annotations: {
        summary: summary,
        description: util.fold(description),
        runbook_url: util.runbook(cfg, name),
      },
    },

    groups+: [
      {
        name: 'gse-node.alerts',
        interval: cfg.ruleInterval,
        rules: [
          alert(
            'GseAgentProcessDown',
            'A GSE agent is offline because its process does not run.',
            offlineHost + |||
              , and gse_exporter node on that
              host finds no gse_agent process running. Restart the agent.
            |||,
            explained('process_down'),
            cfg.nodeCauseFor,
            "The API view's offline agent (known to GSE), explained by the node.",
          ),
          alert(
            'GseAgentUpstreamDown',
            'A GSE agent is offline although its process runs; it has no connection to its GSE servers.',
            offlineHost + |||
              ; gse_exporter node on that host
              finds gse_agent running without an established connection to every GSE server
              port it checks. Look at the network path and the GSE servers or proxy.
            |||,
            explained('upstream_down'),
            cfg.nodeCauseFor,
          ),
          alert(
            'GseAgentIpcStuck',
            'A GSE agent is offline while running and connected; its local IPC socket is stuck.',
            offlineHost + |||
              ; gse_exporter node on that host
              finds gse_agent running and connected upstream, but its IPC socket missing,
              refusing or not accepting connections, or with data queued that is not drained.
              Look at the collectors (bkunifylogbeat, bkmonitorbeat) and the agent's IPC side.
            |||,
            explained('ipc_stuck'),
            cfg.nodeCauseFor,
          ),
          alert(
            'GseNodeChecksBlind',
            "gse_exporter node cannot see the GSE agent's process or sockets.",
            |||
              gse_exporter node {{ $labels.instance }} (job {{ $labels.job }})%s on host
              {{ $labels.ip }} (cloud {{ $labels.bk_cloud_id }}) has reported the agent's
              process or upstream connections as unknown for %s: it lacks
              CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, or cannot see the host's processes.
            ||| % [siteClause, util.words(cfg.nodeChecksBlindFor)],
            |||
              max by (%(nodeHost)s) (
                %(process)s == 1
                or %(upstream)s == 1
              )
            ||| % (p {
                     process: p.node('gse_node_agent_process', 'state="unknown"'),
                     upstream: p.node('gse_node_upstream', 'state="unknown"'),
                   }),
            cfg.nodeChecksBlindFor,
            |||
              The node mode cannot see the agent's process or sockets: it runs
              without the privileges it needs (docs/node.md), so the node view
              cannot explain an outage of this host. A configuration problem,
              not an incident: it waits _config.nodeChecksBlindFor (30m).
            |||,
          ),
        ],
      },
    ],
  },
}
