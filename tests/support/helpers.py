"""Helpers shared by the tests: free ports, a real redis-server, waiting for HTTP."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ray_script(
    script: str, tmp_path: Path, *args: str, drop_env: tuple[str, ...] = (), timeout: float = 600
) -> dict:
    """Run ``script`` (Python text that starts its own Ray, e.g. a ``ray.cluster_utils.Cluster``,
    so the session's shared Ray stays intact) in a subprocess and return the JSON of its last
    ``RESULT {...}`` line; the script's output tails are the assertion message when it fails."""
    import json
    import sys

    path = tmp_path / "script.py"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", *drop_env)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=str(tmp_path)
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def tool_missing(reason: str) -> None:
    """A tool or capability the test needs is missing: skip it, but fail under ``CI=true`` (the
    test command, ``scripts/test.sh``, installs every tool, so a skip there would hide a test
    that never ran). Use this for every skip that is about the environment, never for a case
    that does not apply."""
    msg = f"{reason} (scripts/test.sh installs it; under CI=true this is a failure, not a skip)"
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def need_binary(name: str, *alternatives: str) -> str:
    """The path of ``name`` (or of the first of ``alternatives`` installed); missing: :func:`tool_missing`."""
    for candidate in (name, *alternatives):
        path = shutil.which(candidate)
        if path is not None:
            return path
    tool_missing(f"{' or '.join((name, *alternatives))} is not installed")
    raise AssertionError("unreachable")  # tool_missing always raises


class RedisServer:
    """A real ``redis-server`` on a free port of 127.0.0.1, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.binary = need_binary("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def read_serve_banner(proc: subprocess.Popen, timeout: float) -> dict:
    """Read a ``cognopt serve`` process's stdout until it prints its admin key (or ``timeout``
    passes): ``{"lines", "url", "key", "ray_env"}`` (``ray_env``: the ``RAY_*=...`` of its
    ``ray:`` line). The process dying first fails the test with its stderr."""
    out: dict = {"lines": [], "url": None, "key": None, "ray_env": {}}
    deadline = time.time() + timeout
    while time.time() < deadline and out["key"] is None:
        line = proc.stdout.readline()
        if not line:
            assert proc.poll() is None, proc.stderr.read()
            continue
        out["lines"].append(line)
        if m := re.search(r"ready at (http://\S+)", line):
            out["url"] = m.group(1)
        if line.strip().startswith("ray:"):  # the environment a job on this machine needs
            out["ray_env"] = dict(re.findall(r"(RAY_\w+)=(\S+)", line))
        if m := re.search(r"admin key.*: (cok_\S+)", line):
            out["key"] = m.group(1)
    return out


def wait_http(url: str, timeout: float = 60.0, expect: int | None = 200) -> None:
    import requests

    deadline = time.time() + timeout
    last: object = None
    while time.time() < deadline:
        try:
            r = requests.get(url, timeout=2)
            if expect is None or r.status_code == expect:
                return
            last = r.status_code
        except requests.RequestException as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {expect} within {timeout}s (last: {last})")
