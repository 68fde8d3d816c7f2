"""A model of MNN's CPU-backend preparation of a graph (constant folding, geometry lowering to commands).

The quantizer's tracking (``mnnlite.quant.tracking``) and the int8 runtime's plan (``mnnlite.int8.plan``)
both read the commands it emits.
"""
