"""init/shutdown and the get-or-create helper, on the session's real Ray."""

import time
import uuid

import pytest
import ray

import cognopt_ray
from cognopt_ray import runtime
from cognopt_ray._private.client import EngineClient
from cognopt_ray.errors import EngineUnavailable, NotFound


@ray.remote
class _Counter:
    def __init__(self, start: int = 0):
        self.n = start

    def incr(self) -> int:
        self.n += 1
        return self.n

    def missing(self, key: str):
        raise NotFound(f"item {key!r} does not exist", hint="store it first")

    def crash(self):
        import os

        os._exit(1)

    def health(self):
        return {"status": "up", "count": self.n}


class _CounterClient(EngineClient):
    engine = "counter"

    def incr(self):
        return self._call("incr")

    def missing(self, key):
        return self._call("missing", key)

    def crash(self):
        return self._call("crash")


def test_init_twice_is_harmless(ray_session):
    s1 = cognopt_ray.get_settings()
    s2 = cognopt_ray.init()
    assert s2 is s1
    assert ray.is_initialized()
    assert ray.get_runtime_context().namespace == runtime.NAMESPACE
    s3 = cognopt_ray.init(settings=s1.model_copy(update={"max_body_bytes": 10}))
    assert s3.max_body_bytes == 10
    cognopt_ray.init(settings=s1)  # restore
    assert ray.cluster_resources()["CPU"] == 4


def test_get_or_create_returns_one_actor_and_restarts_it(ray_session):
    a = runtime.get_or_create_actor(_Counter, "cognopt.test_counter", 10)
    b = runtime.get_or_create_actor(_Counter, "cognopt.test_counter", 99)  # args ignored: it exists
    assert ray.get(a.incr.remote()) == 11
    assert ray.get(b.incr.remote()) == 12
    assert "cognopt.test_counter" in runtime.list_engine_actors()
    assert runtime.get_actor("cognopt.no_such_actor") is None

    client = _CounterClient(a, timeout_s=30)
    with pytest.raises(NotFound, match="does not exist") as exc:
        client.missing("k")
    assert exc.value.hint == "store it first" and exc.value.status == 404

    with pytest.raises(EngineUnavailable) as exc:
        client.crash()
    assert exc.value.retryable
    deadline = time.time() + 60
    while True:  # max_restarts=-1: it comes back (with fresh state, as the engines rebuild theirs)
        try:
            assert client.incr() == 11
            break
        except EngineUnavailable:
            assert time.time() < deadline, "actor did not restart"
            time.sleep(0.2)
    ray.kill(a, no_restart=True)


def test_detached_option(ray_session):
    runtime._state.detached = True
    h = None
    try:
        h = runtime.get_or_create_actor(_Counter, "cognopt.test_detached")
        ray.get(h.incr.remote())
        assert ray._private.state.actors(h._actor_id.hex())["IsDetached"] is True
    finally:
        runtime._state.detached = False
        if h is not None:
            ray.kill(h, no_restart=True)


def test_a_shared_engine_lives_while_its_creator_runs(ray_session):
    """The driver that created a (non-detached) engine asks for it again and drops every handle it
    was given: the engine lives on. Before, the second lookup's handle replaced the creating one
    in the runtime, Ray freed the actor (REF_DELETED) and every later call said "permanently dead"
    (how the shared ``cognopt.cpu`` and ``cognopt.storage`` were lost in the full suite)."""
    import gc

    name = f"cognopt.test_keep_{uuid.uuid4().hex[:6]}"
    first = runtime.get_or_create_actor(_Counter, name, 0)
    actor_id = first._actor_id.hex()
    assert ray.get(first.incr.remote()) == 1
    second = runtime.get_or_create_actor(_Counter, name, 0)
    assert ray.get(second.incr.remote()) == 2
    del first, second
    gc.collect()
    time.sleep(2)  # Ray frees an unreferenced actor within moments
    assert ray._private.state.actors(actor_id)["State"] == "ALIVE"
    again = runtime.get_or_create_actor(_Counter, name, 0)
    assert again._actor_id.hex() == actor_id and ray.get(again.incr.remote()) == 3
    ray.kill(again, no_restart=True)
