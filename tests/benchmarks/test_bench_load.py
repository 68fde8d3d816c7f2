"""Model load time, ours against MNN's own, on the same file in the same run.

    pytest -m benchmark --benchmark-enable --benchmark-only tests/benchmarks/test_bench_load.py

Compare the `mnnlite-*` rows with the `mnn-*` rows of the same model (the ratio is what matters; the
machine is noisy).
"""
import pytest

import mnnlite
from model_zoo import big_model_path, model_path

pytestmark = pytest.mark.benchmark

MODELS = {"ppocr_rec": lambda: model_path("ppocr_rec"), "big90mb": big_model_path}


@pytest.mark.parametrize("name", list(MODELS))
def test_load_mnnlite(benchmark, name):
    path = str(MODELS[name]())
    benchmark.group = f"load-{name}"
    model = benchmark(mnnlite.load_model, path)
    assert model.graph.ops


@pytest.mark.parametrize("name", list(MODELS))
def test_load_mnn_oracle(benchmark, name):
    import MNN
    path = str(MODELS[name]())
    benchmark.group = f"load-{name}"
    module = benchmark(MNN.nn.load_module_from_file, path, [], [])
    assert module is not None
