"""The same-node fast path to the network actor: cache hits over a Unix socket.

A Ray actor call costs about a millisecond on a small machine (two gRPC hops, the async actor's
event-loop hand-over), which is most of the time of a cache hit: the engine answers one in
~0.1 ms. A client on the actor's node (a notebook, a task, a Serve replica) can ask the actor
itself, over a Unix socket it listens on, whether the answer is a *fresh hit in its decoded hot
cache*. The actor answers with the response or "not here"; everything else (misses, revalidations,
stale answers, unsafe methods, bodies, redirects to follow, errors) goes through the usual actor
call, which does everything it did before. Nothing is ever answered differently on the two paths:
the socket path runs the same :meth:`OptimizedClient.send` with ``cache_only=True`` (guard,
service partition, strategy clamp, freshness rules, metrics), it just never reads the backend or
the origin.

Trust: the socket lives in a folder made by :func:`tempfile.mkdtemp` (mode 0700), so only the
user the actor runs as can connect; that user can already call every actor of the cluster. The
frames carry JSON and raw body bytes, never pickles: a request is checked as any other
(:meth:`OptimizedClient.send`), and a frame that does not decode closes the connection.

Frames: ``>I`` length + payload. A request's payload is a JSON object (the fields of
:class:`NetworkRequest` without a body); a reply's is ``>I`` JSON length + JSON (the fields of
:class:`NetworkResponse` without the body, or ``{"miss": true}``) + the body bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from cognopt_ray.network.messages import NetworkRequest, NetworkResponse

logger = logging.getLogger(__name__)

MAX_REQUEST_FRAME = 1 << 20  # URL and headers; a longer request frame closes the connection
MAX_REPLY_FRAME = 1 << 30
CALL_TIMEOUT_S = 5.0  # a lookup in memory; past this the client falls back to the actor call
RETRY_S = 30.0  # after a failure, how long a client uses the actor call only
FOLDER_PREFIX = "cognopt-net-"
_LEN = struct.Struct(">I")
_MISS = b'{"miss":true}'
_MISS_FRAME = _LEN.pack(_LEN.size + len(_MISS)) + _LEN.pack(len(_MISS)) + _MISS
_REQUEST_FIELDS = ("url", "method", "headers", "service", "cache_strategy", "compression_level", "request_id")


def eligible(req: NetworkRequest) -> bool:
    """Requests the socket path may answer: a ``GET``/``HEAD`` without a body, not in proxy mode."""
    return req.body is None and not req.proxy and (req.method or "GET").upper() in ("GET", "HEAD")


def encode_request(req: NetworkRequest) -> bytes:
    d: dict[str, Any] = {k: getattr(req, k) for k in _REQUEST_FIELDS}
    d["follow_redirects"] = req.follow_redirects
    d["timeout_s"] = req.timeout_s
    payload = json.dumps(d, separators=(",", ":")).encode()
    return _LEN.pack(len(payload)) + payload


def decode_request(payload: bytes) -> NetworkRequest:
    """The request in ``payload``; :class:`ValueError` when it is not one (types are checked here,
    values by :meth:`OptimizedClient.send` as for any request)."""
    d = json.loads(payload)
    if not isinstance(d, dict) or not isinstance(d.get("url"), str):
        raise ValueError("a request is a JSON object with a url")
    headers = d.get("headers") or []
    if not isinstance(headers, list) or not all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in headers
    ):
        raise ValueError("headers are [name, value] pairs of strings")
    for k in ("method", "service", "cache_strategy", "compression_level", "request_id"):
        if d.get(k) is not None and not isinstance(d[k], str):
            raise ValueError(f"{k} is a string")
    timeout = d.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
        raise ValueError("timeout_s is a number")
    return NetworkRequest(
        url=d["url"],
        method=d.get("method") or "GET",
        headers=[(k, v) for k, v in headers],
        service=d.get("service"),
        cache_strategy=d.get("cache_strategy"),
        compression_level=d.get("compression_level"),
        follow_redirects=bool(d.get("follow_redirects", True)),
        request_id=d.get("request_id"),
        timeout_s=timeout,
    )


def encode_reply(resp: NetworkResponse | None) -> bytes:
    if resp is None:
        return _MISS_FRAME
    head = json.dumps(resp.model_dump(exclude={"body"}), separators=(",", ":")).encode()
    return b"".join((_LEN.pack(_LEN.size + len(head) + len(resp.body)), _LEN.pack(len(head)), head, resp.body))


def decode_reply(payload: bytes | bytearray | memoryview) -> NetworkResponse | None:
    view = memoryview(payload)
    (n,) = _LEN.unpack_from(view)
    head = json.loads(view[_LEN.size : _LEN.size + n].tobytes())
    if head.get("miss"):
        return None
    head["headers"] = [tuple(h) for h in head["headers"]]
    return NetworkResponse(**head, body=view[_LEN.size + n :].tobytes())


class LocalServer:
    """The actor's side: a Unix socket that answers each request frame with ``handler(request)``."""

    def __init__(self, server: asyncio.AbstractServer, folder: str) -> None:
        self._server = server
        self.folder = folder
        self.path = os.path.join(folder, "hits.sock")

    @classmethod
    async def start(cls, handler: Callable[[NetworkRequest], Awaitable[NetworkResponse | None]]) -> LocalServer:
        sweep_dead()
        folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)  # mode 0700: only this user connects

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
                    if n > MAX_REQUEST_FRAME:
                        logger.warning("local socket: a %d-byte request frame; connection closed", n)
                        return
                    try:
                        req = decode_request(await reader.readexactly(n))
                    except (ValueError, TypeError) as e:
                        logger.warning("local socket: a frame that is not a request (%s); connection closed", e)
                        return
                    try:
                        resp = await handler(req)
                    except Exception as e:  # noqa: BLE001 - the actor call answers it, with its error
                        logger.debug("local socket: %s: %s; the client asks the actor", type(e).__name__, e)
                        resp = None
                    writer.write(encode_reply(resp))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        path = os.path.join(folder, "hits.sock")
        server = await asyncio.start_unix_server(serve, path=path, limit=MAX_REQUEST_FRAME + 64)
        os.chmod(path, 0o600)
        return cls(server, folder)

    def close(self) -> None:
        self._server.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def sweep_dead(tmp: str | None = None) -> int:
    """Remove this user's socket folders whose socket no process listens on any more (an actor
    killed without cleanup leaves its folder); returns how many. A folder without a socket yet,
    or whose socket accepts a connection, is left alone."""
    tmp = tmp or tempfile.gettempdir()
    removed = 0
    try:
        names = [n for n in os.listdir(tmp) if n.startswith(FOLDER_PREFIX)]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(tmp, name, "hits.sock")
        if not _private_socket(path):
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except ConnectionRefusedError:  # a socket file nobody listens on: its actor is gone
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            removed += 1
        except OSError:
            pass
        finally:
            probe.close()
    return removed


