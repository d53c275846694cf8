#!/usr/bin/env python3
"""Compaction scenarios run by Spark 3.5 + Iceberg 1.10.2, for comparing icemaint with Spark.

For each --scenario, in one Spark session: creates table <--table>_<scenario> (dropped first if it
exists), writes it with Spark, runs CALL system.rewrite_data_files(strategy => 'binpack', options)
on it, records what Spark did, then rolls `main` back to the snapshot the rewrite started from, so
icemaint can compact the very same files afterwards.

Scenarios (every file Parquet, uncompressed so sizes follow the data, write.distribution-mode=none
so each Spark task writes one file):
  older-specs  identity(cat) -> identity(p): small and in-range files in both specs; target = the
               in-range files' size. Spark rewrites the small files only; old-spec ones are packed
               together and written into the current spec's partitions.
  packing      one commit of six files of decreasing size in partition p=1 (one manifest, so the scan
               order is the manifest's entry order), two small files in p=2;
               max-file-group-size-bytes = size of the 1st + 3rd file in scan order, so Java's
               one-bin look-back leaves the first file out.
  v1           a format-version 1 table (v1 manifests, no sequence numbers): four small files in
               p=1, three in p=2 and one in-range file in p=2, in two commits. Spark rewrites the
               small files of each partition into one.
  conflict     three small files in p=1 and p=2; after Spark has loaded the table (its catalog caches
               it, so the rewrite starts from that snapshot), PyIceberg deletes --conflict-where,
               rewriting a p=1 file. Without partial progress Spark's single commit is refused and
               nothing lands.

Per scenario the JSON has: table, options (the rewrite options used), start (snapshot id),
before / after (live data files as table_info.py lists them: path, size, partition, spec_id, ...),
scan_order (paths of the live data files in manifest-list then entry order), rows_before /
rows_after (PyIceberg row count and checksum at start and after Spark), result (the procedure's
row) or error (its exception), after_snapshot (current snapshot id and operation after Spark),
conflict (the delete's snapshot id and filter; conflict scenario only).

Example (run with $PEERS_PY):
  spark_parity.py --catalog-uri http://127.0.0.1:8181 --table db.parity --scenario packing
"""
import argparse
import os
import random
import sys

sys.dont_write_bytecode = True  # keep the toolkit folder free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_common as pc_  # noqa: E402
import table_info as ti_  # noqa: E402

CONFLICT_WHERE = "p == 1 and id < 2"
PROPS = {"format-version": "2", "write.distribution-mode": "none",
         "write.parquet.compression-codec": "uncompressed"}


