"""The dict-filter cases every store must answer alike (DESIGN.md, "Dict filters").

``FILTER_PAYLOADS`` are stored under ids ``0 .. len - 1``; each case in ``FILTER_CASES`` is
``(name, filter, expected ids)``, written out by hand (and checked against the reference
:func:`hashplug.stores.base.dict_filter_matches` by hashplug's own tests). Each field holds one
type in every row (a store may give a field one typed column); lists in payloads are not
filtered on (how an engine matches a list element is not portable).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FILTER_PAYLOADS", "FILTER_CASES", "ALL"]

LONG = "long " + "x" * 2000
QUOTES = "quote ' \" \\ back"

FILTER_PAYLOADS: list[dict[str, Any] | None] = [
    {"s": "a", "i": 1, "f": 1.0, "b": True, "n": None},  # 0
    {"s": "b", "i": 2, "f": 2.5, "b": False},  # 1
    None,  # 2
    {"s": "1", "i": 0, "f": 0.0, "b": False, "n": None},  # 3
    {"s": "line\nbreak", "i": -5, "f": -0.5, "b": True},  # 4
    {"s": "tab\tsep", "i": 2**40, "f": 1e10},  # 5
    {"s": "nul\x00byte"},  # 6
    {"s": QUOTES, "i": 7},  # 7
    {"s": "x' OR '1'='1"},  # 8
    {"s": "ünï©ødé 🙂 日本", "i": 9},  # 9
    {"s": "", "i": 10},  # 10
    {"s": "A"},  # 11
    {"s": "a "},  # 12
    {"s": LONG},  # 13
    {"x": None, "other": 3},  # 14
    {},  # 15
]

ALL = list(range(len(FILTER_PAYLOADS)))
_WITHOUT_I = [2, 6, 8, 11, 12, 13, 14, 15]

FILTER_CASES: list[tuple[str, Any, list[int]]] = [
    ("none", None, ALL),
    ("empty dict", {}, ALL),
    ("str", {"s": "a"}, [0]),
    ("str case kept", {"s": "A"}, [11]),
    ("str trailing space kept", {"s": "a "}, [12]),
    ("empty str", {"s": ""}, [10]),
    ("newline", {"s": "line\nbreak"}, [4]),
    ("tab", {"s": "tab\tsep"}, [5]),
    ("nul byte", {"s": "nul\x00byte"}, [6]),
    ("quotes and backslash", {"s": QUOTES}, [7]),
    ("backslash not an escape", {"s": QUOTES.replace("\\", "")}, []),
    ("sql injection stored", {"s": "x' OR '1'='1"}, [8]),
    ("sql injection", {"s": "' OR 1=1 --"}, []),
    ("expr injection", {"s": '" or 1 == 1 or s == "'}, []),
    ("json injection", {"s": '"}, {"s": "a'}, []),
    ("unicode", {"s": "ünï©ødé 🙂 日本"}, [9]),
    ("long str", {"s": LONG}, [13]),
    ("long str prefix", {"s": LONG[:-1]}, []),
    ("int is not str", {"s": 1}, []),
    ("int", {"i": 1}, [0]),
    ("int as float", {"i": 1.0}, [0]),
    ("str is not int", {"i": "1"}, []),
    ("bool is not int", {"i": True}, []),
    ("zero", {"i": 0}, [3]),
    ("negative", {"i": -5}, [4]),
    ("large int", {"i": 2**40}, [5]),
    ("float as int", {"f": 1}, [0]),
    ("float", {"f": 2.5}, [1]),
    ("negative float", {"f": -0.5}, [4]),
    ("float zero", {"f": 0.0}, [3]),
    ("bool true", {"b": True}, [0, 4]),
    ("bool false", {"b": False}, [1, 3]),
    ("int is not bool", {"b": 1}, []),
    ("zero is not false", {"b": 0}, []),
    ("null: always null", {"n": None}, ALL),
    ("null: missing", {"s": None}, [2, 14, 15]),
    ("null: missing int", {"i": None}, _WITHOUT_I),
    ("null: stored null", {"x": None}, ALL),
    ("absent key", {"nokey": "a"}, []),
    ("absent key null", {"nokey": None}, ALL),
    ("any of", {"s": ["a", "b"]}, [0, 1]),
    ("any of with absent", {"s": ["a", "zzz"]}, [0]),
    ("any of nothing", {"s": []}, []),
    ("any of ints", {"i": [1, 2, 999]}, [0, 1]),
    ("any of bools", {"b": [True, False]}, [0, 1, 3, 4]),
    ("any of hostile", {"s": ["' OR 1=1 --", "nul\x00byte"]}, [6]),
    ("and", {"s": "b", "i": 2}, [1]),
    ("and, no row", {"s": ["a"], "i": [2]}, []),
    ("and bool", {"b": True, "i": 1}, [0]),
    ("and null", {"s": None, "other": 3}, [14]),
    ("and with nothing", {"s": "a", "i": []}, []),
]
