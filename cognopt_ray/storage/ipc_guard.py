"""The decoded size of an Arrow IPC stream, read from its metadata before anything is decompressed.

An IPC stream may carry LZ4/zstd-compressed buffers: a 50 KiB upload can declare gigabytes of
columns, and ``pyarrow.ipc.open_stream(...).read_all()`` would allocate them all. Each record batch
(and dictionary batch) message lists its buffers in its flatbuffer metadata; a compressed buffer
starts with its uncompressed length (int64, ``-1`` = stored uncompressed). :func:`check_stream`
adds those lengths up, message by message, without decoding a buffer, and refuses (413) a stream
whose decoded bytes would pass the limit. Only after that may the stream be read.

Example:
    >>> import pyarrow as pa, pyarrow.ipc as ipc
    >>> t = pa.table({"x": [1, 2, 3]})
    >>> sink = pa.BufferOutputStream()
    >>> with ipc.new_stream(sink, t.schema) as w:
    ...     w.write_table(t)
    >>> decoded_bytes(sink.getvalue().to_pybytes()) >= 24
    True
"""

from __future__ import annotations

import struct

import pyarrow as pa
import pyarrow.ipc as ipc

from cognopt_ray.errors import InvalidInput, PayloadTooLarge

_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3


def _u16(b: bytes, p: int) -> int:
    return struct.unpack_from("<H", b, p)[0]


def _u32(b: bytes, p: int) -> int:
    return struct.unpack_from("<I", b, p)[0]


def _field(b: bytes, table: int, index: int) -> int | None:
    """Position of field ``index`` of the flatbuffer table at ``table`` (``None`` when absent)."""
    vtable = table - struct.unpack_from("<i", b, table)[0]
    slot = 4 + 2 * index
    if slot >= _u16(b, vtable):
        return None
    off = _u16(b, vtable + slot)
    return table + off if off else None


def _ref(b: bytes, pos: int) -> int:
    return pos + _u32(b, pos)


def _batch_bytes(meta: bytes, batch: int, body: bytes | memoryview | None) -> int:
    """Decoded bytes of the RecordBatch table at ``batch``."""
    buffers = _field(meta, batch, 2)
    if buffers is None:
        return 0
    vec = _ref(meta, buffers)
    count = _u32(meta, vec)
    compressed = _field(meta, batch, 3) is not None
    total = 0
    for i in range(count):
        offset, length = struct.unpack_from("<qq", meta, vec + 4 + 16 * i)
        if length <= 0:
            continue
        if not compressed:
            total += length
            continue
        if body is None or offset < 0 or offset + 8 > len(body) or length < 8:
            raise InvalidInput("an Arrow IPC buffer lies outside its message body")
        raw = struct.unpack_from("<q", body, offset)[0]
        total += length - 8 if raw == -1 else max(raw, 0)
    return total


def message_bytes(meta: bytes, body: bytes | memoryview | None) -> int:
    """Decoded bytes of one IPC message (0 for schema and other messages)."""
    root = _u32(meta, 0)
    kind_at = _field(meta, root, 1)
    kind = meta[kind_at] if kind_at is not None else 0
    header_at = _field(meta, root, 2)
    if header_at is None or kind not in (_DICTIONARY_BATCH, _RECORD_BATCH):
        return 0
    header = _ref(meta, header_at)
    if kind == _DICTIONARY_BATCH:
        data = _field(meta, header, 1)
        return 0 if data is None else _batch_bytes(meta, _ref(meta, data), body)
    return _batch_bytes(meta, header, body)


def decoded_bytes(stream: bytes, limit: int | None = None) -> int:
    """Decoded bytes of the whole stream; stops with :class:`PayloadTooLarge` once past ``limit``."""
    reader = pa.BufferReader(stream)
    total = 0
    while True:
        try:
            msg = ipc.read_message(reader)
        except (EOFError, StopIteration):
            break
        except (pa.ArrowInvalid, OSError) as e:
            raise InvalidInput(f"body is not an Arrow IPC stream: {e}") from None
        try:
            total += message_bytes(msg.metadata.to_pybytes(), memoryview(msg.body) if msg.body is not None else None)
        except struct.error:
            raise InvalidInput("body is not an Arrow IPC stream: its message metadata is damaged") from None
        if limit is not None and total > limit:
            raise PayloadTooLarge(
                f"the Arrow IPC stream would be over {limit} bytes once decoded (its compressed "
                "buffers expand); nothing was decoded",
                hint="send smaller batches, or raise max_body_bytes (COGNOPT_MAX_BODY_BYTES)",
            )
    return total


def read_table(stream: bytes, limit: int) -> pa.Table:
    """The table of an IPC stream whose decoded size is at most ``limit`` (checked first)."""
    decoded_bytes(stream, limit)
    try:
        return ipc.open_stream(pa.py_buffer(stream)).read_all()
    except pa.ArrowInvalid as e:
        raise InvalidInput(f"body is not an Arrow IPC stream: {e}") from None


__all__ = ["decoded_bytes", "message_bytes", "read_table"]
