"""Float model latency, ours against the official runtime (Session API, 1 thread), same run.

    pytest -m benchmark --benchmark-enable --benchmark-only tests/benchmarks/test_bench_float.py

Each model has two rows in its group ``float-<model>``: ``test_float_mnnlite`` (our Interpreter,
impl "fast") and ``test_float_mnn_oracle`` (one MNN Session, input copied in on every run, then
runSession).  The ratio of the
two means is what the float-speed aim (within 2x of MNN) is about; ``tools/bench_models.py`` prints
it as a table.  Both run one thread on the same random input of the model's first shape set.
"""
import model_zoo as zoo
import pytest

from mnnlite.kernels.threads import get_num_threads, set_num_threads
from mnnlite.runtime import Interpreter
from oracle import OracleSession

pytestmark = pytest.mark.benchmark

MODELS = ("ppocr_det", "ppocr_rec", "ppocr_cls", "mobilenet")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = get_num_threads()
    set_num_threads(1)
    yield
    set_num_threads(before)



@pytest.mark.parametrize("name", MODELS)
def test_float_mnnlite(benchmark, name):
    interp, feeds = Interpreter(str(zoo.model_path(name)), impl="fast"), zoo.random_feeds(name, 0)
    interp.run(feeds)                       # plans, packed weights, first-use caches
    benchmark.group = f"float-{name}"
    out = benchmark(interp.run, feeds)
    assert out


@pytest.mark.parametrize("name", MODELS)
def test_float_mnn_oracle(benchmark, name):
    session = OracleSession(zoo.model_path(name), zoo.random_feeds(name, 0))
    session.run()
    benchmark.group = f"float-{name}"
    benchmark(session.run)
