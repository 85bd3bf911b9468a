"""A real aiohttp origin on loopback (127.0.0.1 unless told), run in a thread of the test process, for the network tests.

Tests register handlers per path (``origin.route("/x")``) and read how often each path was hit
and the headers of the last request. Handlers may be coroutines (to sleep) and return an
``aiohttp.web.Response``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.support.helpers import free_port


class Origin:
    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self.routes: dict[str, Callable[[web.Request], Any]] = {}
        self.hits: defaultdict[str, int] = defaultdict(int)
        self.last_headers: dict[str, dict[str, str]] = {}
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        self.last_headers[path] = dict(request.headers)
        handler = self.routes.get(path)
        if handler is None:
            return web.Response(status=404, text="no such route")
        result = handler(request)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    def start(self) -> Origin:
        async def go() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.host, self.port).start()

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
            self._runner = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def route(self, path: str | None = None) -> Callable:
        """Register a handler; ``path`` defaults to a fresh unique path (read it from ``.path``)."""
        p = path or f"/t/{uuid.uuid4().hex}"

        def deco(fn: Callable) -> Callable:
            self.routes[p] = fn
            fn.path = p  # type: ignore[attr-defined]
            fn.url = self.url(p)  # type: ignore[attr-defined]
            return fn

        return deco

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


def run_client(coro_fn: Callable[[Any], Any], top: dict[str, Any] | None = None, **network: Any) -> Any:
    """Run ``coro_fn(client)`` with a fresh in-process ``OptimizedClient`` (127.0.0.1 allowlisted)
    on a fresh event loop; ``network`` are ``network.*`` settings, ``top`` top-level ones."""
    from cognopt_ray.config import Settings
    from cognopt_ray.network.http_client import OptimizedClient

    settings = Settings.load(network={"allowlist": ["127.0.0.1"], **network}, **(top or {}))

    async def go() -> Any:
        client = OptimizedClient(settings)
        try:
            return await coro_fn(client)
        finally:
            await client.close()

    return asyncio.run(go())
