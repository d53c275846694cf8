#!/usr/bin/env python3
"""Run another single-machine compactor on the benchmark table (for bench/run.sh --with-peers).

  peer_compact.py zamboni            --catalog-uri CATALOG.db --warehouse DIR --table db.metrics OPTIONS
  peer_compact.py iceberg-compaction --rest-uri http://127.0.0.1:PORT --table db.metrics OPTIONS
  OPTIONS: --target-file-size-bytes N --min-input-files N [--threads N]

Each engine runs in its own venv (tests/peers/setup.sh zamboni | iceberg-compaction: $ZAMBONI_PY,
$ICEBERG_COMPACTION_PY), so this file imports only the engine it runs. It prints one JSON object: the
engine, its version, the options it was given in the engine's own terms, and what the engine reported.
bench/run.sh measures the process (wall, CPU, peak RSS) with /usr/bin/time -v and judges the result by
the table itself (table_snapshot.py diff, verify.py), not by what the engine says it did.

- zamboni: its own CLI (`zamboni compact ... --yes`, zamboni.cli.main) with one change: the catalog. The
  CLI's --local-warehouse builds a PyIceberg SQL catalog named "local" on WAREHOUSE/catalog.db; the
  benchmark's table lives in the SQL catalog "default" on another file (Spark's JdbcCatalog wrote it),
  so the session is built with zamboni's own CatalogSession.for_local(name=, uri=) instead.
- iceberg-compaction: the Python API (Compaction(...).run()) through a REST catalog (its only catalog
  type that can reach this table: it has no SQL catalog); run.sh serves the same SQLite catalog over
  tests/peers/rest-catalog.
"""
import argparse
import importlib.metadata as md
import json
import sys
import time


def run_zamboni(a) -> dict:
    import zamboni.cli as cli
    from zamboni.session import CatalogSession

    def session(args):
        return CatalogSession.for_local(warehouse_path=a.warehouse, uri=f"sqlite:///{a.catalog_uri}",
                                        name="default", threads=a.threads)

    cli._session_from = session  # the one substitution, see the module docstring
    argv = ["compact", "--local-warehouse", a.warehouse, a.table,
            "--target-file-size-bytes", str(a.target_file_size_bytes),
            "--min-input-files", str(a.min_input_files), "--threads", str(a.threads), "--yes"]
    # zamboni prints its own summary line on stdout; keep stdout for this script's JSON.
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        status = cli.main(argv)
    finally:
        sys.stdout = real_stdout
    if status:
        raise RuntimeError(f"zamboni compact exited {status}")
    return {"engine": "iceberg-zamboni", "version": md.version("iceberg-zamboni"),
            "command": "zamboni " + " ".join(argv), "exit": status}


def run_iceberg_compaction(a) -> dict:
    import iceberg_compaction as ic

    catalog = ic.RestCatalog("default", uri=a.rest_uri)
    # Spark's binpack with min-input-files: rewrite files below 75% of the target (Spark's
    # min-file-size-bytes default), packed into groups of at most the target, 2+ files per group.
    options = {"strategy": "small_files", "grouping_strategy": "bin_pack",
               "target_file_size_bytes": a.target_file_size_bytes,
               "bin_pack_target_size_bytes": a.target_file_size_bytes,
               "small_file_threshold_bytes": a.target_file_size_bytes * 3 // 4,
               "min_group_file_count": a.min_input_files}
    if a.threads:
        options.update(max_input_parallelism=a.threads, max_output_parallelism=a.threads)
    result = ic.Compaction(catalog, a.table, ic.CompactionConfig(**options)).run()
    if result is None:
        raise RuntimeError("iceberg-compaction found nothing to compact")
    return {"engine": "iceberg-compaction", "version": md.version("iceberg-compaction"), "options": options,
            "reported": {"input_files": result.input_files_count, "output_files": result.output_files_count,
                         "input_bytes": result.input_bytes_total, "output_bytes": result.output_bytes_total}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", choices=["zamboni", "iceberg-compaction"])
    ap.add_argument("--catalog-uri", help="zamboni: the SQLite file of the SQL catalog 'default'")
    ap.add_argument("--warehouse", help="zamboni: the warehouse directory")
    ap.add_argument("--rest-uri", help="iceberg-compaction: the REST catalog serving the table")
    ap.add_argument("--table", default="db.metrics")
    ap.add_argument("--target-file-size-bytes", type=int, required=True)
    ap.add_argument("--min-input-files", type=int, required=True)
    ap.add_argument("--threads", type=int, default=0, help="worker threads (0: the engine's default)")
    a = ap.parse_args()
    t0 = time.monotonic()
    if a.engine == "zamboni":
        if not (a.catalog_uri and a.warehouse):
            sys.exit("zamboni needs --catalog-uri and --warehouse")
        a.threads = a.threads or 4  # zamboni's own default
        out = run_zamboni(a)
    else:
        if not a.rest_uri:
            sys.exit("iceberg-compaction needs --rest-uri")
        out = run_iceberg_compaction(a)
    out["engine_wall_s"] = round(time.monotonic() - t0, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
