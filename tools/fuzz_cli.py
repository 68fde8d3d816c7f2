#!/usr/bin/env python3
"""Mutation run of the CLI commands over real models, with outcome counts.

    python tools/fuzz_cli.py [--mutants 50000] [--workers 2] [--timeout 20] [--max-as 3G] [--seed 1]
                             [--models DIR_OR_FILE ...] [--json out.json]

Each mutant is a real model file with one corruption: a byte-level one (``tests/format/fuzzing.py``:
flipped bytes, hostile offsets, truncation, splices) or a field-level one (a decoded op parameter, input
dim or externalPath set to a hostile value: 0, -1, 2**24, INT_MAX, ..., then re-encoded, so it reaches
the runtime instead of the reader).  Every mutant goes through ``info`` and ``run`` (random or small
inputs); every ``--quantize-every``-th also through ``quantize`` with a one-image config.

The commands run inside worker processes (``--workers``), each limited with RLIMIT_AS (``--max-as``)
and given ``--max-memory`` below it; the parent kills a worker whose mutant runs longer than
``--timeout`` seconds and starts a new one.  Outcomes per mutant (the worst of its commands):

    ok          every command finished normally
    clean       a command stopped with a one-line MnnliteError (the CLI's exit code 2)
    traceback   any other exception (a bug: the CLI would have needed its last-resort guard)
    signal      the worker died from a signal (segfault, abort, kill by the OOM killer)
    timeout     one mutant ran longer than --timeout

Seeds: the PP-OCR det/rec/cls fixture models in several variants (float, fp16, weight-quantized,
offline-quantized, external weights) and, with MNNLITE_CORPUS set, the real-model corpus.  The exit
code is 1 when any traceback, signal or timeout was seen.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import io
import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.environ.get("MNNLITE_FUZZ_INSTALLED"):     # tools/asan_check.sh: test the installed (ASan) build
    sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "format"))

# the three real PP-OCR networks in the encodings a user meets (float, weight-quantized, offline int8,
# external weights); the smaller encodings keep the mutants per second high
FIXTURE_SEEDS = [("ppocr_cls", "float"), ("ppocr_cls", "quant_kl"), ("ppocr_cls", "external"),
                 ("ppocr_det", "wq4"), ("ppocr_rec", "wq4")]
CORPUS_MAX_BYTES = 1 << 20      # the corpus's small real models (mtcnn, blazeface, silero_vad, ...)
BAD_OUTCOMES = ("traceback", "signal", "timeout")
# a mutant that also goes through quantize (a calibration pass and the writes) gets this many times the
# per-mutant timeout: ppocr_rec's takes ~9 s of a loaded 2-core machine, over 30 s when it is shared
QUANTIZE_TIME_FACTOR = 4
HOSTILE_INTS = [0, -1, 1, 2, 3, 7, 99, 255, 65535, 2 ** 24, 2 ** 31 - 1, -2 ** 31, 100000]
HOSTILE_FLOATS = [0.0, -1.0, 1e-30, 1e30, float("inf"), float("nan"), 1e6, 2 ** 24]
HOSTILE_PATHS = ["/etc/passwd", "../../etc/passwd", "..", "sub/../../x", "missing.weight", "", "\x00"]


def parse_size(text: str) -> int:
    """Bytes for --max-as ("3G"); 0 means no address-space limit (ASan builds need terabytes)."""
    from mnnlite.limits import parse_size as parse
    return 0 if str(text).strip() == "0" else parse(text)


# ------------------------------------------------------------------------------------------ seeds

def fixture_seeds() -> list[str]:
    root = os.environ.get("MNNLITE_FIXTURES", os.path.join(REPO, ".fixtures"))
    files = []
    for name, variant in FIXTURE_SEEDS:
        found = glob.glob(os.path.join(root, "*", name, f"{name}.{variant}.mnn"))
        files += found[:1]
    corpus = os.environ.get("MNNLITE_CORPUS")
    if corpus and os.path.isdir(corpus):
        files += sorted(f for f in glob.glob(os.path.join(corpus, "**", "*.mnn"), recursive=True)
                        if os.path.getsize(f) < CORPUS_MAX_BYTES and ".ADMM." not in f)
    return files


def expand_seeds(paths) -> list[str]:
    files = []
    for p in paths:
        files += sorted(glob.glob(os.path.join(p, "**", "*.mnn"), recursive=True)) if os.path.isdir(p) else [p]
    return files


# ------------------------------------------------------------------------------------- mutations

def _param_fields(obj, depth=0):
    """(table, field name, value) of the int / float / int-array / string fields of a parameter table."""
    import numpy as np

    if obj is None or depth > 3 or not hasattr(obj, "__dataclass_fields__"):
        return
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float, str)) or (isinstance(value, np.ndarray) and value.size < 4096
                                                    and value.dtype.kind in "iuf"):
            yield obj, name, value
        elif hasattr(value, "__dataclass_fields__"):
            yield from _param_fields(value, depth + 1)


def mutate_fields(model, rng: random.Random) -> bytes | None:
    """A field-level mutant of a decoded model: one to three parameter fields (or an externalPath, or
    a whole parameter table) of random ops set to hostile values, encoded, and the model restored."""
    import numpy as np

    from mnnlite import dumps

    undo = []

    def put(obj, name, value):
        undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    ops = [op for _, op in model.all_ops()]
    try:
        for _ in range(rng.randint(1, 3)):
            op = rng.choice(ops)
            kind = rng.random()
            if kind < 0.05:
                put(op, "externalPath", rng.choice(HOSTILE_PATHS))
                if hasattr(op.main, "external"):
                    put(op.main, "external", np.array([0, 16, 16], np.int64))
                continue
            if kind < 0.10:
                put(op, "main", None)          # a missing parameter table
                continue
            fields = list(_param_fields(op.main))
            if not fields:
                continue
            table, name, value = rng.choice(fields)
            if isinstance(value, str):
                put(table, name, rng.choice(["", "\udcff\xff", "x" * 300, value + "?"]))
            elif isinstance(value, float):
                put(table, name, rng.choice(HOSTILE_FLOATS))
            elif isinstance(value, int):
                put(table, name, rng.choice(HOSTILE_INTS))
            else:
                arr = value.copy()
                if arr.size and rng.random() < 0.8:
                    arr.reshape(-1)[rng.randrange(arr.size)] = rng.choice(
                        HOSTILE_FLOATS if arr.dtype.kind == "f" else
                        [v for v in HOSTILE_INTS if np.can_cast(np.min_scalar_type(v), arr.dtype)] or [0])
                else:
                    arr = arr[:rng.randrange(arr.size + 1)] if arr.size else np.array([7], arr.dtype)
                put(table, name, arr)
        return dumps(model)
    except Exception:  # noqa: BLE001 - an unencodable mutation (the writer's own check): no mutant
        return None
    finally:
        for obj, name, value in reversed(undo):
            setattr(obj, name, value)


def make_mutant(seed_data: bytes, model, rng: random.Random) -> bytes:
    """Field-level (on ``model``, the decoded seed, when it decodes) or byte-level, half and half."""
    from fuzzing import mutate

    if model is not None and rng.random() < 0.5:
        mutant = mutate_fields(model, rng)
        if mutant is not None:
            return mutant
    return mutate(seed_data, rng)


# ----------------------------------------------------------------------------------------- worker

def _cli(argv) -> None:
    """Run one CLI command in-process without the last-resort guard; MnnliteError propagates."""
    from mnnlite.cli.main import build_parser

    args = build_parser().parse_args(argv)
    args.func(args)


def _input_file(model_path: str, folder: str) -> list[str]:
    """--input arguments for the model's dynamic inputs: small arrays of a plausible size."""
    import numpy as np

    from mnnlite.errors import MnnliteError
    from mnnlite.format.model_io import load_model
    from mnnlite.graph import Model  # noqa: F401

    try:
        model = load_model(model_path)
    except MnnliteError:
        return []
    out = []
    from mnnlite.runtime import Interpreter
    try:
        info = Interpreter(model).input_info()
    except MnnliteError:
        return []
    for i, (name, spec) in enumerate(info.items()):
        dims = list(spec.shape) or [1]
        if spec.layout == "NHWC" and len(dims) >= 3:
            dims = [dims[0], dims[-1], *dims[1:-1]]
        if all(d > 0 for d in dims) and np.prod(dims) < (1 << 22):
            continue
        dims = [d if 0 < d <= 1024 else (1 if axis == 0 else 3 if axis == 1 else 64) for axis, d in enumerate(dims)]
        path = os.path.join(folder, f"in{i}.npy")
        np.save(path, np.random.default_rng(0).standard_normal(dims).astype(spec.dtype))
        out.append(f"{name}={path}")
    return out


