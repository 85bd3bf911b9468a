"""A real S3-protocol server on 127.0.0.1 (moto's server mode) and a TCP relay that can answer 503.

:class:`S3Server` runs moto's ``ThreadedMotoServer`` (real HTTP, the real S3 REST protocol; the
objects live in the server's memory and survive :meth:`S3Server.stop` / :meth:`S3Server.start`
on the same port, as a store's objects survive an outage). :class:`FlakyRelay` forwards TCP
connections to it and, while ``failing`` is set, answers every new request with an S3
``503 SlowDown`` instead (and drops the connections it holds), which is what an overloaded store
answers.

Credentials are dummies put in the environment (``AWS_ACCESS_KEY_ID``...), never in a URI.

Example:
    >>> srv = S3Server().start()                       # doctest: +SKIP
    >>> srv.settings()["endpoint_override"]            # doctest: +SKIP
    '127.0.0.1:53211'
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from tests.support.helpers import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "cognopt-test",
    "AWS_SECRET_ACCESS_KEY": "cognopt-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def set_credentials() -> None:
    """Put the dummy credentials in this process's environment (children inherit them)."""
    for k, v in CREDENTIALS.items():
        os.environ.setdefault(k, v)


class S3Server:
    """moto's S3 server on ``127.0.0.1:port``; :meth:`stop` refuses connections until :meth:`start`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._srv: Any = None
        set_credentials()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        for _ in range(50):  # the port may still be in TIME_WAIT right after a stop
            try:
                self._srv = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
                self._srv.start()
                break
            except OSError:
                time.sleep(0.1)
        self.wait()
        return self

    def wait(self, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"moto S3 server on {self.endpoint} did not start")

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.stop()
            self._srv = None

    def settings(self, endpoint: str | None = None) -> dict[str, Any]:
        """The ``storage.s3`` settings that reach this server (small timeouts and retries for tests)."""
        return {
            "endpoint_override": endpoint or self.endpoint,
            "scheme": "http",
            "region": "us-east-1",
            "allow_bucket_creation": True,
            "connect_timeout_s": 1.0,
            "request_timeout_s": 5.0,
            "retry_attempts": 2,
        }

    def bucket(self) -> str:
        """A new bucket name (each test writes its own bucket)."""
        return f"cg-{uuid.uuid4().hex[:12]}"

    def filesystem(self) -> Any:
        """A pyarrow S3FileSystem on this server (to look at, or damage, what the store wrote)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=self.endpoint, scheme="http", region="us-east-1", allow_bucket_creation=True
        )


_SLOW_DOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FlakyRelay:
    """A TCP relay to ``target_port`` that answers ``503 SlowDown`` while :attr:`failing` is set."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.failing = False
        self.answered_503 = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fail(self, on: bool) -> None:
        self.failing = on
        if on:  # kept-alive connections would otherwise still reach the store
            with self._lock:
                for c in self._conns:
                    try:
                        c.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                self._conns.clear()

    def close(self) -> None:
        self._stop = True
        self._sock.close()
        self.fail(True)

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.failing:
            self._answer_503(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _answer_503(self, client: socket.socket) -> None:
        try:
            client.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                block = client.recv(65536)
                if not block:
                    break
                data += block
            self.answered_503 += 1  # before the answer: the client may raise before this thread runs again
            client.sendall(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                + f"Content-Length: {len(_SLOW_DOWN)}\r\n\r\n".encode()
                + _SLOW_DOWN
            )
        except OSError:
            pass
        finally:
            client.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                block = src.recv(65536)
                if not block:
                    break
                dst.sendall(block)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
