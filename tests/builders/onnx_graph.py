"""ONNX graphs for the official converter, built with ``onnx.helper`` (test-only code; needs ``onnx``).

* ``onnx_graph(nodes, inputs, outputs, inits)``: a ModelProto from prepared NodeProtos (few-node tests);
* ``save_onnx(path, ...)``: the same, written to a file;
* ``Graph``: a model written layer by layer, with named nodes, deterministic weights (seeded by the
  graph's name) and output shapes from shape inference (the zoo's synthetic models).
"""
from __future__ import annotations

import math
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np


def onnx_graph(nodes, inputs, outputs, inits=None, opset: int = 13, name: str = "g"):
    """nodes: onnx NodeProtos; inputs: [(name, shape)] or [(name, shape, elem)]; outputs: names, (name, elem)
    or (name, elem, shape); elem: a TensorProto type, by number or name ("INT64"), default FLOAT;
    inits: {name: array}."""
    from onnx import TensorProto, helper, numpy_helper

    def elem(spec, k):
        e = spec[k] if len(spec) > k else TensorProto.FLOAT
        return getattr(TensorProto, e) if isinstance(e, str) else e

    ins = [helper.make_tensor_value_info(i[0], elem(i, 2), i[1]) for i in inputs]
    outs = [helper.make_tensor_value_info(o[0], elem(o, 1), o[2] if len(o) > 2 else None)
            for o in ((o,) if isinstance(o, str) else tuple(o) for o in outputs)]
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, name, ins, outs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def save_onnx(path, nodes, inputs, outputs, inits=None, opset: int = 13) -> None:
    """``onnx_graph(...)`` saved to ``path``."""
    import onnx

    onnx.save(onnx_graph(nodes, inputs, outputs, inits, opset), str(path))


def seed_of(text: str) -> int:
    # Python's hash() is salted per process; crc32 is stable.
    return zlib.crc32(text.encode())


class Graph:
    """Tiny helper over onnx.helper: named nodes, deterministic weights, auto output shapes."""

    def __init__(self, name: str):
        from onnx import helper

        self.h = helper
        self.name = name
        self.rng = np.random.default_rng(seed_of(name))
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.outputs: List[Tuple[str, int]] = []
        self._count = 0

    # -- plumbing -------------------------------------------------------------------------------
    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def input(self, name: str, shape: Sequence, elem: str = "FLOAT") -> str:
        from onnx import TensorProto

        self.inputs.append(self.h.make_tensor_value_info(name, getattr(TensorProto, elem), list(shape)))
        return name

    def output(self, tensor: str, name: Optional[str] = None, elem: str = "FLOAT") -> str:
        """Declare a graph output; renames ``tensor`` (the last node output) to ``name``."""
        from onnx import TensorProto

        if name and name != tensor:
            tensor = self.op("Identity", [tensor], out=name)
        self.outputs.append((tensor, getattr(TensorProto, elem)))
        return tensor

    def const(self, value, dtype=np.float32, name: Optional[str] = None) -> str:
        from onnx import numpy_helper

        name = name or self.fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values) -> str:
        return self.const(values, np.int64)

    def op(self, op_type: str, inputs: Sequence[str], out=None, n_out: int = 1, **attrs):
        if out is None:
            outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        self.nodes.append(self.h.make_node(op_type, list(inputs), outs, name=outs[0] + "_node", **attrs))
        return outs[0] if len(outs) == 1 else outs

    # -- weights --------------------------------------------------------------------------------
    def randn(self, shape, std: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * std).astype(np.float32)

    def weight(self, shape, fan_in: int) -> str:
        return self.const(self.randn(shape, math.sqrt(2.0 / max(fan_in, 1))))

    # -- layers ---------------------------------------------------------------------------------
    def conv(self, x, cin, cout, k=3, s=1, p=None, group=1, dilation=1, bias=True):
        p = (k // 2) * dilation if p is None else p
        pads = list(p) if isinstance(p, (list, tuple)) else [p] * 4
        w = self.weight((cout, cin // group, k, k), cin // group * k * k)
        ins = [x, w] + ([self.const(self.randn(cout, 0.1))] if bias else [])
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[s, s], pads=pads,
                       group=group, dilations=[dilation, dilation])

    def bn(self, x, c):
        gamma = self.const(1.0 + self.randn(c, 0.1))
        beta = self.const(self.randn(c, 0.1))
        mean = self.const(self.randn(c, 0.1))
        var = self.const(np.abs(1.0 + self.randn(c, 0.2)) + 0.05)
        return self.op("BatchNormalization", [x, gamma, beta, mean, var], epsilon=1e-5)

    def relu6(self, x):
        return self.op("Clip", [x, self.const(0.0), self.const(6.0)])

    def linear(self, x, din, dout, bias=True):
        """MatMul with a constant [din, dout] weight (+ bias Add), as exported by PyTorch."""
        y = self.op("MatMul", [x, self.weight((din, dout), din)])
        return self.op("Add", [y, self.const(self.randn(dout, 0.05))]) if bias else y

    def gelu_erf(self, x):
        """x * 0.5 * (1 + erf(x / sqrt(2))), the PyTorch export pattern MNN fuses or keeps."""
        e = self.op("Erf", [self.op("Div", [x, self.const(math.sqrt(2.0))])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, self.const(1.0)])]), self.const(0.5)])

    def layer_norm(self, x, d):
        return self.op("LayerNormalization", [x, self.const(1.0 + self.randn(d, 0.1)),
                                              self.const(self.randn(d, 0.1))], axis=-1, epsilon=1e-5)

    # -- finish ---------------------------------------------------------------------------------
    def model(self, opset: int = 13):
        import onnx

        outs = [self.h.make_tensor_value_info(n, e, None) for n, e in self.outputs]
        graph = self.h.make_graph(self.nodes, self.name, self.inputs, outs, self.inits)
        model = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", opset)],
                                  producer_name="mnnlite-model-zoo")
        model.ir_version = min(model.ir_version, 8)  # readable by older onnx too
        fill_output_shapes(model)
        onnx.checker.check_model(model, full_check=True)
        return model


def fill_output_shapes(model) -> None:
    """Graph outputs need a shape field for the checker: take it from ONNX shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in model.graph.output:
        if not out.type.tensor_type.HasField("shape") and out.name in known:
            if known[out.name].type.tensor_type.HasField("shape"):
                out.type.CopyFrom(known[out.name].type)
        if not out.type.tensor_type.HasField("shape"):
            out.type.tensor_type.shape.SetInParent()
