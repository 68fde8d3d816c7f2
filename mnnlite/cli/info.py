"""``mnnlite info MODEL.mnn [--json [OUT]] [-v]``."""
from __future__ import annotations

from .common import Output, add_common_options


def add_parser(sub):
    p = sub.add_parser("info", help="describe a model: inputs, outputs, ops, parameters, weight encodings")
    p.add_argument("model", help="the .mnn file")
    add_common_options(p, "the description")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..format.model_io import load_model
    from ..info import describe

    out = Output(args)
    model = load_model(args.model)
    info = describe(model)
    out.print(format_text(info))
    if out.verbose:
        out.print("\n".join(f"op         {op.name} ({_type_name(op.type)})" for op in model.graph.ops))
    out.json(info)
    return 0


def _type_name(op_type) -> str:
    return getattr(op_type, "name", str(op_type))


def format_text(info: dict) -> str:
    lines = [f"model      {info['file']} ({_bytes(info['file_bytes'])}), MNN {info['version'] or '<2.0.0'}, "
             f"from {info['source']}, usage {info['usage']}"]
    for i in info["inputs"]:
        shape = "x".join("?" if d < 0 else str(d) for d in i["shape"]) or "?"
        lines.append(f"input      {i['name']}: {shape} {i['dtype']} {i['layout']}")
    layouts = info.get("output_layouts", {})
    lines += [f"output     {name}: {layouts.get(name, '?')}" for name in info["outputs"]]
    lines.append(f"ops        {info['ops']} in the main graph: "
                 + ", ".join(f"{k} {v}" for k, v in info["op_types"].items()))
    lines.append(f"parameters {info['parameters']:,} ({_bytes(info['parameter_bytes'])} stored)")
    if info["quantized_tensors"]:
        lines.append(f"int8       {info['quantized_tensors']} tensors carry quant info (offline-quantized model)")
    for c in info["compressed_convolutions"]:
        if c["storage"] == "fp16":
            lines.append(f"weights    {c['op']} ({c['type']}): fp16")
            continue
        lines.append(f"weights    {c['op']} ({c['type']}): {c['storage']}, {c['bits']}-bit {c['encoding']}, "
                     f"{'symmetric' if c['symmetric'] else 'asymmetric'}, "
                     f"{'per-channel' if c['per_channel'] else 'per-tensor'}")
    if info["external_weights"]:
        lines.append(f"external   weights read from {info['external_weights']}")
    for s in info["subgraphs"]:
        lines.append(f"subgraph   {s['name']}: {s['ops']} ops, inputs {s['inputs']}, outputs {s['outputs']}")
    return "\n".join(lines)


def _bytes(n) -> str:
    if n is None:
        return "? bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1024
