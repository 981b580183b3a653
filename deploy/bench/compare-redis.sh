#!/usr/bin/env bash
# Side-by-side benchmark: meridian node vs redis-server (Debian) on this machine.
#
#   deploy/bench/compare-redis.sh [requests]      (default 200000)
#
# Builds Meridian in release, installs redis-server/redis-benchmark if missing,
# starts both servers on free loopback ports pinned to the same CPU (the load
# generator runs on the other CPUs), runs redis-benchmark -c 50 -t $TESTS
# (default: set,get,incr,sadd,hset,zadd,lpush,lpop,lrange_100 — redis-benchmark's
# own tests) at -P 1 and -P 16 against each in the same run, and prints ops/s, p50 and p99
# for both with the ratio Meridian / Redis (median of REPEAT alternating runs),
# and each server's CPU per request (m_us, r_us: user + system microseconds)
# and CPU use over the run (m_cpu, r_cpu: percent of its core). When both
# servers stay well below 100%, the load generator's core was the limit and
# the ops/s ratio cannot show which server is faster; the CPU per request
# can. Then it loads 1,000,000 keys
# (16-byte keys, 16-byte values) into each and prints RSS growth per key.
# Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

REQUESTS=${1:-200000}
# Pipelined runs answer ~10x more requests a second: they get 10x the
# requests, so that each run lasts seconds, not the ~0.2 s in which the 50
# connections' set-up and the CPU sampling's tick granularity (10 ms) weigh.
PIPELINED_REQUESTS=${PIPELINED_REQUESTS:-$((REQUESTS * 10))}
# Each row is measured REPEAT times per server, alternating the servers so
# both see the same machine conditions; the median is reported.
REPEAT=${REPEAT:-3}
KEYS=${KEYS:-1000000}
TESTS=${TESTS:-set,get,incr,sadd,hset,zadd,lpush,lpop,lrange_100}
CLIENTS=50

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  echo "installing redis-server and redis-tools (Debian)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release -q -p meridian-cluster --bin meridian

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
MERIDIAN_PORT=$(free_port)
REDIS_PORT=$(free_port)

CPUS=$(nproc)
if command -v taskset >/dev/null && [ "$CPUS" -ge 2 ]; then
  SERVER_CPU="taskset -c 0"
  LOAD_CPU="taskset -c 1-$((CPUS - 1))"
else
  SERVER_CPU=""
  LOAD_CPU=""
fi

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

$SERVER_CPU ./target/release/meridian node --port "$MERIDIAN_PORT" --log-level warn >/dev/null 2>&1 &
pids+=($!)
MERIDIAN_PID=$!
$SERVER_CPU redis-server --port "$REDIS_PORT" --save '' --appendonly no --daemonize no --loglevel warning >/dev/null 2>&1 &
pids+=($!)
REDIS_PID=$!

for port in "$MERIDIAN_PORT" "$REDIS_PORT"; do
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
done

# Server CPU (user + system) in clock ticks, from /proc.
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# run <port> <server pid> <pipeline> <test> -> a line "test rps p50 p99 cpu_us cpu_pct":
# one redis-benchmark, the server's CPU time sampled around it (microseconds
# per request, and percent of one core over the run; a server well below
# 100% was not the bottleneck: the load generator was).
run() {
  local requests=$REQUESTS
  [ "$3" -gt 1 ] && requests=$PIPELINED_REQUESTS
  local before after start end
  before=$(cpu_ticks "$2"); start=$(date +%s.%N)
  # The prefill rows ("LPUSH (needed to benchmark LRANGE)") are skipped
  # (their CPU is counted in the test's), and "LRANGE_100 (first 100
  # elements)" is named by its first word.
  $LOAD_CPU redis-benchmark -p "$1" -c "$CLIENTS" -n "$requests" -P "$3" -t "$4" --csv 2>/dev/null |
    awk -F',' 'NR > 1 { gsub(/"/, ""); if ($1 ~ /needed/) next; sub(/ .*/, "", $1); printf "%s %s %s %s", $1, $2, $5, $7 }'
  after=$(cpu_ticks "$2"); end=$(date +%s.%N)
  awk -v a="$before" -v b="$after" -v n="$requests" -v hz="$HZ" -v s="$start" -v e="$end" \
    'BEGIN { printf " %.2f %.0f\n", (b - a) * 1e6 / hz / n, (b - a) / hz / (e - s) * 100 }'
}

