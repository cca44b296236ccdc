"""A throw-away Redis server for the tests: Debian's `redis-server`, on a free loopback port, in a temporary directory.

`RedisServer.start()` finds `redis-server` (installing the `redis-server` package with apt-get when it is
missing and this runs as root), starts it without persistence, and waits until it answers. `kill()` stops it
the hard way (SIGKILL, as a crashed Redis), `start()` again brings it back on the same port; `stop()` stops
it and removes the directory. Every stop is by the server's own pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class RedisUnavailable(Exception):
    pass


def _install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RedisUnavailable("redis-server is not installed (apt-get install redis-server, as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RedisUnavailable(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _install()
            binary = shutil.which("redis-server")
            if binary is None:
                raise RedisUnavailable("the redis-server package installed no redis-server")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="gemini-proxy-redis-"))
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self._log = open(self.root / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--protected-mode", "no"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not self.ping():
            if self.proc.poll() is not None:
                raise RedisUnavailable(f"redis-server exited with {self.proc.returncode}: "
                                       f"{(self.root / 'redis.log').read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RedisUnavailable("redis-server did not answer within 30 s")
            time.sleep(0.05)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """One command in RESP, its raw reply (enough for FLUSHALL and the like)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"".join(parts))
            return s.recv(65536)

    def pause(self, paused: bool) -> None:
        """SIGSTOP / SIGCONT: a Redis that hangs (connections stay open, nothing answers)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash; the port is free again once it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self._log.close()
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)
