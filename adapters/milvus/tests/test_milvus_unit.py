"""Engine-free parts of hashplug-milvus: URIs, filter expressions, code words, retry policy."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hashplug_milvus import MilvusStore, RetryPolicy, codes_to_words, is_transient, words_to_codes
from hashplug_milvus._filters import literal, to_expression

from hashplug.errors import StoreError, StoreUnavailableError
from hashplug.stores.registry import available_schemes, open_store
from hashplug.testing import random_codes


# -- URIs ------------------------------------------------------------------------------------------
def test_server_uri_forms() -> None:
    s = open_store("milvus://127.0.0.1:19531/docs")
    assert isinstance(s, MilvusStore) and not s.is_lite
    assert (s.uri, s.collection, s.db_name, s.index) == (
        "http://127.0.0.1:19531",
        "docs",
        "",
        "BIN_FLAT",
    )
    s = MilvusStore.from_uri(
        "milvus://alice:s%40cret@db.example:443/research/docs?secure=true&index=BIN_IVF_FLAT"
        "&nlist=256&nprobe=32&consistency=Strong&timeout=5&retries=1&code_words=false",
        token="",
    )
    assert s.uri == "https://db.example:443" and (s.user, s.password) == ("alice", "s@cret")
    assert (s.db_name, s.collection, s.index, s.nlist, s.nprobe) == (
        "research",
        "docs",
        "BIN_IVF_FLAT",
        256,
        32,
    )
    assert (s.consistency_level, s.timeout, s.retry.retries, s.code_words) == (
        "Strong",
        5.0,
        1,
        False,
    )
    assert MilvusStore.from_uri("milvus://localhost/docs").uri == "http://localhost:19530"
    s = MilvusStore.from_uri("milvus://h:1/docs?token=abc", nprobe=4)  # keywords override
    assert (s.token, s.nprobe) == ("abc", 4)
    assert "abc" not in s.location and "abc" not in repr(s)


def test_lite_uri_forms(tmp_path) -> None:
    s = MilvusStore.from_uri(f"milvus+lite://{tmp_path}/sub/codes.db/docs")
    assert s.is_lite and s.uri == f"{tmp_path}/sub/codes.db" and s.collection == "docs"
    rel = MilvusStore.from_uri("milvus+lite://./data/codes.db/docs")
    assert rel.uri.endswith("/data/codes.db") and rel.uri.startswith("/")
    assert MilvusStore(str(tmp_path / "x.db"), "c").is_lite


@pytest.mark.parametrize(
    "bad",
    [
        "milvus://h:1",  # no collection
        "milvus://h:1/a/b/c",
        "milvus://h:1/bad-name",
        "milvus://h:1/docs?bogus=1",
        "milvus://h:1/docs?nprobe=x",
        "milvus://h:1/docs?index=HNSW",
        "milvus://h:1/docs?consistency=Sometimes",
        "milvus+lite://./codes/docs",  # not a .db file
        "lancedb://x/y",
    ],
)
def test_bad_uris(bad: str) -> None:
    with pytest.raises(ValueError):
        MilvusStore.from_uri(bad)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("milvus://h:1/docs?colour=red", "unknown option 'colour'"),
        ("milvus+lite://./c.db/docs?nlist=many", "option nlist='many'"),
        ("milvus://h:1/docs?secure=maybe", "option secure='maybe'"),
    ],
)
def test_uri_option_errors_name_the_option(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MilvusStore.from_uri(bad)


def test_source_uri_options_are_checked_before_connecting() -> None:
    from hashplug_milvus.source import MilvusSource

    with pytest.raises(ValueError, match="unknown option 'colour'"):
        MilvusSource.from_uri("milvus://h:1/docs?colour=red")
    with pytest.raises(ValueError, match="option timeout='soon'"):
        MilvusSource.from_uri("milvus://h:1/docs?timeout=soon")


def test_registered_schemes() -> None:
    assert {"milvus", "milvus+lite"} <= set(available_schemes())


# -- filters ---------------------------------------------------------------------------------------
def test_literals_and_expressions() -> None:
    assert literal(True) == "true" and literal(3) == "3" and literal(0.5) == "0.5"
    assert literal('a "q" \\ b\n') == '"a \\"q\\" \\\\ b\\n"'
    assert literal(np.int64(7)) == "7" and literal("grün") == '"grün"'
    for bad in (float("nan"), 2**70, None, [1], {"a": 1}, object()):
        with pytest.raises(ValueError):
            literal(bad)
    res = frozenset({"id", "code"})
    assert to_expression(None, res) == "" and to_expression({}, res) == ""
    assert to_expression("  rank > 3 ", res) == "rank > 3"
    assert to_expression({"color": "red", "n": 1}, res) == '(color == "red") and (n == 1)'
    assert to_expression({"my key": True}, res) == '($meta["my key"] == true)'
    with pytest.raises(ValueError, match="reserved"):
        to_expression({"id": 1}, res)


# -- code words ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_bits", [8, 64, 72, 128, 256])
def test_words_round_trip(n_bits: int) -> None:
    codes = random_codes(50, n_bits, seed=n_bits)
    words = codes_to_words(codes)
    assert words.dtype == np.int64 and words.shape == (50, (n_bits // 8 + 7) // 8)
    np.testing.assert_array_equal(words_to_codes(words, n_bits // 8), codes)


# -- retries ---------------------------------------------------------------------------------------
class _Rpc(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "x"


def test_transient_classification() -> None:
    from pymilvus.exceptions import MilvusException

    assert is_transient(ConnectionRefusedError(111, "refused"))
    assert is_transient(TimeoutError())
    assert is_transient(_Rpc(grpc.StatusCode.UNAVAILABLE))
    assert not is_transient(_Rpc(grpc.StatusCode.INVALID_ARGUMENT))
    wrapped = MilvusException(1, "Retry run out")
    wrapped.__cause__ = _Rpc(grpc.StatusCode.UNAVAILABLE)
    assert is_transient(wrapped)
    assert is_transient(MilvusException(2, "Fail connecting to server on h:1, server unavailable"))
    assert is_transient(MilvusException(8, "rate limit exceeded"))
    assert not is_transient(MilvusException(1100, "cannot parse expression: color ==="))
    assert not is_transient(ValueError("bad"))


def test_retry_policy_backoff_and_bounds() -> None:
    slept: list[float] = []
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionRefusedError("refused")
        return "ok"

    policy = RetryPolicy(retries=5, backoff=0.25, max_backoff=1.0)
    assert policy.run(flaky, is_transient=is_transient, sleep=slept.append) == "ok"
    assert calls["n"] == 3 and slept == [0.25, 0.5]
    assert list(policy.delays()) == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert sum(RetryPolicy().delays()) < 10  # the defaults give up within seconds

    def down() -> None:
        raise ConnectionRefusedError("refused")

    slept.clear()
    with pytest.raises(StoreUnavailableError) as err:
        RetryPolicy(retries=2, backoff=0.1).run(down, is_transient=is_transient, sleep=slept.append)
    assert err.value.attempts == 3 and slept == [0.1, 0.2]
    assert isinstance(err.value.__cause__, ConnectionRefusedError)
    assert isinstance(err.value, StoreError) and "3 time(s)" in str(err.value)

    def broken() -> None:
        raise KeyError("not transient")

    with pytest.raises(KeyError):
        RetryPolicy().run(broken, is_transient=is_transient, sleep=slept.append)
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_constructor_validation(tmp_path) -> None:
    for kw in ({"nlist": 0}, {"nprobe": -1}, {"batch_size": 0}, {"payload_max_length": 70_000}):
        with pytest.raises(ValueError):
            MilvusStore("http://127.0.0.1:1", "c", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uri"):
        MilvusStore("127.0.0.1:19530", "c")
    with pytest.raises(ValueError, match="collection name"):
        MilvusStore("http://127.0.0.1:1", "1abc")
