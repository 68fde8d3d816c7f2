"""Running the float model over the calibration samples: re-iterable samples, worker interpreters.

``Samples`` keeps preprocessed feeds while they fit a budget; ``Workers`` runs samples on several
interpreters side by side (``mnnlite.distributed.RayWorkers`` offers the same on a Ray cluster) and feeds
each tracked tensor to its observer (``feed_observers``, sharded with ``shard_observers`` /
``merge_shard``).
"""
from __future__ import annotations

import numpy as np

from ..backend.lowering import TensorFacts

# A forward shorter than this is mostly Python glue, which holds the GIL: a second interpreter only adds
# switching (ppocr_cls, ~5 ms a forward, calibrates faster on one thread).  The result is the same.
SERIAL_BELOW_SECONDS = 0.006


class Samples:
    """Re-iterable calibration feeds: preprocessed once and kept while they fit ``budget`` bytes.

    Each pass of a two-pass method iterates again; samples beyond the budget are decoded again from the
    dataset, so memory stays bounded whatever the number of samples.
    """

    def __init__(self, dataset, budget: int = 256 << 20):
        self.dataset, self.budget = dataset, budget
        self._cache: list[dict] = []
        self._complete = False
        self._count: int | None = None

    def __iter__(self):
        if self._complete:
            yield from self._cache
            return
        cached, used, count = [], 0, 0
        for feeds in self.dataset:
            count += 1
            size = sum(a.nbytes for a in feeds.values())
            if used + size <= self.budget:
                cached.append(feeds)
                used += size
            yield feeds
        self._count = count
        if len(cached) == count:
            self._cache, self._complete = cached, True

    def __len__(self) -> int:
        if self._count is not None:
            return self._count
        return len(self.dataset)


def observe_values(a: np.ndarray) -> np.ndarray:
    """The float32 values MNN's statistics read: int32 tensors are read as their raw bits (host<float>)."""
    if a.dtype == np.float32:
        return a
    if a.dtype == np.int32 or a.dtype == np.uint32:
        return np.ascontiguousarray(a).view(np.float32)
    return a.astype(np.float32)


def tensor_facts(interp, feeds) -> dict[int, TensorFacts]:
    """Shapes and element types of every main-graph tensor in one forward."""
    facts: dict[int, TensorFacts] = {}

    def grab(i, _name, a):
        facts[i] = TensorFacts(tuple(int(d) for d in np.shape(a)), np.asarray(a).dtype)
    interp.run(feeds, observe=grab)
    return facts



class Workers:
    """Interpreters that run calibration samples side by side (the float kernels release the GIL).

    Two ways to use them, both independent of the worker count: ``map`` returns per-sample results in
    sample order (EMA's batch ranges, folded in order by the caller), and ``order_free_pass`` collects
    statistics that do not depend on the order of the samples (KL's ranges and integer histograms) in
    shard-local observers merged at the end.  ``mnnlite.distributed.RayWorkers`` offers the same two on
    a Ray cluster, with the same shard functions (``observe_shard``, ``merge_shard``).  ADMM's float sums
    depend on the order and run on ``first`` alone.
    """

    def __init__(self, make, count: int = 1):
        self.make, self.count = make, max(1, int(count))
        self._interps = [make()]

    @property
    def first(self):
        return self._interps[0]

    def _all(self) -> list:
        while len(self._interps) < self.count:
            self._interps.append(self.make())
        return self._interps

    def map(self, samples, fn):
        """``fn(interp, feeds)`` for every sample, the results yielded in sample order.

        Several samples run at once when there are several workers (``fn`` is then called from several
        threads, each with its own interpreter); at most two per worker are in flight, so memory stays
        bounded whatever the number of samples.
        """
        if self.count == 1:
            for feeds in samples:
                yield fn(self.first, feeds)
            return
        import queue
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        idle = queue.SimpleQueue()
        for interp in self._all():
            idle.put(interp)

        def one(feeds):
            interp = idle.get()
            try:
                return fn(interp, feeds)
            finally:
                idle.put(interp)
        pending = deque()
        with ThreadPoolExecutor(self.count) as pool:
            try:
                for feeds in samples:
                    if len(pending) >= 2 * self.count:
                        yield pending.popleft().result()
                    pending.append(pool.submit(one, feeds))
                while pending:
                    yield pending.popleft().result()
            finally:
                for f in pending:
                    f.cancel()

    def order_free_pass(self, observers: dict, samples, done=None) -> None:
        """Every sample through the model, each interpreter feeding observers of its own
        (``shard_observers``), merged into ``observers`` at the end (``merge_shard``); ``done()`` after
        each sample.  Only for observers whose statistics do not depend on the order of the samples."""
        own: dict = {}

        def run(interp, feeds):
            shard = own.get(id(interp))
            if shard is None:
                shard = own[id(interp)] = shard_observers(observers)
            interp.run(feeds, observe=feed_observers(shard))
        for _ in self.map(samples, run):
            if done is not None:
                done()
        for shard in own.values():
            merge_shard(observers, shard_partials(shard))


def shard_observers(observers: dict) -> dict:
    """Empty observers for one shard of the samples, carrying what earlier passes found (KL's range)."""
    return {t: obs.shard() for t, obs in observers.items()}


def feed_observers(observers: dict):
    """The ``observe`` hook that feeds each tracked tensor to its observer."""
    def feed(i, _name, a):
        obs = observers.get(i)
        if obs is not None:
            obs.update(observe_values(a))
    return feed


def shard_partials(observers: dict) -> dict:
    """What a shard's observers gathered this pass, to send back and merge."""
    return {t: obs.partial() for t, obs in observers.items()}


def observe_shard(interp, observers: dict, shard) -> dict:
    """Run a shard of samples with its own ``observers`` (from ``shard_observers``); their partials."""
    feed = feed_observers(observers)
    for feeds in shard:
        interp.run(feeds, observe=feed)
    return shard_partials(observers)


def merge_shard(observers: dict, partials: dict) -> None:
    """Fold a shard's partial statistics into the run's observers (exact: min/max and integer sums)."""
    for t, part in partials.items():
        observers[t].merge(part)


def as_workers(interp) -> Workers:
    """A ``Workers`` as is (or anything with ``order_free_pass``); else a single local worker."""
    return interp if hasattr(interp, "order_free_pass") else Workers(lambda: interp)


def make_workers(build, model, args: tuple, count: int, ray=None):
    """Workers whose interpreters ``build(model, *args)`` makes: ``count`` local threads, or tasks on the
    Ray cluster when ``ray`` (the connected module) is given; there the model travels as its bytes."""
    if ray is None:
        return Workers(lambda: build(model, *args), count)
    import functools

    from ..distributed import RayWorkers
    from ..format.model_io import dumps

    return RayWorkers(ray, functools.partial(build, dumps(model), *args))


def float_interpreter(model, impl: str, layout: str = "model"):
    """The float interpreter calibration runs (``model``: a Model or an .mnn file's bytes), feeds in
    ``layout`` (``mnnlite.layout``)."""
    from ..runtime import Interpreter

    return Interpreter(_as_model(model), impl=impl, precision="float", layout=layout)


def _as_model(model):
    from ..format.model_io import loads

    return loads(model) if isinstance(model, (bytes, bytearray)) else model

