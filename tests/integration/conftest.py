"""Fixtures for tests against real node processes on 127.0.0.1.

Every cluster lives in the test's tmp_path, on ports chosen by binding to 0; the fixture
stops exactly the processes it started. When a test fails, every node's log tail is
attached to the report, so a failure in CI says what the nodes saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from sessionquorum.client import SessionClient, TLSConfig
from sessionquorum.cluster import LocalCluster

LEADER_TIMEOUT_S = 30.0

ClusterFactory = Callable[..., LocalCluster]
ClientFactory = Callable[..., SessionClient]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed:
        for cluster in getattr(item, "_sq_clusters", []):
            for node_id, tail in cluster.log_tails().items():
                report.sections.append((f"node {node_id} log tail", tail))


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start a cluster and wait for its leader: make_cluster(nodes=3, overrides=None)."""
    started: list[LocalCluster] = []
    request.node._sq_clusters = started

    def make(nodes: int = 3, overrides: Mapping[str, Mapping[str, object]] | None = None) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(started)}", nodes, overrides=overrides)
        started.append(cluster)
        cluster.start()
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        return cluster

    yield make
    for cluster in started:
        cluster.stop()
        cluster.close_channels()


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """A client on a cluster, optionally on some endpoints only: make_client(cluster, [addr]).

    It presents the app-role certificate, as an application does; admin=True: the admin one.
    """
    clients: list[SessionClient] = []

    def make(
        cluster: LocalCluster,
        endpoints: Sequence[str] | None = None,
        *,
        admin: bool = False,
        **kwargs: object,
    ) -> SessionClient:
        tls = cluster.admin_tls_files if admin else cluster.tls_files
        client = SessionClient(
            list(endpoints or cluster.endpoints),
            tls=TLSConfig.from_files(tls.ca, tls.cert, tls.key),
            **kwargs,  # type: ignore[arg-type]
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
