"""`translate/float32.py`: OpenAI's base64 embeddings, bit for bit, from either reader.

The oracle is `array.array("f")`, which stores a double as a C cast does (IEEE round to nearest,
ties to even, +-inf beyond float32's range): the float32 of the value a JSON parser reads.
"""

from __future__ import annotations

import array
import base64
import math
import sys

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.translate import float32
from app.translate.float32 import arrays_float32_base64_stdlib, float32_base64

# The test extra installs the speedups, so both readers are compared here.
assert float32.arrays_float32_base64_simdjson is not None, "pip install -e '.[test]' installs the speedups extra"
READERS = {"stdlib": arrays_float32_base64_stdlib, "simdjson": float32.arrays_float32_base64_simdjson}


def oracle(values: list[float]) -> bytes:
    packed = array.array("f", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes())


# (the JSON text, the float32 bytes OpenAI's encoding gives, little-endian, hex)
EDGES = [
    (b"-0.0", "00000080"),
    (b"0", "00000000"),
    (b"-0", "00000000"),  # an integer zero has no sign
    (b"1e-46", "00000000"),  # below float32's smallest subnormal: zero, signed
    (b"-1e-46", "00000080"),
    (b"1e-40", "c2160100"),  # subnormal
    (b"1.401298464324817e-45", "01000000"),  # the smallest subnormal
    (b"0.1", "cdcccc3d"),  # rounds
    (b"16777217", "0000804b"),  # 2**24 + 1: halfway, ties to even (2**24)
    (b"16777219", "0200804b"),  # 2**24 + 3: halfway, ties to even (2**24 + 4)
    # exactly 1 + 2**-24 as a double (the nearest to these 26 digits), so a tie -> 1.0, although the
    # decimal itself lies above the float32 halfway point: the value is the double a parser reads
    (b"1.0000000596046447753906251", "0000803f"),
    (b"3.4028234663852886e38", "ffff7f7f"),  # float32's largest
    (b"3.4028235e38", "ffff7f7f"),  # above it but below the halfway point to 2**128: rounds down
    (b"3.40282357e38", "0000807f"),  # past the halfway point: +inf
    (b"-1e39", "000080ff"),  # -inf
    (b"1.7976931348623157e308", "0000807f"),  # the largest double
    (b"18446744073709551615", "0000805f"),  # a big integer
    (b"4.5E+2", "0000e143"),
]


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize(("text", "expected"), EDGES, ids=[t.decode() for t, _ in EDGES])
def test_edge_values_give_openais_exact_bytes(reader, text: bytes, expected: str) -> None:
    assert base64.b64decode(reader([b"[" + text + b"]"])[0]).hex() == expected
    assert base64.b64decode(float32_base64([orjson.loads(text)])).hex() == expected
    assert oracle([orjson.loads(text)]) == base64.b64encode(bytes.fromhex(expected))


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
def test_each_array_is_its_own_string_whatever_its_length(reader) -> None:
    arrays = [b"[]", b"[0.5]", b"[\n  1,\n  -1.25 ,2.0\n]", b"[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]"]
    assert reader(arrays) == [oracle(orjson.loads(a)) for a in arrays]
    assert reader(arrays)[2] == b"AACAPwAAoL8AAABA"
    assert reader([memoryview(b"xx[1]yy")[2:5]]) == [oracle([1.0])]  # views into the answer, as scan_batch gives
    assert reader([]) == []


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize("array_text", [b"[null]", b"[1,]", b"[NaN]", b"[Infinity]", b"[1e400]", b"[1 2]", b"[--1]"])
def test_what_is_not_a_number_is_a_value_error(reader, array_text: bytes) -> None:
    with pytest.raises(ValueError):
        reader([b"[1]", array_text])


def json_number(text: str) -> float:
    """What JSON makes of a number: an integer literal is an integer (so `-0` is 0, not -0.0)."""
    return float(int(text)) if text.lstrip("-").isdigit() else float(text)


finite_doubles = st.floats(allow_nan=False, allow_infinity=False)
float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                finite_doubles.map(repr),  # any double, shortest repr
                float32s.map(lambda x: f"{x:.9g}"),  # float32 values as Google prints them
                finite_doubles.map(lambda x: f"{x:.17e}"),
                st.integers(min_value=-(2**63), max_value=2**64 - 1).map(str),
            ),
            max_size=40,
        ),
        max_size=6,
    )
)
def test_both_readers_agree_with_the_oracle(vectors: list[list[str]]) -> None:
    arrays = [("[" + ", ".join(v) + "]").encode() for v in vectors]
    expected = [oracle([json_number(x) for x in v]) for v in vectors]
    for reader in READERS.values():
        assert reader(arrays) == expected
    assert [float32_base64(orjson.loads(a)) for a in arrays] == expected


def test_a_vector_of_python_floats_beyond_float32_packs_as_inf() -> None:
    assert float32_base64([1.0, -math.ldexp(1.0, 200), 2.0]) == oracle([1.0, -math.inf, 2.0])
