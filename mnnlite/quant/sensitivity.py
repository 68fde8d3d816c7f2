"""Label-free accuracy control (the ``target_cosine`` key): which int8 convs to leave float.

Every measurement runs the candidate int8 file on mnnlite's int8 runtime, which is bit-exact with MNN's
x86 runtime, on samples held out of calibration, against the float model's outputs:

1. ``Evaluator.score``: per output, the cosine of the int8 outputs to the float ones over every held-out
   sample (all values of an output as one vector); a user ``metric(reference, test) -> float`` (higher is
   better, Python API) replaces it.  The file's score is its worst output's.  With ``score_on`` "logits"
   an output that a final Softmax or Sigmoid makes (through reshapes and layout changes only) is scored
   on that activation's input: a saturated probability barely moves when the logits do (a 2-class
   classifier's held-out softmax scored 0.999999 while the corpus's other samples lost 0.005), and a
   probability map of a text detector on a sample without text is ~0 everywhere, where the cosine is
   rounding noise; the logits carry the margins the decisions depend on.
2. ``Profiler``: one int8 run observing every tensor gives each conv's local damage, the growth of the
   relative error from its input to its output (a conv that turns a 0.1 % error into 3 % is what to
   leave float, not the ones downstream that merely carry it).
3. ``leave_float``: greedy, one conv at a time: the most damaging conv that improves the worst output
   joins the float set, then the damage is measured again with it float, until the target is met; a
   model costs a few evaluations per conv left float instead of one per conv (NNCF's accuracy control
   ranks by a similar score, then reverts greedily).  The share of convolutions left float is bounded
   (``max_float_convs``); the report gives the share of MACs.
"""
from __future__ import annotations

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


# ops an output may be reached through from its final activation without changing its values
_MOVES = ("Reshape", "ConvertTensor", "Squeeze", "Unsqueeze", "Permute", "Transpose", "Flatten")


def logit_tensors(graph) -> dict[str, int]:
    """{output name: index of the tensor a final Softmax / Sigmoid reads} for the outputs made by one."""
    from ..format.tables import OpType
    from ..graph import op_type_name

    found = {}
    for t in graph.outputs:
        cur = t
        while True:
            op = graph.producer.get(cur)
            if op is None or op.inputIndexes is None or len(op.inputIndexes) == 0:
                break
            kind = op_type_name(op)
            if kind in _MOVES:
                cur = int(op.inputIndexes[0])
                continue
            sigmoid = op.type == OpType.Sigmoid or (kind == "UnaryOp" and int(op.main.opType) == 29)  # SIGMOID
            if kind == "Softmax" or sigmoid:
                found[graph.tensors[t]] = int(op.inputIndexes[0])
            break
    return found


LOGITS_SUFFIX = " (logits)"          # key of a final activation's input in ``Evaluator.score(..., finals=True)``


class Evaluator:
    """Float references of the held-out samples, and the score of any candidate model on them."""

    def __init__(self, float_model, samples: list[dict], impl: str, metric: Callable | None = None,
                 target: str = "x86", score_on: str = "outputs", plan_facts: dict | None = None,
                 threads: int = 1):
        from ..runtime import Interpreter

        self.samples, self.impl, self.metric, self.target = samples, impl, metric, target
        self.plan_facts = plan_facts      # shared by the candidate files' interpreters (Interpreter plan_facts)
        self.threads = threads            # held-out samples run side by side (quant.workers.Workers)
        # output name -> logits tensor of its final Softmax / Sigmoid; scored in place of the output with
        # score_on "logits", next to it with score(finals=True) (a user metric judges the outputs themselves)
        self.finals = logit_tensors(float_model.graph) if metric is None else {}
        self.logits = self.finals if score_on == "logits" else {}
        self.references = self._run_all(lambda: Interpreter(float_model, impl=impl, precision="float"), True)
        self.evaluations = 0

    def _run_all(self, make, finals: bool = False) -> list[dict]:
        """``_run`` of every held-out sample, in sample order, on ``threads`` interpreters ``make()``."""
        from .workers import Workers

        return list(Workers(make, min(self.threads, len(self.samples))).map(
            self.samples, lambda interp, feed: self._run(interp, feed, finals)))

    def _run(self, interp, feed, finals: bool = False) -> dict:
        """The outputs of one sample, with the scored logits in place of their activations' outputs;
        ``finals``: also every final activation's logits, as "<output> (logits)"."""
        wanted: dict[int, list[str]] = {}
        for name, t in self.logits.items():
            wanted.setdefault(t, []).append(name)
        for name, t in (self.finals.items() if finals else ()):
            wanted.setdefault(t, []).append(name + LOGITS_SUFFIX)
        seen: dict = {}

        def keep(i, _name, a):
            for key in wanted.get(i, ()):
                seen[key] = np.array(a, np.float32)
        out = interp.run(feed, observe=keep if wanted else None)
        out.update(seen)
        return out

    def outputs(self, model, finals: bool = False) -> list[dict]:
        from ..runtime import Interpreter

        return self._run_all(lambda: Interpreter(model, impl=self.impl, target=self.target,
                                                 plan_facts=self.plan_facts), finals)

    def score(self, model, finals: bool = False) -> dict[str, float]:
        """{output name: score} of ``model`` (int8 where MNN runs int8) on the held-out samples; with
        ``finals`` also the cosine of every final activation's logits (``LOGITS_SUFFIX``)."""
        self.evaluations += 1
        got = self.outputs(model, finals)
        scores = {}
        for name in got[0]:
            ref = [r[name] for r in self.references]
            test = [g[name] for g in got]
            if self.metric is not None:
                scores[name] = float(self.metric(ref[0] if len(ref) == 1 else ref, test[0] if len(test) == 1 else test))
            else:
                scores[name] = _cos(np.concatenate([r.reshape(-1) for r in ref]),
                                    np.concatenate([t.reshape(-1) for t in test]))
        return scores


