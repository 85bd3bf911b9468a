"""The origin fetch of :class:`~cognopt_ray.network.http_client.OptimizedClient`: one request on its
pooled aiohttp session, the body read within ``max_response_bytes`` and decoded, errors turned into
the engine's (502, 504, the SSRF guard's 403)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from cognopt_ray.config import NetworkServiceSettings
from cognopt_ray.errors import CognoptError
from cognopt_ray.network import encoding
from cognopt_ray.network.errors import BadGateway, InvalidRequest, OriginTimeout
from cognopt_ray.network.guard import GuardRefusal
from cognopt_ray.network.messages import TRANSFER_HEADERS, OriginReply, request_timeout, too_large
from cognopt_ray.network.rules import header, hop_by_hop, without

#: Content codings decoded on arrival (the cache keeps bodies decoded); any other passes through.
DECODABLE = frozenset({"identity", "gzip", "x-gzip", "deflate", "zlib", "zstd", "br"})

if TYPE_CHECKING:
    from cognopt_ray.network.http_client import OptimizedClient


async def fetch(
    self: OptimizedClient,
    url: URL,
    method: str,
    hdrs: list,
    data: bytes | None,
    level: str,
    svc: NetworkServiceSettings,
) -> OriginReply:
    """One request to the origin on ``self``'s pool: the body read within ``max_response_bytes``
    and decoded; hop-by-hop headers (and the names ``Connection`` lists) dropped."""
    accept = encoding.accept_encoding(level)
    send = list(hdrs) + [("Accept-Encoding", accept)]
    if data is not None:
        self.metrics.request_bytes_raw += len(data)
        if (
            svc.compress_request_bodies
            and level != "none"
            and len(data) >= 1024
            and header(hdrs, "content-encoding") is None
        ):
            packed = encoding.encode(data, "gzip", level)
            if len(packed) < len(data):
                data = packed
                send.append(("Content-Encoding", "gzip"))
        self.metrics.request_bytes_sent += len(data)
    total = request_timeout.get() or self.net.total_timeout_s
    timeout = aiohttp.ClientTimeout(total=total, connect=min(self.net.connect_timeout_s, total))
    limit = self.net.max_response_bytes
    slot = self._acquire()
    request_time = time.time()
    try:
        async with slot.session.request(
            method, url, headers=send, data=data, allow_redirects=False, timeout=timeout
        ) as r:
            declared = r.content_length
            if declared is not None and declared > limit:
                raise too_large(url, limit)
            chunks, size = [], 0
            async for chunk in r.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise too_large(url, limit)
                chunks.append(chunk)
            wire = b"".join(chunks)
            response_time = time.time()
            coding = r.headers.get("Content-Encoding")
            raw_headers = [(k, v) for k, v in r.headers.items()]
            transfer = TRANSFER_HEADERS
            if coding and not all(c.strip().lower() in DECODABLE for c in coding.split(",")):
                # a coding this engine does not know passes through as it came (header and bytes)
                coding, transfer = None, tuple(h for h in TRANSFER_HEADERS if h != "content-encoding")
            try:
                body = encoding.decode(wire, coding, max_size=limit)
            except encoding.OutputTooLarge:
                raise BadGateway(
                    f"the {coding} body of {str(url)[:200]!r} decodes to more than {limit} bytes "
                    f"({len(wire)} bytes on the wire); decoding stopped there",
                    hint="raise settings.network.max_response_bytes if this origin's answers are really that large",
                    rule="max-response-bytes",
                ) from None
            except ValueError as e:
                raise BadGateway(
                    f"the origin's body could not be decoded: {e}", hint="check the origin's Content-Encoding"
                ) from None
            headers = without(raw_headers, *transfer, *hop_by_hop(raw_headers))
            self.metrics.origin(len(wire), len(body))
            return OriginReply(r.status, headers, body, request_time, response_time, len(wire), accept)
    except CognoptError:
        self.metrics.origin_errors += 1
        raise
    except aiohttp.ClientConnectorError as e:
        self.metrics.origin_errors += 1
        if isinstance(e.os_error, GuardRefusal):
            raise e.os_error.refused from None
        raise BadGateway(
            f"cannot connect to {url.host}:{url.port}: {e.os_error or e}",
            hint="check that the origin is up and reachable",
        ) from None
    except asyncio.TimeoutError:
        self.metrics.origin_errors += 1
        raise OriginTimeout(
            f"the origin {url.host}:{url.port} did not answer within the timeout "
            f"(connect {min(self.net.connect_timeout_s, total):g} s, total {total:g} s)",
            hint="retry later or raise settings.network.total_timeout_s",
        ) from None
    except aiohttp.InvalidURL as e:
        raise InvalidRequest(f"URL {str(url)[:200]!r} is not valid: {e}") from None
    except aiohttp.ClientError as e:
        self.metrics.origin_errors += 1
        raise BadGateway(
            f"the origin {url.host}:{url.port} failed: {type(e).__name__}: {e}", hint="check the origin"
        ) from None
    finally:
        await self._release(slot)


__all__ = ["fetch"]
