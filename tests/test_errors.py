"""One root exception, constants and checks defined once, the py.typed marker."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

import hashplug
from hashplug import codes, errors
from hashplug._validate import check_positive_int
from hashplug.encoders import base as encoders_base
from hashplug.hashers import base as hashers_base
from hashplug.stores import base as stores_base


@pytest.mark.parametrize(
    "cls, builtin",
    [
        (errors.StoreError, RuntimeError),
        (errors.HasherMismatchError, ValueError),
        (errors.HasherFileError, ValueError),
        (errors.NotFittedError, ValueError),
        (errors.WeightsNotFoundError, FileNotFoundError),
        (errors.ModalityError, ValueError),
    ],
)
def test_every_error_has_one_root_and_keeps_its_builtin_base(cls, builtin):
    assert issubclass(cls, errors.HashplugError) and issubclass(cls, builtin)
    with pytest.raises(errors.HashplugError):
        raise cls("x")
    with pytest.raises(builtin):
        raise cls("x")
    assert errors.HashplugError is hashplug.HashplugError and cls.__name__ in errors.__all__


def test_errors_are_re_exported_where_they_were_defined():
    assert stores_base.StoreError is errors.StoreError
    assert stores_base.HasherMismatchError is errors.HasherMismatchError
    assert hashers_base.HasherFileError is hashplug.HasherFileError is errors.HasherFileError
    assert hashers_base.NotFittedError is hashplug.NotFittedError is errors.NotFittedError
    assert encoders_base.WeightsNotFoundError is errors.WeightsNotFoundError
    assert encoders_base.ModalityError is errors.ModalityError
    assert hashplug.StoreError is errors.StoreError


def test_not_fitted_is_caught_by_the_root(rng):
    with pytest.raises(errors.HashplugError, match="not fitted"):
        hashplug.LSH(8).encode(rng.standard_normal((2, 4)))


def test_hamming_pad_is_defined_once():
    rerank = importlib.import_module("hashplug.rerank")  # (hashplug.rerank is also a function)
    assert stores_base.HAMMING_PAD == rerank.HAMMING_PAD == codes.HAMMING_PAD == 2**31 - 1
    assert stores_base.HAMMING_PAD is codes.HAMMING_PAD is rerank.HAMMING_PAD


@pytest.mark.parametrize("bad", [0, -3, True, 2.0, "4", None])
def test_positive_int_check(bad):
    with pytest.raises(ValueError, match=r"widgets must be a positive int, got"):
        check_positive_int(bad, "widgets")


def test_positive_int_check_bounds_and_is_the_one_check():
    with pytest.raises(ValueError, match=r"k must be a positive int and at most 10, got 11"):
        check_positive_int(11, "k", most=10)
    assert check_positive_int(10, "k", most=10) == 10
    index = importlib.import_module("hashplug.index")
    assert not hasattr(index, "_positive_int")  # no private copy left


def test_positive_int_check_accepts_numpy_ints():
    assert check_positive_int(np.int32(7), "k") == 7 and type(check_positive_int(3, "k")) is int


def test_package_ships_py_typed():
    assert (Path(hashplug.__file__).parent / "py.typed").is_file()
