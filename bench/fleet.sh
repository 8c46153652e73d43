#!/usr/bin/env bash
# Fleet benchmark: the exporter against its simulator at several fleet sizes.
#
#   bench/fleet.sh                 # 10k, 100k and 1M agents (several minutes)
#   bench/fleet.sh 100000          # chosen sizes
#   bench/fleet.sh 100000:off      # a size with per-agent metrics off
#   bench/fleet.sh --smoke         # a few seconds, as CI runs it
#
# For each size it starts `gse_exporter simulate` (GSE 2.0, 200 ms latency,
# agents reporting every third of the interval, as 20 s is of the default
# 60 s) and the exporter (batch 1000, 20 requests/s, burst 10, 8 in flight),
# waits for the first full cycle (state + info), then measures cycles 3 and
# 4, and prints one row. Every cycle after the first asks every agent's
# state and, for the heartbeat GSE 2.0 keeps only in the info, the info of
# about half the online agents: those in the runs of 2,048 agents (the
# per-agent body's segments) whose parity is the cycle's, so each online
# agent's info every other cycle (cycle 2 the odd runs, 3 the even, 4 the
# odd again). Cycles 3 and 4 are both steady cycles, each with half a
# refresh. With per-agent series off there is no refresh: state only.
#   req2, req3 GSE requests of cycles 2 and 3, as state+info (the simulator's count)
#   cycle      seconds of cycle 3 (gse_exporter_poll_duration_seconds, from the landing page)
#   bound      cycle 3's requests / rate: the fastest the rate limit allows
#   cpu1       exporter CPU-seconds from its start to the end of its first full
#              cycle (reading the config and hosts, state and info of every
#              agent, the first render): what a restart or a new shard costs
#   cpu3, cpu4 exporter CPU-seconds (user+sys) over cycles 3 and 4 (each state
#              plus half the refresh), read from /proc with no /metrics request
#              meanwhile: decode, snapshot, render, gzip
#   p50 / p99  /metrics latency (wrk: 1 connection for the median; 10 for the
#              median and p99 under load), plain and gzip, next to nginx serving
#              the same bytes as a static file
#   body, gz   body sizes; rss, hwm: resident and peak memory of the exporter
# Per-agent metrics are on up to 100k agents and off at 1M, unless the size
# says (`N:on`, `N:off`); the default run adds 100k with them off.
# Uses public tools only: curl, wrk, nginx (Debian packages), /proc.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

smoke=0
sizes=()
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    *) sizes+=("$arg") ;;
  esac
done
if ((smoke)); then
  sizes=(2000)
