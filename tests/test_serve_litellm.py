"""LiteLLM, as an OpenAI-compatible provider, against ``uniscale serve`` on loopback.

LiteLLM is in the ``[compat]`` extra, not ``[test]``: it brings about 130 packages and 380 MB
(measured: 41 s to install into a fresh venv). ``make install`` (and so CI) installs it, so the
test runs there; elsewhere it skips when LiteLLM is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import
litellm = pytest.importorskip("litellm")

from serve_fakes import Upstream, config, read_log, running_server  # noqa: E402


def test_litellm_completion_and_stream(tmp_path: Path) -> None:
    with Upstream(answers=["The answer is 42"]) as up:
        cfg = config({"small": up.base_url, "large": up.base_url}, tmp=tmp_path)
        with running_server(cfg) as run:
            kw = {"api_base": f"{run.base_url}/v1", "api_key": "unused"}
            msgs = [{"role": "user", "content": "6 x 7?"}]
            resp = litellm.completion(model="openai/uniscale", messages=msgs, **kw)
            chunks = list(
                litellm.completion(model="openai/small", messages=msgs, stream=True, **kw)
            )
    assert resp.choices[0].message.content == "The answer is 42"
    assert resp.usage.completion_tokens == 4 and resp.usage.prompt_tokens == up.prompt_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer is 42"
    assert len([r for r in read_log(tmp_path / "decisions.jsonl") if r["type"] == "decision"]) == 2
