#!/usr/bin/env python3
"""Read or move the current snapshot of an Iceberg table through PyIceberg (for bench/run.sh).

  table_snapshot.py current  CATALOG FLAGS   -> {"snapshot_id", "data_files", "data_bytes", "records",
                                                "data_dir" (local path of the table's data directory)}
  table_snapshot.py rollback CATALOG FLAGS --to SNAPSHOT_ID
                                             -> sets main back to an ancestor snapshot (PyIceberg
                                                manage_snapshots().rollback_to_snapshot), so a second
                                                engine compacts exactly the bytes the first one did.
Catalog flags are the peers tools' (tests/peers/scripts/peers_common.py): --catalog-uri, --warehouse,
--table. Run with $PEERS_PY after `. tests/peers/env.sh`.
"""
import argparse
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "peers", "scripts"))
import peers_common as pc_  # noqa: E402


def describe(tbl) -> dict:
    snap = tbl.current_snapshot()
    out = {"snapshot_id": None if snap is None else snap.snapshot_id, "data_files": 0, "data_bytes": 0,
           "records": 0, "data_dir": pc_.local_path(tbl.location()).rstrip("/") + "/data"}
    if snap is not None:
        s = snap.summary.additional_properties
        out.update(data_files=int(s.get("total-data-files", 0)), data_bytes=int(s.get("total-files-size", 0)),
                   records=int(s.get("total-records", 0)), operation=snap.summary.operation.value)
    return out


def live_files(tbl, snapshot_id) -> dict:
    """Path -> size in bytes of every live data file of a snapshot."""
    return {t.file.file_path: t.file.file_size_in_bytes for t in tbl.scan(snapshot_id=snapshot_id).plan_files()}


def diff(tbl, from_id) -> dict:
    before = live_files(tbl, from_id)
    snap = tbl.current_snapshot()
    after = live_files(tbl, snap.snapshot_id) if snap else {}
    removed = [p for p in before if p not in after]
    added = [p for p in after if p not in before]
    since, cur = 0, snap
    while cur is not None and cur.snapshot_id != from_id:
        since += 1
        cur = tbl.snapshot_by_id(cur.parent_snapshot_id) if cur.parent_snapshot_id is not None else None
    return {"from_snapshot_id": from_id, "snapshot_id": snap and snap.snapshot_id,
            "removed_files": len(removed), "removed_bytes": sum(before[p] for p in removed),
            "added_files": len(added), "added_bytes": sum(after[p] for p in added),
            "snapshots_since": since if cur is not None else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["current", "rollback", "diff"])
    pc_.add_catalog_args(ap)
    ap.add_argument("--to", type=int, help="rollback: the snapshot id main goes back to")
    ap.add_argument("--from", dest="from_id", type=int, help="diff: the snapshot to compare the current one with")
    a = ap.parse_args()
    tbl = pc_.pyiceberg_catalog(a).load_table(a.table)
    if a.action == "diff":
        if a.from_id is None:
            sys.exit("diff needs --from SNAPSHOT_ID")
        print(json.dumps(diff(tbl, a.from_id)))
        return
    if a.action == "rollback":
        if a.to is None:
            sys.exit("rollback needs --to SNAPSHOT_ID")
        if tbl.current_snapshot() is None or tbl.current_snapshot().snapshot_id != a.to:
            tbl.manage_snapshots().rollback_to_snapshot(a.to).commit()
            tbl = pc_.pyiceberg_catalog(a).load_table(a.table)
        cur = describe(tbl)
        if cur["snapshot_id"] != a.to:
            sys.exit(f"rollback failed: current snapshot is {cur['snapshot_id']}, not {a.to}")
    print(json.dumps(describe(tbl)))


if __name__ == "__main__":
    main()
