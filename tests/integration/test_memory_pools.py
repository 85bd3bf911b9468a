"""Memory pools on a real Ray: zero-copy gets, blocks, LRU eviction, quotas, resize, restart, GC."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest

from cognopt_ray.config import Settings
from cognopt_ray.errors import Conflict, EngineUnavailable, InvalidInput, NotFound, PayloadTooLarge
from cognopt_ray.memory import MemoryPools, PoolFull

KiB = 1024
MiB = 1024 * KiB


def _settings(root, **memory):
    # the module's actor drops evicted data (the default hands it to the storage engine: tested below)
    memory = {"sweep_interval_s": 0, "evict_to": None, "load_evicted": None, **memory}
    return Settings.load(storage_root=str(root), memory=memory)


@pytest.fixture(scope="module")
def shared_actor(ray_session, tmp_path_factory):
    """One private pools actor for this module (tests use their own services on it)."""
    root = tmp_path_factory.mktemp("memory-pools")
    name = f"cognopt.memory_test_{uuid.uuid4().hex[:8]}"
    pools = MemoryPools.connect(_settings(root), name=name, state_dir=str(root / "state"))
    yield pools.actor
    ray_session.kill(pools.actor, no_restart=True)


@pytest.fixture
def make_pools(shared_actor):
    """A client on the module's actor; ``lease_s=0`` asks the actor on every get."""

    def make(lease_s: float = 1.0):
        return MemoryPools(shared_actor, lease_s=lease_s)

    return make


@pytest.fixture
def svc(make_pools):
    """Create a fresh service with the given pool and return its name."""

    def make(pool_size: int, block_size: int, eviction: str = "lru") -> str:
        name = f"t{uuid.uuid4().hex[:10]}"
        pools = make_pools()
        pools.optimize_service(name, "resize", {"pool_size": pool_size, "block_size": block_size})
        if eviction != "lru":
            pools.optimize_service(name, "policy", {"eviction": eviction})
        return name

    return make


