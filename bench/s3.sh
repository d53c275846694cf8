# Sourced by bench/run.sh --s3-latency-ms N: icemaint with the warehouse on the local S3 server
# (s3s-fs, tests/peers/s3), directly and behind `icemaint bench latency-proxy` adding N ms per round trip,
# next to the local-disk run on the same input. Uses run.sh's variables (py, bin, repo, scripts,
# work, cat_flags, s0, target, min_input_files) and its `step`, `json` and `proc_cpu_s`.
# The S3 table is the local S0 table copied byte for byte (bench/s3_copy_table.py): same snapshots,
# manifests and data files. Each run starts from S0 and is verified (PyIceberg + DuckDB over S3).

s3_pids=()
s3_proxy_pid=""
s3_stop_all() {
  local pid
  for pid in "${s3_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}

# s3_prepare: s3s-fs on $work/s3data, the S0 table copied there, checked against the input.
s3_prepare() {
  local spid sport
  mkdir -p "$work/s3data/lake" "$work/s3"
  read -r spid sport < <("${server_pin[@]}" "$repo/tests/peers/s3/start-s3s.sh" "$work/s3data" 2>>"$work/logs/s3s.log") \
    || die "s3s-fs did not start (see $work/logs/s3s.log)"
  s3_pids+=("$spid")
  s3_pid=$spid s3_port=$sport
  s3_flags=(--catalog-uri "$work/s3/catalog.db" --warehouse s3://lake/wh --table db.metrics
            --s3-endpoint "http://127.0.0.1:$s3_port" --s3-access-key "$PEERS_S3_ACCESS_KEY"
            --s3-secret-key "$PEERS_S3_SECRET_KEY" --s3-region "$PEERS_S3_REGION")
  step "copy the input table to S3 (s3s-fs)"
  "$py" "$repo/bench/s3_copy_table.py" "${cat_flags[@]}" --s3-data-dir "$work/s3data" \
    --target-catalog-uri "$work/s3/catalog.db" --target-location s3://lake/wh/db/metrics \
    --s3-endpoint "http://127.0.0.1:$s3_port" >"$work/s3-copy.json" 2>"$work/logs/s3-copy.log" \
    || die "copying the table to S3 failed (see $work/logs/s3-copy.log)"
  [ "$(json "$work/s3-copy.json" snapshot_id)" = "$s0" ] || die "the S3 copy is not at snapshot $s0"
  step "verify the S3 input"
  "$py" "$scripts/verify.py" "${s3_flags[@]}" --duckdb >"$work/verify-s3-input.json" 2>>"$work/logs/verify.log" \
    || die "the S3 copy does not read back (see $work/logs/verify.log)"
}

# s3_config FILE ENDPOINT_PORT STATE: an icemaint config for the S3 table through that port.
s3_config() {
  cat >"$1" <<EOT
[catalog]
type = "sql"
uri = "sqlite://$work/s3/catalog.db"
name = "default"
warehouse = "s3://lake/wh"

[catalog.properties]
"s3.endpoint" = "http://127.0.0.1:$2"
"s3.access-key-id" = "$PEERS_S3_ACCESS_KEY"
"s3.secret-access-key" = "$PEERS_S3_SECRET_KEY"
"s3.region" = "$PEERS_S3_REGION"
"s3.path-style-access" = "true"
"s3.disable-config-load" = "true"
"s3.disable-ec2-metadata" = "true"

[store]
url = "sqlite://$work/$3"

[policies]
dir = "policies"
EOT
}

# s3_compact NAME PORT: icemaint compact of the S3 table through PORT, measured and verified; the
# CPU the S3 server and the proxy used meanwhile (on this machine's cores too) in NAME-servers.json.
s3_compact() {
  local name=$1 port=$2 status=0 s0cpu p0cpu
  step "roll the S3 table back to $s0"
  "$py" "$repo/bench/table_snapshot.py" rollback "${s3_flags[@]}" --to "$s0" >"$work/rollback-$name.json"
  s3_config "$work/$name.toml" "$port" "$name-state.db"
  step "icemaint compact on S3 ($name)"
  s0cpu=$(proc_cpu_s "$s3_pid") p0cpu=$(proc_cpu_s "$s3_proxy_pid")
  "${engine_pin[@]}" /usr/bin/time -v -o "$work/$name.time" "$bin" compact db.metrics --config "$work/$name.toml" \
    --option "target-file-size-bytes=$target" --option "min-input-files=$min_input_files" --json \
    >"$work/$name.json" 2>"$work/logs/$name.log" || status=$?
  awk -v a="$s0cpu" -v b="$(proc_cpu_s "$s3_pid")" -v c="$p0cpu" -v d="$(proc_cpu_s "$s3_proxy_pid")" \
    'BEGIN { printf "{\"s3_server_cpu_s\": %.2f, \"proxy_cpu_s\": %.2f}\n", b - a, d - c }' >"$work/$name-servers.json"
  [ "$status" = 0 ] || { echo "icemaint compact on S3 ($name) failed (exit $status):" >&2; tail -5 "$work/logs/$name.log" >&2; }
  step "verify icemaint's output on S3 ($name)"
  "$py" "$scripts/verify.py" "${s3_flags[@]}" --duckdb >"$work/verify-$name.json" 2>>"$work/logs/verify.log" || true
}

# s3_runs MS: on S3 directly, then behind the latency proxy.
s3_runs() {
  local ms=$1 ppid pport
  s3_compact icemaint-s3 "$s3_port"
  "${server_pin[@]}" "$bin" bench latency-proxy --upstream "127.0.0.1:$s3_port" --latency-ms "$ms" \
    --log "$work/proxy.json" >"$work/proxy.port" 2>"$work/logs/proxy.log" &
  ppid=$!
  s3_pids+=("$ppid")
  s3_proxy_pid=$ppid
  for _ in $(seq 50); do [ -s "$work/proxy.port" ] && break; sleep 0.1; done
  pport=$(cat "$work/proxy.port")
  [ -n "$pport" ] || die "the latency proxy did not start (see $work/logs/proxy.log)"
  s3_compact icemaint-s3-latency "$pport"
  echo "{\"latency_ms\": $ms}" >"$work/s3-latency.json"
  kill "$ppid" 2>/dev/null || true
  wait "$ppid" 2>/dev/null || true  # its counts (proxy.json) are written as it stops
  s3_proxy_pid=""
}
