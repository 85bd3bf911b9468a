"""How the memory engine sizes, classifies and (de)serialises the values it holds."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from typing import Any

#: Kinds of values the pools tell apart (the REST route answers each kind differently).
KINDS = ("bytes", "numpy", "arrow", "json", "object")


def classify(value: Any) -> str:
    """``bytes`` | ``numpy`` | ``arrow`` | ``json`` | ``object``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    mod = type(value).__module__ or ""
    if mod.startswith("numpy") and hasattr(value, "nbytes") and hasattr(value, "dtype"):
        return "numpy"
    if mod.startswith("pyarrow"):
        return "arrow"
    if _is_json(value):
        return "json"
    return "object"


def _is_json(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False


def nbytes_of(value: Any, kind: str) -> int:
    """The bytes a value occupies: its buffer size for bytes, numpy and Arrow, else its pickled size."""
    if kind == "bytes":
        return memoryview(value).nbytes
    if kind == "numpy":
        return int(value.nbytes)
    if kind == "arrow":
        size = getattr(value, "nbytes", None)
        if size is None:
            size = getattr(value, "size", None)
        if isinstance(size, int):
            return size
    if kind == "json":
        return len(json.dumps(value, separators=(",", ":")).encode())
    return len(pickle.dumps(value, protocol=5))


def dumps(value: Any) -> bytes:
    """Serialise a value for the durable copy of a persistent allocation (pickle protocol 5)."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:  # noqa: BLE001 - lambdas, local classes
        from ray import cloudpickle

        return cloudpickle.dumps(value, protocol=5)


def loads(data: bytes) -> Any:
    """Inverse of :func:`dumps`. Only ever called on files the engine wrote under its storage root."""
    return pickle.loads(data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_http_bytes(value: Any, kind: str) -> tuple[bytes, dict[str, str]]:
    """Bytes and extra headers for ``GET memory/allocations/{id}`` of a non-JSON value."""
    if kind == "bytes":
        return bytes(value), {}
    if kind == "numpy":
        import numpy as np

        arr = np.ascontiguousarray(value)
        return arr.tobytes(), {"X-Cognopt-Dtype": arr.dtype.str, "X-Cognopt-Shape": ",".join(map(str, arr.shape))}
    if kind == "arrow":
        import pyarrow as pa

        if isinstance(value, pa.Buffer):
            return value.to_pybytes(), {}
        sink = io.BytesIO()
        table = value if isinstance(value, pa.Table) else pa.table({"value": value}) if isinstance(value, (pa.Array, pa.ChunkedArray)) else None
        if table is None:
            return pickle.dumps(value, protocol=5), {"X-Cognopt-Encoding": "pickle"}
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return sink.getvalue(), {"X-Cognopt-Encoding": "arrow-ipc-stream"}
    return pickle.dumps(value, protocol=5), {"X-Cognopt-Encoding": "pickle"}
