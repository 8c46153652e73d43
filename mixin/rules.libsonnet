// Recording rules for the dashboards and alerts.
//
// Naming follows level:metric:operation
// (https://prometheus.io/docs/practices/rules/):
//   gse_group:...  per (site, job, group, bk_biz_id)
//   gse_biz:...    per (site, job, bk_biz_id)
//   gse:...        per (site, job): the whole fleet of one site
//
// Every rule keeps the site label (_config.siteLabel) and `job`, so two
// sites with same-named groups never mix, dashboards filter on both, and
// Alertmanager inhibits per site and job. `instance` is summed away on
// purpose: with sharding (--shard/--total-shards) each instance reports
// part of a group, and the sum over instances is the group. Ratios stay
// right when two HA replicas poll the same groups (numerator and
// denominator both double).
//
// Ratios divide by `(... > 0)`, so an empty group has no sample, not NaN.
{
  prometheusRules+:: {
    local cfg = $._config,
    local p = {
      sel: cfg.gseExporterSelector,
      group: '%s, job, group, bk_biz_id' % cfg.siteLabel,
      biz: '%s, job, bk_biz_id' % cfg.siteLabel,
      fleet: '%s, job' % cfg.siteLabel,
      mass: '%g' % cfg.massOfflineRatio,
      parent: '%s, job, parent_ip' % cfg.siteLabel,
      proxyRatio: '%g' % cfg.proxyDownRatio,
      proxyMin: cfg.proxyDownMinAgents,
    },
    local ratio(level, state) = {
      expr: |||
        sum by (%(by)s) (gse_agents{%(sel)s, state="%(state)s"})
          / (sum by (%(by)s) (gse_agents{%(sel)s}) > 0)
      ||| % (p { by: p[level], state: state }),
    },

    groups+: [
      {
        name: 'gse-agents.recording',
        interval: cfg.ruleInterval,
        rules: [
          {
            comment:: '--- per group ---',
            record: 'gse_group_state:agents:sum',
            expr: 'sum by (%(group)s, state) (gse_agents{%(sel)s})' % p,
          },
          {
            record: 'gse_group:agents:sum',
            expr: 'sum by (%(group)s) (gse_agents{%(sel)s})' % p,
          },
          { record: 'gse_group:agents_online:ratio' } + ratio('group', 'online'),
          { record: 'gse_group:agents_offline:ratio' } + ratio('group', 'offline'),
          { record: 'gse_group:agents_not_found:ratio' } + ratio('group', 'not_found'),
          { record: 'gse_group:agents_unknown:ratio' } + ratio('group', 'unknown'),
          {
            comment:: |||
              Distinct known agent versions per group. version="" means
              "unknown" (the agent never reported one), not a version to
              drift to.
            |||,
            record: 'gse_group:agent_versions:count',
            expr: |||
              count by (%(group)s) (
                sum by (%(group)s, version) (gse_agent_versions{%(sel)s, version!=""}) > 0
              )
            ||| % p,
          },
          {
            comment:: '--- per upstream parent (GSE proxy or server), across groups ---',
            record: 'gse_parent_state:agents:sum',
            expr: 'sum by (%(parent)s, state) (gse_parent_agents{%(sel)s})' % p,
          },
          {
            record: 'gse_parent:agents_offline:ratio',
            expr: |||
              sum by (%(parent)s) (gse_parent_agents{%(sel)s, state="offline"})
                / (sum by (%(parent)s) (gse_parent_agents{%(sel)s}) > 0)
            ||| % p,
          },
          {
            comment:: |||
              The proxy-down knobs (_config.proxyDownRatio, default 0.8, and
              _config.proxyDownMinAgents, default 3). Value: the parent's
              offline ratio (only parents taken as down).
            |||,
            record: 'gse_parent:agents_offline:ratio_proxy_down',
            expr: |||
              gse_parent:agents_offline:ratio >= %(proxyRatio)s
              and on (%(parent)s)
                sum by (%(parent)s) (gse_parent_agents{%(sel)s}) >= %(proxyMin)d
            ||| % p,
          },
          {
            comment:: |||
              The mass-offline knob (_config.massOfflineRatio, default 0.3).
              A group whose offline share of configured hosts is at or above
              it is "in mass offline": GseAgentsMassOffline pages once for
              it, and the per-agent alerts of that group are muted. Agents
              behind a proxy that is down (gse_parent:agents_offline:ratio_proxy_down)
              do not count: that outage pages once as GseProxyAgentsOffline.
              Value: the group's offline ratio without them (only groups above
              the threshold).
            |||,
            record: 'gse_group:agents_offline:ratio_mass_offline',
            expr: |||
              (
                sum by (%(group)s) (gse_agents{%(sel)s, state="offline"})
                - (
                    sum by (%(group)s) (
                      gse_parent_agents{%(sel)s, state="offline"}
                      and on (%(parent)s) gse_parent:agents_offline:ratio_proxy_down
                    )
                    or sum by (%(group)s) (gse_agents{%(sel)s, state="offline"}) * 0
                  )
              )
              / (sum by (%(group)s) (gse_agents{%(sel)s}) > 0)
              >= %(mass)s
            ||| % p,
          },
          {
            comment:: '--- per business ---',
            record: 'gse_biz_state:agents:sum',
            expr: 'sum by (%(biz)s, state) (gse_agents{%(sel)s})' % p,
          },
          {
            record: 'gse_biz:agents:sum',
            expr: 'sum by (%(biz)s) (gse_agents{%(sel)s})' % p,
          },
          { record: 'gse_biz:agents_online:ratio' } + ratio('biz', 'online'),
          { record: 'gse_biz:agents_offline:ratio' } + ratio('biz', 'offline'),
          {
            comment:: '--- whole fleet of a site ---',
            record: 'gse_state:agents:sum',
            expr: 'sum by (%(fleet)s, state) (gse_agents{%(sel)s})' % p,
          },
          { record: 'gse:agents_online:ratio' } + ratio('fleet', 'online'),
        ],
      },
    ],
  },
}
