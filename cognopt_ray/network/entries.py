"""The cache's entries: keys partitioned by service, backend names, serialisation, sealing, the
hot layer, TTLs.

All variants of one URL for one service are one entry (``Vary`` is the secondary key inside it),
serialised by :func:`pack` (a JSON header naming the entry's cache key + the bodies,
zstd-compressed, sealed by the one :class:`~cognopt_ray._private.sealer.Sealer` with the sub-key
``b"cognopt network cache"`` and associated data bound to the entry's name when an encryption key
is configured) so every backend stores opaque bytes with a TTL. :func:`unpack` decompresses at
most a bounded number of bytes and refuses anything it cannot vouch for (:class:`BadEntry`).

One entry holds every ``Vary`` variant of one URL *for one service*: the primary cache key is
``(URL without fragment, service)``, so a service never reads (nor learns of) what another
service's requests put in the cache. Admin requests made without a service have their own
partition (``-``).

Backend names: without an encryption key an entry is stored under ``<url>#<service>`` (so purges
by URL prefix are key-prefix deletions). With one, under ``<H(url)>.<H(service)>`` where ``H`` is
the keyed hash of the network cache's sub-key (:meth:`Sealer.keyed_name`), so Redis reveals no
URL; the entry is sealed with associated data = its name, and names its cache key inside the
sealed payload, so an entry copied under another name (another service's, another URL's) fails
to open. An entry that does not open, is not sealed where it must be, decodes past the limit or
names another key is a miss and is deleted.

Every entry gets a finite TTL: what its freshness and stale windows say, at most
``settings.network.max_cache_ttl_s`` (``persistent`` included).

Example:
    >>> from yarl import URL
    >>> entry_key(URL("https://example.org/a#frag"), "ai_models").logical
    'https://example.org/a#ai_models'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import struct
import time
from collections.abc import Callable

import zstandard
from yarl import URL

from cognopt_ray._private import bounded
from cognopt_ray._private.lru import ByteLRU
from cognopt_ray._private.sealer import Sealer, is_sealed
from cognopt_ray.config import Settings
from cognopt_ray.errors import IntegrityError
from cognopt_ray.network.backends import CacheBackend
from cognopt_ray.network.metrics import NetworkMetrics
from cognopt_ray.network.rules import NEVER_STORED_HEADERS, StoredResponse, without

logger = logging.getLogger(__name__)

#: HKDF purpose of the network cache's sub-key.
PURPOSE = b"cognopt network cache"
#: The partition of requests made without a service (admin only); not a valid service name.
NO_SERVICE = "-"
#: Room for the JSON header of an entry beyond its bodies.
_HEADER_ROOM = 1 << 20


# -- serialisation ----------------------------------------------------------------------------------
_MAGIC = b"CNC2"


class BadEntry(ValueError):
    """A stored entry that is refused: malformed, tampered with, too large once decoded, written
    under another key, or unsealed where a sealed one is expected. It is treated as a miss."""


def pack(
    variants: list[StoredResponse],
    cache_key: str,
    *,
    sealer: Sealer | None = None,
    aad: bytes = b"",
    level: int = 3,
    max_raw: int | None = None,
) -> bytes:
    """Serialise the variants of one cache entry: a JSON header naming ``cache_key`` + the bodies,
    zstd-compressed, then sealed by ``sealer`` (AES-GCM, ``aad`` bound) when one is given.

    Raises:
        BadEntry: the serialised entry would be over ``max_raw`` bytes before compression.
    """
    meta = []
    for v in variants:
        meta.append(
            {
                "url": v.url,
                "status": v.status,
                "headers": v.headers,
                "request_time": v.request_time,
                "response_time": v.response_time,
                "vary": v.vary,
                "strategy": v.strategy,
                "hf": v.heuristic_fraction,
                "dl": v.default_lifetime,
                "len": len(v.body),
                "wire": v.wire,
                "ae": v.accept,
            }
        )
    head = json.dumps({"key": cache_key, "variants": meta}, separators=(",", ":")).encode()
    size = 4 + len(head) + sum(len(v.body) for v in variants)
    if max_raw is not None and size > max_raw:
        raise BadEntry(f"entry of {size} bytes is over {max_raw}")
    raw = struct.pack(">I", len(head)) + head + b"".join(v.body for v in variants)
    data = _MAGIC + zstandard.ZstdCompressor(level=level).compress(raw)
    return sealer.seal(data, aad) if sealer is not None else data


def unpack(
    data: bytes, cache_key: str, *, sealer: Sealer | None = None, aad: bytes = b"", max_raw: int | None = None
) -> list[StoredResponse]:
    """The inverse of :func:`pack`, decompressing at most ``max_raw`` bytes.

    With a ``sealer`` only a sealed entry whose ``aad`` checks is read; without one a sealed entry
    cannot be. The entry must name ``cache_key`` (an entry copied under another key is refused).

    Raises:
        BadEntry: anything malformed, tampered with, unsealed where sealed is expected, or too large.
    """
    if sealer is not None:
        if not is_sealed(data):
            raise BadEntry("entry is not sealed and an encryption key is configured; refused")
        try:
            data = sealer.open(data, aad)
        except IntegrityError as e:
            raise BadEntry(f"entry does not open: {e.message}") from None
    elif is_sealed(data):
        raise BadEntry("entry is sealed and no encryption key is configured")
    if not data.startswith(_MAGIC):
        raise BadEntry("not a cache entry")
    try:
        raw = bounded.zstd(memoryview(data)[4:], max_raw)
        (n,) = struct.unpack(">I", raw[:4])
        doc = json.loads(raw[4 : 4 + n])
        if doc.get("key") != cache_key:
            raise BadEntry("entry was written under another cache key")
        pos = 4 + n
        out = []
        for m in doc["variants"]:
            body = raw[pos : pos + m["len"]]
            pos += m["len"]
            out.append(
                StoredResponse(
                    m["url"],
                    m["status"],
                    [tuple(h) for h in m["headers"]],
                    body,
                    m["request_time"],
                    m["response_time"],
                    m["vary"],
                    m["strategy"],
                    m.get("hf", 0.1),
                    m.get("dl", True),
                    _wire_of(m),
                    m.get("ae") if isinstance(m.get("ae"), str) else None,
                )
            )
        return out
    except BadEntry:
        raise
    except (ValueError, KeyError, TypeError, struct.error, AttributeError) as e:
        raise BadEntry(f"malformed entry: {type(e).__name__}: {e}") from None


def _wire_of(m: dict) -> int | None:
    w = m.get("wire")
    return w if isinstance(w, int) and not isinstance(w, bool) and w >= 0 else None


def entry_key_of(
    data: bytes, *, sealer: Sealer | None = None, aad: bytes = b"", max_raw: int | None = None
) -> str | None:
    """The cache key an entry names (None when it cannot be read)."""
    try:
        if sealer is not None:
            data = sealer.open(data, aad)
        if not data.startswith(_MAGIC):
            return None
        raw = bounded.zstd(memoryview(data)[4:], max_raw)
        (n,) = struct.unpack(">I", raw[:4])
        key = json.loads(raw[4 : 4 + n]).get("key")
        return key if isinstance(key, str) else None
    except (ValueError, IntegrityError, struct.error, AttributeError):
        return None


# -- keys and names ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EntryKey:
    """The primary cache key: the URL (no fragment) and the service the entry belongs to."""

    url: str
    service: str

    @property
    def logical(self) -> str:
        return f"{self.url}#{self.service}"


def entry_key(url: URL, service: str | None) -> EntryKey:
    return EntryKey(str(url.with_fragment(None)), service or NO_SERVICE)


class CacheStore:
    """Reads and writes entries in a backend, with a small decoded "hot" cache in front.

    Args:
        settings: ``settings.network`` and ``encryption_key``.
        backend: where the entries live.
        metrics: returns the counters to update (they may be replaced by a reset).
    """

    def __init__(self, settings: Settings, backend: CacheBackend, metrics: Callable[[], NetworkMetrics]) -> None:
        self.net = settings.network
        self.backend = backend
        self._metrics = metrics
        self.sealer = Sealer.from_settings(settings, PURPOSE)
        #: an entry decodes to at most this many bytes (one response at its limit + its header)
        self.max_raw = self.net.max_response_bytes + _HEADER_ROOM
        #: decoded entries, kept for ``hot_cache_ttl_s`` (seconds of this process's monotonic clock)
        self._hot: ByteLRU[list[StoredResponse]] = ByteLRU(max(0, self.net.hot_cache_max_bytes), clock=time.monotonic)

    # -- names ----------------------------------------------------------------------------------
    def name(self, key: EntryKey) -> str:
        """The backend name of an entry (keyed hashes when an encryption key is configured)."""
        if self.sealer is None:
            return key.logical
        return f"{self.sealer.keyed_name('url ' + key.url)}.{self.sealer.keyed_name('service ' + key.service)[:32]}"

    def url_prefix(self, url: str) -> str:
        """The name prefix shared by every service's entry of ``url``."""
        return f"{url}#" if self.sealer is None else f"{self.sealer.keyed_name('url ' + url)}."

    # -- the hot cache ----------------------------------------------------------------------------
    def _hot_put(self, logical: str, variants: list[StoredResponse]) -> None:
        if self.net.hot_cache_max_bytes <= 0 or self.net.hot_cache_ttl_s <= 0:
            return
        self._hot.set(logical, variants, self.net.hot_cache_ttl_s, size=sum(len(v.body) + 512 for v in variants))

    def load_hot(self, key: EntryKey) -> list[StoredResponse]:
        """The variants of ``key`` held decoded in the hot cache ([] when it holds none; the
        backend is not read)."""
        return self._hot.get(key.logical) or []

    # -- reading and writing --------------------------------------------------------------------------
    async def load(self, key: EntryKey) -> list[StoredResponse]:
        """The stored variants of ``key`` ([] on a miss, a refused entry or a backend failure)."""
        logical = key.logical
        hot = self._hot.get(logical)
        if hot is not None:
            return hot
        name = self.name(key)
        try:
            raw = await self.backend.get(name)
            if not raw:
                return []
            variants = unpack(raw, logical, sealer=self.sealer, aad=name.encode(), max_raw=self.max_raw)
        except BadEntry as e:
            self._metrics().cache_errors += 1
            logger.warning("cache entry %s refused (%s); treated as a miss and deleted", name[:200], e)
            await self._delete_quietly(name)
            return []
        except Exception as e:  # noqa: BLE001 - the cache never fails a request
            self._metrics().cache_errors += 1
            logger.warning("cache read of %s failed: %s: %s", name[:200], type(e).__name__, e)
            return []
        if variants:
            self._hot_put(logical, variants)
        return variants

    async def save(self, key: EntryKey, entry: StoredResponse) -> bool:
        """Store ``entry`` beside the other variants of ``key``; False when it was not stored."""
        m = self._metrics()
        name = self.name(key)
        entry = dataclasses.replace(entry, headers=without(entry.headers, *NEVER_STORED_HEADERS))
        try:
            variants = [v for v in await self.load(key) if set(v.vary) == set(entry.vary) and v.vary != entry.vary]
            variants = (variants + [entry])[-self.net.cache_max_variants :]
            while True:
                try:
                    data = pack(variants, key.logical, sealer=self.sealer, aad=name.encode(), max_raw=self.max_raw)
                    break
                except BadEntry:
                    if len(variants) == 1:
                        m.not_stored += 1
                        return False
                    variants = variants[1:]  # the oldest variants go first
            if len(data) > self.net.cache_max_entry_bytes:
                m.not_stored += 1
                logger.debug("not stored %s: %d bytes is over cache_max_entry_bytes", key.url, len(data))
                return False
            ttls = [v.ttl(self.net.keep_stale_s) for v in variants]
            ttl = min(math.inf if any(t is None for t in ttls) else max(ttls), self.net.max_cache_ttl_s)  # type: ignore[type-var]
            if ttl <= 0:
                self._hot.delete(key.logical)
                await self.backend.delete(name)
                return False
            self._hot_put(key.logical, variants)
            await self.backend.set(name, data, ttl)
            m.stored += 1
            return True
        except Exception as e:  # noqa: BLE001 - the cache never fails a request
            m.cache_errors += 1
            logger.warning("cache write of %s failed: %s: %s", key.url, type(e).__name__, e)
            return False

    async def drop_url(self, url: str) -> int:
        """Drop every service's entry of ``url``; returns how many."""
        self._hot.delete_prefix(f"{url}#")
        return await self.backend.delete_prefix(self.url_prefix(url))

    async def drop_prefix(self, prefix: str) -> int:
        """Drop every entry whose URL starts with ``prefix``; returns how many.

        With hashed names the backend's names say nothing of the URL: each entry is opened to read
        the key it names (an admin operation, linear in the cache's size).
        """
        self._hot.delete_prefix(prefix)
        if self.sealer is None:
            return await self.backend.delete_prefix(prefix)
        n = 0
        for name in await self.backend.names():
            data = await self.backend.get(name)
            logical = entry_key_of(data, sealer=self.sealer, aad=name.encode(), max_raw=self.max_raw) if data else None
            if logical is not None and logical.startswith(prefix):
                n += await self.backend.delete(name)
        return n

    async def _delete_quietly(self, name: str) -> None:
        try:
            await self.backend.delete(name)
        except Exception as e:  # noqa: BLE001 - a failed delete of a dead entry must not fail the request
            logger.warning("could not delete refused cache entry %s: %s", name[:200], e)


__all__ = ["CacheStore", "EntryKey", "entry_key", "PURPOSE", "NO_SERVICE", "pack", "unpack", "entry_key_of", "BadEntry"]
