"""MNN's int8 Winograd convolution (ConvInt8Winograd), used for convs whose ``symmetricQuan`` carries a
``winogradAttr`` (EMA-quantized 3x3 stride-1 convs, docs/mnn-quantization.md §9 / §13.4).  numpy, float32 in
MNN's order of operations (x86 AVX2 build: no FMA), so results match the official runtime.

MNN 3.6.1 source: ``backend/cpu/compute/ConvInt8Winograd.cpp``, ``math/WingoradGenerater.cpp``,
``backend/cpu/x86_x64/avx/WinogradFunctions.cpp`` (the unrolled transforms), the float post-treatment of
``_AVX_MNNGemmInt8AddBiasScale_16x4_Unit``.  Per Winograd unit (``winogradAttr``: version 0, unit
count, then per unit ``size, kyStart, kxStart, ky, kx, unitY, unitX``, alpha^2 input scales (float
bits), alpha^2 input zero points, alpha^2 * oc weight scales):

1. weights: ``G (q_w * alpha) G^T`` in float (the generator's G, divided by its fdiag), quantized per
   (position, oc) with the attr's weight scale: ``clamp(roundf(w / s + ±1e-6), ±127)``;
2. input: ``(q - z_in) * s_in``, zero outside the image; per output tile the AVX2 source transform
   (along x, then y); per position a: ``quantize(x, s_a, z_a, -127, 127)``;
3. ``acc = sum (q + 128) * q_w`` (int32), ``m = float(acc) * (s_w * s_a) + offset_a`` where
   ``offset_a = (sum_ic q_w * (-z_a) + q_w * (-128)) * s_w * s_a`` accumulated in float;
4. the AVX2 destination transform (along y, then x), units summed;
5. ``q = round(clamp(y * float(1.0 / scaleOut) + (bias / scaleOut + outputZeroPoint)))`` with the op's
   ``scaleOut`` / ``outputZeroPoint`` and the output tensor's [min, max] (min = z_out with relu).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedOpError
from ..ref.int8 import mnn_round

F32 = np.float32


# ------------------------------------------------------------------------------------- generator

def _points(alpha: int) -> np.ndarray:
    """0, 1, -1, 2, -2, ... (interp 1): WinogradGenerater's polynomial points."""
    a = np.zeros(alpha, F32)
    sign = 1
    for i in range(alpha - 1):
        a[i + 1] = F32(sign * (1 + i // 2))
        sign = -sign
    return a


def _fdiag(a: np.ndarray, alpha: int) -> np.ndarray:
    d = np.ones(alpha, F32)
    for x in range(alpha - 1):
        p = F32(1)
        for i in range(alpha - 1):
            if i != x:
                p = F32(p * F32(a[x] - a[i]))
        d[x] = p
    if d[0] < 0:
        d[0] = -d[0]
    return d


def generator_g(alpha: int, r: int) -> np.ndarray:
    """[alpha, r] G of WinogradGenerater(unit, kernel, interp=1, dividedInG=true)."""
    a = _points(alpha)
    g = np.zeros((alpha, r), F32)
    for y in range(r):                        # computeA(a, alpha, r), transposed
        for x in range(alpha - 1):
            g[x, y] = F32(1) if x == 0 and y == 0 else F32(np.float32(a[x]) ** F32(y))
        g[alpha - 1, y] = F32(1) if y == r - 1 else F32(0)
    return (g / _fdiag(a, alpha)[:, None]).astype(F32)


def _matmul_seq_batched(g: np.ndarray, k: np.ndarray) -> np.ndarray:
    """g [A, r] times every k [..., r, c], float32 sums in index order -> [..., A, c]."""
    out = np.zeros(k.shape[:-2] + (g.shape[0], k.shape[-1]), F32)
    for i in range(g.shape[1]):
        out = (out + (g[:, i][:, None] * k[..., i:i + 1, :]).astype(F32)).astype(F32)
    return out


# ------------------------------------------------------------------------------------- transforms

def _src_transform(s: list) -> list:
    """AVX2 _sourceUnrollTransformUnit4x4 / 6x6 on a list of arrays (one per source position)."""
    if len(s) == 4:
        s0, s1, s2, s3 = s
        return [s0 - s2, s1 + s2, s2 - s1, s3 - s1]
    if len(s) == 6:
        s0, s1, s2, s3, s4, s5 = s
        m4 = F32(-4)
        mid0 = s4 + s2 * m4
        mid1 = s3 + s1 * m4
        mid2 = s2 + s0 * m4
        mid3 = s5 + s3 * m4
        mid4 = s4 - s2
        mid5 = (s3 - s1) * F32(2)
        return [mid0 - mid2, mid0 + mid1, mid0 - mid1, mid4 + mid5, mid4 - mid5, mid3 - mid1]
    raise UnsupportedOpError(f"int8 Winograd: no source transform for alpha {len(s)} (MNN has 4, 6, 8)")


def _dst_transform(s: list, unit: int) -> list:
    """AVX2 _destUnrollTransformUnit{alpha}x{unit}."""
    alpha = len(s)
    if alpha == 4 and unit == 2:
        s0, s1, s2, s3 = s
        return [s0 + s1 + s2, (s1 - s2) + s3]
    if alpha == 4 and unit == 3:
        s0, s1, s2, s3 = s
        return [s0 + s1 + s2, s1 - s2, (s1 + s2) + s3]
    if alpha == 6 and unit == 4:
        s0, s1, s2, s3, s4, s5 = s
        v0, v1, v2, v3 = s3 + s4, s3 - s4, s1 + s2, s1 - s2
        return [s0 + v2 + v0, v3 + v1 + v1, v2 + v0 * F32(4), v3 + v1 * F32(8) + s5]
    if alpha == 6 and unit in (2, 3, 5):
        s0, s1, s2, s3, s4, s5 = s
        if unit == 5:
            return [s0 + s1 + s2 + s3 + s4, (s1 - s2) + (s3 - s4) * F32(2), (s1 + s2) + (s3 + s4) * F32(4),
                    (s1 - s2) + (s3 - s4) * F32(8), (s1 + s2) + (s3 + s4) * F32(16) + s5]
    raise UnsupportedOpError(f"int8 Winograd: destination transform alpha {alpha} unit {unit} is not implemented")


# ------------------------------------------------------------------------------------- units

@dataclass
class WinoUnit:
    ky_start: int
    kx_start: int
    ky: int
    kx: int
    unit_y: int
    unit_x: int
    in_scales: np.ndarray         # [alpha2] float32
    in_zeros: np.ndarray          # [alpha2] int
    weights: np.ndarray           # [alpha2, oc, ic] int8 codes in the Winograd domain
    scales: np.ndarray            # [alpha2, oc] float32: s_w * s_a
    offsets: np.ndarray           # [alpha2, oc] float32

    @property
    def alpha(self) -> int:
        return self.ky + self.unit_y - 1


def parse_units(attr, codes: np.ndarray, alpha_w: np.ndarray) -> list[WinoUnit]:
    """ConvInt8Winograd's constructor + makeWinoResource: the per-unit transformed int8 weights."""
    attr = np.asarray(attr, np.int32)
    if int(attr[0]) != 0:
        raise UnsupportedOpError(f"int8 Winograd: winogradAttr version {int(attr[0])}, MNN reads only 0")
    count, pos = int(attr[1]), 2
    oc, ic, kh, kw = codes.shape
    units = []
    for _ in range(count):
        size = int(attr[pos])
        ky0, kx0, ky, kx, uy, ux = (int(v) for v in attr[pos + 1:pos + 7])
        alpha_y, alpha_x = ky + uy - 1, kx + ux - 1
        if alpha_y != alpha_x:
            raise UnsupportedOpError("int8 Winograd: MNN supports only alphaY == alphaX")
        a2 = alpha_y * alpha_x
        body = attr[pos + 7:pos + 7 + 2 * a2 + a2 * oc]
        in_scales = body[:a2].view(F32).copy()
        in_zeros = body[a2:2 * a2].astype(np.int64)
        w_scales = body[2 * a2:].view(F32).reshape(a2, oc)
        pos += 1 + size
        # weight window: MNN offsets the weights by kyStart * kernelY + kxStart (sic)
        flat = codes.reshape(oc * ic, kh * kw)
        start = ky0 * kh + kx0
        win = np.stack([flat[:, start + h * kw: start + h * kw + kx] for h in range(ky)], axis=1)
        kernel = (win.astype(F32) * np.repeat(alpha_w.astype(F32), ic)[:, None, None]).astype(F32)
        g, g_right = generator_g(alpha_y, ky), generator_g(alpha_x, kx).T.copy()
        m = _matmul_seq_batched(g, kernel)                                  # [oc*ic, alpha, kx]
        kt = _matmul_seq_batched(g_right.T.copy(), m.transpose(0, 2, 1)).transpose(0, 2, 1)   # M G_right
        wf = kt.reshape(oc, ic, a2).transpose(2, 0, 1)                     # [a2, oc, ic]
        ratio = (wf / w_scales[:, :, None]).astype(F32)
        eps = np.where(ratio > 0, F32(1e-6), F32(-1e-6)).astype(F32)
        q = np.clip(_roundf(ratio + eps), -127, 127).astype(np.int8)
        offsets = np.zeros((a2, oc), F32)
        for c in range(ic):
            qc = q[:, :, c].astype(np.int64)
            offsets = (offsets + (qc * (-in_zeros[:, None])).astype(F32)).astype(F32)
            offsets = (offsets + (qc * -128).astype(F32)).astype(F32)
        scales = (w_scales * in_scales[:, None]).astype(F32)
        offsets = ((offsets * w_scales).astype(F32) * in_scales[:, None]).astype(F32)
        units.append(WinoUnit(ky0, kx0, ky, kx, uy, ux, in_scales, in_zeros, q, scales, offsets))
    return units


def _roundf(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.where(x < 0, -np.floor(-x + 0.5), np.floor(x + 0.5))


def _quantize_positions(x, scales, zeros) -> np.ndarray:
    """MNNFloat2Int8 per Winograd position p: roundf(clamp(x * (1/s_p) + z_p, -127, 127))."""
    inv = (F32(1) / scales.astype(F32)).astype(F32)
    shape = (-1,) + (1,) * (x.ndim - 1)
    f = (x * inv.reshape(shape)).astype(F32)
    f += zeros.astype(F32).reshape(shape)
    np.clip(f, F32(-127), F32(127), out=f)
    f += np.copysign(F32(0.5), f)
    np.trunc(f, out=f)
    f[np.isnan(f)] = 127
    return f.astype(np.int8)


def _run_unit(u: WinoUnit, x: np.ndarray, pad_y: int, pad_x: int, oh: int, ow: int) -> np.ndarray:
    """One unit on the float input x [N, C, H, W] -> float [N, OC, OH, OW]."""
    n, c, h, w = x.shape
    alpha, uy, ux = u.alpha, u.unit_y, u.unit_x
    hu, wu = -(-oh // uy), -(-ow // ux)
    # zero-padded input so every tile window exists
    top, left = pad_y, pad_x
    bottom = max((hu - 1) * uy - top + alpha - h, 0)
    right = max((wu - 1) * ux - left + alpha - w, 0)
    xp = np.zeros((n, c, h + top + bottom, w + left + right), F32)
    xp[:, :, top:top + h, left:left + w] = x
    # tiles[y, x] = the window element (y, x) of every tile: [alpha, alpha, N, C, hu, wu]
    win = np.lib.stride_tricks.sliding_window_view(xp, (alpha, alpha), axis=(2, 3))
    tiles = win[:, :, :(hu - 1) * uy + 1:uy, :(wu - 1) * ux + 1:ux].transpose(4, 5, 0, 1, 2, 3)
    along_x = _src_transform([tiles[:, k] for k in range(alpha)])         # [kx] of [y, ...]
    along_x = np.stack(along_x, axis=1)                                    # [y, kx, ...]
    trans = np.stack(_src_transform([along_x[k] for k in range(alpha)]))  # [ky, kx, ...]
    a2 = alpha * alpha
    flat = trans.reshape((a2,) + trans.shape[2:])                          # [a2, N, C, hu, wu]
    oc = u.weights.shape[1]
    # per position: quantize (MNNFloat2Int8, clamp +-127), then sum (q + 128) * q_w exactly: float32
    # BLAS is exact while every partial sum stays below 2^24, else float64
    q = _quantize_positions(flat, u.in_scales, u.in_zeros)
    exact32 = c * 255 * 127 < 2 ** 24
    dt = F32 if exact32 else np.float64
    qf = (q.astype(np.int16) + 128).astype(dt).transpose(0, 2, 1, 3, 4).reshape(a2, c, -1)   # [a2, C, N*T]
    acc = np.matmul(u.weights.astype(dt), qf)                              # [a2, OC, N*T]
    acc = acc.astype(np.int64).astype(F32)                                 # cvtepi32_ps
    m = (acc * u.scales[:, :, None]).astype(F32)
    m += u.offsets[:, :, None]
    m = m.reshape(a2, oc, n, hu, wu).transpose(0, 2, 1, 3, 4)            # [a2, N, OC, hu, wu]
    grid = [[m[ky * alpha + kx] for kx in range(alpha)] for ky in range(alpha)]
    along_y = [_dst_transform([grid[ky][kx] for ky in range(alpha)], uy) for kx in range(alpha)]   # [kx][j]
    out = np.zeros((n, oc, hu * uy, wu * ux), F32)
    for j in range(uy):
        row = _dst_transform([along_y[kx][j] for kx in range(alpha)], ux)  # [l]
        for li in range(ux):
            out[:, :, j::uy, li::ux] = row[li]
    return out[:, :, :oh, :ow]


def conv2d_int8_winograd(xq, units: list[WinoUnit], bias, s_in, z_in, scale_out, zero_out, lo, hi,
                         pad, out_size) -> np.ndarray:
    """ConvInt8Winograd::onExecute on int8 codes [N, C, H, W] -> int8 codes [N, OC, OH, OW].

    ``scale_out``/``zero_out``: the op's quanParameter.scaleOut and symmetricQuan.outputZeroPoint;
    ``lo``/``hi``: the output tensor's min (its zero point with relu) and max."""
    x = ((np.asarray(xq, np.int32) - int(z_in)).astype(F32) * F32(s_in)).astype(F32)
    oh, ow = out_size
    pad_y, pad_x = pad
    merged = None
    for u in units:
        sy, sx = max(u.ky_start - pad_y, 0), max(u.kx_start - pad_x, 0)
        y = _run_unit(u, x[:, :, sy:, sx:], max(pad_y - u.ky_start, 0), max(pad_x - u.kx_start, 0), oh, ow)
        merged = y if merged is None else (merged + y).astype(F32)
    inv = F32(1.0 / np.float64(F32(scale_out)))
    fused = (np.asarray(bias, F32) / F32(scale_out) + F32(zero_out)).astype(F32)
    f = (merged * inv).astype(F32) + fused[None, :, None, None]
    f = np.minimum(f, F32(hi))
    f = np.maximum(f, F32(lo)).astype(F32)
    return mnn_round(f).astype(np.int8)


__all__ = ["WinoUnit", "parse_units", "conv2d_int8_winograd", "generator_g"]
