#!/usr/bin/env bash
# Soak test (not in CI): the exporter against its simulator for a long run
# with agent churn, CMDB churn, scrapes and periodic GSE faults, watching the
# exporter's resident memory.
#
#   bench/soak.sh                          # 20 minutes, 20000 agents, release build
#   bench/soak.sh --duration 60s --debug   # a quick check of the script itself
#
# Options (durations as 90s, 20m, 1h):
#   --duration D     total run (default 20m)
#   --agents N       simulated agents (default 20000)
#   --interval D     exporter poll interval (default 15s)
#   --sample D       RSS sample period (default 10s)
#   --warmup D       samples before this are warm-up (default 3m; a third of
#                    shorter runs)
#   --fault-every D  start a fault this often (default 2m; shorter runs: a sixth)
#   --fault-for D    and keep it this long (default 30s; shorter runs: half of
#                    --fault-every)
#   --out DIR        where rss.csv and the logs go (default a new /tmp/gse-soak.*)
#   --debug          use the debug build instead of building release
#
# What runs: `gse_exporter simulate` (GSE 2.0 and CMDB, agents flipping state
# every minute, 20 ms latency) and the exporter polling two groups: every agent
# from a hosts file, and one CMDB business whose visible hosts alternate
# between all and 90 % each minute. A scraper fetches /metrics every 2 s,
# plain and gzip in turn. Every --fault-every the next fault of the cycle
# (GSE outage as HTTP 502, replies slower than the timeout, truncated JSON,
# HTTP 429 rate limiting, CMDB outage) is set through the simulator's
# POST /sim/faults for --fault-for, then cleared.
#
# Output: DIR/rss.csv (seconds, rss_kib, fault), then a summary:
#   warm-up RSS   the sample at the end of warm-up
#   first, last   mean (and peak) RSS in the first and in the last window of
#                 one fault cycle after warm-up, so both windows hold every
#                 phase (poll, render, a fault, recovery)
#   growth        (last mean - first mean) / first mean; passes under 5 %
#   slope         least-squares RSS trend after warm-up, KiB per minute
# and checks that the exporter still runs, /metrics answers, and the fleet
# group is up again once the faults stop. Exits 1 on any failure.
# Uses public tools only: curl, awk, python3 (a free port), /proc.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds() { # seconds 90s|20m|1h|45 -> 90|1200|3600|45
  local v=$1
  case "$v" in
    *ms) echo $(( ${v%ms} / 1000 )) ;;
    *s) echo "${v%s}" ;;
    *m) echo $(( ${v%m} * 60 )) ;;
    *h) echo $(( ${v%h} * 3600 )) ;;
    *[!0-9]*|'') echo "bad duration: $v" >&2; exit 2 ;;
    *) echo "$v" ;;
  esac
}

duration=$(seconds 20m); agents=20000; interval=15; sample=10
warmup=""; fault_every=""; fault_for=""; out=""; debug=0
while (($#)); do
  case "$1" in
    --duration) duration=$(seconds "$2"); shift ;;
    --agents) agents=$2; shift ;;
    --interval) interval=$(seconds "$2"); shift ;;
    --sample) sample=$(seconds "$2"); shift ;;
    --warmup) warmup=$(seconds "$2"); shift ;;
    --fault-every) fault_every=$(seconds "$2"); shift ;;
    --fault-for) fault_for=$(seconds "$2"); shift ;;
    --out) out=$2; shift ;;
    --debug) debug=1 ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
short=$((duration < 600))
[[ -n "$warmup" ]] || warmup=$(( short ? duration / 3 : 180 ))
[[ -n "$fault_every" ]] || fault_every=$(( short ? (duration / 6 > 5 ? duration / 6 : 5) : 120 ))
[[ -n "$fault_for" ]] || fault_for=$(( short ? fault_every / 2 : 30 ))
((sample > 0 && interval > 0 && fault_for < fault_every && warmup < duration)) ||
  { echo "need sample, interval > 0, fault-for < fault-every, warmup < duration" >&2; exit 2; }

