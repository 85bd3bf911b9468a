"""What a backup reads: the files of a folder or pyarrow.fs path, and the progress bar it shows.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.txt").write_text("hi")
    >>> [f[0] for f in SourceFiles(str(d)).files()]
    ['a.txt']
"""

from __future__ import annotations

import logging
import os
import stat
import sys

from cognopt_ray.errors import Forbidden, InvalidInput
from cognopt_ray.storage.paths import Confined, _open_dirs, _split, walk_files

logger = logging.getLogger(__name__)

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: Linux returns at most this much from one read(2)
_MAX_READ = 0x7FFFF000


def progress_bar(total: int, desc: str, enabled: bool):
    if not enabled or not (sys.stderr.isatty() or "ipykernel" in sys.modules):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False)


class SourceFiles:
    """Files of a folder or pyarrow.fs path, as ``(relative path, size, mtime_ns)``.

    Local folders (and ``file://`` URIs) are walked and read from ``root`` component by component
    without following symlinks (:mod:`cognopt_ray.storage.paths`): symlinks and special files are
    skipped (counted in ``skipped``), so a link inside a source never reads what it points to.
    """

    def __init__(self, uri: str | Confined) -> None:
        if isinstance(uri, Confined):
            self.uri, self.root, self.rel = uri.uri, uri.root, uri.rel
        else:
            self.uri, self.root, self.rel = uri, None, ""
        self.skipped = 0
        self._dir_fd: int | None = None
        self._dir_rel: str | None = None
        if self.root is None and "://" in self.uri:
            import pyarrow.fs as pafs  # only for URIs: a local folder never pays its import

            from cognopt_ray.storage.tiers import open_filesystem

            self.fs, self.base = open_filesystem(self.uri)
            if isinstance(self.fs, pafs.LocalFileSystem):
                self.root = self.base
        elif self.root is None:
            self.root = os.path.abspath(self.uri)
        self.local = self.root is not None
        if self.local and not os.path.isdir(os.path.join(self.root, self.rel)):
            raise InvalidInput(
                f"backup source {self.uri!r} is not a folder", hint="give an existing folder or a pyarrow.fs URI"
            )

    def files(self) -> list[tuple[str, int, int]]:
        if self.local:
            out, self.skipped = walk_files(self.root, self.rel)
            if self.skipped:
                logger.info("backup of %s skipped %d symlinks or special files", self.uri, self.skipped)
            return out
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.base, recursive=True)
        base = self.base.rstrip("/") + "/"
        out = [
            (i.path[len(base) :], i.size, i.mtime_ns or 0)
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.File
        ]
        return sorted(out)

    def read(self, rel: str) -> bytes:
        """The bytes of the file ``rel`` (as :func:`~cognopt_ray.storage.paths.read_beneath` reads
        them: never through a symlink), keeping the folder of the last file open, so a folder of
        small files costs one ``open`` per file, not one per path component."""
        if not self.local:
            with self.fs.open_input_stream(f"{self.base.rstrip('/')}/{rel}") as f:
                return f.read()
        folder, _, name = rel.rpartition("/")
        if folder != self._dir_rel or self._dir_fd is None:
            self.close()
            full = f"{self.rel}/{folder}" if self.rel and folder else (self.rel or folder)
            self._dir_fd = _open_dirs(self.root, _split(full), create=False)
            self._dir_rel = folder
        if not name or name in (".", "..") or "\x00" in name:
            raise Forbidden(f"path {rel!r} escapes its root", hint="paths in snapshots are relative, without '..'")
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self._dir_fd)
        except OSError as e:
            raise Forbidden(
                f"{rel!r} under {self.root!r} cannot be read without following a link ({e.strerror})",
                hint="backups read regular files only",
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Forbidden(
                    f"{rel!r} under {self.root!r} is not a regular file", hint="backups read regular files only"
                )
            want = st.st_size + 1
            data = os.read(fd, want)
            if len(data) < min(want, _MAX_READ):
                return data  # a short read of a regular file is its end
            parts = [data]
            while True:  # a file larger than one read, or growing while we read it
                more = os.read(fd, 1 << 24)
                if not more:
                    return b"".join(parts)
                parts.append(more)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the folder kept open by :meth:`read`."""
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
            self._dir_rel = None


__all__ = ["SourceFiles", "progress_bar"]
