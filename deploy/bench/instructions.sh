#!/usr/bin/env bash
# User-space instructions per request: meridian node vs redis-server, same run.
#
#   deploy/bench/instructions.sh [tests]     (default: set,get,incr,sadd,hset,zadd,lpush,lpop)
#
# Throughput on a shared 2-core machine moves by 20-40% between runs with
# the neighbours' load; instruction counts do not. For each redis-benchmark
# test this runs each server under valgrind's callgrind twice, driven with
# `redis-benchmark -c 50 -P 16` for SMALL and LARGE requests, and prints
# (instructions(LARGE) - instructions(SMALL)) / (LARGE - SMALL): the work
# one request costs the server in user space, start-up and idle background
# work cancelled out. Kernel work (the sockets) is not counted: it is the
# same system calls for both (see compare-redis.sh for ops/s). Everything it
# starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

TESTS=${1:-set,get,incr,sadd,hset,zadd,lpush,lpop}
SMALL=${SMALL:-40000}
LARGE=${LARGE:-120000}
PIPELINE=${PIPELINE:-16}

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-benchmark >/dev/null || need_apt+=(redis-tools)
command -v valgrind >/dev/null || need_apt+=(valgrind)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (Debian)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
cargo build --release -q -p meridian-cluster --bin meridian
binary="${CARGO_TARGET_DIR:-target}/release/meridian"
[ -x "$binary" ] || { echo "no $binary after the build" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# instructions <server> <test> <requests> -> total instructions of the run
instructions() {
  local server=$1 test=$2 requests=$3 port out
  port=$(free_port)
  out="$work/callgrind.out"
  rm -f "$out"*
  if [ "$server" = redis ]; then
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      redis-server --port "$port" --save '' --appendonly no --loglevel warning >/dev/null 2>&1 &
  else
    valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$binary" node --port "$port" --log-level warn >/dev/null 2>&1 &
  fi
  server_pid=$!
  local up=""
  for _ in $(seq 1 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && { up=1; break; }; sleep 0.2; done
  [ -n "$up" ] || { echo "$server did not answer on port $port within 40 s" >&2; exit 1; }
  # Bounded: a server that dies mid-run must not leave the client spinning.
  timeout 600 redis-benchmark -p "$port" -c 50 -n "$requests" -P "$PIPELINE" -t "$test" -q >/dev/null 2>&1
  kill -INT "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  # Both servers exit on SIGINT; callgrind writes one file per process.
  awk '/^(summary|totals):/ { print $2; exit }' "$out"*
}

printf '%-8s %14s %14s %8s\n' test meridian_ins redis_ins ratio
for test in ${TESTS//,/ }; do
  per_request() {
    local small large
    small=$(instructions "$1" "$test" "$SMALL")
    large=$(instructions "$1" "$test" "$LARGE")
    echo $(((large - small) / (LARGE - SMALL)))
  }
  m=$(per_request meridian)
  r=$(per_request redis)
  # Below 1: Meridian spends fewer instructions per request than Redis.
  printf '%-8s %14s %14s %8.2f\n' "$test" "$m" "$r" "$(echo "$m $r" | awk '{ print $1 / $2 }')"
done
