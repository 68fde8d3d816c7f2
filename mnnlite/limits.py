"""Bounds on what one model, input or image may cost: memory, loop iterations, nesting.

A hostile or damaged model can ask for anything through a single field (a stride of 2**24, an Interp
scale of 1e30, an input of 100000x100000, a Loop with a trip count of INT_MAX).  The runtime checks
the size an op would produce *before* allocating it against a memory budget, and caps iterations
and subgraph nesting, so such a model fails with one line naming the op, the shape and the bytes.

The budget: ``--max-memory SIZE`` on the CLI, ``max_memory=`` in the API (bytes, or a string such as
"2G"), ``MNNLITE_MAX_MEMORY`` in the environment; by default the memory the system has available
(``MemAvailable`` in /proc/meminfo) or the process's address-space limit, whichever is smaller.  It
bounds each single allocation (a tensor, a kernel's scratch), which is what one field can blow up.
"""
from __future__ import annotations

import contextlib
import math
import os
import re

from .errors import ConfigError, ResourceError

MAX_LOOP_ITERATIONS = 1_000_000     # While/Loop iterations per op run (MNN has no cap; INT_MAX trips loop)
MAX_SUBGRAPH_DEPTH = 32             # While/If nested inside each other at run time (converted models: 1-3)
MAX_CONFIG_DEPTH = 32               # JSON nesting accepted in a quantizer config

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40,
          "TIB": 1 << 40}
_override: int | None = None


def parse_size(text) -> int:
    """Bytes from an int or a string such as "512M", "2G", "1.5GiB"; ConfigError when unreadable."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if m is None or m.group(2).upper() not in _UNITS:
            raise ConfigError(f"memory size {text!r}: write a number with an optional unit K, M, G or T "
                              f"(e.g. 2G)")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise ConfigError(f"memory size {text!r} must be positive")
    return value


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _available() -> int:
    """MemAvailable, capped by RLIMIT_AS when one is set; 8 GiB when neither can be read."""
    budget = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    budget = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            budget = soft if budget is None else min(budget, soft)
    except (ImportError, ValueError, OSError):
        pass
    return budget if budget else 8 << 30


def max_memory() -> int:
    """The current budget in bytes for one allocation."""
    if _override is not None:
        return _override
    env = os.environ.get("MNNLITE_MAX_MEMORY")
    if env:
        return parse_size(env)
    return _available()


def set_max_memory(value) -> None:
    """Set the budget for this process (None: back to the default)."""
    global _override
    _override = None if value is None else parse_size(value)


@contextlib.contextmanager
def memory_limit(value):
    """``with memory_limit("2G"):`` the budget inside the block (None: leave it as it is)."""
    global _override
    if value is None:
        yield
        return
    previous, _override = _override, parse_size(value)
    try:
        yield
    finally:
        _override = previous


def nbytes(shape, itemsize: int = 4) -> int:
    """Bytes of an array of ``shape``; negative dims count as 0, Python ints never overflow."""
    return math.prod(max(int(d), 0) for d in shape) * int(itemsize)


# Allocations up to this size are not checked against the machine's free memory (only against a budget
# set by the user): reading it costs more than small ops compute, and an allocation this size that
# fails still ends in the runtime's one-line out-of-memory error (``op_failure``).
_ALWAYS_AVAILABLE = 16 << 20


def check_alloc(where: str, what: str, shape, itemsize: int = 4, extra: int = 0) -> None:
    """Raise ResourceError when an array of ``shape`` (plus ``extra`` scratch bytes) is over budget.

    ``where``: the op ("model.mnn: op 'conv1' (Convolution)"), ``what``: "output", "im2col scratch"."""
    need = nbytes(shape, itemsize) + int(extra)
    if need <= _ALWAYS_AVAILABLE and _override is None and not os.environ.get("MNNLITE_MAX_MEMORY"):
        return      # no budget to read (/proc/meminfo, per op and run): too small to refuse
    budget = max_memory()
    if need > budget:
        dims = "x".join(str(int(d)) for d in shape)
        raise ResourceError(f"{where}: {what} of shape {dims} needs {format_bytes(need)}, more than the "
                            f"memory budget {format_bytes(budget)} (raise it with --max-memory / max_memory=)")


def check_iterations(where: str, count: int) -> None:
    if count > MAX_LOOP_ITERATIONS:
        raise ResourceError(f"{where}: loop ran {MAX_LOOP_ITERATIONS:,} iterations without finishing "
                            f"(the cap on While/Loop iterations); refused")


def op_failure(where: str, op, exc: BaseException) -> Exception:
    """The one-line error for an op whose kernel raised one of the exceptions the runtime does not
    expect from valid input: out of memory (numpy's _ArrayMemoryError says how much), an overflowing
    size, a parameter table the op needs but the file left out.  Anything else stays a bug of ours."""
    from .errors import ShapeError

    if isinstance(exc, MemoryError):
        shape, dtype = getattr(exc, "shape", None), getattr(exc, "dtype", None)
        if shape is not None and dtype is not None:
            return ResourceError(f"{where}: cannot allocate {format_bytes(nbytes(shape, dtype.itemsize))} "
                                 f"for an array of shape {tuple(shape)} {dtype}; out of memory")
        return ResourceError(f"{where}: out of memory")
    if isinstance(exc, OverflowError):
        return ShapeError(f"{where}: a size computed from the op's parameters overflows ({exc})")
    if isinstance(exc, (AttributeError, TypeError)) and getattr(op, "main", None) is None:
        return ShapeError(f"{where}: the op has no parameter table, which its type needs")
    if isinstance(exc, RecursionError):
        return ResourceError(f"{where}: nesting too deep")
    raise exc
