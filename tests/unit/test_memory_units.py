"""Memory engine pieces that need no Ray: GC tuner, hook merge, value sizing, cache encoding, ids."""

import gc

import numpy as np
import pytest

from cognopt_ray._private import values as _values
from cognopt_ray.errors import InvalidInput, NotFound
from cognopt_ray.memory.allocations import split_allocation_id
from cognopt_ray.memory.cache import decode, encode
from cognopt_ray.memory.gc_tuner import SETUP_HOOK, GcTuner, merge_setup_hook, probe_pauses


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    yield saved
    gc.set_threshold(*saved)


def test_tuner_times_every_collection():
    t = GcTuner().install()
    try:
        before = t.collections
        gc.collect()
        gc.collect()
        stats = t.pause_stats()
        assert t.collections >= before + 2
        assert stats["count"] >= 2 and stats["p50_ms"] >= 0 and stats["p99_ms"] >= stats["p50_ms"]
        assert "2" in stats["by_generation"]
    finally:
        t.uninstall()
    assert t._callback not in gc.callbacks


def test_decide_by_memory_pressure(thresholds):
    gc.set_threshold(4000, *thresholds[1:])
    t = GcTuner(min_threshold0=700, max_threshold0=10_000, pressure_percent=85, plenty_percent=60)
    new, why = t.decide(memory_percent=95, pause_share=0.0, young_per_s=0)
    assert new == 2000 and "more often" in why
    new, why = t.decide(memory_percent=30, pause_share=0.02, young_per_s=0)
    assert new == 8000 and "fewer, larger" in why
    new, _ = t.decide(memory_percent=30, pause_share=0.0, young_per_s=0)
    assert new == 4000  # cheap GC: keep
    new, _ = t.decide(memory_percent=70, pause_share=0.5, young_per_s=100)
    assert new == 4000  # neither plentiful nor under pressure: keep
    gc.set_threshold(9000, *thresholds[1:])
    assert t.decide(memory_percent=10, pause_share=1, young_per_s=100)[0] == 10_000  # capped
    gc.set_threshold(800, *thresholds[1:])
    assert t.decide(memory_percent=99, pause_share=0, young_per_s=0)[0] == 700  # floored


def test_tune_changes_only_threshold0_and_reports_before_after(thresholds):
    gc.set_threshold(1000, 11, 12)
    t = GcTuner(min_threshold0=500, max_threshold0=100_000).install()
    try:
        report = t.tune(memory_percent=99.0, probe=True)
    finally:
        t.uninstall()
    assert report["thresholds_before"] == [1000, 11, 12]
    assert report["thresholds_after"] == [500, 11, 12]
    assert gc.get_threshold() == (500, 11, 12)
    for side in ("pause_before", "pause_after"):
        assert report[side]["count"] >= 1 and report[side]["p99_ms"] is not None
    assert report["measured_by"] == "probe"


def test_probe_restores_thresholds(thresholds):
    gc.set_threshold(900, 10, 10)
    out = probe_pauses((100, 10, 10), objects=5000, rounds=1)
    assert out["count"] >= 1 and out["thresholds"] == [100, 10, 10]
    assert gc.get_threshold() == (900, 10, 10)


def test_tuner_rejects_inverted_range():
    with pytest.raises(ValueError):
        GcTuner(min_threshold0=10_000, max_threshold0=100)


def test_merge_setup_hook_never_clobbers_the_users_runtime_env():
    assert merge_setup_hook(None) == {"worker_process_setup_hook": SETUP_HOOK}
    user = {"env_vars": {"A": "1"}}
    merged = merge_setup_hook(user)
    assert merged == {"env_vars": {"A": "1"}, "worker_process_setup_hook": SETUP_HOOK}
    assert user == {"env_vars": {"A": "1"}}  # not mutated
    own = {"worker_process_setup_hook": "mypkg.setup", "pip": ["x"]}
    assert merge_setup_hook(own) is own


def test_values_classify_and_size():
    arr = np.zeros(1000)
    assert _values.classify(arr) == "numpy" and _values.nbytes_of(arr, "numpy") == 8000
    assert _values.classify(b"abc") == "bytes" and _values.nbytes_of(b"abc", "bytes") == 3
    assert _values.classify({"a": [1, 2.5, None]}) == "json"
    assert _values.nbytes_of({"a": 1}, "json") == len('{"a":1}')
    assert _values.classify({1: "x"}) == "object"  # int keys are not JSON
    import pyarrow as pa

    buf = pa.py_buffer(b"x" * 100)
    assert _values.classify(buf) == "arrow" and _values.nbytes_of(buf, "arrow") == 100


@pytest.mark.parametrize("value", [b"\x00raw", "text", {"a": [1, 2]}, [1, "x"], 3.5, None])
def test_cache_encoding_round_trips(value):
    assert decode(encode(value)) == value


def test_cache_encoding_numpy_without_pickle():
    arr = np.arange(12, dtype=np.int32).reshape(3, 4)
    data = encode(arr)
    assert data[:1] == b"N"
    assert np.array_equal(decode(data), arr)
    with pytest.raises(InvalidInput, match="cannot store"):
        encode(object())
    with pytest.raises(InvalidInput):
        encode(np.array([object()], dtype=object))  # object arrays would need pickle


