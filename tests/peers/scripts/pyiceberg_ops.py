#!/usr/bin/env python3
"""Small PyIceberg writes on an existing table, to play a concurrent writer in tests. Prints one JSON object.

Subcommands (usage: pyiceberg_ops.py SUBCOMMAND [catalog flags as in every tool] [options]):
  append [--rows N] [--seed S] [--appends K] [--index I] [--extra-column NAME]
        K appends (default 1) of N rows to a metrics table made by make_table.py; append number j (from I,
        default 0) fills the (org, day) partition (j % orgs, (j // orgs) % days) with the same generator as
        make_table.py (--orgs/--days/--start-date must match the table's to hit its partitions).
        --extra-column NAME also fills a string column added with add-column: "j-<append>-<row>".
  serve-appends [--rows N] [--seed S] [--orgs O] [--days D]
        a long-lived writer for tests that interleave appends with other work: reads lines of append
        numbers "J1 J2 ..." on stdin and makes those appends (append number J as in append), each its
        own commit, then prints one JSON line {"added_bytes": [...], "snapshot_ids": [...]}; ends at
        end of input.
  delete --where FILTER
        tbl.delete(FILTER), a PyIceberg row filter such as "value < 1.0" (copy-on-write in PyIceberg 0.12).
  set-properties K=V [K=V ...]
        sets table properties in one commit.
  remove-properties K [K ...]
        removes table properties in one commit.
  evolve-spec [--add-identity COL]... [--add-bucket COL:N]... [--remove-field NAME]...
        evolves the partition spec in one commit (a new default spec; existing files keep theirs).
  add-column --name NAME [--type string|int|long|double]
        adds an optional column in one commit (rows written before read it as null).
Output: op, table, snapshot_id (current after the op), metadata_location, properties, summary (of the
current snapshot) and for append: rows_appended, snapshot_ids (one per append).

Examples (run with $PEERS_PY):
  pyiceberg_ops.py append --catalog-uri http://127.0.0.1:8181 --table db.metrics --rows 100 --seed 7
  pyiceberg_ops.py set-properties --catalog-uri w/cat.db --warehouse w/wh commit.retry.num-retries=10
"""
import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep the toolkit folder free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_table  # noqa: E402
import peers_common as pc_  # noqa: E402


def do_append(a, tbl) -> dict:
    import pyarrow as pa
    arrow_schema = pa.schema([("org_id", pa.int32()), ("metric_name", pa.string()),
                              ("ts", pa.timestamp("us", tz="UTC")), ("value", pa.float64()),
                              ("resolution", pa.int32())])
    ids = []
    for j in range(a.index, a.index + a.appends):
        data = make_table.batch(j, a, arrow_schema)
        if a.extra_column:
            data = data.append_column(pa.field(a.extra_column, pa.string()),
                                      pa.array([f"j-{j}-{r}" for r in range(data.num_rows)], pa.string()))
        tbl.append(data)
        ids.append(tbl.current_snapshot().snapshot_id)
    return {"rows_appended": a.rows * a.appends, "snapshot_ids": ids}


def do_serve_appends(a, tbl) -> dict:
    import json
    served = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        tbl = tbl.refresh()
        ids = []
        for j in (int(x) for x in line.split()):
            a.index, a.appends = j, 1
            ids += do_append(a, tbl)["snapshot_ids"]
        added = [int(tbl.snapshot_by_id(i).summary.additional_properties["added-files-size"]) for i in ids]
        print(json.dumps({"added_bytes": added, "snapshot_ids": ids}), flush=True)
        served += len(ids)
    return {"appends": served}


def do_delete(a, tbl) -> dict:
    tbl.delete(delete_filter=a.where)
    return {"filter": a.where}


def do_set_properties(a, tbl) -> dict:
    props = pc_.parse_properties(a.props)
    with tbl.transaction() as tx:
        tx.set_properties(**props)
    return {"set": props}


def do_remove_properties(a, tbl) -> dict:
    with tbl.transaction() as tx:
        tx.remove_properties(*a.keys)
    return {"removed": a.keys}


