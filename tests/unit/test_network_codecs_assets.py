"""Content codings, the API compression middleware (real ASGI calls) and the asset pipeline."""

import asyncio
import gzip
import json

import pytest
import zstandard

from cognopt_ray.errors import InvalidInput, NotFound
from cognopt_ray.network import assets, encoding
from serve_apps.compression import CompressionMiddleware


def test_encode_decode_roundtrip_and_negotiation():
    data = b"cognopt " * 1000
    for coding in ("gzip", "deflate", "zstd"):
        packed = encoding.encode(data, coding, "max")
        assert len(packed) < len(data) and encoding.decode(packed, coding) == data
    assert encoding.decode(encoding.encode(encoding.encode(data, "gzip"), "zstd"), "gzip, zstd") == data
    with pytest.raises(ValueError):
        encoding.decode(encoding.encode(data, "gzip"), "gzip", max_size=100)  # decompression bomb guard
    with pytest.raises(ValueError):
        encoding.decode(b"x", "compress")
    assert encoding.choose_encoding("gzip;q=0.5, zstd", ["zstd", "gzip"]) == "zstd"
    assert encoding.choose_encoding("gzip, zstd;q=0", ["zstd", "gzip"]) == "gzip"
    assert encoding.choose_encoding("identity", ["zstd", "gzip"]) is None
    assert encoding.choose_encoding("*", ["zstd", "gzip"]) == "zstd"
    assert encoding.accept_encoding("none") == "identity"
    assert "zstd" in encoding.accept_encoding("balanced") and "gzip" in encoding.accept_encoding("fast")


def _call(app, headers, req_headers=((b"accept-encoding", b"gzip"),)):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": list(req_headers)}
    asyncio.run(CompressionMiddleware(app)(scope, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


def _app(body: bytes, headers: list[tuple[bytes, bytes]], chunks: int = 1):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        step = max(1, len(body) // chunks)
        parts = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        for i, p in enumerate(parts):
            await send({"type": "http.response.body", "body": p, "more_body": i < len(parts) - 1})

    return app


JSON = [(b"content-type", b"application/json"), (b"etag", b'"abc"')]


def test_api_compression_gzip_and_zstd_with_vary():
    body = json.dumps({"k": ["value"] * 500}).encode()
    status, h, out = _call(_app(body, JSON, chunks=3), JSON)
    assert h["content-encoding"] == "gzip" and gzip.decompress(out) == body
    assert h["vary"] == "Accept-Encoding" and int(h["content-length"]) == len(out)
    assert h["etag"] == 'W/"abc"'  # a compressed representation is not byte-identical
    _, h, out = _call(_app(body, JSON), JSON, ((b"accept-encoding", b"gzip, zstd"),))
    assert h["content-encoding"] == "zstd" and zstandard.ZstdDecompressor().decompressobj().decompress(out) == body


def test_api_compression_leaves_small_no_transform_encoded_and_unaccepted_alone():
    small = b'{"a": 1}'
    _, h, out = _call(_app(small, JSON), JSON)
    assert "content-encoding" not in h and out == small
    big = b"x" * 5000
    nt = JSON + [(b"cache-control", b"public, no-transform")]
    _, h, out = _call(_app(big, nt), nt)
    assert "content-encoding" not in h and out == big
    enc = [(b"content-encoding", b"br")]
    _, h, out = _call(_app(big, enc), enc)
    assert h["content-encoding"] == "br" and out == big
    _, h, out = _call(_app(big, JSON), JSON, ())  # no Accept-Encoding: identity, but Vary says it could differ
    assert "content-encoding" not in h and out == big and h["vary"] == "Accept-Encoding"
    png = [(b"content-type", b"image/png")]
    _, h, out = _call(_app(big, png), png)
    assert "content-encoding" not in h


@pytest.fixture
def site(tmp_path):
    src = tmp_path / "site"
    (src / "css").mkdir(parents=True)
    (src / "app.js").write_text("console.log('cognopt');\n" * 300)
    (src / "css" / "site.css").write_text("body { color: #333; }\n" * 200)
    (src / "logo.png").write_bytes(b"\x89PNG\r\n" + bytes(range(256)) * 8)
    (src / ".hidden").write_text("secret")
    return src


def test_build_fingerprints_precompresses_and_writes_manifest(site, tmp_path):
    dst = tmp_path / "dist"
    m = assets.build(site, dst)
    assert set(m["files"]) == {"app.js", "css/site.css", "logo.png"}
    js = m["files"]["app.js"]
    assert js["path"].startswith("app.") and js["path"].endswith(".js") and len(js["path"].split(".")[1]) == 12
    assert (dst / js["path"]).read_bytes() == (site / "app.js").read_bytes()
    assert {"gzip", "zstd"} <= set(js["encodings"])
    for v in js["encodings"].values():
        assert v["size"] < js["size"] and (dst / v["path"]).stat().st_size == v["size"]
    assert m["files"]["logo.png"]["encodings"] == {}  # already compressed type
    assert json.loads((dst / "manifest.json").read_text()) == m
    assert m["bytes_smallest"] < m["bytes_raw"]
    with pytest.raises(InvalidInput):
        assets.build(site, site / "out")


def test_resolve_serving_rules(site, tmp_path):
    dst = tmp_path / "dist"
    m = assets.build(site, dst)
    js = m["files"]["app.js"]
    r = assets.resolve(dst, js["path"], accept_encoding="gzip")
    assert r.status == 200 and r.headers["Cache-Control"] == assets.IMMUTABLE
    assert r.headers["Content-Encoding"] == "gzip" and gzip.decompress(r.body) == (site / "app.js").read_bytes()
    assert r.headers["ETag"] == js["etag"] and r.headers["Vary"] == "Accept-Encoding"
    r = assets.resolve(dst, js["path"], accept_encoding="zstd, gzip")
    assert r.headers["Content-Encoding"] == "zstd"
    r = assets.resolve(dst, "app.js")  # logical name: revalidated, identity
    assert r.headers["Cache-Control"] == "public, no-cache" and "Content-Encoding" not in r.headers
    assert assets.resolve(dst, js["path"], if_none_match=js["etag"]).status == 304
    assert assets.resolve(dst, js["path"], if_none_match=f'W/{js["etag"]}, "other"').status == 304
    for bad in ("../manifest.json", "nope.js", "/etc/passwd", "app.js.gz"):
        with pytest.raises(NotFound):
            assets.resolve(dst, bad)


def test_upload_to_pyarrow_fs_uri(site, tmp_path):
    dst = tmp_path / "dist"
    assets.build(site, dst)
    target = tmp_path / "bucket" / "site"
    n = assets.upload(dst, f"file://{target}")
    copied = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert n == len(copied) and "manifest.json" in copied
    with pytest.raises(InvalidInput):
        assets.upload(tmp_path / "site", f"file://{target}")  # no manifest: not a build
    with pytest.raises(InvalidInput):
        assets.upload(dst, "nosuchscheme://x/y")
