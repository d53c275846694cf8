#!/usr/bin/env python3
"""Copy the benchmark table, byte for byte, onto the local S3 server (for bench/run.sh --s3-latency-ms).

  s3_copy_table.py CATALOG FLAGS (the local source table) --s3-data-dir DIR --target-catalog-uri DB
                   --target-location s3://lake/wh/db/metrics --s3-endpoint URL

Spark cannot write to S3 here (no hadoop-aws offline), so the S3 table is the local one moved:
1. Iceberg's own `rewrite_table_path` procedure (Spark) writes copies of every metadata file (table
   metadata, manifest lists, manifests) with the table location's prefix replaced by the S3 one into
   a local staging directory, and lists each file to copy (source, target).
2. Each listed file is copied to the object it names on s3s-fs, whose objects are the files under
   its data directory (DIR/bucket/key): the data files unchanged, the metadata from the staging copy.
3. PyIceberg registers the last metadata file in a SQL catalog on the S3 warehouse.
The S3 table then has the same snapshots (ids included), manifests and data files as the local one,
and its location (where new files go) on S3.
Prints JSON: the metadata location, files and bytes copied.
"""
import argparse
import csv
import glob
import json
import os
import shutil
import sys
import tempfile
from urllib.parse import urlparse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "peers", "scripts"))
import peers_common as pc_  # noqa: E402


def rewrite_paths(a, target_location: str, staging: str) -> tuple:
    """Runs rewrite_table_path; returns (latest metadata file name, [(source, target)])."""
    spark = pc_.spark_session(a, app="s3-copy-table")
    cat = pc_.spark_catalog_ref(a)
    # The prefix as the first snapshot (its writer) spells paths: Java writes file:/x where
    # DESCRIBE shows file:///x.
    ml = spark.sql(f"SELECT manifest_list FROM {cat}.{a.table}.snapshots ORDER BY committed_at LIMIT 1")
    source_location = ml.collect()[0].manifest_list.rsplit("/metadata/", 1)[0]
    ns, name = a.table.split(".", 1)
    end = f", end_version => '{a.end_version}'" if a.end_version else ""
    row = spark.sql(f"CALL {cat}.system.rewrite_table_path(table => '{ns}.{name}', "
                    f"source_prefix => '{source_location}', target_prefix => '{target_location}', "
                    f"staging_location => 'file:{staging}/'{end})").collect()[0]
    # The file list is a CSV (one file or a directory of Spark part files) of "source,target" lines.
    path = pc_.local_path(row.file_list_location)
    parts = sorted(glob.glob(os.path.join(path, "*.csv"))) if os.path.isdir(path) else [path]
    pairs = []
    for p in parts:
        with open(p, newline="") as f:
            pairs += [(r[0], r[1]) for r in csv.reader(f) if r]
    spark.stop()
    return row.latest_version, pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pc_.add_catalog_args(ap, spark=True)
    ap.add_argument("--s3-data-dir", required=True, help="s3s-fs's data directory (buckets are its subdirectories)")
    ap.add_argument("--target-catalog-uri", required=True, help="SQLite file of the SQL catalog for the S3 table")
    ap.add_argument("--target-location", required=True, help="s3://bucket/prefix of the copied table")
    ap.add_argument("--end-version", help="the metadata file (name) to copy the table as of (default: the "
                    "current one); for a table whose later metadata other writers spelled differently")
    a = ap.parse_args()
    if not a.s3_endpoint:
        sys.exit("--s3-endpoint is required (the s3s-fs serving --s3-data-dir)")
    target = a.target_location.rstrip("/")
    staging = tempfile.mkdtemp(prefix="s3-copy-staging-", dir=os.path.dirname(os.path.abspath(a.target_catalog_uri)))
    latest, pairs = rewrite_paths(a, target, staging)
    files = nbytes = 0
    for source, dest in pairs:
        u = urlparse(dest)
        if u.scheme != "s3":
            sys.exit(f"unexpected target {dest}")
        out = os.path.join(a.s3_data_dir, u.netloc, u.path.lstrip("/"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copyfile(pc_.local_path(source), out)
        files += 1
        nbytes += os.path.getsize(out)
    shutil.rmtree(staging, ignore_errors=True)
    # rewrite_table_path replaces the prefix in file paths, but Spark spells the table's own
    # `location` file:///x where the paths say file:/x, so it stays local; new files (a
    # compaction's output) would then be written to the local disk, not to S3.
    u = urlparse(target)
    latest_local = os.path.join(a.s3_data_dir, u.netloc, u.path.lstrip("/"), "metadata", os.path.basename(latest))
    with open(latest_local) as f:
        metadata_json = json.load(f)
    if metadata_json["location"].rstrip("/") != target:
        metadata_json["location"] = target
        with open(latest_local, "w") as f:
            json.dump(metadata_json, f)

    from pyiceberg.catalog.sql import SqlCatalog
    bucket_root = "s3://" + urlparse(target).netloc
    cat = SqlCatalog(a.catalog_name, uri="sqlite:///" + os.path.abspath(a.target_catalog_uri),
                     warehouse=bucket_root, **pc_.s3_props(a))
    ns = a.table.split(".", 1)[0]
    if (ns,) not in cat.list_namespaces():
        cat.create_namespace(ns)
    metadata = f"{target}/metadata/{os.path.basename(latest)}"
    tbl = cat.register_table(a.table, metadata)
    if tbl.location().rstrip("/") != target:
        sys.exit(f"the copied table's location is {tbl.location()}, not {target}")
    print(json.dumps({"metadata_location": tbl.metadata_location, "location": tbl.location(), "files_copied": files,
                      "bytes_copied": nbytes, "snapshot_id": tbl.current_snapshot().snapshot_id}))


if __name__ == "__main__":
    main()
