"""Outputs that never touch an input and appear all at once, or not at all.

Every file mnnlite writes (a quantized model and its dumps, ``run --output``, ``validate --json``,
regression reports and goldens, ``save_model``) goes through ``OutputSet``:

1. ``check_distinct`` refuses, before any work, an output that *is* an input or another output: the same
   path, a symlink to it (paths compared after ``realpath``) or a hard link to it (the same
   ``(st_dev, st_ino)``).  Inputs are the source model, its external weight files, the config and the
   calibration / held-out files.
2. Each output is written to a temporary in its own folder, named ``.mnnlite-tmp-<pid>-<random>-<name>``
   and created with O_EXCL (so a temporary can never be an existing file, let alone an input), flushed
   and fsync'ed, given its final permissions (an existing destination keeps its mode, a new one gets
   ``0o666 & ~umask`` like any file a shell creates), then renamed over the destination.
3. ``commit`` renames in the order the outputs were added, *the model last*: quantize adds the debug
   dump, then the scale dump, then the model.  A reader that opens the model and then its dump (the
   only order that makes sense: the dump is named after the model) can see an old model with a new
   dump in between the renames, never a new model with an old dump: once the new model is visible,
   its dump was renamed before it.  Each rename is atomic, so no reader ever sees a partial file.
4. Temporaries are removed on every exit path: an exception (including KeyboardInterrupt), SIGTERM
   (turned into ``Interrupted`` while an ``OutputSet`` is open) and interpreter exit (atexit).  A
   SIGKILL cannot be caught: the next command writing into the same folder removes, when it checks its
   outputs and again when it writes, temporaries whose pid is no longer alive (a live writer's
   temporaries carry its pid and are left alone).
"""
from __future__ import annotations

import atexit
import errno
import os
import re
import signal
import stat
import threading

from .errors import Interrupted, OutputError

TEMP_PREFIX = ".mnnlite-tmp-"
_TEMP_RE = re.compile(r"^\.mnnlite-tmp-(\d+)-[0-9a-f]{8}-")
_LIVE_TEMPS: set[str] = set()       # every temporary of this process not yet renamed or removed
_LOCK = threading.Lock()


# ------------------------------------------------------------------------------------ identities

def _identity(path: str):
    """(realpath, (st_dev, st_ino) or None when the file does not exist yet)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return real, None
    return real, (st.st_dev, st.st_ino)


def check_distinct(outputs, inputs) -> None:
    """Refuse outputs that resolve to an input or to each other.

    ``outputs`` and ``inputs``: iterables of (role, path), e.g. ("scale dump", "q.mnn.json"); the
    message names both roles and paths.  Raises ``OutputError``.
    """
    seen = []       # (role, path, realpath, inode) of the inputs, then of the outputs checked so far
    for role, path in inputs:
        if path:
            seen.append((role, path, *_identity(os.fspath(path))))
    swept = set()
    for role, path in outputs:
        path = os.fspath(path)
        check_writable(path, role)
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in swept:         # a command's start: leftovers of a killed writer go first
            remove_stale_temporaries(folder)
            swept.add(folder)
        real, ino = _identity(path)
        for other_role, other_path, other_real, other_ino in seen:
            if real == other_real or (ino is not None and ino == other_ino):
                how = "is" if real == other_real else "is a hard link to"
                raise OutputError(f"{path}: the {role} {how} the {other_role} {other_path}; "
                                  f"mnnlite never overwrites an input or writes two outputs to one file")
        seen.append((role, path, real, ino))


def check_writable(path: str, role: str = "output") -> None:
    """The destination can be a file: not empty, not a folder, in an existing writable folder."""
    if not path:
        raise OutputError(f"the {role} path is empty")
    if os.path.isdir(path):
        raise OutputError(f"{path}: the {role} is a folder, not a file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: the {role}'s folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: the {role}'s folder {folder} is not writable")
    if os.path.exists(path) and not os.path.isfile(path):
        raise OutputError(f"{path}: the {role} exists and is not a regular file")


# ---------------------------------------------------------------------------------- permissions

def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _LOCK:             # no /proc: read it by setting it (not atomic across threads, hence the lock)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def output_mode(path: str) -> int:
    """An existing file's permission bits, else what ``open(path, "w")`` would give: 0o666 & ~umask."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


# ---------------------------------------------------------------------------------- temporaries

def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:         # EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Delete ``.mnnlite-tmp-<pid>-...`` files in ``folder`` whose writer is gone (a SIGKILL); returns
    their paths.  Only names with our exact pattern are touched, and only regular files or links."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_RE.match(name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        path = os.path.join(folder, name)
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                continue
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _discard(tmp: str) -> None:
    with _LOCK:
        _LIVE_TEMPS.discard(tmp)
    try:
        os.unlink(tmp)
    except OSError:
        pass


