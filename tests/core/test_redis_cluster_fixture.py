"""The tests' own Redis Cluster (tests/support/redis_cluster.py): a real cluster whose keys
spread over three nodes, whose nodes come back with their keys, and which the helpers tell
apart from a single server. Started here, whatever `--redis` the run has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.real_redis import RedisServer, answers, delete_keys, is_cluster
from tests.support.redis_cluster import RedisClusterNodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    with RedisClusterNodes(tmp_path_factory.mktemp("own-cluster")) as nodes:
        yield nodes


@pytest.fixture
def cluster_client(cluster: RedisClusterNodes) -> Iterator[redis.RedisCluster]:
    client = redis.RedisCluster.from_url(cluster.url, decode_responses=True)
    yield client
    client.close()


def _dbsizes(cluster: RedisClusterNodes) -> list[int]:
    sizes = []
    for index in range(len(cluster.ports)):
        node = cluster.client(index)
        try:
            sizes.append(int(node.dbsize()))
        finally:
            node.close()
    return sizes


def test_keys_spread_over_all_three_nodes(
        cluster: RedisClusterNodes, cluster_client: redis.RedisCluster) -> None:
    for i in range(300):
        cluster_client.set(f"spread:k{i}", i)

    sizes = _dbsizes(cluster)

    assert len(sizes) == 3
    assert all(size > 0 for size in sizes), sizes
    assert sum(sizes) >= 300
    delete_keys(cluster.url, "spread:*")
    assert sum(_dbsizes(cluster)) == 0


def test_a_stopped_node_comes_back_with_its_keys(
        cluster: RedisClusterNodes, cluster_client: redis.RedisCluster) -> None:
    for i in range(300):
        cluster_client.set(f"restart:k{i}", i)
    before = _dbsizes(cluster)[1]
    assert before > 0

    cluster.stop_node(1)
    assert not answers(f"redis://127.0.0.1:{cluster.ports[1]}/0")
    cluster.start_node(1)

    assert _dbsizes(cluster)[1] == before
    assert answers(cluster.url)
    assert [cluster_client.get(f"restart:k{i}") for i in range(300)] == [str(i) for i in range(300)]
    delete_keys(cluster.url, "restart:*")


def test_is_cluster_tells_a_cluster_from_a_single_server(
        cluster: RedisClusterNodes, tmp_path: Path) -> None:
    assert is_cluster(cluster.url)
    with RedisServer(tmp_path / "single") as single_url:
        assert not is_cluster(single_url)
        assert answers(single_url)
