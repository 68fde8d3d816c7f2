"""tools/bench_accuracy.py: task metrics, failure cells and the table, without running a quantizer."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench_accuracy as bench  # noqa: E402


def test_ctc_decoding_merges_repeats_and_drops_blank():
    steps = np.eye(5)[[0, 2, 2, 0, 2, 3, 3, 0]][None]        # [1, T, C] one-hot
    assert bench.ctc_indices(steps) == (2, 2, 3)
    task = ("ctc", {"characters": ["blank", "a", "b", "c", "d"]})
    other = np.eye(5)[[2, 2, 2, 0, 0, 3, 0, 0]][None]
    assert bench.task_metric(task, [{"y": steps}, {"y": steps}], [{"y": steps}, {"y": other}]) == 50.0


def test_mask_iou_is_pooled_so_empty_samples_weigh_nothing():
    empty, full = np.zeros((1, 1, 4, 4)), np.ones((1, 1, 4, 4))
    half = full.copy()
    half[..., :2] = 0
    task = ("mask_iou", {"threshold": 0.3})
    # sample 1: nothing on either side; sample 2: the int8 map keeps half of the float mask
    assert bench.task_metric(task, [{"p": empty}, {"p": full}], [{"p": empty}, {"p": half}]) == 50.0


def test_detection_f1_matches_same_anchor_boxes():
    params = {"layout": "ssd", "scores": "s", "boxes": "b", "columns": 4, "threshold": 0.5}
    scores = np.array([[[5.0], [5.0], [-5.0]]])                 # logits: anchors 0 and 1 fire
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]], np.float64)
    moved = boxes.copy()
    moved[0, 1, :2] = 9                                          # anchor 1's box drifts off (IoU < 0.5)
    hits, cases = bench.detection_counts({"s": scores, "b": boxes}, {"s": scores, "b": moved}, params)
    assert (hits, cases) == (2.0, 4.0)                           # F1 = 2 * 1 / (2 + 2)


def test_top1_reads_the_smallest_output():
    ref = {"box": np.array([[9.0, 0, 0, 0]]), "prob": np.array([[0.2, 0.8]])}
    flipped = {"box": ref["box"], "prob": np.array([[0.7, 0.3]])}
    assert bench.task_metric(("top1",), [ref, ref], [ref, flipped]) == 50.0


def test_a_failing_cell_is_a_reason_not_a_crash(tmp_path):
    result = bench.child("no_such_model", "mnn_kl", tmp_path, timeout=120)
    assert "error" in result and "no_such_model" in result["error"]
    table = bench.render({"m": {"float": {"cos": 1.0, "task": None, "int8": 0.0}, "mnn_kl": result}},
                         ["float", "mnn_kl"], {"m": "-"})
    assert "| m (-) | 1.0000 / 0% | n/a |" in table and "m / mnn_kl:" in table
