#!/usr/bin/env bash
# Region outage drill: a whole region dies, the application moves to the
# other region, the dead region comes back from its disks and catches up.
#
#   deploy/drills/region-outage.sh [drill flags]    (e.g. --outage-s 10 --writers 8)
#
# Region A is a three-node Meridian cluster on 127.0.0.101-103, region B one
# node on 127.0.0.104 (each node its own loopback address and data
# directory, as separate hosts), with an active-active database across both.
# An application writes pipelines of SETs of unique keys to A through all of
# its nodes for WRITE_S seconds; then every node of A is SIGKILLed at once,
# the application notices, switches to B and keeps writing; after OUTAGE_S
# seconds A's three processes are restarted with the same directories and
# ports, recover their data, and the WAN links catch A up from B (and B up
# from A). The drill checks that every write acknowledged by B is then
# readable in A, counts the writes acknowledged by A that never reached B
# (the loss window of an asynchronous WAN), prints a summary and ends with
# the line
#
#   region_outage_lost_b=<count> lost_a_window=<count> catchup_s=<seconds>
#
# With --scenario master the database has an in-memory replica in A and only
# the node holding A's master is SIGKILLed (writes acknowledged with WAIT 1,
# a counter per writer); it ends with
#
#   crdb_master_kill_lost=<count> failover_ms=<ms> counters_off=<count>
#
# where catchup_s is the time from A's restart until A holds every write B
# acknowledged during the outage. It exits non-zero if a write acknowledged
# by B is missing in A, if A does not catch up within the bound, or if a
# write A still holds never reached B.
#
# Environment: PROFILE=release|debug (default release; CI may use debug to
# reuse its build), WRITE_S (default 5), OUTAGE_S (default 5), CARGO_TARGET_DIR.
# Further arguments go to the drill (tests/src/bin/region_outage.rs: --rate,
# --writers, --batch, --base, --catchup-timeout-s, --appendfsync, ...).
# Everything it starts is stopped on exit, also when this script is
# interrupted (INT or TERM); node logs and data stay in the printed directory
# if the drill fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

PROFILE=${PROFILE:-release}
WRITE_S=${WRITE_S:-5}
OUTAGE_S=${OUTAGE_S:-5}

if [ "$PROFILE" = release ]; then
  cargo build --release -q -p meridian-cluster --bin meridian -p meridian-tests --bin region_outage
else
  cargo build -q -p meridian-cluster --bin meridian -p meridian-tests --bin region_outage
fi
TARGET=${CARGO_TARGET_DIR:-target}/$PROFILE

DIR=$(mktemp -d /tmp/meridian-region-outage.XXXXXX)
# The drill runs in the background so that a TERM or INT sent to this script
# reaches it at once: it then kills its nodes and exits.
"$TARGET/region_outage" --binary "$TARGET/meridian" --write-s "$WRITE_S" --outage-s "$OUTAGE_S" \
  --dir "$DIR" "$@" &
drill=$!
trap 'kill -TERM "$drill" 2>/dev/null || true' INT TERM
while :; do
  status=0
  wait "$drill" || status=$?
  kill -0 "$drill" 2>/dev/null || break
done
trap - INT TERM
if [ "$status" = 0 ]; then
  rm -rf "$DIR"
else
  echo "drill failed (exit $status); node logs and data in $DIR" >&2
fi
exit "$status"
