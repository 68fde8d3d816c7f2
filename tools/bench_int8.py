"""GOP/s of mnnlite's int8 conv kernels on typical layers, per SIMD path, and against MNN's int8 CPU backend.

    python tools/bench_int8.py                 # every layer, every path, MNN where installed
    python tools/bench_int8.py --quick         # fewer layers, no scalar path
    python tools/bench_int8.py --threads 2 --no-mnn

GOP/s counts 2 * N * O * OH * OW * C/G * KH * KW (int8 multiply-adds, padding channels not counted).
Dense convs are timed as a runtime runs them: weights prepared once (int8.Conv2dInt8), then the call.
MNN: the same layer (conv + ReLU) is converted and quantized by MNN's own tools (KL, MAX_ABS, calibrated
on random "sequence" samples), then only its int8 Convolution op is timed, through the session's
per-op callbacks (the float<->int8 casts around it are not counted).  "vs MNN" = our fastest path /
MNN.  "exact" = codes differing from MNN's on that run, with the layer's quant parameters read back from
the quantized file (0 = bit-exact).  Times are the fastest of repeated runs (other jobs share the CPU).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from benchlib import layer_bench_main
from mnnlite.kernels import cpu, threads
from mnnlite.kernels import int8 as K
from mnnlite.ref import int8 as R


@dataclass
class Layer:
    name: str
    c: int
    o: int
    h: int
    w: int
    k: int
    stride: int = 1
    depthwise: bool = False
    quick: bool = False

    @property
    def pad(self):
        return (self.k // 2,) * 4

    def out_size(self):
        p = self.k // 2
        return (self.h + 2 * p - self.k) // self.stride + 1, (self.w + 2 * p - self.k) // self.stride + 1

    def ops(self):
        oh, ow = self.out_size()
        return 2.0 * self.o * oh * ow * (1 if self.depthwise else self.c) * self.k * self.k


LAYERS = [
    Layer("resnet 3x3 64->64 56x56", 64, 64, 56, 56, 3, quick=True),
    Layer("resnet 3x3 128->128 28x28", 128, 128, 28, 28, 3),
    Layer("resnet 3x3 256->256 14x14", 256, 256, 14, 14, 3, quick=True),
    Layer("resnet 3x3 512->512 7x7", 512, 512, 7, 7, 3),
    Layer("resnet 3x3 s2 128->256 28x28", 128, 256, 28, 28, 3, stride=2),
    Layer("mobilenet 1x1 128->128 28x28", 128, 128, 28, 28, 1, quick=True),
    Layer("mobilenet 1x1 512->512 14x14", 512, 512, 14, 14, 1),
    Layer("mobilenet dw3x3 128 56x56", 128, 128, 56, 56, 3, depthwise=True, quick=True),
    Layer("mobilenet dw3x3 s2 256 28x28", 256, 256, 28, 28, 3, stride=2, depthwise=True),
    Layer("ppocr_cls dw5x5 200 2x96", 200, 200, 2, 96, 5, depthwise=True, quick=True),
    Layer("ppocr_rec dw3x3 240 12x80", 240, 240, 12, 80, 3, depthwise=True),
    Layer("ocr 3x3 48->48 48x320", 48, 48, 48, 320, 3),
    Layer("stem 3x3 s2 3->32 224x224", 3, 32, 224, 224, 3, stride=2),
]

PATHS = {"scalar": [], "avx2": ["avx2"], "avx512": ["avx2", "avx512"], "vnni": None}
NEEDS = {"scalar": [], "avx2": ["avx2"], "avx512": ["avx2", "avx512"], "vnni": ["vnni"]}


def best_time(fn, budget=0.5, max_reps=60):
    """Fastest of repeated calls within a time budget (at least 5)."""
    fn()
    best, spent, reps = float("inf"), 0.0, 0
    while reps < 5 or (spent < budget and reps < max_reps):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best


def random_layer(layer, rng):
    """Codes and quant parameters of a synthetic layer (for the per-path timing)."""
    cg = 1 if layer.depthwise else layer.c
    xq = rng.integers(-128, 128, (1, layer.c, layer.h, layer.w)).astype(np.int8)
    wq = rng.integers(-127, 128, (layer.o, cg, layer.k, layer.k)).astype(np.int8)
    alpha = np.full(layer.o, 1.0 / (127 * np.sqrt(cg * layer.k * layer.k)), np.float32)
    bias = rng.normal(0, 0.1, layer.o).astype(np.float32)
    return xq, dict(wq=wq, alpha=alpha, bias=bias, s_in=0.02, z_in=0, s_out=0.05, z_out=0, out_min=-127,
                    out_max=127, stride=layer.stride, pad=layer.pad, relu=True)


def kernel_call(layer, xq, params):
    """What a runtime calls per inference (dense weights prepared once)."""
    if layer.depthwise:
        return lambda: K.depthwise_int8(xq, **params)
    conv = K.Conv2dInt8(**params)
    return lambda: conv(xq)


# ---- MNN ------------------------------------------------------------------------------------------

def _tool(func, argv, cwd):
    code = f"import sys, _tools; _tools.{func}(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=cwd, check=False)
    return proc.returncode == 0


def mnn_quantized_layer(layer, workdir, rng):
    """Path of the layer (conv + ReLU) converted and quantized by MNN's tools, or None on failure."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = layer.c if layer.depthwise else 1
    fan = layer.c // g * layer.k * layer.k
    w = (rng.standard_normal((layer.o, layer.c // g, layer.k, layer.k)) * np.sqrt(2.0 / fan)).astype(np.float32)
    b = (rng.standard_normal(layer.o) * 0.1).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[layer.k] * 2, strides=[layer.stride] * 2,
                              pads=list(layer.pad), group=g),
             helper.make_node("Relu", ["c"], ["y"])]
    shape = [1, layer.c, layer.h, layer.w]
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    src, flt, dst = (os.path.join(workdir, f) for f in ("layer.onnx", "layer.mnn", "layer_q.mnn"))
    onnx.save(model, src)
    if not _tool("mnnconvert", ["MNNConvert", "-f", "ONNX", "--modelFile", src, "--MNNModel", flt,
                                "--bizCode", "bench"], workdir):
        return None
    data = os.path.join(workdir, "calib")
    for i in range(2):   # "sequence" samples: one folder each with x.txt and input.json
        sample = os.path.join(data, f"s{i}")
        os.makedirs(sample, exist_ok=True)
        np.savetxt(os.path.join(sample, "x.txt"), rng.uniform(-1, 1, int(np.prod(shape))), fmt="%.4f")
        with open(os.path.join(sample, "input.json"), "w") as f:
            json.dump({"inputs": [{"name": "x", "shape": shape}]}, f)
    config = os.path.join(workdir, "quant.json")
    with open(config, "w") as f:
        json.dump({"input_type": "sequence", "path": data, "used_sample_num": 2,
                   "feature_quantize_method": "KL", "weight_quantize_method": "MAX_ABS"}, f)
    ok = _tool("mnnquant", ["quantized.out", flt, dst, config], workdir)
    return dst if ok and os.path.exists(dst) else None


def mnn_session(path, x, nthreads):
    import MNN

    interp = MNN.Interpreter(path)
    session = interp.createSession({"numThread": nthreads, "precision": "normal"})
    inp = interp.getSessionInput(session)
    interp.resizeTensor(inp, x.shape)
    interp.resizeSession(session)
    inp.copyFrom(MNN.Tensor(x.shape, MNN.Halide_Type_Float, x, MNN.Tensor_DimensionType_Caffe))
    return interp, session


def mnn_conv_time(path, x, nthreads):
    """(seconds of MNN's int8 conv op, seconds of a whole session run, MNN's output) for input x.

    The op is timed inside runSessionWithCallBackInfo.  An int8 session of the 3.6.1 wheel overwrites its
    input tensor while it runs (a second run without a fresh copy computes on other data), so the
    timed runs only measure (int8 GEMM time does not depend on the values) and the output comes from
    the first run of a fresh session.
    """
    import MNN

    interp, session = mnn_session(path, x, nthreads)
    interp.runSession(session)
    out = interp.getSessionOutput(session)
    shape = tuple(out.getShape())
    result = MNN.Tensor(shape, out.getDataType(), MNN.Tensor_DimensionType_Caffe)
    out.copyToHostTensor(result)
    y = np.array(result.getNumpyData(), np.float32, copy=True).reshape(shape)
    starts, times = {}, []

    def begin(tensors, info):
        starts[info.getName()] = time.perf_counter()
        return True

    def end(tensors, info):
        if info.getType().startswith("Convolution"):
            times.append(time.perf_counter() - starts[info.getName()])
        return True

    best_time(lambda: interp.runSessionWithCallBackInfo(session, begin, end))
    whole = best_time(lambda: interp.runSession(session))
    return min(times), whole, y


def mnn_params(path):
    """Our reader's view of the quantized conv: (kernel keyword arguments, input quant info, output quant info)."""
    from mnnlite.format.idst import decode_codes
    from mnnlite.format.model_io import load_model
    from mnnlite.graph import op_type_name

    graph = load_model(path).graph
    op = next(op for op in graph.ops if op_type_name(op).startswith("Convolution"))
    conv, common, quan = op.main, op.main.common, op.main.quanParameter
    codes = decode_codes(quan.buffer, quan.type, shape_int32=bool(quan.shapeInt32), alpha=quan.alpha)[1]
    qi, qo = graph.quant_info[int(op.inputIndexes[0])], graph.quant_info[int(op.outputIndexes[0])]
    params = dict(wq=codes.reshape(common.outputCount, -1, common.kernelY, common.kernelX),
                  alpha=np.asarray(quan.alpha, np.float32), bias=np.asarray(conv.bias, np.float32),
                  s_in=qi.scale, z_in=int(qi.zero), s_out=qo.scale, z_out=int(qo.zero), out_min=int(qo.min),
                  out_max=int(qo.max), stride=(common.strideY, common.strideX), pad=tuple(int(v) for v in common.pads),
                  relu=bool(common.relu or common.relu6))
    return params, qi, qo


def mnn_compare(layer, nthreads, workdir, rng):
    """(MNN GOP/s, codes differing from our kernel) for the layer, or (None, None)."""
    path = mnn_quantized_layer(layer, workdir, rng)
    if path is None:
        return None, None
    x = rng.uniform(-1, 1, (1, layer.c, layer.h, layer.w)).astype(np.float32)
    seconds, _, y = mnn_conv_time(path, x, nthreads)
    params, qi, qo = mnn_params(path)
    xq = R.quantize(x, qi.scale, qi.zero, int(qi.min), int(qi.max))
    ours = K.depthwise_int8(xq, **params) if layer.depthwise else K.conv2d_int8(xq, **params)
    want = R.quantize(y, qo.scale, qo.zero, -128, 127)
    return layer.ops() / seconds / 1e9, int((ours != want).sum())


# ---- report ---------------------------------------------------------------------------------------

def run(layers, paths, with_mnn, nthreads):
    rng = np.random.default_rng(0)
    threads.set_num_threads(nthreads)
    print(f"GOP/s (int8), {nthreads} thread(s), CPU paths available: {cpu.features()}")
    print(f"{'layer':34s}" + "".join(f"{p:>8s}" for p in paths) + f"{'MNN':>8s}{'vs MNN':>8s}{'exact':>7s}")
    with tempfile.TemporaryDirectory() as workdir:
        for layer in layers:
            xq, params = random_layer(layer, rng)
            speeds = {}
            for path in paths:
                cpu.set_limit(PATHS[path])
                try:
                    speeds[path] = layer.ops() / best_time(kernel_call(layer, xq, params)) / 1e9
                finally:
                    cpu.set_limit(None)
            row = f"{layer.name:34s}" + "".join(f"{speeds[p]:8.1f}" for p in paths)
            if with_mnn:
                mnn, bad = mnn_compare(layer, nthreads, workdir, rng)
                row += f"{mnn:8.1f}{max(speeds.values()) / mnn:8.2f}{bad:7d}" if mnn else "     n/a"
            print(row, flush=True)


def main(argv=None):
    layer_bench_main(__doc__, LAYERS, NEEDS, run, argv)


if __name__ == "__main__":
    main()