def payload(rng: random.Random, n: int) -> str:
    """n characters that do not compress or dictionary-encode: file sizes follow the row count."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def write_files(spark, t: str, files: list, columns: str) -> None:
    """One Spark task, so one data file, per entry of `files` (a list of row lists), in one commit."""
    rows = [r for f in files for r in f]
    per_file = len(files[0])
    assert all(len(f) == per_file for f in files), "parallelize slices by count: equal rows per file"
    rdd = spark.sparkContext.parallelize(rows, len(files))
    spark.createDataFrame(rdd, columns).writeTo(t).append()


def create(spark, t: str, columns: str, partition: str, **overrides) -> None:
    props = ", ".join(f"'{k}'='{v}'" for k, v in {**PROPS, **overrides}.items())
    spark.sql(f"DROP TABLE IF EXISTS {t} PURGE")
    spark.sql(f"CREATE TABLE {t} ({columns}) USING iceberg PARTITIONED BY ({partition}) "
              f"TBLPROPERTIES ({props})")


def rows_of(first_id: int, n: int, width: int, rng, **cols) -> list:
    return [(first_id + i, *cols.values(), payload(rng, width)) for i in range(n)]


def setup_older_specs(spark, t: str, cat) -> dict:
    rng = random.Random(7)
    create(spark, t, "id bigint, cat string, p int, payload string", "cat")
    cols = "id bigint, cat string, p int, payload string"

    def f(first, n, width, cat_):  # rows alternate between p=1 and p=2
        return [(first + i, cat_, 1 + i % 2, payload(rng, width)) for i in range(n)]
    # Spec 0, identity(cat): small files and one big (in-range) file per category.
    write_files(spark, t, [f(0, 4, 200, "a"), f(10, 4, 200, "a"), f(20, 4, 200, "a"),
                           f(30, 4, 200, "b"), f(40, 4, 200, "b")], cols)
    write_files(spark, t, [f(100, 4, 10_000, "a"), f(200, 4, 10_000, "b")], cols)
    spark.sql(f"ALTER TABLE {t} REPLACE PARTITION FIELD cat WITH p")

    def g(first, n, width, p):
        return [(first + i, "c", p, payload(rng, width)) for i in range(n)]
    # Spec 1, identity(p): three small files in p=1; one small and one big in p=2.
    write_files(spark, t, [g(300, 4, 200, 1), g(310, 4, 200, 1), g(320, 4, 200, 1),
                           g(330, 4, 200, 2)], cols)
    write_files(spark, t, [g(400, 4, 10_000, 2)], cols)
    tbl = cat.load_table(t_name(t))
    big = [d["size"] for d in ti_.live_files(tbl)[0] if d["records"] == 4 and d["size"] > 20_000]
    assert len(big) == 3, big
    target = max(big)
    assert min(big) >= 0.75 * target, big
    return {"target-file-size-bytes": str(target), "min-input-files": "2"}


def setup_packing(spark, t: str, cat) -> dict:
    rng = random.Random(11)
    create(spark, t, "id bigint, p int, payload string", "p")
    cols = "id bigint, p int, payload string"
    units = [6, 5, 4, 3, 2, 1]
    write_files(spark, t, [rows_of(100 * i, 4, 1000 * u, rng, p=1) for i, u in enumerate(units)], cols)
    write_files(spark, t, [rows_of(1000 + 10 * i, 4, 300, rng, p=2) for i in range(2)], cols)
    tbl = cat.load_table(t_name(t))
    sizes = {d["path"]: d["size"] for d in ti_.live_files(tbl)[0] if d["partition"] == {"p": "1"}}
    order = [p for p in scan_order(tbl) if p in sizes]
    group = sizes[order[0]] + sizes[order[2]]
    return {"target-file-size-bytes": str(10_000_000), "min-input-files": "2",
            "max-file-group-size-bytes": str(group)}


def setup_conflict(spark, t: str, cat) -> dict:
    rng = random.Random(13)
    create(spark, t, "id bigint, p int, payload string", "p")
    cols = "id bigint, p int, payload string"
    write_files(spark, t, [rows_of(10 * i, 4, 300, rng, p=1 + i // 3) for i in range(6)], cols)
    return {"min-input-files": "2"}


def setup_v1(spark, t: str, cat) -> dict:
    rng = random.Random(17)
    create(spark, t, "id bigint, p int, payload string", "p", **{"format-version": "1"})
    cols = "id bigint, p int, payload string"
    write_files(spark, t, [rows_of(10 * i, 4, 300, rng, p=1 + i // 4) for i in range(7)], cols)
    write_files(spark, t, [rows_of(1000, 4, 10_000, rng, p=2)], cols)
    tbl = cat.load_table(t_name(t))
    assert tbl.metadata.format_version == 1, tbl.metadata.format_version
    big = [d["size"] for d in ti_.live_files(tbl)[0] if d["size"] > 20_000]
    assert len(big) == 1, big
    return {"target-file-size-bytes": str(big[0]), "min-input-files": "2"}


SCENARIOS = {"older-specs": setup_older_specs, "packing": setup_packing, "conflict": setup_conflict,
             "v1": setup_v1}


def t_name(t: str) -> str:
    """`cat`.ns.name -> ns.name"""
    return t.split(".", 1)[1]


def scan_order(tbl) -> list:
    """Live data files in manifest-list order, then entry order: Java's scan order when it plans the
    manifests one after the other (always, for files of one manifest)."""
    from pyiceberg.manifest import DataFileContent
    out = []
    for m in tbl.current_snapshot().manifests(tbl.io):
        for e in m.fetch_manifest_entry(tbl.io, discard_deleted=True):
            if e.data_file.content == DataFileContent.DATA:
                out.append(e.data_file.file_path)
    return out


def rows_at(tbl, snapshot_id: int) -> dict:
    return pc_.RowChecksum().add_all(tbl.scan(snapshot_id=snapshot_id).to_arrow_batch_reader()).result()


def run(spark, a, cat, scenario: str) -> dict:
    ident = f"{a.table}_{scenario.replace('-', '_')}"
    ns, _, name = ident.rpartition(".")
    t = f"{pc_.spark_catalog_ref(a)}.{ns}.{name}"
    options = SCENARIOS[scenario](spark, t, cat)
    tbl = cat.load_table(ident)
    start = tbl.current_snapshot().snapshot_id
    R = {"table": ident, "options": options, "start": start, "before": ti_.live_files(tbl)[0],
         "scan_order": scan_order(tbl), "rows_before": rows_at(tbl, start)}
    if scenario == "conflict":
        # Spark's catalog cached the table when it wrote it: the rewrite plans from `start`.
        tbl.delete(delete_filter=CONFLICT_WHERE)
        tbl = cat.load_table(ident)
        R["conflict"] = {"where": CONFLICT_WHERE, "snapshot_id": tbl.current_snapshot().snapshot_id}
    optsql = ", ".join(f"'{k}', '{v}'" for k, v in options.items())
    q = (f"CALL {pc_.spark_catalog_ref(a)}.system.rewrite_data_files(table => '{ident}', "
         f"strategy => 'binpack', options => map({optsql}))")
    try:
        R["result"] = spark.sql(q).collect()[0].asDict()
    except Exception as e:  # the conflict scenario's refused commit: the Java exception and causes
        causes, j = [], getattr(e, "java_exception", None)
        while j is not None and len(causes) < 5:
            causes.append(str(j.toString()))
            j = j.getCause()
        R["error"] = " / caused by: ".join(causes) or f"{type(e).__name__}: {e}"
    tbl = cat.load_table(ident)
    snap = tbl.current_snapshot()
    R["after_snapshot"] = {"snapshot_id": snap.snapshot_id, "operation": snap.summary.operation.value}
    R["after"] = ti_.live_files(tbl)[0]
    R["rows_after"] = rows_at(tbl, snap.snapshot_id)
    spark.sql(f"CALL {pc_.spark_catalog_ref(a)}.system.rollback_to_snapshot('{ident}', {start})")
    assert cat.load_table(ident).current_snapshot().snapshot_id == start
    return R


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pc_.add_catalog_args(ap, spark=True)
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), required=True,
                    help="repeatable; all run in one Spark session")
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()
    spark = pc_.spark_session(a, app="peers-spark-parity", master=a.master)
    cat = pc_.pyiceberg_catalog(a)
    ns = a.table.rpartition(".")[0]
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {pc_.spark_catalog_ref(a)}.{ns}")
    out = {s: run(spark, a, cat, s) for s in a.scenario}
    spark.stop()
    pc_.dump(out)


if __name__ == "__main__":
    main()
