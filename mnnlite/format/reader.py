"""Decode an ``.mnn`` buffer into the table classes of ``tables.py``.

A hand-written FlatBuffers reader driven by ``schema.TABLES``.  Nothing is trusted: every offset,
vtable and vector length is checked against the buffer before it is used, nesting and the number of
tables are capped like FlatBuffers' own verifier (depth 64, 1,000,000 tables), and decoded text is
capped so a file of shared offsets cannot make us allocate more than a small multiple of its size.
Scalar vectors are zero-copy, read-only numpy views of the buffer.
"""
from __future__ import annotations

import struct

import numpy as np

from ..errors import FormatError
from .schema import TABLES, UNIONS
from .tables import NUMPY_DTYPE, OpType, TABLE_CLASSES

MAX_DEPTH = 64
MAX_TABLES = 1_000_000

_SCALAR_CODE = {"bool": "?", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i",
                "uint32": "I", "int64": "q", "uint64": "Q", "float32": "f", "float64": "d"}
_SCALAR = {t: struct.Struct("<" + c) for t, c in _SCALAR_CODE.items()}
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_VTABLE_HEAD = struct.Struct("<HH")

# field kinds of a decoding plan
SCALAR, STRING, TABLE, UNION, VEC_SCALAR, VEC_STRING, VEC_TABLE = range(7)
_OP_TYPES = frozenset(int(t) for t in OpType)


def _plan_for(fields):
    """[(slot, name, kind, arg, default)] for one table, slots as the vtable numbers them."""
    plan, slot = [], 0
    for spec in fields:
        name, ftype = spec[0], spec[1]
        default = spec[2] if len(spec) > 2 else None
        if ftype.startswith("union:"):
            plan.append((slot, name, UNION, UNIONS[ftype[6:]], None))
            slot += 2
            continue
        if ftype.startswith("["):
            elem = ftype[1:-1]
            if elem in _SCALAR:
                plan.append((slot, name, VEC_SCALAR, NUMPY_DTYPE[elem], None))
            elif elem == "string":
                plan.append((slot, name, VEC_STRING, None, None))
            else:
                plan.append((slot, name, VEC_TABLE, elem, None))
        elif ftype in _SCALAR:
            plan.append((slot, name, SCALAR, _SCALAR[ftype], default))
        elif ftype == "string":
            plan.append((slot, name, STRING, None, None))
        else:
            plan.append((slot, name, TABLE, ftype, None))
        slot += 1
    return plan


PLANS = {name: _plan_for(fields) for name, fields in TABLES.items()}
SLOT_COUNT = {name: sum(2 if f[1].startswith("union:") else 1 for f in fields) for name, fields in TABLES.items()}


