"""Embedding vectors -> OpenAI's `encoding_format: "base64"`: little-endian float32, base64 (docs/parameters.md#embeddings).

Owns the one conversion of the embeddings endpoint that costs real CPU: Google sends only decimal
text (100 x 3072 numbers per `batchEmbedContents` answer), OpenAI's base64 is the float32 bytes of
each value. Every value becomes the IEEE float32 nearest to the decimal number (the decimal is read
as the nearest double, then rounded to nearest float32, ties to even, exactly as a C cast, numpy's
`astype('<f4')` or `struct.pack('<f')` do it): -0.0 stays -0.0, tiny values go subnormal or to a
signed zero, and a finite number beyond float32's range becomes +-inf (which `struct` alone refuses).

* `float32_base64(vector)`: one parsed vector (a list of numbers);
* `arrays_float32_base64(arrays)`: JSON number arrays as Google wrote them (`scan_batch` in
  translate/embeddings.py), one base64 string each. With the optional `speedups` extra
  (pysimdjson + numpy + pybase64) each array is parsed by simdjson where it lies in Google's
  answer, its numbers straight into a buffer of doubles, rounded to float32 by numpy, never
  becoming Python floats, and the bytes are encoded by pybase64 (SIMD; the standard library's
  encoder is a tenth as fast): less than half the CPU of orjson's list of floats packed by `struct`
  and `base64` (the pure-Python path, used when the extra is not installed; both give the same
  bytes, tests/translate/test_tr_float32.py). A number the reader refuses raises `ValueError`.
"""

from __future__ import annotations

import base64
import functools
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import orjson


def _base64_encoder() -> Callable[[Any], bytes]:
    """pybase64's encoder when the `speedups` extra is installed (the same bytes, ten times faster)."""
    try:
        import pybase64
    except ImportError:  # pragma: no cover - the tests install the extra
        return base64.b64encode
    return pybase64.b64encode


b64encode = _base64_encoder()

_FLOAT32 = struct.Struct("<f")
_INF32 = {True: _FLOAT32.pack(-math.inf), False: _FLOAT32.pack(math.inf)}


@functools.lru_cache(maxsize=64)
def _float32s(count: int) -> struct.Struct:
    return struct.Struct(f"<{count}f")


def _pack(vector: Sequence[float]) -> bytes:
    """Little-endian float32 of each value; beyond float32's range, +-inf (struct raises for those)."""
    try:
        return _float32s(len(vector)).pack(*vector)
    except OverflowError:
        out = bytearray()
        for value in vector:
            try:
                out += _FLOAT32.pack(value)
            except OverflowError:
                out += _INF32[value < 0]
        return bytes(out)


def float32_base64(vector: Sequence[float]) -> bytes:
    """The vector as little-endian float32, base64: exactly what OpenAI sends for `encoding_format: base64`."""
    return b64encode(_pack(vector))


def arrays_float32_base64_stdlib(arrays: Sequence[bytes | memoryview]) -> list[bytes]:
    """JSON number arrays -> base64 float32 each: orjson's floats packed by `struct`."""
    out = []
    for array in arrays:
        try:
            out.append(float32_base64(orjson.loads(array)))
        except (orjson.JSONDecodeError, struct.error) as exc:  # not JSON; null in an array
            raise ValueError(str(exc)) from None
    return out


def _simdjson_reader() -> Callable[[Sequence[bytes | memoryview]], list[bytes]] | None:
    """The simdjson + numpy reader, when the `speedups` extra is installed."""
    try:
        import numpy as np
        import simdjson
    except ImportError:
        return None
    # One parser, reused: simdjson keeps its buffers between documents. A parser serves one
    # document at a time; the function below runs to completion without yielding (the event
    # loop's thread), and lets go of the document before it returns.
    parser = simdjson.Parser()
    float64, float32 = np.dtype("<f8"), np.dtype("<f4")

    def read(arrays: Sequence[bytes | memoryview]) -> list[bytes]:
        """JSON number arrays -> base64 float32 each: simdjson parses each array where it lies (no
        copy of the answer), its numbers come out as one buffer of doubles, rounded to float32 by numpy."""
        out = []
        for array in arrays:
            try:
                doc: Any = parser.parse(array)
                try:
                    doubles = doc.as_buffer(of_type="d")
                finally:
                    del doc
            except (TypeError, ValueError) as exc:  # an element that is not a number; not JSON
                raise ValueError(str(exc)) from None
            with np.errstate(over="ignore"):  # beyond float32's range: inf, as a C cast
                out.append(b64encode(np.frombuffer(doubles, dtype=float64).astype(float32)))
        return out

    return read


arrays_float32_base64_simdjson = _simdjson_reader()
# The reader used: simdjson's when installed, else the standard library's.
arrays_float32_base64 = arrays_float32_base64_simdjson or arrays_float32_base64_stdlib
