"""Tier roots on pyarrow.fs: durable writes, reads, deletes, free space.

A tier root is a local folder or any URI :func:`pyarrow.fs.FileSystem.from_uri` understands
(``s3://bucket/prefix``, ``gs://…``, ``file:///…``). On a local file system a write goes to a
temp name in the same folder, is fsynced, renamed and the folder fsynced, so a crash leaves the
old state or the new one, never a partial file under the final name. On object stores a PUT is
atomic by itself (the object appears whole or not at all), so the final name is written directly.

``s3://bucket/prefix`` roots are opened with :func:`open_filesystem`: the endpoint, scheme,
region, timeouts and retries come from the ``storage.s3`` settings (:func:`configure`), the
credentials from the environment (``AWS_ACCESS_KEY_ID``...), never from the URI: a URI carrying
credentials is refused. An object store that does not answer (connection refused, timeouts, 5xx
after the retries) raises :class:`~cognopt_ray.errors.StorageBackendError` (503, retryable); one
that refuses the request (403, no such bucket) :class:`~cognopt_ray.errors.StorageBackendRefused`
(502). Neither is ever reported as a missing or damaged item.

Example:
    >>> import tempfile
    >>> root = TierRoot(tempfile.mkdtemp())
    >>> root.write("ab/x.blob", b"data")
    >>> root.read("ab/x.blob")
    b'data'
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import parse_qsl, urlsplit

from cognopt_ray._private.files import fsync_dir
from cognopt_ray.errors import ConfigError, InsufficientStorage, StorageBackendError, StorageBackendRefused

if TYPE_CHECKING:
    import pyarrow.fs as pafs

TMP_SUFFIX = ".cognopt-tmp"
_S3: dict[str, Any] = {}  # the storage.s3 settings of this process (configure())
_CREDENTIAL_PARAMS = {"access_key", "secret_key", "session_token", "role_arn", "external_id"}
_REFUSED = (
    "ACCESS_DENIED",
    "INVALID_ACCESS_KEY",
    "SIGNATURE_DOES_NOT_MATCH",
    "NO_SUCH_BUCKET",
    "Forbidden",
    "allow_bucket_creation",
)


def configure(s3: Any) -> None:
    """Use ``s3`` (the ``storage.s3`` settings, a model or a dict) for ``s3://`` roots opened later."""
    data = s3.model_dump() if hasattr(s3, "model_dump") else dict(s3 or {})
    _S3.clear()
    _S3.update(data)


def _shown(uri: str) -> str:
    """``uri`` without its query and user part (what errors and logs may show)."""
    u = urlsplit(uri)
    return f"{u.scheme}://{u.hostname or ''}{u.path}" if u.scheme else uri


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(file system, base path)`` of a root URI (see the module docstring)."""
    pafs = _pafs()
    u = urlsplit(uri)
    params = {k.lower() for k, _ in parse_qsl(u.query, keep_blank_values=True)}
    if u.password or u.username or params & _CREDENTIAL_PARAMS:
        raise ConfigError(
            f"the root {_shown(uri)!r} carries credentials in its URI, which is refused (URIs end up in logs)",
            hint="remove them from the URI and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
            "in the environment of every node",
        )
    if u.scheme == "s3" and not u.query:
        o = _S3
        endpoint = o.get("endpoint_override") or None
        scheme = o.get("scheme") or "https"
        if endpoint and "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
        kwargs: dict[str, Any] = {
            "scheme": scheme,
            "allow_bucket_creation": bool(o.get("allow_bucket_creation", False)),
            "connect_timeout": float(o.get("connect_timeout_s", 5.0)),
            "request_timeout": float(o.get("request_timeout_s", 30.0)),
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=int(o.get("retry_attempts", 3))),
        }
        if endpoint:
            kwargs["endpoint_override"] = endpoint
        if o.get("region"):
            kwargs["region"] = o["region"]
        return pafs.S3FileSystem(**kwargs), f"{u.netloc}{u.path}".rstrip("/")
    try:
        return pafs.FileSystem.from_uri(uri)
    except OSError as e:
        raise backend_error(e, uri, "opening") from None


def backend_error(e: BaseException, uri: str, what: str) -> StorageBackendError:
    """The error to raise for ``e`` from the object store at ``uri`` (see the module docstring)."""
    text = str(e)
    refused = any(m in text for m in _REFUSED)
    cls = StorageBackendRefused if refused else StorageBackendError
    endpoint = _S3.get("endpoint_override") or "the default endpoint"
    hint = (
        "check the credentials in the environment (AWS_ACCESS_KEY_ID...) and that the bucket exists "
        "(or set storage.s3.allow_bucket_creation)"
        if refused
        else f"the object store ({endpoint}, setting storage.s3.endpoint_override) did not answer; "
        "nothing was acknowledged by this call: retry it when the store is back"
    )
    return cls(f"the object store behind {_shown(uri)!r} failed while {what}: {text[:300]}", hint=hint)


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


_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(what: str) -> Callable[[_F], _F]:
    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(self: TierRoot, *a: Any, **kw: Any) -> Any:
            if self.local:
                return fn(self, *a, **kw)
            with self.guard(what):
                return fn(self, *a, **kw)

        return inner  # type: ignore[return-value]

    return wrap


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
            self._fs, self.base = open_filesystem(uri)
        else:
            self.base = os.path.abspath(uri)
        self.local = self._fs is None or isinstance(self._fs, _pafs().LocalFileSystem)
        self.min_free_bytes = min_free_bytes
        if self.local:
            os.makedirs(self.base, exist_ok=True)
        else:
            with self.guard("creating the root"):
                self.fs.create_dir(self.base, recursive=True)

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn an object store's failure (not a missing file) into :class:`StorageBackendError`."""
        if self.local:
            yield
            return
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as e:
            raise backend_error(e, self.uri, what) from None

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
            with self.guard("writing"):
                parent = final.rsplit("/", 1)[0]
                if parent and parent != final and not isinstance(self.fs, _pafs().S3FileSystem):
                    self.fs.create_dir(parent, recursive=True)  # S3 has no folders: a request saved
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
    @_guarded("reading")
    def read(self, rel: str) -> bytes:
        if self.local:
            with open(self.path(rel), "rb") as f:
                return f.read()
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    @_guarded("reading")
    def read_range(self, rel: str, offset: int, length: int) -> bytes:
        if self.local:
            with open(self.path(rel), "rb") as f:
                f.seek(offset)
                return f.read(length)
        with self.fs.open_input_file(self.path(rel)) as f:
            return f.read_at(length, offset)

    @_guarded("looking up a file")
    def exists(self, rel: str) -> bool:
        if self.local:
            return os.path.exists(self.path(rel))
        return self.fs.get_file_info(self.path(rel)).type == _pafs().FileType.File

    @_guarded("looking up a file")
    def size(self, rel: str) -> int:
        if self.local:
            return os.stat(self.path(rel)).st_size
        return self.fs.get_file_info(self.path(rel)).size

    @_guarded("deleting")
    def delete(self, rel: str) -> None:
        if self.local:
            _unlink(self.path(rel))
            return
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass
        except OSError as e:  # pyarrow raises OSError for missing files on some file systems
            text = str(e).lower()
            if "does not exist" not in text and "not found" not in text and "no such" not in text:
                raise

    @_guarded("listing")
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


__all__ = ["TierRoot", "TMP_SUFFIX", "configure", "open_filesystem", "backend_error"]
