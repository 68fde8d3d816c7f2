"""Honest verdicts: a regress case without thresholds gets the documented defaults, a case below them fails
even with no golden yet, a case with no gate at all says it was only measured; a misspelt case key gets a
"did you mean"; validate's worst-layer list marks MNN's x86 int8 max-pool behaviour where it applies."""
from __future__ import annotations

import pytest

from mnnlite.regress.cases import DEFAULT_THRESHOLDS, load_cases
from mnnlite.regress.report import summary_line, table
from mnnlite.regress.runner import RegressionRun, judge


def _cases(tmp_path, body: str):
    (tmp_path / "m.mnn").write_bytes(b"")
    (tmp_path / "cases.toml").write_text(body)
    return load_cases(str(tmp_path / "cases.toml"))


def _result(cosine: float, failures=()):
    return {"metrics": {"out.cosine": cosine, "out.top1_agreement": 1.0}, "thresholds_passed": not failures,
            "threshold_failures": list(failures), "seconds": 1.0, "provenance": {}}


def test_default_thresholds_and_verdicts_without_golden(tmp_path):
    plain, ungated = _cases(tmp_path, 'case = [{name = "a", model = "m.mnn", config = {path = "."}},\n'
                                      '        {name = "b", model = "m.mnn", config = {path = "."}, thresholds = {}}]\n')
    assert plain.thresholds == DEFAULT_THRESHOLDS == {"min_cosine": 0.95, "min_agreement": 0.90}
    assert ungated.thresholds == {}
    low = judge(plain, _result(0.73, ["out.cosine 0.730000 < min-cosine 0.95"]), "", 1.0, update_golden=False)
    assert low.verdict == "failed" and not low.ok and "min-cosine 0.95" in low.message
    measured = judge(ungated, _result(0.73), "", 1.0, update_golden=False)
    assert measured.verdict == "new" and "measured only (no threshold set)" in measured.message
    good = judge(plain, _result(0.99), "", 1.0, update_golden=False)
    assert good.verdict == "new" and "thresholds met (min_agreement 0.9, min_cosine 0.95)" in good.message
    run = RegressionRun([low, measured, good])
    assert summary_line(run) == ("0 passed, 1 failed, 2 new (no golden yet: measured, compared with nothing); "
                                 "no absolute threshold on b")
    assert "FAILED" in table(run) and "NEW" in table(run)


@pytest.mark.parametrize("body, message", [
    ('[[case]]\nname = "a"\nmodel = "m.mnn"\nconfig = {path = "."}\nhelduot = "x"\n',
     "unknown key(s) ['helduot'] (did you mean 'heldout'?)"),
    ('[[case]]\nname = "a"\nmodel = "m.mnn"\nconfig = {path = "."}\nthresholds = {min_cosin = 0.9}\n',
     "unknown threshold(s) ['min_cosin'] (did you mean 'min_cosine'?)"),
    ('[[case]]\nname = "a"\nmodel = "m.mnn"\nconfig = {path = "."}\nthresholds = {min_cosine = 9}\n',
     "threshold min_cosine must be a number in [0, 1], got 9"),
])
def test_bad_case_keys(tmp_path, body, message):
    case, = _cases(tmp_path, body)
    assert message in case.error


def test_worst_layers_mark_mnn_max_pool_behaviour(zoo):
    """ppocr_cls's int8 max pools run on signed inputs: the row of each such pool output carries the note,
    found from the int8 plan (Pooling, MAXPOOL, int8), and no other row does."""
    from mnnlite import validate
    from mnnlite.format.tables import OpType
    from mnnlite.runtime import Interpreter
    from mnnlite.validation import MAXPOOL_NOTE, int8_max_pools

    flt, q = zoo.quant_source_path("ppocr_cls", "quant_kl"), zoo.model_path("ppocr_cls", "quant_kl")
    report = validate(flt, q, zoo.quant_config("ppocr_cls", "quant_kl"), data=str(zoo.heldout_dir("ppocr_cls")),
                      num=2, worst=1000)
    noted = {layer.name for layer in report.layers if layer.note}
    assert noted and all(layer.note == MAXPOOL_NOTE for layer in report.layers if layer.note)
    graph = Interpreter(q).model.graph
    for name in noted:
        producer = graph.producer[graph.index(name)]
        assert producer.type in (OpType.Pooling, OpType.Pooling3D) and int(producer.main.type) == 0
    rendered = report.render()
    assert all(f"* {MAXPOOL_NOTE}" in line for line in rendered.splitlines() if line.split(" ")[0] in noted)
    assert int8_max_pools(Interpreter(flt, precision="float")) == {}      # a float run has no int8 pools
