"""Statistics collection: every tracked tensor's values streamed to its feature observer, pass by pass.

One sample's activations at a time; per-tensor accumulators of bounded size (``feature``).
"""
from __future__ import annotations

from .feature.admm import StreamingADMM
from .log import RANGES
from .tracking import TrackingPlan, layout_name, needed_statistics
from .workers import Workers, as_workers, feed_observers


# --------------------------------------------------------------------------------------------------
# KL (docs/mnn-quantization.md §6.3-6.5)
# --------------------------------------------------------------------------------------------------
def _compute_all(observers) -> list[tuple]:
    """``compute()`` of every observer, on all cores (numpy releases the GIL; results are independent of
    the order, so the output is the same as a serial loop)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    observers = list(observers)
    workers = min(len(observers), os.cpu_count() or 1)
    if workers <= 1:
        return [tuple(o.compute()) for o in observers]
    with ThreadPoolExecutor(workers) as pool:
        return [tuple(r) for r in pool.map(lambda o: o.compute(), observers)]


def calibrate_kl(workers: Workers, plan: TrackingPlan, samples, clamp: int, log, max_tensors=(),
                 facts=None, extra=None) -> dict[int, tuple]:
    """Two streamed passes (ranges, then histograms); returns tensor -> (scale, zero) before propagation.

    ``max_tensors``: tensors that use the MAX threshold whatever their shape (the model inputs: MNN's
    intent, docs/mnn-quantization.md §14.6).  ``facts``: the first sample's tensor shapes, which decide the MAX-or-KL rule
    (samples may finish in any order on several workers).  ``extra``: more two-pass observers
    (tensor -> observer, order-independent) fed in the same passes (bias correction's channel means).
    """
    from .feature.kl import KLObserver

    needed = needed_statistics(plan)
    observers = {t: KLObserver(clamp, threshold="MAX" if t in max_tensors else "auto", layout=layout_name(plan, t))
                 for t in plan.tracked if t in needed}
    for t, obs in observers.items():
        if facts is not None and t in facts:
            obs.shape = facts[t].shape
    stream_passes(workers, joined(observers, extra), samples, log, "CollectFeatureDistribution", parallel=True)
    scales = dict(zip(observers, _compute_all(observers.values())))
    # tensors whose own statistics propagation overwrites: any value will do, MNN's map holds them too
    scales.update({t: (0.0, 0.0) for t in plan.tracked if t not in observers})
    return scales



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
    if not extra:
        return observers
    joined = dict(observers)
    for t, obs in extra.items():
        joined[t] = _Both(joined[t], obs) if t in joined else obs
    return joined


def stream_passes(workers: Workers, observers: dict, samples, log, progress: str, parallel: bool) -> None:
    """Stream every sample through the model twice, feeding each tracked tensor to its observer
    (pass 0: ranges, pass 1: distributions; the second pass shows MNN's progress line).  ``parallel``:
    the observers' statistics do not depend on sample order, so samples may run on every worker
    (``order_free_pass``); else one after the other on ``first``."""
    workers = as_workers(workers)
    total = len(samples)
    for p in range(2):
        for obs in observers.values():
            obs.start_pass(p)
        count = [0]
        label, shown_by_mnn = (progress, True) if p == 1 else (RANGES, False)

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


def calibrate_admm(workers: Workers, plan: TrackingPlan, samples, clamp: int, log, extra=None) -> dict[int, tuple]:
    """ADMM feature scales, one sample at a time (two streamed passes); tensor -> (scale, 0).
    ``extra``: as ``calibrate_kl``'s."""
    observers = {t: StreamingADMM(clamp) for t in plan.tracked}
    stream_passes(workers, joined(observers, extra), samples, log, "ProcessCalibrationFiles", parallel=False)
    scales = {}
    log.progress("ComputeADMM", 0, len(observers))
    for n, (t, obs) in enumerate(observers.items(), 1):
        scales[t] = obs.compute()
        log.progress("ComputeADMM", n, len(observers))
    log.end_progress()
    return scales


