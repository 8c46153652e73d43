// The gse_exporter monitoring mixin: Prometheus recording and alerting
// rules and Grafana dashboards for gse_exporter, from one _config
// (config.libsonnet). Hidden fields, as every monitoring mixin:
//   prometheusRules    recording rules       (rules.libsonnet)
//   prometheusAlerts   alerting rules        (alerts.libsonnet)
//   (both also from node.libsonnet: the node mode's view joined to the API's)
//   grafanaDashboards  file name -> dashboard (dashboards.libsonnet)
// scripts/gen-mixin renders them into alerts/ and dashboards/.
(import 'config.libsonnet') +
(import 'rules.libsonnet') +
(import 'alerts.libsonnet') +
(import 'node.libsonnet') +
(import 'dashboards.libsonnet')
