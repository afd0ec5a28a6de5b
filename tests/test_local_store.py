"""The conformance suite on LocalStore (memory:// and file://), and the registry."""

import numpy as np
import pytest

import hashplug
from hashplug.stores import LocalStore, StoreError, open_store
from hashplug.testing import (
    ConcurrencyConformance,
    CoreConformance,
    CorrectionsConformance,
    PayloadConformance,
    PersistenceConformance,
    RescoringConformance,
    StoreConformance,
    make_meta,
    random_codes,
)
from hashplug.testing.faults import WriterKillConformance


class TestMemoryStore(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    CorrectionsConformance,
):
    @pytest.fixture
    def make_store(self, request):
        prefix = f"{request.node.name}-{id(request)}"
        return lambda name: open_store(f"memory://{prefix}-{name}")


class TestFileStore(
    CoreConformance,
    PayloadConformance,
    PersistenceConformance,
    ConcurrencyConformance,
    CorrectionsConformance,
):
    n_bits = 72  # a width that is not a multiple of 64 bits

    @pytest.fixture
    def make_store(self, tmp_path):
        return lambda name: open_store(f"file://{tmp_path / name}")


def test_private_memory_store_is_not_shared():
    a, b = LocalStore(), LocalStore()
    a.open(make_meta())
    a.upsert([1], random_codes(1))
    assert a.count() == 1 and b.count() == 0


def test_callable_filter():
    s = open_store("memory://")
    s.open(make_meta())
    s.upsert([1, 2, 3], random_codes(3), [{"n": 1}, {"n": 2}, None])
    ids, _ = s.search(random_codes(1, seed=2), 3, filter=lambda p: p["n"] >= 2)
    assert ids[0].tolist() == [2, -1, -1]
    with pytest.raises(ValueError, match="dict"):
        s.search(random_codes(1), 3, filter="n > 1")


def test_damaged_file_store_is_reported(tmp_path):
    s = open_store(f"file://{tmp_path / 'c'}")
    s.open(make_meta())
    s.upsert([1, 2], random_codes(2))
    (codes_file,) = (tmp_path / "c").glob("codes-*.safetensors")
    codes_file.write_bytes(b"\x00\x01")
    with pytest.raises(StoreError, match="damaged"):
        open_store(f"file://{tmp_path / 'c'}")


def test_unknown_scheme_names_the_plugin():
    if "qdrant" not in hashplug.stores.available_schemes():
        with pytest.raises(ValueError, match="pip install hashplug-qdrant"):
            hashplug.open_store("qdrant://127.0.0.1:6333/docs")
    with pytest.raises(ValueError, match="no known plugin"):
        hashplug.open_store("foo://bar")
    with pytest.raises(ValueError, match="scheme://"):
        hashplug.open_store("just-a-path")


def test_search_before_open_is_clear():
    with pytest.raises(StoreError, match="does not exist yet"):
        LocalStore().search(np.zeros((1, 8), np.uint8), 3)


def _file_store(path):
    s = open_store(f"file://{path}")
    s.open(make_meta())
    return s


def test_two_writers_on_one_directory_keep_each_others_rows(tmp_path):
    a, b = _file_store(tmp_path / "c"), _file_store(tmp_path / "c")
    for i in range(0, 60, 2):  # interleaved: each writer reloads the other's rows under the lock
        a.upsert([i], random_codes(1, seed=i), [{"by": "a"}])
        b.upsert([i + 1], random_codes(1, seed=i + 1), [{"by": "b"}])
    assert a.count() == b.count() == _file_store(tmp_path / "c").count() == 60
    b.delete([0])
    assert a.get_payloads([0, 1]) == [None, {"by": "b"}]


