#!/usr/bin/env bash
# Runs the whole test suite against real Iceberg peers (PyIceberg, DuckDB, Spark, REST catalog, s3s-fs,
# moto). Installs missing peers first into $ICEBERG_PEERS (default $HOME/.cache/iceberg-peers): a no-op
# taking about a second when everything is there; the first install takes a few minutes.
#   usage: scripts/test.sh [args for cargo test...]
#     scripts/test.sh                          cargo test --all-targets
#     scripts/test.sh peers_smoke              only tests whose name contains peers_smoke
#     scripts/test.sh -- --nocapture           pass options to the test binaries
set -euo pipefail
cd "$(dirname "$0")/.."

tests/peers/setup.sh pyiceberg duckdb spark rest s3s moto
scripts/ops-test-deps.sh          # prometheus/promtool, chromium, schemathesis (only what is missing)
. tests/peers/env.sh
exec cargo test --all-targets "$@"
