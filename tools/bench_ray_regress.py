"""A regression suite locally vs on a Ray cluster, same job count, side by side in one run.

    python tools/bench_ray_regress.py CASES.toml --ray ADDRESS [--jobs 2] [--repeat 3] [--json OUT]
        [--cases 1000 --nodes 50 --cpus-per-node 8]

Runs ``python -m mnnlite regress CASES --jobs N`` and the same with ``--ray ADDRESS``, alternating,
``--repeat`` times; reports the median wall time of each (Python start-up included on both sides), the
per-case times the reports give, and a paper estimate of the wall time of ``--cases`` cases of the
measured mix on ``--nodes`` nodes: waves of one case per CPU, each as long as the slowest measured case
plus the measured per-case Ray overhead, plus the measured fixed cost (connection, first workers).
``ADDRESS`` ``local`` includes starting a private Ray in every run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run(cases: str, jobs: int, ray: str | None, report: str) -> tuple[float, dict]:
    args = [sys.executable, "-m", "mnnlite", "regress", cases, "--jobs", str(jobs), "--json", report]
    if ray:
        args += ["--ray", ray]
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        sys.exit(f"regress failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    with open(report, encoding="utf-8") as f:
        return wall, {c["name"]: (c["verdict"], c["seconds"]) for c in json.load(f)["cases"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cases")
    p.add_argument("--ray", required=True, metavar="ADDRESS")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--cases-total", "--cases", dest="total", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=50)
    p.add_argument("--cpus-per-node", type=int, default=8)
    args = p.parse_args(argv)
    walls = {"local": [], "ray": []}
    per_case = {"local": {}, "ray": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for side in ("local", "ray"):
                wall, cases = run(args.cases, args.jobs, args.ray if side == "ray" else None,
                                  os.path.join(tmp, f"{side}{r}.json"))
                walls[side].append(wall)
                for name, (verdict, seconds) in cases.items():
                    per_case[side].setdefault(name, []).append(seconds)
                print(f"run {r + 1} {side:5s}: {wall:6.1f} s  " +
                      " ".join(f"{n}={v}/{s:.1f}s" for n, (v, s) in cases.items()), flush=True)
    med = {side: statistics.median(w) for side, w in walls.items()}
    case_med = {side: {n: statistics.median(v) for n, v in per.items()} for side, per in per_case.items()}
    n = len(case_med["local"])
    # per case, what Ray adds to the local child's time (task dispatch, result transfer), and the fixed
    # cost of a run that no number of cases amortises away (connect, first worker processes)
    case_overhead = statistics.median(case_med["ray"][c] - case_med["local"][c] for c in case_med["local"])
    fixed = med["ray"] - med["local"]
    slowest = max(case_med["ray"].values())
    mean = statistics.mean(case_med["ray"].values())
    slots = args.nodes * args.cpus_per_node
    waves = math.ceil(args.total / slots)
    estimate = {
        "slots": slots,
        "waves": waves,
        "mean_case_seconds": mean,
        "slowest_case_seconds": slowest,
        "estimate_mean_mix_seconds": fixed + waves * mean,
        "estimate_worst_mix_seconds": fixed + waves * slowest,
        "one_slot_per_node_seconds": fixed + math.ceil(args.total / args.nodes) * mean,
    }
    summary = {"jobs": args.jobs, "repeat": args.repeat, "cases": n, "median_wall": med,
               "ratio_ray_over_local": med["ray"] / med["local"], "per_case_median": case_med,
               "ray_case_overhead_seconds": case_overhead, "ray_fixed_overhead_seconds": fixed,
               "paper_estimate": {"cases": args.total, "nodes": args.nodes,
                                  "cpus_per_node": args.cpus_per_node, **estimate}}
    print(f"median wall: local {med['local']:.1f} s, ray {med['ray']:.1f} s (ratio {summary['ratio_ray_over_local']:.2f}); "
          f"per-case Ray overhead {case_overhead:+.2f} s, fixed {fixed:+.1f} s")
    print(f"paper estimate, {args.total} cases on {args.nodes} nodes x {args.cpus_per_node} CPUs ({waves} waves): "
          f"{estimate['estimate_mean_mix_seconds']:.0f} s with this mix's mean case ({mean:.1f} s), "
          f"{estimate['estimate_worst_mix_seconds']:.0f} s if every case were the slowest ({slowest:.1f} s); "
          f"one case per node at a time: {estimate['one_slot_per_node_seconds']:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
