"""The lazy packages (cognopt_ray._private.lazy): cheap to import, complete, and picklable by name."""

import importlib
import pickle
import subprocess
import sys

import pytest
import ray.cloudpickle as cloudpickle

import cognopt_ray

PACKAGES = ["cognopt_ray", "cognopt_ray.cpu", "cognopt_ray.memory", "cognopt_ray.storage", "cognopt_ray.network"]


def test_importing_the_package_and_the_backup_path_loads_no_ray_or_pyarrow():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cognopt_ray, cognopt_ray.storage.backup; print('ray' in sys.modules, 'pyarrow' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves(name):
    mod = importlib.import_module(name)
    for attr in mod.__all__:
        assert getattr(mod, attr) is not None, attr


@pytest.mark.parametrize("name", PACKAGES)
def test_a_package_pickles_by_name(name):
    """A task may return the package, and a notebook function's globals may hold it: Ray
    pickles both with cloudpickle, which knows plain modules only (this failed: 'cannot pickle
    LazyPackage object')."""
    mod = importlib.import_module(name)
    assert pickle.loads(pickle.dumps(mod)) is mod
    assert cloudpickle.loads(cloudpickle.dumps(mod)) is mod


def uses_the_package():
    return cognopt_ray.__name__


def test_a_function_whose_globals_hold_the_package_pickles_by_value():
    import types

    f = types.FunctionType(uses_the_package.__code__, {"cognopt_ray": cognopt_ray}, "f")
    assert cloudpickle.loads(cloudpickle.dumps(f))() == "cognopt_ray"
