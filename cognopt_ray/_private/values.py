"""The one tagged value codec, and how the memory engine sizes and classifies values.

Every value the package writes where something else could write too (Redis, the storage
engine's WARM tier, files under the storage root) crosses as *tagged data*, one tag byte and a
body:

===  ===================================================================================
tag  body
===  ===================================================================================
B    raw bytes
S    UTF-8 text
J    JSON (``allow_nan=False``)
N    a numpy array in ``.npy`` format, written and read with ``allow_pickle=False``
A    an Arrow IPC stream (sub-tag ``T`` table, ``R`` record batch, ``V`` array, ``C`` chunked
     array: a one-column table ``value``), or ``U`` + the bytes of a ``pyarrow.Buffer``
O    a pickle (protocol 5, cloudpickle for lambdas and local classes)
===  ===================================================================================

Decoding never runs code. :func:`decode`, for blobs nobody signed (the shared cache's values in
Redis), reads only ``B``/``S``/``J``/``N`` — plain data formats bounded by their input — and refuses
``A`` (an IPC stream may carry compressed buffers, a decompression bomb) and ``O`` outright
(:class:`IntegrityError`). Only :func:`open_signed` decodes ``A`` and ``O``, and only after
:meth:`~cognopt_ray._private.sealer.Signer.open` has checked the blob's HMAC, bound to its name
(allocation id, spill item id, quarantine id) and made from this installation's secret. So a
pickle that a caller, an origin, Redis or a file wrote is refused, never loaded.

:func:`encode` writes ``A`` and ``O`` only with ``signed=True`` (what :func:`seal_signed` passes);
the shared cache calls it without, so it refuses Arrow and other objects as it always did.

Example:
    >>> decode(encode({"a": [1, 2]}))
    {'a': [1, 2]}
    >>> import os
    >>> from cognopt_ray._private.sealer import Signer
    >>> signer = Signer(os.urandom(32), b"cognopt values")
    >>> open_signed(seal_signed({1: "x"}, signer, b"id1"), signer, b"id1")
    {1: 'x'}
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from typing import Any

from cognopt_ray._private.sealer import Signer
from cognopt_ray.errors import IntegrityError, InvalidInput
from cognopt_ray.memory.errors import NotAcceptable

#: Kinds of values the pools tell apart (the REST route answers each kind differently).
KINDS = ("bytes", "numpy", "arrow", "json", "object")
#: Purpose of the HMAC sub-key that signs the memory engine's values (spill, persisted allocations).
VALUES_PURPOSE = b"cognopt values"


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
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
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
    return len(_pickle(value))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the codec -------------------------------------------------------------------------------------
def _pickle(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:  # noqa: BLE001 - lambdas, local classes
        from ray import cloudpickle

        return cloudpickle.dumps(value, protocol=5)


def _arrow(value: Any) -> bytes | None:
    """``A`` + sub-tag + IPC stream (or buffer bytes); ``None`` for Arrow objects IPC cannot carry."""
    import pyarrow as pa

    if isinstance(value, pa.Buffer):
        return b"AU" + value.to_pybytes()
    if isinstance(value, pa.Table):
        sub, table = b"T", value
    elif isinstance(value, pa.RecordBatch):
        sub, table = b"R", pa.Table.from_batches([value])
    elif isinstance(value, pa.Array):
        sub, table = b"V", pa.table({"value": value})
    elif isinstance(value, pa.ChunkedArray):
        sub, table = b"C", pa.table({"value": value})
    else:
        return None
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return b"A" + sub + sink.getvalue()


def encode(value: Any, *, signed: bool = False) -> bytes:
    """Tagged bytes for ``value`` (see the module's table).

    Args:
        signed: the blob will be signed (:func:`seal_signed`): Arrow values (tag ``A``) and other
            Python objects (tag ``O``, a pickle) are allowed; without it they are :class:`InvalidInput`.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"B" + bytes(value)
    if isinstance(value, str):
        return b"S" + value.encode()
    mod = type(value).__module__ or ""
    if mod.startswith("numpy") and hasattr(value, "dtype"):
        import numpy as np

        buf = io.BytesIO()
        try:
            np.save(buf, np.asarray(value), allow_pickle=False)
            return b"N" + buf.getvalue()
        except ValueError:
            if not signed:
                raise InvalidInput(
                    "numpy object arrays cannot be stored as data (they need pickle)",
                    hint="use a numeric dtype, or the memory pools for Python objects",
                ) from None
    if mod.startswith("pyarrow") and signed:
        out = _arrow(value)
        if out is not None:
            return out
    if _is_json(value):
        return b"J" + json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    if signed:
        return b"O" + _pickle(value)
    try:  # tuples and the like: the cache has always stored them as JSON lists
        return b"J" + json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError):
        raise InvalidInput(
            f"cannot store a value of type {type(value).__name__} as data (only bytes, str, JSON values "
            "and numpy arrays)",
            hint="store one of those (use the memory pools for other Python objects)",
        ) from None


