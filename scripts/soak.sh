#!/usr/bin/env bash
# The soak test (tests/it/soak.rs) run longer: the PyIceberg writer keeps appending and deleting for
# N minutes while the daemon compacts and expires, is SIGKILLed and restarted every 8 writer rounds
# and meets a locked catalog in between; the rows must still equal the writer's ledger at the end.
#   usage: scripts/soak.sh --minutes N      (default 10; the suite's own run is 24 rounds, ~1 minute)
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --minutes=*) minutes="${1#--minutes=}"; shift ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (usage: scripts/soak.sh --minutes N)" >&2; exit 2 ;;
  esac
done
case "$minutes" in ''|*[!0-9]*) echo "--minutes takes a whole number, not '$minutes'" >&2; exit 2 ;; esac

export ICEMAINT_SOAK_MINUTES="$minutes"
exec scripts/test.sh soak:: -- --nocapture
