#!/usr/bin/env bash
# Start/stop llama-server processes (one per model) on 127.0.0.1, with pid files and logs in
# ${UNISCALE_CACHE:-$HOME/.cache/uniscale}/run/. Run scripts/llm/setup.sh first.
#
#   scripts/llm/serve.sh start smollm2:8101 qwen05:8102 [-t THREADS] [-c CTX] [--timeout S]
#   scripts/llm/serve.sh status
#   scripts/llm/serve.sh stop [MODEL...]          # default: all started by this script
#
# Models: smollm2 qwen05 qwen15 (default ports 8101 8102 8103) or a path to a .gguf.
# Each server: --host 127.0.0.1 -c CTX (default 12288, split over the slots) -np 8
# --alias NAME --no-webui, -t 2 when it runs alone and -t 1 each when several start together.
# `start` returns once every server answers GET /health with 200; they keep running.
# The implementation is tests/llm_servers.py (stdlib only; also a library with
# start_servers(...) as a context manager for tests).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" -P "$here/../../tests/llm_servers.py" "$@"
