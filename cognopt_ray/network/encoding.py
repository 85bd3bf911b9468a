"""Content codings: what we offer origins, how we decode them, how we compress bodies.

``gzip`` and ``deflate`` are always available, ``zstd`` through ``zstandard`` (a dependency),
``br`` only when the optional ``brotli`` package is installed.

Example:
    >>> decode(encode(b"x" * 1000, "gzip", "fast"), "gzip") == b"x" * 1000
    True
    >>> choose_encoding("gzip;q=0.5, zstd", ["zstd", "gzip"])
    'zstd'
"""

from __future__ import annotations

import gzip
import zlib
from typing import Sequence

import zstandard

try:  # optional
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

#: Compression level names → (gzip level, zstd level, brotli quality).
LEVELS: dict[str, tuple[int, int, int]] = {
    "fast": (1, 1, 1),
    "balanced": (6, 3, 5),
    "max": (9, 19, 11),
}


def available() -> list[str]:
    """Codings this process can decode, best first."""
    return ["zstd", *(["br"] if brotli is not None else []), "gzip", "deflate"]


def accept_encoding(level: str) -> str:
    """The ``Accept-Encoding`` we send to origins for a compression level (``none`` = identity)."""
    if level == "none":
        return "identity"
    return ", ".join(available())


def encode(data: bytes, coding: str, level: str = "balanced") -> bytes:
    """Compress ``data`` with ``coding`` at a named level."""
    gz, zs, br = LEVELS.get(level, LEVELS["balanced"])
    if coding == "gzip":
        return gzip.compress(data, compresslevel=gz, mtime=0)
    if coding == "deflate":
        return zlib.compress(data, gz)
    if coding == "zstd":
        return zstandard.ZstdCompressor(level=zs).compress(data)
    if coding == "br" and brotli is not None:
        return brotli.compress(data, quality=br)
    if coding == "identity":
        return data
    raise ValueError(f"unknown content coding {coding!r}")


def decode(data: bytes, coding: str | None, *, max_size: int | None = None) -> bytes:
    """Undo ``Content-Encoding`` (a comma list, applied in order); refuses output over ``max_size``.

    Raises:
        ValueError: an unknown coding or corrupt data or output over ``max_size``.
    """
    if not coding:
        return data
    for c in reversed([c.strip().lower() for c in coding.split(",") if c.strip()]):
        if c in ("identity", ""):
            continue
        if c in ("gzip", "x-gzip"):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = _bounded(d, data, max_size)
        elif c == "deflate":
            try:
                data = _bounded(zlib.decompressobj(), data, max_size)
            except zlib.error:
                data = _bounded(zlib.decompressobj(-zlib.MAX_WBITS), data, max_size)
        elif c == "zstd":
            reader = zstandard.ZstdDecompressor().decompressobj()
            out = reader.decompress(data)
            if max_size is not None and len(out) > max_size:
                raise ValueError(f"decoded body is over {max_size} bytes")
            data = out
        elif c == "br" and brotli is not None:
            data = brotli.decompress(data)
            if max_size is not None and len(data) > max_size:
                raise ValueError(f"decoded body is over {max_size} bytes")
        else:
            raise ValueError(f"unsupported content coding {c!r}")
    return data


def _bounded(d: "zlib._Decompress", data: bytes, max_size: int | None) -> bytes:
    limit = 0 if max_size is None else max_size + 1
    out = d.decompress(data, limit)
    if max_size is not None and len(out) > max_size:
        raise ValueError(f"decoded body is over {max_size} bytes")
    return out + d.flush()


def parse_accept_encoding(value: str | None) -> dict[str, float]:
    """``"gzip;q=0.5, zstd"`` → ``{"gzip": 0.5, "zstd": 1.0}``."""
    out: dict[str, float] = {}
    if not value:
        return out
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        out[name] = q
    return out


def choose_encoding(accept: str | None, offered: Sequence[str]) -> str | None:
    """The best of ``offered`` (in our order of preference) the client accepts with q > 0."""
    prefs = parse_accept_encoding(accept)
    best, best_q = None, 0.0
    for coding in offered:
        q = prefs.get(coding, prefs.get("*", 0.0))
        if q > best_q:
            best, best_q = coding, q
    return best


__all__ = ["available", "accept_encoding", "encode", "decode", "choose_encoding", "parse_accept_encoding", "LEVELS"]
