"""Static assets for a CDN: content-hashed names, precompressed variants, a manifest, serving rules.

``cognopt assets build SRC DST`` (or :func:`build`) copies every file of ``SRC`` to ``DST`` under a
fingerprinted name (``app.js`` → ``app.3f2a9c1b7e4d.js``, the hash being the first 12 hex digits of
its SHA-256), writes ``.gz``, ``.br`` (when ``brotli`` is installed) and ``.zst`` variants when they
are smaller than the file, and a ``manifest.json`` mapping logical names to all of that.
``--upload URI`` (:func:`upload`) copies ``DST`` to any ``pyarrow.fs`` destination, e.g. the
bucket a CDN pulls from.

:func:`resolve` implements the serving rules the API route uses: fingerprinted names get
``Cache-Control: public, max-age=31536000, immutable``; logical names get ``no-cache`` (revalidate
with the ETag); ``If-None-Match`` → 304; the best precompressed variant the client accepts.
Only names listed in the manifest are served, so no path can escape ``DST``.

Example:
    >>> manifest = build("site/", "dist/")                          # doctest: +SKIP
    >>> manifest["files"]["app.js"]["path"]                         # doctest: +SKIP
    'app.3f2a9c1b7e4d.js'
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from cognopt_ray.errors import InvalidInput, NotFound
from cognopt_ray.network.encoding import brotli, choose_encoding

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, no-cache"
#: Types that are already compressed: no variants for them.
_COMPRESSED_TYPES = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "video/",
    "audio/",
    "application/zip",
    "application/gzip",
    "application/zstd",
    "font/woff",
    "font/woff2",
)
_SUFFIX = {"gzip": ".gz", "br": ".br", "zstd": ".zst"}


def _fingerprinted(rel: str, digest: str) -> str:
    p = Path(rel)
    stem, suffix = (p.name.split(".", 1) + [""])[:2] if "." in p.name else (p.name, "")
    name = f"{stem}.{digest[:12]}.{suffix}" if suffix else f"{stem}.{digest[:12]}"
    return str(p.with_name(name)) if str(p.parent) != "." else name


def _variants(data: bytes) -> dict[str, bytes]:
    out = {
        "gzip": gzip.compress(data, compresslevel=9, mtime=0),
        "zstd": zstandard.ZstdCompressor(level=19).compress(data),
    }
    if brotli is not None:
        out["br"] = brotli.compress(data, quality=11)
    return out


def build(src: str | os.PathLike, dst: str | os.PathLike) -> dict[str, Any]:
    """Build ``dst`` from ``src`` (see module docstring); returns the manifest.

    Raises:
        InvalidInput: ``src`` is not a folder, or ``dst`` is inside ``src``.
    """
    src_p, dst_p = Path(src).resolve(), Path(dst).resolve()
    if not src_p.is_dir():
        raise InvalidInput(f"{str(src)!r} is not a folder", hint="give the folder of static files to build")
    if dst_p == src_p or src_p in dst_p.parents:
        raise InvalidInput(f"{str(dst)!r} is inside {str(src)!r}", hint="build into a folder outside the source")
    dst_p.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    raw_total = served_total = 0
    for path in sorted(src_p.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(src_p).parts):
            continue
        rel = path.relative_to(src_p).as_posix()
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        out_rel = _fingerprinted(rel, digest)
        ctype = mimetypes.guess_type(rel)[0] or "application/octet-stream"
        target = dst_p / out_rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        entry: dict[str, Any] = {
            "path": out_rel,
            "size": len(data),
            "sha256": digest,
            "etag": f'"{digest[:32]}"',
            "content_type": ctype,
            "encodings": {},
        }
        smallest = len(data)
        if not ctype.startswith(_COMPRESSED_TYPES):
            for coding, packed in _variants(data).items():
                if len(packed) < len(data):
                    vpath = out_rel + _SUFFIX[coding]
                    (dst_p / vpath).write_bytes(packed)
                    entry["encodings"][coding] = {"path": vpath, "size": len(packed)}
                    smallest = min(smallest, len(packed))
        raw_total += len(data)
        served_total += smallest
        files[rel] = entry
    manifest = {"version": 1, "files": files, "bytes_raw": raw_total, "bytes_smallest": served_total}
    (dst_p / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    logger.info("built %d assets into %s (%d bytes raw, %d smallest)", len(files), dst_p, raw_total, served_total)
    return manifest


def upload(dst: str | os.PathLike, uri: str) -> int:
    """Copy a built folder to a ``pyarrow.fs`` URI (``s3://bucket/site``, ``gs://…``, ``file:///…``); returns files copied.

    Raises:
        InvalidInput: the URI is not one pyarrow.fs understands or the folder has no manifest.
    """
    import pyarrow as pa
    import pyarrow.fs as pafs

    src = Path(dst).resolve()
    if not (src / MANIFEST).is_file():
        raise InvalidInput(f"{str(dst)!r} has no {MANIFEST}", hint="run `cognopt assets build SRC DST` first")
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError, OSError) as e:
        raise InvalidInput(
            f"cannot open {uri!r}: {e}", hint="use a pyarrow.fs URI such as s3://bucket/path or file:///abs/path"
        ) from None
    fs.create_dir(root, recursive=True)
    local = pafs.LocalFileSystem()
    pafs.copy_files(str(src), root, source_filesystem=local, destination_filesystem=fs)
    return sum(1 for p in src.rglob("*") if p.is_file())


@dataclass
class AssetResponse:
    """What to answer for an asset request."""

    status: int
    headers: dict[str, str]
    body: bytes


def _load_manifest(root: Path) -> dict[str, Any]:
    try:
        return json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise NotFound(
            f"no {MANIFEST} in the assets folder {str(root)!r}",
            hint="run `cognopt assets build SRC DST` and set settings.network.assets_dir to DST",
        ) from None


def resolve(
    root: str | os.PathLike, name: str, *, if_none_match: str | None = None, accept_encoding: str | None = None
) -> AssetResponse:
    """The answer for ``GET <assets>/<name>`` (see module docstring).

    Raises:
        NotFound: ``name`` is neither a logical nor a fingerprinted name of the manifest.
    """
    root_p = Path(root)
    manifest = _load_manifest(root_p)
    files = manifest.get("files", {})
    entry = files.get(name)
    immutable = False
    if entry is None:
        entry = next((e for e in files.values() if e["path"] == name), None)
        immutable = entry is not None
    if entry is None:
        raise NotFound(f"asset {name[:200]!r} does not exist", hint="use a name listed in manifest.json")
    headers = {
        "ETag": entry["etag"],
        "Cache-Control": IMMUTABLE if immutable else REVALIDATE,
        "Content-Type": entry["content_type"],
        "Vary": "Accept-Encoding",
    }
    if if_none_match and (
        if_none_match.strip() == "*"
        or entry["etag"] in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    ):
        return AssetResponse(304, headers, b"")
    available = list(entry.get("encodings", {}))
    offered = [c for c in ("br", "zstd", "gzip") if c in available]
    coding = choose_encoding(accept_encoding, offered) if offered else None
    if coding:
        v = entry["encodings"][coding]
        body = (root_p / v["path"]).read_bytes()
        headers["Content-Encoding"] = coding
    else:
        body = (root_p / entry["path"]).read_bytes()
    return AssetResponse(200, headers, body)


__all__ = ["build", "upload", "resolve", "AssetResponse", "MANIFEST", "IMMUTABLE"]
