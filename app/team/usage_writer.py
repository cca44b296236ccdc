"""Usage records off the request path: a bounded queue, one writer task, a spool file for outages.

`add()` is all a request pays: a deque append. The writer task takes up to
`storage.usage_batch_size` records every `storage.usage_flush_seconds` (sooner
when a full batch is waiting) and writes them in one transaction
(app/team/usage_store.py). When the database cannot be reached, the batch is
appended to this process's spool file (JSON lines, fsync'd, in
`storage.usage_spool`), the log says so once and `gemini_proxy_storage_up{backend="database"}`
goes to 0; every cycle tries again, and once the database answers the spool is
written back, oldest first, before newer records, and deleted. Replays are
idempotent (records have their own ids), so a crash during one counts nothing
twice. Any failure of a write is an outage (spool, retry), whether the database
is unreachable, read-only after a failover, out of disk or locked, and a write
gets `storage.usage_write_timeout` seconds; only a record the database can never
take (`RecordRefused`, a DataError or an IntegrityError) is dropped, alone and
logged (docs/team.md#usage-records). A process holds an exclusive `flock` on its spool file while it lives;
the spool file of a process that died (its lock is free) is adopted and written
back by the next process that looks (at start, then every cycle while it has
work). `gemini_proxy_usage_records_pending` = records queued + spooled.

At shutdown (`stop`), the queue is written (or spooled, when the database is
down): SIGTERM loses nothing; SIGKILL loses what was queued (at most one
flush interval). A full queue (`storage.usage_queue_size`) spills straight to
the spool file. Retention: every `storage.usage_prune_seconds` (and soon after
start) the rows older than `storage.usage_retention_days` are deleted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import orjson
from sqlalchemy.exc import DataError, IntegrityError

from app.team.usage_store import Record, RecordRefused, UsageStore, as_dict, from_dict

log = logging.getLogger("gemini_proxy.usage")

PRUNE_FIRST_AFTER = 5.0  # seconds after start


def refused(exc: BaseException) -> bool:
    """Whether a failed write means the record itself can never be stored (drop it), not an outage (spool it)."""
    return isinstance(exc, (RecordRefused, DataError, IntegrityError))


class SpoolFile:
    """One JSON-lines file of records, locked by this process while it is open."""

    def __init__(self, path: Path, fd: int, lines: int = 0) -> None:
        self.path = path
        self.fd = fd
        self.lines = lines

    @classmethod
    def create(cls, directory: Path) -> SpoolFile:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"usage-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd)

    @classmethod
    def adopt(cls, path: Path) -> SpoolFile | None:
        """Another process's file, if that process is gone (its lock is free)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        if not path.exists():  # removed by its previous adopter between listing and locking
            os.close(fd)
            return None
        spool = cls(path, fd)
        spool.lines = spool.count()
        return spool

    def append(self, records: list[Record]) -> None:
        data = b"".join(orjson.dumps(as_dict(r)) + b"\n" for r in records)
        os.write(self.fd, data)
        os.fsync(self.fd)
        self.lines += len(records)

    def count(self) -> int:
        """The records in the file (a line torn by a crash is not one)."""
        n = 0
        with open(self.path, "rb") as f:
            while (records := self.read_some(f, 1000)) is not None:
                n += len(records)
        return n

    @staticmethod
    def read_some(f: BinaryIO, limit: int) -> list[Record] | None:
        """Up to `limit` records from an open spool file; None at its end."""
        out: list[Record] = []
        for _ in range(limit):
            line = f.readline()
            if not line:
                return out or None
            try:
                fields = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line torn by a crash mid-write
            if isinstance(fields, dict):  # else no record at all (a file edited by hand)
                out.append(from_dict(fields))
        return out

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


