"""Decoders bounded on their *output*: a few KiB that expand to a GiB are refused early.

Every place that decompresses bytes it did not make itself (origin bodies, Redis values, caller
uploads, stored blobs, backup chunks) calls :func:`decompress`, which stops as soon as the output
would pass ``max_size`` and raises :class:`OutputTooLarge` (a ``ValueError``). Memory use is
bounded by about ``max_size`` plus one read chunk, never by what the input declares.

Example:
    >>> import zstandard
    >>> bomb = zstandard.ZstdCompressor().compress(b"\\0" * 10_000_000)
    >>> decompress(bomb, "zstd", max_size=1000)
    Traceback (most recent call last):
    ...
    cognopt_ray._private.bounded.OutputTooLarge: decoded data is over 1000 bytes
"""

from __future__ import annotations

import io
import zlib

import zstandard

try:  # optional
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

_CHUNK = 1 << 16


class OutputTooLarge(ValueError):
    """Decoded output would be over the limit; nothing past the limit was produced."""

    def __init__(self, max_size: int) -> None:
        super().__init__(f"decoded data is over {max_size} bytes")
        self.max_size = max_size


def _zlib(data: bytes, wbits: int, max_size: int | None) -> bytes:
    d = zlib.decompressobj(wbits)
    out = bytearray()
    buf = data
    while True:
        room = 0 if max_size is None else max_size + 1 - len(out)
        out += d.decompress(buf, room)
        if max_size is not None and len(out) > max_size:
            raise OutputTooLarge(max_size)
        buf = d.unconsumed_tail
        if not buf:
            break
    if max_size is None:
        out += d.flush()
    else:
        rest = d.flush(max_size + 1 - len(out))
        out += rest
        if len(out) > max_size:
            raise OutputTooLarge(max_size)
    if d.unused_data and wbits in (16 + zlib.MAX_WBITS,):
        # concatenated gzip members (RFC 1952 allows them)
        more = _zlib(d.unused_data, wbits, None if max_size is None else max_size - len(out))
        out += more
    return bytes(out)


def zstd(
    data: bytes | memoryview, max_size: int | None, *, dict_data: zstandard.ZstdCompressionDict | None = None
) -> bytes:
    """zstd frames (concatenated frames too), stopping past ``max_size`` bytes of output."""
    dctx = zstandard.ZstdDecompressor(dict_data=dict_data) if dict_data is not None else zstandard.ZstdDecompressor()
    reader = dctx.stream_reader(io.BytesIO(bytes(data)), read_across_frames=True)
    out = bytearray()
    try:
        while True:
            want = _CHUNK if max_size is None else min(_CHUNK, max_size + 1 - len(out))
            chunk = reader.read(want)
            if not chunk:
                break
            out += chunk
            if max_size is not None and len(out) > max_size:
                raise OutputTooLarge(max_size)
    except zstandard.ZstdError as e:
        raise ValueError(f"corrupt zstd data: {e}") from None
    return bytes(out)


def _brotli(data: bytes, max_size: int | None) -> bytes:
    if brotli is None:
        raise ValueError("brotli data but the brotli package is not installed")
    d = brotli.Decompressor()
    out = bytearray()
    # Fed in small pieces so that one call's output stays small; checked after each.
    for i in range(0, len(data), 256):
        try:
            out += d.process(data[i : i + 256])
        except brotli.error as e:
            raise ValueError(f"corrupt brotli data: {e}") from None
        if max_size is not None and len(out) > max_size:
            raise OutputTooLarge(max_size)
    return bytes(out)


def decompress(data: bytes | memoryview, coding: str, max_size: int | None) -> bytes:
    """Decode one content coding (``gzip``, ``x-gzip``, ``deflate``, ``zstd``, ``br``, ``identity``).

    Raises:
        OutputTooLarge: the output would be over ``max_size``.
        ValueError: an unknown coding or corrupt data.
    """
    c = coding.strip().lower()
    data = bytes(data)
    if c in ("identity", ""):
        if max_size is not None and len(data) > max_size:
            raise OutputTooLarge(max_size)
        return data
    try:
        if c in ("gzip", "x-gzip"):
            return _zlib(data, 16 + zlib.MAX_WBITS, max_size)
        if c == "deflate":
            try:
                return _zlib(data, zlib.MAX_WBITS, max_size)
            except zlib.error:
                return _zlib(data, -zlib.MAX_WBITS, max_size)
        if c == "zlib":
            return _zlib(data, zlib.MAX_WBITS, max_size)
    except zlib.error as e:
        raise ValueError(f"corrupt {c} data: {e}") from None
    if c == "zstd":
        return zstd(data, max_size)
    if c == "br":
        return _brotli(data, max_size)
    raise ValueError(f"unsupported content coding {coding!r}")


__all__ = ["decompress", "zstd", "OutputTooLarge"]
