"""What every golden-file runner shares: finding cases, reading and (with UPDATE_GOLDEN=1) rewriting expected files.

A runner (test_tr_golden.py for chat, and one per endpoint) owns its file
names and how its translator is called; files are compared as parsed JSON,
never as strings. `UPDATE_GOLDEN=1 pytest <runner>` rewrites the expected
files before comparing (review the diff!). SSE goldens are compared event by
event; each runner passes its own parser and renderer (chat's events are
bare `data:` lines, the Responses API's carry `event:` lines).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.errors import GatewayError

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def cases(root: Path, *names: str) -> list[Path]:
    """The case folders under `root` holding at least one of `names`."""
    return sorted(d for d in root.iterdir() if d.is_dir() and any((d / n).exists() for n in names))


def ids(found: list[Path]) -> list[str]:
    return [c.name for c in found]


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def dump(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def meta(case: Path) -> dict[str, Any]:
    """The case's `meta.json` (model, backend, look-ups, ...), or nothing."""
    path = case / "meta.json"
    return load(path) if path.exists() else {}


def error_summary(exc: GatewayError) -> dict[str, Any]:
    return {"status": exc.status, **exc.body()}


def check_or_update(
    path: Path, actual: Any, *,
    sse: tuple[Callable[[str], list[Any]], Callable[[list[Any]], str]] | None = None,
) -> None:
    """Compare with the golden file (parsed); with UPDATE_GOLDEN=1 rewrite it first. `sse`: (parse, render)."""
    if UPDATE:
        if sse is not None:
            path.write_text(sse[1](actual), encoding="utf-8")
        else:
            dump(path, actual)
    if not path.exists():
        pytest.fail(f"missing golden file {path.parent.name}/{path.name}; create it with UPDATE_GOLDEN=1 and review it")
    if sse is None:
        assert actual == load(path)
        return
    expected = sse[0](path.read_text(encoding="utf-8"))
    assert len(actual) == len(expected), f"{path.name}: {len(actual)} events, expected {len(expected)}"
    for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got == want, f"{path.name}: event {i} differs"


def check_optional(path: Path, actual: dict[str, Any]) -> None:
    """A golden file that exists only when `actual` is non-empty."""
    if UPDATE:
        if actual:
            dump(path, actual)
        elif path.exists():
            path.unlink()
    expected = load(path) if path.exists() else {}
    assert actual == expected, f"{path.name} differs"


def check_call_folders(cases: list[Path], known: set[str]) -> None:
    """The layout of the endpoints whose request becomes several Gemini calls (embeddings, images): each case has
    its `openai_request.json` and either `gemini_calls.json` or `error.json`; with `gemini_responses.json`, either
    `openai_response.json` or `openai_error.json`; nothing else but `known` files."""
    assert len(cases) >= 20
    for case in cases:
        names = {p.name for p in case.iterdir()}
        assert names <= known, f"{case.name}: unknown files {names - known}"
        assert "openai_request.json" in names, case.name
        if not UPDATE:
            assert ("gemini_calls.json" in names) != ("error.json" in names), case.name
            if "gemini_responses.json" in names:
                assert ("openai_response.json" in names) != ("openai_error.json" in names), case.name
