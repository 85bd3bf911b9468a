"""Codecs and the automatic codec choice.

Codecs: ``none``, ``zlib``, ``gzip``, ``bz2``, ``lzma``, ``zstd`` (levels, a trained dictionary per
service for small items, multi-threaded for large ones) and ``lz4`` when the ``lz4`` package is
installed. ``auto`` is not a codec but a choice made per item by :func:`choose_codec`:

* fast tiers (``hot``, ``warm``): a cheap probe. Up to three 8 KiB slices of the data (start,
  middle, end) are compressed with zstd level 1; when they shrink by less than 5 %
  (``probe_ratio > 0.95``) the data is stored with ``none`` (random or already-compressed bytes);
  otherwise ``zstd`` level 1 (warm) — fast both ways.
* ``cold``: zstd level 9 (19 for items under 64 KiB), with the service's dictionary for items
  under 16 KiB.
* ``archive``: the strongest of ``lzma`` (preset 9, raw stream) and ``zstd`` level 19 (with and
  without the service's dictionary) on a sample of the data (the whole item up to 1 MiB); the
  codec with the smallest result wins.

Every choice is recorded with the item as a :class:`CodecChoice` (codec, level, dictionary,
reason, probe figures) so ``store.explain(item_id)`` can say why.

Example:
    >>> from cognopt_ray.storage.codecs import choose_codec, compress, decompress
    >>> choice = choose_codec(b"abc" * 1000, tier="warm")
    >>> choice.codec, choice.level
    ('zstd', 1)
    >>> decompress(compress(b"abc" * 1000, choice), choice) == b"abc" * 1000
    True
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import zstandard

from cognopt_ray._private import bounded
from cognopt_ray.errors import InvalidInput

try:  # optional
    import lz4.frame as _lz4
except ImportError:  # pragma: no cover - lz4 is optional
    _lz4 = None

TIERS = ("hot", "warm", "cold", "archive")
CODECS = tuple(c for c in ("none", "zlib", "gzip", "bz2", "lzma", "zstd", "lz4") if c != "lz4" or _lz4 is not None)
CODEC_CHOICES = ("auto", *CODECS)

#: Default level per codec when the caller names a codec without a level.
DEFAULT_LEVELS = {"none": 0, "zlib": 6, "gzip": 6, "bz2": 9, "lzma": 6, "zstd": 3, "lz4": 0}
LEVEL_RANGES = {"zlib": (0, 9), "gzip": (0, 9), "bz2": (1, 9), "lzma": (0, 9), "zstd": (-7, 22), "lz4": (0, 16)}
#: Probe: data whose slices shrink by less than this is stored with ``none``.
INCOMPRESSIBLE_RATIO = 0.95
PROBE_SLICE = 8 * 1024
#: zstd uses worker threads above this size.
ZSTD_THREADS_ABOVE = 8 * 1024 * 1024
#: Items under this size use the service dictionary when one exists.
DICT_MAX_ITEM = 16 * 1024
_LOCAL = threading.local()  # zstd contexts must not be shared between threads
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9}]


@dataclass
class CodecChoice:
    """A codec with its parameters and why it was chosen (stored with every item)."""

    codec: str
    level: int = 0
    dict_id: int | None = None
    reason: str = "requested"
    probe_ratio: float | None = None
    candidates: dict[str, int] = field(default_factory=dict)
    raw_stream: bool = False  # lzma without the xz container (archive choice)
    payload: bytes | None = field(default=None, repr=False, compare=False)  # output kept from the trial; not stored

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "level": self.level,
            "dict_id": self.dict_id,
            "reason": self.reason,
            "probe_ratio": self.probe_ratio,
            "candidates": dict(self.candidates),
            "raw_stream": self.raw_stream,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodecChoice:
        return cls(
            **{
                k: d[k]
                for k in ("codec", "level", "dict_id", "reason", "probe_ratio", "candidates", "raw_stream")
                if k in d
            }
        )


def check_tier(tier: str) -> str:
    """Validate a tier name; :class:`InvalidInput` (422) lists the valid ones."""
    if tier not in TIERS:
        raise InvalidInput(f"unknown storage tier {tier!r}", hint=f"use one of {', '.join(TIERS)}", valid=list(TIERS))
    return tier


def check_codec(codec: str) -> str:
    """Validate a codec name (``auto`` allowed); :class:`InvalidInput` (422) lists the valid ones."""
    if codec not in CODEC_CHOICES:
        raise InvalidInput(
            f"unknown codec {codec!r}", hint=f"use one of {', '.join(CODEC_CHOICES)}", valid=list(CODEC_CHOICES)
        )
    return codec


def requested(codec: str, level: int | None = None) -> CodecChoice:
    """A choice for an explicitly requested codec (level validated)."""
    check_codec(codec)
    lvl = DEFAULT_LEVELS[codec] if level is None else int(level)
    lo, hi = LEVEL_RANGES.get(codec, (lvl, lvl))
    if not lo <= lvl <= hi:
        raise InvalidInput(f"level {lvl} is out of range for {codec}", hint=f"use {lo}..{hi}")
    return CodecChoice(codec=codec, level=lvl, reason="requested by the caller")


@dataclass(frozen=True)
class Dictionary:
    """A trained zstd dictionary: its bytes and their digest (the cache key of prepared contexts)."""

    data: bytes
    digest: str


def _zstd_c(level: int, zdict: Dictionary | None = None, size: int = 0) -> zstandard.ZstdCompressor:
    """A compressor from this thread's cache (zstd contexts are not thread-safe, and preparing a
    dictionary per call would cost more than compressing a small item)."""
    threads = 2 if size >= ZSTD_THREADS_ABOVE else 0
    key = (level, zdict.digest if zdict else None, threads)
    cache = getattr(_LOCAL, "cctx", None)
    if cache is None:
        cache = _LOCAL.cctx = {}
    c = cache.get(key)
    if c is None:
        kwargs: dict[str, Any] = {
            "level": level,
            "write_checksum": False,
            "write_content_size": True,
            "write_dict_id": False,
            "threads": threads,
        }
        if zdict is not None:
            d = zstandard.ZstdCompressionDict(zdict.data)
            d.precompute_compress(level=level)
            kwargs["dict_data"] = d
        c = cache[key] = zstandard.ZstdCompressor(**kwargs)
    return c


def _zstd_d(zdict: Dictionary | None) -> zstandard.ZstdDecompressor:
    key = zdict.digest if zdict else None
    cache = getattr(_LOCAL, "dctx", None)
    if cache is None:
        cache = _LOCAL.dctx = {}
    d = cache.get(key)
    if d is None:
        d = cache[key] = (
            zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(zdict.data))
            if zdict
            else zstandard.ZstdDecompressor()
        )
    return d


def compress(data: bytes | memoryview, choice: CodecChoice, zdict: Dictionary | None = None) -> bytes:
    """Compress ``data`` with ``choice`` (``zdict`` is the service dictionary when ``choice.dict_id`` is set)."""
    c, lvl = choice.codec, choice.level
    if c == "none":
        return bytes(data)
    if c == "zstd":
        return _zstd_c(lvl, zdict if choice.dict_id is not None else None, len(data)).compress(data)
    if c == "zlib":
        return zlib.compress(data, lvl)
    if c == "gzip":
        return gzip.compress(bytes(data), compresslevel=lvl, mtime=0)
    if c == "bz2":
        return bz2.compress(data, lvl)
    if c == "lzma":
        if choice.raw_stream:
            return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        return lzma.compress(data, preset=lvl)
    if c == "lz4" and _lz4 is not None:
        return _lz4.compress(data, compression_level=lvl)
    raise InvalidInput(f"unknown codec {c!r}", hint=f"use one of {', '.join(CODECS)}")


def decompress(
    data: bytes | memoryview, choice: CodecChoice, zdict: Dictionary | None = None, raw_size: int | None = None
) -> bytes:
    """Invert :func:`compress`. With ``raw_size`` (the catalog's), no codec produces more than
    ``raw_size`` bytes: a stored blob that would is refused (``OutputTooLarge``) before it is expanded."""
    c = choice.codec
    if c == "none":
        return bytes(data)
    if c == "zstd":
        if raw_size is not None and zstandard.frame_content_size(data) > raw_size:
            raise bounded.OutputTooLarge(raw_size)  # the frame declares more than the item holds
        return _zstd_d(zdict if choice.dict_id is not None else None).decompress(data, max_output_size=raw_size or 0)
    if c in ("zlib", "gzip"):
        return bounded.decompress(data, c, raw_size)
    if c == "bz2":
        return _capped(bz2.BZ2Decompressor(), data, raw_size)
    if c == "lzma":
        if choice.raw_stream:
            return _capped(lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS), data, raw_size)
        return _capped(lzma.LZMADecompressor(), data, raw_size)
    if c == "lz4" and _lz4 is not None:
        return _capped(_lz4.LZ4FrameDecompressor(), data, raw_size)
    raise InvalidInput(f"unknown codec {c!r}")


def _capped(d: Any, data: bytes | memoryview, raw_size: int | None) -> bytes:
    """One stream through a ``bz2``/``lzma``/``lz4.frame`` decompressor object, at most ``raw_size`` bytes out."""
    if raw_size is None:
        return d.decompress(bytes(data))
    out = d.decompress(bytes(data), max_length=raw_size + 1)
    if len(out) > raw_size:
        raise bounded.OutputTooLarge(raw_size)
    return out


def _probe_compressor() -> zstandard.ZstdCompressor:
    c = getattr(_LOCAL, "probe", None)
    if c is None:
        c = _LOCAL.probe = zstandard.ZstdCompressor(level=1, write_checksum=False, write_content_size=False)
    return c


def probe_ratio(data: bytes | memoryview) -> float:
    """Compressed ÷ raw size of up to three 8 KiB slices (start, middle, end) at zstd level 1."""
    n = len(data)
    if n == 0:
        return 1.0
    mv = memoryview(data)
    if n <= 3 * PROBE_SLICE:
        sample = bytes(mv)
    else:
        mid = n // 2 - PROBE_SLICE // 2
        sample = bytes(mv[:PROBE_SLICE]) + bytes(mv[mid : mid + PROBE_SLICE]) + bytes(mv[n - PROBE_SLICE :])
    return len(_probe_compressor().compress(sample)) / len(sample)


def choose_codec(
    data: bytes | memoryview, tier: str, zdict: Dictionary | None = None, dict_id: int | None = None
) -> CodecChoice:
    """The ``auto`` choice for ``data`` stored in ``tier`` (see the module docstring for the rules)."""
    check_tier(tier)
    n = len(data)
    if n < 64:
        return CodecChoice("none", 0, reason="auto: under 64 bytes, compression cannot pay")
    ratio = probe_ratio(data)
    if ratio > INCOMPRESSIBLE_RATIO:
        return CodecChoice(
            "none",
            0,
            reason=f"auto: probe shrank the data only to {ratio:.2f} (> {INCOMPRESSIBLE_RATIO}); incompressible",
            probe_ratio=round(ratio, 4),
        )
    use_dict = zdict is not None and n <= DICT_MAX_ITEM
    if tier in ("hot", "warm"):
        if use_dict:
            return CodecChoice(
                "zstd",
                1,
                dict_id,
                reason="auto: fast tier, small item, service dictionary",
                probe_ratio=round(ratio, 4),
            )
        return CodecChoice("zstd", 1, reason="auto: fast tier, compressible, zstd level 1", probe_ratio=round(ratio, 4))
    if tier == "cold":
        lvl = 19 if n < 64 * 1024 else 9
        return CodecChoice(
            "zstd",
            lvl,
            dict_id if use_dict else None,
            reason=f"auto: cold tier, zstd level {lvl}" + (" with service dictionary" if use_dict else ""),
            probe_ratio=round(ratio, 4),
        )
    # archive: try the strongest codecs on a sample, keep the smallest. When the sample is the
    # whole item the winner's output is kept, so the item is not compressed twice.
    whole = n <= 1024 * 1024
    sample = bytes(data) if whole else bytes(memoryview(data)[: 1024 * 1024])
    outs: dict[str, bytes] = {
        "lzma": lzma.compress(sample, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS),
        "zstd": _zstd_c(19).compress(sample),
    }
    if zdict is not None:  # the trial decides, whatever the size
        outs["zstd+dict"] = _zstd_c(19, zdict).compress(sample)
    cands = {k: len(v) for k, v in outs.items()}
    best = min(cands, key=lambda k: cands[k])
    if best == "lzma":
        choice = CodecChoice(
            "lzma",
            9,
            reason="archive: smallest on the sample was lzma preset 9",
            probe_ratio=round(ratio, 4),
            candidates=cands,
            raw_stream=True,
        )
    else:
        choice = CodecChoice(
            "zstd",
            19,
            dict_id if best == "zstd+dict" else None,
            reason=f"archive: smallest on the sample was {best} level 19",
            probe_ratio=round(ratio, 4),
            candidates=cands,
        )
    if whole:
        choice.payload = outs[best]
    return choice


def train_dictionary(samples: list[bytes], size: int = 32 * 1024) -> bytes:
    """Train a zstd dictionary of about ``size`` bytes from ``samples`` (raises ``ValueError`` if too few)."""
    if len(samples) < 16:
        raise ValueError("need at least 16 samples to train a dictionary")
    # Fixed k/d: zstd's parameter search costs seconds; these are its usual winners for text.
    return zstandard.train_dictionary(size, samples, k=1024, d=8, level=19).as_bytes()


def load_dictionary(data: bytes) -> Dictionary:
    import hashlib

    return Dictionary(bytes(data), hashlib.blake2b(data, digest_size=16).hexdigest())


__all__ = [
    "TIERS",
    "CODECS",
    "CODEC_CHOICES",
    "CodecChoice",
    "check_tier",
    "check_codec",
    "requested",
    "compress",
    "decompress",
    "probe_ratio",
    "choose_codec",
    "train_dictionary",
    "load_dictionary",
]
