"""The optimized HTTP client: SSRF guard → cache (RFC 9111/5861) → coalescing → pooled aiohttp.

:class:`OptimizedClient` is the engine's core. The network actor runs one (so caching and
coalescing are shared by the whole cluster); a process may also run its own (coalescing within
the process, cache in this process or in any backend given).

Example:
    >>> import asyncio
    >>> from cognopt_ray.config import Settings
    >>> async def main():
    ...     client = OptimizedClient(Settings.load(network={"allowlist": ["127.0.0.1"]}))
    ...     try:
    ...         r = await client.request("http://127.0.0.1:8080/data")
    ...         return r.status, r.cache_status
    ...     finally:
    ...         await client.close()
    >>> asyncio.run(main())   # doctest: +SKIP
    (200, 'MISS')
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from pydantic import ValidationError
from yarl import URL

from cognopt_ray.config import NetworkServiceSettings, Settings, check_service_name
from cognopt_ray.errors import CognoptError, InvalidInput
from cognopt_ray.network import encoding, proxying
from cognopt_ray.network.backends import CacheBackend, LocalBackend
from cognopt_ray.network.entries import CacheStore, EntryKey, entry_key
from cognopt_ray.network.errors import BadGateway, InvalidRequest, OriginTimeout, UrlRefused
from cognopt_ray.network.guard import GuardedResolver, SsrfGuard
from cognopt_ray.network.messages import (
    METHODS,
    REDIRECTS,
    Inflight,
    NetworkRequest,
    NetworkResponse,
    OriginReply,
    Outcome,
    PoolConfig,
    PoolSlot,
    check_method,
    clean_headers,
    default_lifetime,
    entry_fresh_for,
    from_entry,
    from_origin,
    request_timeout,
)
from cognopt_ray.network.metrics import NetworkMetrics
from cognopt_ray.network.origin import fetch
from cognopt_ray.network.rules import (
    CREDENTIAL_HEADERS,
    NEVER_STORED_HEADERS,
    STRATEGY_LIFETIME_S,
    STRATEGY_ORDER,
    StoredResponse,
    clamp_strategy,
    header,
    invalidates,
    parse_cache_control,
    storable,
    vary_key,
    vary_names,
    without,
)

logger = logging.getLogger(__name__)


class NotCached(Exception):
    """A ``cache_only`` request that is not a fresh hit of the hot cache (the actor call answers it)."""


STALE_WARNING, FAILED_WARNING = '110 - "Response is Stale"', '111 - "Revalidation Failed"'


class OptimizedClient:
    """HTTP client with a shared RFC 9111 cache, request coalescing, pooling and an SSRF guard.

    Args:
        settings: the settings (``settings.network`` and per-service ``network`` blocks).
        backend: where entries live; default an LRU in this process.
        metrics: counters to update (a fresh set by default).

    Example:
        >>> client = OptimizedClient(Settings.load())            # doctest: +SKIP
        >>> r = await client.request("https://example.org/")     # doctest: +SKIP
        >>> r.cache_status                                       # doctest: +SKIP
        'MISS'
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        backend: CacheBackend | None = None,
        metrics: NetworkMetrics | None = None,
    ) -> None:
        self.settings = settings or Settings.load()
        self.net = self.settings.network
        self.guard = SsrfGuard(self.net.allowlist)
        self.backend: CacheBackend = backend or LocalBackend(self.net.cache_max_bytes)
        self.metrics = metrics or NetworkMetrics()
        self.pool = PoolConfig(
            limit=self.net.pool_limit,
            limit_per_host=self.net.pool_limit_per_host,
            keepalive_timeout_s=self.net.keepalive_timeout_s,
        )
        self.services: dict[str, NetworkServiceSettings] = {}
        self.store = CacheStore(self.settings, self.backend, lambda: self.metrics)
        #: request headers that carry credentials: not sent across origins, not cached for others
        self.credential_headers = CREDENTIAL_HEADERS | {h.lower() for h in self.net.credential_headers}
        self._slot: PoolSlot | None = None
        self._inflight: dict[tuple, Inflight] = {}
        self._background: set[asyncio.Task] = set()
        self._closed = False

    # -- settings ---------------------------------------------------------------------------------
    def service_settings(self, service: str | None) -> NetworkServiceSettings:
        """The effective network settings of ``service`` (runtime overrides first)."""
        if service is None:
            return self.settings.default_service.network
        try:
            check_service_name(service)
        except ValueError as e:
            raise InvalidInput(str(e), hint="use a service name like 'ai_models'") from None
        return self.services.get(service) or self.settings.service(service).network

    def set_service(self, service: str, **params: Any) -> NetworkServiceSettings:
        """Change a service's ``cache_strategy``, ``compression_level``, ``compress_request_bodies``.

        Raises:
            InvalidInput: unknown parameter or value; nothing changes.
        """
        current = self.service_settings(service)
        try:
            new = NetworkServiceSettings(**{**current.model_dump(), **params})
        except ValidationError as e:
            msg = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
            raise InvalidInput(
                f"invalid network settings for service {service!r}: {msg}",
                hint="parameters: cache_strategy (no_cache, short_term, medium_term, long_term, "
                "persistent), compression_level (none, fast, balanced, max), compress_request_bodies",
            ) from None
        self.services[service] = new
        return new

    # -- the pool -----------------------------------------------------------------------------------
    def _new_session(self) -> aiohttp.ClientSession:
        trace = aiohttp.TraceConfig()

        async def created(*_: Any) -> None:
            self.metrics.connections_created += 1

        async def reused(*_: Any) -> None:
            self.metrics.connections_reused += 1

        trace.on_connection_create_end.append(created)
        trace.on_connection_reuseconn.append(reused)
        connector = aiohttp.TCPConnector(
            limit=self.pool.limit,
            limit_per_host=self.pool.limit_per_host,
            keepalive_timeout=self.pool.keepalive_timeout_s,
            enable_cleanup_closed=True,
            resolver=GuardedResolver(self.guard),
            ttl_dns_cache=10,
        )
        return aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            trace_configs=[trace],
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )

    def _acquire(self) -> PoolSlot:
        if self._closed:
            raise CognoptError("the client is closed")
        if self._slot is None:
            self._slot = PoolSlot(self._new_session())
        self._slot.inflight += 1
        return self._slot

    async def _release(self, slot: PoolSlot) -> None:
        slot.inflight -= 1
        if slot.retired and slot.inflight == 0:
            await slot.session.close()

    async def configure_pooling(
        self, limit: int | None = None, limit_per_host: int | None = None, keepalive_timeout_s: float | None = None
    ) -> PoolConfig:
        """Replace the connection pool; requests in flight finish on the old one, which closes after.

        Raises:
            InvalidInput: a value out of range; the pool is unchanged.
        """
        params = {
            k: v
            for k, v in {
                "limit": limit,
                "limit_per_host": limit_per_host,
                "keepalive_timeout_s": keepalive_timeout_s,
            }.items()
            if v is not None
        }
        try:
            new = PoolConfig(**{**self.pool.model_dump(), **params})
        except ValidationError as e:
            msg = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
            raise InvalidInput(
                f"invalid pool settings: {msg}", hint="limit and limit_per_host >= 0, keepalive_timeout_s > 0"
            ) from None
        self.pool = new
        old, self._slot = self._slot, None
        if old is not None:
            old.retired = True
            if old.inflight == 0:
                await old.session.close()
        return new

    def pool_stats(self) -> dict[str, Any]:
        return {**self.pool.model_dump(), "in_flight": self._slot.inflight if self._slot else 0}

    async def close(self) -> None:
        """Close the pool and stop background revalidations."""
        self._closed = True
        for t in list(self._background):
            t.cancel()
        if self._slot is not None:
            await self._slot.session.close()
            self._slot = None

    # -- public entry ----------------------------------------------------------------------------------
    async def request(
        self,
        url: str,
        method: str = "GET",
        headers: dict[str, str] | list | None = None,
        body: bytes | str | None = None,
        *,
        service: str | None = None,
        cache_strategy: str | None = None,
        compression_level: str | None = None,
        follow_redirects: bool = True,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> NetworkResponse:
        """Perform a request through guard, cache, coalescing and the pool (see :meth:`send`)."""
        data = body.encode() if isinstance(body, str) else body
        return await self.send(
            NetworkRequest(
                url,
                method,
                list(headers.items()) if isinstance(headers, dict) else list(headers or []),
                data,
                service,
                cache_strategy,
                compression_level,
                follow_redirects,
                request_id,
                timeout_s,
            )
        )

    async def send(self, req: NetworkRequest, *, cache_only: bool = False) -> NetworkResponse | None:
        """Perform ``req`` through guard, cache, coalescing and the pool.

        With ``cache_only`` (the same-node socket path, :mod:`~cognopt_ray.network.local_socket`)
        the answer is a fresh hit from the decoded hot cache or None: the backend and the origin
        are never asked, and nothing is counted unless a hit is returned.

        The cache is partitioned by ``req.service``. ``req.cache_strategy`` may ask for less
        caching than the service's configured strategy, never more (it is clamped to it).
        ``req.timeout_s`` shortens the total origin timeout (never lengthens it). In proxy mode
        (``req.proxy``) the client's conditionals and ``Range`` are answered from the cache.

        Raises:
            InvalidRequest: invalid method, URL or header (422).
            UrlRefused: the SSRF guard refused the URL or a redirect hop (403).
            OriginTimeout: the origin timed out, or a must-revalidate entry could not be revalidated (504).
            BadGateway: the origin refused the connection, sent too much, or redirected too often (502).
        """
        t0 = time.perf_counter()
        url, service, timeout_s = req.url, req.service, req.timeout_s
        method = check_method(req.method, any_method=req.proxy)
        hdrs = clean_headers(req.headers)
        svc = self.service_settings(service)
        level = req.compression_level or svc.compression_level
        if req.cache_strategy is not None and req.cache_strategy not in STRATEGY_ORDER:
            raise InvalidRequest(
                f"cache_strategy {req.cache_strategy!r} is unknown",
                hint="use no_cache, short_term, medium_term, long_term or persistent",
            )
        strategy = clamp_strategy(req.cache_strategy, svc.cache_strategy)
        if level not in encoding.LEVELS and level != "none":
            raise InvalidRequest(f"compression_level {level!r} is unknown", hint="use none, fast, balanced or max")
        if timeout_s is not None and not (0 < timeout_s <= 3600):
            raise InvalidRequest(f"timeout_s {timeout_s!r} must be > 0 and <= 3600")
        request_timeout.set(min(timeout_s, self.net.total_timeout_s) if timeout_s else None)
        default_lifetime.set(req.default_lifetime)
        data = req.body
        if data is not None and len(data) > self.settings.max_body_bytes:
            from cognopt_ray.errors import PayloadTooLarge

            raise PayloadTooLarge(
                f"request body of {len(data)} bytes is over the limit of {self.settings.max_body_bytes}",
                hint="send a smaller body or raise max_body_bytes",
            )
        client_hdrs = hdrs
        if req.proxy and method in ("GET", "HEAD"):  # answered from the cache: a miss fetches it all
            hdrs = without(hdrs, *proxying.CLIENT_CONDITIONALS)
        follow = req.follow_redirects
        try:
            checked = self.guard.check_url(url)
        except UrlRefused:
            if not cache_only:
                self.metrics.refused += 1
            raise
        current, redirects = checked.url, []
        while True:
            try:
                res = await self._one(current, method, hdrs, data, strategy, level, svc, service, cache_only)
            except UrlRefused:
                self.metrics.refused += 1
                raise
            except NotCached:
                return None
            location = header(res.headers, "location")
            if not (follow and res.status in REDIRECTS and location):
                break
            if cache_only:
                return None  # the hops after it are the actor call's
            self.metrics.saved(res.plain_wire, res.wire)  # a hop before the answer
            if len(redirects) >= self.net.max_redirects:
                raise BadGateway(
                    f"more than {self.net.max_redirects} redirects starting at {url[:200]!r}",
                    hint="request the final URL directly or raise settings.network.max_redirects",
                )
            try:
                nxt = current.join(URL(location))
            except ValueError:
                raise BadGateway(f"the origin redirected to an invalid URL {location[:200]!r}") from None
            try:
                nxt_checked = self.guard.check_url(nxt)
            except UrlRefused:
                self.metrics.refused += 1
                raise
            if res.status == 303 or (res.status in (301, 302) and method == "POST"):
                method, data = "GET", None
                hdrs = without(hdrs, "content-type")
            if nxt_checked.url.origin() != current.origin():  # no credential crosses to another origin
                hdrs = [(k, v) for k, v in hdrs if k.lower() not in self.credential_headers]
            redirects.append(str(nxt_checked.url))
            current = nxt_checked.url
        self.metrics.record(
            res.cache_status, served=len(res.body), plain_wire=res.plain_wire, wire=res.wire, coalesced=res.coalesced
        )
        fresh_for = 0.0 if redirects else max(0.0, min(res.fresh_for, 1e9))
        status, headers, body = res.status, res.headers, res.body
        if req.proxy:
            status, headers, body = proxying.answer(method, client_hdrs, status, headers, body)
        field = proxying.cache_status_field(
            res.cache_status,
            method=method,
            fwd_status=None if res.cache_status in ("HIT", "STALE") else res.status,
            stored=res.stored,
            collapsed=res.coalesced,
            ttl=fresh_for if res.cache_status == "HIT" else None,
        )
        return NetworkResponse(
            request_id=req.request_id,
            url=str(current),
            status=status,
            headers=without(headers, "cache-status") + [("Cache-Status", field)],
            body=body,
            cache_status=res.cache_status,
            coalesced=res.coalesced,
            redirects=redirects,
            timings_ms={"total": (time.perf_counter() - t0) * 1000},
            fresh_for_s=fresh_for,
            plain_wire_bytes=res.plain_wire,
            stored=res.stored,
        )

    async def purge(self, url: str | None = None, prefix: str | None = None) -> int:
        """Drop every service's entry of ``url``, or every entry whose URL starts with ``prefix``;
        returns how many."""
        if bool(url) == bool(prefix):
            raise InvalidInput(
                "give exactly one of url or prefix", hint='{"url": "https://host/path"} or {"prefix": "https://host/"}'
            )
        try:
            if url:
                return await self.store.drop_url(str(URL(url).with_fragment(None)))
            return await self.store.drop_prefix(str(prefix))
        except ValueError as e:
            raise InvalidInput(f"invalid URL: {e}") from None

    # -- one hop ---------------------------------------------------------------------------------------
    async def _one(
        self,
        url: URL,
        method: str,
        hdrs: list[tuple[str, str]],
        data: bytes | None,
        strategy: str,
        level: str,
        svc: NetworkServiceSettings,
        service: str | None,
        cache_only: bool = False,
    ) -> Outcome:
        req_cc = parse_cache_control(header(hdrs, "cache-control"))
        if method == "HEAD" and strategy != "no_cache" and "no-store" not in req_cc:
            head = await self._head_from_cache(url, hdrs, strategy, service, cache_only)
            if head is not None:
                return head
        if cache_only and (method != "GET" or strategy == "no_cache" or "no-store" in req_cc):
            raise NotCached
        if method != "GET" or strategy == "no_cache" or "no-store" in req_cc:
            origin = await self._fetch(url, method, hdrs, data, level, svc)
            if invalidates(method, origin.status):
                await self._invalidate(url, origin.headers)
            return from_origin(origin, "BYPASS")
        key = entry_key(url, service)
        ae = encoding.accept_encoding(level)
        variants = self.store.load_hot(key) if cache_only else await self.store.load(key)
        entry = next((v for v in variants if v.matches(hdrs)), None)
        now = time.time()
        if entry is not None and entry.is_fresh(now, hdrs, cap=STRATEGY_LIFETIME_S[strategy]):
            return from_entry(entry, "HIT", now, plain_wire=entry.plain_wire(ae), fresh=True)
        if cache_only:
            raise NotCached
        # identical requests only: same service (in the key), same headers (credentials included)
        ckey = (key, tuple(sorted((k.lower(), v) for k, v in hdrs)))
        if entry is not None:
            if entry.may_serve_while_revalidating(now) and "no-cache" not in req_cc:
                self._revalidate_in_background(ckey, key, entry, url, hdrs, strategy, level, svc)
                return from_entry(entry, "STALE", now, warning=STALE_WARNING, plain_wire=entry.plain_wire(ae))
            return await self._coalesced(ckey, lambda: self._revalidate(key, entry, url, hdrs, strategy, level, svc))
        return await self._coalesced(ckey, lambda: self._miss(key, url, hdrs, strategy, level, svc))

    async def _head_from_cache(
        self, url: URL, hdrs: list, strategy: str, service: str | None, cache_only: bool = False
    ) -> Outcome | None:
        """A ``HEAD`` answered from a fresh stored ``GET`` response (RFC 9110 9.3.2), or None."""
        now = time.time()
        key = entry_key(url, service)
        for entry in self.store.load_hot(key) if cache_only else await self.store.load(key):
            if entry.matches(hdrs) and entry.is_fresh(now, hdrs, cap=STRATEGY_LIFETIME_S[strategy]):
                return Outcome(entry.status, entry.response_headers(now), b"", "HIT", fresh_for=entry_fresh_for(entry))
        return None

    async def _coalesced(self, ckey: tuple, make: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """Run ``make`` once for concurrent identical requests; the others wait for its result."""
        inflight = self._inflight.get(ckey)
        if inflight is not None:
            inflight.waiters += 1
            try:
                res = await asyncio.wait_for(asyncio.shield(inflight.future), timeout=self.net.coalesce_timeout_s)
            except asyncio.TimeoutError:
                logger.info("coalesced request waited %.1f s; fetching on its own", self.net.coalesce_timeout_s)
                return await make()
            # a waiter never gets the cookie the origin set for the leader
            return Outcome(
                res.status,
                without(res.headers, *NEVER_STORED_HEADERS),
                res.body,
                res.cache_status,
                coalesced=True,
                fresh_for=res.fresh_for,
                plain_wire=res.plain_wire,  # what the leader's answer cost a plain client; nothing to us
            )
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[ckey] = Inflight(fut)
        try:
            res = await make()
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e)
                fut.exception()  # mark retrieved: waiters re-raise it, nobody else needs to
            raise
        else:
            fut.set_result(res)
            return res
        finally:
            self._inflight.pop(ckey, None)

    async def _miss(
        self, key: EntryKey, url: URL, hdrs: list, strategy: str, level: str, svc: NetworkServiceSettings
    ) -> Outcome:
        origin = await self._fetch(url, "GET", hdrs, None, level, svc)
        stored = await self._maybe_store(key, url, hdrs, origin, strategy)
        return from_origin(origin, "MISS", entry_fresh_for(stored), stored=stored is not None)

    async def _revalidate(
        self,
        key: EntryKey,
        entry: StoredResponse,
        url: URL,
        hdrs: list,
        strategy: str,
        level: str,
        svc: NetworkServiceSettings,
        *,
        background: bool = False,
    ) -> Outcome:
        conditional = without(hdrs, "if-none-match", "if-modified-since") + entry.validators()
        now = time.time()
        try:
            origin = await self._fetch(url, "GET", conditional, None, level, svc)
        except (OriginTimeout, BadGateway) as e:
            if entry.may_serve_on_error(now, hdrs):  # a plain client gets no body: the saving is 0
                return from_entry(entry, "STALE", now, warning=FAILED_WARNING)
            if entry.must_revalidate():
                raise OriginTimeout(
                    f"the cached response of {str(url)[:200]!r} must be revalidated and the origin is unreachable ({e.message})",
                    hint="retry when the origin is back",
                    rule="must-revalidate",
                ) from None
            raise
        if origin.status == 304:
            fresh = entry.refreshed(origin.headers, origin.request_time, origin.response_time)
            saved = await self.store.save(key, fresh)
            ae = origin.accept
            return from_entry(
                fresh, "REVALIDATED", plain_wire=fresh.plain_wire(ae), wire=origin.wire, fresh=True, stored=saved
            )
        if origin.status >= 500 and entry.may_serve_on_error(now, hdrs):
            # a plain client gets the error; the saving is 0
            return from_entry(entry, "STALE", now, warning=FAILED_WARNING, plain_wire=origin.wire, wire=origin.wire)
        stored = await self._maybe_store(key, url, hdrs, origin, strategy)
        return from_origin(origin, "MISS", entry_fresh_for(stored), stored=stored is not None)

    def _revalidate_in_background(
        self,
        ckey: tuple,
        key: EntryKey,
        entry: StoredResponse,
        url: URL,
        hdrs: list,
        strategy: str,
        level: str,
        svc: NetworkServiceSettings,
    ) -> None:
        if ckey in self._inflight:
            return

        async def run() -> None:
            self.metrics.background_revalidations += 1
            try:
                res = await self._coalesced(
                    ckey, lambda: self._revalidate(key, entry, url, hdrs, strategy, level, svc, background=True)
                )
                self.metrics.saved(0, res.wire)  # a plain client makes no such request: its bytes cost
            except Exception as e:  # noqa: BLE001 - a background refresh never fails a request
                logger.info("background revalidation of %s failed: %s", url, e)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- storage -----------------------------------------------------------------------------------------
    async def _maybe_store(
        self, key: EntryKey, url: URL, hdrs: list, origin: OriginReply, strategy: str
    ) -> StoredResponse | None:
        ok, why = storable("GET", origin.status, hdrs, origin.headers, strategy, self.credential_headers)
        if not ok:
            self.metrics.not_stored += 1
            logger.debug("not stored %s: %s", url, why)
            return None
        names = vary_names(origin.headers)
        entry = StoredResponse(
            str(url),
            origin.status,
            without(origin.headers, *NEVER_STORED_HEADERS),
            origin.body,
            origin.request_time,
            origin.response_time,
            vary_key(names, hdrs),
            strategy,
            self.net.heuristic_fraction,
            default_lifetime.get(),
            origin.wire,
            origin.accept,
        )
        return entry if await self.store.save(key, entry) else None

    async def _invalidate(self, url: URL, resp_headers: list) -> None:
        """RFC 9111 4.4: every service's entry of the URL (and of same-origin Location targets)."""
        targets = [url]
        for name in ("location", "content-location"):
            v = header(resp_headers, name)
            if v:
                try:
                    other = url.join(URL(v))
                except ValueError:
                    continue
                if other.origin() == url.origin():  # RFC 9111 4.4: same origin only
                    targets.append(other)
        for t in targets:
            try:
                await self.store.drop_url(str(t.with_fragment(None)))
                self.metrics.invalidations += 1
            except Exception as e:  # noqa: BLE001 - invalidation is best effort; the answer stands
                self.metrics.cache_errors += 1
                logger.warning("cache invalidation of %s failed: %s", t, e)

    # -- the origin ---------------------------------------------------------------------------------------
    async def _fetch(
        self, url: URL, method: str, hdrs: list, data: bytes | None, level: str, svc: NetworkServiceSettings
    ) -> OriginReply:
        return await fetch(self, url, method, hdrs, data, level, svc)


__all__ = ["OptimizedClient", "NetworkRequest", "NetworkResponse", "PoolConfig", "METHODS"]
