"""Scheduled tasks keep their own names where Ray users look: Ray's state API (``ray list tasks``,
the dashboard).

Before: every task the CPU engine ran showed as the one executor function (``run_items``), so a
user could not tell their tasks apart in Ray's own tools.

Ray's state API is served by the dashboard, which the session's shared Ray runs without, so the
check runs in a subprocess with its own small Ray (dashboard on, a free port) and prints what the
state API listed.
"""

from __future__ import annotations

import pytest

from tests.support.helpers import free_port, run_ray_script

SCRIPT = r"""
import json, sys, time, uuid
import ray
from ray.util.state import list_tasks
from cognopt_ray.config import Settings
from cognopt_ray.cpu import CPUTask, PriorityScheduler
from cognopt_ray.cpu._actor import _SchedulerActor
from cognopt_ray.runtime import get_or_create_actor

root, port = sys.argv[1], int(sys.argv[2])
ray.init(num_cpus=2, include_dashboard=True, dashboard_port=port, log_to_driver=False)


def sched(**cpu):
    settings = Settings.load(storage_root=f"{root}/{uuid.uuid4().hex[:6]}", cpu={"aging_interval_s": 0, **cpu})
    handle = get_or_create_actor(_SchedulerActor, f"cognopt.cpu-names-{uuid.uuid4().hex[:6]}", settings.to_overrides())
    return PriorityScheduler(handle, settings=settings)


def names(wanted, deadline_s=120.0):
    deadline = time.monotonic() + deadline_s
    while True:
        tasks = list_tasks(
            address=f"http://127.0.0.1:{port}",  # this Ray's dashboard: other Rays may run on the machine
            filters=[("state", "=", "FINISHED")],
            limit=10_000,
            raise_on_missing_output=False,
        )
        seen = {t.name: t.func_or_class_name for t in tasks if wanted(t.name)}
        if seen or time.monotonic() > deadline:
            return seen
        time.sleep(1.0)  # task events reach the GCS in batches (about once a second)


tag = uuid.uuid4().hex[:6]
out = {"tag": tag}


def alpha(x):
    return x + 1


def beta(x):
    return x * 2


def quick(i):
    return i * i


alpha.__qualname__, beta.__qualname__, quick.__qualname__ = f"alpha_{tag}", f"beta_{tag}", f"quick_{tag}"
s = sched(pack_budget_s=0)
out["plain_results"] = ray.get([s.submit(alpha, 1), s.submit(beta, 2)], timeout=180)
out["plain"] = names(lambda n: n.startswith(("alpha_", "beta_")) and n.endswith(tag))

p = sched(pack_budget_s=0.5, latency_guard_s=0, pipeline_depth=1)
ray.get(p.submit(quick, 1), timeout=180)  # measured first: nothing is packed blind
refs = p.submit_batch([CPUTask(quick, (i,), priority="medium") for i in range(40)])
out["packed_results"] = ray.get(refs, timeout=180)
out["tasks_packed"] = p.metrics()["tasks_packed"]
out["packed"] = names(lambda n: n.startswith(f"quick_{tag}+"))
print("RESULT " + json.dumps(out))
ray.shutdown()
"""


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("task-names")
    return run_ray_script(SCRIPT, tmp, str(tmp / "root"), str(free_port()))


@pytest.mark.slow
def test_each_task_shows_its_own_function_name(listed):
    tag = listed["tag"]
    assert listed["plain_results"] == [2, 4]
    assert set(listed["plain"]) == {f"alpha_{tag}", f"beta_{tag}"}, sorted(listed["plain"])
    # one executor underneath: the scheduling class (function descriptor) is still the shared one
    assert set(listed["plain"].values()) == {"run_items"}, listed["plain"]


@pytest.mark.slow
def test_a_pack_is_named_after_its_first_task(listed):
    assert listed["packed_results"] == [i * i for i in range(40)]
    assert listed["tasks_packed"] > 0
    assert listed["packed"], "no packed task named quick_<tag>+N in Ray's state API"
    for name in listed["packed"]:
        assert int(name.rsplit("+", 1)[1]) >= 1, name