def test_writers_in_other_processes_lose_nothing(tmp_path):
    import subprocess
    import sys

    _file_store(tmp_path / "c")
    code = (
        "import sys; from hashplug.stores import open_store\n"
        "from hashplug.testing import make_meta, random_codes\n"
        "s = open_store('file://' + sys.argv[1]); s.open(make_meta())\n"
        "w = int(sys.argv[2])\n"
        "for i in range(20): s.upsert([w * 1000 + i], random_codes(1, seed=i), [{'w': w}])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "c"), str(w)])
        for w in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    s = _file_store(tmp_path / "c")
    assert s.count() == 60
    assert sorted(np.concatenate(list(s.iter_ids())).tolist()) == sorted(
        w * 1000 + i for w in range(3) for i in range(20)
    )


def test_a_kill_between_data_files_and_manifest_keeps_the_last_generation(tmp_path):
    s = _file_store(tmp_path / "c")
    s.upsert([1, 2, 3], random_codes(3), [{"n": 1}, {"n": 2}, {"n": 3}])
    # What a writer killed after writing its data files (before the manifest) leaves behind:
    (tmp_path / "c" / "codes-99.safetensors").write_bytes(b"half a file")
    (tmp_path / "c" / "payloads-99.json").write_text('[{"n": 3}, {"n"')
    t = _file_store(tmp_path / "c")
    assert t.count() == 3 and t.get_payloads([3, 1]) == [{"n": 3}, {"n": 1}]
    t.upsert([4], random_codes(1, seed=4))  # the next commit removes the leftovers
    assert not (tmp_path / "c" / "codes-99.safetensors").exists()
    assert _file_store(tmp_path / "c").count() == 4


def test_a_failed_save_leaves_the_object_as_on_disk(tmp_path, monkeypatch):
    from hashplug.stores import _localfiles

    s = _file_store(tmp_path / "c")
    s.upsert([1, 2], random_codes(2), [{"n": 1}, {"n": 2}])

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_localfiles, "_fsync_write", disk_full)
    with pytest.raises(OSError, match="No space"):
        s.upsert([3], random_codes(1, seed=3), [{"n": 3}])
    with pytest.raises(OSError, match="No space"):
        s.delete([1])
    assert s.count() == 2 and s.get_payloads([1, 3]) == [{"n": 1}, None]
    monkeypatch.undo()
    assert _file_store(tmp_path / "c").count() == 2


def test_a_manifest_that_names_a_changed_file_is_damage(tmp_path):
    s = _file_store(tmp_path / "c")
    s.upsert([1, 2], random_codes(2), [{"n": 1}, {"n": 2}])
    (pl,) = (tmp_path / "c").glob("payloads-*.json")
    pl.write_text('[{"n": 1}, {"n": 9}]')  # same size, other bytes
    with pytest.raises(StoreError, match="does not match the manifest"):
        open_store(f"file://{tmp_path / 'c'}")


def test_a_held_lock_gives_a_clear_error(tmp_path):
    s = open_store(f"file://{tmp_path / 'c'}", lock_timeout=0.2)
    s.open(make_meta())
    other = _file_store(tmp_path / "c")
    with other._files.locked(), pytest.raises(StoreError, match="locked by another writer"):
        s.upsert([1], random_codes(1))
    assert s.count() == 0


def test_older_layout_is_read_and_upgraded(tmp_path):
    import json

    from safetensors.numpy import save_file

    d = tmp_path / "old"
    d.mkdir()
    (d / "meta.json").write_text(make_meta().to_json())
    save_file(
        {"ids": np.array([5], np.int64), "codes": random_codes(1)}, str(d / "codes.safetensors")
    )
    (d / "payloads.json").write_text(json.dumps([{"a": 1}]))
    s = _file_store(d)
    assert s.get_payloads([5]) == [{"a": 1}]
    s.upsert([6], random_codes(1, seed=6))
    assert not (d / "meta.json").exists() and (d / "MANIFEST.json").exists()
    assert _file_store(d).count() == 2


def test_filter_cases_agree_with_the_reference_meaning():
    from hashplug.stores.base import MatchNothing, dict_filter_matches, normalize_filter
    from hashplug.testing import FILTER_CASES, FILTER_PAYLOADS

    assert len(FILTER_CASES) >= 30
    for name, flt, want in FILTER_CASES:
        norm = normalize_filter(flt)
        if norm is None:
            got = list(range(len(FILTER_PAYLOADS)))
        elif isinstance(norm, MatchNothing):
            got = []
        else:
            got = [i for i, p in enumerate(FILTER_PAYLOADS) if dict_filter_matches(p, norm)]
        assert got == want, name


def test_bad_filter_values_are_refused_by_name():
    s = open_store("memory://")
    s.open(make_meta())
    for flt, msg in (
        ({"k": float("nan")}, "finite"),
        ({"k": {"a": 1}}, "scalar"),
        ({"": 1}, "non-empty"),
        ({"k": 2**64}, "int64"),
    ):
        with pytest.raises(ValueError, match=msg):
            s.search(random_codes(1), 3, filter=flt)


class TestFileStoreFaults(WriterKillConformance):
    @pytest.fixture
    def store_uri(self, tmp_path):
        return lambda name: f"file://{tmp_path / name}"


