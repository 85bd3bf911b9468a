"""A test skipped for a missing tool fails instead under ``CI=true`` (issue 15, part 4)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import helpers


def test_tool_missing_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(helpers, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="frobnicator"):
        helpers.tool_missing("frobnicator is not installed")
    with pytest.raises(pytest.skip.Exception, match="no-such-tool-h15 or no-such-tool-h15b"):
        helpers.need_binary("no-such-tool-h15", "no-such-tool-h15b")
    monkeypatch.setattr(helpers, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="frobnicator"):
        helpers.tool_missing("frobnicator is not installed")
    with pytest.raises(pytest.fail.Exception):
        helpers.need_binary("no-such-tool-h15")
    assert helpers.need_binary("no-such-tool-h15", "sh").endswith("/sh")  # an alternative that is installed


def test_ci_true_turns_the_skip_into_a_failure(tmp_path):
    """End to end: the same test file, run by pytest with and without CI=true."""
    case = tmp_path / "test_needs_tool.py"
    case.write_text(
        "from tests.support.helpers import need_binary\n\ndef test_it():\n    need_binary('no-such-tool-h15')\n"
    )
    repo = Path(helpers.__file__).resolve().parents[2]

    def run(ci: str) -> str:
        env = {**os.environ, "CI": ci, "PYTHONPATH": str(repo)}
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(case)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        return r.stdout

    assert "1 skipped" in run("")
    out = run("true")
    assert "1 failed" in out and "no-such-tool-h15 is not installed" in out
