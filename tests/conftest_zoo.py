"""Pytest fixtures around the official MNN oracle (tests/oracle/) and the model zoo (tests/model_zoo.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mnn_oracle():
    """The oracle package, once the test-only oracle (mnn 3.6.1 wheel + onnx) imports.

    The oracle is a declared test dependency (`pip install -e ".[test]"`): a missing one is a broken
    set-up and fails the tests that need it, rather than skipping them.
    """
    import _tools  # noqa: F401
    import MNN  # noqa: F401
    import onnx  # noqa: F401
    import oracle

    return oracle


@pytest.fixture(scope="session")
def zoo(mnn_oracle):
    """The model_zoo module (fixtures are built lazily and cached under .fixtures/)."""
    import model_zoo

    return model_zoo


@pytest.fixture(scope="session")
def zoo_float_paths(zoo):
    """{model name: path of its float .mnn}, built once per session."""
    return {name: zoo.model_path(name, "float") for name in zoo.model_names()}
