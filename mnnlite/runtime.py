"""The float runtime: run a model's ops in file order with the kernels of ``mnnlite.ops``.

``Interpreter(model_or_path, impl="fast"|"ref"|"mnn", trace=False, precision="auto"|"float",
layout="model"|"nchw")``; ``run(feeds)``
returns the graph outputs.  With ``precision="auto"`` a model carrying int8 quant info runs in int8
where MNN's CPU backend does (``mnnlite.int8``); ``"float"`` runs every op in float.  ``impl="mnn"``
is "fast" plus, where we know how, float kernels that round like MNN's x86 (AVX2) CPU backend run with
one thread, bit for bit.  Every op runs the form of its kernels that ``impl`` names
(``mnnlite.kernels.table``).

Layouts (``mnnlite.layout`` decides them):
* ``layout="model"`` (default): feeds are given, and outputs returned, in each tensor's declared layout
  (an NHWC input takes ``[N, H, W, C]``), as MNN's Module / Express API does; ``layout="nchw"``: in
  Caffe (NCHW) order whatever the tensor's layout, as the Session API with Caffe host tensors does.
  NC4HW4 tensors are exchanged as NCHW either way.
* inside, each tensor keeps its MNN layout (NHWC arrays for NHWC tensors, NCHW arrays for NCHW and
  NC4HW4 ones): the contract of ``mnnlite.ops.registry``.

Intermediate tensors are dropped after their last consumer ran.  ``run(..., return_all=True)`` (or
``trace=True``) keeps and returns all of them; ``run(..., observe=fn)`` calls ``fn(index, name, array)``
for every main-graph tensor as it appears (inputs, constants, op outputs), without keeping them.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np

from ._build_check import require_extensions

require_extensions()        # one clear error instead of silent numpy fallbacks (see _build_check.py)

from .errors import MnnliteError, ResourceError, ShapeError, UnsupportedOpError  # noqa: E402
from .format.model_io import load_model  # noqa: E402
from .format.structure import check_op  # noqa: E402
from .format.tables import DataFormat, OpType  # noqa: E402
from .graph import Graph, Model  # noqa: E402
from . import layout as layouts  # noqa: E402
from .limits import MAX_SUBGRAPH_DEPTH, op_failure  # noqa: E402
from . import ops  # noqa: F401,E402  (registers every kernel)
from .ops import registry  # noqa: E402
from .ops.const import numpy_dtype  # noqa: E402
from .ops.registry import OpCall  # noqa: E402
from .kernels import table as kernel_table  # noqa: E402

_SOURCE_OPS = (OpType.Const, OpType.TrainableParam)
_NCHW = DataFormat.NCHW


@dataclasses.dataclass(frozen=True)
class InputInfo:
    shape: tuple        # as the file declares it, in the tensor's own layout; -1 marks a dynamic dim
    dtype: np.dtype     # element type of the runtime tensor (ONNX int64 inputs are int32)
    layout: str         # the tensor's MNN layout: "NCHW", "NHWC" or "NC4HW4"
    # the declared shape in the order run() takes it (the Interpreter's layout); derived, not compared
    feed_shape: tuple = dataclasses.field(default=(), compare=False)


class Interpreter:
    """Runs one model.  ``impl`` chooses the compiled kernels ("fast"), the numpy references ("ref") or
    the compiled kernels with MNN's x86 rounding where known ("mnn")."""

    def __init__(self, model_or_path, impl: str = "fast", trace: bool = False, precision: str = "auto",
                 layout: str = layouts.DEFAULT_LAYOUT, target: str = "x86", plan_facts: dict | None = None):
        self.layout = layouts.check_layout(layout)
        # an int8 run's plan is built from one float run per input shapes; ``plan_facts``, a dict shared by
        # interpreters of models with the same ops and tensors that differ only in quant info and conv
        # weights (mnnlite.quant.accurate's candidate files), keeps what that run found for all of them
        self.plan_facts = plan_facts
        if impl not in kernel_table.IMPLS:
            raise ValueError(f"impl must be 'fast', 'ref' or 'mnn', not {impl!r}")
        if target not in ("x86", "arm"):
            raise ValueError(f"target must be 'x86' or 'arm', not {target!r}")
        # the CPU whose int8 kernels are emulated: MNN's x86 build compares max-pool codes as signed
        # q + 128 bytes (README "How MNN really behaves"); its ARM build takes the true maximum
        self.target = target
        if precision not in ("auto", "float"):
            raise ValueError(f"precision must be 'auto' or 'float', not {precision!r}")
        self.model = model_or_path if isinstance(model_or_path, Model) else load_model(model_or_path)
        self.impl, self.trace = impl, trace
        self._depth = 0         # subgraphs running inside each other (run_graph)
        self.source = self.model.path or "model"
        self._graphs: dict[str, Graph] = {"": self.model.graph, **self.model.subgraphs}
        self._programs = {name: Program(g, self, name) for name, g in self._graphs.items()}
        graph = self.model.graph
        self._inputs = {graph.tensors[int(op.outputIndexes[0])]: op for op in graph.ops if op.type == OpType.Input}
        # "auto": a model with quant info runs int8 where MNN does (mnnlite.int8); "float": all float
        self._int8 = None
        if precision == "auto" and self.model.is_quantized:
            from .int8.execute import Int8Runner
            self._int8 = Int8Runner(self)
        self.precision = "int8" if self._int8 is not None else "float"

    # ------------------------------------------------------------------------------------ inputs
    @property
    def input_names(self) -> list[str]:
        return self.model.graph.input_names()

    @property
    def output_names(self) -> list[str]:
        return self.model.graph.output_names()

    def input_info(self) -> dict[str, InputInfo]:
        """Declared shape (own layout, -1 = dynamic; dim 0 accepts any batch), dtype, layout, and the
        shape in the order ``run`` takes the input."""
        info = {}
        for name, op in self._inputs.items():
            dims = op.main.dims if op.main is not None else None
            shape = tuple(int(d) if int(d) >= 0 else -1 for d in dims) if dims is not None else ()
            fmt = _input_format(op)
            info[name] = InputInfo(shape, _input_dtype(op), fmt.name,
                                   tuple(layouts.exchange_dims(shape, fmt, self.layout)))
        return info

    def output_layouts(self) -> dict[str, str]:
        """{output name: the tensor's MNN layout} as the file declares it (``mnnlite.layout``)."""
        return layouts.declared_layouts(self.model.graph)[1]

    # --------------------------------------------------------------------------------------- run
    def run(self, feeds: dict, *, return_all: bool = False, observe=None) -> dict:
        """Outputs by name, in the Interpreter's ``layout`` (see the module doc).

        ``feeds``: every input by name, in that layout; float inputs take any float array, int inputs any
        integer array whose values fit int32.  ``return_all`` (or ``trace=True``) adds every other tensor
        of the main graph, in its MNN layout.  ``observe(index, name, array)`` sees each main-graph tensor
        once, in its MNN layout, when it is produced; arrays are never written to afterwards, but keeping
        references to them keeps them alive.
        """
        keep_all = return_all or self.trace
        bound = self.bind(feeds)
        graph = self.model.graph
        with np.errstate(all="ignore"):   # NaN / inf inputs propagate like in MNN, without warnings
            main = self._int8.run if self._int8 is not None else self._programs[""].run
            env = main(bound, keep_all, observe)
        result = {}
        if keep_all:
            result = {graph.tensors[i]: a for i, (a, _) in env.items()}
        for i in graph.outputs:
            if i not in env:
                raise ShapeError(f"{self.source}: output {graph.tensors[i]!r} is produced by no op")
            array, fmt = env[i]
            result[graph.tensors[i]] = np.array(layouts.from_tensor(array, fmt, self.layout), order="C")
        return result

    def bind(self, feeds: dict) -> dict:
        """The feeds checked against the model's inputs (names, ranks, fixed dims, dtypes) and converted to
        each tensor's MNN layout: {tensor index: (array, layout)}, what ``Program.run`` takes."""
        names = list(self._inputs)
        unknown = [n for n in feeds if n not in self._inputs]
        if unknown:
            raise ShapeError(f"{self.source}: unknown input {unknown[0]!r}; the model's inputs are {names}")
        missing = [n for n in names if n not in feeds]
        if missing:
            raise ShapeError(f"{self.source}: input {missing[0]!r} was not fed; the model's inputs are {names}")
        return {int(op.outputIndexes[0]): self._check_feed(name, op, feeds[name])
                for name, op in self._inputs.items()}

    def _check_feed(self, name, op, value):
        """Check a feed (the Interpreter's layout) against the Input op; return it in the tensor's layout."""
        fmt, dtype = _input_format(op), _input_dtype(op)
        arr = np.asarray(value)
        where = f"{self.source}: input {name!r}"
        arr = _cast_feed(arr, dtype, where)
        dims = op.main.dims if op.main is not None else None
        if dims is not None:
            declared = [int(d) if int(d) >= 0 else -1
                        for d in layouts.exchange_dims(list(dims), fmt, self.layout)]
            if arr.ndim != len(declared):
                raise ShapeError(f"{where} expects rank {len(declared)} (shape {_fmt_dims(declared)}), "
                                 f"got shape {arr.shape}")
            for axis, (want, got) in enumerate(zip(declared, arr.shape)):
                # dim 0 is free: the converter writes 1 for a dynamic batch (InitNet.cpp resets -1 to 1)
                if axis > 0 and want > 0 and want != got:
                    raise ShapeError(f"{where} expects shape {_fmt_dims(declared)}, got {arr.shape} "
                                     f"(dim {axis} must be {want})")
        if any(d <= 0 for d in arr.shape):
            raise ShapeError(f"{where}: every dimension must be > 0, got shape {arr.shape}")
        return layouts.to_tensor(arr, fmt, self.layout), fmt

    # ------------------------------------------------------------------------- for control flow
    def run_graph(self, name: str, arrays, formats):
        """Run subgraph ``name`` on positional inputs; returns (outputs, their layouts)."""
        if name not in self._programs or name == "":
            raise ShapeError(f"{self.source}: no subgraph named {name!r}")
        graph = self._graphs[name]
        if len(arrays) != len(graph.inputs):
            raise ShapeError(f"{self.source}: subgraph {name!r} takes {len(graph.inputs)} inputs, "
                             f"got {len(arrays)}")
        bound = {int(i): (a, f) for i, a, f in zip(graph.inputs, arrays, formats)}
        if self._depth >= MAX_SUBGRAPH_DEPTH:
            raise ResourceError(f"{self.source}: subgraph {name!r} is nested {self._depth} deep (a While or If "
                                f"that runs itself?); the cap is {MAX_SUBGRAPH_DEPTH}")
        self._depth += 1
        try:
            env = self._programs[name].run(bound, False, None)
        finally:
            self._depth -= 1
        missing = [graph.tensors[i] for i in graph.outputs if i not in env]
        if missing:
            raise ShapeError(f"{self.source}: subgraph {name!r} does not produce output {missing[0]!r}")
        return [env[i][0] for i in graph.outputs], [env[i][1] for i in graph.outputs]

    def program(self, name: str = "") -> "Program":
        """The prepared graph ``name`` ("" = the main graph): its ``steps`` and ``run`` / ``call``."""
        if name not in self._programs:
            raise ShapeError(f"{self.source}: no subgraph named {name!r}")
        return self._programs[name]

    _bind_feeds = bind      # the name callers outside the runtime used before ``bind`` was public

    def graph_io(self, name: str):
        graph = self._graphs[name]
        return graph.input_names(), graph.output_names()


