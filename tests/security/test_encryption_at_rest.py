"""With an encryption key configured, nothing written through the API is readable at rest.

A plaintext marker goes in through every route that persists data (storage store in every tier,
as JSON, base64 and raw bytes, with and without compression; persistent and transient memory
allocations; network responses cached in Redis; backups of the store and of a folder). Then every
file under the storage root and every value in Redis is searched for the marker.

The app runs on its own local Ray in a subprocess (engine actors are named per cluster, so an
encrypted app cannot share the session's engines).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from aiohttp import web

from cognopt_ray.security.keys import generate_key
from tests.support.helpers import free_port
from tests.support.origin import Origin

#: generous: the first use of an engine starts Ray workers, slow on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)

API = "/api/v0/optimization"


@pytest.fixture(scope="module")
def encrypted_app(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("enc-root")
    sources = tmp_path_factory.mktemp("enc-sources")  # backups may read folders here only
    key, rec = generate_key(["admin"])
    port = free_port()
    doc = {
        "_port": port,
        "storage_root": str(root),
        "redis_url": redis_server.url,
        "encryption_key": base64.b64encode(os.urandom(32)).decode(),
        "api_keys": [rec.model_dump(mode="json")],
        "network": {"allowlist": ["127.0.0.1"]},
        "storage": {
            "lifecycle_enabled": False,
            "progress": False,
            "min_free_bytes": 0,
            "backup_source_roots": [str(sources)],
        },
    }
    cfg = root.parent / f"{root.name}-settings.json"
    cfg.write_text(json.dumps(doc))
    log = root.parent / f"{root.name}-app.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.security.encrypted_app", str(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    seen = []
    for line in proc.stdout:  # Ray may print its own lines first
        seen.append(line)
        if line.startswith("READY"):
            break
    else:
        proc.kill()
        pytest.fail(f"the encrypted app did not start: {seen[-5:]!r}\n{log.read_text()[-3000:]}")
    yield {
        "base": f"http://127.0.0.1:{port}{API}",
        "headers": {"Authorization": f"Bearer {key}"},
        "root": root,
        "redis": redis_server,
        "sources": sources,
    }
    proc.stdin.close()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_no_plaintext_at_rest(encrypted_app, tmp_path):
    import redis

    base, h, root = encrypted_app["base"], encrypted_app["headers"], encrypted_app["root"]
    marker = "PLAINTEXT-MARKER-" + secrets.token_hex(8)
    mb = marker.encode()
    text = (marker + " ") * 200  # compressible, so a codec keeps the marker's bytes only if it stores raw

    def ok(r, code=(200, 201)):
        assert r.status_code in code, (r.status_code, r.text[:400])
        return r

    # storage: every tier, JSON / base64 / raw, codecs none and auto
    for tier in ("hot", "warm", "cold", "archive"):
        for codec in ("none", "auto"):
            ok(
                requests.post(
                    f"{base}/storage/store",
                    headers=h,
                    timeout=60,
                    json={
                        "item_id": f"j-{tier}-{codec}",
                        "data": {"m": marker},
                        "storage_tier": tier,
                        "compression_type": codec,
                    },
                )
            )
            ok(
                requests.post(
                    f"{base}/storage/store",
                    headers=h,
                    timeout=60,
                    json={
                        "item_id": f"b-{tier}-{codec}",
                        "data": base64.b64encode(text.encode()).decode(),
                        "encoding": "base64",
                        "storage_tier": tier,
                        "compression_type": codec,
                    },
                )
            )
        ok(
            requests.post(
                f"{base}/storage/store",
                params={"item_id": f"r-{tier}", "storage_tier": tier, "compression_type": "none"},
                data=mb * 10,
                headers={**h, "Content-Type": "application/octet-stream"},
                timeout=60,
            )
        )
    assert requests.get(f"{base}/storage/retrieve/j-warm-none", headers=h, timeout=30).json() == {"m": marker}
    # memory: persistent (durable copy on disk) and transient
    for mtype in ("persistent", "transient"):
        ok(
            requests.post(
                f"{base}/memory/allocate",
                headers=h,
                timeout=60,
                json={"service_name": "ai_models", "data": {"m": marker}, "memory_type": mtype},
            )
        )
    ok(
        requests.post(
            f"{base}/memory/allocate",
            params={"service_name": "ai_models", "memory_type": "persistent"},
            data=mb * 10,
            headers={**h, "Content-Type": "application/octet-stream"},
            timeout=60,
        )
    )
    # network: a cacheable response from a local origin, cached in Redis
    origin = Origin()
    origin.routes["/page"] = lambda request: web.Response(text=text, headers={"Cache-Control": "max-age=600"})
    try:
        for _ in range(2):
            r = ok(
                requests.post(
                    f"{base}/network/optimize-request",
                    headers=h,
                    timeout=60,
                    json={"url": origin.url("/page"), "cache_strategy": "long_term"},
                )
            )
            assert marker in r.json()["body"]
        assert r.json()["cache_status"] == "HIT"
    finally:
        origin.close()
    # backups: of the store, and of a folder holding a plaintext file
    folder = encrypted_app["sources"] / "src"
    folder.mkdir()
    (folder / "notes.txt").write_text(text)
    ok(requests.post(f"{base}/storage/backup", headers=h, json={"tag": "enc"}, timeout=300))
    ok(requests.post(f"{base}/storage/backup", headers=h, json={"source": str(folder), "tag": "folder"}, timeout=300))

    # search every file under the root, and every Redis value
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) > 10
    found = [str(p) for p in files if mb in p.read_bytes()]
    assert not found, f"plaintext marker found in {found}"
    r = redis.Redis.from_url(encrypted_app["redis"].url)
    keys = list(r.scan_iter(count=1000))
    assert keys, "nothing was cached in Redis"
    for k in keys:
        t = r.type(k).decode()
        if t == "string":
            values = [r.get(k)]
        elif t == "hash":
            values = list(r.hgetall(k).values())
        elif t == "list":
            values = r.lrange(k, 0, -1)
        elif t in ("set", "zset"):
            values = list(r.smembers(k)) if t == "set" else [m for m, _ in r.zrange(k, 0, -1, withscores=True)]
        else:
            values = []
        for v in values:
            assert mb not in (v or b""), f"plaintext marker in Redis key {k!r}"