def test_shared_memory_name_is_safe_for_a_writer_and_readers():
    """Two objects on one memory://NAME: a writer upserting while readers search and count.

    The readers see no error, only whole batches, and codes that belong to their ids.
    """
    import threading

    name = f"memory://race-{np.random.default_rng().integers(1 << 30)}"
    writer, reader = open_store(name), open_store(name)
    meta = make_meta()
    writer.open(meta)
    reader.open(meta)
    codes = random_codes(20 * 500, 64, seed=4)
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for b in range(20):
                part = slice(b * 500, (b + 1) * 500)
                writer.upsert(np.arange(b * 500, (b + 1) * 500), codes[part])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            done.set()

    def read() -> None:
        try:
            last = 0
            while not done.is_set():
                n = reader.count()
                assert n % 500 == 0 and n >= last, n
                last = n
                ids, _, got = reader.search_with_codes(codes[:3], 5)
                ok = ids >= 0
                np.testing.assert_array_equal(got[ok], codes[ids[ok]])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert reader.count() == 10_000
    writer.drop()


def test_a_capability_flag_without_its_methods_fails_at_class_definition():
    with pytest.raises(TypeError, match="supports_rescoring.*search_rescored"):

        class Claims(LocalStore):
            supports_rescoring = True

    with pytest.raises(TypeError, match="supports_native_index.*create_index"):

        class Claims2(LocalStore):
            supports_native_index = True

    class NoCorrections(LocalStore):  # turning a flag off is always allowed
        supports_corrections = False

    assert not NoCorrections.supports_corrections and LocalStore.supports_corrections


def test_the_suite_catches_flags_and_mixins_that_disagree():
    class Skips(CoreConformance, PayloadConformance, ConcurrencyConformance):
        pass

    class Claims(
        CoreConformance,
        PayloadConformance,
        PersistenceConformance,
        ConcurrencyConformance,
        RescoringConformance,
    ):
        pass

    class NoFactors(
        CoreConformance, PayloadConformance, PersistenceConformance, ConcurrencyConformance
    ):
        pass

    class Right(
        CoreConformance,
        PayloadConformance,
        PersistenceConformance,
        ConcurrencyConformance,
        CorrectionsConformance,
    ):
        pass

    shared, private = open_store("memory://flags-check"), LocalStore()
    assert shared.persistent and not private.persistent
    with pytest.raises(AssertionError, match="persistent but Skips does not compose Persistence"):
        Skips().test_declared_capabilities_match_the_mixins_run(shared)
    with pytest.raises(AssertionError, match="composes RescoringConformance but LocalStore"):
        Claims().test_declared_capabilities_match_the_mixins_run(shared)
    with pytest.raises(AssertionError, match="composes PersistenceConformance but LocalStore"):
        Right().test_declared_capabilities_match_the_mixins_run(private)
    with pytest.raises(
        AssertionError, match="supports_corrections but NoFactors does not compose Corrections"
    ):
        NoFactors().test_declared_capabilities_match_the_mixins_run(shared)
    Right().test_declared_capabilities_match_the_mixins_run(shared)
    StoreConformance().test_declared_capabilities_match_the_mixins_run(private)  # skips there


def test_vectorised_dict_filter_equals_the_reference_meaning():
    """LocalStore's column masks give exactly dict_filter_matches on every kind of value."""
    from hashplug.stores._columns import PayloadColumns
    from hashplug.stores.base import dict_filter_matches, normalize_filter

    values = [
        True,
        False,
        0,
        1,
        1.0,
        2,
        2.5,
        "1",
        "a",
        "",
        None,
        [1],
        {"x": 1},
        2**62,
        float(2**62),
        -7,
    ]  # fmt: skip (NaN cannot be stored: payloads are JSON)
    rng = np.random.default_rng(4)
    payloads = [
        None
        if rng.random() < 0.1
        else {k: values[rng.integers(len(values))] for k in ("a", "b") if rng.random() < 0.8}
        for _ in range(400)
    ]
    cols = PayloadColumns(payloads)
    cases = [{"a": v} for v in values if v is not None and not isinstance(v, (list, dict))]
    cases += [{"a": None}, {"a": [1, "a"]}, {"a": True, "b": [2.5, 2**62]}, {"b": None, "a": 0}]
    for flt in cases:
        norm = normalize_filter(flt)
        want = np.array([dict_filter_matches(p, norm) for p in payloads])
        np.testing.assert_array_equal(cols.mask(norm), want, err_msg=str(flt))
    store = LocalStore()
    store.open(make_meta(64))
    store.upsert(np.arange(400), random_codes(400), payloads)
    q = random_codes(1, seed=9)
    for flt in ({"a": 1}, {"a": None}):
        ids, _ = store.search(q, 400, filter=flt)
        norm = normalize_filter(flt)
        want = {i for i, p in enumerate(payloads) if dict_filter_matches(p, norm)}
        assert set(ids[0][ids[0] >= 0].tolist()) == want
    store.upsert(np.array([0]), random_codes(1), [{"a": "new"}])  # a new state: new columns
    ids, _ = store.search(q, 400, filter={"a": "new"})
    assert 0 in ids[0].tolist()
    vocab = store._columns.column("a")[1]
    more = [{"a": "fresh"}, {"a": 1}, None, {"b": 2.5}] * 50  # appended: columns extended
    store.upsert(np.arange(400, 600), random_codes(200, seed=5), more)
    every = store.get_payloads(np.arange(600))
    for flt in [*cases, {"a": "fresh"}]:
        ids, _ = store.search(q, 600, filter=flt)
        norm = normalize_filter(flt)
        want = {i for i, p in enumerate(every) if dict_filter_matches(p, norm)}
        assert set(ids[0][ids[0] >= 0].tolist()) == want, flt
    assert store._columns.column("a")[1] is vocab


