"""Int8 execution of quantized models, as MNN's CPU backend runs them (docs/mnn-quantization.md §13).

``plan`` decides per op whether MNN runs it in int8 and where it converts; ``execute`` runs a model
that way with the int8 kernels of ``ops`` (conv/depthwise/pool on ``mnnlite.kernels.int8``, Winograd in
``winograd``, table-driven elementwise kernels in ``fastq``).  ``Interpreter(model)`` uses it for every
model that carries quant info (``precision="auto"``); ``int8_plan`` shows the decisions.
"""
from __future__ import annotations


def int8_plan(interpreter, feeds: dict):
    """The ``Plan`` an int8 ``Interpreter`` uses for these feeds (built on first use, then cached):
    ``plan.int8_ops()``, ``plan.float_ops()``, ``plan.command_table()`` (MNN's command listing)."""
    runner = getattr(interpreter, "_int8", None)
    if runner is None:
        raise ValueError(f"{interpreter.source}: the interpreter runs in float (no quant info, or "
                         f"precision='float'); there is no int8 plan")
    return runner.plan_for(interpreter.bind(feeds))


__all__ = ["int8_plan"]
