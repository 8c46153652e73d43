// Small helpers shared by the rules, alerts and dashboards.
{
  // A Prometheus duration of one unit ('5m', '1h', '1d', '90s') in words,
  // for alert descriptions: '5 minutes', 'an hour', 'a day'.
  words(duration)::
    local units = { s: 'second', m: 'minute', h: 'hour', d: 'day', w: 'week' };
    local unit = duration[std.length(duration) - 1];
    local n = std.parseInt(duration[0:std.length(duration) - 1]);
    assert std.objectHas(units, unit) : 'duration %s: one unit of s, m, h, d, w' % duration;
    if n == 1 then (if unit == 'h' then 'an hour' else 'a ' + units[unit])
    else '%d %ss' % [n, units[unit]],

  // A Prometheus duration in seconds.
  seconds(duration)::
    local mult = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
    local unit = duration[std.length(duration) - 1];
    std.parseInt(duration[0:std.length(duration) - 1]) * mult[unit],

  // Text written over several lines in the source, as one line (what a YAML
  // `>-` block gives): newlines become spaces, surrounding blanks go.
  fold(text)::
    local lines = [std.stripChars(l, ' ') for l in std.split(text, '\n')];
    std.join(' ', [l for l in lines if l != '']),

  // A duration as the end of "in the last ...": 'hour', '2 hours'.
  period(duration)::
    local w = self.words(duration);
    if std.startsWith(w, 'an ') then w[3:] else if std.startsWith(w, 'a ') then w[2:] else w,

  // Every line of a multi-line text but the first indented by n spaces,
  // trailing newline dropped: for nesting one expression in another.
  indent(text, n)::
    std.join('\n' + std.repeat(' ', n), std.split(std.stripChars(text, '\n'), '\n')),

  // Label matchers joined with ', ', empty ones left out.
  matchers(list):: std.join(', ', [m for m in list if m != '']),

  // A runbook link for an alert.
  runbook(cfg, alert):: '%s#%s' % [cfg.runbookUrlBase, std.asciiLower(alert)],

  // " (site X)" when the alert carries the site label, else nothing, so
  // single-site setups read as before.
  siteClause(cfg):: '{{ with $labels.%s }} (site {{ . }}){{ end }}' % cfg.siteLabel,
}
