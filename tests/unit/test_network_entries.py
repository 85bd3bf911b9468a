"""Cache entries at rest: the one sealer, bound to the entry's name and key, bounded decoding."""

import base64
import os
import struct

import pytest
import zstandard

from cognopt_ray._private.sealer import Sealer, is_sealed
from cognopt_ray.network.entries import PURPOSE, BadEntry, entry_key_of, pack, unpack
from cognopt_ray.network.rules import StoredResponse


def _variants():
    return [StoredResponse("https://h/a", 200, [("Cache-Control", "max-age=60")], b"body", 1.0, 2.0)]


def test_roundtrip_plain_and_sealed():
    assert unpack(pack(_variants(), "https://h/a#ai_models"), "https://h/a#ai_models")[0].body == b"body"
    box = Sealer(base64.b64encode(os.urandom(32)).decode(), PURPOSE)
    blob = pack(_variants(), "k", sealer=box, aad=b"name")
    assert is_sealed(blob) and b"body" not in blob
    assert unpack(blob, "k", sealer=box, aad=b"name")[0].body == b"body"
    assert entry_key_of(blob, sealer=box, aad=b"name") == "k"


def test_refusals():
    box = Sealer(base64.b64encode(os.urandom(32)).decode(), PURPOSE)
    plain = pack(_variants(), "k")
    sealed = pack(_variants(), "k", sealer=box, aad=b"name")
    with pytest.raises(BadEntry, match="not sealed"):
        unpack(plain, "k", sealer=box, aad=b"name")  # unsealed where sealed is expected
    with pytest.raises(BadEntry):
        unpack(sealed, "k", sealer=box, aad=b"other name")  # copied under another name
    with pytest.raises(BadEntry):
        unpack(sealed, "k")  # no key configured
    with pytest.raises(BadEntry, match="another cache key"):
        unpack(plain, "other key")
    with pytest.raises(BadEntry):
        unpack(b"garbage", "k")
    with pytest.raises(BadEntry):
        pack(_variants(), "k", max_raw=10)


def test_a_bomb_in_an_entry_stops_at_the_limit():
    head = b'{"key":"k","variants":[]}'
    bomb = b"CNC2" + zstandard.ZstdCompressor().compress(struct.pack(">I", len(head)) + head + b"\0" * (64 << 20))
    assert len(bomb) < 1 << 20
    with pytest.raises(BadEntry, match="over 1048576"):
        unpack(bomb, "k", max_raw=1 << 20)
    assert unpack(bomb, "k", max_raw=128 << 20) == []
