"""Issue 13, sealed at rest (storage side): someone holding the catalog file, with a key configured.

* the codec dictionaries (trained from a service's items, so holding fragments of them) are not
  in the clear, and an unsealed dictionary put in their place is refused, not used;
* the catalog's content hashes do not reveal that two items hold the same bytes, nor confirm a
  guess of an item's content (plain BLAKE3 of the guess is not in the catalog).

In-process :class:`TieredStore` on a real SQLite catalog and real files (no Ray needed).
"""

from __future__ import annotations

import base64
import os
import sqlite3

import blake3
import pytest

from cognopt_ray.config import Settings
from cognopt_ray.errors import IntegrityError
from cognopt_ray.storage import TieredStore

MARKER = b"DICTIONARY-PLAINTEXT-MARKER"


def _settings(root, key):
    return Settings.load(
        storage_root=str(root),
        encryption_key=key,
        storage={"lifecycle_enabled": False, "progress": False, "min_free_bytes": 0, "dictionary_min_samples": 16},
    )


def _samples(n=200):
    return [MARKER + b" record %d: " % i + os.urandom(8).hex().encode() + b" status=ok region=eu" for i in range(n)]


def test_dictionaries_are_sealed_and_an_unsealed_one_is_refused(tmp_path):
    key = base64.b64encode(os.urandom(32)).decode()
    store = TieredStore(_settings(tmp_path, key))
    info = store.train_dictionary("ai_models", _samples())
    small = b"".join(_samples(3))
    store.put("d-item", small, service="ai_models", tier="cold", codec="auto")
    assert store.get("d-item") == small
    assert store.info("d-item")["codec_choice"].get("dict_id") == info["dict_id"]
    store.close()
    db = sqlite3.connect(tmp_path / "storage" / "catalog.sqlite")
    (blob,) = db.execute("SELECT data FROM dicts WHERE dict_id=?", (info["dict_id"],)).fetchone()
    assert MARKER not in blob  # sealed at rest
    # swap in an unsealed dictionary (e.g. trained by an attacker, or an old plaintext copy)
    from cognopt_ray.storage import codecs

    plain = codecs.train_dictionary(_samples(), 4096)
    db.execute("UPDATE dicts SET data=? WHERE dict_id=?", (plain, info["dict_id"]))
    db.commit()
    db.close()
    again = TieredStore(_settings(tmp_path, key))
    assert again.refused_dictionaries == [info["dict_id"]]
    with pytest.raises(IntegrityError):  # not decoded with the swapped-in dictionary
        again.get("d-item")
    again.close()


def test_catalog_hashes_do_not_reveal_equal_or_guessed_content(tmp_path):
    key = base64.b64encode(os.urandom(32)).decode()
    store = TieredStore(_settings(tmp_path, key))
    secret = b"salary=123456;name=alice" * 10
    for item, tier in (("a", "warm"), ("b", "warm"), ("c", "archive")):
        store.put(item, secret, service="payment_processing", tier=tier, codec="zstd")
    assert store.get("a") == store.get("c") == secret
    store.close()
    db = sqlite3.connect(tmp_path / "storage" / "catalog.sqlite")
    sums = {r[0]: r[1] for r in db.execute("SELECT item_id, checksum FROM items")}
    hashes = {r[0] for r in db.execute("SELECT hash FROM chunks")}
    db.close()
    assert len(set(sums.values())) == 3  # equal bytes, different checksums
    guess = blake3.blake3(secret).hexdigest()
    assert guess not in sums.values() and guess not in hashes
    again = TieredStore(_settings(tmp_path, key))  # the keyed hashes still verify after a restart
    assert again.get("b") == secret and again.verify()["damaged"] == []
    again.close()
