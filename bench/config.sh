#!/usr/bin/env bash
# A configuration with N hosts written inline, in the `{ip, bk_cloud_id,
# bk_agent_id}` form, for measuring what parsing a large configuration costs.
#
#   bench/config.sh 1000000 > /tmp/gse-1m.yml         # 1M hosts (85 MB)
#   bench/config.sh 1000000 HOSTS URL > gse.yml      # the agents of a simulator
#   bench/config.sh --measure 1000000                 # the measurements below
#
# Alone it makes up N distinct hosts (10.a.b.c, cloud 0, a 32-hex agent id).
# Given the hosts file of `gse_exporter simulate --hosts-out HOSTS` and the
# simulator's v2 URL, the hosts are the simulator's agents (agent ids from the
# file, the ip the simulator gives agent i; legacy `cloud:ip` lines as they
# are), so the exporter can poll them.
#
# Then, on a release build:
#   /usr/bin/time -v target/release/gse_exporter --config.file=/tmp/gse-1m.yml --config.check
# (`Maximum resident set size` and `Elapsed (wall clock) time`).
#
# --measure N does that three times (file size, peak RSS, elapsed and CPU of
# each run), then runs one shard of three (as the sharded overlay does)
# against a simulator of N agents with the N hosts inline, until its first
# cycle is done (/-/ready), and prints its VmHWM and VmRSS then; then the
# same shard with the same hosts in a hosts file.
set -euo pipefail

if [[ "${1:-}" == --measure ]]; then
  n=${2:?usage: bench/config.sh --measure N}
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  cargo build --release --quiet
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/gse_exporter"
  work="$(mktemp -d)"; sim=""; exp=""
  trap 'kill $sim $exp 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
  bench/config.sh "$n" >"$work/gse.yml"
  echo "file: $(stat -c %s "$work/gse.yml") bytes, $n hosts inline"
  for run in 1 2 3; do
    /usr/bin/time -f "check $run: peak %M KiB, %e s elapsed, %U s user, %S s sys" \
      "$bin" --config.file="$work/gse.yml" --config.check >/dev/null
  done
  port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
  sim_port=$(port)
  "$bin" simulate --listen-address "127.0.0.1:$sim_port" --agents "$n" --latency 200ms \
    --churn-per-minute 0 --hosts-out "$work/hosts" >"$work/sim.log" 2>&1 &
  sim=$!
  for _ in $(seq 600); do [[ -s "$work/hosts" ]] && break; sleep 0.2; done
  bench/config.sh "$n" "$work/hosts" "http://127.0.0.1:$sim_port/api/bk-gse/prod" >"$work/shard.yml"
  # The same hosts from a hosts file: the config up to `hosts:`, then the file.
  sed -n '/^    hosts:$/q;p' "$work/shard.yml" >"$work/shard-file.yml"
  echo "    hosts_file: $work/hosts" >>"$work/shard-file.yml"
  shard() { # shard CONFIG WHAT: one shard of three until its first cycle is done
    exp_port=$(port)
    started=$SECONDS
    "$bin" --config.file="$1" --web.listen-address="127.0.0.1:$exp_port" \
      --shard=0 --total-shards=3 --log.level=warn 2>"$work/exporter.log" &
    exp=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$exp_port/-/ready"; do
      ((SECONDS - started < 600)) || { echo "shard not ready in 600 s" >&2; exit 1; }
      sleep 0.5
    done
    polled=$(curl -sf "http://127.0.0.1:$exp_port/metrics" | awk '/^gse_exporter_group_hosts[{ ]/ {s += $NF} END {print s + 0}')
    awk -v s="$((SECONDS - started))" -v p="$polled" -v what="$2" \
      '/VmHWM|VmRSS/ {printf "%s %.0f MiB  ", $1, $2 / 1024} END {printf "(shard 0 of 3, hosts %s, %s hosts polled, ready after %s s)\n", what, p, s}' \
      "/proc/$exp/status"
    kill "$exp"; wait "$exp" 2>/dev/null || true
  }
  shard "$work/shard.yml" inline
  shard "$work/shard-file.yml" "from a hosts file"
  exit 0
fi
n=${1:?usage: bench/config.sh N [HOSTS_FILE URL]}
hosts=${2:-}
url=${3:-http://127.0.0.1:9/api/bk-gse/prod}
cat <<YAML
gse:
  api: v2
  url: $url
  app_code: gse-exporter
  app_secret: sim-secret
  timeout: 30s
  batch_size: 1000
  rate_limit: { requests_per_second: 20, burst: 10 }
  max_in_flight: 8
interval: 160s
info_interval: 24h
groups:
  - name: fleet
    bk_biz_id: 2
    per_agent_metrics: false
    hosts:
YAML
# ip_for(i) of crates/gse-sim/src/fleet.rs: 10.a.b.c with c in 1..=250.
awk -v n="$n" '
  function ip(i) { return sprintf("10.%d.%d.%d", int(i / 64000) % 256, int(i / 250) % 256, i % 250 + 1) }
  function row(i, id) {
    if (id ~ /:/) { split(id, p, ":"); printf "      - {ip: %s, bk_cloud_id: %s}\n", p[2], p[1] }
    else printf "      - {ip: %s, bk_cloud_id: 0, bk_agent_id: \"%s\"}\n", ip(i), id
  }
  { if (NR > n) exit; row(NR - 1, $0) }
  END { for (i = NR; i < n; i++) row(i, sprintf("0100%016x%012x", i * 2654435761 % 4294967296, i)) }
' ${hosts:+"$hosts"} < /dev/null
