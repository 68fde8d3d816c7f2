"""The kernel table: every compute kernel mnnlite runs, named once, with its three forms.

* ``ref``  -- the numpy reference: the definition, written for clarity (``mnnlite.ref``, or the numpy spec
  in ``mnnlite.ops``).  Every entry has one.
* ``fast`` -- the compiled form (``mnnlite.kernels``, C in ``csrc/``): the reference's values within float32
  rounding (int8 kernels and exact gathers: bit for bit).  ``None`` where numpy is already the fast path.
* ``mnn``  -- the form that rounds like MNN 3.6.1's x86 (AVX2 + FMA) CPU backend (``mnn_exact``,
  ``mnn_ops``).  ``None`` where the fast form already gives MNN's bits or none is known.

An op never tests the interpreter's ``impl`` itself: it asks ``form(name, impl)`` and runs what it gets.
``impl="ref"`` gets the reference; ``"fast"`` the compiled form, else the reference; ``"mnn"`` the MNN
form, else the fast one, else the reference.  tests/kernels/test_table.py walks the table: every entry
against its reference on every SIMD path this CPU has (the scalar C path always).

Forms are written ``"module:attribute"`` and imported on first use (several live in ``mnnlite.ops``,
which imports this module).  Adding a kernel: docs/architecture.md, "Adding a kernel".
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from .._build_check import require_extensions

require_extensions()        # the fast and mnn forms are compiled: one clear error without them, no slow fallback

IMPLS = ("ref", "fast", "mnn")


@dataclass(frozen=True)
class Kernel:
    name: str
    ref: str
    fast: str | None = None
    mnn: str | None = None
    doc: str = ""

    def forms(self) -> dict[str, str]:
        """{form: "module:attribute"} of the forms this kernel has."""
        return {k: v for k, v in (("ref", self.ref), ("fast", self.fast), ("mnn", self.mnn)) if v}


def _k(name, ref, fast=None, mnn=None, doc=""):
    return name, Kernel(name, ref, fast, mnn, doc)


KERNELS: dict[str, Kernel] = dict([
    # ---------------------------------------------------------------------------------- float
    _k("conv2d", "mnnlite.ref.conv:conv2d_ref", "mnnlite.kernels.conv:conv2d", None,
       "conv2d(x, w, bias, stride, pad, dilation, groups, act): an NCHW convolution, weights read per call"),
    # The fast layer uses algorithm "auto", not "winograd_mnn": given MNN's own input tensors the latter is
    # bit-exact with MNN on ppocr_det's 3x3 convs, but inside a whole network the inputs already differ from
    # MNN's in the last bits (other ops round differently), F(6x6, 3x3)'s rounding noise (2e-4 to 4e-4 of a
    # conv's output, from float64) is then uncorrelated between the two runs, and ppocr_det's output stays
    # 5e-4 .. 2e-3 from MNN's with either algorithm (the more accurate F(4x4, 3x3) of "auto" is also the
    # faster one).  The mnn form uses it, with every other op rounding like MNN too: ppocr_det then gives
    # MNN's bits.
    _k("conv2d_layer", "mnnlite.ref.conv:Conv2dRef", "mnnlite.kernels.conv:Conv2d", "mnnlite.kernels.mnn_ops:conv_layer",
       "Conv2d(w, bias, stride, pad, dilation, groups, act)(x): a conv node's weights prepared once"),
    _k("conv2d_fed", "mnnlite.ref.conv:conv2d_ref", "mnnlite.kernels.conv:conv2d", "mnnlite.kernels.mnn_ops:fed_conv2d",
       "conv2d with weights fed as inputs at run time (MNN's multi-input executors: no Winograd, no Strassen)"),
    _k("deconv2d", "mnnlite.ref.conv:deconv2d_ref", "mnnlite.kernels.conv:deconv2d", None,
       "deconv2d(x, w, bias, stride, pad, dilation, groups, output_size=, act=): a transposed convolution"),
    _k("matmul", "mnnlite.ref.matmul:matmul_ref", "mnnlite.kernels.matmul:matmul", None,
       "matmul(a, b, transpose_a, transpose_b, bias): np.matmul with broadcast batch axes"),
    _k("softmax", "mnnlite.ops.nn:softmax_ref", None, "mnnlite.kernels.mnn_ops:softmax",
       "softmax(x, axis): exp(x - max) / sum along axis"),
    # The pair of MNN's _AVX_MNNSoftmax emulations: the mnn form (C, csrc/mnn_exact.c mnnx_softmax_rows)
    # contracts x - n*ln2 into one FMA as MNN's avxfma build does, and is what float impl="mnn" runs; the
    # reference (numpy, mnnlite/ref/mnn_softmax.py) rounds every operation on its own and is what the int8
    # Softmax runs (its requantization hides the last-bit difference; tests/int8 pins it to MNN).
    # tests/kernels/test_table.py bounds the distance between the two.
    _k("softmax_rows", "mnnlite.ref.mnn_softmax:softmax_rows", None, "mnnlite.kernels.mnn_exact:softmax_rows",
       "softmax_rows(x2): _AVX_MNNSoftmax over each row of a float32 [rows, n] array"),
    # The reference of the pair above once more, with a compiled form that gives its bits: the int8 Softmax.
    _k("softmax_rows_nofma", "mnnlite.ref.mnn_softmax:softmax_rows", "mnnlite.int8.ops:softmax_rows_compiled", None,
       "softmax_rows_nofma(x2): _AVX_MNNSoftmax over each row, every float32 operation rounded on its own"),
    _k("sigmoid", "mnnlite.ops.elementwise:sigmoid_ref", None, "mnnlite.kernels.mnn_exact:sigmoid",
       "sigmoid(x, all_simd): 1 / (1 + exp(-x)); all_simd: MNN runs every value through its 8-wide path"),
    _k("silu", "mnnlite.ops.elementwise:silu_ref", None, "mnnlite.kernels.mnn_ops:silu",
       "silu(x, all_simd): x / (1 + exp(-x)); all_simd: MNN runs every value through its 8-wide path"),
    _k("tanh", "mnnlite.ops.elementwise:tanh_ref", None, "mnnlite.kernels.mnn_ops:tanh",
       "tanh(x, all_simd): (1 - exp(-2x)) / (1 + exp(-2x)); all_simd: MNN runs every value through its 8-wide "
       "path"),
    _k("exp", "mnnlite.ops.elementwise:exp_ref", None, "mnnlite.kernels.mnn_ops:exp",
       "exp(x, all_simd): UnaryOp EXP; all_simd: MNN runs every value through its 8-wide path"),
    _k("libm_unary", "mnnlite.ops.elementwise:libm_unary_ref", None, "mnnlite.kernels.mnn_exact:libm_unary",
       "libm_unary(op, x): UnaryOp op among ERF, SIN, COS, TAN, ATAN, LOG, LOG1P, ACOSH, SINH, ASINH, ATANH, "
       "COSH (mnn: the C library's float function, as MNN's CPUUnary; MiniLM's GELU erf)"),
    _k("hardswish", "mnnlite.ops.elementwise:_hardswish", "mnnlite.kernels.eltwise:hardswish_f32", None,
       "hardswish(x): x * relu6(x + 3) / 6 in float32"),
    _k("norm_rows", "mnnlite.ops.norm:normalize_rows", None, "mnnlite.kernels.mnn_exact:norm_rows",
       "norm_rows(x2, eps, rms, gamma, beta): LayerNorm / RMSNorm of each row"),
    _k("clamp", "mnnlite.ops.elementwise:clamp_ref", "mnnlite.kernels.eltwise:clamp_f32", None,
       "clamp(x, lo, hi): ReLU6's np.minimum(np.maximum(x, lo), hi) of a float32 array (signed zeros, NaN)"),
    _k("resize_nearest", "mnnlite.ops.resize:nearest_ref", "mnnlite.kernels.eltwise:resize_nearest", None,
       "resize_nearest(x, rows, cols): Interp's nearest gather of an NCHW float32 or int8 tensor"),
    _k("resize_bilinear", "mnnlite.ops.resize:bilinear_ref", "mnnlite.kernels.eltwise:resize_bilinear_f32", None,
       "resize_bilinear(x, y0, y1, fy, x0, x1, fx): Interp's bilinear blend of an NCHW float32 tensor"),
    _k("resize_bilinear_int8", "mnnlite.int8.ops:bilinear_int8_ref", "mnnlite.kernels.eltwise:resize_bilinear_int8",
       None, "resize_bilinear_int8(x, z_in, z_out, y0, y1, sfy, dfy, x0, x1, sfx, dfx): CPUInterp's int8 bilinear"),
    _k("max_pool2d", "mnnlite.ops.pool:max_pool2d", "mnnlite.kernels.eltwise:max_pool_f32", None,
       "max_pool2d(x, kernel, stride, pad, out): a windowed max pool on NCHW float32, edge taps repeated"),
    _k("avg_pool2d", "mnnlite.ops.pool:avg_pool2d", "mnnlite.ops.pool:avg_pool2d_fast", "mnnlite.kernels.mnn_ops:avg_pool2d",
       "avg_pool2d(x, kernel, stride, pad, out, count_type): a windowed average pool on NCHW float32"),
    _k("global_avg_pool2d", "mnnlite.ops.pool:global_avg_pool2d", "mnnlite.ops.pool:global_avg_pool2d_fast", "mnnlite.kernels.mnn_exact:global_avg_pool",
       "global_avg_pool2d(x): Pooling's global average over the plane of an NCHW float32 tensor"),
    _k("global_mean", "mnnlite.ops.pool:global_mean", "mnnlite.ops.pool:global_mean_fast",
       "mnnlite.kernels.mnn_exact:global_avg_pool",
       "global_mean(x): Pooling3D's global average over every axis after the channels"),
    # ----------------------------------------------------------------------------------- int8
    _k("conv2d_int8_layer", "mnnlite.ref.int8:Conv2dInt8Ref", "mnnlite.kernels.int8:Conv2dInt8", None,
       "Conv2dInt8(wq, alpha, bias, s_in, z_in, s_out, z_out, lo, hi, stride, pad, dilation, groups, relu)(xq)"),
    _k("depthwise_int8", "mnnlite.ref.int8:depthwise_int8_ref", "mnnlite.kernels.int8:depthwise_int8", None,
       "depthwise_int8(xq, wq, alpha, bias, s_in, z_in, s_out, z_out, lo, hi, stride, pad, dilation, relu=)"),
    _k("maxpool_int8", "mnnlite.ref.int8:maxpool_int8_ref", "mnnlite.kernels.int8:maxpool_int8", None,
       "maxpool_int8(xq, kernel, stride, pad, x86_max_bug=)"),
    _k("avgpool_int8", "mnnlite.ref.int8:avgpool_int8_ref", "mnnlite.kernels.int8:avgpool_int8", None,
       "avgpool_int8(xq, kernel, stride, pad)"),
    _k("dequantize", "mnnlite.ref.int8:dequantize", "mnnlite.int8.fastq:dequantize", None,
       "dequantize(q, scale, zero): (q - z) * s in float32"),
    _k("quantize", "mnnlite.ref.int8:quantize", "mnnlite.int8.fastq:quantize", None,
       "quantize(x, scale, zero, qmin, qmax): MNN's FloatToInt8 cast"),
    _k("code_table2", "mnnlite.ref.int8:CodeFunction2", "mnnlite.int8.fastq:BinaryTable", None,
       "CodeTable2(fn)(qa, qb): an int8 binary function of two codes (fast: its 256 x 256 table, gathered)"),
    _k("code_table", "mnnlite.ref.int8:UnaryTableRef", "mnnlite.int8.fastq:UnaryTable", None,
       "UnaryTable(table)(q): MNN's int8 lookup table[q + 127] (fast: a 256-entry gather)"),
])

_RESOLVED: dict[tuple[str, str], Callable] = {}


def resolve(path: str) -> Callable:
    """The object a ``"module:attribute"`` form names."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def form(name: str, impl: str) -> Callable:
    """The form of kernel ``name`` that ``impl`` runs ("ref", "fast" or "mnn"; see the module doc)."""
    fn = _RESOLVED.get((name, impl))
    if fn is None:
        kernel = KERNELS[name]
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, not {impl!r}")
        chain = {"ref": (kernel.ref,), "fast": (kernel.fast, kernel.ref), "mnn": (kernel.mnn, kernel.fast, kernel.ref)}
        fn = _RESOLVED[(name, impl)] = resolve(next(p for p in chain[impl] if p))
    return fn


__all__ = ["IMPLS", "KERNELS", "Kernel", "form", "resolve"]
