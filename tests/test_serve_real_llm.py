"""``uniscale serve`` in front of a real small LLM (SmolLM2-135M on llama.cpp's llama-server,
one thread, loopback), driven by the official ``openai`` client: a routed answer, a really
streamed answer, and the decision log's token counts against what the server reported.

Prerequisites as in tests/test_real_llm.py (``make llm``); skipped when they are missing or
``UNISCALE_REAL_LLM=0``, failed when missing under ``UNISCALE_REAL_LLM=1``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from llm_servers import servers_available, start_servers  # noqa: E402
from serve_fakes import config, read_log, running_server  # noqa: E402

pytestmark = pytest.mark.real_llm

FLAG = os.environ.get("UNISCALE_REAL_LLM")
QUESTION = (
    "Tom has 3 apples and buys 4 more. How many apples does he have? End with 'The answer is N.'"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def smollm2() -> object:
    if FLAG == "0":
        pytest.skip("UNISCALE_REAL_LLM=0")
    if not servers_available(["smollm2"]):
        msg = "llama-server or smollm2.gguf not found; run `bash scripts/llm/setup.sh smollm2`"
        if FLAG == "1":
            pytest.fail(f"UNISCALE_REAL_LLM=1 but {msg}", pytrace=False)
        pytest.skip(msg)
    with start_servers(["smollm2"], ports=[_free_port()], threads=1, ctx=2048, parallel=2) as s:
        yield s["smollm2"]


def test_openai_client_through_uniscale_serve_to_a_real_llm(
    smollm2: object, tmp_path: Path
) -> None:
    base = f"{smollm2.base_url}/v1"  # type: ignore[attr-defined]
    cfg = config(
        {"smollm2": base},
        tmp=tmp_path,
        policy='strategies = ["single", "self_consistency"]\nn_values = [1, 2]\n'
        'extractor = "answer_number"',
        executor="timeout_s = 120\ndeadline_s = 180\nretries = 0\nmax_tokens = 48",
    )
    with running_server(cfg) as run:
        client = openai.OpenAI(base_url=f"{run.base_url}/v1", api_key="unused", max_retries=0)
        msgs = [{"role": "user", "content": QUESTION}]
        raw = client.chat.completions.with_raw_response.create(model="uniscale", messages=msgs)
        resp = raw.parse()
        chunks = list(
            client.chat.completions.create(
                model="smollm2",
                messages=msgs,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert resp.choices[0].message.content
    assert resp.usage is not None and resp.usage.completion_tokens > 0
    samples = int(raw.headers["x-uniscale-samples"])
    assert samples in (1, 2)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3  # token by token from llama-server, not one final chunk
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    recs = [r for r in read_log(tmp_path / "decisions.jsonl") if r["type"] == "decision"]
    assert len(recs) == 2
    assert recs[0]["outcome"]["output_tokens"] == resp.usage.completion_tokens
    assert recs[1]["outcome"]["output_tokens"] == usage.completion_tokens
    assert recs[1]["decision"]["strategy"] == "single"
