#!/usr/bin/env python3
"""Read an Iceberg table through a Spark catalog, append rows with Spark SQL INSERT, read it again.

Spark 3.5 + Iceberg 1.10.2, catalog flags as in every tool (REST, JDBC on SQLite, or Hadoop on --warehouse).
Reads rows + the order-independent checksum of verify.py through the catalog (`SELECT * FROM cat.ns.t`),
then runs one `INSERT INTO cat.ns.t SELECT ...` of --rows rows shaped like the metrics table (org_id int,
metric_name string, ts timestamptz, value double, resolution int; other columns of the table get NULL),
values derived from --seed and the row number only, then reads again.
Prints JSON: before {rows, checksum}, appended {rows, checksum} (of the inserted rows alone), after
{rows, checksum}, snapshot (id, operation, summary of the new one).
Since checksums are sums mod 2^64, before + appended == after when nothing else changed.

Example (run with $PEERS_PY, after `. env.sh`):
  spark_append.py --catalog-uri http://127.0.0.1:8181 --table db.metrics --rows 500 --seed 3
"""
import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep the toolkit folder free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_common as pc_  # noqa: E402


def checksum(df) -> dict:
    return pc_.RowChecksum().add_all(pc_.spark_rows_as_batches(df)).result()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pc_.add_catalog_args(ap, spark=True)
    ap.add_argument("--rows", type=int, default=100, help="rows to insert (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="default: %(default)s")
    ap.add_argument("--orgs", type=int, default=2, help="distinct org_id values (default: %(default)s)")
    ap.add_argument("--days", type=int, default=2, help="distinct days (default: %(default)s)")
    ap.add_argument("--start-date", default="2025-01-01", help="first day, UTC (default: %(default)s)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="1g")
    a = ap.parse_args()

    from pyspark.sql import functions as F
    spark = pc_.spark_session(a, app="peers-append", master=a.master, driver_memory=a.driver_memory)
    cat = pc_.spark_catalog_ref(a)
    ns, _, name = a.table.rpartition(".")
    t = f"{cat}.{ns}.{name}"
    out = {"table": a.table, "catalog": pc_.describe_catalog(a)}
    out["before"] = checksum(spark.table(t))
    before_ids = {r.snapshot_id for r in spark.sql(f"SELECT snapshot_id FROM {t}.snapshots").collect()}

    def h(salt):  # deterministic 64-bit hash of the row number
        return F.xxhash64(F.col("id"), F.lit(a.seed), F.lit(salt))

    base_us = spark.sql(f"SELECT unix_micros(TIMESTAMP '{a.start_date} 00:00:00 UTC') u").collect()[0].u
    rows = (spark.range(0, a.rows, 1, 1)
            .select((F.pmod(h(0), F.lit(a.orgs))).cast("int").alias("org_id"),
                    F.concat(F.lit("spark_"), F.pmod(h(1), F.lit(50)).cast("string")).alias("metric_name"),
                    F.timestamp_micros(F.lit(base_us) + F.pmod(h(2), F.lit(a.days)) * F.lit(86_400_000_000)
                                       + F.pmod(h(3), F.lit(86_400_000_000))).alias("ts"),
                    (F.pmod(h(4), F.lit(100_000_000)) / F.lit(1_000_000.0)).alias("value"),
                    F.lit(60).cast("int").alias("resolution")))
    # Columns of the table that the generator does not know (added by schema evolution) get NULL.
    cols = [f.name for f in spark.table(t).schema.fields]
    known = set(rows.columns)
    rows = rows.select(*[F.col(c) if c in known else F.lit(None).alias(c) for c in cols])
    rows.createOrReplaceTempView("peers_new_rows")
    spark.sql(f"INSERT INTO {t} SELECT * FROM peers_new_rows")

    snaps = spark.sql(f"SELECT snapshot_id, operation, summary FROM {t}.snapshots").collect()
    new = [s for s in snaps if s.snapshot_id not in before_ids]
    out["snapshot"] = ({"snapshot_id": new[0].snapshot_id, "operation": new[0].operation,
                        "summary": dict(new[0].summary)} if len(new) == 1 else {"new_snapshots": len(new)})
    out["appended"] = checksum(spark.table("peers_new_rows"))
    out["after"] = checksum(spark.table(t))
    spark.stop()
    pc_.dump(out)


if __name__ == "__main__":
    main()
