"""Calibration and held-out data of the real-model corpus (tests/corpus.py), made from what the wheels ship:
crops of scikit-image's sample photos and mnnlite's demo text lines, speech-like audio carried through the
VAD's own state, and sentences from scikit-image's docstrings through BERT's WordPiece tokenizer."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List

import numpy as np

from corpus_sources import SKIMAGE, download
from oracle.tools import OracleToolError, describe_exit, tail
from zoo_cache import REPO_ROOT


# --- pictures --------------------------------------------------------------------------------
_PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle_left", "rocket", "retina", "ihc", "color",
           "camera", "brick", "grass", "gravel", "moon", "coins", "cell", "clock_motion", "hubble_deep_field",
           "motorcycle_right", "phantom", "horse", "logo")
# astronaut.png (512x512): face box and eye centres, measured on the picture
_FACE = (226, 110, 130)          # centre x, y and side of a square around the face
_EYES = ((200, 100), (250, 100))
_EYE_SIDE = 40


def _skimage_picture(stem: str):
    from PIL import Image
    import io

    archive = download(SKIMAGE)
    with zipfile.ZipFile(archive) as zf:
        member = next(n for n in zf.namelist() if n.startswith(f"skimage/data/{stem}."))
        return Image.open(io.BytesIO(zf.read(member))).convert("RGB")


def _demo_lines(which: str):
    from PIL import Image

    folder = REPO_ROOT / "mnnlite" / "demo" / ("calib" if which == "calib" else "heldout")
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))]


def _crop(img, cx, cy, w, h, out_w, out_h, flip=False):
    from PIL import Image

    box = (int(cx - w / 2), int(cy - h / 2), int(cx + w / 2), int(cy + h / 2))
    out = img.crop(box).resize((out_w, out_h), Image.BILINEAR)
    return out.transpose(Image.FLIP_LEFT_RIGHT) if flip else out


def pictures(p, which: str, count: int, seed: int):
    """``count`` PIL pictures for one model's calibration or held-out folder, deterministic per model.

    Held-out photos come from other source pictures than the calibration ones where the pool has several
    (photos, document), and from other crops where it has one (the only face in the wheels is the
    astronaut's)."""
    rng = np.random.default_rng(seed)
    # pictures are stored a little larger than the model input, so MNN's resize is exercised
    out_w, out_h = int(p.width * 1.25), int(p.height * 1.25)
    if p.pool == "text_line":
        lines = _demo_lines(which)
        page = _skimage_picture("page")
        while len(lines) < count:      # more lines: strips of the scanned page
            y = int(rng.integers(10, page.height - 30))
            h = int(rng.integers(18, 28))
            x0 = int(rng.integers(0, page.width // 3))
            lines.append(page.crop((x0, y, page.width - int(rng.integers(0, 40)), y + h)))
        return lines[:count]
    if p.pool in ("face", "eye"):
        img = _skimage_picture("astronaut")
        out = []
        for i in range(count):
            if p.pool == "eye":
                ex, ey = _EYES[i % 2]
                side = _EYE_SIDE * rng.uniform(1.6, 2.6)
                cx, cy = ex + rng.normal(0, 4), ey + rng.normal(0, 4)
            else:
                side = _FACE[2] * rng.uniform(1.3, 3.2)
                cx, cy = _FACE[0] + rng.normal(0, 0.1 * side), _FACE[1] + rng.normal(0, 0.1 * side) + 0.15 * side
            aspect = p.width / p.height
            out.append(_crop(img, cx, cy, side * aspect, side, out_w, out_h, flip=bool(i % 2)))
        return out
    stems = list(_PHOTOS)
    if p.pool == "document":
        stems = ["page", "text", "page", "text"] + stems
    held = stems[3::4]
    stems = held if which == "heldout" else [s for i, s in enumerate(stems) if i % 4 != 3]
    out = []
    for i in range(count):
        img = _skimage_picture(stems[i % len(stems)])
        W, H = img.size
        aspect = p.width / p.height
        h = min(H, W / aspect) * rng.uniform(0.5, 1.0)
        w = h * aspect
        cx = rng.uniform(w / 2, W - w / 2)
        cy = rng.uniform(h / 2, H - h / 2)
        out.append(_crop(img, cx, cy, w, h, out_w, out_h, flip=bool(rng.integers(2))))
    return out


# --- audio -----------------------------------------------------------------------------------
_SR = 16000


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    """Deterministic speech-like audio: voiced segments (a glottal pulse train through moving formant
    resonators), unvoiced noise bursts and pauses, at 16 kHz, peak 0.5."""
    rng = np.random.default_rng(seed)
    total = int(seconds * _SR)
    out = np.zeros(total, np.float64)
    pos = 0
    while pos < total:
        seg = int(rng.uniform(0.08, 0.45) * _SR)
        kind = rng.choice(["voiced", "voiced", "noise", "pause"])
        t = np.arange(seg) / _SR
        if kind == "voiced":
            f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
            phase = 2 * np.pi * np.cumsum(f0) / _SR
            sig = np.zeros(seg)
            for k in range(1, 30):
                freq = k * f0
                gain = sum(np.exp(-((freq - fm) / bw) ** 2) for fm, bw in
                           ((rng.uniform(300, 800), 120), (rng.uniform(900, 2200), 180), (2800, 300)))
                sig += gain * np.sin(k * phase) / k ** 0.5
        elif kind == "noise":
            sig = rng.normal(0, 0.3, seg) * np.hanning(seg)
        else:
            sig = rng.normal(0, 0.003, seg)
        env = np.minimum(1, np.minimum(np.arange(seg), np.arange(seg)[::-1]) / (0.01 * _SR))
        end = min(total, pos + seg)
        out[pos:end] = (sig * env)[: end - pos]
        pos = end
    return (0.5 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


_VAD_CHILD = """
import sys, numpy as np
sys.path.insert(0, sys.argv[3])
from oracle import run_oracle
data = np.load(sys.argv[1])
chunks, state, states = data["chunks"], np.zeros((2, 1, 128), np.float32), []
for chunk in chunks:
    states.append(state)
    state = run_oracle(sys.argv[4], {"input": chunk[None], "state": state})["stateN"]
np.save(sys.argv[2], np.stack(states))
"""


def vad_samples(name: str, model: Path, count: int, seed: int) -> List[Dict[str, np.ndarray]]:
    """Chunks of 512 new samples + 64 of context (the model's 576 input), each with the state the model
    itself carried to that chunk: the chunks are run in order through the float ``model`` in the official
    runtime (a child process), and every ``stride``-th chunk becomes a sample."""
    import tempfile

    stride = 3
    audio = _speech_like(count * stride * 512 / _SR + 0.2, seed)
    chunks = np.stack([audio[i * 512: i * 512 + 576] for i in range(count * stride)])
    with tempfile.TemporaryDirectory(prefix="mnnlite-vad-") as tmp:
        fin, fout = os.path.join(tmp, "chunks.npz"), os.path.join(tmp, "states.npy")
        np.savez(fin, chunks=chunks)
        proc = subprocess.run([sys.executable, "-c", _VAD_CHILD, fin, fout, str(Path(__file__).parent),
                               str(model)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise OracleToolError(f"{name}: running the VAD in the official runtime failed "
                                  f"({describe_exit(proc.returncode)}): {tail(proc.stderr)}")
        states = np.load(fout)
    return [{"input": chunks[i][None], "state": states[i]} for i in range(stride - 1, count * stride, stride)]


# --- text ------------------------------------------------------------------------------------
def _sentences(which: str, count: int, seed: int) -> List[str]:
    """English sentences: first paragraphs of the docstrings in the scikit-image wheel's modules
    (calibration from the first half of the modules, held-out from the second)."""
    import ast

    texts = []
    with zipfile.ZipFile(download(SKIMAGE)) as zf:
        modules = sorted(n for n in zf.namelist() if n.endswith(".py") and "/tests/" not in n)
        half = len(modules) // 2
        for member in (modules[:half] if which == "calib" else modules[half:]):
            try:
                tree = ast.parse(zf.read(member))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                    doc = ast.get_docstring(node)
                    if doc:
                        para = " ".join(doc.split("\n\n")[0].split())
                        if 40 <= len(para) <= 400:
                            texts.append(para)
    rng = np.random.default_rng(seed)
    picked = [texts[i] for i in rng.choice(len(texts), size=2 * count, replace=False)]
    # pairs of paragraphs make some samples long enough to fill (and be cut at) the 64 tokens
    return [picked[2 * i] + (" " + picked[2 * i + 1] if i % 3 == 0 else "") for i in range(count)]


class WordPiece:
    """BERT's uncased tokenizer (BertNormalizer + BertPreTokenizer + WordPiece, as in the wheel's
    tokenizer.json): lowercase, strip accents, split on whitespace and punctuation, greedy longest-match
    subwords with the ``##`` prefix, [UNK] for words it cannot cover."""

    def __init__(self, tokenizer_json: dict):
        model = tokenizer_json["model"]
        self.vocab: Dict[str, int] = model["vocab"]
        self.prefix = model.get("continuing_subword_prefix", "##")
        self.unk = model.get("unk_token", "[UNK]")
        self.max_chars = model.get("max_input_chars_per_word", 100)

    @staticmethod
    def _words(text: str) -> List[str]:
        import unicodedata

        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words, cur = [], ""
        for c in text:
            punct = unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum() and not c.isspace())
            if c.isspace() or punct:
                if cur:
                    words.append(cur)
                cur = ""
                if punct:
                    words.append(c)
            elif unicodedata.category(c)[0] != "C":
                cur += c
        return words + ([cur] if cur else [])

    def ids(self, text: str) -> List[int]:
        out = []
        for word in self._words(text):
            if len(word) > self.max_chars:
                out.append(self.vocab[self.unk])
                continue
            pieces, start = [], 0
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = (self.prefix if start else "") + word[start:end]
                    if piece in self.vocab:
                        break
                    end -= 1
                if end == start:
                    pieces = [self.vocab[self.unk]]
                    break
                pieces.append(self.vocab[piece])
                start = end
            out += pieces
        return out


def text_samples(tokenizer_json: dict, length: int, which: str, count: int, seed: int) -> List[Dict[str, np.ndarray]]:
    """BERT inputs (ids, attention mask, token types) of ``length`` tokens for ``count`` sentences."""
    tok = WordPiece(tokenizer_json)
    cls, sep = tok.vocab["[CLS]"], tok.vocab["[SEP]"]
    samples = []
    for text in _sentences(which, count, seed):
        ids = [cls] + tok.ids(text)[: length - 2] + [sep]
        pad = length - len(ids)
        samples.append({"input_ids": np.array([ids + [0] * pad], np.int32),
                        "attention_mask": np.array([[1] * len(ids) + [0] * pad], np.int32),
                        "token_type_ids": np.zeros((1, length), np.int32)})
    return samples
