"""Where a model may read its external data from: its own folder, nothing else.

``Op.externalPath`` and the default ``<model>.weight`` come from the model file, which may be hostile: an
absolute path, a ``..`` component or a symlink that leaves the folder would let ``info``, ``run`` and
``quantize`` read (and ``quantize`` copy into its output) any file the user can read.  The same class of
bug was CVE-2022-25882 in ONNX's external-data loader; ONNX's checker now applies these rules too.
The allowed folders are the model's folder as given and the folder its real path is in (a model that
is itself a symlink into a blob cache keeps its weights next to the blob).
"""
from __future__ import annotations

import os
import posixpath

from ..errors import FormatError


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def allowed_folders(model_path: str) -> list[str]:
    folders = [os.path.realpath(os.path.dirname(os.path.abspath(model_path)))]
    real_model = os.path.realpath(model_path)
    if os.path.exists(real_model):
        folders.append(os.path.dirname(real_model))
    return folders


def external_data_path(model_path: str, default: str, relative: str | None, op_name: str) -> str:
    """The file an op's external data is read from, confined to the model's folder.

    ``relative``: the op's ``externalPath`` (None or "" for the default ``default`` file).  Raises
    FormatError naming the op, never the size or content of the file it points to."""
    where = f"{model_path}: op {op_name!r}"
    if relative:
        if "\x00" in relative:
            raise FormatError(f"{where}: externalPath contains a NUL byte")
        if os.path.isabs(relative) or posixpath.isabs(relative.replace("\\", "/")) or \
                (len(relative) > 1 and relative[1] == ":"):
            raise FormatError(f"{where}: externalPath {relative!r} is absolute; external data must be "
                              f"a file in the model's folder")
        if ".." in relative.replace("\\", "/").split("/"):
            raise FormatError(f"{where}: externalPath {relative!r} has a '..' component; external data "
                              f"must be a file in the model's folder")
        path = os.path.join(os.path.dirname(default), relative)
    else:
        path = default
    folders = allowed_folders(model_path) if os.path.exists(model_path) else \
        [os.path.realpath(os.path.dirname(os.path.abspath(default)))]
    real = os.path.realpath(path)
    if not any(_inside(real, folder) for folder in folders):
        raise FormatError(f"{where}: external data {os.path.basename(path)!r} is a link that leads "
                          f"outside the model's folder; refused")
    return path
