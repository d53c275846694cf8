#!/usr/bin/env bash
# Checks the Prometheus rules: syntax (`promtool check rules`) and the unit tests of every alert
# (`promtool test rules`). tests/it/observe.rs runs the same and more (a real Prometheus scraping a
# real icemaint); this is the quick loop while editing rules.
#   usage: deploy/prometheus/check.sh
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v promtool >/dev/null; then
  echo "promtool not found: install Debian package prometheus (apt-get install -y prometheus)" >&2
  exit 1
fi
promtool check rules rules.yml
promtool test rules rules_test.yml
