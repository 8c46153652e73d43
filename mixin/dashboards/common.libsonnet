// Selectors, joins and variables shared by the dashboards.
//
// Every query selects the dashboard's job, site, group and business
// variables, so each panel follows every filter. Families without a
// bk_biz_id (gse_up, the poll and discovery gauges, the exporter's own
// counters) are joined through gse_agents of the same target, which has it:
// per group on (site, job, instance, group), exporter-wide on
// (site, job, instance) = "the exporter instances polling a selected group".
function(cfg) {
  local site = cfg.siteLabel,
  site:: site,

  // Matchers (inside braces) by what a family carries.
  job:: 'job=~"$job", %s=~"$%s"' % [site, site],
  group:: self.job + ', group=~"$group"',
  agents:: self.group + ', bk_biz_id=~"$bk_biz_id"',
  biz:: self.job + ', bk_biz_id=~"$bk_biz_id"',

  // One agent's series from one target.
  agentKey:: '%s, job, instance, group, bk_cloud_id, ip, bk_agent_id' % site,

  // Per-group series of the selected businesses and groups.
  inGroups:: 'and on (%s, job, instance, group) gse_agents{%s}' % [site, self.agents],
  // Exporter-wide series of the instances polling a selected group.
  inInstances:: 'and on (%s, job, instance) gse_agents{%s}' % [site, self.agents],
  // The same over the last hour, for `up`: a target that is down has no
  // gse_agents now, and must still show as down.
  inInstancesLately:: 'and on (%s, job, instance) last_over_time(gse_agents{%s}[1h])'
                      % [site, self.agents],

  // The node mode's series of the chosen host ($ip), from its job(s).
  node:: 'job=~"$node_job", %s=~"$%s", ip=~"$ip"' % [site, site],
  // Node series of a host that is an agent of the selected businesses and
  // groups (node series carry only bk_cloud_id and ip).
  nodeInAgents:: 'and on (%s, bk_cloud_id, ip) gse_agent_online{%s, ip=~"$ip"}' % [site, self.agents],

  // Legend prefix naming the site ("" when there is no site label).
  siteLegend:: '{{%s}} ' % site,

  variables(grafana):: [
    grafana.datasourceVariable,
    grafana.queryVariable(site, 'Site', 'label_values(gse_up, %s)' % site),
    grafana.queryVariable('job', 'Job', 'label_values(gse_up{%s=~"$%s"}, job)' % [site, site]),
    grafana.queryVariable(
      'bk_biz_id', 'Business (bk_biz_id)', 'label_values(gse_agents{%s}, bk_biz_id)' % self.job
    ),
    grafana.queryVariable(
      'group', 'Group', 'label_values(gse_agents{%s}, group)' % self.biz
    ),
  ],

  // The node mode's job(s) and one host, for the fleet dashboard's Host row.
  nodeVariables(grafana):: [
    grafana.queryVariable(
      'node_job',
      'Node job',
      'label_values(gse_node_agent_process, job)',
      description="Jobs scraping gse_exporter node (its own /metrics, or node_exporter's with the textfile).",
    ),
    grafana.queryVariable(
      'ip',
      'Host (node view)',
      'label_values(gse_node_agent_process{job=~"$node_job", %s=~"$%s"}, ip)' % [site, site],
      description="The host of the 'Host' row: hosts where gse_exporter node runs.",
      single=true,
    ),
  ],
}
