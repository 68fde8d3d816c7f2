"""``mnnlite run`` on a quantized file: int8 by default (as MNN), ``--float`` forces float."""
from __future__ import annotations

import numpy as np

from mnnlite.cli.main import main as cli
from mnnlite.runtime import Interpreter


def test_run_uses_int8_unless_float(zoo, tmp_path, capsys):
    path = zoo.model_path("nhwc_like", "quant_kl")
    feeds = zoo.image_feeds("nhwc_like")[0]
    np.save(tmp_path / "x.npy", feeds["image"])
    outputs = {}
    for flag, precision in (([], "int8"), (["--float"], "float")):
        out = tmp_path / f"{precision}.npz"
        assert cli(["run", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(out), *flag]) == 0
        text = capsys.readouterr().out
        assert f"mnnlite runs it in {precision}" in text and f", {precision}" in text.splitlines()[-2]
        outputs[precision] = dict(np.load(out))
    int8 = Interpreter(path).run(feeds)
    flt = Interpreter(path, precision="float").run(feeds)
    for name in int8:
        np.testing.assert_array_equal(outputs["int8"][name], int8[name])
        np.testing.assert_array_equal(outputs["float"][name], flt[name])
    assert any(not np.array_equal(int8[n], flt[n]) for n in int8)


def test_float_model_runs_float(zoo, tmp_path, capsys):
    np.save(tmp_path / "x.npy", zoo.image_feeds("nhwc_like")[0]["image"])
    assert cli(["run", str(zoo.model_path("nhwc_like", "float")), "--input", str(tmp_path / "x.npy")]) == 0
    text = capsys.readouterr().out
    assert "quantization info" not in text and text.rstrip().endswith(", float")
