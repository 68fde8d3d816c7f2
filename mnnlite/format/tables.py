"""Python classes for the schema's tables, enums and union, generated once at import.

Every table becomes a small slotted class with MNN's field names and defaults (``Convolution2D``,
``Op``, ``Net``, ...).  Scalar vectors are numpy arrays, strings are ``str``, sub-tables are instances,
and a union field holds the member instance (its tag is derived from the instance's class on write).
Equality is exact: arrays compare by dtype, shape and bytes, floats bitwise-equal NaNs included, so
``load_model(save_model(m)) == m`` means a lossless round trip.
"""
from __future__ import annotations

import enum
import math

import numpy as np

from .schema import ENUMS, TABLES, UNIONS

NUMPY_DTYPE = {
    "bool": np.dtype(np.bool_), "int8": np.dtype("<i1"), "uint8": np.dtype("<u1"),
    "int16": np.dtype("<i2"), "uint16": np.dtype("<u2"), "int32": np.dtype("<i4"),
    "uint32": np.dtype("<u4"), "int64": np.dtype("<i8"), "uint64": np.dtype("<u8"),
    "float32": np.dtype("<f4"), "float64": np.dtype("<f8"),
}


def _make_enum(name: str) -> type[enum.IntEnum]:
    base, values = ENUMS[name]
    return enum.IntEnum(name, values)


OpType = _make_enum("OpType")
DataType = _make_enum("DataType")
DataFormat = _make_enum("MNN_DATA_FORMAT")
BinaryOpOperation = _make_enum("BinaryOpOperation")
UnaryOpOperation = _make_enum("UnaryOpOperation")
PadMode = _make_enum("PadMode")
PoolType = _make_enum("PoolType")
PoolPadType = _make_enum("PoolPadType")
AvgPoolCountType = _make_enum("AvgPoolCountType")
CoordinateTransformationMode = _make_enum("CoordinateTransformationMode")
EltwiseType = _make_enum("EltwiseType")
ReductionType = _make_enum("ReductionType")

_ENUM_NAMES = {name: {v: k for k, v in reversed(list(values.items()))} for name, (_, values) in ENUMS.items()}


def enum_name(enum: str, value) -> str:
    """The schema name of ``value`` in enum ``enum`` (the number as text when it has none)."""
    return _ENUM_NAMES[enum].get(int(value), str(int(value)))


OP_PARAMETER_MEMBERS: tuple[str, ...] = UNIONS["OpParameter"]
# union tag of each member table: tag 0 is NONE, members count from 1
OP_PARAMETER_TAG: dict[str, int] = {name: i + 1 for i, name in enumerate(OP_PARAMETER_MEMBERS)}


def _value_equal(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return False
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_value_equal(x, y) for x, y in zip(a, b))
    return a == b


def _table_eq(self, other) -> bool:
    if type(self) is not type(other):
        return NotImplemented
    return all(_value_equal(getattr(self, f), getattr(other, f)) for f in self._fields)


def _table_repr(self) -> str:
    parts = []
    for name in self._fields:
        value = getattr(self, name)
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            text = f"array({value.dtype}, {value.size})" if value.size > 8 else repr(value.tolist())
        elif isinstance(value, list) and len(value) > 4:
            text = f"[{len(value)} items]"
        else:
            text = repr(value)
        parts.append(f"{name}={text}")
    return f"{type(self).__name__}({', '.join(parts)})"


def _make_tables(tables: dict) -> dict[str, type]:
    """One slotted class per table with a positional-or-keyword ``__init__`` (the reader passes every
    field in order).  The classes are written as one source text and compiled once: generating 121
    dataclasses cost ~25 ms at every start of the package."""
    lines: list[str] = []
    namespace: dict = {}
    for name, fields in tables.items():
        names = [spec[0] for spec in fields]
        params = []
        for k, spec in enumerate(fields):
            default = f"_d_{name}_{k}"
            namespace[default] = spec[2] if len(spec) > 2 else None
            params.append(f"{spec[0]}={default}")
        lines.append(f"class {name}:")
        # __weakref__: caches of decoded data (ops/weights.py) must not keep a dead model alive
        lines.append(f"    __slots__ = {(*names, '__weakref__')!r}")
        lines.append(f"    _fields = {tuple(names)!r}")
        lines.append(f"    def __init__(self, {', '.join(params)}):" if params else "    def __init__(self):")
        lines += [f"        self.{n} = {n}" for n in names] or ["        pass"]
    exec(compile("\n".join(lines), f"<{__name__} generated>", "exec"), namespace)
    classes = {}
    for name in tables:
        cls = namespace[name]
        cls.__eq__ = _table_eq
        cls.__hash__ = None
        cls.__repr__ = _table_repr
        cls.__module__ = __name__
        cls.__qualname__ = name
        classes[name] = cls
    return classes


TABLE_CLASSES: dict[str, type] = _make_tables(TABLES)
globals().update(TABLE_CLASSES)

__all__ = ["enum_name", "OpType", "DataType", "DataFormat", "BinaryOpOperation", "UnaryOpOperation",
           "PadMode", "PoolType", "PoolPadType", "AvgPoolCountType", "CoordinateTransformationMode", "EltwiseType",
           "ReductionType",
           "OP_PARAMETER_MEMBERS", "OP_PARAMETER_TAG", "TABLE_CLASSES", "NUMPY_DTYPE", *TABLE_CLASSES]