def do_evolve_spec(a, tbl) -> dict:
    from pyiceberg.transforms import BucketTransform
    with tbl.update_spec() as u:
        for col in a.add_identity or []:
            u.add_identity(col)
        for spec in a.add_bucket or []:
            col, _, n = spec.partition(":")
            u.add_field(col, BucketTransform(int(n)), f"{col}_bucket_{n}")
        for name in a.remove_field or []:
            u.remove_field(name)
    spec = tbl.refresh().spec()
    return {"spec_id": spec.spec_id, "spec_fields": [f.name for f in spec.fields]}


def do_add_column(a, tbl) -> dict:
    from pyiceberg.types import DoubleType, IntegerType, LongType, StringType
    types = {"string": StringType(), "int": IntegerType(), "long": LongType(), "double": DoubleType()}
    with tbl.update_schema() as u:
        u.add_column(a.name, types[a.type])
    schema = tbl.refresh().schema()
    return {"schema_id": schema.schema_id, "columns": [f.name for f in schema.fields]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="op", required=True)

    p = sub.add_parser("append", help="append rows like make_table.py")
    pc_.add_catalog_args(p)
    p.add_argument("--rows", type=int, default=1000, help="rows per append (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="default: %(default)s")
    p.add_argument("--appends", type=int, default=1, help="number of appends (default: %(default)s)")
    p.add_argument("--index", type=int, default=0, help="number of the first append (default: %(default)s)")
    p.add_argument("--orgs", type=int, default=5, help="default: %(default)s")
    p.add_argument("--days", type=int, default=4, help="default: %(default)s")
    p.add_argument("--start-date", default="2025-01-01", help="default: %(default)s")
    p.add_argument("--extra-column", metavar="NAME", help="also fill this (added) string column")
    p.set_defaults(fn=do_append)

    p = sub.add_parser("serve-appends", help="appends on request from stdin")
    pc_.add_catalog_args(p)
    p.add_argument("--rows", type=int, default=1000, help="rows per append (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7, help="default: %(default)s")
    p.add_argument("--orgs", type=int, default=5, help="default: %(default)s")
    p.add_argument("--days", type=int, default=4, help="default: %(default)s")
    p.add_argument("--start-date", default="2025-01-01", help="default: %(default)s")
    p.set_defaults(fn=do_serve_appends, extra_column=None, index=0, appends=0)

    p = sub.add_parser("delete", help="tbl.delete(FILTER)")
    pc_.add_catalog_args(p)
    p.add_argument("--where", required=True, metavar="FILTER")
    p.set_defaults(fn=do_delete)

    p = sub.add_parser("set-properties", help="set table properties")
    pc_.add_catalog_args(p)
    p.add_argument("props", nargs="+", metavar="KEY=VALUE")
    p.set_defaults(fn=do_set_properties)

    p = sub.add_parser("remove-properties", help="remove table properties")
    pc_.add_catalog_args(p)
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.set_defaults(fn=do_remove_properties)

    p = sub.add_parser("evolve-spec", help="evolve the partition spec")
    pc_.add_catalog_args(p)
    p.add_argument("--add-identity", action="append", metavar="COL", help="add identity(COL) (repeatable)")
    p.add_argument("--add-bucket", action="append", metavar="COL:N", help="add bucket(N, COL) (repeatable)")
    p.add_argument("--remove-field", action="append", metavar="NAME", help="remove a partition field (repeatable)")
    p.set_defaults(fn=do_evolve_spec)

    p = sub.add_parser("add-column", help="add an optional column")
    pc_.add_catalog_args(p)
    p.add_argument("--name", required=True)
    p.add_argument("--type", choices=["string", "int", "long", "double"], default="string")
    p.set_defaults(fn=do_add_column)

    a = ap.parse_args()

    tbl = pc_.pyiceberg_catalog(a).load_table(a.table)
    out = {"op": a.op, "table": a.table}
    out.update(a.fn(a, tbl))
    tbl = pc_.pyiceberg_catalog(a).load_table(a.table)
    snap = tbl.current_snapshot()
    out.update({"snapshot_id": None if snap is None else snap.snapshot_id,
                "metadata_location": tbl.metadata_location, "properties": tbl.properties,
                "summary": None if snap is None else {"operation": snap.summary.operation.value,
                                                      **snap.summary.additional_properties}})
    pc_.dump(out)


if __name__ == "__main__":
    main()
