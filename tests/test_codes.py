import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hashplug import codes

n_bits_st = st.integers(1, 24).map(lambda b: 8 * b)


@st.composite
def bit_matrices(draw):
    nb = draw(n_bits_st)
    n = draw(st.integers(0, 20))
    return draw(arrays(np.uint8, (n, nb), elements=st.integers(0, 1)))


@given(bit_matrices())
def test_pack_unpack_round_trip(bits):
    packed = codes.pack_bits(bits)
    assert packed.dtype == np.uint8 and packed.shape == (bits.shape[0], bits.shape[1] // 8)
    np.testing.assert_array_equal(codes.unpack_bits(packed), bits)


@given(bit_matrices())
def test_layout_is_numpy_packbits_msb_first(bits):
    packed = codes.pack_bits(bits)
    np.testing.assert_array_equal(packed, np.packbits(bits, axis=1))
    for j in range(bits.shape[1]):
        got = (packed[:, j // 8] >> (7 - j % 8)) & 1
        np.testing.assert_array_equal(got, bits[:, j])


@given(bit_matrices())
def test_signs_round_trips(bits):
    s = codes.bits_to_signs(bits)
    assert s.dtype == np.int8 and set(np.unique(s)) <= {-1, 1}
    np.testing.assert_array_equal(codes.signs_to_bits(s), bits)
    np.testing.assert_array_equal(codes.unpack_signs(codes.pack_signs(s)), s)
    np.testing.assert_array_equal(codes.pack_signs(s.astype(np.float32)), codes.pack_bits(bits))


@settings(max_examples=50)
@given(bit_matrices(), st.data())
def test_hamming_matches_definition(bits, data):
    other = data.draw(
        arrays(np.uint8, (data.draw(st.integers(0, 10)), bits.shape[1]), elements=st.integers(0, 1))
    )
    d = codes.hamming_distances(codes.pack_bits(bits), codes.pack_bits(other))
    ref = (bits[:, None, :] != other[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(d, ref)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="multiple of 8"):
        codes.check_n_bits(12)
    with pytest.raises(ValueError, match="positive"):
        codes.check_n_bits(0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        codes.pack_bits(np.full((2, 8), 2))
    with pytest.raises(ValueError, match="uint8"):
        codes.as_packed(np.zeros((2, 8), np.int32))
    with pytest.raises(ValueError, match="expected 8 bytes"):
        codes.as_packed(np.zeros((2, 4), np.uint8), n_bits=64)
    with pytest.raises(ValueError, match="-1 and \\+1"):
        codes.signs_to_bits(np.array([[0, 1]]))
    with pytest.raises(ValueError, match="widths differ"):
        codes.hamming_distances(np.zeros((1, 2), np.uint8), np.zeros((1, 3), np.uint8))
