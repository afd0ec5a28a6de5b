"""Vectorised dict filters for LocalStore: one integer column per payload key, built once per state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .base import DictFilter, Payload

#: Column codes: the key is absent or None; the value is a list, a dict or NaN (never equal).
MISSING, OTHER = -1, -2


def _token(v: Any) -> tuple[str, Any] | None:
    """Return a hashable class of values equal under ``scalar_equal``, else None.

    1 and 1.0 share one.
    """
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, str):
        return ("s", v)
    if isinstance(v, (int, float)) and v == v:  # NaN equals nothing
        return ("n", v)  # equal numbers hash alike: ("n", 1) == ("n", 1.0)
    return None


class PayloadColumns:
    """Per-key integer columns over one list of payloads; ``mask`` gives a filter's rows."""

    def __init__(self, payloads: Sequence[Payload | None]) -> None:
        self.payloads = payloads
        self._cols: dict[str, tuple[NDArray[np.int32], dict[tuple[str, Any], int]]] = {}

    def column(self, key: str) -> tuple[NDArray[np.int32], dict[tuple[str, Any], int]]:
        """Return the key's column (a code per row) and its vocabulary (value class -> code)."""
        hit = self._cols.get(key)
        if hit is None:
            hit = self._cols[key] = self._column(key, {})
        return hit

    def _column(
        self, key: str, vocab: dict[tuple[str, Any], int]
    ) -> tuple[NDArray[np.int32], dict[tuple[str, Any], int]]:
        col = np.empty(len(self.payloads), np.int32)
        for i, p in enumerate(self.payloads):
            v = None if p is None else p.get(key)
            if v is None:
                col[i] = MISSING
            elif (t := _token(v)) is None:
                col[i] = OTHER
            else:
                col[i] = vocab.setdefault(t, len(vocab))
        return col, vocab

    def extended(self, payloads: Sequence[Payload | None]) -> PayloadColumns:
        """Return the columns of ``payloads``, which start with this object's payloads.

        Built columns are extended by the new rows only (the value codes are shared).
        """
        out = PayloadColumns(payloads)
        new = PayloadColumns(payloads[len(self.payloads) :])
        for key, (col, vocab) in self._cols.items():
            part, _ = new._column(key, vocab)  # new values continue the vocabulary
            out._cols[key] = (np.concatenate([col, part]), vocab)
        return out

    def mask(self, flt: DictFilter) -> NDArray[np.bool_]:
        """Rows matching a normalised dict filter (the meaning of ``dict_filter_matches``)."""
        out = np.ones(len(self.payloads), bool)
        for key, values in flt.items():
            col, vocab = self.column(key)
            if values is None:
                out &= col == MISSING
            else:
                want = [vocab[t] for v in values if (t := _token(v)) is not None and t in vocab]
                out &= np.isin(col, np.asarray(want, np.int32))
        return out
