// Grafana dashboards, by file name (dashboards/ of the repository). Every
// query follows the datasource, site, job, business and group variables.
{
  grafanaDashboards+:: {
    'gse-agents-fleet.json': (import 'dashboards/fleet.libsonnet')($._config),
    'gse-agents-exporter.json': (import 'dashboards/exporter.libsonnet')($._config),
  },
}
