"""The fake Gemini server: injected errors, connection faults, delays, client disconnects."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import orjson
import pytest

from fake_harness import Harness, parse_sse, user

FLASH = "gemini-2.0-flash"
STREAM_PATH = f"/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"
HEADERS = {"x-goog-api-key": "test-key"}


def fake_line(**directive: Any) -> str:
    return "#fake " + json.dumps(directive)


def stream_body(**directive: Any) -> dict[str, Any]:
    return {"contents": [user("one two three four five six seven eight nine\n" + fake_line(**directive))]}


def details(response: httpx.Response) -> dict[str, dict[str, Any]]:
    return {d["@type"].rsplit(".", 1)[-1]: d for d in response.json()["error"].get("details", [])}


def test_error_before_any_byte_429(fake: Harness) -> None:
    error = {"status": 429, "retry_delay": "7s", "quota_id": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}
    response = fake.post(FLASH, fake_line(error=error))
    assert response.status_code == 429
    body = response.json()["error"]
    assert body["status"] == "RESOURCE_EXHAUSTED" and body["message"].startswith("You exceeded your current quota")
    found = details(response)
    assert found["RetryInfo"]["retryDelay"] == "7s"
    violation = found["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == error["quota_id"] and violation["quotaDimensions"]["model"] == FLASH
    assert "Help" in found
    stream = fake.post(FLASH, fake_line(error=error), method="streamGenerateContent", query="?alt=sse")
    assert stream.status_code == 429 and stream.headers["content-type"].startswith("application/json")
    assert fake.stats()["errors_injected"] == 2


@pytest.mark.parametrize(
    ("status", "name", "start"),
    [(503, "UNAVAILABLE", "The model is overloaded"), (500, "INTERNAL", "An internal error"), (504, "DEADLINE_EXCEEDED", "Deadline")],
)
def test_server_errors(fake: Harness, status: int, name: str, start: str) -> None:
    response = fake.post(FLASH, fake_line(error={"status": status}))
    assert response.status_code == status
    assert response.json()["error"]["status"] == name and response.json()["error"]["message"].startswith(start)


def test_custom_error_fields(fake: Harness) -> None:
    error = {"status": 400, "message": "User location is not supported.", "status_name": "FAILED_PRECONDITION", "reason": "LOCATION"}
    response = fake.post(FLASH, fake_line(error=error))
    assert response.status_code == 400
    body = response.json()["error"]
    assert body["status"] == "FAILED_PRECONDITION" and body["message"] == "User location is not supported."
    assert details(response)["ErrorInfo"]["reason"] == "LOCATION"
    vertex = fake.vertex_post(FLASH, fake_line(error={"status": 429}), fake.token())
    assert vertex.status_code == 429 and vertex.json()["error"]["message"].startswith("Resource exhausted.")


def test_error_mid_stream_sse(fake: Harness) -> None:
    response = fake.http.post(STREAM_PATH, json=stream_body(error={"status": 500, "after_chunks": 1}), headers=HEADERS)
    assert response.status_code == 200
    events = parse_sse(response.content)
    assert "candidates" in events[0] and events[1]["error"]["code"] == 500 and len(events) == 2
    stats = fake.stats()
    assert stats["errors_injected"] == 1 and stats["streams_completed"] == 0
    assert fake.requests()[-1]["outcome"] == "error_mid_stream"


def test_error_mid_stream_raw_json(fake: Harness) -> None:
    error = {"status": 503, "after_chunks": 2, "raw": True}
    raw = fake.http.post(STREAM_PATH, json=stream_body(error=error), headers=HEADERS).content
    head, _, tail = raw.rpartition(b"\r\n\r\n")
    assert len(parse_sse(head + b"\r\n\r\n")) == 2
    assert tail.startswith(b"{\n") and tail.count(b"\n") > 3  # pretty-printed, no `data:` prefix
    assert orjson.loads(tail)["error"]["status"] == "UNAVAILABLE"


def test_error_mid_stream_json_array(fake: Harness) -> None:
    path = f"/v1beta/models/{FLASH}:streamGenerateContent"
    response = fake.http.post(path, json=stream_body(error={"status": 500, "after_chunks": 1}), headers=HEADERS)
    items = orjson.loads(response.content)
    assert "candidates" in items[0] and items[-1]["error"]["code"] == 500


def test_after_chunks_on_a_non_stream_call_is_plain_http_error(fake: Harness) -> None:
    assert fake.post(FLASH, fake_line(error={"status": 500, "after_chunks": 3})).status_code == 500


def test_fail_times_then_succeed(fake: Harness) -> None:
    prompt = fake_line(fail_times=2, fail_key="retry-a", error={"status": 503})
    assert [fake.post(FLASH, prompt).status_code for _ in range(4)] == [503, 503, 200, 200]
    other = fake_line(fail_times=1, fail_key="retry-b")
    assert [fake.post(FLASH, other).status_code for _ in range(2)] == [503, 200]
    fake.http.post("/_fake/reset")
    assert fake.post(FLASH, prompt).status_code == 503


def test_fail_api_keys_and_projects(fake: Harness) -> None:
    prompt = fake_line(fail_api_keys={"test-key": {"status": 429, "retry_delay": "2s"}})
    assert fake.post(FLASH, prompt).status_code == 429
    assert fake.post(FLASH, prompt, key="second-key").status_code == 200
    token = fake.token()
    prompt = fake_line(fail_projects={"bad-project": {"status": 403}})
    assert fake.vertex_post(FLASH, prompt, token, project="bad-project").status_code == 403
    assert fake.vertex_post(FLASH, prompt, token, project="good-project").status_code == 200


def test_reset_before_response(fake: Harness) -> None:
    with httpx.Client(base_url=fake.url, headers=HEADERS) as client, pytest.raises(httpx.RemoteProtocolError):
        client.post(STREAM_PATH, json=stream_body(reset_before_response=True))
    assert fake.stats()["connection_resets"] == 1


def test_reset_after_chunks(fake: Harness) -> None:
    received = b""
    with httpx.Client(base_url=fake.url, headers=HEADERS) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            with client.stream("POST", STREAM_PATH, json=stream_body(reset_after_chunks=1)) as response:
                for data in response.iter_bytes():
                    received += data
    assert received.count(b"data: ") == 1
    assert fake.stats()["connection_resets"] == 1 and fake.stats()["streams_completed"] == 0


def test_stall_times_out_by_dropping_the_connection(fake: Harness) -> None:
    fake.config(stall_timeout_s=0.3)
    started = time.monotonic()
    with httpx.Client(base_url=fake.url, headers=HEADERS) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            with client.stream("POST", STREAM_PATH, json=stream_body(stall_after_chunks=2)) as response:
                for _ in response.iter_bytes():
                    pass
    assert time.monotonic() - started >= 0.3
    assert fake.stats()["stalls"] == 1


def test_client_going_away_during_a_stall_is_detected(fake: Harness) -> None:
    client = httpx.Client(base_url=fake.url, headers=HEADERS)
    with client.stream("POST", STREAM_PATH, json=stream_body(stall_after_chunks=1)) as response:
        received = response.iter_bytes()  # keep it: a dropped iterator closes the response
        assert next(received).startswith(b"data: ")
        assert fake.wait_for(lambda s: s["stalls"] == 1)["open_connections"] >= 1  # (earlier tests' may linger)
    client.close()
    stats = fake.wait_for(lambda s: s["streams_aborted_by_client"] == 1)
    assert stats["streams_aborted_by_client"] == 1
    assert fake.wait_for(lambda s: s["open_connections"] == 0)["open_connections"] == 0
    assert fake.requests()[-1]["outcome"] == "client_gone"


def test_client_going_away_during_first_byte_delay(fake: Harness) -> None:
    with httpx.Client(base_url=fake.url, headers=HEADERS, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(STREAM_PATH, json=stream_body(first_byte_delay_ms=10_000))
        with pytest.raises(httpx.ReadTimeout):
            client.post(f"/v1beta/models/{FLASH}:generateContent", json=stream_body(first_byte_delay_ms=10_000))
    stats = fake.wait_for(lambda s: s["requests_aborted_by_client"] == 1 and s["streams_aborted_by_client"] == 1)
    assert stats["streams_aborted_by_client"] == 1 and stats["requests_aborted_by_client"] == 1
    assert stats["streams_started"] == 0


def test_client_going_away_between_chunks(fake: Harness) -> None:
    client = httpx.Client(base_url=fake.url, headers=HEADERS)
    with client.stream("POST", STREAM_PATH, json=stream_body(chunk_delay_ms=5_000)) as response:
        received = response.iter_bytes()
        assert next(received).startswith(b"data: ")
        assert fake.stats()["streams_aborted_by_client"] == 0
    client.close()
    assert fake.wait_for(lambda s: s["streams_aborted_by_client"] == 1)["streams_aborted_by_client"] == 1


def test_first_byte_delay(fake: Harness) -> None:
    response = fake.post(FLASH, fake_line(first_byte_delay_ms=200))
    assert response.status_code == 200 and response.elapsed.total_seconds() >= 0.19
