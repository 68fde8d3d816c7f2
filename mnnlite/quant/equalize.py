"""Cross-layer equalization (config ``"cross_layer_equalization": true``): rescale consecutive convs so
each channel's weight range is shared evenly between them, before quantization.

For a pair ``conv1 -> [act] -> conv2`` where ``act`` is positively homogeneous (``act(x / s) = act(x) / s``
for ``s > 0``: none, ReLU, leaky ReLU, PReLU), dividing output channel ``i`` of conv1 (weights and
bias) by ``s_i`` and multiplying input channel ``i`` of conv2 by ``s_i`` leaves the float model's
function unchanged.  With ``r1_i`` the range (max |w|) of conv1's output channel ``i`` and ``r2_i``
that of conv2's input channel ``i``, ``s_i = sqrt(r1_i / r2_i)`` makes both ``sqrt(r1_i * r2_i)``:
per-channel int8 weights then lose less on the channels that had a tiny range on one side (typical
after batch-norm folding in depthwise layers: MobileNet, PP-OCR).  Chains (conv -> depthwise -> conv)
share their middle conv between two pairs, so the pairs are equalized in turn until the scales settle.
(The method: Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction", §4.1.)

ReLU6 (and a conv with a fused ReLU6) is *not* positively homogeneous: ``min(max(x / s, 0), 6) !=
min(max(x, 0), 6) / s``, and MNN's ReLU6 bounds are one pair per op, not per channel, so they cannot
absorb a per-channel scale.  Such pairs are left alone (AIMET instead rewrites ReLU6 into ReLU before
equalizing, which changes the float model; we keep the model's function exact).  So do pairs whose
middle tensor is read by another op or is a model output, and convs whose weights are not in the op.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..format.tables import OpType
from ..graph import Model

_CONVS = (OpType.Convolution, OpType.ConvolutionDepthwise)
MAX_SWEEPS = 50           # chains converge in a handful of sweeps; this bounds pathological cases
SETTLED = 1e-4            # stop once no scale moves by more than this (relative)
SCALE_RANGE = (1e-4, 1e4)  # a scale outside this would only trade one underflowing range for another


@dataclass(frozen=True)
class Pair:
    """Two convs of the float model to equalize: positions in the main graph's op list."""

    first: int
    second: int


@dataclass
class Equalized:
    """The result: the rewritten model and the pairs it equalized (names, for the report)."""

    model: Model
    pairs: list[tuple[str, str]]
    sweeps: int


def _ints(v) -> list[int]:
    return [] if v is None else [int(x) for x in v]


def _conv_with_weights(op) -> bool:
    main = op.main
    return (op.type in _CONVS and main is not None and main.common is not None and len(_ints(op.inputIndexes)) == 1
            and len(_ints(op.outputIndexes)) == 1)


def _scale_equivariant(op) -> bool:
    """An op between the pair that commutes with a positive per-channel scale."""
    if op.type == OpType.ReLU:
        return True                      # ReLU and leaky ReLU (slope) alike
    return op.type == OpType.PReLU


def find_pairs(graph) -> list[Pair]:
    """conv -> [ReLU / leaky ReLU / PReLU] -> conv, each intermediate tensor read only by the next op."""
    position = {id(op): p for p, op in enumerate(graph.ops)}
    outputs = set(graph.outputs)

    def only_reader(t: int):
        readers = graph.consumers.get(t, [])
        return readers[0] if len(readers) == 1 and t not in outputs else None

    pairs = []
    for pos, op in enumerate(graph.ops):
        if not _conv_with_weights(op) or op.main.common.relu6:
            continue
        nxt = only_reader(_ints(op.outputIndexes)[0])
        if nxt is not None and _scale_equivariant(nxt) and len(_ints(nxt.outputIndexes)) == 1:
            nxt = only_reader(_ints(nxt.outputIndexes)[0])
        if nxt is not None and _conv_with_weights(nxt):
            pairs.append(Pair(pos, position[id(nxt)]))
    return pairs


class _Weights:
    """Float64 working copies of the weights and biases of the convs being equalized."""

    def __init__(self, graph, positions):
        from ..ops.weights import conv_weights

        self.w, self.b = {}, {}
        for pos in positions:
            w, b = conv_weights(graph.ops[pos])
            self.w[pos] = np.asarray(w, np.float64).copy()          # [O, C/g, KH, KW]
            self.b[pos] = np.asarray(b, np.float64).reshape(-1).copy()
        self.groups = {pos: max(int(graph.ops[pos].main.common.group or 1), 1) for pos in positions}

    def input_columns(self, pos: int, channels: int):
        """For each input channel of conv ``pos``: (output rows, column) holding its weights."""
        w = self.w[pos]
        out_count, per_group = w.shape[0], w.shape[1]
        groups = channels // per_group if per_group else 0
        if per_group == 0 or groups * per_group != channels or out_count % max(groups, 1):
            return None
        rows = out_count // groups
        return [(slice((i // per_group) * rows, (i // per_group + 1) * rows), i % per_group)
                for i in range(channels)]

    def equalize(self, pair: Pair) -> float:
        """One equalization step; returns the largest relative scale change."""
        w1, w2 = self.w[pair.first], self.w[pair.second]
        channels = w1.shape[0]
        columns = self.input_columns(pair.second, channels)
        if columns is None:
            return 0.0
        r1 = np.abs(w1.reshape(channels, -1)).max(axis=1)
        r2 = np.array([np.abs(w2[rows, col]).max() for rows, col in columns])
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.sqrt(r1 / r2)
        s = np.where(np.isfinite(s) & (r1 > 0) & (r2 > 0), s, 1.0)
        s = np.clip(s, *SCALE_RANGE)
        w1 /= s.reshape(-1, 1, 1, 1)
        self.b[pair.first] /= s
        for i, (rows, col) in enumerate(columns):
            w2[rows, col] *= s[i]
        return float(np.abs(s - 1.0).max()) if s.size else 0.0


def equalize(model: Model, pairs: list[Pair] | None = None) -> Equalized:
    """A copy of ``model`` with every equalizable pair equalized (the source model is not touched)."""
    graph = model.graph
    pairs = find_pairs(graph) if pairs is None else pairs
    if not pairs:
        return Equalized(model, [], 0)
    weights = _Weights(graph, sorted({p for pair in pairs for p in (pair.first, pair.second)}))
    sweeps = 0
    for sweeps in range(1, MAX_SWEEPS + 1):
        moved = max(weights.equalize(pair) for pair in pairs)
        if moved < SETTLED:
            break
    net = copy.copy(model.net)
    net.oplists = list(model.net.oplists)
    for pos in weights.w:
        op = copy.copy(net.oplists[pos])
        op.main = copy.copy(op.main)
        op.main.weight = weights.w[pos].astype(np.float32).reshape(-1)
        op.main.bias = weights.b[pos].astype(np.float32)
        op.main.quanParameter = None           # decoded above: the rewritten weights are float32
        op.main.external = None
        op.externalPath = None
        net.oplists[pos] = op
    names = [(graph.ops[p.first].name, graph.ops[p.second].name) for p in pairs]
    return Equalized(Model(net, path=model.path, external_weights=model.external_weights), names, sweeps)


__all__ = ["Pair", "Equalized", "find_pairs", "equalize"]