def test_allocation_ids_name_their_service():
    assert split_allocation_id("ai_models.0123456789abcdef") == "ai_models"
    for bad in ("nope", "Bad.0123456789abcdef", "ai_models.xyz", "ai_models.0123456789ABCDEF", "../x.0123456789abcdef"):
        with pytest.raises(NotFound):
            split_allocation_id(bad)


# -- the tagged codec: no pickle from data ---------------------------------------------------------
class _Boom:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_signed_values_round_trip_every_kind():
    import os

    import pyarrow as pa

    from cognopt_ray._private.sealer import Signer

    signer = Signer(os.urandom(32), _values.VALUES_PURPOSE)
    table = pa.table({"a": [1, 2, 3]})
    for value in (
        b"raw",
        "text",
        {"a": [1, None]},
        (1, 2),
        {1: "x"},
        np.arange(6).reshape(2, 3),
        np.array([object(), 1], dtype=object)[1:],
        table,
        table.to_batches()[0],
        pa.array([1, 2]),
        pa.chunked_array([[1], [2]]),
        pa.py_buffer(b"buf"),
    ):
        back = _values.open_signed(_values.seal_signed(value, signer, b"n"), signer, b"n")
        assert type(back) is type(value) or isinstance(value, np.ndarray)
        assert _values.classify(back) == _values.classify(value)
    assert _values.open_signed(_values.seal_signed(table, signer, b"n"), signer, b"n").equals(table)


def test_no_pickle_is_loaded_without_this_installations_signature(tmp_path):
    import os
    import pickle

    from cognopt_ray._private.sealer import Signer
    from cognopt_ray.errors import IntegrityError

    marker = tmp_path / "ran"
    evil = pickle.dumps(_Boom(str(marker)))
    signer = Signer(os.urandom(32), _values.VALUES_PURPOSE)
    other = Signer(os.urandom(32), _values.VALUES_PURPOSE)
    good = _values.seal_signed({1: "x"}, signer, b"id1")
    forged = [
        evil,
        b"O" + evil,
        signer.sign(b"O" + evil, b"id1")[:-1] + b"x",
        other.sign(b"O" + evil, b"id1"),
        b"CS1" + b"\0" * 32 + b"O" + evil,
    ]
    for blob in forged:
        with pytest.raises(IntegrityError):
            _values.open_signed(blob, signer, b"id1")
    with pytest.raises(IntegrityError):  # a genuine blob under another name
        _values.open_signed(good, signer, b"id2")
    with pytest.raises(IntegrityError, match="pickle"):
        decode(b"O" + evil)  # the shared cache's decoder never loads pickles
    with pytest.raises(IntegrityError):
        decode(b"Z" + evil)
    assert not marker.exists()


def test_rest_readers_are_never_sent_a_pickle():
    import pyarrow as pa

    with pytest.raises(_values.NotAcceptable):
        _values.to_http_bytes({1: "x"}, "object")
    with pytest.raises(_values.NotAcceptable):
        _values.to_http_bytes(np.array([object()], dtype=object), "numpy")
    data, headers = _values.to_http_bytes(pa.table({"a": [1]}), "arrow")
    assert headers["X-Cognopt-Encoding"] == "arrow-ipc-stream"
    assert pa.ipc.open_stream(data).read_all().column("a").to_pylist() == [1]


def test_spill_ledger_bounds_bytes_per_service_and_deletes_copies(tmp_path):
    from cognopt_ray.memory.spill_ledger import Spilled, SpillLedger

    deleted = []
    ledger = SpillLedger(tmp_path / "spilled.json", lambda s, i: deleted.append(i))
    assert ledger.add("a.1", Spilled("a", 10, 40, None, 1.0), max_bytes=100) == []
    ledger.add("b.1", Spilled("b", 10, 90, None, 2.0), max_bytes=100)
    ledger.add("a.2", Spilled("a", 10, 40, 5.0, 3.0), max_bytes=100)
    assert ledger.add("a.3", Spilled("a", 10, 40, None, 4.0), max_bytes=100) == ["a.1"]  # oldest of a
    assert deleted == ["a.1"] and ledger.figures("a") == {"spilled": 2, "spilled_bytes": 80, "spill_dropped": 1}
    assert ledger.expired(now=6.0) == ["a.2"]
    ledger.save()
    again = SpillLedger(tmp_path / "spilled.json", None)  # durable across a restart
    assert list(again.entries) == ["b.1", "a.2", "a.3"] and again.figures("a")["spill_dropped"] == 1
    ledger.remove("b.1")
    assert deleted == ["a.1", "b.1"] and ledger.figures("b")["spilled_bytes"] == 0


def test_unsigned_decoding_reads_only_plain_data_formats():
    import pyarrow as pa

    from cognopt_ray.errors import IntegrityError

    with pytest.raises(InvalidInput):  # the shared cache never writes Arrow streams ...
        encode(pa.table({"a": [1]}))
    stream = _values.encode(pa.table({"a": [1]}), signed=True)
    with pytest.raises(IntegrityError, match="Arrow"):  # ... nor reads one (compressed buffers: a bomb)
        decode(stream)
