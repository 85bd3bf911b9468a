"""The one LRU/TTL core and the one Redis fallback policy (no Ray, no Redis)."""

from __future__ import annotations

from cognopt_ray._private.kv import RedisState, redact_url
from cognopt_ray._private.lru import ByteLRU


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lru_bounded_by_bytes_and_entries_with_ttl():
    clock = Clock()
    lru: ByteLRU[bytes] = ByteLRU(30, max_entries=2, clock=clock)
    assert lru.set("a", b"x" * 10, ttl=5) and lru.set("b", b"y" * 10, ttl=None)
    assert lru.get("a") == b"x" * 10  # b is now least recently used
    assert lru.set("c", b"z" * 10, ttl=None)  # two entries at most: b goes
    assert lru.get("b") is None and len(lru) == 2 and lru.evictions == 1
    assert not lru.set("big", b"w" * 31, ttl=None) and "big" not in lru
    clock.t += 6
    assert [k for k, _v, _e in lru.take_expired(dry_run=True)] == ["a"] and "a" in lru
    assert lru.sweep() == 1 and lru.get("a") is None
    assert lru.delete_prefix("c") == 1 and lru.bytes == 0
    s = lru.stats()
    assert s["entries"] == 0 and s["expired"] == 1 and s["hits"] == 1


def test_lru_replacing_a_key_keeps_the_byte_count():
    lru: ByteLRU[bytes] = ByteLRU(100)
    lru.set("k", b"1" * 40, ttl=None)
    lru.set("k", b"2" * 10, ttl=None)
    assert lru.bytes == 10 and lru.get("k") == b"2" * 10
    assert not lru.set("k", b"3" * 200, ttl=None) and lru.get("k") is None and lru.bytes == 0


def test_redis_state_falls_back_and_retries_after_the_delay():
    clock = Clock()
    st = RedisState("redis://user:pw@host:6379/0", retry_s=2.0, what="test", clock=clock)
    assert st.should_try() and st.health() == {"status": "up", "backend": "redis"}
    assert st.failed(ConnectionError("refused")) is True
    assert st.failed(ConnectionError("refused")) is False  # one fallback, two errors
    assert (st.fallbacks, st.errors, st.used_fallback) == (1, 2, True)
    assert not st.should_try()
    h = st.health()
    assert h["status"] == "degraded" and "unreachable" in h["reason"] and "pw" not in h["reason"]
    clock.t += 2.0
    assert st.should_try()
    assert st.recovered() is True and st.recovered() is False and st.health()["status"] == "up"


def test_redact_url():
    assert redact_url("redis://:secret@h:1/0") == "redis://***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
