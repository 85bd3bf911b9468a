"""Multi-node: three nodes with ray.cluster_utils.Cluster, in a subprocess (the pytest process has its Ray)."""

from __future__ import annotations

import textwrap

import pytest

from tests.support.helpers import run_ray_script

SCRIPT = textwrap.dedent(
    r"""
    import json, sys, time
    import ray
    from ray.cluster_utils import Cluster
    import cognopt_ray
    from cognopt_ray.config import Settings
    from cognopt_ray.cpu import PriorityScheduler, TaskLost

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    settings = Settings.load(storage_root=sys.argv[1], cpu={"pipeline_depth": 0, "pipeline_budget_s": 0,
                                                          "node_refresh_s": 0.2, "aging_interval_s": 0})
    cognopt_ray.init(address=cluster.address, settings=settings, log_to_driver=False)
    sched = PriorityScheduler(settings=settings)
    while sched.cluster()["total_cpus"] < 3:
        time.sleep(0.1)
    out = {}

    def where(d):
        time.sleep(d)
        return ray.get_runtime_context().get_node_id()

    def where_when(d):
        time.sleep(d)
        return ray.get_runtime_context().get_node_id(), time.time()

    # spread: three 1-CPU tasks at once land on three different nodes
    ray.get(sched.submit_batch([(where, (0.2,))] * 3))  # warm the workers
    out["spread"] = ray.get([sched.submit(where, 0.6) for _ in range(3)])
    out["balance"] = sched.metrics()["load_balance_score"]

    # a node leaves mid-run: retriable tasks finish elsewhere, a non-retriable one gets TaskLost
    retriable = [sched.submit(where_when, 1.5) for _ in range(4)]
    once = [sched.submit(where_when, 1.5, max_retries=0) for _ in range(2)]
    time.sleep(0.8)
    # remove a node that does not host the scheduler actor itself (that is the scheduler-killed
    # case, tested separately): Ray may place the num_cpus=0 actor on any node
    sched_node = ray.get(sched.actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
    victim = next(w for w in workers if w.node_id != sched_node)
    out["removed_at"] = time.time()
    cluster.remove_node(victim, allow_graceful=False)
    out["retriable"] = [ray.get(r, timeout=240) for r in retriable]
    once_out = []
    for r in once:
        try:
            once_out.append(["ok", ray.get(r, timeout=240)])
        except TaskLost as e:
            once_out.append(["lost", str(e)])
        except Exception as e:
            once_out.append(["error", type(e).__name__ + ": " + str(e)[:300]])
    out["once"] = once_out
    out["victim"] = victim.node_id
    out["nodes_after"] = len(sched.cluster()["nodes"])
    print("RESULT " + json.dumps(out))
    cognopt_ray.shutdown()
    cluster.shutdown()
    """
)


@pytest.mark.slow
def test_three_nodes_spread_and_node_loss(tmp_path):
    out = run_ray_script(SCRIPT, tmp_path, str(tmp_path / "root"))
    assert len(set(out["spread"])) == 3  # one task per node
    assert out["balance"] is not None and out["balance"] > 0.5
    assert len(out["retriable"]) == 4  # all finished
    for node, ended in out["retriable"]:  # none *started* on the dead node after it was removed (a
        # worker of a removed raylet on this one machine may still finish the task it was running)
        assert node != out["victim"] or ended - 1.5 < out["removed_at"]
    for state, detail in out["once"]:
        assert state in ("ok", "lost"), detail  # finished or a clear TaskLost, never a hang
        if state == "lost":
            assert "max_retries" in detail
    assert out["nodes_after"] == 2
