"""Tier roots on pyarrow.fs: durable writes, reads, deletes, free space.

A tier root is a local folder or any URI :func:`pyarrow.fs.FileSystem.from_uri` understands
(``s3://bucket/prefix``, ``gs://…``, ``file:///…``). On a local file system a write goes to a
temp name in the same folder, is fsynced, renamed and the folder fsynced, so a crash leaves the
old state or the new one, never a partial file under the final name. On object stores a PUT is
atomic by itself (the object appears whole or not at all), so the final name is written directly.

Example:
    >>> import tempfile
    >>> root = TierRoot(tempfile.mkdtemp())
    >>> root.write("ab/x.blob", b"data")
    >>> root.read("ab/x.blob")
    b'data'
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

from cognopt_ray._private.files import fsync_dir
from cognopt_ray.errors import InsufficientStorage

if TYPE_CHECKING:
    import pyarrow.fs as pafs

TMP_SUFFIX = ".cognopt-tmp"


def _pafs():
    """pyarrow.fs, imported on first use: a local root never needs it (it costs ~0.3 s to import)."""
    import pyarrow.fs as pafs

    return pafs


def _full(where: str, need: int | None = None) -> InsufficientStorage:
    more = f" ({need} bytes needed)" if need else ""
    return InsufficientStorage(
        f"no space left on the storage tier at {where}{more}; nothing was written",
        hint="free space on that volume, raise its quota, or store into another tier",
    )


class TierRoot:
    """One tier's root folder on a pyarrow file system.

    Args:
        uri: a local path or a pyarrow.fs URI.
        min_free_bytes: refuse writes (507) that would leave less than this free (local roots only).
    """

    def __init__(self, uri: str, min_free_bytes: int = 0) -> None:
        self.uri = uri
        self._fs: pafs.FileSystem | None = None
        if "://" in uri:
            self._fs, self.base = _pafs().FileSystem.from_uri(uri)
        else:
            self.base = os.path.abspath(uri)
        self.local = self._fs is None or isinstance(self._fs, _pafs().LocalFileSystem)
        self.min_free_bytes = min_free_bytes
        if self.local:
            os.makedirs(self.base, exist_ok=True)
        else:
            self.fs.create_dir(self.base, recursive=True)

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            self._fs = _pafs().LocalFileSystem()
        return self._fs

    def path(self, rel: str) -> str:
        return f"{self.base.rstrip('/')}/{rel}"

    def local_path(self, rel: str) -> str | None:
        """The OS path of ``rel`` when this root is local, else ``None``."""
        return self.path(rel) if self.local else None

    def free_bytes(self) -> int | None:
        if not self.local:
            return None
        return shutil.disk_usage(self.base).free

    def check_space(self, need: int) -> None:
        """Raise :class:`InsufficientStorage` when writing ``need`` bytes would pass the reserve."""
        free = self.free_bytes()
        if free is not None and free - need < self.min_free_bytes:
            raise _full(self.uri, need)

    # -- writes ----------------------------------------------------------------------------------
    def write(self, rel: str, data: bytes | memoryview) -> None:
        """Write ``data`` to ``rel`` durably (see the module docstring)."""
        with self.open_write(rel) as f:
            f.write(data)

    @contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        """A writable stream that becomes ``rel`` only when the block ends without error."""
        final = self.path(rel)
        if not self.local:
            parent = final.rsplit("/", 1)[0]
            if parent and parent != final:
                self.fs.create_dir(parent, recursive=True)  # a no-op on object stores
            with self.fs.open_output_stream(final) as out:
                yield out  # type: ignore[misc]
            return
        folder = os.path.dirname(final)
        os.makedirs(folder, exist_ok=True)
        tmp = f"{final}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            fsync_dir(folder)
        except OSError as e:
            _unlink(tmp)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _full(self.uri) from None
            raise
        except BaseException:
            _unlink(tmp)
            raise

    # -- reads -----------------------------------------------------------------------------------
    def read(self, rel: str) -> bytes:
        if self.local:
            with open(self.path(rel), "rb") as f:
                return f.read()
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def read_range(self, rel: str, offset: int, length: int) -> bytes:
        if self.local:
            with open(self.path(rel), "rb") as f:
                f.seek(offset)
                return f.read(length)
        with self.fs.open_input_file(self.path(rel)) as f:
            return f.read_at(length, offset)

    def exists(self, rel: str) -> bool:
        if self.local:
            return os.path.exists(self.path(rel))
        return self.fs.get_file_info(self.path(rel)).type == _pafs().FileType.File

    def size(self, rel: str) -> int:
        if self.local:
            return os.stat(self.path(rel)).st_size
        return self.fs.get_file_info(self.path(rel)).size

    def delete(self, rel: str) -> None:
        if self.local:
            _unlink(self.path(rel))
            return
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass
        except OSError as e:  # pyarrow raises OSError for missing files on some file systems
            if "not" not in str(e).lower():
                raise

    def listdir(self, rel: str = "", recursive: bool = True) -> list[str]:
        """Relative paths of the files under ``rel``."""
        if self.local:
            return _list_local(self.base, rel, recursive)
        pafs = _pafs()
        sel = pafs.FileSelector(self.path(rel) if rel else self.base, allow_not_found=True, recursive=recursive)
        base = self.base.rstrip("/") + "/"
        return [
            i.path[len(base) :] if i.path.startswith(base) else i.path
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.File
        ]

    def remove_temps(self) -> int:
        """Delete temp files a crash left behind; returns how many."""
        n = 0
        for rel in self.listdir():
            if rel.endswith(TMP_SUFFIX):
                self.delete(rel)
                n += 1
        return n


def _list_local(base: str, rel: str, recursive: bool) -> list[str]:
    """Files under ``base/rel`` as paths relative to ``base`` (what pyarrow's selector lists)."""
    top = os.path.join(base, rel) if rel else base
    out: list[str] = []
    for dirpath, dirnames, files in os.walk(top):
        if not recursive:
            dirnames[:] = []
        sub = os.path.relpath(dirpath, base)
        out.extend(f if sub == "." else f"{sub}/{f}" for f in files)
    return out


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


__all__ = ["TierRoot", "TMP_SUFFIX"]