class _Context:
    """What a kernel sees as ``call.runtime``: the interpreter plus the graph it runs in."""

    def __init__(self, interpreter: Interpreter, program: "Program"):
        self.interpreter, self.program = interpreter, program
        self.run_graph, self.graph_io = interpreter.run_graph, interpreter.graph_io

    def describe(self, tensor_index: int):
        """The TensorDescribe of a tensor (static models: shape, layout, Raster regions), or None."""
        return self.program.describes.get(int(tensor_index))


@dataclasses.dataclass
class Step:
    """One op of a ``Program``: the op table, its kernel, its input and output tensor indexes and names."""

    op: object
    kernel: object
    inputs: tuple
    outputs: tuple
    input_names: list
    output_names: list
    free: tuple = ()
    const: list | None = None      # precomputed (array, layout) of Const / TrainableParam ops
    is_input: bool = False         # an Input op: its value is bound by run()
    # What Program.run's per-op path needs, fixed when the program is built (Program.__init__):
    # ("const" | "input" | "call", output index of a single-output op or None, its output name, ...).
    kind: str = "call"
    single: int | None = None
    single_name: str | None = None
    in0: int | None = None         # the input of a single-input op
    op_type: object = None         # OpType of the op (its raw int for types this build does not know)


class Program:
    """One graph ready to run: kernels looked up, constants decoded once, tensor lifetimes known.

    The public seam the int8 executor (``mnnlite.int8.execute``) builds on: ``steps`` (one ``Step`` per op,
    in file order), ``run(bound, keep_all, observe)`` on ``Interpreter.bind``'s result, ``call(step,
    inputs)`` to run one op's float kernel, ``where`` (the graph's name for messages)."""

    def __init__(self, graph: Graph, interpreter: Interpreter, name: str):
        self.graph, self.interpreter = graph, interpreter
        self.where = interpreter.source + (f" subgraph {name!r}" if name else "")
        self.describes = {int(d.index): d for d in graph.describe}
        self.context = _Context(interpreter, self)
        self.steps = [self._step(op) for op in graph.ops]
        self.produced = {i for step in self.steps for i in step.outputs}
        self._plan_frees()
        for step in self.steps:
            step.kind = "const" if step.const is not None else "input" if step.is_input else "call"
            if len(step.outputs) == 1:
                step.single, step.single_name = step.outputs[0], step.output_names[0]
            if len(step.inputs) == 1:
                step.in0 = step.inputs[0]
        self._bound_plans: dict = {}          # the bound tensors' indexes -> _BoundPlan (or None: generic)
        # the bound plans' OpCalls are reused from run to run: one run at a time uses them (a second
        # thread, or a subgraph re-entering this program, takes the generic loop)
        self._bound_lock = threading.Lock()

    def _step(self, op) -> Step:
        # The node's own kernel (registry planners: parameters read, conv weights packed once).
        check_op(op, self.where)
        kernel = registry.node_kernel(_op_type(op), op, self.interpreter.impl)
        if kernel is None:
            raise UnsupportedOpError(
                f"{self.where}: op {op.name!r} has type {_op_type_name(op)}, which mnnlite cannot run; "
                f"supported types: {', '.join(registry.supported_op_types())}")
        ins, outs = _ints(op.inputIndexes), _ints(op.outputIndexes)
        tensors = self.graph.tensors
        step = Step(op, kernel, tuple(ins), tuple(outs), [tensors[i] for i in ins], [tensors[i] for i in outs],
                     is_input=op.type == OpType.Input, op_type=_op_type(op))
        if op.type in _SOURCE_OPS:
            step.const = [(_frozen(a), f) for a, f in self.call(step, [])]
        return step

    def _plan_frees(self):
        last = {}
        for pos, step in enumerate(self.steps):
            for i in step.inputs:
                last[i] = pos
            for i in step.outputs:
                last.setdefault(i, pos)     # produced and never read: dropped right away
        keep = set(self.graph.outputs)
        frees: dict[int, list] = {}
        for i, pos in last.items():
            if i not in keep:
                frees.setdefault(pos, []).append(i)
        for pos, step in enumerate(self.steps):
            step.free = tuple(frees.get(pos, ()))

    def run(self, bound: dict, keep_all: bool, observe) -> dict:
        """{tensor index: (array, layout)} of the graph outputs (every tensor with ``keep_all``) on
        ``bound`` ({tensor index: (array, layout)}, ``Interpreter.bind``'s result); ``observe(index,
        name, array)`` sees every tensor as it appears.  Runs the bound plan of these bound tensors
        (``_BoundPlan``) when there is one, else the generic per-op loop (``run_generic``); both give
        the same result."""
        key = tuple(bound)
        plan = self._bound_plans.get(key, False)
        if plan is False:
            plan = self._bound_plans[key] = _BoundPlan.build(self, bound)
        if plan is not None and self._bound_lock.acquire(False):
            try:
                return plan.run(bound, keep_all, observe)
            finally:
                self._bound_lock.release()
        return self.run_generic(bound, keep_all, observe)

    def run_generic(self, bound: dict, keep_all: bool, observe) -> dict:
        """``run`` one op at a time through ``call``: the reference the bound plans are tested against.
        The per-op loop is the interpreter's overhead on small models (a few us per op against
        kernels of similar cost), so everything that does not depend on the data is fixed in the
        steps, and the single-output case, nearly every op, skips the generic lists."""
        env = {i: (a, f if type(f) is DataFormat else DataFormat(f)) for i, (a, f) in bound.items()}
        names = self.graph.tensors
        if observe is not None:     # values bound without an Input op are seen here, the others below
            for i, (a, _) in bound.items():
                if i not in self.produced:
                    observe(i, names[i], a)
        call_op = self._call_op
        for step in self.steps:
            kind = step.kind
            if kind == "call":
                try:
                    if step.in0 is not None:       # one input: no comprehensions
                        a, f = env[step.in0]
                        arrays, formats = [a], [f]
                    else:
                        inputs = [env[i] for i in step.inputs]
                        arrays, formats = [a for a, _ in inputs], [f for _, f in inputs]
                except KeyError:
                    self._missing_input(step, env)
                results = call_op(step, arrays, formats)
            elif kind == "const":
                results = step.const
            else:
                if step.outputs[0] not in env:
                    raise ShapeError(f"{self.where}: input {step.output_names[0]!r} is not bound")
                results = self.call(step, [env[step.outputs[0]]])
            i = step.single
            if i is not None:
                value = env[i] = results[0]
                if observe is not None:
                    observe(i, step.single_name, value[0])
            else:
                for i, value in zip(step.outputs, results):
                    env[i] = value
                    if observe is not None:
                        observe(i, names[i], value[0])
            if not keep_all:
                for i in step.free:
                    env.pop(i, None)
        return env

    def _missing_input(self, step: Step, env: dict):
        missing = [n for i, n in zip(step.inputs, step.input_names) if i not in env]
        raise ShapeError(f"{self.where}: op {step.op.name!r} reads tensor {missing[0]!r}, "
                         f"which no earlier op produced") from None

    def call(self, step: Step, inputs: list) -> list:
        """Run one kernel; returns [(array, layout)] for the op's outputs.  ``inputs`` are (array,
        layout) pairs; a layout may be a plain int (callers outside ``run``)."""
        return self._call_op(step, [a for a, _ in inputs],
                             [f if type(f) is DataFormat else DataFormat(f) for _, f in inputs])

    def _call_op(self, step: Step, arrays: list, formats: list) -> list:
        """``call`` on the input arrays and their layouts, DataFormat members (``run`` keeps them so)."""
        call = OpCall(step.op, arrays, formats, self.interpreter.impl, self.context, None,
                      step.input_names, step.output_names)
        try:
            arrays = step.kernel(call)
        except Exception as exc:
            self._kernel_failed(step, call, exc)
        return self._results(step, call, arrays, formats)

    def _kernel_failed(self, step: Step, call: OpCall, exc: Exception):
        """Raise the one-line error of a kernel's exception, naming the op (anything else: a bug of ours)."""
        if isinstance(exc, MnnliteError):
            raise exc
        if isinstance(exc, NotImplementedError):
            raise UnsupportedOpError(f"{self.where}: {self._describe(step, call)}: {exc}") from exc
        if isinstance(exc, (ValueError, IndexError, ZeroDivisionError)):
            raise ShapeError(f"{self.where}: {self._describe(step, call)}: {exc}") from exc
        if isinstance(exc, (MemoryError, OverflowError, AttributeError, TypeError)):
            raise op_failure(f"{self.where}: {self._describe(step, call)}", step.op, exc) from exc
        raise exc

    def _results(self, step: Step, call: OpCall, arrays, formats: list) -> list:
        """A kernel's arrays as [(array, layout)] for the op's outputs, in MNN's types."""
        if step.single is not None and arrays:     # most ops: the steps below, without the lists
            a = arrays[0]
            if type(a) is not np.ndarray or a.dtype not in _KEPT_DTYPES:
                a = _normalize(a)
            if a.size == 0:
                self._check_outputs(step, call, [a])
            out = call.out_formats
            if out:
                f = out[0]
                return [(a, f if type(f) is DataFormat else DataFormat(f))]
            return [(a, formats[0] if formats else _NCHW)]
        n = len(step.outputs)
        if len(arrays) < n:
            raise ShapeError(f"{self.where}: {self._describe(step, call)} gave {len(arrays)} outputs "
                             f"for {n} output tensors")
        if call.out_formats:
            formats = [f if type(f) is DataFormat else DataFormat(f) for f in call.out_formats]
            formats += [formats[-1]] * (n - len(formats))
        else:
            formats = [call.formats[0] if call.formats else _NCHW] * n
        arrays = [_normalize(a) for a in arrays[:n]]
        if any(a.size == 0 for a in arrays):
            self._check_outputs(step, call, arrays)
        return list(zip(arrays, formats))

    def _check_outputs(self, step, call, arrays):
        """A float output with a zero-size dim from non-empty inputs means the input was too small."""
        if not call.inputs or any(a.size == 0 for a in call.inputs if a.dtype.kind == "f"):
            return
        for name, a in zip(step.output_names, arrays):
            if a.size == 0 and a.dtype.kind == "f":
                raise ShapeError(f"{self.where}: op {step.op.name!r} ({_op_type_name(step.op)}) computes "
                                 f"tensor {name!r} with shape {a.shape}: a dimension <= 0 (input too small?)")

    @staticmethod
    def _describe(step, call) -> str:
        ins = ", ".join(f"{n!r} {a.shape} {a.dtype}" for n, a in zip(step.input_names, call.inputs))
        return f"op {step.op.name!r} ({_op_type_name(step.op)}) on [{ins}]"


