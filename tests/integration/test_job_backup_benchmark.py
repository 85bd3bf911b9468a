"""The ``backup`` and ``benchmark`` job entry points, run as ``python -m`` subprocesses against
this session's Ray (``RAY_ADDRESS`` = its GCS address, as ``ray job submit`` would set it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def job_root(tmp_path_factory) -> Path:
    """The storage root of the engine a job creates when the cluster has none yet (kept between runs)."""
    return tmp_path_factory.mktemp("job-root")


def _env(ray_session, root: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COGNOPT_")}
    env["RAY_ADDRESS"] = ray_session.get_runtime_context().gcs_address
    env["PYTHONPATH"] = str(REPO)
    if root is not None:
        env["COGNOPT_STORAGE_ROOT"] = str(root)
    return env


def run_job(
    ray_session, module: str, *args: str, cwd: Path = REPO, root: Path | None = None, timeout: float = 300
) -> tuple[int, dict, str]:
    """Run ``python -m cognopt_ray.jobs.<module> args``; returns (exit code, summary, stderr)."""
    r = subprocess.run(
        [sys.executable, "-m", f"cognopt_ray.jobs.{module}", *args],
        cwd=cwd,
        env=_env(ray_session, root),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    try:
        summary = json.loads(last)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON summary as the last line:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}") from None
    return r.returncode, summary, r.stderr


def _source_root() -> Path:
    """A fresh folder inside the cluster's storage engine's ``backup_source_roots`` (backups read
    nowhere else), for a job that uses that engine."""
    import uuid

    from cognopt_ray import storage

    root = Path(storage.client().path_roots()["backup_source_roots"][0])
    folder = root / f"job-{uuid.uuid4().hex[:8]}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


def test_backup_job_is_incremental(ray_session, job_root):
    """A folder backed up twice: the second run finds every chunk in the repository already.

    The job uses the cluster's storage engine (``cognopt.storage``) when it exists, and creates
    it under ``COGNOPT_STORAGE_ROOT`` otherwise; either way the repository is on disk, so it
    outlives the job.
    """
    data = _source_root()
    data.mkdir()
    (data / "model.bin").write_bytes(os.urandom(1_000_000))  # incompressible: its chunks are all new
    (data / "notes.txt").write_text("hello\n" * 1000)
    code, first, err = run_job(ray_session, "backup", "--source", str(data), "--tag", "job-test", root=job_root)
    assert code == 0, err[-3000:]
    assert first["job"] == "backup" and first["ok"] is True
    res = first["result"]
    assert res["snapshot_id"] and res["source"] == str(data) and res["tag"] == "job-test" and res["files"] == 2
    assert res["bytes_scanned"] == 1_006_000 and res["bytes_added"] >= 900_000, res
    code, second, err = run_job(ray_session, "backup", "--source", str(data), root=job_root)
    assert code == 0, err[-3000:]
    again = second["result"]
    assert again["snapshot_id"] != res["snapshot_id"] and again["bytes_scanned"] == 1_006_000
    assert again["bytes_added"] < 100_000, again  # nothing changed: no chunk is written twice
    assert again["snapshots"] == res["snapshots"] + 1


def test_backup_job_of_the_store(ray_session, job_root):
    code, summary, err = run_job(ray_session, "backup", root=job_root)
    assert code == 0, err[-3000:]
    assert summary["ok"] is True and summary["result"]["source"] == "store" and summary["result"]["snapshot_id"]


def test_backup_job_fails_with_the_reason(ray_session, job_root, tmp_path):
    code, summary, err = run_job(ray_session, "backup", "--source", str(_source_root()), root=job_root)
    assert code == 1
    assert summary["ok"] is False and "not a folder" in summary["error"]
    assert "backup failed" in err
    # a folder outside the configured roots is refused, naming the setting
    code, summary, err = run_job(ray_session, "backup", "--source", str(tmp_path), root=job_root)
    assert code == 1 and summary["ok"] is False and "backup_source_roots" in summary["error"]


def _bench_dir(tmp_path: Path, body: str) -> Path:
    """A working directory with ``benchmarks/`` holding the real harness and one small benchmark."""
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    shutil.copy(REPO / "benchmarks" / "_harness.py", bench / "_harness.py")
    (bench / "tiny.py").write_text(body)
    return tmp_path


TINY = """
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import emit, parse_args
args = parse_args("tiny", "a tiny benchmark")
xs = [i * i for i in range(10000)]
emit("tiny", args.quick, {"n": len(xs), "ray_address": os.environ.get("RAY_ADDRESS")}, {"speedup": 2.0},
     rows=[("n", len(xs))], header=("what", "value"))
"""


def test_benchmark_job_returns_the_benchmarks_json_line(ray_session, tmp_path):
    cwd = _bench_dir(tmp_path, TINY)
    code, summary, err = run_job(ray_session, "benchmark", "--name", "tiny", cwd=cwd)
    assert code == 0, err[-3000:]
    assert summary["job"] == "benchmark" and summary["ok"] is True
    result = summary["result"]
    assert result == {
        "benchmark": "tiny",
        "quick": True,
        "results": {"n": 10000, "ray_address": None},
        "ratios": {"speedup": 2.0},
    }  # its own local Ray: RAY_ADDRESS is not passed on


def test_benchmark_job_lists_the_real_benchmarks_for_an_unknown_name(ray_session):
    code, summary, err = run_job(ray_session, "benchmark", "--name", "no_such_benchmark")
    assert code == 1 and summary["ok"] is False
    assert "unknown benchmark 'no_such_benchmark'" in summary["error"]
    for name in ("memory", "network", "storage"):
        assert name in summary["error"]
    assert "benchmark failed" in err


def test_benchmark_job_fails_when_the_benchmark_fails(ray_session, tmp_path):
    cwd = _bench_dir(tmp_path, "raise SystemExit('the origin could not start')\n")
    code, summary, err = run_job(ray_session, "benchmark", "--name", "tiny", cwd=cwd)
    assert code == 1 and summary["ok"] is False
    assert "exited with status 1" in summary["error"]
    assert "the origin could not start" in err  # the benchmark's own error reaches the job's log
