"""HTTP plumbing of ``uniscale serve`` that every route shares: the OpenAI-style error
response, bearer-token auth, a size-bounded JSON body and the request counter."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from uniscale._core import ConfigError
from uniscale.router import DecisionLog, Router
from uniscale.serve.config import ServeConfig
from uniscale.serve.hooks import ServedPolicy
from uniscale.serve.metrics import Metrics

if TYPE_CHECKING:
    from uniscale.serve.workers import WorkerInfo
    from uniscale.sync import RedisSync


class HTTPError(Exception):
    """An OpenAI-style error response."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _env_token(name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name!r} ({what}) is not set or empty")
    return value


class ServerBase:
    """What the route mixins share: the attributes `uniscale.serve.app.Server` sets in its
    ``__init__`` and the per-request plumbing (bearer auth, a bounded JSON body, counting)."""

    cfg: ServeConfig
    metrics: Metrics
    client_token: str | None
    admin_token: str | None
    policy: ServedPolicy
    policy_source: str
    router: Router
    log: DecisionLog | None
    sync: RedisSync | None
    worker: WorkerInfo | None
    ready: bool
    _sem: asyncio.Semaphore
    _tasks: set[asyncio.Task[Any]]
    _issued: OrderedDict[int, float]
    _snapshot_lock: asyncio.Lock
    _action_names: list[str]
    _model_names: set[str]

    def _auth(self, request: Request, admin: bool) -> None:
        token = (self.admin_token or self.client_token) if admin else self.client_token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            what = "an admin" if admin and self.admin_token else "a valid"
            raise HTTPError(
                401,
                f"this route needs {what} bearer token (Authorization: Bearer ...)",
                "authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _refusal(self, request: Request, admin: bool) -> Response | None:
        """`_auth` for a route with nothing else to refuse: the error response, or ``None``
        when the request may go on."""
        try:
            self._auth(request, admin)
        except HTTPError as exc:
            return exc.response()
        return None

    async def _json_body(self, request: Request) -> dict[str, Any]:
        limit = self.cfg.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body over the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request body over the limit of {limit} bytes")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise HTTPError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        return body

    def _count(self, route: str, status: int) -> None:
        self.metrics.requests.labels(route, str(status)).inc()
