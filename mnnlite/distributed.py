"""Scale out on Ray: regression cases as Ray tasks, calibration and validation samples sharded over tasks.

Ray is an optional extra (``pip install "mnnlite[ray]"``), imported only here and only when ``--ray`` /
``ray=`` is used.  ``cluster(address)`` connects and disconnects:

* ``local``: a private Ray started by this process and stopped when the work is done (node address
  127.0.0.1 asked for; Ray 2.x replaces a loopback address by the machine's routable one and listens on
  every interface, so what keeps it private is Ray's token authentication, on by default for a Ray that
  ``ray.init`` starts: the token lives in ``~/.ray/auth_token``);
* ``auto``: the cluster ``ray start`` left on this machine, or the one ``RAY_ADDRESS`` names;
* ``host:port`` (or ``ray://host:port``, Ray Client): an existing cluster's head.

What mnnlite sends: nothing of its own.  Ray's usage-statistics upload is switched off for every cluster
mnnlite starts (``RAY_USAGE_STATS_ENABLED=0`` in this process and its children, no dashboard); for an
existing cluster it is the head's setting (``ray start --disable-usage-stats``), which README documents.

Workers must import the same mnnlite (installed on every node, or Ray's ``runtime_env``) and, unless
data is shipped as Ray objects (``ship_data``), see the models, configs and sample folders at the paths
the driver names (a shared file system).

Exactness: a regression case runs the very code of a local case (``regress.worker.run_job_guarded``);
calibration shards give back order-free statistics merged with the observers' own ``merge`` (KL ranges
and integer histograms, the seam the local threads use too) or per-sample results folded in sample
order on the driver (EMA batch ranges, validation sums), so outputs are byte-identical to a local run.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections import deque

from .errors import MnnliteError

CONNECT_TIMEOUT = 30.0           # seconds; MNNLITE_RAY_CONNECT_TIMEOUT overrides
TASK_RETRIES = 3                 # a task whose worker process dies (killed, node lost) runs again
SHARDS_PER_SLOT = 2              # calibration shards per CPU slot: keeps slots busy as shards finish
ADDRESS_HELP = "auto, local, HOST:PORT or ray://HOST:PORT"


class ClusterError(MnnliteError):
    """Ray is missing, or the cluster cannot be reached or used."""


def import_ray():
    """The ``ray`` module, usage statistics off for anything this process starts; one line if missing."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        import ray
    except ImportError:
        raise ClusterError('--ray needs Ray, an optional extra: pip install "mnnlite[ray]"') from None
    return ray


def _connect_timeout() -> float:
    value = os.environ.get("MNNLITE_RAY_CONNECT_TIMEOUT")
    try:
        return float(value) if value else CONNECT_TIMEOUT
    except ValueError:
        raise ClusterError(f"MNNLITE_RAY_CONNECT_TIMEOUT must be a number of seconds, got {value!r}") from None


def _host_port(address: str):
    """(host, port) of ``host:port`` / ``ray://host:port``; None for ``auto``/``local``."""
    if address in ("auto", "local"):
        return None
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--ray {address!r}: not a cluster address ({ADDRESS_HELP})")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def cluster(address: str):
    """Connected to the Ray cluster at ``address`` for the ``with`` block (see the module doc).

    A process already connected to Ray (``ray.init`` by the caller) is used as it is and left connected.
    """
    if not isinstance(address, str) or not address:
        raise ClusterError(f"--ray needs an address ({ADDRESS_HELP}), got {address!r}")
    target = _host_port(address)
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    timeout = _connect_timeout()
    if target is not None:
        try:
            socket.create_connection(target, timeout=timeout).close()
        except OSError as exc:
            raise ClusterError(f"Ray cluster {address} cannot be reached within {timeout:g} s: "
                               f"{exc.strerror or exc}") from None
    _init(ray, address, timeout)
    try:
        yield ray
    finally:
        ray.shutdown()


