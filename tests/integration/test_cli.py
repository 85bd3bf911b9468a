"""The `cognopt` command as a user runs it: a subprocess, real HTTP, SIGINT to stop."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.support.helpers import free_port, read_serve_banner, wait_http

BIN = Path(sys.executable).parent / "cognopt"
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_task_example() -> tuple[list[str], dict, list]:
    """The README's REST task example: the ``--task`` options of its run command, the body it
    posts to ``cpu/optimize-tasks`` and the results it shows."""
    text = README.read_text()
    block = text.split("./scripts/run.sh --task", 1)[1].split("```", 1)[0]
    options = re.findall(r"--task (\S+)", "--task" + block.splitlines()[0])
    body = json.loads(re.search(r"-d '(.*?)' \$URL/cpu/optimize-tasks", block, re.S).group(1))
    results = [json.loads(r) for r in re.findall(r'"result": ([0-9]+)', block)]
    return [a for o in options for a in ("--task", o)], body, results


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGNOPT_", "RAY_ADDRESS"))}
    env.update({"COGNOPT_STORAGE_ROOT": str(tmp_path / "root"), **extra})
    return env


def test_version():
    out = subprocess.run([BIN, "version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("cognopt-ray 0.1.0") and "ray 2." in out


def test_bad_setting_fails_at_start_naming_it(tmp_path):
    r = subprocess.run(
        [BIN, "serve"], capture_output=True, text=True, env=_env(tmp_path, COGNOPT_MAX_BODY_BYTES="-3"), timeout=60
    )
    assert r.returncode != 0
    assert "max_body_bytes" in r.stderr and "COGNOPT_MAX_BODY_BYTES" in r.stderr


def test_a_task_path_that_does_not_import_stops_the_start_naming_it(tmp_path):
    for option, says in (
        ("fact=math:no_such_function", "module 'math' has no 'no_such_function'"),
        ("x=no_such_package.mod:f", "cannot import module 'no_such_package.mod'"),
        ("noequals", "is not name=package.module:function"),
    ):
        r = subprocess.run(
            [BIN, "serve", "--task", option], capture_output=True, text=True, env=_env(tmp_path), timeout=60
        )
        assert r.returncode != 0 and says in r.stderr, r.stderr
        assert "Started a local Ray" not in r.stderr + r.stdout  # it stops before starting Ray
        if "=" in option:
            assert f"cpu.tasks.{option.split('=')[0]}" in r.stderr, r.stderr
    yaml_file = tmp_path / "settings.yaml"
    yaml_file.write_text("cpu:\n  tasks:\n    primes: cognopt_ray.examples.tasks:nope\n")
    r = subprocess.run(
        [BIN, "serve", "--config", str(yaml_file)], capture_output=True, text=True, env=_env(tmp_path), timeout=60
    )
    assert r.returncode != 0 and "cpu.tasks.primes" in r.stderr and "'nope'" in r.stderr, r.stderr


def test_keys_create_prints_once_and_stores_hash(tmp_path):
    r = subprocess.run(
        [BIN, "keys", "create", "--scope", "read", "--scope", "service:ai_models"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        check=True,
        timeout=60,
    )
    key = r.stdout.strip()
    assert re.fullmatch(r"cok_[0-9a-f]{12}\.[A-Za-z0-9_-]+", key)
    stored = (tmp_path / "root" / "keys.json").read_text()
    assert key.split(".", 1)[1] not in stored and key[4:16] in stored
    bad = subprocess.run(
        [BIN, "keys", "create", "--scope", "root"], capture_output=True, text=True, env=_env(tmp_path), timeout=60
    )
    assert bad.returncode != 0 and "scope" in bad.stderr


def test_serve_prints_url_and_key_answers_and_stops_on_sigint(tmp_path):
    port = free_port()
    # the CLI starts its own local Ray beside the test session's one
    proc = subprocess.Popen(
        [BIN, "serve", "--port", str(port), "--num-cpus", "1", *readme_task_example()[0]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        banner = read_serve_banner(proc, timeout=90)
        lines, key, url = banner["lines"], banner["key"], banner["url"]
        assert url == f"http://127.0.0.1:{port}/api/v0/optimization", lines
        assert key, lines
        wait_http(f"{url}/health", timeout=30)
        assert requests.get(f"{url}/health").json()["ray"]["status"] == "up"
        assert requests.get(f"{url}/not/a/route/yet").status_code == 401
        r = requests.get(f"{url}/auth/whoami", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["scopes"] == ["admin"]
        status = subprocess.run(
            [BIN, "status", "--url", f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            timeout=60,
        )
        assert status.returncode == 0 and '"status": "ok"' in status.stdout
        # a key made by `cognopt keys create` works on the running server without a restart
        new = subprocess.run(
            [BIN, "keys", "create", "--scope", "read"],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            check=True,
            timeout=60,
        ).stdout.strip()
        assert requests.get(f"{url}/auth/whoami", headers={"X-API-Key": new}).json()["scopes"] == ["read"]
        _trust_boundary_holds(url, key, tmp_path)
        # the README's example: the tasks named by --task run over REST, with no driver registering them
        _, body, results = readme_task_example()
        r = requests.post(
            f"{url}/cpu/optimize-tasks", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=120
        )
        assert r.status_code == 200, r.text
        assert [t["result"] for t in r.json()["tasks"]] == results and r.json()["completed"] == len(results)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert "stopped." in out
    assert key not in err


def _trust_boundary_holds(url: str, admin_key: str, tmp_path) -> None:
    """Issue 13's attacks on a real ``cognopt serve``: one service cannot take over or probe
    another's item, the admin key cannot back up a path outside the configured roots, and open
    health shows statuses only."""

    def key_for(scope: str) -> dict[str, str]:
        k = subprocess.run(
            [BIN, "keys", "create", "--scope", scope],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            check=True,
            timeout=60,
        ).stdout.strip()
        return {"Authorization": f"Bearer {k}"}

    ai, code = key_for("service:ai_models"), key_for("service:code_generation")
    admin = {"Authorization": f"Bearer {admin_key}"}
    r = requests.post(
        f"{url}/storage/store",
        headers=ai,
        timeout=60,
        json={"item_id": "cli-ai-item", "data": {"v": 1}, "service_name": "ai_models"},
    )
    assert r.status_code == 201, r.text
    r = requests.post(
        f"{url}/storage/store",
        headers=code,
        timeout=60,
        json={"item_id": "cli-ai-item", "data": {"v": 2}, "service_name": "code_generation"},
    )
    assert r.status_code == 403, r.text
    seen = requests.get(f"{url}/storage/retrieve/cli-ai-item", headers=code, timeout=60)
    missing = requests.get(f"{url}/storage/retrieve/cli-no-item", headers=code, timeout=60)
    assert seen.status_code == missing.status_code == 404
    assert requests.get(f"{url}/storage/retrieve/cli-ai-item", headers=ai, timeout=60).json() == {"v": 1}
    r = requests.post(f"{url}/storage/backup", headers=admin, json={"source": "/etc"}, timeout=120)
    assert r.status_code == 403 and "backup_source_roots" in r.text, r.text
    health = requests.get(f"{url}/health", timeout=60).text
    assert "version" not in health and "nodes_alive" not in health and "items" not in health, health
