"""A throw-away PostgreSQL server for the tests: Debian's packages, a fresh cluster in a temporary directory.

`PostgresServer.start()` finds `initdb` / `pg_ctl` (Debian puts them in
/usr/lib/postgresql/<version>/bin), installs the `postgresql` package with
apt-get when they are missing and this runs as root, makes a cluster with
trust authentication on a free loopback port, and starts it. PostgreSQL
refuses to run as root, so as root the cluster belongs to the `postgres` user
the package creates (`runuser`). `new_database()` gives each test a database
of its own; `pause()` / `resume()` stop and restart it on the same port and data
(a database outage); `stop()` stops this cluster (by its data directory) and removes it.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(Exception):
    pass


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable("PostgreSQL is not installed (apt-get install postgresql, as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            _install()
            bindir = _bindir()
            if bindir is None:
                raise PostgresUnavailable("the postgresql package installed no initdb")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="gemini-proxy-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._numbers = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.started = False

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            log = self.root / "postgres.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise PostgresUnavailable(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{tail}")

    def start(self) -> PostgresServer:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        self._start()
        return self

    def _start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "postgres.log"),
                  "-w", "-t", "120", "start", timeout=180)
        self.started = True

    def pause(self) -> None:
        """Stop the server (fast: connections are cut), keeping its data; `resume()` starts it again."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
        self.started = False

    def resume(self) -> None:
        self._start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL (the gateway gives it the asyncpg driver)."""
        name = f"test_{next(self._numbers)}"

        async def create() -> None:
            import asyncpg

            conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres")
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60, cwd=self.root)
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)
