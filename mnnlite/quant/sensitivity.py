"""Label-free accuracy control (the ``target_cosine`` key): which int8 convs to leave float.

Every measurement runs the candidate int8 file on mnnlite's int8 runtime, which is bit-exact with MNN's
x86 runtime, on samples held out of calibration, against the float model's outputs:

1. ``Evaluator.score``: per output, the cosine of the int8 outputs to the float ones over every held-out
   sample (all values of an output as one vector); a user ``metric(reference, test) -> float`` (higher is
   better, Python API) replaces it.  The file's score is its worst output's.
2. ``layer_errors``: one int8 run observing every tensor gives each conv's local damage, the growth of
   the relative error from its input to its output (a conv that turns a 0.1 % error into 3 % is what to
   leave float, not the ones downstream that merely carry it).
3. ``leave_float``: the most damaging convs are left float in growing numbers (1, 2, 4, ...) until the
   target is met, then the count is narrowed by bisection, so a model costs O(log n) evaluations instead
   of n (NNCF's accuracy control ranks by the same kind of score, then reverts greedily).  The share of
   conv MACs left float is bounded (``max_float_convs``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0 or not np.isfinite(na * nb):
        return 0.0
    return float(np.dot(a64, b64) / (na * nb))


class Evaluator:
    """Float references of the held-out samples, and the score of any candidate model on them."""

    def __init__(self, float_model, samples: list[dict], impl: str, metric: Callable | None = None,
                 target: str = "x86"):
        from ..runtime import Interpreter

        self.samples, self.impl, self.metric, self.target = samples, impl, metric, target
        interp = Interpreter(float_model, impl=impl, precision="float")
        self.references = [interp.run(f) for f in samples]
        self.evaluations = 0

    def outputs(self, model) -> list[dict]:
        from ..runtime import Interpreter

        interp = Interpreter(model, impl=self.impl, target=self.target)
        return [interp.run(f) for f in self.samples]

    def score(self, model) -> dict[str, float]:
        """{output name: score} of ``model`` (int8 where MNN runs int8) on the held-out samples."""
        self.evaluations += 1
        got = self.outputs(model)
        scores = {}
        for name in self.references[0]:
            ref = [r[name] for r in self.references]
            test = [g[name] for g in got]
            if self.metric is not None:
                scores[name] = float(self.metric(ref[0] if len(ref) == 1 else ref, test[0] if len(test) == 1 else test))
            else:
                scores[name] = _cos(np.concatenate([r.reshape(-1) for r in ref]),
                                    np.concatenate([t.reshape(-1) for t in test]))
        return scores


def layer_errors(float_model, quant_model, feeds: list[dict], tensors: set[int], impl: str,
                 target: str = "x86") -> dict[int, float]:
    """Relative L2 error of each of ``tensors`` in the int8 run against the float run, over ``feeds``."""
    from ..runtime import Interpreter

    f_interp = Interpreter(float_model, impl=impl, precision="float")
    q_interp = Interpreter(quant_model, impl=impl, target=target)
    num = {t: 0.0 for t in tensors}
    den = {t: 0.0 for t in tensors}
    for feed in feeds:
        ref = {}

        def keep(i, _name, a):
            if i in num:
                ref[i] = np.asarray(a, np.float64).copy()

        def compare(i, _name, a):
            r = ref.get(i)
            if r is not None and np.shape(a) == r.shape:
                num[i] += float(np.sum(np.square(np.asarray(a, np.float64) - r)))
                den[i] += float(np.sum(np.square(r)))
        f_interp.run(feed, observe=keep)
        q_interp.run(feed, observe=compare)
    return {t: (np.sqrt(num[t] / den[t]) if den[t] > 0 else 0.0) for t in tensors}


@dataclass
class Control:
    """What accuracy control did."""

    target: float
    before: dict[str, float]                       # scores with every candidate conv int8
    after: dict[str, float]                        # scores of the file written
    float_convs: list[str] = field(default_factory=list)      # in order of damage
    damage: dict[str, float] = field(default_factory=dict)    # conv name -> local error growth
    evaluations: int = 0
    reached: bool = True
    trials: list[tuple[int, float]] = field(default_factory=list)   # (convs left float, worst score)


def leave_float(evaluate: Callable[[list[str]], dict[str, float]], ranked: list[tuple[str, float, int]],
                target: float, max_float_macs: int, before: dict[str, float]) -> tuple[list[str], dict, list]:
    """The fewest most damaging convs to leave float so that every score reaches ``target``.

    ``ranked``: (conv name, damage, MACs), most damaging first.  ``evaluate(names)`` scores the file with
    those convs float.  Returns (names, their scores, trials); when even the largest allowed set misses
    the target, the best-scoring set tried.
    """
    trials: list[tuple[int, float]] = [(0, min(before.values()))]
    cache: dict[int, dict] = {0: before}

    def run(k: int) -> dict:
        if k not in cache:
            cache[k] = evaluate([name for name, _, _ in ranked[:k]])
            trials.append((k, min(cache[k].values())))
        return cache[k]

    macs = np.cumsum([m for _, _, m in ranked]) if ranked else np.zeros(0)
    limit = int(np.searchsorted(macs, max_float_macs, side="right"))      # convs allowed float
    if min(before.values()) >= target or limit == 0:
        return [], before, trials
    k, good, bad = 1, None, 0
    while k <= limit:
        if min(run(k).values()) >= target:
            good = k
            break
        bad = k
        k *= 2
    if good is None and bad < limit:
        if min(run(limit).values()) >= target:
            good = limit
    if good is None:
        best = max(cache, key=lambda n: min(cache[n].values()))
        return [name for name, _, _ in ranked[:best]], cache[best], trials
    lo, hi = bad, good                      # lo misses, hi meets
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if min(run(mid).values()) >= target:
            hi = mid
        else:
            lo = mid
    return [name for name, _, _ in ranked[:hi]], cache[hi], trials


__all__ = ["Evaluator", "Control", "layer_errors", "leave_float"]
