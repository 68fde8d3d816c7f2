"""Load and save whole models: the ``.mnn`` buffer plus the optional ``<model>.mnn.weight`` file."""
from __future__ import annotations

import mmap
import os

import numpy as np

from ..errors import FormatError
from ..graph import Model
from .paths import external_data_path
from .reader import decode_net
from .validate import check_model
from .tables import DataType
from .writer import encode_net

# Blob.dataType -> the field and element type that hold its data once read back from the .weight file
_BLOB_FIELD = {
    DataType.DT_FLOAT: ("float32s", "<f4"), DataType.DT_INT32: ("int32s", "<i4"),
    DataType.DT_INT64: ("int64s", "<i8"), DataType.DT_INT8: ("int8s", "<i1"),
    DataType.DT_UINT8: ("uint8s", "<u1"), DataType.DT_HALF: ("uint8s", "<u1"),
    DataType.DT_BFLOAT16: ("uint8s", "<u1"), DataType.DT_BOOL: ("uint8s", "<u1"),
}


def loads(data, source: str = "<bytes>", weight_path: str | None = None) -> Model:
    """A Model from the bytes (or a read-only mmap) of an ``.mnn`` file; ``weight_path`` is its
    external weight file."""
    if not isinstance(data, (bytes, mmap.mmap)):
        data = bytes(data)
    net = decode_net(data, source)
    model = Model(net, path=source)
    check_model(model)
    if _uses_external(model):
        _inline_external(model, weight_path or source + ".weight")
    return model


def load_model(path: str | os.PathLike) -> Model:
    """Read an ``.mnn`` file (and ``<path>.weight`` when its ops keep weights outside)."""
    path = os.fspath(path)
    _check_regular(path, "model")
    try:
        with open(path, "rb") as f:
            # Mapped, not read: weights stay zero-copy views of the page cache, so loading a large
            # model costs only its graph.  save_model replaces files by rename, which keeps the
            # mapping of an already-loaded model valid.
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # not a regular file (a folder, a pipe)
        raise FormatError(f"{path}: cannot map: {exc}") from None
    return loads(data, path, path + ".weight")


def dumps(model: Model) -> bytes:
    """The ``.mnn`` bytes of a model, every weight inline."""
    return encode_net(model.net)


def save_model(model: Model, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (temp file in the same folder, then rename); never over
    the file the model was read from or its external weights."""
    inputs = [("source model", model.path), ("source weight file", model.external_weights)]
    write_atomic(os.fspath(path), dumps(model), "model", [(r, p) for r, p in inputs if p and os.path.exists(p)])


def _check_regular(path: str, role: str) -> None:
    """Refuse a FIFO, device or socket before opening it (opening a FIFO blocks until a writer comes)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise FormatError(f"{path}: is a folder, not a {role} file")
    if not stat.S_ISREG(mode):
        raise FormatError(f"{path}: is not a regular file (a FIFO, device or socket); refused")


def write_atomic(path: str, data: bytes, role: str = "output", inputs=()) -> None:
    """One file written through ``safety.write_files``: a temporary in the same folder, fsync, the
    destination's permissions, rename; refused when it is one of ``inputs`` ((role, path) pairs)."""
    from ..safety import write_files

    write_files([(path, data, role)], inputs)


# ---------------------------------------------------------------------------------------- external data

def _external_params(model: Model):
    """(op, param table) for every table whose data lives in the .weight file (``external`` of 2+)."""
    for _, op in model.all_ops():
        p = op.main
        if p is not None and getattr(p, "external", None) is not None and len(p.external) > 1:
            yield op, p


def _uses_external(model: Model) -> bool:
    return next(_external_params(model), None) is not None


def _inline_external(model: Model, default_path: str) -> None:
    """Read every externalised part into its table, so the model is self-contained from here on."""
    files: dict[str, np.ndarray] = {}
    for op, param in _external_params(model):
        path = external_data_path(model.path or default_path, default_path, op.externalPath, op.name)
        if path not in files:
            if os.path.exists(path):
                _check_regular(path, "weight")
            try:
                files[path] = np.memmap(path, dtype=np.uint8, mode="r") if os.path.getsize(path) else \
                    np.zeros(0, np.uint8)
            except OSError:
                raise FormatError(f"{model.path}: op {op.name!r} keeps its weights in {path}, "
                                  f"which cannot be read") from None
        parts = _ExternalParts(files[path], [int(x) for x in param.external], path, op.name)
        _FILL[type(param).__name__](param, parts)
        param.external = None
        model.external_weights = model.external_weights or path


class _ExternalParts:
    """Consecutive byte ranges ``[offset, n0, n1, ...]`` of one op in the weight file."""

    def __init__(self, blob: np.ndarray, external: list[int], path: str, op_name: str):
        self.blob, self.path, self.op_name = blob, path, op_name
        self.pos, self.sizes = external[0], external[1:]
        if self.pos < 0 or any(n < 0 for n in self.sizes) or self.pos + sum(self.sizes) > blob.size:
            raise FormatError(f"{path}: op {op_name!r} reads bytes {self.pos}..{self.pos + sum(self.sizes)}"
                              f" but the weight file has {blob.size}")

    def take(self, dtype: str):
        """The next part as an array of ``dtype`` (None when it is empty or not listed)."""
        if not self.sizes:
            return None
        n = self.sizes.pop(0)
        start, self.pos = self.pos, self.pos + n
        if n == 0:
            return None
        itemsize = np.dtype(dtype).itemsize
        if n % itemsize:
            raise FormatError(f"{self.path}: op {self.op_name!r}: a part of {n} bytes is not a whole "
                              f"number of {dtype} values")
        return np.array(self.blob[start:start + n]).view(dtype)


def _fill_conv(p, parts):
    if p.quanParameter is not None:
        q = p.quanParameter
        q.buffer = parts.take("<i1")
        alpha = parts.take("<u2" if q.scaleStorage == 1 else "<f4")
        if q.scaleStorage == 1:
            q.alphaFp16 = alpha
        else:
            q.alpha = alpha
        p.bias = parts.take("<f4")
        q.index = parts.take("<u4")
    else:
        p.weight = parts.take("<f4")
        p.bias = parts.take("<f4")


def _fill_blob(p, parts):
    name, dtype = _BLOB_FIELD.get(p.dataType, (None, None))
    if name is None:
        raise FormatError(f"{parts.path}: op {parts.op_name!r}: external constant of data type "
                          f"{p.dataType} is not supported")
    setattr(p, name, parts.take(dtype))


def _fill_pair(first, second):
    def fill(p, parts):
        setattr(p, first, parts.take("<f4"))
        setattr(p, second, parts.take("<f4"))
    return fill


_FILL = {
    "Convolution2D": _fill_conv,
    "Convolution3D": _fill_pair("weight", "bias"),
    "Blob": _fill_blob,
    "Scale": _fill_pair("scaleData", "biasData"),
    "LayerNorm": _fill_pair("gamma", "beta"),
    "GroupNorm": _fill_pair("gamma", "beta"),
}
