"""A real Redis Sentinel deployment for tests: one primary, one replica, three sentinels,
each a ``redis-server`` process of our own on a free 127.0.0.1 port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from producers import redis_conn
from worker.devtools.redis_server import find_redis_server, free_port

MASTER = "smsq"


class Node:
    """One redis-server (data node or sentinel) process."""

    def __init__(self, directory: Path, name: str, port: int, config: str) -> None:
        self.dir = directory
        self.name = name
        self.port = port
        self.config_path = directory / f"{name}.conf"
        self.config_path.write_text(config)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, sentinel: bool = False) -> None:
        args = [find_redis_server(), str(self.config_path)]
        if sentinel:
            args.append("--sentinel")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=2)

    def wait_up(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if self.process is not None and self.process.poll() is not None:
                        log = (self.dir / f"{self.name}.log").read_text(errors="replace")
                        raise RuntimeError(f"{self.name} exited: {log[-2000:]}") from None
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """kill -9."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class SentinelCluster:
    """Primary + replica + three sentinels (quorum 2, a server is down after 1 s)."""

    def __init__(self, down_after_ms: int = 1000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="smsq-sentinel-"))
        self.down_after_ms = down_after_ms
        ports = [free_port() for _ in range(5)]
        common = 'bind 127.0.0.1\nprotected-mode no\nsave ""\nappendonly no\n'
        primary_port, replica_port = ports[0], ports[1]
        self.data = [
            Node(
                self.dir,
                "primary",
                primary_port,
                f"port {primary_port}\n{common}dir {self.dir}\ndbfilename p.rdb\n"
                f"logfile {self.dir / 'primary.log'}\n",
            ),
            Node(
                self.dir,
                "replica",
                replica_port,
                f"port {replica_port}\n{common}dir {self.dir}\ndbfilename r.rdb\n"
                f"replicaof 127.0.0.1 {primary_port}\nlogfile {self.dir / 'replica.log'}\n",
            ),
        ]
        self.sentinels = [
            Node(
                self.dir,
                f"sentinel{i}",
                port,
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {self.dir}\n"
                f"logfile {self.dir / f'sentinel{i}.log'}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {down_after_ms}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n",
            )
            for i, port in enumerate(ports[2:])
        ]

    @property
    def url(self) -> str:
        hosts = [("127.0.0.1", s.port) for s in self.sentinels]
        return redis_conn.build_sentinel_url(hosts, MASTER, db=0)

    def start(self) -> SentinelCluster:
        for node in self.data:
            node.start()
            node.wait_up()
        self.wait_replicated()
        for node in self.sentinels:
            node.start(sentinel=True)
            node.wait_up()
        # Every sentinel has seen the replica and the other sentinels.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready = 0
            for node in self.sentinels:
                client = node.client()
                try:
                    info = client.sentinel_master(MASTER)
                    if (
                        int(info.get("num-slaves", 0)) >= 1
                        and int(info.get("num-other-sentinels", 0)) >= 2
                    ):
                        ready += 1
                except redis.RedisError:
                    pass
                finally:
                    client.close()
            if ready == len(self.sentinels):
                return self
            time.sleep(0.1)
        raise RuntimeError("the sentinels did not discover each other and the replica in time")

    def wait_replicated(self, timeout: float = 10.0) -> None:
        replica = self.data[1].client()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                info = replica.info("replication")
                if info.get("master_link_status") == "up":
                    return
                time.sleep(0.05)
        finally:
            replica.close()
        raise RuntimeError("the replica did not sync with the primary")

    def master_port(self) -> int:
        """The master's port as the sentinels see it now."""
        client = self.sentinels[0].client()
        try:
            _host, port = client.sentinel_get_master_addr_by_name(MASTER)
            return int(port)
        finally:
            client.close()

    def node_on(self, port: int) -> Node:
        return next(n for n in self.data if n.port == port)

    def kill_master(self) -> tuple[int, float]:
        """kill -9 the current master; returns its port and the time of the kill."""
        port = self.master_port()
        self.node_on(port).kill()
        return port, time.monotonic()

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> float:
        """Seconds until the sentinels name a new master that answers as one."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                port = self.master_port()
            except redis.RedisError:
                port = old_port
            if port != old_port:
                client = self.node_on(port).client()
                try:
                    if client.info("replication").get("role") == "master":
                        return time.monotonic() - started
                except redis.RedisError:
                    pass
                finally:
                    client.close()
            time.sleep(0.05)
        raise RuntimeError(f"no failover within {timeout}s")

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def sentinel_available() -> str | None:
    """Why Sentinel tests cannot run here, or None."""
    try:
        binary = find_redis_server()
    except FileNotFoundError as exc:
        return str(exc)
    if not os.access(binary, os.X_OK):
        return f"{binary} is not executable"
    return None
