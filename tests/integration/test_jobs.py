"""`ray job submit` and `serve deploy` against a real head started with `ray start --head`.

The head runs with RAY_AUTH_MODE=token (Ray 2.60 turns on token authentication for `ray start`),
in its own temp folder so it never meets the session's Ray, and is stopped by killing exactly
its processes (`ray stop` would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.support.helpers import free_port, wait_http

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    temp = tmp_path_factory.mktemp("rayhead")
    dash = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "COGNOPT_"))}
    env.update(
        {
            "RAY_AUTH_MODE": "token",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the job's `python` is this venv's
            "COGNOPT_STORAGE_ROOT": str(temp / "cognopt"),
            "COGNOPT_ADMIN_KEY": "job-test-admin-key-0123456789",
        }
    )
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--port",
        str(free_port()),
        "--temp-dir",
        str(temp),
        "--num-cpus",
        "1",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dash),
        "--ray-client-server-port",
        str(free_port()),
        "--disable-usage-stats",
        # the session's Ray holds the default agent ports; a second agent on them never registers
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--dashboard-agent-grpc-port",
        str(free_port()),
        "--runtime-env-agent-port",
        str(free_port()),
        "--metrics-export-port",
        str(free_port()),
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
    address = f"http://127.0.0.1:{dash}"
    try:
        wait_http(f"{address}/api/version", timeout=60, expect=None)  # 401 without the token: it is up
        head = {"address": address, "env": env, "temp": temp}
        _wait_for_job_agent(head)
        yield head
    finally:
        subprocess.run(["pkill", "-f", str(temp)], check=False)
        time.sleep(1)
        subprocess.run(["pkill", "-9", "-f", str(temp)], check=False)


_CLIENT_SCRIPT = r"""
import json, sys, time
from ray.job_submission import JobSubmissionClient
address, entrypoint, working_dir, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
client = JobSubmissionClient(address)
deadline = time.time() + timeout
while True:  # the head answers HTTP before its job agent registers ("No available agent")
    try:
        job = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": working_dir} if working_dir else None)
        break
    except RuntimeError as e:
        if "No available agent" not in str(e) or time.time() > deadline:
            raise
        time.sleep(1)
while not client.get_job_status(job).is_terminal():
    if time.time() > deadline:
        raise SystemExit("job did not finish in time")
    time.sleep(0.5)
print(json.dumps({"status": str(client.get_job_status(job).value), "logs": client.get_job_logs(job)}))
"""


def _client_job(head: dict, entrypoint: str, working_dir: str = "", timeout: float = 240) -> dict:
    """Submit through JobSubmissionClient in a child process: RAY_AUTH_MODE is read once per
    process, so the token mode of this head must be in the client's environment from its start."""
    r = subprocess.run(
        [sys.executable, "-c", _CLIENT_SCRIPT, head["address"], entrypoint, working_dir, str(timeout)],
        env=head["env"],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _wait_for_job_agent(head: dict) -> None:
    assert _client_job(head, "true", timeout=120)["status"] == "SUCCEEDED"


def _last_json(text: str) -> dict:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("{")]
    assert lines, text[-2000:]
    return json.loads(lines[-1])


def test_ray_job_submit_cli(ray_head):
    r = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            ray_head["address"],
            "--working-dir",
            str(REPO),
            "--",
            "python",
            "-m",
            "cognopt_ray.jobs.optimize_all",
        ],
        env=ray_head["env"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)
    assert re.search(r"Job '\S+' succeeded", plain), plain[-2000:]
    summary = _last_json(r.stdout)
    assert summary["job"] == "optimize_all" and summary["ok"] is True, summary
    assert summary["result"]["status"] == "ok"
    assert set(summary["result"]["passes"]) == {
        "memory.gc",
        "memory.pool_sweep",
        "storage.tiering",
        "network.cache_sweep",
        "cpu.rebalance",
    }


def test_job_submission_client(ray_head):
    out = _client_job(ray_head, "python -m cognopt_ray.jobs.optimize_all --dry-run", working_dir=str(REPO))
    assert out["status"] == "SUCCEEDED", out["logs"][-3000:]
    summary = _last_json(out["logs"])
    assert summary["job"] == "optimize_all" and summary["ok"] is True and summary["result"]["dry_run"] is True


def test_serve_deploy_against_the_head(ray_head, tmp_path):
    port = free_port()
    cfg = yaml.safe_load((REPO / "serve_apps" / "serve_config.yaml").read_text())
    cfg["http_options"]["port"] = port
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [str(BIN / "serve"), "deploy", str(path), "--address", ray_head["address"]],
        env=ray_head["env"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    base = f"http://127.0.0.1:{port}/api/v0/optimization"
    wait_http(f"{base}/health", timeout=180)
    assert requests.get(f"{base}/health").json()["ray"]["status"] == "up"
    assert requests.get(f"{base}/auth/whoami").status_code == 401
    r = requests.get(f"{base}/auth/whoami", headers={"X-API-Key": ray_head["env"]["COGNOPT_ADMIN_KEY"]})
    assert r.status_code == 200 and r.json()["key_id"] == "env-admin"
