#!/usr/bin/env python3
"""Hold a SQLite database's write lock as a concurrent catalog writer would (Spark's JdbcCatalog and
PyIceberg's SqlCatalog commit in transactions on the catalog file), until another writer is seen
waiting for it.

Takes the lock with BEGIN IMMEDIATE (readers may still read, writers get SQLITE_BUSY), then waits for
a new *.metadata.json in --watch (a committer writes the next metadata file just before its
compare-and-swap UPDATE, which then waits for this lock), holds the lock --hold more seconds, and
rolls back (the catalog is left unchanged). Synchronising on the file, not on a sleep, keeps the
overlap certain on a slow machine.

Prints one JSON object per line on stdout, flushed at once:
  {"event": "locked"}                                    the lock is held; start the writer now
  {"event": "released", "seen": "<file name>" | null,    the new metadata file (null: none came
   "held_after_seen_s": <float>, "held_s": <float>}      within --timeout), and how long the lock
                                                         was held after seeing it and in all

Example (run with $PEERS_PY):
  hold_sqlite_lock.py --db w/catalog.db --watch w/warehouse/db/t/metadata --hold 3
"""
import argparse
import json
import os
import sqlite3
import sys
import time

sys.dont_write_bytecode = True  # keep the toolkit folder free of __pycache__


def metadata_files(d: str) -> set:
    try:
        return {n for n in os.listdir(d) if n.endswith(".metadata.json")}
    except FileNotFoundError:
        return set()


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="SQLite database file")
    ap.add_argument("--watch", required=True, help="metadata directory of the table being committed to")
    ap.add_argument("--hold", type=float, required=True, help="seconds to keep the lock after the new file")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up waiting for a new file (default: %(default)s)")
    args = ap.parse_args()

    # isolation_level=None: the module must not open transactions of its own; timeout: wait for a
    # lock another connection holds while taking ours.
    conn = sqlite3.connect(args.db, isolation_level=None, timeout=60)
    conn.execute("BEGIN IMMEDIATE")
    locked_at = time.monotonic()
    before = metadata_files(args.watch)
    emit({"event": "locked"})

    seen = None
    deadline = locked_at + args.timeout
    while seen is None and time.monotonic() < deadline:
        new = sorted(metadata_files(args.watch) - before)
        if new:
            seen = new[0]
            break
        time.sleep(0.05)
    seen_at = time.monotonic()
    if seen is not None:
        time.sleep(args.hold)
    conn.execute("ROLLBACK")
    released_at = time.monotonic()
    conn.close()
    emit({
        "event": "released",
        "seen": seen,
        "held_after_seen_s": round(released_at - seen_at, 3),
        "held_s": round(released_at - locked_at, 3),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