def run_mutant(data: bytes, folder: str, inputs: list, quantize: bool, info_json: bool,
               max_memory: str, commands=("info", "run", "quantize")) -> tuple[str, str]:
    """(outcome, detail) of one mutant through info, run and (when ``quantize``) quantize."""
    from mnnlite.errors import MnnliteError

    model = os.path.join(folder, "m.mnn")
    with open(model, "wb") as f:
        f.write(data)
    wanted, commands = commands, []
    if "info" in wanted:
        commands.append(["info", model, "--json"] if info_json else ["info", model])
    if "run" in wanted:
        commands.append(["run", model, "--max-memory", max_memory, *sum((["--input", a] for a in inputs), [])])
    if quantize and "quantize" in wanted:
        calib = os.path.join(REPO, "mnnlite", "demo", "calib")
        cfg = os.path.join(folder, "cfg.json")
        with open(cfg, "w") as f:
            json.dump({"format": "RGB", "mean": [127.5] * 3, "normal": [1 / 127.5] * 3, "width": 64,
                       "height": 48, "path": calib, "used_image_num": 1, "feature_quantize_method": "KL"}, f)
        commands.append(["quantize", model, os.path.join(folder, "q.mnn"), cfg, "--quiet",
                         "--threads", "1", "--max-memory", max_memory])
    worst = ("ok", "")
    for argv in commands:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                _cli(argv)
        except MnnliteError as exc:
            if "\n" in str(exc):
                return "traceback", f"{argv[0]}: multi-line message: {str(exc)[:200]!r}"
            worst = ("clean", f"{argv[0]}: {str(exc)[:160]}")
        except SystemExit as exc:    # argparse
            return "traceback", f"{argv[0]}: SystemExit {exc.code}"
        except BaseException as exc:  # noqa: BLE001 - what this harness hunts
            tb = traceback.extract_tb(exc.__traceback__)
            where = next((f"{os.path.relpath(fr.filename, REPO)}:{fr.lineno}" for fr in reversed(tb)
                          if "mnnlite" in fr.filename), "?")
            return "traceback", f"{argv[0]}: {type(exc).__name__} at {where}: {str(exc)[:160]}"
    return worst