def decode(data: bytes | memoryview) -> Any:
    """Inverse of :func:`encode` for unsigned blobs: ``B``/``S``/``J``/``N`` only; ``A`` and a pickle
    (``O``) are refused, never decoded."""
    return _decode(data, signed=False)


def decode_verified(payload: bytes | memoryview) -> Any:
    """Inverse of :func:`encode` with objects allowed, for a ``payload`` that
    :meth:`Signer.open <cognopt_ray._private.sealer.Signer.open>` has just returned (its signature
    checked). Never call it on anything else; :func:`open_signed` does both steps."""
    return _decode(payload, signed=True)


def _decode(data: bytes | memoryview, *, signed: bool) -> Any:
    body = memoryview(data)
    tag, body = bytes(body[:1]), body[1:]
    if tag == b"B":
        return bytes(body)
    if tag == b"S":
        return bytes(body).decode()
    if tag == b"J":
        return json.loads(bytes(body))
    if tag == b"N":
        import numpy as np

        return np.load(io.BytesIO(body), allow_pickle=False)
    if tag in (b"A", b"O") and not signed:
        raise IntegrityError(
            f"a stored value is {'a pickle' if tag == b'O' else 'an Arrow stream'} but carries no "
            "signature of this installation",
            hint="pickles and Arrow streams are only decoded from blobs this installation signed; it is refused",
        )
    if tag == b"A":
        import pyarrow as pa

        sub, body = bytes(body[:1]), body[1:]
        if sub == b"U":
            return pa.py_buffer(bytes(body))
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
        if sub == b"T":
            return table
        if sub == b"R":
            batches = table.combine_chunks().to_batches()
            return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)
        if sub == b"V":
            return table.column("value").combine_chunks()
        if sub == b"C":
            return table.column("value")
        raise IntegrityError("an Arrow value has an unknown sub-tag", hint="it is refused, not decoded")
    if tag == b"O":
        return pickle.loads(body)
    raise IntegrityError(
        f"a stored value has an unknown encoding tag {tag!r}",
        hint="it was not written by this version of cognopt_ray; it is refused, not decoded",
    )


def seal_signed(value: Any, signer: Signer, name: bytes) -> bytes:
    """``value`` tagged (objects allowed) and signed, the signature bound to ``name``."""
    return signer.sign(encode(value, signed=True), name)


def open_signed(blob: bytes | memoryview, signer: Signer, name: bytes) -> Any:
    """The value of a :func:`seal_signed` blob: the signature is checked first, then it is decoded.

    Raises:
        IntegrityError: no signature, a wrong one (written elsewhere, tampered with, or under another
            name), or an unknown tag. Nothing of the blob is decoded before the check.
    """
    return decode_verified(signer.open(blob, name))


def to_http_bytes(value: Any, kind: str) -> tuple[bytes, dict[str, str]]:
    """Bytes and extra headers for ``GET memory/allocations/{id}`` of a non-JSON value.

    A REST reader never receives a pickle: Python objects (kind ``object``), numpy object arrays
    and Arrow objects that are not tables, arrays or buffers are :class:`NotAcceptable` (406).
    """
    if kind == "bytes":
        return bytes(value), {}
    if kind == "numpy":
        import numpy as np

        arr = np.ascontiguousarray(value)
        if arr.dtype.hasobject:
            raise NotAcceptable(
                "this allocation is a numpy array of Python objects, which has no byte form",
                hint="read it with the Python client (MemoryPools.get)",
            )
        return arr.tobytes(), {"X-Cognopt-Dtype": arr.dtype.str, "X-Cognopt-Shape": ",".join(map(str, arr.shape))}
    if kind == "arrow":
        out = _arrow(value)
        if out is not None:
            if out[1:2] == b"U":
                return out[2:], {}
            return out[2:], {"X-Cognopt-Encoding": "arrow-ipc-stream"}
    raise NotAcceptable(
        f"this allocation holds a Python object ({type(value).__name__}), which is not sent over "
        "REST (it would need pickle, which a reader must never load from a server)",
        hint="read it with the Python client (MemoryPools.get), or allocate bytes, JSON, numpy or Arrow",
    )
