"""``python -m cognopt_ray.jobs.benchmark --name <name>``: run one benchmark of ``benchmarks/``.

Runs ``benchmarks/<name>.py --quick`` (``--full`` for the full sizes) and returns the JSON line
the benchmark prints last as the job's ``result``; the benchmark's table is passed through to the
job's log. The benchmark starts its own local Ray on the node the job runs on (``RAY_ADDRESS`` is
removed from its environment), because its ratios are measured side by side on an idle, known
number of CPUs and its engines must not meet the cluster's.

``benchmarks/`` is looked up in the working directory (``ray job submit --working-dir .`` from
the repository root) and then next to the installed package (an editable install).

Example:
    ray job submit --working-dir . -- python -m cognopt_ray.jobs.benchmark --name storage
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cognopt_ray.errors import InvalidInput, NotFound
from cognopt_ray.jobs import run_job


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder: in the working directory, else beside the package."""
    import cognopt_ray

    for root in (Path.cwd(), Path(cognopt_ray.__file__).resolve().parents[1]):
        if (root / "benchmarks" / "_harness.py").is_file():
            return root / "benchmarks"
    raise NotFound(
        "no benchmarks/ folder found in the working directory or beside the package",
        hint="submit from the repository root with `ray job submit --working-dir . -- ...`",
    )


def available() -> list[str]:
    """Names of the benchmarks (``benchmarks/<name>.py`` without the leading ``_`` helpers)."""
    return sorted(p.stem for p in benchmarks_dir().glob("*.py") if not p.stem.startswith("_"))


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cognopt_ray.jobs.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the benchmark: a file name in benchmarks/ without .py")
    parser.add_argument("--full", action="store_true", help="full sizes instead of --quick")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="give up after this many seconds")
    return parser.parse_args(argv)


def run_benchmark(name: str, *, quick: bool = True, timeout_s: float = 900.0) -> dict[str, Any]:
    """Run ``benchmarks/<name>.py`` in a child process and return its closing JSON line."""
    names = available()
    if name not in names:
        raise InvalidInput(
            f"unknown benchmark {name!r}; available: {', '.join(names)}",
            hint="pass --name with one of the available names",
        )
    script = benchmarks_dir() / f"{name}.py"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, str(script)] + (["--quick"] if quick else [])
    proc = subprocess.Popen(cmd, cwd=script.parent.parent, env=env, stdout=subprocess.PIPE, text=True)
    last = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # pass the table through to the job's log as it comes
            sys.stdout.write(line)
            if line.strip():
                last = line.strip()
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError(f"benchmark {name!r} did not finish within {timeout_s:g} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    if code != 0:
        raise RuntimeError(f"benchmark {name!r} exited with status {code}; its error is in the log above")
    try:
        doc = json.loads(last)
    except json.JSONDecodeError:
        raise RuntimeError(f"benchmark {name!r} did not end with a JSON line (last line: {last[:200]!r})") from None
    if not isinstance(doc, dict) or doc.get("benchmark") is None:
        raise RuntimeError(f"benchmark {name!r} ended with JSON that is not a benchmark summary: {last[:200]!r}")
    return doc


if __name__ == "__main__":
    _args = _parse()
    run_job("benchmark", lambda: run_benchmark(_args.name, quick=not _args.full, timeout_s=_args.timeout_s))
