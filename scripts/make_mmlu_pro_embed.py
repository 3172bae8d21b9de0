"""Static-embedding features of the packaged MMLU-Pro table's questions (no text is shipped).

Usage::

    python scripts/make_mmlu_pro_embed.py SNAPSHOT

``SNAPSHOT`` is the git directory of https://github.com/TIGER-AI-Lab/MMLU-Pro that
``scripts/make_mmlu_pro_table.py`` reads. For every question of ``mmlu_pro_v1.json.gz`` (in
its order) this embeds what a user would send, the question and its lettered options (not
the benchmark's instruction line, which names the category), with
`uniscale.embed.StaticEmbeddingFeaturizer`, and writes the (T, 16) float16 matrix to
``python/uniscale/data/mmlu_pro_v1.embed16.npz``. `uniscale.lab.datasets` reads it for
``uniscale replay --table mmlu-pro --features embed``: the learner then tells questions apart
by their text, as in production, instead of by their category label.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from uniscale.embed import StaticEmbeddingFeaturizer
from uniscale.lab.datasets import MMLU_PRO_TABLE, load_routing_table

HERE = Path(__file__).resolve().parent


def _table_script() -> object:
    spec = importlib.util.spec_from_file_location(
        "make_mmlu_pro_table", HERE / "make_mmlu_pro_table.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_mmlu_pro_table"] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("snapshot", type=Path)
    ap.add_argument(
        "--out", type=Path, default=Path(MMLU_PRO_TABLE).with_name("mmlu_pro_v1.embed16.npz")
    )
    args = ap.parse_args()
    mk = _table_script()
    rt = load_routing_table()
    stem = mk.MODELS[rt.models[0]][0]  # type: ignore[attr-defined]
    recs = {str(e["question_id"]): e for e in mk._entries(args.snapshot, stem)}  # type: ignore[attr-defined]
    letters = mk.LETTERS  # type: ignore[attr-defined]
    texts = []
    for qid in rt.ids:
        e = recs[qid]
        opts = mk._options(e["options"])  # type: ignore[attr-defined]
        texts.append(
            f"{e['question']}\n" + "".join(f"{letters[i]}. {o}\n" for i, o in enumerate(opts))
        )
    feat = StaticEmbeddingFeaturizer()
    x = feat.featurize_many(texts).astype(np.float16)
    sys.path.insert(0, str(HERE))
    from make_static_embedding import write_npz

    size = write_npz(args.out, {"x": x})
    print(f"{args.out}: {x.shape}, {size / 1e3:.0f} kB, version {feat.version}")


if __name__ == "__main__":
    main()
