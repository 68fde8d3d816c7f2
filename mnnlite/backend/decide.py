"""MNN's per-command int8 decision over the lowered commands (docs/mnn-quantization.md §13.1).

1. Quant attributes (one object per tensor of the file; identity matters for ReLU) spread to tensors
   without one along Raster/ReLU/ReLU6/Pooling/Interp/CropAndResize/ROIPooling commands, forward from
   single-input commands and backward to the inputs of single-output ones, at most 3 rounds
   (``Pipeline::encode``, "Propagate Scale").
2. A command runs int8 iff its first output has an attribute and ``support_quant`` agrees
   (``CPURuntimeCreator::_supportQuant``); a FloatToInt8 / Int8ToFloat cast is inserted before every float
   input whose producer's mode differs (cached per tensor).  Unnamed commands are named
   ``<op>_raster_<k>`` (``OperatorInfo``'s naming), so the list compares with the official runtime's
   debug callbacks.
"""
from __future__ import annotations

import random

import numpy as np

from ..format.tables import PoolType
from .lowering import Command
from .rules import PROPAGATE_TYPES, QUANT_TYPE, UNARY_INT8_WITHOUT_TABLE

_F32 = np.float32


class QuantAttr:
    """A tensor's quant attribute (MNN's ``QuantAttr``); compared by identity where MNN compares pointers."""

    __slots__ = ("scale", "zero", "min", "max", "type", "key", "qrange")

    def __init__(self, scale, zero=0.0, qmin=-127.0, qmax=127.0, type_=QUANT_TYPE):
        self.scale, self.zero = _F32(scale), _F32(zero)
        self.min, self.max = _F32(qmin), _F32(qmax)
        self.type = int(type_) or int(QUANT_TYPE)          # DT_INVALID keeps the default (InitNet.cpp)
        # fixed at construction (an attribute never changes): read on every int8 step of every run
        self.key = (float(self.scale), float(self.zero))    # what an int8 Raster compares
        self.qrange = (int(self.min), int(self.max))

    @classmethod
    def from_info(cls, info) -> "QuantAttr":
        return cls(info.scale, info.zero, info.min, info.max, info.type)

    def __repr__(self):
        return f"QuantAttr(scale={float(self.scale):.6g}, zero={float(self.zero):g}, [{self.min:g}, {self.max:g}])"


def _weight_inline(params) -> bool:
    return getattr(params, "weight", None) is not None


def support_quant(cmd: Command, tensors: dict) -> bool:
    """CPURuntimeCreator::_supportQuant (MNN_SUPPORT_QUANT_EXTEND on, the default build)."""
    ins = [tensors[t] for t in cmd.inputs]
    if any(t.attr is None or t.attr.type != QUANT_TYPE for t in ins):
        return False
    out = tensors[cmd.outputs[0]]
    kind, p = cmd.type, cmd.params
    if kind in ("Convolution", "ConvolutionDepthwise"):
        return len(ins) == 1 and not _weight_inline(p)
    if kind in ("ConvInt8", "DepthwiseConvInt8"):
        return True
    if kind == "Raster":
        return all(t.attr.key == out.attr.key and t.attr.scale != 0 and out.attr.scale != 0 for t in ins)
    if kind == "Pooling":
        return ins[0].attr.key == out.attr.key and p is not None and int(p.type) in (PoolType.MAXPOOL,
                                                                                      PoolType.AVEPOOL)
    if kind in ("Softmax", "LayerNorm", "BinaryOp", "Scale", "Interp", "PReLU"):
        return True
    if kind == "ReLU":
        slope = getattr(p, "slope", 0.0) if p is not None else 0.0
        return ins[0].attr is out.attr and slope == 0
    if kind == "UnaryOp":
        table = getattr(p, "tableInt8", None)
        return (table is not None and len(table) > 0) or int(p.opType) in UNARY_INT8_WITHOUT_TABLE
    return False


# ------------------------------------------------------------------------------------------ propagation

