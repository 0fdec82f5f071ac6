"""The admin listener (``[http] listen``): metrics, health, the JSON API and the web page.

Served by aiohttp on the event loop of the process that delivers (app.py), so the
API acts on the same queue store and ``/metrics`` reads the same instruments as
the rest of that process.  ``/metrics``, ``/healthz`` and ``/readyz`` are open
(a scraper and a load balancer have no secret); every ``/api/`` request needs
``Authorization: Bearer <token>`` when ``[http] token_file`` is set.  The page's
own files are static and hold no data, so a browser may load them without the
token; the page then asks for it once and sends it with each API call.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailwright.config import Config
from mailwright.errors import StorageError
from mailwright.http.api import QueueApi, json_error
from mailwright.http.observed import QueueCollector, ReplyHistory
from mailwright.logfmt import kv
from mailwright.metrics import Metrics, exposition_registry
from mailwright.queue.base import QueueStore
from mailwright.syntax import split_host_port

log = logging.getLogger("mailwright.http")

STATIC_DIR = Path(__file__).parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: Largest request body read (the API takes none worth more).
MAX_REQUEST_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def read_token(path: Path) -> str:
    """The token: the first line of the file, surrounding blanks removed.

    OSError when it cannot be read or is empty (``serve`` says "cannot start").
    """
    try:
        lines = path.read_text("utf-8").strip().splitlines()
    except UnicodeDecodeError as exc:
        raise OSError(f"{path} is not UTF-8 text") from exc
    if not lines or not lines[0].strip():
        raise OSError(f"{path} holds no token")
    return lines[0].strip()


class AdminServer:
    """One aiohttp site on ``[http] listen``; ``start`` binds it, ``stop`` closes it."""

    def __init__(
        self,
        config: Config,
        store: QueueStore,
        metrics: Metrics,
        *,
        shared_metrics: Path | None = None,
        listening: Callable[[], bool] = lambda: True,
    ) -> None:
        assert config.http.listen is not None
        self._endpoint = split_host_port(config.http.listen, allow_port_zero=True)
        self._token = (
            read_token(config.http.token_file) if config.http.token_file is not None else None
        )
        self._store = store
        self._listening = listening
        self._registry = exposition_registry(metrics, shared_metrics)
        self._queue_metrics = QueueCollector(store)
        self._registry.register(self._queue_metrics)
        self.replies = ReplyHistory(self._registry)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        app = web.Application(middlewares=[self._authorize], client_max_size=MAX_REQUEST_BODY)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._page)
        app.router.add_static("/static/", STATIC_DIR)
        QueueApi(store, self.replies).add_routes(app.router)
        self._app = app

    @property
    def address(self) -> tuple[str, int]:
        assert self._runner is not None
        host, port = self._runner.addresses[0][:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = self._endpoint
        self._site = web.TCPSite(self._runner, host, port)
        await self._site.start()
        self.replies.start()
        host, port = self.address
        log.info(kv(event="listening", address=f"{host}:{port}", kind="http"))

    async def stop(self) -> None:
        await self.replies.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------ the token

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and self._token is not None:
            given = request.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), self._token.encode()
            ):
                return json_error(401, "a valid 'Authorization: Bearer <token>' is required")
        if not request.path.startswith("/api/"):
            return await handler(request)
        try:
            return await handler(request)
        except web.HTTPException as exc:  # no such route, wrong method: JSON like the rest
            if exc.status < 400:
                raise
            return json_error(exc.status, exc.reason)
        except StorageError as exc:
            log.error(kv(event="http-store-error", path=request.path, error=exc))
            return json_error(503, "the queue cannot be read or changed now; see the log")

    # ------------------------------------------------------------ open routes

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = []
        if not self._listening():
            problems.append("SMTP listeners are not bound")
        try:
            await self._store.check_writable()
        except StorageError as exc:
            problems.append(f"queue not writable: {exc}")
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._queue_metrics.refresh()
        body = generate_latest(self._registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _page(self, request: web.Request) -> web.FileResponse:
        # Its own files only: text from the network that slipped into the DOM could not
        # load or run anything (app.js sets it as text anyway).
        return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)
