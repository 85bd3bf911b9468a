"""Scheduled tasks keep their own names where Ray users look: Ray's state API (``ray list tasks``,
the dashboard).

Before: every task the CPU engine ran showed as the one executor function (``run_items``), so a
user could not tell their tasks apart in Ray's own tools.
"""

from __future__ import annotations

import time
import uuid

import pytest
import ray
from ray.util.state import list_tasks

from cognopt_ray.config import Settings
from cognopt_ray.cpu import CPUTask, PriorityScheduler
from cognopt_ray.cpu._actor import _SchedulerActor
from cognopt_ray.runtime import get_or_create_actor

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def make_sched(ray_session, tmp_path):
    made = []

    def make(**cpu) -> PriorityScheduler:
        settings = Settings.load(storage_root=str(tmp_path / f"s{len(made)}"), cpu={"aging_interval_s": 0, **cpu})
        handle = get_or_create_actor(
            _SchedulerActor, f"cognopt.cpu-names-{uuid.uuid4().hex[:6]}", settings.to_overrides()
        )
        made.append(handle)
        return PriorityScheduler(handle, settings=settings)

    yield make
    for h in made:
        ray.kill(h, no_restart=True)


def _names_seen(wanted, deadline_s: float = 120.0) -> dict[str, dict]:
    """Ray task records (by name) whose name ``wanted(name)`` accepts, once the state API has them."""
    deadline = time.monotonic() + deadline_s
    # this session's cluster by its GCS address: "auto" would pick the newest Ray on the machine
    address = ray.get_runtime_context().gcs_address
    while True:
        tasks = list_tasks(
            address=address, filters=[("state", "=", "FINISHED")], limit=10_000, raise_on_missing_output=False
        )
        seen = {t.name: t for t in tasks if wanted(t.name)}
        if seen or time.monotonic() > deadline:
            return seen
        time.sleep(1.0)  # task events reach the GCS in batches (about once a second)


def test_each_task_shows_its_own_function_name(make_sched):
    tag = uuid.uuid4().hex[:6]
    sched = make_sched(pack_budget_s=0)

    def alpha(x):
        return x + 1

    def beta(x):
        return x * 2

    alpha.__qualname__ = f"alpha_{tag}"
    beta.__qualname__ = f"beta_{tag}"
    assert ray.get([sched.submit(alpha, 1), sched.submit(beta, 2)], timeout=180) == [2, 4]
    seen = _names_seen(lambda n: n.endswith(tag))
    assert set(seen) == {f"alpha_{tag}", f"beta_{tag}"}, sorted(seen)
    # one executor underneath: the scheduling class (function descriptor) is still the shared one
    assert {t.func_or_class_name for t in seen.values()} == {"run_items"}, seen


def test_a_pack_is_named_after_its_first_task(make_sched):
    tag = uuid.uuid4().hex[:6]
    sched = make_sched(pack_budget_s=0.5, latency_guard_s=0, pipeline_depth=1)

    def quick(i):
        return i * i

    quick.__qualname__ = f"quick_{tag}"
    ray.get(sched.submit(quick, 1), timeout=180)  # measured first: nothing is packed blind
    refs = sched.submit_batch([CPUTask(quick, (i,), priority="medium") for i in range(40)])
    assert ray.get(refs, timeout=180) == [i * i for i in range(40)]
    assert sched.metrics()["tasks_packed"] > 0
    seen = _names_seen(lambda n: n.startswith(f"quick_{tag}+"))
    assert seen, "no packed task named quick_<tag>+N in Ray's state API"
    for name in seen:
        assert int(name.rsplit("+", 1)[1]) >= 1, name
