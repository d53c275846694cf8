#!/usr/bin/env python3
"""Read an Iceberg table as of each of its snapshots through PyIceberg (time travel). Prints one JSON object.

For every snapshot in the table's metadata (or only --snapshot-id ones): rows and the order-independent
checksum of verify.py (peers_common.RowChecksum) of tbl.scan(snapshot_id=...), or the error the read raised
(e.g. a data or manifest file that no longer exists).
Output: table, metadata_location, snapshots: [{snapshot_id, rows, checksum} | {snapshot_id, error}]
(oldest first), ok (every read succeeded).

Example (run with $PEERS_PY):
  time_travel.py --catalog-uri w/cat.db --warehouse w/wh --table db.metrics
"""
import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep the toolkit folder free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_common as pc_  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pc_.add_catalog_args(ap)
    ap.add_argument("--snapshot-id", type=int, action="append", help="only these snapshots (repeatable)")
    a = ap.parse_args()
    tbl = pc_.pyiceberg_catalog(a).load_table(a.table)
    snaps = sorted(tbl.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0))
    ids = a.snapshot_id or [s.snapshot_id for s in snaps]
    out = []
    for sid in ids:
        try:
            r = pc_.RowChecksum().add_all(tbl.scan(snapshot_id=sid).to_arrow_batch_reader()).result()
            out.append({"snapshot_id": sid, **r})
        except Exception as e:  # report, do not stop: the test wants every snapshot's verdict
            out.append({"snapshot_id": sid, "error": f"{type(e).__name__}: {e}"})
    pc_.dump({"table": a.table, "metadata_location": tbl.metadata_location, "snapshots": out,
              "ok": all("error" not in s for s in out)})


if __name__ == "__main__":
    main()