def test_file_store_appends_segments_and_compacts(tmp_path, monkeypatch):
    import json

    from hashplug.stores import _localfiles

    monkeypatch.setattr(_localfiles, "MAX_SEGMENTS", 4)
    monkeypatch.setattr("hashplug.stores.local.MAX_SEGMENTS", 4)
    d = tmp_path / "c"
    s = _file_store(d)
    s.upsert([1, 2], random_codes(2), [{"n": 1}, {"n": 2}])
    (first,) = d.glob("codes-*.safetensors")
    before = first.stat()
    s.upsert([3], random_codes(1, seed=3))  # appends: the first segment is not rewritten
    man = json.loads((d / "MANIFEST.json").read_text())
    assert [e["rows"] for e in man["segments"]] == [2, 1]
    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    s.delete([2])
    s.upsert([4], random_codes(1, seed=4))  # 4 segments: the next change compacts
    s.upsert([5], random_codes(1, seed=5))
    man = json.loads((d / "MANIFEST.json").read_text())
    assert [e["rows"] for e in man["segments"]] == [4]
    assert len(list(d.glob("codes-*"))) == len(list(d.glob("payloads-*"))) == 1
    assert sorted(np.concatenate(list(_file_store(d).iter_ids())).tolist()) == [1, 3, 4, 5]


def test_segments_replay_like_the_memory_store(tmp_path):
    """Random upserts and deletes: file store, memory store and a catching-up reader agree.

    Random upserts (new and replaced ids, with and without corrections) and deletes on a file store,
    a memory store, and a reader object that catches up segment by segment: the same rows in the
    same order, and a fresh open (all segments merged at once) agrees.
    """
    rng = np.random.default_rng(7)
    mem, fil = open_store("memory://"), _file_store(tmp_path / "c")
    mem.open(make_meta())
    reader = _file_store(tmp_path / "c")
    for step in range(25):
        if rng.random() < 0.3:
            gone = rng.choice(40, size=int(rng.integers(1, 6)), replace=False)
            mem.delete(gone)
            fil.delete(gone)
        else:
            ids = rng.choice(40, size=int(rng.integers(1, 8)), replace=False)
            codes = random_codes(ids.size, seed=step)
            pl = [{"step": step, "id": int(i)} for i in ids]
            corr = rng.normal(size=(ids.size, 2)) if step % 2 else None
            mem.upsert(ids, codes, pl, corrections=corr)
            fil.upsert(ids, codes, pl, corrections=corr)
        if step % 4 == 0:
            reader.count()  # catch up now: later steps arrive as new segments
    from hashplug.stores._segments import whole  # the live rows of a state, in order

    fresh = _file_store(tmp_path / "c")
    ref = whole(mem._snapshot())
    for st in (whole(fil._snapshot()), whole(reader._snapshot()), whole(fresh._snapshot())):
        np.testing.assert_array_equal(st["ids"], ref["ids"])
        np.testing.assert_array_equal(st["codes"], ref["codes"])
        assert st["payloads"] == ref["payloads"]
        np.testing.assert_array_equal(st.get("corr"), ref.get("corr"))
    ids = ref["ids"]
    np.testing.assert_array_equal(fresh.lookup_codes(ids)[0], ref["codes"])
    q = random_codes(3, seed=99)
    np.testing.assert_array_equal(fresh.search(q, 10).ids, mem.search(q, 10).ids)


