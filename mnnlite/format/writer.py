"""Encode table instances back into an ``.mnn`` buffer.

Written like MNN's own converter and quantizer: standard aligned FlatBuffers with force-defaults on
(every scalar physically present), no file identifier, the union as a tag slot plus a value slot.
"""
from __future__ import annotations

import flatbuffers
import numpy as np

from ..errors import FormatError
from .reader import PLANS, SLOT_COUNT, SCALAR, STRING, TABLE, UNION, VEC_SCALAR, VEC_STRING, VEC_TABLE
from .tables import OP_PARAMETER_TAG

_PREPEND_SLOT = {
    "?": "PrependBoolSlot", "b": "PrependInt8Slot", "B": "PrependUint8Slot", "h": "PrependInt16Slot",
    "H": "PrependUint16Slot", "i": "PrependInt32Slot", "I": "PrependUint32Slot", "q": "PrependInt64Slot",
    "Q": "PrependUint64Slot", "f": "PrependFloat32Slot", "d": "PrependFloat64Slot",
}


class Encoder:
    def __init__(self, size_hint: int = 1 << 16):
        self.builder = flatbuffers.Builder(size_hint)
        self.builder.ForceDefaults(True)

    def table(self, obj, where: str) -> int:
        name = type(obj).__name__
        plan = PLANS.get(name)
        if plan is None:
            raise FormatError(f"{where}: cannot write a {name} (not a schema table)")
        b = self.builder
        # children first: FlatBuffers cannot nest the building of two objects
        refs = {}
        for slot, fname, kind, arg, _ in plan:
            value = getattr(obj, fname)
            if value is None or kind == SCALAR:
                continue
            refs[fname] = self._child(value, kind, arg, f"{where}.{fname}")
        b.StartObject(SLOT_COUNT[name])
        for slot, fname, kind, arg, default in plan:
            value = getattr(obj, fname)
            if kind == SCALAR:
                code = arg.format[-1]
                if value is None:
                    value = default
                getattr(b, _PREPEND_SLOT[code])(slot, _coerce(value, code, f"{where}.{fname}"), default)
            elif kind == UNION:
                if value is not None:
                    b.PrependUint8Slot(slot, OP_PARAMETER_TAG[type(value).__name__], 0)
                    b.PrependUOffsetTRelativeSlot(slot + 1, refs[fname], 0)
                else:
                    b.PrependUint8Slot(slot, 0, 0)
            elif value is not None:
                b.PrependUOffsetTRelativeSlot(slot, refs[fname], 0)
        return b.EndObject()

    def _child(self, value, kind, arg, where):
        b = self.builder
        if kind == STRING:
            return b.CreateString(value.encode("utf-8", "surrogateescape"))
        if kind == TABLE or kind == UNION:
            if kind == UNION and type(value).__name__ not in OP_PARAMETER_TAG:
                raise FormatError(f"{where}: {type(value).__name__} is not an op parameter table")
            return self.table(value, where)
        if kind == VEC_SCALAR:
            arr = np.ascontiguousarray(np.asarray(value), dtype=arg)
            return b.CreateNumpyVector(arr.reshape(-1))
        if kind == VEC_STRING:
            refs = [b.CreateString(s.encode("utf-8", "surrogateescape")) for s in value]
        else:
            refs = [self.table(item, f"{where}[{i}]") for i, item in enumerate(value)]
        b.StartVector(4, len(refs), 4)
        for ref in reversed(refs):
            b.PrependUOffsetTRelative(ref)
        return b.EndVector()

    def finish(self, root: int) -> bytes:
        self.builder.Finish(root)
        return bytes(self.builder.Output())


def _coerce(value, code, where):
    try:
        if code == "?":
            return bool(value)
        if code in "fd":
            return float(value)
        return int(value)
    except (TypeError, ValueError):
        raise FormatError(f"{where}: expected a number, got {value!r}") from None


def encode_net(net) -> bytes:
    encoder = Encoder()
    return encoder.finish(encoder.table(net, "Net"))