for tool in curl awk python3; do
  command -v "$tool" >/dev/null || { echo "bench/soak.sh needs $tool" >&2; exit 2; }
done
if ((debug)); then
  cargo build --quiet
  bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/gse_exporter"
else
  cargo build --release --quiet
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/gse_exporter"
fi
[[ -n "$out" ]] || out=$(mktemp -d /tmp/gse-soak.XXXXXX)
mkdir -p "$out"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
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
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

sim_port=$(free_port); exp_port=$(free_port)
sim="http://127.0.0.1:$sim_port"; exporter="http://127.0.0.1:$exp_port"
"$bin" simulate --listen-address "127.0.0.1:$sim_port" --agents "$agents" --latency 20ms \
  --churn-per-minute $((agents / 100)) --hosts-out "$out/hosts" >"$out/sim.log" 2>&1 &
pids+=($!)
wait_for 120 test -s "$out/hosts"
requests=$(( (agents + 999) / 1000 ))
cat >"$out/gse.yml" <<EOF
gse:
  api: v2
  url: $sim/api/bk-gse/prod
  app_code: gse-exporter
  app_secret: sim-secret
  timeout: 5s
  batch_size: 1000
  rate_limit: { requests_per_second: $(( requests * 2 )), burst: 20 }
  max_in_flight: 8
  max_attempts: 3
  initial_backoff: 200ms
  max_backoff: 2s
interval: ${interval}s
info_interval: $(( interval * 4 ))s
groups:
  - name: fleet
    bk_biz_id: 2
    hosts_file: $out/hosts
  - name: cmdb-biz-3
    bk_biz_id: 3
    cmdb: { labels: [bk_host_name] }
cmdb:
  url: $sim/api/bk-cmdb/prod
  refresh_interval: ${interval}s
  rate_limit: { requests_per_second: 50, burst: 10 }
EOF
"$bin" --config.file="$out/gse.yml" --web.listen-address="127.0.0.1:$exp_port" \
  --log.level=warn 2>"$out/exporter.log" &
exp_pid=$!; pids+=($exp_pid)
wait_for $((interval * 4)) curl -sf "$exporter/-/ready"

scraper() { # every 2 s, plain then gzip; a failed scrape is one line in scrape-failures
  local n=0
  while kill -0 "$exp_pid" 2>/dev/null; do
    if ((n++ % 2)); then
      curl -sf -m 10 -H 'Accept-Encoding: gzip' -o /dev/null "$exporter/metrics" || echo "$SECONDS gzip" >>"$out/scrape-failures"
    else
      curl -sf -m 10 -o /dev/null "$exporter/metrics" || echo "$SECONDS plain" >>"$out/scrape-failures"
    fi
    sleep 2
  done
}
scraper &
pids+=($!)

faults=(
  'outage:{"outage":true}'
  'timeout:{"latency":"8s"}'
  'truncated:{"body":"truncated"}'
  'rate_limit_429:{"rate_limit":{"requests_per_second":1,"burst":1}}'
  'cmdb_outage:{"cmdb_outage":true}'
)
set_faults() { curl -sf -X POST -H 'content-type: application/json' -d "$1" "$sim/sim/faults" >/dev/null; }
cmdb_share() { curl -sf -X POST -H 'content-type: application/json' \
  -d "{\"bk_biz_id\":3,\"visible_share\":$1}" "$sim/sim/cmdb" >/dev/null; }

echo "soak: ${duration}s, $agents agents, interval ${interval}s, warm-up ${warmup}s," \
  "a fault for ${fault_for}s every ${fault_every}s; output in $out"
