"""mnnlite's accurate quantization flow: ``"preset": "accurate"`` and its keys (README "Accurate preset").

The file is still one MNN's official runtime runs (the form of the EMA path: int8 convs with per-channel
weights, ``scaleIn``/``scaleOut`` and zero points, tensor quant info), but what goes into it is chosen for
accuracy instead of reproducing ``quantized.out``:

1. samples: with ``target_cosine``, the last ``holdout`` share of the calibration samples is held out;
2. which ops run int8 (``opselect.py``): the convolutions, each reading and writing tensors with ranges of
   their own; the int8 plan MNN's runtime would run is replayed and its known-bad patterns repaired;
3. ranges (``ranges.py``): one streamed statistics pass (min/max, signed histograms) over the tensors the
   int8 convs touch, then per tensor the range method (``range_method``) and form, symmetric or with a zero
   point (int8 convs and MNN's casts honour zero points);
4. accuracy control (``sensitivity.py``): convs left float, fewest and most damaging first, until the
   held-out cosine of every output reaches ``target_cosine``;
5. the report (``AccuracyReport``): per op int8 or float and why, the range of every quantized tensor,
   the cosine before and after; ``quantize`` writes it as ``<dst>.report.json`` and ``<dst>.report.html``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..backend.rules import NHWC
from ..errors import ConfigError, DataError
from ..int8 import int8_plan
from .dataset import RuntimeFeeds
from .opselect import ConvSite, check_plan, conv_sites, mixed_concat_inputs, nudged, stat_tensors
from .ranges import Downstream, Range, RangeObserver, choose_downstream, choose_range
from .rewrite import ConvQuant, TensorQuant, rewrite
from .statistics import joined, stream_passes
from .tracking import plan_tracking
from .workers import SERIAL_BELOW_SECONDS, Samples, Workers, float_interpreter, tensor_facts

MAX_REPAIR_ROUNDS = 4
DOWNSTREAM_VALUES = 2048     # values per channel the downstream objective keeps of every conv input
# share of the best candidate's held-out error (1 - score) another range candidate must remove to replace
# it (``_choose_ranges``); the chosen corpus models removed 36-85 % (PP-OCRv4 det, ppocr_cls, MTCNN R-Net)
RANGE_CANDIDATE_MARGIN = 1 / 3
PROFILE_SAMPLES = 1          # held-out samples for the per-layer error profile (a ranking, not a score)
# the flow runs the compiled kernels with their own float rounding ("fast"): MNN's rounding ("mnn", ~2x
# slower) moves statistics and scores by ~1e-5, far below what decides a range or a conv's fate; the
# numpy references ("ref") are used when asked for
CONTROL_IMPL = "fast"


@dataclass
class OpDecision:
    name: str
    type: str
    int8: bool
    reason: str
    macs: int = 0
    damage: float | None = None       # local error growth measured by accuracy control
    error: float | None = None        # relative L2 error of the output in the final file (held-out)


@dataclass
class TensorChoice:
    tensor: int
    name: str
    method: str
    symmetric: bool
    lo: float
    hi: float
    scale: float
    zero: float
    error: float                      # expected squared error per value (histogram)
    histogram: dict | None = None     # 64-bin summary for the HTML report


@dataclass
class AccuracyReport:
    """What the accurate flow did (``QuantReport.accuracy``); ``to_dict`` is ``<dst>.report.json``."""

    preset: str | None
    range_method: str
    int8_ops: str
    target_cosine: float | None
    calibration_samples: int
    heldout_samples: int
    ops: list[OpDecision] = field(default_factory=list)
    tensors: list[TensorChoice] = field(default_factory=list)
    repairs: list[dict] = field(default_factory=list)
    cosine_before: dict[str, float] = field(default_factory=dict)
    cosine_after: dict[str, float] = field(default_factory=dict)
    float_ops: list[dict] = field(default_factory=list)       # every compute op MNN runs float, and why
    int8_conv_mac_share: float = 0.0
    evaluations: int = 0
    trials: list = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    reached: bool | None = None
    range_objective: str = "tensor"
    score_on: str = "outputs"         # what the held-out scores are measured on (sensitivity.py)
    range_candidates: dict[str, float] = field(default_factory=dict)   # method -> judged held-out score

    def to_dict(self) -> dict:
        import dataclasses

        return _jsonable(dataclasses.asdict(self))

    def summary_lines(self) -> list[str]:
        convs = [o for o in self.ops if o.type.startswith("Conv")]
        int8 = [o for o in convs if o.int8]
        lines = [f"accurate: {len(int8)}/{len(convs)} convolution(s) int8 "
                 f"({100 * self.int8_conv_mac_share:.1f} % of conv MACs), range method {self.range_method}"
                 f" ({self.range_objective} error)"]
        methods: dict[str, int] = {}
        for t in self.tensors:
            key = f"{t.method}/{'sym' if t.symmetric else 'asym'}"
            methods[key] = methods.get(key, 0) + 1
        lines.append("ranges: " + ", ".join(f"{k} {v}" for k, v in sorted(methods.items())))
        if self.range_candidates:
            lines.append("range candidates (held-out, worst of the outputs and final logits): "
                         + ", ".join(f"{k} {v:.5f}" for k, v in self.range_candidates.items())
                         + f"; chosen {self.range_method}")
        for o in convs:
            if not o.int8:
                lines.append(f"float: {o.name} ({o.reason})")
        for r in self.repairs:
            lines.append(f"repair: {r['reason']}")
        if self.cosine_before:
            def fmt(d):
                return ", ".join(f"{k} {v:.5f}" for k, v in d.items())
            lines.append(f"held-out score before control: {fmt(self.cosine_before)}"
                         + (" (logits of the final activations)" if self.score_on == "logits" else ""))
            lines.append(f"held-out score of the file:    {fmt(self.cosine_after)}"
                         + ("" if self.reached in (None, True) else f" (target {self.target_cosine} not reached)"))
        return lines


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if np.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# ---------------------------------------------------------------------------------------------- flow

class _Builder:
    """Turns a set of int8 convs into the quantized model (quant info, int8 weights, repairs)."""

    def __init__(self, model, cfg, sites: list[ConvSite], facts, plan, ranges: dict[int, Range], stats: dict,
                 observers: dict, target: str):
        self.model, self.cfg, self.facts, self.plan = model, cfg, facts, plan
        self.sites = {s.name: s for s in sites}
        self.ranges, self.stats, self.observers, self.target = ranges, stats, observers, target
        self.weights: dict[int, tuple] = {}
        self.threads = 1                      # threads making the int8 weights (prepare_weights)
        self.repairs: list[dict] = []
        self.built: dict[tuple, tuple] = {}   # int8 names -> (model, tensors, repairs) of this run
        # every file built here has the model's ops and tensors: the float run an int8 plan starts from
        # is the same for all of them (Interpreter plan_facts)
        self.plan_facts: dict = {}
        self.means: dict = {}                 # conv input -> ChannelMeans (bias correction)

    def tensor_quant(self, t: int) -> TensorQuant:
        clamp = self.cfg.feature_clamp_value
        s, z = self.ranges[t].params(clamp)
        return TensorQuant(s, z, -float(clamp), float(clamp))

    def site_weights(self, site: ConvSite, w=None) -> tuple:
        """(codes, alpha, bias) of conv ``site``'s int8 weights (a function of the site alone); ``w``: its
        float weights when already decoded."""
        from ..ops.weights import conv_weights
        from .quantize import _corrected_bias
        from .weight import fake_quant_weights, quantize_weights

        cfg = self.cfg
        op = self.model.graph.ops[site.pos]
        if w is None:
            w, _ = conv_weights(op)
        w_float = w = np.asarray(w, np.float32).reshape(int(op.main.common.outputCount), -1)
        if cfg.weight_range_method == "max_abs":
            w = fake_quant_weights(w, cfg.weight_clamp_value)          # MNN's start (a clipped range starts from w)
        codes, alpha = quantize_weights(w, cfg.weight_quantize_method, cfg.quant_bits, cfg.weight_clamp_value,
                                        cfg.weight_range_method)
        bias = _corrected_bias(op, w_float, codes, alpha, self.means.get(site.input))
        # an all-zero weight channel: alpha 0 makes MNN's int8 conv write other values than the bias
        # (seen on ppocr_rec's depthwise_conv2d_10, channel 95); its codes are 0 whatever alpha is
        alpha = np.where(alpha > 0, alpha, np.float32(1)).astype(np.float32)
        return codes, alpha, bias

    def prepare_weights(self, sites: list[ConvSite]) -> None:
        """The int8 weights of ``sites`` not made yet, on ``threads`` threads (numpy's array operations
        release the GIL; MiniLM's per-channel MSE ranges: 3.3 s on one thread).  The float weights are
        decoded here first (``conv_weights``' cache is not for threads); with bias correction, which
        reads them again, one thread."""
        todo = [s for s in sites if s.pos not in self.weights]
        if self.threads > 1 and len(todo) > 1 and not self.means:
            from concurrent.futures import ThreadPoolExecutor

            from ..ops.weights import conv_weights

            made = []
            with ThreadPoolExecutor(self.threads) as pool:
                for k in range(0, len(todo), self.threads):      # a few decoded weights at a time
                    chunk = todo[k:k + self.threads]
                    decoded = [conv_weights(self.model.graph.ops[s.pos])[0] for s in chunk]
                    made += pool.map(self.site_weights, chunk, decoded)
        else:
            made = [self.site_weights(s) for s in todo]
        for s, w in zip(todo, made):
            self.weights[s.pos] = w

    def conv_quant(self, site: ConvSite, tensors: dict) -> ConvQuant:
        cfg = self.cfg
        if site.pos not in self.weights:
            self.weights[site.pos] = self.site_weights(site)
        codes, alpha, bias = self.weights[site.pos]
        qi, qo = tensors[site.input], tensors[site.output]
        fact = self.facts.get(site.input)
        channels = int(fact.shape[-1] if self.plan.formats.get(site.input) == NHWC else fact.shape[1])
        return ConvQuant(codes, alpha, cfg.quant_bits, qi.scale, qo.scale, channels, int(qi.zero), int(qo.zero),
                         bias=bias)

    def build(self, int8_names, record: bool = False):
        """(model, tensors) with the convs ``int8_names`` int8; the plan MNN would run is checked and the
        quant info repaired until it has none of the known-bad patterns.  The same names give the same
        file: a set accuracy control built is not built again (the final file is often the first one)."""
        key = tuple(int8_names)
        if key in self.built:
            model, tensors, repairs = self.built[key]
        else:
            model, tensors, repairs = self.built[key] = self._build(int8_names)
        if record:
            self.repairs = repairs
            self.built.clear()
        return model, tensors

    def _build(self, int8_names):
        active = [self.sites[n] for n in int8_names if n in self.sites]
        tensors: dict[int, TensorQuant] = {}
        for s in active:
            for t in (s.input, s.output):
                if t in self.ranges:
                    tensors.setdefault(t, self.tensor_quant(t))
        active = [s for s in active if s.input in tensors and s.output in tensors]
        self.prepare_weights(active)
        repairs = []
        for rounds in range(MAX_REPAIR_ROUNDS + 1):
            model = rewrite(self.model, tensors, {s.pos: self.conv_quant(s, tensors) for s in active})
            if self.cfg.int8_ops == "convs" or rounds == MAX_REPAIR_ROUNDS:
                break                                  # "convs": MNN's attribute spreading left unchecked
            fixes = check_plan(_plan_of(model, self.sample, self.plan_facts), tensors, self.stats, self.ranges, self.target)
            fixes = [f for f in fixes if not any(r["tensor"] == f.tensor for r in repairs)]
            if not fixes:
                break
            for t, why, apart, like in fixes:
                if like is not None:
                    q = TensorQuant(float(like.scale), float(like.zero), float(like.min), float(like.max))
                elif t in tensors:
                    q = tensors[t]
                elif t in self.ranges:
                    q = self.tensor_quant(t)
                else:
                    continue
                # apart: a key of its own even where its own range equals a neighbour's
                tensors[t] = nudged(q) if apart else q
                repairs.append({"tensor": t, "name": self.model.graph.tensors[t], "reason": why})
        return model, tensors, repairs


class _Ranges(dict):
    """tensor -> chosen Range, computed on first use (only the tensors that get quant info need one);
    ``downstream``: tensor -> Downstream for the tensors chosen by the error their readers see."""

    def __init__(self, stats: dict, method: str, clamp: int, downstream: dict | None = None):
        super().__init__()
        self.stats, self.method, self.clamp = stats, method, clamp
        self.downstream = downstream or {}

    def __contains__(self, t) -> bool:
        return t in self.stats

    def __missing__(self, t) -> Range:
        seen = self.downstream.get(t)
        if seen is not None:
            r = self[t] = choose_downstream(self.stats[t], seen, self.method, clamp=self.clamp)
        else:
            r = self[t] = choose_range(self.stats[t], self.method, clamp=self.clamp)
        return r

    def get(self, t, default=None):
        return self[t] if t in self.stats else default


def _input_gains(op, channels: int) -> np.ndarray | None:
    """Per input channel of conv ``op``: the sum of the squared weights reading it (``Downstream``)."""
    from ..ops.weights import conv_weights

    w, _ = conv_weights(op)
    w = np.asarray(w, np.float64)
    if w.ndim != 4 or w.shape[1] == 0 or channels % w.shape[1] or w.shape[0] % (channels // w.shape[1]):
        return None
    groups = channels // w.shape[1]
    per_column = np.square(w).sum(axis=(2, 3))                       # [O, C/g]
    return per_column.reshape(groups, -1, w.shape[1]).sum(axis=1).reshape(-1)


def downstream_of(graph, facts, plan, sites: list[ConvSite], workers, feeds) -> dict[int, Downstream]:
    """{conv input tensor: Downstream} from an even subsample of every calibration sample (the
    ``range_objective`` "downstream"; one more pass over the samples); a tensor whose channels cannot be matched to its readers' weights is
    left out (it keeps the histogram objective)."""
    by_pos = {s.pos: s for s in sites}
    position = {id(op): p for p, op in enumerate(graph.ops)}
    axis = {s.input: (-1 if plan.formats.get(s.input) == NHWC else 1) for s in sites}
    gains: dict[int, list] = {}
    for t in axis:
        shape = facts[t].shape
        if len(shape) < 2:
            continue
        channels = int(shape[axis[t]])
        readers = []
        for op in graph.consumers.get(t, []):
            site = by_pos.get(position.get(id(op)))
            readers.append(_input_gains(op, channels) if site is not None and site.input == t
                           else np.ones(channels))
        if readers and all(g is not None and g.shape == (channels,) for g in readers):
            gains[t] = readers
    budget = max(1, -(-DOWNSTREAM_VALUES // max(len(feeds), 1)))      # values per channel and sample

    def one(interp, feed):
        got: dict[int, np.ndarray] = {}

        def keep(i, _name, a):
            if i in gains:
                x = np.moveaxis(np.asarray(a, np.float32), axis[i], 0).reshape(len(gains[i][0]), -1)
                step = max(1, -(-x.shape[1] // budget))
                got[i] = np.ascontiguousarray(x[:, ::step])
        interp.run(feed, observe=keep)
        return got
    kept: dict[int, list] = {t: [] for t in gains}
    for got in workers.map(feeds, one):                  # sample order: the same subsample every run
        for t, x in got.items():
            kept[t].append(x)
    return {t: Downstream(np.concatenate(v, axis=1), gains[t]) for t, v in kept.items() if v}


def _choose_ranges(builder_of, candidates, names, evaluator):
    """``range_candidates``: (builder, held-out scores, {method: judged score}) of the range method whose
    all-int8 file keeps the held-out samples best.  One statistics pass serves every candidate; each costs
    a build and a held-out run.  A file is judged by its worst score over the outputs *and* the logits of
    every final Softmax / Sigmoid: a saturated softmax scores ~1 whatever the ranges (ppocr_cls: 1.00000
    under both candidates, its logits 0.9976 / 0.9993), while the logits alone can prefer ranges that
    lose the probabilities (PP-OCRv4 rec: logits 0.9904 -> 0.9958 but outputs 0.9878 -> 0.9856); a tie
    keeps the earlier candidate, and so does any gain smaller than ``RANGE_CANDIDATE_MARGIN`` of its
    error (``1 - score``): the held-out samples are few and accuracy control, which runs after the choice,
    can reverse a small lead (MiniLM: `percentile` 0.8869 against `auto` 0.8822 all-int8, then 0.887
    against 0.946 after control)."""
    from .sensitivity import LOGITS_SUFFIX

    best = None
    judged: dict[str, float] = {}
    for method in candidates:
        builder = builder_of(method)
        full, _ = builder.build(names)
        scores = evaluator.score(full, finals=True)
        judged[method] = min(scores.values())
        if best is None or 1 - judged[method] < (1 - best[0]) * (1 - RANGE_CANDIDATE_MARGIN):
            own = {k: v for k, v in scores.items() if not k.endswith(LOGITS_SUFFIX)}
            best = (judged[method], builder, own)
    return best[1], best[2], judged


def _plan_of(model, feeds, plan_facts: dict | None = None):
    from ..runtime import Interpreter

    interp = Interpreter(model, impl="fast", plan_facts=plan_facts)
    return int8_plan(interp, feeds)


def run(model, cfg, dataset, qlog, impl, report, threads: int = 1, *, metric=None, target: str = "x86"):
    """The accurate flow; returns (quantized model, scale dump entries, None) like the other flows."""
    from .report import scale_dump

    clock = {"start": time.perf_counter()}
    impl = "ref" if impl == "ref" else CONTROL_IMPL
    graph = model.graph
    feeds = list(RuntimeFeeds(Samples(dataset), dataset.specs, cfg.source))
    if not feeds:
        raise DataError(f'{cfg.source}: no usable calibration sample in "path" {cfg.path}')
    held: list[dict] = []
    if cfg.range_candidates and cfg.target_cosine is None and metric is None:
        raise ConfigError(f'{cfg.source}: "range_candidates" needs held-out samples to choose by: set '
                          '"target_cosine" (or pass metric= in the Python API)')
    if cfg.target_cosine is not None or metric is not None:
        if len(feeds) < 2:
            raise DataError(f'{cfg.source}: "target_cosine" needs at least 2 samples (some are held out), '
                            f"got {len(feeds)}")
        k = min(len(feeds) - 1, max(1, int(round(len(feeds) * cfg.holdout))))
        feeds, held = feeds[:-k], feeds[-k:]
    workers = Workers(lambda: float_interpreter(model, impl), threads)
    started = time.perf_counter()
    facts = tensor_facts(workers.first, feeds[0])
    if time.perf_counter() - started < SERIAL_BELOW_SECONDS:
        workers.count = 1                         # a forward of Python glue: threads only add switching
    plan = plan_tracking(graph, facts, cfg.skip_quant_op_names)
    sites, excluded = conv_sites(graph, facts, cfg.skip_quant_op_names)
    qlog.line("fake_quant_done")

    # one statistics pass over every tensor the choice may need
    wanted = sorted(t for t in stat_tensors(plan, sites) if t in facts and facts[t].dtype == np.float32)
    observers = {t: RangeObserver() for t in wanted}
    means = {}
    if cfg.bias_correction:
        from .quantize import _input_means

        means = {t: m for t, m in _input_means(graph, plan).items() if t in {s.input for s in sites}}
    stream_passes(workers, joined(observers, means), feeds, qlog, "CollectFeatureDistribution",
                  parallel=True)
    stats = {t: h for t, h in ((t, o.histogram()) for t, o in observers.items()) if h is not None}
    method = cfg.range_method or "auto"
    downstream = None
    if cfg.range_objective == "downstream":
        downstream = downstream_of(graph, facts, plan, sites, workers, feeds)
    clock["statistics"] = time.perf_counter()

    # the range candidates' files have the same ops and tensors (one float run per input shape for their
    # int8 plans) and the same int8 weights (a function of the conv alone): their builders share both
    plan_facts, weights = {}, {}

    def builder_of(method: str) -> _Builder:
        ranges = _Ranges(stats, method, cfg.feature_clamp_value, downstream)
        b = _Builder(model, cfg, sites, facts, plan, ranges, stats, observers, target)
        b.sample, b.means, b.threads = feeds[0], means, workers.count
        b.plan_facts, b.weights = plan_facts, weights
        return b

    builder = builder_of(method)
    mixed = mixed_concat_inputs(plan, sites, stats) if cfg.int8_ops != "convs" else {}
    excluded.update(mixed)
    usable = [s for s in sites if s.input in stats and s.output in stats and s.name not in mixed]
    for s in sites:
        if s not in usable and s.name not in mixed:
            excluded[s.name] = "no usable range (its input or output is zero on every calibration sample)"
    names = [s.name for s in usable]
    acc = AccuracyReport(cfg.preset, method, cfg.int8_ops or "auto", cfg.target_cosine, len(feeds), len(held),
                         range_objective=cfg.range_objective or "tensor")
    damage: dict[str, float] = {}
    float_names: list[str] = []
    profiled: list = []

    def profiler():
        """The per-layer error profile on the first held-out sample(s): one float reference run for
        accuracy control's ranking and the report (each tensor's error is its own, whatever else is
        tracked)."""
        if not profiled:
            from .sensitivity import Profiler

            tracked = {s.input for s in usable} | {s.output for s in usable} | {s.output for s in sites}
            profiled.append(Profiler(model, held[:PROFILE_SAMPLES], tracked, impl, target,
                                     plan_facts=builder.plan_facts))
        return profiled[0]
    if held:
        from .sensitivity import Evaluator, leave_float

        evaluator = Evaluator(model, held, impl, metric, target, cfg.score_on or "outputs",
                              plan_facts=builder.plan_facts, threads=workers.count)
        acc.score_on = "logits" if evaluator.logits else "outputs"
        if cfg.range_candidates:
            builder, acc.cosine_before, acc.range_candidates = _choose_ranges(builder_of, cfg.range_candidates,
                                                                              names, evaluator)
            acc.range_method = method = builder.ranges.method
        else:
            full, _ = builder.build(names)
            acc.cosine_before = evaluator.score(full)
        goal = cfg.target_cosine if cfg.target_cosine is not None else 1.0
        acc.cosine_after = dict(acc.cosine_before)
        if min(acc.cosine_before.values()) < goal:
            def rank(left_float):
                m, _ = builder.build([n for n in names if n not in set(left_float)])
                errors = profiler().errors(m)
                found = {s.name: max(errors.get(s.output, 0.0) - errors.get(s.input, 0.0), 0.0)
                         for s in usable if s.name not in set(left_float)}
                for n, d in found.items():
                    damage.setdefault(n, d)
                return sorted(found, key=lambda n: -found[n])

            def evaluate(left_float):
                m, _ = builder.build([n for n in names if n not in set(left_float)])
                return evaluator.score(m)
            # at most max_float_convs of the convs (float already counted), but one where that rounds to 0
            limit = int(cfg.max_float_convs * len(sites) + 1e-9) - (len(sites) - len(usable))
            limit = max(limit, 1 if cfg.max_float_convs > 0 else 0)
            float_names, acc.cosine_after, acc.trials = leave_float(evaluate, rank, goal, limit, acc.cosine_before)
        acc.reached = min(acc.cosine_after.values()) >= goal
        acc.evaluations = evaluator.evaluations
    clock["control"] = time.perf_counter()

    int8_names = [n for n in names if n not in set(float_names)]
    quantized, tensors = builder.build(int8_names, record=True)
    acc.repairs = builder.repairs
    _describe(acc, graph, sites, excluded, int8_names, float_names, damage, tensors, builder.ranges, stats, quantized,
              feeds[0], builder.plan_facts)
    if held:
        errs = profiler().errors(quantized)
        by_out = {graph.ops[s.pos].name: errs.get(s.output) for s in sites}
        for o in acc.ops:
            o.error = by_out.get(o.name)
    clock["end"] = time.perf_counter()
    acc.seconds = {"statistics": clock["statistics"] - clock["start"],
                   "control": clock["control"] - clock["statistics"], "total": clock["end"] - clock["start"]}
    report.samples = len(feeds)
    report.accuracy = acc
    report.quantized_ops += int8_names
    report.skipped_ops += [s.name for s in sites if s.name not in set(int8_names)] + list(excluded)
    scales = {t: (q.scale, q.zero) for t, q in tensors.items()}
    report.scales = {graph.tensors[t]: v for t, v in sorted(scales.items())}
    for line in acc.summary_lines():
        qlog.text(line + "\n")
    return quantized, scale_dump(graph, set(scales), scales), None


def _describe(acc: AccuracyReport, graph, sites, excluded, int8_names, float_names, damage, tensors, ranges,
              stats, quantized, sample, plan_facts: dict | None = None) -> None:
    """Per-op decisions (every compute op of the file MNN would run, in execution order) and ranges."""
    by_name = {s.name: s for s in sites}
    int8_set = set(int8_names)
    total = sum(s.macs for s in sites) or 1
    acc.int8_conv_mac_share = sum(s.macs for s in sites if s.name in int8_set) / total
    plan8 = _plan_of(quantized, sample, plan_facts)
    reasons = {}
    for name in float_names:
        reasons[name] = (f"accuracy control: leaving it float removes a local error growth of "
                         f"{damage.get(name, 0):.3g}")
    reasons.update(excluded)
    for p in plan8.ops:
        if p.kind != "compute":
            continue
        op = p.op
        name, kind = op.name, _type_name(op)
        site = by_name.get(name)
        if p.int8:
            why = "int8 conv" if site is not None else "runs int8 in MNN: its inputs and output carry quant info"
        elif name in reasons:
            why = reasons[name]
        elif site is not None:
            why = "float"
        else:
            why = "not a convolution: float unless it only moves or pools int8 codes"
        acc.ops.append(OpDecision(name, kind, bool(p.int8), why, site.macs if site else 0, damage.get(name)))
        if not p.int8:
            acc.float_ops.append({"name": name, "type": kind, "reason": why})
    for t, q in sorted(tensors.items()):
        r = ranges.get(t)
        h = stats.get(t)
        acc.tensors.append(TensorChoice(t, graph.tensors[t], r.method if r else "repair", r.symmetric if r else True,
                                        r.lo if r else 0.0, r.hi if r else 0.0, q.scale, q.zero,
                                        r.error if r else float("nan"), _summary(h)))


def _type_name(op) -> str:
    from ..format.tables import OpType

    try:
        return OpType(op.type).name
    except ValueError:
        return str(op.type)


def _summary(h, bins: int = 64) -> dict | None:
    """The signed histogram folded into ``bins`` bins over [lo, hi] for the HTML report."""
    if h is None:
        return None
    c = h.centres()
    values = np.concatenate((-c[::-1], c))
    counts = np.concatenate((h.neg[::-1], h.pos)).astype(np.float64)
    lo, hi = min(h.lo, 0.0), max(h.hi, 0.0)
    if not hi > lo:
        return None
    edges = np.linspace(lo, hi, bins + 1)
    folded, _ = np.histogram(values, bins=edges, weights=counts)
    return {"lo": lo, "hi": hi, "counts": folded.tolist()}


__all__ = ["run", "AccuracyReport", "OpDecision", "TensorChoice"]