class Decoder:
    """Reads tables out of one buffer; ``source`` names the file in every error."""

    def __init__(self, data: bytes, source: str):
        self.data = data
        self.size = len(data)
        self.source = source
        self.tables_left = MAX_TABLES
        self.text_left = 2 * self.size + (1 << 20)

    def fail(self, where: str, what: str):
        raise FormatError(f"{self.source}: {where}: {what}")

    def _u32(self, pos: int, where: str) -> int:
        if pos < 0 or pos + 4 > self.size:
            self.fail(where, f"offset {pos} is outside the file ({self.size} bytes)")
        return _U32.unpack_from(self.data, pos)[0]

    def _target(self, pos: int, where: str) -> int:
        """Follow the uoffset stored at ``pos``."""
        return pos + self._u32(pos, where)

    def _vector(self, pos: int, elem_size: int, where: str) -> tuple[int, int]:
        start = self._target(pos, where)
        count = self._u32(start, where)
        if count * elem_size > self.size - start - 4:
            self.fail(where, f"vector of {count} x {elem_size} bytes at offset {start} runs past the "
                             f"end of the file ({self.size} bytes)")
        return start + 4, count

    def string(self, pos: int, where: str) -> str:
        start, length = self._vector(pos, 1, where)
        self.text_left -= length
        if self.text_left < 0:
            self.fail(where, "strings add up to far more than the file holds (offsets shared in a loop?)")
        return self.data[start:start + length].decode("utf-8", "surrogateescape")

    def table(self, pos: int, name: str, depth: int, where: str):
        if depth > MAX_DEPTH:
            self.fail(where, f"tables nested deeper than {MAX_DEPTH}")
        self.tables_left -= 1
        if self.tables_left < 0:
            self.fail(where, f"more than {MAX_TABLES} tables")
        if pos < 0 or pos + 4 > self.size:
            self.fail(where, f"{name} table at offset {pos} is outside the file ({self.size} bytes)")
        vtable = pos - _I32.unpack_from(self.data, pos)[0]
        if vtable < 0 or vtable + 4 > self.size:
            self.fail(where, f"{name} table at {pos} has its vtable at {vtable}, outside the file")
        vt_size, table_size = _VTABLE_HEAD.unpack_from(self.data, vtable)
        if vt_size < 4 or vt_size & 1 or vtable + vt_size > self.size or pos + table_size > self.size:
            self.fail(where, f"{name} table at {pos} has a broken vtable (size {vt_size}, table {table_size})")
        slots = (vt_size - 4) >> 1
        offsets = struct.unpack_from(f"<{slots}H", self.data, vtable + 4) if slots else ()
        values = []
        for slot, fname, kind, arg, default in PLANS[name]:
            off = offsets[slot] if slot < slots else 0
            if kind == UNION:
                values.append(self._union(pos, offsets, slot, slots, arg, depth, f"{where}.{fname}"))
                continue
            if not off:
                values.append(default)
                continue
            at = pos + off
            if kind == SCALAR:
                if at + arg.size > self.size:
                    self.fail(f"{where}.{fname}", f"field at {at} is outside the file")
                values.append(arg.unpack_from(self.data, at)[0])
            elif kind == VEC_SCALAR:
                start, count = self._vector(at, arg.itemsize, f"{where}.{fname}")
                arr = np.frombuffer(self.data, arg, count, start)
                values.append(arr != 0 if arg.kind == "b" else arr)
            elif kind == STRING:
                values.append(self.string(at, f"{where}.{fname}"))
            elif kind == TABLE:
                values.append(self.table(self._target(at, f"{where}.{fname}"), arg, depth + 1, f"{where}.{fname}"))
            elif kind == VEC_STRING:
                values.append(self._string_list(at, f"{where}.{fname}"))
            else:
                values.append(self._table_list(at, arg, depth, f"{where}.{fname}"))
        obj = TABLE_CLASSES[name](*values)
        if name == "Op":
            self._check_op(obj, where)
        return obj

    def _union(self, pos, offsets, slot, slots, members, depth, where):
        tag_off = offsets[slot] if slot < slots else 0
        tag = self.data[pos + tag_off] if tag_off and pos + tag_off < self.size else 0
        val_off = offsets[slot + 1] if slot + 1 < slots else 0
        if tag == 0 or not val_off:
            return None
        if tag > len(members):
            self.fail(where, f"unknown parameter type (union tag {tag}; this reader knows 1..{len(members)})")
        at = pos + val_off
        return self.table(self._target(at, where), members[tag - 1], depth + 1, where)

    def _string_list(self, at, where):
        start, count = self._vector(at, 4, where)
        return [self.string(start + 4 * i, f"{where}[{i}]") for i in range(count)]

    def _table_list(self, at, name, depth, where):
        start, count = self._vector(at, 4, where)
        return [self.table(self._target(start + 4 * i, where), name, depth + 1, f"{where}[{i}]")
                for i in range(count)]

    def _check_op(self, op, where):
        if op.type not in _OP_TYPES:
            self.fail(f"{where} ({op.name!r})", f"unknown op type {op.type}")
        op.type = OpType(op.type)


def decode_net(data: bytes, source: str):
    """The root ``Net`` of an ``.mnn`` buffer, or FormatError naming ``source`` and the problem."""
    if len(data) < 12:
        raise FormatError(f"{source}: {len(data)} bytes is too small to be an MNN model")
    decoder = Decoder(data, source)
    root = decoder._u32(0, "root")
    net = decoder.table(root, "Net", 0, "Net")
    if net.oplists is None or net.tensorName is None:
        missing = "oplists" if net.oplists is None else "tensorName"
        raise FormatError(f"{source}: Net: no {missing} (not an MNN model?)")
    return net
