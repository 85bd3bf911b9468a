"""The same-node socket path (cognopt_ray.network.local_socket) against a real origin on 127.0.0.1.

The engine's core (:class:`OptimizedClient`) runs in this process behind a real
:class:`LocalServer` (a Unix socket); the client side is the real :class:`LocalChannel`, sync (on a
thread, as a notebook calls it) and async. The Ray actor wiring is tested in test_network_engine.
"""

import asyncio
import os
import pickle
import socket
import stat
import struct

from aiohttp import web

from cognopt_ray.network import local_socket
from cognopt_ray.network.local_socket import LocalChannel, LocalServer, decode_request, encode_reply
from cognopt_ray.network.messages import NetworkRequest
from tests.support.origin import run_client


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def cacheable(origin, cc="max-age=600", body=b"hello"):
    @origin.route()
    def h(req):
        return web.Response(body=body, headers={"Cache-Control": cc})

    return h


async def with_server(client, fn):
    server = await LocalServer.start(lambda req: client.send(req, cache_only=True))

    async def resolve():
        return {"node_id": "n1", "path": server.path}

    channel = LocalChannel(lambda: {"node_id": "n1", "path": server.path}, resolve, lambda: "n1")
    try:
        return await fn(server, channel)
    finally:
        server.close()


def test_a_hit_over_the_socket_equals_the_engine_answer_and_is_counted_once(origin):
    h = cacheable(origin)

    async def go(client):
        async def body(server, channel):
            cold = await asyncio.to_thread(channel.call, NetworkRequest(h.url))
            assert cold is None and channel.misses == 1
            assert client.metrics.requests == 0  # a lookup that is not a hit counts nothing
            first = await client.send(NetworkRequest(h.url))
            hit = await asyncio.to_thread(channel.call, NetworkRequest(h.url, request_id="r1"))
            ahit = await channel.acall(NetworkRequest(h.url))
            direct = await client.send(NetworkRequest(h.url))
            return first, hit, ahit, direct, client.metrics.snapshot(), channel

        return await with_server(client, body)

    first, hit, ahit, direct, m, channel = run_client(go)
    assert first.cache_status == "MISS" and hit.cache_status == ahit.cache_status == direct.cache_status == "HIT"
    assert hit.body == direct.body == b"hello" and hit.status == 200 and hit.request_id == "r1"
    assert hit.header("Cache-Control") == "max-age=600" and hit.fresh_for_s > 0
    assert channel.hits == 2 and origin.hits[h.path] == 1
    assert m["requests"] == 4 and m["hits"] == 3 and m["misses"] == 1


def test_only_fresh_hot_hits_of_the_same_service_are_answered(origin):
    fresh, stale = cacheable(origin), cacheable(origin, cc="max-age=0, stale-while-revalidate=60")

    async def go(client):
        async def body(server, channel):
            await client.send(NetworkRequest(fresh.url, service="svc_a"))
            await client.send(NetworkRequest(stale.url))
            call = channel.acall
            return [
                await call(NetworkRequest(fresh.url, service="svc_b")),  # another partition
                await call(NetworkRequest(fresh.url)),  # no service: another partition too
                await call(NetworkRequest(fresh.url, service="svc_a", cache_strategy="no_cache")),
                await call(NetworkRequest(fresh.url, service="svc_a", headers=[("Cache-Control", "no-cache")])),
                await call(NetworkRequest(stale.url)),  # stale: the actor call revalidates it
                await call(NetworkRequest(fresh.url, method="POST", service="svc_a")),
                await call(NetworkRequest(fresh.url, body=b"x", service="svc_a")),
                await call(NetworkRequest("http://10.0.0.1/x", service="svc_a")),  # refused by the guard
                await call(NetworkRequest(fresh.url, service="svc_a")),
            ], client.metrics.snapshot()

        return await with_server(client, body)

    out, m = run_client(go)
    assert out[:-1] == [None] * 8 and out[-1].cache_status == "HIT"
    assert m["requests"] == 3 and m["refused"] == 0 and origin.hits[fresh.path] == 1


def test_a_head_is_answered_from_a_stored_get(origin):
    h = cacheable(origin)

    async def go(client):
        async def body(server, channel):
            await client.send(NetworkRequest(h.url))
            return await channel.acall(NetworkRequest(h.url, method="HEAD"))

        return await with_server(client, body)

    r = run_client(go)
    assert r.cache_status == "HIT" and r.body == b"" and origin.hits[h.path] == 1


