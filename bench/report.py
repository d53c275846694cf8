#!/usr/bin/env python3
"""Summarize a bench/run.sh work directory: the comparison table, targets, and the correctness checks.

Reads the JSON files run.sh leaves in --work (input.json, verify-*.json, spark.json, icemaint.time,
icemaint.json, limit.json, plan.json, loadavg.txt; with --s3 also icemaint-s3*.{time,json},
icemaint-s3*-servers.json, proxy.json; with --with-peers also PEER.time, PEER.json and
PEER-diff.json for zamboni and iceberg-compaction; with --rounds N also icemaint-rR.{time,json} and
limit-rR.json for R in 2..N), prints a Markdown table and writes results.json
there (and to --out). Exit status 1 when a check fails: an engine failed, did not rewrite every input
file, or a row count / checksum differs from the input's.
MB are 10^6 bytes; "MB per CPU-s" is compressed input MB divided by user+system CPU seconds.
"""
import argparse
import json
import os
import re
import sys


def load(work, name):
    p = os.path.join(work, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def gnu_time(path):
    """Wall, user, system seconds and max RSS (MiB) from `/usr/bin/time -v` output."""
    if not os.path.exists(path):
        return None
    text = open(path).read()

    def field(label):
        m = re.search(re.escape(label) + r":\s*(\S+)", text)
        return m.group(1) if m else None
    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    secs = 0.0
    for part in (wall or "0").split(":"):
        secs = secs * 60 + float(part)
    return {"wall_s": round(secs, 2), "cpu_user_s": float(field("User time (seconds)") or 0),
            "cpu_sys_s": float(field("System time (seconds)") or 0),
            "peak_rss_mib": round(int(field("Maximum resident set size (kbytes)") or 0) / 1024, 1)}


def readers_result(v):
    """(rows, checksum, agree) of a verify.py report."""
    if not v:
        return None
    r = v["readers"]["pyiceberg"]
    return {"rows": r.get("rows"), "checksum": r.get("checksum"), "agree": v.get("agree", False),
            "data_files": v["files"]["data_files"], "data_bytes": v["files"]["data_bytes"]}


# The compactors of --with-peers: (file stem in the work directory, column title).
PEERS = (("zamboni", "iceberg-zamboni"), ("iceberg-compaction", "iceberg-compaction"))


def peer_result(w, stem):
    """A --with-peers engine measured by /usr/bin/time and judged by the table (PEER-diff.json)."""
    t = gnu_time(os.path.join(w, f"{stem}.time")) or {}
    run = load(w, f"{stem}.json")
    d = load(w, f"{stem}-diff.json") or {}
    rest = load(w, f"{stem}-rest.json") or {}
    return {"version": run and run.get("version"), "succeeded": run is not None, "run": run,
            "wall_s": t.get("wall_s"), "cpu_s": round(t["cpu_user_s"] + t["cpu_sys_s"], 2) if t else None,
            "cpu_user_s": t.get("cpu_user_s"), "cpu_sys_s": t.get("cpu_sys_s"),
            "peak_rss_mib": t.get("peak_rss_mib"), "catalog_server_cpu_s": rest.get("catalog_server_cpu_s"),
            "files_rewritten": d.get("removed_files"), "bytes_rewritten": d.get("removed_bytes"),
            "output_files": d.get("added_files"), "snapshots": d.get("snapshots_since"),
            "output_mb": round(d["added_bytes"] / 1e6, 1) if d.get("added_bytes") else None}


def icemaint_result(w, stem):
    """An icemaint run: /usr/bin/time -v of the process and its --json job."""
    t = gnu_time(os.path.join(w, f"{stem}.time")) or {}
    ij = load(w, f"{stem}.json") or {}
    ir = ij.get("result") or {}
    return {"wall_s": t.get("wall_s"),
            "cpu_s": round(t["cpu_user_s"] + t["cpu_sys_s"], 2) if t else None,
            "cpu_user_s": t.get("cpu_user_s"), "cpu_sys_s": t.get("cpu_sys_s"),
            "peak_rss_mib": t.get("peak_rss_mib"), "status": ij.get("status"), "error": ij.get("error"),
            "files_rewritten": ir.get("files_read"), "bytes_rewritten": ir.get("bytes_read"),
            "output_files": ir.get("files_written"), "engine_seconds": ir.get("seconds"),
            "output_mb": round(ir["bytes_written"] / 1e6, 1) if ir.get("bytes_written") else None}


def s3_section(w, ice, in_files, in_bytes, v_in, failures):
    """--s3-latency-ms: icemaint on local disk, on S3 directly and on S3 behind the latency proxy."""
    latency = (load(w, "s3-latency.json") or {}).get("latency_ms")
    runs = {"local disk": ice, "S3 (s3s-fs)": icemaint_result(w, "icemaint-s3"),
            f"S3 + {latency} ms": icemaint_result(w, "icemaint-s3-latency")}
    v_s3in = readers_result(load(w, "verify-s3-input.json"))
    if not v_s3in or not v_in or (v_s3in["rows"], v_s3in["checksum"]) != (v_in["rows"], v_in["checksum"]):
        failures.append("S3 input: rows/checksum differ from the local input's or not verified")
    for (label, r), stem in zip(list(runs.items())[1:], ("icemaint-s3", "icemaint-s3-latency")):
        if r["status"] != "succeeded":
            failures.append(f"icemaint on {label}: status {r['status']} {r.get('error') or ''}".strip())
        if r["files_rewritten"] != in_files or r["bytes_rewritten"] != in_bytes:
            failures.append(f"icemaint on {label}: rewrote {r['files_rewritten']} files / {r['bytes_rewritten']} "
                            f"bytes, input is {in_files} / {in_bytes}")
        v = readers_result(load(w, f"verify-{stem}.json"))
        if not v or not v["agree"] or not v_in or (v["rows"], v["checksum"]) != (v_in["rows"], v_in["checksum"]):
            failures.append(f"icemaint on {label}: output not verified or rows/checksum differ from the input's")
        r["checksum"] = v and v["checksum"]
        r.update(load(w, f"{stem}-servers.json") or {})
    in_mb = in_bytes / 1e6
    for r in runs.values():
        r["mb_per_cpu_s"] = round(in_mb / r["cpu_s"], 2) if r.get("cpu_s") else None
        r["mb_per_s"] = round(in_mb / r["wall_s"], 2) if r.get("wall_s") else None
    local = runs["local disk"]
    print()
    print(f"icemaint with the warehouse on S3 (s3s-fs on 127.0.0.1; + {latency} ms per round trip "
          "through `icemaint bench latency-proxy`):")
    print()
    print("| | " + " | ".join(runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for label, key, d in (("wall s", "wall_s", 1), ("CPU s (user+sys)", "cpu_s", 1),
                          ("peak RSS MiB", "peak_rss_mib", 0), ("input MB/s (wall)", "mb_per_s", 1),
                          ("input MB per CPU-s", "mb_per_cpu_s", 1)):
        print(f"| {label} | " + " | ".join(fmt(r.get(key), d) for r in runs.values()) + " |")
    print("| CPU s of the S3 server / the proxy | - | " + " | ".join(
        f"{fmt(r.get('s3_server_cpu_s'), 1)} / {fmt(r.get('proxy_cpu_s'), 1)}" for r in list(runs.values())[1:]) + " |")
    print("| MB/s (wall) / local disk's | " + " | ".join(
        fmt(ratio(r.get("mb_per_s"), local.get("mb_per_s")), 2) for r in runs.values()) + " |")
    proxy = load(w, "proxy.json")
    if proxy:
        print()
        print(f"The proxy forwarded {proxy['requests']} requests over {proxy['connections']} connections "
              f"({proxy['bytes_up'] / 1e6:.0f} MB up, {proxy['bytes_down'] / 1e6:.0f} MB down).")
    slow = runs[f"S3 + {latency} ms"]
    return {"latency_ms": latency, "runs": runs, "proxy": proxy,
            "fraction_of_local_mb_per_s": ratio(slow.get("mb_per_s"), local.get("mb_per_s"))}


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else round((xs[mid - 1] + xs[mid]) / 2, 3)


def rounds_section(w, n, ice, limit, in_files, in_bytes, failures):
    """--rounds N: icemaint's and the loop's CPU seconds over N alternating rounds (round 1 is the
    table's run) and the ratio of their medians, which is what the 0.90 target judges."""
    ices = [ice] + [icemaint_result(w, f"icemaint-r{r}") for r in range(2, n + 1)]
    for r, run in enumerate(ices[1:], start=2):
        if run["status"] != "succeeded":
            failures.append(f"icemaint round {r}: status {run['status']} {run.get('error') or ''}".strip())
        elif run["files_rewritten"] != in_files or run["bytes_rewritten"] != in_bytes:
            failures.append(f"icemaint round {r}: rewrote {run['files_rewritten']} files / "
                            f"{run['bytes_rewritten']} bytes, input is {in_files} / {in_bytes}")
    loops = [limit] + [load(w, f"limit-r{r}.json") for r in range(2, n + 1)] if limit else []
    ice_cpu = [r.get("cpu_s") for r in ices]
    loop_cpu = [l and l.get("cpu_s") for l in loops]
    out = {"rounds": n, "icemaint_cpu_s": ice_cpu, "loop_cpu_s": loop_cpu,
           "icemaint_peak_rss_mib": [r.get("peak_rss_mib") for r in ices],
           "icemaint_median_cpu_s": median(ice_cpu), "loop_median_cpu_s": median(loop_cpu)}
    # MB per CPU-s of the same input: the loop's CPU over icemaint's.
    out["fraction_of_loop"] = ratio(out["loop_median_cpu_s"], out["icemaint_median_cpu_s"])
    return out


def print_rounds(out):
    print()
    print(f"{out['rounds']} rounds, alternating (CPU s, user+sys): icemaint "
          f"{', '.join(fmt(x, 2) for x in out['icemaint_cpu_s'])} (median {fmt(out['icemaint_median_cpu_s'], 2)}); "
          f"loop {', '.join(fmt(x, 2) for x in out['loop_cpu_s'])} (median {fmt(out['loop_median_cpu_s'], 2)}); "
          f"icemaint / loop MB per CPU-s from the medians: {fmt(out['fraction_of_loop'], 3)}")


def ratio(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


def fmt(x, digits=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def print_table(rows, spark, ice, limit, peers, v_spark, v_ice, failures, w):
    """The Markdown table: engines, then ratios; the peers' columns only when they ran."""
    titles = {"zamboni": "iceberg-zamboni", "iceberg-compaction": "iceberg-compaction"}
    cols = [spark, ice] + list(peers.values()) + [limit or {}]
    heads = ["Spark 3.5 + Iceberg 1.10", "icemaint"] + [
        f"{titles[k]} {p.get('version') or '?'}" for k, p in peers.items()] + ["bare arrow-rs loop"]
    ratios = [("icemaint / Spark", ice, spark), ("icemaint / loop", ice, limit or {})] + [
        (f"{titles[k]} / icemaint", p, ice) for k, p in peers.items()]
    print("| | " + " | ".join(heads + [r[0] for r in ratios]) + " |")
    print("|---|" + "---:|" * (len(heads) + len(ratios)))
    for label, key, d in rows:
        vals = [fmt(c.get(key), d) for c in cols] + [fmt(ratio(n.get(key), m.get(key)), 2) for _, n, m in ratios]
        print(f"| {label} | " + " | ".join(vals) + " |")
    ok = "yes" if not failures else "NO"
    sums = [fmt(v_spark and v_spark["checksum"]), fmt(v_ice and v_ice["checksum"])]
    for stem in peers:
        v = readers_result(load(w, f"verify-{stem}.json"))
        sums.append(fmt(v and v["checksum"]))
    sums.append(f"{fmt(limit and limit['rows'])} rows")
    line = "| rows / checksum match input | " + " | ".join(sums + [ok] + [""] * (len(ratios) - 1)) + " |"
    while "|  |" in line:  # empty cells as "| |", as the table always had
        line = line.replace("|  |", "| |")
    print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out")
    ap.add_argument("--smoke", action="store_true", help="tiny input: check correctness, do not judge targets")
    ap.add_argument("--with-peers", action="store_true", help="also judge and show zamboni and iceberg-compaction")
    ap.add_argument("--s3", action="store_true", help="also judge and show the S3 runs (--s3-latency-ms)")
    ap.add_argument("--rounds", type=int, default=1, help="icemaint and loop rounds run.sh made (--rounds)")
    a = ap.parse_args()
    w = a.work
    failures = []

    inp = load(w, "input.json")
    in_bytes, in_files = inp["data_bytes"], inp["data_files"]
    in_mb = in_bytes / 1e6
    v_in, v_spark, v_ice = (readers_result(load(w, f)) for f in
                            ("verify-input.json", "verify-spark.json", "verify-icemaint.json"))
    if not v_in or not v_in["agree"]:
        failures.append("input: readers disagree or verification missing")

    # Spark
    sp = load(w, "spark.json") or {}
    rw = sp.get("rewrite_data_files") or {}
    res = rw.get("result") or {}
    spark = {"wall_s": rw.get("wall_s"), "cpu_s": rw.get("jvm_cpu_s"), "peak_rss_mib": rw.get("jvm_peak_rss_mb"),
             "files_rewritten": res.get("rewritten_data_files_count"),
             "bytes_rewritten": res.get("rewritten_bytes_count"),
             "output_files": res.get("added_data_files_count"),
             "output_mb": round((sp.get("after_rewrite") or {}).get("data_bytes", 0) / 1e6, 1) or None}
    if not res:
        failures.append("Spark: no rewrite_data_files result")

    # icemaint
    ice = icemaint_result(w, "icemaint")
    if ice["status"] != "succeeded":
        failures.append(f"icemaint: status {ice['status']} {ice['error'] or ''}".strip())

    # bare loop
    lim = load(w, "limit.json")
    limit = None
    if lim:
        limit = {"wall_s": lim["wall_s"], "cpu_s": lim["cpu_s"], "peak_rss_mib": lim["peak_rss_mib"],
                 "files_rewritten": lim["files_in"], "bytes_rewritten": lim["bytes_in"],
                 "output_files": lim["files_out"], "output_mb": round(lim["bytes_out"] / 1e6, 1),
                 "rows": lim["rows"], "compression": lim["compression"], "dictionary": lim.get("dictionary"),
                 "threads": lim["threads"], "batch_size": lim["batch_size"]}
        if lim["bytes_in"] != in_bytes or lim["files_in"] != in_files:
            failures.append(f"limit: read {lim['files_in']} files / {lim['bytes_in']} bytes, "
                            f"input is {in_files} / {in_bytes}")
        if v_in and lim["rows"] != v_in["rows"]:
            failures.append(f"limit: {lim['rows']} rows, input {v_in['rows']}")

    peers = {}
    if a.with_peers:
        for stem, title in PEERS:
            peers[stem] = p = peer_result(w, stem)
            if not p["succeeded"]:
                failures.append(f"{title}: failed (see logs/{stem}.log)")
    named = [("Spark", spark, v_spark), ("icemaint", ice, v_ice)] + [
        (title, peers[stem], readers_result(load(w, f"verify-{stem}.json"))) for stem, title in PEERS if stem in peers]
    for name, e, _ in named:
        if e.get("files_rewritten") != in_files or e.get("bytes_rewritten") != in_bytes:
            failures.append(f"{name}: rewrote {e.get('files_rewritten')} files / {e.get('bytes_rewritten')} bytes, "
                            f"input is {in_files} / {in_bytes}")
    for name, _, v in named:
        if not v:
            failures.append(f"{name}: output not verified")
            continue
        if not v["agree"]:
            failures.append(f"{name}: readers disagree on the output")
        if v_in and (v["rows"], v["checksum"]) != (v_in["rows"], v_in["checksum"]):
            failures.append(f"{name}: output rows/checksum {v['rows']}/{v['checksum']} != input "
                            f"{v_in['rows']}/{v_in['checksum']}")

    engines = {"spark": spark, "icemaint": ice, **peers}
    if limit:
        engines["limit"] = limit
    for e in engines.values():
        e["mb_per_cpu_s"] = round(in_mb / e["cpu_s"], 2) if e.get("cpu_s") else None
        e["mb_per_s"] = round(in_mb / e["wall_s"], 2) if e.get("wall_s") else None

    plan = load(w, "plan.json")
    loads = [l.split() for l in open(os.path.join(w, "loadavg.txt"))] if os.path.exists(
        os.path.join(w, "loadavg.txt")) else []
    load1 = [float(l[-3]) for l in loads if len(l) >= 3]
    machine = open(os.path.join(w, "machine.txt")).read().split("\n") if os.path.exists(
        os.path.join(w, "machine.txt")) else []

    rounds = rounds_section(w, a.rounds, ice, limit, in_files, in_bytes, failures) if a.rounds > 1 else None
    # Issue 14's targets. The loop ratio is the medians' over the rounds when there are several.
    fraction = (rounds or {}).get("fraction_of_loop") or (
        ratio(ice["mb_per_cpu_s"], limit["mb_per_cpu_s"]) if limit else None)
    targets = {
        "cpu_vs_spark<=0.20": ratio(ice["cpu_s"], spark["cpu_s"]),
        "wall_vs_spark<1": ratio(ice["wall_s"], spark["wall_s"]),
        "fraction_of_limit>=0.90": fraction,
        "peak_rss_mib<256": max((rounds or {}).get("icemaint_peak_rss_mib") or [ice["peak_rss_mib"]],
                                key=lambda x: x or 0),
    }
    if plan:
        targets["plan_s<2"] = plan["prepare_s"]
        targets["plan_peak_rss_mib<256"] = plan["peak_rss_mib"]
    met = {
        "cpu_vs_spark<=0.20": lambda x: x <= 0.20,
        "wall_vs_spark<1": lambda x: x < 1,
        "fraction_of_limit>=0.90": lambda x: x >= 0.90,
        "peak_rss_mib<256": lambda x: x < 256,
        "plan_s<2": lambda x: x < 2,
        "plan_peak_rss_mib<256": lambda x: x < 256,
    }

    results = {"machine": machine, "load_average_1min": {"min": min(load1, default=None),
                                                         "max": max(load1, default=None)},
               "loadavg_by_step": [" ".join(l) for l in loads],
               "input": {"files": in_files, "bytes": in_bytes, "snapshot_id": inp["snapshot_id"],
                         "rows": v_in and v_in["rows"], "checksum": v_in and v_in["checksum"],
                         "partitions": (load(w, "make.json") or {}).get("partitions")},
               "spark": spark, "icemaint": ice, "limit": limit, "plan": plan, "rounds": rounds,
               "ratios": {"icemaint/spark wall": ratio(ice["wall_s"], spark["wall_s"]),
                          "icemaint/spark cpu": ratio(ice["cpu_s"], spark["cpu_s"]),
                          "icemaint/spark peak rss": ratio(ice["peak_rss_mib"], spark["peak_rss_mib"]),
                          "icemaint/limit MB per cpu-s": fraction},
               "targets": {k: {"value": v, "met": (met[k](v) if v is not None else None)} for k, v in targets.items()},
               "mode": "smoke" if a.smoke else "full",
               "checks_failed": failures,
               "outputs": {"spark": v_spark, "icemaint": v_ice}}
    for stem, p in peers.items():
        results[stem] = p
        results["ratios"][f"{stem}/icemaint cpu"] = ratio(p["cpu_s"], ice["cpu_s"])
        results["ratios"][f"{stem}/icemaint wall"] = ratio(p["wall_s"], ice["wall_s"])
        results["ratios"][f"{stem}/icemaint peak rss"] = ratio(p["peak_rss_mib"], ice["peak_rss_mib"])
        results["outputs"][stem] = readers_result(load(w, f"verify-{stem}.json"))

    rows = [("wall s", "wall_s", 1), ("CPU s (user+sys)", "cpu_s", 1), ("peak RSS MiB", "peak_rss_mib", 0),
            ("input MB per CPU-s", "mb_per_cpu_s", 1), ("input MB/s (wall)", "mb_per_s", 1),
            ("output files", "output_files", 0), ("output MB", "output_mb", 1)]
    print()
    print(f"Input: {in_files} files, {in_mb:.1f} MB, {v_in and v_in['rows']} rows "
          f"(snapshot {inp['snapshot_id']}); load average (1 min) during the run "
          f"{fmt(min(load1, default=None))}-{fmt(max(load1, default=None))} on {machine[1] if len(machine) > 1 else '?'} CPUs")
    print()
    print_table(rows, spark, ice, limit, peers, v_spark, v_ice, failures, w)
    if rounds:
        print_rounds(rounds)
    if plan:
        print()
        print(f"Planning alone: {plan['files']} files in {plan['partitions']} partitions "
              f"({plan['commits']} commits): prepare {plan['prepare_s']} s, {plan['cpu_s']} CPU-s, "
              f"peak RSS {plan['peak_rss_mib']} MiB (process), {plan['groups']} groups")
    if a.s3:
        results["s3"] = s3_section(w, ice, in_files, in_bytes, v_in, failures)
        results["checks_failed"] = failures
        results["targets"]["s3_latency_mb_per_s_vs_local>=0.8"] = {
            "value": results["s3"]["fraction_of_local_mb_per_s"],
            "met": (results["s3"]["fraction_of_local_mb_per_s"] or 0) >= 0.8}
    print()
    if a.smoke:
        print("smoke input: too small for the performance targets, only the checks count")
        results["targets"] = {}
    for k, v in results["targets"].items():
        print(f"target {k}: {fmt(v['value'], 3)} -> {'met' if v['met'] else 'MISSED' if v['met'] is False else '-'}")
    for f in failures:
        print(f"CHECK FAILED: {f}")

    for path in [os.path.join(w, "results.json")] + ([a.out] if a.out else []):
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
