#!/usr/bin/env python3
"""Coverage-guided fuzzing of the .mnn reader/writer and the CLI commands with atheris.

    pip install atheris
    python tools/fuzz_format.py [--target format|info|run|quantize] [SEED_DIR_OR_FILES ...] -atheris_runs=1000000

``--target format`` (default): every input must load, describe and round-trip, or raise FormatError.
``--target info|run|quantize``: the input is written to a file and goes through that CLI command (run
with small random inputs and a 1 GB --max-memory, quantize on one demo image); it must finish or stop
with a one-line MnnliteError (the CLI's exit code 2).  Anything else is a crash atheris reports with the
input that caused it.  Seeds default to the small fixture models (tools/build_fixtures.py) and, with
MNNLITE_CORPUS set, the real-model corpus's small models.  Extra arguments go to libFuzzer (e.g.
-max_len=65536, -jobs=2, -rss_limit_mb=3072, -timeout=30).
"""
import glob
import os
import sys

import atheris

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "format"))

sys.path.insert(0, os.path.join(REPO, "tools"))

with atheris.instrument_imports(include=["mnnlite"]):
    import fuzz_cli  # noqa: E402
    from fuzzing import check_one  # noqa: E402

TARGET = "format"
_WORK = None


def test_one_input(data: bytes) -> None:
    if TARGET == "format":
        check_one(data)
        return
    outcome, detail = fuzz_cli.run_command(TARGET, data, _WORK)
    if outcome == "traceback":
        raise RuntimeError(detail)


def seed_corpus(paths, corpus_dir):
    """libFuzzer wants a corpus folder: copy the seed models (< 1 MB each) into it."""
    os.makedirs(corpus_dir, exist_ok=True)
    files = []
    for p in paths:
        files += sorted(glob.glob(os.path.join(p, "**", "*.mnn"), recursive=True)) if os.path.isdir(p) else [p]
    for f in files:
        if os.path.getsize(f) < (1 << 20):
            with open(f, "rb") as src, open(os.path.join(corpus_dir, os.path.basename(f)), "wb") as dst:
                dst.write(src.read())
    return corpus_dir


def main():
    global TARGET, _WORK
    import tempfile

    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a.startswith("--target"):
            TARGET = a.split("=", 1)[1] if "=" in a else argv[i + 1]
            argv = argv[:i] + argv[i + (1 if "=" in a else 2):]
            break
    if TARGET not in ("format", "info", "run", "quantize"):
        raise SystemExit(f"--target must be format, info, run or quantize, not {TARGET!r}")
    _WORK = tempfile.mkdtemp(prefix="mnnlite-atheris-")
    seeds = [a for a in argv if not a.startswith("-")]
    flags = [a for a in argv if a.startswith("-")]
    fixtures = os.environ.get("MNNLITE_FIXTURES", os.path.join(REPO, ".fixtures"))
    default = [f for f in fuzz_cli.fixture_seeds() if os.path.getsize(f) < (1 << 20)] or [fixtures]
    corpus = seed_corpus(seeds or default, os.path.join(REPO, ".fuzz", f"corpus-{TARGET}"))
    if not any(f.startswith("-max_len") for f in flags):
        flags.append("-max_len=262144")
    if not any(f.startswith("-artifact_prefix") for f in flags):    # crash-/slow-unit files: not in the cwd
        artifacts = os.path.join(REPO, ".fuzz", "artifacts", "")
        os.makedirs(artifacts, exist_ok=True)
        flags.append(f"-artifact_prefix={artifacts}")
    atheris.Setup([sys.argv[0], *flags, corpus], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
