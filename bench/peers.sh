# Sourced by bench/run.sh --with-peers: the other single-machine compactors on the same input.
# Uses run.sh's variables (py, repo, scripts, work, cat_flags, s0, target, min_input_files) and its
# `step`, `die` and `proc_cpu_s`. Each engine starts from S0 (main rolled back, as between Spark and
# icemaint), runs under /usr/bin/time -v (wall, user+sys CPU, peak RSS of the whole process) and is
# judged like icemaint: verify.py (PyIceberg + DuckDB rows and checksum) and table_snapshot.py diff
# (files and bytes replaced, read from the table). A failed engine leaves no PEER.json, and
# report.py fails the run on that as on a wrong output.

# peer_verify NAME: the checks every engine's output gets.
peer_verify() {
  step "verify $1's output"
  "$py" "$scripts/verify.py" "${cat_flags[@]}" --duckdb >"$work/verify-$1.json" \
    2>>"$work/logs/verify.log" || true
  "$py" "$repo/bench/table_snapshot.py" diff "${cat_flags[@]}" --from "$s0" >"$work/$1-diff.json"
}

peer_rollback() {
  step "roll main back to $s0"
  "$py" "$repo/bench/table_snapshot.py" rollback "${cat_flags[@]}" --to "$s0" >"$work/rollback-$1.json"
}

run_zamboni() {
  peer_rollback zamboni
  step "iceberg-zamboni compact"
  local status=0
  /usr/bin/time -v -o "$work/zamboni.time" "$ZAMBONI_PY" "$repo/bench/peer_compact.py" zamboni \
    --catalog-uri "$work/catalog.db" --warehouse "$work/warehouse" --table db.metrics \
    --target-file-size-bytes "$target" --min-input-files "$min_input_files" --threads "$(nproc)" \
    >"$work/zamboni.json" 2>"$work/logs/zamboni.log" || status=$?
  if [ "$status" != 0 ]; then
    echo "iceberg-zamboni failed (exit $status):" >&2
    tail -5 "$work/logs/zamboni.log" >&2
    rm -f "$work/zamboni.json"
  fi
  peer_verify zamboni
}

# iceberg-compaction reaches catalogs over REST only: the mini REST catalog serves the same SQLite
# catalog ("default") for the run and is stopped before anything else writes to that database (its
# JDBC connection keeps SQLite locked while it runs). Its CPU during the run is recorded apart.
run_iceberg_compaction() {
  peer_rollback iceberg-compaction
  local rpid rport status=0 cpu0
  read -r rpid rport < <(REST_CATALOG_JDBC_URI="jdbc:sqlite:$work/catalog.db" REST_CATALOG_NAME=default \
    "$repo/tests/peers/rest-catalog/start.sh" "$work/warehouse" 2>>"$work/logs/rest.log") \
    || die "the REST catalog for iceberg-compaction did not start (see $work/logs/rest.log)"
  step "iceberg-compaction compact"
  cpu0=$(proc_cpu_s "$rpid")
  /usr/bin/time -v -o "$work/iceberg-compaction.time" "$ICEBERG_COMPACTION_PY" "$repo/bench/peer_compact.py" \
    iceberg-compaction --rest-uri "http://127.0.0.1:$rport" --table db.metrics \
    --target-file-size-bytes "$target" --min-input-files "$min_input_files" --threads "$(nproc)" \
    >"$work/iceberg-compaction.json" 2>"$work/logs/iceberg-compaction.log" || status=$?
  echo "{\"catalog_server_cpu_s\": $(awk -v a="$cpu0" -v b="$(proc_cpu_s "$rpid")" 'BEGIN { printf "%.2f", b - a }')}" \
    >"$work/iceberg-compaction-rest.json"
  "$repo/tests/peers/rest-catalog/stop.sh" "$rpid" >>"$work/logs/rest.log" 2>&1
  if [ "$status" != 0 ]; then
    echo "iceberg-compaction failed (exit $status):" >&2
    tail -5 "$work/logs/iceberg-compaction.log" >&2
    rm -f "$work/iceberg-compaction.json"
  fi
  peer_verify iceberg-compaction
}

run_peers() {
  run_zamboni
  run_iceberg_compaction
}