class UsageWriter:
    def __init__(
        self, store: UsageStore, spool_dir: Path, *, batch_size: int = 500, interval: float = 1.0,
        queue_size: int = 100_000, retention_days: int = 90, prune_interval: float = 3600.0,
        on_health: Callable[[bool], None] | None = None, on_pending: Callable[[int], None] | None = None,
        write_timeout: float = 30.0,
    ) -> None:
        self.write_timeout = write_timeout
        self.store = store
        self.spool_dir = spool_dir
        self.batch_size = batch_size
        self.interval = interval
        self.queue_size = queue_size
        self.retention_days = retention_days
        self.prune_interval = prune_interval
        self.on_health = on_health
        self.on_pending = on_pending
        self.queue: collections.deque[Record] = collections.deque()
        self.healthy = True
        self._own: SpoolFile | None = None  # this process's spool (appended to)
        self._held: list[SpoolFile] = []  # spools to write back, oldest first (rotated own ones, adopted ones)
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.written = 0
        self.stop_timeout = 10.0  # seconds the database gets at shutdown before the queue goes to the spool
        self._inflight: list[Record] = []  # taken off the queue, not yet in the database or the spool
        self._stray: set[asyncio.Task[int]] = set()  # writes given up on (timeout) that have not ended yet

    # -- the request path ---------------------------------------------------------------------------------------

    def add(self, record: Record) -> None:
        """Queue one record (`usage_store.record_of`); no I/O unless the queue is full."""
        queue = self.queue
        if len(queue) >= self.queue_size:
            try:
                self._spool_sync([record])
            except OSError as exc:
                log.error("usage record lost: the queue is full and the spool cannot be written (%s)", exc)
            return
        queue.append(record)
        if len(queue) >= self.batch_size and self._wake is not None:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self.queue) + self.spooled

    @property
    def spooled(self) -> int:
        return sum(s.lines for s in self._held) + (self._own.lines if self._own else 0)

    # -- life -----------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        await asyncio.to_thread(self._check_spool_dir)
        await asyncio.to_thread(self._adopt)
        self._report()
        self._tasks = [asyncio.create_task(self._run(), name="usage-writer"),
                       asyncio.create_task(self._prune_loop(), name="usage-retention")]

    async def stop(self) -> None:
        """Write what is queued (or spool it); nothing is left only in memory."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        # A batch taken off the queue by a cycle cancelled mid-write: written again (idempotent by id).
        leftover, self._inflight = self._inflight, []
        try:
            async with asyncio.timeout(self.stop_timeout):
                if leftover and self.healthy:
                    with contextlib.suppress(Exception):
                        self.written += await self._write(leftover)
                        leftover = []
                while self.queue or (self._held and self.healthy):
                    if not await self.flush():
                        break
        except TimeoutError:
            log.warning("usage records: the database did not take them in %.0f s at shutdown; spooling them", self.stop_timeout)
        batch = [*leftover, *self._inflight, *self.queue]
        self._inflight = []
        self.queue.clear()
        if batch:
            try:
                self._spool_sync(batch)
            except OSError as exc:
                log.error("%d usage records lost at shutdown: the spool cannot be written (%s)", len(batch), exc)
        self._close()
        self._report()
        if self._stray:  # writes given up on: let them end before the engine is disposed
            await asyncio.wait(set(self._stray), timeout=self.stop_timeout)

    def _close(self) -> None:
        for spool in [*self._held, *([self._own] if self._own else [])]:
            if spool.lines == 0:
                spool.remove()
            else:
                with contextlib.suppress(OSError):
                    os.close(spool.fd)  # the lock goes with it: the next process adopts the file
        self._held, self._own = [], None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self.flush() and len(self.queue) >= self.batch_size:
                    pass  # a burst: the next full batch at once
            except Exception:
                log.exception("usage writer: unexpected error; retrying")

    async def flush(self) -> bool:
        """One cycle: write back spools (oldest first), then one batch from the queue. False: the database is down."""
        if not self.healthy and not await self._ping():  # still down: no need to read the spool
            await self._to_spool(self._take(len(self.queue)))  # all of it: the queue must not grow while down
            return False
        if self._held or (self._own is not None and self._own.lines):
            if not await self._replay():
                await self._to_spool(self._take(len(self.queue)))
                return False
        batch = self._take(self.batch_size)
        if not batch:
            self._report()
            return True
        self._inflight = batch  # until it is in the database or the spool (stop() picks it up if cancelled)
        try:
            self.written += await self._write(batch)
        except Exception as exc:
            if not refused(exc):  # unreachable, read-only, disk full, locked, slow: an outage, never a loss
                self._health(False, exc)
                await self._to_spool(batch)
                return False
            log.warning("usage batch refused by the database (%s); writing its %d records one by one",
                        type(exc).__name__, len(batch))
            rest, failure = await self._write_each(batch)
            if rest:
                self._health(False, failure)
                await self._to_spool(rest)
                return False
        self._inflight = []
        self._health(True)
        self._report()
        return True

    # -- internals --------------------------------------------------------------------------------------------

    def _take(self, limit: int) -> list[Record]:
        queue = self.queue
        batch = [queue.popleft() for _ in range(min(limit, len(queue)))]
        self._inflight = batch
        return batch

    async def _write(self, records: list[Record]) -> int:
        """`store.write`, given `write_timeout` seconds; past that, TimeoutError (an outage).

        The write itself is left to end on its own (a driver blocked in its thread, SQLite waiting out
        `busy_timeout`, cannot be interrupted, and one cancelled mid-statement can keep its lock) while its batch is
        spooled: written twice, it counts once (records have their own ids).
        """
        task = asyncio.ensure_future(self.store.write(records))
        try:
            async with asyncio.timeout(self.write_timeout):
                return await asyncio.shield(task)
        except BaseException:
            if not task.done():  # not cancelled: a driver cancelled mid-statement can keep its lock (SQLite)
                self._stray.add(task)
                task.add_done_callback(self._stray_done)
            raise

    async def _ping(self) -> bool:
        """`store.ping`, given `write_timeout` seconds (a database that hangs is down)."""
        try:
            async with asyncio.timeout(self.write_timeout):
                return await self.store.ping()
        except TimeoutError:
            return False

    def _stray_done(self, task: asyncio.Task[int]) -> None:
        self._stray.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("usage writer: an abandoned write ended with %s", type(task.exception()).__name__)

    async def _write_each(self, records: list[Record]) -> tuple[list[Record], BaseException | None]:
        """Write the records alone, dropping (and logging) those the database can never take.

        Returns the records not written when the database fails otherwise (an outage), from the first such one,
        and that failure; ([], None) when every record was written or dropped.
        """
        for i, record in enumerate(records):
            try:
                self.written += await self._write([record])
            except Exception as exc:
                if not refused(exc):
                    return records[i:], exc
                log.error("usage record %s dropped: the database refuses it (%s)", str(record[0])[:64], type(exc).__name__)
        return [], None

    async def _replay(self) -> bool:
        """Write back every spool held; False (and they stay) when the database does not take them."""
        if self._own is not None and self._own.lines:
            self._held.append(self._own)  # rotate: new records go to a fresh file while this one is written back
            self._own = None
        while self._held:
            spool = self._held[0]
            total, written = spool.lines, 0
            # a batch at a time: a long outage's spool need not fit in memory
            f = await asyncio.to_thread(open, spool.path, "rb")
            try:
                while True:
                    records = await asyncio.to_thread(spool.read_some, f, self.batch_size)
                    if records is None:
                        break
                    try:
                        self.written += await self._write(records)
                    except Exception as exc:
                        failure: BaseException | None = exc
                        if refused(exc):  # a record it can never take: the others go in, that one is dropped
                            _, failure = await self._write_each(records)
                        if failure is not None:
                            spool.lines = total  # all of it is written again next time (idempotent)
                            self._health(False, failure)
                            return False
                    written += len(records)
                    spool.lines = max(0, total - written)
                    self._report()
            finally:
                f.close()
            await asyncio.to_thread(spool.remove)
            self._held.pop(0)
            log.info("usage records: %d spooled records written to the database (%s)", written, spool.path.name)
        self._health(True)
        return True

    async def _to_spool(self, batch: list[Record]) -> None:
        if batch:
            try:
                await asyncio.to_thread(self._spool_sync, batch)
            except OSError as exc:
                log.error("%d usage records lost: the database is down and the spool cannot be written (%s)", len(batch), exc)
        self._inflight = []
        self._report()

    def _spool_sync(self, batch: list[Record]) -> None:
        if self._own is None:
            self._own = SpoolFile.create(self.spool_dir)
        self._own.append(batch)

    def _check_spool_dir(self) -> None:
        """Say at start-up, not only once records are lost, when the spool cannot be written."""
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.spool_dir, os.W_OK | os.X_OK):
                raise PermissionError(f"not writable by uid {os.getuid()}")
        except OSError as exc:
            log.error("usage records: the spool directory %s cannot be used (%s); records are lost while the database "
                      "is down: set storage.usage_spool to a writable directory", self.spool_dir, exc)

    def _adopt(self) -> None:
        """Take the spool files of processes that are gone."""
        if not self.spool_dir.is_dir():
            return
        mine = {s.path for s in [*self._held, *([self._own] if self._own else [])]}
        for path in sorted(self.spool_dir.glob("usage-*.jsonl"), key=lambda p: p.stat().st_mtime):
            if path in mine:
                continue
            spool = SpoolFile.adopt(path)
            if spool is not None:
                self._held.append(spool)
                log.info("usage records: %d spooled records of an earlier process found (%s)", spool.lines, path.name)

    def _health(self, up: bool, exc: BaseException | None = None) -> None:
        if up == self.healthy:
            return
        self.healthy = up
        if up:
            log.info("usage records: the database answers again; writing back %d spooled records", self.spooled)
        else:
            log.warning("usage records: the database cannot be reached (%s); records are spooled to %s",
                        type(exc).__name__ if exc else "?", self.spool_dir)
        if self.on_health is not None:
            self.on_health(up)

    def _report(self) -> None:
        if self.on_pending is not None:
            self.on_pending(self.pending)

    async def _prune_loop(self) -> None:
        await asyncio.sleep(min(PRUNE_FIRST_AFTER, self.prune_interval))
        while True:
            try:
                await self.prune()
            except Exception as exc:
                log.warning("usage retention: pruning failed (%s); trying again later", type(exc).__name__)
            await asyncio.sleep(self.prune_interval)

    async def prune(self) -> int:
        cutoff = datetime.now(UTC) - timedelta(days=self.retention_days)
        deleted = await self.store.prune(cutoff)
        if deleted:
            log.info("usage retention: %d records older than %d days deleted", deleted, self.retention_days)
        if self._held or not self.healthy:
            return deleted
        await asyncio.to_thread(self._adopt)  # a replica that died with a spool: its records come in now
        return deleted
