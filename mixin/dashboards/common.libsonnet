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
}
