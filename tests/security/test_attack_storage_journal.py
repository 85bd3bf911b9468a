"""Attacks on the catalog journal in an ``s3://`` root (real S3-protocol server on 127.0.0.1).

Whoever can write the bucket must not be able to make a fresh node believe something the engine
never wrote: a forged entry (taking an item over for another service, or naming a file of the
attacker's), an entry signed with another installation's secret, or a genuine entry copied under
another number is refused before anything in it is applied, and the refused start deletes nothing.
"""

from __future__ import annotations

import base64
import json
import os

import pyarrow.fs as pafs
import pytest
import zstandard

from cognopt_ray._private.sealer import Signer
from cognopt_ray.config import Settings
from cognopt_ray.errors import IntegrityError
from cognopt_ray.storage.store import TieredStore

SECRET = base64.b64encode(b"i" * 32).decode()


def _settings(s3_server, tmp_path, bucket, state, key=None):
    return Settings.load(
        storage_root=str(tmp_path / state),
        encryption_key=key,
        installation_secret=SECRET,
        storage={
            "tier_roots": {t: f"s3://{bucket}/{t}" for t in ("hot", "warm", "cold", "archive")},
            "s3": s3_server.settings(),
            "lifecycle_enabled": False,
            "min_free_bytes": 0,
        },
    )


def _files(fs, bucket):
    sel = pafs.FileSelector(bucket, recursive=True, allow_not_found=True)
    return sorted(i.path for i in fs.get_file_info(sel) if i.type == pafs.FileType.File)


def _forged(owner: str, rel: str, signer: Signer | None) -> bytes:
    body = {
        "v": 1,
        "seq": int(rel.rsplit("/", 1)[-1][:16]),
        "items": {
            "victim": {
                "item_id": "victim",
                "service": owner,
                "tier": "warm",
                "kind": "bytes",
                "codec": json.dumps({"codec": "none", "level": 0, "dict_id": None, "format": "blob"}),
                "raw_size": 4,
                "stored_size": 4,
                "checksum": "0" * 64,
                "stored_checksum": "0" * 64,
                "location": "inline",
                "encrypted": 0,
                "created": 0.0,
                "last_access": 0.0,
                "access_count": 0,
                "score": 0.0,
                "chunks": [],
            }
        },
        "blobs": {"victim": base64.b64encode(b"evil").decode()},
    }
    data = zstandard.ZstdCompressor().compress(json.dumps(body).encode())
    return signer.sign(data, rel.encode()) if signer else data


@pytest.mark.parametrize("how", ["unsigned", "another secret", "copied under another number"])
def test_a_forged_journal_entry_is_refused(s3_server, tmp_path, how):
    bucket = s3_server.bucket()
    a = TieredStore(_settings(s3_server, tmp_path, bucket, "a"))
    a.put("victim", os.urandom(90_000), service="payment_processing")
    a.put("other", b"x" * 10)
    a.close()
    fs = s3_server.filesystem()
    log = f"{bucket}/warm/catalog/log"
    rel = "catalog/log/0000000000000003.rec"
    if how == "unsigned":
        blob = _forged("ai_models", rel, None)
    elif how == "another secret":
        blob = _forged("ai_models", rel, Signer(os.urandom(32), b"storage journal"))
    else:  # a genuine entry (the victim's) replayed as the newest one
        with fs.open_input_stream(f"{log}/0000000000000001.rec") as f:
            blob = f.read()
    with fs.open_output_stream(f"{bucket}/warm/{rel}") as f:
        f.write(blob)
    before = _files(fs, bucket)
    with pytest.raises(IntegrityError, match="failed authentication|refused"):
        TieredStore(_settings(s3_server, tmp_path, bucket, "b"))
    assert _files(fs, bucket) == before  # nothing deleted by the refused start


def test_a_sealed_journal_needs_the_key_and_shows_no_ids(s3_server, tmp_path):
    bucket = s3_server.bucket()
    key = base64.b64encode(b"e" * 32).decode()
    a = TieredStore(_settings(s3_server, tmp_path, bucket, "a", key=key))
    a.put("customer-4711-invoice", b"amount: 1000 EUR" * 10, service="payment_processing")
    a.close()
    fs = s3_server.filesystem()
    for path in _files(fs, bucket):
        with fs.open_input_stream(path) as f:
            raw = f.read()
        assert b"customer-4711" not in raw and b"payment_processing" not in raw and b"1000 EUR" not in raw
    b = TieredStore(_settings(s3_server, tmp_path, bucket, "b", key=key))
    assert b.get("customer-4711-invoice") == b"amount: 1000 EUR" * 10
    assert b.info("customer-4711-invoice")["service"] == "payment_processing"
    b.close()
