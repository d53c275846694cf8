#!/usr/bin/env python3
"""The soak test's writer: appends and deletes rows on a table through PyIceberg, round after round,
and keeps a ledger of the rows that must exist.

Subcommands (usage: soak_writer.py SUBCOMMAND [catalog flags as in every tool] [options]):
  create
        creates the (unpartitioned) table: id long, round int, m int (= id % K), payload string.
  run --ledger FILE [--rounds R] [--minutes M] [--rows N] [--k K] [--pause S]
        round r appends ids [r*N, (r+1)*N) in two commits (N/2 rows each) and then deletes the rows
        of earlier rounds whose id % K == r % K (one commit, copy-on-write). Runs R rounds, or with
        --minutes until M minutes have passed (and at least R rounds).
        A commit that fails (a conflict with a concurrent compaction, a locked catalog, ...) is
        retried from a fresh load of the table; before an append is retried, the writer checks
        whether its rows are in the table already (the commit landed and only its answer was
        lost), so each append applies exactly once; a delete is idempotent.
        After each commit that succeeded, FILE is replaced (atomically) with the ledger:
          {"round", "rounds_done", "commits", "retries", "appends", "rows", "checksum", "id_sum", "ids"}
        rows/checksum are those of the rows that must exist, as verify.py computes them
        (peers_common.RowChecksum), so they compare directly with every reader's.
Prints one JSON object at the end (the final ledger without ids).

Example (run with $PEERS_PY):
  soak_writer.py create --catalog-uri w/cat.db --warehouse w/wh --table db.soak
  soak_writer.py run --catalog-uri w/cat.db --warehouse w/wh --table db.soak --ledger w/ledger.json --rounds 20
"""
import argparse
import json
import os
import sys
import time

sys.dont_write_bytecode = True  # keep the toolkit folder free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_common as pc_  # noqa: E402

ATTEMPTS = 120  # per commit; with the pause below, minutes of failures before giving up


def arrow_schema():
    import pyarrow as pa
    return pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("round", pa.int32(), nullable=False),
                      pa.field("m", pa.int32(), nullable=False), pa.field("payload", pa.string())])


def rows_for(ids, rounds, k):
    """The rows with these ids (each row is a function of its id and round)."""
    import pyarrow as pa
    return pa.Table.from_pydict({
        "id": pa.array(ids, pa.int64()),
        "round": pa.array(rounds, pa.int32()),
        "m": pa.array([i % k for i in ids], pa.int32()),
        "payload": pa.array([f"soak-{i}-" + "x" * (i % 17) for i in ids], pa.string()),
    }, schema=arrow_schema())


def do_create(a) -> dict:
    from pyiceberg.schema import Schema
    from pyiceberg.types import IntegerType, LongType, NestedField, StringType
    cat = pc_.pyiceberg_catalog(a)
    ns = a.table.rpartition(".")[0]
    try:
        cat.create_namespace(ns)
    except Exception:  # exists
        pass
    schema = Schema(NestedField(1, "id", LongType(), required=True),
                    NestedField(2, "round", IntegerType(), required=True),
                    NestedField(3, "m", IntegerType(), required=True),
                    NestedField(4, "payload", StringType(), required=False))
    tbl = cat.create_table(a.table, schema=schema, properties={"format-version": "2"})
    return {"created": a.table, "metadata_location": tbl.metadata_location}


def log(msg: str) -> None:
    print(f"[soak_writer {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load(a):
    return pc_.pyiceberg_catalog(a).load_table(a.table)


def count_where(tbl, expr) -> int:
    return tbl.scan(row_filter=expr, selected_fields=("id",)).to_arrow().num_rows


def commit(what: str, fn, applied, stats: dict) -> None:
    """Runs fn(tbl) on a fresh table until it succeeds; applied(tbl) says whether an earlier try
    landed after all."""
    last = None
    for attempt in range(ATTEMPTS):
        try:
            tbl = load(a_global)
            if attempt > 0 and applied(tbl):
                log(f"{what}: landed on an earlier try ({last})")
                return
            fn(tbl)
            return
        except Exception as e:  # conflict, locked catalog, ...: retry from a fresh load
            last = f"{type(e).__name__}: {e}"
            stats["retries"] += 1
            log(f"{what}: try {attempt + 1} failed: {last}")
            time.sleep(0.5)
    raise SystemExit(f"{what}: gave up after {ATTEMPTS} tries; last error: {last}")


def write_ledger(path: str, ledger: dict, live: dict, k: int) -> None:
    ids = sorted(live)
    r = pc_.RowChecksum().add_all(rows_for(ids, [live[i] for i in ids], k).to_batches()).result()
    ledger.update({"rows": r["rows"], "checksum": r["checksum"], "id_sum": sum(ids), "ids": ids})
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(ledger, f)
    os.replace(tmp, path)


def do_run(a) -> dict:
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan
    n, k = a.rows, a.k
    half = n // 2
    live = {}  # id -> round
    ledger = {"round": -1, "rounds_done": 0, "commits": 0, "retries": 0, "appends": 0}
    write_ledger(a.ledger, ledger, live, k)
    started = time.monotonic()
    r = 0
    while r < a.rounds or (a.minutes and time.monotonic() - started < a.minutes * 60):
        ledger["round"] = r
        for part in range(2):
            lo = r * n + part * half
            hi = lo + half if part == 0 else (r + 1) * n
            ids = list(range(lo, hi))
            data = rows_for(ids, [r] * len(ids), k)
            in_range = And(GreaterThanOrEqual("id", lo), LessThan("id", hi))
            commit(f"round {r} append {part}", lambda tbl: tbl.append(data),
                   lambda tbl: count_where(tbl, in_range) == len(ids), ledger)
            for i in ids:
                live[i] = r
            ledger["commits"] += 1
            ledger["appends"] += 1
            write_ledger(a.ledger, ledger, live, k)
        if r > 0:
            gone = And(EqualTo("m", r % k), LessThan("round", r))
            commit(f"round {r} delete", lambda tbl: tbl.delete(delete_filter=gone),
                   lambda tbl: count_where(tbl, gone) == 0, ledger)
            for i in [i for i, q in live.items() if i % k == r % k and q < r]:
                del live[i]
            ledger["commits"] += 1
            write_ledger(a.ledger, ledger, live, k)
        r += 1
        ledger["rounds_done"] = r
        write_ledger(a.ledger, ledger, live, k)
        time.sleep(a.pause)
    out = dict(ledger)
    out.pop("ids", None)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


a_global = None


def main():
    global a_global
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="op", required=True)
    p = sub.add_parser("create", help="create the soak table")
    pc_.add_catalog_args(p)
    p.set_defaults(fn=do_create)
    p = sub.add_parser("run", help="append and delete rounds, keeping the ledger")
    pc_.add_catalog_args(p)
    p.add_argument("--ledger", required=True, help="ledger file (JSON), replaced after each commit")
    p.add_argument("--rounds", type=int, default=20, help="default: %(default)s")
    p.add_argument("--minutes", type=float, default=0.0, help="run at least this long (default: rounds only)")
    p.add_argument("--rows", type=int, default=100, help="rows appended per round (default: %(default)s)")
    p.add_argument("--k", type=int, default=5, help="delete modulus (default: %(default)s)")
    p.add_argument("--pause", type=float, default=0.2, help="seconds between rounds (default: %(default)s)")
    p.set_defaults(fn=do_run)
    a = ap.parse_args()
    a_global = a
    pc_.dump(a.fn(a))


if __name__ == "__main__":
    main()
