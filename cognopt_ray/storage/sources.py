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
import sys

from cognopt_ray.errors import InvalidInput
from cognopt_ray.storage.paths import Confined, read_beneath, walk_files

logger = logging.getLogger(__name__)


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
        if self.root is None and "://" in self.uri:
            import pyarrow.fs as pafs  # only for URIs: a local folder never pays its import

            self.fs, self.base = pafs.FileSystem.from_uri(self.uri)
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
        if self.local:
            return read_beneath(self.root, os.path.join(self.rel, rel) if self.rel else rel)
        with self.fs.open_input_stream(f"{self.base.rstrip('/')}/{rel}") as f:
            return f.read()


__all__ = ["SourceFiles", "progress_bar"]
