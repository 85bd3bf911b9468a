"""Every notebook in ``notebooks/`` runs end to end, and none is stored with outputs.

The kernel joins this session's Ray (``RAY_ADDRESS`` = its GCS address, so no notebook pays for
starting Ray), keeps its data under a temporary storage root (``COGNOPT_STORAGE_ROOT``) and draws
with matplotlib's Agg backend. A failing cell fails the test with the cell's traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {
        "01_quickstart.ipynb",
        "02_priority_scheduling.ipynb",
        "03_memory_pools.ipynb",
        "04_storage_and_backups.ipynb",
        "05_network_cache.ipynb",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has stored outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, ray_session, tmp_path):
    env = dict(os.environ)
    env.update(
        {
            "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
            "COGNOPT_STORAGE_ROOT": str(tmp_path / "cognopt"),
            "MPLBACKEND": "Agg",
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
        }
    )
    # The session's Ray enables token auth in this process's environment (Ray >= 2.59); pass it on.
    if os.environ.get("RAY_AUTH_MODE"):
        env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
    env.pop("COGNOPT_REDIS_URL", None)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
