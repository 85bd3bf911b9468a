"""Where backups may read and restores may write: configured roots, no symlinks, no ``..``.

A backup source must sit inside one of ``storage.backup_source_roots`` and a restore target inside
one of ``storage.restore_roots`` (defaults: ``<storage_root>/backup-sources`` and
``<storage_root>/restores``). A local path is checked lexically (absolute, no ``..``), then every
component below the root is checked with ``lstat`` (none may be a symlink); files are then opened
component by component from the root's real path with ``O_NOFOLLOW`` (:func:`read_beneath`,
:func:`write_beneath`, :func:`walk_files`), so a symlink swapped in later is not followed either.
A URI (``s3://…``, ``file://…``) must equal or sit under a URI root of the same list with the same
scheme, host and query (``endpoint_override`` included). Anything else is a 403 whose hint names the
setting.

Example:
    >>> import tempfile, os
    >>> root = tempfile.mkdtemp()
    >>> confine(os.path.join(root, "a"), [root], "storage.restore_roots", "restore target").rel
    'a'
"""

from __future__ import annotations

import os
import posixpath
import stat
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cognopt_ray.errors import Forbidden

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Confined:
    """A path inside a configured root: ``root`` (its real path; ``None`` for URIs) and ``rel``."""

    uri: str
    root: str | None
    rel: str


def roots_for(settings: Any) -> dict[str, list[str]]:
    """The effective ``backup_source_roots`` and ``restore_roots``."""
    cfg = settings.storage
    base = settings.storage_root.rstrip("/")
    return {
        "backup_source_roots": list(cfg.backup_source_roots) or [f"{base}/backup-sources"],
        "restore_roots": list(cfg.restore_roots) or [f"{base}/restores"],
    }


def _refuse(what: str, path: str, setting: str, roots: list[str], why: str) -> Forbidden:
    return Forbidden(
        f"{what} {path!r} is refused: {why}; nothing was read or written",
        hint=f"use a path inside {roots} or add a root to the setting {setting}",
    )


def _uri_inside(uri: str, root: str) -> bool:
    u, r = urlsplit(uri), urlsplit(root)
    if not r.scheme or (u.scheme, u.netloc, u.query, u.fragment) != (r.scheme, r.netloc, r.query, r.fragment):
        return False
    if ".." in u.path.split("/"):
        return False
    up, rp = posixpath.normpath("/" + u.path), posixpath.normpath("/" + r.path)
    return up == rp or up.startswith(rp.rstrip("/") + "/")


def confine(path: str, roots: list[str], setting: str, what: str) -> Confined:
    """``path`` if it lies inside one of ``roots`` (see the module docstring), else :class:`Forbidden`."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise _refuse(what, str(path), setting, roots, "not a path")
    if "://" in path:
        if any("://" in r and _uri_inside(path, r) for r in roots):
            return Confined(path, None, "")
        raise _refuse(
            what, path, setting, roots, "the URI is not under a configured root (scheme, host and query must match)"
        )
    if not os.path.isabs(path) or ".." in path.split(os.sep):
        raise _refuse(what, path, setting, roots, "it must be an absolute path without '..'")
    norm = os.path.normpath(path)
    for root in roots:
        if "://" in root:
            continue
        nroot = os.path.normpath(os.path.abspath(root))
        if norm != nroot and not norm.startswith(nroot.rstrip(os.sep) + os.sep):
            continue
        rel = os.path.relpath(norm, nroot)
        rel = "" if rel == "." else rel
        real = os.path.realpath(nroot)  # the configured root itself may be a symlink: the operator chose it
        check_no_symlinks(real, rel, what, path, setting, roots)
        return Confined(os.path.join(real, rel) if rel else real, real, rel)
    raise _refuse(what, path, setting, roots, "it is outside the configured roots")


def check_no_symlinks(
    root: str, rel: str, what: str = "path", shown: str | None = None, setting: str = "", roots: list[str] | None = None
) -> None:
    """Every existing component of ``root/rel`` below ``root`` is a real folder or file (``lstat``)."""
    cur = root
    parts = [p for p in rel.split(os.sep) if p]
    for i, part in enumerate(parts):
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise Forbidden(
                f"{what} {shown or os.path.join(root, rel)!r} is refused: {os.path.join(*parts[: i + 1])!r} "
                "is a symlink, which is never followed; nothing was read or written",
                hint=f"remove the symlink, or use a new folder inside {roots or [root]}"
                + (f" (setting {setting})" if setting else ""),
            )
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            raise _refuse(
                what,
                shown or os.path.join(root, rel),
                setting,
                roots or [root],
                f"{os.path.join(*parts[: i + 1])!r} is not a folder",
            )


def _split(rel: str) -> list[str]:
    parts = [p for p in rel.replace("\\", "/").split("/") if p]
    if any(p in (".", "..") or "\x00" in p for p in parts):
        raise Forbidden(f"path {rel!r} escapes its root", hint="paths in snapshots are relative, without '..'")
    return parts


def _open_dirs(root: str, parts: list[str], create: bool) -> int:
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:  # ELOOP: a symlink; ENOTDIR: a file
                raise Forbidden(
                    f"{part!r} under {root!r} is a symlink or not a folder ({e.strerror}); nothing was "
                    "written through it",
                    hint="remove it, or restore into a new folder",
                ) from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_beneath(root: str, rel: str) -> bytes:
    """The bytes of the regular file ``root/rel``, never through a symlink."""
    parts = _split(rel)
    dfd = _open_dirs(root, parts[:-1], create=False)
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
    except OSError as e:
        raise Forbidden(
            f"{rel!r} under {root!r} cannot be read without following a link ({e.strerror})",
            hint="backups read regular files only",
        ) from None
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise Forbidden(f"{rel!r} under {root!r} is not a regular file", hint="backups read regular files only")
        return f.read()


def write_beneath(root: str, rel: str, data: bytes | memoryview) -> None:
    """Write ``root/rel`` durably (temp file, fsync, rename), creating folders, never through a symlink."""
    parts = _split(rel)
    if not parts:
        raise Forbidden("an empty path cannot be written", hint="paths in snapshots name files")
    dfd = _open_dirs(root, parts[:-1], create=True)
    try:
        tmp = f".{parts[-1][:100]}.{uuid.uuid4().hex[:8]}.cognopt-tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644, dir_fd=dfd
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # rename replaces a symlink at the final name itself, never the file it points to
            os.replace(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)


def walk_files(root: str, rel: str = "") -> tuple[list[tuple[str, int, int]], int]:
    """``([(path relative to root/rel, size, mtime_ns)], skipped)``: regular files only; symlinks
    (to files or folders) and special files are skipped, never followed."""
    parts = _split(rel)
    top = _open_dirs(root, parts, create=False)
    out: list[tuple[str, int, int]] = []
    skipped = 0
    try:
        for dirpath, dirnames, filenames, dfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in list(dirnames):
                if stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    dirnames.remove(name)
                    skipped += 1
            for name in filenames:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    skipped += 1
                    continue
                path = os.path.normpath(os.path.join(dirpath, name))
                out.append((path, st.st_size, st.st_mtime_ns))
    finally:
        os.close(top)
    return sorted(out), skipped


__all__ = ["Confined", "roots_for", "confine", "check_no_symlinks", "read_beneath", "write_beneath", "walk_files"]
