"""Statistics collection: every tracked tensor's values streamed to its feature observer, pass by pass.

``collect_scales`` runs any registered feature method of the "statistics" flow (``feature.FEATURE_METHODS``:
KL, docs/mnn-quantization.md §6.3-6.5; ADMM, §7): one observer per tracked tensor, ``method.passes``
streamed passes over the samples (one sample's activations at a time, per-tensor accumulators of bounded
size), then each observer's ``compute``.  What differs between methods is declared on the observer class
(``order_free``, ``progress``, ``compute_progress``, ``only_needed``, ``for_tensor``), not here.
"""
from __future__ import annotations

from .log import RANGES
from .tracking import TrackingPlan, layout_name, needed_statistics
from .workers import Workers, as_workers, feed_observers


def collect_scales(method, workers: Workers, plan: TrackingPlan, samples, clamp: int, log, max_tensors=(),
                   facts=None, extra=None) -> dict[int, tuple]:
    """Feature scales of ``plan``'s tracked tensors by ``method`` (a ``feature.FeatureObserver`` class);
    returns tensor -> (scale, zero) before propagation.

    ``max_tensors``: tensors that use the MAX threshold whatever their shape (the model inputs: MNN's
    intent, docs/mnn-quantization.md §14.6).  ``facts``: the first sample's tensor shapes (KL's MAX-or-KL
    rule).  ``extra``: more two-pass observers (tensor -> observer, order-independent) fed in the same
    passes (bias correction's channel means).
    """
    needed = needed_statistics(plan) if method.only_needed else plan.tracked
    observers = {t: method.for_tensor(clamp, layout=layout_name(plan, t),
                                      shape=facts[t].shape if facts is not None and t in facts else None,
                                      force_max=t in max_tensors)
                 for t in plan.tracked if t in needed}
    stream_passes(workers, joined(observers, extra), samples, log, method.progress, parallel=method.order_free,
                  passes=method.passes)
    scales = dict(zip(observers, compute_all(observers.values(), log, method.compute_progress)))
    # tensors whose own statistics propagation overwrites: any value will do, MNN's map holds them too
    scales.update({t: (0.0, 0.0) for t in plan.tracked if t not in observers})
    return scales


def compute_all(observers, log, progress: str | None) -> list[tuple]:
    """``compute()`` of every observer.  ``progress``: MNN's progress line, one observer after the other;
    None: on all cores (numpy releases the GIL; results are independent of the order, so the output is
    the same as a serial loop)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    observers = list(observers)
    if progress is not None:
        results = []
        log.progress(progress, 0, len(observers))
        for n, obs in enumerate(observers, 1):
            results.append(tuple(obs.compute()))
            log.progress(progress, n, len(observers))
        log.end_progress()
        return results
    workers = min(len(observers), os.cpu_count() or 1)
    if workers <= 1:
        return [tuple(o.compute()) for o in observers]
    with ThreadPoolExecutor(workers) as pool:
        return [tuple(r) for r in pool.map(lambda o: o.compute(), observers)]


class _Both:
    """Two observers of one tensor fed together (``start_pass``/``update``; results read from each)."""

    def __init__(self, first, second):
        self.observers = (first, second)

    def start_pass(self, index: int) -> None:
        for obs in self.observers:
            obs.start_pass(index)

    def update(self, x) -> None:
        for obs in self.observers:
            obs.update(x)

    def shard(self) -> "_Both":
        return _Both(*(obs.shard() for obs in self.observers))

    def partial(self) -> tuple:
        return tuple(obs.partial() for obs in self.observers)

    def merge(self, part) -> None:
        for obs, p in zip(self.observers, part):
            obs.merge(p)


def joined(observers: dict, extra) -> dict:
    """``observers`` with ``extra`` ones (tensor -> observer) fed alongside in the same passes."""
    if not extra:
        return observers
    both = dict(observers)
    for t, obs in extra.items():
        both[t] = _Both(both[t], obs) if t in both else obs
    return both


def stream_passes(workers: Workers, observers: dict, samples, log, progress: str, parallel: bool,
                  passes: int = 2) -> None:
    """Stream every sample through the model ``passes`` times, feeding each tracked tensor to its observer
    (pass 0: ranges, the last pass shows MNN's ``progress`` line).  ``parallel``: the observers'
    statistics do not depend on sample order, so samples may run on every worker (``order_free_pass``);
    else one after the other on ``first``."""
    workers = as_workers(workers)
    total = len(samples)
    for p in range(passes):
        for obs in observers.values():
            obs.start_pass(p)
        count = [0]
        label, shown_by_mnn = (progress, True) if p == passes - 1 else (RANGES, False)

        def done():
            count[0] += 1
            log.progress(label, count[0], total, mnn=shown_by_mnn)
        log.progress(label, 0, total, mnn=shown_by_mnn)
        if parallel:
            workers.order_free_pass(observers, samples, done)
        else:
            feed = feed_observers(observers)
            for feeds in samples:
                workers.first.run(feeds, observe=feed)
                done()
        log.end_progress(mnn=shown_by_mnn)
