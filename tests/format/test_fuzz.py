"""10,000 mutated real model files: each loads (and round-trips) or raises FormatError; nothing else."""
import random
from collections import Counter

import pytest

from fuzzing import check_one, mutate
from model_zoo import model_path

SEEDS = [("cnn", "float"), ("cnn", "wq4"), ("cnn", "fp16"), ("misc", "float"), ("transformer", "wq8"),
         ("ifgraph", "float"), ("lstm", "float"), ("cnn", "quant_kl"), ("cnn", "external")]
MUTATIONS = 10_000


@pytest.fixture(scope="module")
def seed_files():
    out = {}
    for name, variant in SEEDS:
        try:
            out[(name, variant)] = model_path(name, variant).read_bytes()
        except KeyError:  # a variant the zoo does not build for this model
            continue
    assert len(out) >= 5
    return out


@pytest.fixture(scope="module")
def seeds(seed_files):
    return list(seed_files.values())


def test_mutated_files_never_crash(seeds):
    rng = random.Random(20261130)
    outcomes = Counter()
    for i in range(MUTATIONS):
        data = mutate(rng.choice(seeds), rng)
        try:
            # the write/read round trip costs most of the time: check it on every 8th mutant
            outcomes[check_one(data, f"mutant-{i}", round_trip=i % 8 == 0)] += 1
        except Exception as exc:  # noqa: BLE001 - any non-FormatError is the bug this test hunts
            raise AssertionError(f"mutant {i} raised {type(exc).__name__}: {exc}") from exc
    # both outcomes must be common, or the mutations are not reaching the decoder
    assert outcomes["rejected"] > MUTATIONS // 10 and outcomes["loaded"] > MUTATIONS // 20, outcomes


def test_unmutated_seeds_load(seed_files):
    for (name, variant), data in seed_files.items():
        # check_one points external data at a missing file: such a model must be rejected, not crash
        assert check_one(data) == ("rejected" if variant == "external" else "loaded"), (name, variant)
