"""hashplug.stores.uri: typed option converters and parse_uri errors."""

from __future__ import annotations

import pytest

from hashplug.stores.uri import parse_uri, to_bool, to_finite_float


def test_typed_options_convert() -> None:
    p = parse_uri(
        "qdrant://h:6333/c?https=Yes&grpc=off&backoff=0.5",
        {"https": to_bool, "grpc": to_bool, "backoff": to_finite_float},
    )
    assert (p.scheme, p.location) == ("qdrant", "h:6333/c")
    assert p.options == {"https": True, "grpc": False, "backoff": 0.5}


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("x://a?https=maybe", "https='maybe'"),
        ("x://a?backoff=inf", "backoff='inf'"),
        ("x://a?colour=red", "unknown option 'colour'"),
    ],
)
def test_bad_options_are_named(uri: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_uri(uri, {"https": to_bool, "backoff": to_finite_float})