def test_the_socket_is_private_and_a_bad_frame_changes_nothing(origin):
    h = cacheable(origin)

    async def go(client):
        async def body(server, channel):
            folder, sock = os.stat(server.folder), os.stat(server.path)
            await client.send(NetworkRequest(h.url))
            before = {k: v for k, v in client.metrics.snapshot().items() if k != "uptime_s"}

            def raw(frame: bytes) -> bytes:
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(5)
                s.connect(server.path)
                s.sendall(frame)
                try:
                    return s.recv(100)
                finally:
                    s.close()

            answers = [
                await asyncio.to_thread(raw, frame(b"not json!")),
                await asyncio.to_thread(raw, frame(b"[]")),
                await asyncio.to_thread(raw, frame(b'{"url": "x", "headers": [["a", 1]]}')),
                await asyncio.to_thread(raw, struct.pack(">I", local_socket.MAX_REQUEST_FRAME + 1)),
                await asyncio.to_thread(raw, frame(pickle.dumps(NetworkRequest(h.url)))),
            ]
            after = {k: v for k, v in client.metrics.snapshot().items() if k != "uptime_s"}
            hit = await asyncio.to_thread(channel.call, NetworkRequest(h.url))
            return folder, sock, answers, before, after, hit

        return await with_server(client, body)

    folder, sock, answers, before, after, hit = run_client(go)
    assert stat.S_IMODE(folder.st_mode) == 0o700 and stat.S_IMODE(sock.st_mode) == 0o600
    assert answers == [b""] * 5  # each connection closed without an answer
    assert before == after and hit.cache_status == "HIT"


def test_decode_request_checks_types():
    for bad in (
        b'{"url": 1}',
        b'{"url": "u", "headers": "x"}',
        b'{"url": "u", "timeout_s": "1"}',
        b'{"url": "u", "method": 3}',
    ):
        try:
            decode_request(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    assert decode_request(b'{"url": "http://h/", "headers": [["A", "b"]]}').headers == [("A", "b")]
    assert encode_reply(None).endswith(b'{"miss":true}')


def test_a_gone_socket_falls_back_then_resolves_again(origin, monkeypatch):
    h = cacheable(origin)
    monkeypatch.setattr(local_socket, "RETRY_S", 0.2)

    async def go(client):
        await client.send(NetworkRequest(h.url))
        server = await LocalServer.start(lambda req: client.send(req, cache_only=True))
        where = {"path": "/nonexistent/hits.sock"}
        resolved = []

        def resolve():
            resolved.append(where["path"])
            return {"node_id": "n1", "path": where["path"]}

        channel = LocalChannel(resolve, None, lambda: "n1")
        try:
            first = await asyncio.to_thread(channel.call, NetworkRequest(h.url))  # not a socket: not used
            where["path"] = server.path
            soon = await asyncio.to_thread(channel.call, NetworkRequest(h.url))  # inside RETRY_S: not asked again
            await asyncio.sleep(0.3)
            later = await asyncio.to_thread(channel.call, NetworkRequest(h.url))
            other_node = LocalChannel(lambda: {"node_id": "n2", "path": server.path}, None, lambda: "n1")
            elsewhere = await asyncio.to_thread(other_node.call, NetworkRequest(h.url))
            return first, soon, later, resolved, elsewhere
        finally:
            server.close()

    first, soon, later, resolved, elsewhere = run_client(go)
    assert first is None and soon is None and later.cache_status == "HIT"
    assert len(resolved) == 2 and elsewhere is None


def test_a_dead_actors_socket_folder_is_swept_at_the_next_start(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{local_socket.FOLDER_PREFIX}dead"
    dead.mkdir(mode=0o700)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead / "hits.sock"))  # bound, never listening: what a killed actor leaves
    s.close()
    starting = tmp_path / f"{local_socket.FOLDER_PREFIX}starting"  # no socket yet: left alone
    starting.mkdir(mode=0o700)

    async def go():
        live = await LocalServer.start(lambda req: None)
        again = await LocalServer.start(lambda req: None)  # sweeps again: the live one stays
        try:
            return live, os.path.exists(live.path), os.path.exists(again.path)
        finally:
            live.close()
            again.close()

    live, live_kept, again_ok = asyncio.run(go())
    assert not dead.exists() and starting.exists() and live_kept and again_ok
    assert os.path.dirname(live.path).startswith(str(tmp_path))
