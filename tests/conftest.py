"""Shared pytest configuration.  Keep this file small: put fixtures in conftest_<topic>.py
modules and list them in pytest_plugins."""
import os
import sys

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:  # test helpers (model_zoo, conftest_*) import as top-level modules
    sys.path.insert(0, _TESTS_DIR)

pytest_plugins = ["conftest_zoo"]