def run_command(command: str, data: bytes, folder: str) -> tuple[str, str]:
    """One model through one command (the atheris harness's target): (outcome, detail)."""
    inputs = []
    if command == "run":
        with open(os.path.join(folder, "m.mnn"), "wb") as f:
            f.write(data)
        inputs = _input_file(os.path.join(folder, "m.mnn"), folder)
    return run_mutant(data, folder, inputs, command == "quantize", False, "1G",
                      commands=("info",) if command == "info" else (command,))


class _Seed:
    """One seed model in a worker: its bytes, its decoded form (mutated and restored in place), a
    folder of its own (with a copy of its .weight file) and the --input arguments it runs with."""

    def __init__(self, path: str, folder: str):
        import shutil

        from mnnlite.errors import MnnliteError
        from mnnlite.format.model_io import load_model

        with open(path, "rb") as f:
            self.data = f.read()
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        if os.path.exists(path + ".weight"):
            shutil.copyfile(path + ".weight", os.path.join(folder, "m.mnn.weight"))
        try:
            self.model = load_model(path)
        except MnnliteError:
            self.model = None
        with open(os.path.join(folder, "m.mnn"), "wb") as f:
            f.write(self.data)
        self.inputs = _input_file(os.path.join(folder, "m.mnn"), folder)


def worker_main(max_as: int, folder: str) -> None:
    import resource

    if max_as:
        resource.setrlimit(resource.RLIMIT_AS, (max_as, max_as))
    seeds: dict[str, _Seed] = {}
    for line in sys.stdin:      # ``folder`` is the parent's: it removes it however this worker ends
        job = json.loads(line)
        path = job["seed_path"]
        if path not in seeds:
            seeds[path] = _Seed(path, os.path.join(folder, f"seed{len(seeds)}"))
        seed = seeds[path]
        if os.environ.get("MNNLITE_FUZZ_SELFTEST_CRASH"):     # the harness's own test: die by a signal
            os.kill(os.getpid(), signal.SIGSEGV)
        rng = random.Random(job["seed"])
        began = time.monotonic()
        data = make_mutant(seed.data, seed.model, rng)
        outcome, detail = run_mutant(data, seed.folder, seed.inputs, job["quantize"], job["id"] % 10 == 0,
                                     job["max_memory"])
        sys.stdout.write(json.dumps({"id": job["id"], "outcome": outcome, "detail": detail,
                                     "seconds": time.monotonic() - began}) + "\n")
        sys.stdout.flush()


# ----------------------------------------------------------------------------------------- parent

