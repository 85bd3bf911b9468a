"""The storage engine on three nodes with every root on S3: the node that hosts it is lost mid-write.

Runs in a subprocess with its own ``ray.cluster_utils.Cluster`` (the pytest process keeps the
session's Ray), under the machine-wide lock like every Ray test. Each node has a local state dir
of its own (``COGNOPT_LOCAL_STATE`` set in its raylet's environment; the storage root is an
``s3://`` URI), so the actor restarted on another node starts with an empty local catalog and must
rebuild it from the journal in the bucket. The S3 server is moto's, on 127.0.0.1, in the script.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.support.helpers import run_ray_script

SCRIPT = textwrap.dedent(
    r"""
    import base64, hashlib, json, os, sys, threading, time
    tmp = sys.argv[1]
    from tests.support.s3 import S3Server
    srv = S3Server().start()  # also puts the (dummy) AWS credentials in the environment Ray inherits
    os.environ["COGNOPT_LOCAL_STATE"] = f"{tmp}/driver"
    import ray
    from ray.cluster_utils import Cluster
    import cognopt_ray
    from cognopt_ray import runtime
    from cognopt_ray.config import Settings
    from cognopt_ray.errors import CognoptError
    from cognopt_ray.storage._actor import StoreActor
    from cognopt_ray.storage.client import StorageClient

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "env_vars": {"COGNOPT_LOCAL_STATE": f"{tmp}/head"}})
    workers = [cluster.add_node(num_cpus=1, resources={"storage_host": 1},
                                env_vars={"COGNOPT_LOCAL_STATE": f"{tmp}/node{i}"}) for i in range(3)]
    cluster.wait_for_nodes()
    bucket = srv.bucket()
    settings = Settings.load(
        storage_root=f"s3://{bucket}/cognopt",
        installation_secret=base64.b64encode(os.urandom(32)).decode(),
        storage={"s3": srv.settings(), "lifecycle_enabled": False, "min_free_bytes": 0},
    )
    cognopt_ray.init(address=cluster.address, settings=settings, log_to_driver=False)
    # the engine asks for a sliver of a resource only the three worker nodes have, so it never
    # lands on the head (which a test cannot remove)
    handle = runtime.get_or_create_actor(StoreActor, "cognopt.storage", settings, max_concurrency=1,
                                         resources={"storage_host": 0.001})
    store = StorageClient(handle, timeout_s=20)
    first = store.health()
    out = {"first_node": first["node_id"], "journal": first["journal"]}

    acked, errors, stop = {}, [], threading.Event()
    lock = threading.Lock()
    tiers = ["hot", "warm", "cold", "archive"]

    def writer(w):
        i = 0
        while not stop.is_set():
            item_id = f"w{w}-{i}"
            data = hashlib.sha256(item_id.encode()).digest() * (1 + (i % 5) * 900)  # 32 B .. 115 KB
            t0 = time.time()
            try:
                store.put(item_id, data, tier=tiers[i % 4])
                with lock:
                    acked[item_id] = hashlib.sha256(data).hexdigest()
                i += 1
            except CognoptError as e:
                with lock:
                    errors.append({"type": type(e).__name__, "status": e.status, "retryable": e.retryable,
                                   "hint": e.hint, "seconds": time.time() - t0, "message": e.message[:200]})
                time.sleep(0.2)  # the client retries the same item, as a caller would
            except Exception as e:
                with lock:
                    errors.append({"type": "UNTRANSLATED " + type(e).__name__, "message": str(e)[:300]})
                time.sleep(0.2)

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(2)]
    for t in threads:
        t.start()
    while len(acked) < 30:
        time.sleep(0.1)
    victim = next(w for w in workers if w.node_id == first["node_id"])
    out["acked_before"] = len(acked)
    cluster.remove_node(victim, allow_graceful=False)
    t_removed = time.time()
    deadline = time.time() + 240
    after = None
    while time.time() < deadline:  # until the engine answers from another node and 30 more puts land
        try:
            h = store.health()
            if h["node_id"] != first["node_id"]:
                after = after or h
                if len(acked) >= out["acked_before"] + 30:
                    break
        except CognoptError:
            pass
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)
    out["after"] = after
    out["recovery_s"] = time.time() - t_removed
    out["acked"] = len(acked)
    out["errors"] = errors
    missing, wrong = [], []
    for item_id, digest in acked.items():
        try:
            got = store.get(item_id)
            if hashlib.sha256(got).hexdigest() != digest:
                wrong.append(item_id)
        except Exception as e:
            missing.append([item_id, type(e).__name__, str(e)[:200]])
    out["missing"], out["wrong"] = missing, wrong
    out["verify"] = store.verify()
    print("RESULT " + json.dumps(out))
    cognopt_ray.shutdown()
    cluster.shutdown()
    srv.stop()
    """
)


@pytest.mark.slow
def test_storage_engine_survives_the_loss_of_its_node_with_roots_on_s3(tmp_path):
    out = run_ray_script(SCRIPT, tmp_path, str(tmp_path), drop_env=("COGNOPT_LOCAL_STATE",))
    kinds: dict[str, int] = {}
    for e in out["errors"]:
        kinds[e["type"]] = kinds.get(e["type"], 0) + 1
    print(
        f"node loss: {out['acked']} puts acknowledged ({out['acked_before']} before), engine back after "
        f"{out['recovery_s']:.1f} s, writer errors {kinds}, longest failed call "
        f"{max([e.get('seconds', 0) for e in out['errors']] or [0]):.1f} s, rebuilt {out['after'] and out['after']['rebuilt']}"
    )
    assert out["journal"] is not None and out["journal"]["root"].startswith("s3://")
    after = out["after"]
    assert after is not None, out  # the engine came back
    assert after["node_id"] != out["first_node"]  # ... on another node
    assert after["rebuilt"] is not None and after["rebuilt"]["gaps"] == []  # from the root: a fresh local state
    assert after["rebuilt"]["items"] >= out["acked_before"]
    assert out["missing"] == [] and out["wrong"] == []  # every acknowledged item, byte for byte
    assert out["verify"]["damaged"] == []
    assert out["acked"] >= out["acked_before"] + 30  # writes went on after the restart
    for e in out["errors"]:  # the writers saw only clear, retryable errors
        assert e["type"] in ("EngineUnavailable", "StorageBackendError"), e
        assert e["status"] == 503 and e["retryable"] and e["hint"], e
    assert out["errors"], "removing the engine's node was not noticed by any writer"