class _BoundPlan:
    """A program's ops bound once for one set of bound tensors: what ``run_generic`` looks up, checks
    and allocates per op and per run, fixed here.

    Tensors live in two flat lists (value, layout) indexed by tensor instead of a dict; constants sit
    in them from the start; each op that runs a kernel is a row (kernel, reused ``OpCall``, input
    indexes, ...) whose inputs are known to be produced before it (checked here once, so the loop
    tests nothing per op); an op's tensors are dropped after their last reader, as in the generic
    loop.  What depends on input shapes (conv geometry and packed layers, pool windows, resize
    tables) is planned by each node's kernel on the first call with a new shape and cached there
    (``ops.registry`` planners), so a new input shape re-plans only those.  ``build`` returns None
    where the program needs the generic loop's checks (an input no op or feed produces); runs that hand
    out every tensor (``keep_all``, ``observe``) take the generic loop too."""

    __slots__ = ("program", "rows", "template", "layouts")

    @classmethod
    def build(cls, program: "Program", bound: dict) -> "_BoundPlan | None":
        size = max([len(program.graph.tensors), *(i + 1 for i in bound)])
        available = set(bound)
        template, layouts, rows = [None] * size, [None] * size, []
        interp = program.interpreter
        for step in program.steps:
            if step.kind == "const":
                for i, (a, f) in zip(step.outputs, step.const):
                    template[i], layouts[i] = a, f
            else:
                ins = step.outputs[:1] if step.kind == "input" else step.inputs
                if any(i not in available for i in ins):
                    return None               # the generic loop raises the error naming the op
                call = OpCall(step.op, None, None, interp.impl, program.context, None,
                              step.input_names, step.output_names)
                rows.append((step.kernel, call, ins, step.single, step, step.free))
            available.update(step.outputs)
        plan = cls()
        plan.program, plan.rows = program, rows
        plan.template, plan.layouts = template, layouts
        return plan

    def run(self, bound: dict, keep_all: bool, observe) -> dict:
        if keep_all or observe is not None:     # every tensor handed out: the generic loop's order and checks
            return self.program.run_generic(bound, keep_all, observe)
        values, layouts = self.template.copy(), self.layouts.copy()
        for i, (a, f) in bound.items():
            values[i], layouts[i] = a, f if type(f) is DataFormat else DataFormat(f)
        program = self.program
        for kernel, call, ins, single, step, free in self.rows:
            if len(ins) == 1:
                i = ins[0]
                arrays, formats = [values[i]], [layouts[i]]
            else:
                arrays, formats = [values[i] for i in ins], [layouts[i] for i in ins]
            call.inputs, call.formats, call.out_formats = arrays, formats, None
            try:
                out = kernel(call)
            except Exception as exc:
                try:
                    program._kernel_failed(step, call, exc)
                finally:
                    call.inputs = None
            if single is not None and out:
                # _results' common case inline: one float32/int32 array of a non-empty result
                a = out[0]
                if type(a) is not np.ndarray or a.dtype not in _KEPT_DTYPES or a.size == 0:
                    a, f = program._results(step, call, out, formats)[0]
                else:
                    f = call.out_formats
                    f = (f[0] if type(f[0]) is DataFormat else DataFormat(f[0])) if f else \
                        (formats[0] if formats else _NCHW)
                values[single], layouts[single] = a, f
            else:
                for i, (a, f) in zip(step.outputs, program._results(step, call, out, formats)):
                    values[i], layouts[i] = a, f
            # the call must not keep its inputs alive until the next run: the freed arrays' memory is
            # what the next ops reuse, still in the caches
            call.inputs = None
            for i in free:
                values[i] = None
        return {i: (values[i], layouts[i]) for i in program.graph.outputs if values[i] is not None}


