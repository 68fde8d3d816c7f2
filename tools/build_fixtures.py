#!/usr/bin/env python3
"""Build the test fixture zoo (tests/model_zoo.py) with the official MNN tools.

    python tools/build_fixtures.py                     # every model and applicable variant
    python tools/build_fixtures.py --only cnn misc     # a subset of models
    python tools/build_fixtures.py --variants float wq8
    python tools/build_fixtures.py --list              # what would be built, and what is excluded
    python tools/build_fixtures.py --big               # also the ~90 MB load-benchmark model
    python tools/build_fixtures.py --ops               # MNN op types of each float model

Files go to .fixtures/ at the repo root (env MNNLITE_FIXTURES overrides).  Builds are cached:
re-running only builds what is missing.  Exit status 1 if anything failed.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import model_zoo as zoo  # noqa: E402
from oracle import mnn_op_types  # noqa: E402


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=zoo.model_names(), help="models to build")
    ap.add_argument("--variants", nargs="+", metavar="V", choices=zoo.VARIANTS, help="variants to build")
    ap.add_argument("--list", action="store_true", help="list models/variants (and exclusions), build nothing")
    ap.add_argument("--big", action="store_true", help="also build the ~90 MB benchmark model")
    ap.add_argument("--ops", action="store_true", help="print the MNN op types of each float model")
    ap.add_argument("--jobs", type=int, default=2, help="parallel builds (each runs the tools in a child)")
    return ap.parse_args(argv)


def _jobs(args):
    jobs, skipped = [], []
    for name in args.only or zoo.model_names():
        excluded = zoo.excluded_variants(name)
        for variant in args.variants or zoo.VARIANTS:
            if variant in excluded:
                skipped.append((name, variant, excluded[variant]))
            else:
                jobs.append((name, variant))
    # floats first: every other variant of a model starts from its ONNX / float file
    jobs.sort(key=lambda job: job[1] != "float")
    return jobs, skipped


def _build(job):
    name, variant = job
    start = time.monotonic()
    try:
        path = zoo.big_model_path() if name == "big" else zoo.model_path(name, variant)
        if variant.startswith("quant_"):
            zoo.heldout_dir(name)
        size = path.stat().st_size
        weight = Path(str(path) + ".weight")
        if weight.exists():
            size += weight.stat().st_size
        return name, variant, size, "ok", time.monotonic() - start, ""
    except Exception as exc:  # report every failure, keep building the rest
        return name, variant, 0, "FAILED", time.monotonic() - start, f"{type(exc).__name__}: {exc}"


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def main(argv=None) -> int:
    args = _parse(argv)
    jobs, skipped = _jobs(args)
    if args.big:
        jobs.append(("big", "float"))
    if args.list:
        for name, variant in jobs:
            print(f"{name:12s} {variant}")
        for name, variant, why in skipped:
            print(f"{name:12s} {variant:12s} excluded: {why}")
        return 0
    print(f"fixtures: {zoo.FIXTURE_DIR}")
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(_build, jobs))
    total = time.monotonic() - start
    print(f"{'model':12s} {'variant':12s} {'size':>10s} {'status':7s} {'time':>7s}")
    for name, variant, size, status, secs, err in results:
        print(f"{name:12s} {variant:12s} {_size(size) if size else '-':>10s} {status:7s} {secs:6.1f}s")
        if err:
            print("    " + err.replace("\n", "\n    ")[:3000])
    for name, variant, why in skipped:
        why = why if len(why) <= 90 else why[:87] + "..."
        print(f"{name:12s} {variant:12s} {'-':>10s} {'skip':7s}  ({why})")
    failed = [r for r in results if r[3] != "ok"]
    print(f"built {len(results) - len(failed)}/{len(results)} in {total:.1f}s, {len(skipped)} excluded")
    if args.ops:
        for name in args.only or zoo.model_names():
            for graph, ops in mnn_op_types(zoo.model_path(name), detail=True).items():
                label = name if graph == "main" else f"  {name}/{graph}"
                print(f"{label}: " + ", ".join(f"{k}x{v}" for k, v in sorted(ops.items())))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
