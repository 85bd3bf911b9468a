"""Run every benchmark one at a time and regenerate the figure tables of ``docs/benchmarks.md``.

``python benchmarks/run_all.py --quick`` runs each script of :data:`BENCHMARKS` that exists in
``benchmarks/`` (``python benchmarks/<name>.py --quick``), one after another, reads the JSON line
it prints last, and rewrites the block between ``<!-- figures:<name> -->`` and
``<!-- /figures:<name> -->`` in ``docs/benchmarks.md``: the run's commit, date, cores, load
average before and after, wall time, the baseline sentence, every ratio and every result, and the
JSON line itself. Text outside the markers (how each benchmark works, how to read it) is left
alone; a benchmark whose markers are missing gets a new section at the end of the page.

With ``--repeats N`` each benchmark runs N times and every numeric figure is shown as the median
with its min–max spread; the JSON block is the last run's line, verbatim.

A benchmark that fails (non-zero exit, no JSON line, timeout) gets its failure written between
its markers, and this script exits with status 1 after the others ran. Its own last stdout line is
``{"benchmark": "run_all", ...}`` like every benchmark's.

Run it on a quiet machine and alone: each benchmark measures ratios side by side, and a
neighbour's load is noise in them (the load averages in each block say how quiet it was).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOC = REPO / "docs" / "benchmarks.md"

#: The benchmarks, in the order they run. Add a new script's name here (names whose file does not
#: exist are skipped, so a list ahead of a merge is harmless).
BENCHMARKS = [
    "memory",
    "network",
    "priority",
    "storage",
    "workload",
    "load",
    "rest",
    "scale",
    "http_conformance",
]


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/run_all.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument("--only", default=None, help="comma-separated names (default: all of BENCHMARKS that exist)")
    p.add_argument("--repeats", type=int, default=1, help="runs per benchmark (figures: median, min–max)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="give up on one benchmark run after this long")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument("--doc", default=str(DOC), help="the page to rewrite")
    return p.parse_args(argv)


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def commit() -> str:
    head = _git("rev-parse", "--short=10", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return head + ("+uncommitted changes" if dirty and dirty != "unknown" else "")


def loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def run_one(name: str, quick: bool, timeout_s: float) -> dict[str, Any]:
    """One run of ``benchmarks/<name>.py``: its JSON line and the circumstances of the run."""
    cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if quick else [])
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each starts its own local Ray
    meta: dict[str, Any] = {
        "name": name,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_before": loadavg(),
        "cores": os.cpu_count(),
    }
    print(f"[run_all] {name}: {' '.join(cmd[1:])} (load {meta['load_before']})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
        out, err, code = r.stdout, r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        code = None
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    meta["load_after"] = loadavg()
    last = out.strip().splitlines()[-1] if out.strip() else ""
    try:
        doc = json.loads(last)
        ok = code == 0 and isinstance(doc, dict) and "results" in doc
    except json.JSONDecodeError:
        doc, ok = None, False
    meta["ok"] = ok
    meta["json"] = doc
    meta["line"] = last if ok else None
    if not ok:
        why = "timed out" if code is None else f"exited with status {code}" if code else "printed no JSON line"
        meta["error"] = f"{why} after {meta['seconds']} s; stderr tail:\n" + "\n".join(err.strip().splitlines()[-15:])
    print(f"[run_all] {name}: {'ok' if ok else 'FAILED'} in {meta['seconds']} s", file=sys.stderr, flush=True)
    return meta


# ------------------------------------------------------------------------------------------ rendering
def _flat(d: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` → ``[("a.b", 1)]`` (three levels deep at most)."""
    if isinstance(d, dict) and depth < 3:
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out.extend(_flat(v, f"{prefix}{k}.", depth + 1))
        return out
    return [(prefix.rstrip("."), d)]


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, list):
        if len(v) > 6:
            return f"({len(v)} values; see the JSON)"
        return ", ".join(_fmt(x) for x in v)
    text = str(v).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "…"


