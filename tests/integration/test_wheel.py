"""The wheel, outside the repository: built, installed into a fresh venv in a temporary folder,
and run from there as a user runs it.

The package (``cognopt_ray`` and ``serve_apps``) comes only from the wheel. The third-party
dependencies (Ray, pyarrow, …) come from the test's own venv through a ``.pth`` file: installing
Ray from PyPI for every test run would take minutes and test PyPI rather than this package.
The wheel is built with pip's build isolation (setuptools and wheel from PyPI, as a user's
``pip wheel`` does) from a copy of the files the package declares, so nothing outside them
(the tests, the repository root on ``sys.path``) can make it work by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import requests

from tests.support.helpers import free_port, read_serve_banner, wait_http

REPO = Path(__file__).resolve().parents[2]
PACKAGE_FILES = ("pyproject.toml", "README.md", "cognopt_ray", "serve_apps")


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in PACKAGE_FILES:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(p, src / name)
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        check=True,
        cwd=tmp,
        timeout=600,
    )
    (wheel,) = dist.glob("cognopt_ray-*.whl")
    return wheel


def _venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # the dependencies: the test venv's site-packages, appended to sys.path (its .pth files, the
    # editable install of this repository among them, are not run: only a site dir's own .pth are)
    (site / "_cognopt_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        cwd=tmp,
        timeout=300,
    )
    return venv


def _clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGNOPT_", "RAY_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"COGNOPT_STORAGE_ROOT": str(tmp / "root"), **extra})
    return env


def test_the_wheel_installs_and_serves_outside_the_repository(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "serve_apps/dashboard.html",
        "serve_apps/serve_config.yaml",
        "cognopt_ray/examples/tasks.py",
        "cognopt_ray/jobs/health.py",
    ):
        assert shipped in names, sorted(names)
    assert not any(n.startswith("tests/") for n in names)
    venv = _venv(tmp_path, wheel)
    run = tmp_path / "run"  # the working directory: outside the repository, empty
    run.mkdir()
    env = _clean_env(tmp_path)
    where = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import cognopt_ray, serve_apps, pathlib; print(cognopt_ray.__file__); print(serve_apps.__file__);"
            "print(all((pathlib.Path(serve_apps.__file__).parent / f).is_file() for f in ('dashboard.html', 'serve_config.yaml')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=run,
        env=env,
    ).stdout.split()
    for path in where[:2]:
        assert Path(path).is_relative_to(venv) and not Path(path).is_relative_to(REPO), where
    assert where[2] == "True", where
    port = free_port()
    proc = subprocess.Popen(
        [
            venv / "bin" / "cognopt",
            "serve",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--task",
            "primes=cognopt_ray.examples.tasks:count_primes",
            "--task",
            "module=importlib:import_module",  # a worker says where it imports the package from
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=run,
    )
    try:
        banner = read_serve_banner(proc, timeout=180)
        lines, key, url, ray_env = banner["lines"], banner["key"], banner["url"], banner["ray_env"]
        assert url and key and "RAY_ADDRESS" in ray_env, lines
        wait_http(f"{url}/health", timeout=60)
        assert requests.get(f"{url}/health", timeout=30).json()["ray"]["status"] == "up"
        page = requests.get(f"http://127.0.0.1:{port}/dashboard", timeout=30)
        assert page.status_code == 200 and 'data-panel="savings"' in page.text
        assert page.text == (Path(where[1]).parent / "dashboard.html").read_text()
        h = {"Authorization": f"Bearer {key}"}
        r = requests.post(
            f"{url}/cpu/optimize-tasks",
            headers=h,
            json={
                "tasks": [
                    {"name": "primes", "args": [1000], "priority": "critical"},
                    {"name": "module", "args": ["cognopt_ray"]},
                ]
            },
            timeout=180,
        )
        assert r.status_code == 200, r.text
        primes, module = r.json()["tasks"]
        assert primes["result"] == 168, primes
        assert isinstance(module["result"], str), module["error"]
        assert str(venv) in module["result"] and str(REPO) not in module["result"], module  # the worker's import
        job = subprocess.run(
            [venv / "bin" / "python", "-m", "cognopt_ray.jobs.health"],
            capture_output=True,
            text=True,
            cwd=run,
            env={**env, **ray_env},
            timeout=180,
        )
        assert job.returncode == 0, job.stderr[-3000:]
        summary = json.loads(job.stdout.strip().splitlines()[-1])
        assert summary["job"] == "health" and summary["ok"] is True, summary
        assert summary["result"]["engines"]["cpu"]["status"] == "up", summary
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err[-3000:]
    assert "stopped." in out