# median <lines "test rps p50 p99"...> -> per test, the line with the median rps
median() {
  sort -k1,1 -k2,2n | awk '
    { rows[$1] = rows[$1] "\n" $0; count[$1]++ }
    END {
      for (t in rows) {
        n = split(substr(rows[t], 2), lines, "\n")
        print lines[int((n + 1) / 2)]
      }
    }'
}

printf '%-10s %4s %14s %14s %8s %9s %9s %9s %9s %8s %8s %6s %6s\n' test P meridian_ops redis_ops ratio m_p50 r_p50 m_p99 r_p99 m_us r_us m_cpu r_cpu
worst=999
for pipeline in 1 16; do
  meridian_runs=""
  redis_runs=""
  # Each test's runs alternate between the servers, who goes first
  # alternating too, so both see the same moments of a machine whose speed
  # drifts (a shared VM's moves by 20% within a minute).
  for test in $(echo "$TESTS" | tr ',' ' '); do
    for round in $(seq 1 "$REPEAT"); do
      if [ $((round % 2)) -eq 1 ]; then
        meridian_runs+=$(run "$MERIDIAN_PORT" "$MERIDIAN_PID" "$pipeline" "$test")$'\n'
        redis_runs+=$(run "$REDIS_PORT" "$REDIS_PID" "$pipeline" "$test")$'\n'
      else
        redis_runs+=$(run "$REDIS_PORT" "$REDIS_PID" "$pipeline" "$test")$'\n'
        meridian_runs+=$(run "$MERIDIAN_PORT" "$MERIDIAN_PID" "$pipeline" "$test")$'\n'
      fi
    done
  done
  meridian=$(printf '%s' "$meridian_runs" | grep -v '^$' | median)
  redis=$(printf '%s' "$redis_runs" | grep -v '^$' | median)
  for test in $(echo "$TESTS" | tr 'a-z,' 'A-Z '); do
    read -r _ m_rps m_p50 m_p99 m_us m_cpu < <(echo "$meridian" | awk -v t="$test" '$1 == t')
    read -r _ r_rps r_p50 r_p99 r_us r_cpu < <(echo "$redis" | awk -v t="$test" '$1 == t')
    ratio=$(awk -v m="$m_rps" -v r="$r_rps" 'BEGIN { printf "%.2f", m / r }')
    worst=$(awk -v a="$worst" -v b="$ratio" 'BEGIN { print (b < a) ? b : a }')
    printf '%-10s %4s %14.0f %14.0f %8s %9s %9s %9s %9s %8s %8s %5s%% %5s%%\n' "$test" "$pipeline" "$m_rps" "$r_rps" "$ratio" \
      "$m_p50" "$r_p50" "$m_p99" "$r_p99" "$m_us" "$r_us" "$m_cpu" "$r_cpu"
  done
done

rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
load() {
  python3 - "$KEYS" <<'PY' | redis-cli -p "$1" --pipe >/dev/null
import sys
n = int(sys.argv[1])
out = sys.stdout
for i in range(n):
    key = b"key:%012d" % i
    value = b"val:%012d" % i
    out.buffer.write(b"*3\r\n$3\r\nSET\r\n$16\r\n" + key + b"\r\n$16\r\n" + value + b"\r\n")
PY
}
redis-cli -p "$MERIDIAN_PORT" flushall >/dev/null
redis-cli -p "$REDIS_PORT" flushall >/dev/null
sleep 1
m_before=$(rss_kb "$MERIDIAN_PID"); r_before=$(rss_kb "$REDIS_PID")
load "$MERIDIAN_PORT"; load "$REDIS_PORT"
m_after=$(rss_kb "$MERIDIAN_PID"); r_after=$(rss_kb "$REDIS_PID")
m_keys=$(redis-cli -p "$MERIDIAN_PORT" dbsize); r_keys=$(redis-cli -p "$REDIS_PORT" dbsize)
m_per_key=$(( (m_after - m_before) * 1024 / m_keys ))
r_per_key=$(( (r_after - r_before) * 1024 / r_keys ))
echo
echo "rss_per_key meridian=${m_per_key} redis=${r_per_key} (keys: ${m_keys} / ${r_keys}, 16-byte keys and values)"
echo "worst_ratio=${worst}"
