"""GFLOP/s of mnnlite's float kernels on typical layers, per SIMD path, and against MNN's CPU backend.

    python tools/bench_kernels.py                # every layer, every path, MNN where installed
    python tools/bench_kernels.py --quick        # fewer layers, no scalar path
    python tools/bench_kernels.py --threads 2 --no-mnn

Conv layers are timed as a runtime runs them: weights prepared once (conv.Conv2d), then only the call.
GFLOP/s always counts the direct convolution's 2*N*O*OH*OW*C/G*KH*KW, whatever algorithm ran
(Winograd does fewer), so the numbers compare like for like with MNN's.  "vs MNN" is our fastest
path's speed divided by MNN's on the same single layer (1.00 = as fast, 0.50 = twice as slow).
MNN is timed with one session run per call, input already in place, numThread = --threads.  All
candidates of a layer are timed in interleaved rounds and the fastest call of each is kept, so other
load on the machine disturbs them alike.
"""
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from benchlib import layer_bench_main
from mnnlite.kernels import conv, cpu, matmul, threads


@dataclass
class Layer:
    name: str
    kind: str                       # "conv", "deconv" or "matmul"
    shape: tuple                    # conv/deconv: (N, C, H, W, O, KH, KW); matmul: (batch, M, K, N)
    attrs: dict = field(default_factory=dict)
    quick: bool = False             # part of --quick


def _conv(name, n, c, h, w, o, k, stride=1, pad=None, groups=1, quick=False):
    pad = k // 2 if pad is None else pad
    attrs = dict(stride=(stride, stride), pad=(pad,) * 4, groups=groups)
    return Layer(name, "conv", (n, c, h, w, o, k, k), attrs, quick)


LAYERS = [
    _conv("mobilenet 1x1 128->128 28x28", 1, 128, 28, 28, 128, 1, quick=True),
    _conv("mobilenet 1x1 512->512 14x14", 1, 512, 14, 14, 512, 1),
    _conv("mobilenet dw3x3 128 56x56", 1, 128, 56, 56, 128, 3, groups=128, quick=True),
    _conv("mobilenet dw3x3 s2 128 56x56", 1, 128, 56, 56, 128, 3, stride=2, groups=128),
    _conv("resnet 3x3 64->64 56x56", 1, 64, 56, 56, 64, 3, quick=True),
    _conv("resnet 3x3 256->256 14x14", 1, 256, 14, 14, 256, 3),
    _conv("resnet 3x3 s2 128->256 28x28", 1, 128, 28, 28, 256, 3, stride=2),
    _conv("ocr 3x3 48->48 48x320", 1, 48, 48, 320, 48, 3, quick=True),
    _conv("ocr 3x3 96->96 48x320", 1, 96, 48, 320, 96, 3),
    _conv("ocr 3x3 256->256 48x320", 1, 256, 48, 320, 256, 3),
    _conv("ocr 3x3 256->256 12x80", 1, 256, 12, 80, 256, 3),
    _conv("ocr 1x1 256->128 48x320", 1, 256, 48, 320, 128, 1),
    Layer("upsample deconv 4x4 s2 64->32 24x160", "deconv", (1, 64, 24, 160, 32, 4, 4),
          dict(stride=(2, 2), pad=(1, 1, 1, 1)), quick=True),
    Layer("fc 1x1024 @ 1024x1000", "matmul", (1, 1, 1024, 1000)),
    Layer("matmul 384x768 @ 768x768", "matmul", (1, 384, 768, 768), quick=True),
    Layer("batched 12 x 128x64 @ 64x128", "matmul", (12, 128, 64, 128)),
]

PATHS = {"scalar": [], "avx2": ["avx2"], "avx512": ["avx2", "avx512"]}


def flops(layer):
    if layer.kind == "matmul":
        b, m, k, n = layer.shape
        return 2.0 * b * m * k * n
    n, c, h, w, o, kh, kw = layer.shape
    if layer.kind == "deconv":  # every input pixel meets every weight once
        return 2.0 * n * c * h * w * o * kh * kw / layer.attrs.get("groups", 1)
    sy, sx = layer.attrs["stride"]
    pt, pl, pb, pr = layer.attrs["pad"]
    oh, ow = (h + pt + pb - kh) // sy + 1, (w + pl + pr - kw) // sx + 1
    return 2.0 * n * o * oh * ow * c / layer.attrs["groups"] * kh * kw