# ----------------------------------------------------------------------------------- small helpers

def _ints(v) -> list[int]:
    return [] if v is None else [int(x) for x in v]


def _op_type(op):
    try:
        return OpType(op.type)
    except ValueError:
        return op.type


def _op_type_name(op) -> str:
    t = _op_type(op)
    return t.name if isinstance(t, OpType) else f"#{t}"


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    a.flags.writeable = False     # cached constants are shared by every run
    return a


_KEPT_DTYPES = (np.dtype(np.float32), np.dtype(np.int32))


def _normalize(a) -> np.ndarray:
    """MNN has no int64, bool or float64 tensors (Tensor::setType): keep kernels' results in its types."""
    if type(a) is np.ndarray and a.dtype in _KEPT_DTYPES:     # the usual case, decided at once
        return a
    a = np.asarray(a)
    if a.dtype == np.float64 or a.dtype == np.float16:
        return a.astype(np.float32)
    if a.dtype == np.int64 or a.dtype == np.bool_ or a.dtype == np.uint32 or a.dtype == np.uint64:
        return a.astype(np.int32)
    return a


def _input_format(op) -> DataFormat:
    # Input.dformat defaults to NC4HW4 in the schema
    return DataFormat(op.main.dformat if op.main is not None else DataFormat.NC4HW4)


def _input_dtype(op) -> np.dtype:
    return numpy_dtype(op.main.dtype if op.main is not None else 1)


def _fmt_dims(dims) -> str:
    return "[" + ", ".join("?" if d < 0 else str(d) for d in dims) + "]"


def _cast_feed(arr: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """Float inputs take any float array; integer inputs any integer (or bool) array whose values fit."""
    if dtype.kind == "f":
        if arr.dtype.kind != "f":
            raise ShapeError(f"{where} expects float values, got an array of {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=dtype)
    if arr.dtype.kind not in "iub":
        raise ShapeError(f"{where} expects {dtype} values, got an array of {arr.dtype}")
    if arr.size and arr.dtype.kind != "b":
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise ShapeError(f"{where}: values [{arr.min()}, {arr.max()}] do not fit the model's {dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


__all__ = ["Interpreter", "InputInfo", "Program", "Step"]
