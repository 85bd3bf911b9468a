"""``benchmarks/run_all.py``: the generated figure blocks of docs/benchmarks.md (no benchmark is run here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)


def _run(ok: bool, ratio: float | None = None, value: float | None = None) -> dict:
    doc = {
        "results": {"baseline": "plain Ray", "p99_s": value, "peers": {"restic": {"mb_s": value}}},
        "ratios": {"r": ratio},
    }
    return {
        "name": "x",
        "date": "2026-12-01 22:00 UTC",
        "load_before": "0.10 / 0.20 / 0.30",
        "load_after": "1.00 / 0.50 / 0.40",
        "cores": 2,
        "seconds": 12.5,
        "commit": "abc1234",
        "ok": ok,
        "json": doc if ok else None,
        "line": '{"benchmark": "x"}' if ok else None,
        "error": None if ok else "exited with status 1 after 3 s; stderr tail:\nboom",
    }


def test_block_has_the_circumstances_the_median_and_the_spread():
    text = run_all.render("x", [_run(True, 2.0, 1.0), _run(True, 4.0, 3.0), _run(True, 3.0, 2.0)], quick=True)
    assert "commit `abc1234`" in text and "2026-12-01 22:00 UTC" in text and "2 cores" in text
    assert "load average 0.10 / 0.20 / 0.30 before → 1.00 / 0.50 / 0.40 after" in text
    assert "Baseline: plain Ray" in text
    assert "| `r` | 3 (2–4) |" in text  # median (min–max)
    assert "| `peers.restic.mb_s` | 2 (1–3) |" in text  # nested results are flattened
    assert "3 runs; figures are the median (min–max)" in text


def test_a_failed_run_is_written_down_not_hidden():
    text = run_all.render("x", [_run(False)], quick=True)
    assert "**FAILED**" in text and "boom" in text and "| `r`" not in text


def test_only_the_text_between_the_markers_is_replaced(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# B\n\nhow it works\n<!-- figures:x -->\nstale table\n<!-- /figures:x -->\nreading notes\n")
    run_all.rewrite_doc(doc, {"x": run_all.render("x", [_run(True, 2.0, 1.0)], quick=True), "y": "new"})
    text = doc.read_text()
    assert "stale table" not in text and "| `r` | 2 |" in text
    assert text.startswith("# B\n\nhow it works\n<!-- figures:x -->") and "<!-- /figures:x -->\nreading notes\n" in text
    assert text.rstrip().endswith("<!-- figures:y -->\nnew\n<!-- /figures:y -->")  # missing markers: appended