class Profiler:
    """Relative L2 error of chosen tensors in an int8 run against the float run (float values cached)."""

    def __init__(self, float_model, feeds: list[dict], tensors: set[int], impl: str, target: str = "x86",
                 plan_facts: dict | None = None):
        from ..runtime import Interpreter

        self.feeds, self.tensors, self.impl, self.target = feeds, set(tensors), impl, target
        self.plan_facts = plan_facts
        self.references: list[dict] = []
        self.energy: dict[int, float] = dict.fromkeys(self.tensors, 0.0)
        interp = Interpreter(float_model, impl=impl, precision="float")
        for feed in feeds:
            ref: dict = {}

            def keep(i, _name, a, ref=ref):
                if i in self.tensors:
                    r = ref[i] = np.array(a, np.float32).reshape(-1)
                    self.energy[i] += float(np.dot(r, r))
            interp.run(feed, observe=keep)
            self.references.append(ref)

    def errors(self, quant_model) -> dict[int, float]:
        from ..runtime import Interpreter

        q_interp = Interpreter(quant_model, impl=self.impl, target=self.target, plan_facts=self.plan_facts)
        num = dict.fromkeys(self.tensors, 0.0)
        den = self.energy
        for feed, ref in zip(self.feeds, self.references):
            def compare(i, _name, a):
                r = ref.get(i)
                if r is not None and np.size(a) == r.size:
                    d = np.asarray(a, np.float32).reshape(-1) - r
                    num[i] += float(np.dot(d, d))
            q_interp.run(feed, observe=compare)
        return {t: (float(np.sqrt(num[t] / den[t])) if den[t] > 0 else 0.0) for t in self.tensors}


def leave_float(evaluate: Callable[[list[str]], dict[str, float]], rank: Callable[[list[str]], list[str]],
                target: float, limit: int, before: dict[str, float], tries: int = 3):
    """The fewest most damaging convs to leave float so that every score reaches ``target``.

    Greedy with re-ranking: ``rank(float_names)`` orders the convs still int8 by damage measured with
    ``float_names`` float (leaving the worst conv float changes what the others' errors look like), and
    the first of its ``tries`` best candidates that improves the worst score joins the float set.  At most
    ``limit`` convs are left float.  ``evaluate(names)`` scores the file with those convs float.  Returns
    (names, their scores, trials [(float count, worst score)]); when the target is out of reach, the
    best set found.
    """
    chosen: list[str] = []
    scores = before
    trials: list[tuple[int, float]] = [(0, min(before.values()))]
    while min(scores.values()) < target and len(chosen) < limit:
        improved = False
        for name in rank(chosen)[:tries]:
            trial = evaluate(chosen + [name])
            trials.append((len(chosen) + 1, min(trial.values())))
            if min(trial.values()) > min(scores.values()):
                chosen, scores, improved = chosen + [name], trial, True
                break
        if not improved:
            break
    return chosen, scores, trials


__all__ = ["Evaluator", "Profiler", "leave_float"]