echo "seconds,rss_kib,fault" >"$out/rss.csv"
start=$SECONDS; fault="none"; fault_n=0; fault_end=-1; next_fault=$fault_every; next_sample=0; next_share=60; share=1
while (( (now = SECONDS - start) < duration )); do
  kill -0 "$exp_pid" 2>/dev/null || { echo "FAIL: the exporter exited (see $out/exporter.log)" >&2; exit 1; }
  if ((fault_end >= 0 && now >= fault_end)); then
    set_faults '{}'; fault="none"; fault_end=-1
  fi
  if ((now >= next_fault)); then
    entry=${faults[fault_n++ % ${#faults[@]}]}
    fault=${entry%%:*}; set_faults "${entry#*:}"
    fault_end=$((now + fault_for)); next_fault=$((next_fault + fault_every))
  fi
  if ((now >= next_share)); then
    share=$([[ $share == 1 ]] && echo 0.9 || echo 1); cmdb_share "$share"; next_share=$((next_share + 60))
  fi
  if ((now >= next_sample)); then
    echo "$now,$(rss_kib "$exp_pid"),$fault" >>"$out/rss.csv"
    next_sample=$((next_sample + sample))
  fi
  sleep 1
done
set_faults '{}'; cmdb_share 1
echo "$((SECONDS - start)),$(rss_kib "$exp_pid"),none" >>"$out/rss.csv"

fail=0
kill -0 "$exp_pid" 2>/dev/null || { echo "FAIL: the exporter is not running" >&2; fail=1; }
if ! curl -sf -m 10 -o "$out/final-metrics" "$exporter/metrics"; then
  echo "FAIL: /metrics does not answer" >&2; fail=1
fi
fleet_up() { curl -sf -m 10 "$exporter/metrics" | grep -Eq '^gse_up\{group="fleet"\} 1(\.0)?$'; }
if ! wait_for $((interval * 3 + 10)) fleet_up; then
  echo "FAIL: gse_up{group=\"fleet\"} is not 1 after the faults stopped" >&2; fail=1
fi
failures=0
[[ -f "$out/scrape-failures" ]] && failures=$(wc -l <"$out/scrape-failures")

window=$(( fault_every < (duration - warmup) / 2 ? fault_every : (duration - warmup) / 2 ))
summary=$(awk -F, -v w="$warmup" -v win="$window" -v end="$duration" '
  NR == 1 { next }
  { t = $1; r = $2 }
  t <= w { warm = r; next }
  {
    if (warm == "") warm = r
    if (t < w + win) { fs += r; fn++; if (r > fp) fp = r }
    if (t >= end - win) { ls += r; ln++; if (r > lp) lp = r }
    if (r > max) max = r
    final = r; n++; sx += t; sy += r; sxx += t * t; sxy += t * r
  }
  END {
    first = fn ? fs / fn : 0; last = ln ? ls / ln : 0
    growth = first > 0 ? (last - first) * 100 / first : 0
    slope = (n > 1 && n * sxx != sx * sx) ? (n * sxy - sx * sy) / (n * sxx - sx * sx) * 60 : 0
    printf "%d %d %d %d %d %d %d %.2f %.1f\n", warm, first, fp, last, lp, max, final, growth, slope
  }' "$out/rss.csv")
read -r warm first first_peak last last_peak max final growth slope <<<"$summary"
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
echo "samples: $(($(wc -l <"$out/rss.csv") - 1)) in $out/rss.csv; failed scrapes: $failures"
echo "RSS at end of warm-up (${warmup}s): $(mib "$warm")"
echo "first ${window}s after warm-up: mean $(mib "$first"), peak $(mib "$first_peak")"
echo "last ${window}s: mean $(mib "$last"), peak $(mib "$last_peak")"
echo "max after warm-up: $(mib "$max"); final: $(mib "$final"); trend: ${slope} KiB/min"
if awk -v g="$growth" 'BEGIN {exit !(g < 5)}'; then
  echo "growth after warm-up (mean of last window vs first): ${growth}% (< 5%): PASS"
else
  echo "growth after warm-up (mean of last window vs first): ${growth}% (>= 5%): FAIL"; fail=1
fi
((failures == 0)) || { echo "FAIL: $failures scrapes failed" >&2; fail=1; }
((fail == 0)) && echo "soak: PASS" || echo "soak: FAIL"
exit "$fail"
