"""Where thought signatures are remembered between requests (policy: translate/signatures.py).

`SignatureStore` is the interface a shared store implements (Redis, for
several replicas: gateway/shared.py `RedisSignatureStore`);
`MemorySignatureStore` is the bounded in-process LRU used by default. Keys are tool-call ids (`call_...`) or text keys; values are
the signatures exactly as Google sent them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Protocol


class SignatureStore(Protocol):
    async def get_many(self, keys: Iterable[str]) -> dict[str, str]: ...

    async def put_many(self, items: Mapping[str, str]) -> None: ...


class MemorySignatureStore:
    """Least-recently-used map with a fixed capacity (0 disables remembering)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._data: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    async def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        found = {}
        for key in keys:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                found[key] = value
        return found

    async def put_many(self, items: Mapping[str, str]) -> None:
        if self.capacity <= 0:
            return
        for key, value in items.items():
            self._data[key] = value
            self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)
