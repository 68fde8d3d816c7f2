"""Float-vs-quantized comparison metrics, shared by ``validate``, the quantizer's debug mode and ``regress``.

Every metric has a kind (the last part of its name, e.g. ``prob.cosine``) and a direction: whether a
larger value is better.  The regression harness judges changes by that direction.
"""
from __future__ import annotations

import numpy as np

# kind -> +1 when larger is better, -1 when smaller is better
DIRECTION = {
    "cosine": +1,
    "rel_l2": -1,
    "max_abs": -1,
    "top1_agreement": +1,
    "top5_agreement": +1,
    "accuracy_float": +1,
    "accuracy_quant": +1,
    "overflow": -1,
}


def metric_kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def is_known_metric(name: str) -> bool:
    return metric_kind(name) in DIRECTION


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors, in float64; 1.0 when both are all zeros."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def rel_l2(reference: np.ndarray, test: np.ndarray) -> float:
    """||test - reference|| / ||reference|| (0 when both are zero)."""
    r = np.asarray(reference, np.float64).ravel()
    t = np.asarray(test, np.float64).ravel()
    denom = np.linalg.norm(r)
    diff = np.linalg.norm(t - r)
    return float(diff / denom) if denom > 0 else float(diff > 0)


def max_abs(reference: np.ndarray, test: np.ndarray) -> float:
    d = np.abs(np.asarray(test, np.float64) - np.asarray(reference, np.float64))
    return float(d.max()) if d.size else 0.0


def topk_agreement(reference: np.ndarray, test: np.ndarray, k: int) -> float:
    """Share of rows whose reference top-1 class is among the test's top-k (class axis = last)."""
    r = np.asarray(reference).reshape(-1, reference.shape[-1])
    t = np.asarray(test).reshape(-1, test.shape[-1])
    top1 = np.argmax(r, axis=1)
    k = min(k, t.shape[1])
    topk = np.argpartition(-t, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(topk == top1[:, None], axis=1)))