elif ((${#sizes[@]} == 0)); then
  sizes=(10000 100000 100000:off 1000000)
fi
latency=200ms; rate=20; burst=10; wrk_time=10s
((smoke)) && { latency=20ms; rate=50; wrk_time=1s; }

for tool in curl wrk nginx; do
  command -v "$tool" >/dev/null || { echo "bench/fleet.sh needs $tool (apt-get install curl wrk nginx)" >&2; exit 2; }
done
# The smoke run only proves the script works: the debug build the tests made will do.
target="${CARGO_TARGET_DIR:-$PWD/target}"
if ((smoke)); then
  cargo build --quiet
  bin="$target/debug/gse_exporter"
else
  cargo build --release --quiet
  bin="$target/release/gse_exporter"
fi
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # wait_for SECONDS COMMAND...: retry until it succeeds or time runs out
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.2
  done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
gse_requests() { # gse_requests SIM_PORT: "STATE INFO" requests the simulator has had
  curl -sf "http://127.0.0.1:$1/sim/stats" |
    python3 -c 'import json, sys; a = json.load(sys.stdin)["by_api"]; print(a.get("v2_state", 0), a.get("v2_info", 0))'
}
per_cycle() { # per_cycle "STATE INFO" "STATE INFO": the requests between two readings, as state+info
  local a=($1) b=($2); echo "$((b[0] - a[0]))+$((b[1] - a[1]))"
}
poll_took() { curl -sf "http://$1/" | grep -o '<td>[0-9.]*s</td>' | head -1 | tr -dc '0-9.'; }
landing_success() { curl -sf "http://$1/" | grep -o 'last full success[^<]*</th></tr><tr>.*' | head -c 4000 | md5sum; }
wrk_pct() { # wrk_pct URL CONNECTIONS PERCENTILES [HEADER]: latency in ms at each percentile ("50 99")
  local header=()
  [[ -n "${4:-}" ]] && header=(-H "$4")
  wrk -t"$(( $2 < 2 ? 1 : 2 ))" -c"$2" -d"$wrk_time" --latency "${header[@]}" "$1" |
    awk -v want="$3" 'BEGIN {n = split(want, w, " ")}
      {for (i = 1; i <= n; i++) if ($1 == w[i] "%") {v = $2
        if (v ~ /us$/) {sub(/us/, "", v); v /= 1000} else if (v ~ /ms$/) {sub(/ms/, "", v)} else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}
        got[i] = sprintf("%.2f", v)}}
      END {for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? " " : ""), got[i]}'
}

start_nginx() { # start_nginx DIR PORT: serves DIR/metrics (and metrics.gz with gzip_static)
  cat >"$1/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $1/nginx.pid; error_log $1/nginx.err;
events { worker_connections 256; }
http {
  access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp; uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;
  server { listen 127.0.0.1:$2; root $1/www;
    location = /metrics { default_type "text/plain; version=0.0.4"; gzip_static on; } }
}
EOF
  mkdir -p "$1/tmp"
  chmod a+rx "$work" "$1" "$1/www" && chmod a+r "$1"/www/*   # nginx workers run unprivileged
  nginx -c "$1/nginx.conf" -p "$1" &
  pids+=($!)
  wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$2/metrics"
}

cpu_s() { awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b - a) / hz}'; }
printf '%10s %9s %9s %8s %8s %7s %7s %7s | %8s %8s %8s %8s %8s | %8s %8s %8s %8s %8s | %8s %7s %8s %8s\n' \
  agents req2 req3 cycle_s bound_s cpu1_s cpu3_s cpu4_s p50_ms ngx_p50 p50@10 p99@10 ngx_p99 gz_p50 ngxgz_p50 gz_p50@10 gz_p99@10 ngxgz_p99 body_MB gz_MB rss_MiB hwm_MiB
for size in "${sizes[@]}"; do
  n=${size%%:*}
  per_agent=true; ((n >= 1000000)) && per_agent=false
  case "$size" in *:off) per_agent=false ;; *:on) per_agent=true ;; esac
  dir="$work/$size"; mkdir -p "$dir/www"
  sim_port=$(free_port); exp_port=$(free_port); ngx_port=$(free_port)
  requests=$(( (n + 999) / 1000 ))
  interval=$(( requests * 3 / rate + (smoke ? 2 : 10) ))
  "$bin" simulate --listen-address "127.0.0.1:$sim_port" --agents "$n" --latency "$latency" \
    --churn-per-minute 0 --report-period "$((interval * 1000 / 3))ms" --hosts-out "$dir/hosts" >"$dir/sim.log" 2>&1 &
  pids+=($!)
  wait_for 120 test -s "$dir/hosts"
  cat >"$dir/gse.yml" <<EOF
gse:
  api: v2
  url: http://127.0.0.1:$sim_port/api/bk-gse/prod
  app_code: gse-exporter
  app_secret: sim-secret
  timeout: 30s
  batch_size: 1000
  rate_limit: { requests_per_second: $rate, burst: $burst }
  max_in_flight: 8
interval: ${interval}s
info_interval: 24h
groups:
  - name: fleet
    bk_biz_id: 2
    hosts_file: $dir/hosts
    per_agent_metrics: $per_agent
EOF
  "$bin" --config.file="$dir/gse.yml" --web.listen-address="127.0.0.1:$exp_port" --log.level=warn 2>"$dir/exporter.log" &
  exp_pid=$!; pids+=($exp_pid)
  addr="127.0.0.1:$exp_port"
  wait_for $((interval * 3)) curl -sf "http://$addr/-/ready"
  cpu1=$(cpu_s 0 "$(cpu_ticks "$exp_pid")")
  # Cycle 1 asked for state and info; cycles 2, 3 and 4 each for state and,
  # for the heartbeat, the info of half the online agents.
  after1=$(gse_requests "$sim_port")
  first=$(landing_success "$addr")
  wait_for $((interval * 2)) bash -c "[[ \"\$(curl -sf http://$addr/ | grep -o 'last full success[^<]*</th></tr><tr>.*' | head -c 4000 | md5sum)\" != '$first' ]]"
  after2=$(gse_requests "$sim_port")
  # CPU over one and a half intervals from just after cycle 2 ended: exactly
  # cycle 3 (it ends well within the window; cycle 4 starts half an interval
  # after it), then over one interval: exactly cycle 4. Only the small
  # landing page and the simulator are asked in between.
  ticks0=$(cpu_ticks "$exp_pid")
  sleep $((interval * 3 / 2))
  ticks1=$(cpu_ticks "$exp_pid")
  after3=$(gse_requests "$sim_port")
  cycle=$(poll_took "$addr")
  sleep "$interval"
  ticks2=$(cpu_ticks "$exp_pid")
  req2=$(per_cycle "$after1" "$after2"); req3=$(per_cycle "$after2" "$after3")
  cpu3=$(cpu_s "$ticks0" "$ticks1"); cpu4=$(cpu_s "$ticks1" "$ticks2")
  bound=$(awk -v r="$((req3))" -v q="$rate" 'BEGIN {printf "%.2f", r / q}')

  curl -sf -o "$dir/www/metrics" "http://$addr/metrics"
  curl -sf -H 'Accept-Encoding: gzip' -o "$dir/www/metrics.gz" "http://$addr/metrics"
  start_nginx "$dir" "$ngx_port"
  exp_url="http://$addr/metrics"; ngx_url="http://127.0.0.1:$ngx_port/metrics"
  gz='Accept-Encoding: gzip'
  # shellcheck disable=SC2046 # "p50 p99" splits into two columns on purpose
  row=(
    "$(wrk_pct "$exp_url" 1 50)" "$(wrk_pct "$ngx_url" 1 50)"
    $(wrk_pct "$exp_url" 10 "50 99") "$(wrk_pct "$ngx_url" 10 99)"
    "$(wrk_pct "$exp_url" 1 50 "$gz")" "$(wrk_pct "$ngx_url" 1 50 "$gz")"
    $(wrk_pct "$exp_url" 10 "50 99" "$gz") "$(wrk_pct "$ngx_url" 10 99 "$gz")"
  )
  body=$(stat -c %s "$dir/www/metrics"); gzb=$(stat -c %s "$dir/www/metrics.gz")
  rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$exp_pid/status")
  hwm=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$exp_pid/status")
  printf '%10s %9s %9s %8.2f %8s %7s %7s %7s | %8s %8s %8s %8s %8s | %8s %8s %8s %8s %8s | %8.1f %7.1f %8s %8s\n' \
    "$size" "$req2" "$req3" "$cycle" "$bound" "$cpu1" "$cpu3" "$cpu4" "${row[@]}" "$(awk -v b="$body" 'BEGIN{print b/1e6}')" \
    "$(awk -v b="$gzb" 'BEGIN{print b/1e6}')" "$rss" "$hwm"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
done
