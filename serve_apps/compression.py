"""Compression of the API's own responses (ASGI middleware).

A response is compressed when the client's ``Accept-Encoding`` allows ``zstd`` or ``gzip``
(preferred in that order, ``q`` values respected), its body is at least
``settings.network.api_compression_min_bytes`` (1 KiB by default), it is not already encoded, its
type is not already compressed (images, archives, ...) and its ``Cache-Control`` does not say
``no-transform``. Every response that could have been compressed carries ``Vary: Accept-Encoding``.
Bodies are buffered up to :data:`MAX_BUFFER` bytes; a longer stream passes through unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from cognopt_ray.network import encoding
from serve_apps.http import get_context

MAX_BUFFER = 8 * 1024 * 1024
_SKIP_TYPES = (
    b"image/",
    b"video/",
    b"audio/",
    b"application/zip",
    b"application/gzip",
    b"application/zstd",
    b"application/x-7z",
    b"font/woff",
)
OFFERED = ("zstd", "gzip")


class CompressionMiddleware:
    """Compresses responses of 1 KiB and more by ``Accept-Encoding`` (gzip, zstd)."""

    def __init__(self, app: Any, level: str = "fast") -> None:
        self.app = app
        self.level = level

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        accept = None
        for k, v in scope.get("headers", []):
            if k.lower() == b"accept-encoding":
                accept = v.decode("latin-1")
        coding = _coding(accept) if accept else None
        try:
            min_bytes = get_context().settings.network.api_compression_min_bytes
        except RuntimeError:
            min_bytes = 1024
        start: dict | None = None
        chunks: list[bytes] = []
        size = 0
        passthrough = False

        async def wrapped_send(message: dict) -> None:
            nonlocal start, size, passthrough
            if passthrough:
                return await send(message)
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                names = {k.lower(): v for k, v in headers}
                cc = names.get(b"cache-control", b"").lower()
                ctype = names.get(b"content-type", b"").lower()
                status = message["status"]
                if (
                    b"content-encoding" in names
                    or b"no-transform" in cc
                    or status < 200
                    or status in (204, 304)
                    or ctype.startswith(_SKIP_TYPES)
                ):
                    passthrough = True
                    return await send(message)
                start = message
                return
            if message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if more and size <= MAX_BUFFER:
                    return
                if more:  # too long to buffer: send what we have, unchanged, and stream the rest
                    passthrough = True
                    await send(start)
                    return await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
                body = b"".join(chunks)
                headers = [(k, v) for k, v in start.get("headers", [])]
                if size >= min_bytes:
                    headers = _add_vary(headers)
                    if coding:
                        body = encoding.encode(body, coding, self.level)
                        headers = [(k, v) for k, v in headers if k.lower() not in (b"content-length",)]
                        headers = [(k, _weaken(v) if k.lower() == b"etag" else v) for k, v in headers]
                        headers += [
                            (b"content-encoding", coding.encode()),
                            (b"content-length", str(len(body)).encode()),
                        ]
                await send({**start, "headers": headers})
                return await send({"type": "http.response.body", "body": body, "more_body": False})
            return await send(message)

        await self.app(scope, receive, wrapped_send)


@functools.lru_cache(maxsize=512)
def _coding(accept: str) -> str | None:
    """The coding for an ``Accept-Encoding`` value (clients send few distinct ones: cached)."""
    return encoding.choose_encoding(accept, OFFERED)


def _add_vary(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    for i, (k, v) in enumerate(headers):
        if k.lower() == b"vary":
            if b"accept-encoding" in v.lower() or v.strip() == b"*":
                return headers
            headers = list(headers)
            headers[i] = (k, v + b", Accept-Encoding")
            return headers
    return [*headers, (b"vary", b"Accept-Encoding")]


def _weaken(etag: bytes) -> bytes:
    """A compressed representation is not byte-identical: its strong ETag becomes weak."""
    return etag if etag.startswith(b"W/") else b"W/" + etag
