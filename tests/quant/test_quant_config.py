"""Quantizer config: MNN's keys and defaults (docs/mnn-quantization.md §3), and one-line errors for bad values."""
import json
import logging
import os

import pytest

from mnnlite.errors import ConfigError
from mnnlite.quant.config import QuantConfig, load_config

MNN_EXAMPLE = {  # tools/quantization/imageInputConfig.json of MNN 3.6.1
    "format": "RGB", "mean": [127.5, 127.5, 127.5], "normal": [0.00784314, 0.00784314, 0.00784314],
    "center_crop_h": 0.875, "center_crop_w": 0.875, "width": 224, "height": 224, "path": "path/to/images",
    "used_sample_num": 500, "feature_quantize_method": "EMA", "weight_quantize_method": "MAX_ABS",
    "feature_clamp_value": 127, "weight_clamp_value": 127, "batch_size": 32, "quant_bits": 8,
    "skip_quant_op_names": ["skip_quant_op_name1", "skip_quant_op_name2"], "input_type": "image",
    "debug": False,
}


def test_defaults_are_mnns():
    cfg = load_config({"path": "imgs"})
    assert cfg == QuantConfig(path=os.path.abspath("imgs"))
    assert (cfg.format, cfg.channels, cfg.mean4, cfg.normal4) == ("BGR", 3, (0.0,) * 4, (1.0,) * 4)
    assert (cfg.feature_quantize_method, cfg.weight_quantize_method, cfg.quant_bits) == ("KL", "MAX_ABS", 8)
    assert (cfg.feature_clamp_value, cfg.weight_clamp_value) == (127, 127)
    assert (cfg.batch_size, cfg.used_sample_num) == (None, None)
    assert (cfg.center_crop_h, cfg.center_crop_w, cfg.input_type, cfg.debug) == (1.0, 1.0, "image", False)
    assert not cfg.use_winograd
    # the opt-in deviations are off: MNN's selection, thresholds and quant info
    assert (cfg.file_order, cfg.input_threshold, cfg.ema_sequence_batch) == ("directory", "auto", "last")
    assert cfg.quantize_rangeless_tensors is None and cfg.writes_rangeless_tensors
    assert not load_config({"path": "imgs", "feature_quantize_method": "ADMM"}).writes_rangeless_tensors
    opted = load_config({"path": "imgs", "file_order": "sorted", "input_threshold": "max",
                         "quantize_rangeless_tensors": False})
    assert (opted.file_order, opted.input_threshold, opted.quantize_rangeless_tensors) == ("sorted", "max", False)


def test_mnn_example_configs_load(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(MNN_EXAMPLE))
    cfg = load_config(path)
    assert cfg.source == str(path) and cfg.used_sample_num == 500 and cfg.batch_size == 32
    assert cfg.skip_quant_op_names == ("skip_quant_op_name1", "skip_quant_op_name2") and cfg.use_winograd
    assert cfg.mean4 == (127.5, 127.5, 127.5, 0.0)
    # the documented KL example carries an unused "model" key and used_image_num
    doc = {"format": "RGB", "mean": [103.94, 116.78, 123.68], "normal": [0.017] * 3, "width": 224,
           "height": 224, "path": "../resource/images/", "used_image_num": 2, "feature_quantize_method": "KL",
           "weight_quantize_method": "MAX_ABS", "model": "mobilenet.mnn"}
    assert load_config(doc).used_sample_num == 2


def test_relative_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    cfg_file = tmp_path / "sub" / "cfg.json"
    cfg_file.write_text(json.dumps({"path": "imgs"}))
    monkeypatch.chdir(tmp_path)
    assert load_config(cfg_file).path == str(tmp_path / "imgs")       # not tmp_path/sub/imgs, like MNN


def test_used_sample_num_wins_and_aliases():
    assert load_config({"path": "p", "used_image_num": 3, "used_sample_num": 5}).used_sample_num == 5
    assert load_config({"path": "p", "used_image_num": 3}).used_sample_num == 3


def test_sequence_inputs_and_winograd():
    cfg = load_config({"path": "p", "input_type": "sequence", "feature_quantize_method": "EMA",
                       "winogradOpt": False, "inputs": [{"name": "a", "shape": [1, 2, 3]}, {"name": "b"}]})
    assert cfg.input_shape("a") == (1, 2, 3) and cfg.input_shape("b") is None and cfg.input_shape("c") is None
    assert not cfg.use_winograd


