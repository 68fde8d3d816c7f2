"""The bound plans of ``Program.run`` (mnnlite.runtime._BoundPlan) against the generic per-op loop
(``Program.run_generic``): same outputs bit for bit on real fixture models, float and int8, with the
input shape changing between runs, with ``return_all`` / ``observe``, and the same one-line errors."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import model_zoo as zoo  # noqa: E402

from mnnlite.errors import ShapeError
from mnnlite.runtime import Interpreter, Program, _BoundPlan

MODELS = ("ppocr_cls", "ppocr_rec", "cnn", "mobilenet")


def _generic(interp: Interpreter):
    """A context in which every program of ``interp`` runs the generic loop."""
    class _Generic:
        def __enter__(self):
            for program in interp._programs.values():
                program.run = program.run_generic

        def __exit__(self, *exc):
            for program in interp._programs.values():
                del program.run
    return _Generic()


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _same(a: dict, b: dict, what: str):
    assert list(a) == list(b), what
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, f"{what}: {name}"
        assert np.array_equal(_bits(a[name]), _bits(b[name])), f"{what}: {name} differs"


def _feeds(name: str, index: int) -> dict:
    return zoo.random_feeds(name, index)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("variant", ["float", "quant_kl"])
def test_bound_plan_gives_the_generic_loops_bits_as_the_input_shape_changes(name, variant):
    """Both input sizes of the dynamic zoo models, alternated (each new shape re-plans the nodes'
    per-shape state; the second visit reuses it).  The reference interpreter runs the generic loop
    throughout (for int8 files: also the float run the int8 plan is built from)."""
    path = zoo.model_path(name, variant)
    interp, reference = Interpreter(path), Interpreter(path)
    assert interp.precision == ("int8" if variant.startswith("quant") else "float")
    sizes = len(next(iter(zoo.input_shapes(name).values())))
    assert sizes >= 2, f"{name}: a zoo model with one input size cannot test re-planning"
    feeds = [_feeds(name, i) for i in range(sizes)]
    with _generic(reference):
        for round_ in range(2):
            for i, f in enumerate(feeds):
                _same(interp.run(f), reference.run(f), f"{name}/{variant} size {i} round {round_}")
    plans = interp.program()._bound_plans
    assert len(plans) == 1 and isinstance(next(iter(plans.values())), _BoundPlan), "the bound plan never ran"


@pytest.mark.parametrize("name", ["ppocr_cls", "cnn"])
def test_runs_that_keep_or_observe_every_tensor_agree_with_the_bound_plan(name):
    """``return_all`` / ``observe`` runs take the generic loop (every tensor in its order); their
    outputs are the bound plan's, bit for bit, and every op's output is seen once."""
    interp = Interpreter(zoo.model_path(name), precision="float")
    feeds = _feeds(name, 0)
    seen = []
    everything = interp.run(feeds, return_all=True, observe=lambda i, n, a: seen.append(n))
    plain = interp.run(feeds)
    _same(plain, {k: everything[k] for k in plain}, f"{name} outputs")
    produced = [n for step in interp.program().steps for n in step.output_names]
    assert seen == produced


def test_error_inside_a_bound_step_is_one_line_naming_the_op():
    """cnn on a 3x3 image: its U-Net skip connections no longer line up (a Concat of 3x3 and 4x4 maps);
    the bound loop reports it like the generic one, in one line naming the op."""
    interp = Interpreter(zoo.model_path("cnn"), precision="float")
    (inp, _), = zoo.input_shapes("cnn").items()
    tiny = {inp: np.zeros((1, 3, 3, 3), np.float32)}
    with _generic(interp):
        with pytest.raises(ShapeError) as generic:
            interp.run(tiny)
    with pytest.raises(ShapeError) as bound:
        interp.run(tiny)
    message = str(bound.value)
    assert message == str(generic.value)
    assert "\n" not in message and "op 'concat_40' (Concat" in message, message
    assert isinstance(interp.program()._bound_plans[tuple(interp.bind(tiny))], _BoundPlan)


def test_a_kernel_failure_in_a_bound_step_names_the_op(monkeypatch):
    interp = Interpreter(zoo.model_path("cnn"), precision="float")
    feeds = _feeds("cnn", 0)
    interp.run(feeds)
    program = interp.program()
    step = next(s for s in program.steps if s.kind == "call" and s.op_type.name == "Convolution")

    def broken(call):
        raise IndexError("index 7 is out of bounds")

    monkeypatch.setattr(step, "kernel", broken)
    program._bound_plans.clear()        # the rows hold the kernels they were bound to
    with pytest.raises(ShapeError, match=rf"op {step.op.name!r} \(Convolution\) on \[.*index 7 is out"):
        interp.run(feeds)


def test_one_interpreter_run_from_two_threads_gives_each_its_result():
    """A bound plan's reused calls serve one run at a time; a concurrent run takes the generic loop."""
    interp = Interpreter(zoo.model_path("ppocr_cls"), precision="float")
    feeds = [_feeds("ppocr_cls", i) for i in range(2)]
    with _generic(interp):
        want = [interp.run(f) for f in feeds]
    errors, results = [], {}

    def worker(k):
        try:
            results[k] = [interp.run(feeds[k % 2]) for _ in range(5)]
        except Exception as exc:      # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k, runs in results.items():
        for out in runs:
            _same(out, want[k % 2], f"thread {k}")


def test_a_program_without_its_inputs_bound_takes_the_generic_loop():
    interp = Interpreter(zoo.model_path("cnn"), precision="float")
    program: Program = interp.program()
    with pytest.raises(ShapeError, match="is not bound"):
        program.run({}, False, None)
    assert program._bound_plans[()] is None
