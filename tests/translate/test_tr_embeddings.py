"""`translate/embeddings.py` details the golden cases do not show: reading answer bytes without parsing them."""

from __future__ import annotations

import base64
import json
import struct

import orjson
import pytest

from app.errors import GatewayError
from app.translate.embeddings import EmbedCall, EmbeddingPlan, float32_base64, read_batch, scan_batch, to_openai

CALL = EmbedCall("batchEmbedContents", {}, 2)
PLAN = EmbeddingPlan("m", ["a", "b"])


def test_a_pretty_printed_answer_is_scanned_and_its_arrays_copied_as_they_are() -> None:
    answer = {"embeddings": [{"values": [1e-05, -0.25]}, {"values": [3, 4.5E+2]}], "usageMetadata": {"promptTokenCount": 7}}
    data = orjson.dumps(answer, option=orjson.OPT_INDENT_2)
    result = read_batch(CALL, data)
    assert result.vectors is None and result.tokens == 7 and result.arrays is not None
    assert [json.loads(bytes(a)) for a in result.arrays] == [[1e-05, -0.25], [3, 450.0]]
    body = json.loads(to_openai(PLAN, [result]).body)  # the copied arrays are valid JSON in the answer
    assert [d["embedding"] for d in body["data"]] == [[1e-05, -0.25], [3, 450.0]]


@pytest.mark.parametrize(
    "data",
    [
        b'{"embeddings": [{"values": [1, "x"]}, {"values": [2]}]}',  # a string in an array
        b'{"embeddings": [{"values": [1]}, {"values": [[2]]}]}',  # a nested array
        b'{"embeddings": [{"values": [1]}]}',  # fewer vectors than inputs
        b'{"embeddings": [{"values": [1], "statistics": {"tokenCount": 1}}, {"values": [2], "statistics": {"tokenCount": 2}}]}',
        b'{"embeddings": [{"values" [1]}, {"values": [2]}]}',  # not JSON
        b'{"embeddings": [{"values": [1]}, {"values": [2]}], "usageMetadata": {"promptTokenCount": "3"}}',
    ],
)
def test_anything_unexpected_is_left_to_the_parser(data: bytes) -> None:
    assert scan_batch(data, 2) is None


def test_the_parser_reads_what_the_scanner_leaves() -> None:
    stats = b'{"embeddings": [{"values": [1], "statistics": {"tokenCount": 1}}, {"values": [2], "statistics": {"tokenCount": 2}}]}'
    result = read_batch(CALL, stats)
    assert result.vectors == [[1], [2]] and result.tokens == 3
    array_form = b'[{"embeddings": [{"values": [1]}, {"values": [2]}]}]'  # the form some Google front ends use
    assert read_batch(CALL, array_form).arrays == [b"[1]", b"[2]"]
    assert read_batch(EmbedCall("embedContent", {}, 1), b'[{"embedding": {"values": [1]}}]').vectors == [[1]]
    for broken in (b"not json", b'{"embeddings": [{"values": [1]}]}', b'"text"'):
        with pytest.raises(GatewayError) as caught:
            read_batch(CALL, broken)
        assert caught.value.status == 502 and caught.value.code == "upstream_bad_answer"


def test_base64_is_little_endian_float32() -> None:
    assert float32_base64([0.5, -1.25, 2.0]) == b"AAAAPwAAoL8AAABA"
    raw = base64.b64decode(float32_base64([0.1, -3.5e-8]))
    assert struct.unpack("<2f", raw) == struct.unpack("<2f", struct.pack("<2f", 0.1, -3.5e-8))


@pytest.mark.parametrize("reader", ["arrays_float32_base64_stdlib", "arrays_float32_base64_simdjson"])
def test_a_scanned_vector_that_is_not_numbers_is_a_502_in_base64(reader: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.translate import embeddings, float32

    monkeypatch.setattr(embeddings, "arrays_float32_base64", getattr(float32, reader))
    result = read_batch(CALL, b'{"embeddings": [{"values": [1, 2]}, {"values": [3, null]}]}')
    assert result.arrays is not None  # the scanner lets `null` through: the float32 reader refuses it
    with pytest.raises(GatewayError) as caught:
        to_openai(EmbeddingPlan("m", ["a", "b"], "base64"), [result])
    assert caught.value.status == 502 and caught.value.code == "upstream_bad_answer"
    assert "not a number" in caught.value.message