def test_low_bits_weight_clamp(caplog):
    # without the key MNN keeps 127 for 4 bits and destroys the weights (docs/mnn-quantization.md §14.4): we use 7
    assert load_config({"path": "p", "quant_bits": 4}).weight_clamp_value == 7
    with caplog.at_level(logging.WARNING):
        assert load_config({"path": "p", "quant_bits": 6, "weight_clamp_value": 20}).weight_clamp_value == 31
    assert "replaced by 31" in caplog.text
    assert load_config({"path": "p", "quant_bits": 8, "weight_clamp_value": 100.9}).weight_clamp_value == 100


@pytest.mark.parametrize("patch,pattern", [
    ({"formt": "RGB"}, r'unknown key "formt" \(did you mean \'format\'\?\); allowed keys: batch_size, bias_correction, center_crop_h'),
    ({"widht": 224}, r'unknown key "widht" \(did you mean \'width\'\?\); allowed keys: '),
    ({"xyzzy": "RGB"}, r'unknown key "xyzzy"; allowed keys: '),
    ({"feature_quantize_method": "EMa"}, r'must be one of KL, ADMM, EMA \(did you mean \'EMA\'\?\)'),
    ({"format": "YUV"}, r'"format" must be one of RGB, BGR, RGBA, BGRA, GRAY, got "YUV"'),
    ({"format": 123}, r'"format" must be a string'),
    ({"mean": [1, 2, 3, 4, 5]}, r'"mean" must be a list of 1 to 4 numbers'),
    ({"normal": "x"}, r'"normal" must be a list of 1 to 4 numbers'),
    ({"width": 0}, r'"width" must be a positive integer, got 0'),
    ({"height": 224.0}, r'"height" must be a positive integer, got 224.0'),
    ({"center_crop_h": 0}, r'"center_crop_h" must be a number in \(0, 1\]'),
    ({"quant_bits": 9}, r'"quant_bits" must be an integer in 2..8, got 9'),
    ({"quant_bits": True}, r'"quant_bits" must be an integer in 2..8, got true'),
    ({"used_image_num": 0}, r'"used_image_num" must be a positive integer \(omit the key'),
    ({"used_sample_num": -1}, r'"used_sample_num" must be a positive integer'),
    ({"feature_quantize_method": "MSE"}, r'"feature_quantize_method" must be one of KL, ADMM, EMA'),
    ({"weight_quantize_method": "KL"}, r'"weight_quantize_method" must be one of MAX_ABS, ADMM'),
    ({"feature_clamp_value": 128}, r'"feature_clamp_value" must be an integer in 1..127, got 128'),
    ({"feature_clamp_value": 0}, r'"feature_clamp_value" must be an integer in 1..127'),
    ({"weight_clamp_value": 127, "quant_bits": 4}, r'"weight_clamp_value" must be an integer in 1..7 \(quant_bits 4'),
    ({"batch_size": 0}, r'"batch_size" must be a positive integer'),
    ({"skip_quant_op_names": ["a", 1]}, r'"skip_quant_op_names" must be a list of op names'),
    ({"debug": 1}, r'"debug" must be true or false, got 1'),
    ({"file_order": "name"}, r'"file_order" must be one of directory, sorted, got "name"'),
    ({"input_threshold": "KL"}, r'"input_threshold" must be one of auto, max, got "KL"'),
    ({"quantize_rangeless_tensors": 0}, r'"quantize_rangeless_tensors" must be true or false, got 0'),
    ({"ema_sequence_batch": "all"}, r'"ema_sequence_batch" must be one of last, full, got "all"'),
    ({"input_type": "video"}, r'"input_type" must be one of image, sequence'),
    ({"inputs": [{"shape": [1]}]}, r'"inputs\[0\].name" must be given'),
    ({"inputs": [{"name": "a", "shape": [1, -1]}]}, r'"inputs\[0\].shape" must be a non-empty list of positive'),
    ({"inputs": [{"name": "a", "dims": [1]}]}, r'unknown key "inputs\[0\].dims"; allowed: name, shape, value'),
    ({"path": ""}, r'"path" must be given'),
    ({"path": 5}, r'"path" must be a string'),
])
def test_bad_values_are_one_line_errors(patch, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config({"path": "p", **patch})
    assert "\n" not in str(info.value) and str(info.value).startswith("<dict>: ")


def test_missing_path():
    with pytest.raises(ConfigError, match=r'"path" must be given: the folder of calibration files'):
        load_config({"format": "RGB"})


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the config"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    for text, pattern in [("{'path': 1}", "invalid JSON"), ('{"path": NaN}', "invalid JSON"),
                          ("[1, 2]", "must be a JSON object"), ("\xff\xfe", "invalid JSON|cannot read")]:
        bad.write_text(text, encoding="latin-1")
        with pytest.raises(ConfigError, match=pattern) as info:
            load_config(bad)
        assert str(info.value).startswith(str(bad)) and "\n" not in str(info.value)
