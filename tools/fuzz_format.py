#!/usr/bin/env python3
"""Coverage-guided fuzzing of the .mnn reader/writer with atheris.

    pip install atheris
    python tools/fuzz_format.py [SEED_DIR_OR_FILES ...] -atheris_runs=1000000

Seeds default to the small fixture models (build them with tools/build_fixtures.py).  Every input must
load, describe and round-trip, or raise FormatError; anything else is a crash atheris reports with the
input that caused it.  Extra arguments go to libFuzzer (e.g. -max_len=65536, -jobs=2).
"""
import glob
import os
import sys

import atheris

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "format"))

with atheris.instrument_imports(include=["mnnlite"]):
    from fuzzing import check_one  # noqa: E402


def test_one_input(data: bytes) -> None:
    check_one(data)


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
    seeds = [a for a in sys.argv[1:] if not a.startswith("-")]
    flags = [a for a in sys.argv[1:] if a.startswith("-")]
    fixtures = os.environ.get("MNNLITE_FIXTURES", os.path.join(REPO, ".fixtures"))
    corpus = seed_corpus(seeds or [fixtures], os.path.join(REPO, ".fuzz", "corpus"))
    if not any(f.startswith("-max_len") for f in flags):
        flags.append("-max_len=262144")
    atheris.Setup([sys.argv[0], *flags, corpus], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