@atexit.register
def _remove_live_temporaries() -> None:
    for tmp in list(_LIVE_TEMPS):
        _discard(tmp)


def _write_error(path: str, role: str, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    return OutputError(f"{path}: cannot write the {role}: {reason}; nothing was written")


class _TerminateAsInterrupt:
    """While writing, SIGTERM raises ``Interrupted`` so the temporaries are removed on the way out
    (main thread only: Python delivers signals there)."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.signal(signal.SIGTERM, self._handler)
            except (ValueError, OSError):
                self.previous = None
        return self

    @staticmethod
    def _handler(signum, frame):
        raise Interrupted("interrupted by SIGTERM; temporary files removed, nothing was written")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


class OutputSet:
    """Files that appear together: ``add`` writes each to a temporary, ``commit`` renames them in the
    order added (put the file readers open first — the model — last).  Leaving the ``with`` block
    without ``commit`` (an error, a signal) removes every temporary and leaves the destinations as
    they were.

        with OutputSet() as out:
            out.add(dst + ".json", dump, "scale dump")
            out.add(dst, model_bytes, "quantized model")
            out.commit()
    """

    def __init__(self):
        self._pending: list[tuple[str, str]] = []      # (temporary, destination)
        self._signals = _TerminateAsInterrupt()
        self._swept: set[str] = set()

    def __enter__(self):
        self._signals.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self.discard()
        finally:
            self._signals.__exit__(*exc)
        return False

    def add(self, path, data: bytes, role: str = "output") -> None:
        path = os.fspath(path)
        check_writable(path, role)
        folder = os.path.dirname(os.path.abspath(path))
        if folder not in self._swept:
            remove_stale_temporaries(folder)
            self._swept.add(folder)
        # os.urandom, not secrets.token_hex: secrets loads OpenSSL through hashlib (3.4 MB of RSS)
        name = f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}-{os.path.basename(path)[-40:]}"
        tmp = os.path.join(folder, name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise _write_error(path, role, exc) from None
        with _LOCK:
            _LIVE_TEMPS.add(tmp)
        self._pending.append((tmp, path))
        try:
            with os.fdopen(fd, "wb") as f:
                view = memoryview(data)
                while view:
                    view = view[f.write(view):]
                f.flush()
                os.fsync(f.fileno())
                os.fchmod(f.fileno(), output_mode(path))
        except OSError as exc:
            raise _write_error(path, role, exc) from None

    def commit(self) -> None:
        """Rename every temporary over its destination, in the order added."""
        while self._pending:
            tmp, path = self._pending[0]
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise _write_error(path, "output", exc) from None
            with _LOCK:
                _LIVE_TEMPS.discard(tmp)
            self._pending.pop(0)

    def discard(self) -> None:
        for tmp, _ in self._pending:
            _discard(tmp)
        self._pending.clear()


def write_files(items, inputs=()) -> None:
    """Write ``[(path, bytes, role), ...]`` as one set (renamed in that order) after checking that no
    output is an input or another output."""
    items = [(os.fspath(p), d, r) for p, d, r in items]
    check_distinct([(r, p) for p, _, r in items], inputs)
    with OutputSet() as out:
        for path, data, role in items:
            out.add(path, data, role)
        out.commit()


# ------------------------------------------------------------------------------- the CLI's guard

def _printable_streams() -> None:
    """Tensor and file names come from the model: under LANG=C or PYTHONIOENCODING=ascii printing
    them must not fail, so unencodable characters are escaped instead."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def guarded_call(fn, *args) -> int:
    """Run a CLI command: MnnliteError -> its line and exit 2; interrupted -> exit 3; the causes
    below are fixed where they arise, and this is the last resort that keeps the promise of one
    line and exit 2 for anything missed."""
    import sys

    from .errors import MnnliteError

    def say(message: str) -> None:
        print(f"mnnlite: {_one_line(message)}", file=sys.stderr)

    def on_term(signum, frame):
        raise Interrupted("interrupted by SIGTERM")

    _printable_streams()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return fn(*args)
    except (Interrupted, KeyboardInterrupt):
        say("interrupted; temporary files removed")
        return 3
    except MnnliteError as exc:
        say(f"error: {exc}")
        return 2
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError as exc:
        say(f"error: out of memory ({exc.__class__.__name__}: {exc}); lower --max-memory to be told which "
            f"op needs it before allocating")
        return 2
    except RecursionError:
        say("error: the model or config nests too deeply (recursion limit reached)")
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        say(f"error: {where}{exc.strerror or exc}")
        return 2
    except Exception as exc:   # the last resort: a bug of ours, still one line and exit 2
        say(f"internal error: {exc.__class__.__name__}: {exc} (please report this with the input)")
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
