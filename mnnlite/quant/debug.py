"""Debug mode (docs/mnn-quantization.md §10): per tracked tensor, the cosine distance between float and
fake-quantized execution and the share of codes at the clamp."""
from __future__ import annotations

import numpy as np

from .tracking import TrackingPlan


def fake_quant_values(x: np.ndarray, scale: float, zero: float, clamp: int):
    """``x̂ = (clamp(roundf(x / s) + z, ±c) - z) · s`` and the share of codes at ±c (TensorStatistic.cpp)."""
    from ..format.idst import roundf

    c = np.float32(clamp)
    s, z = np.float32(scale), np.float32(zero)
    with np.errstate(all="ignore"):
        q = np.fmin(c, np.fmax(-c, roundf(x / s) + z))
    xq = ((q - z) * s).astype(np.float32)
    overflow = float(np.count_nonzero(np.abs(np.abs(q) - c) < np.float32(1e-6))) / max(x.size, 1)
    return xq, overflow


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    na, nb = np.sqrt(np.dot(a64, a64)), np.sqrt(np.dot(b64, b64))
    with np.errstate(all="ignore"):
        return float(np.dot(a64, b64) / na / nb)


def debug_distances(interp_float, interp_quant, plan: TrackingPlan, scales: dict, samples, clamp: int, log):
    """Per tracked tensor: mean cosine (float vs fake-quantized execution) and overflow ratio.

    ``interp_quant`` runs the model with the int8 weights dequantized (MNN keeps float weights here, doc
    §14.13); every tracked tensor is replaced by its fake-quantized value as it is produced, so errors
    accumulate like in int8 execution.  Returns {tensor: (cosine, overflow)} averaged over samples.
    """
    # MNN's debug callbacks skip the inputs of Raster commands: a tensor first seen there (the model
    # input, constants fed to broadcasts) is neither fake-quantized nor reported
    sums: dict[int, list] = {t: [0.0, 0.0] for t in plan.tracked if t not in plan.raster_input_first}
    total = len(samples)
    count = 0
    log.progress("computeDistance", 0, total)
    for feeds in samples:
        fq: dict[int, np.ndarray] = {}
        over: dict[int, float] = {}

        def quantize(i, _name, a):
            if i not in sums or a.dtype != np.float32:
                return
            s, z = scales.get(i, (0.0, 0.0))
            if not s > 0:
                # no int8 for this tensor at run time (MNN's debug pass would zero it: x / 0)
                fq[i], over[i] = a.copy(), 0.0
                return
            xq, ratio = fake_quant_values(a, s, z, clamp)
            if a.flags.writeable:
                np.copyto(a, xq)          # later ops read the fake-quantized tensor, as in MNN
            fq[i], over[i] = xq, ratio
        interp_quant.run(feeds, observe=quantize)

        def compare(i, _name, a):
            if i in fq:
                sums[i][0] += _cosine(a, fq[i])
                sums[i][1] += over[i]
        interp_float.run(feeds, observe=compare)
        count += 1
        log.progress("computeDistance", count, total)
    log.text("\n\nDebug info:\n\n")
    n = max(count, 1)
    return {t: (c / n, o / n) for t, (c, o) in sums.items() if t in scales}