def _combine(values: list[Any]) -> str:
    """One figure over the repeats: the median and its min–max when numeric, else the last value."""
    nums = [v for v in values if _num(v)]
    if len(values) > 1 and len(nums) == len(values):
        med = statistics.median(nums)
        return f"{_fmt(float(med))} ({_fmt(float(min(nums)))}–{_fmt(float(max(nums)))})"
    return _fmt(values[-1])


def render(name: str, runs: list[dict[str, Any]], quick: bool) -> str:
    """The generated block for one benchmark (between its markers)."""
    flag = " --quick" if quick else ""
    lines = [f"<!-- generated by `python benchmarks/run_all.py{flag}`: edits between these markers are replaced -->"]
    for i, m in enumerate(runs):
        lines.append(
            f"- run {i + 1}: `python benchmarks/{name}.py{flag}`, commit `{m['commit']}`, {m['date']}, "
            f"{m['cores']} cores, load average {m['load_before']} before → {m['load_after']} after, "
            f"{m['seconds']} s wall{' — **FAILED**' if not m['ok'] else ''}"
        )
    good = [m for m in runs if m["ok"]]
    if not good:
        lines += ["", "**This benchmark failed in the last regeneration:**", "", "```", runs[-1]["error"], "```"]
        return "\n".join(lines)
    docs = [m["json"] for m in good]
    rep = f"{len(good)} runs; figures are the median (min–max)" if len(good) > 1 else "one run"
    baseline = docs[-1].get("results", {}).get("baseline")
    lines.append("")
    lines.append(f"Baseline: {baseline}" if baseline else "Baseline: not named by this benchmark.")
    lines.append(f"({rep}.)")
    ratios = docs[-1].get("ratios") or {}
    if ratios:
        lines += ["", "| ratio | value |", "|---|---|"]
        for k in ratios:
            lines.append(f"| `{k}` | {_combine([d.get('ratios', {}).get(k) for d in docs])} |")
    flat = [dict(_flat(d.get("results", {}))) for d in docs]
    keys = [k for k in flat[-1] if k != "baseline"]
    if keys:
        lines += ["", "| result | value |", "|---|---|"]
        for k in keys:
            lines.append(f"| `{k}` | {_combine([f.get(k) for f in flat])} |")
    lines += [
        "",
        "<details><summary>JSON line of the last successful run</summary>",
        "",
        "```json",
        good[-1]["line"],
        "```",
        "",
    ]
    lines.append("</details>")
    return "\n".join(lines)


def rewrite_doc(path: Path, blocks: dict[str, str]) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    for name, body in blocks.items():
        start, end = f"<!-- figures:{name} -->", f"<!-- /figures:{name} -->"
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        block = f"{start}\n{body}\n{end}"
        if pattern.search(text):
            text = pattern.sub(lambda _m, block=block: block, text, count=1)
        else:
            text = text.rstrip("\n") + f"\n\n## `benchmarks/{name}.py` (figures only)\n\n{block}\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    names = [n for n in BENCHMARKS if (HERE / f"{n}.py").is_file()]
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if not (HERE / f"{n}.py").is_file()]
        if unknown:
            print(f"unknown benchmark(s) {unknown}; available: {names}", file=sys.stderr)
            return 2
        names = wanted
    rev = commit()
    all_runs: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        runs = []
        for _ in range(max(1, args.repeats)):
            m = run_one(name, args.quick, args.timeout_s)
            m["commit"] = rev
            runs.append(m)
        all_runs[name] = runs
    if not args.no_docs:
        rewrite_doc(Path(args.doc), {n: render(n, r, args.quick) for n, r in all_runs.items()})
    summary = {
        n: {"ok": all(m["ok"] for m in r), "seconds": sum(m["seconds"] for m in r), "runs": len(r)}
        for n, r in all_runs.items()
    }
    failed = [n for n, s in summary.items() if not s["ok"]]
    print(
        json.dumps(
            {
                "benchmark": "run_all",
                "quick": args.quick,
                "results": {"commit": rev, "benchmarks": summary, "failed": failed},
                "ratios": {},
            }
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
