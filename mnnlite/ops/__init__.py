"""Op kernels, one module per family; importing this package registers every kernel.

``registry.py`` holds the contract and the OpType -> kernel table.
"""
from . import const, control, conv, elementwise, movement, nn, norm, pool, reduce, resize, shape  # noqa: F401