class Worker:
    def __init__(self, args):
        self.args = args
        self.folder = tempfile.mkdtemp(prefix="mnnlite-fuzz-")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                      "--max-as", str(args.max_as), "--work", self.folder],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.job = None
        self.started = 0.0

    def send(self, job) -> None:
        self.job, self.started = job, time.monotonic()
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        import shutil

        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def run_campaign(args) -> dict:
    seeds = expand_seeds(args.models) if args.models else fixture_seeds()
    if len(seeds) < 1:
        raise SystemExit("no seed models: build the fixtures (tools/build_fixtures.py) or pass --models")
    rng = random.Random(args.seed)
    jobs = [{"id": i, "seed": rng.randrange(1 << 62), "seed_path": seeds[i % len(seeds)],
             "quantize": args.quantize_every > 0 and i % args.quantize_every == 0,
             "max_memory": args.max_memory} for i in range(args.mutants)]
    counts = collections.Counter()
    per_seed = collections.defaultdict(collections.Counter)
    seed_seconds = collections.Counter()     # where the campaign's time goes, per seed model
    slowest = []                             # (seconds, id, seed, model, outcome, detail), the 20 slowest
    bad = []
    pending = list(reversed(jobs))
    workers = [Worker(args) for _ in range(args.workers)]
    start = time.monotonic()
    done = 0

    def record(job, outcome, detail):
        nonlocal done
        done += 1
        counts[outcome] += 1
        per_seed[os.path.basename(job["seed_path"])][outcome] += 1
        if outcome in BAD_OUTCOMES and len(bad) < 200:
            bad.append({"id": job["id"], "seed": job["seed"], "model": job["seed_path"], "outcome": outcome,
                        "detail": detail})
            if args.progress:
                print(f"  {outcome}: mutant {job['id']} of {job['seed_path']}: {detail}", flush=True)
        if args.progress and done % args.progress == 0:
            rate = done / (time.monotonic() - start)
            print(f"[{done}/{len(jobs)}] {dict(counts)} {rate:.1f}/s", flush=True)

    for w in workers:
        if pending:
            w.send(pending.pop())

    def stop(signum, frame):        # SIGTERM / SIGINT: finish the mutants in flight, then report
        pending.clear()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while any(w.job is not None for w in workers):
        busy = [w for w in workers if w.job is not None]
        ready, _, _ = select.select([w.proc.stdout for w in busy], [], [], 1.0)
        now = time.monotonic()
        for i, w in enumerate(workers):
            if w.job is None:
                continue
            if w.proc.stdout in ready:
                line = w.proc.stdout.readline()
                if line:
                    result = json.loads(line)
                    record(w.job, result["outcome"], result["detail"])
                    seed_seconds[os.path.basename(w.job["seed_path"])] += result["seconds"]
                    slowest.append((round(result["seconds"], 2), w.job["id"], w.job["seed"], w.job["seed_path"],
                                    result["outcome"], result["detail"]))
                    slowest = sorted(slowest, reverse=True)[:20]
                    w.job = None
                else:                                   # the worker died
                    code = w.proc.wait()
                    w.kill()
                    outcome = "signal" if code < 0 else "traceback"
                    detail = f"worker exit {signal.Signals(-code).name if code < 0 else code}"
                    record(w.job, outcome, detail)
                    workers[i] = w = Worker(args)
            elif now - w.started > args.timeout * (QUANTIZE_TIME_FACTOR if w.job["quantize"] else 1):
                record(w.job, "timeout", f"more than {args.timeout} s (x{QUANTIZE_TIME_FACTOR} with quantize)")
                w.kill()
                workers[i] = w = Worker(args)
            if w.job is None and pending:
                w.send(pending.pop())
    for w in workers:
        w.proc.stdin.close()
        w.kill()
    return {"mutants": done, "planned": len(jobs), "seconds": round(time.monotonic() - start, 1),
            "models": [os.path.relpath(s, os.environ.get("MNNLITE_FIXTURES", REPO)) for s in seeds],
            "counts": {k: counts.get(k, 0) for k in ("ok", "clean", *BAD_OUTCOMES)},
            "per_model": {k: dict(v) for k, v in per_seed.items()},
            "seconds_per_model": {k: round(v, 1) for k, v in seed_seconds.most_common()},
            "slowest": [dict(zip(("seconds", "id", "seed", "model", "outcome", "detail"), row)) for row in slowest],
            "failures": bad}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mutants", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=30.0,
                   help=f"seconds per mutant ({QUANTIZE_TIME_FACTOR}x for those that also quantize)")
    p.add_argument("--max-as", type=parse_size, default=parse_size("3G"), help="RLIMIT_AS per worker")
    p.add_argument("--max-memory", default="1G", help="mnnlite's --max-memory inside the workers")
    p.add_argument("--quantize-every", type=int, default=100, help="also quantize every Nth mutant (0: never)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--models", nargs="*", help="seed models (files or folders); default: fixtures + corpus")
    p.add_argument("--progress", type=int, default=1000, help="print counts every N mutants")
    p.add_argument("--json", help="write the counts and failures as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.max_as, args.work)
        return 0
    summary = run_campaign(args)
    print(json.dumps({k: summary[k] for k in ("mutants", "planned", "seconds", "counts")}))
    for failure in summary["failures"][:20]:
        print(f"  {failure['outcome']}: mutant {failure['id']} of {failure['model']}: {failure['detail']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    return 1 if any(summary["counts"][k] for k in BAD_OUTCOMES) else 0


if __name__ == "__main__":
    sys.exit(main())
