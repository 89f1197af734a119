"""A SessionClient shared across os.fork() on real nodes: no acknowledged increment is lost.

This is what gunicorn `--preload` does: the parent uses the client, then forks a worker,
and both go on calling. Without fresh client ids in the child, both halves would send the
same (client id, sequence). For the same increment of the same counter the node's
fingerprint check cannot help (the bodies are equal): it would apply one and answer both,
so the counter would fall short of what was acknowledged. Here both halves create their
own session and increment one shared counter concurrently, from several threads each.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sessionquorum.client import SessionClient, SessionQuorumError
from tests.forking import in_child

from .conftest import ClientFactory, ClusterFactory
from .helpers import wait_converged

pytestmark = pytest.mark.cluster

THREADS = 4
INCREMENTS_PER_THREAD = 15


def increment_concurrently(client: SessionClient, counter: str) -> dict[str, Any]:
    """Create this half's own session, then increment it and the shared counter from threads."""
    own = client.create(attributes={"mine": b"0"})
    acknowledged = {"hits": 0, "mine": 0}
    problems: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(INCREMENTS_PER_THREAD):
            for token, name in ((counter, "hits"), (own.token, "mine")):
                try:
                    client.update(token, increment={name: 1})
                except SessionQuorumError as exc:  # a healthy cluster answers every call
                    with lock:
                        problems.append(repr(exc))
                    continue
                with lock:
                    acknowledged[name] += 1

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    mine = int(client.validate(own.token).attributes["mine"])
    return {"acknowledged": acknowledged, "problems": problems, "own_token": own.token, "mine": mine}


def test_parent_and_forked_child_sharing_a_client_lose_no_acknowledged_increment(
    make_cluster: ClusterFactory, make_client: ClientFactory
) -> None:
    cluster = make_cluster(3)
    client = make_client(cluster)
    # Leaves the parent an idle lane (the one a child would copy), an open channel and a leader guess.
    counter = client.create(attributes={"hits": b"0"}).token

    parent: dict[str, Any] = {}
    parent_half = threading.Thread(target=lambda: parent.update(increment_concurrently(client, counter)))
    # The parent starts calling right after the fork, from the same idle lane the child inherited.
    try:
        child: dict[str, Any] = in_child(
            lambda: increment_concurrently(client, counter), timeout_s=120.0, then=parent_half.start
        )
    finally:
        parent_half.join()

    each = THREADS * INCREMENTS_PER_THREAD
    hits = int(client.validate(counter).attributes["hits"])
    assert parent["problems"] == child["problems"] == []
    assert parent["acknowledged"] == child["acknowledged"] == {"hits": each, "mine": each}
    # Every acknowledged increment applied, exactly once: none was answered for another's.
    assert hits == parent["acknowledged"]["hits"] + child["acknowledged"]["hits"]
    assert parent["mine"] == child["mine"] == each
    assert client.validate(child["own_token"]).attributes["mine"] == str(each).encode()
    wait_converged(cluster)
