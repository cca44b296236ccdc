"""Stored responses of the Responses API (`store`, `previous_response_id`, GET / DELETE / input_items).

`ResponseStore` is the interface a store implements: the team gateway's
database (app/team/responses_db.py, `responses.store: database`, the default)
or `MemoryResponseStore`, the bounded in-process store (`responses.store:
memory`, and the database store's fallback while the database is away): least recently used first out, bounded both in number of
responses (`responses.store_size`) and in bytes (`responses.store_max_bytes`),
each record kept as one JSON document (as a database would keep it), so what
comes back is a copy. Nothing else keeps responses: `store: false` keeps
nothing here.

Every record has an owner (`owner_of(principal)`): the client key that made
it, a digest of a bring-your-own-key caller's Google key, or `anonymous`
when the gateway checks no keys. A key sees and deletes only its own
responses; another key's id is answered as unknown.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from app.pipeline.context import Principal


@dataclass(frozen=True)
class StoredResponse:
    id: str
    owner: str
    response: dict[str, Any]  # the Response object as it ended (completed or incomplete)
    input_items: list[dict[str, Any]]  # the request's own input items, with ids (not the earlier ones of the chain)
    previous_response_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # room for what a database may want (model, usage, ...)
    response_json: bytes | None = field(default=None, compare=False, repr=False)  # `response` serialized already

    def to_json(self) -> bytes:
        """The record as one JSON document (not `dataclasses.asdict`, which deep-copies the whole answer first)."""
        response = self.response if self.response_json is None else orjson.Fragment(self.response_json)
        return orjson.dumps(
            {"id": self.id, "owner": self.owner, "response": response, "input_items": self.input_items,
             "previous_response_id": self.previous_response_id, "extra": self.extra}  # fmt: skip
        )

    def items(self) -> list[dict[str, Any]]:
        """This response's part of a conversation: its input, then its output."""
        return [*self.input_items, *self.response.get("output", ())]


class ResponseStore(Protocol):
    async def put(self, record: StoredResponse) -> None: ...

    async def get(self, response_id: str, owner: str) -> StoredResponse | None: ...

    async def delete(self, response_id: str, owner: str) -> bool: ...


def owner_of(principal: Principal) -> str:
    """Whose responses these are: a client key, a BYOK caller (by a digest of their key), or anyone."""
    if principal.google_key is not None:
        return "byok:" + hashlib.sha256(principal.google_key.encode()).hexdigest()[:32]
    if principal.key_id is not None:
        return "key:" + principal.key_id
    if principal.name is not None:
        return "name:" + principal.name
    return "anonymous"


class MemoryResponseStore:
    """In-process LRU of stored responses, bounded in count and in bytes (either 0 disables storing)."""

    def __init__(self, max_items: int = 10_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, tuple[str, bytes]] = OrderedDict()  # id -> (owner, JSON)
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def put(self, record: StoredResponse) -> None:
        if self.max_items <= 0 or self.max_bytes <= 0:
            return
        data = record.to_json()
        if len(data) > self.max_bytes:
            return  # larger than the whole store: not kept (previous_response_id will not find it)
        self._remove(record.id)
        self._data[record.id] = (record.owner, data)
        self._bytes += len(data)
        while len(self._data) > self.max_items or self._bytes > self.max_bytes:
            _, (_, old) = self._data.popitem(last=False)
            self._bytes -= len(old)

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        entry = self._data.get(response_id)
        if entry is None or entry[0] != owner:
            return None
        self._data.move_to_end(response_id)
        return StoredResponse(**orjson.loads(entry[1]))

    async def delete(self, response_id: str, owner: str) -> bool:
        entry = self._data.get(response_id)
        if entry is None or entry[0] != owner:
            return False
        self._remove(response_id)
        return True

    def _remove(self, response_id: str) -> None:
        entry = self._data.pop(response_id, None)
        if entry is not None:
            self._bytes -= len(entry[1])


class ResponseGone(LookupError):
    """A response of a `previous_response_id` chain is not there (deleted, expired, or another key's)."""

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self.response_id = response_id


async def conversation(store: ResponseStore, response_id: str, owner: str, max_depth: int = 10_000) -> list[dict[str, Any]]:
    """The items of a `previous_response_id` chain, oldest first. Raises `ResponseGone` naming the first response
    of the chain found missing (the one asked for, or an earlier one it continues)."""
    records: list[StoredResponse] = []
    seen: set[str] = set()
    next_id: str | None = response_id
    while next_id is not None:
        if next_id in seen or len(records) >= max_depth:
            break
        seen.add(next_id)
        record = await store.get(next_id, owner)
        if record is None:
            raise ResponseGone(next_id)
        records.append(record)
        next_id = record.previous_response_id
    return [item for record in reversed(records) for item in record.items()]
