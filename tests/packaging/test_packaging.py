"""Packaging: the sdist carries every source a wheel is built from, the licence is an SPDX string, old
Pythons get tomli, a build without a C compiler stops with one message, and a copy of mnnlite without its
compiled kernels says so in one line instead of running numpy fallbacks.  (Building a wheel from the sdist
and installing it in a fresh venv is .ci/run's job: it compiles every kernel once more.)"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _sources() -> set[str]:
    """Every file a build compiles or includes, relative to the repository."""
    found = set()
    for pattern in ("csrc/*.c", "csrc/*.h", "csrc/*.inc", "mnnlite/**/*.pyx"):
        found |= {str(p.relative_to(REPO)) for p in REPO.glob(pattern)}
    return found


def test_sdist_holds_every_source(tmp_path):
    # no isolation: offline, with the installed setuptools (older ones read the SPDX licence through setup.py)
    proc = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check", "--outdir", str(tmp_path),
                           str(REPO)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    sdist, = tmp_path.glob("mnnlite-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    sources = _sources()
    assert {"csrc/parallel.h", "csrc/winograd.h", "csrc/int8_internal.h", "csrc/mnn_exact_gemm.inc",
            "mnnlite/kernels/conv.pyx"} <= sources
    assert sources <= names, sorted(sources - names)
    assert {"setup.py", "pyproject.toml", "LICENSE", "README.md", "MANIFEST.in", "docs/sample_config.json",
            "mnnlite/demo/ppocr_cls.mnn", "mnnlite/demo/LICENSE-DATA.txt"} <= names
    # Cython's generated C and compiled objects are rebuilt, never shipped
    assert not [n for n in names if n.endswith((".so", ".pyc")) or (n.startswith("mnnlite/") and n.endswith(".c"))]


def test_metadata():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and "LICENSE" in project["license-files"]
    assert "tomli>=1.1; python_version < '3.11'" in project["dependencies"]
    runtime = {d.split(">")[0].split(";")[0].strip() for d in project["dependencies"]}
    assert runtime == {"numpy", "flatbuffers", "pillow", "tomli"}        # anything else is an extra
    assert any(d.startswith("tqdm") for d in project["optional-dependencies"]["progress"])
    assert any(d.startswith("build") for d in project["optional-dependencies"]["test"])
    assert set(project["scripts"]) == {"mnnlite", "mnnquant-lite"}
    build = PYPROJECT["build-system"]["requires"]
    assert any(r.startswith("setuptools>=77") for r in build) and any(r.startswith("Cython") for r in build)
    cibw = PYPROJECT["tool"]["cibuildwheel"]
    assert set(cibw["linux"]["archs"]) == {"x86_64", "aarch64"} and "musllinux" in cibw["skip"]
    assert "mnnlite.demo" in cibw["test-command"] and "mnnquant-lite --help" in cibw["test-command"]


def test_every_kernel_module_is_required():
    from mnnlite._build_check import KERNEL_MODULES

    assert sorted(KERNEL_MODULES) == sorted(p.stem for p in (REPO / "mnnlite" / "kernels").glob("*.pyx"))


def test_build_without_a_compiler_says_what_to_do(tmp_path):
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc")}
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
                           "--build-temp", str(tmp_path / "tmp")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mnnlite: building the compiled kernels needs a C compiler (")
    assert "no-such-cc" in last and "pip install --only-binary mnnlite mnnlite" in last
    assert "Traceback" not in proc.stderr


BLOCK_KERNEL = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "mnnlite.kernels.conv":
            raise ImportError("No module named 'mnnlite.kernels.conv'")
sys.meta_path.insert(0, Block())
from mnnlite.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["run", "quantize", "info"])
def test_missing_kernels_are_one_clear_error(zoo, tmp_path, command):
    model = str(zoo.model_path("cnn", "float"))
    args = {"run": ["run", model], "quantize": ["quantize", model, str(tmp_path / "q.mnn"), "cfg.json"],
            "info": ["info", model]}[command]
    proc = subprocess.run([sys.executable, "-c", BLOCK_KERNEL, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    if command == "info":                      # reading a model needs no kernels
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mnnlite: error: mnnlite's compiled kernels are missing "
                                               "(mnnlite.kernels.conv"), proc.stderr
    assert not (tmp_path / "q.mnn").exists()
