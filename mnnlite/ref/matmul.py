"""Reference matrix product in numpy: the definition mnnlite.kernels.matmul must match."""
import numpy as np


def matmul_ref(a, b, transpose_a=False, transpose_b=False, bias=None):
    """c = op(a) @ op(b) + bias, op transposing the last two axes when asked; batch axes broadcast as in
    np.matmul; bias has one value per output column."""
    if transpose_a and a.ndim >= 2:
        a = np.swapaxes(a, -1, -2)
    if transpose_b and b.ndim >= 2:
        b = np.swapaxes(b, -1, -2)
    c = np.matmul(a.astype(np.float64), b.astype(np.float64))
    if bias is not None:
        c = c + bias
    return c.astype(np.float32)