def _init(ray, address: str, timeout: float) -> None:
    """``ray.init`` with a deadline: Ray itself retries a silent or refusing head for minutes."""
    import logging

    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address == "local":
        kwargs = dict(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    else:
        kwargs = dict(address=address, **quiet)
    if address == "local":
        try:
            ray.init(**kwargs)
        except Exception as exc:       # noqa: BLE001 - reported to the caller as one line
            raise ClusterError(f"cannot start a local Ray: {' '.join(str(exc).split())[:300]}") from None
        return
    outcome: list = []

    def connect():
        try:
            ray.init(**kwargs)
            outcome.append(None)
        except BaseException as exc:   # noqa: BLE001 - reported to the caller as one line
            outcome.append(exc)
    # Ray's own deadline for reaching the head, and its C++ client's retry warnings (written straight
    # to file descriptor 2) kept out of the output while connecting: a failure is one line of ours
    os.environ.setdefault("RAY_py_gcs_connect_timeout_s", str(max(1, int(timeout))))
    thread = threading.Thread(target=connect, name="mnnlite-ray-init", daemon=True)
    with _quiet_stderr():
        thread.start()
        thread.join(timeout + 5)
    if not outcome:
        raise ClusterError(f"Ray cluster {address} did not accept the connection within {timeout:g} s "
                           f"(wrong address, or a token-authenticated cluster: set RAY_AUTH_MODE=token "
                           f"and RAY_AUTH_TOKEN)")
    if outcome[0] is not None:
        exc = outcome[0]
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ClusterError(f"Ray cluster {address}: cannot connect: {text[:300]}")


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 sent to /dev/null for the block (Python's own ``sys.stderr`` included)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cluster_cpus(ray) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# ------------------------------------------------------------------------------------ regression cases

def run_case_results(cases_by_index, ray, jobs: int | None, threads: int | None, ship_data: bool,
                     timeout: float):
    """Yield ``(index, (result, crash, seconds))`` as each case's Ray task finishes (any order).

    Each case is a task with ``threads`` CPUs (1 by default) that runs the case in a child process of
    its Ray worker, exactly as the local harness does (``regress.runner.run_child``: a crash or a
    timeout costs that case only); ``jobs`` caps the tasks in flight (None: every case is submitted and
    the cluster's CPUs decide).  A task whose worker dies (killed, node lost) is retried
    ``TASK_RETRIES`` times by Ray.
    """
    task = ray.remote(num_cpus=threads or 1, max_retries=TASK_RETRIES)(_case_task)
    shipped = _Shipper(ray) if ship_data else None
    waiting = deque(cases_by_index)
    running: dict = {}
    limit = jobs or len(waiting)
    while waiting or running:
        while waiting and len(running) < limit:
            i, case = waiting.popleft()
            job = dict(case.to_job(), threads=threads)
            running[task.remote(job, shipped.bundle(job) if shipped else None, timeout)] = i
        ready, _ = ray.wait(list(running), num_returns=1)
        yield running.pop(ready[0]), _case_outcome(ray, ready[0])


def _case_outcome(ray, ref) -> tuple:
    from ray import exceptions as rex

    try:
        return tuple(ray.get(ref))
    except rex.RayTaskError as exc:
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        lines = str(cause).strip().splitlines() or [type(cause).__name__]
        return None, f"crashed: {lines[-1].strip()}", 0.0
    except rex.RayError as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        return None, f"Ray task lost after {TASK_RETRIES} retries: {lines[0].strip()}", 0.0


def _case_task(job: dict, bundle: dict | None, timeout: float) -> tuple:
    """One case on a Ray worker: the local harness's child process, on shipped files when given."""
    import tempfile

    from . import __file__ as package_init
    from .regress.runner import run_child

    # the child imports the mnnlite this worker imported, wherever the node has it
    root = os.path.dirname(os.path.dirname(os.path.abspath(package_init)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    if bundle is None:
        return run_child(job, timeout, env, die_with_parent=True)
    import ray

    with tempfile.TemporaryDirectory(prefix="mnnlite-shipped-") as tmp:
        local = _unpack(job, {k: ray.get(v) for k, v in bundle.items()}, tmp)
        result, crash, seconds = run_child(local, timeout, env, die_with_parent=True)
    # messages name the driver's paths, not this worker's copies
    if result is not None and "error" in result:
        result["error"] = _original_paths(result["error"], local, job)
    return result, _original_paths(crash, local, job), seconds


def _original_paths(text: str, local: dict, job: dict) -> str:
    for key in SHIPPED_KEYS:
        here, there = _shipped_path(local, key), _shipped_path(job, key)
        if here and there and here != there:
            text = text.replace(here, there)
    return text


def _shipped_path(job: dict, key: str):
    return job["config"].get("path") if key == "calibration" else job.get(key)


SHIPPED_KEYS = ("model", "calibration", "heldout", "labels")


class _Shipper:
    """Each file or folder a case reads, put in Ray's object store once (cases share the objects)."""

    def __init__(self, ray):
        self.ray, self.refs = ray, {}

    def bundle(self, job: dict) -> dict:
        paths = {key: _shipped_path(job, key) for key in SHIPPED_KEYS}
        return {k: self._ref(p) for k, p in paths.items() if isinstance(p, str) and os.path.exists(p)}

    def _ref(self, path: str):
        if path not in self.refs:
            try:
                packed = _pack(path)
            except OSError as exc:
                raise ClusterError(f"--ship-data: {exc.filename or path}: cannot be read: "
                                   f"{exc.strerror or exc}") from None
            self.refs[path] = self.ray.put(packed)
        return self.refs[path]


def _pack(path: str) -> dict:
    """``{relative name: bytes}`` of a file (with its ``.weight`` companion) or of a folder's tree."""
    if os.path.isfile(path):
        files = {os.path.basename(path): path}
        if os.path.isfile(path + ".weight"):
            files[os.path.basename(path) + ".weight"] = path + ".weight"
        return {"file": os.path.basename(path), "files": {k: _read(v) for k, v in files.items()}}
    out = {}
    for root, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = _read(full)
    return {"file": None, "files": out}


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _unpack(job: dict, packs: dict, tmp: str) -> dict:
    """The job with every shipped path replaced by its copy under ``tmp``."""
    job = dict(job, config=dict(job["config"]))
    for key, pack in packs.items():
        folder = os.path.join(tmp, key)
        for rel, data in pack["files"].items():
            target = os.path.join(folder, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data)
        local = os.path.join(folder, pack["file"]) if pack["file"] else folder
        if key == "calibration":
            job["config"]["path"] = local
        else:
            job[key] = local
    return job


# ------------------------------------------------------------------------------- sharded calibration

_INTERPRETERS: dict = {}         # per worker process: recipe key -> interpreter(s), reused across tasks


def _built(key: str, recipe):
    """The interpreter ``recipe`` builds, kept for the next task of the same run in this process."""
    if key not in _INTERPRETERS:
        if len(_INTERPRETERS) >= 4:
            _INTERPRETERS.pop(next(iter(_INTERPRETERS)))
        _INTERPRETERS[key] = recipe()
    return _INTERPRETERS[key]


def _map_task(key: str, recipe, fn, shard: list) -> list:
    interp = _built(key, recipe)
    return [fn(interp, feeds) for feeds in shard]


def _observe_task(key: str, recipe, observers: dict, shard: list) -> dict:
    from .quant.workers import observe_shard, shard_observers

    # fresh observers from the run's snapshot (objects from the store are read-only)
    return observe_shard(_built(key, recipe), shard_observers(observers), shard)


class RayWorkers:
    """``quant.workers.Workers`` on a Ray cluster: samples go out in shards, one task per shard.

    ``recipe``: a picklable zero-argument callable that builds the interpreter (``functools.partial``
    of a module-level function over model bytes); it travels once through the object store and each
    worker process builds it once per run.  ``first`` is a local interpreter for the driver's own
    forwards (tensor shapes).  The samples of a pass are put in the object store once and reused by
    the second pass of KL.
    """

    def __init__(self, ray, recipe, cpus: int = 1):
        import uuid

        self.ray, self.recipe, self.cpus = ray, recipe, cpus
        self.count = cluster_cpus(ray) // cpus or 1
        self.key = uuid.uuid4().hex
        self._recipe_ref = ray.put(recipe)
        self._first = None
        self._shards: dict = {}
        opts = dict(num_cpus=cpus, max_retries=TASK_RETRIES)
        self._map = ray.remote(**opts)(_map_task)
        self._observe = ray.remote(**opts)(_observe_task)

    @property
    def first(self):
        if self._first is None:
            self._first = self.recipe()
        return self._first

    def _shard_refs(self, samples) -> list:
        """The samples in contiguous shards, each an object in the store: ``[(ref, size), ...]``."""
        cached = self._shards.get(id(samples))
        if cached is not None and cached[0] is samples:
            return cached[1]
        total = len(samples)
        shards = max(1, min(total, self.count * SHARDS_PER_SLOT))
        size = -(-total // shards) if total else 1
        refs, chunk = [], []
        for feeds in samples:
            chunk.append(feeds)
            if len(chunk) == size:
                refs.append((self.ray.put(chunk), len(chunk)))
                chunk = []
        if chunk:
            refs.append((self.ray.put(chunk), len(chunk)))
        self._shards[id(samples)] = (samples, refs)
        return refs

    def _results(self, submit, samples):
        """``(shard index, size, result)`` as shards finish."""
        refs = self._shard_refs(samples)
        pending = {submit(ref): (n, size) for n, (ref, size) in enumerate(refs)}
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            n, size = pending.pop(ready[0])
            yield n, size, self._get(ready[0])

    def _get(self, ref):
        from ray import exceptions as rex

        try:
            return self.ray.get(ref)
        except rex.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MnnliteError):
                raise cause from None
            lines = str(cause if cause is not None else exc).strip().splitlines() or ["task failed"]
            raise ClusterError(f"a calibration task failed on the cluster: {lines[-1].strip()}") from None
        except rex.RayError as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise ClusterError(f"a calibration task was lost after {TASK_RETRIES} retries: "
                               f"{lines[0].strip()}") from None

    def map(self, samples, fn):
        """``fn(interp, feeds)`` for every sample, yielded in sample order (shards run in any order)."""
        done: dict = {}
        next_shard = 0
        for n, _size, results in self._results(
                lambda ref: self._map.remote(self.key, self._recipe_ref, fn, ref), samples):
            done[n] = results
            while next_shard in done:
                yield from done.pop(next_shard)
                next_shard += 1

    def order_free_pass(self, observers: dict, samples, done=None) -> None:
        """Every sample through the model with shard-local observers merged into ``observers``."""
        from .quant.workers import merge_shard, shard_observers

        snapshot = self.ray.put(shard_observers(observers))
        for _n, size, partial in self._results(
                lambda ref: self._observe.remote(self.key, self._recipe_ref, snapshot, ref), samples):
            merge_shard(observers, partial)
            if done is not None:
                for _ in range(size):
                    done()