def _retry(fn, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except EngineUnavailable:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def _wait_up(pools, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            return pools.health()
        except EngineUnavailable:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_numpy_get_is_zero_copy_read_only_view(make_pools, svc):
    pools = make_pools()
    pool = pools.pool(svc(64, MiB))
    arr = np.arange(1 << 18, dtype=np.float64)  # 2 MiB: in plasma, not inlined
    aid = pool.allocate(arr)
    a, b = pool.get(aid), pools.get(aid)
    assert np.array_equal(a, arr)
    assert not a.flags.writeable and not a.flags.owndata  # a view on shared memory, not a copy
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]  # one copy, mapped
    with pytest.raises(ValueError):
        a[0] = 1.0


def test_arrow_buffers_come_back_without_copy(make_pools, svc):
    import pyarrow as pa

    pools = make_pools()
    big = svc(64, MiB)
    table = pa.table({"x": np.arange(1 << 17, dtype=np.int64)})  # 1 MiB column
    aid = pools.allocate(big, table)
    got = pools.get(aid)
    assert got.equals(table)
    col = got.column("x").chunk(0).to_numpy(zero_copy_only=True)
    assert not col.flags.writeable


def test_allocation_takes_ceil_blocks_and_figures_add_up(make_pools, svc):
    pools = make_pools()
    tiny = svc(4, 128 * KiB)
    info = pools.allocate_info(tiny, b"x" * (128 * KiB + 1))
    assert info["blocks"] == 2 and info["nbytes"] == 128 * KiB + 1 and info["kind"] == "bytes"
    small = pools.allocate_info(tiny, {"a": 1})
    assert small["blocks"] == 1 and small["kind"] == "json"
    fig = pools.metrics()["pools"][tiny]
    assert fig["blocks_used"] == 3 and fig["blocks_free"] == 1 and fig["allocations"] == 2
    assert fig["bytes_used"] == 128 * KiB + 1 + len('{"a":1}')
    m = pools.metrics()
    reserved = sum(p["blocks_used"] * p["block_size"] for p in m["pools"].values())
    held = sum(p["bytes_used"] for p in m["pools"].values())
    assert m["memory_efficiency"] == pytest.approx(held / reserved)
    assert pools.get(small["allocation_id"]) == {"a": 1}


def test_bytes_shared_counts_distinct_reader_processes(ray_session, shared_actor, make_pools, svc):
    """Issue 15: bytes_shared = nbytes × (distinct reader processes − reader nodes), not hits × size."""
    pools = make_pools(lease_s=0)
    name = svc(8, 1 * MiB)
    arr = np.arange(100_000, dtype=np.int64)  # 800 000 bytes
    aid = pools.allocate(name, arr)
    for _ in range(5):  # one process reading five times is one reader: nothing shared
        pools.get(aid)
    fig = pools.metrics()["pools"][name]
    assert fig["hits"] == 5 and fig["readers"] == 1 and fig["bytes_shared"] == 0

    @ray_session.remote
    def read(handle, allocation_id):
        return int(MemoryPools(handle, lease_s=0).get(allocation_id).sum())

    assert ray_session.get(read.remote(shared_actor, aid)) == int(arr.sum())  # another process, same node
    fig = pools.metrics()["pools"][name]
    assert fig["readers"] == 2 and fig["bytes_shared"] == arr.nbytes
    pools.deallocate(aid)  # only live allocations count
    assert pools.metrics()["pools"][name]["bytes_shared"] == 0


def test_full_pool_evicts_lru_unpinned_transient_only(make_pools, svc):
    pools = make_pools(lease_s=0)
    tiny = svc(4, 128 * KiB)
    block = b"x" * (100 * KiB)
    a, b, c, d = (pools.allocate(tiny, block) for _ in range(4))
    pools.get(a)  # a is now more recent than b
    e = pools.allocate_info(tiny, block)
    assert e["evicted"] == [b]
    with pytest.raises(NotFound, match="evicted"):
        pools.get(b)
    assert pools.get(a) == block
    fig = pools.metrics()["pools"][tiny]
    assert fig["evictions"] == 1 and fig["misses"] == 1 and fig["hits"] == 2
    assert fig["hit_rate"] == pytest.approx(2 / 3)


def test_pinned_and_persistent_are_never_evicted(make_pools, svc):
    pools = make_pools()
    tiny = svc(4, 128 * KiB)
    block = b"y" * (100 * KiB)
    pinned = [pools.allocate(tiny, block, pin=True) for _ in range(2)]
    kept = [pools.allocate(tiny, block, memory_type="persistent") for _ in range(2)]
    before = pools.metrics()["pools"][tiny]
    with pytest.raises(PoolFull, match="is full") as exc:
        pools.allocate(tiny, block)
    assert exc.value.status == 409 and "pool_size" in exc.value.hint
    after = pools.metrics()["pools"][tiny]
    assert after["blocks_used"] == before["blocks_used"] == 4 and after["evictions"] == 0
    for aid in pinned + kept:
        assert pools.get(aid) == block


def test_eviction_policy_none_refuses(make_pools, svc):
    pools = make_pools()
    strict = svc(2, 128 * KiB, "none")
    pools.allocate(strict, b"1" * 1000)
    pools.allocate(strict, b"2" * 1000)
    with pytest.raises(PoolFull, match="eviction 'lru'"):
        pools.allocate(strict, b"3" * 1000)


def test_data_larger_than_the_pool_is_413_and_changes_nothing(make_pools, svc):
    pools = make_pools()
    tiny = svc(4, 128 * KiB)
    before = pools.metrics()["pools"].get(tiny)
    with pytest.raises(PayloadTooLarge) as exc:
        pools.allocate(tiny, b"z" * (600 * KiB))
    assert exc.value.status == 413
    assert f"pool '{tiny}'" in exc.value.message and str(4 * 128 * KiB) in exc.value.message
    after = pools.metrics()["pools"][tiny]
    assert after["blocks_used"] == (before["blocks_used"] if before else 0) and after["allocations"] == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"service": "Bad-Name"}, "service name"),
        ({"service": "x" * 80}, "service name"),
        ({"memory_type": "forever"}, "memory_type"),
        ({"ttl_s": -1}, "ttl_s"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(make_pools, svc, kwargs, match):
    pools = make_pools()
    tiny = svc(4, 128 * KiB)
    before = pools.metrics()["totals"]["allocations"]
    args = {"service": tiny, "memory_type": "transient", "ttl_s": None, **kwargs}
    with pytest.raises(InvalidInput, match=match) as exc:
        pools.allocate(args["service"], b"data", memory_type=args["memory_type"], ttl_s=args["ttl_s"])
    assert exc.value.status == 422
    assert pools.metrics()["totals"]["allocations"] == before
    assert pools.metrics()["pools"][tiny]["allocations"] == 0


def test_deallocate_unknown_or_twice_is_not_found(make_pools, svc):
    pools = make_pools()
    tiny = svc(4, 128 * KiB)
    aid = pools.allocate(tiny, b"a")
    assert pools.deallocate(aid)["blocks_freed"] == 1
    with pytest.raises(NotFound, match="already freed"):
        pools.deallocate(aid)
    with pytest.raises(NotFound, match="already freed"):
        pools.get(aid)
    with pytest.raises(NotFound, match="does not exist"):
        pools.deallocate(f"{tiny}.0123456789abcdef")
    assert pools.metrics()["pools"][tiny]["blocks_used"] == 0


def test_resize_never_drops_pinned_or_persistent(make_pools, svc):
    pools = make_pools()
    big = svc(64, MiB)
    keep = pools.allocate(big, b"p" * (2 * MiB), memory_type="persistent")  # 2 blocks
    pin = pools.allocate(big, b"q" * MiB, pin=True)  # 1 block
    loose = [pools.allocate(big, b"t" * MiB) for _ in range(3)]
    with pytest.raises(Conflict, match="need 3"):
        pools.optimize_service(big, "resize", {"pool_size": 2})
    assert pools.metrics()["pools"][big]["pool_size"] == 64  # unchanged
    out = pools.optimize_service(big, "resize", {"pool_size": 4})
    assert out["after"]["pool_size"] == 4 and out["after"]["blocks_used"] == 4
    assert out["evicted"] == loose[:2]
    assert pools.get(keep) == b"p" * (2 * MiB) and pools.get(pin) == b"q" * MiB and pools.get(loose[2])
    # a larger block size re-counts blocks: 2 MiB blocks → 1 + 1 + 1
    out = pools.optimize_service(big, "resize", {"block_size": 2 * MiB})
    assert out["after"]["blocks_used"] == 3
    with pytest.raises(InvalidInput):
        pools.optimize_service(big, "resize", {"pool_size": 0})
    with pytest.raises(InvalidInput, match="do not apply"):
        pools.optimize_service(big, "resize", {"eviction": "none"})
    with pytest.raises(InvalidInput):
        pools.optimize_service(big, "shrink", {})
    out = pools.optimize_service(big, "memory", {"pool_size": 5, "eviction": "none"})  # the spec's style
    assert out["after"]["pool_size"] == 5 and out["after"]["eviction"] == "none"


def test_sweep_frees_expired_and_removed_services(make_pools, svc):
    pools = make_pools(lease_s=0)
    tiny, big = svc(4, 128 * KiB), svc(64, MiB)
    short = pools.allocate(tiny, b"s", ttl_s=0.05)
    lasting = pools.allocate(tiny, b"l")
    gone = [pools.allocate(big, b"g" * 10), pools.allocate(big, b"h", memory_type="persistent")]
    pools.optimize_service(big, "remove")
    time.sleep(0.1)
    out = pools.sweep()
    assert out["expired_freed"] == 1 and out["retired_freed"] == 2
    m = pools.metrics()
    assert m["cleanup"]["expired_freed"] == 1 and m["cleanup"]["retired_freed"] == 2
    assert m["cleanup"]["retired_services"] == [big]
    for aid in [short, *gone]:
        with pytest.raises(NotFound):
            pools.get(aid)
    assert pools.get(lasting) == b"l"
    with pytest.raises(Conflict, match="removed"):
        pools.allocate(big, b"again")
    pools.optimize_service(big, "resize", {"pool_size": 8})  # re-creates it
    assert pools.get(pools.allocate(big, b"again")) == b"again"


def test_evict_to_hook_keeps_evicted_data_readable(make_pools, svc, tmp_path):
    folder = tmp_path / "warm"
    folder.mkdir()

    def evict_to(service, allocation_id, value, meta):
        (folder / allocation_id).write_bytes(value)

    def load_evicted(service, allocation_id):
        path = folder / allocation_id
        if not path.exists():
            raise KeyError(allocation_id)
        return path.read_bytes()

    pools = make_pools(lease_s=0)
    strict = svc(2, 128 * KiB, "none")
    pools.set_evict_hooks(evict_to, load_evicted)
    first = pools.allocate(strict, b"1" * 1000)
    pools.optimize_service(strict, "policy", {"eviction": "lru"})
    pools.allocate(strict, b"2" * 1000)
    assert pools.allocate_info(strict, b"3" * 1000)["evicted"] == [first]
    assert (folder / first).read_bytes() == b"1" * 1000
    assert pools.get(first) == b"1" * 1000  # answered from the hook's store: a miss of the pool
    fig = pools.metrics()["pools"][strict]
    assert fig["misses"] == 1 and fig["evictions"] == 1
    pools.set_evict_hooks(None, None)


def test_persistent_allocations_survive_an_actor_restart(ray_session, tmp_path):
    settings = Settings.load(
        storage_root=str(tmp_path),
        memory={"sweep_interval_s": 0, "client_lease_s": 30},
        services={
            "tiny": {"memory": {"pool_size": 4, "block_size": 128 * KiB}},
            "big": {"memory": {"pool_size": 64, "block_size": 1 * MiB}},
        },
    )
    name = f"cognopt.memory_test_{uuid.uuid4().hex[:8]}"
    pools = MemoryPools.connect(settings, name=name, state_dir=str(tmp_path / "state"))
    try:
        _restart_case(pools, ray_session)
    finally:
        ray_session.kill(pools.actor, no_restart=True)


def _restart_case(pools, ray_session):
    arr = np.arange(200_000, dtype=np.float64)
    pid = pools.allocate("big", arr, memory_type="persistent")
    meta_id = pools.allocate("tiny", {"model": "v3"}, memory_type="persistent")
    tid = pools.allocate("tiny", b"transient")
    pools.optimize_service("tiny", "resize", {"pool_size": 6})
    assert np.array_equal(pools.get(pid), arr)  # leased now
    ray_session.kill(pools.actor, no_restart=False)
    _wait_up(pools)
    # Calls right after a restart may get EngineUnavailable (retryable, 503): retry as a client would.
    got = _retry(lambda: pools.get(pid))  # the lease's object died with its owner: the client asks again
    assert np.array_equal(got, arr) and not got.flags.writeable
    assert _retry(lambda: MemoryPools(pools.actor, lease_s=0).get(meta_id)) == {"model": "v3"}
    with pytest.raises(NotFound):
        _retry(lambda: MemoryPools(pools.actor, lease_s=0).get(tid))
    m = _retry(pools.metrics)
    assert m["reloaded_persistent"] == 2
    assert m["pools"]["tiny"]["pool_size"] == 6  # the resize is durable too
    assert m["pools"]["big"]["blocks_used"] == 2


def test_object_store_use_per_node(make_pools, svc):
    pools = make_pools()
    pools.allocate(svc(64, MiB), np.ones(1 << 18))
    nodes = pools.metrics()["object_store"]
    assert nodes and nodes[0]["capacity_bytes"] > 0
    assert nodes[0]["used_bytes"] >= 2 * MiB and nodes[0]["objects"] >= 1


def test_gc_tuner_runs_in_every_worker_and_reports(ray_session):
    import ray

    from cognopt_ray.memory import client

    @ray.remote(num_cpus=0)
    def probe():
        import gc as _gc

        from cognopt_ray.memory.gc_tuner import _worker_key, current_tuner

        tuner = current_tuner()
        if tuner is None:
            return None
        _gc.collect()
        h = ray.get_actor("cognopt.memory", namespace="cognopt")
        ray.get(h.report_gc.remote(_worker_key(), tuner.report()))
        return tuner._callback in _gc.callbacks, tuner.report()

    pools = client()
    installed, report = ray.get(probe.remote())
    assert installed and report["collections"] >= 1 and report["pauses"]["p50_ms"] is not None
    reports = pools.gc_reports()
    assert any(r["pid"] == report["pid"] for r in reports)
    out = pools.optimize_gc()
    assert set(out) >= {
        "thresholds_before",
        "thresholds_after",
        "pause_p50_ms_before",
        "pause_p99_ms_before",
        "pause_p50_ms_after",
        "pause_p99_ms_after",
        "decision",
    }
    assert out["collections_before"] >= 1 and out["workers"]["workers_reporting"] >= 1
    assert json.dumps(out)


def test_default_eviction_goes_to_the_storage_warm_tier(ray_session, tmp_path):
    """With the default settings an evicted allocation is written to the storage engine's WARM
    tier and a later get still answers with the same value."""
    import numpy as np

    from cognopt_ray.memory import spill
    from cognopt_ray.storage import client as storage_client

    name = f"cognopt.memory_spill_{uuid.uuid4().hex[:8]}"
    settings = Settings.load(storage_root=str(tmp_path), memory={"sweep_interval_s": 0})
    assert settings.memory.evict_to == "cognopt_ray.memory.spill:evict_to_warm"
    pools = MemoryPools.connect(settings, name=name, state_dir=str(tmp_path / "state"))
    try:
        service = f"s{uuid.uuid4().hex[:8]}"
        pools.optimize_service(service, "resize", {"pool_size": 2, "block_size": 128 * KiB})
        first_value = np.arange(10_000, dtype=np.float64)  # 80 KB: one block
        first = pools.allocate(service, first_value)
        pools.allocate(service, b"b" * (100 * KiB))
        out = pools.allocate_info(service, b"c" * (100 * KiB))
        assert out["evicted"] == [first]
        info = storage_client().info(spill.item_id(service, first))
        assert info["tier"] == "warm"
        back = MemoryPools(pools.actor, lease_s=0).get(first)
        assert np.array_equal(back, first_value)
        assert pools.metrics()["pools"][service]["evictions"] == 1
    finally:
        ray_session.kill(pools.actor, no_restart=True)


def _spill_pools(ray_session, tmp_path, **memory):
    name = f"cognopt.memory_spill_{uuid.uuid4().hex[:8]}"
    settings = Settings.load(storage_root=str(tmp_path), memory={"sweep_interval_s": 0, **memory})
    return MemoryPools.connect(settings, name=name, state_dir=str(tmp_path / "state"))


def test_spilled_allocations_are_bounded_and_cleaned(ray_session, tmp_path):
    """Spilled copies count against the service's max_spill_bytes (oldest dropped first, counted) and
    are deleted from WARM when they expire and when their pool is removed."""
    from cognopt_ray.memory import spill
    from cognopt_ray.storage import client as storage_client

    store = storage_client()
    pools = _spill_pools(ray_session, tmp_path)
    try:
        service = f"s{uuid.uuid4().hex[:8]}"
        pools.optimize_service(
            service, "memory", {"pool_size": 1, "block_size": 64 * KiB, "max_spill_bytes": 100 * KiB}
        )
        ids = [pools.allocate(service, bytes([i]) * (40 * KiB)) for i in range(4)]  # each evicts the one before
        fig = pools.metrics()["pools"][service]
        assert fig["evictions"] == 3 and fig["spilled"] == 2 and fig["spill_dropped"] == 1
        assert fig["spilled_bytes"] <= 100 * KiB
        with pytest.raises(NotFound):  # the oldest spilled copy was dropped over max_spill_bytes ...
            store.info(spill.item_id(service, ids[0]))
        with pytest.raises(NotFound, match="no copy"):
            MemoryPools(pools.actor, lease_s=0).get(ids[0])
        assert MemoryPools(pools.actor, lease_s=0).get(ids[1]) == bytes([1]) * (40 * KiB)  # ... the others answer
        # expiry: a spilled allocation whose TTL passed is deleted from WARM by the sweep
        short = pools.allocate(service, b"t" * (40 * KiB), ttl_s=0.2)
        pools.allocate(service, b"u" * (40 * KiB))  # evicts `short` to WARM
        assert store.info(spill.item_id(service, short))["tier"] == "warm"
        time.sleep(0.3)
        assert pools.sweep()["spilled_freed"] >= 1
        with pytest.raises(NotFound):
            store.info(spill.item_id(service, short))

        # a removed pool takes its spilled copies with it
        def in_warm(aid):
            try:
                return store.info(spill.item_id(service, aid))["tier"] == "warm"
            except NotFound:
                return False

        held = [aid for aid in ids if in_warm(aid)]
        assert held and len(held) == pools.metrics()["pools"][service]["spilled"]
        pools.optimize_service(service, "remove")
        pools.sweep()
        for aid in held:
            with pytest.raises(NotFound):
                store.info(spill.item_id(service, aid))
        assert pools.metrics()["pools"][service]["spilled"] == 0
    finally:
        ray_session.kill(pools.actor, no_restart=True)


def test_a_forged_durable_copy_is_refused_not_unpickled(ray_session, tmp_path):
    """A persistent allocation's file replaced by a pickle (with a matching checksum) is refused after a
    restart: the durable copy must carry this installation's signature, checked before decoding."""
    import hashlib
    import pickle

    from cognopt_ray.errors import IntegrityError

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    settings = _settings(tmp_path)
    name = f"cognopt.memory_forge_{uuid.uuid4().hex[:8]}"
    pools = MemoryPools.connect(settings, name=name, state_dir=str(tmp_path / "state"))
    aid = pools.allocate("forge_svc", {1: "python object"}, memory_type="persistent")
    good = pools.allocate("forge_svc", {2: "kept"}, memory_type="persistent")
    ray_session.kill(pools.actor, no_restart=True)
    folder = tmp_path / "state" / "allocations"
    evil = b"O" + pickle.dumps(Boom())
    (folder / f"{aid}.bin").write_bytes(evil)
    record = json.loads((folder / f"{aid}.json").read_text())
    (folder / f"{aid}.json").write_text(json.dumps({**record, "sha256": hashlib.sha256(evil).hexdigest()}))
    pools = MemoryPools.connect(settings, name=name, state_dir=str(tmp_path / "state"))
    try:
        with pytest.raises(IntegrityError):
            MemoryPools(pools.actor, lease_s=0).get(aid)
        assert not (tmp_path / "pwned").exists()
        assert MemoryPools(pools.actor, lease_s=0).get(good) == {2: "kept"}  # genuine copies still load
    finally:
        ray_session.kill(pools.actor, no_restart=True)
