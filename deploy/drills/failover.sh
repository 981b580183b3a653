#!/usr/bin/env bash
# Failover drill: kill the master, measure, count lost acknowledged writes.
#
#   deploy/drills/failover.sh [rounds]        (default 5)
#
# Starts a three-node Meridian cluster on 127.0.0.71-73 (each node its own
# loopback address, as separate hosts) with a database of 3 shards, each with
# a replica on another node. Writers pipeline SETs through every node, each
# batch of 100 acknowledged with WAIT 1. Each round SIGKILLs the node holding
# one shard's master, measures the time from the kill to the first successful
# write to that shard through a surviving node, restarts the killed node and
# waits until it has rejoined as a replica. At the end every acknowledged write
# is read back. Then redis-benchmark measures SET and GET (-c 50, -P 1 and
# -P 16) through the cluster and against one redis-server in the same run and
# prints the ratios. Ends with the line
#
#   failover_ms=<p99> lost_acked=<count>
#
# and exits non-zero if an acknowledged write was lost.
#
# Environment: PROFILE=release|debug (default release; CI uses debug to reuse
# its build), REQUESTS (redis-benchmark requests per row, default 200000;
# 0 skips the throughput phase), FAILOVER_TIMEOUT_MS (default 600).
# Everything it starts is stopped on exit; node logs stay in the printed
# directory if the drill fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${1:-5}
PROFILE=${PROFILE:-release}
REQUESTS=${REQUESTS:-200000}
FAILOVER_TIMEOUT_MS=${FAILOVER_TIMEOUT_MS:-600}

if [ "$REQUESTS" != 0 ] && { ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; }; then
  echo "installing redis-server and redis-tools (Debian)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi

if [ "$PROFILE" = release ]; then
  cargo build --release -q -p meridian-cluster --bin meridian -p meridian-tests --bin failover_drill
else
  cargo build -q -p meridian-cluster --bin meridian -p meridian-tests --bin failover_drill
fi
TARGET=${CARGO_TARGET_DIR:-target}/$PROFILE

DIR=$(mktemp -d /tmp/meridian-drill.XXXXXX)
status=0
"$TARGET/failover_drill" --binary "$TARGET/meridian" --rounds "$ROUNDS" \
  --failover-timeout-ms "$FAILOVER_TIMEOUT_MS" --throughput-requests "$REQUESTS" --dir "$DIR" || status=$?
if [ "$status" = 0 ]; then
  rm -rf "$DIR"
else
  echo "drill failed (exit $status); node logs in $DIR" >&2
fi
exit "$status"
