"""icemaint's Spark driver: one `rewrite_data_files` call on one table, as icemaint resolved it.

Run by icemaint through spark-submit:  spark-submit [...] rewrite_data_files.py SPEC.json

SPEC.json (written by icemaint, mode 0600; it holds the catalog's credentials):
  {"app_name": ..., "catalog": "prod", "table": ["ns", "tbl"], "options": {"min-input-files": "2"},
   "where": "p = 1" | null, "conf": {"spark.sql.catalog.prod": "...", ...}}

Protocol: every line for icemaint starts with "ICEMAINT_SPARK " and holds one JSON object:
  {"event": "started", "application_id": ...}   once the session is up
  {"event": "result", "row": {...}}              rewrite_data_files' result row
  {"event": "error", "message": ...}             Spark's error line, then exit status 1
Everything else on stdout/stderr is Spark's log, which icemaint streams into its own log.
"""
import json
import os
import sys

PREFIX = "ICEMAINT_SPARK "


def emit(event: dict) -> None:
    print(PREFIX + json.dumps(event), flush=True)


def ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def literal(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def call_sql(spec: dict) -> str:
    table = ".".join(ident(p) for p in spec["table"])
    args = [f"table => {literal(table)}", "strategy => 'binpack'"]
    opts = spec.get("options") or {}
    if opts:
        pairs = ", ".join(f"{literal(k)}, {literal(str(v))}" for k, v in sorted(opts.items()))
        args.append(f"options => map({pairs})")
    if spec.get("where"):
        args.append(f"where => {literal(spec['where'])}")
    return f"CALL {ident(spec['catalog'])}.system.rewrite_data_files({', '.join(args)})"


def read_spec(path: str) -> dict:
    # In cluster mode the spec arrives through --files, in the driver's working directory.
    if not os.path.exists(path):
        path = os.path.basename(path)
    with open(path) as f:
        return json.load(f)


def main() -> int:
    if len(sys.argv) != 2:
        emit({"event": "error", "message": "usage: rewrite_data_files.py SPEC.json"})
        return 2
    spec = read_spec(sys.argv[1])
    from pyspark.sql import SparkSession

    b = SparkSession.builder.appName(spec["app_name"])
    for k, v in spec["conf"].items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    try:
        emit({"event": "started", "application_id": spark.sparkContext.applicationId})
        row = spark.sql(call_sql(spec)).collect()[0].asDict()
        emit({"event": "result", "row": {k: int(v or 0) for k, v in row.items()}})
        return 0
    except Exception as e:  # the one line icemaint reports as the job's error
        lines = [l for l in str(e).splitlines() if l.strip()]
        emit({"event": "error", "message": f"{type(e).__name__}: {lines[0] if lines else e}"})
        return 1
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
