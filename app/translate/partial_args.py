"""Gemini streamed function-call arguments (`partialArgs`) -> JSON text deltas.

With `streamFunctionCallArguments`, Gemini sends a call's arguments as pieces
addressed by JSON path: `{"jsonPath": "$.location", "stringValue": "Bos",
"willContinue": true}`, then `"ton"`, then `{"jsonPath": "$.unit", ...}`.
String pieces for one path are concatenated; numbers, booleans and nulls come
whole. OpenAI clients want `arguments` as a stream of JSON *text* fragments
whose concatenation parses, so `ArgumentsWriter` writes that text as the
pieces arrive, opening and closing objects and arrays as the path moves.
Pieces arrive in document order (Gemini generates left to right).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]|\[\"((?:[^\"\\]|\\.)*)\"\]")
_ESCAPE = re.compile(r'\\(.)|"', re.DOTALL)


def _unquote(body: str) -> str:
    """The name inside `['...']` / `["..."]`, with RFC 9535 escapes (`\\'`, `\\n`, `\\u00e9`, ...) undone."""
    if "\\" not in body:
        return body
    # Rewrite as the body of a JSON string (`\\'` -> `'`, a bare `"` escaped), then let JSON decode it.
    text = _ESCAPE.sub(lambda m: '\\"' if m.group(0) == '"' else ("'" if m.group(1) == "'" else m.group(0)), body)
    try:
        name: str = orjson.loads(f'"{text}"')  # a JSON string literal decodes to a str
        return name
    except orjson.JSONDecodeError:
        raise ValueError(f"bad escape in JSON path name {body!r}") from None


def parse_json_path(path: str) -> list[str | int]:
    """`$.a.b[0]['c d']` -> `['a', 'b', 0, 'c d']`."""
    if not path.startswith("$"):
        raise ValueError(f"not a JSON path: {path!r}")
    out: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            raise ValueError(f"cannot parse JSON path {path!r} at {pos}")
        name, index, quoted1, quoted2 = m.groups()
        if index is not None:
            out.append(int(index))
        else:
            out.append(name if name is not None else _unquote(quoted1 if quoted1 is not None else quoted2))
        pos = m.end()
    return out


def _scalar(arg: Mapping[str, Any]) -> str:
    if "numberValue" in arg:
        n = arg["numberValue"]
        return str(int(n)) if isinstance(n, float) and n.is_integer() else orjson.dumps(n).decode()
    if "boolValue" in arg:
        return "true" if arg["boolValue"] else "false"
    return "null"


class ArgumentsWriter:
    """Incremental JSON writer for one function call's `partialArgs`."""

    def __init__(self) -> None:
        self._path: list[str | int] = []  # path of the value written last
        self._counts: list[int] = []  # items written in each open container (root first)
        self._kinds: list[str] = []  # "{" or "[" for each open container
        self._in_string = False

    def _open(self, key: str | int, level: int) -> str:
        """Separator and key for a new item in the container at `level`."""
        out = "," if self._counts[level] else ""
        self._counts[level] += 1
        if self._kinds[level] == "{":
            out += orjson.dumps(str(key)).decode() + ":"
        return out

    def feed(self, args: Iterable[Mapping[str, Any]]) -> str:
        out: list[str] = []
        for arg in args:
            path = parse_json_path(arg.get("jsonPath", "$"))
            if not path:
                continue
            is_string = "stringValue" in arg
            if self._in_string and path == self._path and is_string:
                out.append(orjson.dumps(arg["stringValue"]).decode()[1:-1])
                if not arg.get("willContinue"):
                    out.append('"')
                    self._in_string = False
                continue
            if self._in_string:
                out.append('"')
                self._in_string = False
            if not self._kinds:
                self._kinds.append("{" if isinstance(path[0], str) else "[")
                self._counts.append(0)
                out.append(self._kinds[0])
            # Keep the containers shared with the previous path, close the rest.
            shared = 0
            limit = min(len(path), len(self._path)) - 1
            while shared < limit and path[shared] == self._path[shared]:
                shared += 1
            while len(self._kinds) > shared + 1:
                out.append("}" if self._kinds.pop() == "{" else "]")
                self._counts.pop()
            for level in range(shared, len(path) - 1):
                out.append(self._open(path[level], level))
                kind = "{" if isinstance(path[level + 1], str) else "["
                self._kinds.append(kind)
                self._counts.append(0)
                out.append(kind)
            out.append(self._open(path[-1], len(path) - 1))
            if is_string:
                out.append('"' + orjson.dumps(arg["stringValue"]).decode()[1:-1])
                if arg.get("willContinue"):
                    self._in_string = True
                else:
                    out.append('"')
            else:
                out.append(_scalar(arg))
            self._path = path
        return "".join(out)

    def close(self) -> str:
        out = '"' if self._in_string else ""
        self._in_string = False
        if not self._kinds:
            return out + "{}"
        while self._kinds:
            out += "}" if self._kinds.pop() == "{" else "]"
        self._counts.clear()
        return out
