#!/usr/bin/env bash
# WAN replication-lag benchmark: two regions on loopback, one active-active
# database, writes in one region, lag and catch-up measured in the other.
#
#   deploy/bench/wan-lag.sh [seconds-per-rate]        (default 10)
#
# Starts two one-node regions (meridian node on 127.0.0.81 and .82, free
# ports, data under a temp dir) and creates an active-active database across
# them through the admin API. Measures the peak SET rate region a accepts from
# the load generator, then at 10%, 25% and 50% of it runs a paced SET load in
# region a while a probe writes a key in a every 10 ms and polls region b
# until it reads it back (lag p50/p99/max from a's OK), with the WAN payload
# bytes per delta from b's /metrics. Then it SIGSTOPs region b for 30 s while
# a writes at 50% of peak, SIGCONTs it, and measures the catch-up rate
# (deltas/s until b reads every writer's last key) and the path it took
# (cursor resume or snapshot). Ends with the line
#
#   lag_ms_p99=<N> catchup_deltas_per_s=<N> wire_bytes_per_set=<N> resp_bytes_per_set=<N>
#
# Targets (printed, not enforced: the exit status is non-zero only on errors):
# lag p99 < 5 ms at 50% of peak, catch-up >= 500,000 deltas/s, wire bytes per
# SET delta <= the RESP bytes of the SET command.
#
# Environment: PROFILE=release|debug (default release), PARTITION_SECONDS
# (default 30), PARTITION_RATE (region a's rate meanwhile, percent of peak,
# default 50; a's 64 MiB outbox holds about 7M SET deltas in compressed
# segments, so a lower rate
# measures the resume-from-cursor path and a higher one the snapshot path),
# PEAK_SECONDS (default 5), RATES (percent of peak, default 10,25,50),
# WAN_BENCH_ARGS (more wan_bench flags, e.g. "--in-memory --trace-ms 5"; see
# wan_bench --help), CARGO_TARGET_DIR. Everything it starts is stopped on
# exit; the node logs stay in the printed directory if the run fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RATE=${1:-10}
PROFILE=${PROFILE:-release}
PARTITION_SECONDS=${PARTITION_SECONDS:-30}
PARTITION_RATE=${PARTITION_RATE:-50}
PEAK_SECONDS=${PEAK_SECONDS:-5}
RATES=${RATES:-10,25,50}

if [ "$PROFILE" = release ]; then
  cargo build --release -q -p meridian-cluster --bin meridian -p meridian-tests --bin wan_bench
else
  cargo build -q -p meridian-cluster --bin meridian -p meridian-tests --bin wan_bench
fi
TARGET=${CARGO_TARGET_DIR:-target}/$PROFILE

DIR=$(mktemp -d /tmp/meridian-wan-bench.XXXXXX)
status=0
"$TARGET/wan_bench" --binary "$TARGET/meridian" --dir "$DIR" --seconds "$SECONDS_PER_RATE" \
  --peak-seconds "$PEAK_SECONDS" --rates "$RATES" --partition-seconds "$PARTITION_SECONDS" \
  --partition-rate "$PARTITION_RATE" ${WAN_BENCH_ARGS:-} || status=$?
if [ "$status" = 0 ]; then
  rm -rf "$DIR"
else
  echo "benchmark failed (exit $status); node logs in $DIR" >&2
fi
exit "$status"
