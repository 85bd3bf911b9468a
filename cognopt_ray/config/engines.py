"""Engine-wide settings: one model per engine, the system layer and its price sheet."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from cognopt_ray.config._base import (
    SERVICE_NAME_PATTERN,
    CacheStrategy,
    KiB,
    MiB,
    Tier,
    _Model,
)
from cognopt_ray.priority import Priority

#: A registered task's name (as ``cpu/optimize-tasks`` accepts it) and a ``cpu.tasks`` import path.
TASK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")
TASK_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class CpuEngineSettings(_Model):
    """Settings of the CPU engine (scheduler, pools, placement). Owned by cognopt_ray.cpu.

    Attributes:
        pipeline_depth: tasks admitted to Ray beyond the cluster's CPUs (per node), so a worker
            finds its next task already queued when it finishes one. 0 gives the lowest
            CRITICAL latency; 1 keeps workers busy between tasks at a cost of at most one task.
        pipeline_budget_s: for short tasks the depth grows so that the queued extra work per node
            stays under this many seconds (``depth = budget * cpus / recent task turnaround``),
            up to ``max_pipeline_depth``; it keeps workers fed when dispatch is slower than tasks,
            and Ray's queue holds a successor for a freeing slot while the scheduler refills it.
            Tasks with ``max_retries=0`` (never withdrawn) are pipelined no deeper than ``pipeline_depth``.
        pack_budget_s: short tasks of one level are run several to a Ray call while their
            estimated run time (a moving average per function) adds up to at most this; it pays
            Ray's per-task cost once per pack. A pack starts no further task once it has run this
            long (the rest is queued again), so a wrong estimate costs at most one task more. Only in throughput mode (``latency_guard_s``); 0: off.
        max_pack: most tasks in one pack.
        latency_guard_s: while a higher level has tasks queued or running, or had one less than
            this many seconds ago, lower-level tasks are admitted without pipelining or packing
            (latency mode), so nothing of theirs queues inside Ray ahead of the higher level.
        aging_interval_s: a task waiting this long moves up one priority level per interval;
            0 turns aging off.
        preemption: allow cancelling ``preemptible=True`` tasks to admit a CRITICAL one.
        io_pool_threads: threads of each node's io pool (io tasks take no CPU slot).
        cpu_affinity: cores the ``cpu`` pool's workers are pinned to on each node (empty: none).
        node_refresh_s: how often the scheduler re-reads the cluster's nodes and CPUs.
        monitor_interval_s: how often each node's psutil monitor is sampled.
        metrics_window_s: the window of the utilisation, efficiency and recommendation figures.
        wait_targets_s: p95 wait per priority level above which a recommendation is raised.
        retry_on_restart: re-run a retriable task whose scheduler call was lost to a scheduler
            restart (at-least-once); tasks with ``max_retries=0`` get an error instead.
        max_queued: refuse new tasks (409) beyond this many queued ones.
        results_kept: finished REST task records kept for ``GET cpu/tasks/{id}``.
        batch_chunk: tasks per scheduler call in ``submit_batch`` (their refs resolve together).
        tasks: tasks the API registers at start for ``POST cpu/optimize-tasks``, name →
            ``"package.module:function"`` (``cognopt serve --task name=package.module:function``);
            a path that does not import stops the start with an error naming it.
    """

    enabled: bool = True
    pipeline_depth: int = Field(default=1, ge=0, le=64)
    pipeline_budget_s: float = Field(default=0.1, ge=0)
    max_pipeline_depth: int = Field(default=32, ge=0, le=1024)
    pack_budget_s: float = Field(default=0.05, ge=0, le=10)
    max_pack: int = Field(default=64, ge=1, le=10_000)
    latency_guard_s: float = Field(default=1.0, ge=0, le=3600)
    aging_interval_s: float = Field(default=5.0, ge=0)
    preemption: bool = True
    io_pool_threads: int = Field(default=32, ge=1, le=4096)
    cpu_affinity: list[int] = Field(default_factory=list)
    node_refresh_s: float = Field(default=1.0, gt=0, le=60)
    monitor_interval_s: float = Field(default=1.0, gt=0, le=60)
    metrics_window_s: float = Field(default=60.0, gt=0)
    wait_targets_s: dict[str, float] = Field(
        default_factory=lambda: {"critical": 0.1, "high": 0.5, "medium": 2.0, "low": 10.0, "background": 60.0}
    )
    retry_on_restart: bool = True
    max_queued: int = Field(default=1_000_000, ge=1)
    results_kept: int = Field(default=10_000, ge=0)
    batch_chunk: int = Field(default=128, ge=1, le=100_000)
    tasks: dict[str, str] = Field(default_factory=dict)

    @field_validator("cpu_affinity")
    @classmethod
    def _cores(cls, v: list[int]) -> list[int]:
        if any(c < 0 for c in v):
            raise ValueError("cpu_affinity holds core numbers >= 0")
        return sorted(set(v))

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: dict[str, str]) -> dict[str, str]:
        for name, path in v.items():
            if not TASK_NAME.fullmatch(name):
                raise ValueError(
                    f"task name {name!r}: 1-128 of A-Z a-z 0-9 _ . - starting with a letter (as in cpu/optimize-tasks)"
                )
            if not isinstance(path, str) or not TASK_PATH.fullmatch(path):
                raise ValueError(f"task {name!r}: {path!r} is not 'package.module:function'")
        return v

    @field_validator("wait_targets_s")
    @classmethod
    def _targets(cls, v: dict[str, float]) -> dict[str, float]:
        out = {}
        for k, t in v.items():
            out[Priority.parse(k).name.lower()] = float(t)
        return out


# ---------------------------------------------------------------------------------------------


class MemoryEngineSettings(_Model):
    """Settings of the memory engine (pools, shared cache, GC tuner). Owned by cognopt_ray.memory.

    Attributes:
        sweep_interval_s: period of the cleanup sweep in the pools actor (expired transient
            allocations, allocations of retired services); 0 switches it off.
        evict_to: ``"module:function"`` called with each evicted transient allocation
            (``fn(service, allocation_id, value, meta)``); by default the storage engine's WARM
            tier (:mod:`cognopt_ray.memory.spill`); ``null`` = evicted data is dropped and counted.
        load_evicted: ``"module:function"`` (``fn(service, allocation_id) -> value``) that a
            ``get`` of an evicted allocation calls; it raises ``KeyError`` when it has nothing.
        delete_evicted: ``"module:function"`` (``fn(service, allocation_id)``) that deletes an
            evicted allocation's copy when it is deallocated, expires, is dropped over
            ``max_spill_bytes`` or its pool is removed.
        cache_max_bytes: capacity of the in-cluster shared-cache backend (LRU by bytes).
        cache_default_ttl_s: TTL of a shared-cache entry when ``set`` gives none (0 = no expiry).
        cache_redis_retry_s: after Redis failed, how long the cache stays on the in-cluster
            backend before it tries Redis again.
        cache_redis_timeout_s: socket timeout of Redis calls; a slower Redis counts as down.
        client_lease_s: how long a client reuses an allocation's object reference before it asks
            the pools actor again (0 = ask on every get). Within the lease a ``get`` costs one
            ``ray.get`` instead of an actor round trip; its hit and LRU touch are reported to the
            actor in batches. An allocation freed by *another* process may still be read through
            an existing lease until it runs out (the bytes are the right ones: ids are never reused).
        gc_tuning: install the GC tuner in every Ray worker (``worker_process_setup_hook``).
        gc_interval_s: period of each worker's tuning pass and report to the engine.
        gc_freeze_after_s: ``gc.freeze()`` this many seconds after a worker starts (0 = never).
        gc_min_threshold0 / gc_max_threshold0: range the tuner keeps ``threshold0`` in.
        gc_pressure_percent: system memory use (psutil) at or above which the tuner collects
            more often.
        gc_plenty_percent: memory use at or below which memory counts as plentiful.
    """

    enabled: bool = True
    sweep_interval_s: float = Field(default=30.0, ge=0, le=86400)
    evict_to: str | None = Field(
        default="cognopt_ray.memory.spill:evict_to_warm", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
    )
    load_evicted: str | None = Field(
        default="cognopt_ray.memory.spill:load_from_warm", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
    )
    delete_evicted: str | None = Field(
        default="cognopt_ray.memory.spill:delete_from_warm", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
    )
    cache_max_bytes: int = Field(default=256 * MiB, ge=1 * KiB, le=1024 * 1024 * MiB)
    cache_default_ttl_s: float = Field(default=3600.0, ge=0, le=365 * 86400)
    cache_redis_retry_s: float = Field(default=2.0, gt=0, le=3600)
    cache_redis_timeout_s: float = Field(default=1.0, gt=0, le=60)
    client_lease_s: float = Field(default=1.0, ge=0, le=3600)
    gc_tuning: bool = True
    gc_interval_s: float = Field(default=10.0, gt=0, le=3600)
    gc_freeze_after_s: float = Field(default=0.0, ge=0, le=86400)
    gc_min_threshold0: int = Field(default=700, ge=10, le=1_000_000)
    gc_max_threshold0: int = Field(default=50_000, ge=10, le=10_000_000)
    gc_pressure_percent: float = Field(default=85.0, gt=0, le=100)
    gc_plenty_percent: float = Field(default=60.0, gt=0, le=100)


# ---------------------------------------------------------------------------------------------


class ObjectStoreSettings(_Model):
    """How ``s3://`` roots (tier roots, the catalog journal, the backup repository) are reached.

    Credentials never go here nor into URIs: pyarrow's S3 client reads them from the environment
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``) or
    the instance's role. A root URI carrying ``access_key=``/``secret_key=``/``session_token=`` or
    ``user:password@`` is refused at start.

    Attributes:
        endpoint_override: ``host:port`` (or ``http(s)://host:port``) of an S3-compatible store
            (MinIO, Ceph RGW, R2, GCS's XML API...); unset: AWS (or ``AWS_ENDPOINT_URL``).
        scheme: ``https`` or ``http`` (``http`` only for a store on a trusted network or 127.0.0.1).
        region: the bucket's region (unset: pyarrow resolves it, ``AWS_DEFAULT_REGION``).
        allow_bucket_creation: create a missing bucket (off: a missing bucket is a clear 502).
        connect_timeout_s / request_timeout_s: per S3 request.
        retry_attempts: attempts per S3 request (AWS standard retry: 5xx, throttling, timeouts).
    """

    endpoint_override: str | None = None
    scheme: Literal["https", "http"] = "https"
    region: str | None = None
    allow_bucket_creation: bool = False
    connect_timeout_s: float = Field(default=5.0, gt=0, le=600)
    request_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    retry_attempts: int = Field(default=3, ge=1, le=20)


class StorageEngineSettings(_Model):
    """Settings of the storage engine (tiers, codecs, lifecycle, backups). Owned by cognopt_ray.storage.

    Attributes:
        tier_roots: tier -> folder or pyarrow.fs URI; unset tiers use ``<storage_root>/tiers/<tier>``.
        backup_root: the backup chunk repository (folder or URI); default ``<storage_root>/backups``.
        inline_max_bytes: stored payloads up to this size live in the catalog (group commit).
        tier_capacity_bytes: tier -> capacity; above it the lifecycle demotes the lowest-scored items.
        min_free_bytes: a local tier refuses writes (507) that would leave less free space than this.
        lifecycle_enabled / lifecycle_interval_s: the background tiering loop.
        lrfu_half_life_s: half-life of the recency-and-frequency score (LRFU).
        promote_score: cold/archive items whose score reaches this move up to warm.
        hot_promote_score: warm items whose score reaches this move to hot (0 = never).
        archive_chunk_avg / backup_chunk_avg: FastCDC average chunk sizes.
        backup_pack_bytes: target size of a backup pack file.
        dictionary_bytes / dictionary_min_samples: per-service zstd dictionary training.
        progress: tqdm bars for long runs when on a terminal.
        default_quota_bytes: stored bytes per service when its ``storage.quota_bytes`` is unset
            (``None`` = unlimited); a put over the quota is refused with 507 and writes nothing.
        backup_source_roots: folders (or URIs) that ``storage/backup`` may read; default
            ``<storage_root>/backup-sources``. Sources must sit inside one (realpath, no symlinks).
        restore_roots: folders (or URIs) that ``storage/restore`` may write into; default
            ``<storage_root>/restores``.
        s3: how ``s3://`` roots are reached (:class:`ObjectStoreSettings`).
        journal: the catalog journal in the root (:mod:`cognopt_ray.storage.journal`): ``on``,
            ``off``, or ``auto`` (on when a tier root or ``journal_root`` is not a local folder).
            With it, every acknowledged change is written to the root before it is answered, and a
            node with an empty local catalog rebuilds it from there.
        journal_root: where the journal lives (folder or URI); default ``<warm tier root>/catalog``.
        journal_checkpoint_every: journal entries after which a checkpoint (the whole catalog in
            one object) replaces them.
            A URI source or target must equal or sit under a URI root here, with the same query
            (``endpoint_override`` and the like) exactly. Tier roots and the backup repository are
            themselves settings and are never taken from a request.
    """

    enabled: bool = True
    tier_roots: dict[Tier, str] = Field(default_factory=dict)
    backup_root: str | None = None
    inline_max_bytes: int = Field(default=64 * KiB, ge=0, le=16 * MiB)
    tier_capacity_bytes: dict[Tier, int] = Field(default_factory=dict)
    min_free_bytes: int = Field(default=16 * MiB, ge=0)
    lifecycle_enabled: bool = True
    lifecycle_interval_s: float = Field(default=300.0, gt=0)
    lrfu_half_life_s: float = Field(default=86400.0, gt=0)
    promote_score: float = Field(default=4.0, gt=0)
    hot_promote_score: float = Field(default=0.0, ge=0)
    archive_chunk_avg: int = Field(default=256 * KiB, ge=4 * KiB, le=4 * MiB)
    backup_chunk_avg: int = Field(default=64 * KiB, ge=4 * KiB, le=4 * MiB)
    backup_pack_bytes: int = Field(default=16 * MiB, ge=64 * KiB, le=1024 * MiB)
    dictionary_bytes: int = Field(default=32 * KiB, ge=1 * KiB, le=1 * MiB)
    dictionary_min_samples: int = Field(default=64, ge=16)
    progress: bool = True
    default_quota_bytes: int | None = Field(default=None, ge=0)
    backup_source_roots: list[str] = Field(default_factory=list)
    restore_roots: list[str] = Field(default_factory=list)
    s3: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    journal: Literal["auto", "on", "off"] = "auto"
    journal_root: str | None = None
    journal_checkpoint_every: int = Field(default=1000, ge=10, le=1_000_000)


# ---------------------------------------------------------------------------------------------


class UpstreamSettings(_Model):
    """An origin the caching reverse proxy fronts (``network/proxy/{name}/{path}``).

    Attributes:
        url: the origin's base URL (``http`` or ``https``); the request path is appended to it.
            The SSRF guard checks it like every outbound URL (a private address needs the allowlist).
        service: the service whose cache partition, settings and keys the upstream belongs to; a
            key needs the scope ``service:<service>`` (or ``admin``) to use it.
        strategy_cap: the most caching allowed for this upstream (the service's strategy is
            clamped to it).
        default_lifetime: when the origin gives no freshness (no max-age, Expires nor
            Last-Modified), use the strategy's lifetime; off by default, so the proxy behaves as
            a plain RFC 9111 shared cache (such responses are not reused without revalidation).
        timeout_s: total origin timeout for this upstream (at most ``total_timeout_s``).
        follow_redirects: follow the upstream's redirects in the engine (each hop checked by the
            SSRF guard) instead of passing them to the client (the default, as reverse proxies do).
    """

    url: str = Field(..., min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")
    service: str = Field(..., pattern=SERVICE_NAME_PATTERN)
    strategy_cap: CacheStrategy = "persistent"
    default_lifetime: bool = False
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    follow_redirects: bool = False


class NetworkEngineSettings(_Model):
    """Settings of the network engine (HTTP cache, client, SSRF guard, assets). Owned by cognopt_ray.network.

    Attributes:
        allowlist: host names, IP addresses or CIDRs that outbound requests may reach even when
            they are not global (e.g. ``["127.0.0.1", "10.0.0.0/8", "api.internal"]``). Every
            other destination must resolve to global addresses only.
        max_redirects: redirects followed (each hop checked by the SSRF guard) before a 502.
        max_response_bytes: origin bodies above this are refused (502) while they stream in.
        connect_timeout_s / total_timeout_s: per origin request; a timeout answers 504.
        pool_limit / pool_limit_per_host / keepalive_timeout_s: the aiohttp connection pool.
        coalesce_timeout_s: how long identical concurrent misses wait for the leader's response.
        cache_backend: ``auto`` (Redis when ``redis_url`` is set, else in-cluster), ``redis``,
            ``in_cluster``.
        cache_max_bytes: size of the in-cluster LRU (bytes of compressed entries).
        cache_max_entry_bytes: entries larger than this (compressed) are not cached.
        cache_max_variants: ``Vary`` variants kept per URL.
        keep_stale_s: extra time a stale entry with validators is kept so it can be revalidated.
        redis_namespace: prefix of every Redis key the cache writes.
        redis_retry_s: while Redis is down, how often to try it again.
        hot_cache_max_bytes / hot_cache_ttl_s: decoded entries kept in the engine's memory in front
            of the backend (0 bytes disables it); an entry read from the backend is reused for at
            most ``hot_cache_ttl_s`` before the backend is read again (other writers of a shared
            Redis are seen after that long at most). The engine's own writes and purges update it at once.
        local_socket: the network actor answers hits of its hot cache over a Unix socket (mode
            0600 in a 0700 folder) to engine clients on its node, which skips the Ray actor call
            (about 1 ms on a small machine) for those; off, every request is an actor call.
        near_cache_ttl_s / near_cache_max_bytes: each process's engine client keeps fresh answers
            for at most this long (and never past their freshness), so a repeated hit skips the
            actor call; a purge or an unsafe request made elsewhere is seen after at most this
            long. 0 disables it.
        heuristic_fraction: heuristic freshness = this × (Date − Last-Modified) (RFC 9111 4.2.2).
        maintenance_interval_s: how often the engine drops expired entries of the in-cluster cache
            and exports its counters as Ray metrics (0 turns the loop off).
        assets_dir: a folder built by ``cognopt assets build`` that ``GET network/assets/...`` serves.
        api_compression_min_bytes: API responses at least this large are compressed.
        credential_headers: request header names that carry credentials, beyond the built-in
            ``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``X-Api-Key``, ``Api-Key`` and
            ``X-Auth-Token``: a response to a request carrying one is cached only when it says
            ``public`` or ``s-maxage``, and they are dropped on cross-origin redirects.
        max_cache_ttl_s: the longest a cache entry lives in its backend (Redis TTL), whatever the
            strategy (``persistent`` included) or the origin says.
        upstreams: origins served by the caching reverse proxy, by name
            (``/api/v0/optimization/network/proxy/{name}/{path}``; see :class:`UpstreamSettings`).
    """

    enabled: bool = True
    allowlist: list[str] = Field(default_factory=list)
    max_redirects: int = Field(default=5, ge=0, le=50)
    max_response_bytes: int = Field(default=32 * MiB, ge=1, le=16 * 1024 * MiB)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=600)
    total_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    pool_limit: int = Field(default=100, ge=0, le=100_000)
    pool_limit_per_host: int = Field(default=20, ge=0, le=100_000)
    keepalive_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    coalesce_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    cache_backend: Literal["auto", "redis", "in_cluster"] = "auto"
    cache_max_bytes: int = Field(default=256 * MiB, ge=1 * KiB)
    cache_max_entry_bytes: int = Field(default=8 * MiB, ge=1 * KiB)
    cache_max_variants: int = Field(default=8, ge=1, le=256)
    keep_stale_s: float = Field(default=3600.0, ge=0)
    redis_namespace: str = Field(default="cognopt:net:v1:", min_length=1, max_length=128)
    redis_retry_s: float = Field(default=2.0, gt=0, le=3600)
    heuristic_fraction: float = Field(default=0.1, ge=0, le=1)
    hot_cache_max_bytes: int = Field(default=64 * MiB, ge=0)
    hot_cache_ttl_s: float = Field(default=5.0, ge=0, le=3600)
    local_socket: bool = True
    near_cache_ttl_s: float = Field(default=1.0, ge=0, le=60)
    near_cache_max_bytes: int = Field(default=16 * MiB, ge=0)
    maintenance_interval_s: float = Field(default=30.0, ge=0, le=86400)
    assets_dir: str | None = None
    api_compression_min_bytes: int = Field(default=1 * KiB, ge=0)
    credential_headers: list[str] = Field(default_factory=list)
    max_cache_ttl_s: float = Field(default=30 * 86400.0, gt=0, le=10 * 365 * 86400.0)
    upstreams: dict[str, UpstreamSettings] = Field(default_factory=dict)

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, v: dict[str, UpstreamSettings]) -> dict[str, UpstreamSettings]:
        bad = [n for n in v if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", n)]
        if bad:
            raise ValueError(f"upstream names {bad} are invalid: use 1-63 characters A-Z, a-z, 0-9, _, . and -")
        return v

    @field_validator("credential_headers")
    @classmethod
    def _credential_headers(cls, v: list[str]) -> list[str]:
        bad = [h for h in v if not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", h)]
        if bad:
            raise ValueError(f"credential_headers entries {bad} are not HTTP header names")
        return [h.lower() for h in v]

    @field_validator("allowlist")
    @classmethod
    def _allowlist(cls, v: list[str]) -> list[str]:
        import ipaddress

        out = []
        for item in v:
            item = item.strip().lower()
            if not item:
                continue
            if any(c.isdigit() for c in item[:1]) or ":" in item or "/" in item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"allowlist entry {item!r} is not a host name, IP address or CIDR") from None
            elif not re.match(r"^[a-z0-9*]([a-z0-9.*-]{0,252})$", item):
                raise ValueError(f"allowlist entry {item!r} is not a host name, IP address or CIDR")
            out.append(item)
        return out


class PriceSheet(_Model):
    """Monthly prices the savings report multiplies the measured quantities by (USD by default).

    Defaults are round on-demand list prices of a general-purpose cloud VM and object storage
    (2025): a vCPU about $25/month, a GiB of RAM about $3.50/month, a GiB of block/object storage
    about $0.08/month, a GB of internet egress about $0.09. Override them for your provider.
    """

    currency: str = "USD"
    vcpu_month: float = Field(default=25.0, ge=0)
    ram_gib_month: float = Field(default=3.5, ge=0)
    storage_gib_month: float = Field(default=0.08, ge=0)
    egress_gb: float = Field(default=0.09, ge=0)


class SystemSettings(_Model):
    """Settings of the system layer (metrics, automation, cleanup, report). Owned by cognopt_ray.system.

    Attributes:
        automation_enabled: start the automation loops with the ``cognopt.system`` actor.
        gc_interval_s / tiering_interval_s / cache_sweep_interval_s / pool_sweep_interval_s /
            scheduler_check_interval_s: period of each automation loop (0 switches it off).
        efficiency_weights: weights of each engine's score in ``overall_efficiency``.
        quarantine_retention_s: cleaned-up items stay restorable this long, then are purged.
        snapshot_keep_last: snapshots beyond the newest N are quarantined by ``system/cleanup``.
        critical_p99_target_s: the CRITICAL p99 wait the report's core count must keep.
        report_window_s: the window the report describes (the month is scaled from it).
        prices: the price sheet of the report.
    """

    automation_enabled: bool = True
    gc_interval_s: float = Field(default=300.0, ge=0)
    tiering_interval_s: float = Field(default=600.0, ge=0)
    cache_sweep_interval_s: float = Field(default=60.0, ge=0)
    pool_sweep_interval_s: float = Field(default=60.0, ge=0)
    scheduler_check_interval_s: float = Field(default=30.0, ge=0)
    efficiency_weights: dict[str, float] = Field(
        default_factory=lambda: {"cpu": 0.25, "memory": 0.25, "storage": 0.25, "network": 0.25}
    )
    quarantine_retention_s: float = Field(default=7 * 86400.0, ge=0)
    snapshot_keep_last: int = Field(default=10, ge=1)
    critical_p99_target_s: float = Field(default=0.5, gt=0)
    report_window_s: float = Field(default=3600.0, gt=0)
    prices: PriceSheet = Field(default_factory=PriceSheet)

    @field_validator("efficiency_weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = set(v) - {"cpu", "memory", "storage", "network"}
        if bad or any(w < 0 for w in v.values()) or not any(w > 0 for w in v.values()):
            raise ValueError("efficiency_weights: keys cpu/memory/storage/network, weights >= 0, at least one > 0")
        return v


# ---------------------------------------------------------------------------------------------
