"""The command line the per-layer kernel benchmarks share (tools/bench_kernels.py, tools/bench_int8.py)."""
import argparse

from mnnlite.kernels import cpu


def layer_bench_main(doc: str, layers, paths_needing: dict, run, argv=None) -> None:
    """Parse --quick/--no-mnn/--threads, keep the SIMD paths this CPU has, then ``run(layers, paths,
    with_mnn, threads)``.  ``paths_needing`` maps a path name to the CPU features it needs."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few layers, no scalar path")
    parser.add_argument("--no-mnn", action="store_true", help="skip the comparison with MNN")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    have = cpu.features()
    paths = [p for p, needs in paths_needing.items()
             if all(f in have for f in needs) and not (args.quick and p == "scalar")]
    chosen = [layer for layer in layers if layer.quick or not args.quick]
    with_mnn = not args.no_mnn
    if with_mnn:
        try:
            import MNN  # noqa: F401
            import onnx  # noqa: F401
        except ImportError:
            print("MNN or onnx not installed: no comparison (pip install mnn onnx)")
            with_mnn = False
    run(chosen, paths, with_mnn, args.threads)


def write_rows(path, rows) -> None:
    """Save a model benchmark's rows as JSON (``--json OUT``)."""
    import json
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
