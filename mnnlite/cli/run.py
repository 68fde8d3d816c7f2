"""``mnnlite run MODEL.mnn [--input NAME=FILE.npy ...] [--output OUT.npz] [--threads N] [--repeat N]
[--impl fast|ref|mnn] [--float] [--layout model|nchw]``: run a model (int8 where the file carries quant info, as MNN does; ``--float``
forces float), print output shapes and latency, optionally save the outputs."""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

from ..errors import ShapeError
from ..layout import exchange_name
from ..limits import check_alloc
from ..safety import check_distinct, write_files
from .common import Output, add_common_options, add_layout_option, add_runtime_options, apply_threads


def add_parser(sub):
    p = sub.add_parser("run", help="run a model on .npy inputs (random ones for fixed-shape inputs)")
    p.add_argument("model", help="the .mnn file")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input array in the model's declared layout, or NCHW with --layout nchw "
                        "(repeat for each input; NAME= may be left out when the model has one input)")
    p.add_argument("--output", "-o", metavar="OUT.npz",
                   help="write every output, keyed by name, in .npz format to exactly this file (atomically)")
    add_runtime_options(p)
    add_layout_option(p)
    p.add_argument("--repeat", type=int, default=1, help="run N times and report the median latency")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--float", dest="force_float", action="store_true",
                   help="run a quantized model in float (default: int8 where the file carries quant info, as MNN)")
    add_common_options(p, "the summary (outputs with shape and value range, latency)")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..runtime import Interpreter

    out = Output(args)
    if args.repeat < 1:
        raise ShapeError(f"--repeat must be at least 1, got {args.repeat}")
    apply_threads(args)
    interp = Interpreter(args.model, impl=args.impl, precision="float" if args.force_float else "auto",
                         layout=args.layout)
    if interp.model.is_quantized:
        out.print(f"note: the model carries int8 quantization info; mnnlite runs it in {interp.precision}")
    outputs_to = [(role, path) for role, path in (("--output file", args.output), ("--json report", out.json_to))
                  if path not in (None, "-")]
    check_distinct(outputs_to, _read_files(args, interp))     # refused before the run, not after it
    feeds = _feeds(interp, args.input, args.seed, out)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        outputs = interp.run(feeds)
        times.append(time.perf_counter() - start)
    declared = interp.output_layouts()
    summary = {"model": args.model, "precision": interp.precision, "impl": args.impl, "threads": args.threads,
               "outputs": {}, "output_file": args.output}
    for name, value in outputs.items():
        order = exchange_name(declared.get(name, "NCHW"), value.ndim, interp.layout)
        out.print(f"output {name}: shape {list(value.shape)} {value.dtype} {order}")
        stats = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if value.size and value.dtype.kind in "biuf":
            stats.update(min=float(value.min()), max=float(value.max()), mean=float(value.mean(dtype=np.float64)))
            out.print(f"       min {stats['min']:.6g}, max {stats['max']:.6g}, mean {stats['mean']:.6g}", level=2)
        summary["outputs"][name] = stats
    ms = [t * 1000 for t in times]
    spread = f" (min {min(ms):.2f}, max {max(ms):.2f})" if len(ms) > 1 else ""
    out.print(f"latency {statistics.median(ms):.2f} ms, median of {len(ms)} run(s){spread}, "
              f"{args.threads} thread(s), impl {args.impl}, {interp.precision}")
    summary["latency_ms"] = {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "runs": len(ms)}
    if args.output:
        _save_outputs(args, interp, outputs, out)
    out.json(summary)
    return 0


def _save_outputs(args, interp, outputs, out) -> None:
    """The .npz written atomically to exactly ``--output`` (np.savez would add ".npz"), never over the
    model, its weights or an input file."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **outputs)
    write_files([(args.output, buf.getbuffer(), "--output file")], _read_files(args, interp))
    out.print(f"wrote {len(outputs)} output(s) to {args.output}")


def _read_files(args, interp) -> list:
    inputs = [("model", args.model), ("model's weight file", args.model + ".weight"),
              ("model's weight file", interp.model.external_weights)]
    return inputs + [("input file", spec.partition("=")[2] or spec) for spec in args.input]


def _feeds(interp, specs, seed, out) -> dict:
    """Arrays from NAME=FILE.npy arguments; random values for the inputs not given, if their shape is fixed."""
    names = interp.input_names
    feeds = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            if len(names) != 1:
                raise ShapeError(f"--input {spec!r}: write NAME=FILE.npy, the model has inputs {names}")
            name, path = names[0], spec
        if name not in names:
            raise ShapeError(f"--input {spec!r}: the model has no input {name!r}; its inputs are {names}")
        if os.path.exists(path) and not os.path.isfile(path):     # a FIFO or device would block or never end
            raise ShapeError(f"--input {spec!r}: {path} is not a regular file")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, MemoryError) as exc:     # MemoryError: a header with a huge shape
            raise ShapeError(f"--input {spec!r}: cannot read {path} as a .npy array: {exc}") from None
    rng = np.random.default_rng(seed)
    for name, info in interp.input_info().items():
        if name in feeds:
            continue
        shape = list(info.feed_shape)
        if any(d < 0 for d in shape):
            raise ShapeError(f"input {name!r} has dynamic dims {shape} (-1 = any): give it with "
                             f"--input {name}=FILE.npy")
        check_alloc(f"input {name!r}", "random input", shape, info.dtype.itemsize)
        if info.dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(info.dtype)
        else:
            feeds[name] = rng.integers(0, 2, size=shape).astype(info.dtype)
        order = exchange_name(info.layout, len(shape), interp.layout)
        out.print(f"input {name}: random {info.dtype} values of shape {shape} {order} (no --input given)")
    return feeds