def test_format_1_manifest_is_read_and_upgraded(tmp_path):
    import json
    import zlib

    from safetensors.numpy import save

    d = tmp_path / "v1"
    d.mkdir()
    blob = save({"ids": np.array([5, 6], np.int64), "codes": random_codes(2)})
    pl = json.dumps([{"a": 5}, None]).encode()
    (d / "codes-3.safetensors").write_bytes(blob)
    (d / "payloads-3.json").write_bytes(pl)
    man = {
        "format": 1,
        "gen": 3,
        "meta": make_meta().to_json(),
        "codes": {"file": "codes-3.safetensors", "bytes": len(blob), "crc32": zlib.crc32(blob)},
        "payloads": {"file": "payloads-3.json", "bytes": len(pl), "crc32": zlib.crc32(pl)},
    }
    (d / "MANIFEST.json").write_text(json.dumps(man))
    s = _file_store(d)
    assert s.get_payloads([5, 6]) == [{"a": 5}, None]
    s.upsert([7], random_codes(1, seed=7))
    assert json.loads((d / "MANIFEST.json").read_text())["format"] == 2
    assert _file_store(d).count() == 3


def test_appends_grow_shared_buffers_and_keep_snapshots():
    """An append writes past the end of shared buffers; older snapshots and branches stay intact."""
    from hashplug.stores._segments import apply_segment

    s = open_store("memory://")
    s.open(make_meta())
    c = random_codes(4, seed=1)
    s.upsert([1, 2], c[:2], [{"a": 1}, None])
    a = s._snapshot()
    s.upsert([3], c[2:3], [{"b": 2}])
    b = s._snapshot()
    assert b["ids"].base is a["ids"].base  # appended in place, not copied
    assert a["ids"].tolist() == [1, 2] and list(a["payloads"]) == [{"a": 1}, None]
    branch = apply_segment(a, {"ids": np.array([4]), "codes": c[3:4], "payloads": [None]})
    assert branch["ids"].base is not b["ids"].base  # b owns the rows after a: a branch copies
    assert b["ids"].tolist() == [1, 2, 3] and branch["ids"].tolist() == [1, 2, 4]
    np.testing.assert_array_equal(b["codes"], c[:3])
    assert list(b["payloads"]) == [{"a": 1}, None, {"b": 2}]
    assert list(branch["payloads"]) == [{"a": 1}, None, None]
    assert branch["index"].rows(np.array([4, 3]))[1].tolist() == [True, False]
    many = np.arange(10, 2010)  # lookups across many appended runs
    for lo in range(0, 2000, 100):
        s.upsert(many[lo : lo + 100], random_codes(100, seed=lo))
    assert s.lookup_codes(many[::7])[1].all() and not s.lookup_codes([5000])[1].any()
    assert len(s._snapshot()["index"]._runs) <= 12


def test_file_store_merges_small_segments_by_size_tier(tmp_path):
    """Small writes after a big one: same-size segments merge in eights, the big file stays."""
    import json

    from hashplug.stores.local import TIER

    d = tmp_path / "c"
    fil, mem = _file_store(d), open_store("memory://")
    mem.open(make_meta())
    for s in (fil, mem):
        s.upsert(np.arange(1000), random_codes(1000), [{"i": i} for i in range(1000)])
    (big,) = d.glob("codes-*.safetensors")
    ino = big.stat().st_ino
    rng = np.random.default_rng(3)
    longest = 0
    for step in range(150):
        if step % 10 == 9:
            gone = rng.choice(1400, 2, replace=False)
            fil.delete(gone)
            mem.delete(gone)
        else:
            ids = rng.choice(1400, 3, replace=False)  # new ids and replaced ones
            codes = random_codes(3, seed=step)
            fil.upsert(ids, codes, [{"step": step}] * 3)
            mem.upsert(ids, codes, [{"step": step}] * 3)
        segs = json.loads((d / "MANIFEST.json").read_text())["segments"]
        longest = max(longest, len(segs))
    assert longest <= 1 + 3 * (TIER - 1)  # at most TIER - 1 segments per size level
    assert big.stat().st_ino == ino  # never rewritten by the small ones
    from hashplug.stores._segments import whole  # the live rows of a state, in order

    fresh, ref = whole(_file_store(d)._snapshot()), whole(mem._snapshot())
    np.testing.assert_array_equal(fresh["ids"], ref["ids"])
    np.testing.assert_array_equal(fresh["codes"], ref["codes"])
    assert list(fresh["payloads"]) == list(ref["payloads"])


