#!/usr/bin/env bash
# Prerequisites of the ops integration tests (tests/it/observe.rs, api.rs, status_page.rs,
# bench_smoke.rs, postgres.rs):
#   - Debian's prometheus (prometheus and promtool): rules unit tests, a real Prometheus scraping
#     icemaint;
#   - Debian's chromium: the status page screenshot and DOM;
#   - schemathesis (PyPI) in a venv under $HOME/.cache: fuzzing the API from its OpenAPI document;
#   - Debian's postgresql (server binaries only; the tests start their own throwaway cluster):
#     the state store shared by replicas (tests/it/postgres.rs);
#   - Debian's time (GNU /usr/bin/time): CPU seconds and peak RSS in bench/run.sh, whose smoke run
#     is tests/it/bench_smoke.rs;
#   - kubectl (Debian package; kustomize is built in): the Kubernetes base builds
#     (tests/it/deploy.rs);
#   - systemd-analyze (Debian systemd): the unit file verifies (tests/it/deploy.rs).
# Idempotent: installs only what is missing, so a warm machine passes through in about a second.
# Run by scripts/test.sh before the tests.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV=${ICEMAINT_SCHEMATHESIS_VENV:-$HOME/.cache/icemaint-schemathesis/venv}

missing=()
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
[ -x /usr/bin/time ] || missing+=(time)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v kubectl >/dev/null || missing+=(kubectl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  echo "ops: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -q
  # chromium's recommended fonts-liberation gives the screenshot real text; prometheus needs no
  # recommends.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

if ! "$SCHEMATHESIS_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "ops: installing schemathesis $SCHEMATHESIS_VERSION into $SCHEMATHESIS_VENV"
  python3 -m venv "$SCHEMATHESIS_VENV"
  "$SCHEMATHESIS_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
echo "ops: prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'), $(chromium --version 2>/dev/null | head -1), schemathesis $SCHEMATHESIS_VERSION, kubectl $(kubectl version --client 2>/dev/null | head -1 | awk '{print $3}')"
