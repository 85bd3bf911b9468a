"""init() puts the GC tuner in every worker without clobbering the user's runtime_env (own Ray, subprocess)."""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, os, ray, cognopt_ray
    from cognopt_ray.config import Settings

    settings = Settings.load(storage_root=os.environ["ROOT"])
    cognopt_ray.init(settings=settings, num_cpus=1, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"COGNOPT_TEST_MARK": "kept"}})

    @ray.remote
    def probe():
        import gc
        from cognopt_ray.memory.gc_tuner import current_tuner
        t = current_tuner()
        return {"mark": os.environ.get("COGNOPT_TEST_MARK"), "tuner": t is not None,
                "callback": t is not None and t._callback in gc.callbacks}

    out = ray.get(probe.remote())
    out["job_env"] = ray.get_runtime_context().runtime_env
    print("RESULT " + json.dumps(out))
    cognopt_ray.shutdown()
    """
)


def test_init_merges_the_gc_hook_into_the_users_runtime_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["ROOT"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["mark"] == "kept"  # the user's runtime_env survives
    assert out["tuner"] and out["callback"]  # and the tuner runs in the worker
    assert out["job_env"]["worker_process_setup_hook"] == "cognopt_ray.memory.gc_tuner.setup_worker"