def make_inputs(layer, rng):
    if layer.kind == "matmul":
        b, m, k, n = layer.shape
        a = rng.standard_normal((b, m, k) if b > 1 else (m, k), dtype=np.float32)
        return a, rng.standard_normal((k, n), dtype=np.float32), None
    n, c, h, w, o, kh, kw = layer.shape
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    groups = layer.attrs.get("groups", 1)
    wshape = (c, o // groups, kh, kw) if layer.kind == "deconv" else (o, c // groups, kh, kw)
    return x, rng.standard_normal(wshape, dtype=np.float32), rng.standard_normal(o, dtype=np.float32)


def mnnlite_callable(layer, x, w, b, path):
    """The call a runtime makes per inference (conv weights prepared once), on one SIMD path."""
    limit = PATHS[path]
    cpu.set_limit(limit)
    try:
        if layer.kind == "conv":
            prepared = conv.Conv2d(w, b, **layer.attrs)  # the plan keeps the path it was built for
            return lambda: prepared(x)
    finally:
        cpu.set_limit(None)

    def call():
        cpu.set_limit(limit)
        try:
            return conv.deconv2d(x, w, b, **layer.attrs) if layer.kind == "deconv" else matmul.matmul(x, w)
        finally:
            cpu.set_limit(None)
    return call


def best_times(fns, budget=1.5, max_rounds=60):
    """Fastest call of each function.  Rounds call every function once, so load from other processes
    hits all of them alike; the minimum is the least disturbed run."""
    for fn in fns:
        fn()
    best, start, rounds = [float("inf")] * len(fns), time.perf_counter(), 0
    while rounds < 3 or (time.perf_counter() - start < budget and rounds < max_rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
        rounds += 1
    return best


# ---- MNN oracle -----------------------------------------------------------------------------------

def onnx_model(layer, w, b):
    from onnx import TensorProto, helper, numpy_helper

    if layer.kind == "matmul":
        bsz, m, k, n = layer.shape
        in_shape = [bsz, m, k] if bsz > 1 else [m, k]
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        inits = [numpy_helper.from_array(w, "w")]
    else:
        n, c, h, wd, o, kh, kw = layer.shape
        in_shape = [n, c, h, wd]
        pt, pl, pb, pr = layer.attrs["pad"]
        node = helper.make_node("ConvTranspose" if layer.kind == "deconv" else "Conv", ["x", "w", "b"], ["y"],
                                kernel_shape=[kh, kw], strides=list(layer.attrs["stride"]),
                                pads=[pt, pl, pb, pr], group=layer.attrs.get("groups", 1))
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    graph = helper.make_graph([node], "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, in_shape


def mnn_callable(layer, x, w, b, nthreads, workdir):
    """One MNN session run of the same layer, or None when MNN cannot convert it."""
    import onnx
    import MNN

    model, in_shape = onnx_model(layer, w, b)
    src, dst = os.path.join(workdir, "layer.onnx"), os.path.join(workdir, "layer.mnn")
    onnx.save(model, src)
    convert = "import sys, _tools; _tools.mnnconvert(sys.argv[1:])"
    args = ["MNNConvert", "-f", "ONNX", "--modelFile", src, "--MNNModel", dst, "--bizCode", "bench"]
    if subprocess.run([sys.executable, "-c", convert] + args, capture_output=True).returncode != 0:
        return None
    interp = MNN.Interpreter(dst)
    session = interp.createSession({"numThread": nthreads})  # fp32 on x86 either way
    host = MNN.Tensor(tuple(in_shape), MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe)
    interp.getSessionInput(session).copyFrom(host)
    return lambda: interp.runSession(session)


# ---- report ---------------------------------------------------------------------------------------

def run(layers, paths, with_mnn, nthreads):
    rng = np.random.default_rng(0)
    threads.set_num_threads(nthreads)
    print(f"GFLOP/s, {nthreads} thread(s), CPU paths available: {cpu.features()}")
    print(f"{'layer':40s}" + "".join(f"{p:>9s}" for p in paths) + f"{'MNN':>9s}{'vs MNN':>9s}")
    with tempfile.TemporaryDirectory() as workdir:
        for layer in layers:
            x, w, b = make_inputs(layer, rng)
            fns = [mnnlite_callable(layer, x, w, b, path) for path in paths]
            mnn = mnn_callable(layer, x, w, b, nthreads, workdir) if with_mnn else None
            times = best_times(fns + ([mnn] if mnn else []))
            speeds = [flops(layer) / t / 1e9 for t in times]
            row = f"{layer.name:40s}" + "".join(f"{v:9.1f}" for v in speeds[:len(paths)])
            if mnn:
                row += f"{speeds[-1]:9.1f}{max(speeds[:len(paths)]) / speeds[-1]:9.2f}"
            print(row, flush=True)


def main(argv=None):
    layer_bench_main(__doc__, LAYERS, PATHS, run, argv)


if __name__ == "__main__":
    main()
