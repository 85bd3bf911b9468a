"""The memory engine's counters over hand-computed numbers (issue 15): ``bytes_shared`` from the
distinct reader processes of each live allocation, a miss for every get that found nothing.

The pools actor's class runs in this process (no Ray): allocations are placed in it directly with
a stand-in object reference, since only ``ray.put`` needs a cluster.
"""

import asyncio
import time

import pytest

from cognopt_ray import runtime
from cognopt_ray.config import Settings
from cognopt_ray.errors import NotFound
from cognopt_ray.memory import figures
from cognopt_ray.memory.allocations import MAX_READERS, Allocation


def alloc(aid, nbytes, service="ai_models", **kw):
    now = time.time()
    return Allocation(aid, service, "transient", False, "bytes", nbytes, 1, now, now, kw.pop("expires", None), **kw)


def test_bytes_shared_counts_readers_beyond_one_per_node():
    a = alloc("ai_models.0000000000000001", 1000)
    assert a.bytes_shared == 0  # nobody read it
    a.add_reader(["n1", "p1"])
    a.add_reader(["n1", "p1"])  # the same process twice: one reader
    assert a.bytes_shared == 0
    a.add_reader(["n1", "p2"])
    a.add_reader(["n1", "p3"])
    assert a.bytes_shared == 2000  # 3 readers on one node share its one copy: 2 private copies avoided
    a.add_reader(["n2", "p9"])  # a reader on another node pulls a copy of its own there
    assert a.bytes_shared == 2000
    a.add_reader(["n2", "p10"])
    assert a.bytes_shared == 3000
    a.add_reader("not a reader")
    a.add_reader(None)
    assert len(a.readers) == 5 and "readers" not in a.meta()


def test_readers_are_bounded():
    a = alloc("ai_models.0000000000000002", 1)
    for i in range(MAX_READERS + 50):
        a.add_reader(["n", str(i)])
    assert len(a.readers) == MAX_READERS and a.bytes_shared == MAX_READERS - 1


def test_totals_bytes_shared_and_none_without_allocations():
    assert figures.totals({})["totals"]["bytes_shared"] is None
    assert figures.totals({})["pool_hit_rate"] is None
    pools = {
        "a": {
            "hits": 3, "misses": 1, "bytes_used": 10, "bytes_reserved": 20, "allocations": 1,
            "evictions": 0, "readers": 3, "bytes_shared": 20,
        },
        "b": {
            "hits": 0, "misses": 0, "bytes_used": 0, "bytes_reserved": 0, "allocations": 0,
            "evictions": 0, "readers": 0, "bytes_shared": 0,
        },
    }  # fmt: skip
    t = figures.totals(pools, unpooled_misses=4)
    assert t["totals"]["bytes_shared"] == 20 and t["totals"]["misses"] == 5
    assert t["pool_hit_rate"] == 3 / 8


@pytest.fixture
def actor(tmp_path, monkeypatch):
    import ray

    from cognopt_ray.memory._actor import _MemoryPoolsActor

    def no_ray(*_a, **_k):
        raise AssertionError("this unit test must not start Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    saved = (runtime._state.settings, runtime._state.detached)
    try:
        a = _MemoryPoolsActor(Settings.load(storage_root=str(tmp_path)), str(tmp_path / "memory"))
        a.evict_to = a.load_evicted = None  # no spill to the storage engine: evicted data is dropped
        yield a
    finally:
        runtime._state.settings, runtime._state.detached = saved


def place(actor, a):
    pool = actor._pool(a.service)
    a.ref = object()  # stands for the object reference ray.put would give
    pool.allocations[a.id] = a
    pool.used_blocks += a.blocks
    actor.index[a.id] = a
    return pool


def test_every_get_that_finds_nothing_is_a_miss(actor):
    live = alloc("ai_models.00000000000000aa", 100)
    pool = place(actor, live)
    expiring = alloc("ai_models.00000000000000bb", 100, expires=time.time() - 1)
    place(actor, expiring)
    evicted = alloc("ai_models.00000000000000cc", 100)
    place(actor, evicted)
    freed = alloc("ai_models.00000000000000dd", 100)
    place(actor, freed)

    async def go():
        await actor.lookup(live.id, ["n1", "p1"])  # hit
        await actor.lookup(live.id, ["n1", "p2"])  # hit, a second reader
        actor._evict(pool, evicted)
        await actor.deallocate(freed.id)
        for aid in (
            expiring.id,  # expired
            evicted.id,  # evicted (no copy kept)
            freed.id,  # freed
            "ai_models.00000000000000ee",  # never existed
            "nopool.0000000000000001",  # a service without a pool: counted outside the pools
        ):
            with pytest.raises(NotFound):
                await actor.lookup(aid, ["n1", "p1"])

    asyncio.run(go())
    pools = {name: actor._figures(p) for name, p in actor.pools.items()}  # what metrics() reports
    m = {"pools": pools, **figures.totals(pools, actor.unpooled_misses)}
    fig = m["pools"]["ai_models"]
    assert (fig["hits"], fig["misses"]) == (2, 4)
    assert "nopool" not in m["pools"]  # a miss does not create a pool
    assert m["totals"]["misses"] == 5 and m["pool_hit_rate"] == 2 / 7
    assert fig["bytes_shared"] == 100 and m["totals"]["bytes_shared"] == 100  # 2 readers, 1 node
