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
    """The [serve] extra's modules that cannot be imported (missing or broken)."""
    import importlib

    missing = []
    for name in ("starlette", "uvicorn", "prometheus_client"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing
