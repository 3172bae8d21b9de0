"""``uniscale serve``: an OpenAI-compatible routing proxy (the ``[serve]`` extra).

Not imported by ``import uniscale``. `uniscale.serve.config` (the TOML configuration) needs
nothing beyond the runtime; `uniscale.serve.app` needs Starlette and prometheus_client, and
`uniscale.serve.main` uvicorn. See docs/serve.md.
"""

from __future__ import annotations

MISSING_EXTRA = (
    "uniscale serve needs the [serve] extra (Starlette, uvicorn, prometheus_client): "
    "pip install 'uniscale[serve]'"
)


def missing_dependencies() -> list[str]:
    """The [serve] extra's modules that are not installed."""
    import importlib.util

    return [
        m
        for m in ("starlette", "uvicorn", "prometheus_client")
        if importlib.util.find_spec(m) is None
    ]
