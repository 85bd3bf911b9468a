"""Codecs, the auto choice and item-id rules (no Ray needed)."""

from __future__ import annotations

import os

import pytest

from cognopt_ray.errors import InvalidInput
from cognopt_ray.storage import codecs
from cognopt_ray.storage.catalog import check_item_id

TEXT = (open(os.__file__, "rb").read() * 2)[:200_000]


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_every_codec_round_trips(codec):
    choice = codecs.requested(codec)
    out = codecs.compress(TEXT, choice)
    assert codecs.decompress(out, choice, raw_size=len(TEXT)) == TEXT
    if codec != "none":
        assert len(out) < len(TEXT)


def test_auto_stores_random_bytes_with_none():
    choice = codecs.choose_codec(os.urandom(300_000), "warm")
    assert choice.codec == "none"
    assert choice.probe_ratio > codecs.INCOMPRESSIBLE_RATIO
    assert "incompressible" in choice.reason


def test_auto_fast_tier_uses_fast_zstd_and_archive_the_smallest():
    warm = codecs.choose_codec(TEXT, "warm")
    assert (warm.codec, warm.level) == ("zstd", 1)
    arch = codecs.choose_codec(TEXT[:50_000], "archive")
    assert set(arch.candidates) >= {"lzma", "zstd"}
    best = min(arch.candidates.values())
    chosen = "lzma" if arch.codec == "lzma" else "zstd"
    assert arch.candidates[chosen] == best
    assert codecs.decompress(codecs.compress(TEXT[:50_000], arch), arch) == TEXT[:50_000]


def test_dictionary_helps_small_items():
    samples = [TEXT[i : i + 2000] for i in range(0, 180_000, 1000)]
    d = codecs.load_dictionary(codecs.train_dictionary(samples, 8192))
    item = TEXT[3333:5333]
    plain = codecs.choose_codec(item, "cold")
    with_dict = codecs.choose_codec(item, "cold", d, 7)
    assert with_dict.dict_id == 7
    a = codecs.compress(item, plain)
    b = codecs.compress(item, with_dict, d)
    assert len(b) < len(a)
    assert codecs.decompress(b, with_dict, d) == item


def test_unknown_codec_and_tier_list_valid_ones():
    with pytest.raises(InvalidInput) as e:
        codecs.check_codec("snappy")
    assert "zstd" in e.value.hint and e.value.status == 422 and "auto" in e.value.extra["valid"]
    with pytest.raises(InvalidInput) as e:
        codecs.check_tier("lukewarm")
    assert e.value.extra["valid"] == ["hot", "warm", "cold", "archive"]
    with pytest.raises(InvalidInput):
        codecs.requested("zlib", 42)


@pytest.mark.parametrize(
    "bad", ["../etc/passwd", "/abs", "a/b", "a\x00b", "", ".hidden", "x" * 201, "a..b", 5, None, "é"]
)
def test_bad_item_ids_are_refused(bad):
    with pytest.raises(InvalidInput):
        check_item_id(bad)


@pytest.mark.parametrize("good", ["a", "model-weights_v2.bin", "svc:item@3+x", "A" * 200])
def test_good_item_ids(good):
    assert check_item_id(good) == good
