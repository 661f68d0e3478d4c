"""The real Redis the tests and benchmarks use: whether one answers, and cleaning up after."""

from __future__ import annotations

import redis


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, ValueError):
        return False


def delete_keys(url: str, pattern: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(pattern, count=1000):
            client.delete(key)
    finally:
        client.close()
