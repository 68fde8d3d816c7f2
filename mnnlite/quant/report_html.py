"""``<dst>.report.html``: the accurate flow's report as one self-contained page (no script, no external file).

Sections: the summary (cosine before/after accuracy control, conv MACs int8), the per-layer relative error
of every int8/float op in execution order as an inline SVG bar chart, the ops left float with the reason,
and, for the tensors with the largest expected quantization error, their histogram with the chosen range
drawn over it (inline SVG).
"""
from __future__ import annotations

import html

WORST_HISTOGRAMS = 8


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _bars(rows: list[tuple[str, float, bool]], width: int = 900, bar: int = 12) -> str:
    """Horizontal bars: (label, value, int8) per row, value on a log-free linear scale to the max."""
    if not rows:
        return "<p>No per-layer error measured (no held-out samples: set target_cosine).</p>"
    top = max(v for _, v, _ in rows) or 1.0
    height = bar * len(rows) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10">']
    for k, (label, value, int8) in enumerate(rows):
        y = 10 + k * bar
        w = max(1.0, (width - 330) * value / top)
        colour = "#3b7dd8" if int8 else "#999999"
        parts.append(f'<text x="0" y="{y + 9}">{_esc(label[:48])}</text>'
                     f'<rect x="300" y="{y}" width="{w:.1f}" height="{bar - 2}" fill="{colour}"/>'
                     f'<text x="{305 + w:.1f}" y="{y + 9}">{value:.4f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _histogram(t, width: int = 420, height: int = 120) -> str:
    h = t.histogram
    if not h:
        return ""
    counts = h["counts"]
    lo, hi = h["lo"], h["hi"]
    top = max(counts) or 1
    n = len(counts)
    step = width / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 16}" font-size="10">']
    for k, c in enumerate(counts):
        bh = height * (c / top) ** 0.5          # square root: tails stay visible
        parts.append(f'<rect x="{k * step:.1f}" y="{height - bh:.1f}" width="{max(step - 0.5, 0.5):.1f}" '
                     f'height="{bh:.1f}" fill="#6a9fd8"/>')

    def x_of(v):
        return (v - lo) / (hi - lo) * width if hi > lo else 0

    for v, colour in ((t.lo, "#d83b3b"), (t.hi, "#d83b3b")):
        x = min(max(x_of(v), 0), width)
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="{colour}" stroke-width="1.5"/>')
    parts.append(f'<text x="0" y="{height + 12}">{lo:.4g}</text>'
                 f'<text x="{width - 60}" y="{height + 12}">{hi:.4g}</text></svg>')
    return "".join(parts)


def render_html(report) -> str:
    """The page for a ``QuantReport`` whose ``accuracy`` is set."""
    acc = report.accuracy
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>mnnlite quantization report</title>",
           "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}</style></head><body>",
           f"<h1>Quantization report: {_esc(report.dst)}</h1>",
           f"<p>Source {_esc(report.src)}; preset {_esc(acc.preset)}; range method {_esc(acc.range_method)}; "
           f"{acc.calibration_samples} calibration and {acc.heldout_samples} held-out sample(s); "
           f"{100 * acc.int8_conv_mac_share:.1f} % of conv MACs int8; target cosine {_esc(acc.target_cosine)}.</p>"]
    if acc.cosine_before:
        out.append("<table><tr><th>output</th><th>all convs int8</th><th>file written</th></tr>")
        for name, before in acc.cosine_before.items():
            out.append(f"<tr><td>{_esc(name)}</td><td>{before:.5f}</td><td>{acc.cosine_after.get(name, 0):.5f}</td></tr>")
        out.append("</table>")
    out.append("<h2>Per-layer relative error (held-out, execution order)</h2>")
    rows = [(f"{o.name} ({'int8' if o.int8 else 'float'})", o.error, o.int8) for o in acc.ops if o.error is not None]
    out.append(_bars(rows))
    out.append("<h2>Ops left float</h2><table><tr><th>op</th><th>type</th><th>reason</th></tr>")
    for f in acc.float_ops:
        out.append(f"<tr><td>{_esc(f['name'])}</td><td>{_esc(f['type'])}</td><td>{_esc(f['reason'])}</td></tr>")
    out.append("</table>")
    if acc.repairs:
        out.append("<h2>Quant info chosen to avoid MNN's int8 quirks</h2><ul>")
        out += [f"<li>{_esc(r['name'])}: {_esc(r['reason'])}</li>" for r in acc.repairs]
        out.append("</ul>")
    out.append(f"<h2>Histograms of the {WORST_HISTOGRAMS} tensors with the largest expected error "
               "(red: chosen range)</h2>")
    ranked = sorted((t for t in acc.tensors if t.histogram and t.error == t.error),
                    key=lambda t: -t.error / max(t.hi - t.lo, 1e-12) ** 2)
    for t in ranked[:WORST_HISTOGRAMS]:
        out.append(f"<h3>{_esc(t.name)}: {_esc(t.method)}, {'symmetric' if t.symmetric else 'asymmetric'}, "
                   f"[{t.lo:.4g}, {t.hi:.4g}], scale {t.scale:.4g}, zero {t.zero:g}</h3>{_histogram(t)}")
    out.append("<h2>Every quantized tensor</h2><table><tr><th>tensor</th><th>method</th><th>form</th>"
               "<th>lo</th><th>hi</th><th>scale</th><th>zero</th></tr>")
    for t in acc.tensors:
        out.append(f"<tr><td>{_esc(t.name)}</td><td>{_esc(t.method)}</td><td>{'sym' if t.symmetric else 'asym'}"
                   f"</td><td>{t.lo:.4g}</td><td>{t.hi:.4g}</td><td>{t.scale:.4g}</td><td>{t.zero:g}</td></tr>")
    out.append("</table></body></html>\n")
    return "".join(out)


__all__ = ["render_html"]
