"""Ray is an optional extra: without it, --ray is one line and exit code 2, and nothing imports it."""
import subprocess
import sys

import pytest

from model_zoo import model_path

NO_RAY = "import sys; sys.modules['ray'] = None; from mnnlite.cli.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("command", ["regress", "quantize", "validate"])
def test_ray_missing_is_one_line(command, tmp_path):
    args = {"regress": [str(tmp_path / "cases.toml")],
            "quantize": [str(model_path("cnn")), str(tmp_path / "q.mnn"), str(tmp_path / "c.json")],
            "validate": [str(model_path("cnn")), str(model_path("cnn")), str(tmp_path / "c.json")]}[command]
    (tmp_path / "cases.toml").write_text(f'[[case]]\nname = "a"\nmodel = "{model_path("cnn")}"\n'
                                         f'config = "c.json"\n')
    (tmp_path / "c.json").write_text('{"width": 8, "height": 8, "path": "."}')
    proc = subprocess.run([sys.executable, "-c", NO_RAY, command, *args, "--ray", "local"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == 'mnnlite: error: --ray needs Ray, an optional extra: pip install "mnnlite[ray]"'
    assert not (tmp_path / "q.mnn").exists()


def test_nothing_imports_ray_without_ray():
    code = ("import sys, mnnlite, mnnlite.distributed, mnnlite.regress.runner, mnnlite.quant.quantize, "
            "mnnlite.validation, mnnlite.cli.main; mnnlite.cli.main.build_parser(); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr
