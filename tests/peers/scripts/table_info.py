#!/usr/bin/env python3
"""Describe an Iceberg table through PyIceberg as one JSON object (for assertions in tests).

Output keys:
  format_version, properties, metadata_location, location, current_snapshot_id,
  snapshots: [{snapshot_id, parent_id, sequence_number, timestamp_ms, operation, summary}] (oldest first),
  data_files: [{path, size, records, partition, spec_id, sequence_number, snapshot_id}] live data files of the
              current snapshot, sorted by path; partition maps each partition field name to its human string
              ("3", "2025-01-02", "null"); sequence_number is the file's data sequence number, snapshot_id the
              snapshot that added it,
  delete_files: number of live delete files (position + equality) in the current snapshot,
  default_spec_id, specs: {spec_id: [field names]}, refs: {name: snapshot_id}.

Examples (run with $PEERS_PY):
  table_info.py --catalog-uri http://127.0.0.1:8181 --table db.metrics
  table_info.py --catalog-uri w/cat.db --warehouse s3://lake/wh --s3-endpoint http://127.0.0.1:9000
"""
import argparse
import os
import sys

sys.dont_write_bytecode = True  # keep the toolkit folder free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_common as pc_  # noqa: E402


def partition_strings(tbl, spec_id: int, record) -> dict:
    """Partition tuple -> {field name: human string}, as in Iceberg partition paths."""
    spec = tbl.specs()[spec_id]
    schema = tbl.schema()
    out = {}
    for i, field in enumerate(spec.fields):
        value = record[i]
        try:
            source_type = schema.find_type(field.source_id)
            out[field.name] = field.transform.to_human_string(source_type, value)
        except Exception:  # source column dropped or unusual transform: plain text
            out[field.name] = "null" if value is None else str(value)
    return out


def live_files(tbl):
    """(data files, delete file count) of the current snapshot."""
    from pyiceberg.manifest import DataFileContent
    snap = tbl.current_snapshot()
    if snap is None:
        return [], 0
    data, deletes = [], 0
    for manifest in snap.manifests(tbl.io):
        for entry in manifest.fetch_manifest_entry(tbl.io, discard_deleted=True):
            f = entry.data_file
            if f.content != DataFileContent.DATA:
                deletes += 1
                continue
            data.append({"path": f.file_path, "size": f.file_size_in_bytes, "records": f.record_count,
                         "partition": partition_strings(tbl, manifest.partition_spec_id, f.partition),
                         "spec_id": manifest.partition_spec_id, "sequence_number": entry.sequence_number,
                         "snapshot_id": entry.snapshot_id})
    data.sort(key=lambda d: d["path"])
    return data, deletes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pc_.add_catalog_args(ap)
    a = ap.parse_args()

    tbl = pc_.pyiceberg_catalog(a).load_table(a.table)
    md = tbl.metadata
    snap = tbl.current_snapshot()
    data, deletes = live_files(tbl)
    pc_.dump({
        "table": a.table,
        "format_version": md.format_version,
        "properties": tbl.properties,
        "metadata_location": tbl.metadata_location,
        "location": tbl.location(),
        "current_snapshot_id": None if snap is None else snap.snapshot_id,
        "snapshots": [{"snapshot_id": s.snapshot_id, "parent_id": s.parent_snapshot_id,
                       "sequence_number": s.sequence_number, "timestamp_ms": s.timestamp_ms,
                       "operation": s.summary.operation.value if s.summary else None,
                       "summary": s.summary.additional_properties if s.summary else {}}
                      for s in sorted(tbl.snapshots(), key=lambda s: (s.sequence_number or 0, s.timestamp_ms))],
        "data_files": data,
        "delete_files": deletes,
        "default_spec_id": md.default_spec_id,
        "specs": {str(s.spec_id): [f.name for f in s.fields] for s in md.partition_specs},
        "refs": {name: ref.snapshot_id for name, ref in md.refs.items()},
    })


if __name__ == "__main__":
    main()
