"""Op kernels, one module per family; importing this package registers every kernel.

``registry.py`` holds the contract and the OpType -> kernel table.
"""
from . import const, control, elementwise, movement, nn, norm, reduce, shape  # noqa: F401
