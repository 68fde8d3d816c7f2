"""Reference convolutions in numpy: the definition the fast kernels in mnnlite.kernels.conv must match.

Written for clarity, not speed: one einsum per kernel position, accumulated in float64.
"""
import numpy as np

ACTIVATIONS = {0: lambda v: v, 1: lambda v: np.maximum(v, 0.0), 2: lambda v: np.clip(v, 0.0, 6.0)}


def conv2d_ref(x, w, bias=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1, act=0):
    """y[n,o,i,j] = act(bias[o] + sum_{c,kh,kw} w[o,c,kh,kw] * xpad[n, g*C/G + c, i*sy + kh*dy, j*sx + kw*dx]).

    x is NCHW, w is [O][C/groups][KH][KW], pad is (top, left, bottom, right), g = o // (O/groups).
    """
    (sy, sx), (dy, dx), (pt, pl, pb, pr) = stride, dilation, pad
    o, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (xp.shape[2] - dy * (kh - 1) - 1) // sy + 1
    ow = (xp.shape[3] - dx * (kw - 1) - 1) // sx + 1
    og = o // groups
    y = np.zeros((x.shape[0], o, oh, ow))
    for g in range(groups):
        xg, wg = xp[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dy:i * dy + sy * (oh - 1) + 1:sy, j * dx:j * dx + sx * (ow - 1) + 1:sx]
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    return ACTIVATIONS[act](y).astype(np.float32)


class Conv2dRef:
    """``conv2d_ref`` with the weights bound: the reference form of ``mnnlite.kernels.conv.Conv2d``."""

    def __init__(self, w, bias=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1, act=0):
        self.args = (w, bias, stride, pad, dilation, groups, act)

    def __call__(self, x):
        return conv2d_ref(x, *self.args)


def deconv2d_ref(x, w, bias=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                 output_padding=(0, 0), output_size=None, act=0):
    """ONNX ConvTranspose: y[n, o, ih*sy - pt + kh*dy, iw*sx - pl + kw*dx] += x[n,c,ih,iw] * w[c, o - g*O/G, kh, kw].

    w is [C][O/groups][KH][KW].  The output is (OH, OW) = output_size if given, else
    stride*(in-1) + output_padding + dilation*(k-1) + 1 - pad_begin - pad_end; positions no input
    reaches hold just act(bias).
    """
    (sy, sx), (dy, dx), (pt, pl, pb, pr) = stride, dilation, pad
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    if output_size is None:
        output_size = (sy * (h - 1) + output_padding[0] + dy * (kh - 1) + 1 - pt - pb,
                       sx * (wd - 1) + output_padding[1] + dx * (kw - 1) + 1 - pl - pr)
    oh, ow = output_size
    # Scatter into an uncropped canvas, then cut the padding off.
    full = np.zeros((n, og * groups, max(sy * (h - 1) + dy * (kh - 1) + 1, pt + oh),
                     max(sx * (wd - 1) + dx * (kw - 1) + 1, pl + ow)))
    cg = c // groups
    for g in range(groups):
        xg, wg = x[:, g * cg:(g + 1) * cg].astype(np.float64), w[g * cg:(g + 1) * cg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                full[:, g * og:(g + 1) * og, i * dy:i * dy + sy * (h - 1) + 1:sy, j * dx:j * dx + sx * (wd - 1) + 1:sx] += \
                    np.einsum("nchw,co->nohw", xg, wg[:, :, i, j])
    y = full[:, :, pt:pt + oh, pl:pl + ow]
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return ACTIVATIONS[act](y).astype(np.float32)
