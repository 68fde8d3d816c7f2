"""A model of MNN's CPU-backend preparation of a graph: one command list for the quantizer and the int8 runtime.

* ``rules``: the MNN facts it relies on (op families, content and shape inputs, region sources, int8
  support), each stated once with its source;
* ``lowering``: constant folding and geometry lowering to commands (views, Rasters, temporaries, region
  fusion and where it gives up);
* ``decide``: quant-attribute propagation and the per-command int8 decision (casts, MNN's names).

``mnnlite.quant.tracking`` reads the lowered commands to find what MNN's quantizer observes;
``mnnlite.int8.plan`` adds the int8 decision and turns them into per-op execution plans.
"""