def propagate_attrs(buffers, tensors: dict, order: random.Random | None = None) -> None:
    """Pipeline::encode "Propagate Scale": forward/backward maps, N->1 pruning, <= 3 rounds.  MNN iterates
    the start tensors and each tensor's targets as ``std::set<const Tensor*>``, i.e. in the order of heap
    addresses; we take the commands' order, or with ``order`` a random one (``order_dependent``)."""
    forward, backward = {}, {}
    for _, buffer in buffers:
        for cmd in buffer:
            if cmd.type not in PROPAGATE_TYPES:
                continue
            vin = [t for t in cmd.inputs if tensors[t].is_float]
            vout = [t for t in cmd.outputs if tensors[t].is_float]
            if len(vin) == 1:
                for t in vout:
                    if tensors[t].attr is None:
                        _insert(forward, vin[0], t)
            if len(vout) == 1:
                for t in vin:
                    if tensors[t].attr is None:
                        _insert(backward, vout[0], t)
    starts = (_starts(forward, backward), _starts(backward, forward))
    if order is not None:
        for seq in (*starts, *forward.values(), *backward.values()):
            order.shuffle(seq)
    for _ in range(3):
        if not (_spread(tensors, forward, starts[0]) or _spread(tensors, backward, starts[1])):
            break


ORDER_TRIALS = 8        # random heap orders order_dependent tries besides the commands' own


def order_dependent(buffers, tensors: dict, file_attrs: dict, trials: int = ORDER_TRIALS) -> dict:
    """{tensor: [attributes]} for the tensors whose propagated attribute depends on the order MNN's
    propagation visits tensors in, i.e. on where its allocator put them (README, How MNN really behaves:
    ddddocr det's SiLU output read by an Interp into one Concat and by another Concat takes the scale of
    either).  Replays the propagation from ``file_attrs`` (the attributes before it) in the commands' order
    and in ``trials`` seeded random ones; ``tensors`` keep their current attributes."""
    current = {k: t.attr for k, t in tensors.items()}
    rng = random.Random(0)
    outcomes = []
    for trial in range(trials + 1):
        for k, t in tensors.items():
            t.attr = file_attrs.get(k)
        propagate_attrs(buffers, tensors, rng if trial else None)
        outcomes.append({k: t.attr for k, t in tensors.items()})
    for k, t in tensors.items():
        t.attr = current[k]
    found = {}
    for k in tensors:
        seen = []
        for outcome in outcomes:
            a = outcome[k]
            if a is not None and all(a is not b for b in seen):
                seen.append(a)
        if len(seen) > 1:
            found[k] = seen
    return found


def _spread(tensors, mapping, starts) -> bool:
    changed = False
    for t in starts:
        changed |= _spread_from(tensors, mapping, t)
    return changed


def _spread_from(tensors, mapping, t) -> bool:
    attr = tensors[t].attr
    if attr is None or t not in mapping:
        return False
    changed = False
    for x in mapping[t]:
        if tensors[x].attr is not attr:
            tensors[x].attr = attr
            changed = True
        changed |= _spread_from(tensors, mapping, x)
    return changed


def _insert(mapping, key, value):
    mapping.setdefault(key, [])
    if value not in mapping[key]:
        mapping[key].append(value)


def _starts(mapping, anti) -> list:
    """Keys that are no value, after dropping keys that feed a many-to-one entry of the other map."""
    for targets in list(anti.values()):
        if len(targets) > 1:
            for t in targets:
                mapping.pop(t, None)
    leaves = {t for targets in mapping.values() for t in targets}
    return [k for k in mapping if k not in leaves]


# ------------------------------------------------------------------------------------------ decision

def decide(buffers, tensors: dict) -> list[Command]:
    """Int8 or float per command; casts before inputs whose mode differs; MNN's command names.  Returns
    every command in execution order (casts included)."""
    cast_cache = {}
    commands = []
    for op, buffer in buffers:
        final = []
        for cmd in buffer:
            out = tensors[cmd.outputs[0]]
            use = out.attr is not None and support_quant(cmd, tensors)
            if use and cmd.type == "BinaryOp":
                # float inputs are cast to int8 below; integer ones hold codes only if an int8 command wrote them
                cmd.int8_kernel = all(tensors[i].is_float or tensors[i].int8 for i in cmd.inputs)
            if out.attr is not None:
                for o in cmd.outputs:
                    tensors[o].int8 = use
            cmd.int8 = use
            for i in cmd.inputs:
                t = tensors[i]
                if t.int8 != use and t.is_float and i not in cast_cache:
                    cast = Command("FloatToInt8" if use else "Int8ToFloat", op, [i], [f"cast:{i}"], int8=use)
                    cast_cache[i] = cast
                    final.append(cast)
            final.append(cmd)
        for k, cmd in enumerate(final):
            cmd.name = op.name if cmd.named and op.name else f"{op.name}_raster_{k}"
        commands.extend(final)
    return commands
