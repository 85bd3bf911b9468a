"""Content codings: what we offer origins, how we decode them, how we compress bodies.

``gzip`` and ``deflate`` are always available, ``zstd`` through ``zstandard`` (a dependency),
``br`` only when the optional ``brotli`` package is installed. Decoding is bounded on its output
(:mod:`cognopt_ray._private.bounded`).

Example:
    >>> decode(encode(b"x" * 1000, "gzip", "fast"), "gzip") == b"x" * 1000
    True
    >>> choose_encoding("gzip;q=0.5, zstd", ["zstd", "gzip"])
    'zstd'
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence

import zstandard

from cognopt_ray._private import bounded
from cognopt_ray._private.bounded import OutputTooLarge

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
    """Undo ``Content-Encoding`` (a comma list, applied in order), each step bounded on its output
    by :func:`cognopt_ray._private.bounded.decompress`: decoding stops as soon as the output would
    pass ``max_size``, so a bomb costs about ``max_size`` of memory, never what it expands to.

    Raises:
        OutputTooLarge: the output would be over ``max_size`` (a ``ValueError``).
        ValueError: an unknown coding or corrupt data.
    """
    if not coding:
        return data
    for c in reversed([c.strip().lower() for c in coding.split(",") if c.strip()]):
        data = bounded.decompress(data, c, max_size)
    return data


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


__all__ = [
    "OutputTooLarge",
    "available",
    "accept_encoding",
    "encode",
    "decode",
    "choose_encoding",
    "parse_accept_encoding",
    "LEVELS",
]
