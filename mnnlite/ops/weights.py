"""Float weights of Convolution / Deconvolution / InnerProduct ops, decoded once per op object.

A conv keeps its weights inline (``Convolution2D.weight``, float32) or compressed in ``quanParameter``
(IDSTQuan: ``--fp16``, ``--weightQuantBits``, offline-quantized models; docs/mnn-format.md §6.2).  MNN's CPU
backend prefers ``quanParameter`` when it is present (source/core/ConvolutionCommon.cpp ``load``), and
so do we.  Decoding is cached per op object; the cache entry is dropped when the op's parameter tables
are replaced, so a rewritten op is decoded again, and when the op itself is freed: the cache holds the op
by a weak reference, so a long-lived process (``regress``, a Ray worker, the mutation harness) that
loads model after model does not keep dead models, their mapped files and their decoded weights.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np

from ..errors import ShapeError
from ..format import idst
from ..format.tables import OpType

_DECONV_TYPES = (OpType.Deconvolution, OpType.DeconvolutionDepthwise)
_CACHE_BYTES = 1 << 30          # decoded weights kept at most (least recently used dropped first)
_cache: OrderedDict = OrderedDict()   # id(op) -> (weakref to op, keys, weight, bias)
_cached_bytes = 0


def clear_cache() -> None:
    global _cached_bytes
    _cache.clear()
    _cached_bytes = 0


def _drop(key: int, ref=None) -> None:
    """Remove ``_cache[key]`` (only if it still belongs to ``ref`` when given: ids are reused)."""
    global _cached_bytes
    entry = _cache.get(key)
    if entry is not None and (ref is None or entry[0] is ref):
        del _cache[key]
        _cached_bytes -= entry[2].nbytes + entry[3].nbytes


def _keys(op):
    main = op.main
    return (main, getattr(main, "weight", None), getattr(main, "quanParameter", None),
            getattr(main, "bias", None))


def _flat_weights(op, out_channels: int) -> np.ndarray:
    main = op.main
    quan = getattr(main, "quanParameter", None)
    if quan is not None and (quan.buffer is not None or quan.index is not None):
        return idst.decode_weights(quan, out_channels).reshape(-1)
    if main.weight is None:
        raise ShapeError(f"op {op.name!r} ({OpType(op.type).name}): no weights (neither weight nor quanParameter)")
    return np.asarray(main.weight, np.float32).reshape(-1)


def _conv_shape(op, count: int) -> tuple[int, int, int, int]:
    """[O, C/g, KH, KW] for convolutions, [C, O/g, KH, KW] for deconvolutions (docs/mnn-format.md §6.1)."""
    common = op.main.common
    kh, kw, out_c, group = common.kernelY, common.kernelX, common.outputCount, max(common.group, 1)
    if op.type in _DECONV_TYPES:
        per_group = out_c // group if op.type == OpType.Deconvolution else 1
        lead, second = count // max(per_group * kh * kw, 1), per_group
    else:
        lead, second = out_c, count // max(out_c * kh * kw, 1)
    if lead * second * kh * kw != count or count == 0:
        raise ShapeError(f"op {op.name!r} ({OpType(op.type).name}): {count} weights do not fit "
                         f"outputCount={out_c} group={group} kernel={kh}x{kw}")
    return lead, second, kh, kw


def _decode(op):
    if op.type == OpType.InnerProduct:
        out_c = op.main.outputCount
        weight = _flat_weights(op, out_c)
        if weight.size % max(out_c, 1):
            raise ShapeError(f"op {op.name!r} (InnerProduct): {weight.size} weights for outputCount={out_c}")
        weight = weight.reshape(out_c, -1)
    else:
        out_c = op.main.common.outputCount
        weight = _flat_weights(op, out_c)
        weight = weight.reshape(_conv_shape(op, weight.size))
    bias = op.main.bias
    bias = np.zeros(out_c, np.float32) if bias is None or len(bias) == 0 else np.asarray(bias, np.float32)
    return np.ascontiguousarray(weight, np.float32), np.ascontiguousarray(bias)


def conv_weights(op) -> tuple[np.ndarray, np.ndarray]:
    """``(weight, bias)`` float32 of a Convolution/ConvolutionDepthwise ([O, C/g, KH, KW]),
    Deconvolution/DeconvolutionDepthwise ([C, O/g, KH, KW]) or InnerProduct ([O, K]) op; bias [O]
    (zeros when the file has none).  Decoded once per op object."""
    global _cached_bytes
    key = id(op)
    entry = _cache.get(key)
    keys = _keys(op)
    if entry is not None and entry[0]() is op and all(a is b for a, b in zip(entry[1], keys)):
        _cache.move_to_end(key)
        return entry[2], entry[3]
    weight, bias = _decode(op)
    _drop(key)
    _cache[key] = (weakref.ref(op, lambda ref, key=key: _drop(key, ref)), keys, weight, bias)
    _cached_bytes += weight.nbytes + bias.nbytes
    while _cached_bytes > _CACHE_BYTES and len(_cache) > 1:
        _drop(next(iter(_cache)))
    return weight, bias