def _private_socket(path: str) -> bool:
    """``path`` is a socket of this user in a folder only this user may enter."""
    try:
        folder, sock = os.stat(os.path.dirname(path)), os.stat(path)
    except OSError:
        return False
    uid = os.getuid()
    return (
        folder.st_uid == uid
        and sock.st_uid == uid
        and stat.S_ISSOCK(sock.st_mode)
        and not folder.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    )


class LocalChannel:
    """The client's side: asks the actor over its socket when both are on one node.

    ``resolve`` / ``aresolve`` ask the actor (one actor call) for ``{"node_id", "path"}`` or None;
    the channel is used only when the node is this process's. Any failure (the actor restarted
    elsewhere, the socket is gone) makes :meth:`call` answer None for :data:`RETRY_S`, so the
    client uses the actor call, then the channel resolves again.

    Counters: ``hits`` answered here, ``misses`` sent on to the actor call, ``failures``.
    """

    def __init__(
        self,
        resolve: Callable[[], dict[str, Any] | None],
        aresolve: Callable[[], Awaitable[dict[str, Any] | None]],
        node_id: Callable[[], str],
    ) -> None:
        self._resolve, self._aresolve, self._node_id = resolve, aresolve, node_id
        self._path: str | None = None
        self._retry_at = 0.0
        self._tls = threading.local()
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list] = weakref.WeakKeyDictionary()
        self.hits = self.misses = self.failures = 0

    # -- where ----------------------------------------------------------------------------------
    def _usable(self, endpoint: dict[str, Any] | None) -> str | None:
        if not endpoint or endpoint.get("node_id") != self._node_id():
            return None
        path = str(endpoint.get("path") or "")
        return path if _private_socket(path) else None

    def _settle(self, endpoint: dict[str, Any] | None) -> str | None:
        self._path = self._usable(endpoint)
        if self._path is None:
            self._retry_at = time.monotonic() + RETRY_S
        return self._path

    def _fail(self, e: BaseException) -> None:
        self.failures += 1
        logger.debug("local socket to the network actor failed (%s: %s); using actor calls", type(e).__name__, e)
        self._path = None
        self._retry_at = time.monotonic() + RETRY_S

    def _known(self) -> tuple[bool, str | None]:
        if self._path is not None:
            return True, self._path
        return time.monotonic() < self._retry_at, None

    def _count(self, resp: NetworkResponse | None) -> NetworkResponse | None:
        if resp is None:
            self.misses += 1
        else:
            self.hits += 1
        return resp

    # -- sync ------------------------------------------------------------------------------------
    def call(self, req: NetworkRequest) -> NetworkResponse | None:
        """The actor's fresh hit for ``req`` over the socket, or None (ask the actor)."""
        if not eligible(req):
            return None
        known, path = self._known()
        if not known:
            try:
                path = self._settle(self._resolve())
            except Exception as e:  # noqa: BLE001 - the actor call reports the engine's state
                self._fail(e)
                return None
        if path is None:
            return None
        sock = getattr(self._tls, "sock", None)
        try:
            if sock is None or getattr(self._tls, "path", None) != path:
                if sock is not None:
                    sock.close()
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._tls.sock, self._tls.path = sock, path
                sock.settimeout(CALL_TIMEOUT_S)
                sock.connect(path)
            sock.sendall(encode_request(req))
            return self._count(decode_reply(_recv_frame(sock)))
        except (OSError, ValueError, KeyError, TypeError) as e:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
            self._tls.sock = None
            self._fail(e)
            return None

    # -- async -----------------------------------------------------------------------------------
    async def acall(self, req: NetworkRequest) -> NetworkResponse | None:
        """Async twin of :meth:`call` (a small pool of connections per event loop)."""
        if not eligible(req):
            return None
        known, path = self._known()
        if not known:
            try:
                path = self._settle(await self._aresolve())
            except Exception as e:  # noqa: BLE001 - the actor call reports the engine's state
                self._fail(e)
                return None
        if path is None:
            return None
        pool = self._pools.setdefault(asyncio.get_running_loop(), [])
        conn = None
        while pool and conn is None:
            conn = pool.pop()
            if conn[2] != path or conn[1].is_closing():
                conn[1].close()
                conn = None
        try:
            if conn is None:
                r, w = await asyncio.wait_for(asyncio.open_unix_connection(path), CALL_TIMEOUT_S)
                conn = (r, w, path)
            conn[1].write(encode_request(req))
            (n,) = _LEN.unpack(await asyncio.wait_for(conn[0].readexactly(_LEN.size), CALL_TIMEOUT_S))
            if n > MAX_REPLY_FRAME:
                raise ValueError(f"a {n}-byte reply frame")
            resp = decode_reply(await asyncio.wait_for(conn[0].readexactly(n), CALL_TIMEOUT_S))
        except (OSError, ValueError, KeyError, TypeError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            if conn is not None:
                conn[1].close()
            self._fail(e)
            return None
        except BaseException:  # cancelled mid-frame: the connection's state is unknown
            if conn is not None:
                conn[1].close()
            raise
        if len(pool) < 16:
            pool.append(conn)
        else:
            conn[1].close()
        return self._count(resp)


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("the network actor closed the local socket")
        got += k
    return buf


def _recv_frame(sock: socket.socket) -> bytearray:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if n > MAX_REPLY_FRAME:
        raise ValueError(f"a {n}-byte reply frame")
    return _recv_exact(sock, n)
