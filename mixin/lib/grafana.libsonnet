// A small Grafana dashboard builder (no grafonnet dependency): the panel
// kinds the gse_exporter dashboards use, every panel and query on the
// templated ${datasource}, and a layout that places panels left to right
// in rows of 24 units.
local datasource = { type: 'prometheus', uid: '${datasource}' };

local legendTable = {
  displayMode: 'table',
  placement: 'right',
  showLegend: true,
  calcs: ['lastNotNull', 'max'],
};

local steps(list) = [{ color: s[0], value: s[1] } for s in list];

{
  datasource:: datasource,

  // A legend under the chart, for panels of one host.
  legendList:: { displayMode: 'list', placement: 'bottom', showLegend: true, calcs: [] },

  // One query. `instant` queries (tables, bar gauges) ask for the last value.
  target(expr, legend='__auto', instant=false, format=null):: {
    datasource: datasource,
    expr: std.stripChars(expr, '\n'),
    legendFormat: legend,
    range: !instant,
    instant: instant,
    editorMode: 'code',
  } + (if format != null then { format: format } else {}),

  local withRefIds(targets) = [
    targets[i] { refId: std.char(std.codepoint('A') + i) }
    for i in std.range(0, std.length(targets) - 1)
  ],

  local panel(type, title, description, targets, w, h) = {
    type: type,
    title: title,
    description: description,
    datasource: datasource,
    targets: withRefIds(targets),
    gridPos: { w: w, h: h },
  },

  // Value mappings 0/1 -> text (and colour).
  flagMappings(zero, one, zeroColor='red', oneColor='green'):: [{
    type: 'value',
    options: {
      '0': { text: zero, color: zeroColor, index: 0 },
      '1': { text: one, color: oneColor, index: 1 },
    },
  }],

  // A line chart. spanNulls: false, true, or the longest gap in ms that is
  // bridged (for series that only have points every info_interval).
  timeseries(title,
             description,
             targets,
             unit='short',
             w=12,
             h=8,
             fill=0,
             min=null,
             max=null,
             thresholds=[['green', null]],
             thresholdsLine=false,
             spanNulls=false,
             overrides=[],
             axisLabel=null,
             legend=legendTable)::
    panel('timeseries', title, description, targets, w, h) {
      fieldConfig: {
        defaults: {
                    unit: unit,
                    custom: {
                      drawStyle: 'line',
                      lineWidth: 1,
                      fillOpacity: fill,
                      showPoints: 'never',
                      spanNulls: spanNulls,
                      stacking: { mode: 'none', group: 'A' },
                      thresholdsStyle: { mode: if thresholdsLine then 'line' else 'off' },
                      axisSoftMin: 0,
                    } + (if axisLabel != null then { axisLabel: axisLabel } else {}),
                    thresholds: { mode: 'absolute', steps: steps(thresholds) },
                    color: { mode: 'palette-classic' },
                  } + (if min != null then { min: min } else {})
                  + (if max != null then { max: max } else {}),
        overrides: overrides,
      },
      options: {
        legend: legend,
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },

  // Dashed lines for the queries with these refIds (limits next to values).
  dashed(refIds):: [
    {
      matcher: { id: 'byFrameRefID', options: refId },
      properties: [{ id: 'custom.lineStyle', value: { fill: 'dash', dash: [10, 10] } }],
    }
    for refId in refIds
  ],

  // One number (textMode 'name': the legend, e.g. a state, instead).
  stat(title,
       description,
       expr,
       unit='short',
       w=4,
       h=4,
       thresholds=[['green', null]],
       mappings=[],
       decimals=null,
       legend='__auto',
       instant=false,
       graphMode='area',
       textMode='auto')::
    panel('stat', title, description, [self.target(expr, legend, instant)], w, h) {
      fieldConfig: {
        defaults: {
          unit: unit,
          mappings: mappings,
          color: { mode: 'thresholds' },
          thresholds: { mode: 'absolute', steps: steps(thresholds) },
        } + (if decimals != null then { decimals: decimals } else {}),
        overrides: [],
      },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: 'value',
        graphMode: graphMode,
        justifyMode: 'auto',
        orientation: 'auto',
        textMode: textMode,
        wideLayout: true,
        showPercentChange: false,
      },
    },

  // Horizontal bars of the last values.
  bargauge(title,
           description,
           expr,
           legend,
           unit='short',
           w=12,
           h=8,
           min=0,
           max=null,
           thresholds=[['green', null]])::
    panel('bargauge', title, description, [self.target(expr, legend, instant=true)], w, h) {
      fieldConfig: {
        defaults: {
          unit: unit,
          min: min,
          color: { mode: 'thresholds' },
          thresholds: { mode: 'absolute', steps: steps(thresholds) },
        } + (if max != null then { max: max } else {}),
        overrides: [],
      },
      options: {
        orientation: 'horizontal',
        displayMode: 'gradient',
        showUnfilled: true,
        valueMode: 'color',
        namePlacement: 'auto',
        sizing: 'auto',
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      },
    },

  // A table of instant queries (format table).
  table(title, description, exprs, w=12, h=8, transformations=[], overrides=[], sortBy=[])::
    panel('table',
          title,
          description,
          [self.target(e, instant=true, format='table') for e in exprs],
          w,
          h) {
      fieldConfig: {
        defaults: {
          custom: { align: 'auto', filterable: true },
          thresholds: { mode: 'absolute', steps: steps([['green', null]]) },
        },
        overrides: overrides,
      },
      options: {
        showHeader: true,
        cellHeight: 'sm',
        footer: { show: false, reducer: ['sum'] },
        sortBy: sortBy,
      },
      transformations: transformations,
    },

  // A 0/1 state per series over time.
  stateTimeline(title,
                description,
                expr,
                legend,
                mappings,
                w=24,
                h=6,
                thresholds=[['red', null], ['green', 1]])::
    panel('state-timeline', title, description, [self.target(expr, legend)], w, h) {
      fieldConfig: {
        defaults: {
          mappings: mappings,
          color: { mode: 'thresholds' },
          thresholds: { mode: 'absolute', steps: steps(thresholds) },
        },
        overrides: [],
      },
      options: {
        showValue: 'never',
        mergeValues: true,
        rowHeight: 0.9,
        legend: { showLegend: false, displayMode: 'list', placement: 'bottom' },
        tooltip: { mode: 'single', sort: 'none' },
      },
    },

  row(title):: { type: 'row', title: title, collapsed: false, panels: [], gridPos: { w: 24, h: 1 } },

  // Places panels left to right, wrapping at 24 units; a row starts a new
  // line. Numbers the panels from 1.
  layout(panels)::
    local place(state, p) =
      local wrap = p.type == 'row' || state.x + p.gridPos.w > 24;
      local x = if wrap then 0 else state.x;
      local y = if wrap then state.y + state.lineHeight else state.y;
      {
        x: x + p.gridPos.w,
        y: y,
        lineHeight: if wrap then p.gridPos.h else std.max(state.lineHeight, p.gridPos.h),
        out: state.out + [p {
          id: std.length(state.out) + 1,
          gridPos+: { x: x, y: y },
        }],
      };
    std.foldl(place, panels, { x: 0, y: 0, lineHeight: 0, out: [] }).out,

  datasourceVariable:: {
    type: 'datasource',
    name: 'datasource',
    label: 'Data source',
    query: 'prometheus',
    current: {},
    hide: 0,
    includeAll: false,
    multi: false,
    options: [],
    refresh: 1,
    regex: '',
    skipUrlSync: false,
  },

  // A multi-value query variable with All (= .*), refreshed on time change;
  // single=true: one value, no All.
  queryVariable(name, label, query, description=null, single=false):: {
                                                                        type: 'query',
                                                                        name: name,
                                                                        label: label,
                                                                        datasource: datasource,
                                                                        definition: query,
                                                                        query: { qryType: 1, query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery' },
                                                                        refresh: 2,
                                                                        options: [],
                                                                        sort: 1,
                                                                        regex: '',
                                                                        hide: 0,
                                                                        skipUrlSync: false,
                                                                      } + (if description != null then { description: description } else {})
                                                                      + (if single then { multi: false, includeAll: false, current: {} } else {
                                                                           multi: true,
                                                                           includeAll: true,
                                                                           allValue: '.*',
                                                                           current: { selected: true, text: ['All'], value: ['$__all'] },
                                                                         }),

  dashboard(cfg, uid, title, description, variables, panels):: {
    __inputs: [],
    __requires: [],
    annotations: {
      list: [{
        builtIn: 1,
        datasource: { type: 'grafana', uid: '-- Grafana --' },
        enable: true,
        hide: true,
        iconColor: 'rgba(0, 211, 255, 1)',
        name: 'Annotations & Alerts',
        type: 'dashboard',
      }],
    },
    description: description,
    editable: true,
    fiscalYearStartMonth: 0,
    graphTooltip: 1,
    id: null,
    links: [{
      type: 'dashboards',
      tags: cfg.dashboardTags,
      asDropdown: true,
      includeVars: true,
      keepTime: true,
      title: 'GSE dashboards',
      icon: 'external link',
      targetBlank: false,
      tooltip: '',
      url: '',
    }],
    panels: $.layout(panels),
    refresh: cfg.dashboardRefresh,
    schemaVersion: 39,
    tags: cfg.dashboardTags,
    templating: { list: variables },
    time: { from: 'now-6h', to: 'now' },
    timepicker: { refresh_intervals: ['30s', '1m', '5m', '15m', '30m', '1h'] },
    timezone: cfg.dashboardTimezone,
    title: cfg.dashboardTitlePrefix + title,
    uid: uid,
    version: 1,
    weekStart: '',
  },
}
