"""tools/quant_acceptance.py end to end on the cheapest slice of its matrix (the full table takes minutes)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "quant_acceptance.py"


@pytest.mark.slow
def test_acceptance_tool_on_cnn(zoo, tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--models", "cnn", "--features", "KL", "EMA",
                           "--weights", "MAX_ABS", "--json", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["model"], r["features"], r["weights"]) for r in rows] == [("cnn", "KL", "MAX_ABS"),
                                                                         ("cnn", "EMA", "MAX_ABS")]
    for row in rows:
        assert row["a_passed"] and row["a_error"] is None, row                # (a)
        assert row["oracle"] == "ok", row
        assert row["compared"] > 10 and row["matched"] == row["compared"], row  # (b)
        assert not row["mismatches"] and row["worst_rel"] <= row["tolerance"], row
        assert row["no_worse"] is True, row                                  # (c)
    assert rows[1]["compared_on"] == "fixed-shape copy"
    assert "combinations" in proc.stdout.splitlines()[-1]                    # the summary line
