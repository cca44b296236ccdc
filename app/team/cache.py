"""The database's keys held in memory for the request path, re-read when they change.

The request path never waits for the database when it knows the key: it finds
the principal in a dict (pipeline/auth.py). A background task asks the
database every `storage.keys_refresh_seconds` (2 s) for `keys_state.version`,
one tiny query, and re-reads the keys and teams only when it moved, so a key
revoked, rotated or changed on any replica stops working everywhere within
that interval plus one query (well inside 5 s). A key the cache does not know
makes the request wait for one fresh look (`refresh_now`): concurrent misses
share one query, so a flood of wrong keys costs the database at most one query
at a time per process.

While the database cannot be reached, the keys last read stay in force (the
log says so once, and again when it is back; `gemini_proxy_storage_up{backend="database"}`
is 0 meanwhile).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from app.pipeline.auth import ClientAuth, limits_of
from app.pipeline.context import Limits, Principal
from app.team.keys import KeyRecord
from app.team.store import KeyStore, Snapshot

log = logging.getLogger("gemini_proxy.keys")


def principal_of(record: KeyRecord, team_limits: dict[str, Limits]) -> Principal:
    return Principal.of_key(
        record.id, record.name, record.team, None if record.models == ["*"] else record.models,
        limits_of(record.limits), team_limits.get(record.team, Limits()) if record.team else Limits(),
        record.expires_at.timestamp() if record.expires_at is not None else None,
    )


class KeyCache:
    def __init__(
        self, store: KeyStore, auth: ClientAuth, interval: float, on_health: Callable[[bool], None] | None = None
    ) -> None:
        self.store = store
        self.auth = auth
        self.interval = interval
        self.on_health = on_health  # told whether the database answers (the storage_up metric)
        self.version: int | None = None
        self.healthy = True
        self._task: asyncio.Task[None] | None = None
        self._inflight: tuple[int, asyncio.Task[None]] | None = None
        self._started = 0  # refreshes started so far

    async def start(self) -> None:
        await self._refresh()  # the first read must work: a gateway that cannot read its keys does not start
        if self.on_health is not None:
            self.on_health(True)
        self.auth.refresh = self.refresh_now
        self._task = asyncio.create_task(self._poll(), name="keys-refresh")

    async def stop(self) -> None:
        self.auth.refresh = None
        tasks = [t for t in (self._task, self._inflight[1] if self._inflight else None) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._inflight = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh_now()
            except Exception:
                pass  # logged in _refresh_logged

    async def refresh_now(self) -> None:
        """Return once a look at the database that started after this call has ended (shared by concurrent callers)."""
        arrived = self._started
        while True:
            inflight = self._inflight
            if inflight is None:
                self._started += 1
                task = asyncio.create_task(self._refresh_logged())
                self._inflight = inflight = (self._started, task)
                task.add_done_callback(functools.partial(self._done, inflight))
            number, task = inflight
            await asyncio.shield(task)
            if number > arrived:
                return

    def _done(self, inflight: tuple[int, asyncio.Task[None]], _task: object) -> None:
        if self._inflight is inflight:
            self._inflight = None

    async def _refresh_logged(self) -> None:
        try:
            await self._refresh()
        except Exception as exc:
            if self.healthy:
                log.warning("cannot read the keys from the database (%s); the keys read last stay in force",
                            type(exc).__name__)
                self._health(False)
            return
        if not self.healthy:
            log.info("the database answers again; keys are read from it again")
            self._health(True)

    def _health(self, up: bool) -> None:
        self.healthy = up
        if self.on_health is not None:
            self.on_health(up)

    async def _refresh(self) -> None:
        version = await self.store.version()
        if version == self.version:
            return
        self.apply(await self.store.snapshot())

    def apply(self, snapshot: Snapshot) -> None:
        team_limits = {name: limits_of(limits) for name, limits in snapshot.teams.items()}
        keys = {bytes.fromhex(r.digest): principal_of(r, team_limits) for r in snapshot.keys}
        self.auth.set_database_keys(keys, snapshot.any_key, team_limits)
        self.version = snapshot.version