@pytest.mark.parametrize("ivf", [None, 4])
def test_deletes_and_replacements_leave_dead_rows_until_a_limit(ivf):
    """Deleted and replaced rows stay as dead rows (no copy) that every read skips."""
    from hashplug.stores._segments import dead_limit

    n = 2000
    s = LocalStore(ivf=ivf, nprobe=4)
    s.open(make_meta())
    codes = random_codes(n, seed=11)
    s.upsert(np.arange(n), codes, [{"k": i % 3} for i in range(n)])
    s.search(codes[:1], 5)
    ids_before = s._snapshot()["ids"]
    s.delete([5, 6])
    s.upsert([7], codes[8:9], [{"k": 9}])  # id 7 now has id 8's code
    st = s._snapshot()
    assert st["ids"].base is ids_before.base and st["dead"].tolist() == [5, 6, 7]  # no copy
    assert s.count() == n - 2 and 5 not in np.concatenate(list(s.iter_ids())).tolist()
    assert s.lookup_codes([5, 7])[1].tolist() == [False, True]
    np.testing.assert_array_equal(s.lookup_codes([7])[0], codes[8:9])
    assert s.get_payloads([6, 7]) == [None, {"k": 9}]
    for flt in (None, {"k": [0, 1, 2, 9]}):
        hits = s.search(codes[5:9], 30, filter=flt)
        assert not np.isin(hits.ids, [5, 6]).any()
        assert 7 not in hits.ids[2][hits.distances[2] == 0].tolist()  # its old code is gone
        assert set(hits.ids[3][hits.distances[3] == 0].tolist()) == {7, 8}
        assert (hits.ids >= 0).all()  # enough live rows: no padding
    everything = s.search(codes[:1], n).ids[0]
    assert sorted(everything[everything >= 0].tolist()) == sorted(set(range(n)) - {5, 6})
    s.delete(np.arange(100, 100 + dead_limit(n)))  # past the limit: the columns are copied
    st = s._snapshot()
    assert st["dead"].size == 0 and st["ids"].size == s.count() == n - 2 - dead_limit(n)


def test_id_lookup_after_sorted_overlapping_and_shuffled_appends():
    """Every append looks up the newest row, as a dict does.

    Those that skip the sort (increasing ids above every stored one) and those that need it
    (interleaved, shuffled, replacing).
    """
    s = LocalStore()
    s.open(make_meta())
    rng = np.random.default_rng(5)
    ref: dict[int, bytes] = {}
    batches = [
        np.arange(0, 300),
        np.arange(300, 700),
        np.arange(700, 800)[::-1],
        rng.permutation(np.arange(800, 1500)),
        *(2000 + i + 16 * np.arange(50) for i in range(16)),  # sorted runs that interleave
        np.arange(250, 290),
        rng.choice(2800, 30, replace=False),
    ]  # replacements
    for i, b in enumerate(batches):  # fmt: skip
        c = random_codes(b.size, seed=100 + i)
        s.upsert(b, c)
        ref.update({int(k): bytes(r) for k, r in zip(b, c, strict=True)})
        probe = np.concatenate([np.array(sorted(ref)), [1600, 5000, 1999]])
        got, found = s.lookup_codes(probe)  # (a lookup builds the index: later appends merge)
        assert found.tolist() == [int(k) in ref for k in probe], i
        assert [bytes(r) for r in got[found]] == [ref[int(k)] for k in sorted(ref)], i
    assert s.count() == len(ref) and len(s._snapshot()["index"]._runs) < 8
    inc = LocalStore()  # increasing ids: runs of row offsets, no sort, no row arrays
    inc.open(make_meta())
    for lo in range(0, 1000, 100):
        inc.upsert(np.arange(lo, lo + 100), random_codes(100, seed=lo))
        assert inc.lookup_codes([lo + 99, lo + 100])[1].tolist() == [True, False]
    assert all(isinstance(o, int) for _, o in inc._snapshot()["index"]._runs)
    np.testing.assert_array_equal(inc.lookup_codes([250])[0], random_codes(100, seed=200)[50:51])
    with pytest.raises(ValueError, match="duplicates"):
        s.upsert([3000, 3001, 3000], random_codes(3))
    with pytest.raises(ValueError, match="duplicates"):
        s.upsert([3002, 3002], random_codes(2))
    assert s.count() == len(ref)
